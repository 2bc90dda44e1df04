"""Parquet manifests: the schema users write, the builder, the reader and the validator.

A manifest is a Parquet table of `(content, style, params)` rows (design.md, "Data contracts"):

- `content`: string path or URI of the content image;
- `style`: string path/URI, or a list of them for a blend (weights in `params.style_blend`);
- `params`: struct (or JSON string) of `stylecore.params.Params` fields; a missing or null field
  takes the engine's default, so a manifest never freezes defaults that might later improve;
- `row_id` (optional): string matching `ROW_ID_PATTERN` (it names the output file); default =
  `row_id_for(content, styles, params)`;
- any other column is carried through to the results untouched, unless its name is one of the
  results table's columns (`reserved_result_columns()`): such a manifest is refused.

Relative paths resolve against the manifest's folder; URIs (`s3://`, `gs://`, `file://`, ...)
go through `pyarrow.fs`, so remote stores work wherever pyarrow has credentials.

Validation collects every problem (schema, param names and values, files, duplicate ids) as a
`Problem` instead of stopping at the first, so one run tells the user everything to fix.
"""

from __future__ import annotations

import csv
import functools
import glob as globmod
import hashlib
import itertools
import json
import os
import re
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.storage import _filesystem, is_uri, local_file_problem, read_bytes  # noqa: F401 - re-exported
from stylecore.params import MAX_STYLES, ParamError, Params, param_field, parse_params_json

REQUIRED_COLUMNS = ("content", "style")
# The manifest's own columns; every other column is carried through to the results.
RESERVED_COLUMNS = ("content", "style", "params", "row_id")
# A row_id names the output file (`<out>/images/<row_id>.png`): letters, digits, '.', '_', '-',
# starting with a letter or digit (so never '..', a leading dot, a separator or an absolute path).
ROW_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ROW_ID_CHARS = 16



class ManifestError(ValueError):
    """A manifest cannot be used as it is; `problems` lists everything wrong with it."""

    def __init__(self, path: str, problems: Sequence["Problem"]):
        self.path = str(path)
        self.problems = tuple(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:10])
        more = f"\n  ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
        hint = f"\nrun `stxpipe manifest validate {self.path}` for the full list" if more else ""
        super().__init__(f"manifest {self.path}: {len(self.problems)} problem(s):\n{shown}{more}{hint}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. `row` is the 0-based row index (None: the whole file)."""

    row: int | None
    column: str
    message: str

    def __str__(self) -> str:
        where = "manifest" if self.row is None else f"row {self.row}"
        return f"{where}, {self.column}: {self.message}"


@dataclass(frozen=True)
class ManifestRow:
    """One resolved job: absolute paths/URIs, full `Params`, id, and the carried-through columns."""

    index: int
    row_id: str
    content: str
    styles: tuple[str, ...]
    params: Params
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RowSpec:
    """One row to write: paths as they should appear in the file, and only the explicitly set
    params (so unset ones stay null and keep following the engine's defaults)."""

    content: str
    styles: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    row_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationReport:
    """What `validate_manifest` found. `rows` holds every row whose params resolved."""

    path: str
    n_rows: int
    rows: tuple[ManifestRow, ...]
    problems: tuple[Problem, ...]
    files_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: OK with counts, or the number of problems."""
        contents = len({r.content for r in self.rows})
        styles = len({s for r in self.rows for s in r.styles})
        if self.ok:
            checked = f", {self.files_checked} distinct files decoded" if self.files_checked else ""
            return f"OK {self.path}: {self.n_rows} rows, {contents} contents, {styles} styles{checked}"
        bad_rows = len({p.row for p in self.problems if p.row is not None})
        where = f" in {bad_rows} of {self.n_rows} rows" if bad_rows else f" ({self.n_rows} rows)"
        return f"{self.path}: {len(self.problems)} problem(s){where}"


# --------------------------------------------------------------------------------------------
# Paths and URIs


resolve_path = storage.resolve
_manifest_dir = storage.parent


def row_id_problem(row_id: str) -> str | None:
    """None if `row_id` is a valid id (`ROW_ID_PATTERN`), else what is wrong and what to do."""
    if isinstance(row_id, str) and ROW_ID_PATTERN.fullmatch(row_id):
        return None
    shown = repr(row_id) if len(str(row_id)) <= 80 else repr(str(row_id)[:77] + "...")
    return (
        f"{shown} is not a valid row_id: it names the output file, so use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (no '/', no leading '.'); or leave it null for the default id"
    )


def safe_output_path(out_root: str, row_id: str, suffix: str = ".png") -> str:
    """`<out_root>/<row_id><suffix>`, resolved, after checking that it stays under `out_root`.

    Local roots: both sides go through `os.path.realpath` (symlinks included). URIs
    (`s3://bucket/prefix`): the path part is normalised and `..` segments are refused. Raises
    ValueError naming the id when it does not match `ROW_ID_PATTERN` or the result would lie
    outside the root (defence in depth: validate refuses such ids first)."""
    why = row_id_problem(row_id)
    if why:
        raise ValueError(why)
    if not re.fullmatch(r"(\.[A-Za-z0-9]{1,16})*", suffix):
        raise ValueError(f"suffix {suffix!r} must be empty or like '.png'")
    return storage.child_path(out_root, row_id + suffix, what=f"row_id {row_id!r}")


def reserved_result_columns() -> tuple[str, ...]:
    """Names a manifest may not carry: the results table's columns (read from
    `pipeline.results.RESULT_COLUMNS` at call time) other than the manifest's own."""
    from pipeline.results import RESULT_COLUMNS  # lazy: results pulls in the results schema

    return tuple(c for c in RESULT_COLUMNS if c not in RESERVED_COLUMNS)


