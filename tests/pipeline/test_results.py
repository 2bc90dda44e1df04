"""pipeline.results on real Parquet parts and real DuckDB: crash-safe parts, damaged parts skipped,
the latest row by `seq`, the output-root lock, carried columns of any Arrow type. No Ray."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline import query as Q
from pipeline import results as R

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def row(row_id: str, status: str = R.STATUS_OK, seq: int | None = None, minute: int = 0, **values) -> dict:
    """A result row shaped like the driver's (see pipeline/worker.py: result_row)."""
    r = {c: None for c in R.RESULT_COLUMNS}
    r.update(
        row_id=row_id,
        content="in/c.jpg",
        style="in/s.jpg",
        status=status,
        output=f"out/images/{row_id}.png",
        lpips_style=0.5,
        lpips_content=0.25,
        iterations=2,
        seconds=1.5,
        weights="vgg16-hed@sha256:0123456789abcdef",
        lpips_weights="vgg16-hed@sha256:0123456789abcdef",
        lpips_calibrated=False,
        attempt=0,
        seq=seq,
        started_at=T0,
        finished_at=T0 + dt.timedelta(minutes=minute),
        params={"size": 32, "style_weight": 10.0},
    )
    if status != R.STATUS_OK:
        r.update(error="boom", output=None, lpips_style=None, lpips_content=None)
    r.update(values)
    return r


def old_part(out: Path, rows: list[dict]) -> str:
    """A part as versions before `seq` and `lpips_calibrated` wrote it."""
    return R.write_part(str(out), R.to_table(rows).drop_columns(["seq", "lpips_calibrated"]))


def skipped(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "skipped unreadable results part" in str(w.message)]


def latest_by_sql(out: Path) -> dict[str, dict]:
    rows = Q.query(str(out), "SELECT row_id, status, seq, error FROM results").to_pylist()
    return {r["row_id"]: r for r in rows}


# --------------------------------------------------------------------------------------------
# Writing


def test_write_part_is_whole_and_leaves_no_temp_file(tmp_path):
    path = R.write_part(str(tmp_path), R.to_table([row("a", seq=1), row("b", seq=2)]))
    assert os.listdir(tmp_path / "results") == [os.path.basename(path)]  # the temp name is gone
    t = pq.read_table(path)
    assert t.schema.field("seq").type == pa.int64() and t.column("seq").to_pylist() == [1, 2]
    names = t.column_names
    assert names.index("lpips_calibrated") == names.index("lpips_weights") + 1
    assert t.column("lpips_calibrated").to_pylist() == [False, False]


def test_a_failed_write_leaves_no_part_and_no_temp_file(tmp_path):
    t = R.to_table([row("a", seq=1)])
    t = t.append_column("u", pa.UnionArray.from_sparse(pa.array([0], pa.int8()), [pa.array([1])]))  # Parquet has no unions
    with pytest.raises(pa.ArrowException):
        R.write_part(str(tmp_path), t)
    assert os.listdir(tmp_path / "results") == []
    assert R.read_all(str(tmp_path)) is None


# --------------------------------------------------------------------------------------------
# Damaged parts


