"""What the engine reports about each row: history, steps per scale, snapshots, why it stopped."""

from __future__ import annotations

import time

import pytest
import torch

from stylecore.ema import EMA
from stylecore.images import resize_tensor
from stylecore.loop import CONVERGENCE_WINDOW
from stylecore.params import Params
from stylecore.transfer import Snapshot, StyleTransfer, TransferJob
from tests.stylecore.test_transfer import batch_invariant_kernels

LAYERS = dict(weights="random", style_layers=("relu1_1", "relu2_1"), content_layers=("relu2_2",))


def _job(seed: int = 0, **changes) -> TransferJob:
    g = torch.Generator().manual_seed(seed)
    content, style = torch.rand(1, 3, 24, 32, generator=g), torch.rand(1, 3, 30, 30, generator=g)
    p = Params(size=32, iterations=4, scales=2, seed=seed, **LAYERS).replace(**changes)
    return TransferJob(content, (style,), p)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_history_has_one_value_per_step_and_scale_steps_add_up(optimizer):
    snaps: list[Snapshot] = []
    r = StyleTransfer("cpu").run([_job(optimizer=optimizer, snapshot_every=3, tv_weight=0.5)], snapshot=snaps.append)[0]
    assert r.stopped == "cap" and r.scale_steps == [4, 4] and r.steps == 8
    assert set(r.history) == {"content", "style", "tv", "total"}
    assert all(len(v) == r.steps for v in r.history.values())
    p = Params(**LAYERS)
    for k in range(r.steps):  # the total is the weighted sum of the unweighted terms
        c, s, t = (r.history[n][k] for n in ("content", "style", "tv"))
        assert r.history["total"][k] == pytest.approx(p.content_weight * c + p.style_weight * s + 0.5 * t, rel=1e-5)
    assert r.history["total"][-1] == pytest.approx(r.losses["total"], rel=1e-6)  # the last step: the returned image
    assert r.history["total"][3] < r.history["total"][0]  # the loss fell over the first scale
    # snapshots every 3 steps of the row, at the size of the scale they were taken at
    assert [(s.row, s.step) for s in snaps] == [(0, 3), (0, 6)]
    assert snaps[0].image.shape == (3, 12, 16) and snaps[1].image.shape == (3, 24, 32)
    assert all(s.image.device.type == "cpu" and 0 <= s.image.min() and s.image.max() <= 1 for s in snaps)


@pytest.mark.parametrize("batch_invariant", [False, True])
def test_snapshot_rows_are_indices_in_jobs(batch_invariant):
    jobs = [_job(0, snapshot_every=2, scales=1), _job(1, snapshot_every=0, scales=1), _job(2, snapshot_every=4, scales=1)]
    snaps: list[Snapshot] = []
    StyleTransfer("cpu", batch_invariant=batch_invariant).run(jobs, snapshot=snaps.append)
    assert sorted((s.row, s.step) for s in snaps) == [(0, 2), (0, 4), (2, 4)]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_passed_deadline_stops_rows_as_timeout_at_the_output_size(optimizer):
    jobs = [_job(0, optimizer=optimizer), _job(1, optimizer=optimizer)]
    res = StyleTransfer("cpu").run(jobs, deadline=time.monotonic())
    for r in res:
        assert r.stopped == "timeout" and r.steps == 1 and r.scale_steps == [1]  # the finer scale never ran
        assert r.image.shape == (3, 24, 32) and len(r.history["total"]) == 1
    far = StyleTransfer("cpu").run(jobs[:1], deadline=time.monotonic() + 3600)[0]
    assert far.stopped == "cap" and far.steps == 8


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,tol,cap", [("lbfgs", 5e-2, 100), ("adam", 5e-2, 200)])
def test_a_row_with_tol_converges_before_the_cap_and_records_it(optimizer, tol, cap):
    r = StyleTransfer("cpu").run([_job(0, optimizer=optimizer, iterations=cap, scales=1, tol=tol)])[0]
    w = CONVERGENCE_WINDOW
    assert r.stopped == "converged" and 2 * w <= r.steps < cap and r.scale_steps == [r.steps]
    h = r.history["total"]
    assert len(h) == r.steps

    def met(k: int) -> bool:  # the window test after step k (1-based) on the recorded losses
        old, new = min(h[k - 2 * w : k - w]), min(h[k - w : k])
        return old - new <= tol * abs(old)

    assert met(r.steps) and not any(met(k) for k in range(2 * w, r.steps))  # it stopped at the first step that met it


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,tol,cap", [("lbfgs", 2e-1, 60), ("adam", 1e-1, 80)])
def test_a_row_converging_early_leaves_its_batch_mate_as_alone(optimizer, tol, cap):
    """Row 0 converges early and retires; row 1 (tol 0) goes on: bitwise its lone run (with
    batch-invariant kernels, as for every batched row), and row 0 is bitwise its own lone run."""
    jobs = [_job(0, optimizer=optimizer, iterations=cap, scales=1, tol=tol), _job(1, optimizer=optimizer, iterations=cap, scales=1)]
    with batch_invariant_kernels():
        batched = StyleTransfer("cpu").run(jobs)
        alone = [StyleTransfer("cpu").run([j])[0] for j in jobs]
    assert batched[0].stopped == "converged" and batched[0].steps < cap
    assert batched[1].stopped == "cap" and batched[1].steps == cap
    for b, a in zip(batched, alone):
        assert torch.equal(b.image, a.image) and b.steps == a.steps and b.history == a.history and b.stopped == a.stopped


@pytest.mark.slow
def test_convergence_ends_a_coarse_scale_and_the_row_goes_on_to_the_next():
    r = StyleTransfer("cpu").run([_job(0, iterations=100, scales=2, tol=5e-2)])[0]
    assert len(r.scale_steps) == 2 and r.scale_steps[0] < 100 and r.scale_steps[1] >= 1
    assert r.steps == sum(r.scale_steps) == len(r.history["total"])


def test_ema_of_constant_and_geometric_inputs():
    e = EMA(torch.full((2,), 4.0), 0.9)
    assert torch.allclose(e.get(), torch.full((2,), 4.0))  # bias-corrected: the first value itself
    for _ in range(5):
        e.update(torch.full((2,), 4.0))
    assert torch.allclose(e.get(), torch.full((2,), 4.0))
    e = EMA(torch.zeros(1), 0.5)
    e.update(torch.ones(1))  # weights 0.5 (old) and 1 (new), normalised: 1 / 1.5
    assert torch.allclose(e.get(), torch.tensor([1 / 1.5]))


def test_adam_ema_returns_the_bias_corrected_average_of_the_iterates():
    """The raw Adam trajectory is the same with or without `ema` (the average does not feed back):
    the ema run's image is the average of the ema=0 run's iterates, which its snapshots give."""
    job = _job(0, optimizer="adam", iterations=10, scales=1, snapshot_every=1)
    snaps: list[Snapshot] = []
    raw = StyleTransfer("cpu").run([job], snapshot=snaps.append)[0]
    d = 0.8
    avg = StyleTransfer("cpu").run([TransferJob(job.content, job.styles, job.params.replace(ema=d))])[0]
    iterates = [resize_tensor(job.content, (24, 32))[0]] + [s.image for s in snaps]  # steps 0..10
    n = len(iterates) - 1
    want = sum((1 - d) * d ** (n - k) * it for k, it in enumerate(iterates)) / (1 - d ** (n + 1))
    assert torch.allclose(avg.image, want, atol=1e-5)
    assert (avg.image - raw.image).abs().mean() > 1e-3  # the average is not the last iterate
    assert avg.steps == raw.steps == 10 and avg.stopped == "cap"
