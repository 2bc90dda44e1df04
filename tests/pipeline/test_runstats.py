"""pipeline.runstats and `stxpipe results summary --by | pareto | artfid` on real results parts
(tests/pipeline/sweep_fixture.py) through real DuckDB; the CLI through typer's CliRunner."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline import runstats as S
from pipeline.cli import app
from stylecore.stats import bootstrap_ci
from tests.pipeline.sweep_fixture import SWEEP, write_sweep

runner = CliRunner()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, samples) -> tuple[str, dict[str, dict]]:
    return write_sweep(tmp_path_factory.mktemp("sweep"), samples)


def _dominated(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """q beats p (both minimised)."""
    return q[0] <= p[0] and q[1] <= p[1] and q != p


def test_frontier_matches_the_definition_on_random_points():
    rng = random.Random(7)
    for n in (1, 2, 5, 40):
        # Coarse values: ties in x, in y and whole duplicate points happen.
        pts = [(rng.randint(0, 9) / 10, rng.randint(0, 9) / 10) for _ in range(n)]
        got = S.frontier_indices([p[0] for p in pts], [p[1] for p in pts])
        want = [i for i, p in enumerate(pts) if not any(_dominated(p, q) for q in pts)]
        assert sorted(got) == want, pts
        assert [pts[i] for i in got] == sorted(pts[i] for i in got)  # sorted by x, then y


def test_knee_is_the_point_farthest_from_the_chord():
    # A convex frontier with its bend at index 2 (normalised: (0.2, 0.2) against the chord x + y = 1).
    assert S.knee_index([0.0, 0.1, 0.2, 0.6, 1.0], [1.0, 0.5, 0.2, 0.1, 0.0]) == 2
    assert S.knee_index([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) is None  # collinear: no bend
    assert S.knee_index([1.0, 2.0], [2.0, 1.0]) is None  # too few points
    # Scaling either axis changes nothing (the rule normalises first).
    assert S.knee_index([0.0, 10.0, 20.0, 60.0, 100.0], [1.0, 0.5, 0.2, 0.1, 0.0]) == 2


def test_summary_by_param_gives_means_and_bootstrap_intervals(sweep):
    out, rows = sweep
    s = S.summary_by(out, "style_weight")
    assert s.by == "style_weight" and [float(g.value) for g in s.groups] == list(SWEEP)
    # The new metric columns are there because the parts hold values for them; nothing absent is invented.
    assert s.metrics == S.METRICS
    for g in s.groups:
        ok = [r for r in rows.values() if r["status"] == "ok" and str(r["params"]["style_weight"]) == g.value]
        assert g.ok == len(ok) and g.rows == len([r for r in rows.values() if str(r["params"]["style_weight"]) == g.value])
        for m in ("lpips_content", "gram_style", "seconds", "iterations_run", "cfsd"):
            vals = [float(r[m]) for r in ok if r.get(m) is not None]
            ci = g.metrics[m]
            assert ci is not None and ci.n == len(vals)
            assert ci.mean == pytest.approx(np.mean(vals))
            assert (ci.mean, ci.lo, ci.hi) == pytest.approx(bootstrap_ci(vals))
            assert ci.lo <= ci.mean <= ci.hi
    # Seconds differ inside a group: a real interval; gram_style falls as style_weight rises.
    first = s.groups[0].metrics["seconds"]
    assert first.lo < first.hi
    grams = [g.metrics["gram_style"].mean for g in s.groups]
    assert grams == sorted(grams, reverse=True)


def test_summary_by_top_level_column_and_restricted_metrics(sweep):
    out, _ = sweep
    s = S.summary_by(out, "stopped", metrics=["iterations_run"])
    assert {g.value: g.metrics["iterations_run"].mean for g in s.groups if g.value != "null"} == {"cap": 8.0, "converged": 7.0}
    assert s.metrics == ("iterations_run",)
    with pytest.raises(KeyError, match=r"unknown --by name 'nope'; valid: .*style_weight.*style_loss.*content.*stopped"):
        S.summary_by(out, "nope")
    with pytest.raises(KeyError, match=r"unknown metric 'content'; valid: lpips_style"):
        S.summary_by(out, "style_weight", metrics=["content"])


def test_old_results_without_the_new_columns(tmp_path, samples):
    out, _ = write_sweep(tmp_path, samples, new_columns=False)
    s = S.summary_by(out, "style_weight")
    assert s.metrics == ("lpips_style", "lpips_content", "gram_style", "seconds")
    f = S.pareto(out)
    assert [r.row_id for r in f.rows] == [f"sw{i}r0" for i in range(5)]


def test_pareto_frontier_knee_and_excluded_rows(sweep):
    out, rows = sweep
    f = S.pareto(out, "lpips_content", "gram_style")
    assert [r.row_id for r in f.rows] == [f"sw{i}r0" for i in range(5)]  # the second replicates are beaten
    assert [r.x for r in f.rows] == sorted(r.x for r in f.rows)
    assert f.knee == "sw2r0"  # the bend of the sweep, by construction
    assert f.ok == sum(r["status"] == "ok" for r in rows.values()) and f.excluded == 1  # "nogram"
    assert all("style_weight=" in r.label for r in f.rows)
    text = "\n".join(f.lines())
    assert "1 ok row(s) left out (lpips_content or gram_style is null" in text and "knee (*): sw2r0" in text
    # Maximising y: the largest gram_style at the smallest lpips_content beats everything.
    g = S.pareto(out, "lpips_content", "gram_style", maximize_y=True)
    assert [r.row_id for r in g.rows] == ["sw0r0"] and g.knee is None and "fewer than 3" in g.why_no_knee
    # Maximising both: the frontier runs the other way (largest x, largest y).
    h = S.pareto(out, "lpips_content", "gram_style", maximize_x=True, maximize_y=True)
    best = {(r.x, r.y) for r in h.rows}
    pts = [(r["lpips_content"], r["gram_style"]) for r in rows.values() if r["status"] == "ok" and r["gram_style"] is not None]
    assert best == {p for p in pts if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in pts)}
    with pytest.raises(KeyError, match="unknown metric 'style'; valid: lpips_style, lpips_content, gram_style"):
        S.pareto(out, "style", "gram_style")


def test_artfid_is_skipped_with_the_reason_and_how_to_stage(sweep):
    out, _ = sweep
    c = S.artfid(out)
    assert c.score is None and c.inception is None
    assert "no FID Inception weights in the cache" in c.reason and S.INCEPTION_URL in c.reason
    assert os.environ["STXPIPE_HOME"] in c.reason  # where to copy them
    assert f"FID needs at least {S.ARTFID_MIN_ROWS}" in c.reason
    # Weights staged, still too few rows: only the row count is the reason.
    staged = Path(os.environ["STXPIPE_HOME"]) / "weights" / S.INCEPTION_FILE
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"not really weights")
    c = S.artfid(out)
    assert c.inception == str(staged) and "Inception" not in c.reason and "ok rows" in c.reason


@pytest.mark.slow
def test_cli_summary_by_pareto_and_artfid(sweep):
    out, _ = sweep
    r = runner.invoke(app, ["results", "summary", out, "--by", "style_weight"])
    assert r.exit_code == 0, r.output
    assert "95% bootstrap CI" in r.stdout and "\ngram_style\n" in r.stdout and "\ncfsd\n" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("100.0 "))
    assert line.split()[1:3] == ["2", "2"]
    r = runner.invoke(app, ["results", "summary", out, "--by", "style_weight", "-m", "gram_style", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["metrics"] == ["gram_style"] and len(d["groups"]) == len(SWEEP)
    assert {"n", "mean", "lo", "hi"} == set(d["groups"][0]["metrics"]["gram_style"])
    r = runner.invoke(app, ["results", "summary", out, "--by", "nope"])
    assert r.exit_code == 1 and "unknown --by name 'nope'; valid:" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["results", "summary", out, "-m", "gram_style"])
    assert r.exit_code == 1 and "--metric needs --by" in r.output

    r = runner.invoke(app, ["results", "pareto", out, "--x", "lpips_content", "--y", "gram_style"])
    assert r.exit_code == 0, r.output
    knee = [x for x in r.stdout.splitlines() if x.startswith("*")]
    assert len(knee) == 1 and knee[0].split()[1] == "sw2r0"
    r = runner.invoke(app, ["results", "pareto", out, "--json"])
    assert json.loads(r.stdout)["knee"] == "sw2r0"
    r = runner.invoke(app, ["results", "pareto", out, "--y", "nope"])
    assert r.exit_code == 1 and "unknown metric 'nope'" in r.output

    r = runner.invoke(app, ["results", "artfid", out])
    assert r.exit_code == 0 and r.stdout.startswith("ArtFID: skipped: no FID Inception weights")
