"""`stxpipe report OUT -o report.html`: one self-contained HTML report (logic in pipeline.report)."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.common import friendly_errors
from pipeline.report import THUMB_PX, write_report


def report(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="HTML file to write (default: OUT/report.html for a local OUT)."),
    title: str | None = typer.Option(None, "--title", help="Page title (default: from OUT's name)."),
    thumb: int = typer.Option(THUMB_PX, "--thumb", min=16, max=THUMB_PX, help="Thumbnail long side in px."),
) -> None:
    """Write one HTML file (images inlined, no network): contact sheet, errors, grid, LPIPS plot."""
    with friendly_errors():
        if output is None:
            if "://" in out:
                raise ValueError(f"OUT {out} is remote: give -o FILE.html for the report")
            output = Path(out) / "report.html"
        info = write_report(out, output, title=title, thumb=thumb)
    typer.echo(
        f"wrote {info.path}: {info.rows} rows ({info.ok} ok, {info.errors} error), {info.images} thumbnails, {info.bytes / 1e6:.1f} MB"
    )
    for m in info.missing:
        typer.secho(f"warning: image not shown: {m}", err=True, fg=typer.colors.YELLOW)
