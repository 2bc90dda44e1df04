"""The `stxpipe` command: one Typer app, one module per command group, joined with add_typer."""

from __future__ import annotations

import typer

from pipeline.cli import demo, distance, experiment, manifest, models, report, results, stylize, submit
from stylecore import __version__

app = typer.Typer(
    name="stxpipe",
    help="Batch neural style transfer (Gatys et al.) with LPIPS Distance metrics, on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# In the order a user meets them: run, inspect, single images, measurements, weights.
app.command("submit")(submit.submit)
app.command("demo")(demo.demo)
app.add_typer(manifest.app, name="manifest")
app.add_typer(results.app, name="results")
app.command("report")(report.report)
app.command("stylize")(stylize.stylize)
app.command("distance")(distance.distance)
app.add_typer(experiment.app, name="experiment")
app.add_typer(models.app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stxpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Batch neural style transfer with LPIPS metrics."""


def main() -> None:
    app()