def _reserved_problem(names: Iterable[str]) -> Problem | None:
    """One problem naming every carried column that clashes with a results column (compared
    case-insensitively: DuckDB, which `stxpipe query` uses, folds case)."""
    reserved = {c.lower() for c in reserved_result_columns()} | {c.lower() for c in RESERVED_COLUMNS}
    bad = [n for n in names if n not in RESERVED_COLUMNS and str(n).lower() in reserved]
    if not bad:
        return None
    renames = ", ".join(f"{b} -> user_{b}" for b in bad)
    return Problem(
        None,
        ", ".join(bad),
        f"column name(s) reserved: the results table has columns of these names, which the engine fills; "
        f"rename them, e.g. {renames}",
    )


# --------------------------------------------------------------------------------------------
# Params: types, row ids, caching


@functools.lru_cache(maxsize=1)
def _param_kinds() -> dict[str, tuple[bool, type]]:
    """name -> (is_list, element type), read from Params' annotations so new fields need no edit here."""
    kinds = {}
    for name, hint in typing.get_type_hints(Params).items():
        inner = hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `X | None`
            inner = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(inner) is tuple:
            kinds[name] = (True, typing.get_args(inner)[0])
        else:
            kinds[name] = (False, inner)
    return kinds


def is_list_param(name: str) -> bool:
    """True for list-valued params (`style_layers`, `style_blend`, ...)."""
    param_field(name)  # raises ParamError with the closest valid name
    return _param_kinds()[name][0]


_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


@functools.lru_cache(maxsize=1)
def params_struct_type() -> pa.StructType:
    """Arrow struct with one typed, nullable field per `Params` field."""
    out = []
    for name, (is_list, elem) in _param_kinds().items():
        t = _ARROW.get(elem, pa.string())
        out.append(pa.field(name, pa.list_(t) if is_list else t))
    return pa.struct(out)


def row_id_for(content: str, styles: Sequence[str], params: Params) -> str:
    """Stable id of one job: sha256 over the content and style strings as written in the
    manifest and the fully resolved params, first 16 hex chars. Paths as written (not as
    resolved) keep the id of a shipped manifest the same in every clone."""
    key = f'{{"content": {json.dumps(content)}, "params": {_params_json(params)}, "style": {json.dumps(list(styles))}}}'
    return hashlib.sha256(key.encode()).hexdigest()[:ROW_ID_CHARS]


@functools.lru_cache(maxsize=4096)
def _params_json(params: Params) -> str:
    # Params is frozen and hashable; a sweep has few distinct ones, so serialise each once.
    return params.to_json()


def _strip_prefix(e: ParamError) -> str:
    msg = str(e)
    prefix = f"param '{e.field}': "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _column_of(field_name: str) -> str:
    return "params" if field_name == "params" else f"params.{field_name}"


