"""Memory model against measurement: predicted vs measured peak of one row at several sizes.

Each point runs in a fresh subprocess: load the weights and decode the images, read the peak RSS
(`ru_maxrss`, the baseline), run a few optimisation steps, read it again; measured = the
difference, compared with `stylecore.memory.row_peak(...).per_step` (the model's bytes that scale
with the row; the weights are in the baseline). On a GPU the same with
`torch.cuda.max_memory_allocated`.

    python benchmarks/bench_memory.py [--sizes 256,512,768,1024] [--iterations 3] [--weights vgg16-hed]
        [--device cpu] [--content-loss mse] [--optimizer lbfgs] [--tile-size 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "pipeline" / "samples" / "content" / "tubingen.jpg"
STYLE = ROOT / "pipeline" / "samples" / "style" / "starry_night.jpg"


def _rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def point(size: int, iterations: int, weights: str, device: str, content_loss: str, optimizer: str, tile_size: int | None) -> dict:
    """Runs in the child: one row at `size`, returns measured and predicted bytes."""
    import torch

    from stylecore import memory
    from stylecore.images import load_tensor
    from stylecore.params import Params
    from stylecore.transfer import StyleTransfer, TransferJob, output_size

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    p = Params(
        size=size,
        iterations=iterations,
        weights=weights,
        lpips_weights=weights if content_loss == "lpips" else "vgg16-imagenet",
        content_loss=content_loss,
        optimizer=optimizer,
        tile_size=tile_size,
    )
    content = load_tensor(CONTENT.read_bytes(), size)
    style = load_tensor(STYLE.read_bytes(), size)
    engine = StyleTransfer(device)
    engine.vgg(p)
    if content_loss == "lpips":
        engine.lpips(p)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    engine.run([TransferJob(content, (style,), p)])
    if engine.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_bytes() - base
    hw = output_size(tuple(content.shape[-2:]), size)
    est = memory.row_peak(p, hw, engine.device.type)  # tiled (`estimate_tiled`) when --tile-size makes the row tile
    return {"size": size, "hw": list(hw), "measured": peak, "predicted": est.per_step, "baseline": base, "models": est.models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512,768,1024")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--content-loss", default="mse")
    ap.add_argument("--optimizer", default="lbfgs")
    ap.add_argument("--tile-size", type=int, default=0, help="0 = untiled (the model's own prediction is for one piece)")
    ap.add_argument("--point", type=int, help=argparse.SUPPRESS)  # child mode
    a = ap.parse_args()
    if a.point:
        print(json.dumps(point(a.point, a.iterations, a.weights, a.device, a.content_loss, a.optimizer, a.tile_size)))
        return
    print(
        f"{'size':>5} {'H x W':>11} {'predicted':>10} {'measured':>10} {'error':>7}   ({a.device}, {a.weights}, {a.content_loss}, {a.optimizer})"
    )
    for size in (int(s) for s in a.sizes.split(",")):
        args = [sys.executable, __file__, "--point", str(size), "--iterations", str(a.iterations), "--weights", a.weights]
        args += ["--device", a.device, "--content-loss", a.content_loss, "--optimizer", a.optimizer, "--tile-size", str(a.tile_size)]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            print(f"{size:>5} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        err = r["predicted"] / max(1, r["measured"]) - 1
        hw = f"{r['hw'][0]}x{r['hw'][1]}"
        print(f"{size:>5} {hw:>11} {r['predicted'] / 2**20:>8.0f}Mi {r['measured'] / 2**20:>8.0f}Mi {err:>+7.1%}", flush=True)
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
