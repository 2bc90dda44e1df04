"""`stxpipe submit` on a real local Ray: results, resume, bad rows, killed workers and drivers,
a two-node loopback cluster, and the metrics endpoint."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from pipeline.manifest import write_manifest
from pipeline.runner import CHAOS_ENV, SubmitConfig, submit
from stylecore.images import load_image, read_png_metadata

pytestmark = pytest.mark.slow

TINY = {"size": 32, "iterations": 2, "weights": "vgg16-hed", "lpips_weights": "vgg16-hed"}
CONTRACT = [
    "row_id",
    "content",
    "style",
    "status",
    "error",
    "output",
    "lpips_style",
    "lpips_content",
    "loss_content",
    "loss_style",
    "loss_tv",
    "iterations",
    "seconds",
    "weights",
    "device",
    "worker",
    "started_at",
    "finished_at",
    "params",
]


def _manifest(path: Path, samples: Path, n: int, extra_rows: list[dict] | None = None, **params) -> Path:
    contents = sorted((samples / "content").glob("*.jpg"))
    styles = sorted((samples / "style").glob("*.jpg"))
    rows = [
        {
            "content": str(contents[i % len(contents)]),
            "style": str(styles[i % len(styles)]),
            "params": {**TINY, **params, "seed": i},
            "tag": f"t{i}",
        }
        for i in range(n)
    ]
    write_manifest(rows + (extra_rows or []), path)
    return path


def _all_rows(out: Path):
    return R.read_all(str(out)).to_pylist()


def test_six_rows_two_workers_then_resume_runs_nothing(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, 6)
    out = tmp_path / "out"
    s = submit(SubmitConfig(str(m), str(out), workers=2, batch_size=2), progress=False)
    assert (s.ok, s.failed) == (6, 0)
    t = R.read_results(str(out))
    assert t.num_rows == 6 and set(CONTRACT) <= set(t.column_names) and "tag" in t.column_names
    for r in t.to_pylist():
        assert r["status"] == "ok" and r["error"] is None
        img = load_image(r["output"])
        assert max(img.size) == 32
        assert "stxpipe:params" in read_png_metadata(r["output"])
        assert 0 < r["lpips_content"] < 1.5 and 0 < r["lpips_style"] < 1.5 and r["lpips_style"] > r["lpips_content"]
        assert r["iterations"] == 2 and r["seconds"] > 0 and r["finished_at"] >= r["started_at"]
        assert r["weights"].startswith("vgg16-hed@sha256:") and r["device"].startswith("cpu")
        assert r["params"]["size"] == 32 and r["params"]["style_weight"] == 1e3  # fully resolved
    assert {r["tag"] for r in t.to_pylist()} == {f"t{i}" for i in range(6)}
    result = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0 and "nothing to run: all 6 rows" in result.output
    assert len(_all_rows(out)) == 6


def test_missing_and_corrupt_images_become_error_rows(tmp_path, samples, hed):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes((samples / "style" / "shipwreck.jpg").read_bytes()[:300])
    extra = [
        {"content": str(tmp_path / "missing.jpg"), "style": str(samples / "style" / "shipwreck.jpg"), "params": TINY},
        {"content": str(samples / "content" / "coffee.jpg"), "style": str(bad), "params": TINY},
    ]
    m = _manifest(tmp_path / "m.parquet", samples, 2, extra)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress", "--batch-size", "4"])
    assert r.exit_code == 2, r.output  # finished, with failed rows
    rows = {x["content"]: x for x in R.read_results(str(out)).to_pylist()}
    assert "missing.jpg" in rows[str(tmp_path / "missing.jpg")]["error"]
    assert rows[str(samples / "content" / "coffee.jpg")]["status"] == "error"
    assert "corrupt.jpg" in rows[str(samples / "content" / "coffee.jpg")]["error"]
    assert sum(x["status"] == "ok" for x in rows.values()) == 2


def _pid_of(worker: str) -> int:
    """The pid in a results row's `worker` ("<node>@<host>:<pid>"): a worker of this run."""
    return int(worker.rsplit(":", 1)[1])


