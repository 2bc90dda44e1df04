"""Named-layer VGG feature extractor.

Layers are addressed by name (`conv1_1`, `relu4_2`, `pool3`, ...), never by index. One forward
returns the requested layers and stops at the deepest one, so a content loss at `conv4_2`
never pays for block 5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stylecore.layers import ARCHITECTURES, check_layers, layer_names, layer_names_for
from stylecore.registry import Registry

__all__ = [
    "ARCHITECTURES",  # the layer names are re-exported from stylecore.layers (torch-free)
    "CAFFE_MEAN_BGR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PREPROCESSINGS",
    "Normalization",
    "VGGFeatures",
    "build_features",
    "check_layers",
    "features_state_dict",
    "infer_arch",
    "layer_names",
    "layer_names_for",
]

_CHANNELS = (64, 128, 256, 512, 512)

PREPROCESSINGS = Registry(
    "preprocessing",
    {
        "torchvision": "RGB in [0, 1], minus ImageNet mean, over ImageNet std",
        "caffe": "BGR in [0, 255], minus the Caffe ImageNet mean (VGG's original release)",
    },
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class Normalization(nn.Module):
    """Maps RGB images in [0, 1] to the input convention of a weight set; constants are buffers."""

    mean: torch.Tensor  # (1, 3, 1, 1) buffers, declared so they type as tensors, not modules
    scale: torch.Tensor

    def __init__(self, preprocessing: str = "torchvision"):
        super().__init__()
        self.preprocessing = PREPROCESSINGS.check(preprocessing)
        if preprocessing == "torchvision":
            mean, scale = torch.tensor(IMAGENET_MEAN), 1.0 / torch.tensor(IMAGENET_STD)
        else:
            # Caffe: x_bgr * 255 - mean_bgr; written as (x_rgb - mean_rgb/255) * 255 after a flip.
            mean, scale = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255.0, torch.full((3,), 255.0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1))  # (1, 3, 1, 1), RGB order
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.flip = preprocessing == "caffe"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) RGB in [0, 1]
        x = (x - self.mean) * self.scale
        return x.flip(1) if self.flip else x


def build_features(arch: str, pooling: str = "max") -> nn.Sequential:
    """VGG `features` with torchvision's module order (so its state_dict keys load as they are).

    ReLUs are not in-place: a conv output tapped as a layer must survive the ReLU after it."""
    modules: list[nn.Module] = []
    c_in = 3
    for n_convs, c_out in zip(ARCHITECTURES[arch], _CHANNELS):
        for _ in range(n_convs):
            modules += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = c_out
        modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
    return nn.Sequential(*modules)


def features_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a full torchvision VGG state_dict (`features.0.weight`, `classifier...`) or a
    features-only one (`0.weight`); return the features-only form."""
    if any(k.startswith("features.") for k in state_dict):
        return {k[len("features.") :]: v for k, v in state_dict.items() if k.startswith("features.")}
    return dict(state_dict)


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """vgg16 or vgg19, from the number of conv kernels in a state_dict."""
    n = sum(1 for k, v in features_state_dict(state_dict).items() if k.endswith("weight") and v.dim() == 4)
    for arch, blocks in ARCHITECTURES.items():
        if sum(blocks) == n:
            return arch
    raise ValueError(f"state_dict has {n} conv kernels; expected 13 (vgg16) or 16 (vgg19)")


class VGGFeatures(nn.Module):
    """Frozen VGG whose every conv/relu/pool output is addressable by name.

    Input: (B, 3, H, W) RGB in [0, 1]; normalisation for the weight set is applied inside."""

    def __init__(
        self,
        arch: str = "vgg19",
        state_dict: dict[str, torch.Tensor] | None = None,
        pooling: str = "max",
        preprocessing: str = "torchvision",
    ):
        super().__init__()
        from stylecore.params import POOLINGS

        self.arch = ARCHITECTURES.check(arch)
        self.pooling = POOLINGS.check(pooling)
        self.names = layer_names(arch)
        self.normalize = Normalization(preprocessing)
        self.features = build_features(arch, pooling)
        if state_dict is not None:
            self.features.load_state_dict(features_state_dict(state_dict))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always eval: there is no dropout/BN in `features`, but callers must not flip modes.
        return super().train(False)

    def module(self, name: str) -> nn.Module:
        """The module whose output is layer `name`."""
        check_layers(self.arch, [name])
        return self.features[self.names.index(name)]

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Outputs of `layers` for images `x` (B, 3, H, W) in [0, 1]; runs only up to the
        deepest requested layer."""
        wanted = set(check_layers(self.arch, layers))
        if not wanted:
            return {}
        last = max(self.names.index(n) for n in wanted)
        out: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for i in range(last + 1):
            h = self.features[i](h)
            if self.names[i] in wanted:
                out[self.names[i]] = h  # (B, C_l, H_l, W_l)
        return out
