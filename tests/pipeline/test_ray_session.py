"""pipeline.ray_session on real Ray: the embedded session listens on loopback only and leaves no
process behind; resource requests the cluster cannot place are refused; a local --out must be
visible from every node (one embedded node; and a real second node in its own mount namespace,
where the folder truly is not there)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline import ray_session as RS


def _wait(cond, timeout: float, what: str, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def _procs_now() -> dict:
    import psutil
    import ray  # noqa: F401  # puts Ray's bundled psutil on sys.path

    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _name(p) -> str:
    try:
        return p.name()
    except Exception:
        return "?"


# ------------------------------------------------------------------------------------ fast


def test_listening_sockets_sees_this_process_sockets_and_loopback_is_recognised():
    with socket.socket() as lo, socket.socket() as anyaddr, socket.socket(socket.AF_INET6) as v6:
        lo.bind(("127.0.0.1", 0)), anyaddr.bind(("0.0.0.0", 0)), v6.bind(("::", 0))
        lo.listen(), anyaddr.listen(), v6.listen()
        found = {(a, p) for pid, a, p in RS.listening_sockets([os.getpid()]) if pid == os.getpid()}
        assert ("127.0.0.1", lo.getsockname()[1]) in found
        assert ("0.0.0.0", anyaddr.getsockname()[1]) in found
        assert ("::", v6.getsockname()[1]) in found
    assert RS.listening_sockets([2**22 + 7]) == []  # no such process: skipped
    assert all(map(RS._is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.0.2"]))
    assert not any(map(RS._is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "*", ""]))


def test_check_resources_counts_what_fits_node_by_node():
    two = [{"CPU": 3.0}, {"CPU": 3.0}]
    RS.check_resources(2, 2, 0, nodes=two)
    with pytest.raises(RS.ResourceError) as e:  # 6 CPUs in all, but 2-CPU workers fit once per node
        RS.check_resources(3, 2, 0, nodes=two)
    assert "--workers 3" in str(e.value) and "only 2 such workers" in str(e.value) and "use --workers 2" in str(e.value)
    with pytest.raises(RS.ResourceError, match="no node has that much"):
        RS.check_resources(1, 4, 0, nodes=two)
    with pytest.raises(RS.ResourceError, match="has no GPUs.*drop --gpus-per-worker.*--address"):
        RS.check_resources(1, 1, 0.5, nodes=two)
    gpu = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 2.0}]
    RS.check_resources(6, 1, 0.5, nodes=gpu)  # fractions share a GPU: 2 + 4
    with pytest.raises(RS.ResourceError, match="only 6 such workers"):
        RS.check_resources(7, 1, 0.5, nodes=gpu)
    RS.check_resources(10, 0.1, 0, nodes=[{"CPU": 1.0}])  # 1 / 0.1 is 10, not 9


def test_token_file_is_created_0600_and_a_loose_one_is_tightened(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    RS._secure_token_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    token.chmod(0o644)
    before = token.read_text()
    RS._secure_token_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == before  # same token
    token.unlink()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice: no file made
    RS._secure_token_file()
    assert not token.exists()


def test_uris_are_not_checked_for_sharing():
    for out in ("s3://bucket/run", "gs://bucket/run", "memory://x"):
        RS.check_shared_output(out)  # returns before touching Ray or any folder
    assert RS._is_uri("s3://b/x") and not RS._is_uri("/tmp/x") and not RS._is_uri("file:///tmp/x") and not RS._is_uri("rel/x")


# ------------------------------------------------------------------------------------ embedded Ray


def _restore_auth_mode(saved: str | None) -> None:
    # ray.init() sets RAY_AUTH_MODE=token in this process; give later tests the environment back.
    # (Not by pre-setting it: Ray reads it at import, see ray_session._sync_auth_mode.)
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


@pytest.fixture
def keep_auth_env():
    saved = os.environ.get("RAY_AUTH_MODE")
    yield
    _restore_auth_mode(saved)


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_and_leaves_nothing_behind(keep_auth_env):
    import ray

    assert not ray.is_initialized()
    before = _procs_now()
    mine_before = {(a, p) for _, a, p in RS.listening_sockets([os.getpid()])}
    ctx = RS.start_embedded(num_cpus=1, runtime_env=None)
    try:
        assert ctx.address_info["node_ip_address"] == "127.0.0.1"
        assert ctx.dashboard_url.startswith("127.0.0.1:")

        @ray.remote(num_cpus=0)
        class Probe:
            def pid(self) -> int:
                return os.getpid()

        actor = Probe.remote()
        ray.get(actor.pid.remote(), timeout=120)  # a worker process with its own gRPC server
        started: dict = {}

        def daemons_listening():
            # Agents bind their ports a moment after ray.init returns: wait for each kind.
            started.update({pid: p for pid, p in _procs_now().items() if pid not in before})
            socks = RS.listening_sockets(started)
            names = {_name(started[pid]) for pid, _, _ in socks}
            want = ("gcs_server", "raylet", "DashboardA", "RuntimeEnv", "Probe")
            return socks if all(any(w in n for n in names) for w in want) else None

        socks = _wait(daemons_listening, 60, "every Ray daemon listening")
        socks += [(os.getpid(), a, p) for _, a, p in RS.listening_sockets([os.getpid()]) if (a, p) not in mine_before]
        exposed = [(pid, _name(started.get(pid)) if pid in started else "driver", a, p) for pid, a, p in socks if not RS._is_loopback(a)]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert any(pid == os.getpid() for pid, _, _ in socks)  # the driver's own core worker, on loopback
    finally:
        ray.shutdown()
    import psutil

    def all_gone():
        left = []
        for p in started.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.NoSuchProcess:
                pass
        return not left

    _wait(all_gone, 30, f"processes of the embedded Ray gone ({sorted(started)})")


@pytest.fixture(scope="class")
def embedded():
    """One embedded Ray (1 CPU) started through connect() with no address, for the checks of one
    class (`TestOnOneEmbeddedNode`, `TestAProbePastItsDeadline`), stopped at its end."""
    import ray

    saved = os.environ.get("RAY_AUTH_MODE")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        ctx, is_embedded = RS.connect(None, num_cpus=1, runtime_env=None)
        try:
            assert is_embedded and ctx.address_info["node_ip_address"] == "127.0.0.1"
            yield ctx
        finally:
            ray.shutdown()
            _restore_auth_mode(saved)


_LATE_TOKEN_MODE = """
import os, ray
os.environ["RAY_AUTH_MODE"] = "token"  # after `import ray`: Ray's in-process config says otherwise
from pipeline.ray_session import start_embedded
start_embedded(1, None)
print("RESULT", ray.get(ray.remote(lambda: 42).remote(), timeout=60))
ray.shutdown()
"""


@pytest.mark.slow
def test_token_mode_set_after_importing_ray_still_reaches_the_embedded_cluster():
    # In a fresh process: this one's Ray config is already settled by the tests above.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    r = subprocess.run([sys.executable, "-c", _LATE_TOKEN_MODE], capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0 and "RESULT 42" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.slow
class TestOnOneEmbeddedNode:
    """Checks against one embedded Ray shared by this class (and torn down at its end, so the
    tests above that need no Ray running find none, whatever the order)."""

    def test_check_resources_refuses_gpus_and_too_many_workers_on_this_cluster(self, embedded):
        import ray

        if ray.cluster_resources().get("GPU"):
            pytest.skip("this machine has GPUs; the refusal needs a GPU-less cluster")
        RS.check_resources(1, 1, 0)
        with pytest.raises(RS.ResourceError) as e:
            RS.check_resources(1, 1, 1)
        msg = str(e.value)
        assert "--gpus-per-worker 1 but the cluster has no GPUs" in msg and "drop --gpus-per-worker" in msg and "--address" in msg
        with pytest.raises(RS.ResourceError, match="--workers 2 .* only 1 such workers"):
            RS.check_resources(2, 1, 0)

    def test_check_shared_output_passes_on_one_node_and_removes_its_marker(self, embedded, tmp_path):
        out = tmp_path / "out"
        RS.check_shared_output(str(out))
        assert out.is_dir() and list(out.iterdir()) == []
        RS.check_shared_output(f"file://{out}")

    def test_check_shared_output_names_a_node_that_sees_another_folder(self, embedded, tmp_path):
        # Simulated: the node looks for the marker under a different, empty folder, which is what a
        # node with its own local disk at the same path sees. The two-node test below does it for real.
        import ray

        out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
        elsewhere.mkdir()
        with pytest.raises(RS.SharedOutputError) as e:
            RS.check_shared_output(str(out), _read_root=str(elsewhere))
        msg = str(e.value)
        node = ray.get_runtime_context().get_node_id()
        assert f"node {node[:8]}" in msg and "1 of 1 nodes" in msg and "FileNotFoundError" in msg
        assert "s3://" in msg and "shared filesystem mounted at the same path on every node" in msg
        assert list(out.iterdir()) == []  # marker removed on failure too


@pytest.mark.slow
class TestAProbePastItsDeadline:
    """On an embedded Ray of its own: the probe it gives up on is force-cancelled, which kills
    the worker process running it; on a shared session that kill could land on the next test's
    probe (seen once under load in random order: WorkerCrashedError)."""

    def test_check_shared_output_has_a_deadline(self, embedded, tmp_path):
        t0 = time.monotonic()
        with pytest.raises(RS.SharedOutputError, match="no answer within 0 s"):
            RS.check_shared_output(str(tmp_path / "out"), timeout_s=0)
        assert time.monotonic() - t0 < 10


# ------------------------------------------------------------------------------------ two nodes


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_DRIVER = """
import json, sys, time, ray
from pipeline import ray_session as RS
address, local, shared = sys.argv[1:4]
ctx, embedded = RS.connect(address, num_cpus=1, runtime_env=None)
deadline = time.monotonic() + 90
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
res = {"embedded": embedded, "nodes": {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]},
       "head": ray.get_runtime_context().get_node_id()}
