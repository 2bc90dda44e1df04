"""`stxpipe submit`: run a manifest's rows on Ray actors and append the results table.

Why Ray Core actors and not Ray Data `map_batches`: a batch whose actor dies is retried by Ray
Data as a whole and, past its retries, fails the whole dataset: one poison row would sink the
run. Here the driver owns the queue: a batch whose worker died is split into single rows, each
retried up to `retries` times on a restarted actor, and a row that keeps killing workers ends as
an `error` row while the others go on. Workers write their images and a results part themselves
as each batch finishes, so a driver crash loses at most the rows in flight, and no image bytes
travel through the object store.
"""

from __future__ import annotations

import collections
import io
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pipeline import results as R
from pipeline.manifest import ManifestError, ManifestRow, read_bytes, validate_manifest
from stylecore.params import Params

# A test-only fault hook: a worker that starts a row listed here exits at once, as a crashed or
# OOM-killed process would (comma-separated row ids). Never set in production.
CHAOS_ENV = "STXPIPE_CHAOS_KILL_ROWS"
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
    batch_size: int = 4
    weights: str | None = None  # weight set for rows that name none
    lpips_weights: str | None = None  # LPIPS backbone for rows that name none, and for the metrics
    retries: int = 2  # extra attempts for a row whose worker process died
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

    def lines(self) -> list[str]:
        return [
            f"manifest: {self.manifest} ({self.total} rows)",
            f"output:   {self.out}",
            f"rows to run: {len(self.to_run)}; already done (ok): {self.done}; invalid, skipped: {self.invalid}",
            f"LPIPS metric weights: {self.metric_weights}",
            f"resources: {self.resources}",
        ]


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


def _base_params(cfg: SubmitConfig) -> Params | None:
    changes = {k: v for k, v in (("weights", cfg.weights), ("lpips_weights", cfg.lpips_weights)) if v}
    return Params.from_dict(changes) if changes else None


def plan(cfg: SubmitConfig) -> Plan:
    """Read and check the manifest, find rows already done; raises ManifestError on bad rows
    unless `skip_invalid`."""
    report = validate_manifest(cfg.manifest, check_files=False, base=_base_params(cfg))
    if report.problems and not (cfg.skip_invalid and all(p.row is not None for p in report.problems)):
        raise ManifestError(report.path, report.problems)
    out = cfg.output()
    done = set() if cfg.force else R.done_ids(out)
    rows = list(report.rows)
    to_run = [r for r in rows if r.row_id not in done]
    metric = cfg.lpips_weights or (rows[0].params.lpips_weights if rows else Params().lpips_weights)
    where = cfg.ray_address() or "embedded local Ray (127.0.0.1)"
    res = f"{cfg.workers} worker(s) x ({cfg.cpus_per_worker:g} CPU, {cfg.gpus_per_worker:g} GPU), batches of {cfg.batch_size}, on {where}"
    return Plan(cfg.manifest, out, report.n_rows, to_run, len(rows) - len(to_run), report.n_rows - len(rows), metric, res)


def make_batches(rows: Sequence[ManifestRow], batch_size: int) -> list[list[ManifestRow]]:
    """Rows that can share one forward pass, in chunks of `batch_size`: grouped by the params
    that must agree, then by content (so equal output sizes land together)."""
    from stylecore.transfer import BATCH_FIELDS

    groups: dict[tuple, list[ManifestRow]] = collections.defaultdict(list)
    for r in rows:
        groups[tuple(repr(getattr(r.params, f)) for f in BATCH_FIELDS)].append(r)
    batches = []
    for group in groups.values():
        group.sort(key=lambda r: (r.content, r.index))
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


# ------------------------------------------------------------------------------------ the worker


def _payload(row: ManifestRow, attempt: int) -> dict:
    return {
        "row_id": row.row_id, "index": row.index, "content": row.content, "styles": list(row.styles),
        "params": row.params.to_json(), "extra": row.extra, "attempt": attempt,
    }


