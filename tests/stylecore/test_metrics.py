"""Distance pair, Gram distance, L2, and the paper's experiments as functions."""

from __future__ import annotations

import pytest
import torch

from stylecore import experiments as X
from stylecore import metrics as M
from stylecore.lpips import load_lpips


@pytest.fixture(scope="module")
def model():
    return load_lpips("random-vgg16")


def images(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def test_l2_is_mean_squared_and_the_signed_convention_scales_it_by_4():
    white, black, gray = (torch.full((1, 3, 8, 8), v) for v in (1.0, -1.0, 0.0))
    assert M.l2(white, black).item() == 4.0
    assert M.l2(white, gray).item() == 1.0
    a, b = images(2, 9, 7, 0), images(2, 9, 7, 1)
    unit = M.l2(a, b)
    assert unit.shape == (2,)
    torch.testing.assert_close(unit, ((a - b) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(M.l2(M.to_signed(a), M.to_signed(b)), 4 * unit)
    torch.testing.assert_close(M.to_unit(M.to_signed(a)), a)


def test_gram_is_size_normalised():
    f = torch.randn(2, 5, 6, 4, generator=torch.Generator().manual_seed(0))
    tiled = f.repeat(1, 1, 2, 3)  # same statistics, 6x the positions
    torch.testing.assert_close(M.gram(tiled), M.gram(f))
    by_hand = torch.einsum("bchw,bdhw->bcd", f, f) / (5 * 6 * 4)
    torch.testing.assert_close(M.gram(f), by_hand)


def test_gram_distance_is_relative_frobenius_averaged_over_layers():
    g = torch.Generator().manual_seed(1)
    fo = [torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 6, 3, 3, generator=g)]
    fs = [torch.randn(1, 4, 7, 7, generator=g), torch.randn(1, 6, 4, 4, generator=g)]
    got = M.gram_distance_from_features(fo, fs)
    want = torch.zeros(2)
    for o, s in zip(fo, fs):
        for i in range(2):
            go, gs = M.gram(o[i : i + 1])[0], M.gram(s)[0]
            want[i] += ((go - gs) ** 2).sum().sqrt() / (gs**2).sum().sqrt() / len(fo)
    torch.testing.assert_close(got, want)
    # scale-free: multiplying all features (a weight set with 255x the input scale) changes nothing
    torch.testing.assert_close(M.gram_distance_from_features([3 * x for x in fo], [3 * x for x in fs]), got)
    assert torch.equal(M.gram_distance_from_features(fs, fs), torch.zeros(1))


def test_gram_distance_on_images_of_different_sizes(model):
    out, style = images(2, 32, 40, 2), images(1, 48, 48, 3)
    d = M.gram_distance(out, style, model.backbone, M.DEFAULT_GRAM_LAYERS)
    assert d.shape == (2,) and (d > 0).all() and d.is_inference()
    assert torch.equal(M.gram_distance(out, out, model.backbone), torch.zeros(2))


def test_match_size_gives_exact_shape_and_keeps_range():
    out = images(1, 30, 44, 4)
    style = images(1, 61, 50, 5)
    r = M.match_size(style, out)
    assert r.shape == (1, 3, 30, 44)
    assert r.min() >= 0 and r.max() <= 1
    assert M.match_size(out, out) is out


def test_distance_pair_is_lpips_to_resized_style_and_to_content(model):
    out, content, style = images(3, 32, 48, 6), images(3, 32, 48, 7), images(1, 40, 40, 8)
    d_style, d_content = M.distance(out, style, content, model)
    assert d_style.shape == d_content.shape == (3,)
    assert d_style.is_inference()
    with torch.no_grad():
        want_style = model(out, M.match_size(style, out).expand(3, -1, -1, -1))
        want_content = torch.stack([model(out[i : i + 1], content[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(d_style, want_style, atol=1e-6, rtol=0)
    torch.testing.assert_close(d_content, want_content, atol=1e-6, rtol=0)
    same_style, same_content = M.distance(out, out, out, model)
    assert torch.equal(same_content, torch.zeros(3)) and torch.equal(same_style, torch.zeros(3))


def test_distance_class_one_pass_equals_the_reference_functions(model):
    out, content, style = images(2, 40, 32, 9), images(2, 40, 32, 10), images(1, 50, 64, 11)
    dist = M.Distance(model)
    res = dist(out, style, content)
    d_style, d_content = M.distance(out, style, content, model)
    g = M.gram_distance(out, M.match_size(style, out), model.backbone, M.DEFAULT_GRAM_LAYERS)
    torch.testing.assert_close(res.lpips_style, d_style, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.lpips_content, d_content, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.gram_style, g, atol=1e-5, rtol=1e-5)
    rows = res.rows()
    assert len(rows) == 2 and {"lpips_style", "lpips_content", "gram_style"} <= set(rows[0])
    assert dist.weights_label == model.weights_label and "RANDOM" in dist.weights_label
    # a separate Gram network gives the same numbers when it is the same network
    res2 = M.Distance(model, gram_vgg=model.backbone)(out, style, content)
    torch.testing.assert_close(res2.gram_style, res.gram_style, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        dist(out, torch.cat([style] * 3), content)


def test_distance_rejects_unknown_gram_layers(model):
    with pytest.raises(KeyError, match="conv5_1"):
        M.Distance(model, gram_layers=("conv5_4",))  # VGG-19 only


def test_intensity_l2_is_exactly_the_papers(model):
    rows = X.intensity(model, size=32)
    assert [r.pair for r in rows] == [p for p, _, _ in X.PAPER_INTENSITY]
    assert [r.l2 for r in rows] == [4.0, 1.0, 1.0]
    assert all(r.lpips > 0 for r in rows)


def test_contrast_levels_keep_the_mean_and_l2_grows_4x(model):
    img = images(1, 40, 48, 12)
    levels = X.contrast_levels(M.to_signed(img))
    for lv in levels:
        torch.testing.assert_close(lv.mean(dim=(2, 3)), levels[0].mean(dim=(2, 3)))
        assert lv.min() >= -1 and lv.max() <= 1
    res = X.contrast(img, model)
    assert res.factors == X.CONTRAST_FACTORS
    assert res.rows[1].l2 > res.rows[0].l2 > 0
    assert res.rows[1].lpips > res.rows[0].lpips > 0
    assert res.l2_ratio == pytest.approx(4.0, rel=1e-4)  # (1 - 0.5)^2 / (1 - 0.75)^2
    assert res.lpips_ratio > 1
    with pytest.raises(ValueError, match="three"):
        X.contrast(img, model, factors=(1.0, 0.5))
