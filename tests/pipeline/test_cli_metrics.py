"""`stxpipe distance` and `stxpipe experiment intensity|contrast` through the Typer app."""

from __future__ import annotations

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def table_row(output: str, pair: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(pair + " "):
            return line.split()
    raise AssertionError(f"no row '{pair}' in:\n{output}")


def test_intensity_reproduces_the_papers_l2_and_writes_csv(tmp_path):
    out_csv = tmp_path / "fig5.csv"
    res = invoke("experiment", "intensity", "--weights", "random-vgg16", "--size", "32", "--csv", out_csv)
    assert res.exit_code == 0, res.output
    l2 = [float(table_row(res.stdout, p)[1]) for p in ("white-black", "white-gray", "gray-black")]
    assert l2 == [4.0, 1.0, 1.0]
    assert "weights: random-vgg16 (RANDOM WEIGHTS" in res.stdout
    assert "not comparable with the paper's numbers (0.4538, 0.4945, 0.5390)" in res.stdout
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert [r["pair"] for r in rows] == ["white-black", "white-gray", "gray-black"]
    assert [float(r["l2"]) for r in rows] == [4.0, 1.0, 1.0]
    assert all(float(r["lpips"]) > 0 and "RANDOM" in r["weights"] for r in rows)
    # the CSV's LPIPS is the printed one
    assert float(table_row(res.stdout, "white-black")[2]) == pytest.approx(float(rows[0]["lpips"]), abs=6e-5)


def test_intensity_on_real_weights_says_which_and_that_lpips_is_not_the_papers(hed):
    res = invoke("experiment", "intensity", "--weights", hed, "--size", "32")
    assert res.exit_code == 0, res.output
    assert re.search(r"^weights: vgg16-hed@sha256:[0-9a-f]{16}$", res.stdout, re.M)
    assert "LPIPS column is not comparable" in res.stdout
    assert [float(table_row(res.stdout, p)[1]) for p in ("white-black", "white-gray", "gray-black")] == [4.0, 1.0, 1.0]


def test_contrast_ratios_exceed_one_and_distances_grow(tmp_path, content_path):
    out_csv = tmp_path / "fig6.csv"
    res = invoke("experiment", "contrast", content_path, "--weights", "random-vgg16", "--size", "64", "--csv", out_csv)
    assert res.exit_code == 0, res.output
    rows = {r["pair"]: r for r in csv.DictReader(out_csv.read_text().splitlines())}
    l12, l13 = rows["level1-level2"], rows["level1-level3"]
    assert float(l13["l2"]) > float(l12["l2"]) > 0
    assert float(l13["lpips"]) > float(l12["lpips"]) > 0
    assert float(rows["ratio"]["l2"]) == pytest.approx(4.0, rel=1e-3)
    assert float(rows["ratio"]["lpips"]) > 1
    assert "contrast factors 1, 0.75, 0.5" in res.stdout
    assert table_row(res.stdout, "ratio")[-2].endswith("x")


def test_distance_json_parses(content_path, style_path):
    res = invoke("distance", content_path, style_path, "--weights", "random-vgg16", "--size", "48", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"a", "b", "height", "width", "lpips", "l2", "weights"} <= set(data)
    assert max(data["height"], data["width"]) == 48  # A's size; B was brought to it
    assert data["lpips"] > 0 and data["l2"] > 0
    assert "RANDOM" in data["weights"]


def test_distance_of_an_image_to_itself_is_zero_and_text_mode_says_b_was_resized(content_path):
    res = invoke("distance", content_path, content_path, "--weights", "random-vgg16", "--size", "40", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["lpips"] == 0.0 and data["l2"] == 0.0
    text = invoke("distance", content_path, content_path, "--weights", "random-vgg16", "--size", "40")
    assert text.exit_code == 0
    assert "resized to" in text.stdout and re.search(r"^LPIPS\s+0\.0000$", text.stdout, re.M)


@pytest.mark.parametrize("command", [["experiment", "intensity", "--size", "32"], ["distance", "A", "B"]])
def test_unavailable_imagenet_weights_exit_with_the_registrys_message(command, tmp_path, monkeypatch, content_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    args = [content_path if a in ("A", "B") else a for a in command]
    res = invoke(*args)  # default --weights vgg16-imagenet
    assert res.exit_code == 1
    assert "weight set 'vgg16-imagenet' is not available" in res.stderr
    assert str(tmp_path / "empty-torch-home") in res.stderr  # looked where TORCH_HOME points
    assert "--weights vgg16-hed" in res.stderr
    assert res.stdout == ""


def test_unknown_weights_name_lists_the_valid_ones():
    res = invoke("experiment", "intensity", "--weights", "vgg16-imagenett")
    assert res.exit_code == 1
    assert "vgg16-hed" in res.stderr and "valid" in res.stderr


def test_missing_image_is_one_clear_error(tmp_path):
    res = invoke("experiment", "contrast", tmp_path / "nope.jpg", "--weights", "random-vgg16")
    assert res.exit_code == 1
    assert res.stderr.startswith("error:") and "nope.jpg" in res.stderr
