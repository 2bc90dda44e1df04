"""Pure loss functions: the maths of every loss module, and the references their tests check.

Every function returns one value per image, shape (B,), so a batch of rows with different
targets optimises as independent problems summed into one scalar.

Scale: the paper's E_l and L_content depend on the feature scale of the weight set (Caffe-style
0-255 input gives features ~60x larger than torchvision's). The style statistics here are therefore
compared in *relative* form (error over the target's energy), which is invariant to that scale, so
one set of default loss weights serves every weight set. The paper's absolute forms stay available
(`gatys_style_layer_loss`, `gatys_content_loss`).

Quantile functions. `sliced_wasserstein` and `histogram_matching_loss` compare sorted values (the
empirical quantile function) of the output with the style's. The style's are stored at Q fixed
levels (j + 1/2) / Q (`quantiles`), so a target's shape does not depend on the style image's size,
and are resampled to the output's count by linear interpolation (`resample_quantiles`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as nnf

# Default number of stored quantile levels per direction/channel (sliced_w, histogram targets).
N_QUANTILES = 256


class _Gram(torch.autograd.Function):
    """F F^T with a one-matmul backward: dF = (dG + dG^T) F. Autograd's generic bmm backward
    takes two matmuls (one per operand); the Gram is ~10% of a style step, so this matters."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:  # (B, N, M) -> (B, N, N)
        ctx.save_for_backward(f)
        return torch.bmm(f, f.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # (B, N, N) -> (B, N, M)
        (f,) = ctx.saved_tensors
        sym = grad + grad.transpose(1, 2)  # (B, N, N), symmetric
        if f.stride(1) == 1 and f.shape[1] > 1:
            # f views (B, M, N) memory (channels_last features): give dF the same layout,
            # (F^T S)^T = S F, so the gradient flows back into NHWC without a transposing copy.
            return torch.bmm(f.transpose(1, 2), sym).transpose(1, 2)
        return torch.bmm(sym, f)


def _gram3(f: torch.Tensor) -> torch.Tensor:
    """F F^T of (B, N, M) -> (B, N, N), through the one-matmul backward when a gradient is needed."""
    if f.requires_grad:
        out: torch.Tensor = _Gram.apply(f)
        return out
    return torch.bmm(f, f.transpose(1, 2))


def gram_matrix(features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """G = F F^T per image: (B, C, H, W) -> (B, C, C); unnormalised as in Gatys et al., or
    divided by M_l = H W (`normalize`) so images of different sizes give comparable Grams."""
    b, c, h, w = features.shape
    g = _gram3(flat_channels(features))  # (B, N_l, N_l) from (B, N_l, M_l)
    return g / (h * w) if normalize else g


def flat_channels(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H W) without a copy in either memory format: channels_last
    features (the bf16 CPU path, `stylecore.precision`) give a transposed view of their
    (B, H W, C) memory, which bmm reads as is."""
    b, c, h, w = features.shape
    if c > 1 and not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).reshape(b, h * w, c).transpose(1, 2)
    return features.reshape(b, c, h * w)


def _per_image_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension, (B, ...) -> (B,), in any memory format (no copy)."""
    return x.sum(dim=tuple(range(1, x.dim()))) if x.dim() > 1 else x


def gatys_style_layer_loss(gram: torch.Tensor, target: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The paper's E_l = 1/(4 N_l^2 M_l^2) sum (G - A)^2, per image: (B, C, C) -> (B,)."""
    return (gram - target).pow(2).sum(dim=(1, 2)) / (4.0 * n**2 * m**2)


def gatys_content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's L_content = 1/2 sum (F - P)^2, per image: (B, C, H, W) -> (B,)."""
    return 0.5 * (features - target).pow(2).flatten(1).sum(1)


def relative_sq_error(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-8, energy: torch.Tensor | None = None) -> torch.Tensor:
    """||x - t||^2 / ||t||^2 per image (any shape with batch first) -> (B,); scale-free.
    `energy` is ||t||^2 when already known (fixed targets: computed once, not every step)."""
    num = _per_image_sum((x - target).pow(2))
    den = _per_image_sum(target.pow(2)) if energy is None else energy
    return num / (den + eps)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels: (B, C, H, W) -> (B,)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


# ---------------------------------------------------------------------- moments (mean_std, w2)
def mean_std_stats(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Channel means and standard deviations: (B, C, H, W) -> (B, 2, C) = [mean; std].
    `eps` keeps the std's gradient finite on a constant channel (its variance is 0)."""
    f = flat_channels(features)  # (B, C, N)
    mu = f.mean(2)
    var = (f - mu.unsqueeze(2)).pow(2).mean(2)
    return torch.stack([mu, (var + eps).sqrt()], 1)


def mean_std_loss(stats: torch.Tensor, target: torch.Tensor, energy: torch.Tensor | None = None) -> torch.Tensor:
    """Relative error of (mean, std) statistics, (B, 2, C) x (B, 2, C) -> (B,):
    (||mu - mu_t||^2 + ||s - s_t||^2) / (||mu_t||^2 + ||s_t||^2), i.e. the W2 distance between the
    channel-wise (diagonal) Gaussian fits over the target's second moment."""
    return relative_sq_error(stats, target, energy=energy)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, C) and covariance (B, C, C) of the feature vectors at the H W positions."""
    b, c, h, w = features.shape
    f = flat_channels(features)  # (B, C, N)
    mu = f.mean(2)
    cov = _gram3(f - mu.unsqueeze(2)) / (h * w)  # (B, C, C)
    return mu, cov


@contextlib.contextmanager
def one_lapack_thread(t: torch.Tensor) -> Iterator[None]:
    """Run CPU eigensolvers on one thread. Multi-threaded LAPACK `eigh` is far slower than one
    thread at these sizes on a small machine: a 512x512 float64 `eigh` took 0.03 s on 1 thread and
    0.51 s on 2 threads of this 2-core CPU (16x), which made the w2 loss and metric crawl. GPU
    tensors are left alone. Restores the previous thread count (process-global in torch)."""
    n = torch.get_num_threads()
    if t.device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD matrices (B, C, C) by eigendecomposition (eigenvalues clamped at 0)."""
    with one_lapack_thread(cov):
        evals, evecs = torch.linalg.eigh(cov)  # (B, C), (B, C, C)
    root: torch.Tensor = evals.clamp_min(0).sqrt().unsqueeze(-2)  # (B, 1, C)
    return torch.matmul(evecs * root, evecs.transpose(-1, -2))


def gaussian_w2(
    mu: torch.Tensor,
    cov: torch.Tensor,
    mu_t: torch.Tensor,
    cov_t: torch.Tensor,
    cov_t_sqrt: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Squared Wasserstein-2 distance between N(mu, cov) and the fixed N(mu_t, cov_t), per row:
    ||mu - mu_t||^2 + tr(cov + cov_t - 2 (S cov S)^1/2), S = cov_t^1/2; (B, C), (B, C, C) -> (B,).

    Differentiable in (mu, cov) only (the target is fixed): S is computed once (`cov_t_sqrt`, from
    `psd_sqrt`), and tr((S cov S)^1/2) = sum sqrt(eig(S cov S)). Eigenvalues only (`eigvalsh`)
    have a stable gradient V diag(g) V^T even when they repeat (eigenvectors' would not); they are
    clamped at `eps` * the largest |eigenvalue| before the square root, whose slope is infinite at 0.
    The eigenproblem runs in float64: S cov S is badly conditioned at deep layers."""
    s = psd_sqrt(cov_t.double()) if cov_t_sqrt is None else cov_t_sqrt.double()
    m = s @ cov.double() @ s  # (B, C, C), symmetric PSD up to rounding
    m = 0.5 * (m + m.transpose(-1, -2))
    with one_lapack_thread(m):
        ev = torch.linalg.eigvalsh(m)  # (B, C)
    floor = eps * ev.detach().abs().amax(-1, keepdim=True).clamp_min(1e-300)
    cross = torch.maximum(ev, floor).sqrt().sum(-1)  # tr((S cov S)^1/2), (B,)
    tr = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(cov_t, dim1=-2, dim2=-1).sum(-1)
    d_mu = (mu - mu_t).pow(2).sum(-1)
    return (d_mu + tr - 2 * cross.to(cov.dtype)).clamp_min(0)


def gaussian_energy(mu_t: torch.Tensor, cov_t: torch.Tensor) -> torch.Tensor:
    """E||x||^2 = ||mu_t||^2 + tr(cov_t) of the target Gaussian, (B,): the W2 loss's normaliser."""
    return mu_t.pow(2).sum(-1) + torch.diagonal(cov_t, dim1=-2, dim2=-1).sum(-1)


# ---------------------------------------------------------------------- quantiles (sliced_w, histogram)
def resample_quantiles(q: torch.Tensor, n: int) -> torch.Tensor:
    """A quantile function sampled at Q levels (j + 1/2) / Q, (..., Q), resampled to the n levels
    (i + 1/2) / n by linear interpolation (constant beyond the outermost levels) -> (..., n).

    That is exactly `interpolate(mode="linear", align_corners=False)` (source position
    (i + 1/2) Q / n - 1/2, clamped to [0, Q - 1]); its kernel is ~5x faster than a gather."""
    qn = q.shape[-1]
    if qn == n:
        return q
    flat = q.reshape(1, -1, qn)  # (1, prod(...), Q)
    return nnf.interpolate(flat, size=n, mode="linear", align_corners=False).reshape(*q.shape[:-1], n)


def quantiles(x: torch.Tensor, n_quantiles: int = N_QUANTILES) -> torch.Tensor:
    """Empirical quantile function of the samples along the last dimension at Q fixed levels:
    (..., N) -> (..., Q), sorted."""
    return resample_quantiles(x.sort(-1).values, n_quantiles)


def random_directions(c: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """K unit vectors in R^C, uniformly distributed on the sphere: (K, C), float32 on the CPU."""
    d = torch.randn(k, c, generator=generator)
    norm: torch.Tensor = d.norm(dim=1, keepdim=True)  # (K, 1)
    return d / norm


def project(features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Feature vectors projected on per-row directions: (B, C, H, W) x (B, K, C) -> (B, K, H W)."""
    return torch.bmm(directions.to(features.dtype), flat_channels(features))


def quantile_energy(target_q: torch.Tensor) -> torch.Tensor:
    """Mean squared value of a stored quantile function (B, K, Q) -> (B,): the normaliser of the
    quantile losses (E[p^2] of the target's projections, averaged over directions)."""
    return target_q.pow(2).flatten(1).mean(1)


def sliced_wasserstein(
    features: torch.Tensor, target_q: torch.Tensor, directions: torch.Tensor, energy: torch.Tensor | None = None, eps: float = 1e-12
) -> torch.Tensor:
    """Sliced Wasserstein loss (Heitz et al. 2021), relative, per row -> (B,).

    The output's feature vectors (B, C, H, W) are projected on K unit directions (B, K, C) and
    sorted; the style's sorted projections on the same directions, stored as quantiles (B, K, Q),
    are resampled to the output's H W values. The loss is the mean squared difference over the
    target's mean squared projection. Sorting is a permutation, so the gradient flows to each
    value from the style quantile at its rank: the 1-D optimal transport on every direction."""
    p = project(features, directions).sort(-1).values  # (B, K, N)
    t = resample_quantiles(target_q.to(p.dtype), p.shape[-1])  # (B, K, N)
    den = quantile_energy(target_q) if energy is None else energy
    return (p - t).pow(2).flatten(1).mean(1) / (den + eps)


def histogram_remap(features: torch.Tensor, target_q: torch.Tensor) -> torch.Tensor:
    """Risser et al.'s histogram matching of each channel: every activation replaced by the style's
    quantile at its rank within its channel. (B, C, H, W) x (B, C, Q) -> (B, C, H, W), no gradient."""
    b, c, h, w = features.shape
    with torch.no_grad():
        f = features.reshape(b, c, h * w)
        order = f.argsort(-1)  # (B, C, N): positions in increasing order
        t = resample_quantiles(target_q.to(f.dtype), h * w)  # (B, C, N), increasing
        out = torch.empty_like(f).scatter_(-1, order, t)  # the k-th smallest position gets t[k]
    return out.reshape(b, c, h, w)


def histogram_matching_loss(
    features: torch.Tensor, target_q: torch.Tensor, energy: torch.Tensor | None = None, eps: float = 1e-12
) -> torch.Tensor:
    """Histogram loss of Risser et al. (2017), relative, per row -> (B,): the mean squared distance
    of the activations (B, C, H, W) to their histogram-matched remap (`histogram_remap`, detached),
    over the target's mean squared activation. Per-channel quantiles (B, C, Q) as the target."""
    r = histogram_remap(features, target_q)
    den = quantile_energy(target_q) if energy is None else energy
    return (features - r).pow(2).flatten(1).mean(1) / (den + eps)