class _ParamsResolver:
    """Resolves raw param mappings to `Params`, once per distinct mapping: a 10,000-row sweep has
    a handful of distinct param sets, and building Params validates layers (imports torch)."""

    def __init__(self, base: Params | None = None):
        self.base = base
        self._cache: dict[str, tuple[Params | None, tuple[tuple[str, str], ...]]] = {}

    def resolve(self, raw: Mapping[str, Any]) -> tuple[Params | None, tuple[tuple[str, str], ...]]:
        """(params or None, ((column, message), ...)): every problem, not just the first."""
        data = {k: v for k, v in raw.items() if v is not None}
        key = json.dumps(data, sort_keys=True, default=str)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(data)
        return hit

    def _resolve(self, data: dict[str, Any]) -> tuple[Params | None, tuple[tuple[str, str], ...]]:
        problems: list[tuple[str, str]] = []
        # Params raises on the first bad field; drop it and retry, so one row reports all its
        # bad fields. Stops when an error names a field not in the row (a cross-field check
        # against a default), which dropping cannot fix.
        while True:
            try:
                params = Params.from_dict(data, base=self.base)
                return (None if problems else params), tuple(problems)
            except ParamError as e:
                problems.append((_column_of(e.field), _strip_prefix(e)))
                if e.field not in data:
                    return None, tuple(problems)
                del data[e.field]


def _explicit_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Coerced values of the explicitly set (non-null) params; raises ParamError."""
    data = {k: v for k, v in (raw or {}).items() if v is not None}
    resolved = Params.from_dict(data)
    return {k: (list(v) if isinstance(v, tuple) else v) for k in data for v in [getattr(resolved, k)]}


def non_default_params(params: Params) -> dict[str, Any]:
    """The fields of `params` that differ from the engine's defaults (for display and writing)."""
    default = _default_params()
    return {k: v for k, v in params.to_dict().items() if v != default[k]}


@functools.lru_cache(maxsize=1)
def _default_params() -> dict[str, Any]:
    return Params().to_dict()


# --------------------------------------------------------------------------------------------
# Writing


def _as_spec(row: RowSpec | ManifestRow | Mapping[str, Any]) -> RowSpec:
    if isinstance(row, RowSpec):
        return row
    if isinstance(row, ManifestRow):
        # A resolved row no longer knows which params were set explicitly; writing those that
        # differ from the defaults is the closest faithful form.
        return RowSpec(row.content, tuple(row.styles), non_default_params(row.params), row.row_id, dict(row.extra))
    data = dict(row)
    style = data.pop("style", None)
    styles = (style,) if isinstance(style, str) else tuple(style or ())
    params = data.pop("params", None) or {}
    if isinstance(params, str):
        params = json.loads(params) if params.strip() else {}
    return RowSpec(data.pop("content", None), styles, params, data.pop("row_id", None), data)


