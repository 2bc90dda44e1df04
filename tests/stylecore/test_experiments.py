"""Figure 7's comparison of the content-loss arms: bootstrap intervals and the verdict."""

from __future__ import annotations

import math
import random

import pytest

from stylecore.experiments import content_loss_comparison
from stylecore.stats import bootstrap_ci, paired_bootstrap_ci


def arms(shift: float, n: int = 20, seed: int = 0) -> tuple[list[float], list[float]]:
    r = random.Random(seed)
    base = [r.uniform(0.3, 0.7) for _ in range(n)]  # per-pair spread shared by both arms
    return base, [b + shift + r.gauss(0, 0.005) for b in base]


@pytest.mark.parametrize(("shift", "verdict"), [(-0.02, "holds"), (0.02, "reversed"), (0.0, "inconclusive")])
def test_verdict_follows_the_paired_interval(shift, verdict):
    mse, lpips = arms(shift)
    res = content_loss_comparison(mse, lpips, seed=3)
    assert res.verdict == verdict and res.n_pairs == 20
    assert res.diff == paired_bootstrap_ci(lpips, mse, seed=3)
    assert (res.mse.mean, res.mse.lo, res.mse.hi) == bootstrap_ci(mse, seed=3)
    assert (res.lpips.mean, res.lpips.lo, res.lpips.hi) == bootstrap_ci(lpips, seed=3)
    s = res.sentence()
    assert {"holds": "The claim holds", "reversed": "does not hold", "inconclusive": "not confirmed"}[verdict] in s
    assert "20 content/style pairs" in s and res.as_dict()["sentence"] == s


def test_incomplete_pairs_are_dropped_from_both_arms():
    mse, lpips = arms(-0.02, n=6)
    mse[2], lpips[4] = math.nan, math.nan
    res = content_loss_comparison(mse, lpips)
    keep = [0, 1, 3, 5]
    assert res.n_pairs == 4 == res.mse.n == res.lpips.n
    assert res.mse.mean == pytest.approx(sum(mse[i] for i in keep) / 4)
    none = content_loss_comparison([], [])
    assert none.n_pairs == 0 and "cannot be tested" in none.sentence()
    with pytest.raises(ValueError, match="paired"):
        content_loss_comparison([1.0], [1.0, 2.0])
