"""Remote inputs and outputs through `pyarrow.fs` against a local S3-compatible server.

The server is moto's (PyPI `moto[server]`, in the `test` extra), bound to 127.0.0.1 on a free
port, started and stopped by this module; nothing leaves the machine. The AWS settings are
dummy keys plus `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, which pyarrow's S3 filesystem
(its AWS SDK) honours, so plain `s3://bucket/key` URIs reach the local server; the instance
metadata service is switched off so the SDK never looks beyond loopback for a region or keys.

Process-wide state is kept out of these tests' way: an embedded `ray.init()` earlier in the same
pytest process (the session-scoped `small_run` of tests/pipeline) leaves `RAY_AUTH_MODE=token` in
`os.environ` and in Ray's C++ config cache, which a later `ray.init(address=...)` in that process
keeps using whatever the environment then says; so the cluster test runs its driver, the real
`stxpipe submit`, in a fresh subprocess with an explicit environment. `pipeline.manifest` caches
one pyarrow filesystem per bucket: every test uses a fresh bucket, and the cache is emptied when
the server starts and stops, so no filesystem bound to a dead endpoint outlives the module.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "pipeline" / "samples"

# Every AWS setting that could point the SDK elsewhere (a user's profile, real keys) is replaced.
_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint, boto3 client) of a moto S3 server on 127.0.0.1, with the AWS env pointing at it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:  # the `test` extra installs it
        pytest.fail(f"moto[server] is needed for the S3 tests: pip install -e '.[test]' ({e})")
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _forget_filesystems()
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        endpoint = f"http://{host}:{port}"
        empty = tmp_path_factory.mktemp("aws") / "none"
        with pytest.MonkeyPatch.context() as mp:
            for k in _AWS_VARS:
                mp.delenv(k, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "stxpipe-test")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "stxpipe-test-secret")
            mp.setenv("AWS_REGION", "us-east-1")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            mp.setenv("AWS_CONFIG_FILE", str(empty))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            yield endpoint, client
    finally:
        server.stop()  # exactly the server this fixture started
        _forget_filesystems()


def _forget_filesystems() -> None:
    """Empty `pipeline.manifest`'s per-bucket filesystem cache (objects bound to an endpoint)."""
    from pipeline import manifest as M

    cached = getattr(M, "_filesystem", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()


def _bucket(client) -> str:
    # A fresh bucket per test: pipeline.manifest caches one filesystem per bucket URI.
    name = f"stx-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def _upload_samples(client, bucket: str) -> tuple[str, str]:
    content, style = SAMPLES / "content" / "tubingen.jpg", SAMPLES / "style" / "starry_night.jpg"
    client.put_object(Bucket=bucket, Key="in/content/tubingen.jpg", Body=content.read_bytes())
    client.put_object(Bucket=bucket, Key="in/style/starry_night.jpg", Body=style.read_bytes())
    return f"s3://{bucket}/in/content/tubingen.jpg", f"s3://{bucket}/in/style/starry_night.jpg"


def test_pyarrow_endpoint_from_env_and_from_uri(s3):
    """The two ways to reach an S3-compatible endpoint: the AWS env (what the pipeline relies on)
    and pyarrow's own URI query (`?endpoint_override=...&scheme=http`)."""
    endpoint, client = s3
    bucket = _bucket(client)
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    fs, path = pafs.FileSystem.from_uri(f"s3://{bucket}/a/b.txt")
    assert isinstance(fs, pafs.S3FileSystem) and path == f"{bucket}/a/b.txt"
    with fs.open_input_stream(path) as f:
        assert f.readall() == b"hello"
    hostport = endpoint.split("://", 1)[1]
    fs2, path2 = pafs.FileSystem.from_uri(f"s3://{bucket}/a/b.txt?endpoint_override={hostport}&scheme=http")
    with fs2.open_input_stream(path2) as f:
        assert f.readall() == b"hello"


def test_read_bytes_and_results_round_trip(s3, tmp_path):
    """The S3 plumbing the runner builds on: image bytes through `read_bytes`, a results part
    written to `s3://.../results/` and read back (latest row per id), a missing object named."""
    from pipeline import results as R
    from pipeline.manifest import read_bytes
    from stylecore.images import load_tensor

    _, client = s3
    bucket = _bucket(client)
    content, style = _upload_samples(client, bucket)
    data = read_bytes(content)
    assert data == (SAMPLES / "content" / "tubingen.jpg").read_bytes()
    assert load_tensor(read_bytes(style), 32, name=style).shape[-2:] != (0, 0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_bytes(f"s3://{bucket}/in/content/missing.jpg")

    out = f"s3://{bucket}/run"
    t0 = R.now()
    row = {"row_id": "r1", "content": content, "style": style, "status": "error", "error": "first try", "started_at": t0, "finished_at": t0}
    R.write_part(out, R.to_table([row]))
    R.write_part(out, R.to_table([dict(row, status="ok", error=None, finished_at=R.now())]))
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="run/results/")["Contents"])
    assert len([k for k in keys if k.endswith(".parquet")]) == 2
    got = R.read_results(out)
    assert got.num_rows == 1 and got.column("status").to_pylist() == ["ok"]
    assert R.done_ids(out) == {"r1"}


