"""The driver's queue with fake workers on a simulated clock: start-up failures, crashes
mid-batch, timeouts, late answers from replaced workers, and worker-side OOM splitting.

The fake pool is a small discrete-event simulation: each started batch or ping gets a time at
which its outcome is ready; `wait` returns what is ready by now, or moves the clock forward to the
next event (at most `timeout`). So a 1-hour deadline costs no real time."""

from __future__ import annotations

import itertools
import math

import pytest

from pipeline.scheduler import Died, Done, Failed, InitFailed, NoWorkersError, RowTask, Scheduler, SchedulerConfig


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakePool:
    """`behave(slot, batch, attempt_of_slot) -> (seconds, outcome)`; pings answer per `ping`."""

    def __init__(self, size, clock, behave, ping=lambda slot, n: (1.0, Done([]))):
        self.size, self.clock, self.behave, self.ping_behave = size, clock, behave, ping
        self.events: dict[int, tuple[float, object]] = {}
        self.ids = itertools.count()
        self.pings = [0] * size
        self.replaced: list[int] = []
        self.runs: list[tuple[int, list[str]]] = []

    def run(self, slot, batch):
        h = next(self.ids)
        self.runs.append((slot, [t.row_id for t in batch]))
        dt, outcome = self.behave(slot, batch)
        self.events[h] = (self.clock.t + dt, outcome)
        return h

    def ping(self, slot):
        h = next(self.ids)
        self.pings[slot] += 1
        dt, outcome = self.ping_behave(slot, self.pings[slot])
        self.events[h] = (self.clock.t + dt, outcome)
        return h

    def wait(self, handles, timeout):
        due = [h for h in handles if self.events[h][0] <= self.clock.t]
        if not due:
            nxt = min((self.events[h][0] for h in handles), default=math.inf)
            self.clock.t = min(nxt, self.clock.t + timeout)
            due = [h for h in handles if self.events[h][0] <= self.clock.t]
        return [(h, self.events.pop(h)[1]) for h in due]

    def replace(self, slot):
        self.replaced.append(slot)


def ok_rows(batch, worker="w"):
    return Done([{"row_id": t.row_id, "status": "ok", "attempt": t.attempt, "worker": worker} for t in batch])


def tasks(n, budget=100.0):
    return [RowTask(f"r{i}", i, "c.jpg", ("s.jpg",), "{}", budget_s=budget) for i in range(n)]


def run(pool, batches, clock, **cfg):
    got, failed = [], []
    sched = Scheduler(pool, batches, got.extend, failed.extend, SchedulerConfig(**cfg), clock=clock, sleep=clock.sleep)
    sched.run()
    return got, {t.row_id: msg for t, msg in failed}, sched


def test_happy_path_every_row_once():
    clock = Clock()
    pool = FakePool(2, clock, lambda slot, b: (5.0, ok_rows(b)))
    t = tasks(6)
    got, failed, _ = run(pool, [t[0:2], t[2:4], t[4:6]], clock)
    assert sorted(r["row_id"] for r in got) == [f"r{i}" for i in range(6)] and not failed
    assert {slot for slot, _ in pool.runs} == {0, 1}  # both workers used


def test_init_failure_ends_the_run_in_seconds_with_the_reason():
    clock = Clock()
    reason = "WeightsUnavailableError: weight set 'vgg19-imagenet' is not available"
    pool = FakePool(2, clock, lambda slot, b: pytest.fail("no batch may start"), ping=lambda s, n: (2.0, InitFailed(reason)))
    with pytest.raises(NoWorkersError) as e:
        run(pool, [tasks(3)], clock)
    assert reason in str(e.value) and "remaining 3 row(s)" in str(e.value) and "2 worker(s)" in str(e.value)
    assert "rerun" not in str(e.value)
    assert clock.t <= 2.0  # as soon as both workers reported, not after a fixed wait


def test_one_worker_failing_to_start_leaves_the_others_working():
    clock = Clock()
    pool = FakePool(2, clock, lambda slot, b: (3.0, ok_rows(b)), ping=lambda s, n: (1.0, InitFailed("CUDA error") if s == 0 else Done([])))
    got, failed, _ = run(pool, [[t] for t in tasks(4)], clock)
    assert len(got) == 4 and not failed and {slot for slot, _ in pool.runs} == {1}


def test_worker_that_never_starts_hits_the_start_deadline():
    clock = Clock()
    pool = FakePool(1, clock, lambda slot, b: (1.0, ok_rows(b)), ping=lambda s, n: (math.inf, Done([])))
    with pytest.raises(NoWorkersError, match="did not answer within 30 s"):
        run(pool, [tasks(1)], clock, start_timeout_s=30)
    assert 30 <= clock.t <= 32