def _damage(kind: str, results: Path) -> Path:
    path = results / f"part-29990101T000000000000-{kind}.parquet"  # sorts last: the newest part
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        good = Path(R.write_part(str(results.parent), R.to_table([row("x", seq=99)])))
        data = good.read_bytes()
        good.unlink()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"PAR1 this is not parquet at all \x00\xff" * 10)
    elif kind == "foreign":  # valid Parquet, but not a results part
        pq.write_table(pa.table({"x": [1, 2]}), path)
    return path


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "foreign"])
def test_damaged_part_is_skipped_with_one_warning_naming_it(tmp_path, kind):
    out = tmp_path / "out"
    R.write_part(str(out), R.to_table([row("a", seq=1), row("b", R.STATUS_ERROR, seq=2)]))
    bad = _damage(kind, out / "results")
    (out / "results" / ".part-x.parquet.tmp").write_bytes(b"half")  # an interrupted write: ignored

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = R.read_all(str(out))
    assert sorted(t.column("row_id").to_pylist()) == ["a", "b"]
    (msg,) = skipped(rec)  # exactly one, for the damaged part; none for the temp file
    assert str(bad) in msg and "can be deleted" in msg and "crash" in msg

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert R.done_ids(str(out)) == {"a"}  # what a re-submit skips
        assert R.next_seq(str(out)) == 3
        assert Q.query(str(out), "SELECT count(*) AS n FROM results").column("n").to_pylist() == [2]
        s = Q.summary(str(out))
    assert s.rows == 2 and s.status == {"ok": 1, "error": 1}
    assert len(skipped(rec)) == 4 and all(str(bad) in m for m in skipped(rec))  # one per read


def test_only_damaged_parts_reads_as_no_results(tmp_path):
    (tmp_path / "results").mkdir()
    _damage("empty", tmp_path / "results")
    with pytest.warns(R.ResultsWarning, match="part-29990101"):
        assert R.read_all(str(tmp_path)) is None
    with pytest.warns(R.ResultsWarning), pytest.raises(Q.NoResultsError):
        Q.query(str(tmp_path), "SELECT 1")
    with pytest.warns(R.ResultsWarning):
        assert R.done_ids(str(tmp_path)) == set() and R.next_seq(str(tmp_path)) == 1


# --------------------------------------------------------------------------------------------
# The latest row: seq first, clocks only for ties and old parts


def test_a_later_seq_wins_even_with_an_earlier_clock(tmp_path):
    out = tmp_path / "out"
    # Written first and stamped 5 min earlier by a worker whose clock lags, but assigned later.
    R.write_part(str(out), R.to_table([row("a", R.STATUS_ERROR, seq=7, minute=0, error="newest")]))
    R.write_part(str(out), R.to_table([row("a", seq=6, minute=5), row("b", seq=5, minute=9)]))
    R.write_part(str(out), R.to_table([row("b", R.STATUS_ERROR, seq=4, minute=10, error="stale")]))

    latest = {r["row_id"]: r for r in R.read_results(str(out)).to_pylist()}
    assert (latest["a"]["seq"], latest["a"]["error"]) == (7, "newest")
    assert (latest["b"]["seq"], latest["b"]["status"]) == (5, "ok")
    by_sql = latest_by_sql(out)
    assert {k: (v["seq"], v["status"]) for k, v in by_sql.items()} == {"a": (7, "error"), "b": (5, "ok")}
    assert R.done_ids(str(out)) == {"b"}
    assert R.next_seq(str(out)) == 8
    assert Q.query(str(out), "SELECT count(*) AS n FROM results_all").column("n").to_pylist() == [4]


def test_ties_fall_back_to_finished_at_then_part_order(tmp_path):
    out = tmp_path / "out"
    R.write_part(str(out), R.to_table([row("a", seq=3, minute=2, error="later clock"), row("b", seq=3, minute=1, error="first part")]))
    R.write_part(str(out), R.to_table([row("a", seq=3, minute=1, error="earlier clock"), row("b", seq=3, minute=1, error="later part")]))
    want = {"a": "later clock", "b": "later part"}
    assert {r["row_id"]: r["error"] for r in R.read_results(str(out)).to_pylist()} == want
    assert {k: v["error"] for k, v in latest_by_sql(out).items()} == want


