"""Image I/O for style transfer: safe decode, colour modes, EXIF orientation, resizing, PNG
output with metadata, and Gatys et al.'s colour preservation.

Every way a user's file can be unusable (missing, empty, not an image, truncated, too large,
odd colour mode) becomes one `ImageError` that names the file and says what to do, so a batch
row fails with a readable message instead of a Pillow traceback. Nothing here sets Pillow's
globals (`ImageFile.LOAD_TRUNCATED_IMAGES`, `Image.MAX_IMAGE_PIXELS`): the limits are per call.

Tensors are RGB float32 in [0, 1]: one image is (3, H, W), a batch (B, 3, H, W).
"""

from __future__ import annotations

import io
import math
import os
import re
import secrets
import stat
import threading
import warnings
from pathlib import Path
from typing import IO, Mapping
from urllib.parse import unquote, urlparse

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

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
        f"stxpipe needs Pillow >= {'.'.join(map(str, MIN_PILLOW))}, found {PIL.__version__}; "
        "run `pip install -U 'pillow>=10.1'`"
    )

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "load_image",
    "probe_image",
    "image_to_tensor",
    "tensor_to_image",
    "resize_long_side",
    "load_tensor",
    "resize_tensor",
    "save_png",
    "png_bytes",
    "read_png_metadata",
    "rgb_to_yiq",
    "yiq_to_rgb",
    "preserve_colors",
]

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
# Modes a PNG can hold as they are (save_png keeps them rather than forcing RGB).
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}

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
        with io.BytesIO(data) as fp:
            return _decode(fp, label, max_pixels)
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


def _open_regular(path: Path, label: str) -> IO[bytes]:
    """Open a regular file for reading; FIFOs, devices, sockets and folders are refused without
    blocking: stat first, then open non-blocking and check the opened descriptor too (the path
    may be swapped between the two)."""
    try:
        why = _not_regular(os.stat(path).st_mode)
        if why:
            raise ImageError(label, why)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageError(label, f"the file does not exist (looked for {path.absolute()}); check the path") from None
    except PermissionError:
        raise ImageError(label, "permission denied reading the file; fix its permissions") from None
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(label, f"cannot open the file ({e.strerror or e}); check the path and the storage") from None
    try:
        why = _not_regular(os.fstat(fd).st_mode)
        if why:
            raise ImageError(label, why)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _local_path(source: str | os.PathLike, label: str) -> Path:
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
            f"'{uri.scheme}://' URIs are not read by stylecore; fetch the object and pass its bytes "
            "with name=<uri>, or give a local path",
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
        raise ImageError(
            label, f"the image data is truncated or corrupt ({_reason(e)}); re-export or re-download the file"
        ) from None
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
            f"not a recognised image format (detected: {detected}; allowed: {', '.join(ALLOWED_FORMATS)}); "
            "convert it to PNG or JPEG",
        ) from None
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(
            label, f"the image header is corrupt ({_reason(e)}); re-export or re-download the file"
        ) from None
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
        raise ValueError(
            f"colour mode '{mode}' cannot be converted to RGB; save the image as RGB (PNG or JPEG)"
        ) from None


# ---------------------------------------------------------------------------- tensors, sizes


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a Pillow image (non-RGB modes converted as in `load_image`)."""
    arr = np.array(_to_rgb(img), dtype=np.uint8)  # (H, W, 3), a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div_(255.0)


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """RGB Pillow image from a (3, H, W) or (1, 3, H, W) tensor in [0, 1]; values are clamped
    (NaN -> 0) and rounded to the nearest 8-bit level."""
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(t.shape)}")
    x = torch.nan_to_num(t.detach().to("cpu", torch.float32), nan=0.0).clamp(0.0, 1.0)
    arr = x.mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    return Image.fromarray(arr)


def _long_side_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(w, h) scaled so the long side is exactly `size`; short side rounded half up, >= 1."""
    if w >= h:
        return size, max(1, math.floor(h * size / w + 0.5))
    return max(1, math.floor(w * size / h + 0.5)), size


def resize_long_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the long side is exactly `size` px (aspect kept, short side rounded, >= 1).

    LANCZOS, which antialiases when downscaling. Palette and 1-bit images are converted to RGB
    first (palette indices cannot be interpolated). Returns a new image even when no resize is needed."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if img.mode in ("1", "P", "PA"):
        img = _to_rgb(img)
    target = _long_side_size(*img.size, size)
    if target == img.size:
        return img.copy()
    return img.resize(target, Image.Resampling.LANCZOS)


