"""Mergeable statistics (`stylecore.losses.sketch`): moments and quantile sketches of tiles merge
into the whole set's, exactly where the summary keeps every sample."""

from __future__ import annotations

import torch

from stylecore.losses import quantiles
from stylecore.losses import sketch as S


def _feats(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def test_merged_moments_are_the_whole_sets_mean_covariance_and_gram():
    f = _feats(0, 2, 5, 12, 10)  # (B, C, H, W)
    parts = [f[..., :5, :], f[..., 5:, :4], f[..., 5:, 4:]]  # uneven pieces
    acc = S.moments(parts[0])
    for p in parts[1:]:
        acc = S.merge_moments(acc, S.moments(p))
    x = f.flatten(2).double()  # (B, C, N)
    mu = x.mean(2)
    xc = x - mu.unsqueeze(2)
    assert acc[0].item() == 120
    tol = {"rtol": 2e-6, "atol": 1e-6}  # each piece's sums are float32 (as a whole image's statistics are)
    torch.testing.assert_close(acc[1], mu, **tol)
    torch.testing.assert_close(S.covariance(acc), xc @ xc.transpose(1, 2) / 120, **tol)
    torch.testing.assert_close(S.second_moment(acc), x @ x.transpose(1, 2) / 120, **tol)
    diag = S.merge_moments(S.moments(parts[0], full=False), S.moments(f[..., 5:, :], full=False))
    torch.testing.assert_close(S.covariance(diag), xc.pow(2).mean(2), **tol)


def test_a_sketch_reads_the_quantiles_of_its_samples_and_merging_uncompressed_ones_is_exact():
    x = _feats(1, 1, 3, 700)  # (B, K, N)
    torch.testing.assert_close(S.read_sketch(S.sketch(x), 256), quantiles(x, 256))
    a, b = S.sketch(x[..., :300]), S.sketch(x[..., 300:])  # mass 1 each: every sample kept
    merged = S.merge_sketches(a, b)
    torch.testing.assert_close(S.read_sketch(merged, 256), quantiles(x, 256))


def test_compressed_sketches_stay_within_their_resolution():
    x = _feats(2, 1, 4, 20_000)
    parts = [S.sketch(x[..., i : i + 5000], points=512) for i in range(0, 20_000, 5000)]  # compressed: 5000 > 512
    acc = parts[0]
    for p in parts[1:]:
        acc = S.merge_sketches(acc, p, points=512)
    assert acc[0].shape[-1] == 512  # bounded whatever the sample count
    got, want = S.read_sketch(acc, 256), quantiles(x, 256)
    # interior levels: within a small fraction of the spread (the tails move most)
    err = (got - want)[..., 8:-8].abs().max() / x.std()
    assert err < 0.02, err