def write_manifest(rows: Iterable[RowSpec | ManifestRow | Mapping[str, Any]], path: str | os.PathLike) -> pa.Table:
    """Write rows as a Parquet manifest; returns the table written.

    Rows are `RowSpec`s, `ManifestRow`s or dicts with `content`, `style` (str or list), `params`
    (dict), optional `row_id` and any other keys (carried through). `params` becomes a struct
    column holding only the explicitly set fields (null elsewhere, so defaults stay the
    engine's); `row_id` is filled with `row_id_for` where missing. Raises ManifestError listing
    every bad row (unknown or bad params, missing content/style, duplicate ids)."""
    specs = [_as_spec(r) for r in rows]
    problems: list[Problem] = []
    resolver = _ParamsResolver()
    explicit_cache: dict[str, dict[str, Any]] = {}
    contents, styles, params_col, ids = [], [], [], []
    seen: dict[str, int] = {}
    for i, s in enumerate(specs):
        if not s.content or not isinstance(s.content, str):
            problems.append(Problem(i, "content", "missing; give a path or URI"))
        if not s.styles or not all(isinstance(x, str) and x for x in s.styles):
            problems.append(Problem(i, "style", "missing; give a path or URI (or a list for a blend)"))
        raw = {k: v for k, v in dict(s.params).items() if v is not None}
        params, bad = resolver.resolve(raw)
        problems += [Problem(i, c, m) for c, m in bad]
        if params is not None:
            problems += [Problem(i, c, m) for c, m in _blend_problems(params, len(s.styles))]
        key = json.dumps(raw, sort_keys=True, default=str)
        if params is not None and key not in explicit_cache:
            explicit_cache[key] = _explicit_params(raw)
        explicit = explicit_cache.get(key, {})
        rid = s.row_id
        if rid is not None and row_id_problem(rid):
            problems.append(Problem(i, "row_id", row_id_problem(rid)))
        if rid is None and params is not None and s.content and s.styles:
            rid = row_id_for(s.content, s.styles, params)
        if rid is not None:
            if rid in seen:
                problems.append(Problem(i, "row_id", f"duplicate row_id '{rid}' (first at row {seen[rid]}); the same job is listed twice: drop one row or give each its own row_id"))
            else:
                seen[rid] = i
        contents.append(s.content)
        styles.append(list(s.styles))
        params_col.append(explicit)
        ids.append(rid)
    if problems:
        raise ManifestError(os.fspath(path), problems)

    blend = any(len(s) > 1 for s in styles)
    columns: dict[str, pa.Array] = {
        "content": pa.array(contents, pa.string()),
        # A plain string column unless some row blends styles: simplest for users' own SQL.
        "style": pa.array(styles, pa.list_(pa.string())) if blend else pa.array([s[0] for s in styles], pa.string()),
        "params": pa.array(params_col, params_struct_type()),
        "row_id": pa.array(ids, pa.string()),
    }
    extra_names: list[str] = []
    for s in specs:
        extra_names += [k for k in s.extra if k not in extra_names]
    own = [n for n in extra_names if n in RESERVED_COLUMNS]
    if own:
        raise ManifestError(os.fspath(path), [Problem(None, ", ".join(own), "an extra column may not use the manifest's own column names")])
    clash = _reserved_problem(extra_names)
    if clash:
        raise ManifestError(os.fspath(path), [clash])
    for name in extra_names:
        columns[name] = pa.array([s.extra.get(name) for s in specs])
    table = pa.table(columns)
    out = os.fspath(path)
    if storage.is_remote(out):
        fs, p = storage.filesystem(out)
        pq.write_table(table, p, filesystem=fs)
    else:
        local = storage.local_path(out)
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, local)
    return table


def _blend_problems(params: Params, n_styles: int) -> list[tuple[str, str]]:
    if n_styles > MAX_STYLES:
        return [("style", f"{n_styles} style images in one blend; a blend takes at most {MAX_STYLES}: split the row or drop styles")]
    if params.style_blend is not None and len(params.style_blend) != n_styles:
        return [("params.style_blend", f"has {len(params.style_blend)} weight(s) for {n_styles} style image(s); give one weight per style")]
    return []


# --------------------------------------------------------------------------------------------
# Reading and validating


def _read_table(path: str) -> pa.Table:
    if storage.is_remote(path):
        fs, p = storage.filesystem(path)
        return pq.read_table(p, filesystem=fs)
    local = storage.local_path(path)
    return pq.read_table(local)


def _is_str(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _is_str_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_str(t.value_type)


def _schema_problems(schema: pa.Schema) -> list[Problem]:
    problems = []
    names = schema.names
    for col in REQUIRED_COLUMNS:
        if col not in names:
            problems.append(Problem(None, col, f"required column is missing (columns present: {', '.join(names) or 'none'})"))
    if "content" in names and not _is_str(schema.field("content").type):
        problems.append(Problem(None, "content", f"must be a string column of paths/URIs, found {schema.field('content').type}"))
    if "style" in names:
        t = schema.field("style").type
        if not (_is_str(t) or _is_str_list(t)):
            problems.append(Problem(None, "style", f"must be a string column or a list of strings (blend), found {t}"))
    if "params" in names:
        t = schema.field("params").type
        if not (pa.types.is_struct(t) or _is_str(t)):
            problems.append(Problem(None, "params", f"must be a struct of param fields or a JSON string, found {t}"))
    if "row_id" in names and not _is_str(schema.field("row_id").type):
        problems.append(Problem(None, "row_id", f"must be a string column, found {schema.field('row_id').type}"))
    for name in names:
        if names.count(name) > 1:
            problems.append(Problem(None, name, "column appears more than once"))
    return problems


def _probe(uri: str, max_pixels: int | None) -> str | tuple[int, int]:
    """(height, width) of `uri` after EXIF orientation if it exists and decodes within the size
    guard, else what is wrong with it."""
    # Local import: images.py pulls in Pillow (and is owned by the engine); manifests that
    # skip the file check never need it.
    from stylecore.images import ImageError, probe_image

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    try:
        if is_uri(uri):
            w, h = probe_image(read_bytes(uri), name=uri, **kwargs)
        else:
            why = local_file_problem(uri)  # stat only: a FIFO or device is never opened
            if why:
                return why
            w, h = probe_image(uri, name=uri, **kwargs)
    except FileNotFoundError:
        return f"file not found: {uri}"
    except ImageError as e:
        return str(e)
    except OSError as e:
        return str(e) if str(e).startswith(uri) else f"cannot read {uri}: {e}"
    except Exception as e:  # noqa: BLE001 - one odd file must not hide the other rows' problems
        return f"cannot check {uri}: {type(e).__name__}: {e}"
    return h, w


def _probe_all(uris: Iterable[str], max_pixels: int | None, threads: int) -> dict[str, str | tuple[int, int]]:
    distinct = list(dict.fromkeys(uris))
    if not distinct:
        return {}
    n = max(1, min(threads, len(distinct)))
    if n == 1:
        return {u: _probe(u, max_pixels) for u in distinct}
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="manifest-probe") as pool:
        return dict(zip(distinct, pool.map(lambda u: _probe(u, max_pixels), distinct)))


