"""Safe decoding of users' image files: format allowlist, size guard, FIFO/device refusal, colour
modes, EXIF orientation. Torch-free (Pillow and numpy only).

Every way a user's file can be unusable (missing, empty, not an image, truncated, too large,
odd colour mode) becomes one `ImageError` that names the file and says what to do, so a batch
row fails with a readable message instead of a Pillow traceback. Nothing here sets Pillow's
globals (`ImageFile.LOAD_TRUNCATED_IMAGES`, `Image.MAX_IMAGE_PIXELS`): the limits are per call.
`stylecore.images` re-exports everything here and adds tensors, resizing, PNG output and colour.
"""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

# Oldest Pillow this module runs on: 10.1 added `Image.has_transparency_data` (used by `_to_rgb`)
# and its wheels carry the libwebp fix for CVE-2023-4863 (first in 10.0.1). Older releases are
# refused at import, with the fix, rather than failing (or decoding unsafely) on a user's file.
MIN_PILLOW = (10, 1)


def _version_tuple(text: str) -> tuple[int, int]:
    """(major, minor) of a version string like '10.1.0' or '11.0.0.dev0'."""
    m = re.match(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


if _version_tuple(PIL.__version__) < MIN_PILLOW:
    raise ImportError(
        f"stxpipe needs Pillow >= {'.'.join(map(str, MIN_PILLOW))}, found {PIL.__version__}; run `pip install -U 'pillow>=10.1'`"
    )


# 40 MP covers any camera photo (a 45 MP full-frame sensor aside) while keeping one decoded
# RGB image under ~120 MB; a crafted header claiming 100k x 100k is refused before decoding.
DEFAULT_MAX_PIXELS: int = 40_000_000

# Pillow format ids `Image.open` may try. Everything else (EPS/PostScript, which runs
# Ghostscript; PDF, PSD, ICNS, FITS, ... and every rarely used parser) is refused unparsed.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")

_WHITE = (255, 255, 255, 255)
# Modes whose samples are wider than 8 bits; Pillow's convert("L") clips them (32768 -> 255),
# so they are rescaled with numpy instead.
_16BIT_PREFIX = "I;16"

# `warnings.catch_warnings` swaps process-global state; serialising our own header reads keeps
# two threads of one actor from restoring each other's filters. Decoding runs outside the lock.
_OPEN_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image cannot be used; `source` names the file or URI, the message says why and what to do."""

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(f"image '{source}': {message}")


# --------------------------------------------------------------------------------- decoding


def load_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode `source` (a path, a `file://` URI or the file's bytes) into an RGB image.

    EXIF orientation is applied, transparency is composited on white, 16-bit and float images
    are rescaled (not clipped) to 8 bits, and the pixels are fully decoded, so a truncated file
    fails here rather than later. `name` labels the image in errors (default: the path, or
    "<bytes>"). Images over `max_pixels` are refused from the header, before decoding.
    Raises `ImageError` for every unusable input."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name if name is not None else "<bytes>"
        data = bytes(source)
        if not data:
            raise ImageError(label, "the data is empty (0 bytes); re-export or re-download the image")
        with io.BytesIO(data) as buf:
            return _decode(buf, label, max_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, str or bytes, got {type(source).__name__}")
    label = name if name is not None else os.fspath(source)
    path = _local_path(source, label)
    fp = _open_regular(path, label)
    with fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise ImageError(label, "the file is empty (0 bytes); re-export or re-download the image")
        return _decode(fp, label, max_pixels)


def probe_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """Validate `source` exactly as `load_image` does (full decode) and return its
    (width, height) after EXIF orientation. Raises `ImageError`."""
    return load_image(source, name=name, max_pixels=max_pixels).size


_KINDS = (
    (stat.S_ISDIR, "is a directory, not an image file; give the path of an image file"),
    (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file; reading it could block forever: give the path of an image file"),
    (stat.S_ISCHR, "is a character device, not a regular file; give the path of an image file"),
    (stat.S_ISBLK, "is a block device, not a regular file; give the path of an image file"),
    (stat.S_ISSOCK, "is a socket, not a regular file; give the path of an image file"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of `st_mode` cannot be read as an image, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((msg for test, msg in _KINDS if test(mode)), "is not a regular file; give the path of an image file")


class NotRegularFileError(OSError):
    """The opened path is a FIFO, device, socket or folder; the message says which."""


def open_regular_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a file for reading without ever blocking on a FIFO or device: open non-blocking,
    check the opened descriptor is a regular file (the path may have been swapped since any
    earlier stat), then make it blocking. Raises os.open's OSError or NotRegularFileError."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why:
            raise NotRegularFileError(why)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_regular(path: Path, label: str) -> IO[bytes]:
    """Open a regular file for reading; FIFOs, devices, sockets and folders are refused without
    blocking (stat first, then `open_regular_file`)."""
    try:
        why = _not_regular(os.stat(path).st_mode)
        if why:
            raise ImageError(label, why)
        return open_regular_file(path)
    except NotRegularFileError as e:
        raise ImageError(label, str(e)) from None
    except FileNotFoundError:
        raise ImageError(label, f"the file does not exist (looked for {path.absolute()}); check the path") from None
    except PermissionError:
        raise ImageError(label, "permission denied reading the file; fix its permissions") from None
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(label, f"cannot open the file ({e.strerror or e}); check the path and the storage") from None


def _local_path(source: str | os.PathLike[str] | os.PathLike[bytes], label: str) -> Path:
    """A filesystem path for `source`; `file://` URIs are accepted, other schemes refused."""
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "://" in text and not Path(text).exists():
        uri = urlparse(text)
        if uri.scheme == "file":
            return Path(unquote(uri.path))
        raise ImageError(
            label,
            f"'{uri.scheme}://' URIs are not read by stylecore; fetch the object and pass its bytes with name=<uri>, or give a local path",
        )
    return Path(text)


def _decode(fp: IO[bytes], label: str, max_pixels: int) -> Image.Image:
    """Header check, size guard, full decode, EXIF orientation, RGB: the whole of `load_image`
    once the bytes are reachable through `fp`."""
    im = _open_checked(fp, label, max_pixels)
    try:
        im.load()  # decodes every pixel: truncated/corrupt data raises here
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(label, f"the image data is truncated or corrupt ({_reason(e)}); re-export or re-download the file") from None
    try:
        im = ImageOps.exif_transpose(im)
    except MemoryError:
        raise
    except Exception:
        # Unreadable EXIF says nothing trustworthy about orientation; the pixels themselves are
        # fine, so keep them as stored rather than failing the image.
        pass
    try:
        return _to_rgb(im)
    except ValueError as e:
        raise ImageError(label, str(e)) from None


def _open_checked(fp: IO[bytes], label: str, max_pixels: int) -> Image.Image:
    """`Image.open` (reads the header only) plus the pixel-count guard, before any decoding."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(fp, formats=ALLOWED_FORMATS)
            except Image.DecompressionBombWarning:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is None or max_pixels <= limit:
                    raise
                # The caller allows more pixels than Pillow's warning threshold: honour that.
                fp.seek(0)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fp, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(
            label,
            f"the header claims too many pixels ({_reason(e)}); the limit is max_pixels={max_pixels:,}: "
            "downscale the image first, or raise max_pixels if the file is trusted",
        ) from None
    except UnidentifiedImageError:
        detected = _sniff_format(fp)
        raise ImageError(
            label,
            f"not a recognised image format (detected: {detected}; allowed: {', '.join(ALLOWED_FORMATS)}); convert it to PNG or JPEG",
        ) from None
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(label, f"the image header is corrupt ({_reason(e)}); re-export or re-download the file") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(label, f"the image is {w}x{h} pixels (empty); re-export the image")
    if w * h > max_pixels:
        raise ImageError(
            label,
            f"the image is {w}x{h} = {w * h:,} pixels, over the limit max_pixels={max_pixels:,}; "
            "downscale it first, or raise max_pixels if the file is trusted",
        )
    return im


# Leading bytes of formats users send by mistake, to say what a refused file is. Only a label:
# nothing is parsed.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS-Adobe", "EPS/PostScript"),
    (b"%!", "PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD (Photoshop)"),
    (b"\x89PNG\r\n\x1a\n", "PNG (corrupt header)"),
    (b"\xff\xd8\xff", "JPEG (corrupt header)"),
    (b"GIF8", "GIF (corrupt header)"),
    (b"II*\x00", "TIFF (corrupt header)"),
    (b"MM\x00*", "TIFF (corrupt header)"),
    (b"BM", "BMP (corrupt header)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"SIMPLE  =", "FITS"),
    (b"DDS ", "DDS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000 codestream"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
)


def _sniff_format(fp: IO[bytes]) -> str:
    """A name for the format of the bytes in `fp`, from their first bytes ('unknown' if none)."""
    try:
        fp.seek(0)
        head = fp.read(32)
    except Exception:
        return "unknown"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP (corrupt header)"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1").strip()
        return {"heic": "HEIC", "heix": "HEIC", "mif1": "HEIF", "avif": "AVIF"}.get(brand, f"ISO media ({brand})")
    if head[:1] == b"P" and head[1:2] in b"1234567" and len(head) > 2 and head[2:3].isspace():
        return "PNM/PPM"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    return "unknown"


def _reason(e: BaseException) -> str:
    """A one-line cause for an error message: the exception's text, without object reprs."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB version of any Pillow mode; raises ValueError (plain) for modes with no RGB meaning."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith(_16BIT_PREFIX) or mode == "I":
        # 16-bit samples (Pillow also keeps them in "I"): 0..65535 -> 0..255, /257 maps the
        # ends exactly (65535 -> 255) where Pillow's own conversion would clip at 255.
        a = np.asarray(im).astype(np.float64)  # (H, W)
        im = Image.fromarray(np.rint(np.clip(a, 0, 65535) / 257.0).astype(np.uint8))
    elif mode == "F":
        # Float images are conventionally [0, 1]; fall back to [0, 255] when values exceed 1.
        a = np.nan_to_num(np.asarray(im).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if a.size == 0 or a.max() <= 1.0 else 1.0
        im = Image.fromarray(np.rint(np.clip(a * scale, 0, 255)).astype(np.uint8))
    if im.has_transparency_data:
        # Alpha means "show the page behind": composite on white, as a viewer would, instead of
        # dropping alpha (which reveals whatever colour hides under transparent pixels).
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError:
        raise ValueError(f"colour mode '{mode}' cannot be converted to RGB; save the image as RGB (PNG or JPEG)") from None
