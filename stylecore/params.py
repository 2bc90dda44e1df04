"""Parameters of one style-transfer job: one frozen dataclass, defaults written once.

Every other layer (CLI options, manifest validation, results table) reads the fields and their
defaults from here, so a default changes in exactly one place.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from stylecore.registry import Registry

CONTENT_LOSSES = Registry("content_loss", {"mse": "L2 on VGG features (Gatys)", "lpips": "LPIPS(output, content), the founding paper's perceptual content loss"})
INITS = Registry("init", {"content": "start from the content image", "noise": "start from white noise", "style": "start from the (resized) style image"})
OPTIMIZERS = Registry("optimizer", {"lbfgs": "L-BFGS (the paper's choice)", "adam": "Adam"})
POOLINGS = Registry("pooling", {"max": "max pooling (torchvision)", "avg": "average pooling (Gatys' choice for synthesis)"})

# Learning rate used when `lr` is left unset: L-BFGS takes whole quasi-Newton steps, Adam moves
# pixels in [0, 1] space, so the sensible scales differ by ~50x.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


class ParamError(ValueError):
    """A parameter has an invalid name or value; `field` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"param '{field}': {message}")


@dataclass(frozen=True)
class Params:
    """One job's settings. Losses are scale-normalised (see `stylecore.losses`), so the same
    weights work for every weight set: the feature scale of `vgg16-hed` (Caffe, 0-255 input) and
    of the torchvision ImageNet sets (unit-std input) differ by ~60x, which would otherwise move the
    content/style balance by orders of magnitude."""

    size: int = field(default=512, metadata={"help": "long side of the output in px"})
    iterations: int = field(default=300, metadata={"help": "optimisation steps (at the final scale)"})
    content_weight: float = field(default=1.0, metadata={"help": "alpha: weight of the content loss"})
    style_weight: float = field(default=1e3, metadata={"help": "beta: weight of the (normalised) style loss"})
    tv_weight: float = field(default=0.0, metadata={"help": "weight of the total-variation smoothness loss"})
    content_layers: tuple[str, ...] = field(default=("conv4_2",), metadata={"help": "VGG layers for the content loss"})
    style_layers: tuple[str, ...] = field(
        default=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        metadata={"help": "VGG layers for the style (Gram) loss"},
    )
    style_layer_weights: tuple[float, ...] | None = field(default=None, metadata={"help": "per style layer weights (default: equal, summing to 1)"})
    content_loss: str = field(default="mse", metadata={"help": "content loss: " + CONTENT_LOSSES.describe()})
    init: str = field(default="content", metadata={"help": "initial image: " + INITS.describe()})
    optimizer: str = field(default="lbfgs", metadata={"help": "optimiser: " + OPTIMIZERS.describe()})
    lr: float | None = field(default=None, metadata={"help": f"learning rate (default per optimiser: {DEFAULT_LR})"})
    seed: int = field(default=0, metadata={"help": "random seed (noise init, determinism on CPU)"})
    pooling: str = field(default="max", metadata={"help": "VGG pooling: " + POOLINGS.describe()})
    style_scale: float = field(default=1.0, metadata={"help": "style image size relative to the output size"})
    original_colors: bool = field(default=False, metadata={"help": "keep the content's colours (transfer luminance only)"})
    scales: int = field(default=1, metadata={"help": "coarse-to-fine steps: 1 = single scale, n = sizes size/2^(n-1) .. size"})
    weights: str = field(default="vgg19-imagenet", metadata={"help": "weight set of the style-transfer VGG (name or state_dict path)"})
    lpips_weights: str = field(default="vgg16-imagenet", metadata={"help": "weight set of the LPIPS VGG-16 backbone (name or path)"})
    style_blend: tuple[float, ...] | None = field(default=None, metadata={"help": "weights of several style images (default: equal)"})

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def learning_rate(self) -> float:
        """The effective learning rate (explicit `lr`, else the optimiser's default)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists), stable key order: JSON- and Arrow-friendly."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "Params":
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, base: "Params | None" = None) -> "Params":
        """Build from a mapping; missing or None-valued fields take `base`'s (or the default) value.

        Unknown names raise `ParamError` naming the closest valid field."""
        data = dict(data or {})
        names = param_names()
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"valid names: {', '.join(names)}"
                raise ParamError(key, f"unknown parameter; {hint}")
        values = {k: _coerce(k, v) for k, v in data.items() if v is not None}
        if base is None:
            return cls(**values)
        return dataclasses.replace(base, **values)

    @classmethod
    def from_json(cls, text: str | None) -> "Params":
        if text is None or str(text).strip() == "":
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ParamError("params", f"not valid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(data, dict):
            raise ParamError("params", "JSON must be an object of name: value")
        return cls.from_dict(data)


def param_names() -> list[str]:
    return [f.name for f in fields(Params)]


def param_field(name: str) -> dataclasses.Field:
    for f in fields(Params):
        if f.name == name:
            return f
    close = difflib.get_close_matches(name, param_names(), n=1)
    raise ParamError(name, f"unknown parameter; did you mean '{close[0]}'?" if close else "unknown parameter")


_TUPLE_STR = {"content_layers", "style_layers"}
_TUPLE_FLOAT = {"style_layer_weights", "style_blend"}
_INT = {"size", "iterations", "seed", "scales"}
_FLOAT = {"content_weight", "style_weight", "tv_weight", "lr", "style_scale"}
_BOOL = {"original_colors"}


def _coerce(name: str, value: Any) -> Any:
    """Turn CLI strings, lists and JSON numbers into the field's type, or raise ParamError."""
    if value is None:
        return None
    try:
        if name in _TUPLE_STR:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(s).strip() for s in items if str(s).strip())
        if name in _TUPLE_FLOAT:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(float(s) for s in items if str(s).strip())
        if name in _INT:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if name in _FLOAT:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if name in _BOOL:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        return str(value) if not isinstance(value, str) else value
    except (TypeError, ValueError):
        raise ParamError(name, f"cannot read {value!r} as {_type_name(name)}") from None


