"""The composed objective (`stylecore.objective`): terms from the registry, weights per row, row
subsets, the style-target cache. Random VGG weights: this is plumbing, not stylisation quality."""

from __future__ import annotations

import pytest
import torch

from stylecore.losses import STYLE_LOSS_KINDS
from stylecore.objective import StyleTargets, build_objective
from stylecore.params import Params
from stylecore.weights import load_vgg

BASE = Params(size=32, weights="random", style_layers=("relu1_1", "relu2_1"), content_layers=("relu2_2",))


def _batch(style_loss: str, hist: float = 0.0, n: int = 3):
    g = torch.Generator().manual_seed(1)
    contents = torch.rand(n, 3, 24, 32, generator=g)
    styles = [(torch.rand(1, 3, 28, 28, generator=g),) for _ in range(n)]
    params = [
        BASE.replace(style_loss=style_loss, histogram_weight=hist, style_weight=w, content_weight=c, tv_weight=t, seed=i)
        for i, (w, c, t) in enumerate([(10.0, 1.0, 0.0), (1e3, 0.5, 2.0), (1.0, 2.0, 0.5)][:n])
    ]
    return params, contents, styles


def _build(params, contents, styles, targets=None, keys=None):
    vgg, _ = load_vgg("random")
    targets = targets or StyleTargets(2**24, torch.device("cpu"))
    return build_objective(params, contents, styles, keys or [None] * len(params), 32, vgg, targets, lambda: None)


@pytest.mark.parametrize("style_loss", sorted(STYLE_LOSS_KINDS))
@pytest.mark.parametrize("hist", [0.0, 0.5])
def test_every_registry_loss_batched_equals_each_row_alone_and_take_rows(style_loss, hist):
    params, contents, styles = _batch(style_loss, hist)
    x = torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    obj = _build(params, contents, styles)
    full = obj(x)
    assert set(full) == {"content", "style", "tv", "total"} | ({"hist"} if hist else set())
    for i, p in enumerate(params):  # weights per row: total = weighted sum of that row's terms
        want = p.content_weight * full["content"][i] + p.style_weight * full["style"][i] + p.tv_weight * full["tv"][i]
        want = want + (hist * full["hist"][i] if hist else 0)
        assert full["total"][i].item() == pytest.approx(want.item(), rel=1e-5)
        lone = _build([p], contents[i : i + 1], [styles[i]])(x[i : i + 1])
        for k, v in lone.items():
            if k == "tv" and p.tv_weight == 0:
                assert v[0] == 0  # alone with tv_weight 0: not computed
                continue
            assert v[0].item() == pytest.approx(full[k][i].item(), rel=1e-4, abs=1e-7), (k, i)
    rows = torch.tensor([2, 0])
    sub = obj(x[rows], rows)  # the per-row L-BFGS evaluates only the rows still running
    for k, v in sub.items():
        assert torch.allclose(v, full[k][rows], rtol=1e-4, atol=1e-7), k
    assert full["style"].min() > 0 and len(set(full["style"].tolist())) == 3  # the rows really differ


def test_gradient_of_a_row_depends_only_on_that_row():
    params, contents, styles = _batch("w2", 0.5)
    x = torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    obj = _build(params, contents, styles)
    (g,) = torch.autograd.grad(obj(x)["total"][1], x)
    assert g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0


def test_hist_term_and_tv_only_when_weighted():
    params, contents, styles = _batch("gram")
    params = [p.replace(tv_weight=0.0) for p in params]
    out = _build(params, contents, styles)(contents)
    assert "hist" not in out and torch.equal(out["tv"], torch.zeros(3))
    assert torch.equal(out["content"], torch.zeros(3))  # the content image itself


def test_style_targets_are_cached_per_key_and_per_seed_only_when_the_loss_uses_it():
    targets = StyleTargets(2**24, torch.device("cpu"))
    params, contents, styles = _batch("gram")
    same = [styles[0]] * 3
    _build(params, contents, same, targets, [("s.png",)] * 3)
    assert len(targets.cache) == 1  # gram: seed-free, one entry for three seeds
    params = [p.replace(style_loss="sliced_w") for p in params]
    obj = _build(params, contents, same, targets, [("s.png",)] * 3)
    assert len(targets.cache) == 4  # sliced_w: one per seed (its projections are drawn from the seed)
    again = _build(params, contents, same, targets, [("s.png",)] * 3)
    assert len(targets.cache) == 4
    assert torch.equal(obj(contents)["style"], again(contents)["style"])
