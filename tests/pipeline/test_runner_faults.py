"""`stxpipe submit` off the happy path, on real Ray and real files: what fails before Ray starts
(weights, lock), a worker whose start-up fails, and rows past their deadline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import write_manifest

TINY = {"size": 32, "iterations": 2, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}


def _manifest(path: Path, samples: Path, n: int, **params) -> Path:
    c = str(samples / "content" / "tubingen.jpg")
    s = str(samples / "style" / "starry_night.jpg")
    write_manifest([{"content": c, "style": s, "params": {**TINY, **params, "seed": i}} for i in range(n)], path)
    return path


def test_a_missing_weights_file_is_named_in_seconds_before_ray_starts(tmp_path, samples):
    missing = tmp_path / "nowhere" / "vgg19.pth"
    m = _manifest(tmp_path / "m.parquet", samples, 3, weights=str(missing))
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(tmp_path / "out"), "--no-progress"])
    took = time.monotonic() - t0
    assert r.exit_code == 1, r.output
    assert str(missing) in r.output and "rows 0-2" in r.output and "Ray dashboard" not in r.output
    assert took < 10, f"took {took:.1f} s"
    assert not R.part_paths(str(tmp_path / "out"))


def test_a_second_submit_on_a_locked_output_is_refused_naming_the_holder(tmp_path, samples):
    m = _manifest(tmp_path / "m.parquet", samples, 1)
    out = tmp_path / "out"
    with R.lock_output(str(out)):
        r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress"])
    assert r.exit_code == 1, r.output
    import os
    import socket

    assert f"pid {os.getpid()}" in r.output and socket.gethostname() in r.output


@pytest.mark.slow
def test_worker_start_up_failure_reaches_the_driver_in_seconds_with_its_reason(tmp_path, samples, hed):
    # A real torch file (preflight checks only that it is one) that holds no state_dict: the
    # worker's model load raises in __init__, on every worker.
    bad = tmp_path / "not-a-state-dict.pth"
    torch.save([1, 2, 3], bad)
    m = _manifest(tmp_path / "m.parquet", samples, 2, weights=str(bad))
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(tmp_path / "out"), "--no-progress", "--workers", "2"])
    took = time.monotonic() - t0
    assert r.exit_code == 1, r.output
    assert "no worker is left to run the remaining 2 row(s)" in r.output
    assert "start-up failed" in r.output and "holds a list, not a state_dict" in r.output
    assert "rerun" not in r.output
    assert took < 90, f"took {took:.1f} s"  # Ray start-up and two failed model loads, no fixed wait


@pytest.mark.slow
def test_rows_past_their_deadline_are_retried_alone_once_then_recorded_as_timed_out(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, 2, size=96, iterations=2000)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress", "--batch-size", "2", "--row-timeout", "2"])
    assert r.exit_code == 2, r.output
    rows = R.read_all(str(out)).to_pylist()
    assert len(rows) == 2  # one result per row: the cancelled attempts wrote nothing
    for row in rows:
        assert row["status"] == "error" and "timed out after 2 s" in row["error"] and "--row-timeout" in row["error"]
        assert row["attempt"] == 2  # the batch, then alone
