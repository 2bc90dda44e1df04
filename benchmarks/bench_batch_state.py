"""Per-row optimiser state against the former shared state, on a batch of 4 (a script, not a test).

    python benchmarks/bench_batch_state.py [--sizes 128 256] [--steps 20] [--repeats 2] [--threads 2]

A batch of 4 rows (tubingen + starry_night, `vgg16-hed`, style_weight 3, 10, 30, 100, L-BFGS)
runs in three modes:

- `shared`: the engine's former loop (kept here only): ONE torch.optim.LBFGS over the stacked
  (4, 3, H, W) image and the summed loss: one history, line search and step size for the batch.
- `per-row`: today's engine: batched forward + backward, per-row L-BFGS state (`BatchedLBFGS`).
- `invariant`: `StyleTransfer(batch_invariant=True)`: the rows one at a time.

Per mode: time per step (the optimisation loop of one scale over its steps; targets and set-up
left out; modes interleaved so load from other processes hits all alike; the minimum over
repeats is the least disturbed run, the one to compare on a shared machine; median as well),
the batched VGG passes and the row-passes (rows x passes) it took, and the time per row-pass.
Then each row alone (the same mode's engine on a batch of one) against the same row in the batch:
mean and max absolute pixel difference (of 255). Target: per-row <= 1.05x shared per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from stylecore.images import load_tensor
from stylecore.optim import BatchedLBFGS, LBFGSConfig
from stylecore.params import Params
from stylecore.transfer import LBFGS_CHUNK, StyleTransfer, TransferJob, _Objective, output_size

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"
WEIGHTS = "vgg16-hed"
STYLE_WEIGHTS = (3, 10, 30, 100)


class Timed(StyleTransfer):
    """The engine, timing `_optimize` and counting the VGG passes (and rows) inside it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seconds, self.cpu, self.passes, self.row_passes, self._on = 0.0, 0.0, 0, 0, False

    def count(self, module: torch.nn.Module, args: tuple) -> None:
        if self._on:
            self.passes += 1
            self.row_passes += args[0].shape[0]

    def _optimize(self, *args, **kwargs):
        self._on, t, c = True, time.perf_counter(), time.process_time()
        try:
            return self._loop(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.cpu += time.process_time() - c
            self._on = False

    def _loop(self, *args, **kwargs):
        return super()._optimize(*args, **kwargs)


class Shared(Timed):
    """The former loop: one torch.optim.LBFGS over the whole stack (chunks of LBFGS_CHUNK
    iterations, clamp between chunks), the same per-row losses."""

    def _loop(self, jobs, x, vgg, content_loss, style_loss, progress, scale, n_scales, done, total):
        p = jobs[0].params
        objective = _Objective(jobs, vgg, content_loss, style_loss)
        x = x.detach().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=p.learning_rate, max_iter=LBFGS_CHUNK, history_size=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = objective(x)["total"].sum()
            loss.backward()
            return loss

        steps = 0
        while steps < p.iterations:
            chunk = min(LBFGS_CHUNK, p.iterations - steps)
            opt.param_groups[0].update(max_iter=chunk, max_eval=chunk * 4)
            state = opt.state[x]
            before, evals_before = state.get("n_iter", 0), state.get("func_evals", 0)
            opt.step(closure)
            taken = state["n_iter"] - before
            steps += taken
            if taken < chunk and state["func_evals"] - evals_before < chunk * 4:
                break
            with torch.no_grad():
                x.clamp_(0, 1)
        with torch.no_grad():
            final = objective(x)
        return x.detach(), [steps] * x.shape[0], final


def optimiser_only(hw: tuple[int, int], steps: int, repeats: int = 3) -> str:
    """The optimisers' own work per evaluation (no VGG): torch.optim.LBFGS on the stack against
    BatchedLBFGS, on a cheap per-row objective of the batch's shape (4, 3, H, W)."""
    g = torch.Generator().manual_seed(0)
    x0, target = torch.rand(4, 3, *hw, generator=g), torch.rand(4, 3, *hw, generator=g)
    scale = torch.tensor([3.0, 10.0, 30.0, 100.0]).view(4, 1, 1, 1)

    def f(x: torch.Tensor) -> torch.Tensor:  # (R, 3, H, W) -> (R,)
        return (scale[: len(x)] * ((x - target[: len(x)]) ** 2 + 0.1 * (x - target[: len(x)]) ** 4)).flatten(1).sum(1)

    def shared() -> tuple[float, int]:
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], max_iter=steps, max_eval=steps * 4, history_size=50, line_search_fn="strong_wolfe")
        n = [0]

        def closure() -> torch.Tensor:
            opt.zero_grad()
            n[0] += 1
            loss = f(x).sum()
            loss.backward()
            return loss

        t = time.process_time()
        opt.step(closure)
        return time.process_time() - t, n[0]

    def per_row() -> tuple[float, int]:
        opt = BatchedLBFGS(x0, LBFGSConfig(history_size=50), steps, steps)
        n = [0]
        t = time.process_time()
        opt.run(lambda x, rows: n.__setitem__(0, n[0] + 1) or f(x))
        return time.process_time() - t, n[0]

    res = {name: min((fn() for _ in range(repeats)), key=lambda r: r[0]) for name, fn in (("shared", shared), ("per-row", per_row))}
    return "optimiser alone (cheap objective, cpu ms per evaluation): " + ", ".join(
        f"{k} {1e3 * t / n:.1f} ({n} evaluations)" for k, (t, n) in res.items()
    )


