"""Results table: schema, crash-safe Parquet parts, tolerant readers, the output-root lock.

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
import dataclasses
import datetime as dt
import errno
import json
import os
import socket
import uuid
import warnings
from typing import Any, Callable, Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stylecore.params import Params

STATUS_OK = "ok"
STATUS_ERROR = "error"
LOCK_NAME = ".stxpipe.lock"


class ResultsWarning(UserWarning):
    """Results read or written not quite as stored: a damaged part skipped, a column as text."""


class OutputLockedError(RuntimeError):
    """Another submit holds the output root's lock."""


def _params_type() -> pa.StructType:
    """Arrow struct of every Params field, typed from the dataclass defaults."""
    types = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
    lists = {"content_layers": pa.list_(pa.string()), "style_layers": pa.list_(pa.string()),
             "style_layer_weights": pa.list_(pa.float64()), "style_blend": pa.list_(pa.float64()), "lr": pa.float64()}
    return pa.struct([pa.field(f.name, lists.get(f.name) or types[type(f.default)]) for f in dataclasses.fields(Params)])


PARAMS_TYPE = _params_type()
TS = pa.timestamp("us", tz="UTC")

# The contract (design.md, "Data contracts"), plus a few extras users asked for: gram_style (a
# scale-free style distance), loss_total, lpips_weights, lpips_calibrated (Distance measured on
# the paper's ImageNet vgg16 backbone), attempt, and seq (which row of a row_id is the latest).
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
    pa.field("lpips_calibrated", pa.bool_()),
    pa.field("device", pa.string()),
    pa.field("worker", pa.string()),
    pa.field("attempt", pa.int64()),
    pa.field("seq", pa.int64()),
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


# --- Writing


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
    """Write one Parquet part under `<out>/results/`; returns its path. Local disks: a hidden
    temp file, flushed and fsynced, renamed, then the folder fsynced, so a crash leaves either
    the whole part or an ignored temp file (`fsync=False` only to measure what that costs).
    Object stores: one PUT of the serialised part, which publishes whole objects."""
    fs, base = filesystem(results_dir(out))
    fs.create_dir(base, recursive=True)
    name = f"part-{now().strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:12]}.parquet"
    final = join(base, name)
    if not isinstance(fs, pafs.LocalFileSystem):
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        with fs.open_output_stream(final) as f:
            f.write(buf.getvalue())
        return final
    tmp = join(base, f".{name}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:  # make the rename itself durable
        fd = os.open(base, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as e:  # some filesystems cannot fsync a folder; the part itself is synced
            if e.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)
    return final


# --- Reading


def part_paths(out: str) -> list[str]:
    """Every part's path, in name (= time written) order; hidden temp files are not parts."""
    fs, base = filesystem(results_dir(out))
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except FileNotFoundError:
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith("."))


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
    msg = f"skipped unreadable results part {shown} ({why}); a crash mid-write leaves such a file: it holds no usable rows and can be deleted"
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
            tables = _map_column(tables, name, lambda c: pc.cast(c, common)) if common else tables
        except (pa.ArrowException, ValueError, TypeError):
            common = None  # e.g. int64 and uint64 values past either's range
        if len(seen) > 1 and common is None:
            tables = _map_column(tables, name, as_text)
            desc = ", ".join(f"{ty} in {p}" for ty, p in seen.items())
            warnings.warn(f"results column '{name}' has types that do not merge across parts ({desc}); read as text", ResultsWarning, stacklevel=2)
    return pa.concat_tables(tables, promote_options="permissive")


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


# --- The output-root lock


@contextlib.contextmanager
def lock_output(out: str, echo: Callable[[str], None] | None = None) -> Iterator[str]:
    """Hold `<out>/.stxpipe.lock` (JSON: host, pid, started_at) for the block; yields its path.
    Raises OutputLockedError, naming the holder, while another process holds it. A lock left
    by a dead process on this host is taken over (`echo` says so); one from another host is
    only reported, with how to remove it. Local disks: an exclusive flock on the file, which
    the kernel drops when its holder dies. URIs: a lock object, best effort (see _lock_object)."""
    fs, base = filesystem(out)
    local = isinstance(fs, pafs.LocalFileSystem)
    path, shown = join(base, LOCK_NAME), join(base if local else out, LOCK_NAME)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": now().isoformat(timespec="seconds"), "token": uuid.uuid4().hex}
    with (_lock_file if local else _lock_object)(fs, path, shown, me, echo or (lambda _line: None)):
        yield shown


def _holder(raw: bytes) -> dict:
    try:
        h = json.loads(raw.decode("utf-8"))
        return h if isinstance(h, dict) else {}
    except ValueError:
        return {}


def _who(h: dict) -> str:
    if not h:
        return "an unknown process (the lock file is empty or being written)"
    return f"pid {h.get('pid')} on host {h.get('host')}, since {h.get('started_at')}"


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or a pid we cannot check: assume it runs
    return True


def _check_previous(path: str, old: dict, me: dict, echo: Callable[[str], None]) -> None:
    """A lock file nobody holds at the moment: take it over if its writer is gone, else refuse."""
    if not old:
        return
    if old.get("host") != me["host"]:
        raise OutputLockedError(
            f"the output root is locked by {_who(old)} ({path}); stxpipe cannot check a process on "
            f"another host. If you are sure that submit is no longer running, delete {path} and submit again."
        )
    if _alive(old.get("pid")):
        raise OutputLockedError(
            f"the output root is locked by {_who(old)} ({path}), and that process is alive. Wait for it or "
            f"stop it; if it is not a stxpipe submit (a reused pid), delete {path} and submit again."
        )
    echo(f"took over the stale lock {path}: {_who(old)} is no longer running")


@contextlib.contextmanager
def _lock_file(fs: pafs.FileSystem, path: str, shown: str, me: dict, echo: Callable[[str], None]) -> Iterator[None]:
    import fcntl  # POSIX only, like Ray

    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise OutputLockedError(
                f"another submit is writing to this output root: {_who(holder)} (lock {shown}). Wait for it "
                "to finish or stop it: two submits on one output would run rows twice."
            ) from None
        # The previous holder may have deleted the file between our open and flock: retry then.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        _check_previous(shown, _holder(os.pread(fd, 4096, 0)), me, echo)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        with contextlib.suppress(OSError):  # ours until we close fd: delete it only if we wrote it
            if _holder(os.pread(fd, 4096, 0)).get("token") == me["token"]:
                os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _lock_object(fs: pafs.FileSystem, path: str, shown: str, me: dict, echo: Callable[[str], None]) -> Iterator[None]:
    """Best effort: pyarrow.fs offers no exclusive create on object stores, so look for a lock
    object, write ours, read it back. Two submits that start within one such round trip of each
    other can both pass (the later write wins the object); any later submit is refused."""
    def read() -> dict:
        try:
            with fs.open_input_stream(path) as f:
                return _holder(f.read())
        except FileNotFoundError:
            return {}

    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        _check_previous(shown, read() or {"host": "?"}, me, echo)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(me).encode())
    if (other := read()).get("token") != me["token"]:
        raise OutputLockedError(f"another submit took the output root's lock at the same moment: {_who(other)} ({shown})")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if read().get("token") == me["token"]:
                fs.delete_file(path)
