"""Ray sessions for `stxpipe submit`: an embedded Ray bound to loopback, or a given cluster, plus the
checks that must pass before any worker starts (resources that fit, an output folder every node
sees).

Loopback: Ray 2.60 binds its gRPC servers (GCS, raylet node manager and object manager, core
workers, dashboard agent) to the node's IP address, and only a *loopback* node IP makes every
daemon bind 127.0.0.1 (the dashboard and autoscaler metrics servers, the metrics export port, the
dashboard agent's HTTP port and the runtime-env agent follow the same rule). But
`ray.init(_node_ip_address="127.0.0.1")` alone is not enough: ray/_private/worker.py:1844 passes it
through `services.resolve_ip_for_localhost` (services.py:786), which swaps loopback for the host's
routable address via `get_node_ip_address` (services.py:815) whenever `ray_constants.ENABLE_RAY_CLUSTER`
is true (always, on Linux). `start_embedded` therefore turns that constant off for the duration of
`ray.init` (and sets its environment variable, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, for the daemons
it spawns), so the node IP stays 127.0.0.1. tests/pipeline/test_ray_session.py checks every socket.

Ray imports lazily: the CLI must start without paying for it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pipeline import storage

if TYPE_CHECKING:
    from ray._private.worker import RayContext

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
_MARKER_PREFIX = ".stxpipe-shared-check-"


class ResourceError(RuntimeError):
    """The workers asked for cannot all be placed on the cluster (they would wait forever)."""


class SharedOutputError(RuntimeError):
    """A local --out is not visible from every node of the cluster."""


# ------------------------------------------------------------------------------------ sessions


def start_embedded(num_cpus: int, runtime_env: dict | None, log_to_driver: bool = False) -> Any:
    """Start a local Ray whose every listening socket is on 127.0.0.1 (dashboard included), quiet.

    Returns Ray's context (`.dashboard_url`, `.address_info`). Raises RuntimeError, after shutting
    the session down again, if Ray put the node anywhere but loopback (fail closed)."""
    import ray
    import ray._private.ray_constants as ray_constants

    _secure_token_file()
    _sync_auth_mode()
    _saved_auth[:] = [os.environ.get("RAY_AUTH_MODE")]  # ray.init may set it: undone by shutdown()
    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_CLUSTER_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False  # keeps resolve_ip_for_localhost from undoing loopback
    os.environ[_CLUSTER_ENV] = "0"  # the same, for the daemons spawned below (they inherit it)
    try:
        ctx = ray.init(
            address="local",
            _node_ip_address=LOOPBACK,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            num_cpus=num_cpus,
            runtime_env=runtime_env,
            log_to_driver=log_to_driver,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = saved_env
    # address="local" never goes through the Ray Client: ray.init returned a RayContext
    node_ip = cast("RayContext", ctx).address_info.get("node_ip_address") or ""
    if not _is_loopback(node_ip):
        ray.shutdown()
        raise RuntimeError(
            f"the embedded Ray put its node on {node_ip}, not {LOOPBACK}: it would listen on the network. "
            f"This Ray version ({ray.__version__}) no longer honours the loopback setup; pin ray==2.60.0 "
            "or run against a cluster you secured with --address."
        )
    return ctx


def connect(address: str | None, num_cpus: int, runtime_env: dict | None) -> tuple[Any, bool]:
    """Join the cluster at `address` (or $RAY_ADDRESS); with neither, or "local", start the
    embedded loopback Ray. Returns (context, embedded)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        return start_embedded(num_cpus, runtime_env), True
    ctx = ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level=logging.ERROR)
    return ctx, False


_saved_auth: list[str | None] = []


def shutdown() -> None:
    """Stop this process's Ray session. After an embedded one, put back the RAY_AUTH_MODE that
    ray.init changed (it turns token auth on for a new local cluster), so a later connect to a
    cluster without auth, in the same process, still works."""
    import ray

    ray.shutdown()
    if _saved_auth:
        before = _saved_auth.pop()
        if before != os.environ.get("RAY_AUTH_MODE"):
            if before is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = before
            from ray._raylet import Config  # type: ignore[attr-defined]  # ray's _raylet.pyi stub lists only a few names

            Config.initialize("")  # re-read the environment, as _sync_auth_mode does


def _sync_auth_mode() -> None:
    """Ray reads RAY_AUTH_MODE into its in-process config once, at import. If the environment was
    changed since (a test, a caller), the daemons spawned now would demand a token this driver
    never sends ("Authentication token is missing or incorrect"): re-read it, as Ray itself does
    when it turns token auth on (authentication_token_setup._enable_token_auth)."""
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode  # type: ignore[attr-defined]  # ray's _raylet.pyi lists few names

    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and (mode.lower() == "token") != (get_authentication_mode() == AuthenticationMode.TOKEN):
        Config.initialize("")


