"""Image I/O for style transfer: tensors, resizing, PNG output with metadata, and Gatys et al.'s
colour preservation; the safe decoding (format allowlist, size guard, EXIF orientation, colour
modes) lives in `stylecore.decode` and is re-exported here, so `stylecore.images` stays the one
import for image I/O.

Tensors are RGB float32 in [0, 1]: one image is (3, H, W), a batch (B, 3, H, W).
"""

from __future__ import annotations

import io
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from PIL.PngImagePlugin import PngImageFile, PngInfo

from stylecore.decode import (  # noqa: F401 - re-exported: decoding was written here first
    _16BIT_PREFIX,
    _KINDS,
    _OPEN_LOCK,
    _SIGNATURES,
    _WHITE,
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    MIN_PILLOW,
    ImageError,
    _decode,
    _local_path,
    _not_regular,
    _open_checked,
    _open_regular,
    _reason,
    _sniff_format,
    _to_rgb,
    _version_tuple,
    load_image,
    probe_image,
)
from stylecore.losses.functional import psd_sqrt
from stylecore.losses.sketch import Moments, covariance, moments, second_moment

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

# Modes a PNG can hold as they are (save_png keeps them rather than forcing RGB).
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


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
        if im.format != "PNG" or not isinstance(im, PngImageFile):  # the class check narrows the type for `.text`
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
        raise ValueError(f"expected (B, 3, H, W) tensors, got output {tuple(output.shape)} and content {tuple(content.shape)}")
    if content.shape[0] not in (1, output.shape[0]):
        raise ValueError(f"content batch {content.shape[0]} must be 1 or match output batch {output.shape[0]}")
    content = content.to(device=output.device, dtype=output.dtype)
    if content.shape[-2:] != output.shape[-2:]:
        content = resize_tensor(content, (output.shape[-2], output.shape[-1]))
    y = rgb_to_yiq(output)[:, :1]  # (B, 1, H, W)
    iq = rgb_to_yiq(content)[:, 1:].expand(output.shape[0], -1, -1, -1)  # (B, 2, H, W)
    return yiq_to_rgb(torch.cat([y, iq], dim=1)).clamp(0.0, 1.0)


# Colour moments are measured on a copy at most this many px on its long side: they barely move
# with the size, and a 4096-px image's (3, N) float64 copy would cost 400 MB.
COLOR_MOMENT_SIDE = 512


def _color_moments(x: torch.Tensor) -> Moments:
    """The pixels' moments (`stylecore.losses.sketch.moments`) of x (1, 3, H, W), on the CPU, on a
    copy of long side <= COLOR_MOMENT_SIDE."""
    h, w = x.shape[-2:]
    if max(h, w) > COLOR_MOMENT_SIDE:
        k = COLOR_MOMENT_SIDE / max(h, w)
        x = resize_tensor(x, (max(1, round(h * k)), max(1, round(w * k))))
    return moments(x.cpu())


def match_colors(content: torch.Tensor, styles: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Colour transfer by the pixels' first two moments (Gatys et al. 2017, "Controlling perceptual
    factors in neural style transfer", colour histogram matching): the affine map of RGB that gives
    `content` (1, 3, H, W) the mean and covariance of the styles' pixels (1, 3, h, w) each, a blend
    weighted by `weights` (default equal) taken as a mixture. Returns (1, 3, H, W) in [0, 1]."""
    w = torch.tensor(list(weights) if weights is not None else [1.0] * len(styles), dtype=torch.float64)
    w = w / w.sum()
    stats = [_color_moments(s) for s in styles]
    mean = torch.stack([wi * m[1] for wi, m in zip(w, stats)]).sum(0)  # (1, 3): the mixture's E[x] and E[x x^T]
    second = torch.stack([wi * second_moment(m) for wi, m in zip(w, stats)]).sum(0)  # (1, 3, 3)
    cov_s = second - mean.unsqueeze(2) * mean.unsqueeze(1)
    mc = _color_moments(content)
    # Whiten the content, then colour it like the style; the floor keeps a flat content finite.
    floor = 1e-6 * torch.eye(3, dtype=torch.float64)
    a = (psd_sqrt(cov_s) @ torch.linalg.inv(psd_sqrt(covariance(mc) + floor)))[0]  # (3, 3)
    b = mean[0] - a @ mc[1][0]  # (3,)
    out: torch.Tensor = torch.einsum("ij,bjhw->bihw", a.to(content), content) + b.to(content).view(1, 3, 1, 1)
    return out.clamp(0.0, 1.0)
