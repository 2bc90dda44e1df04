"""`stxpipe experiment content-loss`: both arms through a real submit (embedded Ray, vgg16-hed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import write_manifest

runner = CliRunner()


@pytest.mark.slow
def test_content_loss_runs_both_arms_and_pairs_them(tmp_path, samples, hed):
    content = str(samples / "content" / "tubingen.jpg")
    styles = [str(samples / "style" / n) for n in ("starry_night.jpg", "the_scream.jpg")]
    manifest = tmp_path / "pairs.parquet"
    write_manifest(
        [{"content": content, "style": s, "params": {"style_weight": 100.0}, "tag": f"p{i}"} for i, s in enumerate(styles)], manifest
    )
    out = tmp_path / "out"
    args = ["experiment", "content-loss", str(manifest), "--out", str(out), "--size", "64", "--iterations", "2"]
    r = runner.invoke(app, [*args, "--weights", hed, "--lpips-weights", hed, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n_pairs"] == 2 == d["pairs"] and d["failed_rows"] == 0 and d["metric"] == "lpips_style"
    assert d["verdict"] in ("holds", "reversed", "inconclusive") and d["sentence"]
    rows = R.read_results(str(out)).to_pylist()
    assert sorted((x["experiment_pair"], x["experiment_arm"]) for x in rows) == [(0, "lpips"), (0, "mse"), (1, "lpips"), (1, "mse")]
    for x in rows:  # the arms differ only in the content loss; the manifest's own params are kept
        assert x["params"]["content_loss"] == x["experiment_arm"] and x["params"]["style_weight"] == 100.0
        assert x["params"]["size"] == 64 and x["params"]["iterations"] == 2 and x["tag"] in ("p0", "p1")
    by = {(x["experiment_pair"], x["experiment_arm"]): x["lpips_style"] for x in rows}
    assert d["mse"]["mean"] == pytest.approx((by[0, "mse"] + by[1, "mse"]) / 2)
    assert d["diff"][0] == pytest.approx((by[0, "lpips"] - by[0, "mse"] + by[1, "lpips"] - by[1, "mse"]) / 2)
