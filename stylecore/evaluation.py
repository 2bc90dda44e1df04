"""Evaluation formulas beyond the LPIPS pair: luminance-only content, Gaussian W2 style, colour
distance and CFSD. Pure functions of images or features; `stylecore.metrics.Distance` runs the
backbone once and feeds them. Images are (B, 3, H, W) RGB in [0, 1].

Definitions (where the literature differs, the choice is stated):

- `luminance`: ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (what PIL's `convert("L")` and
  torchvision's `Grayscale` compute), replicated to 3 channels. `lpips_content_gray` is
  LPIPS(Y(output), Y(content)) as in the StyleID evaluation protocol (Chung et al., CVPR 2024,
  `evaluation/eval_artfid.py`: `Grayscale()` then LPIPS; a 1-channel image broadcast against
  LPIPS' 3-channel scaling is the same as replicating it). StyleID uses LPIPS-AlexNet; here it
  is our LPIPS-VGG (the run's metric model), so values are not comparable with their table.
- `gaussian_w2`: W2 between the Gaussian fits N(mu_o, S_o), N(mu_s, S_s) of the output's and the
  style's features at one layer (positions are samples; population covariance),
      W2^2 = |mu_o - mu_s|^2 + tr S_o + tr S_s - 2 tr (S_s^1/2 S_o S_s^1/2)^1/2,
  divided by the style's root mean square feature norm sqrt(|mu_s|^2 + tr S_s) (= W2 from the
  style Gaussian to a point mass at 0), so like `gram_style` it is free of the weight set's
  feature scale and layers of different magnitude average fairly. `w2_style` is the mean over
  the Gram layers. Covariances summed in chunks of positions (bounded memory on big images);
  the trace term by an SVD or by C x C eigendecompositions, whichever is smaller, in float64.
- `sliced_colour_w1` (`hist_style`): sliced Wasserstein-1 between the RGB colour distributions
  of output and style: the mean over K = 64 fixed unit directions d (drawn once from a
  generator seeded 0, the same for every row) of the 1-D W1 between the projections <d, rgb>
  of the two images' pixels. Chosen over per-channel 1-D distances because it also sees colour
  *combinations* (a per-channel match can pair the wrong hues). Units: [0, 1] intensity along a
  direction (0 = identical colour distributions). The two images must have the same pixel count
  (the style is measured at the output's size), where 1-D W1 is exactly the mean absolute
  difference of the sorted values.
- `cfsd`: Content Feature Structural Distance (Chung et al., CVPR 2024, StyleID; reference code
  `evaluation/image_metrics.py::PatchSimi`). At one layer, with features F (N positions x C)
  divided by C, the patch-similarity map of an image is the row-wise softmax of F F^T (N x N);
      CFSD = sum_i KL(P_content[i, :] || P_output[i, :])
  summed over all N rows (the reference's `kl_div(..., reduction="batchmean")` on the flattened
  N x N maps). The reference taps VGG-19 (ImageNet) `features[11]` = relu3_1 (the paper's
  "conv3"); here relu3_1 of the metric backbone (VGG-16; the first three blocks of VGG-16 and
  VGG-19 have the same shape up to relu3_1; offline that is the `vgg16-hed` weights, so values
  are not comparable with the paper's). The sum over rows grows with the number of positions,
  so CFSD is measured at a long side of at most `CFSD_MAX_SIDE` = 512 (the protocol's image
  size); values compare between outputs of the same size. Rows are processed in chunks, so
  memory is O(chunk x N), not O(N^2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stylecore.losses.functional import one_lapack_thread

LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
CFSD_LAYER = "relu3_1"
CFSD_MAX_SIDE = 512
HIST_DIRECTIONS = 64
HIST_MAX_SIDE = 512
_CFSD_CHUNK = 1024  # rows of the N x N similarity map per step: 1024 x 4096 float32 = 16 MB at 256 px


def luminance(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of (B, 3, H, W) RGB, replicated to 3 channels -> (B, 3, H, W)."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    y = (x * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    return y.expand(-1, 3, -1, -1)


_MOMENT_CHUNK = 1 << 18  # positions per step of the covariance sum: 64 channels x 2^18 x 4 B = 64 MB


def _mean(f: torch.Tensor) -> torch.Tensor:
    """Channel means of features (B, C, H, W) -> (B, C) float32."""
    return f.flatten(2).float().mean(dim=2)


def _covariance(f: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Population covariance (B, C, C) float64 of features (B, C, H, W) around `mu` (B, C),
    summed over chunks of positions (centred first, so float32 products stay accurate; never a
    full centred copy of a large image's features)."""
    x = f.flatten(2)  # (B, C, N), a view
    n = x.shape[2]
    cov = torch.zeros(x.shape[0], x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, n, _MOMENT_CHUNK):
        xc = x[:, :, start : start + _MOMENT_CHUNK].float() - mu.unsqueeze(2)  # (B, C, n_chunk)
        cov += (xc @ xc.transpose(1, 2)).double()
    return cov / n


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD matrices (B, C, C) by eigendecomposition (negative
    round-off eigenvalues clamped to 0)."""
    with one_lapack_thread(s):
        evals, evecs = torch.linalg.eigh(s)
    root: torch.Tensor = (evecs * evals.clamp_min(0).sqrt().unsqueeze(1)) @ evecs.transpose(1, 2)
    return root


def gaussian_w2(fo: torch.Tensor, fs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Relative W2 between Gaussian fits of output features `fo` (B, C, H, W) and style features
    `fs` (B or 1, C, h, w) at one layer -> (B,) float64 (see the module docstring).

    The trace term tr (S_s^1/2 S_o S_s^1/2)^1/2: with S = X X^T / N for centred samples X, its
    eigenvalues are the squared singular values of X_s^T X_o / sqrt(N_s N_o) (N_s x N_o), so it is
    that matrix's nuclear norm: one SVD when N_s N_o <= C^2 (deep layers of small images have
    fewer positions than channels), else two C x C eigendecompositions."""
    c, no, ns = fo.shape[1], fo.shape[2] * fo.shape[3], fs.shape[2] * fs.shape[3]
    mu_o, mu_s = _mean(fo), _mean(fs)
    if no * ns > c * c:
        return gaussian_w2_from_stats(mu_o, _covariance(fo, mu_o), mu_s, _covariance(fs, mu_s), eps)
    # few positions: centred samples are small
    xo = (fo.flatten(2).float() - mu_o.unsqueeze(2)).double()  # (B, C, No)
    xs = (fs.flatten(2).float() - mu_s.unsqueeze(2)).double()
    with one_lapack_thread(xo):
        cross = torch.linalg.svdvals(xs.transpose(1, 2) @ xo / (no * ns) ** 0.5).sum(dim=1)  # (B,)
    tr_o, tr_s = (xo**2).sum(dim=(1, 2)) / no, (xs**2).sum(dim=(1, 2)) / ns
    return _relative_w2(mu_o, mu_s, tr_o, tr_s, cross, eps)


