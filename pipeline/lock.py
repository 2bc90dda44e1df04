"""The output-root lock: one submit at a time writes to an output root.

`<out>/.stxpipe.lock` holds JSON (host, pid, started_at, token) of the submit that holds it.
Local disks: an exclusive `flock` on the file, which the kernel drops when its holder dies, so a
crashed submit never blocks the next one; a lock file left by a dead process on this host is
taken over, one from another host only reported with how to remove it. Object stores: a lock
object, best effort (`_lock_object`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.fs as pafs

from pipeline import storage

LOCK_NAME = ".stxpipe.lock"


class OutputLockedError(RuntimeError):
    """Another submit holds the output root's lock."""


@contextlib.contextmanager
def lock_output(out: str, echo: Callable[[str], None] | None = None) -> Iterator[str]:
    """Hold `<out>/.stxpipe.lock` (JSON: host, pid, started_at) for the block; yields its path.
    Raises OutputLockedError, naming the holder, while another process holds it. A lock left
    by a dead process on this host is taken over (`echo` says so); one from another host is
    only reported, with how to remove it. Local disks: an exclusive flock on the file, which
    the kernel drops when its holder dies. URIs: a lock object, best effort (see _lock_object)."""
    fs, base = storage.filesystem(out)
    local = isinstance(fs, pafs.LocalFileSystem)
    path, shown = storage.join(base, LOCK_NAME), storage.join(base if local else out, LOCK_NAME)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }
    with (_lock_file if local else _lock_object)(fs, path, shown, me, echo or (lambda _line: None)):
        yield shown


def _holder(raw: bytes) -> dict:
    try:
        h = json.loads(raw.decode("utf-8"))
        return h if isinstance(h, dict) else {}
    except ValueError:
        return {}


def _who(h: dict) -> str:
    if not h:
        return "an unknown process (the lock file is empty or being written)"
    return f"pid {h.get('pid')} on host {h.get('host')}, since {h.get('started_at')}"


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError, OverflowError):
        return True  # someone else's process, or a pid we cannot check: assume it runs
    return True


def _check_previous(path: str, old: dict, me: dict, echo: Callable[[str], None]) -> None:
    """A lock file nobody holds at the moment: take it over if its writer is gone, else refuse."""
    if not old:
        return
    if old.get("host") != me["host"]:
        raise OutputLockedError(
            f"the output root is locked by {_who(old)} ({path}); stxpipe cannot check a process on "
            f"another host. If you are sure that submit is no longer running, delete {path} and submit again."
        )
    if _alive(old.get("pid")):
        raise OutputLockedError(
            f"the output root is locked by {_who(old)} ({path}), and that process is alive. Wait for it or "
            f"stop it; if it is not a stxpipe submit (a reused pid), delete {path} and submit again."
        )
    echo(f"took over the stale lock {path}: {_who(old)} is no longer running")


@contextlib.contextmanager
def _lock_file(fs: pafs.FileSystem, path: str, shown: str, me: dict, echo: Callable[[str], None]) -> Iterator[None]:
    import fcntl  # POSIX only, like Ray

    os.makedirs(os.path.dirname(path), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise OutputLockedError(
                f"another submit is writing to this output root: {_who(holder)} (lock {shown}). Wait for it "
                "to finish or stop it: two submits on one output would run rows twice."
            ) from None
        # The previous holder may have deleted the file between our open and flock: retry then.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        _check_previous(shown, _holder(os.pread(fd, 4096, 0)), me, echo)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        with contextlib.suppress(OSError):  # ours until we close fd: delete it only if we wrote it
            if _holder(os.pread(fd, 4096, 0)).get("token") == me["token"]:
                os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _lock_object(fs: pafs.FileSystem, path: str, shown: str, me: dict, echo: Callable[[str], None]) -> Iterator[None]:
    """Best effort: pyarrow.fs offers no exclusive create on object stores, so look for a lock
    object, write ours, read it back. Two submits that start within one such round trip of each
    other can both pass (the later write wins the object); any later submit is refused."""

    def read() -> dict:
        try:
            with fs.open_input_stream(path) as f:
                return _holder(f.read())
        except FileNotFoundError:
            return {}

    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        _check_previous(shown, read() or {"host": "?"}, me, echo)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(me).encode())
    if (other := read()).get("token") != me["token"]:
        raise OutputLockedError(f"another submit took the output root's lock at the same moment: {_who(other)} ({shown})")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if read().get("token") == me["token"]:
                fs.delete_file(path)
