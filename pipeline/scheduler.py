"""The driver's queue: batches of `RowTask`s to workers, with deadlines, retries and isolation.

Pure Python, no Ray: a `Pool` (Ray actors in `pipeline.runner`, fakes in the tests) runs batches
and answers pings; this module decides what runs where, when a batch has run too long, which rows
to retry alone, and when to give up. Every wait has a deadline:

- a worker must answer its first ping within `start_timeout_s` (model loading included), and
  again after Ray restarts it; a worker whose `__init__` raised is gone at once, with its reason;
- a batch must finish within the sum of its rows' `budget_s`; past it the worker is replaced
  and each row is retried alone; a row that times out a second time is an `error`;
- a worker that dies running a batch of several rows says nothing about which row killed it, so
  every row is retried alone, whatever `retries` says; a worker that dies running one row alone
  counts against that row, which is an `error` once it has killed `retries + 1` workers.

Results never come from a batch the scheduler gave up on: a replaced worker's late answer is
dropped, so a row can't be recorded twice.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RowTask:
    """One manifest row on its way to a worker: what to run and how many tries it has had."""

    row_id: str
    index: int  # row number in the manifest (from 0)
    content: str
    styles: tuple[str, ...]
    params: str  # resolved Params, JSON
    extra: Mapping[str, Any] = field(default_factory=dict)  # carried-through manifest columns
    budget_s: float = 3600.0  # seconds this row may take inside a batch before it is cancelled
    attempt: int = 1
    deaths: int = 0  # workers that died while this row ran alone
    timeouts: int = 0

    def again(self) -> RowTask:
        """The next attempt of this row."""
        return dataclasses.replace(self, attempt=self.attempt + 1)


# What a pool reports for a batch (or a ping, which reports Done with no rows).
@dataclass(frozen=True)
class Done:
    rows: list[dict]


@dataclass(frozen=True)
class Died:
    """The worker process died (killed, crashed, out of host memory); Ray restarts it."""

    reason: str


@dataclass(frozen=True)
class InitFailed:
    """The worker's `__init__` raised: loading again would fail again, so that worker is gone."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """An exception outside the worker's per-row guards: the batch's rows are errors."""

    reason: str


Outcome = Done | Died | InitFailed | Failed


class Pool(Protocol):
    """Workers by slot number; handles are whatever `wait` takes back."""

    size: int

    def run(self, slot: int, batch: Sequence[RowTask]) -> Hashable: ...
    def ping(self, slot: int) -> Hashable: ...
    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[tuple[Hashable, Outcome]]: ...
    def replace(self, slot: int) -> None: ...  # kill the worker's process; a fresh one starts


class NoWorkersError(RuntimeError):
    """No worker is left to run the remaining rows; the message says why and what to do."""


@dataclass(frozen=True)
class SchedulerConfig:
    retries: int = 2  # extra solo attempts of a row whose worker process died
    start_timeout_s: float = 300.0  # a worker's (re)start, model loading included
    poll_s: float = 1.0  # longest sleep between checks of deadlines
    ping_backoff_s: float = 0.5  # pause before pinging a restarting worker again


@dataclass
class _Slot:
    state: str = "starting"  # starting | idle | busy | gone
    handle: Hashable | None = None
    batch: list[RowTask] = field(default_factory=list)
    deadline: float = 0.0
    next_ping: float = 0.0
    reason: str = ""  # why it is gone


