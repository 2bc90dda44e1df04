"""Results table: schema, crash-safe Parquet parts, tolerant readers (the output-root lock: `pipeline.lock`).

Layout: `<out>/results/part-<utc time>-<uuid>.parquet`, one small file per written batch, so a
crash loses at most the rows in flight. A row may appear in several parts (a retry, a rerun);
readers take, per `row_id`, the highest `seq` (assigned by the driver, increasing across
attempts and runs: no worker's clock decides), then the latest `finished_at`, then the later
part; the fallbacks matter only for parts older than `seq`, whose rows count as seq 0. A part
that cannot be read (0 bytes, truncated, not Parquet) is skipped with a ResultsWarning naming
it. `<out>` is a local path or a URI that `pyarrow.fs` understands (`s3://bucket/prefix`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import storage

# The output-root lock lives in pipeline.lock; its names stay importable from here.
from pipeline.lock import LOCK_NAME, OutputLockedError, _lock_object, lock_output  # noqa: F401
from pipeline.manifest.schema import params_struct_type
from pipeline.storage import filesystem, join

STATUS_OK = "ok"
STATUS_ERROR = "error"


class ResultsWarning(UserWarning):
    """Results read or written not quite as stored: a damaged part skipped, a column as text."""


TS = pa.timestamp("us", tz="UTC")

# Per-layer style metrics: {"gram": {layer: value}, "w2": {layer: value}} (DuckDB: x.gram['conv3_1']).
STYLE_LAYERS_TYPE = pa.struct([("gram", pa.map_(pa.string(), pa.float64())), ("w2", pa.map_(pa.string(), pa.float64()))])
CURVE_TERMS = ("total", "content", "style", "tv", "hist")
# A row's losses by step, decimated to <= CURVE_POINTS points (`loss_curve`): `step`
# counts the row's steps over all scales (1 = after the first), one list per term (unweighted terms,
# weighted total; a term the engine did not record, e.g. hist when off, is empty), and
# `scale_start` the number of steps done when each scale began (0 for the first).
LOSS_CURVE_TYPE = pa.struct(
    [("step", pa.list_(pa.int32()))] + [(t, pa.list_(pa.float32())) for t in CURVE_TERMS] + [("scale_start", pa.list_(pa.int32()))]
)
CURVE_POINTS = 256


def result_fields(params_cls: type | None = None) -> list[pa.Field]:
    """The results table's columns; `params` is the struct of every field of `params_cls`
    (default `Params`), typed from its annotations (`pipeline.manifest.params_struct_type`).

    The contract (design.md, "Data contracts"), plus a few extras users asked for: gram_style (a
    scale-free style distance), loss_total, lpips_weights, lpips_calibrated (Distance measured on
    the paper's ImageNet vgg16 backbone), attempt, and seq (which row of a row_id is the latest);
    then issue 18's evaluation columns (metrics, stopping, loss curve, snapshots)."""
    return [
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
        pa.field("lpips_calibrated", pa.bool_()),
        pa.field("device", pa.string()),
        pa.field("worker", pa.string()),
        pa.field("attempt", pa.int64()),
        pa.field("seq", pa.int64()),
        pa.field("started_at", TS),
        pa.field("finished_at", TS),
        pa.field("params", params_struct_type(params_cls)),
        # Issue 18 (all nullable; parts written before them read as null): see `stylecore.metrics`
        # and `stylecore.evaluation` for the metric definitions.
        pa.field("iterations_run", pa.int64()),  # steps the row took, all scales
        pa.field("stopped", pa.string()),  # converged | cap | timeout
        pa.field("lpips_content_gray", pa.float64()),
        pa.field("w2_style", pa.float64()),
        pa.field("hist_style", pa.float64()),
        pa.field("cfsd", pa.float64()),
        pa.field("style_layers_metrics", STYLE_LAYERS_TYPE),
        pa.field("loss_curve", LOSS_CURVE_TYPE),
        pa.field("snapshots", pa.list_(pa.string())),  # snapshot images, paths in the same form as `output`
        pa.field("peak_bytes_predicted", pa.int64()),  # the memory model's estimate, when known
    ]


PARAMS_TYPE = params_struct_type()
RESULT_FIELDS = result_fields()
RESULT_COLUMNS = [f.name for f in RESULT_FIELDS]


def results_dir(out: str) -> str:
    return join(out, "results")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- Writing


def curve_indices(n: int, keep: Iterable[int] = (), points: int = CURVE_POINTS) -> list[int]:
    """At most `points` indices of 0..n-1: the first, the last, every index in `keep` (the first
    step of each scale, so a curve shows where a scale began) and the rest evenly spaced."""
    if n <= points:
        return list(range(n))
    fixed = sorted({0, n - 1} | {k for k in keep if 0 <= k < n})[:points]
    free = points - len(fixed)
    even = {round(i * (n - 1) / (free + 1)) for i in range(1, free + 1)} if free > 0 else set()
    return sorted(set(fixed) | even)  # rounding collisions may leave a few less than `points`


def loss_curve(history: Mapping[str, Sequence[float]], scale_steps: Sequence[int], points: int = CURVE_POINTS) -> dict[str, list] | None:
    """The `loss_curve` value of a row from the engine's per-step `history` (term -> one value per
    step, all scales in order) and `scale_steps` (steps per scale); None when there is no step."""
    n = len(history.get("total", ()))
    if n == 0:
        return None
    starts = [sum(scale_steps[:k]) for k in range(len(scale_steps))]  # steps done when each scale began
    idx = curve_indices(n, keep=starts, points=points)
    curve: dict[str, list] = {"step": [i + 1 for i in idx]}
    for term in CURVE_TERMS:
        values = history.get(term) or []
        curve[term] = [float(values[i]) for i in idx] if len(values) == n else []
    curve["scale_start"] = starts
    return curve


def to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Result rows (dicts with RESULT_COLUMNS plus carried-through columns) -> Arrow table.
    Carried columns keep the type Arrow infers from their values (decimal, tz-aware timestamp,
    date, struct, list, binary...); values that fit no single type are stored as text."""
    rows = list(rows)
    arrays = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in RESULT_FIELDS}
    extras = dict.fromkeys(k for r in rows for k in r if k not in arrays)
    for name in extras:  # all-null parts promote on read
        arrays[name] = _carried(name, [r.get(name) for r in rows])
    schema = pa.schema(list(RESULT_FIELDS) + [pa.field(n, arrays[n].type) for n in extras])
    return pa.table(list(arrays.values()), schema=schema)


def _carried(name: str, values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    with contextlib.suppress(pa.ArrowException, OverflowError, TypeError, ValueError):
        return pa.array(values, pa.uint64())  # integers past int64 (a uint64 column)
    with contextlib.suppress(pa.ArrowException, OverflowError, TypeError, ValueError, IndexError):
        pairs = [p for v in values if v is not None for p in v]  # a map column: lists of (key, value)
        if pairs and all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            return pa.array(values, pa.map_(pa.array([k for k, _ in pairs]).type, pa.array([x for _, x in pairs]).type))
    warnings.warn(f"carried column '{name}' mixes values of different types; stored as text", ResultsWarning, stacklevel=3)
    return pa.array([_text(v) for v in values], pa.string())


def write_part(out: str, table: pa.Table, *, fsync: bool = True) -> str:
    """Write one Parquet part under `<out>/results/`; returns its path. `storage.write_atomic`:
    local disks get a hidden temp file, fsynced, renamed, then the folder fsynced, so a crash
    leaves either the whole part or an ignored temp file (`fsync=False` only to measure what
    that costs); object stores one PUT of the serialised part, which publishes whole objects."""
    storage.makedirs(results_dir(out))
    name = f"part-{now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:12]}.parquet"
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return storage.write_atomic(join(results_dir(out), name), buf.getvalue(), fsync=fsync)


# --- Reading


def part_paths(out: str) -> list[str]:
    """Every part's path, in name (= time written) order; hidden temp files are not parts."""
    fs, base = filesystem(results_dir(out))
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(
        i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
    )


def _read_part(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    """The part's rows, or None (with a ResultsWarning) when it cannot be read."""
    try:
        t = pq.read_table(path, filesystem=fs)
        missing = [c for c in ("row_id", "status") if c not in t.column_names]
        if not missing:
            return t
        why = f"no {' or '.join(missing)} column: not a results part"
    except FileNotFoundError:
        return None  # deleted since it was listed
    except (OSError, ValueError, pa.ArrowException) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(f"'{path}': ")[-1]  # path named once
    shown = path if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}://{path}"  # s3://bucket/key
    msg = (
        f"skipped unreadable results part {shown} ({why}); a crash mid-write leaves such a file: it holds no usable rows and can be deleted"
    )
    warnings.warn(msg, ResultsWarning, stacklevel=2)  # at read_all: Python shows it once per part
    return None


def read_all(out: str) -> pa.Table | None:
    """Every result row ever written (all attempts), in part order, or None when there is
    none. Damaged parts are skipped with a warning; see `conform` for the columns."""
    fs, _ = filesystem(results_dir(out))
    tables, paths = [], []
    for p in part_paths(out):
        if (t := _read_part(fs, p)) is not None:
            tables.append(t)
            paths.append(p)
    return conform(_concat(tables, paths)) if tables else None


def _concat(tables: list[pa.Table], paths: list[str]) -> pa.Table:
    """Concatenate parts whose column types may differ: promote where Arrow can (null to
    anything, int to float, wider decimals, struct fields added), cast timestamps in different
    zones to UTC, and read any other conflicting column as text with one warning."""
    with contextlib.suppress(pa.ArrowException, ValueError, TypeError):
        return pa.concat_tables(tables, promote_options="permissive")
    types: dict[str, dict[pa.DataType, str]] = {}
    for t, p in zip(tables, paths):
        for f in t.schema:
            types.setdefault(f.name, {}).setdefault(f.type, os.path.basename(p))
    for name, seen in types.items():
        common = _common_type(list(seen)) if len(seen) > 1 else None
        try:
            if common is not None:
                tables = _map_column(tables, name, functools.partial(_cast, to=common))
        except (pa.ArrowException, ValueError, TypeError):
            common = None  # e.g. int64 and uint64 values past either's range
        if len(seen) > 1 and common is None:
            tables = _map_column(tables, name, as_text)
            desc = ", ".join(f"{ty} in {p}" for ty, p in seen.items())
            warnings.warn(
                f"results column '{name}' has types that do not merge across parts ({desc}); read as text", ResultsWarning, stacklevel=2
            )
    return pa.concat_tables(tables, promote_options="permissive")


def _cast(col: pa.ChunkedArray, to: pa.DataType) -> Any:
    return pc.cast(col, to)


def _common_type(types: list[pa.DataType]) -> pa.DataType | None:
    types = [t.value_type if pa.types.is_dictionary(t) else t for t in types if not pa.types.is_null(t)]
    with contextlib.suppress(pa.ArrowException, ValueError, TypeError):
        return pa.unify_schemas([pa.schema([("x", t)]) for t in types], promote_options="permissive").field("x").type
    if all(pa.types.is_timestamp(t) and t.tz for t in types):
        units = ("s", "ms", "us", "ns")
        return pa.timestamp(max((t.unit for t in types), key=units.index), tz="UTC")  # same instants
    return None


def _map_column(tables: list[pa.Table], name: str, fn: Callable[[pa.ChunkedArray], Any]) -> list[pa.Table]:
    return [t.set_column(i, name, fn(t.column(i))) if (i := t.schema.get_field_index(name)) >= 0 else t for t in tables]


def as_text(col: pa.ChunkedArray) -> pa.Array:
    """A column as strings: Arrow's cast for flat types, compact JSON for nested values, hex
    for bytes."""
    if not pa.types.is_nested(col.type) and not pa.types.is_binary(col.type):
        with contextlib.suppress(pa.ArrowException, ValueError, TypeError):
            return pc.cast(col, pa.string()).combine_chunks()
    return pa.array([_text(v) for v in col.to_pylist()], pa.string())


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=lambda x: x.hex() if isinstance(x, bytes) else str(x), separators=(",", ":"), ensure_ascii=False)
    return str(v)


