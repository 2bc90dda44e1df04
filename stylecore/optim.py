"""Per-row L-BFGS for a batch of independent problems: own state per row, batched evaluations.

`lbfgs_step` is `torch.optim.LBFGS.step` with `line_search_fn="strong_wolfe"` (torch 2.x:
`_strong_wolfe`, `_cubic_interpolate`, the same tolerances, history and `max_eval` rules and the
same order of floating-point operations) ported to a *generator* over one row's flat (N,)
tensor: wherever torch calls the closure, the generator yields the trial point and is sent back
`(loss, flat gradient)`. So one row's iterates depend only on its own losses and gradients.

`BatchedLBFGS` drives one such generator per row: each round it stacks the pending trial points
of the rows still running, (R, *shape), runs ONE forward + backward of the sum of their per-row
losses (independent rows: d(sum)/dx_i = d(loss_i)/dx_i) and sends every row its own loss and
gradient. A row that stops (iterations done, converged on a tolerance) is frozen; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# What a row receives for a yielded point: (loss as a Python float, flat gradient (N,)).
Evaluation = tuple[float, Tensor]
# A row's program: yields flat trial points (N,), is sent Evaluations, returns its step count.
RowProgram = Generator[Tensor, Evaluation, int]


@dataclass
class LBFGSState:
    """One row's L-BFGS state (torch keeps the same in `optimizer.state[param]`)."""

    func_evals: int = 0
    n_iter: int = 0  # cumulative iterations over every `lbfgs_step` call
    start_loss: float | None = None  # loss at the point where iteration `n_iter` started
    d: Tensor | None = None  # (N,) last direction
    t: float | Tensor | None = None  # last step length
    old_dirs: list[Tensor] = field(default_factory=list)  # y_k = g_{k+1} - g_k, each (N,)
    old_stps: list[Tensor] = field(default_factory=list)  # s_k = t d, each (N,)
    ro: list[Tensor] = field(default_factory=list)  # 1 / (y_k . s_k)
    H_diag: float | Tensor = 1
    prev_flat_grad: Tensor | None = None  # (N,)
    prev_loss: float | None = None
    al: list[Any] | None = None
    restart: bool = False  # the next iteration starts from -g with an empty memory


@dataclass(frozen=True)
class LBFGSConfig:
    """torch.optim.LBFGS's options (line search: strong Wolfe, always)."""

    lr: float = 1.0
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100


def _cubic_interpolate(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None) -> Any:
    """Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clipped to `bounds` (torch's)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt()
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _trial(x: Tensor, t: Any, d: Tensor) -> Tensor:
    """x + t d, computed as torch's `_directional_evaluate` does (in-place add with alpha)."""
    return x.clone().add_(d, alpha=t)


