"""Adversarial manifests through the real CLI (`stxpipe manifest validate M`): each bad input is
refused with exit code 1 and a problem naming its row and field, and nothing hangs.

Every manifest has a good row 0 and the bad input in row 1 (rows are numbered from 0), so the
row number in the message is checked, not assumed. Images are made with Pillow in tmp_path.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
TIMEOUT_S = 60


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """tmp/photo.jpg (300x200, 3:2), tmp/style.png (128x128), tmp/pano.png (4000x100)."""
    Image.new("RGB", (300, 200), (180, 90, 30)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (128, 128), (20, 60, 200)).save(tmp_path / "style.png")
    Image.new("RGB", (4000, 100), (90, 200, 90)).save(tmp_path / "pano.png")
    return tmp_path


def _validate(manifest: Path) -> Any:
    """`stxpipe manifest validate` in a thread: a hang fails the test instead of stalling it."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(CliRunner().invoke(app, ["manifest", "validate", str(manifest)])), daemon=True)
    t.start()
    t.join(TIMEOUT_S)
    if t.is_alive():
        for fifo in manifest.parent.glob("*fifo*"):  # let a blocked reader go before failing
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"`stxpipe manifest validate` still running after {TIMEOUT_S} s")
    return box[0]


def _write(folder: Path, bad: dict[str, Any], good: dict[str, Any] | None = None, **extra_columns: list) -> Path:
    """A manifest of two rows: row 0 good, row 1 `bad` (keys: content, style, params, row_id)."""
    good = good or {"content": "photo.jpg", "style": "style.png", "params": '{"size": 64, "iterations": 2}'}
    rows = [good, {**good, **bad}]
    blend = any(isinstance(r["style"], list) for r in rows)
    cols: dict[str, pa.Array] = {
        "content": pa.array([r["content"] for r in rows], pa.string()),
        "style": pa.array([r["style"] if not blend or isinstance(r["style"], list) else [r["style"]] for r in rows]),
        "params": pa.array([r.get("params") for r in rows], pa.string()),
    }
    if any("row_id" in r for r in rows):
        cols["row_id"] = pa.array([r.get("row_id", "good-row") for r in rows], pa.string())
    cols.update({k: pa.array(v) for k, v in extra_columns.items()})
    path = folder / "m.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def _eps(folder: Path) -> dict:
    (folder / "scan.jpg").write_bytes(EPS)
    return {"content": "scan.jpg"}


def _fifo(folder: Path) -> dict:
    os.mkfifo(folder / "fifo.jpg")
    return {"content": "fifo.jpg"}


P = json.dumps
CASES: list[tuple[str, Callable[[Path], dict], str, list[str]]] = [
    ("row_id dot-dot", lambda f: {"row_id": "../../x"}, "row 1, row_id:", ["'../../x' is not a valid row_id"]),
    ("row_id absolute", lambda f: {"row_id": "/abs/x"}, "row 1, row_id:", ["'/abs/x' is not a valid row_id"]),
    (
        "row_id hidden",
        lambda f: {"row_id": ".hidden"},
        "row 1, row_id:",
        ["'.hidden' is not a valid row_id", "starting with a letter or digit"],
    ),
    (
        "iterations 1e9",
        lambda f: {"params": P({"iterations": 1e9})},
        "row 1, params.iterations:",
        ["between 0 and 100,000", "1,000,000,000"],
    ),
    (
        "style pixel budget",
        lambda f: {"params": P({"size": 8192, "style_scale": 8})},
        "row 1, params.style_scale:",
        ["65,536-px style image", "at size 8192 use style_scale <= 1"],
    ),
    ("17-style blend", lambda f: {"style": ["style.png"] * 17}, "row 1, style:", ["17 style images in one blend", "at most 16"]),
    (
        "17 blend weights",
        lambda f: {"style": ["style.png"] * 17, "params": P({"style_blend": [1] * 17})},
        "row 1, params.style_blend:",
        ["at most 16"],
    ),
    (
        "deep JSON params",
        lambda f: {"params": '{"size": ' + "[" * 30 + "]" * 30 + "}"},
        "row 1, params:",
        ["nested 31 levels deep; at most 4"],
    ),
    ("nested param value", lambda f: {"params": P({"style_layers": [["conv1_1"]]})}, "row 1, params.style_layers:", ["flat list"]),
    ("huge JSON params", lambda f: {"params": P({"weights": "x" * 70_000})}, "row 1, params:", ["at most 65,536"]),
    (
        "EPS renamed .jpg",
        _eps,
        "row 1, content:",
        ["scan.jpg", "not a recognised image format", "detected: EPS/PostScript", "allowed: JPEG, PNG, WEBP, TIFF, BMP, GIF"],
    ),
    ("FIFO as content", _fifo, "row 1, content:", ["fifo.jpg", "FIFO (named pipe), not a regular file"]),
    (
        "panorama at 512",
        lambda f: {"content": "pano.png", "params": P({"size": 512})},
        "row 1, params.size:",
        ["4000x100 content image gives a 512x13 output", "short side is 13 px", "use size >= 620"],
    ),
    (
        "size 16 on a 3:2 photo",
        lambda f: {"params": P({"size": 16})},
        "row 1, params.size:",
        ["300x200 content image gives a 16x11 output", "short side is 11 px", "use size >= 24"],
    ),
]


@pytest.mark.parametrize("make, where, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_row_and_field(folder: Path, make, where: str, words: list[str]) -> None:
    r = _validate(_write(folder, make(folder)))
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith(where)]
    assert len(lines) == 1, r.output
    assert all(w in lines[0] for w in words), lines[0]
    assert "row 0" not in r.output  # the good row stays good
    assert "Traceback" not in r.output


def test_reserved_result_columns_are_one_problem_naming_them_all(folder: Path) -> None:
    path = _write(
        folder, {"params": '{"size": 48}'}, status=["a", "b"], error=["", "x"], output=["o", "p"], seconds=[1.0, 2.0], note=["kept", "kept"]
    )
    r = _validate(path)
    assert r.exit_code == 1, r.output
    problems = [ln for ln in r.output.splitlines() if ln.startswith(("manifest", "row"))]
    assert len(problems) == 1, r.output
    assert problems[0].startswith("manifest, status, error, output, seconds: ")
    assert "reserved" in problems[0] and "user_status" in problems[0] and "note" not in problems[0]


def test_every_case_at_once_reports_each_row(folder: Path) -> None:
    """All row-level cases in one manifest: one run names every bad row with its field."""
    good = {"content": "photo.jpg", "style": ["style.png"], "params": '{"size": 64, "iterations": 2}', "row_id": "good-row"}
    rows = [good]
    for i, (_, make, _where, _) in enumerate(CASES, start=1):
        bad = {**good, "row_id": f"r{i}", **make(folder)}
        bad["style"] = bad["style"] if isinstance(bad["style"], list) else [bad["style"]]
        rows.append(bad)
    table = pa.table(
        {
            "content": [r["content"] for r in rows],
            "style": [r["style"] for r in rows],
            "params": pa.array([r["params"] for r in rows], pa.string()),
            "row_id": [r["row_id"] for r in rows],
        }
    )
    pq.write_table(table, folder / "all.parquet")
    r = _validate(folder / "all.parquet")
    assert r.exit_code == 1
    for i, (name, _, where, _words) in enumerate(CASES, start=1):
        expect = where.replace("row 1,", f"row {i},")
        assert any(ln.startswith(expect) for ln in r.output.splitlines()), (name, r.output)
    assert "row 0," not in r.output
    assert "duplicate" not in r.output  # a refused row_id gets no default id to collide with
