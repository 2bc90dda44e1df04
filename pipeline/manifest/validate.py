"""Manifest validation: every problem (row, column, what to do), not just the first.

`validate_manifest` reads the table, checks its schema, then runs small checks: each row goes
through `ROW_CHECKS` in order (content, style, params, row_id, paths), each check adding the
problems it finds and what it learned (the resolved params, the row id, the resolved paths) to
the row; then `TABLE_CHECKS` look across rows (duplicate ids, then files: existence, decoding
within the size guard, sizes against the pooling stages, each distinct file once). A check is a
function returning a list of `Problem`s; adding one is one function and one entry in a tuple."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import storage
from pipeline.manifest.io import read_table as _read_table
from pipeline.manifest.schema import (
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    ManifestError,
    ManifestRow,
    Problem,
    ValidationReport,
    _blend_problems,
    _manifest_dir,
    _ParamsResolver,
    _reserved_problem,
    _strip_prefix,
    resolve_path,
    row_id_for,
    row_id_problem,
)
from stylecore.params import ParamError, Params, parse_params_json

# --------------------------------------------------------------------------------------------
# Schema


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


# --------------------------------------------------------------------------------------------
# What the checks read and build


@dataclass
class _Context:
    """The manifest's columns as Python lists, plus the caches the row checks share."""

    path: str
    folder: str
    n: int
    contents: list
    styles: list
    params: list
    params_is_json: bool
    ids: list
    extra: dict[str, list]
    resolver: _ParamsResolver
    check_files: bool = True
    max_pixels: int | None = None
    threads: int = 8
    json_cache: dict[str, dict | ParamError] = field(default_factory=dict)
    resolved: dict[str, str] = field(default_factory=dict)
    files_checked: int = 0

    @classmethod
    def of(cls, table: pa.Table, path: str, base: Params | None, **options: Any) -> _Context:
        n = table.num_rows
        has_params = "params" in table.column_names
        return cls(
            path=path,
            folder=_manifest_dir(path),
            n=n,
            contents=table.column("content").to_pylist(),
            styles=table.column("style").to_pylist(),
            params=table.column("params").to_pylist() if has_params else [None] * n,
            params_is_json=has_params and _is_str(table.schema.field("params").type),
            ids=table.column("row_id").to_pylist() if "row_id" in table.column_names else [None] * n,
            extra={c: table.column(c).to_pylist() for c in table.column_names if c not in RESERVED_COLUMNS},
            resolver=_ParamsResolver(base),
            **options,
        )


@dataclass
class _Row:
    """One row as the checks build it up. `row_id` None: not given (a default is computed when
    the row is usable); "": refused (no default in its place, the row is dropped)."""

    index: int
    content: str | None = None
    styles: tuple[str, ...] = ()
    params: Params | None = None
    row_id: str | None = None
    usable: bool = True
    res_content: str = ""
    res_styles: tuple[str, ...] = ()

    def manifest_row(self, extra: dict[str, Any]) -> ManifestRow | None:
        """The validated job, or None unless usable: params resolved, paths resolved, an id."""
        if self.params is None or not self.usable or not self.row_id:
            return None
        return ManifestRow(self.index, self.row_id, self.res_content, self.res_styles, self.params, extra)


# --------------------------------------------------------------------------------------------
# Row checks, in order: each may rely on what the ones before it set


def _check_content(row: _Row, ctx: _Context) -> list[Problem]:
    row.content = ctx.contents[row.index]
    if row.content is None or not row.content.strip():
        row.usable = False
        return [Problem(row.index, "content", "missing (null or empty); give a path or URI")]
    return []


def _check_styles(row: _Row, ctx: _Context) -> list[Problem]:
    style = ctx.styles[row.index]
    styles: tuple[str, ...] = (style,) if isinstance(style, str) else tuple(style or ())
    row.styles = tuple(s for s in styles if s and s.strip())
    if not styles or len(row.styles) < len(styles):
        row.usable = False
        return [Problem(row.index, "style", "missing (null or empty); give a path or URI, or a list of them for a blend")]
    return []


def _check_params(row: _Row, ctx: _Context) -> list[Problem]:
    raw = ctx.params[row.index]
    # Struct rows arrive as dicts (null = unset); JSON strings are parsed once per distinct text.
    if ctx.params_is_json and raw is not None:
        parsed = ctx.json_cache.get(raw)
        if parsed is None:
            parsed = ctx.json_cache[raw] = _parse_params_json(raw)
        raw = parsed
    if isinstance(raw, ParamError):
        return [Problem(row.index, "params", _strip_prefix(raw))]
    row.params, bad = ctx.resolver.resolve(raw or {})
    problems = [Problem(row.index, c, m) for c, m in bad]
    if row.params is not None and row.styles:
        blend = _blend_problems(row.params, len(row.styles))
        problems += [Problem(row.index, c, m) for c, m in blend]
        if blend:
            row.params = None
    return problems


def _check_row_id(row: _Row, ctx: _Context) -> list[Problem]:
    rid = ctx.ids[row.index]
    problems = []
    if rid is not None and not rid.strip():
        problems.append(Problem(row.index, "row_id", "empty string; leave it null for the default id or give a unique id"))
        rid = None
    elif rid is not None and (why := row_id_problem(rid)):
        problems.append(Problem(row.index, "row_id", why))
        rid = ""  # no default id in its place (it would only add duplicates); the row is dropped
    if rid is None and row.params is not None and row.usable and row.content is not None:  # usable: content is set
        rid = row_id_for(row.content, row.styles, row.params)
    row.row_id = rid
    return problems


