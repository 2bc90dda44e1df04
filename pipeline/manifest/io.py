"""Reading and writing manifest files (local paths or URIs, through `pipeline.storage`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.manifest.schema import (
    RESERVED_COLUMNS,
    ManifestError,
    ManifestRow,
    Problem,
    RowSpec,
    _blend_problems,
    _explicit_params,
    _ParamsResolver,
    _reserved_problem,
    non_default_params,
    params_struct_type,
    row_id_for,
    row_id_problem,
)


def read_table(path: str) -> pa.Table:
    """The Parquet table at `path` (local path, `file://` or a remote URI)."""
    if storage.is_remote(path):
        fs, p = storage.filesystem(path)
        return pq.read_table(p, filesystem=fs)
    return pq.read_table(storage.local_path(path))


def write_table(table: pa.Table, path: str) -> None:
    """Write `table` as Parquet at `path`, creating local parent folders."""
    if storage.is_remote(path):
        fs, p = storage.filesystem(path)
        pq.write_table(table, p, filesystem=fs)
        return
    local = storage.local_path(path)
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, local)


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
    out = os.fspath(path)
    specs = [_as_spec(r) for r in rows]
    problems, params_col, ids = _check_specs(specs)
    if problems:
        raise ManifestError(out, problems)
    table = _manifest_table(specs, params_col, ids, out)
    write_table(table, out)
    return table


def _check_specs(specs: list[RowSpec]) -> tuple[list[Problem], list[dict[str, Any]], list[str | None]]:
    """(every problem, the explicit params of each row, each row's id (computed where missing))."""
    problems: list[Problem] = []
    resolver = _ParamsResolver()
    explicit_cache: dict[str, dict[str, Any]] = {}
    params_col: list[dict[str, Any]] = []
    ids: list[str | None] = []
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
        rid = s.row_id
        if rid is not None and (why := row_id_problem(rid)):
            problems.append(Problem(i, "row_id", why))
        if rid is None and params is not None and s.content and s.styles:
            rid = row_id_for(s.content, s.styles, params)
        if rid is not None:
            if rid in seen:
                problems.append(
                    Problem(
                        i,
                        "row_id",
                        f"duplicate row_id '{rid}' (first at row {seen[rid]}); the same job is listed twice: drop one row or give each its own row_id",
                    )
                )
            else:
                seen[rid] = i
        params_col.append(explicit_cache.get(key, {}))
        ids.append(rid)
    return problems, params_col, ids


def _manifest_table(specs: list[RowSpec], params_col: list[dict[str, Any]], ids: list[str | None], out: str) -> pa.Table:
    styles = [list(s.styles) for s in specs]
    blend = any(len(s) > 1 for s in styles)
    columns: dict[str, pa.Array] = {
        "content": pa.array([s.content for s in specs], pa.string()),
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
        raise ManifestError(out, [Problem(None, ", ".join(own), "an extra column may not use the manifest's own column names")])
    clash = _reserved_problem(extra_names)
    if clash:
        raise ManifestError(out, [clash])
    for name in extra_names:
        columns[name] = pa.array([s.extra.get(name) for s in specs])
    return pa.table(columns)
