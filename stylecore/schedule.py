"""The coarse-to-fine schedule: which long sides the engine optimises at, and how many steps at each.

The engine (`stylecore.transfer`) loops over `scale_plan(params)`: it optimises at the first
(coarsest) long side from the initial image, then upsamples the result to the next long side,
recomputes the content and style targets there and optimises again, and so on up to `params.size`.

Why the pyramid is opt-in (`scales=0`), not the default: measured with
`benchmarks/time_to_quality.py` (tubingen + starry_night, 256 px, vgg16-hed, one thread, under
load 12-18 on 2 cores; work = megapixels through VGG evaluations, a load-free cost proxy), against a
plain 500-step single-scale L-BFGS loop (Gram distance 0.0095, LPIPS-content 0.333, 27.6 Mpx):
128/181/256 px with 200/100/50 steps costs 0.30 of its work but ends at Gram 0.0177, LPIPS 0.441;
181/256 px with 200/100 costs 0.40 and ends at 0.0130, 0.375. At 128 px output, 64/91/128 px
(0.29 of the work) ends at 0.0218, 0.514 against the reference's 0.0157, 0.396. The upsampled
coarse result is blurred, and the content loss (conv4_2) does not bring the content's fine detail
back, so LPIPS to the content stays high; the look has larger strokes but is further from the
photo. None reached the reference's quality on both measures.

Since then each finer scale starts from `transfer.upsample_with_detail` (the coarse result
upsampled plus the content's detail band), and the VGG runs in bf16 on this CPU. Measured again
(same pair and reference: Gram 0.0095, LPIPS 0.333; bf16; 1 thread; load 5-9): 128/181/256 px with
343/171/86 steps ends at Gram 0.0127, LPIPS 0.377 (0.28 of the reference's time); 128 px x 100 then
256 px x 350 ends at 0.0102, 0.350, no lower Gram at 256 px than single scale after as many final
steps, and LPIPS 0.02 higher throughout. The coarse scale's strokes are larger relative to the
image, and the finer scale keeps them: a different look (the pyramid's is more painterly), not
a faster way to the single-scale one.

Print sizes (`Params.coarse_side`, default 1024): a row whose coarsest scale would be longer starts
with one scale at size / 2^k <= 1024 px. At 2048 px VGG's receptive fields cover a small part of
the image, so a single scale's style loss moves only fine texture: `stxpipe stylize --size 2048
--iterations 8` in one scale gave a faint texture at 100% that reads as the photo at screen size;
with a 1024-px scale first, clear strokes in the sky and on the façades (307 s against 267 s wall,
2.57 against 2.49 GiB peak RSS, tubingen x starry_night, 2 cores). Gatys et al. 2017 ("Controlling
perceptual factors") make high-resolution transfers coarse-to-fine for the same reason. It is a
rule of the row's params, not of the device, so a row's look never depends on whether it tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stylecore.params import Params

# The smallest long side a scale may have (the engine's floor for any resize).
MIN_SCALE_SIDE = 16
# The auto pyramid (`scales=0`): its coarsest long side is min(COARSEST_SIDE, size / 2), never
# below MIN_COARSEST_SIDE (smaller outputs run at a single scale); consecutive scales differ by STEP;
# at most MAX_AUTO_SCALES scales (large outputs start above COARSEST_SIDE), so that the final scale
# keeps at least 1/15 of the steps.
COARSEST_SIDE = 128
MIN_COARSEST_SIDE = 64
STEP = math.sqrt(2)
MAX_AUTO_SCALES = 4
# Each scale gets SHARE times the steps of the next finer one; with STEP = sqrt(2) every scale then
# costs about the same time (a step at the next finer scale costs ~2x), so most steps go to the small ones.
SHARE = 2.0


@dataclass(frozen=True)
class ScaleStep:
    """One scale of the plan: optimise at `long_side` px (long side of the image) for at most `iterations` steps."""

    long_side: int
    iterations: int


def scale_sides(size: int, scales: int, coarse_side: int = 0) -> list[int]:
    """Long sides coarse -> fine ending at `size`: `scales` = 0 the auto pyramid (steps of STEP),
    n >= 1 the n sides size / 2^(n-1), ..., size / 2, size (each at least MIN_SCALE_SIDE px,
    duplicates merged). When the coarsest of them is longer than `coarse_side` (> 0), one more
    scale comes first: size / 2^k for the smallest k that brings it to `coarse_side` or below."""
    if scales > 0:
        sides = sorted({max(MIN_SCALE_SIDE, round(size / 2 ** (scales - 1 - i))) for i in range(scales)})
    else:
        coarsest = min(COARSEST_SIDE, size / 2)
        n = 1 if coarsest < MIN_COARSEST_SIDE else min(MAX_AUTO_SCALES, 1 + math.ceil(math.log(size / coarsest) / math.log(STEP) - 1e-9))
        sides = sorted({round(size / STEP ** (n - 1 - i)) for i in range(n)})
    if 0 < coarse_side < sides[0]:
        sides.insert(0, max(MIN_SCALE_SIDE, round(size / 2 ** math.ceil(math.log2(size / coarse_side) - 1e-9))))
    return sides


def split_iterations(total: int, n: int, share: float = SHARE) -> list[int]:
    """`total` steps over `n` scales coarse -> fine, in proportion share^(n-1), ..., share, 1
    (largest remainders; sums to `total`)."""
    w = [share ** (n - 1 - i) for i in range(n)]
    exact = [total * v / sum(w) for v in w]
    out = [math.floor(e) for e in exact]
    for i in sorted(range(n), key=lambda i: (out[i] - exact[i], -i))[: total - sum(out)]:
        out[i] += 1
    return out


def scale_plan(params: Params) -> list[ScaleStep]:
    """Scales coarse -> fine; the last `long_side` is `params.size`.

    `scales` = 1 (default): single scale, `iterations` steps at `size`. n >= 2: the n sides
    size / 2^(n-1), ..., size / 2, size with `iterations` steps at each (as before the pyramid).
    0: the auto pyramid from at most min(128, size/2) px (outputs below 128 px: single scale) up to
    `size` in steps of ~sqrt(2), at most 4 scales (64, 91, 128 at size 128; 128, 181, 256 at 256;
    181, 256, 362, 512 at 512), and `iterations` is then the row's budget over all its scales: each
    scale gets twice the steps of the next finer one (350 at size 256: 200, 100, 50), so every scale
    costs about the same time. With `tol` > 0 a scale may stop before its steps are done.
    Print sizes: when the coarsest of these is longer than `coarse_side` (default 1024), one more
    scale comes first at size / 2^k <= coarse_side (2048: 1024, 2048; 4096: 1024, 4096), with
    `iterations` steps (scales=0: its share)."""
    sides = scale_sides(params.size, params.scales, params.coarse_side)
    if params.scales != 0:
        return [ScaleStep(s, params.iterations) for s in sides]
    return [ScaleStep(s, it) for s, it in zip(sides, split_iterations(params.iterations, len(sides)))]