def load_tensor(
    source: str | Path | bytes,
    size: int | None = None,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """`load_image`, optionally `resize_long_side(size)`, as a (1, 3, H, W) float32 tensor in [0, 1]."""
    img = load_image(source, name=name, max_pixels=max_pixels)
    if size is not None:
        img = resize_long_side(img, size)
    return image_to_tensor(img).unsqueeze(0)


def resize_tensor(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, C, H, W) batch to `hw` = (H', W') with antialiased bicubic interpolation
    (differentiable); clamped to [0, 1] because bicubic overshoots at edges."""
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = (int(v) for v in hw)
    if h < 1 or w < 1:
        raise ValueError(f"target size must be positive, got {tuple(hw)}")
    if (h, w) == tuple(x.shape[-2:]):
        return x.clamp(0.0, 1.0)
    y = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    return y.clamp(0.0, 1.0)  # (B, C, h, w)


# ------------------------------------------------------------------------------- PNG output


def save_png(
    image: torch.Tensor | Image.Image,
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `image` as a PNG at `path`, atomically; returns the path.

    A tensor is (3, H, W) or (1, 3, H, W) in [0, 1]. Data goes to `<path>.<random>.tmp` in the
    same folder, is fsynced, then `os.replace`d over `path`: readers never see a partial file
    and a failed write leaves any previous file untouched. Parent folders are created.
    `metadata` becomes PNG text chunks (tEXt, or UTF-8 iTXt when not Latin-1); keys must be
    1-79 Latin-1 characters. The format is PNG whatever the suffix of `path`."""
    data = png_bytes(image, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def png_bytes(image: torch.Tensor | Image.Image, metadata: Mapping[str, str] | None = None) -> bytes:
    """`image` encoded as PNG, with `metadata` as text chunks (see `save_png`): for writers
    that put the bytes somewhere themselves (an object store, an atomic local write)."""
    img = tensor_to_image(image) if isinstance(image, torch.Tensor) else image
    if not isinstance(img, Image.Image):
        raise TypeError(f"image must be a tensor or a PIL image, got {type(image).__name__}")
    if img.mode not in _PNG_MODES:
        img = _to_rgb(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=_png_info(metadata or {}))
    return buf.getvalue()


def _png_info(metadata: Mapping[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"PNG metadata keys and values must be str, got {key!r}: {type(value).__name__}")
        try:
            key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG metadata key {key!r} must be Latin-1") from None
        if not 1 <= len(key) <= 79 or key != key.strip() or "\0" in key:
            raise ValueError(f"PNG metadata key {key!r} must be 1-79 characters, no NUL, no edge spaces")
        info.add_text(key, value)  # Pillow writes iTXt itself when the value is not Latin-1
    return info


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_png_metadata(path: str | Path) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG as a plain dict; {} when it has none.
    Raises `ImageError` when the file is missing or not a readable PNG."""
    label = os.fspath(path)
    fp = _open_regular(_local_path(path, label), label)
    with fp:
        im = _open_checked(fp, label, DEFAULT_MAX_PIXELS)
        if im.format != "PNG":
            raise ImageError(label, f"is a {im.format} file, not a PNG; metadata is only read from PNGs")
        try:
            text = im.text  # reads chunks after the image data too (this decodes the pixels)
        except MemoryError:
            raise
        except Exception as e:
            raise ImageError(label, f"the PNG is truncated or corrupt ({_reason(e)}); re-create the file") from None
    return {str(k): str(v) for k, v in text.items()}


# ----------------------------------------------------------------------------- colour spaces

# NTSC (FCC 1953) RGB -> YIQ. The inverse is computed, not the rounded published one, so that
# yiq_to_rgb(rgb_to_yiq(x)) == x to float precision.
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.5959, -0.2746, -0.3213],
        [0.2115, -0.5227, 0.3112],
    ],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _mix_channels(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected 3 channels at dim -3, (B, 3, H, W), got shape {tuple(x.shape)}")
    return torch.einsum("ij,...jhw->...ihw", m.to(device=x.device, dtype=x.dtype), x)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> YIQ (Y = luminance in [0, 1], I/Q = chroma); linear, differentiable."""
    return _mix_channels(_RGB_TO_YIQ, x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) YIQ -> RGB, the exact inverse of `rgb_to_yiq` (no clamping)."""
    return _mix_channels(_YIQ_TO_RGB, x)


def preserve_colors(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer (Gatys et al. 2016, "Preserving color in neural artistic style
    transfer"): the stylised `output`'s luminance Y with the `content` image's chroma I, Q.

    output: (B, 3, H, W); content: (B or 1, 3, h, w), resized to (H, W) when needed.
    Returns (B, 3, H, W) RGB clamped to [0, 1]; differentiable in both inputs."""
    if output.dim() != 4 or content.dim() != 4:
        raise ValueError(
            f"expected (B, 3, H, W) tensors, got output {tuple(output.shape)} and content {tuple(content.shape)}"
        )
    if content.shape[0] not in (1, output.shape[0]):
        raise ValueError(f"content batch {content.shape[0]} must be 1 or match output batch {output.shape[0]}")
    content = content.to(device=output.device, dtype=output.dtype)
    if content.shape[-2:] != output.shape[-2:]:
        content = resize_tensor(content, tuple(output.shape[-2:]))
    y = rgb_to_yiq(output)[:, :1]  # (B, 1, H, W)
    iq = rgb_to_yiq(content)[:, 1:].expand(output.shape[0], -1, -1, -1)  # (B, 2, H, W)
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0.0, 1.0)
