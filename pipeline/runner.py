"""`stxpipe submit`: check everything, then run a manifest's rows on Ray actors.

The order is the point: the manifest is validated, every weight set is resolved (pulled where
it can be, refused in seconds where it can't), inputs and the output root are checked and the
output root is locked, all in the driver before any actor starts; only then Ray comes up.

Why Ray Core actors and not Ray Data `map_batches`: Ray Data retries a failed batch as a whole
and, past its retries, fails the whole dataset, so one poison row would sink the run. Here the
driver owns the queue (`pipeline.scheduler`): deadlines, retries of single rows, timeouts; the
actors (`pipeline.worker`) write images and hand their rows back; the driver writes each
finished batch's results part at once, so a driver crash loses only the rows in flight.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline import results as R
from pipeline import storage
from pipeline.batching import (  # noqa: F401 - re-exported: tests and callers import them from here
    ROW_OVERHEAD_S,
    SECONDS_PER_PIXEL_STEP,
    Batch,
    batch_peak,
    fit_rows,
    make_batches,
    row_budget,
    task_for,
    worker_budget,
    worker_device,
)
from pipeline.manifest import ManifestError, ManifestRow, validate_manifest
from pipeline.scheduler import Died, Done, Failed, InitFailed, Outcome, RowTask, Scheduler, SchedulerConfig
from pipeline.worker import CHAOS_ENV, StyleWorker, error_row  # noqa: F401 (CHAOS_ENV: the tests' fault hook)
from stylecore.params import Params

# Passed to workers on a cluster (an embedded Ray inherits the whole environment anyway): where
# object storage is, never secrets (they would sit in Ray's cluster state and dashboard, and
# override the nodes' own, self-refreshing credentials) nor this machine's cache paths.
FORWARD_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")


@dataclass(frozen=True)
class SubmitConfig:
    """Everything `stxpipe submit` was asked for; defaults written once, read by the CLI."""

    manifest: str
    out: str | None = None  # default ./stxpipe-out/<manifest stem>
    address: str | None = None  # None and no RAY_ADDRESS: an embedded local Ray
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4  # an upper bound on rows per batch; batches are filled by predicted bytes
    memory_per_worker: int | None = None  # bytes a worker's batch may peak at (None: BUDGET_FRACTION of its device)
    weights: str | None = None  # weight set for rows that name none
    lpips_weights: str | None = None  # LPIPS backbone for rows that name none, and for the metrics
    retries: int = 2  # extra solo attempts of a row whose worker process died
    row_timeout: float | None = None  # seconds per row before its batch is cancelled (None: derived)
    start_timeout: float = 300.0  # seconds for a worker to start (models loaded) or restart
    force: bool = False
    dry_run: bool = False
    skip_invalid: bool = False

    def output(self) -> str:
        if self.out:
            return self.out
        stem = os.path.splitext(os.path.basename(self.manifest.rstrip("/")))[0]
        return os.path.join("stxpipe-out", stem)

    def ray_address(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None


@dataclass
class Plan:
    """What a submit will do (the `--dry-run` output)."""

    manifest: str
    out: str
    total: int
    to_run: list[ManifestRow]
    done: int
    invalid: int
    metric_weights: str
    resources: str
    lpips_calibrated: bool = True
    notes: tuple[str, ...] = ()
    next_seq: int = 1  # the sequence number of the first result row this run writes
    batches: list[Batch] = field(default_factory=list)  # to_run packed by predicted bytes (rows too big left out)
    too_big: dict[int, str] = field(default_factory=dict)  # manifest index -> why the row cannot fit a worker
    budget: int | None = None  # bytes per worker the batches were packed to

    def lines(self, max_batches: int = 40) -> list[str]:
        from stylecore.memory import fmt_bytes

        calibrated = "" if self.lpips_calibrated else " (not the paper's ImageNet VGG-16: not comparable with its numbers)"
        budget = fmt_bytes(self.budget) if self.budget else "none (no device memory to read here: packed by --batch-size only)"
        out = [
            f"manifest: {self.manifest} ({self.total} rows)",
            f"output:   {self.out}",
            f"rows to run: {len(self.to_run)}; already done (ok): {self.done}; invalid, skipped: {self.invalid}",
            f"LPIPS metric weights: {self.metric_weights}{calibrated}",
            f"resources: {self.resources}",
            f"memory per worker: {budget}; {len(self.batches)} batch(es):",
        ]
        for i, b in enumerate(self.batches[:max_batches], start=1):
            p = b.rows[0].params
            tiles = {r.params.tile_size for r in b.rows if r.params.tile_size}
            tiled = f", tiled ({', '.join(f'{t} px' for t in sorted(tiles))})" if tiles else ""
            ids = ", ".join(str(r.index) for r in b.rows[:8]) + (" ..." if len(b.rows) > 8 else "")
            out.append(f"  batch {i}: {len(b.rows)} row(s) [{ids}] at size {p.size}{tiled}: predicted peak {fmt_bytes(b.peak)}")
        if len(self.batches) > max_batches:
            out.append(f"  ... and {len(self.batches) - max_batches} more batch(es)")
        for index, why in list(self.too_big.items())[:10]:
            out.append(f"  row {index} cannot run: {why}")
        if len(self.too_big) > 10:
            out.append(f"  ... and {len(self.too_big) - 10} more row(s) that cannot run")
        return out


@dataclass
class SubmitSummary:
    out: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    dashboard_url: str | None = None
    workers: set = field(default_factory=set)

    def line(self) -> str:
        state = "interrupted" if self.interrupted else "done"
        return (
            f"{state}: {self.ok} ok, {self.failed} failed, {self.skipped} already done, "
            f"{self.seconds:.1f} s; results in {R.results_dir(self.out)}"
        )


# ------------------------------------------------------------------------------------ planning


def _rows(cfg: SubmitConfig, lpips_weights: str | None) -> tuple[list[ManifestRow], int]:
    """Valid rows resolved against the flags' weight sets, and the manifest's row count."""
    changes = {k: v for k, v in (("weights", cfg.weights), ("lpips_weights", lpips_weights)) if v}
    base = Params.from_dict(changes) if changes else None
    report = validate_manifest(cfg.manifest, check_files=False, base=base)
    if report.problems and not (cfg.skip_invalid and all(p.row is not None for p in report.problems)):
        raise ManifestError(report.path, report.problems)
    return list(report.rows), report.n_rows


def plan(cfg: SubmitConfig, say: Callable[[str], None] = print) -> Plan:
    """Validate the manifest, resolve its weight sets (pulling what can be pulled, except in a
    dry run), find the rows already done. Raises ManifestError or PreflightError."""
    from pipeline.preflight import plan_weights

    rows, total = _rows(cfg, cfg.lpips_weights)
    wp = plan_weights(rows, cfg.weights, cfg.lpips_weights, pull=not cfg.dry_run, say=say)
    if wp.lpips_fallback:  # rows that name no LPIPS set now use the fallback: their ids follow
        rows, total = _rows(cfg, wp.lpips_fallback)
    out = cfg.output()
    stored = R.read_all(out)  # read once: which rows are done, and where `seq` goes on
    done = set() if cfg.force else R.done_ids(out, stored)
    to_run = [r for r in rows if r.row_id not in done]
    where = cfg.ray_address() or "embedded local Ray (127.0.0.1)"
    res = f"{cfg.workers} worker(s) x ({cfg.cpus_per_worker:g} CPU, {cfg.gpus_per_worker:g} GPU), batches of {cfg.batch_size}, on {where}"
    budget, device = worker_budget(cfg), worker_device(cfg)
    fitting, too_big = fit_rows(to_run, budget, device)
    pl = Plan(
        cfg.manifest,
        out,
        total,
        to_run,
        len(rows) - len(to_run),
        total - len(rows),
        wp.metric_weights,
        res,
        wp.lpips_calibrated,
        tuple(wp.notes),
        R.next_seq(out, stored),
        make_batches(fitting, cfg.batch_size, budget, device),
        too_big,
        budget,
    )
    return pl


# ------------------------------------------------------------------------------------ the pool


def _tail(text: str, n: int = 3) -> str:
    """The last lines of an error (a remote traceback ends with the exception that matters)."""
    lines = [ln.rstrip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:1000]


class RayPool:
    """`pipeline.scheduler.Pool` on Ray actors; Ray restarts a worker whose process dies."""

    def __init__(self, n: int, args: tuple, options: dict):
        import ray

        self.size = n
        worker = ray.remote(StyleWorker)
        # Any: Ray's stubs type `.options(...).remote()` as a handle-or-class union whose method
        # handles lack `.remote`; at run time these are always ActorHandles.
        self.actors: list[Any] = [worker.options(**options).remote(*args) for _ in range(n)]

    def run(self, slot: int, batch: Sequence[RowTask]) -> Hashable:
        return self.actors[slot].__call__.remote(list(batch))

    def ping(self, slot: int) -> Hashable:
        return self.actors[slot].ping.remote()

    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[tuple[Hashable, Outcome]]:
        import ray

        ready, rest = ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return [(h, self._outcome(h)) for h in ready]

    @staticmethod
    def _outcome(handle) -> Outcome:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            got = ray.get(handle)
        except RayActorError as e:
            return InitFailed(_tail(str(e))) if e.actor_init_failed else Died(_tail(str(e)))
        except RayTaskError as e:
            return Failed(_tail(str(e)))
        return Done(got if isinstance(got, list) else [])

    def replace(self, slot: int) -> None:
        import ray

        ray.kill(self.actors[slot], no_restart=False)  # Ray starts a fresh process for the actor

    def close(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                pass  # already gone


class _Results:
    """The driver's side of results: parts with sequence numbers, counts and the progress bar."""

    def __init__(self, out: str, total: int, summary: SubmitSummary, progress: bool, first_seq: int):
        from tqdm import tqdm

        self.out, self.total, self.summary = out, total, summary
        self.seq = itertools.count(first_seq)
        self.bar = tqdm(total=total, unit="row", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def rows(self, rows: list[dict]) -> None:
        if not rows:
            return
        for r in rows:
            r["seq"] = next(self.seq)
        R.write_part(self.out, R.to_table(rows))
        s = self.summary
        for r in rows:
            s.ok += r["status"] == R.STATUS_OK
            s.failed += r["status"] != R.STATUS_OK
            if r.get("worker"):
                s.workers.add(r["worker"])
        self.bar.set_postfix(ok=s.ok, failed=s.failed, left=self.total - s.ok - s.failed, refresh=False)
        self.bar.n = s.ok + s.failed
        self.bar.refresh()

    def failed(self, items: list[tuple[RowTask, str]]) -> None:
        self.rows([error_row(t, message) for t, message in items])


# ------------------------------------------------------------------------------------ submit


def submit(cfg: SubmitConfig, progress: bool = True, echo: Callable[[str], None] = print) -> SubmitSummary:
    """Run every row of the manifest not yet `ok` (all with `force`); see the module docstring.
    Raises ManifestError, PreflightError, OutputLockedError, ResourceError or NoWorkersError
    (each message names the cause and the fix); finished rows are kept whatever happens."""
    from pipeline.preflight import check_output_writable

    t0 = time.perf_counter()
    if cfg.dry_run:
        pl = plan(cfg, say=echo)
        for line in [*pl.notes, *pl.lines()]:
            echo(line)
        return SubmitSummary(pl.out, skipped=pl.done)
    out = cfg.output()
    out = out if storage.is_uri(out) else os.path.abspath(out)
    check_output_writable(out)
    with R.lock_output(out, echo=echo):  # before planning: which rows are done can't change under us
        pl = plan(cfg, say=echo)
        for note in pl.notes:
            echo(note)
        summary = SubmitSummary(out, skipped=pl.done)
        if not pl.to_run:
            echo(f"nothing to run: all {pl.done} rows of {cfg.manifest} are already ok in {out} (use --force to rerun)")
            return summary
        _run(cfg, pl, out, summary, progress, echo)
    summary.seconds = time.perf_counter() - t0
    return summary


def _run(cfg: SubmitConfig, pl: Plan, out: str, summary: SubmitSummary, progress: bool, echo: Callable[[str], None]) -> None:
    from pipeline import ray_session
    from pipeline.preflight import input_problems

    bad = input_problems(pl.to_run)  # a missing file is that row's error, found before Ray starts
    if bad:
        echo(
            f"{len(bad)} row(s) have unusable input files; recorded as errors: "
            + "; ".join(f"row {i}: {msg}" for i, msg in list(bad.items())[:3])
            + (" ..." if len(bad) > 3 else "")
        )
    if pl.too_big:
        echo(
            f"{len(pl.too_big)} row(s) cannot fit a worker's memory; recorded as errors: "
            + "; ".join(f"row {i}: {msg}" for i, msg in list(pl.too_big.items())[:2])
        )
    bad.update({i: why for i, why in pl.too_big.items() if i not in bad})  # too big for a worker: an error, not a crash
    rows = [r for r in pl.to_run if r.index not in bad]
    ctx, embedded, pool = None, False, None
    try:
        if rows:
            env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
            cpus = max(os.cpu_count() or 1, int(cfg.workers * cfg.cpus_per_worker + 0.999))
            ctx, embedded = ray_session.connect(cfg.ray_address(), cpus, {"env_vars": env} if env else None)
            summary.dashboard_url = getattr(ctx, "dashboard_url", None)
            if summary.dashboard_url:
                url = summary.dashboard_url if "://" in summary.dashboard_url else f"http://{summary.dashboard_url}"
                echo(f"Ray dashboard: {url}")
            ray_session.check_resources(cfg.workers, cfg.cpus_per_worker, cfg.gpus_per_worker)
            if not embedded and not storage.is_remote(out):
                ray_session.check_shared_output(out)
        sink = _Results(out, len(pl.to_run), summary, progress, pl.next_seq)
        try:
            sink.failed([(task_for(r), bad[r.index]) for r in pl.to_run if r.index in bad])
            if rows:
                pool = _start_pool(cfg, pl, out, rows)
                batches = [[task_for(r, cfg.row_timeout) for r in b.rows if r.index not in bad] for b in pl.batches]
                sched = SchedulerConfig(retries=cfg.retries, start_timeout_s=cfg.start_timeout)
                Scheduler(pool, batches, sink.rows, sink.failed, sched).run()
        finally:
            sink.bar.close()
    except KeyboardInterrupt:
        summary.interrupted = True
        echo("\ninterrupted: finished rows are saved; run the same command again to finish the rest")
    finally:
        if pool is not None:
            pool.close()
        if embedded:
            ray_session.shutdown()


def _start_pool(cfg: SubmitConfig, pl: Plan, out: str, rows: Sequence[ManifestRow]) -> RayPool:
    """One actor per worker, each preloading the VGGs its rows use and the metric model."""
    preload = sorted({(r.params.weights, r.params.pooling) for r in rows})
    opts: dict[str, Any] = dict(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, max_restarts=-1, max_task_retries=0)
    if cfg.workers > 1:
        opts["scheduling_strategy"] = "SPREAD"  # one per node first: on a cluster, one per GPU node
    return RayPool(cfg.workers, (out, pl.metric_weights, preload), opts)
