"""`stxpipe experiment ...`: the founding paper's intensity (Fig. 5) and contrast (Fig. 6) tables, and
its Figure 7 claim (LPIPS vs L2 content loss) run on a manifest of pairs (`content-loss`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import typer

from pipeline.cli.common import friendly_errors
from pipeline.cli.distance import load_model
from stylecore import paper as P

app = typer.Typer(help="Reproduce the founding paper's LPIPS measurements (Figures 5, 6 and 7).", no_args_is_help=True)

WEIGHTS_HELP = "LPIPS VGG-16 backbone: weight set name or state_dict path (the paper: vgg16-imagenet; offline: vgg16-hed)."


def _say_weights(spec: str, label: str) -> None:
    typer.echo(f"weights: {label}")
    if spec != P.PAPER_WEIGHTS:
        paper = ", ".join(f"{lp:.4f}" for _, _, lp in P.PAPER_INTENSITY)
        typer.echo(
            f"note: LPIPS here uses '{spec}', not the ImageNet VGG-16 ({P.PAPER_WEIGHTS}) of the paper: "
            f"the LPIPS column is not comparable with the paper's numbers ({paper})."
        )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with friendly_errors(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    typer.echo(f"wrote {path}")


@app.command("intensity")
def intensity(
    weights: str = typer.Option(P.PAPER_WEIGHTS, "--weights", help=WEIGHTS_HELP),
    size: int = typer.Option(256, "--size", min=16, max=1024, help="Side of the flat test images in px."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write the table to this CSV file."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Figure 5: white, black and gray images (in [-1, 1]); L2 (mean squared) and LPIPS per pair."""
    model = load_model(weights, device)
    with friendly_errors():
        from stylecore import experiments as X  # torch: imported when the command runs

        rows = X.intensity(model, size)
    _say_weights(weights, model.weights_label)
    typer.echo(f"images: {size}x{size} flat; white = +1, gray = 0, black = -1; L2 = mean squared difference")
    typer.echo("")
    paper = {name: (l2, lp) for name, l2, lp in P.PAPER_INTENSITY}
    _table(
        ("pair", "L2", "LPIPS", "paper L2", "paper LPIPS"),
        [(r.pair, f"{r.l2:.6g}", f"{r.lpips:.4f}", f"{paper[r.pair][0]:g}", f"{paper[r.pair][1]:.4f}") for r in rows],
    )
    if csv_path is not None:
        _write_csv(
            csv_path,
            ("pair", "l2", "lpips", "paper_l2", "paper_lpips", "weights"),
            [(r.pair, r.l2, r.lpips, paper[r.pair][0], paper[r.pair][1], model.weights_label) for r in rows],
        )


