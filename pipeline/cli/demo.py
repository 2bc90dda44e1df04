"""`stxpipe demo`: parse options, call `pipeline.demo.run_demo`, print where everything is."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from pipeline.cli.common import friendly_errors
from pipeline.demo import DemoConfig, run_demo


def demo(
    out: Path = typer.Option(Path("stxpipe-demo"), "--out", "-o", help="Folder for the manifest, images, results and report."),
    size: int = typer.Option(DemoConfig.size, "--size", min=16, max=512, help="Long side of the outputs in px."),
    iterations: int = typer.Option(DemoConfig.iterations, "--iterations", min=1, max=1000, help="L-BFGS steps per image."),
    download: bool = typer.Option(True, "--download/--no-download", help="Try to download the ImageNet weights when missing."),
    force: bool = typer.Option(False, "--force", help="Rerun rows that are already done in OUT."),
) -> None:
    """Stylise the sample images (8 rows), write the results and the HTML report, show where they are."""
    from stylecore.weights import WeightsError

    with friendly_errors(WeightsError):
        r = run_demo(DemoConfig(str(out), size, iterations, download, force), say=typer.echo)
    q = f'stxpipe results query {r.out} "SELECT params.style_weight, count(*) AS n, avg(lpips_style) AS to_style, avg(lpips_content) AS to_content FROM results GROUP BY 1 ORDER BY 1"'
    lines = [
        "",
        f"demo done in {r.seconds:.0f} s: {r.ok} ok, {r.failed} failed, {r.skipped} already done",
        f"  weights:  {r.weights} + {r.lpips_weights} (LPIPS)",
        f"  manifest: {r.manifest}",
        f"  images:   {os.path.join(r.out, 'images')}/",
        f"  results:  {os.path.join(r.out, 'results')}/ (Parquet)",
        f"  report:   {r.report}   (open it in a browser; no server needed)",
        "next:",
        f"  stxpipe results summary {r.out}",
        f"  {q}",
    ]
    typer.echo("\n".join(lines))
    if r.failed:
        raise typer.Exit(1)