def gaussian_w2_from_stats(
    mu_o: torch.Tensor, s_o: torch.Tensor, mu_s: torch.Tensor, s_s: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """`gaussian_w2` from the fits themselves: means (B, C) and float64 covariances (B, C, C) of the
    output and (B or 1) of the style -> (B,) float64 (two C x C eigendecompositions)."""
    root_s = _psd_sqrt(s_s)
    middle = root_s @ s_o @ root_s  # PSD
    middle = (middle + middle.transpose(1, 2)) / 2  # symmetric up to round-off; eigvalsh needs exact
    with one_lapack_thread(middle):
        cross = torch.linalg.eigvalsh(middle).clamp_min(0).sqrt().sum(dim=1)
    tr_o, tr_s = s_o.diagonal(dim1=1, dim2=2).sum(dim=1), s_s.diagonal(dim1=1, dim2=2).sum(dim=1)
    return _relative_w2(mu_o, mu_s, tr_o, tr_s, cross, eps)


def _relative_w2(
    mu_o: torch.Tensor, mu_s: torch.Tensor, tr_o: torch.Tensor, tr_s: torch.Tensor, cross: torch.Tensor, eps: float
) -> torch.Tensor:
    mo, ms = mu_o.double(), mu_s.double()
    w2_sq = ((mo - ms) ** 2).sum(dim=1) + tr_o + tr_s - 2 * cross
    energy = (ms**2).sum(dim=1) + tr_s  # E|f_s|^2, (B or 1,)
    w2: torch.Tensor = w2_sq.clamp_min(0).sqrt() / energy.clamp_min(eps).sqrt()
    return w2


def hist_directions(k: int = HIST_DIRECTIONS, seed: int = 0) -> torch.Tensor:
    """K fixed unit directions in RGB space, (K, 3) float32, from a generator seeded `seed`."""
    d = torch.randn(k, 3, generator=torch.Generator().manual_seed(seed))
    unit: torch.Tensor = d / torch.linalg.vector_norm(d, dim=1, keepdim=True)
    return unit


def sliced_colour_w1(output: torch.Tensor, style: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
    """Sliced W1 between the RGB distributions of `output` (B, 3, H, W) and `style` (B or 1, 3,
    H', W') with H' W' = H W -> (B,) (see the module docstring)."""
    n_o, n_s = output.shape[-2] * output.shape[-1], style.shape[-2] * style.shape[-1]
    if n_o != n_s:
        raise ValueError(f"sliced_colour_w1 needs equal pixel counts, got {n_o} and {n_s}; resize the style to the output's size")
    d = (hist_directions() if directions is None else directions).to(device=output.device, dtype=torch.float32)  # (K, 3)
    po = torch.einsum("kc,bcn->bkn", d, output.flatten(2).float()).sort(dim=2).values  # (B, K, N)
    ps = torch.einsum("kc,bcn->bkn", d, style.flatten(2).float()).sort(dim=2).values  # (B or 1, K, N)
    return (po - ps).abs().mean(dim=2).mean(dim=1)


def _patch_logits(f: torch.Tensor, rows: slice) -> torch.Tensor:
    """Similarity logits of positions `rows` against all positions: (B, r, N), features / C."""
    x = f.flatten(2).transpose(1, 2) / f.shape[1]  # (B, N, C)
    return x[:, rows] @ x.transpose(1, 2)


def cfsd_from_features(fo: torch.Tensor, fc: torch.Tensor, chunk: int = _CFSD_CHUNK) -> torch.Tensor:
    """CFSD between output features `fo` and content features `fc`, both (B, C, H, W) at the same
    size -> (B,): sum over positions i of KL(softmax(S_c[i]) || softmax(S_o[i])), S = F F^T / C^2."""
    if fo.shape[1:] != fc.shape[1:] or fc.shape[0] not in (1, fo.shape[0]):
        raise ValueError(f"cfsd needs features of equal shape, got {tuple(fo.shape)} and {tuple(fc.shape)}")
    n = fo.shape[2] * fo.shape[3]
    total = torch.zeros(fo.shape[0], dtype=torch.float64, device=fo.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        log_p = torch.log_softmax(_patch_logits(fc.float(), rows), dim=2)  # (B or 1, r, N)
        log_q = torch.log_softmax(_patch_logits(fo.float(), rows), dim=2)
        total += (log_p.exp() * (log_p - log_q)).sum(dim=(1, 2)).double()
    return total


def fit_side(hw: Sequence[int], max_side: int) -> tuple[int, int]:
    """(H, W) scaled down (aspect kept, rounded, >= 1) so the long side is <= max_side."""
    h, w = int(hw[0]), int(hw[1])
    if max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))
