"""Loss functions against independent formulas written out by hand."""

from __future__ import annotations

import pytest
import torch

from stylecore.losses import (
    ContentLoss,
    LPIPSContentLoss,
    StyleLoss,
    blend_grams,
    gatys_content_loss,
    gatys_style_layer_loss,
    gram_matrix,
    normalized_layer_weights,
    relative_sq_error,
    total_variation,
)
from stylecore.lpips import load_lpips


def test_gram_matrix_equals_explicit_sum():
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    g = gram_matrix(f)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                assert torch.isclose(g[b, i, j], (f[b, i] * f[b, j]).sum())
    torch.testing.assert_close(gram_matrix(f, normalize=True), g / 20)


def test_style_layer_loss_is_the_papers_E_l():
    f = torch.randn(2, 4, 3, 6, dtype=torch.float64)
    a = torch.randn(2, 4, 3, 6, dtype=torch.float64)
    n, m = 4, 18
    G, A = gram_matrix(f), gram_matrix(a)
    want = torch.stack([sum((G[b, i, j] - A[b, i, j]) ** 2 for i in range(n) for j in range(n)) / (4 * n**2 * m**2) for b in range(2)])
    torch.testing.assert_close(gatys_style_layer_loss(G, A, n, m), want)


def test_content_loss_is_half_sum_of_squares():
    f, p = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    want = torch.stack([0.5 * ((f[b] - p[b]) ** 2).sum() for b in range(3)])
    torch.testing.assert_close(gatys_content_loss(f, p), want)


def test_relative_losses_are_scale_free():
    f, p = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(relative_sq_error(f, p), relative_sq_error(60 * f, 60 * p))
    g, a = gram_matrix(f, True), gram_matrix(p, True)
    torch.testing.assert_close(relative_sq_error(g, a), relative_sq_error(gram_matrix(60 * f, True), gram_matrix(60 * p, True)))


def test_total_variation():
    x = torch.zeros(1, 1, 3, 3)
    assert total_variation(x).item() == 0
    x[0, 0, 1, 1] = 1.0
    # 4 neighbour differences of 1 among 6 vertical and 6 horizontal pairs
    torch.testing.assert_close(total_variation(x), torch.tensor([2 / 6 + 2 / 6]))


def test_modules_weight_rows_and_layers_independently():
    feats = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 5, 2, 2)}
    targets = {k: torch.randn_like(v) for k, v in feats.items()}
    cl = ContentLoss(targets)(feats)
    want = (relative_sq_error(feats["a"], targets["a"]) + relative_sq_error(feats["b"], targets["b"])) / 2
    torch.testing.assert_close(cl, want)
    grams = {k: gram_matrix(v, True) for k, v in targets.items()}
    lw = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    sl = StyleLoss(grams, lw)(feats)
    per = [relative_sq_error(gram_matrix(feats[k], True), grams[k]) for k in ("a", "b")]
    torch.testing.assert_close(sl, torch.stack([per[0][0], 0.25 * per[0][1] + 0.75 * per[1][1]]))


def test_layer_weights_and_blends():
    assert normalized_layer_weights(None, 4) == [0.25] * 4
    assert normalized_layer_weights([1, 3], 2) == [0.25, 0.75]
    g1, g2 = {"a": torch.ones(1, 2, 2)}, {"a": 3 * torch.ones(1, 2, 2)}
    torch.testing.assert_close(blend_grams([g1, g2], [3, 1])["a"], 1.5 * torch.ones(1, 2, 2))


def test_gram_backward_matches_autograd():
    f = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t, normalize=True), (f,))
    w = torch.randn(2, 3, 3, dtype=torch.float64)
    (g1,) = torch.autograd.grad((gram_matrix(f) * w).sum(), f)
    fr = f.reshape(2, 3, 20)
    (g2,) = torch.autograd.grad((torch.bmm(fr, fr.transpose(1, 2)) * w).sum(), f)
    torch.testing.assert_close(g1, g2)


def test_gram_of_channels_last_features_reads_them_in_place_and_keeps_their_layout():
    # The bf16 CPU path hands the losses NHWC features; the Gram and its gradient must equal the
    # NCHW ones, and the gradient must come back NHWC (a transposing copy per layer is what NHWC saves).
    f = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    nhwc = f.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    nchw = f.clone().requires_grad_(True)
    w = torch.randn(2, 8, 8, dtype=torch.float64)
    g_last, g_first = gram_matrix(nhwc, normalize=True), gram_matrix(nchw, normalize=True)
    torch.testing.assert_close(g_last, g_first)
    (d_last,) = torch.autograd.grad((g_last * w).sum(), nhwc)
    (d_first,) = torch.autograd.grad((g_first * w).sum(), nchw)
    torch.testing.assert_close(d_last, d_first)
    assert d_last.is_contiguous(memory_format=torch.channels_last) and not d_last.is_contiguous()
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t, normalize=True), (nhwc,))
    target = torch.randn_like(f)
    torch.testing.assert_close(relative_sq_error(nhwc, target), relative_sq_error(nchw, target))


def test_content_loss_take_indexes_rows():
    feats = {"a": torch.randn(3, 3, 4, 4), "b": torch.randn(3, 5, 2, 2)}
    loss = ContentLoss({k: torch.randn_like(v) for k, v in feats.items()})
    rows = torch.tensor([2, 0])
    sub = loss.take(rows)
    assert isinstance(sub, ContentLoss)
    torch.testing.assert_close(sub({k: v[rows] for k, v in feats.items()}), loss(feats)[rows])
    assert loss(feats).shape == (3,)  # the original keeps every row


def test_style_loss_take_indexes_rows_and_layer_weights():
    feats = {"a": torch.randn(3, 3, 4, 4), "b": torch.randn(3, 5, 2, 2)}
    grams = {k: gram_matrix(torch.randn_like(v), True) for k, v in feats.items()}
    loss = StyleLoss(grams, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.1, 0.9]]))
    rows = torch.tensor([1, 2])
    torch.testing.assert_close(loss.take(rows)({k: v[rows] for k, v in feats.items()}), loss(feats)[rows])


def test_lpips_content_loss_forward_shared_features_and_take():
    model = load_lpips("random-vgg16")
    g = torch.Generator().manual_seed(0)
    contents, x = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    loss = LPIPSContentLoss(model, contents)
    want = model(x, contents)
    torch.testing.assert_close(loss(x), want)
    with torch.no_grad():
        raw = model.backbone(x, model.layers)
    torch.testing.assert_close(loss.from_features(raw), want)
    rows = torch.tensor([2, 0])
    torch.testing.assert_close(loss.take(rows)(x[rows]), want[rows])
    assert loss.take(rows).model is model
    with pytest.raises(ValueError, match="content images"):
        LPIPSContentLoss(model, None)
