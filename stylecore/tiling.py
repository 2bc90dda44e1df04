"""The tiled high-resolution pass: optimise overlapping tiles, blend them with feathered weights.

Above the tile threshold the engine optimises a scale's image as tiles of at most `tile` x `tile`
px (all of one size, so tiles batch as rows of one forward pass; as few as cover the image with
the overlap, spread evenly), each with its own optimiser state, and blends them back:

- every tile's style loss uses the style statistics of the WHOLE style image at that scale (the
  engine passes the same targets to every tile), so all tiles share one global look;
- a tile's content target is the content image cropped to the same box (not a halo'd crop): both
  sides of the content loss then see the same zero padding at the tile's edges, so the content
  image is still the exact minimum of every tile's content term and the optimiser has no reason
  to paint a frame along the tile's border; with a halo the target would carry features of
  pixels the tile cannot see, and the loss would push the tile's edge pixels to imitate them;
- the scale's steps run in rounds of about ROUND_STEPS: in a round all tiles start from the same
  image and are optimised independently (Jacobi, not sequentially), then blended; the next round
  crops its tiles from that blend and re-anchors each tile's style target to the whole image as it
  now is (`stylecore.anchor`), so the tiles keep agreeing on one global look while the image changes
  under them. A tile's result depends neither on the order nor on how many tiles share a batch. Measured
  against a four-colour Gauss-Seidel order (each tile starting from its finished neighbours where
  they overlap it), both in one round: at 512 px in 256-px tiles, Gram distance / LPIPS to the
  content as ratios to one piece, 1.069 / 1.277 (Jacobi) against 1.121 / 1.292 (tubingen),
  0.998 / 1.369 against 1.017 / 1.374 (chelsea): sequential buys nothing; rounds do (ROUND_STEPS);
- a tile sees zeros past its edges, not its neighbours (no halo): measured on a one-piece 512-px
  output, the Gram matrices of a 256-px tile run alone differ from the whole image's features
  cropped to it by <= 0.3% (conv1_1..conv3_1) and <= 4% (conv4_1, conv5_1), relative squared
  error, so a halo (~1.5-2x the pixels per tile) would buy little;
- blending: each tile's weight is a raised cosine over the overlap on every side that borders
  another tile (1 on image borders), after a `margin` of zero weight where the tile's own padding
  distorts its features; the blend is sum(w * tile) / sum(w).

`tile_boxes`, `feather_weights` and `blend` are pure functions on tensors; `tiled_pass` drives an
engine-supplied `optimise(tiles, boxes)` over batches of tiles (one round); `tiled_scale` is the
engine's tiled stand-in for `stylecore.loop.optimize_scale`, its rounds split by `rounds`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from stylecore.loop import Objective, OptimSettings, ScaleOutcome, StepFn, optimize_scale
from stylecore.memory import TILE_MULTIPLE, round_tile  # noqa: F401 (re-exported)

# Overlap between neighbouring tiles, as a fraction of the tile side, and its floor in px: wide
# enough for a smooth raised-cosine ramp after the margin, small enough to cost < 1/3 extra pixels.
OVERLAP_FRACTION = 0.125
MIN_OVERLAP = 32
# Pixels at each inner tile edge that get no weight: conv padding distorts the features near a
# tile's edge (the first 3x3 convs see zeros), so the pixels the optimiser bent there are dropped.
MARGIN_FRACTION = 0.25  # of the overlap
# Steps per round of the tiled pass (`tiled_scale`): between rounds the tiles are blended and every
# tile re-anchored to the whole image as it now is. Measured (vgg16-hed, bf16, one thread) at 512 px
# in 256-px tiles, 100 steps, Gram style distance / LPIPS to the content of the tiled row over the
# same row in one piece:
#
#                                         tubingen + starry_night   chelsea + the_scream
#   scales=1, 4 rounds of 25                   1.013 / 1.091            1.025 / 1.016
#   scales=1, one round of 100                 1.21  / 1.16             1.01  / 1.13
#   scales=2 (256 px one piece, 512 tiled):
#     rounds of 25 (20 and 34: 1.106, 1.112)   1.003 / 1.107            1.010 / 1.097
#     rounds of 10                             1.006 / 1.120            1.003 / 1.109
#     one round of 100                         1.057 / 1.165            1.011 / 1.134
#
# Each round restarts L-BFGS's memory, hence not shorter rounds. Before rounds, a scales=1 row ran
# an extra coarse scale in one piece first (1.069 / 1.277 and 0.998 / 1.369 against one piece):
# the row's look then depended on whether it tiled, i.e. on the device's memory.
ROUND_STEPS = 25


@dataclass(frozen=True)
class Box:
    """A tile's place in the image, in px: rows top..top+height, columns left..left+width."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, height, width)."""
        return x[..., self.top : self.top + self.height, self.left : self.left + self.width]


