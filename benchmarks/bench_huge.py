"""Huge images (issue 17): time and peak memory of `stxpipe stylize` at print sizes, tiled against
one piece; tiles against one piece at 512 px (Gram style distance, LPIPS to the content, seam
ratio, a 100% crop across a tile boundary saved as PNG); a 4096-px manifest row through `submit`.

    nice -n 5 python benchmarks/bench_huge.py stylize [--sizes 2048] [--iterations 8] [--tile-size auto|0|N] [--scales 2] [--coarse-side 0]
    nice -n 5 python benchmarks/bench_huge.py compare [--size 512] [--tile 256] [--iterations 100] [--runs one,tiled,one2,tiled2]
        [--pair chelsea:the_scream]
    nice -n 5 python benchmarks/bench_huge.py submit [--size 4096] [--iterations 8]

Memory is read from /proc while the command runs: the largest VmHWM (peak RSS) of any process
in its tree (for `submit`: the Ray worker) and the largest sum of VmRSS over the tree. Weights:
`vgg16-hed` (the only pretrained set reachable offline). The figures are only as quiet as the
machine: each line prints the 1-minute load average.

Measured (`submit --size 4096 --iterations 2`, tubingen x starry_night, 4096 x 3072, one CPU
worker): on the NHWC bf16 path with the 1024-px first scale (`coarse_side`; 4 steps in all, load
average 0.4-1.4), ok in 1504 s wall, worker peak RSS 3.64 GiB (dry run predicted 2.96 GiB), driver
0.73 GiB. Before that, with tiles in re-anchored rounds and no extra coarse scale (load average 1.0-1.5), ok in
2105 s wall, worker peak RSS 3.55 GiB (dry run predicted 2.96 GiB), driver 0.68 GiB. Before, with a
768-px coarse scale in one piece first (load average 6-10 on 2 cores): ok in 2926 s wall; worker peak RSS 3.31 GiB, driver 0.76
GiB. By phase (worker RSS high-water mark, sampled): start 1.27 GiB (models + the full-size
content, style and first image), style targets in 800 px tiles (1.5 GiB share) 2.86 GiB (~1.5 min),
tiled pass (35 tiles of 736 px) 2.99 GiB (~20 min), metrics in 256 px tiles 3.31 GiB (~27 min:
five 4096 px forwards to relu5_3 with a 96 px halo, 3x the pixels). Before the style targets and
metrics were tiled, the same row peaked at 3.87 GiB before its metrics (style targets with the
whole tile threshold), and an untiled style forward at this size is predicted at 22 GiB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "pipeline" / "samples" / "content" / "tubingen.jpg"
STYLE = ROOT / "pipeline" / "samples" / "style" / "starry_night.jpg"
GIB = 2**30


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def _tree(root: int) -> list[int]:
    """root and every descendant, from /proc/*/stat parent ids."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return list(tree)


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:60].strip()
    except OSError:
        return "?"


# Per process of the last `measure`: pid -> (peak RSS (VmHWM) in bytes, command line).
PEAKS: dict[int, tuple[int, str]] = {}


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, int, int, str]:
    """(wall seconds, CPU seconds of the child, largest process peak RSS, largest tree RSS, exit
    code, output tail) of `cmd`; each process's peak in PEAKS. CPU seconds (user + system, the
    child alone) are the figure that survives a loaded machine; wall time does not."""
    t0 = time.perf_counter()
    PEAKS.clear()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        peak_proc = peak_tree = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            pids = _tree(proc.pid)
            stats = [_status(p) for p in pids]
            for p, st in zip(pids, stats):
                if st.get("VmHWM", 0) > PEAKS.get(p, (0, ""))[0]:
                    PEAKS[p] = (st["VmHWM"], PEAKS[p][1] if p in PEAKS else _name(p))
            peak_proc = max([peak_proc] + [s.get("VmHWM", 0) for s in stats])
            peak_tree = max(peak_tree, sum(s.get("VmRSS", 0) for s in stats))
            time.sleep(0.5)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak_proc = max(peak_proc, usage.ru_maxrss * 1024)
        log.seek(0)
        tail = log.read()[-1500:]
    return seconds, usage.ru_utime + usage.ru_stime, peak_proc, peak_tree, proc.returncode, tail


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _stxpipe() -> list[str]:
    return [sys.executable, "-m", "pipeline.cli"]


def cmd_stylize(a: argparse.Namespace) -> None:
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in a.sizes.split(",")):
        for tile in a.tile_size.split(","):
            coarse = "" if a.coarse_side is None else f"_coarse{a.coarse_side}"
            out = out_dir / f"stylize_{size}_tile{tile}_scales{a.scales}{coarse}.png"
            cmd = _stxpipe() + ["stylize", str(CONTENT), str(STYLE), "-o", str(out), "--size", str(size), "--iterations", str(a.iterations)]
            cmd += ["--scales", str(a.scales)] + ([] if a.coarse_side is None else ["--coarse-side", str(a.coarse_side)])
            cmd += ["--weights", "vgg16-hed", "--lpips-weights", "vgg16-hed"] + ([] if tile == "auto" else ["--tile-size", tile])
            load = os.getloadavg()[0]
            s, cpu, peak, _, rc, tail = measure(cmd, _env())
            status = "ok" if rc == 0 else f"FAILED rc={rc}: {tail.strip().splitlines()[-1:]}"
            print(
                f"stylize size {size} iterations {a.iterations} scales {a.scales} coarse_side {'default' if a.coarse_side is None else a.coarse_side} tile {tile}: {s:.0f} s wall, {cpu:.0f} CPU s, peak RSS {peak / GIB:.2f} GiB, "
                f"{status} (load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}) -> {out}",
                flush=True,
            )


def cmd_compare(a: argparse.Namespace) -> None:
    import torch

    from stylecore.images import load_tensor, png_bytes
    from stylecore.lpips import load_lpips
    from stylecore.metrics import gram_distance, match_size
    from stylecore.params import Params
    from stylecore.tiling import default_overlap, tile_boxes
    from stylecore.transfer import StyleTransfer, TransferJob
    from stylecore.weights import load_vgg

    sys.path.insert(0, str(ROOT))
    from tests.stylecore.test_tiling import seam_ratio

    torch.set_num_threads(a.threads)
    samples = ROOT / "pipeline" / "samples"
    cname, sname = a.pair.split(":")
    content = load_tensor(next((samples / "content").glob(cname + ".*")).read_bytes(), a.size)
    style = load_tensor(next((samples / "style").glob(sname + ".*")).read_bytes(), a.size)
    p = Params(size=a.size, iterations=a.iterations, weights="vgg16-hed", lpips_weights="vgg16-hed")
    engine = StyleTransfer("cpu")
    vgg, _ = load_vgg("vgg16-hed", "max", "cpu")
    lp = load_lpips("vgg16-hed", "cpu")
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    # The default row (scales=1) in one piece and in tiles, and a scales=2 row (a one-piece coarse
    # scale at size/2, then the final scale) in one piece and with its final scale in tiles.
    runs = {
        "one": ("one piece", 0, 1),
        "tiled": (f"tiles of {a.tile}", a.tile, 1),
        "one2": ("one piece x2", 0, 2),
        "tiled2": (f"tiles of {a.tile} x2", a.tile, 2),
    }
    for name, tile, scales in (runs[k] for k in a.runs.split(",")):
        t0 = time.perf_counter()
        res = engine.run([TransferJob(content, (style,), p.replace(tile_size=tile, scales=scales))])[0]
        img = res.image  # (3, H, W)
        secs = time.perf_counter() - t0
        h, w = img.shape[-2:]
        boxes = tile_boxes(h, w, a.tile, default_overlap(a.tile))
        c, s = match_size(content, img[None]), match_size(style, img[None])
        rows[name] = (float(gram_distance(img[None], s, vgg)), float(lp(img[None], c)), seam_ratio(img, boxes), secs, res.scale_steps)
        (out_dir / f"compare_{cname}_{a.size}_tile{tile}_scales{scales}.png").write_bytes(png_bytes(img))
        # A 100% crop across the first inner vertical tile edge (the same place in every image).
        edge = min(b.left + b.width for b in boxes if b.left + b.width < w)
        top = max(0, h // 2 - 64)
        crop = img[:, top : top + 128, max(0, edge - 64) : edge + 64]
        (out_dir / f"crop_{cname}_{a.size}_tile{tile}_scales{scales}_edge{edge}.png").write_bytes(png_bytes(crop))
    print(
        f"size {a.size}, {a.iterations} iterations, tiles {a.tile} px (overlap {default_overlap(a.tile)} px), load {os.getloadavg()[0]:.1f}"
    )
    for name, (g, lpc, ratio, secs, steps) in rows.items():
        print(
            f"  {name:>14}: gram_style {g:.4f}  lpips_content {lpc:.4f}  seam ratio at the tile edges {ratio:.3f}  "
            f"steps per scale {steps}  {secs:.0f} s"
        )
    for num, ref in (("tiled", "one"), ("tiled2", "one2")):
        if runs[num][0] in rows and runs[ref][0] in rows:
            (g1, l1, r1, _, _), (g2, l2, r2, _, _) = rows[runs[ref][0]], rows[runs[num][0]]
            print(f"  {runs[num][0]} / {runs[ref][0]}: gram_style {g2 / g1:.3f}, lpips_content {l2 / l1:.3f}, seam ratio {r2 / r1:.3f}")


def cmd_submit(a: argparse.Namespace) -> None:
    from pipeline.manifest import write_manifest

    work = Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / f"huge_{a.size}.parquet"
    params = {"size": a.size, "iterations": a.iterations, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}
    write_manifest([{"content": str(CONTENT), "style": str(STYLE), "params": params}], manifest)
    out = work / f"out_{a.size}"
    dry = subprocess.run(_stxpipe() + ["submit", str(manifest), "--out", str(out), "--dry-run"], capture_output=True, text=True, env=_env())
    print(dry.stdout.strip())
    cmd = _stxpipe() + ["submit", str(manifest), "--out", str(out), "--no-progress", "--force", "--lpips-weights", "vgg16-hed"]
    load = os.getloadavg()[0]
    s, cpu, peak, tree, rc, tail = measure(cmd, _env())
    print(
        f"submit size {a.size} iterations {a.iterations}: {s:.0f} s wall ({cpu:.0f} CPU s in the driver), largest process peak RSS {peak / GIB:.2f} GiB, "
        f"largest tree RSS {tree / GIB:.2f} GiB, rc {rc} (load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f})"
    )
    top = sorted(PEAKS.items(), key=lambda kv: -kv[1][0])[:4]
    for pid, (hwm, name) in top:  # the Ray worker (ray::StyleWorker), the driver (python -m pipeline.cli submit), raylet, ...
        print(f"  peak RSS {hwm / GIB:.2f} GiB  pid {pid}  {name}")
    print(tail.strip().splitlines()[-1] if tail.strip() else "")
    from pipeline.results import read_results

    table = read_results(str(out))
    for r in table.to_pylist() if table is not None else []:
        cols = ("status", "seconds", "iterations_run", "lpips_style", "lpips_content", "gram_style", "w2_style", "cfsd", "error")
        print("  row " + ", ".join(f"{k} {r.get(k)!r}" for k in cols if r.get(k) is not None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("stylize")
    s.add_argument("--sizes", default="2048")
    s.add_argument("--iterations", type=int, default=8)
    s.add_argument("--tile-size", default="auto", help="comma list of auto (from the budget), 0 (one piece) or px")
    s.add_argument("--scales", type=int, default=1, help="the rows' `scales` (2: a one-piece coarse scale at size/2 first)")
    s.add_argument("--coarse-side", type=int, default=None, help="the rows' `coarse_side` (default: Params'; 0: no extra coarse scale)")
    c = sub.add_parser("compare")
    c.add_argument("--size", type=int, default=512)
    c.add_argument("--tile", type=int, default=256)
    c.add_argument("--iterations", type=int, default=100)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--runs", default="one,tiled,one2,tiled2", help="comma list of one (one piece), tiled, one2 / tiled2 (scales=2)")
    c.add_argument("--pair", default="tubingen:starry_night", help="content:style, names of the shipped samples")
    m = sub.add_parser("submit")
    m.add_argument("--size", type=int, default=4096)
    m.add_argument("--iterations", type=int, default=8)
    for p in (s, c, m):
        p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "stxpipe-bench-huge"))
    a = ap.parse_args()
    {"stylize": cmd_stylize, "compare": cmd_compare, "submit": cmd_submit}[a.what](a)


if __name__ == "__main__":
    main()
