"""Submit overhead: 8 rows at 64 px on 2 workers, wall time against the summed per-row compute.

Target: wall <= 1.3 x (summed compute / workers) + a fixed start-up under 20 s.
Run: python benchmarks/bench_submit.py [--rows 8] [--size 64] [--iterations 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline import results as R
from pipeline.manifest import write_manifest
from pipeline.runner import SubmitConfig, submit

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    a = ap.parse_args()
    contents = sorted((SAMPLES / "content").glob("*.jpg"))
    styles = sorted((SAMPLES / "style").glob("*.jpg"))
    params = {"size": a.size, "iterations": a.iterations, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / "bench.parquet"
        write_manifest(
            [
                {"content": str(contents[i % len(contents)]), "style": str(styles[i % len(styles)]), "params": {**params, "seed": i}}
                for i in range(a.rows)
            ],
            m,
        )
        t0, t0_utc = time.perf_counter(), R.now()
        s = submit(
            SubmitConfig(str(m), str(Path(tmp) / "out"), workers=a.workers, batch_size=a.batch_size), progress=False, echo=lambda _: None
        )
        wall = time.perf_counter() - t0
        t = R.read_results(str(Path(tmp) / "out")).to_pylist()
    compute = sum(r["seconds"] for r in t)
    first = min(r["started_at"] for r in t)
    ideal = compute / a.workers
    print(f"rows: {s.ok} ok, {s.failed} failed; {a.workers} workers, batches of {a.batch_size}, {a.size} px, {a.iterations} steps")
    print(f"wall time:                 {wall:7.1f} s")
    print(f"summed per-row compute:    {compute:7.1f} s  (ideal wall on {a.workers} workers: {ideal:.1f} s)")
    startup = (first - t0_utc).total_seconds()  # Ray start, actors up, models loaded
    run = wall - startup
    print(f"start-up (submit -> first batch starts): {startup:.1f} s   (target < 20 s)")
    print(f"run phase: {run:.1f} s = {run / ideal:.2f}x the ideal (target <= 1.3x)")
    ok = startup < 20 and run <= 1.3 * ideal
    print(f"target: {'MET' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
