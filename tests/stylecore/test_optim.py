"""Per-row L-BFGS (`stylecore.optim`): torch's algorithm, one state per row, batched evaluations."""

from __future__ import annotations

import pytest
import torch

from stylecore.optim import BatchedLBFGS, LBFGSConfig, minimize_rows

CFG = LBFGSConfig(lr=1.0, history_size=50)


def rosenbrock(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-row generalised Rosenbrock: (R, N), (R,) -> (R,); row-wise ops only."""
    return ((a[:, None] - x[:, :-1]) ** 2).sum(1) + 100 * ((x[:, 1:] - x[:, :-1] ** 2) ** 2).sum(1)


def _start(rows: int, n: int = 10) -> torch.Tensor:
    return torch.randn(rows, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def _torch_lbfgs(x0: torch.Tensor, fn, iterations: int, chunk: int, project=None) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    """The engine's former loop: torch.optim.LBFGS(strong_wolfe) in chunks of `chunk` iterations
    (4 evaluations each), `project` after every chunk that did not converge. Returns (x, steps,
    every point evaluated)."""
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=CFG.lr, max_iter=chunk, history_size=CFG.history_size, line_search_fn="strong_wolfe")
    seen: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        seen.append(p.detach().clone())
        loss = fn(p[None])[0]
        loss.backward()
        return loss

    steps = 0
    while steps < iterations:
        n = min(chunk, iterations - steps)
        opt.param_groups[0].update(max_iter=n, max_eval=n * 4)
        st = opt.state[p]
        i0, e0 = st.get("n_iter", 0), st.get("func_evals", 0)
        opt.step(closure)
        taken = st["n_iter"] - i0
        steps += taken
        if taken < n and st["func_evals"] - e0 < n * 4:
            break
        if project is not None:
            with torch.no_grad():
                project(p)
    return p.detach(), steps, seen


def _clamp(x: torch.Tensor) -> None:
    x.clamp_(-0.5, 1.2)


@pytest.mark.parametrize("chunk,project", [(60, None), (7, _clamp)])
def test_each_row_batched_equals_that_row_alone_and_torch_lbfgs(chunk, project):
    """Four different problems batched: every row's iterates are bitwise those of the row alone,
    and those of torch.optim.LBFGS(line_search_fn="strong_wolfe") on the same problem."""
    a = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    x0 = _start(4)
    xb, steps_b = minimize_rows(x0, lambda x, rows: rosenbrock(x, a[rows]), CFG, iterations=60, chunk=chunk, project=project)
    for i in range(4):
        ai = a[i : i + 1]
        xa, steps_a = minimize_rows(x0[i : i + 1], lambda x, rows, ai=ai: rosenbrock(x, ai), CFG, 60, chunk, project=project)
        assert torch.equal(xa[0], xb[i]) and steps_a == [steps_b[i]]
        # the same points evaluated, in the same order, as torch's optimiser
        mine: list[torch.Tensor] = []
        opt = BatchedLBFGS(x0[i : i + 1], CFG, 60, chunk, project=project)
        opt.run(lambda x, rows, ai=ai, mine=mine: mine.append(x.detach()[0].clone()) or rosenbrock(x, ai))
        ref, steps_t, seen = _torch_lbfgs(x0[i], lambda x, ai=ai: rosenbrock(x, ai), 60, chunk, project)
        assert steps_t == steps_b[i] and len(seen) == len(mine)
        assert max((u - v).abs().max().item() for u, v in zip(seen, mine)) <= 1e-12
        assert (ref - xb[i]).abs().max().item() <= 1e-12
    assert len(set(xb[:, 0].tolist())) == 4  # the problems really differ


def test_rows_stop_at_their_own_step_and_the_others_go_on():
    """A quadratic row converges in a few iterations (gradient tolerance) and is frozen; the
    Rosenbrock rows run every iteration; later rounds evaluate only the rows still running."""
    x0 = _start(3)
    c = torch.linspace(-1, 1, 10, dtype=torch.float64)
    a = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    batch_sizes: list[int] = []

    def fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        batch_sizes.append(len(rows))
        quad = 0.5 * ((x - c) ** 2).sum(1)
        return torch.where(rows == 0, quad, rosenbrock(x, a[rows]))  # row 0: quadratic

    opt = BatchedLBFGS(x0, CFG, iterations=40, chunk=25)
    x = opt.run(fn)
    assert opt.steps[0] < 5 and opt.steps[1:] == [40, 40], opt.steps
    assert torch.allclose(x[0], c, atol=1e-7)
    assert batch_sizes[0] == 3 and batch_sizes[-1] == 2 and 3 not in batch_sizes[len(batch_sizes) // 2 :]
    alone, steps = minimize_rows(x0[1:2], lambda x, rows: rosenbrock(x, a[1:2]), CFG, 40, 25)
    assert torch.equal(alone[0], x[1]) and steps == [40]


def test_row_at_an_optimum_takes_no_step():
    x0 = torch.tensor([[0.0, 0.0], [1.0, -2.0]], dtype=torch.float64)
    x, steps = minimize_rows(x0, lambda x, rows: ((x - 0.5) ** 2).sum(1) * (rows == 1), CFG, 10)  # row 0: constant 0
    assert steps[0] == 0 and torch.equal(x[0], x0[0])
    assert steps[1] >= 1 and torch.allclose(x[1], torch.full((2,), 0.5, dtype=torch.float64))


def test_a_row_retired_by_on_iter_keeps_its_point_and_the_others_go_on():
    """`on_iter` returning True as row 0 starts iteration 5 retires it with 4 steps, at exactly the
    point 4 iterations alone give; row 1 runs on, bitwise as alone."""
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x0 = _start(2)
    started: list[tuple[int, int]] = []

    def on_iter(row: int, n_iter: int, start_loss: float) -> bool:
        started.append((row, n_iter))
        return row == 0 and n_iter == 5

    opt = BatchedLBFGS(x0, CFG, iterations=30, chunk=30)
    x = opt.run(lambda x, rows: rosenbrock(x, a[rows]), on_iter=on_iter)
    assert opt.steps == [4, 30] and opt.retired == [True, False]
    assert [n for r, n in started if r == 0] == [1, 2, 3, 4, 5] and [n for r, n in started if r == 1] == list(range(1, 31))
    four, _ = minimize_rows(x0[:1], lambda x, rows: rosenbrock(x, a[:1]), CFG, 4, 30)
    alone, _ = minimize_rows(x0[1:], lambda x, rows: rosenbrock(x, a[1:]), CFG, 30, 30)
    assert torch.equal(x[0], four[0]) and torch.equal(x[1], alone[0])


class _NoisyQuadratic(torch.autograd.Function):
    """An ill-conditioned quadratic whose gradient carries a small deterministic error (~5% of its
    norm, a function of x), as a gradient through bf16 convolutions does: the loss is exact, so
    strong-Wolfe searches along directions built from the noisy curvature pairs eventually find
    no decrease (t = 0) long before the optimum."""

    n = 200
    c = torch.randn(1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scale = torch.logspace(0, 2, n, dtype=torch.float64)[None]

    @staticmethod
    def value(x: torch.Tensor) -> torch.Tensor:
        return (0.5 * _NoisyQuadratic.scale * (x - _NoisyQuadratic.c) ** 2).sum(1)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _NoisyQuadratic.value(x)

    @staticmethod
    def backward(ctx, go):
        (x,) = ctx.saved_tensors
        g = _NoisyQuadratic.scale * (x - _NoisyQuadratic.c)
        noise = torch.sin(x * 1e4 + 1.0) * 0.05 * g.norm(dim=1, keepdim=True) / _NoisyQuadratic.n**0.5
        return go[:, None] * (g + noise)


def test_a_stalled_row_restarts_from_steepest_descent_and_stops_only_when_that_does_not_help():
    """torch's L-BFGS stops at the first failed line search; ours restarts the row with an empty
    memory, descends further, and stops (before the cap: converged) when a restart brings no lower loss."""
    x0 = torch.zeros(1, _NoisyQuadratic.n, dtype=torch.float64)
    ref, torch_steps, _ = _torch_lbfgs(x0[0], _NoisyQuadratic.apply, 300, 25)
    x, steps = minimize_rows(x0, lambda x, rows: _NoisyQuadratic.apply(x), CFG, iterations=300, chunk=25)
    assert torch_steps < steps[0] < 300, (torch_steps, steps)
    assert _NoisyQuadratic.value(x).item() < 0.5 * _NoisyQuadratic.value(ref[None]).item()
