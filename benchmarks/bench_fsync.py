"""What crash-safe results parts cost: `write_part` with and without fsync (a script, not a test).

    python benchmarks/bench_fsync.py [--parts 200] [--rows 4] [--dir /path/on/the/disk/to/test]

Writes `--parts` parts of `--rows` result rows each, first with fsync (file, then folder after
the rename: what `pipeline.results.write_part` does) and then without, into fresh temp folders
under `--dir` (default: the system temp folder; point it at the disk the outputs will live on),
and prints the time per part of each and the difference: the cost of durability per part.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pipeline import results as R


def rows(n: int, part: int) -> list[dict]:
    now = R.now()
    return [
        {
            "row_id": f"r{part:05d}-{i}",
            "content": "in/content.jpg",
            "style": "in/style.jpg",
            "status": R.STATUS_OK,
            "output": f"out/images/r{part:05d}-{i}.png",
            "lpips_style": 0.5,
            "lpips_content": 0.3,
            "iterations": 30,
            "seconds": 4.2,
            "weights": "vgg16-hed@sha256:0123456789abcdef",
            "attempt": 0,
            "seq": part * n + i + 1,
            "started_at": now,
            "finished_at": now,
            "params": {"size": 96, "style_weight": 1e4},
            "tag": f"t{i}",
        }
        for i in range(n)
    ]


def timed(parts: int, n: int, base: str | None, fsync: bool) -> float:
    """Seconds per part of writing `parts` parts of `n` rows (Arrow conversion included)."""
    with tempfile.TemporaryDirectory(prefix="bench-fsync-", dir=base) as out:
        tables = [R.to_table(rows(n, p)) for p in range(parts)]
        t0 = time.perf_counter()
        for t in tables:
            R.write_part(out, t, fsync=fsync)
        per = (time.perf_counter() - t0) / parts
        assert len(R.part_paths(out)) == parts
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=200)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--dir", default=None, help="Folder on the disk to measure (default: the temp folder).")
    args = ap.parse_args()
    timed(10, args.rows, args.dir, True)  # warm-up: imports, first folder creation
    synced = timed(args.parts, args.rows, args.dir, True)
    plain = timed(args.parts, args.rows, args.dir, False)
    print(f"{args.parts} parts x {args.rows} rows in {args.dir or tempfile.gettempdir()}")
    print(f"  with fsync (file + folder): {synced * 1e3:7.2f} ms/part")
    print(f"  without fsync:              {plain * 1e3:7.2f} ms/part")
    print(f"  cost of fsync:              {(synced - plain) * 1e3:7.2f} ms/part ({synced / plain:.1f}x)")


if __name__ == "__main__":
    main()
