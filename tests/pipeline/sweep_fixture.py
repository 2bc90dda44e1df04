"""A synthetic style_weight sweep written as real results parts (`pipeline.results` helpers), with
the columns of issue 18 (new metrics, `loss_curve`, `snapshots`) and one output over 1024 px:
shared by the run-statistics, CLI and report tests. Values follow a known trade-off so the
frontier and the knee are known by construction."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from pipeline import results as R
from stylecore.params import Params

WEIGHTS = "vgg16-hed@sha256:0123456789abcdef"
SWEEP = (1.0, 10.0, 100.0, 1000.0, 10000.0)
# On the frontier of (lpips_content, gram_style), by style weight: x rises, y falls, the bend at 100.
XY = {1.0: (0.05, 0.90), 10.0: (0.08, 0.50), 100.0: (0.12, 0.20), 1000.0: (0.30, 0.15), 10000.0: (0.60, 0.12)}
BIG = (1100, 700)  # the one output over 1024 px: the report shows a 100% crop of it


def _image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    # A pattern, so the crop differs from a thumbnail of a flat image.
    for x in range(0, size[0], 7):
        for y in range(0, size[1], 97):
            img.putpixel((x, y), (255, 255, 255))
    img.save(path)
    return str(path)


def _curve(steps: int, sw: float) -> dict:
    step = list(range(steps))
    total = [sw * math.exp(-s / 4) + 1.0 for s in step]
    return {
        "step": step,
        "total": total,
        "content": [0.1 + 0.5 * (1 - math.exp(-s / 3)) for s in step],
        "style": [math.exp(-s / 4) + 0.01 for s in step],
        "tv": [0.01] * steps,
        "hist": [],
        "scale_start": [0, steps // 2],
    }


def write_sweep(root: Path, samples: Path, *, new_columns: bool = True) -> tuple[str, dict[str, dict]]:
    """Write the sweep under `root/out`; returns (out, {row_id: what was written})."""
    out = root / "out"
    content = str(samples / "content" / "chelsea.jpg")
    style = str(samples / "style" / "shipwreck.jpg")
    now = R.now()
    rows: list[dict] = []
    for i, sw in enumerate(SWEEP):
        for rep in range(2):  # two rows per weight: the CI has something to resample
            rid = f"sw{i}r{rep}"
            x, y = XY[sw]
            dx = 0.01 * rep  # the second replicate is a little worse on x: dominated, off the frontier
            size = BIG if (i, rep) == (2, 0) else (32, 24)
            output = _image(out / "images" / f"{rid}.png", size, (20 * i, 90, 40 * rep))
            row = dict(
                row_id=rid,
                content=content,
                style=style,
                status=R.STATUS_OK,
                output=output,
                lpips_style=0.7 - 0.1 * i,
                lpips_content=x + dx,
                gram_style=y,
                iterations=8,
                seconds=1.0 + i + 0.5 * rep,
                weights=WEIGHTS,
                lpips_weights=WEIGHTS,
                started_at=now,
                finished_at=now,
                seq=len(rows),
                params=Params(size=32, iterations=8, style_weight=sw, snapshot_every=4).to_dict(),
            )
            if new_columns:
                snaps = [_image(out / "images" / f"{rid}.step{s}.png", (24, 18), (60 * s, 20, 20)) for s in (4, 8)]
                row.update(
                    lpips_content_gray=0.9 * (x + dx),
                    w2_style=2.0 * y,
                    hist_style=0.1 * (5 - i),
                    cfsd=0.01 * (i + 1),
                    iterations_run=8 - rep,
                    stopped="cap" if rep == 0 else "converged",
                    loss_curve=_curve(8 - rep, sw),
                    snapshots=[str(Path(s).relative_to(out)) for s in snaps],
                )
            rows.append(row)
    # An ok row without gram_style (left out of the frontier, counted) and an error row.
    rows.append(dict(rows[0], row_id="nogram", gram_style=None, seq=len(rows)))
    rows.append(
        dict(rows[1], row_id="bad", status=R.STATUS_ERROR, error="ImageError: <b>boom</b>", output=None, lpips_style=None,
             lpips_content=None, gram_style=None, seq=len(rows), **({"loss_curve": None, "snapshots": None} if new_columns else {}))
    )  # fmt: skip
    R.write_part(str(out), R.to_table(rows))
    return str(out), {r["row_id"]: r for r in rows}
