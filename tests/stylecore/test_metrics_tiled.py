"""Metrics of large outputs measured in tiles (`Distance` over `max_pixels`) against one pass, and
outputs within the cap measured exactly as before (one pass, the reference functions' values)."""

from __future__ import annotations

import pytest
import torch

from stylecore import evaluation as E
from stylecore import metrics as M
from stylecore.images import load_tensor, resize_tensor
from stylecore.lpips import load_lpips
from stylecore.weights import load_vgg

SCALARS = ("lpips_style", "lpips_content", "gram_style", "lpips_content_gray", "w2_style", "hist_style", "cfsd")


@pytest.fixture(scope="module")
def trio(hed, content_path, style_path):
    content = load_tensor(content_path.read_bytes(), 128)  # (1, 3, 96, 128)
    style = load_tensor(style_path.read_bytes(), 160)
    output = (0.6 * content + 0.4 * resize_tensor(style, content.shape[-2:])).clamp(0, 1)  # a plausible "stylised" image
    return output, style, content


@pytest.mark.slow
def test_outputs_within_the_cap_are_measured_as_before(hed, trio):
    """At the cap (H x W == max_pixels) the one-pass path runs: bitwise what an uncapped Distance
    gives, and the values of the unchanged reference functions (LPIPS pair, Gram distance, W2)."""
    output, style, content = trio
    lp = load_lpips(hed, "cpu")
    hw = output.shape[-2] * output.shape[-1]
    at_cap, uncapped = M.Distance(lp, max_pixels=hw)(output, style, content), M.Distance(lp, max_pixels=10**12)(output, style, content)
    for k in SCALARS:
        assert torch.equal(getattr(at_cap, k), getattr(uncapped, k)), k
    d_style, d_content = M.distance(output, style, content, lp)
    torch.testing.assert_close(at_cap.lpips_style, d_style, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(at_cap.lpips_content, d_content, rtol=1e-5, atol=1e-6)
    vgg, _ = load_vgg(hed, "max", "cpu")
    s_r = M.match_size(style, output)
    torch.testing.assert_close(at_cap.gram_style, M.gram_distance(output, s_r, vgg), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        fo, fs = vgg(output, M.DEFAULT_GRAM_LAYERS), vgg(s_r, M.DEFAULT_GRAM_LAYERS)
    w2 = torch.stack([E.gaussian_w2(fo[n], fs[n]) for n in M.DEFAULT_GRAM_LAYERS]).mean(0).float()
    torch.testing.assert_close(at_cap.w2_style, w2, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_tiled_metrics_match_one_pass(hed, trio):
    """Forced tiles of 64 px (4 of them, halo 96 px) against one pass: LPIPS, Gram and W2 within
    1e-3 relative (the halo covers the receptive field of every tap but relu5_3's outer rim;
    measured < 1e-5 at 512 px with 128 px tiles); CFSD and the colour distance are computed on the
    same <= 512 px copy either way (equal here: the output is under 512 px)."""
    output, style, content = trio
    lp = load_lpips(hed, "cpu")
    whole = M.Distance(lp)(output, style, content)
    tiled = M.Distance(lp, max_pixels=1, tile=64)(output, style, content)
    for k in SCALARS:
        a, b = getattr(whole, k), getattr(tiled, k)
        assert b.shape == a.shape and b.dtype == a.dtype, k
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6, msg=k)
    assert set(tiled.rows()[0]["style_layers_metrics"]["gram"]) == set(M.DEFAULT_GRAM_LAYERS)
