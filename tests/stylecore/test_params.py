"""`Params` bounds (iterations, style-image pixel budget, styles per blend, JSON shape) and the
image geometry the pooling stages need, from params alone and in the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch

from stylecore import params as P
from stylecore.params import ParamError, Params, check_job, image_side_problems, min_short_side, parse_params_json, pools_before


def _field(fn, *args, **kwargs) -> ParamError:
    with pytest.raises(ParamError) as e:
        fn(*args, **kwargs)
    return e.value


# ------------------------------------------------------------------------------------ bounds


def test_iterations_are_capped():
    assert Params(iterations=P.MAX_ITERATIONS).iterations == 100_000
    e = _field(Params.from_dict, {"iterations": 1e9})
    assert e.field == "iterations" and "100,000" in str(e) and "1,000,000,000" in str(e)


def test_style_image_pixel_budget_names_the_largest_style_scale():
    assert Params(size=1024, style_scale=8).style_scale == 8  # 8192 px: at the limit
    e = _field(Params, size=8192, style_scale=8)
    assert e.field == "style_scale"
    assert "65,536-px style image" in str(e) and "at size 8192 use style_scale <= 1" in str(e)
    e = _field(Params, size=3000, style_scale=3)
    assert "at size 3000 use style_scale <= 2.73" in str(e)
    assert Params(size=3000, style_scale=2.73).style_scale == 2.73  # the suggested value passes


def test_blend_weights_are_capped_at_max_styles():
    Params(style_blend=(1.0,) * P.MAX_STYLES)
    e = _field(Params, style_blend=(1.0,) * (P.MAX_STYLES + 1))
    assert e.field == "style_blend" and "at most 16" in str(e)


def test_json_params_nesting_size_and_keys_are_bounded():
    assert parse_params_json('{"size": 256, "style_layers": ["conv1_1"]}') == {"size": 256, "style_layers": ["conv1_1"]}
    assert parse_params_json(None) == {} and parse_params_json("  ") == {} and parse_params_json("null") == {}
    deep = '{"size": ' + "[" * 50 + "]" * 50 + "}"
    e = _field(parse_params_json, deep)
    assert e.field == "params" and "nested 51 levels deep; at most 4" in str(e)
    bomb = "[" * 100_000 + "]" * 100_000  # would be a RecursionError in json.loads
    assert "characters; at most 65,536" in str(_field(parse_params_json, bomb))
    assert "nested" in str(_field(parse_params_json, "[" * 1000 + "]" * 1000))
    # Brackets inside strings are not nesting.
    assert parse_params_json(json.dumps({"weights": "[[[[[[x]]]]]]"})) == {"weights": "[[[[[[x]]]]]]"}
    many = json.dumps({f"k{i}": i for i in range(1000)})
    e = _field(Params.from_json, many)
    assert e.field == "params" and "1000 keys" in str(e)
    assert "not valid JSON" in str(_field(parse_params_json, "{size: 1}"))
    assert "must be an object" in str(_field(parse_params_json, "[1, 2]"))


def test_param_values_are_scalars_or_flat_lists():
    assert _field(Params.from_json, '{"size": [256]}').field == "size"
    assert "not an object" in str(_field(Params.from_json, '{"weights": {"a": 1}}'))
    e = _field(Params.from_json, '{"style_layers": [["conv1_1"]]}')
    assert e.field == "style_layers" and "flat list" in str(e)
    e = _field(Params.from_dict, {"style_blend": [1.0] * 65})
    assert e.field == "style_blend" and "at most 64" in str(e)
    assert _field(Params.from_dict, {"style_layers": ",".join(["conv1_1"] * 65)}).field == "style_layers"


def test_from_json_round_trip_still_works():
    p = Params(size=300, style_layers=("conv1_1", "pool3"), style_blend=(1, 2))
    assert Params.from_json(p.to_json()) == p


# ---------------------------------------------------------------------------------- geometry


def test_pools_before_counts_the_pooling_stages_up_to_a_layer():
    assert [pools_before(n) for n in ("conv1_1", "pool1", "conv2_1", "conv4_2", "conv5_1", "relu5_4", "pool5")] == [0, 1, 1, 3, 4, 4, 5]
    assert pools_before("relu5_3", "vgg16-hed") == 4


def test_metric_pools_match_the_lpips_layers():
    from stylecore.lpips import LPIPS_LAYERS
    from stylecore.metrics import DEFAULT_GRAM_LAYERS

    deepest = max(pools_before(n, "vgg16-hed") for n in (*LPIPS_LAYERS, *DEFAULT_GRAM_LAYERS))
    assert P.METRIC_POOLS == deepest == 4


def test_min_short_side_follows_the_deepest_layer_used():
    assert min_short_side(Params()) == 16  # conv5_1 (style), conv4_2 (content)
    assert min_short_side(Params(style_layers=("pool5",))) == 32
    assert min_short_side(Params(style_layers=("conv1_1",), content_layers=("conv2_2",))) == 2
    assert min_short_side(Params(style_layers=("conv1_1",), content_layers=("conv2_2",)), metrics=True) == 16
    assert min_short_side(Params(style_layers=("conv1_1",), content_loss="lpips")) == 16


def test_params_alone_refuse_a_size_too_small_even_for_square_images():
    e = _field(Params, size=16, style_layers=("pool5",))
    assert e.field == "size" and "'pool5' comes after 5 pooling stages" in str(e) and "32" in str(e)
    assert _field(Params, size=64, scales=3, style_layers=("pool5",)).field == "scales"
    assert _field(Params, size=512, style_scale=0.05, style_layers=("pool5",)).field == "style_scale"


def test_size_16_on_a_3_2_photo_names_the_smallest_workable_size():
    probs = dict(image_side_problems(Params(size=16), (200, 300), [(256, 256)], metrics=True))
    assert set(probs) == {"size"}
    msg = probs["size"]
    assert "16x11 output" in msg and "short side is 11 px" in msg and "'conv5_1'" in msg and "use size >= 24" in msg
    assert image_side_problems(Params(size=24), (200, 300), [(256, 256)], metrics=True) == []


def test_panorama_at_512_names_the_smallest_workable_size():
    ((field, msg),) = image_side_problems(Params(size=512), (100, 4000), [(256, 256)], metrics=True)
    assert field == "size" and "512x13 output" in msg and "use size >= 620" in msg
    assert image_side_problems(Params(size=620), (100, 4000), [], metrics=True) == []
    # Shallow layers need fewer pixels, but the worker's LPIPS metric still needs 16.
    shallow = Params(size=512, style_layers=("conv1_1",), content_layers=("conv2_1",))
    assert image_side_problems(shallow, (100, 4000), []) == []
    ((_, msg),) = image_side_problems(shallow, (100, 4000), [], metrics=True)
    assert "LPIPS metric needs 16 px" in msg
    # An aspect no size can serve.
    ((_, msg),) = image_side_problems(Params(size=512), (1, 4000), [], metrics=True)
    assert "no size up to 8192 works" in msg


@pytest.mark.parametrize("hw", [(200, 300), (100, 4000), (4000, 100), (77, 1000), (9, 300), (512, 513)])
@pytest.mark.parametrize(
    "changes",
    [{}, {"scales": 2}, {"scales": 3, "style_layers": ("pool5",)}, {"style_layers": ("conv1_1",), "content_layers": ("relu2_1",)}],
)
def test_suggested_size_is_the_smallest_that_works(hw, changes):
    p = Params(size=128, **changes)
    need = min_short_side(p)
    need_final = min_short_side(p, metrics=True)
    brute = next((s for s in range(p.size, P.MAX_SIZE + 1) if P._output_ok(p, hw, s, need, need_final)), None)
    found = None if brute == p.size else P._smallest_size(p, hw, need, need_final)
    assert brute == p.size or found == brute


def test_style_image_too_small_names_the_smallest_style_scale():
    p = Params(size=256, style_layers=("pool5",))
    ((field, msg),) = image_side_problems(p, (256, 256), [(60, 600)])
    assert field == "style_scale" and "is 256x26" in msg and "'pool5'" in msg
    best = float(msg.rsplit(">= ", 1)[1])
    assert image_side_problems(p.replace(style_scale=best), (256, 256), [(60, 600)]) == []
    assert image_side_problems(p.replace(style_scale=best - 0.01), (256, 256), [(60, 600)]) != []


def test_check_job_raises_a_clear_error_and_caps_the_styles():
    check_job(Params(size=24), (16, 24), [(16, 24)])
    e = _field(check_job, Params(size=16), (200, 300), [(256, 256)])
    assert e.field == "size" and "use size >= 24" in str(e)
    e = _field(check_job, Params(), (256, 256), [(64, 64)] * 17)
    assert e.field == "style" and "17 style images" in str(e) and "at most 16" in str(e)


# ------------------------------------------------------------------------------- engine path


def test_engine_refuses_tiny_outputs_with_a_value_error_not_a_shape_error():
    from stylecore.transfer import stylize

    p = Params(size=16, iterations=1, weights="random")
    content = torch.rand(1, 3, 200, 300)  # 3:2 -> 16x11 at size 16
    with pytest.raises(ValueError, match=r"short side is 11 px.*needs 16 px.*use size >= 24"):
        stylize(content, torch.rand(1, 3, 64, 64), p, "cpu")
    panorama = torch.rand(1, 3, 100, 4000)
    with pytest.raises(ValueError, match=r"512x13 output.*use size >= 620"):
        stylize(panorama, torch.rand(1, 3, 64, 64), p.replace(size=512), "cpu")
    tiny_style = torch.rand(1, 3, 4, 400)
    with pytest.raises(ValueError, match="style_scale"):
        stylize(torch.rand(1, 3, 24, 24), tiny_style, p.replace(size=24), "cpu")
    # At the minimum it runs: 24 px on a 3:2 photo is 24x16.
    r = stylize(torch.rand(1, 3, 200, 300), torch.rand(1, 3, 64, 64), p.replace(size=24), "cpu")
    assert tuple(r.image.shape) == (3, 16, 24)
    assert not math.isnan(r.losses["total"])
