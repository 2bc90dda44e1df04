"""Metrics of a stylised output: the LPIPS Distance pair, a scale-free Gram distance, and L2.

Sizes. LPIPS compares features location by location, so both images of a pair must have the
same H x W. The content image already has the output's size (the output starts from it); the
style image generally does not. `match_size` resizes it to the output's exact H x W (bicubic,
antialiased, clamped to [0, 1]: the same resampling `stylecore.transfer` uses): every part of the style image is kept (a crop would drop some of it and make the
number depend on where the crop sits), and it is the same rule for every output, so Distances of
different outputs against one style image compare. The price is an aspect-ratio change when the
two shapes differ; that is the documented convention of the `lpips_style` column.

Value ranges. Images are (B, 3, H, W) RGB in [0, 1] everywhere except `l2`, which takes images in
whatever range it is given; the founding paper states its L2 numbers for images in [-1, 1]
(white - black = 2, so their mean squared difference is 4). Use `to_signed` first to get that
convention (it multiplies a [0, 1] mean squared error by 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stylecore.images import resize_tensor
from stylecore.losses import gram_matrix
from stylecore.lpips import LPIPS
from stylecore.vgg import VGGFeatures, check_layers

# Gram layers of the scale-free style distance when the caller names none: Gatys' classic set,
# the default `Params.style_layers` (all of them exist in VGG-16 too, before relu5_3).
DEFAULT_GRAM_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (the paper's and lpips' image convention)."""
    return x * 2.0 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (what `LPIPS` and `VGGFeatures` take)."""
    return (x + 1.0) / 2.0


def match_size(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Resize `image` (B, 3, h, w) to `like`'s exact H x W (bicubic, antialiased, clamped to
    [0, 1]; the engine's resampling); unchanged if already that size. See the module docstring
    for why a resize and not a crop."""
    size = tuple(like.shape[-2:])
    if tuple(image.shape[-2:]) == size:
        return image
    return resize_tensor(image, size)


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per image, (B, ...) x (B, ...) -> (B,). Range is the caller's: the
    paper's numbers are for [-1, 1] images (pass `to_signed(x)`)."""
    return ((a - b) ** 2).flatten(1).mean(dim=1)