def _check_paths(row: _Row, ctx: _Context) -> list[Problem]:
    """Resolve content and styles against the manifest's folder (each distinct reference once)."""
    problems: list[Problem] = []

    def resolve(column: str, ref: str) -> str:
        r = ctx.resolved.get(ref)
        if r is None:
            try:
                r = ctx.resolved[ref] = resolve_path(ref, ctx.folder)
            except ValueError as e:  # e.g. file://otherhost/...: report it, keep validating
                problems.append(Problem(row.index, column, str(e)))
                return ""
        return r

    row.res_content = resolve("content", row.content) if row.content and row.content.strip() else ""
    res_styles = tuple(resolve("style", s) for s in row.styles)
    row.res_styles = tuple(s for s in res_styles if s)
    if not row.res_content or not all(res_styles):
        row.usable = False
    return problems


RowCheck = Callable[[_Row, _Context], "list[Problem]"]
ROW_CHECKS: tuple[RowCheck, ...] = (_check_content, _check_styles, _check_params, _check_row_id, _check_paths)


# --------------------------------------------------------------------------------------------
# Table checks: across rows, once every row has been through the row checks


def _check_duplicate_ids(rows: Sequence[_Row], ctx: _Context) -> list[Problem]:
    """Explicit and computed ids share one namespace."""
    seen: dict[str, int] = {}
    problems = []
    for row in rows:
        if not row.row_id:
            continue
        if row.row_id in seen:
            problems.append(
                Problem(
                    row.index,
                    "row_id",
                    f"duplicate row_id '{row.row_id}' (first at row {seen[row.row_id]}); drop the repeated row or give each its own row_id",
                )
            )
        else:
            seen[row.row_id] = row.index
    return problems


def _check_files(rows: Sequence[_Row], ctx: _Context) -> list[Problem]:
    """Every image exists and decodes within the size guard (each distinct file once, in a
    thread pool), and is large enough for the pooling stages of its row's layers."""
    if not ctx.check_files:
        return []
    status = _probe_all((u for r in rows for u in ((r.res_content,) if r.res_content else ()) + r.res_styles), ctx.max_pixels, ctx.threads)
    ctx.files_checked = len(status)
    problems: list[Problem] = []
    sizes: dict = {}
    for r in rows:
        content = status[r.res_content] if r.res_content else None
        if isinstance(content, str):
            problems.append(Problem(r.index, "content", content))
        problems += [Problem(r.index, "style", why) for why in (status[s] for s in r.res_styles) if isinstance(why, str)]
        if r.params is not None and r.usable and r.res_content:
            problems += _size_problems(r.index, r.params, status[r.res_content], [status[s] for s in r.res_styles], sizes)
    return problems


TableCheck = Callable[[Sequence[_Row], _Context], "list[Problem]"]
TABLE_CHECKS: tuple[TableCheck, ...] = (_check_duplicate_ids, _check_files)


# --------------------------------------------------------------------------------------------
# Files


def _probe(uri: str, max_pixels: int | None) -> str | tuple[int, int]:
    """(height, width) of `uri` after EXIF orientation if it exists and decodes within the size
    guard, else what is wrong with it."""
    # Local import: images.py pulls in Pillow (and is owned by the engine); manifests that
    # skip the file check never need it.
    from stylecore.images import ImageError, probe_image

    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    try:
        if storage.is_uri(uri):
            w, h = probe_image(storage.read_bytes(uri), name=uri, **kwargs)
        else:
            why = storage.local_file_problem(uri)  # stat only: a FIFO or device is never opened
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


# --------------------------------------------------------------------------------------------
# The driver


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
    table = _load(path)
    schema_problems = _schema_problems(table.schema)
    if schema_problems:
        return ValidationReport(path, table.num_rows, (), tuple(schema_problems), 0)
    ctx = _Context.of(table, path, base, check_files=check_files, max_pixels=max_pixels, threads=threads)
    problems: list[Problem] = [p for p in [_reserved_problem(list(ctx.extra))] if p]
    rows = [_Row(i) for i in range(ctx.n)]
    for row in rows:
        for check in ROW_CHECKS:
            problems += check(row, ctx)
    for table_check in TABLE_CHECKS:
        problems += table_check(rows, ctx)
    resolved = tuple(m for r in rows if (m := r.manifest_row({c: v[r.index] for c, v in ctx.extra.items()})) is not None)
    problems.sort(key=lambda p: -1 if p.row is None else p.row)  # stable: a row's problems keep their order
    return ValidationReport(path, ctx.n, resolved, tuple(problems), ctx.files_checked)


def _load(path: str) -> pa.Table:
    try:
        return _read_table(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such manifest file: {path}; check the path (or build one with `stxpipe manifest build`)") from None
    except (pa.ArrowException, OSError) as e:
        raise ManifestError(
            path, [Problem(None, "-", f"cannot read it as Parquet ({e}); write manifests with `stxpipe manifest build` or pyarrow")]
        ) from None


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
