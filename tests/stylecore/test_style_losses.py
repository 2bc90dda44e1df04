"""The style losses (mean_std, w2, sliced_w, histogram) and their registry, against references
written out here: loops, closed forms, and numpy's interpolation for quantile resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylecore.losses import (
    HISTOGRAM,
    STYLE_LOSS_KINDS,
    gaussian_stats,
    gaussian_w2,
    histogram_matching_loss,
    histogram_remap,
    mean_std_stats,
    pack_gaussian,
    project,
    quantiles,
    resample_quantiles,
    sliced_directions,
    sliced_wasserstein,
    style_loss_kind,
    unpack_gaussian,
)
from stylecore.params import STYLE_LOSSES

ALL_KINDS = [*STYLE_LOSS_KINDS.values(), HISTOGRAM]
IDS = [k.name for k in ALL_KINDS]
LAYERS = ("a", "b")


def _feats(b: int, seed: int, hw: tuple[int, int] = (8, 8), scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Uneven channel statistics (offsets, scales) and correlations, like a real layer's.
    a = torch.randn(b, 6, *hw, generator=g) * torch.linspace(0.5, 2, 6).view(1, 6, 1, 1) + torch.linspace(-1, 1, 6).view(1, 6, 1, 1)
    mix = torch.randn(9, 9, generator=g) / 3 + torch.eye(9)
    c = torch.einsum("dc,bchw->bdhw", mix, torch.randn(b, 9, hw[0] // 2, hw[1] // 2, generator=g)).relu()
    return {"a": a * scale, "b": c * scale}


def _stacked_targets(kind, style_feats: list[dict[str, torch.Tensor]], seeds: list[int]) -> dict[str, torch.Tensor]:
    per_row = [kind.targets(f, s) for f, s in zip(style_feats, seeds)]
    return {n: torch.cat([t[n] for t in per_row]) for n in per_row[0]}


# ---------------------------------------------------------------------- functional references
def test_mean_std_stats_equal_loops():
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    s = mean_std_stats(f, eps=0.0)
    for b in range(2):
        for c in range(3):
            vals = [float(v) for v in f[b, c].flatten()]
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
            assert s[b, 0, c].item() == pytest.approx(mu)
            assert s[b, 1, c].item() == pytest.approx(sd)


def test_w2_of_1d_gaussians_is_the_closed_form():
    # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2
    for m1, s1, m2, s2 in [(1.0, 2.0, 3.0, 3.0), (-0.5, 0.1, 0.5, 4.0), (2.0, 1.0, 2.0, 1.0)]:
        got = gaussian_w2(
            torch.tensor([[m1]], dtype=torch.float64),
            torch.tensor([[[s1 * s1]]], dtype=torch.float64),
            torch.tensor([[m2]], dtype=torch.float64),
            torch.tensor([[[s2 * s2]]], dtype=torch.float64),
        )
        assert got.item() == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, abs=1e-9)


def test_w2_with_commuting_covariances_and_symmetry():
    # Diagonal covariances commute: W2^2 = ||mu1 - mu2||^2 + sum (sqrt a_i - sqrt b_i)^2.
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    m1, m2 = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    got = gaussian_w2(m1, torch.diag(a)[None], m2, torch.diag(b)[None])
    want = (m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    assert got.item() == pytest.approx(want.item(), abs=1e-9)
    # General covariances: the distance is symmetric though the formula is not written symmetrically.
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(1, 5, 5, generator=g, dtype=torch.float64), torch.randn(1, 5, 5, generator=g, dtype=torch.float64)
    c1, c2 = x @ x.mT + 0.1 * torch.eye(5, dtype=torch.float64), y @ y.mT
    u, v = torch.randn(1, 5, generator=g, dtype=torch.float64), torch.randn(1, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gaussian_w2(u, c1, v, c2), gaussian_w2(v, c2, u, c1))
    assert gaussian_w2(u, c1, u, c1).item() == pytest.approx(0.0, abs=1e-9)
    # Shifting every feature vector by d moves the fit's mean only: W2^2 = ||d||^2.
    f = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    d = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    mu, cov = gaussian_stats(f)
    mu2, cov2 = gaussian_stats(f + d.view(1, 4, 1, 1))
    torch.testing.assert_close(gaussian_w2(mu2, cov2, mu, cov), torch.full((2,), float(d.pow(2).sum()), dtype=torch.float64))


def test_gaussian_stats_equal_loops():
    f = torch.randn(1, 3, 2, 4, dtype=torch.float64)
    mu, cov = gaussian_stats(f)
    v = f[0].reshape(3, 8)
    for i in range(3):
        assert mu[0, i].item() == pytest.approx(float(v[i].mean()))
        for j in range(3):
            want = sum((float(v[i, n]) - float(v[i].mean())) * (float(v[j, n]) - float(v[j].mean())) for n in range(8)) / 8
            assert cov[0, i, j].item() == pytest.approx(want)


def test_w2_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(0)
    c = 4
    a = torch.randn(2, c, c, generator=g, dtype=torch.float64)
    cov_t, mu_t = a @ a.mT + 0.1 * torch.eye(c, dtype=torch.float64), torch.randn(2, c, generator=g, dtype=torch.float64)
    m = torch.randn(2, c, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, c, c, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(m: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gaussian_w2(m, b @ b.mT + 0.1 * torch.eye(c, dtype=torch.float64), mu_t, cov_t)

    assert torch.autograd.gradcheck(fn, (m, b))
    # Through the features, with a rank-deficient target (a dead channel): gradients stay finite.
    f = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    mt, ct = gaussian_stats(torch.cat([torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), torch.zeros(1, 1, 4, 4)], 1))
    assert torch.autograd.gradcheck(lambda x: gaussian_w2(*gaussian_stats(x), mt, ct), (f,))


def test_resample_quantiles_is_linear_interpolation_of_levels():
    q = torch.sort(torch.randn(2, 3, 7, dtype=torch.float64)).values
    for n in (1, 4, 7, 19):
        got = resample_quantiles(q, n)
        src = (np.arange(7) + 0.5) / 7
        dst = (np.arange(n) + 0.5) / n
        for b in range(2):
            for k in range(3):
                np.testing.assert_allclose(got[b, k].numpy(), np.interp(dst, src, q[b, k].numpy()), rtol=1e-12, atol=1e-12)
    x = torch.randn(1, 2, 50, dtype=torch.float64)
    torch.testing.assert_close(quantiles(x, 50), x.sort(-1).values)


def test_sliced_wasserstein_against_sorted_projections():
    g = torch.Generator().manual_seed(1)
    f, s = torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, 4, 4, generator=g, dtype=torch.float64) + 1
    dirs = torch.stack([sliced_directions(7, "x", 4, 3), sliced_directions(8, "x", 4, 3)]).double()  # (2, 3, 4)
    tq = quantiles(project(s, dirs), 16)  # 16 = H W: the stored quantiles are exactly the sorted values
    got = sliced_wasserstein(f, tq, dirs)
    for b in range(2):
        num, den = 0.0, 0.0
        for k in range(3):
            pf = sorted(float(sum(dirs[b, k, c] * f[b, c].flatten()[n] for c in range(4))) for n in range(16))
            ps = sorted(float(sum(dirs[b, k, c] * s[b, c].flatten()[n] for c in range(4))) for n in range(16))
            num += sum((x - y) ** 2 for x, y in zip(pf, ps))
            den += sum(y * y for y in ps)
        assert got[b].item() == pytest.approx(num / den, rel=1e-9)
    # Identical sets (any order) are at distance 0; the directions are unit vectors.
    perm = s.flatten(2)[:, :, torch.randperm(16, generator=g)].reshape(2, 4, 4, 4)
    assert sliced_wasserstein(perm, tq, dirs).abs().max().item() < 1e-12
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(2, 3, dtype=torch.float64))


def test_histogram_loss_remaps_by_rank():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    style = torch.randn(1, 2, 9, generator=g, dtype=torch.float64) * 3 + 1
    tq = quantiles(style, 9)
    r = histogram_remap(f, tq)
    for c in range(2):
        vals = f[0, c].flatten().tolist()
        ranks = sorted(range(9), key=lambda i: vals[i])
        want = [0.0] * 9
        for k, i in enumerate(ranks):
            want[i] = sorted(style[0, c].tolist())[k]
        assert r[0, c].flatten().tolist() == pytest.approx(want)
    want_loss = (f - r).pow(2).mean() / tq.pow(2).mean()
    assert histogram_matching_loss(f, tq).item() == pytest.approx(want_loss.item())
    # Already the style's histogram (a permutation of its values): 0.
    already = style[:, :, torch.randperm(9, generator=g)].reshape(1, 2, 3, 3)
    assert histogram_matching_loss(already, tq).item() == pytest.approx(0.0, abs=1e-15)
    # The gradient treats the remap as a constant: d/df mean((f - r)^2) / E = 2 (f - r) / (N E).
    x = f.clone().requires_grad_(True)
    histogram_matching_loss(x, tq).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, 2 * (f - r) / (18 * tq.pow(2).mean()))
    # Per channel it is the sliced loss along the channel axes.
    eye = torch.eye(2, dtype=torch.float64)[None]
    torch.testing.assert_close(histogram_matching_loss(f, tq), sliced_wasserstein(f, tq, eye))


# ---------------------------------------------------------------------- modules of every kind
def test_registry_matches_params_and_names_unknowns():
    assert set(STYLE_LOSS_KINDS) == set(STYLE_LOSSES)
    for name, kind in STYLE_LOSS_KINDS.items():
        assert kind.name == name and style_loss_kind(name) is kind and kind.default_scale > 0
    assert HISTOGRAM.name == "histogram" and HISTOGRAM.default_scale > 0
    with pytest.raises(KeyError, match="gram, mean_std, w2, sliced_w") as e:
        style_loss_kind("sliced")
    assert "did you mean 'sliced_w'" in str(e.value)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=IDS)
def test_zero_at_target_positive_elsewhere_and_scale_free(kind):
    style = _feats(1, 0, (16, 16))  # 256 and 64 positions: exact for the 256 stored quantiles at "a"
    lw = torch.tensor([[0.5, 0.5]])
    at = kind.module(kind.targets(style, 5), lw, [5]).per_layer(style)
    assert at[0, 0].abs().item() < 1e-5
    assert at[0, 1].abs().item() < 1e-3  # 64 positions from 256 interpolated quantiles: nearly exact
    other = _feats(1, 1, (12, 20))
    loss = kind.module(kind.targets(style, 5), lw, [5])(other)
    assert loss.item() > 1e-2
    big = {k: 60 * v for k, v in style.items()}
    loss60 = kind.module(kind.targets(big, 5), lw, [5])({k: 60 * v for k, v in other.items()})
    torch.testing.assert_close(loss60, loss, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=IDS)
def test_rows_are_independent_and_take_restricts(kind):
    styles = [_feats(1, 10 + i, (8 + 4 * i, 12)) for i in range(3)]
    seeds = [3, 4, 5]
    targets = _stacked_targets(kind, styles, seeds)
    lw = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    x = _feats(3, 20, (8, 8))
    batch = kind.module(targets, lw, seeds)
    out = batch(x)
    assert out.shape == (3,)
    for i in range(3):
        alone = kind.module(kind.targets(styles[i], seeds[i]), lw[i : i + 1], seeds[i : i + 1])
        torch.testing.assert_close(alone({k: v[i : i + 1] for k, v in x.items()}), out[i : i + 1], rtol=1e-6, atol=1e-7)
    per = batch.per_layer(x)
    torch.testing.assert_close(out, kind.default_scale * (per * lw).sum(1))
    rows = torch.tensor([2, 0])
    sub = batch.take(rows)
    torch.testing.assert_close(sub({k: v[rows] for k, v in x.items()}), out[rows])
    assert batch(x).shape == (3,)  # the original is untouched by take


@pytest.mark.parametrize("kind", ALL_KINDS, ids=IDS)
def test_target_shapes_do_not_depend_on_image_size_and_gradients_flow(kind):
    small, large = kind.targets(_feats(1, 0, (4, 6)), 0), kind.targets(_feats(1, 1, (32, 18)), 0)
    assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in large.items()}
    x = {k: v.requires_grad_(True) for k, v in _feats(2, 2, (10, 10)).items()}
    x["b"].data[:, 0] = 0  # a constant channel: mean_std's std and w2's square roots must stay finite
    loss = kind.module({k: torch.cat([v, v]) for k, v in large.items()}, torch.full((2, 2), 0.5), [0, 0])(x)
    loss.sum().backward()
    for v in x.values():
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_sliced_directions_are_fixed_by_seed_and_layer():
    torch.testing.assert_close(sliced_directions(1, "conv1_1", 8), sliced_directions(1, "conv1_1", 8))
    assert not torch.allclose(sliced_directions(1, "conv1_1", 8), sliced_directions(2, "conv1_1", 8))
    assert not torch.allclose(sliced_directions(1, "conv1_1", 8), sliced_directions(1, "conv2_1", 8))
    kind = STYLE_LOSS_KINDS["sliced_w"]
    f = _feats(1, 0)
    assert not torch.allclose(kind.targets(f, 1)["a"], kind.targets(f, 2)["a"])  # a row's targets follow its seed


def test_blends():
    f1, f2 = _feats(1, 0, (8, 8)), _feats(1, 1, (8, 8))
    w = [0.25, 0.75]
    for name in ("gram", "mean_std"):
        kind = STYLE_LOSS_KINDS[name]
        t1, t2 = kind.targets(f1, 0), kind.targets(f2, 0)
        got = kind.blend([t1, t2], w)
        for n in LAYERS:
            torch.testing.assert_close(got[n], 0.25 * t1[n] + 0.75 * t2[n])
    # w2: the Gaussian fit of the mixture; with equal weights and equal counts, the fit of the union.
    kind = STYLE_LOSS_KINDS["w2"]
    got = kind.blend([kind.targets(f1, 0), kind.targets(f2, 0)], [0.5, 0.5])
    union = kind.targets({n: torch.cat([f1[n], f2[n]], 3) for n in LAYERS}, 0)
    for n in LAYERS:
        torch.testing.assert_close(got[n], union[n], rtol=1e-5, atol=1e-5)
    mu, cov = unpack_gaussian(got["a"])
    torch.testing.assert_close(pack_gaussian(mu, cov), got["a"])
    # Quantile blends are the 1-D Wasserstein barycentre: halfway between x and x + 2 is x + 1.
    # Along a direction d the shift is 2 d.1, and halfway is d.1: the projections of x + 1.
    for kind in (STYLE_LOSS_KINDS["sliced_w"], HISTOGRAM):
        shifted, mid = {n: v + 2 for n, v in f1.items()}, {n: v + 1 for n, v in f1.items()}
        got = kind.blend([kind.targets(f1, 4), kind.targets(shifted, 4)], [1, 1])
        for n in LAYERS:
            torch.testing.assert_close(got[n], kind.targets(mid, 4)[n], rtol=1e-5, atol=1e-5)


def test_statistics_stay_float32_under_low_precision_features():
    kind = STYLE_LOSS_KINDS["gram"]
    f = _feats(1, 0)
    m = kind.module(kind.targets(f, 0), torch.tensor([[0.5, 0.5]]), [0])
    low = {k: v.bfloat16() for k, v in f.items()}
    out = m(low)
    assert out.dtype == torch.float32 and out.item() < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ALL_KINDS, ids=IDS)
def test_each_loss_stylises_on_real_features(kind, hed, content_path, style_path):
    """On vgg16-hed at 48 px, 15 L-BFGS steps from the content image with content MSE + 1e3 * the loss (its
    default scale included) cut the loss by half and bring the output's Grams toward the style's."""
    from stylecore.images import load_tensor
    from stylecore.losses import ContentLoss
    from stylecore.metrics import gram_distance
    from stylecore.weights import load_vgg

    vgg, _ = load_vgg(hed)
    layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    content, style = load_tensor(content_path, 48), load_tensor(style_path, 48)
    with torch.no_grad():
        style_loss = kind.module(kind.targets(vgg(style, layers), 0), torch.full((1, 5), 0.2), [0])
        content_loss = ContentLoss(vgg(content, ("conv4_2",)))
        start = style_loss(vgg(content, layers)).item()
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=15, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = vgg(x, (*layers, "conv4_2"))
        loss = (content_loss(f) + 1e3 * style_loss(f)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = x.detach().clamp(0, 1)
    with torch.no_grad():
        assert style_loss(vgg(out, layers)).item() < 0.5 * start
    assert gram_distance(out, style, vgg, layers).item() < 0.8 * gram_distance(content, style, vgg, layers).item()


@pytest.mark.parametrize("kind", ALL_KINDS, ids=IDS)
def test_a_rows_gradient_is_its_own_alone_or_in_a_batch(kind):
    g = torch.Generator().manual_seed(0)
    styles = [{"a": torch.randn(1, 16, 9, 9, generator=g)} for _ in range(3)]
    targets = {"a": torch.cat([kind.targets(s, i)["a"] for i, s in enumerate(styles)])}
    x = torch.randn(3, 16, 8, 8, generator=g).requires_grad_(True)
    kind.module(targets, torch.ones(3, 1), [0, 1, 2])({"a": x}).sum().backward()
    x0 = x.detach()[1:2].clone().requires_grad_(True)
    kind.module({"a": targets["a"][1:2]}, torch.ones(1, 1), [1])({"a": x0}).sum().backward()
    assert x.grad is not None and x0.grad is not None
    torch.testing.assert_close(x.grad[1:2], x0.grad, rtol=1e-6, atol=1e-9)
