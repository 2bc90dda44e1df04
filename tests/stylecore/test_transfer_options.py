"""Engine options, each checked by an outcome a broken implementation would not produce: style
blend weights, `original_colors` inside a mixed batch, `init=style`, `tv_weight`, average
pooling, several scales, and the content loss from a start far from its optimum.

Real `vgg16-hed` weights, 32-64 px, a few L-BFGS steps (seconds each on 2 CPU cores). The
reference numbers in comments were measured here (2 cores, torch 2.14); the thresholds leave
wide margins around them."""

from __future__ import annotations

import pytest
import torch

from stylecore.images import load_tensor, match_colors, resize_tensor, rgb_to_yiq
from stylecore.losses import total_variation
from stylecore.lpips import load_lpips
from stylecore.params import Params
from stylecore.transfer import Progress, StyleTransfer, TransferJob, output_size, stylize

pytestmark = pytest.mark.slow

SIZE = 32


@pytest.fixture(scope="module")
def images(samples):
    """(content, starry night, the scream) at SIZE px."""
    return (
        load_tensor(samples / "content" / "tubingen.jpg", SIZE),
        load_tensor(samples / "style" / "starry_night.jpg", SIZE),
        load_tensor(samples / "style" / "the_scream.jpg", SIZE),
    )


@pytest.fixture
def base(hed) -> Params:
    return Params(size=SIZE, iterations=10, weights=hed, lpips_weights=hed)


def _mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def test_a_one_zero_blend_equals_the_single_style_run(images, base):
    content, starry, scream = images
    alone = {name: stylize(content, style, base).image for name, style in (("starry", starry), ("scream", scream))}
    assert _mean_abs(alone["starry"], alone["scream"]) > 0.01  # the two styles give different images (0.05)
    one_zero = stylize(content, [starry, scream], base.replace(style_blend=(1.0, 0.0))).image
    zero_one = stylize(content, [starry, scream], base.replace(style_blend=(0.0, 1.0))).image
    torch.testing.assert_close(one_zero, alone["starry"], atol=1e-5, rtol=0)
    torch.testing.assert_close(zero_one, alone["scream"], atol=1e-5, rtol=0)
    # And the weights are used in between: an even blend is neither style alone.
    even = stylize(content, [starry, scream], base.replace(style_blend=(0.5, 0.5))).image
    assert _mean_abs(even, alone["starry"]) > 1e-3 and _mean_abs(even, alone["scream"]) > 1e-3


def test_original_colors_keeps_each_rows_content_chroma_in_a_mixed_batch(images, base):
    """Three rows in ONE batch: with original colours, without, and with again on a mirrored
    content (same size, other colours at each pixel). The rows with it take their own content's
    chroma (YIQ I, Q) and the stylised luminance Y; the row without keeps the style's colours."""
    content, starry, _ = images
    mirrored = content.flip(-1)
    p = base.replace(style_weight=1e4)  # strong style: colours clearly change without the option
    jobs = [
        TransferJob(content, (starry,), p.replace(original_colors=True)),
        TransferJob(content, (starry,), p),
        TransferJob(mirrored, (starry,), p.replace(original_colors=True)),
    ]
    with_colors, without, mirrored_with = (rgb_to_yiq(r.image[None]) for r in StyleTransfer("cpu").run(jobs))
    yiq, yiq_mirrored = rgb_to_yiq(content), rgb_to_yiq(mirrored)
    assert _mean_abs(with_colors[:, 1:], yiq[:, 1:]) < 1e-3  # 1.5e-5: the content's chroma
    assert _mean_abs(mirrored_with[:, 1:], yiq_mirrored[:, 1:]) < 1e-3  # its own content's, not row 0's
    assert _mean_abs(without[:, 1:], yiq[:, 1:]) > 5e-3  # 0.012: the style's colours, untouched
    assert _mean_abs(with_colors[:, :1], without[:, :1]) < 2e-3  # 5e-6: the same stylised luminance
    assert _mean_abs(without[:, :1], yiq[:, :1]) > 1e-2  # 0.04: and it was stylised


def test_init_style_starts_from_the_style_image_and_moves_toward_the_content(images, base):
    content, starry, _ = images
    hw = tuple(content.shape[-2:])
    start = stylize(content, starry, base.replace(init="style", iterations=0))  # no step: the initial image
    torch.testing.assert_close(start.image, resize_tensor(starry, hw)[0], atol=1e-6, rtol=0)
    from_content = stylize(content, starry, base.replace(init="content", iterations=0)).image
    torch.testing.assert_close(from_content, content[0], atol=1e-6, rtol=0)
    # From there the objective falls, the content term included (style_weight 10: it matters).
    p = base.replace(init="style", style_weight=10.0)
    first, moved = stylize(content, starry, p.replace(iterations=0)), stylize(content, starry, p)
    assert moved.image.shape == start.image.shape
    assert moved.losses["total"] < 0.6 * first.losses["total"], (first.losses, moved.losses)  # 2.5 -> 0.83
    assert moved.losses["content"] < 0.9 * first.losses["content"], (first.losses, moved.losses)  # 0.50 -> 0.38


