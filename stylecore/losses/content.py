"""Content and smoothness loss modules: per-row (B,) values against fixed per-row targets."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from stylecore.losses.functional import relative_sq_error, total_variation

if TYPE_CHECKING:
    from stylecore.lpips import LPIPS

M = TypeVar("M", bound=nn.Module)


def take_buffers(module: M, rows: torch.Tensor) -> M:
    """A shallow copy of a module whose buffers are all (B, ...), each restricted to `rows` (R,):
    targets are indexed, never recomputed."""
    sub = copy.copy(module)
    object.__setattr__(
        sub, "_buffers", {k: (v.index_select(0, rows.to(v.device)) if v is not None else None) for k, v in module._buffers.items()}
    )
    return sub


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
        """(B,) mean over the content layers of ||F - P||^2 / ||P||^2."""
        if not self.layers:
            first = next(iter(feats.values()))
            return first.new_zeros(first.shape[0])
        losses = [
            relative_sq_error(feats[n], self.get_buffer(f"target_{i}"), energy=self.get_buffer(f"energy_{i}"))
            for i, n in enumerate(self.layers)
        ]
        return torch.stack(losses, 1).mean(1)  # (B,)

    def take(self, rows: torch.Tensor) -> ContentLoss:
        """The same loss for `rows` (R,) of the batch only (targets indexed, not recomputed)."""
        return take_buffers(self, rows)


class LPIPSContentLoss(nn.Module):
    """The founding paper's perceptual content loss: LPIPS(output, content), (B,).

    The content's LPIPS features are computed once; only the output's are recomputed per step.
    `model` is a `stylecore.lpips.LPIPS`; when its backbone is the style VGG, `from_features`
    reuses that forward pass instead of running a second one."""

    def __init__(self, model: LPIPS, contents: torch.Tensor | None, target: list[torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        if target is None:
            if contents is None:
                raise ValueError("LPIPSContentLoss needs the content images or their LPIPS features")
            with torch.no_grad():
                target = model.features(contents)
        self.target = target  # per LPIPS layer: (B, C_l, H_l, W_l)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LPIPS between the images `x` (B, 3, H, W) in [0, 1] and the contents -> (B,)."""
        return self.model.distance_to_features(x, self.target)

    def from_features(self, raw: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The same loss from backbone outputs already computed (a shared forward pass)."""
        return self.model.feature_distance(self.model.normalized(dict(raw)), self.target)

    def take(self, rows: torch.Tensor) -> LPIPSContentLoss:
        """The same loss for `rows` (R,) of the batch only."""
        return LPIPSContentLoss(self.model, None, [t.index_select(0, rows.to(t.device)) for t in self.target])


class TVLoss(nn.Module):
    """Total variation of the image, (B,)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return total_variation(x)