def _size_problems(i: int, params: Params, content_hw: Any, style_hws: Sequence[Any], cache: dict) -> list[Problem]:
    """Row `i`'s images against the pooling stages (`stylecore.params.image_side_problems`, with
    the worker's metrics), once per distinct (params, sizes). Unprobed or bad files are skipped."""
    if not isinstance(content_hw, tuple) or not all(isinstance(x, tuple) for x in style_hws):
        return []
    key = (params, content_hw, tuple(style_hws))
    hit = cache.get(key)
    if hit is None:
        from stylecore.params import image_side_problems

        hit = cache[key] = image_side_problems(params, content_hw, style_hws, metrics=True)
    return [Problem(i, f"params.{field}", message) for field, message in hit]


def validate_manifest(
    path: str | os.PathLike,
    *,
    check_files: bool = True,
    max_pixels: int | None = None,
    base: Params | None = None,
    threads: int = 8,
) -> ValidationReport:
    """Read and check a manifest, collecting EVERY problem: schema, carried columns named like
    results columns, param names (with the closest valid name) and values within the bounds of
    `stylecore.params`, JSON params shape, blend lengths and styles per blend, row_id format,
    missing/undecodable/oversized/disallowed-format files and FIFOs or devices (each distinct file
    decoded once), images too small for the layers' pooling stages (with the smallest workable
    size), duplicate ids. `base` is the Params that null fields fall back to (default:
    the engine's defaults); `max_pixels` overrides the image size guard. Raises
    FileNotFoundError when the manifest itself is missing, ManifestError when it is not Parquet."""
    path = os.fspath(path)
    try:
        table = _read_table(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such manifest file: {path}; check the path (or build one with `stxpipe manifest build`)") from None
    except (pa.ArrowException, OSError) as e:
        raise ManifestError(path, [Problem(None, "-", f"cannot read it as Parquet ({e}); write manifests with `stxpipe manifest build` or pyarrow")]) from None
    schema_problems = _schema_problems(table.schema)
    if schema_problems:
        return ValidationReport(path, table.num_rows, (), tuple(schema_problems), 0)

    folder = _manifest_dir(path)
    n = table.num_rows
    contents = table.column("content").to_pylist()
    raw_styles = table.column("style").to_pylist()
    has_params = "params" in table.column_names
    raw_params = table.column("params").to_pylist() if has_params else [None] * n
    params_is_json = has_params and _is_str(table.schema.field("params").type)
    raw_ids = table.column("row_id").to_pylist() if "row_id" in table.column_names else [None] * n
    extra_names = [c for c in table.column_names if c not in RESERVED_COLUMNS]
    extra_cols = {c: table.column(c).to_pylist() for c in extra_names}

    problems: list[Problem] = [p for p in [_reserved_problem(extra_names)] if p]
    resolver = _ParamsResolver(base)
    json_cache: dict[str, dict | ParamError] = {}
    resolved_cache: dict[str, str] = {}

    def resolve(i: int, column: str, ref: str) -> str:
        r = resolved_cache.get(ref)
        if r is None:
            try:
                r = resolve_path(ref, folder)
            except ValueError as e:  # e.g. file://otherhost/...: report it, keep validating
                problems.append(Problem(i, column, str(e)))
                return ""
            resolved_cache[ref] = r
        return r

    # (index, row_id or None, resolved content, resolved styles, Params or None if unusable)
    pending: list[tuple[int, str | None, str, tuple[str, ...], Params | None]] = []
    for i in range(n):
        content, style, raw, rid = contents[i], raw_styles[i], raw_params[i], raw_ids[i]
        usable = True
        if content is None or not content.strip():
            problems.append(Problem(i, "content", "missing (null or empty); give a path or URI"))
            usable = False
        styles_raw: tuple[str, ...] = (style,) if isinstance(style, str) else tuple(style or ())
        if not styles_raw or any(s is None or not s.strip() for s in styles_raw):
            problems.append(Problem(i, "style", "missing (null or empty); give a path or URI, or a list of them for a blend"))
            usable = False
            styles_raw = tuple(s for s in styles_raw if s and s.strip())

        # Struct rows arrive as dicts (null = unset); JSON strings are parsed once per distinct text.
        if params_is_json and raw is not None:
            parsed = json_cache.get(raw)
            if parsed is None:
                parsed = json_cache[raw] = _parse_params_json(raw)
            raw = parsed
        params: Params | None = None
        if isinstance(raw, ParamError):
            problems.append(Problem(i, "params", _strip_prefix(raw)))
        else:
            params, bad = resolver.resolve(raw or {})
            problems += [Problem(i, c, m) for c, m in bad]
        if params is not None and styles_raw:
            blend = _blend_problems(params, len(styles_raw))
            problems += [Problem(i, c, m) for c, m in blend]
            if blend:
                params = None

        if rid is not None and not rid.strip():
            problems.append(Problem(i, "row_id", "empty string; leave it null for the default id or give a unique id"))
            rid = None
        elif rid is not None and row_id_problem(rid):
            problems.append(Problem(i, "row_id", row_id_problem(rid)))
            rid = ""  # no default id in its place (it would only add duplicates); the row is dropped
        if rid is None and params is not None and usable:
            rid = row_id_for(content, styles_raw, params)
        res_content = resolve(i, "content", content) if content and content.strip() else ""
        res_styles = tuple(resolve(i, "style", s) for s in styles_raw)
        if not res_content or not all(res_styles):
            usable = False
        pending.append((i, rid, res_content, tuple(s for s in res_styles if s), params if usable else None))

    # Duplicate ids, once all are known (explicit and computed ids share one namespace).
    seen: dict[str, int] = {}
    for i, rid, *_ in pending:
        if not rid:
            continue
        if rid in seen:
            problems.append(Problem(i, "row_id", f"duplicate row_id '{rid}' (first at row {seen[rid]}); drop the repeated row or give each its own row_id"))
        else:
            seen[rid] = i

    status: dict[str, str | tuple[int, int]] = {}
    if check_files:
        status = _probe_all((u for _, _, c, ss, _ in pending for u in ((c,) if c else ()) + ss), max_pixels, threads)
        sizes: dict = {}
        for i, _, res_content, res_styles, params in pending:
            if res_content and isinstance(status[res_content], str):
                problems.append(Problem(i, "content", status[res_content]))
            problems += [Problem(i, "style", status[s]) for s in res_styles if isinstance(status[s], str)]
            if params is not None and res_content:
                problems += _size_problems(i, params, status[res_content], [status[s] for s in res_styles], sizes)

    rows = tuple(
        ManifestRow(i, rid, res_content, res_styles, params, {c: extra_cols[c][i] for c in extra_names})
        for i, rid, res_content, res_styles, params in pending
        if params is not None and rid
    )
    problems.sort(key=lambda p: -1 if p.row is None else p.row)  # stable: a row's problems keep their order
    return ValidationReport(path, n, rows, tuple(problems), len(status))


def _parse_params_json(text: str) -> dict | ParamError:
    """The parsed object, or the ParamError (bounds: `stylecore.params.parse_params_json`)."""
    try:
        return parse_params_json(text)
    except ParamError as e:
        return e


def read_manifest(
    path: str | os.PathLike,
    *,
    check_files: bool = False,
    max_pixels: int | None = None,
    base: Params | None = None,
) -> list[ManifestRow]:
    """The manifest's rows, resolved (absolute paths/URIs, full Params, ids, extra columns).

    Raises ManifestError listing every problem if any row is unusable. Files are only probed
    with `check_files=True` (workers decode them anyway and report per-row errors)."""
    report = validate_manifest(path, check_files=check_files, max_pixels=max_pixels, base=base)
    if report.problems:
        raise ManifestError(report.path, report.problems)
    return list(report.rows)


# --------------------------------------------------------------------------------------------
# Building


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


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, coerced value). Raises ParamError for unknown names or bad values."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamError(key or text, f"expected key=value, got '{text}'")
    return key, _coerce_one(key, value.strip())


