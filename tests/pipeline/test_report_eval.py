"""The report's evaluation views (issue 18 items 3-4, issue 17 item 6) in REAL headless Chromium:
the Pareto frontier and knee on the scatter (the page's own computation checked against
`stxpipe results pareto`), confidence intervals in the tables, loss curves, snapshot strips and
the 100% crop; on results parts with and without the new columns, and on a real small `submit`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import report as REP
from pipeline import results as R
from pipeline import runstats as S
from pipeline.cli import app
from tests.pipeline.sweep_fixture import write_sweep
from tests.pipeline.test_report import assert_self_contained, chromium, console_lines, needs_chromium, selftest

runner = CliRunner()


def _render(out: str, tmp_path: Path, fragment: str = "") -> dict:
    page = tmp_path / "r.html"
    REP.write_report(out, page)
    res = chromium(page, tmp_path / "profile", "--dump-dom", fragment=fragment)
    assert res.returncode == 0, res.stderr[-2000:]
    st = selftest(res.stdout)
    assert st["errors"] == [] and console_lines(res.stderr) == []
    assert st["broken"] == [] and st["images_loaded"] == st["images"]
    return st


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, samples) -> tuple[str, dict[str, dict]]:
    return write_sweep(tmp_path_factory.mktemp("sweep"), samples)


@pytest.mark.slow
def test_page_holds_ci_tables_and_is_self_contained(sweep, tmp_path):
    out, _ = sweep
    page = tmp_path / "r.html"
    REP.write_report(out, page)
    text = page.read_text()
    assert_self_contained(text)
    s = S.summary_by(out, "style_weight")
    tables = re.findall(r'<table class="stats ci-table"><caption>by ([^:]*):(.*?)</table>', text, re.S)
    assert [t[0] for t in tables] == ["style", "style_weight"]
    assert "95% bootstrap CI" in tables[1][1]
    # The cell of gram_style at style_weight 1000 is the CLI's number with its interval.
    g = next(x for x in s.groups if x.value == "1000.0").metrics["gram_style"]
    want = f'<td title="n = {g.n}">{S._num(g.mean)} <span class="ci">[{S._num(g.lo)}, {S._num(g.hi)}]</span></td>'
    assert want in tables[1][1]
    # The new columns are results columns, not carried manifest columns.
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))
    assert data["carried"] == []


@pytest.mark.slow
@needs_chromium
def test_frontier_knee_curves_snapshots_and_crop_in_chromium(sweep, tmp_path):
    out, rows = sweep
    ok = [r for r in rows.values() if r["status"] == "ok"]
    st = _render(out, tmp_path)
    # Default axes: the LPIPS pair; the page's frontier and knee are the CLI's.
    f = S.pareto(out, "lpips_content", "lpips_style")
    assert (st["plot_x"], st["plot_y"]) == ("lpips_content", "lpips_style")
    assert set(st["frontier"]) == {r.row_id for r in f.rows} and st["knee"] == f.knee == "sw2r0"
    assert st["frontier_rings"] == len(f.rows) and st["knee_marks"] == 1
    assert st["points"] == len(ok)
    # One curve per ok row, one line per recorded term (hist is off: 4), a mark where the 2nd scale starts.
    assert st["curves"] == len(ok) and st["curve_lines"] == 4 * len(ok) and st["scale_marks"] == len(ok)
    assert st["snapshots"] == 2 * len(ok)
    # One output is over 1024 px: one crop, shown at its native 256 x 256.
    assert st["crops"] == [[256, 256, 256, 256]]
    assert st["ci_tables"] == 2


@pytest.mark.slow
@needs_chromium
def test_axes_from_the_address_give_the_issue_default_pair(sweep, tmp_path):
    out, _ = sweep
    st = _render(out, tmp_path, fragment="x=lpips_content&y=gram_style")
    f = S.pareto(out, "lpips_content", "gram_style")
    assert (st["plot_x"], st["plot_y"]) == ("lpips_content", "gram_style")
    assert st["frontier"] == [r.row_id for r in f.rows] and st["knee"] == f.knee == "sw2r0"
    assert st["points"] == f.ok - f.excluded  # "nogram" has no y: not plotted


@pytest.mark.slow
@needs_chromium
def test_old_results_without_the_new_columns_still_render(tmp_path, samples):
    out, rows = write_sweep(tmp_path, samples, new_columns=False)
    st = _render(out, tmp_path)
    assert (st["curves"], st["snapshots"]) == (0, 0)
    assert st["crops"] == [[256, 256, 256, 256]]  # the crop needs only the output image
    assert st["cards"] == len(rows) and st["knee"] == "sw2r0"


@pytest.mark.slow
@needs_chromium
def test_real_sweep_summary_pareto_and_report(tmp_path, samples, hed):
    """A real `submit` (3 rows sweeping style_weight, 32 px, vgg16-hed) feeding the CLI and the page."""
    from pipeline.manifest import write_manifest

    content = str(samples / "content" / "tubingen.jpg")
    style = str(samples / "style" / "starry_night.jpg")
    weights = (1.0, 100.0, 10000.0)
    # One scale, no early stop: 4 steps, a snapshot every 2, whatever the defaults become.
    params = {"size": 32, "iterations": 4, "scales": 1, "tol": 0.0, "snapshot_every": 2, "weights": hed, "lpips_weights": hed}
    manifest = tmp_path / "m.parquet"
    write_manifest([{"content": content, "style": style, "params": {**params, "style_weight": w}} for w in weights], manifest)
    out = tmp_path / "out"
    r = runner.invoke(app, ["submit", str(manifest), "--out", str(out), "--no-progress", "--workers", "1"])
    assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["results", "summary", str(out), "--by", "style_weight", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [float(g["value"]) for g in d["groups"]] == list(weights)
    for g in d["groups"]:
        gram = g["metrics"]["gram_style"]
        assert gram["n"] == 1 and gram["lo"] == gram["mean"] == gram["hi"] > 0  # one row: no spread to resample
    grams = [g["metrics"]["gram_style"]["mean"] for g in d["groups"]]
    assert grams[0] > grams[-1]  # more style weight, closer Gram statistics (0.46 -> 0.36 when written)
    table = R.read_results(str(out)).to_pylist()
    r = runner.invoke(app, ["results", "pareto", str(out), "--json"])
    assert r.exit_code == 0, r.output
    f = json.loads(r.stdout)
    pts = {x["row_id"]: (x["lpips_content"], x["gram_style"]) for x in table}
    beaten = {i for i, p in pts.items() if any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts.values())}
    assert {x["row_id"] for x in f["rows"]} == set(pts) - beaten and f["excluded"] == 0

    st = _render(str(out), tmp_path, fragment="x=lpips_content&y=gram_style")
    assert st["points"] == 3 and set(st["frontier"]) == {x["row_id"] for x in f["rows"]} and st["knee"] == f["knee"]
    assert st["ci_tables"] == 2 and st["crops"] == []  # 32 px outputs: no crop
    # Loss curves and snapshots show once the results carry them (issue 18's columns).
    if "loss_curve" in R.RESULT_COLUMNS:
        assert all(len((x["loss_curve"] or {}).get("step") or []) >= 2 for x in table)
        assert st["curves"] == 3 and st["curve_lines"] >= 3 * 3  # total, content, style at least
    if "snapshots" in R.RESULT_COLUMNS:
        shown = [min(len(x["snapshots"] or []), REP.M.SNAPS_SHOWN) for x in table]
        assert min(shown) >= 1 and st["snapshots"] == sum(shown)
