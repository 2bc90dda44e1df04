"""Mergeable summaries of feature statistics: what a style loss's targets (and the metrics' Gram/W2
statistics) are built from when an image is measured in tiles (`stylecore.featuretiles`).

Two summaries, both independent of the order in which tiles are merged up to rounding:

- `Moments` (n, mean, scatter): the count of positions, the mean feature (B, C) and the centred
  scatter sum (x - mean)(x - mean)^T (B, C, C), or its diagonal (B, C), all float64. Merged with
  Chan et al.'s pairwise update, so the result is the whole image's mean and covariance exactly
  (no cancellation of E[x x^T] - mean mean^T). Gram, mean/std and Gaussian (w2) targets are
  functions of these: exact.
- `Sketch` (values, mass): a quantile function of the samples along the last dim, values (B, K, P)
  sorted, each point carrying `mass` (P,) samples (the same for every row: all channels or
  directions of a tile have the same count). A tile with at most SKETCH_POINTS samples keeps them
  all (mass 1 each: exact); a larger one keeps its quantiles at SKETCH_POINTS levels (j + 1/2)/P
  (mass n/P each). Merging pools the points of both (the mixture of the two distributions), and
  compresses back to SKETCH_POINTS levels when over, so a sketch's size is bounded whatever the
  image size. The quantile at level u is read by linear interpolation of the values against
  their mid-point cumulative mass, the convention of `functional.quantiles` (sample i of n sits at
  (i + 1/2)/n): one uncompressed sketch reads exactly `quantiles(x)`. Error of compressed sketches:
  a level's value moves by at most the gap between neighbouring stored quantiles (1/SKETCH_POINTS
  of the mass), 16x finer than the targets' own N_QUANTILES = 256 levels. Measured (vgg16-hed,
  starry_night at 320x512 in 128 px tiles, histogram targets at conv1_1..conv4_1): relative RMS
  error against the whole image's quantiles 0.15-1.5% at 256 points, 0.2-0.5% at 1024, 0.05-0.13%
  at 4096, 0 with every sample kept. Cost at 4096: 8 MB per 512-channel layer (a merge's sort:
  ~100 MB for an instant), against the whole image's samples (GBs at 4096 px).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

Moments = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # n () float64, mean (B, C), scatter (B, C, C) or (B, C)
Sketch = tuple[torch.Tensor, torch.Tensor]  # values (B, K, P) sorted, mass (P,) float64

# Stored quantile levels of a compressed sketch (per channel/direction): 16 x N_QUANTILES.
SKETCH_POINTS = 4096


def moments(features: torch.Tensor, full: bool = True) -> Moments:
    """Moments of the positions of `features` (B, C, h, w): full scatter (B, C, C) or its diagonal."""
    x = features.flatten(2).float()  # (B, C, N)
    n = x.shape[2]
    mu = x.mean(2)  # (B, C)
    xc = x - mu.unsqueeze(2)
    scatter = torch.bmm(xc, xc.transpose(1, 2)) if full else xc.pow(2).sum(2)
    return torch.tensor(float(n), dtype=torch.float64, device=x.device), mu.double(), scatter.double()


def merge_moments(a: Moments, b: Moments) -> Moments:
    """The moments of the union of two sets of positions (Chan et al.'s pairwise update)."""
    na, mua, sa = a
    nb, mub, sb = b
    n = na + nb
    delta = mub - mua  # (B, C)
    mu = mua + delta * (nb / n)
    w = na * nb / n
    cross = delta.unsqueeze(2) * delta.unsqueeze(1) if sa.dim() == 3 else delta.pow(2)
    return n, mu, sa + sb + w * cross


def second_moment(m: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """E[x x^T] (B, C, C) (or E[x^2] (B, C) for a diagonal summary), float64: a size-normalised Gram."""
    n, mu, scatter = m
    outer = mu.unsqueeze(2) * mu.unsqueeze(1) if scatter.dim() == 3 else mu.pow(2)
    return scatter / n + outer


def covariance(m: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Population covariance (B, C, C) (or variances (B, C)), float64."""
    return m[2] / m[0]


def sketch(samples: torch.Tensor, points: int = SKETCH_POINTS) -> Sketch:
    """A sketch of the samples along the last dim of (B, K, N): all of them when N <= points."""
    v = samples.float().sort(-1).values
    n = v.shape[-1]
    if n > points:
        from stylecore.losses.functional import resample_quantiles

        v = resample_quantiles(v, points)
    p = v.shape[-1]
    return v, torch.full((p,), n / p, dtype=torch.float64, device=v.device)


def read_sketch(s: Sketch, levels: int) -> torch.Tensor:
    """The sketch's quantile function at `levels` levels (j + 1/2)/levels -> (B, K, levels) float32."""
    v, mass = s
    total = mass.sum()
    mid = (mass.cumsum(0) - mass / 2) / total  # (P,), increasing
    u = (torch.arange(levels, dtype=torch.float64, device=v.device) + 0.5) / levels  # (L,)
    hi = torch.searchsorted(mid, u).clamp(1, max(1, mid.numel() - 1))  # (L,): first stored level >= u
    lo = hi - 1
    if mid.numel() == 1:
        return v[..., :1].expand(*v.shape[:-1], levels).clone()
    t = ((u - mid[lo]) / (mid[hi] - mid[lo])).clamp(0, 1).to(v.dtype)  # (L,), constant beyond the ends
    return v[..., lo] + t * (v[..., hi] - v[..., lo])


def merge_sketches(a: Sketch, b: Sketch, points: int = SKETCH_POINTS) -> Sketch:
    """The sketch of the mixture of two sketches' samples; compressed to `points` levels when over.

    Values are sorted per row (B, K) and every row has the same masses, so a row's points are
    sorted with their masses gathered along; each row's cumulative mass then differs, so the
    compression reads each row at the same levels through its own mid-points."""
    va, ma = a
    vb, mb = b
    v = torch.cat([va, vb], -1)  # (B, K, Pa + Pb)
    m = torch.cat([ma, mb])
    order = v.argsort(-1)
    v = v.gather(-1, order)
    m_rows = m.expand(*v.shape[:-1], m.numel()).gather(-1, order)  # (B, K, P) masses in each row's order
    total = m.sum()
    if v.shape[-1] <= points and bool((m == m[0]).all()):
        return v, m  # equal masses: any order of them is the same vector
    mid = (m_rows.cumsum(-1) - m_rows / 2) / total  # (B, K, P)
    u = ((torch.arange(points, dtype=torch.float64, device=v.device) + 0.5) / points).expand(*v.shape[:-1], points).contiguous()
    hi = torch.searchsorted(mid.contiguous(), u).clamp(1, v.shape[-1] - 1)  # (B, K, points)
    lo = hi - 1
    mlo, mhi = mid.gather(-1, lo), mid.gather(-1, hi)
    t = ((u - mlo) / (mhi - mlo).clamp_min(1e-300)).clamp(0, 1).to(v.dtype)
    vlo, vhi = v.gather(-1, lo), v.gather(-1, hi)
    out = vlo + t * (vhi - vlo)
    return out, torch.full((points,), float(total) / points, dtype=torch.float64, device=v.device)


# ---------------------------------------------------------------------- the kinds' partial targets
StylePartial = dict[str, tuple[torch.Tensor, ...]]  # layer -> a Moments or a Sketch


class MomentPartials:
    """`partial`/`merge` of a style loss whose targets are functions of the features' moments
    (gram, mean_std, w2): its `finish` reads them. `full_scatter` False: channel variances only."""

    full_scatter: ClassVar[bool] = True

    def partial(self, feats: Mapping[str, torch.Tensor], seed: int) -> StylePartial:
        """One tile's features (1, C, h, w) per layer (its interior positions) -> its moments."""
        with torch.no_grad():
            return {n: moments(f, self.full_scatter) for n, f in feats.items()}

    def merge(self, a: StylePartial, b: StylePartial) -> StylePartial:
        """The partial of the union of two sets of positions."""
        return {n: merge_moments(_moments(a[n]), _moments(b[n])) for n in a}


class QuantilePartials:
    """`partial`/`merge`/`finish` of a style loss whose targets are quantile functions of some
    per-position samples (sliced_w: projections; histogram: channels): `samples` names them."""

    n_quantiles: int

    def samples(self, layer: str, f: torch.Tensor, seed: int) -> torch.Tensor:
        """Features (1, C, h, w) of one layer -> the samples whose quantiles are the target (1, K, h w)."""
        raise NotImplementedError

    def partial(self, feats: Mapping[str, torch.Tensor], seed: int) -> StylePartial:
        with torch.no_grad():
            return {n: sketch(self.samples(n, f, seed)) for n, f in feats.items()}

    def merge(self, a: StylePartial, b: StylePartial) -> StylePartial:
        return {n: merge_sketches(_sketch(a[n]), _sketch(b[n])) for n in a}

    def finish(self, acc: StylePartial, seed: int) -> dict[str, torch.Tensor]:
        """The targets (1, K, n_quantiles) from the merged sketches."""
        return {n: read_sketch(_sketch(s), self.n_quantiles) for n, s in acc.items()}


def _moments(t: tuple[torch.Tensor, ...]) -> Moments:
    n, mu, scatter = t
    return n, mu, scatter


def _sketch(t: tuple[torch.Tensor, ...]) -> Sketch:
    v, mass = t
    return v, mass
