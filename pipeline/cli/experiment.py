"""`stxpipe experiment ...`: the founding paper's intensity (Fig. 5) and contrast (Fig. 6) tables."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import typer

from pipeline.cli.common import friendly_errors
from pipeline.cli.distance import load_model
from stylecore import paper as P

app = typer.Typer(help="Reproduce the founding paper's LPIPS measurements (Figures 5 and 6).", no_args_is_help=True)

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
