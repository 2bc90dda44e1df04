"""What the engine reports while it optimises: `Progress` (a batch's step), `Snapshot` (a row's
image every `snapshot_every` steps), and `Tracker`, the engine's side of the per-scale loop's step
callback (each row's history, steps per scale, snapshots, progress and the deadline)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stylecore.loop import StepFn


@dataclass(frozen=True)
class Progress:
    """One optimisation step of a batch. `step` counts the iterations of the row furthest on (rows
    may stop at different steps); `losses` are means (unweighted) over the rows evaluated last,
    i.e. the rows still optimising."""

    step: int
    total_steps: int
    scale: int
    n_scales: int
    losses: Mapping[str, float]
    # The tiled pass (one row): (tiles of the current round done, tiles per round); the step count
    # moves only when a round's tiles are blended, so this is what moves in between.
    tiles: tuple[int, int] | None = None


@dataclass(frozen=True)
class Snapshot:
    """A row's image during its optimisation, every `params.snapshot_every` steps of the row."""

    row: int  # index in `jobs`
    step: int  # the row's steps so far, all scales
    image: torch.Tensor  # (3, H, W) CPU in [0, 1], at the current scale's size


ProgressFn = Callable[[Progress], None]
SnapshotFn = Callable[[Snapshot], None]


class Tracker:
    """The engine's side of `optimize_scale`'s step callback: each row's history, steps per scale,
    snapshots, progress (of the row furthest on) and the deadline."""

    def __init__(
        self,
        jobs: Sequence[Any],  # TransferJob: only `.params.snapshot_every` is read
        progress: ProgressFn | None,
        snapshot: SnapshotFn | None,
        deadline: float | None,
        row0: int,
        total: int,
        n_scales: int,
    ):
        self.jobs, self.progress, self.snapshot, self.deadline, self.row0 = jobs, progress, snapshot, deadline, row0
        self.total, self.n_scales = total, n_scales
        self.history: list[dict[str, list[float]]] = [{} for _ in jobs]
        self.scale_steps: list[list[int]] = [[] for _ in jobs]
        self.done = [0] * len(jobs)  # steps per row before the current scale
        self.latest: dict[int, Mapping[str, float]] = {}
        self.reported = self.base = self.scale_index = 0

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def scale(self, index: int) -> StepFn:
        self.scale_index, self.base, self.latest = index, max(self.done), {}
        return self.on_step

    def on_step(self, i: int, step: int, terms: Mapping[str, float], image: Callable[[], torch.Tensor]) -> bool:
        h = self.history[i]
        for k, v in terms.items():
            h.setdefault(k, []).append(v)
        n, every = self.done[i] + step, self.jobs[i].params.snapshot_every
        if self.snapshot is not None and every > 0 and n % every == 0:
            self.snapshot(Snapshot(self.row0 + i, n, image().detach()[0].clamp(0, 1).cpu()))
        self.latest[i] = terms
        if self.progress is not None and self.base + step > self.reported:
            self.reported = self.base + step
            self.progress(Progress(self.reported, self.total, self.scale_index, self.n_scales, self._means()))
        return self.past_deadline()

    def tiles(self, done: int, total: int) -> None:
        """The tiled pass finished `done` of a round's `total` tiles (progress between blends)."""
        if self.progress is not None:
            self.progress(Progress(self.reported, self.total, self.scale_index, self.n_scales, self._means(), (done, total)))

    def _means(self) -> dict[str, float]:
        """Each loss term's mean over the rows' latest steps at this scale ({} before the first)."""
        rows = list(self.latest.values())
        return {k: sum(t[k] for t in rows) / len(rows) for k in (rows[0] if rows else {})}

    def end_scale(self, steps: Sequence[int]) -> None:
        for i, n in enumerate(steps):
            self.scale_steps[i].append(n)
            self.done[i] += n
