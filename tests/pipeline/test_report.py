"""The HTML report: self-contained, and checked in REAL headless Chromium on the small run.

CI needs Chromium: `apt-get update && apt-get install -y chromium` (Debian/Ubuntu); without
/usr/bin/chromium (or `chromium` on PATH) the browser tests skip and say so, except when the `CI`
environment variable is set (`.ci/run` sets it): there a missing Chromium fails them, so CI can
never go green without having run them.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import report as REP
from pipeline import results as R

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
NO_CHROMIUM = "headless Chromium not installed: apt-get update && apt-get install -y chromium"
# Skips only outside CI; in CI the test runs and `chromium()` fails it, naming what is missing.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason=NO_CHROMIUM)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=15000",
    "--run-all-compositor-stages-before-draw",
]


def chromium(page: Path, profile: Path, *extra: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Open `page` (with `#fragment` when given) in headless Chromium."""
    if CHROMIUM is None:
        pytest.fail(f"CI is set and {NO_CHROMIUM} (.ci/run installs it)")
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri() + (f"#{fragment}" if fragment else "")]
    # Its own HOME and XDG folders: Chromium writes crash-report settings and a dconf cache
    # under the home even with --user-data-dir.
    home = profile / "home"
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def selftest(dom: str) -> dict:
    m = re.search(r'<pre id="selftest"[^>]*>(.*?)</pre>', dom, re.S)
    assert m and m.group(1).strip(), "the page did not finish its self-test (script error?)"
    import html

    return json.loads(html.unescape(m.group(1)))


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def assert_self_contained(text: str) -> None:
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # Inline code is allowed by its hash only: the one <script> and the one <style> of the page.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1)
    policy = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert "'unsafe-inline'" not in csp
    code = re.findall(r"<script>(.*?)</script>", text, re.S)
    styles = re.findall(r"<style>(.*?)</style>", text, re.S)
    assert len(code) == 1 and policy["script-src"] == [_sha256(code[0])]
    assert len(styles) == 1 and policy["style-src"] == [_sha256(styles[0])]
    # The only URL is the SVG namespace (an identifier, never fetched).
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=\"(?!data:)", text, re.I)