def _secure_token_file() -> None:
    """Ray 2.60's ray.init() turns token auth on for a new local cluster and, finding no token,
    writes ~/.ray/auth_token with the process umask (usually 0644: any local user could read it
    and then drive the cluster). Write it 0600 ourselves first; tighten an existing loose one."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return  # auth off by the user's choice, or the token never touches disk
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(custom) if custom else Path.home() / ".ray" / "auth_token"
    if not path.exists():
        if custom:
            return  # Ray itself refuses a missing RAY_AUTH_TOKEN_PATH, with its own message
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process made it just now; handled on the next start
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # Ray's own format (authentication_token_generator.py)
        return
    st = path.stat()
    if st.st_mode & 0o077:
        if st.st_uid == os.getuid():
            os.chmod(path, 0o600)
            log.warning("Ray's token file %s was readable by other users; made it 0600", path)
        else:
            log.warning("Ray's token file %s is readable by other users: chmod 600 it", path)


# ------------------------------------------------------------------------------------ sockets


def _is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # gRPC listens on [::ffff:127.0.0.1]
    return (mapped or ip).is_loopback


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket (IPv4 and IPv6) of the given processes;
    processes that are gone are skipped."""
    import ray  # noqa: F401  # psutil comes with Ray (ray/thirdparty_files, put on sys.path by `import ray`)

    # isort: split
    import psutil

    found: set[tuple[int, str, int]] = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        found |= {(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return sorted(found)


# ------------------------------------------------------------------------------------ resources


def _fits(have: float, per_worker: float) -> float:
    # Ray counts resources in 1e-4 units; the epsilon keeps 1.0 / 0.1 from rounding down to 9.
    return math.inf if per_worker <= 0 else math.floor(have / per_worker + 1e-6)


def check_resources(workers: int, cpus_per_worker: float, gpus_per_worker: float, nodes: list[dict[str, float]] | None = None) -> None:
    """Refuse a request the connected cluster cannot place, so no worker sits pending forever.

    `nodes`: each alive node's total resources (default: from `ray.nodes()`). An actor lives on
    one node, so what counts is how many workers fit node by node, not the cluster's sum."""
    if nodes is None:
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpu = [float(n.get("CPU", 0)) for n in nodes]
    gpu = [float(n.get("GPU", 0)) for n in nodes]
    have = (
        f"the cluster has {len(nodes)} node(s), {sum(cpu):g} CPU and {sum(gpu):g} GPU in all, "
        f"at most {max(cpu, default=0):g} CPU and {max(gpu, default=0):g} GPU on one node"
    )
    ask = f"--cpus-per-worker {cpus_per_worker:g} --gpus-per-worker {gpus_per_worker:g}"
    if gpus_per_worker > 0 and sum(gpu) == 0:
        raise ResourceError(
            f"--gpus-per-worker {gpus_per_worker:g} but the cluster has no GPUs ({have}): "
            "drop --gpus-per-worker to run on CPU, or join a GPU cluster with --address"
        )
    per_node = [min(_fits(c, cpus_per_worker), _fits(g, gpus_per_worker)) for c, g in zip(cpu, gpu)]
    fit = sum(per_node)
    if fit == 0:
        raise ResourceError(
            f"one worker asks for {ask}, and no node has that much ({have}): "
            "lower --cpus-per-worker / --gpus-per-worker to fit one node, or join a bigger cluster"
        )
    if workers > fit:
        raise ResourceError(
            f"--workers {workers} with {ask}, but only {fit:g} such workers fit at once ({have}): "
            f"use --workers {fit:g}, or lower --cpus-per-worker / --gpus-per-worker"
        )


# ------------------------------------------------------------------------------------ shared --out


_is_uri = storage.is_remote  # a remote URI: nothing to check for sharing (file:// is local)


def _read_marker(path: str, token: str) -> tuple[bool, str, str]:
    """Runs on each node: (saw the token?, why not, the node's hostname)."""
    try:
        with open(path) as f:
            seen = f.read()
    except OSError as e:
        return False, f"{type(e).__name__}: {e.strerror or e}", socket.gethostname()
    return seen == token, "" if seen == token else "a different file is at that path", socket.gethostname()


def check_shared_output(out: str, timeout_s: float = 60.0, *, _read_root: str | None = None) -> None:
    """With a cluster and a local `out`, prove every alive node sees the same folder: write a
    marker with a random token under `out`, read it back from one tiny task pinned to each node.
    URIs (s3://, gs://, ...) are skipped. Raises SharedOutputError naming the blind nodes, or the
    ones that did not answer within `timeout_s`.

    `_read_root` (tests only): the nodes look for the marker there instead of under `out`, as a
    node whose path `out` is a different, unshared folder would."""
    if _is_uri(out):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(storage.local_path(out)).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker = root / f"{_MARKER_PREFIX}{token}"
    marker.write_text(token)
    fix = "use an s3:// or gs:// --out, or a shared filesystem mounted at the same path on every node"
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        # num_cpus=0: runs even on a head node started with --num-cpus 0; no retries: a failure is the answer.
        probe = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        where = str(Path(_read_root) / marker.name) if _read_root else str(marker)
        refs = {
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(where, token): n
            for n in nodes
        }
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        problems = []
        for ref in ready:
            try:
                ok, why, host = ray.get(ref)
            except Exception as e:  # the node died, or the task could not run there
                ok, why, host = False, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}", ""
            if not ok:
                problems.append(f"{_node_name(refs[ref], host)}: {why}")
        for ref in pending:
            problems.append(
                f"{_node_name(refs[ref])}: no answer within {timeout_s:g} s "
                "(the node is overloaded or unreachable, or the filesystem hangs)"
            )
            ray.cancel(ref, force=True)
    finally:
        marker.unlink(missing_ok=True)
    if problems:
        raise SharedOutputError(
            f"--out {out} is a local folder, but {len(problems)} of {len(nodes)} nodes could not be shown "
            f"to see it (each node writes its images and results parts there, so the run would scatter "
            f"across nodes): {'; '.join(problems)}. Fix: {fix}."
        )


def _node_name(node: dict, host: str = "") -> str:
    host = host or node.get("NodeManagerHostname", "?")
    return f"node {node['NodeID'][:8]} ({host}, {node.get('NodeManagerAddress', '?')})"
