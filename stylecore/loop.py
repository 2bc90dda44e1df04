"""Optimising one scale: `optimize_scale(objective, x, settings, on_step)`.

The per-scale seam of the engine (`stylecore.transfer` loops it over the scales; a tiled variant
can take its place): given an objective of per-row losses, a batch of images (B, 3, H, W) and the
optimiser settings, it runs every row as its own problem and reports each step of each row.

Steps and history: a row's step k is its k-th optimiser iteration; the losses recorded for step k
are those of the iterate *after* step k (L-BFGS: the start point of iteration k + 1, or the final
evaluation; Adam: the evaluation of step k + 1, or the final one), so a row with n steps records
exactly n entries, the last one the losses of the returned image.

Convergence (`settings.tol` > 0): a row stops after step k when the lowest total loss of its last
`settings.window` steps is lower than the lowest of the `window` steps before those by at most
`tol` (relative): min(L[k-2w+1..k-w]) - min(L[k-w+1..k]) <= tol |min(L[k-2w+1..k-w])|.
Best-of-window, not two single points nor means, because neither curve is smooth: Adam's
oscillates (at lr 0.02 a loss can swing 2x between neighbouring steps early on, so two points a
window apart can match by chance), and L-BFGS's jumps up where a chunk ends with the [0, 1] clamp
(a mean over a window holding the jump can look flat while the row still improves ~5% per window).
`iterations` stays a cap. A retired row keeps its image; its batch-mates go on (per-row L-BFGS
state in `stylecore.optim.BatchedLBFGS`, one Adam per row here).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from stylecore.ema import EMA
from stylecore.optim import BatchedLBFGS, LBFGSConfig
from stylecore.params import Params

# L-BFGS iterations per `stylecore.optim.lbfgs_step` call of a row: one `torch.optim.LBFGS.step()`
# call re-evaluates its starting point, so one iteration per call would cost two evaluations per
# step; the row is clamped to [0, 1] between its chunks.
LBFGS_CHUNK = 25

# Steps per window of the `tol` test (see the module doc; a row needs 2 windows before it can stop):
# 10 averages out Adam's step-to-step swings and L-BFGS's clamp jumps while costing at most ~20
# steps past the point where progress stalled.
CONVERGENCE_WINDOW = 10


class Objective(Protocol):
    """Per-row losses: (x (R, 3, H, W), rows (R,) or None = all) -> dict of (R,) with "total"."""

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class OptimSettings:
    """How to optimise one scale (shared by the rows of a batch)."""

    optimizer: str  # "lbfgs" | "adam"
    lr: float
    iterations: int  # cap per row at this scale
    tol: float | tuple[float, ...] = 0.0  # one for every row, or one per row; 0 = run to the cap
    window: int = CONVERGENCE_WINDOW
    ema: float = 0.0  # Adam only: decay of the iterate average (0 = off)
    history_size: int = 50  # L-BFGS memory
    chunk: int = LBFGS_CHUNK

    @classmethod
    def from_params(cls, p: Params, iterations: int) -> OptimSettings:
        return cls(p.optimizer, p.learning_rate, iterations, tol=p.tol, ema=p.ema if p.optimizer == "adam" else 0.0)


# (row, step at this scale (1-based), the row's losses after that step, a getter of its image
# (1, 3, H, W)) -> True to stop the row now (e.g. a deadline).
StepFn = Callable[[int, int, Mapping[str, float], Callable[[], Tensor]], bool]


@dataclass
class ScaleOutcome:
    x: Tensor  # (B, 3, H, W), detached: each row's result (Adam with ema: the averaged iterate)
    steps: list[int]  # per row, at this scale
    stopped: list[str]  # per row: "converged" | "cap" | "stopped" (by `on_step`)
    final: dict[str, Tensor]  # (B,) per term: the losses of `x`


class _Rows:
    """Per-row bookkeeping: totals for the convergence window, stop reasons, the callback."""

    def __init__(self, n: int, settings: OptimSettings, on_step: StepFn):
        self.settings, self.on_step = settings, on_step
        self.totals: list[deque[float]] = [deque(maxlen=2 * settings.window) for _ in range(n)]
        self.recorded = [0] * n
        self.stopped = ["cap"] * n
        self.tols = list(settings.tol) if isinstance(settings.tol, tuple) else [settings.tol] * n

    def record(self, i: int, terms: Mapping[str, float], image: Callable[[], Tensor], check: bool = True) -> bool:
        """Record row i's next step; True when it must stop there."""
        self.recorded[i] += 1
        self.totals[i].append(terms["total"])
        if self.on_step(i, self.recorded[i], terms, image) and check:
            self.stopped[i] = "stopped"
            return True
        w, totals = self.settings.window, self.totals[i]
        if check and self.tols[i] > 0 and len(totals) == 2 * w:
            old, new = min(list(totals)[:w]), min(list(totals)[w:])
            if old - new <= self.tols[i] * abs(old):
                self.stopped[i] = "converged"
                return True
        return False


