"""Calibrate each style loss's `default_scale` against gram's look (a script, not a test).

    python benchmarks/calibrate_style_losses.py [--size 128] [--steps 80] [--content tubingen]
        [--style starry_night] [--out /tmp/h1] [--losses mean_std w2 sliced_w histogram]
        [--at-defaults] [--hist-weights 100 300 1000]
    python benchmarks/calibrate_style_losses.py --time --size 256   # cost of one evaluation per loss

A small self-contained optimisation per run, independent of the engine: vgg16-hed, content
initialisation, torch.optim.LBFGS (strong Wolfe, history 50, chunks of 25 iterations with a clamp
to [0, 1] between them, as the engine does), relative content MSE at conv4_2 plus
`style_weight * scale * loss` at the five classic layers (equal layer weights), style_weight = the
Params default. For every loss it tries a few scales (a first guess times --factors, or
--scales) and picks the one whose output is closest to gram's output at scale 1 by the Gram style
distance (`stylecore.metrics.gram_distance`, on the same vgg16-hed), or, when no scale reaches
gram's Gram distance (mean_std saturates above it: it does not match the Gram), by LPIPS to the
content (the same content/style trade-off; see `choose`). It prints one table row per run: loss, scale, Gram distance, LPIPS to the content (LPIPS linear
heads on the vgg16-hed backbone: comparable between rows, not with vgg16-imagenet's numbers),
seconds. `histogram` is calibrated alone the same way (its scale is `HISTOGRAM.default_scale`),
then added to gram at a few `histogram_weight`s. Outputs are written as PNGs to --out.

The first guess of a scale makes the loss's value at the content image equal to gram's: the two
terms then start with the same pull against the content loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from stylecore.images import load_tensor, save_png
from stylecore.losses import HISTOGRAM, STYLE_LOSS_KINDS, ContentLoss, StyleLossKind, StyleLossModule
from stylecore.lpips import load_lpips
from stylecore.metrics import gram_distance
from stylecore.params import Params
from stylecore.vgg import VGGFeatures
from stylecore.weights import load_vgg

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"
CONTENT_LAYER = "conv4_2"


@dataclass(frozen=True)
class Run:
    loss: str
    scale: float
    hist_weight: float
    gram: float
    lpips_content: float
    seconds: float
    image: torch.Tensor


def _sample(kind: str, name: str, size: int) -> torch.Tensor:
    return load_tensor(next((SAMPLES / kind).glob(f"{name}.*")), size)


def _style_module(kind: StyleLossKind, vgg: VGGFeatures, style: torch.Tensor, layers: tuple[str, ...]) -> StyleLossModule:
    """The loss at scale 1 (the table's scales are absolute, whatever the kind's default_scale)."""
    kind = dataclasses.replace(kind, default_scale=1.0)  # type: ignore[type-var]
    with torch.no_grad():
        feats = vgg(style, layers)
    return kind.module(kind.targets(feats, 0), torch.full((1, len(layers)), 1 / len(layers)), [0])


def optimise(
    vgg: VGGFeatures,
    content: torch.Tensor,
    terms: list[tuple[float, StyleLossModule]],
    layers: tuple[str, ...],
    steps: int,
) -> torch.Tensor:
    """Content init, L-BFGS on content MSE + sum of weight * style module; returns the clamped image."""
    with torch.no_grad():
        closs = ContentLoss(vgg(content, (CONTENT_LAYER,)))
    x = content.clone().requires_grad_(True)
    taps = tuple(dict.fromkeys(layers + (CONTENT_LAYER,)))

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        feats = vgg(x, taps)
        loss = closs(feats).sum() + sum(w * m(feats).sum() for w, m in terms)
        loss.backward()
        return loss

    done = 0
    while done < steps:
        n = min(25, steps - done)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=n, max_eval=4 * n, history_size=50, line_search_fn="strong_wolfe")
        opt.step(closure)
        done += n
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def time_losses(vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor, layers: tuple[str, ...], repeats: int = 5) -> None:
    """Median seconds of one evaluation of each style module (forward + backward to the features,
    the VGG excluded), next to one VGG forward + backward to the deepest style layer."""
    x = content.clone().requires_grad_(True)
    feats = {k: v.detach().requires_grad_(True) for k, v in vgg(content, layers).items()}

    def median(fn: Callable[[], None]) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def vgg_pass() -> None:
        sum(v.sum() for v in vgg(x, layers).values()).backward()

    print(f"# one evaluation at {content.shape[-1]}x{content.shape[-2]} px, load {os.getloadavg()[0]:.1f}")
    print(f"{'vgg fwd+bwd':<12}{median(vgg_pass) * 1e3:>9.1f} ms")
    for name, kind in {**STYLE_LOSS_KINDS, "histogram": HISTOGRAM}.items():
        m = _style_module(kind, vgg, style, layers)
        print(f"{name:<12}{median(lambda m=m: m(feats).sum().backward()) * 1e3:>9.1f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--content", default="tubingen")
    ap.add_argument("--style", default="starry_night")
    ap.add_argument("--out", type=Path, default=Path("/tmp/h1"))
    ap.add_argument("--losses", nargs="*", default=["mean_std", "w2", "sliced_w", "histogram"])
    ap.add_argument("--factors", type=float, nargs="*", default=[0.1, 0.3, 1.0, 3.0], help="scales tried: first guess x factors")
    ap.add_argument("--scales", nargs="*", default=[], help="explicit scales, e.g. w2=0.02,0.05 (instead of the factors)")
    ap.add_argument("--at-defaults", action="store_true", help="one run per loss at its current default_scale")
    ap.add_argument("--hist-weights", type=float, nargs="*", default=[100.0, 300.0, 1000.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time", action="store_true", help="only time one evaluation of each loss at --size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    p = Params()
    layers = tuple(p.style_layers)
    vgg, _ = load_vgg("vgg16-hed")
    lp = load_lpips("vgg16-hed")
    content = _sample("content", args.content, args.size)
    style = _sample("style", args.style, args.size)
    kinds: Mapping[str, StyleLossKind] = {**STYLE_LOSS_KINDS, "histogram": HISTOGRAM}
    if args.time:
        time_losses(vgg, content, style, layers)
        return
    with torch.no_grad():
        cfeats = vgg(content, layers)
    runs: list[Run] = []
    print(
        f"# {args.content} + {args.style}, {args.size} px, {args.steps} L-BFGS steps, style_weight {p.style_weight:g}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'loss':<18}{'scale':>10}{'hist_w':>8}{'gram':>9}{'lpips_c':>9}{'s':>7}")

    def run(name: str, scale: float, hist_weight: float = 0.0, hist_scale: float = 1.0) -> Run:
        t0 = time.perf_counter()
        kind = kinds[name]
        terms = [(p.style_weight * scale, _style_module(kind, vgg, style, layers))]
        if hist_weight:
            # The engine adds histogram_weight * HISTOGRAM's module, its default_scale included.
            terms.append((hist_weight * hist_scale, _style_module(HISTOGRAM, vgg, style, layers)))
        img = optimise(vgg, content, terms, layers, args.steps)
        g = float(gram_distance(img, style, vgg, layers))
        with torch.no_grad():
            lc = float(lp(img, content))
        r = Run(name, scale, hist_weight, g, lc, time.perf_counter() - t0, img)
        runs.append(r)
        label = name + (f"+hist{hist_weight:g}" if hist_weight else "")
        print(f"{label:<18}{scale:>10.4g}{hist_weight:>8g}{g:>9.4f}{lc:>9.4f}{r.seconds:>7.1f}", flush=True)
        save_png(img[0], args.out / f"{label}_x{scale:.4g}.png")
        return r

    save_png(content[0], args.out / "content.png")
    save_png(style[0], args.out / "style.png")
    ref = run("gram", 1.0)
    chosen: dict[str, Run] = {"gram": ref}
    gram_at_content = float(_style_module(kinds["gram"], vgg, style, layers)(cfeats))
    explicit = {k: [float(v) for v in vs.split(",")] for k, vs in (a.split("=") for a in args.scales)}
    why: dict[str, str] = {"gram": "reference"}
    for name in args.losses:
        own = float(_style_module(kinds[name], vgg, style, layers)(cfeats))
        scales = (
            [kinds[name].default_scale] if args.at_defaults else explicit.get(name) or [gram_at_content / own * f for f in args.factors]
        )
        chosen[name], why[name] = choose([run(name, sc) for sc in scales], ref)
    print("\n# chosen default_scale (closest to gram's look; criterion in the last column)")
    for name, r in chosen.items():
        print(f"{name:<12}{r.scale:>10.3g}  gram {r.gram:.4f} (gram's {ref.gram:.4f})  lpips_c {r.lpips_content:.4f}  by {why[name]}")
    if args.hist_weights:
        print(f"\n# gram + histogram_weight * histogram (its default_scale {HISTOGRAM.default_scale:g} included)")
        hs = HISTOGRAM.default_scale
        for hw in args.hist_weights:
            run("gram", 1.0, hw, hs)


def choose(tried: list[Run], ref: Run) -> tuple[Run, str]:
    """The run whose look is closest to gram's: by Gram distance when some runs are on either side
    of gram's (log-interpolation would need another run; the closest is taken), else, when the loss
    cannot reach gram's Gram distance at any scale tried (it saturates above it: the Gram is not
    what it matches), by LPIPS to the content, i.e. the same content/style trade-off."""
    if min(r.gram for r in tried) <= ref.gram <= max(r.gram for r in tried):
        return min(tried, key=lambda r: abs(r.gram - ref.gram)), "gram distance"
    return min(tried, key=lambda r: abs(r.lpips_content - ref.lpips_content)), "lpips to content"


if __name__ == "__main__":
    main()
