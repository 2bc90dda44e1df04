"""The founding paper's measurements (Figures 5, 6 and 7) and two-image comparison, as data.

Images follow the paper's convention here: [-1, 1] for L2 (mean squared difference, so white vs
black = 2**2 = 4); LPIPS is fed the same images mapped to [0, 1] (`to_unit`), which is lpips'
`normalize=True` convention. Nothing here prints: the CLI formats the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from stylecore.lpips import LPIPS
from stylecore.metrics import l2, match_size, to_signed, to_unit
from stylecore.paper import PAPER_INTENSITY, PAPER_WEIGHTS  # noqa: F401 (re-exported)
from stylecore.stats import bootstrap_ci, paired_bootstrap_ci

# Figure 6: contrast factors c of the three levels, x_c = m + c (x - m) around the per-channel
# mean m. Equal steps (1 -> 0.75 -> 0.5) double the pixel change from level 1->2 to 1->3, so L2
# grows exactly 4x (the paper reports ~4x for L2, ~3.6x for LPIPS). Reducing contrast is a convex
# combination of x and m, so it never leaves [-1, 1] and never clips.
CONTRAST_FACTORS: tuple[float, ...] = (1.0, 0.75, 0.5)


@dataclass(frozen=True)
class PairRow:
    """One compared pair: L2 (mean squared, [-1, 1] images) and LPIPS."""

    pair: str
    l2: float
    lpips: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flat_image(value: float, size: int) -> torch.Tensor:
    """A constant (1, 3, size, size) image with every pixel `value` in [-1, 1]."""
    return torch.full((1, 3, size, size), float(value))


def intensity(lpips_model: LPIPS, size: int = 256) -> list[PairRow]:
    """Figure 5: white (+1), black (-1) and gray (0) images; L2 and LPIPS of (white, black),
    (white, gray), (gray, black)."""
    device = lpips_model.linear(0).device
    white, black, gray = (flat_image(v, size).to(device) for v in (1.0, -1.0, 0.0))
    pairs = (("white-black", white, black), ("white-gray", white, gray), ("gray-black", gray, black))
    rows = []
    with torch.inference_mode():
        for name, a, b in pairs:
            rows.append(PairRow(name, float(l2(a, b)[0]), float(lpips_model(to_unit(a), to_unit(b))[0])))
    return rows


def contrast_levels(image: torch.Tensor, factors: Sequence[float] = CONTRAST_FACTORS) -> list[torch.Tensor]:
    """Contrast versions of `image` (1, 3, H, W) in [-1, 1]: m + c (x - m), m the per-channel mean."""
    m = image.mean(dim=(2, 3), keepdim=True)  # (1, 3, 1, 1)
    return [m + c * (image - m) for c in factors]


@dataclass(frozen=True)
class ContrastResult:
    """Figure 6: pairs (level 1, level k) and the growth ratios (1 -> 3) / (1 -> 2)."""

    factors: tuple[float, ...]
    rows: list[PairRow]
    l2_ratio: float
    lpips_ratio: float


def contrast(image: torch.Tensor, lpips_model: LPIPS, factors: Sequence[float] = CONTRAST_FACTORS) -> ContrastResult:
    """Figure 6 on `image` (1, 3, H, W) in [0, 1]: L2 and LPIPS between contrast level 1 and the
    others (factors as in `CONTRAST_FACTORS`), and their ratios."""
    if len(factors) != 3:
        raise ValueError(f"contrast needs three factors (level 1, 2, 3), got {list(factors)}")
    device = lpips_model.linear(0).device
    levels = contrast_levels(to_signed(image.to(device)), factors)
    rows = []
    with torch.inference_mode():
        ref = lpips_model.features(to_unit(levels[0]))
        for k, lv in enumerate(levels[1:], start=2):
            d = lpips_model.distance_to_features(to_unit(lv), ref)
            rows.append(PairRow(f"level1-level{k}", float(l2(levels[0], lv)[0]), float(d[0])))
    return ContrastResult(tuple(factors), rows, _ratio(rows[1].l2, rows[0].l2), _ratio(rows[1].lpips, rows[0].lpips))


def _ratio(a: float, b: float) -> float:
    # A flat image has no contrast to lose: both distances are 0, and the growth is undefined.
    return a / b if b > 0 else float("nan")


@dataclass(frozen=True)
class Comparison:
    """`stxpipe distance A B`: LPIPS and L2 ([-1, 1] convention) of B against A, at A's size."""

    a: str
    b: str
    height: int
    width: int
    lpips: float
    l2: float
    weights: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_images(a: str | Path, b: str | Path, lpips_model: LPIPS, size: int | None = None) -> Comparison:
    """Decode A (long side resized to `size` if given) and B, bring B to A's exact H x W, and
    measure LPIPS and L2 ([-1, 1] images).

    B is decoded at A's long side with the same resampling as A (so `distance X X` is exactly 0
    at any `--size`), then, only if the aspect ratios differ, stretched to A's H x W by
    `metrics.match_size`."""
    from stylecore.images import load_tensor  # local: decoding is only needed here

    device = lpips_model.linear(0).device
    ta = load_tensor(a, size).to(device)  # (1, 3, H, W) in [0, 1]
    tb = match_size(load_tensor(b, max(ta.shape[-2:])).to(device), ta)  # (1, 3, H, W)
    with torch.inference_mode():
        d = float(lpips_model(ta, tb)[0])
        e = float(l2(to_signed(ta), to_signed(tb))[0])
    return Comparison(str(a), str(b), int(ta.shape[-2]), int(ta.shape[-1]), d, e, lpips_model.weights_label)


