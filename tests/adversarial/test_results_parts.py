"""Adversarial results folders driven through the CLI: damaged parts (0 bytes, truncated, not
Parquet, not a results part, an interrupted temp file), parts from an older version without
`seq`, a carried column whose type changes between runs, carried columns of awkward Arrow types.
`stxpipe results query|summary` and `stxpipe report` must still answer, and name each skipped
file in a warning on stderr. Parts are built with `R.to_table`/`R.write_part`; no Ray."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def row(row_id: str, status: str, seq: int | None, samples: Path, **values) -> dict:
    """A result row shaped like the driver's (pipeline/worker.py: result_row), real sample images."""
    r = {c: None for c in R.RESULT_COLUMNS}
    r.update(
        row_id=row_id,
        content=str(samples / "content" / "tubingen.jpg"),
        style=str(samples / "style" / "starry_night.jpg"),
        status=status,
        output=str(samples / "style" / "the_scream.jpg") if status == R.STATUS_OK else None,
        error=None if status == R.STATUS_OK else "ImageError: cannot identify image file",
        lpips_style=0.6 if status == R.STATUS_OK else None,
        lpips_content=0.3 if status == R.STATUS_OK else None,
        iterations=2,
        seconds=1.5,
        weights="vgg16-hed@sha256:0123456789abcdef",
        lpips_weights="vgg16-hed@sha256:0123456789abcdef",
        lpips_calibrated=False,
        attempt=0,
        seq=seq,
        started_at=T0,
        finished_at=T0 + dt.timedelta(minutes=1),
        params={"size": 32, "iterations": 2, "style_weight": 10.0 if row_id < "r2" else 1000.0},
    )
    r.update(values)
    return r


@pytest.fixture()
def damaged(tmp_path: Path, samples: Path) -> tuple[str, list[Path]]:
    """An output folder with good parts of three kinds and four damaged parts; the damaged paths."""
    out = tmp_path / "out"
    # An older version's part: no seq, no lpips_calibrated; a carried `batch` that was an int.
    old = R.to_table([row("r0", R.STATUS_ERROR, None, samples, batch=1), row("r1", R.STATUS_OK, None, samples, batch=1)])
    R.write_part(str(out), old.drop_columns(["seq", "lpips_calibrated"]))
    # This version: r0 rerun and fixed (seq 1), new rows; `batch` is now text, odd carried types.
    odd = {"price": decimal.Decimal("9.99"), "shot": T0, "meta": {"cam": {"iso": 100}}, "boxes": [{"k": "cat"}], "blob": b"\x00\xff"}
    R.write_part(
        str(out),
        R.to_table(
            [
                row("r0", R.STATUS_OK, 1, samples, batch="b2", **odd),
                row("r2", R.STATUS_OK, 2, samples, batch="b2", **odd),
                row("r3", R.STATUS_ERROR, 3, samples, batch="b2", **odd),
            ]
        ),
    )
    results = out / "results"
    good = Path(R.part_paths(str(out))[-1]).read_bytes()
    bad = [
        results / "part-29990101T000000000001-empty.parquet",
        results / "part-29990101T000000000002-truncated.parquet",
        results / "part-29990101T000000000003-garbage.parquet",
        results / "part-29990101T000000000004-foreign.parquet",
    ]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(good[: len(good) // 2])
    bad[2].write_bytes(os.urandom(3000))
    pq.write_table(pa.table({"x": [1]}), bad[3])
    (results / ".part-29990101T000000000005-cut.parquet.tmp").write_bytes(good[:100])  # ignored, silently
    return str(out), bad


def cli(*args: str):
    """Invoke the CLI as a user's shell would show it: warnings printed to stderr, each time
    (pytest otherwise records them instead of printing)."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        return CliRunner().invoke(app, list(args))


def assert_warned_each(stderr: str, bad: list[Path]) -> None:
    for p in bad:
        lines = [ln for ln in stderr.splitlines() if str(p) in ln]
        assert len(lines) == 1, (p, stderr)
        assert "skipped unreadable results part" in lines[0] and "can be deleted" in lines[0]
    assert ".tmp" not in stderr


def test_query_with_damaged_parts(damaged):
    out, bad = damaged
    r = cli("results", "query", out, "SELECT count(*) FROM results")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[2].strip() == "4" and "(1 row)" in r.stdout
    assert_warned_each(r.stderr, bad)
    assert "'batch'" in r.stderr and "read as text" in r.stderr  # int64 in the old part, string now

    r = cli(
        "results",
        "query",
        out,
        "SELECT row_id, status, seq, batch, price, shot, meta.cam.iso AS iso, boxes, blob FROM results ORDER BY row_id",
        "-f",
        "json",
    )
    assert r.exit_code == 0, r.output
    rows = {x["row_id"]: x for x in json.loads(r.stdout)}
    assert (rows["r0"]["status"], rows["r0"]["seq"]) == ("ok", 1)  # the rerun beats the old part
    assert (rows["r1"]["seq"], rows["r1"]["batch"]) == (None, "1")
    assert rows["r2"]["iso"] == 100 and rows["r2"]["boxes"] == [{"k": "cat"}] and rows["r2"]["blob"] == "00ff"
    assert rows["r2"]["price"] == 9.99 and rows["r2"]["shot"].startswith("2024-05-01T12:00:00")

    for fmt in ("csv", "table"):
        r = cli("results", "query", out, "SELECT * FROM results_all", "-f", fmt)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_summary_with_damaged_parts(damaged):
    out, bad = damaged
    r = cli("results", "summary", out)
    assert r.exit_code == 0, r.output
    assert "rows: 4 (error 1, ok 3); attempts stored: 5" in r.stdout
    assert_warned_each(r.stderr, bad)
    r = cli("results", "summary", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == {"error": 1, "ok": 3}


def test_report_with_damaged_parts(damaged, tmp_path):
    out, bad = damaged
    r = cli("report", out, "-o", str(tmp_path / "report.html"))
    assert r.exit_code == 0, r.output
    assert "4 rows (3 ok, 1 error)" in r.stdout
    assert_warned_each(r.stderr, bad)
    assert (tmp_path / "report.html").stat().st_size > 1000


def test_only_damaged_parts_is_no_results(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "part-1.parquet").write_bytes(b"")
    r = cli("results", "summary", str(tmp_path))
    assert r.exit_code == 1 and "no results under" in r.stderr and "part-1.parquet" in r.stderr
    assert "Traceback" not in r.output


def test_the_real_command_prints_the_warning(damaged):
    """The installed entry point, in its own process, as a user runs it."""
    out, bad = damaged
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "results", "query", out, "SELECT count(*) AS n FROM results", "-f", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == "n\n4\n"
    assert_warned_each(p.stderr, bad)
