"""One self-contained HTML report of a run's results: contact sheet, errors, grid, scatter plot.

Everything is inside the file: thumbnails (<= 160 px) as base64 data URIs, the data as JSON,
plain JavaScript and SVG written here (no CDN, no fonts, no server). A Content-Security-Policy
meta tag forbids any network fetch, so the report opens the same from disk, from an e-mail or
on an air-gapped machine. The page checks itself on load and writes what it found into
`<pre id="selftest">` (images loaded, broken, plot points, script errors): the tests read it
from headless Chromium.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import query as Q
from pipeline import results as R
from pipeline.manifest import is_uri, read_bytes

THUMB_PX = 160
_SORTABLE = Q.METRICS


@dataclass(frozen=True)
class ReportInfo:
    """What `write_report` wrote."""

    path: str
    rows: int
    ok: int
    errors: int
    images: int
    bytes: int
    missing: tuple[str, ...] = field(default_factory=tuple)  # images that could not be read (with why)


# --------------------------------------------------------------------------------------------
# Images


class _Thumbs:
    """Thumbnails as data URIs, each distinct source read once; failures remembered with why."""

    def __init__(self, out: str, size: int):
        self.out = out
        self.size = size
        self.images: dict[str, str] = {}  # key -> data URI
        self._keys: dict[str, str | None] = {}  # source -> key (None: failed)
        self.missing: dict[str, str] = {}  # source -> reason

    def _locate(self, src: str) -> str:
        if is_uri(src) or os.path.isabs(src) or os.path.exists(src):
            return src
        alt = R.join(self.out, src)  # a path stored relative to the output folder
        return alt if is_uri(alt) or os.path.exists(alt) else src

    def key(self, src: str | None) -> str | None:
        """The key of `src`'s thumbnail in `images`, or None when it cannot be read."""
        if not src:
            return None
        if src in self._keys:
            return self._keys[src]
        from PIL import Image  # local: Pillow is only needed when writing a report

        from stylecore.images import ImageError, load_image

        try:
            img = load_image(read_bytes(self._locate(src)), name=src)
            img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
            k = f"i{len(self.images)}"
            self.images[k] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        except (OSError, ImageError, ValueError) as e:
            self.missing[src] = str(e).splitlines()[0][:300]
            k = None
        self._keys[src] = k
        return k


# --------------------------------------------------------------------------------------------
# Data