def _type_name(name: str) -> str:
    if name in _TUPLE_STR:
        return "a list of layer names"
    if name in _TUPLE_FLOAT:
        return "a list of numbers"
    if name in _INT:
        return "an integer"
    if name in _FLOAT:
        return "a number"
    if name in _BOOL:
        return "true/false"
    return "a string"


def _validate(p: Params) -> None:
    # Local import keeps `import stylecore.params` cheap; layers and the catalogue are torch-free.
    from stylecore.layers import layer_names_for

    for name in _INT | _FLOAT:
        v = getattr(p, name)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
            raise ParamError(name, f"must be a finite number, got {v!r}")
    if not 16 <= p.size <= 8192:
        raise ParamError("size", f"must be between 16 and 8192 px, got {p.size}")
    if p.iterations < 0:
        raise ParamError("iterations", f"must be >= 0, got {p.iterations}")
    for name in ("content_weight", "style_weight", "tv_weight"):
        if getattr(p, name) < 0:
            raise ParamError(name, f"must be >= 0, got {getattr(p, name)}")
    if p.lr is not None and p.lr <= 0:
        raise ParamError("lr", f"must be > 0, got {p.lr}")
    if not 0.05 <= p.style_scale <= 8:
        raise ParamError("style_scale", f"must be between 0.05 and 8, got {p.style_scale}")
    if not 1 <= p.scales <= 6:
        raise ParamError("scales", f"must be between 1 and 6, got {p.scales}")
    if p.size / 2 ** (p.scales - 1) < 16:
        raise ParamError("scales", f"{p.scales} scales make the coarsest size below 16 px at size {p.size}")
    for reg, name in ((CONTENT_LOSSES, "content_loss"), (INITS, "init"), (OPTIMIZERS, "optimizer"), (POOLINGS, "pooling")):
        try:
            reg.check(getattr(p, name))
        except KeyError as e:
            raise ParamError(name, str(e.args[0])) from None
    if not isinstance(p.original_colors, bool):
        raise ParamError("original_colors", "must be true or false")
    valid = layer_names_for(p.weights)
    for name in ("content_layers", "style_layers"):
        layers = getattr(p, name)
        if name == "style_layers" and not layers:
            raise ParamError(name, "needs at least one layer")
        for layer in layers:
            if layer not in valid:
                close = difflib.get_close_matches(layer, valid, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(valid)}"
                raise ParamError(name, f"unknown layer '{layer}' for weights '{p.weights}'; {hint}")
        if len(set(layers)) != len(layers):
            raise ParamError(name, f"lists a layer twice: {list(layers)}")
    if p.content_loss == "mse" and p.content_weight > 0 and not p.content_layers:
        raise ParamError("content_layers", "needs at least one layer when content_weight > 0 and content_loss is mse")
    for name, n in (("style_layer_weights", len(p.style_layers)),):
        w = getattr(p, name)
        if w is not None:
            if len(w) != n:
                raise ParamError(name, f"has {len(w)} values for {n} style layers")
            if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
                raise ParamError(name, "values must be finite, >= 0, and not all 0")
    if p.style_blend is not None:
        if any(x < 0 or not math.isfinite(x) for x in p.style_blend) or sum(p.style_blend) <= 0:
            raise ParamError("style_blend", "values must be finite, >= 0, and not all 0")
    for name in ("weights", "lpips_weights"):
        if not getattr(p, name):
            raise ParamError(name, "must name a weight set or a file")