def _strong_wolfe(
    x: Tensor,
    t: Any,
    d: Tensor,
    f: Any,
    g: Tensor,
    gtd: Any,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> Generator[Tensor, Evaluation, tuple[Any, Tensor, Any, int]]:
    """torch's `_strong_wolfe` as a generator: yields trial points x + t d; returns
    (f_new, g_new, t, ls_func_evals). The numbers typed Any (t, f, gtd) are Python floats or 0-d
    tensors exactly as in torch's code: their mixed arithmetic is kept for bitwise-equal iterates."""
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    f_new, g_new = yield _trial(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone(memory_format=torch.contiguous_format)], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.clone(memory_format=torch.contiguous_format)], [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev = tmp, f_new
        g_prev = g_new.clone(memory_format=torch.contiguous_format)
        gtd_prev = gtd_new
        f_new, g_new = yield _trial(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

    if ls_iter == max_ls:  # reached max number of iterations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom phase: refine the bracket until a point satisfies the criteria
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:  # bracket too small
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # insufficient progress near a bracket end: move 10% of the bracket away from it
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = yield _trial(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than the lowest point
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True  # Wolfe conditions satisfied
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            # new point becomes new low
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[low_pos] = gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def lbfgs_step(x: Tensor, state: LBFGSState, cfg: LBFGSConfig, max_iter: int, max_eval: int) -> Generator[Tensor, Evaluation, None]:
    """One `torch.optim.LBFGS.step(closure)` on the flat row `x` (N,), updated in place: up to
    `max_iter` iterations and `max_eval` evaluations, the first at `x` itself."""
    loss, flat_grad = yield x
    current_evals = 1
    state.func_evals += 1
    if flat_grad.abs().max() <= cfg.tolerance_grad:  # optimal condition
        return
    d, t, H_diag, prev_flat_grad, prev_loss = state.d, state.t, state.H_diag, state.prev_flat_grad, state.prev_loss
    old_dirs, old_stps, ro = state.old_dirs, state.old_stps, state.ro
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        state.n_iter += 1
        state.start_loss = loss
        # ---- descent direction
        fresh = state.n_iter == 1 or state.restart
        if fresh:
            d = flat_grad.neg()
            old_dirs, old_stps, ro, H_diag = [], [], [], 1
            state.restart = False
        else:
            assert prev_flat_grad is not None and d is not None and t is not None  # set by iteration 1
            y = flat_grad.sub(prev_flat_grad)  # (N,)
            s = d.mul(t)
            ys = y.dot(s)
            if ys > 1e-10:  # update the memory
                if len(old_dirs) == cfg.history_size:
                    old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(1.0 / ys)
                H_diag = ys / y.dot(y)
            num_old = len(old_dirs)
            if state.al is None:
                state.al = [None] * cfg.history_size
            al = state.al
            # two-loop recursion: d = -H g
            q = flat_grad.neg()
            for i in range(num_old - 1, -1, -1):
                al[i] = old_stps[i].dot(q) * ro[i]
                q.add_(old_dirs[i], alpha=-al[i])
            d = r = torch.mul(q, H_diag)
            for i in range(num_old):
                be_i = old_dirs[i].dot(r) * ro[i]
                r.add_(old_stps[i], alpha=al[i] - be_i)
        if prev_flat_grad is None:
            prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
        else:
            prev_flat_grad.copy_(flat_grad)
        prev_loss = loss
        # ---- step length
        inv_l1: Any = 1.0 / flat_grad.abs().sum()  # a 0-d tensor, kept as torch keeps it
        t = min(1.0, inv_l1) * cfg.lr if fresh else cfg.lr
        gtd = flat_grad.dot(d)
        if gtd > -cfg.tolerance_change:  # directional derivative below tolerance
            break
        loss, flat_grad, t, ls_func_evals = yield from _strong_wolfe(
            x, t, d, loss, flat_grad, gtd, tolerance_change=cfg.tolerance_change, max_ls=max_eval - current_evals
        )
        x.add_(d, alpha=t)
        opt_cond = flat_grad.abs().max() <= cfg.tolerance_grad
        current_evals += ls_func_evals
        state.func_evals += ls_func_evals
        # ---- stopping conditions
        if n_iter == max_iter or current_evals >= max_eval or opt_cond:
            break
        if d.mul(t).abs().max() <= cfg.tolerance_change:  # lack of progress
            break
        if abs(loss - prev_loss) < cfg.tolerance_change:
            break
    state.d, state.t, state.H_diag = d, t, H_diag
    state.old_dirs, state.old_stps, state.ro = old_dirs, old_stps, ro
    state.prev_flat_grad, state.prev_loss = prev_flat_grad, prev_loss


def lbfgs_run(
    x: Tensor,
    state: LBFGSState,
    cfg: LBFGSConfig,
    iterations: int,
    chunk: int,
    evals_per_iter: int = 4,
    project: Callable[[Tensor], None] | None = None,
) -> RowProgram:
    """A row's whole run: `lbfgs_step` calls of `chunk` iterations (`chunk * evals_per_iter`
    evaluations) until `iterations` are done or a call stops on a tolerance (converged), with
    `project(x)` (e.g. a clamp, in place) after every call that did not converge. Returns the
    iterations taken. Running out of evaluations in a call is not convergence: it goes on.

    A call stopped on a tolerance restarts the row from -g with an empty memory; a second stop
    with no lower loss since is convergence. (Under bf16 the search can find no decrease along a
    direction built from noisy curvature pairs far from the optimum: at step 177 of 300 at 256 px.)"""
    steps = 0
    loss_at_stop: float | None = None
    while steps < iterations:
        n = min(chunk, iterations - steps)
        iter0, evals0 = state.n_iter, state.func_evals
        yield from lbfgs_step(x, state, cfg, max_iter=n, max_eval=n * evals_per_iter)
        taken = state.n_iter - iter0
        steps += taken
        if taken < n and state.func_evals - evals0 < n * evals_per_iter:  # stopped on a tolerance
            loss = state.prev_loss if state.prev_loss is not None else float("inf")
            if (loss_at_stop is not None and loss >= loss_at_stop) or taken == 0:
                break  # no progress since the restart: converged
            loss_at_stop, state.restart = loss, True
            continue
        if project is not None:
            project(x)
    return steps


# Per-row losses of a stack of points: (R, *shape) with grad -> (R,); `rows` (R,) int64 says which
# rows of the batch they are.
LossFn = Callable[[Tensor, Tensor], Tensor]
# (row, iteration being started, loss at its start point) -> True to retire the row there.
IterFn = Callable[[int, int, float], bool]


class BatchedLBFGS:
    """Optimises the rows of `x` (B, *shape) as B independent L-BFGS problems (see module doc).

    `iterations`, `chunk`, `evals_per_iter`, `project`: as `lbfgs_run`, per row. After `run`,
    `x` holds the results and `steps` each row's iteration count; `states` are live during the run
    (e.g. `states[i].n_iter` for progress)."""

    def __init__(
        self,
        x: Tensor,
        cfg: LBFGSConfig,
        iterations: int,
        chunk: int,
        evals_per_iter: int = 4,
        project: Callable[[Tensor], None] | None = None,
    ):
        self.shape = tuple(x.shape[1:])
        self.rows = [x[i].detach().reshape(-1).clone() for i in range(x.shape[0])]  # B x (N,), own memory
        self.states = [LBFGSState() for _ in self.rows]
        self.steps: list[int] = [0] * len(self.rows)
        self.retired: list[bool] = [False] * len(self.rows)  # stopped by `on_iter`
        self._project = project
        self._programs = [lbfgs_run(r, s, cfg, iterations, chunk, evals_per_iter, project) for r, s in zip(self.rows, self.states)]

    @property
    def x(self) -> Tensor:
        """The rows stacked back: (B, *shape)."""
        return torch.stack([r.view(self.shape) for r in self.rows])

    def run(self, loss_fn: LossFn, on_eval: Callable[[], None] | None = None, on_iter: IterFn | None = None) -> Tensor:
        """Run every row to its end and return `x`. `on_eval()` is called after each batched
        evaluation, before the rows take its results (`states` still describe the points evaluated).
        `on_iter(row, n_iter, start_loss)` is called when a row starts iteration `n_iter` (>= 1) at a
        point of loss `start_loss` (the end point of iteration `n_iter - 1`); returning True retires
        the row there: it keeps that point, `n_iter - 1` steps, and is evaluated no more."""
        pending: dict[int, Tensor] = {}  # row -> its next trial point (N,)
        for i, prog in enumerate(self._programs):
            self._advance(i, prog, None, pending, on_iter)
        while pending:
            rows = sorted(pending)
            idx = torch.tensor(rows, dtype=torch.long, device=self.rows[0].device)
            with torch.enable_grad():
                pts = torch.stack([pending[i].view(self.shape) for i in rows]).requires_grad_(True)  # (R, *shape)
                losses = loss_fn(pts, idx)  # (R,)
                (grad,) = torch.autograd.grad(losses.sum(), pts)  # (R, *shape); row k's = d loss_k / d pts_k
            if on_eval is not None:
                on_eval()
            with torch.no_grad():
                for k, i in enumerate(rows):
                    self._advance(i, self._programs[i], (float(losses[k]), grad[k].reshape(-1).clone()), pending, on_iter)
        return self.x

    def _advance(self, i: int, prog: RowProgram, ev: Evaluation | None, pending: dict[int, Tensor], on_iter: IterFn | None) -> None:
        state = self.states[i]
        before = state.n_iter
        try:
            pending[i] = prog.send(ev) if ev is not None else next(prog)
        except StopIteration as stop:
            pending.pop(i, None)
            self.steps[i] = stop.value
            return
        if on_iter is not None and state.n_iter > before and state.start_loss is not None:
            if on_iter(i, state.n_iter, state.start_loss):
                self.retire(i, pending)

    def retire(self, i: int, pending: dict[int, Tensor]) -> None:
        """Stop row `i` at the start of its current iteration (its point is the previous one's end)."""
        self._programs[i].close()
        pending.pop(i, None)
        self.steps[i] = max(0, self.states[i].n_iter - 1)  # states are fresh per optimiser: n_iter counts this run
        self.retired[i] = True
        if self._project is not None:
            with torch.no_grad():
                self._project(self.rows[i])


def minimize_rows(
    x: Tensor,
    loss_fn: LossFn,
    cfg: LBFGSConfig,
    iterations: int,
    chunk: int | None = None,
    evals_per_iter: int = 4,
    project: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, list[int]]:
    """Convenience: `BatchedLBFGS(...).run(loss_fn)` -> (x (B, *shape), steps per row)."""
    opt = BatchedLBFGS(x, cfg, iterations, chunk or iterations, evals_per_iter, project)
    return opt.run(loss_fn), opt.steps


__all__ = ("BatchedLBFGS", "LBFGSConfig", "LBFGSState", "lbfgs_run", "lbfgs_step", "minimize_rows")