def default_overlap(tile: int) -> int:
    """Overlap for a tile side: OVERLAP_FRACTION of it, at least MIN_OVERLAP, at most half the tile."""
    return min(tile // 2, max(MIN_OVERLAP, round(tile * OVERLAP_FRACTION)))


def _axis(n: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """(tile length, start offsets) along one axis of length n: the fewest tiles of at most `tile`
    px that cover n with neighbours overlapping by at least `overlap`, made as short as that
    allows and spread evenly (so no last tile hangs mostly over its neighbour, wasting pixels)."""
    if n <= tile:
        return n, [0]
    k = math.ceil((n - overlap) / (tile - overlap))  # tiles needed
    size = math.ceil((n + (k - 1) * overlap) / k)
    while True:
        starts = [i * (n - size) // (k - 1) for i in range(k)]
        if all(a + size - b >= overlap for a, b in zip(starts, starts[1:])):
            return size, starts
        size += 1  # integer rounding of the starts cost a pixel of overlap


def tile_boxes(h: int, w: int, tile: int, overlap: int) -> list[Box]:
    """Boxes of one size, at most tile x tile, covering an (h, w) image row-major, neighbours
    overlapping by at least `overlap` px, evenly spread (`_axis`). Raises ValueError when
    overlap >= tile."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"tile {tile} px with overlap {overlap} px: need tile > 0 and 0 <= overlap < tile")
    (th, tops), (tw, lefts) = _axis(h, tile, overlap), _axis(w, tile, overlap)
    return [Box(t, left, th, tw) for t in tops for left in lefts]


def _ramp(n: int, lo: int | None, hi: int | None, margin: int) -> torch.Tensor:
    """1-D weights of length n: raised cosine from 0 to 1 over [margin, lo) at the start (when the
    start borders another tile over `lo` px), mirrored at the end over `hi` px; 1 elsewhere."""
    w = torch.ones(n, dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64) + 0.5
    for size, p in ((lo, pos), (hi, n - pos)):
        if size is None or size <= 0:
            continue
        m = min(margin, size - 1)
        t = ((p - m) / max(1, size - m)).clamp(0, 1)  # 0 before the margin, 1 past the overlap
        w = w * (0.5 - 0.5 * torch.cos(math.pi * t))
    return w


def feather_weights(boxes: Sequence[Box], h: int, w: int, margin: int | None = None) -> list[torch.Tensor]:
    """Per box, (1, 1, height, width) float32 blending weights: a raised-cosine ramp across the
    actual overlap with each neighbour (0 at the tile's inner edge, after `margin` px, to 1 where
    the neighbour ends), 1 along the image's own borders. Everywhere some tile has weight > 0."""
    out = []
    for b in boxes:
        if b.top < 0 or b.left < 0 or b.top + b.height > h or b.left + b.width > w:
            raise ValueError(f"{b} does not lie inside the {h}x{w} image")
        ramps = []
        for start, size, starts in (
            (b.top, b.height, sorted({c.top for c in boxes})),
            (b.left, b.width, sorted({c.left for c in boxes})),
        ):
            before = [s for s in starts if s < start]
            after = [s for s in starts if s > start]
            lo = (before[-1] + size - start) if before else None  # overlap with the previous tile
            hi = (start + size - after[0]) if after else None  # overlap with the next tile
            mg = margin if margin is not None else round(MARGIN_FRACTION * min(v for v in (lo, hi, size) if v is not None))
            ramps.append(_ramp(size, lo, hi, mg))
        out.append((ramps[0][:, None] * ramps[1][None, :]).float().view(1, 1, b.height, b.width))
    return out


def blend(tiles: Sequence[torch.Tensor], boxes: Sequence[Box], weights: Sequence[torch.Tensor], h: int, w: int) -> torch.Tensor:
    """sum_i w_i * tile_i / sum_i w_i over the image: tiles (B, C, height, width) -> (B, C, h, w)."""
    first = tiles[0]
    acc = torch.zeros((first.shape[0], first.shape[1], h, w), dtype=first.dtype, device=first.device)
    norm = torch.zeros((1, 1, h, w), dtype=first.dtype, device=first.device)
    for t, b, wt in zip(tiles, boxes, weights):
        wt = wt.to(acc.device, acc.dtype)
        b.crop(acc).add_(t * wt)
        b.crop(norm).add_(wt)
    if bool((norm <= 0).any()):
        raise ValueError("the boxes leave pixels with no weight (no tile covers them)")
    return acc / norm


# optimise(tiles (T, 3, th, tw), boxes of those tiles) -> optimised tiles (T, 3, th, tw)
OptimiseTiles = Callable[[torch.Tensor, Sequence[Box]], torch.Tensor]


def tiled_pass(
    x: torch.Tensor,
    tile: int,
    optimise: OptimiseTiles,
    batch: int = 1,
    overlap: int | None = None,
    on_tiles: Callable[[int, int], None] = lambda done, total: None,
) -> torch.Tensor:
    """One round of a scale's tiled optimisation of one image x (1, 3, H, W): every tile cropped
    from the same x, `batch` tiles per `optimise` call (each tile its own optimiser state inside
    it), `on_tiles(done, total)` after each call, then the feathered blend. Returns (1, 3, H, W)."""
    if x.shape[0] != 1:
        raise ValueError(f"the tiled pass takes one image at a time, got a batch of {x.shape[0]}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ov = default_overlap(tile) if overlap is None else overlap
    boxes = tile_boxes(h, w, tile, ov)
    done: list[torch.Tensor] = []
    for i in range(0, len(boxes), max(1, batch)):
        chunk = boxes[i : i + max(1, batch)]
        crops = torch.cat([b.crop(x) for b in chunk]).detach()  # (T, 3, th, tw)
        out = optimise(crops, chunk)
        done += [out[k : k + 1].detach() for k in range(len(chunk))]
        on_tiles(len(done), len(boxes))
    return blend(done, boxes, feather_weights(boxes, h, w), h, w).clamp_(0, 1)


# ------------------------------------------------------------------------------------ one scale, tiled


def rounds(iterations: int, per_round: int) -> list[int]:
    """Steps of each round: `iterations` split as evenly as possible into ceil(iterations /
    per_round) rounds (100 at 25 -> [25, 25, 25, 25]; 30 -> [15, 15]; 8 -> [8])."""
    n = max(1, math.ceil(iterations / max(1, per_round)))
    return [iterations // n + (1 if i < iterations % n else 0) for i in range(n)]


def tiled_scale(
    make_objective: Callable[[torch.Tensor, torch.Tensor, object], Objective],
    measure: Callable[[torch.Tensor], object],
    contents: torch.Tensor,
    x: torch.Tensor,
    tile: int,
    settings: OptimSettings,
    on_step: StepFn,
    stop: Callable[[], bool] = lambda: False,
    batch: int = 1,
    overlap: int | None = None,
    on_tiles: Callable[[int, int], None] = lambda done, total: None,
) -> ScaleOutcome:
    """`stylecore.loop.optimize_scale` for one row in tiles: the same contract (one row in, one
    ScaleOutcome out), so the engine can swap it in for a scale.

    The scale's steps run in rounds of about ROUND_STEPS (`rounds`): each round measures the whole
    image once (`measure(x)`, e.g. its style statistics), crops the tiles from the current image,
    optimises them (`tiled_pass`) and blends them into the next round's image.
    `make_objective(content tiles (T, 3, th, tw), the tiles at the round's start (T, 3, th, tw), the
    round's measure)` builds the per-tile objective (content targets from the content crops, the
    whole style image's targets anchored to each tile's start: `stylecore.anchor`); each batch of
    tiles runs through `optimize_scale` (each tile its own optimiser state, fresh each round). The
    row's step k reported to `on_step` carries the mean of its tiles' losses after their step k (a
    tile that stopped earlier counts with its last), replayed after each round's blend, so a
    snapshot there shows the blended result; `stop()` (a deadline) is polled at each tile step;
    `on_tiles(done, total)` reports each round's tiles as they finish."""
    if x.shape[0] != 1 or contents.shape[0] != 1:
        raise ValueError("the tiled pass takes one row at a time")
    done_steps, why = 0, "cap"
    final: dict[str, torch.Tensor] = {}
    for n in rounds(settings.iterations, ROUND_STEPS):
        this = dataclasses.replace(settings, iterations=n)
        x, steps, why, final = _round(
            make_objective, measure(x), contents, x, tile, this, on_step, done_steps, stop, batch, overlap, on_tiles
        )
        done_steps += steps
        if why in ("stopped", "converged"):
            break
    return ScaleOutcome(x, [done_steps], [why], final)


def _round(
    make_objective: Callable[[torch.Tensor, torch.Tensor, object], Objective],
    whole: object,
    contents: torch.Tensor,
    x: torch.Tensor,
    tile: int,
    settings: OptimSettings,
    on_step: StepFn,
    offset: int,
    stop: Callable[[], bool],
    batch: int,
    overlap: int | None,
    on_tiles: Callable[[int, int], None],
) -> tuple[torch.Tensor, int, str, dict[str, torch.Tensor]]:
    """One round of `tiled_scale`: (blended image (1, 3, H, W), steps, why it ended, final losses)."""
    curves: list[list[dict[str, float]]] = []
    finals: list[dict[str, torch.Tensor]] = []
    reasons: list[str] = []

    def optimise(crops: torch.Tensor, boxes: Sequence[Box]) -> torch.Tensor:
        n = len(boxes)
        first = len(curves)
        curves.extend([] for _ in range(n))
        tol = settings.tol
        per_tile = dataclasses.replace(settings, tol=(tol[0],) * n if isinstance(tol, tuple) else tol)

        def tile_step(i: int, step: int, terms: Mapping[str, float], image: Callable[[], torch.Tensor]) -> bool:
            curves[first + i].append(dict(terms))
            return stop()

        objective = make_objective(torch.cat([b.crop(contents) for b in boxes]), crops, whole)
        out = optimize_scale(objective, crops, per_tile, tile_step)
        finals.append({k: v.detach() for k, v in out.final.items()})
        reasons.extend(out.stopped)
        return out.x

    image = tiled_pass(x, tile, optimise, batch, overlap, on_tiles)
    steps = max((len(c) for c in curves), default=0)
    for k in range(steps):  # the row's curve: the mean over tiles at each step
        at = [c[min(k, len(c) - 1)] for c in curves if c]
        on_step(0, offset + k + 1, {name: sum(t[name] for t in at) / len(at) for name in at[0]}, lambda: image)
    final = {k: torch.cat([f[k] for f in finals]).mean().reshape(1) for k in finals[0]}
    why = "stopped" if "stopped" in reasons else "converged" if all(r == "converged" for r in reasons) else "cap"
    return image, steps, why, final
