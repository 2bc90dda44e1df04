"""Bootstrap confidence intervals for run-level scores (mean of a metric over rows).

Percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the n values with replacement
`n_boot` times, take the mean of each resample, and report the (1 - level)/2 and (1 + level)/2
quantiles of those means (linear interpolation between order statistics) around the plain mean
of the values. The paired variant resamples *pairs* (row i of arm A with row i of arm B), which is
what a comparison of two settings on the same inputs needs: the per-input variation cancels.

Missing values: NaN entries (a failed row has no metric) are dropped first (pairs with a NaN on
either side are dropped together). No value left -> (nan, nan, nan); one value -> (v, v, v)
(a single observation has no spread to resample). Deterministic for a given `seed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentile_ci(values: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    # values: (n,) finite float64
    n = values.shape[0]
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(values.mean())
    if n == 1:
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) resample indices
    means = values[idx].mean(axis=1)  # (n_boot,)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return (mean, float(lo), float(hi))


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` and its percentile-bootstrap `level` interval.
    NaNs are dropped first (see the module docstring)."""
    _check(n_boot, level)
    v = np.asarray(list(values), dtype=np.float64).reshape(-1)
    return _percentile_ci(v[~np.isnan(v)], n_boot, level, seed)


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi) of the paired difference a - b (a[i] and b[i] measured on the same input),
    pairs resampled together. Pairs with a NaN on either side are dropped."""
    _check(n_boot, level)
    va = np.asarray(list(a), dtype=np.float64).reshape(-1)
    vb = np.asarray(list(b), dtype=np.float64).reshape(-1)
    if va.shape != vb.shape:
        raise ValueError(f"paired values need equal lengths, got {va.shape[0]} and {vb.shape[0]}")
    d = va - vb
    return _percentile_ci(d[~np.isnan(d)], n_boot, level, seed)