@app.command("contrast")
def contrast(
    image: Path = typer.Argument(..., help="Image whose contrast is reduced."),
    weights: str = typer.Option(P.PAPER_WEIGHTS, "--weights", help=WEIGHTS_HELP),
    size: int = typer.Option(256, "--size", min=16, max=8192, help="Resize the image to this long side first."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write the table to this CSV file."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Figure 6: three contrast levels x_c = m + c (x - m) of IMAGE (m: per-channel mean,
    c = 1, 0.75, 0.5); L2 and LPIPS between level 1 and the others, and their ratio."""
    from stylecore.images import load_tensor

    model = load_model(weights, device)
    with friendly_errors():
        img = load_tensor(image, size)
        from stylecore import experiments as X

        res = X.contrast(img, model)
    _say_weights(weights, model.weights_label)
    factors = ", ".join(f"{c:g}" for c in res.factors)
    typer.echo(
        f"image: {image} ({img.shape[-2]}x{img.shape[-1]}); contrast factors {factors} around the per-channel mean; "
        "L2 = mean squared difference in [-1, 1]"
    )
    typer.echo("")
    table = [(r.pair, f"{c:g}", f"{r.l2:.6f}", f"{r.lpips:.5f}") for r, c in zip(res.rows, res.factors[1:])]
    table.append(("ratio (1-3)/(1-2)", "", f"{res.l2_ratio:.2f}x", f"{res.lpips_ratio:.2f}x"))
    _table(("pair", "factor", "L2", "LPIPS"), table)
    typer.echo("paper: both grow about 4x (L2) / 3.6x (LPIPS) from level 1-2 to level 1-3")
    if csv_path is not None:
        _write_csv(
            csv_path,
            ("pair", "factor", "l2", "lpips", "weights"),
            [(r.pair, c, r.l2, r.lpips, model.weights_label) for r, c in zip(res.rows, res.factors[1:])]
            + [("ratio", "", res.l2_ratio, res.lpips_ratio, model.weights_label)],
        )


SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ARM_COLUMN, PAIR_COLUMN = "experiment_arm", "experiment_pair"
ARMS = ("mse", "lpips")


Pair = tuple[str, tuple[str, ...], dict, dict]  # content, styles, explicit params, carried columns


def _sample_pairs() -> list[Pair]:
    contents = sorted((SAMPLES / "content").glob("*.jpg"))
    styles = sorted((SAMPLES / "style").glob("*.jpg"))
    return [(str(c), (str(s),), {}, {}) for c in contents for s in styles]


def _manifest_pairs(path: str) -> list[Pair]:
    from pipeline.manifest import ManifestError, non_default_params, read_manifest

    with friendly_errors(ManifestError, OSError):
        rows = read_manifest(path)
    return [(r.content, r.styles, non_default_params(r.params), r.extra) for r in rows]


@app.command("content-loss")
def content_loss(
    manifest: str | None = typer.Argument(
        None, help="Manifest of content/style pairs [default: the shipped samples, every content x style]."
    ),
    out: str = typer.Option("stxpipe-out/experiment-content-loss", "--out", "-o", help="Output folder of both arms' runs."),
    size: int | None = typer.Option(None, "--size", min=16, help="Output long side for every row [default: the manifest's; samples: 128]."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Steps per scale for every row [default: the manifest's]."),
    style_weight: float | None = typer.Option(
        None, "--style-weight", min=0, help="The one style weight of both arms [default: the manifest's]."
    ),
    weights: str | None = typer.Option(None, "--weights", help="Transfer weight set for rows that name none (offline: vgg16-hed)."),
    lpips_weights: str | None = typer.Option(
        None, "--lpips-weights", help="LPIPS backbone of the content loss (rows that name none) and of the Distance metric."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray worker actors."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Most rows per batch."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Figure 7: stylise every pair twice, with the L2 (mse) and with the LPIPS content loss, all
    else equal, through `submit` into OUT (queryable like any run; rerunning resumes); then each
    arm's mean style Distance (lpips_style) with a 95% bootstrap CI, the paired difference with
    its CI, and whether the paper's claim (LPIPS gives a lower style Distance) holds on the set."""
    import json

    from pipeline import results as R
    from pipeline.manifest import RowSpec, read_manifest, write_manifest
    from pipeline.runner import SubmitConfig, submit
    from pipeline.storage import join
    from stylecore.experiments import content_loss_comparison

    pairs = _manifest_pairs(manifest) if manifest else _sample_pairs()
    if size is None and manifest is None:
        size = 128
    overrides = {k: v for k, v in (("size", size), ("iterations", iterations), ("style_weight", style_weight)) if v is not None}
    specs = [
        RowSpec(content, styles, {**params, **overrides, "content_loss": arm}, extra={**extra, ARM_COLUMN: arm, PAIR_COLUMN: i})
        for i, (content, styles, params, extra) in enumerate(pairs)
        for arm in ARMS
    ]
    arms_manifest = join(out, "content-loss-arms.parquet")
    with friendly_errors(OSError, ValueError):
        from pipeline import storage

        storage.makedirs(out)
        write_manifest(specs, arms_manifest)
        ids = {r.row_id: (r.extra[PAIR_COLUMN], r.extra[ARM_COLUMN]) for r in read_manifest(arms_manifest)}
    echo = (lambda _line: None) if as_json else typer.echo
    echo(f"{len(pairs)} pairs x 2 arms (content_loss mse, lpips) -> {out}")
    cfg = SubmitConfig(arms_manifest, out, workers=workers, batch_size=batch_size, weights=weights, lpips_weights=lpips_weights)
    from pipeline.manifest import ManifestError
    from pipeline.preflight import PreflightError
    from pipeline.ray_session import ResourceError, SharedOutputError
    from pipeline.scheduler import NoWorkersError

    with friendly_errors(ManifestError, PreflightError, R.OutputLockedError, ResourceError, SharedOutputError, NoWorkersError):
        summary = submit(cfg, progress=progress and not as_json, echo=echo)
        table = R.read_results(out)
    echo(summary.line())
    if summary.interrupted:
        raise typer.Exit(130)
    values: dict[int, dict[str, float]] = {}
    lpips_label = ""
    for r in table.to_pylist() if table is not None else []:
        if r["row_id"] in ids and r["status"] == R.STATUS_OK and r["lpips_style"] is not None:
            pair, arm = ids[r["row_id"]]
            values.setdefault(pair, {})[arm] = float(r["lpips_style"])
            lpips_label = r["lpips_weights"] or lpips_label
    complete = sorted(p for p, v in values.items() if len(v) == 2)
    res = content_loss_comparison([values[p]["mse"] for p in complete], [values[p]["lpips"] for p in complete], seed=seed)
    if as_json:
        typer.echo(
            json.dumps({**res.as_dict(), "pairs": len(pairs), "failed_rows": summary.failed, "lpips_weights": lpips_label, "out": out})
        )
        return
    typer.echo("")
    if lpips_label:
        typer.echo(f"style Distance: lpips_style on {lpips_label}")
    _table(
        ("arm (content loss)", "n", "mean lpips_style", f"{res.level:.0%} CI"),
        [(a.arm, str(a.n), f"{a.mean:.4f}", f"[{a.lo:.4f}, {a.hi:.4f}]") for a in (res.mse, res.lpips)]
        + [("lpips - mse (paired)", str(res.n_pairs), f"{res.diff[0]:+.4f}", f"[{res.diff[1]:+.4f}, {res.diff[2]:+.4f}]")],
    )
    if len(complete) < len(pairs):
        typer.echo(f"note: {len(pairs) - len(complete)} pair(s) lack an ok row in one arm and are left out (see `stxpipe results`).")
    typer.echo(res.sentence())