def conform(table: pa.Table) -> pa.Table:
    """The contract's columns first, in contract order, with null columns for any a part of an
    older version lacks (`seq`, `lpips_calibrated`); carried columns after them."""
    for f in RESULT_FIELDS:
        if f.name not in table.column_names:
            table = table.append_column(pa.field(f.name, f.type), pa.nulls(table.num_rows, f.type))
    names = RESULT_COLUMNS + [n for n in table.column_names if n not in RESULT_COLUMNS]
    return table.select(names)


def latest(table: pa.Table) -> pa.Table:
    """One row per row_id: the highest seq (missing = 0), then the latest finished_at, then
    the later row in part order."""
    if table.num_rows == 0:
        return table
    t = conform(table).append_column("__i", pa.array(range(table.num_rows), pa.int64()))
    t = t.append_column("__seq", pc.fill_null(t.column("seq"), 0))
    keys = [("row_id", "ascending"), ("__seq", "descending"), ("finished_at", "descending"), ("__i", "descending")]
    t = t.take(pc.sort_indices(t, sort_keys=keys))
    ids = t.column("row_id").to_pylist()
    keep = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
    return t.take(pa.array(keep, pa.int64())).drop_columns(["__i", "__seq"])


def read_results(out: str) -> pa.Table | None:
    """The results table as users see it: latest row per row_id."""
    t = read_all(out)
    return None if t is None else latest(t)


def done_ids(out: str, table: pa.Table | None = None) -> set[str]:
    """row_ids whose latest result is ok: what a resumed submit skips. `table`: the output of
    `read_all(out)` when the caller has it already."""
    t = read_all(out) if table is None else table
    if t is None or t.num_rows == 0:
        return set()
    t = latest(t)
    return set(t.filter(pc.equal(t.column("status"), STATUS_OK)).column("row_id").to_pylist())


def next_seq(out: str, table: pa.Table | None = None) -> int:
    """1 + the highest `seq` stored under `out` (1 when there is none; rows of parts without a
    `seq` count as 0). `table`: the output of `read_all(out)` when the caller has it already."""
    t = read_all(out) if table is None else table
    if t is None or "seq" not in t.column_names:
        return 1
    top = pc.max(t.column("seq")).as_py()
    return 1 + max(top or 0, 0)
