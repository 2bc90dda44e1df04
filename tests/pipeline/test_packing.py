"""Batches packed by predicted bytes (issue 17): pure-Python packing, the dry run's per-batch
peaks, and a real Ray run where the budget splits batches and refuses an untileable row."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import ManifestRow, write_manifest
from pipeline.runner import SubmitConfig, batch_peak, fit_rows, make_batches, submit, worker_budget
from stylecore import memory
from stylecore.params import Params

TINY = {"size": 32, "iterations": 2, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}


def _rows(specs: list[dict]) -> list[ManifestRow]:
    return [
        ManifestRow(i, f"r{i}", f"/c{i % 3}.jpg", ("/s.jpg",), Params.from_dict({"weights": "vgg16-hed", **s})) for i, s in enumerate(specs)
    ]


def test_batches_fill_the_budget_by_bytes_not_count() -> None:
    rows = _rows([{"size": 256, "seed": i} for i in range(8)])
    one = batch_peak([rows[0].params], "cuda")
    three = batch_peak([r.params for r in rows[:3]], "cuda")
    assert one < three < 3 * one  # the models count once, the rows add up
    budget = three + (three - one) // 4  # room for three rows, not four
    batches = make_batches(rows, batch_size=8, budget=budget, device="cuda")
    assert [len(b.rows) for b in batches] == [3, 3, 2]
    assert all(b.peak <= budget for b in batches) and batches[0].peak == three
    assert sorted(r.index for b in batches for r in b.rows) == list(range(8))  # every row once
    # --batch-size stays an upper bound on rows; no budget: by count only.
    assert [len(b.rows) for b in make_batches(rows, batch_size=2, budget=budget, device="cuda")] == [2, 2, 2, 2]
    assert [len(b.rows) for b in make_batches(rows, batch_size=8, budget=None, device="cuda")] == [8]


def test_cpu_batches_peak_at_their_largest_row_and_sizes_do_not_mix() -> None:
    # CPU workers run a batch's rows one at a time: the batch costs its largest row.
    rows = _rows([{"size": 128}, {"size": 512}, {"size": 128, "seed": 1}, {"size": 512, "seed": 1}])
    peaks = {r.params.size: batch_peak([r.params], "cpu") for r in rows}
    batches = make_batches(rows, batch_size=4, budget=peaks[512], device="cpu")
    assert sorted((b.rows[0].params.size, len(b.rows)) for b in batches) == [(128, 2), (512, 2)]
    assert {b.rows[0].params.size: b.peak for b in batches} == peaks


def test_rows_too_big_for_the_budget_tile_or_error() -> None:
    rows = _rows([{"size": 2048, "iterations": 8}, {"size": 2048, "iterations": 8, "tile_size": 0}, {"size": 128}])
    budget = 2 * memory.GIB
    fit, errors = fit_rows(rows, budget, "cpu")
    assert [r.index for r in fit] == [0, 2]
    tiled = fit[0].params.tile_size
    assert tiled is not None and 64 <= tiled < 2048 and memory.row_peak(fit[0].params).total <= budget
    assert fit[1].params.tile_size is None  # a small row is left alone
    msg = errors[1]
    for part in ("size 2048", "GiB", "--memory-per-worker", "tiling is off (tile_size 0)", "2.00 GiB"):
        assert part in msg, msg
    # Even the smallest tile cannot fit a tiny budget: an error that says so.
    _, errors = fit_rows(rows[:1], 64 * 2**20, "cpu")
    assert "even in tiles of" in errors[0]
    # On a CPU, rows above the tile threshold tile even when RAM would hold them in one piece.
    fit, errors = fit_rows(rows[:1], 64 * memory.GIB, "cpu")
    assert not errors and fit[0].params.tile_size and memory.row_peak(fit[0].params).total <= memory.CPU_TILE_BUDGET


def test_worker_budget_defaults() -> None:
    assert worker_budget(SubmitConfig("m", memory_per_worker=123)) == 123
    one, two = worker_budget(SubmitConfig("m", workers=1)), worker_budget(SubmitConfig("m", workers=2))
    assert one and two and two < one <= memory.available_ram()


def _manifest(path: Path, samples: Path, rows: list[dict]) -> Path:
    content = samples / "content" / "tubingen.jpg"
    style = samples / "style" / "starry_night.jpg"
    write_manifest([{"content": str(content), "style": str(style), "params": {**TINY, **p}} for p in rows], path)
    return path


def test_dry_run_prints_each_batch_peak(tmp_path: Path, samples: Path) -> None:
    m = _manifest(tmp_path / "m.parquet", samples, [{"seed": i} for i in range(3)] + [{"size": 4096, "tile_size": 0}])
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--dry-run", "--memory-per-worker", "3G", "--gpus-per-worker", "0"])
    assert r.exit_code == 0, r.output
    assert "memory per worker: 3.00 GiB; 1 batch(es):" in r.output
    assert "batch 1: 3 row(s) [0, 1, 2] at size 32: predicted peak" in r.output
    assert "row 3 cannot run: size 4096 px needs ~" in r.output and "tiling is off" in r.output
    assert not out.exists()
    bad = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--dry-run", "--memory-per-worker", "lots"])
    assert bad.exit_code != 0 and "--memory-per-worker" in bad.output


@pytest.mark.slow
def test_real_ray_tiles_a_row_over_the_budget_and_refuses_an_untileable_one(tmp_path: Path, samples: Path, hed: str) -> None:
    """A budget just under a 96-px row's one-piece peak: that row runs tiled (its stored params
    carry the tile size the model picked), a 48-px row runs as it is, and a 4096-px row with tiling
    off is an error row naming its predicted bytes and the budget; the others are unaffected."""
    m = _manifest(tmp_path / "m.parquet", samples, [{"size": 48}, {"size": 96}, {"size": 4096, "tile_size": 0}])
    out = tmp_path / "out"
    budget = memory.row_peak(Params.from_dict({**TINY, "size": 96})).total - 1
    s = submit(SubmitConfig(str(m), str(out), batch_size=4, memory_per_worker=budget), progress=False)
    assert (s.ok, s.failed) == (2, 1)
    rows = {r["params"]["size"]: r for r in R.read_results(str(out)).to_pylist()}
    assert rows[48]["status"] == "ok" and rows[48]["params"]["tile_size"] is None
    assert rows[96]["status"] == "ok" and 64 <= rows[96]["params"]["tile_size"] < 96
    err = rows[4096]["error"]
    assert rows[4096]["status"] == "error" and "size 4096 px needs ~" in err and "tiling is off" in err and "--memory-per-worker" in err
