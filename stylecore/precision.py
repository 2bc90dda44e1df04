"""Numeric precision and speed options of the style VGG's forward (issue 16 item 5).

`Features` wraps the VGG the objective calls: the convolutions under bf16/fp16 autocast, the
features returned as fp32, so Gram matrices, statistics and losses stay in fp32; channels_last
activations on CUDA and under bf16 on the CPU (`channels_last_for`); optionally `torch.compile`d.
Every path runs on the CPU too (CPU autocast supports bf16 and fp16 convolutions), so it is tested
there; only the speed needs a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from stylecore.memory import cpu_has_native_bf16
from stylecore.registry import Registry
from stylecore.vgg import VGGFeatures

PRECISIONS = Registry(
    "precision",
    {
        "auto": "bf16 on CUDA when supported, else fp16; on the CPU bf16 when it computes bf16 natively (AMX or AVX512-BF16), else fp32",
        "fp32": "no autocast",
        "bf16": "VGG forward under bfloat16 autocast (CUDA or CPU)",
        "fp16": "VGG forward under float16 autocast (CUDA or CPU)",
    },
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def channels_last_for(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether the VGG runs NHWC: on CUDA (tensor-core kernels), and on the CPU under bf16, where
    oneDNN computes bf16 convolutions in NHWC anyway and, given NCHW tensors, copies every
    layer's input and gradient across (a third of a 256-px step's time, measured; NHWC
    throughout, with the losses reading NHWC features in place: ~190 against 314 ms per L-BFGS
    step, tubingen x starry_night, one thread)."""
    return device.type == "cuda" or dtype == torch.bfloat16


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the VGG forward for `precision` on `device` (None = fp32)."""
    PRECISIONS.check(precision)
    if precision == "auto":
        if device.type != "cuda":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _DTYPES.get(precision)


class Features:
    """The style VGG's forward as the objective calls it: `(x, layers) -> {layer: (B, C, H, W) fp32}`.

    Under autocast (`dtype`) the convolutions run in bf16/fp16 and the features come back as fp32,
    so Gram matrices, statistics and every loss are computed in fp32. `channels_last` (`channels_last_for`) keeps
    activations NHWC (tensor-core kernels; oneDNN's bf16 kernels), and the features come back in
    that layout (`losses.functional.flat_channels` reads them without a copy); `compiled` is
    `torch.compile`'d forward."""

    def __init__(self, module: VGGFeatures, dtype: torch.dtype | None, channels_last: bool, compile: bool | str):
        self.module, self.dtype, self.channels_last = module, dtype, channels_last
        if channels_last and next(module.parameters()).is_cuda:
            # NHWC weights for the tensor-core kernels (idempotent). On the CPU an NHWC input is
            # enough (autocast casts the weights on every call anyway: measured the same speed), and
            # the cached module, which the metrics share, stays as it was loaded.
            module.to(memory_format=torch.channels_last)
        self._forward: Callable[..., dict[str, torch.Tensor]] = module
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self._forward = torch.compile(module, backend=backend, dynamic=False)

    def __call__(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            feats = self._forward(x, tuple(layers))
        return {k: v.float() for k, v in feats.items()}  # fp32 for the losses (a no-op without autocast)
