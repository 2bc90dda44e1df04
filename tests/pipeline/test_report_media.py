"""pipeline.report_media: 100% crops, loss-curve data and snapshot strips, on real image files."""

from __future__ import annotations

import base64
import io
import math

from PIL import Image

from pipeline import report_media as M


def _decode(uri: str) -> Image.Image:
    head, b64 = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def _noise(path, size) -> Image.Image:
    img = Image.frombytes("RGB", size, bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3)))
    img.save(path)
    return img


def test_crop_is_the_centre_at_native_resolution_and_lossless(tmp_path):
    big = _noise(tmp_path / "big.png", (1300, 900))
    edge = _noise(tmp_path / "edge.png", (M.CROP_ABOVE, 600))
    thumbs = M.Thumbs(str(tmp_path), 160)
    k = thumbs.key(str(tmp_path / "big.png"), crop=True)
    assert k is not None and max(Image.open(io.BytesIO(base64.b64decode(thumbs.images[k].split(",")[1]))).size) == 160
    ck, w, h = thumbs.crops[str(tmp_path / "big.png")]
    assert (w, h) == big.size
    crop = _decode(thumbs.images[ck])
    left, top = (1300 - M.CROP_PX) // 2, (900 - M.CROP_PX) // 2
    assert crop.size == (M.CROP_PX, M.CROP_PX)
    assert crop.tobytes() == big.crop((left, top, left + M.CROP_PX, top + M.CROP_PX)).tobytes()  # every pixel, unscaled
    # Not over the threshold: a thumbnail only. Inputs (crop=False) never get a crop.
    assert thumbs.key(str(tmp_path / "edge.png"), crop=True) is not None and str(tmp_path / "edge.png") not in thumbs.crops
    assert edge.size[0] == M.CROP_ABOVE
    thumbs.key(str(tmp_path / "big2.png"))
    assert str(tmp_path / "big2.png") in thumbs.missing


def test_crop_of_a_thin_image_keeps_its_short_side(tmp_path):
    _noise(tmp_path / "thin.png", (2000, 100))
    thumbs = M.Thumbs(str(tmp_path), 64)
    thumbs.key(str(tmp_path / "thin.png"), crop=True)
    ck, _, _ = thumbs.crops[str(tmp_path / "thin.png")]
    assert _decode(thumbs.images[ck]).size == (M.CROP_PX, 100)


def test_curve_data_from_the_struct():
    assert M.curve(None) is None and M.curve({"step": [0]}) is None  # old results, a single step
    got = M.curve({"step": [0, 5, 10], "total": [3.0, math.nan, 1.0], "content": [1.0, 0.5, 0.25], "hist": [], "scale_start": [0, 5]})
    assert got == {"step": [0, 5, 10], "scale_start": [0, 5], "total": [3.0, None, 1.0], "content": [1.0, 0.5, 0.25]}


def test_snapshot_strip_is_evenly_spaced_and_keeps_the_last(tmp_path):
    paths = []
    for s in range(0, 200, 10):
        Image.new("RGB", (20, 10), (s, 0, 0)).save(tmp_path / f"r.step{s}.png")
        paths.append(f"r.step{s}.png")  # relative to the output folder, as the worker stores them
    strip = M.snaps(M.Thumbs(str(tmp_path), 160), paths)
    assert len(strip) == M.SNAPS_SHOWN
    assert strip[0]["label"] == "step 0" and strip[-1]["label"] == "step 190"
    steps = [int(x["label"].split()[1]) for x in strip]
    assert steps == sorted(steps) and all(x["k"] for x in strip)
    assert M.snap_label("a/b_step_0040.png") == "step 40" and M.snap_label("plain.png") == "plain.png"