RS.check_shared_output(shared)
try:
    RS.check_shared_output(local)
    res["local"] = None
except RS.SharedOutputError as e:
    res["local"] = str(e)
print("RESULT " + json.dumps(res))
"""


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -m` (a private mount namespace) for the second node")
def test_a_node_that_cannot_see_a_local_out_is_named(tmp_path):
    """Two real nodes on loopback; the second runs in its own mount namespace with an empty tmpfs
    over `local/`, so `local/out` truly does not exist there while `shared/out` does."""
    local, shared = tmp_path / "local", tmp_path / "shared"
    local.mkdir(), shared.mkdir()
    env = dict(os.environ, RAY_ADDRESS="", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="stxr-", dir="/tmp"))  # short: Ray's unix sockets live here
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats"]
    procs = []
    try:
        # --port=0: Ray binds a free port itself and writes it to <temp dir>/ray_current_cluster
        # (no bind-and-release pick that another program could take first).
        head = [ray_bin, "start", "--head", "--port=0", f"--temp-dir={temp_dir}", "--include-dashboard=false", *common]
        procs.append(subprocess.Popen(head, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def head_port():
            assert procs[0].poll() is None, f"ray start --head exited with {procs[0].returncode}"
            f = temp_dir / "ray_current_cluster"
            text = f.read_text().strip() if f.is_file() else ""
            return int(text.rsplit(":", 1)[1]) if text else None

        port = _wait(head_port, 60, "the head node's GCS port")
        second = " ".join([ray_bin, "start", f"--address=127.0.0.1:{port}", *common])
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs stxpipe-test '{local}' && exec {second}"]
        procs.append(subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = subprocess.run(
            [sys.executable, "-c", _DRIVER, f"127.0.0.1:{port}", str(local / "out"), str(shared / "out")],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res = json.loads(r.stdout.split("RESULT ", 1)[1])
        assert res["embedded"] is False and len(res["nodes"]) == 2, res
        other = next(n for n in res["nodes"] if n != res["head"])
        msg = res["local"]
        assert msg and "1 of 2 nodes" in msg and f"node {other[:8]}" in msg and f"node {res['head'][:8]}" not in msg, msg
        assert list((local / "out").iterdir()) == [] and list((shared / "out").iterdir()) == []
    finally:
        # Stop exactly what we started: each node's process group (raylet, GCS, agents, workers).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            try:
                _wait(lambda: all(p.poll() is not None for p in procs), 10, "ray start processes to exit")
            except TimeoutError:
                pass
        for p in procs:
            p.wait(10)

            def group_gone(pgid=p.pid):
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return True
                return False

            _wait(group_gone, 20, f"process group {p.pid}")
        shutil.rmtree(temp_dir, ignore_errors=True)