MODES = {"shared": (Shared, False), "per-row": (Timed, False), "invariant": (Timed, True)}


def engine(mode: str) -> Timed:
    cls, invariant = MODES[mode]
    return cls("cpu", batch_invariant=invariant)


def run(mode: str, jobs: list[TransferJob]) -> tuple[Timed, list]:
    eng = engine(mode)
    vgg, _ = eng.vgg(jobs[0].params)
    hook = vgg.register_forward_pre_hook(eng.count)
    try:
        return eng, eng.run(jobs)
    finally:
        hook.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch of {len(STYLE_WEIGHTS)}: per-row vs shared L-BFGS state | {WEIGHTS} | cpu | threads "
        f"{torch.get_num_threads()} | torch {torch.__version__} | start: load %.2f %.2f %.2f" % os.getloadavg()
    )
    for size in args.sizes:
        content = load_tensor(SAMPLES / "content" / "tubingen.jpg", size)
        style = load_tensor(SAMPLES / "style" / "starry_night.jpg", size)
        base = Params(size=size, iterations=args.steps, weights=WEIGHTS)
        jobs = [TransferJob(content, (style,), base.replace(style_weight=w)) for w in STYLE_WEIGHTS]
        hw = output_size(tuple(content.shape[-2:]), size)
        for mode, warm in (("per-row", jobs), ("invariant", jobs[:2])):  # warm-up: kernels for batches of 4 and 1
            run(mode, [TransferJob(j.content, j.styles, j.params.replace(iterations=3)) for j in warm])
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        counts: dict[str, tuple[int, int]] = {}
        outputs: dict[str, list] = {}
        for _ in range(args.repeats):
            for mode in MODES:
                eng, res = run(mode, jobs)
                times[mode].append(eng.seconds / max(r.steps for r in res))
                cpu[mode].append(eng.cpu / max(r.steps for r in res))
                counts[mode], outputs[mode] = (eng.passes, eng.row_passes), res
        print(f"\n{hw[0]}x{hw[1]}, {args.steps} steps, {args.repeats} repeats, load {os.getloadavg()[0]:.2f}")
        print(
            f"{'mode':>10} {'ms/step':>8} {'vs shared':>9} {'median':>8} {'cpu ms':>8} {'vs shared':>9} {'passes':>6} "
            f"{'row-passes':>10} {'cpu ms/row-pass':>15}  steps per row"
        )
        ref, ref_cpu = min(times["shared"]), min(cpu["shared"])
        for mode in MODES:
            t, med, c = min(times[mode]), statistics.median(times[mode]), min(cpu[mode])
            passes, rows = counts[mode]
            per_row = 1e3 * c * max(r.steps for r in outputs[mode]) / rows
            print(
                f"{mode:>10} {t * 1e3:8.1f} {t / ref:8.3f}x {med * 1e3:8.1f} {c * 1e3:8.1f} {c / ref_cpu:8.3f}x {passes:6d} "
                f"{rows:10d} {per_row:15.1f}  {[r.steps for r in outputs[mode]]}",
                flush=True,
            )
        print(optimiser_only(hw, args.steps), flush=True)
        print("alone vs in the batch of 4 (of 255), per style_weight:")
        for mode in MODES:
            alone = [engine(mode).run([j])[0] for j in jobs]
            diffs = [(a.image - b.image).abs() * 255 for a, b in zip(alone, outputs[mode])]
            print(
                f"{mode:>10} " + "  ".join(f"sw={w:<3} mean {d.mean():6.3f} max {d.max():5.1f}" for w, d in zip(STYLE_WEIGHTS, diffs)),
                flush=True,
            )
    print("\nend: load {:.2f} {:.2f} {:.2f} (target: per-row <= 1.05x shared per step)".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