def result_row(p: dict, status: str, **values: Any) -> dict:
    """A results-table row for payload `p`: contract columns, resolved params, carried columns."""
    row = {c: None for c in R.RESULT_COLUMNS}
    row.update(p.get("extra") or {})
    row.update(
        row_id=p["row_id"], content=p["content"], style=";".join(p["styles"]), status=status,
        params=json.loads(p["params"]), attempt=p["attempt"],
    )
    row.update(values)
    return row


class StyleWorker:
    """A Ray actor: owns the engine (VGG) and the LPIPS metric model on its device.

    Models load once in `__init__`; `__call__` runs one batch and writes its images and results
    part before returning small summaries to the driver."""

    def __init__(self, out: str, metric_weights: str, preload: Sequence[tuple[str, str]] = (), device: str | None = None):
        import torch

        from stylecore.metrics import Distance
        from stylecore.transfer import StyleTransfer
        from stylecore.weights import load_vgg

        self.out = out
        self.engine = StyleTransfer(device)
        self.device = self.engine.device
        for spec, pooling in preload:
            load_vgg(spec, pooling, self.device)
        self.distance = Distance.load(metric_weights, self.device)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        try:
            import ray

            self.worker = f"{ray.get_runtime_context().get_node_id()[:8]}@{socket.gethostname()}:{os.getpid()}"
        except Exception:
            pass
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self._images: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def ping(self) -> str:
        return self.worker

    def __call__(self, batch: list[dict]) -> list[dict]:
        chaos = set(filter(None, os.environ.get(CHAOS_ENV, "").split(",")))
        started = R.now()
        rows: list[dict] = []
        ready: list[tuple[dict, Any]] = []
        for p in batch:
            if p["row_id"] in chaos:
                os._exit(137)  # simulate a killed worker (see CHAOS_ENV)
            try:
                ready.append((p, self._job(p)))
            except Exception as e:
                rows.append(self._error(p, e, started))
        rows += self._run_groups(ready, started)
        try:
            from pipeline.metrics import run_metrics

            m = run_metrics()
            for r in rows:
                m.record(r, self.worker)
        except Exception:
            pass  # metrics are best-effort; never fail rows over them
        R.write_part(self.out, R.to_table(rows))
        return [{k: r[k] for k in ("row_id", "status", "error", "worker", "seconds")} for r in rows]

    # -- helpers
    def _tensor(self, uri: str, size: int | None):
        from stylecore.images import load_tensor

        key = (uri, size)
        if key not in self._images:
            self._images[key] = load_tensor(read_bytes(uri), size, name=uri)
            while len(self._images) > 32:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        return self._images[key]

    def _job(self, p: dict):
        from stylecore.transfer import TransferJob

        params = Params.from_json(p["params"])
        # Decode straight to the sizes the engine uses (output long side; style at style_scale):
        # a 12-megapixel photo kept at full size in the decode cache would cost ~150 MB.
        content = self._tensor(p["content"], params.size)
        style_side = max(16, round(params.size * params.style_scale))
        styles = tuple(self._tensor(s, style_side) for s in p["styles"])
        if params.style_blend is not None and len(params.style_blend) != len(styles):
            raise ValueError(f"style_blend has {len(params.style_blend)} weights for {len(styles)} style images")
        return TransferJob(content, styles, params, style_keys=tuple(p["styles"]))

    def _run_groups(self, ready: list[tuple[dict, Any]], started) -> list[dict]:
        from stylecore.transfer import batch_key

        groups: dict[tuple, list[tuple[dict, Any]]] = collections.defaultdict(list)
        for p, job in ready:
            groups[batch_key(job.params, tuple(job.content.shape[-2:]))].append((p, job))
        rows = []
        for items in groups.values():
            try:
                rows += self._run(items, started)
            except Exception:
                if len(items) == 1:
                    p = items[0][0]
                    rows.append(self._error(p, sys.exc_info()[1], started))
                    continue
                for item in items:  # isolate the failing row: run the rest one by one
                    try:
                        rows += self._run([item], started)
                    except Exception as e:
                        rows.append(self._error(item[0], e, started))
        return rows

    def _run(self, items: list[tuple[dict, Any]], started) -> list[dict]:
        import torch

        from stylecore.images import save_png
        from stylecore.metrics import match_size

        t0 = time.perf_counter()
        results = self.engine.run([job for _, job in items])
        outputs = torch.stack([r.image for r in results]).to(self.device)  # (B, 3, H, W)
        # One batched metrics pass: each row's style and content brought to the (shared) output size.
        styles = torch.cat([match_size(job.styles[_main_style(job)].to(self.device), outputs) for _, job in items])
        contents = torch.cat([match_size(job.content.to(self.device), outputs) for _, job in items])
        metrics = self.distance(outputs, styles, contents).rows()
        rows = []
        for (p, job), res, m in zip(items, results, metrics):
            path = _write_image(self.out, p["row_id"], res.image, {"stxpipe:params": p["params"], "stxpipe:weights": res.weights}, save_png)
            rows.append(result_row(
                p, R.STATUS_OK, output=path, lpips_style=m["lpips_style"], lpips_content=m["lpips_content"],
                gram_style=m["gram_style"], loss_content=res.losses["content"], loss_style=res.losses["style"],
                loss_tv=res.losses["tv"], loss_total=res.losses["total"], iterations=res.steps,
                seconds=(time.perf_counter() - t0) / len(items), weights=res.weights,
                lpips_weights=self.distance.weights_label, device=self.device_name, worker=self.worker,
                started_at=started, finished_at=R.now(),
            ))
        return rows

    def _error(self, p: dict, e: BaseException | None, started) -> dict:
        msg = f"{type(e).__name__}: {e}" if e is not None else "unknown error"
        return result_row(p, R.STATUS_ERROR, error=msg, worker=self.worker, device=self.device_name, started_at=started, finished_at=R.now())


