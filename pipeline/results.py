"""Results table: schema, appending Parquet parts as rows finish, reading the latest per row.

Layout: `<out>/results/part-<utc time>-<uuid>.parquet`, one small file per finished batch, so
a crash loses at most the rows in flight. A row may appear in several parts (a retry, a forced
rerun); readers take the latest `finished_at` per `row_id`. `<out>` is a local path or a URI
that `pyarrow.fs` understands (`s3://bucket/prefix`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import uuid
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stylecore.params import Params

STATUS_OK = "ok"
STATUS_ERROR = "error"


def _params_type() -> pa.StructType:
    """Arrow struct of every Params field, typed from the dataclass defaults."""
    types = {
        int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string(),
    }
    out = []
    for f in dataclasses.fields(Params):
        name = f.name
        if name in ("content_layers", "style_layers"):
            t = pa.list_(pa.string())
        elif name in ("style_layer_weights", "style_blend"):
            t = pa.list_(pa.float64())
        elif name == "lr":
            t = pa.float64()
        else:
            t = types[type(f.default)]
        out.append(pa.field(name, t))
    return pa.struct(out)


PARAMS_TYPE = _params_type()
TS = pa.timestamp("us", tz="UTC")

# The contract (design.md, "Data contracts"), plus a few extras users asked for: gram_style (a
# scale-free style distance), loss_total, lpips_weights, attempt.
RESULT_FIELDS = [
    pa.field("row_id", pa.string(), nullable=False),
    pa.field("content", pa.string()),
    pa.field("style", pa.string()),  # one path/URI; a blend's paths joined with ';'
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("output", pa.string()),
    pa.field("lpips_style", pa.float64()),
    pa.field("lpips_content", pa.float64()),
    pa.field("gram_style", pa.float64()),
    pa.field("loss_content", pa.float64()),
    pa.field("loss_style", pa.float64()),
    pa.field("loss_tv", pa.float64()),
    pa.field("loss_total", pa.float64()),
    pa.field("iterations", pa.int64()),
    pa.field("seconds", pa.float64()),
    pa.field("weights", pa.string()),
    pa.field("lpips_weights", pa.string()),
    pa.field("device", pa.string()),
    pa.field("worker", pa.string()),
    pa.field("attempt", pa.int64()),
    pa.field("started_at", TS),
    pa.field("finished_at", TS),
    pa.field("params", PARAMS_TYPE),
]
RESULT_COLUMNS = [f.name for f in RESULT_FIELDS]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def results_dir(out: str) -> str:
    return join(out, "results")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Result rows (dicts with RESULT_COLUMNS plus carried-through columns) -> Arrow table."""
    rows = list(rows)
    arrays = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in RESULT_FIELDS}
    extras = dict.fromkeys(k for r in rows for k in r if k not in arrays)
    for name in extras:  # carried-through manifest columns, types inferred (null parts promote on read)
        arrays[name] = pa.array([r.get(name) for r in rows])
    schema = pa.schema(list(RESULT_FIELDS) + [pa.field(n, arrays[n].type) for n in extras])
    return pa.table(list(arrays.values()), schema=schema)


def write_part(out: str, table: pa.Table) -> str:
    """Write one Parquet part under `<out>/results/`; atomic on local disks (temp + rename),
    and object stores publish whole objects. Returns the part's path."""
    fs, base = filesystem(results_dir(out))
    fs.create_dir(base, recursive=True)
    name = f"part-{now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:12]}.parquet"
    final = join(base, name)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = join(base, f".{name}.tmp")
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, final)
    else:
        pq.write_table(table, final, filesystem=fs)
    return final


def part_paths(out: str) -> list[str]:
    fs, base = filesystem(results_dir(out))
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith("."))


def read_all(out: str) -> pa.Table | None:
    """Every result row ever written (all attempts), or None when there is none."""
    paths = part_paths(out)
    if not paths:
        return None
    fs, _ = filesystem(results_dir(out))
    tables = [pq.read_table(p, filesystem=fs) for p in paths]
    return pa.concat_tables(tables, promote_options="default")


def latest(table: pa.Table) -> pa.Table:
    """One row per row_id: the latest finished_at (ties: the later part)."""
    if table.num_rows == 0:
        return table
    idx = pa.array(range(table.num_rows), pa.int64())
    t = table.append_column("__i", idx)
    order = pc.sort_indices(t, sort_keys=[("row_id", "ascending"), ("finished_at", "descending"), ("__i", "descending")])
    t = t.take(order)
    ids = t.column("row_id").to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    return t.take(pa.array(keep, pa.int64())).drop_columns(["__i"])


def read_results(out: str) -> pa.Table | None:
    """The results table as users see it: latest row per row_id."""
    t = read_all(out)
    return None if t is None else latest(t)


def done_ids(out: str) -> set[str]:
    """row_ids whose latest result is ok: what a resumed submit skips."""
    t = read_results(out)
    if t is None:
        return set()
    ok = pc.equal(t.column("status"), STATUS_OK)
    return set(t.filter(ok).column("row_id").to_pylist())
