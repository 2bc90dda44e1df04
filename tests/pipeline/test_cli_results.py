"""`stxpipe results query|summary`, `stxpipe report`, and the demo's building blocks."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.slow
def test_query_formats(small_run, tmp_path):
    r = run("results", "query", small_run.out, "SELECT count(*) AS n FROM results WHERE status = 'ok'", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout == "n\n4\n"

    r = run("results", "query", small_run.out, "SELECT row_id, params.size AS size FROM results ORDER BY row_id", "-f", "json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["row_id"] for x in rows] == sorted(small_run.row_ids) and {x["size"] for x in rows} == {32}

    r = run("results", "query", small_run.out, "SELECT status, count(*) AS n FROM results GROUP BY 1 ORDER BY 1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].split() == ["status", "n"]
    assert [line.split() for line in r.stdout.splitlines()[2:4]] == [["error", "1"], ["ok", "4"]]
    assert "(2 rows)" in r.stdout

    f = tmp_path / "ok.parquet"
    r = run("results", "query", small_run.out, "SELECT * FROM results WHERE status = 'ok'", "-f", "parquet", "-o", str(f))
    assert r.exit_code == 0, r.output
    assert pq.read_table(f).num_rows == 4

    r = run("results", "query", small_run.out, "SELECT 1", "-f", "parquet")
    assert r.exit_code == 1 and "-o FILE.parquet" in r.output


@pytest.mark.slow
def test_bad_sql_exits_1_with_duckdb_message_and_no_traceback(small_run):
    r = run("results", "query", small_run.out, "SELECT nope FROM results")
    assert r.exit_code == 1
    assert "error: Binder Error" in r.output and '"nope"' in r.output
    assert "Traceback" not in r.output
    r = run("results", "query", small_run.out, "SELEC 1")
    assert r.exit_code == 1 and "Parser Error" in r.output and "Traceback" not in r.output


def test_missing_results_folder_is_a_clear_error(tmp_path):
    r = run("results", "summary", str(tmp_path / "nowhere"))
    assert r.exit_code == 1
    assert "no results under" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_summary_text_and_json(small_run):
    r = run("results", "summary", small_run.out)
    assert r.exit_code == 0, r.output
    assert "rows: 5 (error 1, ok 4)" in r.stdout
    assert "params that vary: iterations (2), style_weight (2)" in r.stdout
    assert "vgg16-hed@sha256:" in r.stdout
    r = run("results", "summary", small_run.out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["varying"]) == {"iterations", "style_weight"} and d["status"] == {"ok": 4, "error": 1}
    assert [g["value"] for g in d["groups"]["style_weight"]] == ["10.0", "1000.0"]


@pytest.mark.slow
def test_report_command(small_run, tmp_path):
    f = tmp_path / "sub" / "report.html"
    r = run("report", small_run.out, "-o", str(f))
    assert r.exit_code == 0, r.output
    assert f.is_file() and "5 rows (4 ok, 1 error)" in r.stdout
    assert f.read_text().startswith("<!DOCTYPE html>")


def test_demo_manifest_and_offline_weights(tmp_path, hed):
    from pipeline.demo import build_demo_manifest, choose_weights
    from pipeline.manifest import validate_manifest

    path = build_demo_manifest(tmp_path / "demo.parquet", 64, 3)
    report = validate_manifest(path)
    assert report.ok, report.problems
    assert len(report.rows) == 8
    assert {r.params.style_weight for r in report.rows} == {1e2, 1e4}
    said = []
    w, lw, why = choose_weights(download=False, say=said.append)
    # Here the ImageNet files are absent and downloads are off, so the offline stand-in is chosen
    # and the reason says why; where they are cached, the ImageNet pair is chosen.
    assert (w, lw) in {("vgg16-hed", "vgg16-hed"), ("vgg19-imagenet", "vgg16-imagenet")}
    if w == "vgg16-hed":
        assert "not available" in why and "--no-download" in why
