"""The memory model: exact saved-tensor accounting of the VGG forward, monotonic in size and
batch, ~H x W at large sizes, tile planning under a budget. Predicted against measured peak RSS is a benchmark (benchmarks/bench_memory.py): as a test its
high-water-mark measurement was not reliable (CI: 0.49 GB measured against 1.30 GB predicted at 768 px; 1.31 GB locally)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylecore import memory
from stylecore.params import Params
from stylecore.vgg import VGGFeatures

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "arch,layers", [("vgg16", ("conv4_2", "conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")), ("vgg19", ("relu3_1", "pool2"))]
)
def test_forward_saved_bytes_matches_autograd(arch: str, layers: tuple[str, ...]) -> None:
    """What autograd saves in a real VGG forward (random weights: only shapes matter), counted by a
    saved-tensors hook, plus the tapped outputs, equals the model's count."""
    vgg = VGGFeatures(arch)
    params = {t.untyped_storage().data_ptr() for t in list(vgg.parameters()) + list(vgg.buffers())}
    for h, w in ((48, 64), (96, 80)):
        x = torch.rand(1, 3, h, w, requires_grad=True)
        saved: dict[int, int] = {}
        keep: list[torch.Tensor] = []

        def pack(t: torch.Tensor, keep: list[torch.Tensor] = keep, saved: dict[int, int] = saved) -> torch.Tensor:
            keep.append(t)  # alive until the end: no storage is reused and counted twice
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                saved[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            feats = vgg(x, layers)
        tapped = sum(f.numel() * 4 for f in feats.values() if f.untyped_storage().data_ptr() not in saved)
        assert sum(saved.values()) + tapped == memory.forward_saved_bytes(arch, layers, h, w)[0]


def test_monotonic_in_size_and_batch_and_area_scaling() -> None:
    p = Params(weights="vgg16-hed")
    sizes = [64, 128, 256, 512, 1024, 2048]
    totals = [memory.estimate(p, (s, s)).total for s in sizes]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    for size in (256, 1024):
        batches = [memory.estimate(p, (size, size), batch=b).per_step for b in (1, 2, 4)]
        assert batches[0] < batches[1] < batches[2]
        assert batches[2] == pytest.approx(4 * batches[0], rel=0.01)  # everything but the models is per row
    # At large sizes the per-row bytes grow with H x W (a fixed part of targets aside).
    a, b = memory.estimate(p, (1024, 1024)).per_step, memory.estimate(p, (2048, 2048)).per_step
    assert b / a == pytest.approx(4.0, rel=0.03)
    tall = memory.estimate(p, (2048, 1024)).per_step
    assert tall == pytest.approx(memory.estimate(p, (1024, 2048)).per_step, rel=0.01)


def test_parts_follow_the_params() -> None:
    base = Params(weights="vgg16-hed", iterations=300)
    est = memory.estimate(base, (512, 512))
    # L-BFGS keeps up to 50 pairs of image-sized tensors; Adam two moments.
    assert memory.estimate(base.replace(optimizer="adam"), (512, 512)).images < est.images
    assert memory.estimate(base.replace(iterations=5), (512, 512)).images < est.images
    # LPIPS content adds a VGG-16 pass to relu5_3 on a backbone of its own.
    lp = memory.estimate(base.replace(content_loss="lpips", lpips_weights="vgg16-imagenet"), (512, 512))
    assert lp.activations > est.activations and lp.models > est.models
    # A shallow style loss needs a shorter forward.
    shallow = memory.estimate(base.replace(style_layers=("conv1_1",), content_layers=("conv2_1",)), (512, 512))
    assert shallow.activations < 0.7 * est.activations
    assert memory.estimate(base.replace(style_loss="sliced_w"), (512, 512)).activations > est.activations
    assert memory.estimate(base, (512, 512), device="cuda").slack < est.slack


def test_plan_tile_fits_the_budget() -> None:
    p = Params(weights="vgg16-hed", size=2048, iterations=8)
    whole = memory.estimate(p, (2048, 1536)).total
    assert memory.plan_tile(p, whole + 1, (2048, 1536)) == 0  # fits in one piece
    for budget in (1 * memory.GIB, 2 * memory.GIB, 3 * memory.GIB):
        tile = memory.plan_tile(p, budget, (2048, 1536))
        assert 64 <= tile < 2048 and tile % memory.TILE_MULTIPLE == 0
        assert memory.estimate_tiled(p, (2048, 1536), tile).total <= budget
        assert memory.estimate_tiled(p, (2048, 1536), tile + 64).total > budget * 0.9  # not needlessly small
    assert memory.plan_tile(p.replace(tile_size=0), memory.GIB) == 0  # off
    assert memory.plan_tile(p.replace(tile_size=512), memory.GIB) == 512
    assert memory.plan_tile(p.replace(size=256, tile_size=512), memory.GIB) == 0  # the image fits one tile


def test_budgets_and_byte_parsing() -> None:
    assert memory.parse_bytes("6G") == memory.parse_bytes("6GiB") == memory.parse_bytes("6gb") == 6 * 2**30
    assert memory.parse_bytes("512M") == 512 * 2**20 and memory.parse_bytes("1000") == 1000
    for bad in ("lots", "-1G", "0", "nanG"):
        with pytest.raises(ValueError, match="size|bytes"):
            memory.parse_bytes(bad)
    assert 0 < memory.default_budget("cpu", workers=2) < memory.default_budget("cpu", workers=1)
    assert memory.tile_budget(100 * memory.GIB, "cpu") == memory.CPU_TILE_BUDGET
    assert memory.tile_budget(100 * memory.GIB, "cuda") == 100 * memory.GIB
    assert memory.fmt_bytes(3 * 2**30) == "3.00 GiB" and memory.fmt_bytes(5 * 2**20) == "5 MiB"