def _basename(p: str | None) -> str:
    if not p:
        return ""
    return p.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _style_name(style: str | None) -> str:
    return " + ".join(_basename(s) for s in (style or "").split(";") if s)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def collect(out: str, thumb: int = THUMB_PX) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (thumbnails included)."""
    con = Q.connect(out)
    try:
        summ = Q._summary(con, out)
        exprs = Q.param_text_exprs(con)
        varying = summ.varying
        ptext = ", ".join(f"{e} AS {Q._sql_ident('p_' + n)}" for n, e in exprs.items())
        table = Q.run_sql(
            con,
            f"SELECT *, {ptext} FROM results ORDER BY content, style, "
            + ", ".join(f"{Q._sql_ident('p_' + n)}" for n in varying) + (", " if varying else "") + "row_id",
        )
    finally:
        con.close()
    thumbs = _Thumbs(out, thumb)
    ok_sources: set[str] = set()  # a missing input of an error row is what its error says: no warning
    rows = []
    for i, r in enumerate(table.to_pylist()):
        styles = [s for s in (r.get("style") or "").split(";") if s]
        if r["status"] == R.STATUS_OK:
            ok_sources.update(x for x in [r.get("content"), *styles, r.get("output")] if x)
        ptexts = {n: r[f"p_{n}"] for n in exprs}
        rows.append({
            "i": i,
            "row_id": r["row_id"],
            "status": r["status"],
            "error": r.get("error"),
            "content": _basename(r.get("content")),
            "content_path": r.get("content"),
            "style": _style_name(r.get("style")),
            "style_path": r.get("style"),
            "c": thumbs.key(r.get("content")),
            "s": [thumbs.key(s) for s in styles],
            "o": thumbs.key(r.get("output")) if r["status"] == R.STATUS_OK else None,
            "output": r.get("output"),
            "m": {k: _finite(r.get(k)) for k in _SORTABLE},
            "p": {n: ptexts[n] for n in varying},
            "attempt": r.get("attempt"),
            "worker": r.get("worker"),
            "device": r.get("device"),
            "weights": r.get("weights"),
        })
    # Params every row shares, shown once in the header.
    fixed = {}
    if rows:
        first = table.slice(0, 1).to_pylist()[0]
        fixed = {n: first[f"p_{n}"] for n in exprs if n not in varying}
    # Grid / colour axes: varying params (most values first), then style and content if they vary.
    axes = {n: list(v) for n, v in varying.items()}
    for key in ("style", "content"):
        vals = sorted({r[key] for r in rows}, key=Q._natural_key)
        if len(vals) > 1:
            axes[key] = vals
    for r in rows:
        r["p"]["style"] = r["style"]
        r["p"]["content"] = r["content"]
    return {
        "out": out,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": summ,
        "rows": rows,
        "axes": axes,
        "varying": list(varying),
        "fixed": fixed,
        "metrics": list(_SORTABLE),
        "images": thumbs.images,
        "missing": {k: v for k, v in thumbs.missing.items() if k in ok_sources},
    }


# --------------------------------------------------------------------------------------------
# HTML


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def _weights_banner(summ: Q.Summary) -> str:
    labels = list(dict.fromkeys(summ.weights + summ.lpips_weights))
    parts = []
    if summ.random_weights:
        parts.append(
            '<div class="banner random" id="random-banner">RANDOM WEIGHTS: some rows were produced with untrained, '
            "randomly initialised networks. Their images and LPIPS values mean nothing; they exist only to test "
            "the plumbing. Rerun with real weights (<code>stxpipe models list</code>).</div>"
        )
    if any(w.startswith("vgg16-hed") for w in labels):
        parts.append(
            '<div class="banner hed">vgg16-hed: the offline stand-in (the VGG-16 backbone of the HED edge detector). '
            "It stylises for real, but its LPIPS values are not calibrated against ImageNet VGG and are not "
            "comparable with the paper's numbers.</div>"
        )
    return "\n".join(parts)


def _summary_tables(summ: Q.Summary) -> str:
    out = []
    for key, stats in summ.groups.items():
        head = "".join(f"<th>{_e(h)}</th>" for h in (key, "rows", "ok", "LPIPS style mean", "median", "LPIPS content mean", "median", "s/row"))
        body = "".join(
            "<tr>" + f"<td>{_e(g.value)}</td><td>{g.rows}</td><td>{g.ok}</td>"
            + "".join(f"<td>{Q._f(x)}</td>" for x in (g.lpips_style_mean, g.lpips_style_median, g.lpips_content_mean, g.lpips_content_median))
            + f"<td>{Q._f(g.seconds_mean, 2)}</td></tr>"
            for g in stats
        )
        out.append(f'<table class="stats"><caption>by {_e(key)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "\n".join(out)


def render(data: dict[str, Any], title: str | None = None) -> str:
    """The report page for `collect()`'s data."""
    summ: Q.Summary = data["summary"]
    title = title or f"stxpipe results: {_basename(data['out']) or data['out']}"
    status = ", ".join(f"{v} {k}" for k, v in sorted(summ.status.items()))
    weights = ", ".join(summ.weights) or "-"
    lpw = ", ".join(summ.lpips_weights) or "-"
    fixed = " ".join(f"{k}={v}" for k, v in data["fixed"].items())
    varying = ", ".join(f"{k} ({len(v)})" for k, v in summ.varying.items()) or "none"
    timing = f"{summ.seconds_total:.1f} s compute"
    if summ.seconds_per_row_mean is not None:
        timing += f", {summ.seconds_per_row_mean:.2f} s per row (mean)"
    if summ.wall_seconds is not None:
        timing += f", {summ.wall_seconds:.1f} s wall"
    payload = {k: v for k, v in data.items() if k not in ("summary",)}
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("</", "<\\/")
    missing = ""
    if data["missing"]:
        items = "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in data["missing"].items())
        missing = f'<details class="missing"><summary>{len(data["missing"])} image(s) could not be read</summary><ul>{items}</ul></details>'
    return _PAGE.format(
        title=_e(title),
        out=_e(data["out"]),
        generated=_e(data["generated"]),
        rows=summ.rows,
        status=_e(status),
        attempts=summ.attempts,
        timing=_e(timing),
        weights=_e(weights),
        lpips_weights=_e(lpw),
        banner=_weights_banner(summ),
        pair=_e(f"style {Q._f(summ.lpips_style_mean)} / {Q._f(summ.lpips_style_median)}, content {Q._f(summ.lpips_content_mean)} / {Q._f(summ.lpips_content_median)}"),
        varying=_e(varying),
        fixed=_e(fixed or "-"),
        missing=missing,
        tables=_summary_tables(summ),
        css=_CSS,
        js=_JS,
        data=blob,
    )


