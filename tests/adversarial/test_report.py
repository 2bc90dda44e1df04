"""Hostile text in a results folder, through `stxpipe report` (the real CLI, no Ray).

Content and style files are real images whose names hold `<!--<script>`, `</script>`, `&`,
quotes and U+2028; the output folder's own name is hostile too (it lands in the title and the
header); error messages and carried-through columns (text, decimal, timestamp, nested struct,
list, binary, a NaN) carry the same strings. The page is checked twice:

- with the stdlib HTML parser: exactly two `<script>` elements (the JSON data and the code),
  the JSON parses back to the original strings, no markup came from the data, and the
  Content-Security-Policy allows the script and the stylesheet only by their sha256 hashes;
- in real headless Chromium (skipped, saying so, without it): the page's own self-test finds
  no script error or CSP violation, every image decoded and the plot drew a point per ok row.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline import results as R
from pipeline.cli import app
from stylecore.params import Params
from tests.pipeline.test_report import chromium, console_lines, needs_chromium, selftest

COMMENT = "a<!--<script>b"
CLOSE = "</script><script>alert(1)</script>"
QUOTES = "q\"uo'te & amp\u2028line\u2029para"
ERROR = f"ImageError: {CLOSE} {COMMENT} & \"x\" 'y' \u2028 <img src=x onerror=alert(2)>"
GHOST = "<img src=x onerror=alert(3)>.jpg"  # a style that does not exist: listed as missing
WHEN = dt.datetime(2024, 2, 29, 12, 30, 15, 250000, tzinfo=dt.timezone.utc)
ALLOWED_TAGS = {  # every element the static page may contain: none comes from the data
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "header",
    "h1",
    "h2",
    "dl",
    "dt",
    "dd",
    "code",
    "div",
    "nav",
    "a",
    "section",
    "p",
    "label",
    "select",
    "option",
    "button",
    "span",
    "pre",
    "script",
    "table",
    "caption",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "details",
    "summary",
    "ul",
    "li",
}


class Page(HTMLParser):
    """Elements, script/style texts (raw, as the browser hashes them) and the visible text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self.title = ""
        self._raw: tuple[str, dict, list[str]] | None = None
        self._in_title = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("script", "style"):
            self._raw = (tag, a, [])
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if self._raw and tag == self._raw[0]:
            kind, attrs, parts = self._raw
            if kind == "script":
                self.scripts.append((attrs, "".join(parts)))
            else:
                self.styles.append("".join(parts))
            self._raw = None
        self._in_title = False

    def handle_data(self, data):
        if self._raw:
            self._raw[2].append(data)
        else:
            self.text.append(data)
            if self._in_title:
                self.title += data


@dataclass(frozen=True)
class Evil:
    out: Path
    page: Path
    stdout: str
    contents: tuple[str, ...]
    styles: tuple[str, ...]
    ok: int
    rows: int


