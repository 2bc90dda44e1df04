"""Local paths and URIs: the one module that knows the difference.

Everything the pipeline reads or writes is named by a string that is either a local path
(relative or absolute, `~` allowed where noted) or a URI: `file://` (a local path in URI form)
or a remote store that `pyarrow.fs` opens (`s3://bucket/key`, `gs://bucket/key`, `hdfs://...`).
The rest of the pipeline asks this module instead of testing for `://` itself:

- names: `is_uri`, `is_remote`, `local_path`, `resolve`, `parent`, `join`;
- filesystems: `filesystem(uri) -> (fs, path)`, one cached filesystem per object-store bucket;
- reading: `exists`, `local_file_problem`, `open_input`, `read_bytes` (local files are opened
  without ever blocking on a FIFO or device);
- writing: `makedirs`, `write_atomic` (local: hidden temp file, fsync, rename, folder fsync; object stores:
  one PUT, which publishes whole objects);
- containment: `child_path(root, name)`, the path of `name` directly under `root`, refused when
  a `..`, a separator or a symlink would carry it elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import re
import secrets
import stat
import urllib.parse
from typing import IO

import pyarrow.fs as pafs

# `scheme://...` (two or more letters, so a Windows drive `C:\` is never taken for a scheme).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")
# Schemes whose filesystem is per bucket and worth caching (creating one resolves credentials
# and regions, far too slow to repeat for every image of a batch).
_OBJECT_STORES = ("s3", "gs", "gcs")


# --------------------------------------------------------------------------------------------
# Names


def is_uri(s: str) -> bool:
    """True for `scheme://...` strings (s3://, gs://, file://, hdfs://...)."""
    return bool(_URI.match(s))


def is_remote(s: str) -> bool:
    """True for URIs other than `file://`: what `pyarrow.fs` must open."""
    return is_uri(s) and not s.lower().startswith("file://")


def file_uri_to_path(uri: str) -> str:
    """The local path of a `file://` URI (percent-decoded); ValueError for a remote host."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"file URI '{uri}' names host '{parsed.netloc}'; only local file:// URIs are supported")
    return urllib.parse.unquote(parsed.path)


def local_path(s: str) -> str:
    """`s` as a local path: `file://` URIs converted, plain paths unchanged. Callers check
    `is_remote` first; a remote URI is returned unchanged."""
    return file_uri_to_path(s) if is_uri(s) and not is_remote(s) else s


def resolve(ref: str, base: str) -> str:
    """Resolve a reference written in a file (a manifest entry): `file://` becomes a local path,
    other URIs stay as they are, local relative paths are joined to `base` (a folder: a local
    path or a URI)."""
    if is_uri(ref):
        return ref if is_remote(ref) else file_uri_to_path(ref)
    ref = os.path.expanduser(ref)
    if os.path.isabs(ref):
        return os.path.normpath(ref)
    if is_uri(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, ref))}"
    return os.path.normpath(os.path.join(base, ref))


def parent(path: str) -> str:
    """The folder holding `path`: a URI's prefix, or an absolute local folder."""
    if is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(local_path(path)))


def join(base: str, *parts: str) -> str:
    """`base/part/...` with '/' (valid for local paths and URIs alike)."""
    return "/".join([base.rstrip("/"), *parts])


# --------------------------------------------------------------------------------------------
# Filesystems


@functools.lru_cache(maxsize=32)
def _filesystem(root: str) -> pafs.FileSystem:
    # One filesystem object per scheme+bucket (`cache_clear()` forgets them: tests whose
    # endpoint goes away).
    fs, _ = pafs.FileSystem.from_uri(root + "/")
    return fs


def filesystem(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) for a local path or URI. Object stores (`s3://`, `gs://`)
    share one filesystem per bucket and their path is `bucket/key`; a URI with a query
    (`?endpoint_override=...`) gets its own, configured by the query."""
    s = os.fspath(uri)
    if not is_uri(s):
        return pafs.LocalFileSystem(), os.path.abspath(s)
    scheme, rest = s.split("://", 1)
    if scheme.lower() in _OBJECT_STORES and "?" not in rest:
        return _filesystem(f"{scheme}://{rest.split('/', 1)[0]}"), rest.rstrip("/") or rest
    return pafs.FileSystem.from_uri(s)


def exists(uri: str) -> bool:
    """True when something (file or folder) is at `uri`."""
    if not is_remote(uri):
        return os.path.exists(local_path(uri))
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


# --------------------------------------------------------------------------------------------
# Reading


def local_file_problem(path: str) -> str | None:
    """Why the local `path` cannot be read as a file (missing, a folder, a FIFO, a device), or
    None. Only stats it: never opens (a FIFO would block the reader)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return f"{path} is {kind}, not a regular file; give the path of an image file"


