"""`stxpipe manifest build`: rows from files, folders, globs or a CSV, times a parameter grid.

`--param key=value` fixes a param for every row, `--sweep key=v1,v2,...` makes one row per value
(several sweeps: their cartesian product). Values are read by `Params` itself (one place for
types), so a list-valued param is recognised from its annotation.
"""

from __future__ import annotations

import csv
import glob as globmod
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from pipeline import storage
from pipeline.manifest.io import write_manifest
from pipeline.manifest.schema import (
    IMAGE_SUFFIXES,
    REQUIRED_COLUMNS,
    RowSpec,
    _manifest_dir,
    _strip_prefix,
    is_list_param,
    resolve_path,
)
from pipeline.manifest.show import _fmt_value
from stylecore.params import ParamError, Params


@dataclass(frozen=True)
class BuildConfig:
    """What `stxpipe manifest build` was asked for.

    contents/styles: files, folders (their images, not recursive) or globs (`**` recurses);
    csv: a CSV with `content` and `style` columns instead (other columns are carried through;
    `a.jpg;b.jpg` in a style cell is a blend); pair: zip contents with styles instead of the
    cross product; params: `key=value` fixed for every row; sweeps: `key=v1,v2,...`, their
    cartesian product is crossed with every (content, style) pair. List-valued params separate
    sweep values with `;` and list items with `,`: `style_layers=pool1;pool2` is two values,
    `style_layers=conv1_1,conv2_1;conv3_1` is two values too (a 2-layer and a 1-layer list).
    relative: write local paths relative to the output manifest's folder (portable manifests)
    instead of absolute."""

    contents: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    csv: str | None = None
    pair: bool = False
    params: tuple[str, ...] = ()
    sweeps: tuple[str, ...] = ()
    relative: bool = False


@dataclass(frozen=True)
class BuildSummary:
    """What a build wrote."""

    path: str
    rows: int
    contents: int
    styles: int
    fixed: dict
    swept: tuple[tuple[str, tuple], ...]

    def lines(self) -> list[str]:
        out = [f"wrote {self.path}: {self.rows} rows, {self.contents} distinct contents, {self.styles} distinct styles"]
        if self.fixed:
            out.append("fixed params: " + " ".join(f"{k}={_fmt_value(v)}" for k, v in self.fixed.items()))
        for key, values in self.swept:
            out.append(f"swept {key} ({len(values)}): " + " | ".join(_fmt_value(v) for v in values))
        if not self.fixed and not self.swept:
            out.append("params: engine defaults")
        return out


