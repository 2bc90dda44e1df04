"""The coarse-to-fine plan (`stylecore.schedule.scale_plan`)."""

from __future__ import annotations

import math

import pytest

from stylecore.params import Params
from stylecore.schedule import ScaleStep, scale_plan, scale_sides, split_iterations


def test_single_scale_is_the_target_size_with_every_iteration() -> None:
    assert scale_plan(Params(size=256, iterations=300, scales=1)) == [ScaleStep(256, 300)]


def test_auto_pyramid_at_256_goes_128_181_256_with_most_steps_coarse() -> None:
    plan = scale_plan(Params(size=256, iterations=350, scales=0))
    assert plan == [ScaleStep(128, 200), ScaleStep(181, 100), ScaleStep(256, 50)]


@pytest.mark.parametrize("size", [64, 100, 127, 128, 181, 256, 300, 512, 1000, 2048, 8192])
def test_auto_pyramid_ends_at_the_size_in_steps_of_about_sqrt2(size: int) -> None:
    sides = scale_sides(size, 0)
    assert sides[-1] == size
    assert sides == sorted(set(sides))
    assert sides[0] >= min(size, 64)
    assert sides[0] <= 128 or len(sides) == 4
    assert len(sides) <= 4
    for a, b in zip(sides, sides[1:]):
        assert 1.3 < b / a < 1.6  # ~sqrt(2)


def test_small_outputs_start_at_half_their_size_or_run_single_scale() -> None:
    assert scale_sides(128, 0) == [64, 91, 128]
    assert scale_sides(100, 0) == [100]  # half would be below 64 px
    assert scale_sides(40, 0) == [40]


def test_large_outputs_keep_four_scales_ending_at_the_size() -> None:
    assert scale_sides(512, 0) == [181, 256, 362, 512]
    assert scale_sides(2048, 0) == [724, 1024, 1448, 2048]


def test_explicit_scales_halve_the_long_side_coarse_to_fine() -> None:
    assert scale_sides(256, 1) == [256]
    assert scale_sides(256, 3) == [64, 128, 256]
    assert scale_sides(99, 2) == [50, 99]
    assert scale_sides(40, 3) == [16, 20, 40]
    assert scale_sides(20, 3) == [16, 20]  # the 16 px floor merges scales


@pytest.mark.parametrize("total", [0, 1, 2, 7, 100, 350, 1001])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_split_sums_to_the_budget_and_halves_coarse_to_fine(total: int, n: int) -> None:
    parts = split_iterations(total, n)
    assert sum(parts) == total and len(parts) == n
    for coarse, fine in zip(parts, parts[1:]):
        assert coarse >= fine  # never fewer steps at a coarser scale
        assert math.isclose(coarse, 2 * fine, abs_tol=2)


def test_auto_plan_steps_sum_to_iterations_and_end_at_size() -> None:
    for p in (
        Params(size=512, iterations=300, scales=0),
        Params(size=96, iterations=40, scales=0),
        Params(size=256, iterations=0, scales=0),
    ):
        plan = scale_plan(p)
        assert sum(s.iterations for s in plan) == p.iterations
        assert plan[-1].long_side == p.size


def test_explicit_scales_take_iterations_at_every_scale_as_before() -> None:
    assert scale_plan(Params(size=256, iterations=40, scales=3)) == [ScaleStep(64, 40), ScaleStep(128, 40), ScaleStep(256, 40)]
    assert scale_plan(Params(size=48, iterations=0, scales=2)) == [ScaleStep(24, 0), ScaleStep(48, 0)]


def test_bounds_check_the_auto_pyramid_s_coarsest_scale() -> None:
    from stylecore.params import image_side_problems

    # 10:1 at 256: single scale gives a 25 px short side; the auto pyramid's 128 px scale only 13 px (< 16 for conv5_1).
    assert image_side_problems(Params(size=256, scales=1), (100, 1000)) == []
    ((field, msg),) = image_side_problems(Params(size=256, scales=0), (100, 1000))
    assert field == "size" and "coarsest scale" in msg


def test_a_print_size_row_starts_with_one_scale_at_coarse_side_or_below() -> None:
    # Default coarse_side 1024: 2048 px in one scale would only move fine texture.
    assert scale_plan(Params(size=2048, iterations=8)) == [ScaleStep(1024, 8), ScaleStep(2048, 8)]
    assert scale_sides(4096, 1, 1024) == [1024, 4096]  # one extra scale, not a ladder
    assert scale_sides(1100, 1, 1024) == [550, 1100]
    assert scale_sides(2048, 2, 1024) == [1024, 2048]  # already coarse enough: unchanged
    assert scale_sides(1024, 1, 1024) == [1024]
    assert scale_sides(8192, 0, 1024) == [1024, 2896, 4096, 5793, 8192]


def test_coarse_side_leaves_small_rows_alone_and_zero_turns_it_off() -> None:
    for size in (64, 256, 512, 1000, 1024):
        assert scale_plan(Params(size=size)) == [ScaleStep(size, Params().iterations)]
    assert scale_plan(Params(size=2048, iterations=8, coarse_side=0)) == [ScaleStep(2048, 8)]
    assert scale_plan(Params(size=2048, iterations=8, coarse_side=512)) == [ScaleStep(512, 8), ScaleStep(2048, 8)]
    # scales=0 gives the extra scale its share of the row's budget.
    plan = scale_plan(Params(size=4096, iterations=150, scales=0))
    assert plan[0].long_side == 1024 and sum(s.iterations for s in plan) == 150


def test_coarse_side_is_validated_and_named_in_errors() -> None:
    from stylecore.params import ParamError, image_side_problems

    with pytest.raises(ParamError, match="coarse_side.*use 0 \\(never\\) or at least 64"):
        Params(size=2048, coarse_side=32)
    # A 16:1 panorama at 2048 px: the 64-px coarse scale leaves a 4-px short side, too small for conv5_1.
    ((field, msg),) = image_side_problems(Params(size=2048, coarse_side=64), (128, 2048))
    assert field == "size" and "set coarse_side=0 (this 64-px first scale comes from coarse_side 64)" in msg
    assert image_side_problems(Params(size=2048, coarse_side=0), (128, 2048)) == []


def test_rows_with_different_coarse_sides_never_share_a_batch() -> None:
    from stylecore.transfer import batch_key

    hw = (1536, 2048)
    assert batch_key(Params(size=2048), hw) != batch_key(Params(size=2048, coarse_side=0), hw)
