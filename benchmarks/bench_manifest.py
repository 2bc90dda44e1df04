"""Build and validate a 10,000-row manifest whose rows share images (a script, not a test).

    python benchmarks/bench_manifest.py [--contents 100] [--styles 10]

100 content x 10 style images (copies of the samples under new names, so every file is a
distinct decode) x a 5 x 2 sweep = 10,000 rows. Prints the time of each step; the target is
build + validate < 10 s on a 2-core machine. Imports (pyarrow, torch via Params' layer check)
are timed separately because every CLI call pays them once.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contents", type=int, default=100)
    ap.add_argument("--styles", type=int, default=10)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    t0 = time.perf_counter()
    from pipeline import manifest as M
    from stylecore.params import Params

    Params()  # first Params validates layers, which imports torch: count it as import time
    t_import = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        root = Path(tmp)
        sources = {"content": sorted((SAMPLES / "content").glob("*.jpg")), "style": sorted((SAMPLES / "style").glob("*.jpg"))}
        for kind, n in (("content", args.contents), ("style", args.styles)):
            (root / kind).mkdir()
            for i in range(n):
                src = sources[kind][i % len(sources[kind])]
                shutil.copyfile(src, root / kind / f"{kind}{i:04d}{src.suffix}")

        config = M.BuildConfig(
            contents=(str(root / "content"),),
            styles=(str(root / "style"),),
            params=("size=256", "init=noise"),
            sweeps=("style_layers=pool1;pool2;pool3;pool4;pool5", "content_weight=0,1"),
            relative=True,
        )
        out = root / "bench.parquet"
        t = time.perf_counter()
        summary = M.build_manifest(config, out)
        t_build = time.perf_counter() - t

        t = time.perf_counter()
        report = M.validate_manifest(out, threads=args.threads)
        t_validate = time.perf_counter() - t

        t = time.perf_counter()
        rows = M.read_manifest(out)
        t_read = time.perf_counter() - t

    assert report.ok, report.problems[:5]
    assert len(rows) == summary.rows == len({r.row_id for r in rows})
    print(f"rows                 {summary.rows:,} ({summary.contents} contents x {summary.styles} styles x 10 param sets)")
    print(f"distinct files       {report.files_checked} (each decoded once, {args.threads} threads)")
    print(f"imports              {t_import:6.2f} s  (pyarrow, torch via the first Params)")
    print(f"build + write        {t_build:6.2f} s")
    print(f"validate (+decode)   {t_validate:6.2f} s")
    print(f"build + validate     {t_build + t_validate:6.2f} s  (target < 10 s)")
    print(f"read (no decode)     {t_read:6.2f} s")


if __name__ == "__main__":
    main()
