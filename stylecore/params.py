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
from typing import Any, Mapping, Sequence

from stylecore.registry import Registry

CONTENT_LOSSES = Registry("content_loss", {"mse": "L2 on VGG features (Gatys)", "lpips": "LPIPS(output, content), the founding paper's perceptual content loss"})
INITS = Registry("init", {"content": "start from the content image", "noise": "start from white noise", "style": "start from the (resized) style image"})
OPTIMIZERS = Registry("optimizer", {"lbfgs": "L-BFGS (the paper's choice)", "adam": "Adam"})
POOLINGS = Registry("pooling", {"max": "max pooling (torchvision)", "avg": "average pooling (Gatys' choice for synthesis)"})

# Learning rate used when `lr` is left unset: L-BFGS takes whole quasi-Newton steps, Adam moves
# pixels in [0, 1] space, so the sensible scales differ by ~50x.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}

# ---- Bounds (checked by `Params` itself, so validate and the worker refuse the same things).
# Long side of the output, px.
MIN_SIZE, MAX_SIZE = 16, 8192
# Optimisation steps per scale. Gatys et al. converge in a few hundred L-BFGS steps and the
# paper's longest runs use ~1000; 100x that is ~30 min per row at 512 px on a GPU (hours on a
# CPU), so anything larger is a typo (1e9 steps at 20 ms each would run for 230 days).
MAX_ITERATIONS = 100_000
# Long side of the style image, px (size x style_scale): the same cap as the output's long side.
# A 8192-px RGB image is already 0.8 GB in float32 and its conv1 activations 17 GB; 8192 x 8
# would ask for a 65,536-px image (64x the pixels).
MAX_STYLE_SIDE = MAX_SIZE
# Style images in one blend: each costs a decode and a VGG pass per row, and Grams averaged over
# many styles wash out; published blends use 2-4.
MAX_STYLES = 16
# JSON params: an object of scalars and flat lists, so 2 levels deep; deeper text is refused
# before parsing (no recursion bombs). The full Params JSON is ~700 characters and 21 keys.
MAX_PARAMS_DEPTH = 4
MAX_PARAMS_CHARS = 65_536
MAX_PARAMS_KEYS = 64
# Items in a list param: VGG-19 has 37 named layers, and style_blend at most MAX_STYLES weights.
MAX_LIST_ITEMS = 64
# Pooling stages before the deepest layer the worker's metrics tap (LPIPS relu5_3, Gram conv5_1):
# every output must survive 4 poolings, so its short side needs 2^4 px.
METRIC_POOLS = 4


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
        if len(data) > MAX_PARAMS_KEYS:
            raise ParamError("params", f"has {len(data)} keys; Params has {len(param_names())} fields (at most {MAX_PARAMS_KEYS} keys are read)")
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
        """Build from a JSON object of name: value (None or blank: the defaults); the text is
        checked against the size and nesting bounds first (`parse_params_json`)."""
        return cls.from_dict(parse_params_json(text))


