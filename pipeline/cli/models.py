"""`stxpipe models ...`: list and pull weight sets."""

from __future__ import annotations

import typer

from pipeline.cli.common import friendly_errors
from stylecore import catalog as C

app = typer.Typer(help="List and pull VGG weight sets.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Name, architecture, presence, path and sha256 of every weight set."""
    from stylecore import weights as W  # torch: imported when the command runs

    rows = [("name", "arch", "present", "path", "sha256")]
    for name, ws in W.WEIGHT_SETS.items():
        present = W.is_present(ws)
        if not ws.pretrained:
            rows.append((name, ws.arch, "random", "-", "random (untrained, tests only)"))
            continue
        # Present: the file's own hash (verification against the pins happens on use and on pull).
        sha = W.file_sha256(ws.path()) if present else (ws.sha256 or f"{ws.sha256_prefix}… (torchvision prefix)")
        rows.append((name, ws.arch, "yes" if present else "no", str(ws.path()), sha))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    typer.echo(f"\ncache: {W.cache_dir()} (set STXPIPE_HOME to move it); torchvision sets live in torch's hub cache")


@app.command("pull")
def pull(
    name: str = typer.Argument(..., help="Weight set to fetch: " + ", ".join(n for n, ws in C.WEIGHT_SETS.items() if ws.pretrained)),
    force: bool = typer.Option(False, "--force", help="Fetch again even if present."),
) -> None:
    """Fetch a weight set into the cache and verify its sha256 (parallel pulls wait for each other)."""
    import sys

    from stylecore import weights as W

    with friendly_errors():
        # A byte-level bar on a terminal; otherwise (logs, CI) a line per 10%.
        path = W.pull(name, force=force, progress=typer.echo, bar=sys.stderr.isatty())
        typer.echo(str(path))
