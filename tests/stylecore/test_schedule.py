"""The coarse-to-fine plan (`stylecore.schedule.scale_plan`)."""

from __future__ import annotations

from stylecore.params import Params
from stylecore.schedule import ScaleStep, scale_plan


def test_single_scale_is_the_target_size_with_every_iteration() -> None:
    assert scale_plan(Params(size=256, iterations=300, scales=1)) == [ScaleStep(256, 300)]


def test_scales_halve_the_long_side_coarse_to_fine() -> None:
    plan = scale_plan(Params(size=256, iterations=40, scales=3))
    assert [s.long_side for s in plan] == [64, 128, 256]
    assert [s.iterations for s in plan] == [40, 40, 40]


def test_odd_sizes_round_and_the_last_scale_is_the_size() -> None:
    plan = scale_plan(Params(size=99, iterations=5, scales=2))
    assert [s.long_side for s in plan] == [50, 99]  # round(49.5) = 50 (banker's: 50 is even)


def test_zero_iterations_plan_keeps_the_sizes() -> None:
    assert scale_plan(Params(size=48, iterations=0, scales=2)) == [ScaleStep(24, 0), ScaleStep(48, 0)]
