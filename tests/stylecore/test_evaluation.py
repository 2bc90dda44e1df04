"""The evaluation formulas (luminance LPIPS, Gaussian W2, sliced colour W1, CFSD) against
straightforward references written here, and `Distance` computing them in its shared passes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from stylecore import evaluation as E
from stylecore import metrics as M
from stylecore.images import load_tensor
from stylecore.lpips import load_lpips
from tests.conftest import SAMPLES


@pytest.fixture(scope="module")
def model():
    return load_lpips("random-vgg16")


def images(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def test_luminance_is_bt601_luma_replicated():
    x = images(2, 5, 7, 0)
    y = E.luminance(x)
    assert y.shape == (2, 3, 5, 7)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    torch.testing.assert_close(y[:, 1], 0.299 * r + 0.587 * g + 0.114 * b)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 2], y[:, 1])
    # torchvision's Grayscale (what StyleID's protocol used) writes 0.2989 for 0.299
    torch.testing.assert_close(y, rgb_to_grayscale(x, num_output_channels=3), atol=2e-4, rtol=0)


def reference_w2(fo: torch.Tensor, fs: torch.Tensor) -> float:
    """W2 between Gaussian fits with scipy's sqrtm, over the style's RMS norm. fo, fs: (C, H, W)."""
    xo, xs = fo.flatten(1).double().numpy(), fs.flatten(1).double().numpy()  # (C, N)
    mo, ms = xo.mean(1), xs.mean(1)
    so, ss = np.cov(xo, bias=True), np.cov(xs, bias=True)
    rs = scipy.linalg.sqrtm(ss).real
    cross = scipy.linalg.sqrtm(rs @ so @ rs).real
    w2 = np.sqrt(max(((mo - ms) ** 2).sum() + np.trace(so) + np.trace(ss) - 2 * np.trace(cross), 0.0))
    return float(w2 / np.sqrt((ms**2).sum() + np.trace(ss)))


def test_gaussian_w2_covariance_in_chunks_is_the_same(monkeypatch):
    g = torch.Generator().manual_seed(6)
    fo, fs = torch.randn(2, 4, 6, 5, generator=g) + 3, torch.randn(1, 4, 5, 5, generator=g)
    whole = E.gaussian_w2(fo, fs)
    monkeypatch.setattr(E, "_MOMENT_CHUNK", 7)  # 30 and 25 positions in uneven chunks
    torch.testing.assert_close(E.gaussian_w2(fo, fs), whole)
    torch.testing.assert_close(
        whole, torch.tensor([reference_w2(fo[i], fs[0]) for i in range(2)], dtype=torch.float64), rtol=1e-4, atol=1e-6
    )


def test_gaussian_w2_matches_scipy_and_closed_forms():
    g = torch.Generator().manual_seed(1)
    fo = torch.randn(2, 6, 5, 4, generator=g) * 2 + 1
    fs = torch.randn(1, 6, 7, 3, generator=g) @ torch.randn(3, 3, generator=g)  # correlated style features
    got = E.gaussian_w2(fo, fs)
    want = torch.tensor([reference_w2(fo[i], fs[0]) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # fewer positions than channels (deep layers of small images): the nuclear-norm route
    fo2, fs2 = torch.randn(2, 16, 2, 3, generator=g), torch.randn(1, 16, 4, 1, generator=g) + 0.5
    want2 = torch.tensor([reference_w2(fo2[i], fs2[0]) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(E.gaussian_w2(fo2, fs2), want2, rtol=1e-4, atol=1e-6)
    # one channel: W2 between N(m1, s1^2) and N(m2, s2^2) is sqrt((m1 - m2)^2 + (s1 - s2)^2)
    a, b = torch.randn(1, 1, 8, 8, generator=g) * 3 + 2, torch.randn(1, 1, 9, 9, generator=g) * 0.5 - 1
    closed = ((a.mean() - b.mean()) ** 2 + (a.std(unbiased=False) - b.std(unbiased=False)) ** 2).sqrt() / (b**2).mean().sqrt()
    torch.testing.assert_close(E.gaussian_w2(a, b).float()[0], closed, rtol=1e-4, atol=1e-6)
    # scale-free and zero on identical statistics (a permutation of positions keeps them)
    torch.testing.assert_close(E.gaussian_w2(5 * fo, 5 * fs), got, rtol=1e-4, atol=1e-6)
    perm = fs.flatten(2)[:, :, torch.randperm(21, generator=g)].view_as(fs)
    assert E.gaussian_w2(perm, fs).abs().max() < 1e-3


def test_sliced_colour_w1_matches_scipy_wasserstein_per_direction():
    out, style = images(2, 6, 8, 2), images(1, 12, 4, 3)  # 48 pixels each
    d = E.hist_directions(5, seed=4)
    got = E.sliced_colour_w1(out, style, d)
    for i in range(2):
        po = (d @ out[i].flatten(1)).numpy()  # (K, N)
        ps = (d @ style[0].flatten(1)).numpy()
        want = np.mean([scipy.stats.wasserstein_distance(po[k], ps[k]) for k in range(5)])
        assert got[i].item() == pytest.approx(want, rel=1e-5)
    # a spatial shuffle has the same colour distribution; the default directions are fixed unit vectors
    shuffled = style.flatten(2)[:, :, torch.randperm(48)].view_as(style)
    assert E.sliced_colour_w1(shuffled, style).abs().max() < 1e-6
    assert torch.equal(E.hist_directions(), E.hist_directions())
    torch.testing.assert_close(torch.linalg.vector_norm(E.hist_directions(), dim=1), torch.ones(E.HIST_DIRECTIONS))
    with pytest.raises(ValueError, match="pixel counts"):
        E.sliced_colour_w1(out, images(1, 5, 5, 0))


def reference_cfsd(fo: torch.Tensor, fc: torch.Tensor) -> float:
    """The StyleID definition written out: (C, H, W) features / C, full N x N softmaxes in float64,
    KL(content map || output map) summed over all rows (kl_div's 'sum' over one image)."""
    c = fo.shape[0]
    xo = fo.flatten(1).T.double() / c  # (N, C)
    xc = fc.flatten(1).T.double() / c
    log_q = F.log_softmax(xo @ xo.T, dim=-1)
    p = F.softmax(xc @ xc.T, dim=-1)
    return float(F.kl_div(log_q, p, reduction="sum"))


def test_cfsd_matches_the_full_map_reference_in_any_chunking():
    g = torch.Generator().manual_seed(5)
    fo, fc = torch.randn(2, 8, 5, 6, generator=g) * 3, torch.randn(2, 8, 5, 6, generator=g) * 3
    want = torch.tensor([reference_cfsd(fo[i], fc[i]) for i in range(2)], dtype=torch.float64)
    for chunk in (7, 30, 1024):
        torch.testing.assert_close(E.cfsd_from_features(fo, fc, chunk=chunk), want, rtol=1e-4, atol=1e-6)
    assert E.cfsd_from_features(fc, fc).abs().max() < 1e-5
    # a content batch of 1 broadcasts against the outputs
    torch.testing.assert_close(
        E.cfsd_from_features(fo, fc[:1]), torch.tensor([reference_cfsd(fo[i], fc[0]) for i in range(2)]).double(), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="equal shape"):
        E.cfsd_from_features(fo, fc[:, :, :4])


def test_fit_side():
    assert E.fit_side((300, 400), 512) == (300, 400)
    assert E.fit_side((600, 1024), 512) == (300, 512)
    assert E.fit_side((2000, 3), 512) == (512, 1)


def test_distance_fields_equal_the_formulas_applied_one_by_one(model):
    out, content, style = images(2, 40, 32, 9), images(2, 40, 32, 10), images(1, 50, 64, 11)
    res = M.Distance(model)(out, style, content)
    style_r = M.match_size(style, out)
    with torch.no_grad():
        fo, fs = model.backbone(out, M.DEFAULT_GRAM_LAYERS), model.backbone(style_r, M.DEFAULT_GRAM_LAYERS)
        gray = model(E.luminance(out), E.luminance(content))
        f3o, f3c = model.backbone(out, [E.CFSD_LAYER])[E.CFSD_LAYER], model.backbone(content, [E.CFSD_LAYER])[E.CFSD_LAYER]
    torch.testing.assert_close(res.lpips_content_gray, gray, atol=1e-5, rtol=1e-5)
    for n in M.DEFAULT_GRAM_LAYERS:
        torch.testing.assert_close(res.gram_layers[n], M.gram_distance_from_features([fo[n]], [fs[n]]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.w2_layers[n], E.gaussian_w2(fo[n], fs[n]).float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.gram_style, torch.stack(list(res.gram_layers.values())).mean(0))
    torch.testing.assert_close(res.w2_style, torch.stack(list(res.w2_layers.values())).mean(0))
    torch.testing.assert_close(res.hist_style, E.sliced_colour_w1(out, style_r))
    torch.testing.assert_close(res.cfsd, E.cfsd_from_features(f3o, f3c).float(), atol=1e-4, rtol=1e-4)
    rows = res.rows()
    assert set(rows[0]) == {
        "lpips_style",
        "lpips_content",
        "gram_style",
        "lpips_content_gray",
        "w2_style",
        "hist_style",
        "cfsd",
        "style_layers_metrics",
    }
    assert set(rows[1]["style_layers_metrics"]["w2"]) == set(M.DEFAULT_GRAM_LAYERS)
    assert rows[1]["style_layers_metrics"]["gram"]["conv3_1"] == pytest.approx(res.gram_layers["conv3_1"][1].item())


def test_big_outputs_get_cfsd_and_colours_at_the_capped_size(model, monkeypatch):
    monkeypatch.setattr(E, "CFSD_MAX_SIDE", 24)  # the 512 px rule, exercised on small images
    out, content, style = images(1, 32, 48, 12), images(1, 32, 48, 13), images(1, 32, 48, 14)
    res = M.Distance(model)(out, style, content)
    small = (16, 24)
    o, c, s = (M.resize_tensor(x, small) for x in (out, content, style))
    with torch.no_grad():
        f3 = model.backbone(torch.cat([o, c]), [E.CFSD_LAYER])[E.CFSD_LAYER]
    torch.testing.assert_close(res.cfsd, E.cfsd_from_features(f3[:1], f3[1:]).float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.hist_style, E.sliced_colour_w1(o, s))


@pytest.mark.slow
def test_on_real_weights_metrics_order_a_mild_and_a_strong_change(hed):
    # Real VGG-16 (hed) features: a slightly noised content image is closer to the content than
    # the content with its colours inverted, on CFSD and the luminance LPIPS; and the style image
    # itself scores 0 on every style statistic.
    content = load_tensor(SAMPLES / "content" / "tubingen.jpg", 96)
    style = load_tensor(SAMPLES / "style" / "starry_night.jpg", 96)
    mild = (content + 0.03 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    strong = 1 - content
    dist = M.Distance.load(hed)
    res = dist(torch.cat([mild, strong]), style, content)
    assert res.cfsd[0] < res.cfsd[1]
    assert res.lpips_content_gray[0] < res.lpips_content_gray[1]
    same = dist(M.match_size(style, content), style, content)
    assert same.gram_style.abs().max() < 1e-5 and same.w2_style.abs().max() < 1e-3 and same.hist_style.abs().max() < 1e-6