def test_killed_worker_is_replaced_and_its_batch_retried(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, 6, iterations=40)
    out = tmp_path / "out"
    box: dict = {}
    th = threading.Thread(target=lambda: box.update(s=submit(SubmitConfig(str(m), str(out), workers=1, batch_size=1), progress=False)))
    th.start()
    killed = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed is None:
        if R.part_paths(str(out)):  # the run's own worker is up and has finished a row
            killed = _pid_of(_all_rows(out)[0]["worker"])
            time.sleep(0.5)  # it has taken its next row by now (rows take seconds here)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    th.join(300)
    assert killed is not None and not th.is_alive()
    assert box["s"].ok == 6 and box["s"].failed == 0
    rows = _all_rows(out)
    oks = [r["row_id"] for r in rows if r["status"] == "ok"]
    assert len(oks) == 6 and len(set(oks)) == 6  # every row ok exactly once
    assert any(r["attempt"] == 2 for r in rows)  # the row the kill interrupted ran again
    assert len({r["worker"] for r in rows}) == 2 and killed in {_pid_of(r["worker"]) for r in rows}


def test_a_row_that_keeps_killing_workers_ends_as_error(tmp_path, samples, hed, monkeypatch):
    m = _manifest(tmp_path / "m.parquet", samples, 3)
    from pipeline.manifest import read_manifest

    poison = read_manifest(m)[1].row_id
    monkeypatch.setenv(CHAOS_ENV, poison)
    out = tmp_path / "out"
    s = submit(SubmitConfig(str(m), str(out), workers=1, batch_size=3, retries=1), progress=False)
    assert (s.ok, s.failed) == (2, 1)
    rows = {r["row_id"]: r for r in R.read_results(str(out)).to_pylist()}
    assert rows[poison]["status"] == "error" and "worker process died 2 time(s) while running this row alone" in rows[poison]["error"]
    assert all(r["attempt"] == 2 for rid, r in rows.items() if rid != poison)  # batch-mates: once more, alone


def test_retries_zero_from_the_cli_never_fails_the_batch_mates_of_a_crashed_row(tmp_path, samples, hed, monkeypatch):
    m = _manifest(tmp_path / "m.parquet", samples, 3)
    from pipeline.manifest import read_manifest

    poison = read_manifest(m)[0].row_id
    monkeypatch.setenv(CHAOS_ENV, poison)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--no-progress", "--batch-size", "3", "--retries", "0"])
    assert r.exit_code == 2, r.output
    rows = {x["row_id"]: x for x in R.read_results(str(out)).to_pylist()}
    assert rows[poison]["status"] == "error" and "died 1 time(s)" in rows[poison]["error"]
    assert sorted(x["status"] for rid, x in rows.items() if rid != poison) == ["ok", "ok"]


def test_killed_driver_then_resubmit_finishes_without_redoing_rows(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, 6, iterations=10)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "submit", str(m), "--out", str(out), "--no-progress", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not R.part_paths(str(out)):
            time.sleep(0.2)
        assert R.part_paths(str(out)), "no row finished in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray it started
        proc.wait()
    # The killed driver's workers may still finish the row they had, but only a driver writes
    # results, so nothing of theirs can land; its lock names a dead pid, which the next submit takes over.
    first = {r["row_id"] for r in _all_rows(out) if r["status"] == "ok"}
    assert 1 <= len(first) < 6
    s = submit(SubmitConfig(str(m), str(out)), progress=False)
    assert s.skipped == len(first) and s.ok == 6 - len(first)
    oks = [r["row_id"] for r in _all_rows(out) if r["status"] == "ok"]
    assert len(oks) == 6 and len(set(oks)) == 6  # no row done twice, none lost