@pytest.fixture(scope="module")
def page(small_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    info = REP.write_report(small_run.out, path)
    assert (info.rows, info.ok, info.errors) == (5, 4, 1)
    # The error row's content does not exist: that is its error message, not a report warning.
    assert info.missing == (), info.missing
    return path


@pytest.mark.slow
def test_report_is_one_self_contained_file(page):
    text = page.read_text()
    assert_self_contained(text)
    assert "vgg16-hed@sha256:" in text  # the header says which weights made the results
    assert 'id="random-banner"' not in text


@pytest.mark.slow
@needs_chromium
def test_report_in_headless_chromium(page, small_run, tmp_path):
    res = chromium(page, tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    st = selftest(res.stdout)
    # Cards: content + style + output per ok row, the style of the error row (its content file does
    # not exist: a placeholder, not a broken <img>); the grid: one output per ok row.
    assert st["images"] == 3 * len(small_run.ok_ids) + 1 + len(small_run.ok_ids)
    assert st["broken"] == [] and st["images_loaded"] == st["images"]
    assert st["points"] == len(small_run.ok_ids)  # one circle per ok row in the plot...
    assert st["circles"] >= st["points"] + 2  # ...plus the legend's swatches
    assert st["cards"] == len(small_run.row_ids)
    assert (st["grid_rows"], st["grid_cols"], st["colour_by"]) == ("iterations", "style_weight", "iterations")
    assert st["grid_cells"] == 4
    assert st["errors"] == []
    assert console_lines(res.stderr) == []
    # The error row is shown with its message.
    assert "no-such-photo.jpg" in res.stdout


@pytest.mark.slow
@needs_chromium
def test_report_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    res = chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1800")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_rows(samples: Path, out: Path, weights: str) -> list[dict]:
    from stylecore.images import load_image, save_png
    from stylecore.params import Params

    content = str(samples / "content" / "chelsea.jpg")
    style = str(samples / "style" / "shipwreck.jpg")
    img = load_image(content)
    img.thumbnail((32, 32))
    now = R.now()
    rows = []
    for i, cw in enumerate((0.5, 1.0, 2.0)):
        output = str(save_png(img, out / "images" / f"r{i}.png"))
        rows.append(
            dict(
                row_id=f"r{i}",
                content=content,
                style=style,
                status="ok",
                output=output,
                lpips_style=0.5 - 0.1 * i,
                lpips_content=0.1 * i,
                iterations=2,
                seconds=0.1,
                weights=weights,
                lpips_weights=weights,
                started_at=now,
                finished_at=now,
                params=Params(size=32, iterations=2, content_weight=cw, weights="random", lpips_weights="random").to_dict(),
            )
        )
    rows.append(
        dict(
            rows[0],
            row_id="bad",
            status="error",
            error="ImageError: boom <script>alert(1)</script>",
            output=None,
            lpips_style=None,
            lpips_content=None,
        )
    )
    return rows


def test_random_weights_are_flagged_loudly(tmp_path, samples):
    out = tmp_path / "out"
    R.write_part(str(out), R.to_table(_fake_rows(samples, out, "random (RANDOM WEIGHTS, untrained: tests only)")))
    path = tmp_path / "r.html"
    info = REP.write_report(str(out), path)
    text = path.read_text()
    assert 'id="random-banner"' in text and "RANDOM WEIGHTS" in text
    assert "<script>alert(1)</script>" not in text  # error messages are data, never markup
    assert_self_contained(text)
    assert info.rows == 4 and info.errors == 1


@needs_chromium
def test_fake_report_renders_without_errors(tmp_path, samples):
    out = tmp_path / "out"
    R.write_part(str(out), R.to_table(_fake_rows(samples, out, "vgg16-hed@sha256:0123456789abcdef")))
    path = tmp_path / "r.html"
    REP.write_report(str(out), path)
    res = chromium(path, tmp_path / "profile", "--dump-dom")
    st = selftest(res.stdout)
    assert st["broken"] == [] and st["images"] > 0 and st["errors"] == []
    assert st["points"] == 3 and st["colour_by"] == "content_weight"
    assert console_lines(res.stderr) == []


def test_script_json_escapes_what_could_end_the_element():
    value = {"a": "</script><script>x</script>", "b": "a<!--<script>b", "c": "&amp; > <", "d": "\u2028\u2029", "n": None}
    text = REP.script_json(value)
    assert not any(c in text for c in "<>&\u2028\u2029")
    assert "\\u003c/script\\u003e" in text and "\\u0026" in text and "\\u2028" in text
    assert json.loads(text) == value


def test_jsonable_turns_odd_carried_values_into_json():
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    got = REP.jsonable(
        {
            "dec": decimal.Decimal("1.10"),
            "ts": when,
            "day": when.date(),
            "nested": {"k": [1, (2, 3)]},
            "blob": b"\x00\xff",
            "big": bytes(100),
            "nan": math.nan,
            "inf": -math.inf,
            "ok": 0.5,
            "obj": object,
            1: "int key",
        }
    )
    assert got["dec"] == "1.10" and got["ts"] == "2024-01-02T03:04:05+00:00" and got["day"] == "2024-01-02"
    assert got["nested"] == {"k": [1, [2, 3]]} and got["blob"] == "0x00ff"
    assert got["big"].startswith("0x" + "00" * 64) and got["big"].endswith("(100 bytes)")
    assert (got["nan"], got["inf"], got["ok"]) == ("nan", "-inf", 0.5)
    assert got["obj"] == str(object) and got["1"] == "int key"
    json.dumps(got, allow_nan=False)  # plain JSON
