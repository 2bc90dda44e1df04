"""Metrics of a stylised output: the LPIPS Distance pair, a scale-free Gram distance, and L2;
`Distance` also computes the `stylecore.evaluation` metrics (luminance LPIPS, W2, colour, CFSD).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stylecore import evaluation as E
from stylecore.featuretiles import tiled_features
from stylecore.images import resize_tensor
from stylecore.layers import check_layers
from stylecore.losses import gram_matrix
from stylecore.losses.sketch import Moments, covariance, merge_moments, moments, second_moment
from stylecore.lpips import LPIPS
from stylecore.vgg import VGGFeatures

# Gram layers of the scale-free style distance when the caller names none: Gatys' classic set,
# the default `Params.style_layers` (all of them exist in VGG-16 too, before relu5_3).
DEFAULT_GRAM_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

# Outputs of at most this many pixels get every metric from one backbone pass over the whole
# images (1024 x 1024: that pass peaks near 3 GB on three images); larger ones are measured in
# tiles with a halo of METRIC_HALO px (`stylecore.featuretiles`), LPIPS, Gram and W2 accumulated
# over the tiles' interior positions (see `Distance`). The tile side comes from the memory model
# (`stylecore.memory.feature_tile`: output, style and content crops in one forward under
# `memory.feature_budget` of the device's default budget: 1.5 GB on a CPU, 256 px tiles).
METRIC_MAX_PIXELS = 1024 * 1024
METRIC_HALO = 96


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
    size = (int(like.shape[-2]), int(like.shape[-1]))
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
    """Metrics of a batch of outputs, each (B,); per-layer values keyed by layer name.

    Definitions: this module (LPIPS pair, `gram_style`) and `stylecore.evaluation` (the rest)."""

    lpips_style: torch.Tensor
    lpips_content: torch.Tensor
    gram_style: torch.Tensor
    lpips_content_gray: torch.Tensor
    w2_style: torch.Tensor
    hist_style: torch.Tensor
    cfsd: torch.Tensor
    gram_layers: dict[str, torch.Tensor]
    w2_layers: dict[str, torch.Tensor]

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per output (results-table friendly): the scalar metrics and
        `style_layers_metrics` = {"gram": {layer: value}, "w2": {layer: value}}."""
        scalars = ("lpips_style", "lpips_content", "gram_style", "lpips_content_gray", "w2_style", "hist_style", "cfsd")
        cols = {k: getattr(self, k).tolist() for k in scalars}
        gl = {n: v.tolist() for n, v in self.gram_layers.items()}
        wl = {n: v.tolist() for n, v in self.w2_layers.items()}
        out: list[dict[str, Any]] = []
        for i in range(len(cols["lpips_style"])):
            row: dict[str, Any] = {k: float(v[i]) for k, v in cols.items()}
            row["style_layers_metrics"] = {"gram": {n: float(v[i]) for n, v in gl.items()}, "w2": {n: float(v[i]) for n, v in wl.items()}}
            out.append(row)
        return out


