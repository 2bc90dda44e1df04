"""`stxpipe manifest build|validate|show` through the real Typer app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.fixture()
def images(tmp_path: Path, samples: Path) -> Path:
    d = tmp_path / "img"
    d.mkdir()
    for name, src in (("c1", "content/tubingen"), ("c2", "content/chelsea"), ("s1", "style/starry_night"), ("s2", "style/the_scream")):
        shutil.copy(samples / f"{src}.jpg", d / f"{name}.jpg")
    (d / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    return d


def _run(*args: str):
    return runner.invoke(app, ["manifest", *map(str, args)])


def test_build_validate_show(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "m.parquet"
    r = _run(
        "build",
        "-c",
        images / "c*.jpg",
        "-s",
        images / "s1.jpg",
        "-s",
        images / "s2.jpg",
        "--param",
        "size=128",
        "--sweep",
        "style_layers=pool1;pool2;pool3",
        "--sweep",
        "iterations=10,20",
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "24 rows, 2 distinct contents, 2 distinct styles" in r.output
    assert "swept style_layers (3): pool1 | pool2 | pool3" in r.output
    assert "swept iterations (2): 10 | 20" in r.output

    r = _run("validate", out)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("OK ") and "24 rows" in r.output and len(r.output.strip().splitlines()) == 1

    r = _run("show", out, "--limit", "3")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:4] == ["row", "row_id", "content", "style"]
    assert "size=128 iterations=10 style_layers=pool1" in lines[1]
    assert "content_weight" not in r.output  # defaults are not shown
    assert "21 more rows" in r.output
    assert "24 rows, 2 distinct contents, 2 distinct styles, 6 distinct param sets" in r.output


def test_pair_mode_and_relative_paths(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "sub" / "m.parquet"
    r = _run(
        "build",
        "-c",
        images / "c1.jpg",
        "-c",
        images / "c2.jpg",
        "-s",
        images / "s1.jpg",
        "-s",
        images / "s2.jpg",
        "--pair",
        "--relative",
        "-o",
        out,
    )
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("style").to_pylist() == ["../img/s1.jpg", "../img/s2.jpg"]
    assert _run("validate", out).exit_code == 0


def test_validate_reports_all_five_problems_and_exits_1(tmp_path: Path, images: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "content": ["img/c1.jpg", "img/missing.jpg", "img/bad.jpg", "img/c1.jpg", "img/c2.jpg", "img/c2.jpg"],
                "style": ["img/s1.jpg"] * 6,
                "params": [None, None, None, '{"iteratoins": 5}', '{"init": "noize"}', None],
                "row_id": ["a", "b", "c", "d", "e", "a"],
            }
        ),
        tmp_path / "bad.parquet",
    )
    r = _run("validate", tmp_path / "bad.parquet")
    assert r.exit_code == 1
    out = r.output
    assert "row 1, content: file not found" in out
    assert "row 2, content: image" in out and "bad.jpg" in out
    assert "row 3, params.iteratoins: unknown parameter; did you mean 'iterations'?" in out
    assert "row 4, params.init: unknown init 'noize' (did you mean 'noise'?)" in out
    assert "row 5, row_id: duplicate row_id 'a' (first at row 0)" in out
    assert "5 problem(s) in 5 of 6 rows" in out


def test_build_errors_are_one_line_and_exit_1(tmp_path: Path, images: Path) -> None:
    r = _run("build", "-c", images / "c1.jpg", "-s", images / "s1.jpg", "--param", "stlye_weight=5", "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "did you mean 'style_weight'" in r.output
    r = _run("build", "-c", images / "c*.jpg", "-s", images / "s1.jpg", "--pair", "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "--pair needs as many contents as styles" in r.output
    r = _run("build", "-s", images / "s1.jpg", "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1 and "--content" in r.output
    assert not (tmp_path / "m.parquet").exists()
    r = _run("validate", tmp_path / "nope.parquet")
    assert r.exit_code == 1 and "no such manifest file" in r.output


def test_shipped_manifest_shows_relative_paths() -> None:
    shipped = Path(__file__).resolve().parents[2] / "manifests" / "paper_a_style_layers.parquet"
    r = _run("show", shipped)
    assert r.exit_code == 0, r.output
    assert "../pipeline/samples/content/tubingen.jpg" in r.output
    assert "params that vary: style_layers (5 values)" in r.output


def test_validate_checks_layers_against_the_run_weights(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "m.parquet"
    assert _run("build", "-c", images / "c1.jpg", "-s", images / "s1.jpg", "-p", "content_layers=conv3_4", "-o", out).exit_code == 0
    assert _run("validate", out, "--no-files").exit_code == 0  # VGG-19 (default) has conv3_4
    r = _run("validate", out, "--no-files", "--weights", "random-vgg16")  # VGG-16 does not
    assert r.exit_code == 1 and "row 0, params.content_layers: unknown layer 'conv3_4'" in r.output


def test_build_refuses_csv_columns_named_like_results_columns(tmp_path: Path, images: Path) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text(f"content,style,status,Seconds,tag\n{images / 'c1.jpg'},{images / 's1.jpg'},todo,3,x\n")
    r = _run("build", "--csv", csv, "-o", tmp_path / "m.parquet")
    assert r.exit_code == 1
    assert "status, Seconds" in r.output and "user_status" in r.output and "tag" not in r.output.split("rename")[0]
    assert not (tmp_path / "m.parquet").exists()
    csv.write_text(f"content,style,user_status,tag\n{images / 'c1.jpg'},{images / 's1.jpg'},todo,x\n")
    assert _run("build", "--csv", csv, "-o", tmp_path / "m.parquet").exit_code == 0
    assert _run("validate", tmp_path / "m.parquet").exit_code == 0