def test_init_color_matched_starts_in_the_styles_colours_and_keeps_the_content(images, base):
    content, starry, scream = images
    start = stylize(content, starry, base.replace(init="color_matched", iterations=0)).image  # (3, H, W)
    torch.testing.assert_close(start[None], match_colors(content, [starry]), atol=1e-6, rtol=0)
    # Nearer the style's colours than the content is, and still the content's picture.
    assert _mean_abs(start.mean((1, 2)), starry[0].mean((1, 2))) < 0.5 * _mean_abs(content[0].mean((1, 2)), starry[0].mean((1, 2)))
    assert torch.corrcoef(torch.stack([rgb_to_yiq(start[None])[0, 0].flatten(), rgb_to_yiq(content)[0, 0].flatten()]))[0, 1] > 0.8
    # A blend starts from the blend's colours: the weights move the start toward the heavier style.
    toward_scream = stylize(content, (starry, scream), base.replace(init="color_matched", iterations=0, style_blend=(1.0, 3.0))).image
    torch.testing.assert_close(toward_scream[None], match_colors(content, [starry, scream], (1.0, 3.0)), atol=1e-6, rtol=0)
    assert not torch.allclose(toward_scream, start, atol=1e-2)


def test_tv_weight_lowers_total_variation(images, base):
    content, starry, _ = images
    plain = stylize(content, starry, base).image
    smooth = stylize(content, starry, base.replace(tv_weight=1e5)).image
    tv_plain, tv_smooth = float(total_variation(plain[None])), float(total_variation(smooth[None]))
    assert tv_smooth < 0.5 * tv_plain, (tv_plain, tv_smooth)  # 48 px, 20 steps: 0.026 -> 0.0016


def test_average_pooling_runs_and_differs_from_max(images, base):
    content, starry, _ = images
    p_avg = base.replace(pooling="avg")
    start = stylize(content, starry, p_avg.replace(iterations=0))
    avg = stylize(content, starry, p_avg)
    mx = stylize(content, starry, base)
    assert avg.image.shape == mx.image.shape == content[0].shape
    assert torch.isfinite(avg.image).all() and 0 <= float(avg.image.min()) and float(avg.image.max()) <= 1
    assert avg.losses["style"] < 0.8 * start.losses["style"], (start.losses, avg.losses)  # it optimises
    assert _mean_abs(avg.image, mx.image) > 0.01  # 0.05: another network, another image


def test_three_scales_run_coarse_to_fine_and_give_the_output_size(samples, hed):
    content = load_tensor(samples / "content" / "tubingen.jpg")  # any size: the engine resizes
    # 64 px in 3 scales: 16, 32, 64 px long sides; layers shallow enough for a 12 px short side.
    p = Params(
        size=64,
        scales=3,
        iterations=6,
        weights=hed,
        lpips_weights=hed,
        style_layers=("conv1_1", "conv2_1", "conv3_1"),
        content_layers=("conv3_2",),
    )
    seen: list[Progress] = []
    r = stylize(content, load_tensor(samples / "style" / "starry_night.jpg", 64), p, progress=seen.append)
    assert tuple(r.image.shape) == (3, *output_size(tuple(content.shape[-2:]), 64))
    assert {(s.scale, s.n_scales) for s in seen} == {(0, 3), (1, 3), (2, 3)}
    assert p.iterations < r.steps <= 3 * p.iterations  # steps at more than one scale


def test_content_loss_from_noise_falls_and_the_image_approaches_the_content(images, base, hed):
    """A start far from the optimum (noise), the content loss alone (style_weight 0): a broken
    content loss cannot pass this, unlike a run from the content image, which starts optimal."""
    content, starry, _ = images
    p = base.replace(init="noise", style_weight=0.0, seed=3, iterations=30)
    start = stylize(content, starry, p.replace(iterations=0))
    end = stylize(content, starry, p)
    assert end.losses["content"] < 0.1 * start.losses["content"], (start.losses, end.losses)  # 0.47 -> 0.008
    lpips = load_lpips(hed)
    with torch.no_grad():
        d_start, d_end = float(lpips(start.image[None], content)), float(lpips(end.image[None], content))
    assert d_end < 0.8 * d_start, (d_start, d_end)  # LPIPS to the content 0.43 -> 0.27
