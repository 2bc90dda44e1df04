"""`stxpipe stylize` through Typer's CliRunner: a real tiny run, generated options, clear errors."""

from __future__ import annotations

import dataclasses

import typer
from typer.testing import CliRunner

from pipeline.cli import app
from stylecore.images import load_image, read_png_metadata
from stylecore.params import Params

runner = CliRunner()


def _command():
    """The click command Typer builds for `stxpipe stylize`."""
    return typer.main.get_command(app).commands["stylize"]


def test_real_tiny_run_writes_png_with_params(tmp_path, content_path, style_path, hed):
    out = tmp_path / "sub" / "out.png"
    args = [
        str(content_path),
        str(style_path),
        "-o",
        str(out),
        "--weights",
        hed,
        "--lpips-weights",
        hed,
        "--size",
        "48",
        "--iterations",
        "3",
        "--style-layers",
        "conv1_1,conv2_1",
        "--style-weight",
        "500",
    ]
    r = runner.invoke(app, ["stylize", *args])
    assert r.exit_code == 0, r.output
    img = load_image(out)
    assert max(img.size) == 48
    meta = read_png_metadata(out)
    params = Params.from_json(meta["stxpipe:params"])
    assert params == Params(size=48, iterations=3, weights=hed, lpips_weights=hed, style_layers=("conv1_1", "conv2_1"), style_weight=500.0)
    assert meta["stxpipe:weights"].startswith("vgg16-hed@sha256:")
    assert "3 steps" in r.stdout and "losses: content" in r.stdout and "style" in r.stdout


def test_every_params_field_has_an_option_with_the_dataclass_default():
    opts = {p.name: p for p in _command().params if p.param_type_name == "option"}
    for f in dataclasses.fields(Params):
        assert f.name in opts, f"no option for Params.{f.name}"
        opt = opts[f.name]
        assert "--" + f.name.replace("_", "-") in opt.opts
        assert opt.help and f.metadata["help"] in opt.help
        # the option's default, read back as the CLI reads any value, is the dataclass default
        assert Params.from_dict({f.name: opt.default}) == Params(), f.name
        value = Params.from_dict({f.name: opt.default}).to_dict()[f.name]
        assert value == Params().to_dict()[f.name], f.name
    assert "device" in opts and "output" in opts


def test_help_lists_defaults():
    r = runner.invoke(app, ["stylize", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "--style-weight" in r.output and "--content-loss" in r.output and "1000.0" in r.output


def test_bad_param_names_the_field(tmp_path, content_path, style_path):
    r = runner.invoke(app, ["stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), "--optimizer", "sgd"])
    assert r.exit_code == 1
    assert "error: param 'optimizer'" in r.output and "lbfgs" in r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    r = runner.invoke(app, ["stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), "--size", "big"])
    assert r.exit_code == 1 and "error: param 'size'" in r.output
    assert not (tmp_path / "o.png").exists()


def test_missing_content_file_names_it(tmp_path, style_path):
    missing = tmp_path / "nope.jpg"
    r = runner.invoke(app, ["stylize", str(missing), str(style_path), "-o", str(tmp_path / "o.png"), "--weights", "vgg16-hed"])
    assert r.exit_code == 1
    assert "error:" in r.output and str(missing) in r.output and "does not exist" in r.output
    assert "Traceback" not in r.output


def test_tiled_run_shows_the_tiles_moving(tmp_path, content_path, style_path, hed):
    """A tiled scale's step count moves once per round (its tiles are blended then), so the bar
    shows the round's tiles as they finish: no silent stretch on a huge image."""
    from stylecore.tiling import default_overlap, tile_boxes

    out = tmp_path / "tiled.png"
    args = [str(content_path), str(style_path), "-o", str(out), "--weights", hed, "--lpips-weights", hed]
    r = runner.invoke(app, ["stylize", *args, "--size", "64", "--iterations", "2", "--tile-size", "32"])
    assert r.exit_code == 0, r.output
    h, w = load_image(out).size[::-1]
    n = len(tile_boxes(h, w, 32, default_overlap(32)))
    assert n > 1 and all(f"tiles {k}/{n}" in r.stderr for k in range(1, n + 1)), r.stderr[-2000:]