def _main_style(job) -> int:
    """The style image the Distance is measured against: the one with the largest blend weight."""
    blend = job.params.style_blend
    return 0 if blend is None else max(range(len(blend)), key=lambda i: blend[i])


def _write_image(out: str, row_id: str, image, metadata: dict, save_png: Callable) -> str:
    """`<out>/images/<row_id>.png`, atomically (local: temp + rename; object stores: one PUT)."""
    fs, base = R.filesystem(R.join(out, "images"))
    if "://" not in out:
        return str(save_png(image, os.path.join(base, f"{row_id}.png"), metadata))
    buf = io.BytesIO()
    from stylecore.images import tensor_to_image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in metadata.items():
        info.add_itxt(k, v)
    tensor_to_image(image).save(buf, format="PNG", pnginfo=info)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(R.join(base, f"{row_id}.png")) as f:
        f.write(buf.getvalue())
    return R.join(out, "images", f"{row_id}.png")


# ------------------------------------------------------------------------------------ the driver


def _connect(cfg: SubmitConfig):
    """Start an embedded Ray (dashboard on 127.0.0.1 only) or join the given cluster."""
    import ray

    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
    runtime_env = {"env_vars": env} if env else None
    address = cfg.ray_address()
    if address:
        return ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="error"), False
    ctx = ray.init(
        address="local", include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=runtime_env,
        log_to_driver=False, logging_level="error", configure_logging=True,
        num_cpus=max(os.cpu_count() or 1, int(cfg.workers * cfg.cpus_per_worker + 0.999)),
    )
    return ctx, True


class _Queue:
    """The driver's bookkeeping: pending batches, attempts, and death-driven splitting."""

    def __init__(self, batches: list[list[ManifestRow]], retries: int):
        self.pending: collections.deque[list[dict]] = collections.deque([_payload(r, 1) for r in b] for b in batches)
        self.retries = retries

    def died(self, batch: list[dict]) -> list[dict]:
        """A worker died running `batch`: requeue its rows one by one (to isolate a poison row),
        returning the payloads that ran out of attempts."""
        gave_up = []
        for p in batch:
            if p["attempt"] > self.retries:
                gave_up.append(p)
            else:
                self.pending.append([dict(p, attempt=p["attempt"] + 1)])
        return gave_up


