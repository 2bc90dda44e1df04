"""The report's images and per-row media: thumbnails and 100% crops as data URIs, loss curves and
snapshot strips as JSON-ready data (drawn by the page's own script, `report_assets/report.js`).

Crops: an output whose long side is over CROP_ABOVE px gets the centre CROP_PX x CROP_PX pixels
at native resolution, as a lossless PNG (a thumbnail hides exactly what a crop is for: texture,
seams, noise). Snapshot strips show at most SNAPS_SHOWN of a row's snapshots, evenly spaced.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from pipeline import storage

SNAP_PX = 72  # long side of a snapshot-strip thumbnail
SNAPS_SHOWN = 8  # a strip shows at most this many snapshots, evenly spaced, the last always
CROP_ABOVE = 1024  # outputs with a longer side get a 100% crop next to their thumbnail (issue 17)
CROP_PX = 256  # side of that crop, px at the output's native resolution
CURVE_TERMS = ("total", "content", "style", "tv", "hist")


class Thumbs:
    """Thumbnails (and 100% crops) as data URIs, each distinct (source, size) read once;
    failures remembered with why."""

    def __init__(self, out: str, size: int):
        self.out = out
        self.size = size
        self.images: dict[str, str] = {}  # key -> data URI
        self._keys: dict[tuple[str, int], str | None] = {}  # (source, size) -> key (None: failed)
        self.crops: dict[str, tuple[str, int, int]] = {}  # source -> (key, its width, its height): outputs over CROP_ABOVE px
        self.missing: dict[str, str] = {}  # source -> reason

    def _locate(self, src: str) -> str:
        if storage.is_uri(src) or os.path.isabs(src) or os.path.exists(src):
            return src
        alt = storage.join(self.out, src)  # a path stored relative to the output folder
        return alt if storage.is_uri(alt) or os.path.exists(alt) else src

    def _add(self, img: Any, fmt: str) -> str:
        buf = io.BytesIO()
        if fmt == "png":
            img.convert("RGB").save(buf, format="PNG", optimize=True)
        else:
            img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
        k = f"i{len(self.images)}"
        self.images[k] = f"data:image/{'png' if fmt == 'png' else 'jpeg'};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return k

    def key(self, src: str | None, *, size: int | None = None, crop: bool = False) -> str | None:
        """The key of `src`'s thumbnail (long side `size`, default the report's) in `images`, or
        None when it cannot be read. `crop`: also keep a 100% crop of an image over CROP_ABOVE
        px (`crops`), a lossless PNG of its centre CROP_PX x CROP_PX pixels at native resolution."""
        if not src:
            return None
        size = size or self.size
        if (src, size) in self._keys and (not crop or src in self.crops or self._keys[(src, size)] is None):
            return self._keys[(src, size)]
        from PIL import Image  # local: Pillow is only needed when writing a report

        from stylecore.bounds import MAX_SIZE
        from stylecore.images import DEFAULT_MAX_PIXELS, ImageError, load_image

        try:
            # Our own outputs may be as large as the size bound allows.
            limit = max(DEFAULT_MAX_PIXELS, MAX_SIZE * MAX_SIZE) if crop else DEFAULT_MAX_PIXELS
            img = load_image(storage.read_bytes(self._locate(src)), name=src, max_pixels=limit)
            if crop and max(img.size) > CROP_ABOVE:
                w, h = img.size
                cw, ch = min(CROP_PX, w), min(CROP_PX, h)
                left, top = (w - cw) // 2, (h - ch) // 2
                self.crops[src] = (self._add(img.crop((left, top, left + cw, top + ch)), "png"), w, h)
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
            k: str | None = self._add(img, "jpeg")
        except (OSError, ImageError, ValueError) as e:
            self.missing[src] = str(e).splitlines()[0][:300]
            k = None
        self._keys[(src, size)] = k
        return k


# --------------------------------------------------------------------------------------------
# Per-row data


def basename(p: str | None) -> str:
    if not p:
        return ""
    return p.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def style_name(style: str | None) -> str:
    return " + ".join(basename(s) for s in (style or "").split(";") if s)


def finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def curve(v: Any) -> dict[str, list[Any]] | None:
    """A row's `loss_curve` struct as JSON-ready lists (non-finite values as null), or None when
    the row has none (old results, error rows) or it has fewer than 2 steps."""
    if not isinstance(v, Mapping) or not v.get("step") or len(v["step"]) < 2:
        return None
    n = len(v["step"])
    out: dict[str, list[Any]] = {
        "step": [int(x) for x in v["step"]],
        "scale_start": [int(x) for x in v.get("scale_start") or [] if x is not None],
    }
    for term in CURVE_TERMS:
        vals = v.get(term) or []
        if len(vals) == n:  # a term the engine did not record (hist off) is an empty list
            out[term] = [finite(x) for x in vals]
    return out


def snaps(thumbs: Thumbs, paths: Any) -> list[dict[str, Any]]:
    """A row's snapshot strip: at most SNAPS_SHOWN thumbnails, evenly spaced, the last always."""
    paths = [p for p in (paths or []) if p]
    if len(paths) > SNAPS_SHOWN:
        step = (len(paths) - 1) / (SNAPS_SHOWN - 1)
        paths = [paths[round(i * step)] for i in range(SNAPS_SHOWN)]
    return [{"k": thumbs.key(p, size=min(SNAP_PX, thumbs.size)), "name": basename(p), "label": snap_label(p)} for p in paths]


def snap_label(path: str) -> str:
    """'step 40' when the file name says which step (`...step40.png`, `..._step_0040.png`), else the name."""
    m = re.search(r"step[_-]?0*(\d+)\D*$", basename(path), re.I)
    return f"step {m.group(1)}" if m else basename(path)