def _terms(ls: Mapping[str, Tensor]) -> list[dict[str, float]]:
    """dict of (R,) -> R dicts of floats (one device sync)."""
    keys = list(ls)
    vals = torch.stack([ls[k].detach().float() for k in keys], 1).tolist()  # (R, T)
    return [dict(zip(keys, row)) for row in vals]


def optimize_scale(objective: Objective, x: Tensor, settings: OptimSettings, on_step: StepFn) -> ScaleOutcome:
    """Optimise every row of `x` (B, 3, H, W) at this scale; see the module doc."""
    rows = _Rows(x.shape[0], settings, on_step)
    if settings.optimizer == "lbfgs":
        x, steps = _lbfgs(objective, x, settings, rows)
    else:
        x, steps = _adam(objective, x, settings, rows)
    with torch.no_grad():  # losses of the returned (clamped) images
        final = objective(x)
    for i, terms in enumerate(_terms(final)):
        while rows.recorded[i] < steps[i]:  # the last step(s): losses of the returned image
            rows.record(i, terms, _getter(x, i), check=False)
    return ScaleOutcome(x, steps, rows.stopped, {k: v.detach() for k, v in final.items()})


def _getter(x: Tensor, i: int) -> Callable[[], Tensor]:
    return lambda: x[i : i + 1]


def _clamp(r: Tensor) -> None:
    r.clamp_(0, 1)


def _lbfgs(objective: Objective, x: Tensor, s: OptimSettings, rows: _Rows) -> tuple[Tensor, list[int]]:
    """Per-row L-BFGS (`BatchedLBFGS`): a row's step k is recorded when iteration k + 1 starts, with
    the losses of its start point, looked up among the row's evaluations by their total."""
    opt = BatchedLBFGS(x, LBFGSConfig(lr=s.lr, history_size=s.history_size), s.iterations, s.chunk, 4, _clamp)
    seen: list[deque[dict[str, float]]] = [deque(maxlen=64) for _ in range(x.shape[0])]  # recent evaluations per row

    def loss_fn(pts: Tensor, idx: Tensor) -> Tensor:  # (R, 3, H, W), (R,) -> (R,)
        # The loss of the image the row will output, clamp(x): L-BFGS then never gains by pushing
        # pixels out of [0, 1] only to lose it at the next projection (every `chunk` steps), and
        # its curvature pairs describe one fixed function. Measured (256 px, vgg16-hed, bf16):
        # Gram distance 0.0099 at step 300 against 0.0121 with the loss of the raw x.
        ls = objective(pts.clamp(0, 1), idx)
        for i, terms in zip(idx.tolist(), _terms(ls)):
            seen[i].append(terms)
        return ls["total"]

    def on_iter(i: int, n_iter: int, start_loss: float) -> bool:
        terms = next((t for t in reversed(seen[i]) if t["total"] == start_loss), seen[i][-1])
        if n_iter == 1:  # the starting image: not a step
            return False
        return rows.record(i, terms, lambda: opt.rows[i].view(1, *opt.shape))

    out = opt.run(loss_fn, on_iter=on_iter)
    for i, n in enumerate(opt.steps):
        if n < s.iterations and rows.stopped[i] == "cap":  # L-BFGS's own tolerances ended it (twice, see `lbfgs_run`)
            rows.stopped[i] = "converged"
    return out.detach(), list(opt.steps)


def _adam(objective: Objective, x: Tensor, s: OptimSettings, rows: _Rows) -> tuple[Tensor, list[int]]:
    """One Adam per row (its own moments); pixels clamped to [0, 1] after every step; with `ema`
    the row's result is the bias-corrected average of its iterates (crowsonkb's `EMA`)."""
    leaves = [x[i : i + 1].detach().clone().requires_grad_(True) for i in range(x.shape[0])]  # B x (1, 3, H, W)
    opts = [torch.optim.Adam([leaf], lr=s.lr) for leaf in leaves]
    avgs = [EMA(leaf.detach(), s.ema) for leaf in leaves] if s.ema > 0 else None
    steps = [0] * len(leaves)
    active = list(range(len(leaves)))

    def image(i: int) -> Callable[[], Tensor]:
        return (lambda: avgs[i].get()) if avgs is not None else (lambda: leaves[i].detach())

    for step in range(1, s.iterations + 1):
        if not active:
            break
        for i in active:
            leaves[i].grad = None
        ls = objective(torch.cat([leaves[i] for i in active]), torch.tensor(active, device=x.device))
        total: Tensor = ls["total"].sum()
        torch.autograd.backward(total)
        terms = _terms(ls)
        for i, t in zip(list(active), terms):
            if step > 1 and rows.record(i, t, image(i)):  # step 1 evaluates the starting image
                active.remove(i)
        with torch.no_grad():
            for i in active:
                opts[i].step()
                leaves[i].clamp_(0, 1)  # keep pixels valid; Adam may step outside [0, 1]
                if avgs is not None:
                    avgs[i].update(leaves[i])
                steps[i] = step
    out = [avgs[i].get() if avgs is not None else leaves[i] for i in range(len(leaves))]
    return torch.cat(out).detach(), steps
