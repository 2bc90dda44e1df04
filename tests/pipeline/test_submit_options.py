"""`stxpipe submit` options and re-submits on a real embedded Ray, through the CLI (Typer's
CliRunner), on real files: `--force`, `--skip-invalid`, a results part damaged between two
submits, and a carried column whose type changes between runs. Rows are tiny (32 px, 2 steps,
`vgg16-hed`); each submit costs mostly Ray's start-up.

Covered elsewhere: `--retries` from the CLI (test_runner.py, `--retries 0`), worker start-up
failure (test_runner_faults.py), damaged parts read by query/summary/report without Ray
(tests/adversarial/test_results_parts.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import read_manifest, write_manifest

pytestmark = pytest.mark.slow

TINY = {"size": 32, "iterations": 2, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}


def _manifest(path: Path, samples: Path, seeds: range, **extra) -> Path:
    content = str(samples / "content" / "tubingen.jpg")
    style = str(samples / "style" / "starry_night.jpg")
    write_manifest([{"content": content, "style": style, "params": {**TINY, "seed": s}, **extra} for s in seeds], path)
    return path


def _submit(*args: str):
    return CliRunner().invoke(app, ["submit", *map(str, args), "--no-progress"])


def _cli(*args: str):
    return CliRunner().invoke(app, list(map(str, args)))


def test_force_reruns_ok_rows_as_a_later_attempt_and_results_keep_one_row_per_id(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, range(2))
    out = tmp_path / "out"
    r = _submit(m, "--out", out)
    assert r.exit_code == 0, r.output
    first = {x["row_id"]: x for x in R.read_results(str(out)).to_pylist()}
    assert len(first) == 2 and {x["status"] for x in first.values()} == {"ok"}

    r = _submit(m, "--out", out)  # without --force: nothing to do
    assert r.exit_code == 0 and "nothing to run: all 2 rows" in r.output, r.output
    r = _submit(m, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    assert "2 ok" in r.output and "0 already done" in r.output

    every = R.read_all(str(out)).to_pylist()
    assert sorted(x["row_id"] for x in every) == sorted(2 * list(first))  # each row twice, nothing else
    latest = {x["row_id"]: x for x in R.read_results(str(out)).to_pylist()}
    assert latest.keys() == first.keys()  # one row per id
    for rid, x in latest.items():
        assert x["status"] == "ok" and x["seq"] > max(f["seq"] for f in first.values())  # the rerun wins, by seq
        assert x["finished_at"] >= first[rid]["finished_at"] and Path(x["output"]).is_file()
    # And the SQL view agrees.
    q = _cli("results", "query", out, "SELECT count(*) AS n, count(DISTINCT row_id) AS ids FROM results", "-f", "csv")
    assert q.exit_code == 0 and q.stdout == "n,ids\n2,2\n", q.output
    q = _cli("results", "query", out, "SELECT count(*) AS n FROM results_all", "-f", "csv")
    assert q.exit_code == 0 and q.stdout == "n\n4\n", q.output


def test_skip_invalid_runs_the_valid_rows_of_a_manifest_with_an_invalid_one(tmp_path, samples, hed):
    # Written with pyarrow (write_manifest refuses bad rows): params as JSON text, row 1 invalid.
    content = str(samples / "content" / "tubingen.jpg")
    style = str(samples / "style" / "starry_night.jpg")
    params = [{**TINY, "seed": 0}, {**TINY, "iterations": -5}, {**TINY, "seed": 1}]
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"content": [content] * 3, "style": [style] * 3, "params": [json.dumps(p) for p in params]}), m)
    out = tmp_path / "out"

    r = _submit(m, "--out", out)  # refused as a whole, naming the row and field, before Ray
    assert r.exit_code == 1 and "row 1" in r.output and "iterations" in r.output, r.output
    assert "Ray dashboard" not in r.output and not R.part_paths(str(out))

    r = _submit(m, "--out", out, "--skip-invalid")
    assert r.exit_code == 0, r.output
    got = R.read_results(str(out)).to_pylist()
    assert sorted(x["params"]["seed"] for x in got) == [0, 1] and {x["status"] for x in got} == {"ok"}
    assert all(x["params"]["iterations"] == 2 for x in got)  # the invalid row never ran


def test_a_damaged_part_is_skipped_and_its_rows_run_again_on_the_next_submit(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, range(2))
    out = tmp_path / "out"
    r = _submit(m, "--out", out, "--batch-size", "1")  # one part per row
    assert r.exit_code == 0, r.output
    parts = R.part_paths(str(out))
    assert len(parts) == 2
    damaged = Path(parts[0])
    lost = pq.read_table(damaged).column("row_id").to_pylist()
    kept = pq.read_table(parts[1]).to_pylist()
    assert len(lost) == 1 and len(kept) == 1
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a crash mid-write, say

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _submit(m, "--out", out)
    assert r.exit_code == 0, r.output
    assert "1 ok" in r.output and "1 already done" in r.output, r.output  # only the lost row ran
    assert any(str(damaged) in str(w.message) and issubclass(w.category, R.ResultsWarning) for w in caught), [
        str(w.message) for w in caught
    ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", R.ResultsWarning)
        latest = {x["row_id"]: x for x in R.read_results(str(out)).to_pylist()}
        every = R.read_all(str(out)).to_pylist()
    assert set(latest) == {*lost, kept[0]["row_id"]} and {x["status"] for x in latest.values()} == {"ok"}
    assert len(every) == 2  # the kept row was not run again
    assert latest[lost[0]]["seq"] > kept[0]["seq"]
    assert latest[kept[0]["row_id"]]["seq"] == kept[0]["seq"]


def test_a_carried_column_whose_type_changes_between_runs(tmp_path, samples, hed):
    """Run 1 carries `batch` as an integer, run 2 (other rows, same output) as text: the results
    views, the summary and the report all still answer, with `batch` read as text."""
    out = tmp_path / "out"
    m1 = _manifest(tmp_path / "m1.parquet", samples, range(1), batch=7)
    m2 = _manifest(tmp_path / "m2.parquet", samples, range(1, 2), batch="b-2")
    assert pq.read_table(m1).schema.field("batch").type != pq.read_table(m2).schema.field("batch").type
    for m in (m1, m2):
        r = _submit(m, "--out", out)
        assert r.exit_code == 0, r.output
    ids = {read_manifest(m1)[0].row_id: "7", read_manifest(m2)[0].row_id: "b-2"}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = _cli("results", "query", out, "SELECT row_id, batch, status FROM results ORDER BY row_id", "-f", "json")
        s = _cli("results", "summary", out)
        rep = _cli("report", out, "-o", tmp_path / "report.html")
    assert q.exit_code == 0, q.output
    rows = json.loads(q.stdout)
    assert {x["row_id"]: x["batch"] for x in rows} == ids and {x["status"] for x in rows} == {"ok"}
    assert any("'batch'" in str(w.message) and "text" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert s.exit_code == 0 and "rows: 2 (ok 2)" in s.stdout, s.output
    assert rep.exit_code == 0 and "2 rows (2 ok" in rep.stdout, rep.output
    page = (tmp_path / "report.html").read_text()
    assert "b-2" in page and "Traceback" not in page
