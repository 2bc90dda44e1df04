"""The iterate average of Adam with `ema` (issue 16 item 4): one small class, used by `stylecore.loop`."""

from __future__ import annotations

import torch
from torch import Tensor


class EMA:
    """A bias-corrected exponential moving average of a tensor (crowsonkb/style-transfer-pytorch's
    `EMA`, as Adam corrects its moments): started with the first value, `get()` is the weighted
    mean of every value so far with weights decay^age, normalised to sum to 1."""

    def __init__(self, value: Tensor, decay: float):
        self.decay = decay
        self.value = torch.zeros_like(value)
        self.accum = 1.0  # decay^updates: the weight the zero start still has
        self.update(value)

    def update(self, value: Tensor) -> None:
        self.accum *= self.decay
        self.value.mul_(self.decay).add_(value, alpha=1 - self.decay)

    def get(self) -> Tensor:
        return self.value / (1 - self.accum)


__all__ = ("EMA",)