class Distance:
    """Holds one loaded LPIPS model (and its backbone); `Distance()(output, style, content)`.

    Every metric of a row from few passes of the LPIPS backbone: output, style and content go
    through ONE batched pass (up to relu5_3), tapping the LPIPS, Gram/W2 and CFSD (relu3_1)
    layers together; a second pass of the luminance images (output, content) gives
    `lpips_content_gray`. The Gram and W2 distances use the LPIPS backbone by default, so the
    numbers do not depend on which VGG a job stylised with. Style statistics are taken against
    the style image at the output's size (`match_size`), like the LPIPS style distance. Outputs
    with a long side above 512 px get CFSD and the colour distance at 512 (see
    `stylecore.evaluation`; one extra pass up to relu3_1). Pass `gram_vgg` to measure Grams and
    W2 on another network (then it costs its own passes).

    Bounded memory: outputs over `max_pixels` (default METRIC_MAX_PIXELS) are measured in tiles
    with a halo (`stylecore.featuretiles`): LPIPS is a per-layer spatial mean, accumulated as sums
    over the tiles' interior positions; Gram and W2 come from the features' moments merged over
    the tiles (`stylecore.losses.sketch`). Equal to one pass up to the halo's receptive-field
    effect at the deepest taps (relu5_3's receptive field is 212 px wide) and float64 rounding:
    `tests/stylecore/test_metrics_tiled.py` measures it. Outputs within `max_pixels` are measured
    exactly as before."""

    def __init__(
        self,
        lpips_model: LPIPS,
        gram_layers: Sequence[str] = DEFAULT_GRAM_LAYERS,
        gram_vgg: VGGFeatures | None = None,
        max_pixels: int = METRIC_MAX_PIXELS,
        tile: int | None = None,
    ):
        self.lpips = lpips_model
        self.gram_vgg = gram_vgg
        self.gram_layers = tuple(gram_layers)
        self.max_pixels, self.tile = max_pixels, tile
        check_layers((gram_vgg or lpips_model.backbone).arch, self.gram_layers)
        check_layers(lpips_model.backbone.arch, [E.CFSD_LAYER])

    @classmethod
    def load(cls, spec: str = "vgg16-imagenet", device: str | torch.device = "cpu", **kwargs: Any) -> Distance:
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
        if output.shape[-2] * output.shape[-1] > self.max_pixels:
            return self._tiled(output, style_r, content_r)
        small = E.fit_side(output.shape[-2:], E.CFSD_MAX_SIDE)
        cfsd_here = small == tuple(output.shape[-2:])
        with torch.inference_mode():
            batch = torch.cat([output, style_r, content_r])  # (B + bs + bc, 3, H, W)
            taps = list(self.lpips.layers) + ([] if self.gram_vgg is not None else list(self.gram_layers))
            taps += [E.CFSD_LAYER] if cfsd_here else []
            raw = self.lpips.backbone(batch, list(dict.fromkeys(taps)))
            feats = self.lpips.normalized(raw)  # each (B + bs + bc, C, h, w)
            fo = [f[:b] for f in feats]
            d_style = self.lpips.feature_distance(fo, [f[b : b + bs] for f in feats])
            d_content = self.lpips.feature_distance(fo, [f[b + bs :] for f in feats])
            if self.gram_vgg is None:
                go = {n: raw[n][:b] for n in self.gram_layers}
                gs = {n: raw[n][b : b + bs] for n in self.gram_layers}
            else:
                go, gs = self.gram_vgg(output, self.gram_layers), self.gram_vgg(style_r, self.gram_layers)
            gram_l = {n: gram_distance_from_features([go[n]], [gs[n]]) for n in self.gram_layers}
            w2_l = {n: E.gaussian_w2(go[n], gs[n]).to(output.dtype) for n in self.gram_layers}
            gray = self.lpips.features(torch.cat([E.luminance(output), E.luminance(content_r)]))  # (B + bc, ...)
            d_gray = self.lpips.feature_distance([f[:b] for f in gray], [f[b:] for f in gray])
            if cfsd_here:
                fc3 = raw[E.CFSD_LAYER]
                cfsd = E.cfsd_from_features(fc3[:b], fc3[b + bs :])
                hist = E.sliced_colour_w1(output, style_r)
            else:  # a big output: CFSD and colours at the protocol's 512 px
                o_s, s_s, c_s = (resize_tensor(x, small) for x in (output, style_r, content_r))
                f3 = self.lpips.backbone(torch.cat([o_s, c_s]), [E.CFSD_LAYER])[E.CFSD_LAYER]
                cfsd = E.cfsd_from_features(f3[:b], f3[b:])
                hist = E.sliced_colour_w1(o_s, s_s)
        return DistanceResult(
            lpips_style=d_style,
            lpips_content=d_content,
            gram_style=torch.stack(list(gram_l.values())).mean(dim=0),
            lpips_content_gray=d_gray,
            w2_style=torch.stack(list(w2_l.values())).mean(dim=0),
            hist_style=hist,
            cfsd=cfsd.to(output.dtype),
            gram_layers=gram_l,
            w2_layers=w2_l,
        )

    # ------------------------------------------------------------------ large outputs, in tiles
    def plan_tile(self, output: torch.Tensor, images: int, taps: Sequence[str]) -> int:
        """Tile side for `images` crops in one forward under the device's measuring budget (the
        whole image when it fits: one tile)."""
        from stylecore import memory

        dev = str(output.device)
        hw = (int(output.shape[-2]), int(output.shape[-1]))
        budget = memory.feature_budget(memory.default_budget(dev), dev)
        return memory.feature_tile(self.lpips.backbone.arch, taps, hw, budget, images, METRIC_HALO) or max(hw)

    def _tiled(self, output: torch.Tensor, style_r: torch.Tensor, content_r: torch.Tensor) -> DistanceResult:
        """`__call__` for outputs over `max_pixels`: the same metrics, accumulated over tiles."""
        b, bs = output.shape[0], style_r.shape[0]
        gram_here = self.gram_vgg is None
        taps = list(dict.fromkeys(list(self.lpips.layers) + (list(self.gram_layers) if gram_here else [])))
        tile = self.tile or self.plan_tile(output, b + bs + content_r.shape[0], taps)
        lp_style, lp_content, lp_gray = (_LpipsSums(self.lpips, b) for _ in range(3))
        mo, ms = _MomentSums(self.gram_layers), _MomentSums(self.gram_layers)
        with torch.inference_mode():
            for raw in tiled_features(self.lpips.backbone, [output, style_r, content_r], taps, tile, METRIC_HALO):
                feats = self.lpips.normalized(raw)  # each (B + bs + bc, C, h, w), the tile's interior
                lp_style.add(feats, slice(b, b + bs))
                lp_content.add(feats, slice(b + bs, None))
                if gram_here:
                    mo.add(raw, slice(0, b))
                    ms.add(raw, slice(b, b + bs))
            if self.gram_vgg is not None:
                for raw in tiled_features(self.gram_vgg, [output, style_r], self.gram_layers, tile, METRIC_HALO):
                    mo.add(raw, slice(0, b))
                    ms.add(raw, slice(b, b + bs))
            for raw in tiled_features(
                self.lpips.backbone, [E.luminance(output), E.luminance(content_r)], self.lpips.layers, tile, METRIC_HALO
            ):
                lp_gray.add(self.lpips.normalized(raw), slice(b, None))
            gram_l, w2_l = {}, {}
            for n in self.gram_layers:
                o, s = mo.total[n], ms.total[n]
                c = o[1].shape[1]
                g_o, g_s = second_moment(o) / c, second_moment(s) / c  # (B, C, C), (B or 1, C, C): `gram` of all positions
                gram_l[n] = (torch.linalg.matrix_norm(g_o - g_s) / torch.linalg.matrix_norm(g_s).clamp_min(1e-12)).to(output.dtype)
                w2_l[n] = E.gaussian_w2_from_stats(o[1], covariance(o), s[1], covariance(s)).to(output.dtype)
            small = E.fit_side(output.shape[-2:], E.CFSD_MAX_SIDE)  # CFSD and colours at the protocol's 512 px, as in one pass
            o_s, s_s, c_s = (resize_tensor(x, small) for x in (output, style_r, content_r))
            f3 = self.lpips.backbone(torch.cat([o_s, c_s]), [E.CFSD_LAYER])[E.CFSD_LAYER]
            cfsd = E.cfsd_from_features(f3[:b], f3[b:])
            hist = E.sliced_colour_w1(o_s, s_s)
        return DistanceResult(
            lpips_style=lp_style.value().to(output.dtype),
            lpips_content=lp_content.value().to(output.dtype),
            gram_style=torch.stack(list(gram_l.values())).mean(dim=0),
            lpips_content_gray=lp_gray.value().to(output.dtype),
            w2_style=torch.stack(list(w2_l.values())).mean(dim=0),
            hist_style=hist,
            cfsd=cfsd.to(output.dtype),
            gram_layers=gram_l,
            w2_layers=w2_l,
        )