def gram(feat: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by C*H*W: (B, C, H, W) -> (B, C, C), so images of different sizes
    compare (the losses' size-normalised Gram over C)."""
    return gram_matrix(feat, normalize=True) / feat.shape[1]  # (B, C, C)


def gram_distance_from_features(fo: Sequence[torch.Tensor], fs: Sequence[torch.Tensor], eps: float = 1e-12) -> torch.Tensor:
    """Mean over layers of ||G(o) - G(s)||_F / ||G(s)||_F from per-layer features -> (B,).

    Relative, so it is free of the feature scale of the weight set (Caffe vs torchvision)."""
    terms = []
    for o, s in zip(fo, fs):
        g_o, g_s = gram(o), gram(s)  # (B, C, C), (B or 1, C, C)
        num = torch.linalg.matrix_norm(g_o - g_s)  # (B,)
        den = torch.linalg.matrix_norm(g_s).clamp_min(eps)  # (B or 1,); eps: an all-zero layer
        terms.append(num / den)
    return torch.stack(terms).mean(dim=0)


def gram_distance(output: torch.Tensor, style: torch.Tensor, vgg: VGGFeatures, layers: Sequence[str] = DEFAULT_GRAM_LAYERS) -> torch.Tensor:
    """Scale-free Gram style distance between `output` (B, 3, H, W) and `style` (B or 1, 3, h, w),
    both in [0, 1], averaged over `layers` -> (B,). Sizes may differ (Grams are size-normalised)."""
    layers = list(layers)
    with torch.inference_mode():
        fo, fs = vgg(output, layers), vgg(style, layers)
        return gram_distance_from_features([fo[n] for n in layers], [fs[n] for n in layers])


def distance(output: torch.Tensor, style: torch.Tensor, content: torch.Tensor, lpips_model: LPIPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The founding paper's Distance pair (lpips_style, lpips_content), each (B,).

    All images in [0, 1]; `style` and `content` are brought to the output's H x W by
    `match_size` (content normally already is). Reference implementation: `Distance` computes
    the same numbers in one backbone pass."""
    with torch.inference_mode():
        fo = lpips_model.features(output)
        d_style = lpips_model.feature_distance(fo, lpips_model.features(match_size(style, output)))
        d_content = lpips_model.feature_distance(fo, lpips_model.features(match_size(content, output)))
    return d_style, d_content


@dataclass(frozen=True)
class DistanceResult:
    """Metrics of a batch of outputs, each (B,)."""

    lpips_style: torch.Tensor
    lpips_content: torch.Tensor
    gram_style: torch.Tensor

    def rows(self) -> list[dict[str, float]]:
        """One plain dict per output (results-table friendly)."""
        return [
            {"lpips_style": float(s), "lpips_content": float(c), "gram_style": float(g)}
            for s, c, g in zip(self.lpips_style.tolist(), self.lpips_content.tolist(), self.gram_style.tolist())
        ]


class Distance:
    """Holds one loaded LPIPS model (and its backbone); `Distance()(output, style, content)`.

    The Gram style distance uses the LPIPS backbone by default, so one model serves both metrics
    and the numbers do not depend on which VGG a job stylised with; output, style and content go
    through ONE backbone pass (batched, up to relu5_3), tapping the LPIPS and Gram layers together.
    The Gram distance is taken against the style image at the output's size (`match_size`), like
    the LPIPS style distance. Pass `gram_vgg` to measure Grams on another network (then it costs
    its own passes)."""

    def __init__(
        self,
        lpips_model: LPIPS,
        gram_layers: Sequence[str] = DEFAULT_GRAM_LAYERS,
        gram_vgg: VGGFeatures | None = None,
    ):
        self.lpips = lpips_model
        self.gram_vgg = gram_vgg
        self.gram_layers = tuple(gram_layers)
        check_layers((gram_vgg or lpips_model.backbone).arch, self.gram_layers)

    @classmethod
    def load(cls, spec: str = "vgg16-imagenet", device: str | torch.device = "cpu", **kwargs) -> Distance:
        """A `Distance` on the process-wide cached LPIPS model for weight spec `spec`."""
        from stylecore.lpips import load_lpips

        return cls(load_lpips(spec, device), **kwargs)

    @property
    def weights_label(self) -> str:
        return self.lpips.weights_label

    def __call__(self, output: torch.Tensor, style: torch.Tensor, content: torch.Tensor) -> DistanceResult:
        """Metrics of `output` (B, 3, H, W) against `style` and `content` (B or 1, 3, *, *), in [0, 1]."""
        b = output.shape[0]
        # A style/content batch of 1 is passed once and broadcast, not copied B times.
        style_r, content_r = match_size(style, output), match_size(content, output)
        bs, bc = style_r.shape[0], content_r.shape[0]
        if bs not in (1, b) or bc not in (1, b):
            raise ValueError(f"style and content batches must be 1 or {b} (the outputs'), got {bs} and {bc}")
        with torch.inference_mode():
            batch = torch.cat([output, style_r, content_r])  # (B + bs + bc, 3, H, W)
            taps = list(self.lpips.layers) + ([] if self.gram_vgg is not None else list(self.gram_layers))
            raw = self.lpips.backbone(batch, taps)
            feats = self.lpips.normalized(raw)  # each (B + bs + bc, C, h, w)
            fo = [f[:b] for f in feats]
            fs = [f[b : b + bs] for f in feats]
            fc = [f[b + bs :] for f in feats]
            d_style = self.lpips.feature_distance(fo, fs)
            d_content = self.lpips.feature_distance(fo, fc)
            if self.gram_vgg is None:
                g = gram_distance_from_features([raw[n][:b] for n in self.gram_layers], [raw[n][b : b + bs] for n in self.gram_layers])
            else:
                g = gram_distance(output, style_r, self.gram_vgg, self.gram_layers)
        return DistanceResult(d_style, d_content, g)
