"""Time per optimisation step of the style-transfer engine next to its floor (a script, not a test).

    python benchmarks/bench_transfer.py [--sizes 128 256] [--steps 30] [--threads 2] [--device cpu]

For each size, content loss (`mse`, `lpips`) and optimiser (L-BFGS, Adam) it runs
`StyleTransfer.run` on tubingen + starry_night with the default layers (valid for VGG-16) on the
`vgg16-hed` weights and times each optimisation step (everything included: losses, optimiser,
clamp, progress callback). The floor is a bare forward + backward of the same truncated VGG at
the same size: one forward to the deepest layer the losses need, `.sum()` of the used layer
outputs, backward to the image; for `lpips` the floor also runs the LPIPS backbone (VGG-16 to
relu5_3) forward + backward, as the engine must.

Engine steps and floor passes are interleaved (the progress callback times one floor pass
after every step and is itself left out of the step time), after a warm-up, so that load from
other processes on a shared machine hits both alike; medians throughout.

`ratio` = median over steps of step / floor (target <= 1.15); `mean` = total step time / total
floor time (includes the occasional multi-evaluation line search and L-BFGS's re-evaluation at
each chunk start, but is more exposed to load spikes). `evals/step` = mean objective evaluations
per step; `per eval` = median of step / (its evaluations x floor): the engine's own overhead per
evaluation, with the optimiser's evaluation count taken out.
The 1-minute load average is printed per row: on a shared machine, re-run when it is quiet.

A second table gives the per-evaluation cost of the composed objective (`stylecore.objective`)
for each style loss of the registry (and gram + the histogram term) against the bare VGG forward
+ backward to the same layers: objective forward + backward / floor, paired and interleaved,
medians (`--objective-only` prints just this one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from stylecore.images import load_tensor, resize_tensor
from stylecore.losses import STYLE_LOSS_KINDS
from stylecore.lpips import LPIPS_LAYERS, load_lpips
from stylecore.objective import StyleTargets, build_objective
from stylecore.params import Params
from stylecore.precision import Features
from stylecore.transfer import Progress, StyleTransfer, TransferJob, output_size
from stylecore.weights import load_vgg

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"
WEIGHTS = "vgg16-hed"


def load_avg() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def floor_fn(params: Params, hw: tuple[int, int], device: torch.device) -> Callable[[], float]:
    """A function timing one bare forward + backward of the truncated VGG (plus, for `lpips`,
    the LPIPS backbone) on a random image of size `hw`; returns seconds."""
    vgg, _ = load_vgg(params.weights, params.pooling, device)
    layers = list(dict.fromkeys((params.content_layers if params.content_loss == "mse" else ()) + params.style_layers))
    lp = load_lpips(params.lpips_weights, device) if params.content_loss == "lpips" else None
    x = torch.rand(1, 3, *hw, device=device, requires_grad=True)

    def once() -> float:
        t = time.perf_counter()
        loss = sum(f.sum() for f in vgg(x, layers).values())
        if lp is not None:
            loss = loss + sum(f.sum() for f in lp.backbone(x, LPIPS_LAYERS).values())
        loss.backward()
        x.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return once


def measure(engine: StyleTransfer, content: torch.Tensor, style: torch.Tensor, params: Params, steps: int) -> dict[str, float]:
    """Engine steps and floor passes, interleaved: after every engine step the progress callback
    times one floor pass, so load from other processes hits both alike. Returns medians of the
    step and the floor (s), of their per-step ratio, and the objective evaluations per step."""
    hw = output_size(tuple(content.shape[-2:]), params.size)
    floor = floor_fn(params, hw, engine.device)
    engine.run([TransferJob(content, (style,), params.replace(iterations=3))])  # warm-up: models, kernels
    for _ in range(3):
        floor()
    vgg, _ = load_vgg(params.weights, params.pooling, engine.device)
    counting, calls = [True], [0]

    def count(module: torch.nn.Module, args: tuple) -> None:
        calls[0] += counting[0]

    step_s: list[float] = []
    floor_s: list[float] = []
    evals: list[float] = []
    last: dict[str, float] = {}
    # The LPIPS backbone is the same cached module as the style VGG here (same weight set and
    # pooling), and the engine runs it separately from the style pass: one lpips evaluation is
    # 2 passes through it (change this if the engine learns to share one pass).
    passes_per_eval = 2 if params.content_loss == "lpips" else 1

    def on_step(p: Progress) -> None:
        t_in = time.perf_counter()
        if last:  # the first interval also holds the targets and optimiser setup: left out
            step_s.append(t_in - last["t"])
            evals.append((calls[0] - last["calls"]) / passes_per_eval)
        counting[0] = False
        floor_s.append(floor())
        counting[0] = True
        last.update(t=time.perf_counter(), calls=calls[0])

    hook = vgg.register_forward_pre_hook(count)
    try:
        engine.run([TransferJob(content, (style,), params.replace(iterations=steps + 1))], progress=on_step)
    finally:
        hook.remove()
    floors = floor_s[1:]  # each step is paired with the floor pass timed right after it
    return {
        "step": statistics.median(step_s),
        "floor": statistics.median(floor_s),
        "ratio": statistics.median(a / b for a, b in zip(step_s, floors)),
        "mean_ratio": sum(step_s) / sum(floors),
        "evals": sum(evals) / len(evals),
        "per_eval": statistics.median(a / (e * b) for a, e, b in zip(step_s, evals, floors)),
    }


def objective_cost(content: torch.Tensor, style: torch.Tensor, params: Params, device: torch.device, reps: int) -> dict[str, float]:
    """Median objective forward + backward (s) and bare VGG forward + backward to the same layers,
    one row at `params.size`, interleaved; and the median of their paired ratio."""
    vgg, _ = load_vgg(params.weights, params.pooling, device)
    hw = output_size(tuple(content.shape[-2:]), params.size)
    contents = resize_tensor(content.to(device), hw)
    targets = StyleTargets(2**28, device)
    obj = build_objective([params], contents, [(style,)], [None], params.size, Features(vgg, None, False, False), targets, lambda: None)
    x = contents.clone().requires_grad_(True)

    def timed(fn: Callable[[], torch.Tensor]) -> float:
        t = time.perf_counter()
        fn().backward()
        x.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def composed() -> torch.Tensor:
        return obj(x)["total"].sum()

    def bare() -> torch.Tensor:
        return sum((f.sum() for f in vgg(x, obj.layers).values()), x.new_zeros(()))

    for _ in range(2):  # warm-up
        timed(composed), timed(bare)
    pairs = [(timed(composed), timed(bare)) for _ in range(reps)]
    return {
        "objective": statistics.median(a for a, _ in pairs),
        "floor": statistics.median(b for _, b in pairs),
        "ratio": statistics.median(a / b for a, b in pairs),
    }


def objective_table(content: torch.Tensor, style: torch.Tensor, sizes: list[int], device: torch.device, reps: int) -> None:
    header = f"{'size':>5} {'style loss':>14} {'objective ms':>12} {'floor ms':>8} {'ratio':>6}  load"
    print("\ncomposed objective (content mse + style + tv) vs bare VGG forward + backward, one row")
    print(header)
    print("-" * len(header))
    for size in sizes:
        for name in [*sorted(STYLE_LOSS_KINDS), "gram+hist"]:
            p = Params(size=size, weights=WEIGHTS, style_loss=name.split("+")[0], histogram_weight=1.0 if "hist" in name else 0.0)
            m = objective_cost(content, style, p, device, reps)
            print(
                f"{size:>5} {name:>14} {m['objective'] * 1e3:12.1f} {m['floor'] * 1e3:8.1f} {m['ratio']:5.2f}x  {os.getloadavg()[0]:.2f}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--steps", type=int, default=30, help="timed optimisation steps per configuration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=15, help="timed evaluations per style loss in the objective table")
    ap.add_argument("--objective-only", action="store_true", help="print only the objective-cost table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    content = load_tensor(SAMPLES / "content" / "tubingen.jpg")
    style = load_tensor(SAMPLES / "style" / "starry_night.jpg")
    engine = StyleTransfer(device)
    if args.objective_only:
        print(f"start: {load_avg()}")
        objective_table(content, style, args.sizes, device, args.reps)
        print(f"end: {load_avg()}")
        return
    print(
        f"stylecore engine vs floor | weights {WEIGHTS} | device {device} | threads {torch.get_num_threads()} | torch {torch.__version__}"
    )
    print(
        f"default layers: content {Params().content_layers}, style {Params().style_layers}; "
        "floor for lpips = style VGG to conv5_1 + LPIPS VGG-16 to relu5_3, both forward + backward"
    )
    print(f"start: {load_avg()}")
    header = (
        f"{'size':>9} {'content':>7} {'optim':>5} {'step ms':>8} {'floor ms':>8} {'ratio':>6} {'mean':>6} "
        f"{'evals/step':>10} {'per eval':>8}  load"
    )
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for content_loss in ("mse", "lpips"):
            base = Params(size=size, weights=WEIGHTS, lpips_weights=WEIGHTS, content_loss=content_loss)
            hw = output_size(tuple(content.shape[-2:]), size)
            for optimizer in ("lbfgs", "adam"):
                m = measure(engine, content, style, base.replace(optimizer=optimizer), args.steps)
                print(
                    f"{hw[0]:>4}x{hw[1]:<4} {content_loss:>7} {optimizer:>5} {m['step'] * 1e3:8.1f} {m['floor'] * 1e3:8.1f} "
                    f"{m['ratio']:5.2f}x {m['mean_ratio']:5.2f}x {m['evals']:10.2f} {m['per_eval']:7.2f}x  "
                    f"{os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    objective_table(content, style, args.sizes, device, args.reps)
    print(f"end: {load_avg()}  (target: ratio <= 1.15x)")


if __name__ == "__main__":
    main()