def test_old_parts_without_seq_mix_with_new_ones(tmp_path):
    out = tmp_path / "out"
    # An old run: its rows carry no seq (count as 0), and their clocks are "later".
    old_part(out, [row("a", minute=30), row("b", R.STATUS_ERROR, minute=30), row("c", minute=30)])
    assert R.next_seq(str(out)) == 1  # old parts only
    assert R.read_all(str(out)).column("seq").null_count == 3  # column added, as nulls
    # The new version reruns a and b: seq 1 and 2 beat any old row whatever the clocks say.
    R.write_part(str(out), R.to_table([row("a", R.STATUS_ERROR, seq=1, minute=0, error="rerun failed"), row("b", seq=2, minute=0)]))

    t = R.read_all(str(out))
    assert t.column_names[: len(R.RESULT_COLUMNS)] == R.RESULT_COLUMNS
    assert t.column("lpips_calibrated").to_pylist() == [None, None, None, False, False]
    latest = {r["row_id"]: r for r in R.read_results(str(out)).to_pylist()}
    assert {k: (v["status"], v["seq"]) for k, v in latest.items()} == {"a": ("error", 1), "b": ("ok", 2), "c": ("ok", None)}
    assert {k: (v["status"], v["seq"]) for k, v in latest_by_sql(out).items()} == {"a": ("error", 1), "b": ("ok", 2), "c": ("ok", None)}
    assert R.done_ids(str(out)) == {"b", "c"}
    assert R.next_seq(str(out)) == 3
    assert Q.summary(str(out)).status == {"ok": 2, "error": 1}


def test_next_seq_and_done_ids_reuse_a_table_already_read(tmp_path):
    assert R.next_seq(str(tmp_path)) == 1 and R.done_ids(str(tmp_path)) == set()
    R.write_part(str(tmp_path), R.to_table([row("a", seq=41), row("b", R.STATUS_ERROR, seq=40)]))
    t = R.read_all(str(tmp_path))
    assert R.next_seq(str(tmp_path), t) == 42 and R.done_ids(str(tmp_path), t) == {"a"}


# --------------------------------------------------------------------------------------------
# The output-root lock

HOLDER = """
import sys
from pipeline import results as R
with R.lock_output(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
"""


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(p.stdout)  # exited and reaped: no such process now


def _write_lock(out: Path, **holder) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / R.LOCK_NAME
    path.write_text(json.dumps(holder))
    return path


def test_a_second_submit_is_refused_naming_the_live_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(R.OutputLockedError) as e:
            with R.lock_output(str(out)):
                pytest.fail("a second lock on the same output root was granted")
        msg = str(e.value)
        assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and str(out / R.LOCK_NAME) in msg
        assert "since 20" in msg and "Wait for it" in msg
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        holder.stdout.close()
    assert not (out / R.LOCK_NAME).exists()  # released on exit
    with R.lock_output(str(out)) as path:  # and free again
        assert json.loads(Path(path).read_text())["pid"] == os.getpid()


def test_the_same_process_cannot_lock_twice_and_releases_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with R.lock_output(str(tmp_path)):
            with pytest.raises(R.OutputLockedError, match=f"pid {os.getpid()}"):
                with R.lock_output(str(tmp_path)):
                    pass
            1 / 0  # noqa: B018 - raise inside the lock
    assert not (tmp_path / R.LOCK_NAME).exists()


def test_a_lock_file_naming_a_live_pid_is_refused(tmp_path):
    path = _write_lock(tmp_path, host=socket.gethostname(), pid=os.getppid(), started_at="2024-05-01T12:00:00+00:00")
    with pytest.raises(R.OutputLockedError, match="process is alive") as e:
        with R.lock_output(str(tmp_path)):
            pass
    assert f"pid {os.getppid()}" in str(e.value) and str(path) in str(e.value)
    assert json.loads(path.read_text())["pid"] == os.getppid()  # left as it was


def test_a_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = _dead_pid()
    path = _write_lock(tmp_path, host=socket.gethostname(), pid=dead, started_at="2024-05-01T12:00:00+00:00")
    said: list[str] = []
    with R.lock_output(str(tmp_path), echo=said.append) as got:
        assert got == str(path)
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "stale" in said[0] and f"pid {dead}" in said[0] and "2024-05-01T12:00:00" in said[0]
    assert not path.exists()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    path = _write_lock(tmp_path, host="other-node.example", pid=12345, started_at="2024-05-01T12:00:00+00:00")
    with pytest.raises(R.OutputLockedError) as e:
        with R.lock_output(str(tmp_path)):
            pass
    msg = str(e.value)
    assert "other-node.example" in msg and "pid 12345" in msg and f"delete {path}" in msg
    assert path.exists()


