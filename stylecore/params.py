"""Parameters of one style-transfer job: one frozen dataclass, the only place a field's name,
type, default, bounds and help text are written.

Every other layer reads them from here: coercion (`_coerce`, from the annotations via
`field_kinds`), the manifest's and the results' Arrow params structs, the `stylize` options,
`manifest build --param/--sweep` parsing and `manifest show`. Simple bounds live in each field's
metadata (`min`, `max`, `gt`, `choices`, with `unit`/`format` for the message) and are checked by
one loop; cross-field rules and the image geometry stay in `_validate` and `stylecore.bounds`.
A new field is one line here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from stylecore.bounds import (  # noqa: F401 - re-exported: the bounds and geometry were written here first
    MAX_ITERATIONS,
    MAX_LIST_ITEMS,
    MAX_PARAMS_CHARS,
    MAX_PARAMS_DEPTH,
    MAX_PARAMS_KEYS,
    MAX_SIZE,
    MAX_STYLE_SIDE,
    MAX_STYLES,
    METRIC_POOLS,
    MIN_SIZE,
    ParamError,
    _check_best_case_sides,
    _fit,
    _fix_hint,
    _json_depth,
    _need,
    _output_ok,
    _output_problem,
    _scale_sides,
    _smallest_size,
    _smallest_style_scale,
    _style_side,
    check_job,
    image_side_problems,
    min_short_side,
    parse_params_json,
    pools_before,
)
from stylecore.fieldkinds import (
    _ELEMENTS,
    FieldKind,
    _bool_problem,
    _bounds_problem,
    _choice_problem,
    _finite_problem,
    coerce,
)
from stylecore.registry import Registry

__all__ = [
    "CONTENT_LOSSES",
    "DEFAULT_LR",
    "INITS",
    "OPTIMIZERS",
    "POOLINGS",
    "STYLE_LOSSES",
    "Params",
    "field_kinds",
    "param_field",
    "param_names",
    # re-exported from stylecore.bounds and stylecore.fieldkinds (they were written here first)
    "MAX_ITERATIONS",
    "MAX_LIST_ITEMS",
    "MAX_PARAMS_CHARS",
    "MAX_PARAMS_DEPTH",
    "MAX_PARAMS_KEYS",
    "MAX_SIZE",
    "MAX_STYLES",
    "MAX_STYLE_SIDE",
    "METRIC_POOLS",
    "MIN_SIZE",
    "FieldKind",
    "ParamError",
    "check_job",
    "coerce",
    "image_side_problems",
    "min_short_side",
    "parse_params_json",
    "pools_before",
]

CONTENT_LOSSES = Registry(
    "content_loss", {"mse": "L2 on VGG features (Gatys)", "lpips": "LPIPS(output, content), the founding paper's perceptual content loss"}
)
INITS = Registry(
    "init",
    {
        "content": "start from the content image",
        "color_matched": "start from the content image recoloured to the style's mean and covariance of RGB (Gatys et al. 2017)",
        "noise": "start from white noise",
        "style": "start from the (resized) style image",
    },
)
OPTIMIZERS = Registry("optimizer", {"lbfgs": "L-BFGS (the paper's choice)", "adam": "Adam"})
STYLE_LOSSES = Registry(
    "style_loss",
    {
        "gram": "Gram matrices (Gatys)",
        "mean_std": "channel means and standard deviations",
        "w2": "Wasserstein-2 between Gaussian fits (means and covariances)",
        "sliced_w": "sliced Wasserstein over random projections (Heitz et al. 2021)",
    },
)
POOLINGS = Registry("pooling", {"max": "max pooling (torchvision)", "avg": "average pooling (Gatys' choice for synthesis)"})

# Learning rate used when `lr` is left unset: L-BFGS takes whole quasi-Newton steps, Adam moves
# pixels in [0, 1] space, so the sensible scales differ by ~50x.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
# The smallest `coarse_side` other than 0: a print-size row's first scale is never a thumbnail.
MIN_COARSE_SIDE = 64


@dataclass(frozen=True)
class Params:
    """One job's settings. Losses are scale-normalised (see `stylecore.losses`), so the same
    weights work for every weight set: the feature scale of `vgg16-hed` (Caffe, 0-255 input) and
    of the torchvision ImageNet sets (unit-std input) differ by ~60x, which would otherwise move the
    content/style balance by orders of magnitude."""

    size: int = field(default=512, metadata={"help": "long side of the output in px", "min": MIN_SIZE, "max": MAX_SIZE, "unit": "px"})
    iterations: int = field(
        default=400,
        metadata={
            "help": "optimisation steps (a cap when tol > 0): at each scale when scales >= 1; with scales=0 the row's total "
            "over the pyramid, each scale getting twice the steps of the next finer one (stylecore.schedule.scale_plan)",
            "min": 0,
            "max": MAX_ITERATIONS,
            "unit": "(steps per scale; scales=0: in all)",
            "format": ",",
        },
    )
    content_weight: float = field(default=1.0, metadata={"help": "alpha: weight of the content loss", "min": 0})
    style_weight: float = field(default=1e3, metadata={"help": "beta: weight of the (normalised) style loss", "min": 0})
    tv_weight: float = field(default=0.0, metadata={"help": "weight of the total-variation smoothness loss", "min": 0})
    content_layers: tuple[str, ...] = field(
        default=("conv4_2",), metadata={"help": "VGG layers for the content loss", "items": "layer names"}
    )
    style_layers: tuple[str, ...] = field(
        default=("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        metadata={"help": "VGG layers for the style (Gram) loss", "items": "layer names"},
    )
    style_layer_weights: tuple[float, ...] | None = field(
        default=None, metadata={"help": "per style layer weights (default: equal, summing to 1)"}
    )
    content_loss: str = field(default="mse", metadata={"help": "content loss: " + CONTENT_LOSSES.describe(), "choices": CONTENT_LOSSES})
    init: str = field(default="content", metadata={"help": "initial image: " + INITS.describe(), "choices": INITS})
    optimizer: str = field(default="lbfgs", metadata={"help": "optimiser: " + OPTIMIZERS.describe(), "choices": OPTIMIZERS})
    lr: float | None = field(default=None, metadata={"help": f"learning rate (default per optimiser: {DEFAULT_LR})", "gt": 0})
    seed: int = field(default=0, metadata={"help": "random seed (noise init, determinism on CPU)"})
    pooling: str = field(default="max", metadata={"help": "VGG pooling: " + POOLINGS.describe(), "choices": POOLINGS})
    style_scale: float = field(default=1.0, metadata={"help": "style image size relative to the output size", "min": 0.05, "max": 8})
    original_colors: bool = field(default=False, metadata={"help": "keep the content's colours (transfer luminance only)"})
    scales: int = field(
        default=1,
        metadata={
            "help": "coarse-to-fine scales: 1 = single scale, n = sizes size/2^(n-1) .. size, 0 = auto pyramid from <= 128 px "
            "up to size in steps of ~sqrt(2) (at most 4 scales; single scale below 128 px; see iterations); see coarse_side",
            "min": 0,
            "max": 6,
        },
    )
    coarse_side: int = field(
        default=1024,
        metadata={
            "help": "print sizes: a row whose coarsest scale is longer than this starts with one more scale at size/2^k <= it "
            "(Gatys et al. 2017: style strokes at high resolution come from a coarse pass); 0 = never",
            "min": 0,
            "max": MAX_SIZE,
            "unit": "px",
        },
    )
    weights: str = field(default="vgg19-imagenet", metadata={"help": "weight set of the style-transfer VGG (name or state_dict path)"})
    lpips_weights: str = field(default="vgg16-imagenet", metadata={"help": "weight set of the LPIPS VGG-16 backbone (name or path)"})
    style_blend: tuple[float, ...] | None = field(default=None, metadata={"help": "weights of several style images (default: equal)"})
    style_loss: str = field(default="gram", metadata={"help": "style loss: " + STYLE_LOSSES.describe(), "choices": STYLE_LOSSES})
    histogram_weight: float = field(
        default=0.0,
        metadata={"help": "weight of a histogram-matching term added to the style loss (Risser et al. 2017); 0 = off", "min": 0},
    )
    tol: float = field(
        default=0.0,
        metadata={
            "help": "stop a row (at each scale) when the best loss of its last 10 steps improves on the best of the 10 before by no more than this, relatively; 0 = run every iteration",
            "min": 0,
        },
    )
    ema: float = field(
        default=0.0,
        metadata={"help": "Adam: decay of an exponential moving average of the iterates (e.g. 0.9); 0 = off", "min": 0, "max": 0.9999},
    )
    tile_size: int | None = field(
        default=None,
        metadata={"help": "tile side in px at the final scale; 0 = never tile; unset = from the memory budget", "min": 0, "unit": "px"},
    )
    snapshot_every: int = field(
        default=0, metadata={"help": "write an intermediate image every N steps next to the output; 0 = none", "min": 0}
    )

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

    def replace(self, **changes: Any) -> Params:
        kinds = field_kinds(type(self))
        return dataclasses.replace(self, **{k: _coerce(k, v, kinds) for k, v in changes.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, base: Params | None = None) -> Params:
        """Build from a mapping; missing or None-valued fields take `base`'s (or the default) value.

        Unknown names raise `ParamError` naming the closest valid field."""
        data = dict(data or {})
        names = param_names(cls)
        if len(data) > MAX_PARAMS_KEYS:
            raise ParamError("params", f"has {len(data)} keys; Params has {len(names)} fields (at most {MAX_PARAMS_KEYS} keys are read)")
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"valid names: {', '.join(names)}"
                raise ParamError(key, f"unknown parameter; {hint}")
        kinds = field_kinds(cls)
        values = {k: _coerce(k, v, kinds) for k, v in data.items() if v is not None}
        if base is None:
            return cls(**values)
        return dataclasses.replace(base, **values)

    @classmethod
    def from_json(cls, text: str | None) -> Params:
        """Build from a JSON object of name: value (None or blank: the defaults); the text is
        checked against the size and nesting bounds first (`parse_params_json`)."""
        return cls.from_dict(parse_params_json(text))


# --------------------------------------------------------------------------------------------
# Field kinds: what each field holds, read from the annotations


@functools.cache
def _kinds(cls: type) -> dict[str, FieldKind]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        inner = next(a for a in args if a is not type(None)) if optional else hint
        is_list = typing.get_origin(inner) is tuple
        elem = typing.get_args(inner)[0] if is_list else inner
        if elem not in _ELEMENTS or (is_list and typing.get_args(inner)[1:] != (Ellipsis,)):
            raise TypeError(
                f"{cls.__name__}.{f.name}: annotation {hint} is not supported; use int, float, bool, str, "
                "tuple[X, ...] of one of them, or either with `| None`"
            )
        out[f.name] = FieldKind(f.name, elem, is_list, optional, f)
    return out


def _coerce(name: str, value: Any, kinds: Mapping[str, FieldKind] | None = None) -> Any:
    """Turn CLI strings, lists and JSON numbers into the field's type, or raise ParamError."""
    return coerce(name, value, field_kinds() if kinds is None else kinds)


