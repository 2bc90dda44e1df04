"""`stxpipe --help/--version`, `models list`, `models pull` through Typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli import app
from stylecore import __version__

runner = CliRunner()


def test_help_and_version():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "models" in r.output
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"stxpipe {__version__}"


def test_models_list_shows_presence_and_paths(tmp_path, monkeypatch, hed):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines() if line.strip()}
    assert "vgg19-imagenet" in lines and " no " in lines["vgg19-imagenet"]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in lines["vgg19-imagenet"]
    assert " yes " in lines["vgg16-hed"] and len(lines["vgg16-hed"].split()[-1]) == 64  # full sha256
    assert "random" in lines["random"] and "tests only" in lines["random"]


def test_pull_imagenet_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY"):  # offline even where the network is up: a closed port
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    r = runner.invoke(app, ["models", "pull", "vgg19-imagenet"])
    assert r.exit_code != 0
    assert "weight set 'vgg19-imagenet' is not available" in r.output and "download failed" in r.output
    assert "Traceback" not in r.output
    assert not any(p.suffix == ".part" for p in (tmp_path / "torch" / "hub" / "checkpoints").iterdir())


def test_models_list_shows_the_pinned_hash_of_an_absent_set(tmp_path, monkeypatch):
    from stylecore.catalog import HED_PTH_SHA256

    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path / "stx"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if line.startswith("vgg16-hed"))
    assert " no " in line and line.endswith(HED_PTH_SHA256)


def test_pull_unknown_name_lists_valid(tmp_path):
    r = runner.invoke(app, ["models", "pull", "vgg21"])
    assert r.exit_code == 1 and "valid: vgg19-imagenet" in r.output
