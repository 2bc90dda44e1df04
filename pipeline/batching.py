"""Rows into batches for `stxpipe submit`: each worker's memory budget, rows resolved against it
(tile size chosen, or a per-row error), batches filled by predicted peak bytes
(`stylecore.memory`) up to `--batch-size` rows, and each row's time budget (its deadline).

Pure Python plus the memory model: no Ray; `pipeline.runner` calls it in the driver."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.manifest import ManifestRow
from pipeline.scheduler import RowTask
from stylecore.params import Params

if TYPE_CHECKING:
    from pipeline.runner import SubmitConfig

# Row deadline when --row-timeout is not given: a VGG-19 step costs ~7.6e-6 s per output pixel
# on 2 CPU cores (0.5 s at 256x256); 1e-4 leaves a 13x margin for slower or shared machines
# (GPUs are 20-100x faster), plus a fixed minute for decoding, targets and metrics.
SECONDS_PER_PIXEL_STEP = 1e-4
ROW_OVERHEAD_S = 60.0


@dataclass(frozen=True)
class Batch:
    """Rows that run together on one worker, with the batch's predicted peak in bytes."""

    rows: list[ManifestRow]
    peak: int


def worker_device(cfg: SubmitConfig) -> str:
    """The device kind a worker will run on: cuda with GPUs per worker, else cpu."""
    return "cuda" if cfg.gpus_per_worker > 0 else "cpu"


def worker_budget(cfg: SubmitConfig) -> int | None:
    """Bytes a worker's batch may peak at: `--memory-per-worker`, else BUDGET_FRACTION of the
    device: a GPU's total memory times `gpus_per_worker` (read on this machine; None when it has
    no GPU to read), or the host's available RAM divided among the CPU workers."""
    from stylecore import memory

    if cfg.memory_per_worker:
        return int(cfg.memory_per_worker)
    if worker_device(cfg) == "cuda":
        try:
            import torch

            if not torch.cuda.is_available():
                return None
        except ImportError:
            return None
        return int(memory.BUDGET_FRACTION * memory.device_memory("cuda") * min(1.0, cfg.gpus_per_worker))
    return memory.default_budget("cpu", cfg.workers)


def batch_peak(params: Sequence[Params], device: str) -> int:
    """Predicted peak of rows run as one batch: CUDA stacks them in one forward (their per-row
    bytes add up); a CPU worker runs a batch's rows one at a time (`pipeline.worker`), so its peak
    is the largest row's. Sizes are taken square (the worst case for a long side: no file is read)."""
    from stylecore import memory

    ests = [memory.row_peak(p, device=device) for p in params]
    if not ests:
        return 0
    models = max(e.models for e in ests)
    rows = sum(e.per_step for e in ests) if device == "cuda" else max(e.per_step for e in ests)
    return rows + models


def fit_rows(rows: Sequence[ManifestRow], budget: int | None, device: str) -> tuple[list[ManifestRow], dict[int, str]]:
    """Rows resolved against the budget. A row with `tile_size` unset whose one-piece peak is over
    the tile threshold (`memory.tile_budget`: the budget, capped on a CPU) gets the tile size the
    memory model picks, written into its params (so the worker runs, and the results record,
    exactly that); a row that cannot fit even so, or whose tiling is off (`tile_size` 0), is an
    error by manifest index, naming its size, predicted bytes, the budget and what to do."""
    from stylecore import memory

    if budget is None:
        return list(rows), {}
    out, errors = [], {}
    for r in rows:
        p = r.params
        if p.tile_size is None:
            tile = memory.plan_tile(p, memory.tile_budget(budget, device), device=device)
            if tile:
                p = p.replace(tile_size=tile)
        peak = memory.row_peak(p, device=device).total
        if peak <= budget:
            out.append(dataclasses.replace(r, params=p) if p is not r.params else r)
            continue
        whole = memory.row_peak(r.params, device=device).total
        why = (
            "tiling is off (tile_size 0): allow it (leave tile_size unset, or set a tile size in px)"
            if p.tile_size == 0
            else f"even in tiles of {p.tile_size} px (~{memory.fmt_bytes(peak)}) it does not fit: lower size or tile_size"
        )
        errors[r.index] = (
            f"size {p.size} px needs ~{memory.fmt_bytes(whole)} at its peak in one piece (predicted), over the worker "
            f"budget of {memory.fmt_bytes(budget)} (--memory-per-worker); {why}, raise --memory-per-worker, "
            "or use a device with more memory"
        )
    return out, errors


def make_batches(rows: Sequence[ManifestRow], batch_size: int, budget: int | None = None, device: str = "cpu") -> list[Batch]:
    """Rows that can share one forward pass: grouped by the params that must agree, then by
    content (so equal output sizes land together), each batch filled up to `budget` predicted
    bytes (`batch_peak`) and at most `batch_size` rows. A row over the budget alone runs alone
    (`fit_rows` decides before whether it can run at all)."""
    from stylecore.transfer import BATCH_FIELDS

    groups: dict[tuple, list[ManifestRow]] = collections.defaultdict(list)
    for r in rows:
        groups[tuple(repr(getattr(r.params, f)) for f in BATCH_FIELDS)].append(r)
    batches: list[Batch] = []
    for group in groups.values():
        group.sort(key=lambda r: (r.content, r.index))
        current: list[ManifestRow] = []
        for r in group:
            trial = current + [r]
            fits = budget is None or batch_peak([x.params for x in trial], device) <= budget
            if current and (len(trial) > batch_size or not fits):
                batches.append(Batch(current, batch_peak([x.params for x in current], device)))
                current = [r]
            else:
                current = trial
        if current:
            batches.append(Batch(current, batch_peak([x.params for x in current], device)))
    return batches


def row_budget(params: Params, row_timeout: float | None = None) -> float:
    """Seconds a row may take inside its batch: `row_timeout`, else derived from its work."""
    if row_timeout:
        return float(row_timeout)
    steps = params.iterations * (4 / 3 if params.scales > 1 else 1)  # coarser scales add < 1/3
    per_step = SECONDS_PER_PIXEL_STEP * (2 if params.content_loss == "lpips" else 1)
    return ROW_OVERHEAD_S + per_step * params.size**2 * steps


def task_for(row: ManifestRow, row_timeout: float | None = None) -> RowTask:
    return RowTask(
        row.row_id,
        row.index,
        row.content,
        tuple(row.styles),
        row.params.to_json(),
        dict(row.extra),
        budget_s=row_budget(row.params, row_timeout),
    )