def _open_local(local: str, label: str) -> IO[bytes]:
    """Open a local regular file for reading without blocking on FIFOs or devices: stat first,
    open non-blocking, check the opened descriptor. Raises FileNotFoundError / OSError naming
    `label`."""
    why = local_file_problem(local)
    if why:
        if why.startswith("file not found"):
            raise FileNotFoundError(f"no such file: {label}")
        raise OSError(why)
    from stylecore.decode import NotRegularFileError, open_regular_file  # local: PIL stays out of CLI start-up

    try:
        return open_regular_file(local)
    except NotRegularFileError:  # swapped since the stat
        raise OSError(f"{label} is not a regular file; give the path of an image file") from None


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The bytes of a local path, `file://` URI, or any URI pyarrow.fs can open (s3://, gs://).

    Raises FileNotFoundError naming the file when it does not exist."""
    s = os.fspath(uri)
    if not is_remote(s):
        with _open_local(local_path(s), s) as f:
            return f.read()
    fs, path = filesystem(s)
    try:
        with fs.open_input_stream(path) as f:
            return f.readall()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {s}") from None
    except OSError as e:
        # pyarrow reports a missing object as a generic OSError on some stores.
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such file: {s}") from None
        raise OSError(f"cannot read {s}: {e}") from None


def open_input(uri: str | os.PathLike) -> IO[bytes]:
    """A binary file object reading `uri` (local: FIFO-safe, like `read_bytes`)."""
    s = os.fspath(uri)
    if not is_remote(s):
        return _open_local(local_path(s), s)
    fs, path = filesystem(s)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {s}") from None


# --------------------------------------------------------------------------------------------
# Writing


def makedirs(uri: str) -> str:
    """Create the folder `uri` and its parents (object stores: a folder marker, as pyarrow
    does); returns its filesystem path."""
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)
    return path


def write_atomic(uri: str, data: bytes | bytearray | memoryview, *, fsync: bool = True) -> str:
    """Write `data` to `uri` so that readers see the old content or the whole new content,
    never part of it; returns the filesystem path written (local: absolute; object stores:
    `bucket/key`). Local: a hidden temp file in the same folder (`.<name>.<random>.tmp`, removed
    on failure), flushed and fsynced, renamed over the target, then the folder fsynced so the
    rename survives a crash (`fsync=False` only to measure what that costs). Object stores: one
    PUT, which publishes whole objects. Parent folders are created."""
    fs, path = filesystem(uri)
    if not isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)
        return path
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(folder)
    return path


def fsync_dir(folder: str) -> None:
    """Make a rename in `folder` durable. Filesystems that cannot fsync a folder are skipped
    (the file itself was synced); other errors are raised."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Containment


def child_path(root: str, name: str, what: str | None = None) -> str:
    """`<root>/<name>`, resolved, after checking that it lies directly under `root`; `what`
    names the thing in errors (default: `name`).

    Local roots (paths or `file://`): both sides go through `os.path.realpath`, so a symlink
    planted at `name` cannot carry a write elsewhere. Remote roots (`s3://bucket/prefix`): the
    path part is normalised and `..` segments are refused; a query (`?endpoint_override=...`)
    is kept. Raises ValueError naming the root and the resolved target."""
    what = what or repr(name)
    if is_remote(root):
        u = urllib.parse.urlsplit(root)  # keeps ?endpoint_override=... and the like
        base = u.path.rstrip("/")
        if ".." in base.split("/"):
            raise ValueError(f"output root {root!r} contains a '..' segment; give it without one")
        joined = posixpath.normpath(f"{base}/{name}")
        if ".." in joined.split("/") or posixpath.dirname(joined) != posixpath.normpath(base or "/"):
            raise ValueError(f"output path for {what} would lie outside {root}")
        return urllib.parse.urlunsplit((u.scheme, u.netloc, joined, u.query, u.fragment))
    real_root = os.path.realpath(local_path(root))
    target = os.path.realpath(os.path.join(real_root, name))
    if os.path.dirname(target) != real_root:
        raise ValueError(f"output path for {what} resolves to {target}, outside {real_root}; remove the link or rename the row")
    return target


def is_under_root(root: str, name: str) -> bool:
    """True when `child_path(root, name)` accepts `name`."""
    try:
        child_path(root, name)
    except ValueError:
        return False
    return True
