"""`stxpipe distance A B`: LPIPS and L2 between two images (B is resized to A's size)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.cli.common import friendly_errors
from stylecore.catalog import WeightsUnavailableError
from stylecore.paper import PAPER_WEIGHTS


def weights_hint(weights: str) -> None:
    """Offline users mostly lack the ImageNet sets: name the stand-in that works here."""
    if weights != "vgg16-hed":
        typer.secho(
            "hint: without the ImageNet VGG-16, run with --weights vgg16-hed (`stxpipe models pull vgg16-hed`); "
            "its LPIPS values are not comparable with the paper's.",
            err=True,
        )


def load_model(weights: str, device: str = "cpu"):
    """LPIPS for `weights`; on missing weights print the registry's error plus a hint, exit 1."""
    from stylecore.lpips import load_lpips

    with friendly_errors():  # other errors (unknown name, wrong arch): one line, exit 1
        try:
            return load_lpips(weights, device)
        except WeightsUnavailableError as e:
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            weights_hint(weights)
            raise typer.Exit(1) from None


def distance(
    a: Path = typer.Argument(..., help="Reference image A."),
    b: Path = typer.Argument(
        ..., help="Image B, brought to A's exact height x width (decoded at A's long side; stretched if the aspect ratios differ)."
    ),
    weights: str = typer.Option(PAPER_WEIGHTS, "--weights", help="LPIPS VGG-16 backbone: weight set name or state_dict path."),
    size: int | None = typer.Option(None, "--size", min=16, max=8192, help="Resize A to this long side first (default: A's own size)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """LPIPS and L2 between images A and B. B is resized to A's size; L2 is the mean squared
    difference of the images in [-1, 1] (the paper's convention)."""
    model = load_model(weights, device)
    with friendly_errors():
        from stylecore.experiments import compare_images  # torch: imported when the command runs

        res = compare_images(a, b, model, size)
    if as_json:
        typer.echo(json.dumps(res.as_dict()))
        return
    typer.echo(f"A: {res.a} ({res.height}x{res.width})")
    typer.echo(f"B: {res.b} (resized to {res.height}x{res.width})")
    typer.echo(f"weights: {res.weights}")
    typer.echo(f"LPIPS  {res.lpips:.4f}")
    typer.echo(f"L2     {res.l2:.4f}  (mean squared difference, images in [-1, 1])")
