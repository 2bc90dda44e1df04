"""A row's result through `stxpipe submit` does not depend on its batch-mates (issue 13): the same
4-row style_weight sweep with --batch-size 4 and with --batch-size 1 gives the same images (CPU
workers optimise a batch's rows one at a time: bitwise) and the same metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import write_manifest

pytestmark = pytest.mark.slow


def test_batch_size_does_not_change_a_rows_image_or_metrics(tmp_path: Path, samples: Path, hed: str) -> None:
    content, style = samples / "content" / "tubingen.jpg", samples / "style" / "starry_night.jpg"
    params = {"size": 48, "iterations": 20, "weights": hed, "lpips_weights": hed}
    rows = [{"content": str(content), "style": str(style), "params": {**params, "style_weight": w}} for w in (3.0, 10.0, 30.0, 100.0)]
    m = tmp_path / "sweep.parquet"
    write_manifest(rows, m)
    got = {}
    for bs in (4, 1):
        out = tmp_path / f"out-bs{bs}"
        r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress", "--batch-size", str(bs)])
        assert r.exit_code == 0, r.output
        got[bs] = {x["row_id"]: x for x in R.read_results(str(out)).to_pylist()}
    assert got[4].keys() == got[1].keys() and len(got[4]) == 4
    for rid, a in got[4].items():
        b = got[1][rid]
        img_a = np.asarray(Image.open(a["output"]).convert("RGB"), dtype=np.int16)
        img_b = np.asarray(Image.open(b["output"]).convert("RGB"), dtype=np.int16)
        assert np.abs(img_a - img_b).mean() <= 1.0, rid
        for k in ("lpips_style", "lpips_content", "gram_style"):
            assert a[k] == pytest.approx(b[k], rel=0.01), (rid, k)
        assert a["iterations"] == b["iterations"]
    # the sweep still sweeps: different style weights give different images
    imgs = [np.asarray(Image.open(x["output"]).convert("RGB"), dtype=np.int16) for x in got[4].values()]
    assert np.abs(imgs[0] - imgs[-1]).mean() > 1.0
