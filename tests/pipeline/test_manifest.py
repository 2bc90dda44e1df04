"""Manifests: schema, builder, sweeps, row ids, paths/URIs and validation (real Parquet files)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import manifest as M
from stylecore.params import ParamError, Params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def images(tmp_path: Path, samples: Path) -> Path:
    """tmp/img/{c1,c2,s1,s2}.jpg: two contents and two styles, plus a non-image."""
    d = tmp_path / "img"
    d.mkdir()
    shutil.copy(samples / "content" / "tubingen.jpg", d / "c1.jpg")
    shutil.copy(samples / "content" / "chelsea.jpg", d / "c2.jpg")
    shutil.copy(samples / "style" / "starry_night.jpg", d / "s1.jpg")
    shutil.copy(samples / "style" / "the_scream.jpg", d / "s2.jpg")
    (d / "bad.jpg").write_bytes(b"this is not a JPEG")
    return d


def _config(images: Path, **kw) -> M.BuildConfig:
    return M.BuildConfig(contents=(str(images / "c*.jpg"),), styles=(str(images / "s*.jpg"),), **kw)


def test_build_validate_read_round_trip(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "m.parquet"
    summary = M.build_manifest(_config(images, params=("size=128", "init=noise")), out)
    assert (summary.rows, summary.contents, summary.styles) == (4, 2, 2)

    report = M.validate_manifest(out)
    assert report.ok, report.problems
    assert report.files_checked == 4
    rows = M.read_manifest(out)
    assert [(Path(r.content).name, tuple(Path(s).name for s in r.styles)) for r in rows] == [
        ("c1.jpg", ("s1.jpg",)),
        ("c1.jpg", ("s2.jpg",)),
        ("c2.jpg", ("s1.jpg",)),
        ("c2.jpg", ("s2.jpg",)),
    ]
    assert all(r.params == Params(size=128, init="noise") for r in rows)
    assert all(Path(r.content).is_absolute() for r in rows)
    assert [r.index for r in rows] == [0, 1, 2, 3]

    # Only the explicitly set params are stored; the rest stay null, i.e. "engine default".
    stored = pq.read_table(out).column("params").to_pylist()[0]
    assert {k for k, v in stored.items() if v is not None} == {"size", "init"}
    assert stored["size"] == 128 and stored["style_layers"] is None
    assert pq.read_table(out).column("row_id").to_pylist() == [r.row_id for r in rows]


def test_sweep_2x3_over_2x2_gives_24_distinct_stable_ids(tmp_path: Path, images: Path) -> None:
    config = _config(images, sweeps=("size=128,256", "style_layers=pool1;pool2;conv1_1,conv2_1"))
    M.build_manifest(config, tmp_path / "a.parquet")
    M.build_manifest(config, tmp_path / "b.parquet")
    a, b = M.read_manifest(tmp_path / "a.parquet"), M.read_manifest(tmp_path / "b.parquet")
    assert len(a) == 24
    assert len({r.row_id for r in a}) == 24
    assert [r.row_id for r in a] == [r.row_id for r in b]
    assert {r.params.style_layers for r in a} == {("pool1",), ("pool2",), ("conv1_1", "conv2_1")}
    assert {r.params.size for r in a} == {128, 256}
    # The id is the hash of content, style and resolved params, so it can be recomputed.
    r = a[5]
    assert r.row_id == M.row_id_for(r.content, r.styles, r.params)


def test_parse_sweep_list_and_scalar_syntax() -> None:
    assert M.parse_sweep("style_layers=pool1;pool2") == ("style_layers", (["pool1"], ["pool2"]))
    assert M.parse_sweep("style_layers=conv1_1,conv2_1;conv3_1") == ("style_layers", (["conv1_1", "conv2_1"], ["conv3_1"]))
    assert M.parse_sweep("content_weight=0,1;2") == ("content_weight", (0.0, 1.0, 2.0))
    with pytest.raises(ParamError, match="did you mean 'style_weight'"):
        M.parse_sweep("style_wieght=1,2")
    with pytest.raises(ParamError, match="more than once"):
        M.parse_sweep("size=128,128")
    with pytest.raises(ParamError, match="integer"):
        M.parse_param("size=big")


def test_every_problem_is_reported_with_its_row(tmp_path: Path, images: Path) -> None:
    s1 = str(images / "s1.jpg")
    pq.write_table(
        pa.table(
            {
                "content": ["img/c1.jpg", "img/missing.jpg", "img/bad.jpg", "img/c1.jpg", "img/c2.jpg", "img/c2.jpg"],
                "style": [s1] * 6,
                "params": [None, None, None, '{"sise": 128}', '{"size": -3}', None],
                "row_id": ["r0", "r1", "r2", "r3", "r4", "r0"],
            }
        ),
        tmp_path / "bad.parquet",
    )
    report = M.validate_manifest(tmp_path / "bad.parquet")
    found = {(p.row, p.column) for p in report.problems}
    assert found == {(1, "content"), (2, "content"), (3, "params.sise"), (4, "params.size"), (5, "row_id")}
    by_row = {p.row: p.message for p in report.problems}
    assert "not found" in by_row[1] and "missing.jpg" in by_row[1]
    assert "bad.jpg" in by_row[2]
    assert "did you mean 'size'" in by_row[3]
    assert "16 and 8192" in by_row[4]
    assert "duplicate row_id 'r0' (first at row 0)" in by_row[5]
    assert [r.index for r in report.rows] == [0, 1, 2, 5]  # params resolved for these
    with pytest.raises(M.ManifestError, match="5 problem"):
        M.read_manifest(tmp_path / "bad.parquet", check_files=True)


def test_several_bad_params_in_one_row_are_all_reported(tmp_path: Path, images: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "content": [str(images / "c1.jpg")],
                "style": [str(images / "s1.jpg")],
                "params": ['{"init": "noize", "size": 0, "colour": 1}'],
            }
        ),
        tmp_path / "m.parquet",
    )
    problems = M.validate_manifest(tmp_path / "m.parquet").problems
    assert {p.column for p in problems} == {"params.init", "params.size", "params.colour"}
    assert any("did you mean 'noise'" in p.message for p in problems)


def test_schema_problems(tmp_path: Path) -> None:
    pq.write_table(pa.table({"content": [1, 2], "params": [3, 4]}), tmp_path / "m.parquet")
    problems = M.validate_manifest(tmp_path / "m.parquet").problems
    assert {(p.row, p.column) for p in problems} == {(None, "style"), (None, "content"), (None, "params")}
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(M.ManifestError, match="Parquet"):
        M.validate_manifest(tmp_path / "x.parquet")
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        M.validate_manifest(tmp_path / "nope.parquet")


def test_json_params_extra_columns_and_default_ids(tmp_path: Path, images: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "content": ["img/c1.jpg", "img/c2.jpg", "img/c1.jpg"],
                "style": ["img/s1.jpg"] * 3,
                "params": ['{"size": 128, "style_layers": ["pool1", "pool2"]}', "", None],
                "tag": ["a", "b", "c"],
                "score": [1.5, None, 3.0],
            }
        ),
        tmp_path / "m.parquet",
    )
    rows = M.read_manifest(tmp_path / "m.parquet", check_files=True)
    assert rows[0].params == Params(size=128, style_layers=("pool1", "pool2"))
    assert rows[1].params == rows[2].params == Params()
    assert [r.extra for r in rows] == [{"tag": "a", "score": 1.5}, {"tag": "b", "score": None}, {"tag": "c", "score": 3.0}]
    assert rows[0].row_id == M.row_id_for("img/c1.jpg", ("img/s1.jpg",), rows[0].params)  # as written, not resolved
    assert len({r.row_id for r in rows}) == 3

    # Writing the resolved rows keeps the extra columns and the ids.
    M.write_manifest(rows, tmp_path / "again.parquet")
    again = M.read_manifest(tmp_path / "again.parquet")
    assert [(r.row_id, r.params, r.extra) for r in again] == [(r.row_id, r.params, r.extra) for r in rows]


def test_same_job_twice_without_row_id_is_a_duplicate(tmp_path: Path, images: Path) -> None:
    pq.write_table(pa.table({"content": ["img/c1.jpg"] * 2, "style": ["img/s1.jpg"] * 2}), tmp_path / "m.parquet")
    (p,) = M.validate_manifest(tmp_path / "m.parquet", check_files=False).problems
    assert (p.row, p.column) == (1, "row_id") and "first at row 0" in p.message
    with pytest.raises(M.ManifestError, match="duplicate"):
        M.write_manifest([{"content": "a.jpg", "style": "b.jpg"}] * 2, tmp_path / "w.parquet")


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path, images: Path, monkeypatch) -> None:
    sub = tmp_path / "deep" / "er"
    M.build_manifest(_config(images, relative=True), sub / "m.parquet")
    written = pq.read_table(sub / "m.parquet").column("content").to_pylist()
    assert written[0] == "../../img/c1.jpg"
    monkeypatch.chdir(images)  # somewhere else entirely
    rows = M.read_manifest(sub / "m.parquet", check_files=True)
    assert rows[0].content == str(images / "c1.jpg")


def test_file_uris_and_read_bytes(tmp_path: Path, images: Path) -> None:
    c, s = (images / "c1.jpg").as_uri(), (images / "s1.jpg").as_uri()
    pq.write_table(pa.table({"content": [c], "style": [s]}), tmp_path / "m.parquet")
    (row,) = M.read_manifest((tmp_path / "m.parquet").as_uri(), check_files=True)
    assert row.content == str(images / "c1.jpg")
    assert M.read_bytes(c) == M.read_bytes(row.content) == (images / "c1.jpg").read_bytes()
    with pytest.raises(FileNotFoundError):
        M.read_bytes((images / "nope.jpg").as_uri())
    assert M.resolve_path("a/b.jpg", "s3://bucket/runs") == "s3://bucket/runs/a/b.jpg"
    assert M.resolve_path("../b.jpg", "s3://bucket/runs") == "s3://bucket/b.jpg"
    assert M.resolve_path("gs://x/y.jpg", "/anything") == "gs://x/y.jpg"


def test_style_blend_length_must_match_the_styles(tmp_path: Path, images: Path) -> None:
    s1, s2 = str(images / "s1.jpg"), str(images / "s2.jpg")
    M.write_manifest(
        [{"content": str(images / "c1.jpg"), "style": [s1, s2], "params": {"style_blend": [0.7, 0.3]}}],
        tmp_path / "ok.parquet",
    )
    assert pa.types.is_list(pq.read_table(tmp_path / "ok.parquet").schema.field("style").type)
    (row,) = M.read_manifest(tmp_path / "ok.parquet")
    assert row.styles == (s1, s2) and row.params.style_blend == (0.7, 0.3)
    pq.write_table(
        pa.table({"content": [str(images / "c1.jpg")], "style": [[s1, s2]], "params": ['{"style_blend": [1, 2, 3]}']}),
        tmp_path / "bad.parquet",
    )
    (p,) = M.validate_manifest(tmp_path / "bad.parquet").problems
    assert p.column == "params.style_blend" and "3 weight(s) for 2 style image(s)" in p.message


def test_each_distinct_file_is_decoded_once(tmp_path: Path, images: Path, monkeypatch) -> None:
    import stylecore.images as images_mod

    calls: list[str] = []
    real = images_mod.probe_image
    monkeypatch.setattr(images_mod, "probe_image", lambda src, **kw: calls.append(str(src)) or real(src, **kw))
    M.build_manifest(_config(images, sweeps=("seed=1,2,3",)), tmp_path / "m.parquet")
    report = M.validate_manifest(tmp_path / "m.parquet")
    assert report.ok and report.n_rows == 12
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 4


def test_oversized_images_are_refused(tmp_path: Path, images: Path) -> None:
    M.build_manifest(_config(images), tmp_path / "m.parquet")
    report = M.validate_manifest(tmp_path / "m.parquet", max_pixels=100)
    assert len(report.problems) == 8  # 4 rows x (content + style), each file decoded once
    assert all("max_pixels" in p.message for p in report.problems)


def test_csv_build_pairs_blends_and_carries_columns(tmp_path: Path, images: Path) -> None:
    (tmp_path / "jobs.csv").write_text("content,style,tag\nimg/c1.jpg,img/s1.jpg,x\nimg/c2.jpg,img/s1.jpg;img/s2.jpg,y\n")
    M.build_manifest(M.BuildConfig(csv=str(tmp_path / "jobs.csv"), sweeps=("seed=1,2",)), tmp_path / "m.parquet")
    rows = M.read_manifest(tmp_path / "m.parquet", check_files=True)
    assert len(rows) == 4
    assert [r.extra["tag"] for r in rows] == ["x", "x", "y", "y"]
    assert rows[2].styles == (str(images / "s1.jpg"), str(images / "s2.jpg"))


def test_builder_errors_say_what_to_do(tmp_path: Path, images: Path) -> None:
    with pytest.raises(ValueError, match="--pair needs as many contents as styles"):
        M.plan_manifest(
            M.BuildConfig(contents=(str(images / "c*.jpg"),), styles=(str(images / "s1.jpg"),), pair=True), tmp_path / "m.parquet"
        )
    with pytest.raises(FileNotFoundError, match="matched no image files"):
        M.plan_manifest(M.BuildConfig(contents=(str(images / "*.png"),), styles=(str(images / "s1.jpg"),)), tmp_path / "m.parquet")
    with pytest.raises(ParamError, match="combination"):
        M.plan_manifest(_config(images, params=("size=16",), sweeps=("scales=1,2",)), tmp_path / "m.parquet")


SHIPPED = sorted((REPO / "manifests").glob("*.parquet"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_manifests_validate(path: Path) -> None:
    report = M.validate_manifest(path)
    assert report.ok, M.format_problems(report.problems)
    stored = pq.read_table(path)
    assert all(not Path(c).is_absolute() for c in stored.column("content").to_pylist())
    assert all(p["weights"] is None for p in stored.column("params").to_pylist())  # the run command picks weights


def test_shipped_paper_manifests_hold_the_paper_experiments() -> None:
    a = M.read_manifest(REPO / "manifests" / "paper_a_style_layers.parquet")
    assert [r.params.style_layers for r in a] == [(f"pool{i}",) for i in range(1, 6)]
    assert all(r.params.content_weight == 0 and r.params.init == "noise" for r in a)
    b = M.read_manifest(REPO / "manifests" / "paper_b_content_layers.parquet")
    assert [r.params.content_layers for r in b] == [(f"conv{i}_2",) for i in range(1, 6)]
    assert all(r.params.style_layers == ("pool3",) for r in b)
    c = M.read_manifest(REPO / "manifests" / "paper_c_content_loss.parquet")
    assert {r.params.content_loss for r in c} == {"mse", "lpips"} and len(c) == 8
    # Same work, same id: the paper's pick appears in (b) and (c).
    assert {r.row_id for r in b} & {r.row_id for r in c}
    assert len(M.read_manifest(REPO / "manifests" / "demo.parquet")) == 4


def test_format_problems_groups_rows_into_ranges() -> None:
    probs = [M.Problem(i, "content", "file not found: x.jpg") for i in (0, 1, 2, 5)] + [M.Problem(None, "style", "missing")]
    assert M.format_problems(probs) == ["rows 0-2, 5, content: file not found: x.jpg", "manifest, style: missing"]


# ------------------------------------------------------------------ row ids, output paths


@pytest.mark.parametrize("bad", ["../../x", "/abs/x", ".hidden", "a/b", "a\\b", "x" * 129, "-lead", "sp ace", "é"])
def test_bad_row_ids_are_refused_at_validate_and_write(tmp_path: Path, images: Path, bad: str) -> None:
    c, s = str(images / "c1.jpg"), str(images / "s1.jpg")
    pq.write_table(pa.table({"content": [c, c], "style": [s, s], "row_id": ["ok-1.v2_x", bad]}), tmp_path / "m.parquet")
    problems = M.validate_manifest(tmp_path / "m.parquet").problems
    assert [(p.row, p.column) for p in problems] == [(1, "row_id")]
    assert "not a valid row_id" in problems[0].message and "letters, digits" in problems[0].message
    with pytest.raises(M.ManifestError, match="row 1, row_id: .* is not a valid row_id"):
        M.write_manifest([M.RowSpec(c, (s,), row_id="fine"), M.RowSpec(c, (s,), row_id=bad)], tmp_path / "w.parquet")
    with pytest.raises(ValueError, match="not a valid row_id"):
        M.safe_output_path(str(tmp_path / "out"), bad)


def test_safe_output_path_stays_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "out" / "images"
    root.mkdir(parents=True)
    assert M.safe_output_path(str(root), "abc") == str(root.resolve() / "abc.png")
    assert M.safe_output_path(str(root), "a..b", ".jpg") == str(root.resolve() / "a..b.jpg")
    assert M.safe_output_path(root.as_uri(), "abc") == str(root.resolve() / "abc.png")
    # A link planted where the image goes must not carry the write outside the root.
    (root / "evil.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(ValueError, match="outside"):
        M.safe_output_path(str(root), "evil")
    with pytest.raises(ValueError, match="suffix"):
        M.safe_output_path(str(root), "abc", "/../x.png")
    assert M.safe_output_path("s3://bucket/out/images", "abc") == "s3://bucket/out/images/abc.png"
    assert M.safe_output_path("s3://bucket/p?endpoint_override=h:9000", "abc") == "s3://bucket/p/abc.png?endpoint_override=h:9000"
    with pytest.raises(ValueError, match="'..' segment"):
        M.safe_output_path("s3://bucket/out/../other", "abc")


# ------------------------------------------------------------------ reserved columns


def test_reserved_result_columns_are_refused_in_one_problem(tmp_path: Path, images: Path) -> None:
    c, s = str(images / "c1.jpg"), str(images / "s1.jpg")
    pq.write_table(
        pa.table(
            {
                "content": [c],
                "style": [s],
                "status": ["mine"],
                "error": ["x"],
                "tag": ["keep"],
                "Seconds": [1.5],
                "output": ["o"],
            }
        ),
        tmp_path / "m.parquet",
    )
    problems = M.validate_manifest(tmp_path / "m.parquet").problems
    assert len(problems) == 1
    p = problems[0]
    assert p.row is None and p.column == "status, error, Seconds, output"  # case-insensitive, as DuckDB
    assert "reserved" in p.message and "status -> user_status" in p.message
    with pytest.raises(M.ManifestError, match="status, error.*user_status"):
        M.write_manifest([M.RowSpec(c, (s,), extra={"status": 1, "error": 2})], tmp_path / "w.parquet")
    M.write_manifest([M.RowSpec(c, (s,), extra={"user_status": 1})], tmp_path / "w.parquet")  # the fix works


def test_reserved_columns_are_read_from_the_results_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.results as R

    assert set(M.reserved_result_columns()) == set(R.RESULT_COLUMNS) - set(M.RESERVED_COLUMNS)
    monkeypatch.setattr(R, "RESULT_COLUMNS", [*R.RESULT_COLUMNS, "brand_new"])
    assert "brand_new" in M.reserved_result_columns()
    assert M._reserved_problem(["brand_new", "tag"]).column == "brand_new"


# ------------------------------------------------------------------ bounds and geometry


def test_blends_params_json_and_iterations_are_bounded(tmp_path: Path, images: Path) -> None:
    c, s = str(images / "c1.jpg"), str(images / "s1.jpg")
    deep = '{"size": ' + "[" * 20 + "]" * 20 + "}"
    pq.write_table(
        pa.table(
            {
                "content": [c] * 5,
                "style": [[s] * 17, [s], [s], [s], [s]],
                "params": [
                    None,
                    deep,
                    '{"iterations": 1000000000}',
                    '{"size": 8192, "style_scale": 8}',
                    json.dumps({f"k{i}": 1 for i in range(500)}),
                ],
            }
        ),
        tmp_path / "m.parquet",
    )
    problems = M.validate_manifest(tmp_path / "m.parquet", check_files=False).problems
    by = {(p.row, p.column): p.message for p in problems}
    assert set(by) == {(0, "style"), (1, "params"), (2, "params.iterations"), (3, "params.style_scale"), (4, "params")}
    assert "17 style images" in by[0, "style"] and "at most 16" in by[0, "style"]
    assert "nested 21 levels deep" in by[1, "params"]
    assert "between 0 and 100,000" in by[2, "params.iterations"]
    assert "use style_scale <= 1" in by[3, "params.style_scale"]
    assert "500 keys" in by[4, "params"]


def test_images_too_small_for_the_layers_are_refused_with_the_smallest_size(tmp_path: Path) -> None:
    Image.new("RGB", (4000, 100), (10, 120, 200)).save(tmp_path / "pano.png")
    Image.new("RGB", (300, 200), (200, 120, 10)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(tmp_path / "style.png")
    pq.write_table(
        pa.table(
            {
                "content": ["pano.png", "photo.jpg", "photo.jpg", "pano.png"],
                "style": ["style.png", "style.png", "photo.jpg", "style.png"],
                "params": ['{"size": 512}', '{"size": 16}', '{"size": 24}', '{"size": 620}'],
            }
        ),
        tmp_path / "m.parquet",
    )
    problems = M.validate_manifest(tmp_path / "m.parquet").problems
    assert [(p.row, p.column) for p in problems] == [(0, "params.size"), (1, "params.size")]
    assert "4000x100 content image gives a 512x13 output" in problems[0].message and "use size >= 620" in problems[0].message
    assert "16x11 output" in problems[1].message and "use size >= 24" in problems[1].message
    assert M.validate_manifest(tmp_path / "m.parquet", check_files=False).ok  # sizes need the files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_fifo_content_is_refused_without_blocking(tmp_path: Path, images: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    pq.write_table(pa.table({"content": ["pipe.jpg"], "style": [str(images / "s1.jpg")]}), tmp_path / "m.parquet")
    result: list = []
    t = threading.Thread(target=lambda: result.append(M.validate_manifest(tmp_path / "m.parquet")), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("validate blocked on a FIFO")
    (p,) = result[0].problems
    assert (p.row, p.column) == (0, "content") and "FIFO (named pipe)" in p.message and "pipe.jpg" in p.message
    for source in (str(fifo), fifo.as_uri()):
        with pytest.raises(OSError, match="FIFO"):
            M.read_bytes(source)
    with pytest.raises(OSError, match="a folder"):
        M.read_bytes(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        M.read_bytes(str(tmp_path / "ghost.jpg"))
