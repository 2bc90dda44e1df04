"""The coarse-to-fine schedule: which long sides the engine optimises at, and how many steps at each.

The engine (`stylecore.transfer`) loops over `scale_plan(params)`: it optimises at the first
(coarsest) long side from the initial image, then upsamples the result to the next long side,
recomputes the content and style targets there and optimises again, and so on up to `params.size`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stylecore.params import Params

# The smallest long side a scale may have (the engine's floor for any resize).
MIN_SCALE_SIDE = 16


@dataclass(frozen=True)
class ScaleStep:
    """One scale of the plan: optimise at `long_side` px (long side of the image) for `iterations` steps."""

    long_side: int
    iterations: int


def scale_plan(params: Params) -> list[ScaleStep]:
    """Scales coarse -> fine; the last `long_side` is `params.size`.

    `scales` = n gives the long sides size / 2^(n-1), ..., size / 2, size (each at least 16 px),
    and `iterations` steps are taken at every scale (so n * iterations steps in all)."""
    n = params.scales
    return [ScaleStep(max(MIN_SCALE_SIDE, round(params.size / 2 ** (n - 1 - i))), params.iterations) for i in range(n)]
