"""Anchored tile targets (`stylecore.anchor`): each tile's style target = the style's + (the tile's
statistics at its start - the whole image's), on real feature statistics."""

from __future__ import annotations

import pytest
import torch

from stylecore.anchor import ANCHORS, anchored
from stylecore.losses import STYLE_LOSS_KINDS, style_loss_kind
from stylecore.tiling import default_overlap, tile_boxes
from stylecore.vgg import VGGFeatures

LAYERS = ["relu1_1", "relu2_1", "relu3_1"]


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures("vgg16", None).eval()  # random weights: this is arithmetic on statistics


def _forward(vgg: VGGFeatures):
    return lambda x, layers: vgg(x, layers)


@pytest.mark.parametrize("kind_name", list(ANCHORS))
def test_a_tile_that_is_the_whole_image_gets_the_style_target(vgg: VGGFeatures, kind_name: str) -> None:
    kind = style_loss_kind(kind_name)
    g = torch.Generator().manual_seed(1)
    style, image = torch.rand(1, 3, 48, 64, generator=g), torch.rand(1, 3, 48, 64, generator=g)
    with torch.no_grad():
        s = kind.targets(vgg(style, LAYERS), 0)
        whole = kind.targets(vgg(image, LAYERS), 0)
        tiles = kind.targets(vgg(torch.cat([image, image]), LAYERS), 0)  # two tiles, both the whole image
    out = anchored(kind_name, s, tiles, whole)
    for n in LAYERS:
        assert out[n].shape == (2, *s[n].shape[1:])
        torch.testing.assert_close(out[n], s[n].expand_as(out[n]), rtol=1e-5, atol=1e-6)


def test_gram_tiles_keep_their_differences_and_average_to_the_style(vgg: VGGFeatures) -> None:
    """Real tiles of an image with a bright top and a dark bottom: each tile's target differs from
    the style's by the tile's own deviation, and the tiles' targets average (area-weighted, up to
    the overlaps and tile borders) close to the style's."""
    kind = style_loss_kind("gram")
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 96, 128, generator=g)
    image[:, :, :48] = image[:, :, :48] * 0.3 + 0.7  # a bright, low-contrast top
    style = torch.rand(1, 3, 64, 64, generator=g)
    boxes = tile_boxes(96, 128, 64, default_overlap(64))
    crops = torch.cat([b.crop(image) for b in boxes])  # (T, 3, 64, 64)
    with torch.no_grad():
        s = kind.targets(vgg(style, LAYERS), 0)
        whole = kind.targets(vgg(image, LAYERS), 0)
        tiles = kind.targets(vgg(crops, LAYERS), 0)
    out = anchored("gram", s, tiles, whole)
    for n in LAYERS:
        torch.testing.assert_close(out[n] - s[n], tiles[n] - whole[n])  # each tile: the style + its own deviation
        spread = (out[n] - out[n].mean(0, keepdim=True)).norm() / s[n].norm()
        assert spread > 0.05, (n, float(spread))  # the tiles' targets differ (top vs bottom)
        off = (out[n].mean(0) - s[n][0]).norm() / s[n].norm()
        assert off < 0.15, (n, float(off))  # ... and together stay near the style's


def test_mean_std_keeps_standard_deviations_positive() -> None:
    s = {"l": torch.tensor([[[0.0, 0.0], [0.1, 0.2]]])}  # (1, 2, C): means; stds
    tiles = {"l": torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])}
    whole = {"l": torch.tensor([[[0.0, 0.0], [0.5, 0.1]]])}
    out = anchored("mean_std", s, tiles, whole)["l"]
    assert out[0, 0].tolist() == [1.0, 0.0]
    assert bool((out[0, 1] > 0).all()) and abs(float(out[0, 1, 1]) - 0.1) < 1e-6


def test_quantile_kinds_keep_the_global_target_and_the_registry_names_valid_kinds() -> None:
    assert set(ANCHORS) == {"gram", "mean_std", "w2"} and set(ANCHORS) <= set(STYLE_LOSS_KINDS)
    s = {"l": torch.arange(6.0).view(1, 2, 3)}
    tiles = {"l": torch.zeros(4, 2, 3)}
    out = anchored("sliced_w", s, tiles, {"l": torch.ones(1, 2, 3)})["l"]
    assert out.shape == (4, 2, 3) and torch.equal(out, s["l"].expand(4, 2, 3))
    with pytest.raises(KeyError, match="valid: gram, mean_std, w2"):
        ANCHORS["histogram"]
