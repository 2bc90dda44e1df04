"""VGG layer names (`conv1_1`, `relu4_2`, `pool3`, ...): torch-free, so params and manifests
can validate layer names without importing torch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from stylecore.registry import Registry

# Convolutions per block; the module order is torchvision's `vgg{16,19}().features`.
ARCHITECTURES: Registry[tuple[int, ...]] = Registry("architecture", {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)})


def layer_names(arch: str) -> list[str]:
    """Names of `features` modules of `arch`, in torchvision's module order."""
    names = []
    for block, n_convs in enumerate(ARCHITECTURES[arch], start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def layer_names_for(weights: str) -> list[str]:
    """Valid layer names for a weight-set spec (VGG-19 names when the architecture is unknown
    until the file is read: they are a superset of VGG-16's)."""
    from stylecore.catalog import arch_of

    return layer_names(arch_of(weights) or "vgg19")


def check_layers(arch: str, layers: Iterable[str]) -> list[str]:
    """Return `layers` as a list, or raise KeyError naming the unknown one and the valid names."""
    valid = layer_names(arch)
    out = list(layers)
    for name in out:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise KeyError(f"unknown {arch} layer '{name}'{hint}; valid: {', '.join(valid)}")
    return out
