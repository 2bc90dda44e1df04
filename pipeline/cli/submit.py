"""`stxpipe submit MANIFEST`: the main job."""

from __future__ import annotations

import typer

from pipeline.cli.common import friendly_errors
from pipeline.manifest import ManifestError
from pipeline.preflight import PreflightError
from pipeline.ray_session import ResourceError, SharedOutputError
from pipeline.results import OutputLockedError
from pipeline.runner import SubmitConfig
from pipeline.runner import submit as run_submit
from pipeline.scheduler import NoWorkersError

_D = SubmitConfig(manifest="")


def submit(
    manifest: str = typer.Argument(..., help="Parquet manifest (path or URI)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output folder or URI [default: ./stxpipe-out/<manifest name>]."),
    address: str | None = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster to join; none: an embedded local Ray."),
    workers: int = typer.Option(_D.workers, min=1, help="Worker actors (each holds the models)."),
    gpus_per_worker: float = typer.Option(_D.gpus_per_worker, min=0, help="GPUs per worker (fractions share a GPU)."),
    cpus_per_worker: float = typer.Option(_D.cpus_per_worker, min=0, help="CPUs per worker."),
    batch_size: int = typer.Option(
        _D.batch_size,
        min=1,
        help="Most rows per batch (rows of one output size optimise together; batches also stop at the memory budget).",
    ),
    memory_per_worker: str | None = typer.Option(
        None,
        help="Bytes a worker's batch may peak at, e.g. 6G or 512M; batches are filled by predicted bytes up to it "
        "[default: 80% of the device: a GPU's memory x --gpus-per-worker, or the available RAM / --workers].",
    ),
    weights: str | None = typer.Option(None, help="Weight set for rows that name none (e.g. vgg16-hed offline)."),
    lpips_weights: str | None = typer.Option(None, help="LPIPS backbone for rows that name none, and for the Distance metrics."),
    retries: int = typer.Option(_D.retries, min=0, help="Extra attempts of a row whose worker process died while it ran alone."),
    row_timeout: float | None = typer.Option(
        None,
        min=1,
        help="Seconds a row may take before its batch is cancelled and retried alone [default: from size x iterations, generous].",
    ),
    start_timeout: float = typer.Option(_D.start_timeout, min=1, help="Seconds a worker may take to start (models loaded) or restart."),
    force: bool = typer.Option(False, "--force", help="Rerun rows that are already ok."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; run nothing."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Run the valid rows of a manifest with invalid ones."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Run every row of a manifest on Ray workers; write images and the results table."""
    from stylecore.memory import parse_bytes

    try:
        memory = parse_bytes(memory_per_worker) if memory_per_worker else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--memory-per-worker") from None
    cfg = SubmitConfig(
        manifest=manifest,
        out=out,
        address=address,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        batch_size=batch_size,
        memory_per_worker=memory,
        weights=weights,
        lpips_weights=lpips_weights,
        retries=retries,
        row_timeout=row_timeout,
        start_timeout=start_timeout,
        force=force,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
    )
    with friendly_errors(ManifestError, PreflightError, OutputLockedError, ResourceError, SharedOutputError, NoWorkersError):
        summary = run_submit(cfg, progress=progress, echo=typer.echo)
    if not dry_run:
        typer.echo(summary.line())
    if summary.interrupted:
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(2)
