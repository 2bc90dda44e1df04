"""Style-transfer losses: pure functions (also the test references) and small modules.

Every function returns one value per image, shape (B,), so a batch of rows with different
targets and weights optimises as independent problems summed into one scalar.

Scale: the paper's E_l and L_content depend on the feature scale of the weight set (Caffe-style
0-255 input gives features ~60x larger than torchvision's). The modules therefore use the
*relative* forms (error over the target's energy), which are invariant to that scale, so one set
of default loss weights serves every weight set. The paper's absolute forms stay available as
functions (`gatys_style_layer_loss`, `gatys_content_loss`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class _Gram(torch.autograd.Function):
    """F F^T with a one-matmul backward: dF = (dG + dG^T) F. Autograd's generic bmm backward
    takes two matmuls (one per operand); the Gram is ~10% of a style step, so this matters."""

    @staticmethod
    def forward(ctx, f: torch.Tensor) -> torch.Tensor:  # (B, N, M) -> (B, N, N)
        ctx.save_for_backward(f)
        return torch.bmm(f, f.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # (B, N, N) -> (B, N, M)
        (f,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), f)


def gram_matrix(features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """G = F F^T per image: (B, C, H, W) -> (B, C, C); unnormalised as in Gatys et al., or
    divided by M_l = H W (`normalize`) so images of different sizes give comparable Grams."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)  # (B, N_l, M_l)
    g = _Gram.apply(f) if f.requires_grad else torch.bmm(f, f.transpose(1, 2))
    return g / (h * w) if normalize else g


def gatys_style_layer_loss(gram: torch.Tensor, target: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The paper's E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2, per image: (B, C, C) -> (B,)."""
    return (gram - target).pow(2).sum(dim=(1, 2)) / (4.0 * n**2 * m**2)


def gatys_content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's L_content = 1/2 sum (F - P)^2, per image: (B, C, H, W) -> (B,)."""
    return 0.5 * (features - target).pow(2).flatten(1).sum(1)


def relative_sq_error(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-8, energy: torch.Tensor | None = None) -> torch.Tensor:
    """||x - t||^2 / ||t||^2 per image (any shape with batch first) -> (B,); scale-free.
    `energy` is ||t||^2 when already known (fixed targets: computed once, not every step)."""
    num = (x - target).pow(2).flatten(1).sum(1)
    den = target.pow(2).flatten(1).sum(1) if energy is None else energy
    return num / (den + eps)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: (B, C, H, W) -> (B,)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


class ContentLoss(nn.Module):
    """Relative L2 between features and fixed per-row targets, averaged over content layers."""

    def __init__(self, targets: Mapping[str, torch.Tensor]):
        super().__init__()
        self.layers = list(targets)
        for i, name in enumerate(self.layers):
            t = targets[name].detach()
            self.register_buffer(f"target_{i}", t)  # (B, C, H, W)
            self.register_buffer(f"energy_{i}", t.pow(2).flatten(1).sum(1))  # (B,)

    def forward(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.layers:
            return next(iter(feats.values())).new_zeros(next(iter(feats.values())).shape[0])
        losses = [
            relative_sq_error(feats[n], getattr(self, f"target_{i}"), energy=getattr(self, f"energy_{i}"))
            for i, n in enumerate(self.layers)
        ]
        return torch.stack(losses, 1).mean(1)  # (B,)


class StyleLoss(nn.Module):
    """Weighted sum over style layers of the relative Gram error ||G - A||^2 / ||A||^2.

    Targets are size-normalised Grams (`gram_matrix(..., normalize=True)`), so the style image
    need not have the output's size. `layer_weights` is (B, L): each row may weight the layers
    differently; rows sum to 1."""

    def __init__(self, gram_targets: Mapping[str, torch.Tensor], layer_weights: torch.Tensor):
        super().__init__()
        self.layers = list(gram_targets)
        for i, name in enumerate(self.layers):
            g = gram_targets[name].detach()
            self.register_buffer(f"gram_{i}", g)  # (B, C, C)
            self.register_buffer(f"energy_{i}", g.pow(2).flatten(1).sum(1))  # (B,)
        self.register_buffer("layer_weights", layer_weights)  # (B, L)

    def per_layer(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) relative Gram errors."""
        return torch.stack(
            [
                relative_sq_error(gram_matrix(feats[n], normalize=True), getattr(self, f"gram_{i}"), energy=getattr(self, f"energy_{i}"))
                for i, n in enumerate(self.layers)
            ],
            1,
        )

    def forward(self, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.per_layer(feats) * self.layer_weights).sum(1)  # (B,)


class TVLoss(nn.Module):
    """Total variation of the image, (B,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return total_variation(x)


def normalized_layer_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Per-layer style weights summing to 1 (equal when None)."""
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    s = sum(w)
    return [v / s for v in w]


def blend_grams(grams: Sequence[Mapping[str, torch.Tensor]], blend: Sequence[float] | None) -> dict[str, torch.Tensor]:
    """Weighted mean of several styles' size-normalised Gram targets (a style blend), per layer;
    normalised Grams let styles of different sizes mix by their weights, not their pixel counts."""
    w = normalized_layer_weights(blend, len(grams))
    out: dict[str, torch.Tensor] = {}
    for name in grams[0]:
        out[name] = sum(wi * g[name] for wi, g in zip(w, grams))
    return out
