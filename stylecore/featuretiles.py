"""Statistics of VGG features of an image too large for one forward pass, measured in tiles.

The image is cut into a grid of interior tiles whose edges lie on multiples of ALIGN px (32 = the
stride of pool5, the coarsest layer), so at every layer of stride s <= 32 the tiles' interior
positions, rows [top / s, bottom / s) of the whole image's feature map, partition it exactly:
every position is counted once, as in one whole-image forward. Each tile runs through the network
with `halo` px of the real image around it (less at the image's border, where the whole image has
zero padding too) and only its interior positions are kept.

The one difference from a whole-image forward: a kept position near a tile's edge whose receptive
field reaches past the halo sees zero padding where the whole image has pixels. A 3x3 conv's
receptive field grows by 2 px per conv at stride 1, 4 at stride 2, ...: at relu3_1 it is 40 px
wide, relu4_1 92 px, relu5_1 196 px (VGG-16/19), but its weight concentrates near the centre, so a
halo of HALO = 64 px leaves the statistics within about 1% of the whole image's at the deep layers
and far less at the shallow ones (`tests/stylecore/test_featuretiles.py` measures it on real
`vgg16-hed` features per style-loss kind).

Users: style targets of a style image whose one-piece forward is over the memory budget
(`stylecore.objective.StyleTargets`, through the style losses' `partial`/`merge`/`finish`), and
the metrics of a large output (`stylecore.metrics.Distance`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from stylecore.losses import StyleLossKind, StyleTarget

ALIGN = 32
HALO = 64

Forward = Callable[[torch.Tensor, Sequence[str]], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class FeatureTile:
    """A tile's interior rows top..bottom, columns left..right (px), and the crop that feeds the
    network (the interior plus the halo, clipped to the image)."""

    top: int
    left: int
    bottom: int
    right: int
    crop_top: int
    crop_left: int
    crop_bottom: int
    crop_right: int

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input for this tile: x (B, C, H, W) -> (B, C, crop h, crop w)."""
        return x[..., self.crop_top : self.crop_bottom, self.crop_left : self.crop_right]

    def interior(self, f: torch.Tensor, stride: int) -> torch.Tensor:
        """The interior positions of this tile's features `f` (B, C, h, w) at a layer of `stride`."""
        t, b = (self.top - self.crop_top) // stride, self.bottom // stride - self.crop_top // stride
        left, r = (self.left - self.crop_left) // stride, self.right // stride - self.crop_left // stride
        return f[..., t:b, left:r]


def layer_stride(name: str) -> int:
    """Downsampling of a VGG layer's output: block b's convs/ReLUs at 2^(b-1), pool b at 2^b."""
    kind = name.rstrip("0123456789_")
    block = int(name[len(kind)])
    return 1 << (block - 1 + int(kind == "pool"))


def feature_tiles(h: int, w: int, tile: int, halo: int = HALO) -> list[FeatureTile]:
    """The tiles of an (h, w) image: interiors of `tile` px (rounded down to ALIGN, at least ALIGN;
    the last row/column of tiles takes the rest), crops with `halo` px around them."""
    step = max(ALIGN, tile // ALIGN * ALIGN)
    halo = halo // ALIGN * ALIGN  # crops start on the ALIGN grid too: their pooling grid is the image's
    out = []
    for top in range(0, h, step):
        for left in range(0, w, step):
            bottom, right = min(h, top + step), min(w, left + step)
            if h - bottom < ALIGN:  # a sliver left over joins this tile (its layers would be empty)
                bottom = h
            if w - right < ALIGN:
                right = w
            ct, cl = max(0, top - halo), max(0, left - halo)
            out.append(FeatureTile(top, left, bottom, right, ct, cl, min(h, bottom + halo), min(w, right + halo)))
            if right == w:
                break
        if out[-1].bottom == h:
            break
    return out


def tiled_features(
    forward: Forward, images: Sequence[torch.Tensor], layers: Sequence[str], tile: int, halo: int = HALO
) -> Iterator[dict[str, torch.Tensor]]:
    """For each tile of `images` (each (B_i, 3, H, W), all of one H x W), the interior features of
    their crops, concatenated along the batch in the order given: {layer: (sum B_i, C, h, w)}."""
    h, w = int(images[0].shape[-2]), int(images[0].shape[-1])
    strides = {n: layer_stride(n) for n in layers}
    for t in feature_tiles(h, w, tile, halo):
        x = torch.cat([t.crop(im) for im in images]) if len(images) > 1 else t.crop(images[0])
        feats = forward(x, list(layers))
        yield {n: t.interior(feats[n], strides[n]) for n in layers}


def tiled_targets(kind: StyleLossKind, forward: Forward, image: torch.Tensor, layers: Sequence[str], seed: int, tile: int) -> StyleTarget:
    """A style image's (1, 3, H, W) targets for `kind`, measured in tiles: `kind.finish` of the
    tiles' merged `partial`s."""
    acc = None
    with torch.no_grad():
        for feats in tiled_features(forward, [image], layers, tile):
            part = kind.partial(feats, seed)
            acc = part if acc is None else kind.merge(acc, part)
    assert acc is not None
    return kind.finish(acc, seed)