@pytest.mark.parametrize("retries", [0, 2])
def test_a_crash_mid_batch_retries_batch_mates_alone_and_only_the_poison_row_fails(retries):
    clock = Clock()

    def behave(slot, batch):
        if any(t.row_id == "r1" for t in batch):
            return 2.0, Died("worker process died (SIGKILL)")
        return 2.0, ok_rows(batch)

    pool = FakePool(1, clock, behave)
    got, failed, _ = run(pool, [tasks(4)], clock, retries=retries)
    assert sorted(r["row_id"] for r in got) == ["r0", "r2", "r3"]  # batch-mates never fail, even with 0 retries
    assert all(r["attempt"] == 2 for r in got)  # each ran once more, alone
    assert list(failed) == ["r1"] and f"died {retries + 1} time(s) while running this row alone" in failed["r1"]
    solo_r1 = [ids for _, ids in pool.runs if ids == ["r1"]]
    assert len(solo_r1) == retries + 1
    # the start, then one ping per restart after each death (none needed after the very last)
    assert pool.pings[0] in (1 + len(solo_r1), 2 + len(solo_r1))


def test_a_timed_out_batch_is_replaced_retried_alone_and_late_answers_are_dropped():
    clock = Clock()

    def behave(slot, batch):
        ids = {t.row_id for t in batch}
        if "r2" in ids:  # hangs far past any deadline, then answers "ok" anyway (an orphan)
            return 10_000.0, ok_rows(batch, worker="orphan")
        return 1.0, ok_rows(batch)

    pool = FakePool(1, clock, behave)
    got, failed, sched = run(pool, [tasks(3, budget=50.0)], clock)
    assert sorted(r["row_id"] for r in got) == ["r0", "r1"]
    assert all(r["worker"] != "orphan" for r in got)  # the replaced worker's late answers never count
    assert list(failed) == ["r2"] and "timed out" in failed["r2"] and "--row-timeout" in failed["r2"]
    assert pool.replaced == [0, 0] and sched.replaced == 2  # batch timeout, then r2's solo timeout
    # deadlines: the batch of 3 at 150 s, r2 alone at 50 s more (plus restarts and the other rows)
    assert 200 <= clock.t < 300


def test_a_restart_that_fails_requeues_the_batch_for_the_other_worker():
    clock = Clock()
    state = {"died": False}

    def behave(slot, batch):
        if slot == 0 and not state["died"]:
            state["died"] = True
            return 1.0, Died("node lost")
        return 1.0, ok_rows(batch)

    def ping(slot, n):
        return (1.0, InitFailed("restart failed: disk full")) if slot == 0 and n > 1 else (1.0, Done([]))

    pool = FakePool(2, clock, behave, ping)
    got, failed, _ = run(pool, [tasks(2)[:1], tasks(2)[1:]], clock)
    assert sorted(r["row_id"] for r in got) == ["r0", "r1"] and not failed


def test_failure_outside_row_guards_records_every_row_of_the_batch():
    clock = Clock()
    pool = FakePool(1, clock, lambda slot, b: (1.0, Failed("TypeError: bug")))
    got, failed, _ = run(pool, [tasks(2)], clock)
    assert not got and set(failed) == {"r0", "r1"} and all("TypeError: bug" in m for m in failed.values())


# ----------------------------------------------------------------------------- worker OOM split


def test_worker_out_of_memory_frees_splits_and_names_the_size_and_device():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from pipeline.worker import StyleWorker
    from stylecore.params import Params

    calls: list[int] = []

    class FakeWorker(StyleWorker):
        def __init__(self):  # no models: only the split logic is under test
            self.device, self.device_name, self.worker = torch.device("cpu"), "cpu", "fake"

        def _run(self, items, started):
            calls.append(len(items))
            if len(items) > 1 or items[0][0].row_id == "r3":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return [{"row_id": items[0][0].row_id, "status": "ok"}]

    job = SimpleNamespace(content=torch.zeros(1, 3, 48, 64), params=Params(size=64))
    items = [(t, job) for t in tasks(4)]
    rows = FakeWorker()._run_split(items, started=None)
    by_id = {r["row_id"]: r for r in rows}
    assert [by_id[f"r{i}"]["status"] for i in range(4)] == ["ok", "ok", "ok", "error"]
    assert calls == [4, 2, 1, 1, 2, 1, 1]  # halves, then single rows
    msg = by_id["r3"]["error"]
    assert "out of memory at size 64 (48x64 px" in msg and "on cpu" in msg and "smaller size" in msg
