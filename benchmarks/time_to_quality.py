"""Time to quality: the engine's defaults against a plain single-scale 500-step L-BFGS loop (issue 16 item 6).

In one process, on the shipped sample pairs (pipeline/samples) with the `vgg16-hed` weights:

- the reference: a plain loop written here (`reference`, independent of `stylecore` except for the
  VGG weights and image loading): single scale, content init, `torch.optim.LBFGS` (strong Wolfe,
  history 50), Gram + MSE with the engine's relative normalisation and the paper-era weights
  (content conv4_2 weight 1, style conv1_1..conv5_1 equal weights, style_weight `REF_STYLE_WEIGHT`
  = 1e3, fixed here so that changing the engine's default never moves the bar), 500 steps,
  clamped to [0, 1] every 25 steps;
- the engine (`stylecore.transfer.StyleTransfer`) with its defaults (or `--engine` overrides).

Quality: the Gram style distance (`stylecore.metrics.gram_distance`, vs the style image at the
output's long side) and LPIPS to the content (`stylecore.lpips`, on `vgg16-imagenet` when present,
else on `vgg16-hed`: the table says which). The reference's 500-step output sets the bar; the
engine's current image is measured every `--every` steps at its final scale (measurement time is
not counted), and the benchmark prints the earliest engine time whose output is at least as
stylised (Gram distance <= the reference's) and at least as close to the content (LPIPS-content
<= the reference's), as a ratio of the reference's time. Then both frontiers (Gram distance vs
LPIPS-content at the end of each run) over a style-weight sweep.

Fairness under load: the reference and the engine alternate their order pair by pair, and the
1-minute load average is printed next to every run (a shared machine moves both; compare ratios
measured in one process).

    nice -n 5 python benchmarks/time_to_quality.py --quick
    nice -n 5 python benchmarks/time_to_quality.py --size 256 --pairs tubingen:starry_night,chelsea:the_scream
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stylecore.images import load_tensor, save_png  # noqa: E402
from stylecore.weights import load_vgg  # noqa: E402

SAMPLES = ROOT / "pipeline" / "samples"
WEIGHTS = "vgg16-hed"
CONTENT_LAYERS = ("conv4_2",)
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
REF_STYLE_WEIGHT = 1e3  # the reference's beta: the engine's default when issue 16 was filed
REF_CHUNK = 25  # L-BFGS iterations per `step()` call of the reference, clamped between calls (as the engine)

# The clock of every timing: process CPU time by default (`--clock cpu`): with one thread it is the
# wall time of an idle machine, and it does not count the time a loaded machine keeps us waiting.
clock: Callable[[], float] = time.process_time

Measure = Callable[[torch.Tensor], tuple[float, float]]  # (1, 3, H, W) -> (gram distance, lpips to content)


class _Work:
    """Load-free cost proxy: pixels through VGG forwards taken with grad (evaluations of an objective), in megapixels."""

    value = 0.0

    def hook(self, module: torch.nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled():
            x = args[0]
            self.value += x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6


WORK = _Work()


# ----------------------------------------------------------------------------- the reference loop
def _gram(f: torch.Tensor) -> torch.Tensor:  # (1, C, H, W) -> (1, C, C), divided by H W
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def reference(vgg, content: torch.Tensor, style: torch.Tensor, style_weight: float, steps: int) -> tuple[torch.Tensor, int]:
    """Plain Gatys: single scale, content init, L-BFGS, relative Gram + relative MSE. -> (image, iterations run)."""
    with torch.no_grad():
        p = vgg(content, CONTENT_LAYERS)  # (1, C, H, W) per content layer
        a = {n: _gram(f) for n, f in vgg(style, STYLE_LAYERS).items()}  # (1, C, C) per style layer
        p_energy = {n: t.pow(2).sum() for n, t in p.items()}
        a_energy = {n: g.pow(2).sum() for n, g in a.items()}
    x = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=REF_CHUNK, history_size=50, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        f = vgg(x, CONTENT_LAYERS + STYLE_LAYERS)
        lc = sum((f[n] - p[n]).pow(2).sum() / p_energy[n] for n in CONTENT_LAYERS) / len(CONTENT_LAYERS)
        ls = sum((_gram(f[n]) - a[n]).pow(2).sum() / a_energy[n] for n in STYLE_LAYERS) / len(STYLE_LAYERS)
        loss = lc + style_weight * ls
        loss.backward()
        return loss

    for _ in range(steps // REF_CHUNK):
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach(), int(opt.state[x]["n_iter"])


# ----------------------------------------------------------------------------- the engine, measured while it runs
@dataclass
class EngineTrace:
    seconds: float = 0.0  # engine time of the whole run (measurement excluded)
    steps: int = 0
    points: list[tuple[float, int, float, float, float]] = field(default_factory=list)  # (engine s, step, gram, lpips, work)
    image: torch.Tensor | None = None
    via: str = ""


def run_engine(st, content: torch.Tensor, style: torch.Tensor, params, measure: Measure, every: int) -> EngineTrace:
    """One engine run; `measure` is applied to the current image every `every` steps at the final scale
    (through the engine's `snapshot` hook); its time is subtracted from the engine's."""
    from stylecore.transfer import TransferJob

    tr = EngineTrace()
    WORK.value = 0.0
    hw = tuple(content.shape[-2:])
    spent = [0.0]
    t0 = clock()

    def on_image(step: int, image: torch.Tensor) -> None:  # (3, H, W) or (1, 3, H, W)
        if tuple(image.shape[-2:]) != hw:
            return  # a coarse scale
        t = clock()
        g, d = measure(image.reshape(1, 3, *hw).clamp(0, 1))
        tr.points.append((t - t0 - spent[0], step, g, d, WORK.value))
        spent[0] += clock() - t

    job = TransferJob(content, (style,), params)
    if "snapshot" in inspect.signature(st.run).parameters:
        tr.via = "snapshot hook"
        res = st.run(
            [job.__class__(content, (style,), params.replace(snapshot_every=every))], snapshot=lambda s: on_image(s.step, s.image)
        )[0]
    else:
        tr.via = "chunk hook (engine without snapshot)"
        res = _run_with_chunk_hook(st, job, every, on_image)
    tr.seconds = clock() - t0 - spent[0]
    tr.steps = res.steps
    tr.image = res.image.reshape(1, 3, *hw)
    g, d = measure(tr.image)
    if not tr.points or tr.points[-1][1] != res.steps:
        tr.points.append((tr.seconds, res.steps, g, d, WORK.value))
    return tr


def _run_with_chunk_hook(st, job, every: int, on_image: Callable[[int, torch.Tensor], None]):
    """For engines without `snapshot`: L-BFGS chunks of `every` iterations, the image seen at each chunk's end."""
    import stylecore.optim
    import stylecore.transfer as tf

    base, chunk = tf.BatchedLBFGS, tf.LBFGS_CHUNK
    counter = [0]

    class Hooked(base):  # type: ignore[misc, valid-type]
        def __init__(self, x, cfg, iterations, chunk_, evals_per_iter=4, project=None):
            shape = tuple(x.shape[1:])
            steps = [0]

            def proj(r: torch.Tensor) -> None:
                if project is not None:
                    project(r)
                steps[0] += every
                on_image(counter[0] + steps[0], r.view(shape))

            super().__init__(x, cfg, iterations, chunk_, evals_per_iter, proj)

    tf.BatchedLBFGS, tf.LBFGS_CHUNK = Hooked, every
    try:
        return st.run([job])[0]
    finally:
        tf.BatchedLBFGS, tf.LBFGS_CHUNK = base, chunk
        assert stylecore.optim.BatchedLBFGS is base


# ----------------------------------------------------------------------------- quality
def make_measure(vgg, content: torch.Tensor, style: torch.Tensor) -> tuple[Measure, str]:
    from stylecore.catalog import WeightsError
    from stylecore.lpips import load_lpips
    from stylecore.metrics import gram_distance

    try:
        lp, which = load_lpips("vgg16-imagenet"), "vgg16-imagenet"
    except WeightsError:
        lp, which = load_lpips(WEIGHTS), WEIGHTS + " (vgg16-imagenet unavailable)"
    with torch.inference_mode():
        c_feats = lp.features(content)

    def measure(x: torch.Tensor) -> tuple[float, float]:
        with torch.inference_mode():
            return float(gram_distance(x, style, vgg)[0]), float(lp.feature_distance(lp.features(x), c_feats)[0])

    return measure, which


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def first_reaching(points, gram: float, lp: float) -> tuple[float, int, float] | None:
    for s, step, g, d, w in points:
        if g <= gram and d <= lp:
            return s, step, w
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--pairs", default="tubingen:starry_night,chelsea:the_scream", help="content:style,... (names in pipeline/samples)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref-steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=10, help="measure the engine's image every N steps at its final scale")
    ap.add_argument("--sweep", default="300,1000,3000", help="style weights of the frontiers ('' = none)")
    ap.add_argument("--engine", action="append", default=[], help="JSON Params overrides for an engine config (repeatable)")
    ap.add_argument("--out", default="", help="folder for the output PNGs")
    ap.add_argument("--ref-cache", default="", help="JSON file keeping the reference's figures between processes (ratios then mix loads)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="time by process CPU time (default) or wall time")
    ap.add_argument("--precision", default="auto", help="the engine's precision (stylecore.precision.PRECISIONS)")
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile the engine's VGG forward (compiled once per shape before the timings)"
    )
    ap.add_argument("--quick", action="store_true", help="128 px, the first pair, no sweep")
    args = ap.parse_args()
    if args.quick:
        args.size, args.pairs, args.sweep = 128, args.pairs.split(",")[0], ""
    torch.set_num_threads(args.threads)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)

    from stylecore.params import Params
    from stylecore.transfer import StyleTransfer

    base = Params(size=args.size, weights=WEIGHTS)
    configs = {"defaults": base} if not args.engine else {}
    for text in args.engine:
        configs[text] = Params.from_dict(json.loads(text), base=base)
    vgg, _ = load_vgg(WEIGHTS)
    vgg.register_forward_pre_hook(WORK.hook)  # the engine shares this cached module
    st = StyleTransfer("cpu", precision=args.precision, compile=args.compile)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    print(
        f"time to quality at {args.size} px, {WEIGHTS}, {torch.get_num_threads()} thread(s), reference {args.ref_steps} L-BFGS steps, {args.clock} clock"
    )
    print(f"  engine precision {args.precision!r}: VGG forward in {st.dtype or torch.float32}")
    for name, p in configs.items():
        print(f"  engine '{name}': iterations={p.iterations} scales={p.scales} tol={p.tol} optimizer={p.optimizer} ema={p.ema}")
    # Warm-up (oneDNN kernels, allocator) outside every timing.
    w_c = load_tensor(SAMPLES / "content" / f"{pairs[0][0]}.jpg", 64)
    reference(vgg, w_c, w_c, 1e3, REF_CHUNK)

    rows = []
    cache = json.loads(Path(args.ref_cache).read_text()) if args.ref_cache and Path(args.ref_cache).exists() else {}
    for i, (cname, sname) in enumerate(pairs):
        content = load_tensor(SAMPLES / "content" / f"{cname}.jpg", args.size)
        style = load_tensor(SAMPLES / "style" / f"{sname}.jpg", args.size)
        measure, lp_which = make_measure(vgg, content, style)
        if args.compile:  # compile once per shape (as a worker would for its first row), outside the timings
            from stylecore.transfer import TransferJob

            t = time.perf_counter()
            for p in configs.values():
                st.run([TransferJob(content, (style,), p.replace(iterations=2))])
            print(f"  {cname}: torch.compile warm-up {time.perf_counter() - t:.1f} s wall (not counted)")
        if i == 0:
            print(f"  LPIPS-content on {lp_which}; Gram distance on {WEIGHTS} (layers conv1_1..conv5_1)")
        results: dict[str, object] = {}

        for name in ["ref", *configs] if i % 2 == 0 else [*configs, "ref"]:  # alternate the order pair by pair
            la = load()
            key = f"{cname}:{sname}:{args.size}:{args.ref_steps}:{REF_STYLE_WEIGHT}:{args.clock}:{args.threads}"
            if name == "ref" and key in cache:
                results["ref"] = (*cache[key], la + ", cached from an earlier process")
            elif name == "ref":
                t = clock()
                WORK.value = 0.0
                x, n = reference(vgg, content, style, REF_STYLE_WEIGHT, args.ref_steps)
                results["ref"] = (clock() - t, n, *measure(x), WORK.value, la)
                if args.ref_cache:
                    cache[key] = results["ref"][:-1]
                    Path(args.ref_cache).write_text(json.dumps(cache, indent=1))
                if out:
                    save_png(x[0], out / f"{cname}-{sname}-ref.png")
            else:
                tr = run_engine(st, content, style, configs[name], measure, args.every)
                results[name] = (tr, la)
                if out and tr.image is not None:
                    save_png(tr.image[0], out / f"{cname}-{sname}-engine{list(configs).index(name)}.png")
        rt, rn, rg, rd, rw, rla = results["ref"]
        print(f"\n{cname} + {sname} ({tuple(content.shape[-2:])}):")
        print(f"  reference  {rn:4d} steps {rt:7.1f} s {rw:7.1f} Mpx  gram {rg:.4f}  lpips-content {rd:.4f}  ({rla})")
        for name in configs:
            tr, la = results[name]
            hit = first_reaching(tr.points, rg, rd)
            fg, fd = tr.points[-1][2], tr.points[-1][3]
            reach = (
                f"reaches the reference at {hit[0]:6.1f} s (final-scale step {hit[1]}): ratio {hit[0] / rt:.3f} (work {hit[2] / rw:.3f})"
                if hit
                else "never reaches it: ratio -"
            )
            tw = tr.points[-1][4]
            print(
                f"  engine     {tr.steps:4d} steps {tr.seconds:7.1f} s {tw:7.1f} Mpx  gram {fg:.4f}  lpips-content {fd:.4f}  ({la}; {tr.via})"
            )
            print(f"    '{name}' {reach}; whole run {tr.seconds / rt:.3f} (work {tw / rw:.3f})")
            rows.append((cname, sname, name, hit[0] / rt if hit else None, hit[2] / rw if hit else None, tr.seconds / rt, tw / rw))
    print("\nsummary: pair, engine, ratio to reach the reference (engine s / reference s; work = Mpx evaluated), whole-run ratios")
    print(f"  {'pair':24s} {'engine':44s} {'ratio':>6s} {'work':>6s} {'whole':>6s} {'work':>6s}")
    for c, s, name, r, rwk, whole, wwk in rows:
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"  {c + '+' + s:24s} {name:44s} {f(r):>6s} {f(rwk):>6s} {f(whole):>6s} {f(wwk):>6s}")

    sweep = [float(v) for v in args.sweep.split(",") if v]
    if sweep:
        cname, sname = pairs[0]
        content = load_tensor(SAMPLES / "content" / f"{cname}.jpg", args.size)
        style = load_tensor(SAMPLES / "style" / f"{sname}.jpg", args.size)
        measure, _ = make_measure(vgg, content, style)
        print(f"\nfrontiers on {cname} + {sname}: style_weight -> (gram distance, lpips-content), seconds")
        for k, w in enumerate(sweep):
            line = [f"  {w:8g}"]
            order = ["ref", *configs] if k % 2 == 0 else [*configs, "ref"]
            got = {}
            for name in order:
                la = load()
                if name == "ref":
                    t = clock()
                    x, _ = reference(vgg, content, style, w, args.ref_steps)
                    got[name] = (*measure(x), clock() - t, la)
                else:
                    tr = run_engine(st, content, style, configs[name].replace(style_weight=w), measure, 10**6)
                    got[name] = (tr.points[-1][2], tr.points[-1][3], tr.seconds, la)
            for name in ["ref", *configs]:
                g, d, s, la = got[name]
                line.append(f"{name}: ({g:.4f}, {d:.4f}) {s:6.1f} s [{la}]")
            print("  ".join(line))


if __name__ == "__main__":
    main()