@pytest.fixture
def ray_head_without_endpoint(monkeypatch):
    """A one-node Ray cluster started as its own process group, whose environment has a dead S3
    endpoint (it keeps the keys, as a node with an instance role would have them).
    Yields its address; stops exactly the processes it started (never `ray stop`, which would
    stop every Ray on the machine)."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    # 127.0.0.2 is loopback, and unlike 127.0.0.1 Ray does not swap it for the machine's
    # outward address. Token auth is off on both sides here (loopback only); the deploy files
    # turn it on.
    host = "127.0.0.2"
    temp_dir = tempfile.mkdtemp(prefix="stxr-", dir="/tmp")  # short: Ray's unix sockets live here
    node_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "RAY_ADDRESS", "RAY_AUTH_"))}
    # A node-level endpoint that answers nothing (port 9, closed on loopback): without the
    # runner's forwarding a worker fails here instead of ever looking beyond this machine.
    node_env["AWS_ENDPOINT_URL"] = node_env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"
    node_env["RAY_AUTH_MODE"] = "disabled"
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        # --port=0: Ray binds a free port itself (no bind-and-release pick another program could
        # take first) and writes the address to <temp dir>/ray_current_cluster.
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            f"--node-ip-address={host}",
            "--port=0",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=node_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        address_file = Path(temp_dir) / "ray_current_cluster"
        port = None
        while port is None:  # written once the GCS is up; then its port accepts connections
            assert head.poll() is None, f"ray start exited: {head.stderr.read().decode()[-2000:]}"
            text = address_file.read_text().strip() if address_file.is_file() else ""
            if text:
                port = int(text.rsplit(":", 1)[1])
                with socket.socket() as sock:
                    sock.settimeout(1)
                    if sock.connect_ex((host, port)) != 0:
                        port = None
            assert port is not None or time.monotonic() < deadline, "the test's Ray head did not come up in 60 s"
            if port is None:
                time.sleep(0.5)
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        yield f"{host}:{port}"
    finally:
        import ray

        ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)  # the session `ray start` was given: it and its children
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=2)
            except subprocess.TimeoutExpired:
                continue
        try:  # children may outlive `ray start` by a moment after SIGTERM
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=10)
        head.stderr.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_submit_s3_manifest_to_a_cluster(s3, tmp_path, hed, ray_head_without_endpoint):
    """`stxpipe submit s3://.../m.parquet --out s3://.../run --address ...` (the command the
    RayJob runs): manifest and images in the local S3 server, output written there, 2 rows at
    32 px, 2 iterations. The cluster's node has a dead endpoint; worker processes on a cluster
    get their node's environment, not the driver's, so this passes only because the runner
    forwards the driver's S3 endpoint/region settings to its actors (runtime_env env_vars).
    Every row ok, both images in the bucket and decodable, results read back from S3."""
    import subprocess
    import sys

    import typer
    from PIL import Image
    from typer.testing import CliRunner

    from pipeline import results as R
    from pipeline.cli import app
    from pipeline.manifest import RowSpec, write_manifest

    _, client = s3
    bucket = _bucket(client)
    content, style = _upload_samples(client, bucket)
    chelsea = f"s3://{bucket}/in/content/chelsea.jpg"
    client.put_object(Bucket=bucket, Key="in/content/chelsea.jpg", Body=(SAMPLES / "content" / "chelsea.jpg").read_bytes())
    params = {"size": 32, "iterations": 2}
    local = tmp_path / "manifest.parquet"
    write_manifest([RowSpec(content, (style,), params), RowSpec(chelsea, (style,), params)], local)
    client.put_object(Bucket=bucket, Key="manifests/m.parquet", Body=local.read_bytes())

    out = f"s3://{bucket}/run"
    args = [
        "submit",
        f"s3://{bucket}/manifests/m.parquet",
        "--out",
        out,
        "--address",
        ray_head_without_endpoint,
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--weights",
        hed,
        "--lpips-weights",
        hed,
        "--no-progress",
    ]
    # The driver in its own process, as the RayJob runs it: Ray keeps its auth mode per process
    # (see the module docstring), so an in-process driver would depend on which tests ran before.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    env["RAY_AUTH_MODE"] = "disabled"
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as e:  # its output comes as bytes here, whatever text= said
        said = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
        pytest.fail(f"stxpipe submit did not finish in 400 s:\n{said[0][-2000:]}\n{said[1][-4000:]}")
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"

    table = R.read_results(out)
    assert table is not None and table.num_rows == 2
    rows = table.to_pylist()
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows]
    assert {r["content"] for r in rows} == {content, chelsea}
    for r in rows:
        assert r["output"].startswith(f"s3://{bucket}/run/images/"), r["output"]
        key = r["output"].split(f"s3://{bucket}/", 1)[1]
        img = Image.open(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
        img.load()
        assert max(img.size) == 32
        assert r["weights"].startswith("vgg16-hed@sha256:")

    # Reading the results back as deploy/README.md shows: the CLI (once issue 7 registers
    # `stxpipe results`), and pyarrow + DuckDB directly.
    if "results" in typer.main.get_command(app).commands:
        query = "SELECT status, count(*) AS n FROM results GROUP BY status"
        res = CliRunner().invoke(app, ["results", "query", out, query, "-f", "csv"])
        assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
        assert "ok,2" in res.output.replace(" ", ""), res.output
    import duckdb
    import pyarrow.dataset as ds

    parts = ds.dataset(f"s3://{bucket}/run/results/", format="parquet").to_table()  # noqa: F841 (DuckDB reads it by name)
    latest = duckdb.sql("SELECT * FROM parts QUALIFY row_number() OVER (PARTITION BY row_id ORDER BY finished_at DESC) = 1")  # noqa: F841 (read by name)
    assert duckdb.sql("SELECT status, count(*) FROM latest GROUP BY status").fetchall() == [("ok", 2)]
