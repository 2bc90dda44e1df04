"""stylecore.images: decoding of every mode, EXIF orientation, the failure modes (each an
ImageError naming the file), the size guard before decoding, resizing, atomic PNG output with
metadata, and colour preservation in YIQ."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

from stylecore import images as I
from stylecore.images import ImageError, match_colors


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _rgb_at(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.array(img.getpixel(xy), dtype=int)


def _with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR claiming width x height (valid CRC), the tiny IDAT left as it is."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return png[:16] + ihdr + crc + png[33:]


@pytest.fixture
def no_decode(monkeypatch):
    """Make any pixel decode fail loudly, to prove a check happened on the header alone."""
    calls = []

    def load(self, *a, **k):
        calls.append(self)
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


# ------------------------------------------------------------------------------------ modes


def test_rgb_jpeg_sample_decodes(content_path):
    img = I.load_image(content_path)
    assert img.mode == "RGB" and img.size == (256, 192)
    assert I.probe_image(content_path) == (256, 192)
    assert np.asarray(img).std() > 10  # a real photo, not a blank


@pytest.mark.parametrize(
    "make, expected",
    [
        # L: gray levels copied to all three channels
        (lambda: Image.fromarray(np.array([[0, 77, 255]], np.uint8), "L"), [(0, 0, 0), (77, 77, 77), (255, 255, 255)]),
        # 1-bit: 0 / 255
        (lambda: Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1"), [(0, 0, 0), (255, 255, 255), (0, 0, 0)]),
        # LA: transparent -> white, opaque -> gray, half alpha black -> mid gray
        (
            lambda: Image.fromarray(np.array([[[10, 0], [100, 255], [0, 128]]], np.uint8), "LA"),
            [(255, 255, 255), (100, 100, 100), (127, 127, 127)],
        ),
        # RGBA: transparent red -> white (not red), opaque green, half-transparent red over white
        (
            lambda: Image.fromarray(np.array([[[255, 0, 0, 0], [0, 200, 0, 255], [255, 0, 0, 128]]], np.uint8), "RGBA"),
            [(255, 255, 255), (0, 200, 0), (255, 127, 127)],
        ),
        # 16-bit gray: scaled (32768 -> 128), not clipped (Pillow's convert gives 255)
        (
            lambda: Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)),
            [(0, 0, 0), (128, 128, 128), (255, 255, 255)],
        ),
    ],
    ids=["L", "1", "LA", "RGBA", "I;16"],
)
def test_png_modes_decode_to_rgb(tmp_path, make, expected):
    src = make()
    path = _save(src, tmp_path / f"m_{src.mode.replace(';', '_')}.png")
    img = I.load_image(path)
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0)) for x in range(3)] == expected


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    pal.putdata([0, 1, 2])
    plain = I.load_image(_save(pal, tmp_path / "p.png"))
    assert [plain.getpixel((x, 0)) for x in range(3)] == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    # index 1 transparent: PNG (tRNS) and GIF both composite it on white
    for name in ("pt.png", "pt.gif"):
        img = I.load_image(_save(pal, tmp_path / name, transparency=1))
        assert [img.getpixel((x, 0)) for x in range(3)] == [(255, 0, 0), (255, 255, 255), (0, 255, 0)], name


def test_gray_png_with_transparent_key_becomes_white(tmp_path):
    src = Image.fromarray(np.array([[50, 200]], np.uint8), "L")
    img = I.load_image(_save(src, tmp_path / "lt.png", transparency=50))
    assert [img.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (200, 200, 200)]


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0, 32768, 65535]], dtype=">u2"), [0, 128, 255]),  # I;16B
        (np.array([[0, 32768, 65535]], dtype=np.int32), [0, 128, 255]),  # I (32-bit, 16-bit data)
        (np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # F in [0, 1]
        (np.array([[0.0, 100.0, 300.0]], dtype=np.float32), [0, 100, 255]),  # F in [0, 255]
    ],
    ids=["I;16B", "I", "F01", "F255"],
)
def test_tiff_wide_modes_scale_to_8bit(tmp_path, array, expected):
    src = Image.fromarray(array)
    path = _save(src, tmp_path / "w.tif")
    with Image.open(path) as raw:
        assert raw.mode == src.mode  # the file really holds the wide mode
    img = I.load_image(path)
    assert [img.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]


def test_cmyk_known_colours(tmp_path):
    src = Image.new("CMYK", (3, 1))
    src.putdata([(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255)])  # red, white, black
    want = np.array([(255, 0, 0), (255, 255, 255), (0, 0, 0)])
    tif = I.load_image(_save(src, tmp_path / "c.tif"))
    assert np.array_equal(np.array([tif.getpixel((x, 0)) for x in range(3)]), want)
    big = src.resize((48, 16), Image.Resampling.NEAREST)  # JPEG blocks: one colour per 16 px
    jpg_path = _save(big, tmp_path / "c.jpg", quality=95)
    with Image.open(jpg_path) as raw:
        assert raw.mode == "CMYK"
    jpg = I.load_image(jpg_path)
    got = np.array([jpg.getpixel((8 + 16 * i, 8)) for i in range(3)])
    assert np.abs(got - want).max() <= 12


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    # 64x32, quadrants TL red, TR green, BL blue, BR white (16-px aligned for JPEG).
    a = np.zeros((32, 64, 3), np.uint8)
    a[:16, :32] = (255, 0, 0)
    a[:16, 32:] = (0, 255, 0)
    a[16:, :32] = (0, 0, 255)
    a[16:, 32:] = (255, 255, 255)
    src = Image.fromarray(a)
    exif = src.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = _save(src, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    img = I.load_image(path)
    assert img.size == (32, 64)
    assert I.probe_image(path) == (32, 64)
    # clockwise: old bottom-left goes top-left, old top-left goes top-right
    quads = {(8, 16): (0, 0, 255), (24, 16): (255, 0, 0), (8, 48): (255, 255, 255), (24, 48): (0, 255, 0)}
    for xy, colour in quads.items():
        assert np.abs(_rgb_at(img, xy) - colour).max() <= 20, (xy, img.getpixel(xy))
    # without the tag the same pixels stay wide
    plain = I.load_image(_save(src, tmp_path / "plain.jpg", quality=95))
    assert plain.size == (64, 32)


def test_bytes_source_and_name(content_path):
    data = content_path.read_bytes()
    assert I.load_image(data).size == I.load_image(content_path).size
    with pytest.raises(ImageError) as e:
        I.load_image(data[: len(data) // 2], name="s3://bucket/tubingen.jpg")
    assert e.value.source == "s3://bucket/tubingen.jpg" and "s3://bucket/tubingen.jpg" in str(e.value)


# --------------------------------------------------------------------------------- failures


def _png_bytes(content_path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(content_path).save(buf, "PNG")
    return buf.getvalue()


def _corrupt_png(content_path: Path) -> bytes:
    data = bytearray(_png_bytes(content_path))
    mid = len(data) // 2
    data[mid : mid + 64] = b"\x00" * 64  # inside IDAT: the zlib stream breaks
    return bytes(data)


@pytest.mark.parametrize(
    "case, make, words",
    [
        ("truncated.jpg", lambda c: c.read_bytes()[: len(c.read_bytes()) // 2], "truncated"),
        ("truncated.png", lambda c: _png_bytes(c)[: len(_png_bytes(c)) // 2], "truncated"),
        ("corrupt.png", _corrupt_png, "corrupt"),
        ("random.png", lambda c: np.random.default_rng(0).bytes(2000), "not a recognised image"),
        ("empty.jpg", lambda c: b"", "(0 bytes)"),
        ("notes.jpg", lambda c: b"this is a text file, not a JPEG\n" * 10, "not a recognised image"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path, content_path, case, make, words):
    path = tmp_path / case
    path.write_bytes(make(content_path))
    for fn in (I.load_image, I.probe_image, I.load_tensor):
        with pytest.raises(ImageError) as e:
            fn(path)
        msg = str(e.value)
        assert case in msg and words in msg, msg
        assert e.value.source == str(path)
        # no Pillow traceback chained underneath
        assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)
    if path.stat().st_size:
        with pytest.raises(ImageError, match=case):
            I.load_image(path.read_bytes(), name=case)


def test_truncated_images_are_not_silently_accepted():
    # Pillow's global must be untouched by importing/using stylecore (it would hide truncation).
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope" / "ghost.png"
    with pytest.raises(ImageError, match="ghost.png': the file does not exist"):
        I.load_image(missing)
    with pytest.raises(ImageError, match="does not exist"):
        I.load_image(str(missing))
    with pytest.raises(ImageError, match="is a directory"):
        I.load_image(tmp_path)
    with pytest.raises(ImageError, match="URIs are not read"):
        I.load_image("s3://bucket/x.jpg")


def test_file_uri_is_read(content_path):
    assert I.load_image(content_path.as_uri()).size == (256, 192)


def test_max_pixels_guard_on_real_image(content_path, no_decode):
    with pytest.raises(ImageError) as e:
        I.load_image(content_path, max_pixels=256 * 192 - 1)
    assert "tubingen.jpg" in str(e.value) and "max_pixels" in str(e.value) and "256x192" in str(e.value)
    assert no_decode == []  # refused from the header


def test_max_pixels_allows_exact_limit(content_path):
    assert I.load_image(content_path, max_pixels=256 * 192).size == (256, 192)


def test_patched_header_refused_before_decoding(tmp_path, no_decode):
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    # 7000x7000 = 49 MP: over our default 40 MP, under Pillow's own warning threshold.
    mid = tmp_path / "mid.png"
    mid.write_bytes(_with_ihdr_size(buf.getvalue(), 7000, 7000))
    with pytest.raises(ImageError, match=r"mid\.png.*7000x7000.*max_pixels"):
        I.load_image(mid)
    # 100000x100000: Pillow's DecompressionBombError inside Image.open, also an ImageError.
    huge = tmp_path / "huge.png"
    huge.write_bytes(_with_ihdr_size(buf.getvalue(), 100_000, 100_000))
    with pytest.raises(ImageError, match=r"huge\.png.*too many pixels"):
        I.load_image(huge)
    # 10000x10000: Pillow only warns (DecompressionBombWarning); still refused, still no decode.
    warn = tmp_path / "warn.png"
    warn.write_bytes(_with_ihdr_size(buf.getvalue(), 10_000, 10_000))
    with pytest.raises(ImageError, match=r"warn\.png.*max_pixels"):
        I.load_image(warn.read_bytes(), name="warn.png")
    assert no_decode == []


def test_max_pixels_above_pillow_threshold_is_honoured(tmp_path):
    # 10000x10000 trips Pillow's DecompressionBombWarning; a caller allowing 200 MP gets past the
    # header (and this lying file then fails on decode, not on size).
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    data = _with_ihdr_size(buf.getvalue(), 10_000, 10_000)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        I.load_image(data, name="w.png", max_pixels=200_000_000)


def test_patched_header_without_guard_is_corrupt(tmp_path):
    # Control for the test above: with the guard lifted, the lying header is caught on decode.
    buf = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buf, "PNG")
    path = tmp_path / "liar.png"
    path.write_bytes(_with_ihdr_size(buf.getvalue(), 300, 300))
    with pytest.raises(ImageError, match=r"liar\.png.*truncated or corrupt"):
        I.load_image(path)


def test_real_large_bilevel_png(tmp_path, no_decode):
    path = tmp_path / "big1bit.png"
    # 5000x5000 1-bit PNG: 25 MP yet only a few KB on disk.
    Image.new("1", (5000, 5000), 1).save(path, optimize=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match=r"big1bit\.png.*5000x5000"):
        I.probe_image(path, max_pixels=10_000_000)
    assert no_decode == []


def test_bad_max_pixels_argument(content_path):
    with pytest.raises(ValueError, match="max_pixels"):
        I.load_image(content_path, max_pixels=0)


# ------------------------------------------------------------------------- tensors, resize


def test_image_tensor_round_trip():
    a = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = I.image_to_tensor(Image.fromarray(a))
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32 and t.is_contiguous()
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert torch.equal(t[:, 2, 3], torch.tensor(a[2, 3], dtype=torch.float32) / 255)
    assert np.array_equal(np.asarray(I.tensor_to_image(t)), a)
    assert np.array_equal(np.asarray(I.tensor_to_image(t.unsqueeze(0))), a)


def test_tensor_to_image_clamps_and_rounds():
    t = torch.tensor([-0.5, 0.2, 1.7, float("nan")]).view(1, 1, 4).expand(3, 1, 4)
    img = I.tensor_to_image(t.requires_grad_(False))
    assert [img.getpixel((x, 0))[0] for x in range(4)] == [0, 51, 255, 0]
    with pytest.raises(ValueError, match="shape"):
        I.tensor_to_image(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        I.tensor_to_image(torch.zeros(4, 4, 3))


@pytest.mark.parametrize(
    "size_in, long, size_out",
    [
        ((256, 171), 100, (100, 67)),
        ((171, 256), 100, (67, 100)),
        ((100, 100), 37, (37, 37)),
        ((1000, 1), 10, (10, 1)),
        ((30, 20), 90, (90, 60)),
        ((3, 2), 5, (5, 3)),
    ],
)
def test_resize_long_side_exact(size_in, long, size_out):
    img = Image.new("RGB", size_in, (10, 20, 30))
    out = I.resize_long_side(img, long)
    assert out.size == size_out and out.mode == "RGB"
    assert out.getpixel((0, 0)) == (10, 20, 30)


def test_resize_long_side_lanczos_and_args():
    # A 1-px checkerboard downscaled 4x averages to gray (nearest would keep 0 or 255).
    board = Image.fromarray((np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)).convert("RGB")
    small = np.asarray(I.resize_long_side(board, 16)).astype(int)
    assert np.abs(small[4:12, 4:12] - 128).max() <= 3
    pal = Image.new("P", (10, 5))
    assert I.resize_long_side(pal, 4).mode == "RGB"
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError):
            I.resize_long_side(board, bad)


def test_load_tensor(content_path):
    t = I.load_tensor(content_path, 128)
    assert t.shape == (1, 3, 96, 128) and t.dtype == torch.float32
    full = I.load_tensor(content_path)
    assert full.shape == (1, 3, 192, 256)
    assert abs(t.mean().item() - full.mean().item()) < 0.01  # same picture, smaller


def test_resize_tensor_shapes_clamp_and_grad():
    x = (torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    raw = F.interpolate(x, size=(40, 30), mode="bicubic", align_corners=False, antialias=True)
    assert raw.min() < 0 or raw.max() > 1  # bicubic overshoots: the clamp matters
    y = I.resize_tensor(x.requires_grad_(), (40, 30))
    assert y.shape == (2, 3, 40, 30) and 0 <= y.min() and y.max() <= 1
    y.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(I.resize_tensor(flat, (8, 8)), torch.full((1, 3, 8, 8), 0.25), atol=1e-6)
    with pytest.raises(ValueError):
        I.resize_tensor(torch.zeros(3, 8, 8), (4, 4))


# ---------------------------------------------------------------------------------- save_png


def test_save_png_round_trip_with_metadata(tmp_path):
    t = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    params = json.dumps({"size": 512, "style_weight": 1000.0, "content_layers": ["conv4_2"]})
    meta = {"stxpipe:params": params, "Title": "Tübingen", "note": "Ünïcødé ✓ 星"}
    out = I.save_png(t, tmp_path / "a" / "b" / "out.png", meta)
    assert out == tmp_path / "a" / "b" / "out.png" and out.is_file()
    assert sorted(os.listdir(out.parent)) == ["out.png"]  # no temp file left behind
    assert I.read_png_metadata(out) == meta
    back = I.load_tensor(out)
    assert back.shape == (1, 3, 9, 11)
    assert (back - t).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
    with Image.open(out) as raw:
        assert raw.format == "PNG"


def test_save_png_pil_image_and_overwrite(tmp_path):
    path = tmp_path / "o.png"
    I.save_png(Image.new("RGB", (4, 4), (1, 2, 3)), path, {"k": "one"})
    I.save_png(Image.new("RGBA", (4, 4), (9, 8, 7, 255)), path, {"k": "two"})
    assert I.read_png_metadata(path) == {"k": "two"}
    with Image.open(path) as raw:
        assert raw.getpixel((0, 0)) == (9, 8, 7, 255)
    assert sorted(os.listdir(tmp_path)) == ["o.png"]


def test_save_png_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    I.save_png(Image.new("RGB", (4, 4), (1, 2, 3)), path, {"v": "old"})
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        I.save_png(torch.zeros(3, 8, 8), path, {"v": "new"})
    with pytest.raises(OSError):
        I.save_png(torch.zeros(3, 8, 8), tmp_path / "fresh.png")
    monkeypatch.undo()
    assert path.read_bytes() == before  # old file intact
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]  # no fresh.png, no *.tmp


def test_save_png_rejects_bad_metadata(tmp_path):
    with pytest.raises(TypeError):
        I.save_png(torch.zeros(3, 2, 2), tmp_path / "x.png", {"n": 3})
    with pytest.raises(ValueError):
        I.save_png(torch.zeros(3, 2, 2), tmp_path / "x.png", {"k" * 80: "v"})
    assert not any(tmp_path.iterdir())


def test_read_png_metadata_errors(tmp_path, content_path):
    assert I.read_png_metadata(I.save_png(torch.zeros(3, 2, 2), tmp_path / "bare.png")) == {}
    with pytest.raises(ImageError, match="missing.png.*does not exist"):
        I.read_png_metadata(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="tubingen.jpg.*not a PNG"):
        I.read_png_metadata(content_path)


# ------------------------------------------------------------------------------------ colour


def test_yiq_known_values_and_round_trip():
    white = torch.ones(1, 3, 1, 1)
    assert torch.allclose(I.rgb_to_yiq(white).flatten(), torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(I.rgb_to_yiq(red).flatten(), torch.tensor([0.299, 0.5959, 0.2115]), atol=1e-6)
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(I.yiq_to_rgb(I.rgb_to_yiq(x)), x, atol=1e-6)
    assert torch.allclose(I.rgb_to_yiq(I.yiq_to_rgb(x)), x, atol=1e-6)
    with pytest.raises(ValueError):
        I.rgb_to_yiq(torch.zeros(1, 4, 2, 2))


def test_preserve_colors_keeps_content_chroma_and_output_luminance():
    g = torch.Generator().manual_seed(4)
    # mid-range values keep the recombined colour inside the RGB cube (no clamping)
    output = 0.4 + 0.2 * torch.rand(2, 3, 8, 8, generator=g)
    content = 0.4 + 0.2 * torch.rand(2, 3, 8, 8, generator=g)
    out = I.preserve_colors(output.clone().requires_grad_(), content)
    yiq_out, yiq_o, yiq_c = I.rgb_to_yiq(out), I.rgb_to_yiq(output), I.rgb_to_yiq(content)
    assert torch.allclose(yiq_out[:, 0], yiq_o[:, 0], atol=1e-5)
    assert torch.allclose(yiq_out[:, 1:], yiq_c[:, 1:], atol=1e-5)
    assert not torch.allclose(out, output, atol=1e-3)  # the colours really changed
    out.sum().backward()  # differentiable


def test_preserve_colors_resizes_content_and_clamps():
    output = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(5))
    teal = torch.tensor([0.1, 0.6, 0.5]).view(1, 3, 1, 1).expand(1, 3, 40, 60)
    out = I.preserve_colors(output, teal)
    assert out.shape == (1, 3, 16, 24) and 0 <= out.min() and out.max() <= 1
    # content chroma everywhere, where clamping did not intervene
    inside = ((I.yiq_to_rgb(torch.cat([I.rgb_to_yiq(output)[:, :1], I.rgb_to_yiq(teal)[:, 1:, :16, :24]], 1)) - 0.5).abs() < 0.5).all(
        1
    )  # (1, H, W)
    assert inside.float().mean() > 0.5
    iq = I.rgb_to_yiq(out)[:, 1:]
    want = I.rgb_to_yiq(teal[:, :, :1, :1])[:, 1:]
    assert torch.allclose(iq[:, :, inside[0]], want.flatten(1).unsqueeze(-1).expand(1, 2, int(inside.sum())), atol=1e-5)
    # batch of outputs, one content
    assert I.preserve_colors(output.expand(3, -1, -1, -1), teal).shape == (3, 3, 16, 24)
    with pytest.raises(ValueError, match="batch"):
        I.preserve_colors(output.expand(3, -1, -1, -1), teal.expand(2, -1, -1, -1))


# ------------------------------------------------------------------ formats allowlist, file kinds

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"


def test_only_allowlisted_formats_are_parsed(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    path = tmp_path / "photo.jpg"
    path.write_bytes(EPS)
    with Image.open(path) as im:
        assert im.format == "EPS"  # what Pillow alone would do with it
    calls = []
    real = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: calls.append(1) or real(self))
    for source in (path, EPS):
        with pytest.raises(ImageError) as e:
            I.load_image(source, name=str(path))
        msg = str(e.value)
        assert str(path) in msg and "detected: EPS/PostScript" in msg
        assert "allowed: JPEG, PNG, WEBP, TIFF, BMP, GIF" in msg
    assert calls == []  # the EPS parser never ran (it would hand the file to Ghostscript on load)
    assert I.ALLOWED_FORMATS == ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_every_allowed_format_decodes(tmp_path, fmt):
    path = _save(Image.new("RGB", (12, 8), (200, 10, 10)), tmp_path / f"x.{fmt.lower()}", format=fmt)
    assert I.load_image(path).size == (12, 8)


def test_refused_formats_are_named(tmp_path):
    for name, data, what in (
        ("a.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "PDF"),
        ("a.psd", b"8BPS\x00\x01" + b"\x00" * 40, "PSD"),
        ("a.ico", _ico_bytes(), "ICO"),
        ("a.bin", b"\x00" * 64, "unknown"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=f"detected: {what}"):
            I.load_image(path)


def _ico_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")
    return buf.getvalue()


def test_camera_mpo_jpegs_still_open():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8), "blue")])
    assert I.load_image(buf.getvalue()).size == (8, 8)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_device_and_folder_are_refused_without_blocking(tmp_path):
    import threading

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    errors: list[str] = []

    def attempt() -> None:
        for fn in (I.load_image, I.probe_image, I.read_png_metadata):
            try:
                fn(fifo)
            except ImageError as e:
                errors.append(str(e))

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader before failing, so the test process can exit
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert len(errors) == 3 and all("pipe.jpg" in m and "FIFO (named pipe)" in m for m in errors), errors
    with pytest.raises(ImageError, match="'/dev/null': is a character device"):
        I.load_image("/dev/null")
    with pytest.raises(ImageError, match="is a directory"):
        I.read_png_metadata(tmp_path)


def test_pillow_version_floor():
    import PIL

    assert I.MIN_PILLOW == (10, 1)
    assert I._version_tuple(PIL.__version__) >= I.MIN_PILLOW
    assert I._version_tuple("10.0.1") < I.MIN_PILLOW <= I._version_tuple("10.1.0") < I._version_tuple("11.0.0.dev0")


def test_match_colors_gives_the_content_the_styles_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 64, 80, generator=g) * 0.5 + 0.2  # (1, 3, H, W), inside (0, 1) after the map
    n = torch.rand(1, 1, 300, 200, generator=g)
    style = torch.cat([0.4 + 0.2 * n, 0.5 - 0.1 * n, 0.3 + 0.05 * torch.rand(1, 1, 300, 200, generator=g)], 1)  # correlated R/G
    out = match_colors(content, [style])
    flat, ref = out.reshape(3, -1), style.reshape(3, -1)
    torch.testing.assert_close(flat.mean(1), ref.mean(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cov(flat), torch.cov(ref), atol=2e-5, rtol=0)  # the R/G anti-correlation too
    # The map is affine and whitening-then-colouring: the content's own structure survives (a
    # pixel-wise rank correlation would too); a plain copy of the style's colours would not.
    assert torch.corrcoef(torch.stack([out[0, 2].flatten(), content[0, 2].flatten()]))[0, 1] > 0.5
    # A blend is the mixture of its styles: weights (1, 0) give the first style's moments.
    torch.testing.assert_close(match_colors(content, [style, torch.zeros_like(style)], [1.0, 0.0]), out)
    # A flat (one-colour) content stays finite: its covariance is floored, not inverted raw.
    assert match_colors(torch.full((1, 3, 8, 8), 0.3), [style]).isfinite().all()
