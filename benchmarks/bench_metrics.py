"""Cost of the per-output metrics vs the optimisation that made the output (issue 18: <= 10% at 256 px).

    python benchmarks/bench_metrics.py [--size 256] [--device cpu] [--repeats 3]

Metrics: `stylecore.metrics.Distance` on `vgg16-hed`, everything a results row records: the LPIPS
pair to style and content, Gram and W2 style distances per layer (one batched VGG-16 pass up to
relu5_3 that also taps relu3_1 for CFSD), the luminance LPIPS (a second pass of two images), the
sliced colour distance and CFSD, for one output whose long side is `--size` (the Tübingen
sample's 4:3 shape). The new metrics' parts are also timed alone on the pass's features.

Optimisation (estimated, so the figure does not depend on the engine's code): the measured time
of one forward + backward of the VGG-19-shaped network truncated at the deepest default layer
(conv5_1; `Params()` content conv4_2, style conv1_1..conv5_1, Gram + MSE losses) at the same
size, times `Params().iterations`. Random VGG-19 weights: the cost of a conv net does not depend
on its weights. L-BFGS evaluates the function at least once per iteration (often ~1.25x), so the
estimate is a lower bound and the printed ratio an upper bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from stylecore import evaluation as E
from stylecore.images import load_tensor
from stylecore.metrics import DEFAULT_GRAM_LAYERS, Distance, gram, match_size
from stylecore.params import Params
from stylecore.weights import load_vgg

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"


def timed(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lpips-weights", default="vgg16-hed")
    args = ap.parse_args()
    dev = torch.device(args.device)

    content = load_tensor(SAMPLES / "content" / "tubingen.jpg", args.size).to(dev)  # (1, 3, H, W)
    style = load_tensor(SAMPLES / "style" / "starry_night.jpg", args.size).to(dev)
    output = (content + 0.1 * torch.randn_like(content)).clamp(0, 1)  # stands in for a stylised output
    h, w = content.shape[-2:]

    dist = Distance.load(args.lpips_weights, dev)
    t_metrics = timed(lambda: dist(output, style, content), args.repeats)
    style_r = match_size(style, output)
    bb = dist.lpips.backbone
    with torch.inference_mode():
        f = bb(torch.cat([output, style_r, content]), list(DEFAULT_GRAM_LAYERS) + [E.CFSD_LAYER])
    parts = {
        "the shared pass (output, style, content to relu5_3)": lambda: bb(
            torch.cat([output, style_r, content]), list(dist.lpips.layers) + list(DEFAULT_GRAM_LAYERS) + [E.CFSD_LAYER]
        ),
        "w2_style (5 layers)": lambda: [E.gaussian_w2(f[n][:1], f[n][1:2]) for n in DEFAULT_GRAM_LAYERS],
        "lpips_content_gray (2-image pass)": lambda: dist.lpips.features(torch.cat([E.luminance(output), E.luminance(content)])),
        "hist_style (sliced W1)": lambda: E.sliced_colour_w1(output, style_r),
        "cfsd (relu3_1)": lambda: E.cfsd_from_features(f[E.CFSD_LAYER][:1], f[E.CFSD_LAYER][2:]),
    }
    with torch.inference_mode():
        t_parts = {k: timed(fn, args.repeats) for k, fn in parts.items()}

    p = Params()
    vgg, _ = load_vgg("random", pooling=p.pooling, device=dev)  # VGG-19 shape, as vgg19-imagenet
    layers = list(dict.fromkeys(p.content_layers + p.style_layers))
    with torch.no_grad():
        feats = vgg(content, layers)
        targets_c = {n: feats[n] for n in p.content_layers}
        targets_s = {n: gram(vgg(style, p.style_layers)[n]) for n in p.style_layers}

    def step() -> None:
        x = output.clone().requires_grad_(True)
        f = vgg(x, layers)
        loss = sum(((f[n] - targets_c[n]) ** 2).mean() for n in p.content_layers)
        loss = loss + p.style_weight * sum(((gram(f[n]) - targets_s[n]) ** 2).sum() for n in p.style_layers)
        loss.backward()

    t_step = timed(step, args.repeats)
    t_opt = t_step * p.iterations
    ratio = t_metrics / t_opt

    print(f"device: {dev}  torch threads: {torch.get_num_threads()}  output: {h}x{w} px")
    print(f"metrics (Distance, every column; {dist.weights_label}): {t_metrics:.3f} s")
    for k, v in t_parts.items():
        print(f"  {k}: {v:.3f} s")
    print(f"one forward+backward, VGG-19 to {layers[-1] if layers else '?'} (default layers): {t_step:.3f} s")
    print(f"optimisation estimate: {t_step:.3f} s x {p.iterations} iterations = {t_opt:.1f} s (lower bound)")
    print(f"metrics / optimisation = {100 * ratio:.2f}%  (target <= 10%: {'ok' if ratio <= 0.10 else 'OVER'})")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