def parse_sweep(text: str) -> tuple[str, tuple]:
    """`key=v1,v2,...` -> (key, coerced values). List-valued params separate values with `;`
    (their items with `,`): `style_layers=pool1;pool2`. Scalars accept `,` or `;`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamError(key or text, f"expected key=v1,v2,..., got '{text}'")
    parts = value.split(";") if is_list_param(key) else re.split(r"[,;]", value)
    values = tuple(_coerce_one(key, v.strip()) for v in parts if v.strip())
    if not values:
        raise ParamError(key, f"sweep '{text}' lists no values")
    dupes = sorted({_fmt_value(v) for v in values if values.count(v) > 1})
    if dupes:
        raise ParamError(key, f"sweep lists {', '.join(dupes)} more than once")
    return key, values


def _coerce_one(key: str, value: str) -> Any:
    # Params does the coercion (one place for types); a value valid on its own may still clash
    # with another param, which the per-combination check in plan_manifest reports.
    v = getattr(Params.from_dict({key: value}), key)
    return list(v) if isinstance(v, tuple) else v


def _fmt_value(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


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
        return sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File and os.path.splitext(i.path)[1].lower() in IMAGE_SUFFIXES)
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
            raise ValueError(f"{path}: CSV needs columns content,style; missing {', '.join(missing)} (found {', '.join(reader.fieldnames or [])})")
        clash = [c for c in reader.fieldnames or [] if c in ("params", "row_id")]
        if clash:
            raise ValueError(f"{path}: CSV column(s) {', '.join(clash)} are not read by build; use --param/--sweep, or write the manifest with pipeline.manifest.write_manifest")
        out = []
        for line, rec in enumerate(reader, start=2):
            content = (rec.pop("content") or "").strip()
            styles = tuple(s.strip() for s in (rec.pop("style") or "").split(";") if s.strip())
            if not content or not styles:
                raise ValueError(f"{path}, line {line}: content and style must both be set")
            out.append((resolve_path(content, folder), tuple(resolve_path(s, folder) for s in styles), rec))
    return out


def plan_manifest(config: BuildConfig, output: str | os.PathLike) -> tuple[list[RowSpec], BuildSummary]:
    """The rows `config` describes (paths as they will be written to `output`) and a summary."""
    out = os.fspath(output)
    fixed = dict(parse_param(p) for p in config.params)
    if len(fixed) != len(config.params):
        raise ValueError("a --param key is given twice; give each key once")
    sweeps = [parse_sweep(s) for s in config.sweeps]
    keys = [k for k, _ in sweeps]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"--sweep {k} is given twice; list all its values in one --sweep")
        if k in fixed:
            raise ValueError(f"'{k}' is both a --param and a --sweep; keep one")

    if config.csv:
        if config.contents or config.styles:
            raise ValueError("give either --csv or --content/--style, not both")
        pairs = _read_csv(config.csv)
    else:
        if not config.contents or not config.styles:
            raise ValueError("give at least one --content and one --style (file, folder or glob), or --csv")
        contents = expand_inputs(config.contents, "content")
        styles = expand_inputs(config.styles, "style")
        if config.pair:
            if len(contents) != len(styles):
                raise ValueError(f"--pair needs as many contents as styles; got {len(contents)} contents and {len(styles)} styles")
            pairs = [(c, (s,), {}) for c, s in zip(contents, styles)]
        else:
            pairs = [(c, (s,), {}) for c in contents for s in styles]

    # Check each parameter combination once, up front: a bad combination is one message, not
    # one per row.
    combos = [dict(fixed, **dict(zip(keys, values))) for values in itertools.product(*(v for _, v in sweeps))]
    for combo in combos:
        try:
            Params.from_dict(combo)
        except ParamError as e:
            shown = " ".join(f"{k}={_fmt_value(v)}" for k, v in combo.items())
            raise ParamError(e.field, f"{_strip_prefix(e)} (in the combination {shown})") from None

    out_dir = _manifest_dir(out)
    written: dict[str, str] = {}

    def as_written(p: str) -> str:
        w = written.get(p)
        if w is None:
            w = written[p] = os.path.relpath(p, out_dir) if config.relative and not is_uri(p) else p
        return w

    rows = [
        RowSpec(as_written(c), tuple(as_written(s) for s in ss), combo, None, extra)
        for c, ss, extra in pairs
        for combo in combos
    ]
    summary = BuildSummary(
        out,
        len(rows),
        len({c for c, _, _ in pairs}),
        len({s for _, ss, _ in pairs for s in ss}),
        fixed,
        tuple(sweeps),
    )
    return rows, summary


def build_manifest(config: BuildConfig, output: str | os.PathLike) -> BuildSummary:
    """Expand `config` into rows and write them to `output` as a Parquet manifest."""
    rows, summary = plan_manifest(config, output)
    write_manifest(rows, output)
    return summary


# --------------------------------------------------------------------------------------------
# Display


def format_problems(problems: Sequence[Problem]) -> list[str]:
    """One line per distinct (column, message), listing its rows as ranges (`rows 0-99, 120`):
    a missing image shared by 5,000 rows is one line, not 5,000."""
    groups: dict[tuple[str, str], list[int | None]] = {}
    for p in problems:
        groups.setdefault((p.column, p.message), []).append(p.row)
    lines = []
    for (column, message), rows in groups.items():
        nums = sorted(r for r in rows if r is not None)
        where = "manifest" if not nums else ("row " if len(nums) == 1 else "rows ") + row_ranges(nums)
        lines.append(f"{where}, {column}: {message}")
    return lines


def row_ranges(nums: Sequence[int], limit: int | None = None) -> str:
    """`0-9999`, or `1, 3, 5-9`; past `limit` runs: `…, (N rows)`. `nums` sorted, unique."""
    parts, start, prev = [], nums[0], nums[0]
    for x in [*nums[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    if limit is not None and len(parts) > limit:
        return ", ".join(parts[:limit]) + f", … ({len(nums)} rows)"
    return ", ".join(parts)


def describe_manifest(report: ValidationReport, *, limit: int | None = 50) -> list[str]:
    """The rows as a text table (paths shortened against the manifest's folder, only params that
    differ from the defaults), then counts."""
    folder = _manifest_dir(report.path)

    def short(p: str) -> str:
        if is_uri(p) or is_uri(folder):
            return p
        rel = os.path.relpath(p, folder)
        return rel if len(rel) < len(p) else p

    shown = report.rows if limit is None else report.rows[:limit]
    extra_names = list(dict.fromkeys(k for r in shown for k in r.extra))
    header = ["row", "row_id", "content", "style", *extra_names, "params (non-default)"]
    table = [header]
    for r in shown:
        params = " ".join(f"{k}={_fmt_value(v)}" for k, v in non_default_params(r.params).items()) or "-"
        cells = [str(r.index), r.row_id, short(r.content), " + ".join(short(s) for s in r.styles)]
        cells += [_fmt_cell(r.extra.get(k)) for k in extra_names] + [params]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    if len(shown) < len(report.rows):
        lines.append(f"... {len(report.rows) - len(shown)} more rows (--limit 0 shows all)")
    param_sets = len({r.params for r in report.rows})
    lines.append("")
    lines.append(
        f"{report.n_rows} rows, {len({r.content for r in report.rows})} distinct contents, "
        f"{len({s for r in report.rows for s in r.styles})} distinct styles, {param_sets} distinct param sets"
    )
    varying = _varying_params(report.rows)
    if varying:
        lines.append("params that vary: " + ", ".join(f"{k} ({n} values)" for k, n in varying.items()))
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s) hide {report.n_rows - len(report.rows)} row(s); run `stxpipe manifest validate {report.path}`")
    return lines


def _fmt_cell(v: Any) -> str:
    return "" if v is None else _fmt_value(v)


def _varying_params(rows: Sequence[ManifestRow]) -> dict[str, int]:
    seen: dict[str, set] = {}
    for p in {r.params for r in rows}:
        for k, v in p.to_dict().items():
            seen.setdefault(k, set()).add(json.dumps(v))
    return {k: len(v) for k, v in seen.items() if len(v) > 1}