def submit(cfg: SubmitConfig, progress: bool = True, echo: Callable[[str], None] = print) -> SubmitSummary:
    """Run every row of the manifest not yet `ok` (all with `force`); see the module docstring."""
    t0 = time.perf_counter()
    pl = plan(cfg)
    summary = SubmitSummary(pl.out, skipped=pl.done)
    if cfg.dry_run:
        for line in pl.lines():
            echo(line)
        return summary
    if not pl.to_run:
        echo(f"nothing to run: all {pl.done} rows of {cfg.manifest} are already ok in {pl.out} (use --force to rerun)")
        return summary
    import ray

    ctx, embedded = _connect(cfg)
    summary.dashboard_url = getattr(ctx, "dashboard_url", None)
    if summary.dashboard_url:
        url = summary.dashboard_url if "://" in summary.dashboard_url else f"http://{summary.dashboard_url}"
        echo(f"Ray dashboard: {url}")
    actors = []
    try:
        out = pl.out if "://" in pl.out else os.path.abspath(pl.out)
        summary.out = out
        preload = sorted({(r.params.weights, r.params.pooling) for r in pl.to_run})
        Worker = ray.remote(StyleWorker)
        opts = dict(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, max_restarts=-1, max_task_retries=0)
        if cfg.workers > 1:
            opts["scheduling_strategy"] = "SPREAD"
        actors = [Worker.options(**opts).remote(out, pl.metric_weights, preload) for _ in range(cfg.workers)]
        _drive(actors, _Queue(make_batches(pl.to_run, cfg.batch_size), cfg.retries), out, len(pl.to_run), summary, progress)
    except KeyboardInterrupt:
        summary.interrupted = True
        echo("\ninterrupted: finished rows are saved; run the same command again to finish the rest")
    finally:
        for a in actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        if embedded:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t0
    return summary


def _drive(actors, queue: _Queue, out: str, total: int, summary: SubmitSummary, progress: bool) -> None:
    """Feed batches to idle actors; record results; on a worker death requeue its rows and wait
    (by pinging) until Ray has restarted that actor before giving it more work."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from tqdm import tqdm

    bar = tqdm(total=total, unit="row", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    idle = list(actors)
    inflight: dict[Any, tuple[Any, list[dict] | None]] = {}  # ref -> (actor, batch; None = a ping)
    deadline: dict[Any, float] = {}  # actor -> give up waiting for its restart after this time

    def record(rows: Iterable[dict]) -> None:
        for r in rows:
            if r["status"] == R.STATUS_OK:
                summary.ok += 1
            else:
                summary.failed += 1
            if r.get("worker"):
                summary.workers.add(r["worker"])
        bar.set_postfix(ok=summary.ok, failed=summary.failed, left=total - summary.ok - summary.failed, refresh=False)
        bar.n = summary.ok + summary.failed
        bar.refresh()

    def fail(rows: list[dict]) -> None:
        R.write_part(out, R.to_table(rows))
        record(rows)

    try:
        while queue.pending or any(b is not None for _, b in inflight.values()):
            while idle and queue.pending:
                actor, batch = idle.pop(0), queue.pending.popleft()
                inflight[actor.__call__.remote(batch)] = (actor, batch)
            if not inflight:
                raise RuntimeError("every worker failed to restart; rerun the same command to finish the remaining rows")
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in done:
                actor, batch = inflight.pop(ref)
                try:
                    got = ray.get(ref)
                except RayActorError:
                    if batch is not None:  # the worker died running this batch
                        gave_up = queue.died(batch)
                        if gave_up:
                            fail([result_row(p, R.STATUS_ERROR, finished_at=R.now(), error=(
                                f"worker process died {p['attempt']} time(s) while running this row; "
                                f"giving up after {queue.retries} retries")) for p in gave_up])
                        deadline[actor] = time.time() + 300
                    elif time.time() > deadline.get(actor, 0):
                        continue  # never came back: drop this actor
                    time.sleep(0.5)
                    inflight[actor.ping.remote()] = (actor, None)  # idle again once it answers
                    continue
                except RayTaskError as e:  # a bug outside the per-row guards: record, go on
                    msg = str(e).strip().splitlines()[-1][:500]
                    fail([result_row(p, R.STATUS_ERROR, error=f"worker failure: {msg}", finished_at=R.now()) for p in batch or []])
                    got = []
                if batch is not None:
                    record(got)
                idle.append(actor)
    finally:
        bar.close()
