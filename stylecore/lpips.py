"""LPIPS "Distance" (Zhang et al., CVPR 2018), VGG variant, v0.1 linear weights, on our VGG.

    d(x, y) = sum_l  1/(H_l W_l) sum_{h,w} || w_l * (x̂^l_hw - ŷ^l_hw) ||_2^2

with x̂^l the layer-l features unit-normalised over channels and w_l the learned per-channel
weights (`lin{l}.model.1.weight` of the lpips package's `weights/v0.1/vgg.pth`; stored there
already squared, i.e. applied to the squared difference as a 1x1 convolution).

The backbone is OUR `VGGFeatures` built from OUR weights registry (never the lpips package's own
torchvision download). The lpips package feeds [-1, 1] images through its ScalingLayer
(shift/scale buffers), which is exactly torchvision's ImageNet normalisation of [0, 1] images
((2u - 1 - shift) / scale = (u - mean) / std); here images come in [0, 1] and the backbone's own
`Normalization` applies whatever its weight set expects (Caffe BGR 0-255 for `vgg16-hed`).

The module is differentiable w.r.t. its input images (it doubles as the founding paper's
perceptual content loss); for a fixed target, compute `features(y)` once under `no_grad` and
call `distance_to_features(x, feats)` at every step.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stylecore.vgg import VGGFeatures, check_layers

# The five taps of LPIPS-VGG (after the last ReLU of each block) and their channel counts.
LPIPS_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
LPIPS_VERSION = "0.1"


def normalize_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise `feat` (B, C, H, W) over channels, as lpips' `normalize_tensor`.

    `vector_norm` (not `sqrt(sum(x**2))`) so that an all-zero location gets a zero gradient
    instead of NaN (its backward masks norm == 0)."""
    norm: torch.Tensor = torch.linalg.vector_norm(feat, dim=1, keepdim=True)  # (B, 1, H, W)
    return feat / (norm + eps)


def spatial_average(x: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial dims: (B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))


def linear_weights_path(version: str = LPIPS_VERSION) -> Path:
    """Path of the lpips package's shipped VGG linear-layer weights, found without importing the
    package (its import pulls torchvision models and prints nothing we need)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `lpips` package is not installed; `pip install lpips` ships the LPIPS linear weights")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{version}" / "vgg.pth"
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS linear weights not found at {path} (lpips package damaged?); reinstall `lpips`")
    return path


def load_linear_weights(version: str = LPIPS_VERSION) -> list[torch.Tensor]:
    """The five per-channel weights `lin{k}.model.1.weight`, each (1, C_k, 1, 1) float32."""
    path = linear_weights_path(version)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    out = []
    for k, c in enumerate(LPIPS_CHANNELS):
        key = f"lin{k}.model.1.weight"
        if key not in sd or tuple(sd[key].shape) != (1, c, 1, 1):
            raise ValueError(f"{path}: expected '{key}' of shape (1, {c}, 1, 1), got {tuple(sd[key].shape) if key in sd else 'nothing'}")
        out.append(sd[key].detach().float().clone())
    return out


class LPIPS(nn.Module):
    """LPIPS-VGG distance on a frozen `VGGFeatures` backbone. Inputs: (B, 3, H, W) RGB in [0, 1].

    `forward(x, y) -> (B,)`; x and y must have the same H, W (LPIPS compares location by
    location); a batch of 1 broadcasts against a batch of B."""

    def __init__(
        self,
        backbone: VGGFeatures,
        linear_weights: Sequence[torch.Tensor] | None = None,
        layers: Sequence[str] = LPIPS_LAYERS,
        weights_label: str = "unlabelled backbone",
    ):
        super().__init__()
        self.layers = tuple(check_layers(backbone.arch, layers))
        lins = list(linear_weights) if linear_weights is not None else load_linear_weights()
        if len(lins) != len(self.layers):
            raise ValueError(f"{len(lins)} linear weights for {len(self.layers)} layers")
        self.backbone = backbone
        for k, w in enumerate(lins):
            # Constants, not trained here: buffers (never require grad, move with .to()).
            self.register_buffer(f"lin{k}", w.detach().reshape(1, -1, 1, 1).float().clone())  # (1, C_k, 1, 1)
        self.weights_label = weights_label
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # Always eval: LPIPS here is a fixed metric (no dropout, no BN); callers must not flip it.
        return super().train(False)

    def linear(self, k: int) -> torch.Tensor:
        """Per-channel weights of layer k, (1, C_k, 1, 1)."""
        return self.get_buffer(f"lin{k}")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised features at the LPIPS taps, each (B, C_l, H_l, W_l).

        Differentiable w.r.t. `x`; for a fixed target, call under `torch.no_grad()` and reuse."""
        raw = self.backbone(x, self.layers)
        return self.normalized(raw)

    def normalized(self, raw: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Channel-normalise raw backbone outputs keyed by layer name (a pass may tap more)."""
        return [normalize_channels(raw[name]) for name in self.layers]

    def feature_distance(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
        """LPIPS from two lists of normalised features -> (B,)."""
        total = None
        for k, (a, b) in enumerate(zip(fx, fy)):
            if a.shape[-2:] != b.shape[-2:]:
                raise ValueError(
                    f"LPIPS needs equal image sizes; features of {self.layers[k]} are {tuple(a.shape[-2:])} vs {tuple(b.shape[-2:])}"
                )
            diff = (a - b) ** 2  # (B, C_l, H_l, W_l)
            weighted = F.conv2d(diff, self.linear(k))  # (B, 1, H_l, W_l): sum_c w_c * diff_c
            term = spatial_average(weighted)[:, 0]  # (B,)
            total = term if total is None else total + term
        assert total is not None
        return total

    def distance_to_features(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """LPIPS between images `x` (B, 3, H, W) and precomputed `features(y)` -> (B,)."""
        return self.feature_distance(self.features(x), feats)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS(x, y) for images in [0, 1] of equal size -> (B,)."""
        if x.shape[-2:] != y.shape[-2:]:
            raise ValueError(f"LPIPS needs images of equal size, got {tuple(x.shape[-2:])} and {tuple(y.shape[-2:])}")
        return self.feature_distance(self.features(x), self.features(y))


_cache: dict[tuple[str, str], LPIPS] = {}
_lock = threading.Lock()


def load_lpips(spec: str = "vgg16-imagenet", device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS on the VGG-16 weight set `spec` (registry name or state_dict path), cached per
    (spec, device) in this process. Raises the registry's `WeightsError` when unavailable."""
    from stylecore.weights import WEIGHT_SETS, load_vgg  # local: weights is the heavier module

    key = (spec, str(torch.device(device)))
    with _lock:
        if key in _cache:
            return _cache[key]
    backbone, rw = load_vgg(spec, pooling="max", device=device)
    if backbone.arch != "vgg16":
        vgg16_sets = [n for n, ws in WEIGHT_SETS.items() if ws.arch == "vgg16"]
        raise ValueError(f"LPIPS-VGG is calibrated on VGG-16 features; '{spec}' is {backbone.arch}. Use one of: {', '.join(vgg16_sets)}")
    model = LPIPS(backbone, weights_label=rw.label()).to(device)
    with _lock:
        return _cache.setdefault(key, model)
