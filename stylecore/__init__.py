"""stylecore: Gatys et al. style transfer and LPIPS metrics in pure PyTorch (no Ray, no CLI)."""

__version__ = "0.1.0"
