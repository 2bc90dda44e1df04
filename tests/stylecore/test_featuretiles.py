"""Style targets of a style image measured in tiles with a halo (`stylecore.featuretiles`), and the
memory model's prediction of the style forward that decides it (`stylecore.memory`)."""

from __future__ import annotations

import pytest
import torch

from stylecore import memory
from stylecore.featuretiles import ALIGN, feature_tiles, layer_stride, tiled_targets
from stylecore.images import load_tensor
from stylecore.losses import HISTOGRAM, STYLE_LOSS_KINDS, relative_sq_error
from stylecore.objective import StyleTargets
from stylecore.params import Params
from stylecore.weights import load_vgg

LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


@pytest.mark.parametrize(("h", "w", "tile", "halo"), [(200, 330, 64, 64), (96, 96, 32, 0), (257, 129, 100, 40), (64, 500, 1000, 64)])
def test_tile_interiors_partition_every_layers_positions(h, w, tile, halo):
    tiles = feature_tiles(h, w, tile, halo)
    for stride in (1, 2, 4, 8, 16, 32):
        seen = torch.zeros(h // stride, w // stride, dtype=torch.int32)
        for t in tiles:
            assert t.crop_top % ALIGN == 0 and t.crop_left % ALIGN == 0  # the crop's pooling grid is the image's
            ch, cw = (t.crop_bottom - t.crop_top) // stride, (t.crop_right - t.crop_left) // stride  # the tile's map
            rows = torch.arange(ch).view(-1, 1) + t.crop_top // stride  # whole-map row of each tile position
            cols = torch.arange(cw).view(1, -1) + t.crop_left // stride
            idx = (rows * (w // stride) + cols)[None, None]  # (1, 1, ch, cw)
            inner = t.interior(idx, stride).flatten()
            seen.view(-1)[inner] += 1
        assert bool((seen == 1).all()), f"stride {stride}: positions counted {seen.unique().tolist()} times"
    assert [layer_stride(n) for n in ("conv1_1", "relu2_2", "pool2", "conv5_1", "pool5")] == [1, 2, 4, 16, 32]


@pytest.fixture(scope="module")
def style_and_vgg(hed, style_path):
    vgg, _ = load_vgg(hed, "max", "cpu")
    return load_tensor(style_path.read_bytes(), 128), vgg  # (1, 3, 80, 128)


@pytest.mark.slow
def test_tiled_targets_match_the_whole_images_for_every_kind(style_and_vgg):
    """Forced small tiles (32 px, 8 of them at 80 x 128) against one forward, per kind. Tolerance:
    moment-based kinds (gram, mean_std, w2) merge exactly; what is left is the halo's receptive-field
    effect (conv5_1 sees 66 px around a position, the halo is 64) and float32 rounding: measured
    below 1e-5 relative, asserted 1e-4. Quantile kinds (sliced_w, histogram) add the sketches'
    compression (`losses.sketch`; at this size most tiles keep every sample): asserted 1e-2."""
    style, vgg = style_and_vgg
    with torch.no_grad():
        for kind in [*STYLE_LOSS_KINDS.values(), HISTOGRAM]:
            whole = kind.targets(vgg(style, LAYERS), 7)
            tiled = tiled_targets(kind, vgg, style, LAYERS, 7, tile=32)
            tol = 1e-4 if kind.name in ("gram", "mean_std", "w2") else 1e-2
            for n in LAYERS:
                assert tiled[n].shape == whole[n].shape and tiled[n].dtype == whole[n].dtype
                err = float(relative_sq_error(tiled[n], whole[n]).sqrt())
                assert err < tol, (kind.name, n, err)
            if kind.name == "gram":  # independent of the tile count (exact kinds): up to rounding
                other = tiled_targets(kind, vgg, style, LAYERS, 7, tile=64)
                assert all(float(relative_sq_error(other[n], tiled[n]).sqrt()) < 1e-5 for n in LAYERS)


@pytest.mark.slow
def test_style_targets_tile_exactly_when_the_memory_model_puts_the_forward_over_the_budget(style_and_vgg):
    style, vgg = style_and_vgg
    p = Params(size=128, weights="vgg16-hed", style_layers=tuple(LAYERS))
    kind = STYLE_LOSS_KINDS["w2"]
    need = memory.feature_forward_peak("vgg16", LAYERS, 80, 128)
    budget = int(need / memory.FEATURE_BUDGET_FRACTION) + 2  # the row budget whose share for the forward is `need`
    assert memory.feature_budget(budget) >= need > memory.feature_budget(budget - 4)
    one = StyleTargets(2**20, torch.device("cpu"), budget=lambda: budget)
    assert one.forward_tile(vgg, LAYERS, (80, 128)) == 0
    tiled = StyleTargets(2**20, torch.device("cpu"), budget=lambda: budget - 4)
    assert tiled.forward_tile(vgg, LAYERS, (80, 128)) == 64  # the floor (2 tiles here, crops clipped to the image)
    a, b = one.row(kind, p, [style], None, 128, vgg), tiled.row(kind, p, [style], None, 128, vgg)
    with torch.no_grad():
        assert all(torch.equal(a[n], kind.targets(vgg(style, LAYERS), p.seed)[n]) for n in LAYERS)  # one piece: unchanged
    assert all(float(relative_sq_error(b[n], a[n]).sqrt()) < 1e-4 for n in LAYERS)


def test_memory_model_of_the_style_forward_counts_the_real_taps(hed):
    """The prediction's parts against the real forward at an odd size (floors at every pooling):
    the tapped outputs' bytes exactly, and the largest activation (conv1_x) exactly."""
    vgg, _ = load_vgg(hed, "max", "cpu")
    h, w = 75, 118
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    names = vgg.names[: vgg.names.index("conv5_1") + 1]
    with torch.no_grad():
        every = vgg(x, names)
    taps = sum(every[n].numel() * 4 for n in LAYERS)
    largest = max(t.numel() * 4 for t in every.values())
    predicted = memory.feature_forward_peak("vgg16", LAYERS, h, w)
    largest_tap = max(every[n].numel() * 4 for n in LAYERS)
    assert predicted == taps + 2 * largest + memory.FEATURE_STATS_FACTOR * largest_tap
    assert memory.feature_forward_peak("vgg16", LAYERS, h, w, batch=3) == 3 * predicted
    # the planner: 0 when one forward fits; else a tile whose crop fits
    assert memory.feature_tile("vgg16", LAYERS, (4096, 3072), 64 * 2**30) == 0
    t = memory.feature_tile("vgg16", LAYERS, (4096, 3072), 1 * 2**30)
    crop = t + 2 * memory.FEATURE_HALO
    assert 64 <= t < 3072 and memory.feature_forward_peak("vgg16", LAYERS, crop, crop) <= 2**30
    assert memory.feature_forward_peak("vgg16", LAYERS, crop + 64, crop + 64) > 2**30  # the largest such tile (to the bisection's 32 px)
