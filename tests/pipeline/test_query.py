"""pipeline.query on the real small run (tests/pipeline/conftest.py): SQL views, dedup, summary."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from pipeline import query as Q
from pipeline import results as R

pytestmark = pytest.mark.slow


def test_counts_and_ids_match_the_submitted_rows(small_run):
    rows = Q.query(small_run.out, "SELECT status, count(*) AS n FROM results GROUP BY status").to_pylist()
    by_status = {r["status"]: r["n"] for r in rows}
    assert by_status == {"ok": len(small_run.ok_ids), "error": len(small_run.error_ids)}
    n_ok = Q.query(small_run.out, "SELECT count(*) AS n FROM results WHERE status = 'ok'").column("n").to_pylist()
    assert n_ok == [4]
    ids = set(Q.query(small_run.out, "SELECT row_id FROM results").column("row_id").to_pylist())
    assert ids == set(small_run.row_ids)


def test_params_struct_in_sql_holds_what_was_submitted(small_run):
    rows = Q.query(
        small_run.out,
        "SELECT row_id, params.size AS size, params.iterations AS it, params.style_weight AS sw, iterations, tag, "
        "weights, lpips_weights, output, lpips_style, lpips_content FROM results WHERE status = 'ok'",
    ).to_pylist()
    assert len(rows) == 4
    for r in rows:
        want = small_run.row_ids[r["row_id"]]
        assert r["size"] == 32
        assert (r["it"], r["sw"]) == (want["iterations"], want["style_weight"])
        assert r["iterations"] == want["iterations"]  # the engine ran the steps it was asked for
        assert r["tag"] == want["tag"]  # carried-through manifest column
        assert r["weights"].startswith("vgg16-hed@sha256:") and r["lpips_weights"].startswith("vgg16-hed@sha256:")
        assert os.path.isfile(r["output"])
        assert 0 < r["lpips_style"] < 2 and 0 <= r["lpips_content"] < 2
    sweep = Q.query(small_run.out, "SELECT DISTINCT params.style_weight AS sw FROM results ORDER BY 1").column("sw").to_pylist()
    assert sweep == [10.0, 1000.0]


def test_error_row_carries_the_message(small_run):
    (row,) = Q.query(small_run.out, "SELECT row_id, error, output, lpips_style FROM results WHERE status = 'error'").to_pylist()
    assert row["row_id"] in small_run.error_ids
    assert "no-such-photo.jpg" in row["error"]
    assert row["output"] is None and row["lpips_style"] is None


def test_latest_attempt_per_row_wins(copy_run, small_run):
    before_all = Q.query(copy_run, "SELECT count(*) AS n FROM results_all").column("n")[0].as_py()
    target = sorted(small_run.ok_ids)[0]
    old = Q.query(copy_run, f"SELECT * FROM results WHERE row_id = '{target}'").to_pylist()[0]
    newer = dict(
        old,
        status=R.STATUS_ERROR,
        error="synthetic newer attempt",
        attempt=9,
        finished_at=R.now() + dt.timedelta(hours=1),
        started_at=R.now(),
    )
    # Both copies keep the old row's seq, so that ties: an older attempt written later must NOT
    # win: finished_at decides, not the part's name.
    older = dict(
        old, status=R.STATUS_ERROR, error="synthetic stale attempt", attempt=0, finished_at=old["finished_at"] - dt.timedelta(hours=1)
    )
    R.write_part(copy_run, R.to_table([newer]))
    R.write_part(copy_run, R.to_table([older]))

    got = Q.query(copy_run, f"SELECT status, error, attempt FROM results WHERE row_id = '{target}'").to_pylist()
    assert got == [{"status": "error", "error": "synthetic newer attempt", "attempt": 9}]
    assert Q.query(copy_run, "SELECT count(*) AS n FROM results").column("n")[0].as_py() == len(small_run.row_ids)
    assert Q.query(copy_run, "SELECT count(*) AS n FROM results_all").column("n")[0].as_py() == before_all + 2
    # The same answer as the lead's reader.
    latest = {r["row_id"]: r["error"] for r in R.read_results(copy_run).select(["row_id", "error"]).to_pylist()}
    assert latest[target] == "synthetic newer attempt"


def test_a_higher_seq_wins_over_a_later_clock(copy_run, small_run):
    target = sorted(small_run.ok_ids)[0]
    old = Q.query(copy_run, f"SELECT * FROM results WHERE row_id = '{target}'").to_pylist()[0]
    top = R.next_seq(copy_run)
    # The driver's newer answer, stamped by a worker whose clock lags a day behind...
    R.write_part(
        copy_run,
        R.to_table(
            [dict(old, status=R.STATUS_ERROR, error="assigned last", seq=top + 1, finished_at=old["finished_at"] - dt.timedelta(days=1))]
        ),
    )
    # ...and an earlier-assigned answer written after it, with a clock far ahead.
    R.write_part(copy_run, R.to_table([dict(old, error="assigned first", seq=top, finished_at=R.now() + dt.timedelta(days=1))]))
    got = Q.query(copy_run, f"SELECT status, error, seq FROM results WHERE row_id = '{target}'").to_pylist()
    assert got == [{"status": "error", "error": "assigned last", "seq": top + 1}]
    assert target not in R.done_ids(copy_run)
    assert R.next_seq(copy_run) == top + 2


def test_bad_sql_raises_query_error_with_duckdb_message(small_run):
    with pytest.raises(Q.QueryError, match="Parser Error"):
        Q.query(small_run.out, "SELEC * FROM results")
    with pytest.raises(Q.QueryError, match='"nope"'):
        Q.query(small_run.out, "SELECT nope FROM results")


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(Q.NoResultsError, match="stxpipe submit"):
        Q.query(str(tmp_path), "SELECT 1")


def test_summary_detects_the_swept_params(small_run):
    s = Q.summary(small_run.out)
    assert s.rows == 5 and s.status == {"ok": 4, "error": 1}
    assert s.attempts >= 5
    assert set(s.varying) == {"iterations", "style_weight"}
    assert s.varying["iterations"] == ("2", "3")
    assert s.varying["style_weight"] == ("10.0", "1000.0")
    assert list(s.groups) == ["style", "iterations", "style_weight", "iterations × style_weight"]
    sw = {g.value: g for g in s.groups["style_weight"]}
    assert (sw["10.0"].rows, sw["10.0"].ok) == (3, 2)  # the error row asked for style_weight 10
    assert (sw["1000.0"].rows, sw["1000.0"].ok) == (2, 2)
    # Mean and median agree with plain SQL over the same rows.
    want = Q.query(
        small_run.out, "SELECT avg(lpips_style) AS m, median(lpips_content) AS d FROM results WHERE params.style_weight = 1000"
    ).to_pylist()[0]
    assert sw["1000.0"].lpips_style_mean == pytest.approx(want["m"])
    assert sw["1000.0"].lpips_content_median == pytest.approx(want["d"])
    assert len(s.groups["iterations × style_weight"]) == 4
    assert s.weights and all(w.startswith("vgg16-hed@") for w in s.weights)
    assert not s.random_weights
    assert s.seconds_total > 0 and s.seconds_per_row_mean > 0
    text = "\n".join(s.lines())
    assert "params that vary: iterations (2), style_weight (2)" in text
    json.dumps(s.to_dict())  # JSON-ready


def test_formats(small_run, tmp_path):
    t = Q.query(small_run.out, "SELECT row_id, params, started_at, lpips_style FROM results ORDER BY row_id")
    rows = json.loads(Q.format_json(t))
    assert [r["row_id"] for r in rows] == sorted(small_run.row_ids)
    assert rows[0]["params"]["size"] == 32
    csv_text = Q.format_csv(t)
    assert csv_text.splitlines()[0] == "row_id,params,started_at,lpips_style"
    assert len(csv_text.splitlines()) == 6
    text = Q.format_text(t)
    assert "(5 rows)" in text
    Q.write_output(t, "parquet", tmp_path / "x.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "x.parquet").num_rows == 5
