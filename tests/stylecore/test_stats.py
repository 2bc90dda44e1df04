"""Percentile bootstrap intervals against a plain-Python reference."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from stylecore.stats import bootstrap_ci, paired_bootstrap_ci


def reference_ci(values: list[float], n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    # The same resampling (numpy's generator draws the indices), then means and quantiles by hand.
    rng = np.random.default_rng(seed)
    n = len(values)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = sorted(sum(values[j] for j in row) / n for row in idx.tolist())

    def q(p: float) -> float:  # linear interpolation between order statistics (numpy's default)
        pos = p * (n_boot - 1)
        i = int(math.floor(pos))
        frac = pos - i
        return means[i] if i + 1 >= n_boot else means[i] * (1 - frac) + means[i + 1] * frac

    return (sum(values) / n, q((1 - level) / 2), q((1 + level) / 2))


def test_bootstrap_matches_a_by_hand_reference_and_is_deterministic():
    r = random.Random(3)
    values = [r.gauss(1.0, 0.5) for _ in range(25)]
    got = bootstrap_ci(values, n_boot=500, level=0.9, seed=7)
    assert got == pytest.approx(reference_ci(values, 500, 0.9, 7), rel=1e-12)
    assert bootstrap_ci(values, n_boot=500, level=0.9, seed=7) == got
    assert got[1] < got[0] < got[2]


def test_bootstrap_interval_covers_the_true_mean_about_level_of_the_time():
    # 200 samples of size 30 from N(0, 1): a 95% interval covers 0 in roughly 95% of them.
    r = random.Random(0)
    hits = 0
    for k in range(200):
        mean, lo, hi = bootstrap_ci([r.gauss(0.0, 1.0) for _ in range(30)], n_boot=400, seed=k)
        hits += lo <= 0.0 <= hi
    assert 0.85 <= hits / 200 <= 0.99


def test_nan_dropped_and_degenerate_sizes():
    assert bootstrap_ci([2.0, float("nan"), 4.0], seed=1) == bootstrap_ci([2.0, 4.0], seed=1)
    assert bootstrap_ci([5.0]) == (5.0, 5.0, 5.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert all(math.isnan(x) for x in bootstrap_ci([float("nan")]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)


def test_paired_resamples_pairs_so_shared_variation_cancels():
    r = random.Random(1)
    base = [r.gauss(0.0, 10.0) for _ in range(40)]  # large per-input spread shared by both arms
    a = [x + 1.0 + r.gauss(0.0, 0.1) for x in base]
    b = base
    mean, lo, hi = paired_bootstrap_ci(a, b, seed=0)
    assert (mean, lo, hi) == bootstrap_ci([x - y for x, y in zip(a, b)], seed=0)
    assert 0.9 < lo < mean < hi < 1.1  # the paired interval is tight around 1
    # unpaired intervals of the arms overlap widely (the per-input spread does not cancel)
    assert bootstrap_ci(a)[1] < bootstrap_ci(b)[2]
    assert paired_bootstrap_ci([1.0, float("nan"), 3.0], [0.0, 1.0, float("nan")]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])