# --------------------------------------------------------------- Figure 7: LPIPS vs L2 content loss


@dataclass(frozen=True)
class ArmSummary:
    """One arm's mean of the metric over the complete pairs, with its bootstrap interval."""

    arm: str
    n: int
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ContentLossResult:
    """The founding paper's Figure 7 claim tested on a set of pairs: each arm's mean `metric`
    (lpips_style, the style Distance) with a percentile-bootstrap interval, the paired difference
    lpips - mse with its interval, and the verdict: "holds" when the whole interval of the
    difference is below 0 (LPIPS content loss gives a lower style Distance), "reversed" when it is
    above 0, "inconclusive" when it contains 0."""

    metric: str
    level: float
    n_pairs: int
    mse: ArmSummary
    lpips: ArmSummary
    diff: tuple[float, float, float]  # (mean, lo, hi) of lpips - mse, pairs resampled together
    verdict: str

    def sentence(self) -> str:
        d, lo, hi = self.diff
        pct = f"{self.level:.0%}"
        where = f"over {self.n_pairs} content/style pair{'s' if self.n_pairs != 1 else ''}"
        if self.n_pairs == 0:
            return "No pair has both arms measured, so the claim cannot be tested on this set."
        ci = f"{pct} CI {lo:+.4f} to {hi:+.4f}"
        if self.verdict == "holds":
            return (
                f"The claim holds on this set: with the LPIPS content loss the mean style Distance is lower than with L2 "
                f"by {-d:.4f} ({ci} for LPIPS - L2) {where}."
            )
        if self.verdict == "reversed":
            return (
                f"The claim does not hold on this set: with the LPIPS content loss the mean style Distance is higher than "
                f"with L2 by {d:.4f} ({ci} for LPIPS - L2) {where}."
            )
        return (
            f"The claim is not confirmed on this set: the difference in mean style Distance (LPIPS - L2) is {d:+.4f} "
            f"and its {ci} includes 0 {where}."
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sentence"] = self.sentence()
        return out


def content_loss_comparison(
    mse: Sequence[float], lpips: Sequence[float], *, metric: str = "lpips_style", n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> ContentLossResult:
    """Compare the arms pair by pair: `mse[i]` and `lpips[i]` are the metric of the same content/
    style pair stylised with the L2 and with the LPIPS content loss. Pairs with a NaN on either
    side are dropped (both arms' means are over the same complete pairs)."""
    if len(mse) != len(lpips):
        raise ValueError(f"the arms must be paired: {len(mse)} L2 values and {len(lpips)} LPIPS values")
    pairs = [(float(a), float(b)) for a, b in zip(mse, lpips) if not (math.isnan(float(a)) or math.isnan(float(b)))]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    arms = [ArmSummary(name, len(v), *bootstrap_ci(v, n_boot=n_boot, level=level, seed=seed)) for name, v in (("mse", a), ("lpips", b))]
    diff = paired_bootstrap_ci(b, a, n_boot=n_boot, level=level, seed=seed)
    verdict = "holds" if diff[2] < 0 else "reversed" if diff[1] > 0 else "inconclusive"
    return ContentLossResult(metric, level, len(pairs), arms[0], arms[1], diff, verdict)
