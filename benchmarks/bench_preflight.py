"""Time the submit driver's preflight on a 10,000-row manifest (a script, not a test).

    python benchmarks/bench_preflight.py [--rows 10000] [--distinct 9] [--weights vgg16-hed]

The rows share a few image files (the samples, or `--distinct N` copies of them), as a sweep
does. Times: reading the manifest (resolved rows, no decode), `plan_weights` (every weight set
named, verified by its pinned sha256: the first call hashes the file, later calls in the same
process hit the hash cache), `check_inputs_readable` (one stat per distinct file) and
`check_output_writable` (a probe file). Never pulls: the weights must be present
(`stxpipe models pull vgg16-hed`). Target: preflight well under 5 s.
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
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--distinct", type=int, default=0, help="distinct content files (copies of the samples); 0: the 5 samples")
    ap.add_argument("--weights", default="vgg16-hed")
    ap.add_argument("--lpips-weights", default="vgg16-hed")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from pipeline import manifest as M
    from pipeline import preflight as P
    from stylecore.params import Params

    Params()  # the first Params validates layers
    t_import = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        root = Path(tmp)
        contents = sorted((SAMPLES / "content").glob("*.jpg"))
        styles = sorted((SAMPLES / "style").glob("*.jpg"))
        if args.distinct:
            (root / "c").mkdir()
            copies = []
            for i in range(args.distinct):
                copies.append(root / "c" / f"c{i:05d}.jpg")
                shutil.copyfile(contents[i % len(contents)], copies[-1])
            contents = copies
        specs = [
            M.RowSpec(str(contents[i % len(contents)]), (str(styles[i % len(styles)]),), {"size": 256, "style_weight": 1e3 + i})
            for i in range(args.rows)
        ]
        path = root / "bench.parquet"
        M.write_manifest(specs, path)
        base = Params.from_dict({"weights": args.weights, "lpips_weights": args.lpips_weights})

        t = time.perf_counter()
        rows = M.read_manifest(path, base=base)
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        plan = P.plan_weights(rows, args.weights, args.lpips_weights, pull=False)
        t_weights = time.perf_counter() - t
        t = time.perf_counter()
        P.plan_weights(rows, args.weights, args.lpips_weights, pull=False)
        t_weights2 = time.perf_counter() - t
        t = time.perf_counter()
        P.check_inputs_readable(rows)
        t_inputs = time.perf_counter() - t
        t = time.perf_counter()
        P.check_output_writable(str(root / "out"))
        t_out = time.perf_counter() - t

    n_files = len({r.content for r in rows} | {s for r in rows for s in r.styles})
    total = t_weights + t_inputs + t_out
    print(f"rows                    {len(rows):,} ({n_files} distinct image files)")
    print(f"weights                 {args.weights} + LPIPS {plan.metric_weights} (calibrated: {plan.lpips_calibrated})")
    print(f"imports                 {t_import:6.3f} s  (pyarrow, params; preflight of named sets needs no torch)")
    print(f"read manifest           {t_read:6.3f} s  (resolved rows, no decode)")
    print(f"plan_weights            {t_weights:6.3f} s  (first call: sha256 of each weight file)")
    print(f"plan_weights again      {t_weights2:6.3f} s  (hash cached in this process)")
    print(f"check_inputs_readable   {t_inputs:6.3f} s")
    print(f"check_output_writable   {t_out:6.3f} s")
    print(f"preflight               {total:6.3f} s  (target well under 5 s)")
    print(f"read + preflight        {t_read + total:6.3f} s")


if __name__ == "__main__":
    main()
