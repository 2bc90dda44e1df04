"""Anchored tile targets: each tile of the tiled pass keeps its own share of the whole image's look.

A tile that matches the whole style image's statistics on its own comes out uniformly stylised:
every tile gets every kind of stroke, where one piece puts sky strokes in the sky and building
strokes on the buildings (issue 17 measured it: each tile's Gram distance to the style was
0.37-0.38 where the same crops of the one-piece output ranged 0.38-0.56, and the tiled output
was +26% Gram / +47% LPIPS-to-content against one piece at 512 px).

The image a tile starts from (the content, a coarser scale's result upsampled, or the previous
round's blend) already has a spatial arrangement. So each tile's target is anchored to where it
starts:

    target_tile = target_style + (stats(tile at start) - stats(whole image at start))

i.e. the tile is asked to change the way the whole image has to change. "Start" is the start of
the tiled pass's current round (`stylecore.tiling.ROUND_STEPS`): between rounds the tiles are
blended and re-anchored, so a tile's share of the style can grow as one piece's would instead of
staying pinned to where the scale began. Tiles' statistics average
to the whole image's (nearly: the tiles overlap and see their own borders), so the tiles' targets
average to the style's, and together they still match the whole style.

Only statistics where a difference is meaningful are anchored (a registry of names; the others
keep the whole style's target): `gram` (Grams add), `mean_std` (means and standard deviations
shift; a std is kept above a small floor) and `w2` (means and covariances; the loss's PSD square
root clamps negative eigenvalues). Quantile targets (`sliced_w`, the `histogram` term) are sorted
functions whose differences need not be sorted: they keep the global target.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stylecore.losses import StyleTarget
from stylecore.registry import Registry

Shift = Callable[[StyleTarget, StyleTarget, StyleTarget], StyleTarget]


def shift_additive(style: StyleTarget, tile: StyleTarget, whole: StyleTarget) -> StyleTarget:
    """style + (tile - whole), per layer; shapes (B, ...) with tile's batch (B = tiles) and style's,
    whole's batch 1 broadcast."""
    return {n: style[n] + (tile[n] - whole[n]) for n in style}


def shift_mean_std(style: StyleTarget, tile: StyleTarget, whole: StyleTarget, floor: float = 1e-3) -> StyleTarget:
    """`shift_additive` on (B, 2, C) [means; stds], the stds kept >= floor x the style's."""
    out = shift_additive(style, tile, whole)
    for n, t in out.items():
        std = torch.maximum(t[:, 1], floor * style[n][:, 1].abs())
        out[n] = torch.stack([t[:, 0], std], 1)
    return out


ANCHORS: Registry[Shift] = Registry("anchored style loss", {"gram": shift_additive, "mean_std": shift_mean_std, "w2": shift_additive})


def anchored(kind: str, style: StyleTarget, tile: StyleTarget, whole: StyleTarget) -> StyleTarget:
    """Tiles' targets (T, ...) per layer: `style` (1, ...) anchored by the tiles' own statistics at
    their start `tile` (T, ...) and the whole image's `whole` (1, ...); kinds outside `ANCHORS`
    get `style` repeated per tile."""
    t = next(iter(tile.values())).shape[0]
    if kind not in ANCHORS:
        return {n: v.expand(t, *v.shape[1:]).contiguous() for n, v in style.items()}
    return ANCHORS[kind](style, tile, whole)
