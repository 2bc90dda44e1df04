"""`stxpipe manifest ...`: build, validate and show Parquet manifests (logic in pipeline.manifest)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline import manifest as M
from pipeline.cli.common import friendly_errors
from stylecore.params import Params

app = typer.Typer(help="Build, validate and show Parquet manifests of (content, style, params) rows.", no_args_is_help=True)


@app.command("build")
def build(
    output: Path = typer.Option(..., "-o", "--output", help="Manifest to write (.parquet)."),
    content: list[str] = typer.Option([], "--content", "-c", help="Content image file, folder or glob ('**' recurses); repeatable."),
    style: list[str] = typer.Option([], "--style", "-s", help="Style image file, folder or glob; repeatable."),
    csv: Path | None = typer.Option(
        None, "--csv", help="CSV with content,style columns instead (other columns carried through; 'a.jpg;b.jpg' in style = blend)."
    ),
    pair: bool = typer.Option(
        False, "--pair/--cross", help="Zip contents with styles in order, or (default) every content with every style."
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="key=value fixed for every row, e.g. size=256 or style_layers=conv1_1,conv2_1; repeatable."
    ),
    sweep: list[str] = typer.Option(
        [],
        "--sweep",
        help="key=v1,v2,... : one row per value (repeatable; several sweeps make a grid). List params separate values "
        "with ';' and items with ',': 'style_layers=pool1;pool2' (quote it in the shell).",
    ),
    relative: bool = typer.Option(
        False, "--relative/--absolute", help="Write local paths relative to the manifest's folder (portable) or absolute (default)."
    ),
) -> None:
    """Write a manifest: the cross product (or --pair zip) of contents and styles, times the --sweep grid."""
    config = M.BuildConfig(
        contents=tuple(content),
        styles=tuple(style),
        csv=str(csv) if csv else None,
        pair=pair,
        params=tuple(param),
        sweeps=tuple(sweep),
        relative=relative,
    )
    with friendly_errors():
        summary = M.build_manifest(config, output)
    for line in summary.lines():
        typer.echo(line)


@app.command("validate")
def validate(
    manifest: str = typer.Argument(..., help="Manifest path or URI (file://, s3://, gs://)."),
    files: bool = typer.Option(True, "--files/--no-files", help="Check that every image exists and decodes (each distinct file once)."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Image size guard (default: the engine's)."),
    weights: str | None = typer.Option(
        None, "--weights", help="Check layer names against the weight set the run will use (rows that set `weights` keep theirs)."
    ),
) -> None:
    """Report every problem (row, column, what to do); exit 1 if there is any."""
    with friendly_errors():
        base = Params(weights=weights) if weights else None
        report = M.validate_manifest(manifest, check_files=files, max_pixels=max_pixels, base=base)
    if report.ok:
        typer.echo(report.summary())
        return
    for line in M.format_problems(report.problems):
        typer.echo(line)
    typer.secho(report.summary(), err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


@app.command("show")
def show(
    manifest: str = typer.Argument(..., help="Manifest path or URI."),
    limit: int = typer.Option(50, "--limit", "-n", min=0, help="Rows to print (0 = all)."),
) -> None:
    """The rows with their resolved params (only those that differ from the defaults), and counts."""
    with friendly_errors():
        report = M.validate_manifest(manifest, check_files=False)
    for line in M.describe_manifest(report, limit=limit or None):
        typer.echo(line)