class _LpipsSums:
    """LPIPS over tiles: per layer, the sum over positions of sum_c w_c (x̂_o - x̂_ref)^2 and the
    count of positions; the value is the sum over layers of their ratios (each layer's spatial mean)."""

    def __init__(self, model: LPIPS, b: int):
        self.model, self.b = model, b
        self.sums: list[torch.Tensor | float] = [0.0] * len(model.layers)
        self.counts = [0] * len(model.layers)

    def add(self, feats: Sequence[torch.Tensor], ref: slice) -> None:
        """`feats`: one tile's normalised features per LPIPS layer, outputs first (B), then `ref`."""
        for k, f in enumerate(feats):
            d = torch.nn.functional.conv2d((f[: self.b] - f[ref]) ** 2, self.model.linear(k))  # (B, 1, h, w)
            self.sums[k] = self.sums[k] + d.sum(dim=(1, 2, 3)).double()
            self.counts[k] += int(f.shape[-2] * f.shape[-1])

    def value(self) -> torch.Tensor:
        """(B,) float64 on the features' device."""
        return torch.stack([torch.as_tensor(s) / n for s, n in zip(self.sums, self.counts)]).sum(0)


class _MomentSums:
    """Moments (`stylecore.losses.sketch`) of some layers' features, merged over tiles."""

    def __init__(self, layers: Sequence[str]):
        self.layers = tuple(layers)
        self.total: dict[str, Moments] = {}

    def add(self, raw: Mapping[str, torch.Tensor], rows: slice) -> None:
        for n in self.layers:
            m = moments(raw[n][rows])
            self.total[n] = m if n not in self.total else merge_moments(self.total[n], m)
