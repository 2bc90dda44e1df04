"""The Ray actor that runs batches of rows: models loaded once in `__init__`, a batch per `__call__`.

A worker writes each row's image itself (no image bytes travel through the object store) and
returns the rows' results to the driver, which writes the results parts (`pipeline.runner`): so
the driver alone decides which answer of a row counts, and a worker it gave up on (timed out,
replaced) cannot add a second row. Failures stay per row: a bad input is that row's `error`; an
out-of-memory batch is freed, split in halves and retried, down to one row, whose error names
the size, the device and what to try.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from pipeline import results as R
from pipeline import storage
from pipeline.manifest import safe_output_path
from pipeline.scheduler import RowTask
from stylecore.params import Params, check_job

# A test-only fault hook: a worker that starts a row listed here exits at once, as a crashed or
# OOM-killed process would (comma-separated row ids). Never set in production.
CHAOS_ENV = "STXPIPE_CHAOS_KILL_ROWS"
# The decoded-image cache holds content and style tensors shared by a worker's rows.
DECODE_CACHE_BYTES = 512 << 20
PAPER_LPIPS = "vgg16-imagenet"  # the backbone the founding paper's LPIPS numbers come from


def result_row(t: RowTask, status: str, **values: Any) -> dict:
    """A results-table row for task `t`: contract columns, resolved params, carried columns.
    Carried columns never overwrite the engine's (the manifest refuses reserved names too)."""
    row = {k: v for k, v in (t.extra or {}).items() if k not in R.RESULT_COLUMNS}
    row.update({c: None for c in R.RESULT_COLUMNS})
    row.update(
        row_id=t.row_id,
        content=t.content,
        style=";".join(t.styles),
        status=status,
        params=json.loads(t.params),
        attempt=t.attempt,
    )
    row.update(values)
    return row