@pytest.fixture
def two_node_cluster(tmp_path, monkeypatch):
    """A head and a second node on loopback, one CPU each, as separate process groups, with
    Ray's token authentication on (a fresh token; the driver gets it through the environment).
    Every port is chosen by Ray (`--port=0`, metrics export ports left free): nothing is picked
    by bind-and-release, so no other program can take a port between the test's pick and Ray's
    bind. The head's address is read from `ray_current_cluster` in its own temp dir. Yields
    (address, metrics export ports of both nodes)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="stxr-", dir="/tmp"))  # short: Ray's unix sockets live here
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats"]
    procs = []
    env = dict(os.environ, RAY_ADDRESS="")
    try:
        procs.append(
            subprocess.Popen(
                [ray_bin, "start", "--head", "--port=0", f"--temp-dir={temp_dir}", "--include-dashboard=false", *common],
                start_new_session=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        port = _head_port(temp_dir, procs[0])
        address = f"127.0.0.1:{port}"
        procs.append(
            subprocess.Popen(
                [ray_bin, "start", f"--address={address}", *common],
                start_new_session=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        # Both nodes alive, and each node's metrics export port, as the cluster reports them.
        r = subprocess.run([sys.executable, "-c", _NODES, address], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, "second node did not join: " + r.stdout[-2000:] + r.stderr[-2000:]
        metric_ports = json.loads(r.stdout.rsplit("NODES ", 1)[1])
        assert len(metric_ports) == 2 and all(metric_ports), metric_ports
        yield address, tuple(metric_ports)
    finally:
        # Stop exactly what we started: each node's process group (raylet, GCS, agents); its
        # worker processes exit when their raylet goes.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)
        for p in procs:
            p.wait(10)
            assert _group_gone(p.pid), f"processes of group {p.pid} are still running"
        shutil.rmtree(temp_dir, ignore_errors=True)


# Run in a fresh process (Ray keeps its auth settings per process): wait for two alive nodes,
# print their metrics export ports.
_NODES = (
    "import json, ray, sys, time; ray.init(address=sys.argv[1], logging_level='error'); t = time.monotonic() + 90\n"
    "alive = lambda: [n for n in ray.nodes() if n['Alive']]\n"
    "while len(alive()) < 2 and time.monotonic() < t: time.sleep(0.5)\n"
    "print('NODES ' + json.dumps([n.get('MetricsExportPort') for n in alive()]))\n"
    "sys.exit(0 if len(alive()) == 2 else 1)"
)


def _head_port(temp_dir: Path, head: subprocess.Popen, timeout: float = 60) -> int:
    """The GCS port a `ray start --head --port=0` chose: `ray start` writes the address to
    `<temp dir>/ray_current_cluster` once the GCS is up (the host in it may be the machine's
    address; the port is what matters, and the GCS listens on loopback too)."""
    f = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, f"ray start --head exited with {head.returncode}"
        if f.is_file() and f.read_text().strip():
            return int(f.read_text().strip().rsplit(":", 1)[1])
        time.sleep(0.2)
    raise TimeoutError(f"ray start --head wrote no {f} within {timeout:g} s")


def _group_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_two_node_cluster_runs_rows_on_both_nodes_and_exports_metrics(tmp_path, samples, hed, two_node_cluster):
    # Drivers run as subprocesses: Ray caches its auth settings per process, and earlier tests
    # in this process used embedded clusters without a token.
    address, metric_ports = two_node_cluster
    m = _manifest(tmp_path / "m.parquet", samples, 6, iterations=6)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "submit",
        str(m),
        "--out",
        str(out),
        "--address",
        address,
        "--workers",
        "2",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    t = R.read_results(str(out))
    assert pc.all(pc.equal(t.column("status"), "ok")).as_py()
    nodes = {w.split("@")[0] for w in t.column("worker").to_pylist()}
    assert len(nodes) == 2, nodes  # rows ran on both nodes
    text = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "stxpipe_rows_total" not in text:
        # A fresh opener: urlopen's global one keeps the proxy env of its first use in this process.
        opener = urllib.request.build_opener()
        text = "".join(opener.open(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode() for p in metric_ports)
        time.sleep(1)
    assert "stxpipe_rows_total" in text and "stxpipe_row_seconds" in text


def test_ctrl_c_stops_cleanly_and_a_later_submit_finishes(tmp_path, samples, hed):
    m = _manifest(tmp_path / "m.parquet", samples, 4, iterations=10)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "submit", str(m), "--out", str(out), "--no-progress", "--batch-size", "1"]
    # The driver must start with SIGINT's default disposition, as under a terminal. A test run
    # started in the background by a non-interactive shell (`pytest &`) ignores SIGINT, a child
    # inherits that and Python then installs no KeyboardInterrupt handler (the run ignored the
    # Ctrl-C and exited 0). A handler in this process, unlike SIG_IGN, is reset to the default by exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not R.part_paths(str(out)) and proc.poll() is None:
            time.sleep(0.2)
        # Only mid-run is this the test it claims: a finished row on disk, the driver still going.
        assert R.part_paths(str(out)), "no row finished in time: nothing to interrupt"
        assert proc.poll() is None, "the run ended before it could be interrupted (rows too fast?)"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: to the driver, as a terminal would
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted" in output and "run the same command again" in output
    done = {r["row_id"] for r in _all_rows(out) if r["status"] == "ok"}
    assert 1 <= len(done) < 4  # interrupted mid-run: some rows saved, some left
    s = submit(SubmitConfig(str(m), str(out)), progress=False)
    assert s.skipped == len(done) and s.ok == 4 - len(done) and s.failed == 0


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, samples):
    m = _manifest(tmp_path / "m.parquet", samples, 3)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["submit", str(m), "--out", str(out), "--dry-run", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "rows to run: 3; already done (ok): 0" in r.output and "2 worker(s)" in r.output
    assert not out.exists()
