"""What params may be: the numeric bounds, the error that names a bad param, the shape of JSON
params text (`parse_params_json`), and the image geometry the pooling stages need (torch-free, so validate checks it from image headers and the
worker before any forward pass).

Every image the engine feeds VGG must survive the pooling stages before the deepest layer it taps
(pool k halves the sides k times, and a side of 1 cannot be pooled). `image_side_problems` says,
for a row's images, which are too small at some scale and the smallest size / style_scale that
works; `check_job` is the worker's and engine's form of the same check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stylecore.params import Params


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


# --------------------------------------------------------------------------------------------
# JSON params text


def parse_params_json(text: str | None) -> dict[str, Any]:
    """A JSON params string -> dict (None, blank or `null`: {}). Raises ParamError (field
    "params") for text over MAX_PARAMS_CHARS, nesting deeper than MAX_PARAMS_DEPTH (checked
    before parsing), invalid JSON, or anything but an object."""
    if text is None or str(text).strip() == "":
        return {}
    text = str(text)
    if len(text) > MAX_PARAMS_CHARS:
        raise ParamError(
            "params", f"JSON text is {len(text):,} characters; at most {MAX_PARAMS_CHARS:,} (params are a few scalars and short lists)"
        )
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


# --------------------------------------------------------------------------------------------
# Image geometry


def _check_best_case_sides(p: Params) -> None:
    """Even a square image must survive the pooling stages at the coarsest scale."""
    coarsest = _scale_sides(p)[0]
    need, deepest, pools = _need(p, style=False)
    if coarsest < need:
        field = "size" if len(_scale_sides(p)) == 1 else "coarse_side" if _extra_coarse(p) else "scales"
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
    if len(_scale_sides(p)) == 1:
        return f"use size >= {need} or shallower layers"
    if _extra_coarse(p):
        return f"use coarse_side >= {2 * need} or 0 (no extra coarse scale), or shallower layers"
    if p.scales == 0:
        return "use scales=1 (single scale), a larger size, or shallower layers"
    return f"use fewer scales, size >= {need * 2 ** (p.scales - 1)}, or shallower layers"


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
    return max(need, 2**METRIC_POOLS) if metrics else need


def _fit(hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) scaled to `long_side` on the long side: the engine's `output_size`."""
    h, w = hw
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _scale_sides(p: Params, size: int | None = None) -> list[int]:
    """Long sides of the scales, coarse to fine (the engine's plan, `stylecore.schedule.scale_plan`)."""
    from stylecore.schedule import scale_sides  # local: schedule imports params, which imports this module

    return scale_sides(p.size if size is None else size, p.scales, p.coarse_side)


def _extra_coarse(p: Params) -> bool:
    """Whether `coarse_side` puts an extra first scale before the `scales` ones."""
    from stylecore.schedule import scale_sides

    return len(_scale_sides(p)) > len(scale_sides(p.size, p.scales))


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
    start = max(p.size + 1, math.floor((max(need * 2 ** (p.scales - 1), need_final) - 2**p.scales) * ratio))
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
    need_final = max(need, 2**METRIC_POOLS) if metrics else need
    if _output_ok(p, content_hw, p.size, need, need_final):
        return None
    final = _fit(content_hw, p.size)
    coarsest = _fit(final, _scale_sides(p)[0])
    what = f"a {final[1]}x{final[0]} output"
    if min(coarsest) < need:
        if len(_scale_sides(p)) > 1:
            what += f", {coarsest[1]}x{coarsest[0]} at its coarsest scale,"
        short, why = min(coarsest), f"'{deepest}' comes after {pools} pooling stage(s) and needs {need} px"
    else:
        short, why = min(final), f"the worker's LPIPS metric needs {need_final} px"
    best = _smallest_size(p, content_hw, need, need_final)
    fix = (
        f"use size >= {best}"
        if best is not None
        else f"no size up to {MAX_SIZE} works at this aspect ratio: crop the image or use shallower layers"
    )
    if min(coarsest) < need and _extra_coarse(p):
        fix += f"; or set coarse_side=0 (this {_scale_sides(p)[0]}-px first scale comes from coarse_side {p.coarse_side})"
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
        out.append(
            (
                "style_scale",
                f"{which} is {shw[1]}x{shw[0]} at style side {coarsest_side} px; its short side is below the {need} px "
                f"'{deepest}' needs ({pools} pooling stage(s)); {fix}",
            )
        )
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