def test_object_store_lock_is_a_lock_object(tmp_path):
    # The object-store branch on a filesystem without OS-level files (a SubTree of a folder).
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": "now", "token": "t1"}
    with R._lock_object(fs, R.LOCK_NAME, "s3://b/out/.stxpipe.lock", me, print):
        assert json.loads((tmp_path / R.LOCK_NAME).read_text())["token"] == "t1"
        with pytest.raises(R.OutputLockedError, match=r"s3://b/out/\.stxpipe\.lock"):
            with R._lock_object(fs, R.LOCK_NAME, "s3://b/out/.stxpipe.lock", dict(me, token="t2"), print):
                pass
    assert not (tmp_path / R.LOCK_NAME).exists()
    (tmp_path / R.LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "started_at": "x"}))
    said: list[str] = []
    with R._lock_object(fs, R.LOCK_NAME, "s3://b/out/.stxpipe.lock", me, said.append):
        pass
    assert said and "stale" in said[0]


# --------------------------------------------------------------------------------------------
# Carried columns of any Arrow type


def odd_manifest_columns() -> pa.Table:
    """Manifest columns of every awkward type; carried rows get them as `to_pylist()` values."""
    return pa.table(
        {
            "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("-123.25"), None], pa.decimal128(10, 2)),
            "shot_at": pa.array([T0, T0 + dt.timedelta(hours=1), None], pa.timestamp("us", tz="Europe/Paris")),
            "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1999, 12, 31)], pa.date32()),
            "meta": pa.array([{"a": 1, "b": {"c": "x"}}, {"a": None, "b": None}, None]),
            "boxes": pa.array([[{"k": "cat", "v": 0.9}], [], None]),
            "note": pa.array(["big", "ü", None], pa.large_string()),
            "group": pa.array(["g1", "g2", "g1"]).dictionary_encode(),
            "blob": pa.array([b"\x00\xff", b"", None], pa.binary()),
            "big": pa.array([2**63 + 5, 0, None], pa.uint64()),
            "tags": pa.array([[("a", 1)], [], None], pa.map_(pa.string(), pa.int64())),
        }
    )


def test_odd_carried_types_round_trip_and_query(tmp_path):
    extra = odd_manifest_columns()
    carried = extra.to_pylist()
    rows = [row(f"r{i}", seq=i + 1, **c) for i, c in enumerate(carried)]
    R.write_part(str(tmp_path), R.to_table(rows))
    t = R.read_all(str(tmp_path))
    for name in extra.column_names:
        assert t.column(name).to_pylist() == extra.column(name).to_pylist(), name
    assert t.schema.field("shot_at").type.tz == "Europe/Paris"
    assert pa.types.is_decimal(t.schema.field("price").type) and pa.types.is_struct(t.schema.field("meta").type)

    got = Q.query(
        str(tmp_path),
        'SELECT row_id, price, shot_at, day, meta.b.c AS c, boxes[1].k AS k, note, "group", blob, big, tags FROM results ORDER BY row_id',
    ).to_pylist()
    assert [r["c"] for r in got] == ["x", None, None] and [r["k"] for r in got] == ["cat", None, None]
    assert got[0]["price"] == decimal.Decimal("1.50") and got[0]["big"] == 2**63 + 5
    everything = Q.query(str(tmp_path), "SELECT * FROM results ORDER BY row_id")
    for fmt in ("table", "csv", "json"):
        assert Q.write_output(everything, fmt, None)
    json.loads(Q.format_json(everything))
    Q.write_output(everything, "parquet", tmp_path / "flat.parquet")
    s = Q.summary(str(tmp_path))
    assert s.rows == 3 and s.status == {"ok": 3}
    json.dumps(s.to_dict(), default=str)