def write_report(out: str, path: str | os.PathLike, *, title: str | None = None, thumb: int = THUMB_PX) -> ReportInfo:
    """Write the HTML report of `out`'s results to `path` (atomically). `thumb`: the long side
    of the thumbnails in px (at most 160). Raises NoResultsError when there are no results."""
    if not 16 <= thumb <= THUMB_PX:
        raise ValueError(f"thumb must be between 16 and {THUMB_PX} px, got {thumb}")
    data = collect(out, thumb)
    page = render(data, title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    summ: Q.Summary = data["summary"]
    return ReportInfo(
        path=str(target),
        rows=summ.rows,
        ok=summ.status.get(R.STATUS_OK, 0),
        errors=summ.status.get(R.STATUS_ERROR, 0),
        images=len(data["images"]),
        bytes=len(page.encode("utf-8")),
        missing=tuple(f"{k}: {v}" for k, v in data["missing"].items()),
    )


# --------------------------------------------------------------------------------------------
# The page. CSS and JS are substituted as values, so their braces need no escaping.

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
{banner}
<dl class="facts">
<dt>weights</dt><dd><code>{weights}</code></dd>
<dt>LPIPS weights</dt><dd><code>{lpips_weights}</code></dd>
<dt>rows</dt><dd>{rows} ({status}); {attempts} attempts stored</dd>
<dt>time</dt><dd>{timing}</dd>
<dt>LPIPS Distance (mean / median)</dt><dd>{pair}</dd>
<dt>params that vary</dt><dd>{varying}</dd>
<dt>fixed params</dt><dd class="small">{fixed}</dd>
<dt>results</dt><dd><code>{out}</code>, generated {generated}</dd>
</dl>
{missing}
<nav><a href="#sheet">contact sheet</a> · <a href="#errors">errors</a> · <a href="#grid">grid</a> · <a href="#plot">plot</a> · <a href="#tables">tables</a></nav>
</header>

<section id="plot"><h2>Content / style trade-off</h2>
<p class="hint">Each point is one ok row: LPIPS Distance to the content image (x) against the distance to the style image (y). Lower = closer to the style, further left = closer to the content; a higher style weight moves points down and right.</p>
<label>colour by <select id="colour-by"></select></label>
<div id="scatter"></div>
</section>

<section id="grid"><h2>Grid</h2>
<p class="hint">Outputs laid out by two parameters, like the paper's figures. Caption: LPIPS to style / to content.</p>
<label>rows <select id="grid-rows"></select></label> <label>columns <select id="grid-cols"></select></label>
<div id="grid-view"></div>
</section>

<section id="sheet"><h2>Contact sheet</h2>
<div class="controls">
<label>sort by <select id="sort-by"></select></label>
<button id="sort-dir" type="button">ascending</button>
<label>show <select id="show"><option value="all">all rows</option><option value="ok">ok</option><option value="error">errors</option></select></label>
<span id="shown"></span>
</div>
<div id="cards"></div>
</section>

<section id="errors"><h2>Errors</h2><div id="error-list"></div></section>

<section id="tables"><h2>Tables</h2>
<p class="hint">The same numbers as <code>stxpipe results summary</code>.</p>
{tables}
</section>

<pre id="selftest" hidden></pre>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

_CSS = """
:root { --ok:#1b7f3b; --err:#b3261e; --ink:#1d1d1f; --mute:#666; --line:#ddd; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0 24px 48px; }
h1 { font-size: 22px; margin: 18px 0 10px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
code { font: 12px ui-monospace, Menlo, Consolas, monospace; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 8px 0; font-weight: 600; }
.banner.random { background: #b3261e; color: #fff; font-size: 18px; border: 4px solid #5c0f0b; }
.banner.hed { background: #fff4d6; border: 1px solid #e0b84f; font-weight: 500; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
.facts dt { color: var(--mute); } .facts dd { margin: 0; } .small { font-size: 12px; color: var(--mute); }
nav { margin: 10px 0; } .hint { color: var(--mute); margin: 2px 0 8px; }
select, button { font: inherit; padding: 2px 6px; }
.controls { display: flex; gap: 14px; align-items: center; margin-bottom: 10px; flex-wrap: wrap; }
#cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px; min-width: 396px; max-width: 100%; background: #fafafa; }
.card .meta { max-width: 520px; }
.card.error { border-color: var(--err); background: #fff5f4; }
.thumbs { display: flex; gap: 6px; }
figure { margin: 0; text-align: center; }
figure img, .ph { width: 120px; height: 120px; object-fit: contain; background: #eee; border-radius: 3px; display: block; }
.ph { display: flex; align-items: center; justify-content: center; color: var(--mute); font-size: 12px; padding: 6px; text-align: center; }
.card.error .ph.out { color: var(--err); background: #fde3e0; }
figcaption { font-size: 11px; color: var(--mute); max-width: 120px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.meta { margin-top: 6px; font-size: 12px; }
.pair b { font-variant-numeric: tabular-nums; }
.params { color: var(--mute); word-break: break-word; }
.err-msg { white-space: pre-wrap; color: var(--err); font: 12px ui-monospace, Menlo, Consolas, monospace; margin: 4px 0 0; max-height: 8em; overflow: auto; }
.status-ok { color: var(--ok); } .status-error { color: var(--err); font-weight: 600; }
table.grid { border-collapse: collapse; }
table.grid th { font-weight: 600; padding: 4px 8px; background: #f2f2f2; font-size: 12px; }
table.grid td { border: 1px solid var(--line); padding: 4px; vertical-align: top; }
.cell { display: flex; flex-wrap: wrap; gap: 4px; }
.cell figure img, .cell .ph { width: 110px; height: 110px; }
.cell figcaption { max-width: 110px; }
table.stats { border-collapse: collapse; margin: 0 16px 16px 0; display: inline-table; vertical-align: top; }
table.stats caption { text-align: left; font-weight: 600; padding: 4px 0; }
table.stats th, table.stats td { border: 1px solid var(--line); padding: 3px 8px; font-size: 12px; }
table.stats td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
#scatter svg { background: #fff; border: 1px solid var(--line); }
#scatter circle { stroke: #222; stroke-width: 0.6; fill-opacity: 0.85; }
#error-list .e { border-left: 4px solid var(--err); padding: 4px 10px; margin: 6px 0; background: #fff5f4; }
details.missing { color: var(--err); margin: 6px 0; }
"""

_JS = r"""
"use strict";
var ERRORS = [];
window.addEventListener("error", function (e) { ERRORS.push(String(e.message || e.type) + (e.filename ? " @" + e.filename + ":" + e.lineno : "")); });
window.addEventListener("unhandledrejection", function (e) { ERRORS.push("unhandled rejection: " + String(e.reason)); });
document.addEventListener("securitypolicyviolation", function (e) { ERRORS.push("CSP blocked " + e.blockedURI + " (" + e.violatedDirective + ")"); });
(function () {
  var origError = console.error;
  console.error = function () { ERRORS.push("console.error: " + Array.prototype.join.call(arguments, " ")); origError.apply(console, arguments); };
})();

var D = JSON.parse(document.getElementById("data").textContent);
var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
var SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, kids) {
  var n = document.createElement(tag);
  for (var k in (attrs || {})) {
    if (k === "text") n.textContent = attrs[k]; else if (k === "cls") n.className = attrs[k]; else n.setAttribute(k, attrs[k]);
  }
  (kids || []).forEach(function (c) { if (c) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
  return n;
}
function sv(tag, attrs, text) {
  var n = document.createElementNS(SVGNS, tag);
  for (var k in (attrs || {})) n.setAttribute(k, attrs[k]);
  if (text !== undefined) n.textContent = text;
  return n;
}
function fmt(x) {
  if (x === null || x === undefined) return "\u2013";
  var a = Math.abs(x);
  if (a !== 0 && (a >= 1e4 || a < 1e-3)) return x.toExponential(2);
  return a >= 100 ? x.toFixed(1) : x.toFixed(4);
}
function natural(a, b) {
  var fa = parseFloat(a), fb = parseFloat(b);
  var na = String(fa) !== "NaN" && isFinite(a), nb = String(fb) !== "NaN" && isFinite(b);
  if (na && nb) return fa - fb;
  if (na !== nb) return na ? -1 : 1;
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}
function thumb(key, caption, alt, placeholder, phClass) {
  var f = el("figure");
  if (key && D.images[key]) {
    var img = el("img", { alt: alt, title: alt });
    img.src = D.images[key];
    f.appendChild(img);
  } else {
    f.appendChild(el("div", { cls: "ph " + (phClass || ""), title: alt, text: placeholder }));
  }
  if (caption !== null) f.appendChild(el("figcaption", { text: caption, title: caption }));
  return f;
}
function pairText(r) { return "style " + fmt(r.m.lpips_style) + " \u00b7 content " + fmt(r.m.lpips_content); }
function paramText(r) {
  return D.varying.map(function (k) { return k + "=" + r.p[k]; }).join("  ");
}
function tooltip(r) {
  return r.row_id + " [" + r.status + "]\n" + r.content + " \u00d7 " + r.style + "\nLPIPS " + pairText(r) +
    (D.varying.length ? "\n" + paramText(r) : "") + (r.error ? "\n" + r.error : "");
}

// ---------------------------------------------------------------- contact sheet
var CARDS = [];
function buildCards() {
  var box = document.getElementById("cards");
  D.rows.forEach(function (r) {
    var styleFigs = r.s.length ? r.s.map(function (k, j) {
      var names = r.style.split(" + ");
      return thumb(k, "style: " + (names[j] || ""), "style " + (names[j] || ""), "style image missing");
    }) : [thumb(null, "style", "style", "no style")];
    var out = r.status === "ok"
      ? thumb(r.o, "output", "output " + r.row_id, "output image missing")
      : thumb(null, "output", "error " + r.row_id, "error: no output", "out");
    var thumbs = el("div", { cls: "thumbs" }, [thumb(r.c, "content: " + r.content, "content " + r.content, "content image missing")].concat(styleFigs).concat([out]));
    var meta = el("div", { cls: "meta" }, [
      el("div", {}, [el("code", { text: r.row_id }), " ", el("span", { cls: "status-" + r.status, text: r.status }),
        r.attempt && r.attempt > 1 ? " (attempt " + r.attempt + ")" : ""]),
      el("div", { cls: "pair" }, ["LPIPS to style ", el("b", { text: fmt(r.m.lpips_style) }), " \u00b7 to content ", el("b", { text: fmt(r.m.lpips_content) }),
        r.m.seconds !== null ? " \u00b7 " + r.m.seconds.toFixed(2) + " s" : ""]),
      D.varying.length ? el("div", { cls: "params", text: paramText(r) }) : null,
      r.error ? el("pre", { cls: "err-msg", text: r.error }) : null
    ]);
    var card = el("div", { cls: "card " + r.status, id: "row-" + r.row_id, title: tooltip(r) }, [thumbs, meta]);
    card.dataset.i = r.i;
    CARDS[r.i] = card;
    box.appendChild(card);
  });
}
function sortCards() {
  var key = document.getElementById("sort-by").value;
  var dir = document.getElementById("sort-dir").dataset.dir === "desc" ? -1 : 1;
  var show = document.getElementById("show").value;
  function val(r) {
    if (key === "default") return r.i;
    if (key in r.m) return r.m[key];
    if (key === "row_id") return r.row_id;
    return r.p[key];
  }
  var rows = D.rows.slice().sort(function (a, b) {
    var va = val(a), vb = val(b);
    if (va === null || va === undefined) return (vb === null || vb === undefined) ? a.i - b.i : 1;  // missing last
    if (vb === null || vb === undefined) return -1;
    var c = typeof va === "number" && typeof vb === "number" ? va - vb : natural(va, vb);
    return c !== 0 ? dir * c : a.i - b.i;
  });
  var box = document.getElementById("cards"), n = 0;
  rows.forEach(function (r) {
    var c = CARDS[r.i];
    var visible = show === "all" || r.status === show;
    c.hidden = !visible;
    if (visible) n++;
    box.appendChild(c);
  });
  document.getElementById("shown").textContent = n + " of " + D.rows.length + " rows";
}
function setupSort() {
  var sel = document.getElementById("sort-by");
  sel.appendChild(el("option", { value: "default", text: "content, style, params" }));
  D.metrics.forEach(function (m) {
    if (D.rows.some(function (r) { return r.m[m] !== null; })) sel.appendChild(el("option", { value: m, text: m }));
  });
  Object.keys(D.axes).forEach(function (k) { sel.appendChild(el("option", { value: k, text: k })); });
  sel.appendChild(el("option", { value: "row_id", text: "row_id" }));
  var btn = document.getElementById("sort-dir");
  btn.dataset.dir = "asc";
  btn.addEventListener("click", function () {
    btn.dataset.dir = btn.dataset.dir === "asc" ? "desc" : "asc";
    btn.textContent = btn.dataset.dir === "asc" ? "ascending" : "descending";
    sortCards();
  });
  sel.addEventListener("change", sortCards);
  document.getElementById("show").addEventListener("change", sortCards);
}

// ---------------------------------------------------------------- errors
function buildErrors() {
  var box = document.getElementById("error-list");
  var errs = D.rows.filter(function (r) { return r.status !== "ok"; });
  if (!errs.length) { box.appendChild(el("p", { cls: "hint", text: "No errors." })); return; }
  errs.forEach(function (r) {
    box.appendChild(el("div", { cls: "e" }, [
      el("div", {}, [el("a", { href: "#row-" + r.row_id }, [el("code", { text: r.row_id })]), " " + r.content + " \u00d7 " + r.style +
        (r.attempt ? " \u00b7 attempt " + r.attempt : "") + (r.worker ? " \u00b7 worker " + r.worker : "")]),
      el("pre", { cls: "err-msg", text: r.error || "(no message)" })
    ]));
  });
}

// ---------------------------------------------------------------- grid
function axisOptions(sel, def, none) {
  if (none) sel.appendChild(el("option", { value: "", text: "(none)" }));
  Object.keys(D.axes).forEach(function (k) { sel.appendChild(el("option", { value: k, text: k + " (" + D.axes[k].length + ")" })); });
  sel.value = def;
}
function buildGrid() {
  var rk = document.getElementById("grid-rows").value, ck = document.getElementById("grid-cols").value;
  var box = document.getElementById("grid-view");
  box.textContent = "";
  var rvals = rk ? D.axes[rk] : [""], cvals = ck ? D.axes[ck] : [""];
  var table = el("table", { cls: "grid" });
  var head = el("tr", {}, [el("th", { text: (rk || "") + (rk && ck ? " \\ " : "") + (ck || "") })]);
  cvals.forEach(function (c) { head.appendChild(el("th", { text: ck ? c : "" })); });
  table.appendChild(head);
  rvals.forEach(function (rv) {
    var tr = el("tr", {}, [el("th", { text: rk ? rv : "" })]);
    cvals.forEach(function (cv) {
      var cell = el("div", { cls: "cell" });
      D.rows.forEach(function (r) {
        if ((rk && r.p[rk] !== rv) || (ck && r.p[ck] !== cv)) return;
        var cap = r.status === "ok" ? fmt(r.m.lpips_style) + " / " + fmt(r.m.lpips_content) : "error";
        var f = r.status === "ok" ? thumb(r.o, cap, "output " + r.row_id, "output missing") : thumb(null, cap, "error " + r.row_id, "error", "out");
        f.title = tooltip(r);
        cell.appendChild(f);
      });
      if (!cell.childNodes.length) cell.appendChild(el("span", { cls: "hint", text: "\u2013" }));
      tr.appendChild(el("td", {}, [cell]));
    });
    table.appendChild(tr);
  });
  box.appendChild(table);
}
function setupGrid() {
  var keys = Object.keys(D.axes);
  axisOptions(document.getElementById("grid-rows"), keys.length > 1 ? keys[0] : "", true);
  axisOptions(document.getElementById("grid-cols"), keys.length > 1 ? keys[1] : (keys[0] || ""), true);
  document.getElementById("grid-rows").addEventListener("change", buildGrid);
  document.getElementById("grid-cols").addEventListener("change", buildGrid);
  buildGrid();
}

// ---------------------------------------------------------------- scatter
function ticks(lo, hi, n) {
  var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / n)));
  var err = n / span * step;
  if (err <= 0.15) step *= 10; else if (err <= 0.35) step *= 5; else if (err <= 0.75) step *= 2;
  var out = [];
  for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}
function tickFmt(ts) {
  if (ts.length < 2) return function (t) { return fmt(t); };
  var step = Math.abs(ts[1] - ts[0]), d = Math.max(0, Math.min(8, -Math.floor(Math.log10(step))));
  return function (t) { return t.toFixed(d); };
}
function extent(vals) {
  var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
  if (!(hi > lo)) { var pad = Math.abs(lo) * 0.1 || 0.05; lo -= pad; hi += pad; }
  var m = (hi - lo) * 0.06;
  return [Math.max(0, lo - m), hi + m];
}
function colours(values) {
  var map = {};
  values.forEach(function (v, i) {
    map[v] = values.length <= PALETTE.length ? PALETTE[i] : "hsl(" + Math.round(360 * i / values.length) + ",65%,48%)";
  });
  return map;
}
function buildScatter() {
  var key = document.getElementById("colour-by").value;
  var box = document.getElementById("scatter");
  box.textContent = "";
  var pts = D.rows.filter(function (r) { return r.status === "ok" && r.m.lpips_style !== null && r.m.lpips_content !== null; });
  var W = 820, H = 460, L = 70, R = 220, T = 20, B = 56;
  var svg = sv("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "lpips_content against lpips_style" });
  if (!pts.length) {
    svg.appendChild(sv("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#666" }, "no ok rows with LPIPS values to plot"));
    box.appendChild(svg);
    return;
  }
  var xe = extent(pts.map(function (r) { return r.m.lpips_content; }));
  var ye = extent(pts.map(function (r) { return r.m.lpips_style; }));
  var pw = W - L - R, ph = H - T - B;
  function X(v) { return L + (v - xe[0]) / (xe[1] - xe[0]) * pw; }
  function Y(v) { return T + ph - (v - ye[0]) / (ye[1] - ye[0]) * ph; }
  svg.appendChild(sv("rect", { x: L, y: T, width: pw, height: ph, fill: "#fcfcfc", stroke: "#999" }));
  var xt = ticks(xe[0], xe[1], 6), yt = ticks(ye[0], ye[1], 6), xf = tickFmt(xt), yf = tickFmt(yt);
  xt.forEach(function (t) {
    svg.appendChild(sv("line", { x1: X(t), x2: X(t), y1: T, y2: T + ph, stroke: "#eee" }));
    svg.appendChild(sv("text", { x: X(t), y: T + ph + 16, "text-anchor": "middle", "font-size": 11, fill: "#444" }, xf(t)));
  });
  yt.forEach(function (t) {
    svg.appendChild(sv("line", { x1: L, x2: L + pw, y1: Y(t), y2: Y(t), stroke: "#eee" }));
    svg.appendChild(sv("text", { x: L - 6, y: Y(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#444" }, yf(t)));
  });
  svg.appendChild(sv("text", { x: L + pw / 2, y: H - 14, "text-anchor": "middle", "font-size": 13, "class": "axis-label" }, "lpips_content: LPIPS Distance to the content image"));
  svg.appendChild(sv("text", { x: 16, y: T + ph / 2, "text-anchor": "middle", "font-size": 13, "class": "axis-label", transform: "rotate(-90 16 " + (T + ph / 2) + ")" }, "lpips_style: LPIPS Distance to the style image"));
  var values = key ? D.axes[key] : ["all rows"];
  var cmap = colours(values);
  pts.forEach(function (r) {
    var c = sv("circle", { cx: X(r.m.lpips_content).toFixed(1), cy: Y(r.m.lpips_style).toFixed(1), r: 6, fill: cmap[key ? r.p[key] : "all rows"] || "#888" });
    c.appendChild(sv("title", {}, tooltip(r)));
    svg.appendChild(c);
  });
  var lg = sv("g", { "class": "legend", transform: "translate(" + (L + pw + 18) + "," + T + ")" });
  lg.appendChild(sv("text", { x: 0, y: 4, "font-size": 12, "font-weight": 600 }, key || "colour"));
  values.forEach(function (v, i) {
    lg.appendChild(sv("circle", { cx: 6, cy: 22 + i * 18, r: 6, fill: cmap[v] }));
    var label = String(v);
    lg.appendChild(sv("text", { x: 18, y: 26 + i * 18, "font-size": 12 }, label.length > 26 ? label.slice(0, 25) + "\u2026" : label));
  });
  svg.appendChild(lg);
  box.appendChild(svg);
}
function setupScatter() {
  var sel = document.getElementById("colour-by");
  var keys = Object.keys(D.axes);
  axisOptions(sel, keys[0] || "", true);
  sel.addEventListener("change", buildScatter);
  buildScatter();
}

// ---------------------------------------------------------------- self-check
function selftest() {
  var imgs = Array.prototype.slice.call(document.images);
  var waits = imgs.map(function (i) { return i.decode ? i.decode().catch(function () {}) : Promise.resolve(); });
  Promise.all(waits).then(function () {
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
    var out = {
      rows: D.rows.length, images: imgs.length, images_loaded: imgs.length - broken.length, broken: broken,
      circles: document.querySelectorAll("#scatter svg circle").length,
      points: document.querySelectorAll("#scatter svg > circle").length,
      grid_cells: document.querySelectorAll("#grid-view td").length,
      cards: document.querySelectorAll("#cards .card").length,
      grid_rows: document.getElementById("grid-rows").value, grid_cols: document.getElementById("grid-cols").value,
      colour_by: document.getElementById("colour-by").value,
      errors: ERRORS
    };
    var pre = document.getElementById("selftest");
    pre.textContent = JSON.stringify(out);
    pre.dataset.done = "1";
  });
}

try {
  buildCards();
  setupSort();
  sortCards();
  buildErrors();
  setupGrid();
  setupScatter();
} catch (e) {
  ERRORS.push("render failed: " + e);
  throw e;
}
window.addEventListener("load", selftest);
"""