def parse_params_json(text: str | None) -> dict[str, Any]:
    """A JSON params string -> dict (None, blank or `null`: {}). Raises ParamError (field
    "params") for text over MAX_PARAMS_CHARS, nesting deeper than MAX_PARAMS_DEPTH (checked
    before parsing), invalid JSON, or anything but an object."""
    if text is None or str(text).strip() == "":
        return {}
    text = str(text)
    if len(text) > MAX_PARAMS_CHARS:
        raise ParamError("params", f"JSON text is {len(text):,} characters; at most {MAX_PARAMS_CHARS:,} (params are a few scalars and short lists)")
    depth = _json_depth(text)
    if depth > MAX_PARAMS_DEPTH:
        raise ParamError(
            "params",
            f"JSON is nested {depth} levels deep; at most {MAX_PARAMS_DEPTH}: write an object of name: value where each "
            'value is a number, string, true/false or a flat list, e.g. {"size": 256, "style_layers": ["conv1_1"]}',
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParamError("params", f'not valid JSON ({e.msg} at char {e.pos}); write an object like {{"size": 256}}') from None
    except RecursionError:  # unreachable after the depth check; kept as a guard
        raise ParamError("params", f"JSON is nested too deeply; at most {MAX_PARAMS_DEPTH} levels") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamError("params", 'JSON must be an object of name: value, e.g. {"size": 256}')
    return data


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { in JSON text (brackets inside strings ignored); linear, no parse."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


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
    if isinstance(value, (list, tuple)):
        if name not in _TUPLE_STR | _TUPLE_FLOAT:
            raise ParamError(name, f"takes a single value, not a list ({_type_name(name)})")
        if any(isinstance(x, (list, tuple, dict)) for x in value):
            raise ParamError(name, f"must be a flat list ({_type_name(name)}), not a nested one")
    elif isinstance(value, dict):
        raise ParamError(name, f"must be {_type_name(name)}, not an object")
    too_long = 0
    try:
        if name in _TUPLE_STR | _TUPLE_FLOAT:
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) > MAX_LIST_ITEMS:
                too_long = len(items)
                raise ValueError
            if name in _TUPLE_STR:
                return tuple(str(s).strip() for s in items if str(s).strip())
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
        if too_long:
            raise ParamError(name, f"lists {too_long} items; at most {MAX_LIST_ITEMS}") from None
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ParamError(name, f"cannot read {shown} as {_type_name(name)}") from None


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
    if not MIN_SIZE <= p.size <= MAX_SIZE:
        raise ParamError("size", f"must be between {MIN_SIZE} and {MAX_SIZE} px, got {p.size}")
    if not 0 <= p.iterations <= MAX_ITERATIONS:
        raise ParamError("iterations", f"must be between 0 and {MAX_ITERATIONS:,} (steps per scale), got {p.iterations:,}")
    for name in ("content_weight", "style_weight", "tv_weight"):
        if getattr(p, name) < 0:
            raise ParamError(name, f"must be >= 0, got {getattr(p, name)}")
    if p.lr is not None and p.lr <= 0:
        raise ParamError("lr", f"must be > 0, got {p.lr}")
    if not 0.05 <= p.style_scale <= 8:
        raise ParamError("style_scale", f"must be between 0.05 and 8, got {p.style_scale}")
    if round(p.size * p.style_scale) > MAX_STYLE_SIDE:
        largest = math.floor(MAX_STYLE_SIDE / p.size * 100) / 100
        raise ParamError(
            "style_scale",
            f"size {p.size} x style_scale {p.style_scale:g} asks for a {round(p.size * p.style_scale):,}-px style image; the "
            f"style image's long side is limited to {MAX_STYLE_SIDE} px: at size {p.size} use style_scale <= {largest:g}",
        )
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
        if len(p.style_blend) > MAX_STYLES:
            raise ParamError("style_blend", f"has {len(p.style_blend)} weights; a blend takes at most {MAX_STYLES} styles")
        if any(x < 0 or not math.isfinite(x) for x in p.style_blend) or sum(p.style_blend) <= 0:
            raise ParamError("style_blend", "values must be finite, >= 0, and not all 0")
    for name in ("weights", "lpips_weights"):
        if not getattr(p, name):
            raise ParamError(name, "must name a weight set or a file")
    _check_best_case_sides(p)


def _check_best_case_sides(p: Params) -> None:
    """Even a square image must survive the pooling stages at the coarsest scale."""
    coarsest = _scale_sides(p)[0]
    need, deepest, pools = _need(p, style=False)
    if coarsest < need:
        field = "size" if p.scales == 1 else "scales"
        raise ParamError(
            field,
            f"the coarsest scale is {coarsest} px but '{deepest}' comes after {pools} pooling stages and needs "
            f"images of at least {need} px; {_fix_hint(p, need)}",
        )
    style_side = _style_side(coarsest, p.style_scale)
    need, deepest, pools = _need(p, style=True)
    if style_side < need:
        raise ParamError(
            "style_scale",
            f"the style image is {style_side} px at the coarsest scale but '{deepest}' comes after {pools} pooling "
            f"stages and needs at least {need} px; raise style_scale or size",
        )


def _fix_hint(p: Params, need: int) -> str:
    if p.scales == 1:
        return f"use size >= {need} or shallower layers"
    return f"use fewer scales, size >= {need * 2 ** (p.scales - 1)}, or shallower layers"


# --------------------------------------------------------------------------------------------
# Image geometry: every image the engine feeds VGG must survive the pooling stages before the
# deepest layer it taps (pool k halves the sides k times, and a side of 1 cannot be pooled).
# Torch-free, so validate checks it from image headers and the worker before any forward pass.


def pools_before(layer: str, weights: str = "vgg19-imagenet") -> int:
    """Pooling stages an image passes through up to and including `layer` (conv4_2: 3, pool5: 5)."""
    from stylecore.layers import layer_names_for

    names = layer_names_for(weights)
    return sum(1 for n in names[: names.index(layer) + 1] if n.startswith("pool"))


def _need(p: Params, *, style: bool) -> tuple[int, str, int]:
    """(min short side px, deepest layer, its pool count) for the output (style=False: style,
    content and LPIPS-content layers) or for the style image (style=True: style layers)."""
    layers = list(p.style_layers)
    if not style and p.content_loss == "mse":
        layers += list(p.content_layers)
    best = max(((pools_before(n, p.weights), n) for n in layers), default=(0, "-"))
    if not style and p.content_loss == "lpips" and METRIC_POOLS > best[0]:
        best = (METRIC_POOLS, "relu5_3 (LPIPS content loss)")
    return 2 ** best[0], best[1], best[0]


def min_short_side(params: Params, *, metrics: bool = False) -> int:
    """The smallest short side (px) the output may have at every scale: 2^(pooling stages before
    the deepest layer the losses tap); with `metrics`, also what the worker's LPIPS/Gram metrics
    need (2^METRIC_POOLS = 16 px)."""
    need = _need(params, style=False)[0]
    return max(need, 2 ** METRIC_POOLS) if metrics else need


def _fit(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) scaled to `long_side` on the long side: the engine's `output_size`."""
    h, w = hw
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _scale_sides(p: Params, size: int | None = None) -> list[int]:
    """Long sides of the scales, coarse to fine (the engine's `scale_sizes`)."""
    size = p.size if size is None else size
    return [max(MIN_SIZE, round(size / 2 ** (p.scales - 1 - i))) for i in range(p.scales)]


def _style_side(long_side: int, style_scale: float) -> int:
    return max(MIN_SIZE, round(long_side * style_scale))


def _output_ok(p: Params, content_hw: tuple[int, int], size: int, need: int, need_final: int) -> bool:
    final = _fit(content_hw, size)
    coarsest = _fit(final, _scale_sides(p, size)[0])
    return min(coarsest) >= need and min(final) >= need_final


def _smallest_size(p: Params, content_hw: tuple[int, int], need: int, need_final: int) -> int | None:
    h, w = content_hw
    ratio = max(h, w) / min(h, w)
    # A lower bound on the answer (rounding moves each side by < 1 px per resize), then scan up.
    start = max(p.size + 1, math.floor((max(need * 2 ** (p.scales - 1), need_final) - 2 ** p.scales) * ratio))
    for size in range(min(start, MAX_SIZE + 1), MAX_SIZE + 1):
        if _output_ok(p, content_hw, size, need, need_final):
            return size
    return None


def _smallest_style_scale(p: Params, style_hw: tuple[int, int], need: int) -> float | None:
    h, w = style_hw
    coarsest = _scale_sides(p)[0]
    side = max(need, math.floor((need - 1) * max(h, w) / min(h, w)))  # a lower bound, then scan up
    while side <= MAX_STYLE_SIDE and min(_fit(style_hw, side)) < need:
        side += 1
    scale = max(0.05, math.floor((side - 1) / coarsest * 100) / 100)
    while _style_side(coarsest, scale) < side:  # the smallest 2-decimal scale reaching `side`
        scale = round(scale + 0.01, 2)
    if scale > 8 or round(p.size * scale) > MAX_STYLE_SIDE:
        return None
    return scale


def _output_problem(p: Params, content_hw: tuple[int, int], metrics: bool) -> str | None:
    need, deepest, pools = _need(p, style=False)
    need_final = max(need, 2 ** METRIC_POOLS) if metrics else need
    if _output_ok(p, content_hw, p.size, need, need_final):
        return None
    final = _fit(content_hw, p.size)
    coarsest = _fit(final, _scale_sides(p)[0])
    what = f"a {final[1]}x{final[0]} output"
    if min(coarsest) < need:
        if p.scales > 1:
            what += f", {coarsest[1]}x{coarsest[0]} at its coarsest scale,"
        short, why = min(coarsest), f"'{deepest}' comes after {pools} pooling stage(s) and needs {need} px"
    else:
        short, why = min(final), f"the worker's LPIPS metric needs {need_final} px"
    best = _smallest_size(p, content_hw, need, need_final)
    fix = f"use size >= {best}" if best is not None else f"no size up to {MAX_SIZE} works at this aspect ratio: crop the image or use shallower layers"
    return f"at size {p.size} the {content_hw[1]}x{content_hw[0]} content image gives {what} whose short side is {short} px; {why}; {fix}"


def image_side_problems(
    params: Params,
    content_hw: tuple[int, int] | None,
    style_hws: Sequence[tuple[int, int]] = (),
    *,
    metrics: bool = False,
) -> list[tuple[str, str]]:
    """(field, message) for each image too small, at some scale, for the pooling stages before
    the deepest layer used: the output (from the content's (H, W) at `size`, every scale) and each
    style image (at `size x style_scale`). `metrics`: the output must also suit the worker's LPIPS
    and Gram metrics (16 px). Messages name the sizes and the smallest workable size/style_scale."""
    out: list[tuple[str, str]] = []
    p = params
    if content_hw is not None:
        problem = _output_problem(p, content_hw, metrics)
        if problem:
            out.append(("size", problem))
    need, deepest, pools = _need(p, style=True)
    coarsest_side = _style_side(_scale_sides(p)[0], p.style_scale)
    for k, hw in enumerate(style_hws):
        shw = _fit(hw, coarsest_side)
        if min(shw) >= need:
            continue
        best = _smallest_style_scale(p, hw, need)
        fix = f"use style_scale >= {best:g}" if best is not None else "crop the style image"
        which = f"style image {k + 1} ({hw[1]}x{hw[0]})" if len(style_hws) > 1 else f"the {hw[1]}x{hw[0]} style image"
        out.append((
            "style_scale",
            f"{which} is {shw[1]}x{shw[0]} at style side {coarsest_side} px; its short side is below the {need} px "
            f"'{deepest}' needs ({pools} pooling stage(s)); {fix}",
        ))
    return out


def check_job(params: Params, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]], *, metrics: bool = False) -> None:
    """Worker/engine check of one row's images against the bounds: at most MAX_STYLES styles, and
    every image large enough for the pooling stages (see `image_side_problems`). Sizes are (H, W)
    of the images as given to the engine. Raises ParamError naming the size and the minimum."""
    if len(style_hws) > MAX_STYLES:
        raise ParamError("style", f"{len(style_hws)} style images in one blend; at most {MAX_STYLES}")
    problems = image_side_problems(params, content_hw, style_hws, metrics=metrics)
    if problems:
        raise ParamError(*problems[0])
