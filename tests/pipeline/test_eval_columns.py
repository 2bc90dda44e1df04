"""Issue 18's results columns: the loss curve's decimation, old parts without the columns, and a
real submit (embedded Ray, vgg16-hed, 64 px) that records metrics, curves and snapshots."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import results as R
from pipeline.manifest import write_manifest
from pipeline.runner import SubmitConfig, submit
from stylecore.images import load_image, read_png_metadata
from stylecore.metrics import DEFAULT_GRAM_LAYERS

NEW = (
    "iterations_run",
    "stopped",
    "lpips_content_gray",
    "w2_style",
    "hist_style",
    "cfsd",
    "style_layers_metrics",
    "loss_curve",
    "snapshots",
    "peak_bytes_predicted",
)


def test_curve_indices_keep_ends_and_scale_starts_within_the_budget():
    assert R.curve_indices(5, keep=[2]) == [0, 1, 2, 3, 4]
    idx = R.curve_indices(1000, keep=[0, 333, 700], points=16)
    assert len(idx) <= 16 and idx == sorted(set(idx))
    assert {0, 333, 700, 999} <= set(idx)
    gaps = [b - a for a, b in zip(idx, idx[1:])]
    assert max(gaps) < 2 * 1000 / 16  # spread out, no big hole


def test_loss_curve_from_history():
    n = 600
    history = {t: [float(i) + k for i in range(n)] for k, t in enumerate(("total", "content", "style", "tv"))}
    c = R.loss_curve(history, [200, 400])
    assert c is not None and len(c["step"]) <= R.CURVE_POINTS
    assert c["step"][0] == 1 and c["step"][-1] == n and 201 in c["step"]  # first step of scale 2 kept
    assert c["scale_start"] == [0, 200]
    assert c["total"] == [float(s - 1) for s in c["step"]] and c["style"] == [float(s + 1) for s in c["step"]]
    assert c["hist"] == []  # not recorded (hist off)
    short = R.loss_curve({"total": [3.0, 2.0], "content": [1.0, float("nan")]}, [2])
    assert short is not None and short["step"] == [1, 2] and math.isnan(short["content"][1]) and short["style"] == []
    assert R.loss_curve({}, []) is None
    # the value fits the column's Arrow type
    assert pa.array([c, None], R.LOSS_CURVE_TYPE).to_pylist()[0]["step"] == c["step"]


def test_old_parts_without_the_columns_still_read(tmp_path):
    out = str(tmp_path / "out")
    old_fields = [f for f in R.RESULT_FIELDS if f.name not in NEW]
    assert len(old_fields) == len(R.RESULT_FIELDS) - len(NEW)
    old = pa.Table.from_pylist([{"row_id": "a", "status": "ok", "lpips_style": 0.5, "seq": 1}], schema=pa.schema(old_fields))
    R.write_part(out, old)
    t = R.read_all(out)
    assert t.column_names[: len(R.RESULT_COLUMNS)] == R.RESULT_COLUMNS
    assert all(t.column(c).null_count == 1 for c in NEW)
    assert t.schema.field("loss_curve").type == R.LOSS_CURVE_TYPE
    # mixed with a part that has them: one table, the old row null, the new row's values kept
    new = {"row_id": "b", "status": "ok", "seq": 2, "cfsd": 1.5, "snapshots": ["x.step0002.png"], "stopped": "cap"}
    new["style_layers_metrics"] = {"gram": {"conv1_1": 0.25}, "w2": {"conv1_1": 0.5}}
    R.write_part(out, R.to_table([new]))
    rows = {r["row_id"]: r for r in R.read_results(out).to_pylist()}
    assert rows["a"]["cfsd"] is None and rows["a"]["snapshots"] is None
    assert rows["b"]["cfsd"] == 1.5 and rows["b"]["snapshots"] == ["x.step0002.png"]
    assert dict(rows["b"]["style_layers_metrics"]["gram"]) == {"conv1_1": 0.25}


@pytest.mark.slow
def test_submit_records_metrics_curves_and_snapshots(tmp_path, samples, hed):
    content = str(samples / "content" / "tubingen.jpg")
    style = str(samples / "style" / "starry_night.jpg")
    params = {"size": 64, "iterations": 4, "scales": 2, "snapshot_every": 3, "weights": hed, "lpips_weights": hed, "optimizer": "adam"}
    rows = [{"content": content, "style": style, "params": {**params, "style_weight": w}, "tag": f"sw{w:g}"} for w in (1e-2, 1e5)]
    manifest = tmp_path / "m.parquet"
    write_manifest(rows, manifest)
    out = tmp_path / "out"
    s = submit(SubmitConfig(str(manifest), str(out), workers=1, batch_size=2), progress=False, echo=lambda _l: None)
    assert (s.ok, s.failed) == (2, 0), [r["error"] for r in R.read_results(str(out)).to_pylist()]
    got = {r["tag"]: r for r in R.read_results(str(out)).to_pylist()}
    for r in got.values():
        assert r["iterations_run"] == 8 == r["iterations"] and r["stopped"] == "cap"
        assert r["peak_bytes_predicted"] > 0
        for m in ("lpips_content_gray", "w2_style", "hist_style", "cfsd", "gram_style"):
            assert r[m] is not None and math.isfinite(r[m]) and r[m] >= 0, m
        layers = r["style_layers_metrics"]
        assert [k for k, _ in layers["gram"]] == list(DEFAULT_GRAM_LAYERS) and len(layers["w2"]) == len(DEFAULT_GRAM_LAYERS)
        assert r["gram_style"] == pytest.approx(sum(v for _, v in layers["gram"]) / len(DEFAULT_GRAM_LAYERS))
        curve = r["loss_curve"]
        assert curve["step"] == list(range(1, 9)) and curve["scale_start"] == [0, 4]
        assert len(curve["total"]) == len(curve["style"]) == 8 and curve["hist"] == []
        assert curve["total"][-1] == pytest.approx(r["loss_total"], rel=1e-5)
        # steps 3 and 6 (of 8, over both scales), next to the output, under the output root
        assert [Path(p).name for p in r["snapshots"]] == [f"{r['row_id']}.step0003.png", f"{r['row_id']}.step0006.png"]
        for p in r["snapshots"]:
            assert Path(p).parent == Path(r["output"]).parent and Path(p).resolve().is_relative_to(out.resolve())
            assert read_png_metadata(p)["stxpipe:step"] in ("3", "6")
        assert load_image(r["snapshots"][0]).size[0] == 32  # scale 1 of 2: half the long side
        assert load_image(r["snapshots"][1]).size[0] == 64
    # more style weight, closer style statistics
    assert got["sw100000"]["gram_style"] < got["sw0.01"]["gram_style"]
    assert got["sw100000"]["w2_style"] < got["sw0.01"]["w2_style"]