def parse_param(text: str, params_cls: type[Params] | None = None) -> tuple[str, Any]:
    """`key=value` -> (key, value coerced to the field's type in `params_cls`, default `Params`).
    Raises ParamError for unknown names or bad values."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamError(key or text, f"expected key=value, got '{text}'")
    return key, _coerce_one(key, value.strip(), params_cls)


def parse_sweep(text: str, params_cls: type[Params] | None = None) -> tuple[str, tuple]:
    """`key=v1,v2,...` -> (key, coerced values). List-valued params separate values with `;`
    (their items with `,`): `style_layers=pool1;pool2`. Scalars accept `,` or `;`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamError(key or text, f"expected key=v1,v2,..., got '{text}'")
    parts = value.split(";") if is_list_param(key, params_cls) else re.split(r"[,;]", value)
    values = tuple(_coerce_one(key, v.strip(), params_cls) for v in parts if v.strip())
    if not values:
        raise ParamError(key, f"sweep '{text}' lists no values")
    dupes = sorted({_fmt_value(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ParamError(key, f"sweep lists {', '.join(dupes)} more than once")
    return key, values


def _coerce_one(key: str, value: str, params_cls: type[Params] | None = None) -> Any:
    # Params does the coercion (one place for types); a value valid on its own may still clash
    # with another param, which the per-combination check in plan_manifest reports.
    v = getattr((params_cls or Params).from_dict({key: value}), key)
    return list(v) if isinstance(v, tuple) else v


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def expand_inputs(items: Iterable[str], what: str, base: str | None = None) -> list[str]:
    """Files, folders (images inside, sorted, not recursive) and globs -> absolute paths (URIs
    stay URIs), in order, without repeats. Raises FileNotFoundError for what matches nothing."""
    out: list[str] = []
    for item in items:
        if storage.is_remote(item):
            found = _expand_remote(item)
        else:
            local = resolve_path(item, base or os.getcwd())
            if _has_glob(local):
                found = sorted(p for p in globmod.glob(local, recursive=True) if os.path.isfile(p))
            elif os.path.isdir(local):
                found = sorted(str(p) for p in Path(local).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            elif os.path.isfile(local):
                found = [local]
            else:
                raise FileNotFoundError(f"--{what} '{item}': no such file or folder")
            found = [os.path.abspath(p) for p in found]
        if not found:
            raise FileNotFoundError(f"--{what} '{item}' matched no image files ({', '.join(IMAGE_SUFFIXES)})")
        out += found
    return list(dict.fromkeys(out))


def _expand_remote(uri: str) -> list[str]:
    if _has_glob(uri):
        raise ValueError(f"'{uri}': globs are supported for local paths only; give a folder URI or list the files")
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        scheme = uri.split("://", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        return sorted(
            f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File and os.path.splitext(i.path)[1].lower() in IMAGE_SUFFIXES
        )
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"'{uri}': no such file or folder")
    return [uri]


def _read_csv(path: str) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    """(content, styles, other columns) per CSV row, paths resolved against the CSV's folder."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: CSV needs columns content,style; missing {', '.join(missing)} (found {', '.join(reader.fieldnames or [])})"
            )
        clash = [c for c in reader.fieldnames or [] if c in ("params", "row_id")]
        if clash:
            raise ValueError(
                f"{path}: CSV column(s) {', '.join(clash)} are not read by build; use --param/--sweep, or write the manifest with pipeline.manifest.write_manifest"
            )
        out = []
        for line, rec in enumerate(reader, start=2):
            content = (rec.pop("content") or "").strip()
            styles = tuple(s.strip() for s in (rec.pop("style") or "").split(";") if s.strip())
            if not content or not styles:
                raise ValueError(f"{path}, line {line}: content and style must both be set")
            out.append((resolve_path(content, folder), tuple(resolve_path(s, folder) for s in styles), rec))
    return out


def plan_manifest(
    config: BuildConfig, output: str | os.PathLike, params_cls: type[Params] | None = None
) -> tuple[list[RowSpec], BuildSummary]:
    """The rows `config` describes (paths as they will be written to `output`) and a summary.
    `params_cls` (default `Params`) reads and checks the --param/--sweep values."""
    out = os.fspath(output)
    params_cls = params_cls or Params
    fixed, sweeps = _grid(config, params_cls)
    pairs = _pairs(config)
    # Check each parameter combination once, up front: a bad combination is one message, not
    # one per row.
    keys = [k for k, _ in sweeps]
    combos = [dict(fixed, **dict(zip(keys, values))) for values in itertools.product(*(v for _, v in sweeps))]
    for combo in combos:
        try:
            params_cls.from_dict(combo)
        except ParamError as e:
            shown = " ".join(f"{k}={_fmt_value(v)}" for k, v in combo.items())
            raise ParamError(e.field, f"{_strip_prefix(e)} (in the combination {shown})") from None

    out_dir = _manifest_dir(out)
    written: dict[str, str] = {}

    def as_written(p: str) -> str:
        w = written.get(p)
        if w is None:
            w = written[p] = os.path.relpath(p, out_dir) if config.relative and not storage.is_uri(p) else p
        return w

    rows = [RowSpec(as_written(c), tuple(as_written(s) for s in ss), combo, None, extra) for c, ss, extra in pairs for combo in combos]
    summary = BuildSummary(
        out,
        len(rows),
        len({c for c, _, _ in pairs}),
        len({s for _, ss, _ in pairs for s in ss}),
        fixed,
        tuple(sweeps),
    )
    return rows, summary


def _grid(config: BuildConfig, params_cls: type[Params]) -> tuple[dict[str, Any], list[tuple[str, tuple]]]:
    """(the --param values, the --sweeps), each key given once."""
    fixed = dict(parse_param(p, params_cls) for p in config.params)
    if len(fixed) != len(config.params):
        raise ValueError("a --param key is given twice; give each key once")
    sweeps = [parse_sweep(s, params_cls) for s in config.sweeps]
    keys = [k for k, _ in sweeps]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"--sweep {k} is given twice; list all its values in one --sweep")
        if k in fixed:
            raise ValueError(f"'{k}' is both a --param and a --sweep; keep one")
    return fixed, sweeps


def _pairs(config: BuildConfig) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    """(content, styles, carried columns) per (content, style) pair: from the CSV, or the cross
    product (--pair: the zip) of the expanded --content and --style inputs."""
    if config.csv:
        if config.contents or config.styles:
            raise ValueError("give either --csv or --content/--style, not both")
        return _read_csv(config.csv)
    if not config.contents or not config.styles:
        raise ValueError("give at least one --content and one --style (file, folder or glob), or --csv")
    contents = expand_inputs(config.contents, "content")
    styles = expand_inputs(config.styles, "style")
    if config.pair:
        if len(contents) != len(styles):
            raise ValueError(f"--pair needs as many contents as styles; got {len(contents)} contents and {len(styles)} styles")
        return [(c, (s,), {}) for c, s in zip(contents, styles)]
    return [(c, (s,), {}) for c in contents for s in styles]


def build_manifest(config: BuildConfig, output: str | os.PathLike) -> BuildSummary:
    """Expand `config` into rows and write them to `output` as a Parquet manifest."""
    rows, summary = plan_manifest(config, output)
    write_manifest(rows, output)
    return summary