def field_kinds(cls: type | None = None) -> dict[str, FieldKind]:
    """name -> FieldKind for every field of `cls` (default `Params`; a subclass or copy with
    more fields works too), in field order. Raises TypeError for an annotation no consumer
    can handle, naming the field."""
    return _kinds(Params if cls is None else cls)


def param_names(cls: type | None = None) -> list[str]:
    return [f.name for f in fields(Params if cls is None else cls)]


def param_field(name: str, cls: type | None = None) -> dataclasses.Field[Any]:
    for f in fields(Params if cls is None else cls):
        if f.name == name:
            return f
    close = difflib.get_close_matches(name, param_names(cls), n=1)
    raise ParamError(name, f"unknown parameter; did you mean '{close[0]}'?" if close else "unknown parameter")


# --------------------------------------------------------------------------------------------
# Coercion and validation


def _check_fields(p: Params, *checks: Callable[[FieldKind, Any], str | None]) -> None:
    """Run each per-field check over every field (in field order), raising the first problem."""
    kinds = field_kinds(type(p))
    for check in checks:
        for name, kind in kinds.items():
            why = check(kind, getattr(p, name))
            if why:
                raise ParamError(name, why)


def _validate(p: Params) -> None:
    # Local import keeps `import stylecore.params` cheap; layers and the catalogue are torch-free.
    from stylecore.layers import layer_names_for

    _check_fields(p, _finite_problem, _bounds_problem)
    if round(p.size * p.style_scale) > MAX_STYLE_SIDE:
        largest = math.floor(MAX_STYLE_SIDE / p.size * 100) / 100
        raise ParamError(
            "style_scale",
            f"size {p.size} x style_scale {p.style_scale:g} asks for a {round(p.size * p.style_scale):,}-px style image; the "
            f"style image's long side is limited to {MAX_STYLE_SIDE} px: at size {p.size} use style_scale <= {largest:g}",
        )
    if 0 < p.coarse_side < MIN_COARSE_SIDE:
        raise ParamError("coarse_side", f"{p.coarse_side} px is below {MIN_COARSE_SIDE} px: use 0 (never) or at least {MIN_COARSE_SIDE}")
    if p.size / 2 ** (p.scales - 1) < 16:
        raise ParamError("scales", f"{p.scales} scales make the coarsest size below 16 px at size {p.size}")
    _check_fields(p, _choice_problem, _bool_problem)
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
        if len(p.style_blend) > MAX_STYLES:
            raise ParamError("style_blend", f"has {len(p.style_blend)} weights; a blend takes at most {MAX_STYLES} styles")
        if any(x < 0 or not math.isfinite(x) for x in p.style_blend) or sum(p.style_blend) <= 0:
            raise ParamError("style_blend", "values must be finite, >= 0, and not all 0")
    for name in ("weights", "lpips_weights"):
        if not getattr(p, name):
            raise ParamError(name, "must name a weight set or a file")
    _check_best_case_sides(p)