def _image(path: Path, colour: tuple[int, int, int], size=(24, 16)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _carried(i: int) -> dict:
    return {
        "note": f"{CLOSE} {COMMENT} {QUOTES} #{i}",
        "price": decimal.Decimal("12.50") + i,
        "taken": WHEN,
        "meta": {"who": CLOSE, "depth": {"k": QUOTES, "n": i}},
        "tags": [COMMENT, "&amp;", "\u2028"],
        "raw": b"<\x00>&" + bytes([i]),
        "ratio": math.nan if i == 0 else 0.25 * i,
    }


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> Evil:
    root = tmp_path_factory.mktemp("evil")
    contents = (_image(root / "in" / f"{COMMENT}.jpg", (200, 40, 40)), _image(root / "in" / f"{QUOTES}.png", (40, 200, 40)))
    # "</script>" holds a "/": the style image sits in folders named by the pieces around it.
    styles = (_image(root / "in" / f"{CLOSE}.jpg", (40, 40, 200)),)
    out = root / f"run {COMMENT} & 'q' \"d\""
    now = R.now()
    rows = []
    for i, (content, sw) in enumerate((c, sw) for c in contents for sw in (10.0, 1000.0)):
        output = _image(out / "images" / f"r{i}.png", (30 * i, 90, 160), (16, 16))
        # A snapshot whose file name is hostile, stored relative to the output folder.
        snap = _image(out / "images" / f"{COMMENT} {QUOTES} r{i}.step2.png", (90, 30 * i, 160), (12, 12))
        rows.append(
            dict(
                row_id=f"r{i}",
                content=content,
                style=styles[0],
                status=R.STATUS_OK,
                output=output,
                lpips_style=0.6 - 0.1 * i,
                lpips_content=0.1 + 0.05 * i,
                seconds=0.5,
                iterations=2,
                weights="vgg16-hed@sha256:0123456789abcdef",
                lpips_weights="vgg16-hed@sha256:0123456789abcdef",
                started_at=now,
                finished_at=now,
                params=Params(size=32, iterations=2, style_weight=sw).to_dict(),
                snapshots=[str(Path(snap).relative_to(out))],
                loss_curve={
                    "step": [0, 1, 2],
                    "total": [3.0, 2.0, 1.0],
                    "content": [0.1, 0.2, 0.3],
                    "style": [1.0, 0.5, 0.2],
                    "tv": [0.01, 0.01, 0.01],
                    "hist": [],
                    "scale_start": [0],
                },
                **_carried(i),
            )
        )
    ghost = str(root / "in" / GHOST)
    rows.append(dict(rows[0], row_id="ghost", style=ghost, lpips_style=0.3, lpips_content=0.3, **_carried(len(rows))))
    rows.append(
        dict(
            rows[1],
            row_id="bad",
            status=R.STATUS_ERROR,
            error=ERROR,
            output=None,
            lpips_style=None,
            lpips_content=None,
            **_carried(len(rows)),
        )
    )
    R.write_part(str(out), R.to_table(rows))
    page = root / "page.html"
    res = CliRunner().invoke(app, ["report", str(out), "-o", str(page)])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return Evil(out, page, res.output, contents, styles, ok=len(rows) - 1, rows=len(rows))


def _csp(page: Page) -> dict[str, list[str]]:
    metas = [a for t, a in page.tags if t == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy"]
    assert len(metas) == 1, metas
    return {d.split()[0]: d.split()[1:] for d in (metas[0]["content"] or "").split(";") if d.strip()}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def test_data_is_data_and_the_policy_pins_the_script(evil):
    raw = evil.page.read_text(encoding="utf-8")
    page = Page(raw)

    # Exactly the page's two scripts; nothing in the data made an element or an event handler.
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    assert {t for t, _ in page.tags} <= ALLOWED_TAGS, {t for t, _ in page.tags} - ALLOWED_TAGS
    assert not [(t, k) for t, a in page.tags for k in a if k.startswith("on")]
    assert "alert(" not in page.scripts[1][1]

    # The JSON block has no character that could end it or open a comment, and parses back exactly.
    data_text = page.scripts[0][1]
    assert not any(c in data_text for c in "<>&\u2028\u2029"), "unescaped character in the JSON block"
    assert "\\u003c/script\\u003e" in data_text and "\\u003c!--" in data_text and "\\u0026" in data_text
    data = json.loads(data_text)
    rows = {r["row_id"]: r for r in data["rows"]}
    assert len(rows) == evil.rows and data["out"] == str(evil.out)
    assert rows["bad"]["error"] == ERROR and rows["bad"]["status"] == "error"
    assert {r["content_path"] for r in rows.values()} == set(evil.contents)
    assert rows["r0"]["style_path"] == evil.styles[0] and rows["r0"]["style"] == "script>.jpg"
    assert rows["ghost"]["style_path"].endswith(GHOST)
    assert rows["r2"]["content"] == f"{QUOTES}.png"

    # Carried columns of every awkward type: JSON values, strings intact, never NaN.
    assert data["carried"] == ["note", "price", "taken", "meta", "tags", "raw", "ratio"]
    x0, x1 = rows["r0"]["x"], rows["r1"]["x"]
    assert x0["note"] == f"{CLOSE} {COMMENT} {QUOTES} #0"
    assert decimal.Decimal(x1["price"]) == decimal.Decimal("13.50")
    assert dt.datetime.fromisoformat(x0["taken"]) == WHEN
    assert x1["meta"] == {"who": CLOSE, "depth": {"k": QUOTES, "n": 1}}
    assert x0["tags"] == [COMMENT, "&amp;", "\u2028"]
    assert x1["raw"] == "0x" + (b"<\x00>&" + bytes([1])).hex()
    assert x0["ratio"] == "nan" and x1["ratio"] == 0.25

    # Header text from the manifest and the folder name: escaped, so it reads back as text.
    text = "".join(page.text)
    assert page.title == f"stxpipe results: {evil.out.name}"
    assert str(evil.out) in text
    assert rows["ghost"]["style_path"] == str(evil.out.parent / "in" / GHOST)
    assert rows["ghost"]["style_path"] in text  # the missing-image list names it, as text

    # The policy: no network, and the one script and the one stylesheet allowed by their hashes.
    csp = _csp(page)
    assert csp["default-src"] == ["'none'"] and csp["img-src"] == ["data:"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-inline'" not in csp["style-src"]
    assert csp["script-src"] == [_sha256(page.scripts[1][1])]
    assert len(page.styles) == 1 and csp["style-src"] == [_sha256(page.styles[0])]
    assert 'style="' not in raw  # no inline style attribute for the hash-only style-src to block


@needs_chromium
def test_hostile_report_renders_in_chromium(evil, tmp_path):
    res = chromium(evil.page, tmp_path / "profile", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    st = selftest(res.stdout)
    assert st["errors"] == [], st["errors"]  # script errors and CSP violations land here
    assert console_lines(res.stderr) == []
    assert st["cards"] == evil.rows and st["rows"] == evil.rows
    assert st["points"] == evil.ok and st["circles"] > st["points"]  # the plot drew, legend included
    assert st["broken"] == [] and st["images"] == st["images_loaded"] > 0
    assert st["snapshots"] == st["curves"] == evil.rows  # every row's strip and curve drew (the error row's too)
    assert st["ci_tables"] == 2  # by style and by style_weight, the hostile style name as text
    dom = Page(res.stdout)
    assert len(dom.scripts) == 2  # nothing the data held became a script, even after the page ran
    assert not [(t, k) for t, a in dom.tags for k in a if k.startswith("on")]
    text = "".join(dom.text)
    assert ERROR in text  # the error list shows the message as text
    assert f"{CLOSE} {COMMENT} {QUOTES} #0" in text  # and the card its carried note