def test_a_carried_column_whose_type_changes_between_runs(tmp_path):
    out = tmp_path / "out"
    R.write_part(str(out), R.to_table([row("a", seq=1, tag=5, score=1, zone=T0, dec=decimal.Decimal("1.5"))]))
    R.write_part(
        str(out),
        R.to_table(
            [row("b", seq=2, tag="five", score=2.5, zone=T0.astimezone(dt.timezone(dt.timedelta(hours=2))), dec=decimal.Decimal("123.25"))]
        ),
    )
    R.write_part(str(out), R.to_table([row("c", seq=3, tag=None, score=None, zone=None, dec=None)]))  # all-null: promotes

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = R.read_all(str(out))
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "'tag'" in msgs[0] and "int64" in msgs[0] and "string" in msgs[0] and "read as text" in msgs[0]
    assert t.column("tag").to_pylist() == ["5", "five", None]
    assert t.schema.field("score").type == pa.float64() and t.column("score").to_pylist() == [1.0, 2.5, None]  # promoted
    assert str(t.schema.field("zone").type) == "timestamp[us, tz=UTC]" and t.column("zone").to_pylist()[:2] == [T0, T0]
    assert t.column("dec").to_pylist() == [decimal.Decimal("1.50"), decimal.Decimal("123.25"), None]
    with pytest.warns(R.ResultsWarning, match="'tag'"):
        assert Q.query(str(out), "SELECT tag FROM results ORDER BY row_id").column("tag").to_pylist() == ["5", "five", None]
    with pytest.warns(R.ResultsWarning, match="'tag'"):
        assert Q.summary(str(out)).rows == 3


def test_nested_conflicts_become_json_text(tmp_path):
    R.write_part(str(tmp_path), R.to_table([row("a", seq=1, meta={"k": 1})]))
    R.write_part(str(tmp_path), R.to_table([row("b", seq=2, meta=[1, 2])]))
    R.write_part(str(tmp_path), R.to_table([row("c", seq=3, meta=b"\x01")]))
    with pytest.warns(R.ResultsWarning, match="'meta'"):
        t = R.read_all(str(tmp_path))
    assert t.column("meta").to_pylist() == ['{"k":1}', "[1,2]", "01"]


def test_mixed_values_in_one_batch_are_stored_as_text(tmp_path):
    with pytest.warns(R.ResultsWarning, match="'odd'.*text"):
        t = R.to_table([row("a", odd=1), row("b", odd="x"), row("c", odd={"k": [1]})])
    assert t.column("odd").to_pylist() == ["1", "x", '{"k":[1]}']


def test_columns_duckdb_cannot_scan_are_given_as_text(tmp_path):
    # A part written by another tool with types DuckDB rejects (float16, decimal256).
    t = R.to_table([row("a", seq=1), row("b", seq=2)])
    t = t.append_column("half", pa.array(np.array([1.5, -2.0], np.float16)))
    t = t.append_column("huge", pa.array([decimal.Decimal("1" * 45), None], pa.decimal256(50, 0)))
    t = t.append_column("nested", pa.array([{"h": decimal.Decimal("2.5")}, None], pa.struct([("h", pa.decimal256(40, 1))])))
    R.write_part(str(tmp_path), t)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = Q.query(str(tmp_path), "SELECT half, huge, nested FROM results ORDER BY row_id").to_pylist()
    assert got == [{"half": "1.5", "huge": "1" * 45, "nested": '{"h":"2.5"}'}, {"half": "-2", "huge": None, "nested": None}]
    assert sorted(m for w in rec for m in ("half", "huge", "nested") if f"'{m}'" in str(w.message)) == ["half", "huge", "nested"]
    with pytest.warns(R.ResultsWarning, match="DuckDB cannot read"):
        assert Q.summary(str(tmp_path)).rows == 2
