"""`Params` is the only place a field's type lives: a field added to a copy of `Params` reaches
every consumer with the right type: coercion, the manifest's Arrow params struct, the results'
params struct, the `stylize` options, `manifest build --param/--sweep` and `manifest show`."""

from __future__ import annotations

import dataclasses
import inspect

import pyarrow as pa
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli.stylize import with_params_options
from pipeline.manifest import (
    BuildConfig,
    ManifestRow,
    ValidationReport,
    describe_manifest,
    is_list_param,
    non_default_params,
    params_struct_type,
    parse_param,
    parse_sweep,
    plan_manifest,
)
from stylecore.params import ParamError, Params, field_kinds

# A copy of Params with one new float, int and list-of-names field (bounds in metadata, as the
# real fields keep theirs).
Extended = dataclasses.make_dataclass(
    "Extended",
    [
        ("gain", float, dataclasses.field(default=1.0, metadata={"help": "a new float", "min": 0})),
        ("passes", int, dataclasses.field(default=2, metadata={"help": "a new int", "min": 1, "max": 9})),
        ("tags", tuple[str, ...], dataclasses.field(default=(), metadata={"help": "a new list of names"})),
    ],
    bases=(Params,),
    frozen=True,
)
NEW = {"gain": pa.float64(), "passes": pa.int64(), "tags": pa.list_(pa.string())}


def test_field_kinds_come_from_the_annotations():
    kinds = field_kinds(Extended)
    assert list(kinds)[: len(field_kinds())] == list(field_kinds())  # Params' fields first, in order
    assert (kinds["gain"].elem, kinds["gain"].is_list) == (float, False)
    assert (kinds["passes"].elem, kinds["passes"].is_list) == (int, False)
    assert (kinds["tags"].elem, kinds["tags"].is_list) == (str, True)
    lr, blend = field_kinds()["lr"], field_kinds()["style_blend"]
    assert (lr.elem, lr.is_list, lr.optional) == (float, False, True)
    assert (blend.elem, blend.is_list, blend.optional) == (float, True, True)


def test_an_annotation_no_consumer_can_read_is_refused_naming_the_field():
    Bad = dataclasses.make_dataclass("Bad", [("extra", dict, dataclasses.field(default=None))], bases=(Params,), frozen=True)
    with pytest.raises(TypeError, match="Bad.extra"):
        field_kinds(Bad)


def test_coercion_and_bounds_of_the_new_fields():
    p = Extended.from_dict({"gain": "2.5", "passes": "3", "tags": "a, b", "size": "64"})
    assert (p.gain, p.passes, p.tags, p.size) == (2.5, 3, ("a", "b"), 64)
    assert type(p.gain) is float and type(p.passes) is int
    assert p.replace(gain="4").gain == 4.0 and type(p.replace(passes=5.0).passes) is int
    for data, field, text in [
        ({"gain": "x"}, "gain", "cannot read 'x' as a number"),
        ({"passes": 2.5}, "passes", "cannot read 2.5 as an integer"),
        ({"passes": 10}, "passes", "must be between 1 and 9, got 10"),
        ({"gain": -1}, "gain", "must be >= 0"),
        ({"gain": [1, 2]}, "gain", "takes a single value"),
        ({"gain": float("nan")}, "gain", "finite number"),
    ]:
        with pytest.raises(ParamError, match=text) as e:
            Extended.from_dict(data)
        assert e.value.field == field
    with pytest.raises(ParamError, match="unknown parameter"):
        Params.from_dict({"gain": 1})  # the original class is untouched


def test_manifest_params_struct_types_the_new_fields():
    t = params_struct_type(Extended)
    assert {n: t.field(n).type for n in NEW} == NEW
    assert [t.field(i) for i in range(params_struct_type().num_fields)] == list(params_struct_type())
    col = pa.array([{"gain": 2.5, "passes": 3, "tags": ["a"]}, {}], t)
    assert col.to_pylist()[0]["gain"] == 2.5


def test_results_params_struct_types_the_new_fields():
    fields = {f.name: f.type for f in R.result_fields(Extended)}
    assert fields["params"] == params_struct_type(Extended)
    assert R.PARAMS_TYPE == params_struct_type() and [f.name for f in R.result_fields()] == R.RESULT_COLUMNS


def test_stylize_options_for_the_new_fields():
    got: dict = {}

    def command(*, params) -> None:
        got["params"] = params

    wrapped = with_params_options(command, params_cls=Extended)
    opts = inspect.signature(wrapped).parameters
    assert (opts["gain"].default.metavar, opts["passes"].default.metavar, opts["tags"].default.metavar) == ("FLOAT", "INT", "NAME,...")
    app = typer.Typer()
    app.command()(wrapped)
    r = CliRunner().invoke(app, ["--gain", "2.5", "--passes", "3", "--tags", "a,b", "--size", "64"])
    assert r.exit_code == 0, r.output
    p = got["params"]
    assert isinstance(p, Extended) and (p.gain, p.passes, p.tags, p.size) == (2.5, 3, ("a", "b"), 64)
    r = CliRunner().invoke(app, ["--passes", "x"])
    assert r.exit_code == 1 and "param 'passes'" in r.output


def test_build_param_and_sweep_parse_the_new_fields(tmp_path):
    assert parse_param("gain=2.5", Extended) == ("gain", 2.5) and type(parse_param("gain=2", Extended)[1]) is float
    assert parse_param("passes=3", Extended) == ("passes", 3) and type(parse_param("passes=3", Extended)[1]) is int
    assert parse_sweep("passes=1,2;3", Extended) == ("passes", (1, 2, 3))
    assert parse_sweep("tags=a,b;c", Extended) == ("tags", (["a", "b"], ["c"]))
    assert is_list_param("tags", Extended) and not is_list_param("gain", Extended)
    with pytest.raises(ParamError, match="unknown parameter"):
        parse_param("gain=2.5")
    for name in ("c.png", "s.png"):
        Image.new("RGB", (32, 32)).save(tmp_path / name)
    config = BuildConfig(contents=(str(tmp_path / "c.png"),), styles=(str(tmp_path / "s.png"),), params=("gain=2",), sweeps=("tags=a;b,c",))
    rows, summary = plan_manifest(config, tmp_path / "m.parquet", Extended)
    assert [dict(r.params) for r in rows] == [{"gain": 2.0, "tags": ["a"]}, {"gain": 2.0, "tags": ["b", "c"]}]
    with pytest.raises(ParamError, match="passes"):
        plan_manifest(BuildConfig(contents=config.contents, styles=config.styles, sweeps=("passes=0,1",)), tmp_path / "m.parquet", Extended)


def test_show_lists_the_new_fields_that_differ_from_their_defaults():
    p = Extended(gain=2.0, tags=("a", "b"))
    assert non_default_params(p) == {"gain": 2.0, "tags": ["a", "b"]}
    row = ManifestRow(0, "r0", "/c.png", ("/s.png",), p)
    lines = describe_manifest(ValidationReport("/m.parquet", 1, (row,), (), 0))
    assert lines[1].endswith("gain=2.0 tags=a,b")
