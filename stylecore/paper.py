"""The founding paper's published numbers (torch-free, so the CLI can show them cheaply)."""

from __future__ import annotations

# Figure 5 of the founding paper: (pair, L2, LPIPS-VGG on ImageNet VGG-16).
PAPER_INTENSITY: tuple[tuple[str, float, float], ...] = (
    ("white-black", 4.0, 0.4538),
    ("white-gray", 1.0, 0.4945),
    ("gray-black", 1.0, 0.5390),
)
# The weight set the paper's LPIPS numbers were measured with.
PAPER_WEIGHTS = "vgg16-imagenet"