def error_row(t: RowTask, message: str, **values: Any) -> dict:
    return result_row(t, R.STATUS_ERROR, error=message, finished_at=R.now(), **values)


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, the CPU allocator's failure, or Python's MemoryError."""
    import torch

    found = (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
    oom = tuple(t for t in found if isinstance(t, type))
    if isinstance(e, (MemoryError, *oom)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class StyleWorker:
    """Owns the engine (VGG) and the LPIPS metric model on its device."""

    def __init__(self, out: str, metric_weights: str, preload: Sequence[tuple[str, str]] = (), device: str | None = None):
        import torch

        from stylecore.cache import ByteLRU
        from stylecore.metrics import Distance
        from stylecore.transfer import StyleTransfer, default_device
        from stylecore.weights import load_vgg

        self.out = out
        dev = torch.device(device) if device is not None else default_device()
        # On a CPU, rows run one at a time inside a batch: multi-threaded CPU kernels round a lone
        # row differently from a stacked one and L-BFGS amplifies that (0-5 of 255), while batching
        # buys little there. So --batch-size, retries and resumes can't change a row's image.
        self.engine = StyleTransfer(dev, batch_invariant=dev.type == "cpu")
        self.device = self.engine.device
        for spec, pooling in preload:
            load_vgg(spec, pooling, self.device)
        self.distance = Distance.load(metric_weights, self.device)
        self.lpips_calibrated = metric_weights == PAPER_LPIPS
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        try:
            import ray

            self.worker = f"{ray.get_runtime_context().get_node_id()[:8]}@{socket.gethostname()}:{os.getpid()}"
        except Exception:
            pass  # outside Ray (tests, a plain process): host:pid is enough
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        if self.engine.dtype is not None:  # the results say which rows ran their VGG under autocast
            self.device_name += f", VGG in {str(self.engine.dtype).removeprefix('torch.')}"
        self._images: ByteLRU[tuple[str, int], torch.Tensor] = ByteLRU(DECODE_CACHE_BYTES)

    def ping(self) -> str:
        return self.worker

    def pid(self) -> int:
        return os.getpid()

    def __call__(self, batch: Sequence[RowTask]) -> list[dict]:
        chaos = set(filter(None, os.environ.get(CHAOS_ENV, "").split(",")))
        started = R.now()
        rows: list[dict] = []
        ready: list[tuple[RowTask, Any]] = []
        for t in batch:
            if t.row_id in chaos:
                os._exit(137)  # simulate a killed worker (see CHAOS_ENV)
            try:
                ready.append((t, self._job(t)))
            except Exception as e:
                rows.append(self._error(t, f"{type(e).__name__}: {e}", started))
        for items in self._groups(ready):
            rows += self._run_split(items, started)
        self._metrics(rows)
        return rows

    # -- inputs
    def _tensor(self, uri: str, size: int):
        from stylecore.images import load_tensor

        key = (uri, size)
        x = self._images.get(key)
        if x is None:
            x = load_tensor(storage.read_bytes(uri), size, name=uri)
            self._images.put(key, x)
        return x

    def _job(self, t: RowTask):
        from stylecore.transfer import TransferJob

        params = Params.from_json(t.params)
        # Decode straight to the sizes the engine uses (output long side; style at style_scale):
        # a 12-megapixel photo kept at full size in the decode cache would cost ~150 MB.
        content = self._tensor(t.content, params.size)
        style_side = max(16, round(params.size * params.style_scale))
        styles = tuple(self._tensor(s, style_side) for s in t.styles)
        if params.style_blend is not None and len(params.style_blend) != len(styles):
            raise ValueError(f"style_blend has {len(params.style_blend)} weights for {len(styles)} style images")
        # Again here (validate checked it too): the images may have changed, and the metrics'
        # deeper layers need more pixels than a shallow style loss.
        check_job(params, tuple(content.shape[-2:]), [tuple(s.shape[-2:]) for s in styles], metrics=True)
        return TransferJob(content, styles, params, style_keys=tuple(t.styles))

    @staticmethod
    def _groups(ready: list[tuple[RowTask, Any]]) -> list[list[tuple[RowTask, Any]]]:
        from stylecore.transfer import batch_key

        groups: dict[tuple, list[tuple[RowTask, Any]]] = collections.defaultdict(list)
        for t, job in ready:
            groups[batch_key(job.params, tuple(job.content.shape[-2:]))].append((t, job))
        return list(groups.values())

    # -- running, with isolation and out-of-memory splitting
    def _run_split(self, items: list[tuple[RowTask, Any]], started) -> list[dict]:
        rows: list[dict] = []
        todo = [items]
        while todo:
            chunk = todo.pop()
            failure: BaseException | None = None
            try:
                rows += self._run(chunk, started)
            except Exception as e:
                failure = e
            if failure is None:
                continue
            oom = is_oom(failure)
            message = f"{type(failure).__name__}: {failure}"
            failure = None  # drop the traceback (and the tensors its frames hold) before retrying
            if oom:
                self._free()
            if len(chunk) > 1:  # isolate: halves on OOM (less memory each), single rows otherwise
                half = (len(chunk) + 1) // 2 if oom else 1
                todo += [chunk[i : i + half] for i in range(0, len(chunk), half)][::-1]
            else:
                t, job = chunk[0]
                rows.append(self._error(t, self._oom_message(job) if oom else message, started))
        return rows

    def _oom_message(self, job) -> str:
        h, w = (int(v) for v in job.content.shape[-2:])
        p = job.params
        return (
            f"out of memory at size {p.size} ({h}x{w} px, style_scale {p.style_scale:g}, {p.optimizer}, "
            f"{len(p.style_layers)} style layers) on {self.device} ({self.device_name}), even alone in its batch; "
            f"try a smaller size, --batch-size 1 with fewer workers per device (--gpus-per-worker 1), "
            f"optimizer=adam (no L-BFGS history), or a device with more memory"
        )

    def _free(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _run(self, items: list[tuple[RowTask, Any]], started) -> list[dict]:
        import torch

        from stylecore.metrics import match_size

        t0 = time.perf_counter()
        snaps: dict[int, list[str]] = collections.defaultdict(list)

        def on_snapshot(snap) -> None:  # a Snapshot: written at once, so no image waits in memory
            t = items[snap.row][0]
            snaps[snap.row].append(write_snapshot(self.out, t.row_id, snap.step, snap.image, t.params))

        results = self.engine.run([job for _, job in items], snapshot=on_snapshot)
        outputs = torch.stack([r.image for r in results]).to(self.device)  # (B, 3, H, W)
        # One batched metrics pass: each row's style and content brought to the (shared) output size.
        styles = torch.cat([match_size(job.styles[_main_style(job)].to(self.device), outputs) for _, job in items])
        contents = torch.cat([match_size(job.content.to(self.device), outputs) for _, job in items])
        metrics = self.distance(outputs, styles, contents).rows()
        rows = []
        for i, ((t, job), res, m) in enumerate(zip(items, results, metrics)):
            path = write_image(self.out, t.row_id, res.image, {"stxpipe:params": t.params, "stxpipe:weights": res.weights})
            rows.append(
                result_row(
                    t,
                    R.STATUS_OK,
                    output=path,
                    **m,  # lpips_style, lpips_content, gram_style, ..., cfsd, style_layers_metrics
                    loss_content=res.losses["content"],
                    loss_style=res.losses["style"],
                    loss_tv=res.losses["tv"],
                    loss_total=res.losses["total"],
                    iterations=res.steps,
                    iterations_run=res.steps,
                    stopped=res.stopped,
                    loss_curve=R.loss_curve(res.history, res.scale_steps),
                    snapshots=snaps.get(i, []),
                    peak_bytes_predicted=predicted_peak(job.params, tuple(job.content.shape[-2:]), self.device.type),
                    seconds=(time.perf_counter() - t0) / len(items),
                    weights=res.weights,
                    lpips_weights=self.distance.weights_label,
                    lpips_calibrated=self.lpips_calibrated,
                    device=self.device_name,
                    worker=self.worker,
                    started_at=started,
                    finished_at=R.now(),
                )
            )
        return rows

    def _error(self, t: RowTask, message: str, started) -> dict:
        return error_row(t, message, worker=self.worker, device=self.device_name, started_at=started)

    def _metrics(self, rows: list[dict]) -> None:
        try:
            from pipeline.telemetry import run_metrics

            m = run_metrics()
            for r in rows:
                m.record(r, self.worker)
        except Exception:
            pass  # dashboard metrics are best-effort; never fail rows over them


def predicted_peak(params: Params, hw: tuple[int, ...], device: str) -> int | None:
    """The memory model's peak for this row alone (`stylecore.memory.row_peak`), or None if it
    cannot say (best effort: a results column, never a reason to fail a row)."""
    try:
        from stylecore.memory import row_peak

        return int(row_peak(params, (int(hw[0]), int(hw[1])), device).total)
    except Exception:
        return None


def _main_style(job) -> int:
    """The style image the Distance is measured against: the one with the largest blend weight."""
    blend = job.params.style_blend
    return 0 if blend is None else max(range(len(blend)), key=lambda i: blend[i])


def write_snapshot(out: str, row_id: str, step: int, image, params: str) -> str:
    """`<out>/images/<row_id>.step<NNNN>.png` (next to the row's output, path checked the same way)."""
    from stylecore.images import png_bytes

    path = safe_output_path(storage.join(out, "images"), row_id, f".step{step:04d}.png")
    storage.write_atomic(path, png_bytes(image, {"stxpipe:params": params, "stxpipe:step": str(step)}))
    return path


def write_image(out: str, row_id: str, image, metadata: dict) -> str:
    """`<out>/images/<row_id>.png`, atomically (`storage.write_atomic`: local temp + rename,
    object stores one PUT); the path is checked to lie under `out` whatever the row_id says."""
    from stylecore.images import png_bytes

    path = safe_output_path(storage.join(out, "images"), row_id, ".png")
    storage.write_atomic(path, png_bytes(image, metadata))
    return path
