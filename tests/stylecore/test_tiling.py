"""The tiled pass's pure parts on tensors: boxes cover the image with equal-size overlapping tiles,
feathered weights ramp smoothly and vanish at inner tile edges, the blend reproduces an image
exactly and hides per-tile offsets in smooth ramps; `tiled_pass` with an identity optimiser."""

from __future__ import annotations

import pytest
import torch

from stylecore import tiling
from stylecore.tiling import Box, blend, feather_weights, tile_boxes


@pytest.mark.parametrize(
    "h,w,tile,overlap", [(100, 130, 48, 12), (64, 64, 64, 8), (257, 90, 64, 16), (40, 300, 64, 32), (512, 384, 256, 32)]
)
def test_boxes_cover_with_equal_tiles_and_the_overlap(h: int, w: int, tile: int, overlap: int) -> None:
    boxes = tile_boxes(h, w, tile, overlap)
    assert len({(b.height, b.width) for b in boxes}) == 1  # one size: tiles batch as rows
    assert boxes[0].height == min(tile, h) and boxes[0].width == min(tile, w)
    cover = torch.zeros(h, w)
    for b in boxes:
        assert 0 <= b.top and b.top + b.height <= h and 0 <= b.left and b.left + b.width <= w
        cover[b.top : b.top + b.height, b.left : b.left + b.width] += 1
    assert bool((cover >= 1).all())
    for starts, size in ((sorted({b.top for b in boxes}), boxes[0].height), (sorted({b.left for b in boxes}), boxes[0].width)):
        for a, b in zip(starts, starts[1:]):
            assert a + size - b >= overlap  # neighbours overlap by at least `overlap`
    assert len(boxes) == len({(b.top, b.left) for b in boxes})


def test_bad_tile_arguments() -> None:
    for tile, overlap in ((0, 0), (32, 32), (32, -1)):
        with pytest.raises(ValueError, match="overlap"):
            tile_boxes(100, 100, tile, overlap)
    with pytest.raises(ValueError, match="inside"):
        feather_weights([Box(0, 0, 50, 50)], 40, 40)


def test_feather_weights_ramp_inside_and_stay_one_at_image_borders() -> None:
    h, w, tile, ov = 96, 160, 64, 32
    boxes = tile_boxes(h, w, tile, ov)
    weights = feather_weights(boxes, h, w)
    total = torch.zeros(h, w)
    for b, wt in zip(boxes, weights):
        assert wt.shape == (1, 1, b.height, b.width) and float(wt.min()) >= 0 and float(wt.max()) <= 1
        total[b.top : b.top + b.height, b.left : b.left + b.width] += wt[0, 0]
        w2 = wt[0, 0]
        if b.left > 0:  # an inner left edge: zero weight there (the margin), rising inwards
            assert float(w2[:, 0].max()) == 0.0
        else:
            assert float(w2[b.height // 2, 0]) > 0.99 or b.top > 0 and b.top + b.height < h
        # Smooth: no jump larger than a raised cosine's steepest step over the overlap.
        assert float((w2[:, 1:] - w2[:, :-1]).abs().max()) < 3.2 / ov
        assert float((w2[1:, :] - w2[:-1, :]).abs().max()) < 3.2 / ov
    assert float(total.min()) > 0.2  # every pixel is covered with weight
    # A single tile covering the image: all ones.
    assert torch.equal(feather_weights([Box(0, 0, h, w)], h, w)[0], torch.ones(1, 1, h, w))


def test_blend_is_exact_on_an_image_and_hides_offsets_in_ramps() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, tile, ov = 80, 112, 48, 16
    img = torch.rand(2, 3, h, w, generator=g)
    boxes = tile_boxes(h, w, tile, ov)
    weights = feather_weights(boxes, h, w)
    assert torch.allclose(blend([b.crop(img) for b in boxes], boxes, weights, h, w), img, atol=1e-6)
    # Each tile shifted by its own constant: the blend has no step larger than the ramp allows.
    flat = torch.full((1, 1, h, w), 0.5)
    shifted = [b.crop(flat) + 0.2 * (k % 2) for k, b in enumerate(boxes)]
    out = blend(shifted, boxes, weights, h, w)[0, 0]
    steps = torch.cat([(out[:, 1:] - out[:, :-1]).abs().flatten(), (out[1:, :] - out[:-1, :]).abs().flatten()])
    assert float(steps.max()) < 0.2 * 3.2 / ov * 2  # a hard seam would step by 0.2
    hard = torch.zeros(h, w)
    for k, b in enumerate(boxes):  # without feathering (last writer wins) the seam is a 0.2 step
        hard[b.top : b.top + b.height, b.left : b.left + b.width] = 0.2 * (k % 2)
    assert float((hard[:, 1:] - hard[:, :-1]).abs().max()) == pytest.approx(0.2)


def test_tiled_pass_batches_do_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 90, 130, generator=g)
    calls: list[int] = []

    def brighten(tiles: torch.Tensor, boxes: list[Box]) -> torch.Tensor:  # a stand-in optimiser: per-tile, deterministic
        calls.append(tiles.shape[0])
        assert tiles.shape[0] == len(boxes)
        return (tiles * 0.9 + 0.05).clamp(0, 1)

    one = tiling.tiled_pass(x, 48, brighten, batch=1, overlap=16)
    n = len(calls)
    four = tiling.tiled_pass(x, 48, brighten, batch=4, overlap=16)
    assert torch.equal(one, four) and n == len(tile_boxes(90, 130, 48, 16)) and max(calls) == 4
    assert torch.allclose(one, (x * 0.9 + 0.05), atol=1e-6)  # the same map on every tile: no trace of tiles
    with pytest.raises(ValueError, match="one image"):
        tiling.tiled_pass(torch.rand(2, 3, 32, 32), 16, brighten)


def test_default_overlap() -> None:
    assert tiling.default_overlap(512) == 64 and tiling.default_overlap(128) == 32 and tiling.default_overlap(40) == 20