class Scheduler:
    """Runs `batches` on `pool`; finished rows go to `on_rows`, rows given up to `on_failed`."""

    def __init__(
        self,
        pool: Pool,
        batches: Sequence[Sequence[RowTask]],
        on_rows: Callable[[list[dict]], None],
        on_failed: Callable[[list[tuple[RowTask, str]]], None],
        config: SchedulerConfig = SchedulerConfig(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.pool, self.cfg, self.clock, self.sleep = pool, config, clock, sleep
        self.on_rows, self.on_failed = on_rows, on_failed
        self.pending: collections.deque[list[RowTask]] = collections.deque(list(b) for b in batches if b)
        self.slots = [_Slot() for _ in range(pool.size)]
        self.replaced = 0  # workers replaced after a timeout (for the summary)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Until every row has an outcome; raises NoWorkersError when no worker is left."""
        now = self.clock()
        for i in range(len(self.slots)):
            self._starting(i, now)
        while self.pending or any(s.state == "busy" for s in self.slots):
            now = self.clock()
            self._ping_due(now)
            self._assign(now)
            if all(s.state == "gone" for s in self.slots):
                raise NoWorkersError(self._why_none())
            handles = {s.handle: i for i, s in enumerate(self.slots) if s.handle is not None}
            timeout = self._next_wakeup(now)
            for handle, outcome in self.pool.wait(list(handles), timeout) if handles else self._sleep(timeout):
                slot = handles.get(handle)
                if slot is not None and self.slots[slot].handle == handle:
                    self._on(slot, outcome)
            self._expire(self.clock())

    def _sleep(self, seconds: float) -> list:
        self.sleep(max(0.0, seconds))
        return []

    def _next_wakeup(self, now: float) -> float:
        times = [now + self.cfg.poll_s]
        for s in self.slots:
            if s.state in ("busy", "starting"):
                times.append(s.deadline)
            if s.state == "starting" and s.handle is None:
                times.append(s.next_ping)
        return max(0.0, min(times) - now)

    # ------------------------------------------------------------------ transitions
    def _starting(self, i: int, now: float, delay: float = 0.0) -> None:
        s = self.slots[i]
        s.state, s.batch, s.handle = "starting", [], None
        s.deadline, s.next_ping = now + self.cfg.start_timeout_s, now + delay

    def _ping_due(self, now: float) -> None:
        for i, s in enumerate(self.slots):
            if s.state == "starting" and s.handle is None and now >= s.next_ping:
                s.handle = self.pool.ping(i)

    def _assign(self, now: float) -> None:
        for i, s in enumerate(self.slots):
            if s.state == "idle" and self.pending:
                batch = self.pending.popleft()
                s.state, s.batch = "busy", batch
                s.deadline = now + sum(t.budget_s for t in batch)
                s.handle = self.pool.run(i, batch)

    def _on(self, i: int, outcome: Outcome) -> None:
        s, now = self.slots[i], self.clock()
        s.handle = None
        if s.state == "starting":
            if isinstance(outcome, Done):
                s.state = "idle"
            elif isinstance(outcome, InitFailed):
                self._gone(i, f"its start-up failed: {outcome.reason}")
            else:  # restarting (or not yet placed): ask again shortly, within the start deadline
                s.next_ping = now + self.cfg.ping_backoff_s
            return
        batch, s.batch = s.batch, []
        if isinstance(outcome, Done):
            s.state = "idle"
            self.on_rows(outcome.rows)
        elif isinstance(outcome, Failed):
            s.state = "idle"
            self.on_failed([(t, f"worker failure: {outcome.reason}") for t in batch])
        elif isinstance(outcome, InitFailed):  # restarted, and its start-up failed: not the rows' fault
            self.pending.appendleft(batch)
            self._gone(i, f"its restart failed: {outcome.reason}")
        else:
            self._died(batch, outcome.reason)
            self._starting(i, now, self.cfg.ping_backoff_s)

    def _died(self, batch: list[RowTask], reason: str) -> None:
        if len(batch) > 1:  # which row killed it is unknown: isolate every row, not counted
            self.pending.extend([t.again()] for t in batch)
            return
        t = dataclasses.replace(batch[0], deaths=batch[0].deaths + 1)
        if t.deaths > self.cfg.retries:
            self.on_failed(
                [
                    (
                        t,
                        (
                            f"worker process died {t.deaths} time(s) while running this row alone; gave up after "
                            f"{self.cfg.retries} retries. The row itself brings the process down (often: out of host "
                            f"memory at this size); try a smaller size. Last: {reason}"
                        ),
                    )
                ]
            )
        else:
            self.pending.append([t.again()])

    def _expire(self, now: float) -> None:
        for i, s in enumerate(self.slots):
            if s.state == "busy" and now >= s.deadline:
                batch = s.batch
                self.pool.replace(i)  # its late answer is dropped: the handle is forgotten below
                self.replaced += 1
                self._starting(i, now, self.cfg.ping_backoff_s)
                self._timed_out(batch)
            elif s.state == "starting" and now >= s.deadline:
                self._gone(
                    i,
                    (
                        f"it did not answer within {self.cfg.start_timeout_s:.0f} s of starting: Ray could not place it "
                        f"(not enough free CPUs/GPUs for one worker) or loading its models hung"
                    ),
                )

    def _timed_out(self, batch: list[RowTask]) -> None:
        total = sum(t.budget_s for t in batch)
        for t in batch:
            t = dataclasses.replace(t, timeouts=t.timeouts + 1)
            if t.timeouts >= 2:
                self.on_failed(
                    [
                        (
                            t,
                            (
                                f"timed out after {total:.0f} s, its second timeout (each timed-out row is retried alone "
                                f"once); raise --row-timeout (seconds per row), or lower size or iterations"
                            ),
                        )
                    ]
                )
            else:
                self.pending.append([t.again()])

    def _gone(self, i: int, reason: str) -> None:
        s = self.slots[i]
        s.state, s.reason, s.handle = "gone", reason, None
        if s.batch:
            self.pending.appendleft(s.batch)
            s.batch = []

    def _why_none(self) -> str:
        reasons = collections.Counter(s.reason for s in self.slots)
        left = sum(len(b) for b in self.pending)
        lines = [f"no worker is left to run the remaining {left} row(s):"]
        lines += [f"  {n} worker(s): {r}" if n > 1 else f"  worker: {r}" for r, n in reasons.items()]
        return "\n".join(lines)
