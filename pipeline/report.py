"""One self-contained HTML report of a run's results: contact sheet, errors, grid, scatter plot.

The scatter plots any two metrics (default: the LPIPS Distance pair) with the Pareto frontier and
its knee marked (the rule of `stxpipe results pareto`, `pipeline.runstats`); the tables give each
metric's group means with 95% bootstrap intervals; each card shows the row's loss curves, its
snapshot strip and, for outputs over 1024 px, a 100% crop (`pipeline.report_media`). Results
without those columns (older runs) render without them.

Everything is inside the file: thumbnails (<= 160 px) and crops as base64 data URIs, the data as JSON,
plain JavaScript and SVG written here (no CDN, no fonts, no server). A Content-Security-Policy
meta tag forbids any network fetch, so the report opens the same from disk, from an e-mail or
on an air-gapped machine. The page checks itself on load and writes what it found into
`<pre id="selftest">` (images loaded, broken, plot points, script errors): the tests read it
from headless Chromium.

Manifest text (paths, error messages, carried columns) is data, never markup: in the HTML it is
entity-escaped, and in the `<script type="application/json">` block `<`, `>`, `&`, U+2028 and
U+2029 are written as `\u003c` ... escapes, so no value can close the element or open a comment.
The page, its CSS and its JavaScript are package data (`pipeline/report_assets/`); the policy
allows exactly that script and that stylesheet by their sha256 hashes, never `'unsafe-inline'`.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import html
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline import query as Q
from pipeline import report_media as M
from pipeline import results as R
from pipeline import runstats as S
from pipeline.format import _f

THUMB_PX = 160
_SORTABLE = tuple(dict.fromkeys(Q.METRICS + S.METRICS))
# Result columns of issue 18 (pipeline/results.py); never shown as carried manifest columns, even
# where an older results module does not list them.
_EVAL_COLUMNS = frozenset(S.METRICS) | {"stopped", "style_layers_metrics", "loss_curve", "snapshots", "peak_bytes_predicted"}
_P = "__stx_p_"  # prefix of the param-text columns the report selects (never a carried name)


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
# Data


def collect(out: str, thumb: int = THUMB_PX) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (thumbnails included)."""
    con = Q.connect(out)
    try:
        summ = Q._summary(con, out)
        exprs = Q.param_text_exprs(con)
        varying = summ.varying
        ptext = "".join(f", {e} AS {Q._sql_ident(_P + n)}" for n, e in exprs.items())
        table = Q.run_sql(
            con,
            f"SELECT *{ptext} FROM results ORDER BY content, style, " + "".join(f"{Q._sql_ident(_P + n)}, " for n in varying) + "row_id",
        )
        # Group means with 95% bootstrap intervals, by style and by every varying param.
        ci = [S._summary_by(con, out, key) for key in ("style", *varying)]
    finally:
        con.close()
    own = set(R.RESULT_COLUMNS) | _EVAL_COLUMNS | {_P + n for n in exprs}
    carried = [c for c in table.column_names if c not in own]  # the manifest's extra columns
    thumbs = M.Thumbs(out, thumb)
    ok_sources: set[str] = set()  # a missing input of an error row is what its error says: no warning
    rows = []
    for i, r in enumerate(table.to_pylist()):
        styles = [s for s in (r.get("style") or "").split(";") if s]
        if r["status"] == R.STATUS_OK:
            ok_sources.update(x for x in [r.get("content"), *styles, r.get("output"), *(r.get("snapshots") or [])] if x)
        ptexts = {n: r[_P + n] for n in exprs}
        ok = r["status"] == R.STATUS_OK
        out_key = thumbs.key(r.get("output"), crop=True) if ok else None
        crop = thumbs.crops.get(r.get("output") or "") if ok else None
        rows.append(
            {
                "i": i,
                "row_id": r["row_id"],
                "status": r["status"],
                "error": r.get("error"),
                "content": M.basename(r.get("content")),
                "content_path": r.get("content"),
                "style": M.style_name(r.get("style")),
                "style_path": r.get("style"),
                "c": thumbs.key(r.get("content")),
                "s": [thumbs.key(s) for s in styles],
                "o": out_key,
                "crop": None if crop is None else {"k": crop[0], "w": crop[1], "h": crop[2], "px": M.CROP_PX},
                "output": r.get("output"),
                "curve": M.curve(r.get("loss_curve")),
                "snaps": M.snaps(thumbs, r.get("snapshots")),
                "stopped": r.get("stopped"),
                "m": {k: M.finite(r.get(k)) for k in _SORTABLE},
                "p": {n: ptexts[n] for n in varying},
                "attempt": r.get("attempt"),
                "worker": r.get("worker"),
                "device": r.get("device"),
                "weights": r.get("weights"),
                "x": {c: r.get(c) for c in carried},
            }
        )
    # Params every row shares, shown once in the header.
    fixed = {}
    if rows:
        first = table.slice(0, 1).to_pylist()[0]
        fixed = {n: first[_P + n] for n in exprs if n not in varying}
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
        "carried": carried,
        "fixed": fixed,
        "metrics": list(_SORTABLE),
        "ci": ci,
        "images": thumbs.images,
        "missing": {k: v for k, v in thumbs.missing.items() if k in ok_sources},
    }


# --------------------------------------------------------------------------------------------
# Safe embedding: JSON inside <script>, hashes for the Content-Security-Policy

_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})
_MAX_DEPTH = 32


def jsonable(v: Any, _depth: int = 0) -> Any:
    """`v` as plain JSON values: carried columns may hold decimals, timestamps, structs, maps,
    lists, bytes or non-finite floats; each becomes text, a list or an object (never NaN)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if _depth >= _MAX_DEPTH:
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): jsonable(x, _depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x, _depth + 1) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        return "0x" + b[:64].hex() + (f"\u2026 ({len(b)} bytes)" if len(b) > 64 else "")
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    return str(v)  # Decimal (exact text), timedelta, anything else


def script_json(obj: Any) -> str:
    """`obj` as JSON that is safe as the text of a `<script type="application/json">` element:
    no `<`, `>` or `&` (so no `</script>` or `<!--`), no raw U+2028/U+2029; JSON.parse restores
    every string exactly."""
    text = json.dumps(jsonable(obj), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.translate(_SCRIPT_ESCAPES)


def csp_hash(text: str) -> str:
    """The CSP source expression allowing an inline element whose text is exactly `text`."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    """Nothing but data: images, this one stylesheet and this one script (by hash)."""
    return (
        f"default-src 'none'; img-src data:; style-src {csp_hash(style)}; script-src {csp_hash(script)}; "
        "base-uri 'none'; form-action 'none'"
    )


@functools.lru_cache(maxsize=1)
def _assets() -> tuple[str, str, str]:
    """(page template, CSS, JS) from `pipeline/report_assets/`, newlines as a browser sees them."""
    base = resources.files("pipeline") / "report_assets"
    page, css, js = (base.joinpath(n).read_text(encoding="utf-8") for n in ("page.html", "report.css", "report.js"))
    for name, text, tag in (("report.css", css, "style"), ("report.js", js, "script")):
        if re.search(rf"</{tag}|<!--", text, re.I):  # would end the element early or hide its end
            raise ValueError(f"report asset {name} must not contain '</{tag}' or '<!--'")
    return page, css, js


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
        head = "".join(
            f"<th>{_e(h)}</th>" for h in (key, "rows", "ok", "LPIPS style mean", "median", "LPIPS content mean", "median", "s/row")
        )
        body = "".join(
            "<tr>"
            + f"<td>{_e(g.value)}</td><td>{g.rows}</td><td>{g.ok}</td>"
            + "".join(f"<td>{_f(x)}</td>" for x in (g.lpips_style_mean, g.lpips_style_median, g.lpips_content_mean, g.lpips_content_median))
            + f"<td>{_f(g.seconds_mean, 2)}</td></tr>"
            for g in stats
        )
        out.append(f'<table class="stats"><caption>by {_e(key)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "\n".join(out)


def _ci(m: S.MetricCI | None) -> str:
    if m is None:
        return "<td>-</td>"
    return f'<td title="n = {m.n}">{S._num(m.mean)} <span class="ci">[{S._num(m.lo)}, {S._num(m.hi)}]</span></td>'


def _ci_tables(groups: list[S.GroupSummary]) -> str:
    """One table per grouping: each metric's mean over the group's ok rows and its 95% bootstrap interval."""
    out = []
    for g in groups:
        if not g.metrics:
            continue
        head = "".join(f"<th>{_e(h)}</th>" for h in (g.by, "rows", "ok", *g.metrics))
        body = "".join(
            f"<tr><td>{_e(x.value)}</td><td>{x.rows}</td><td>{x.ok}</td>" + "".join(_ci(x.metrics.get(m)) for m in g.metrics) + "</tr>"
            for x in g.groups
        )
        out.append(
            f'<div class="scroll"><table class="stats ci-table"><caption>by {_e(g.by)}: mean [{g.level * 100:g}% bootstrap CI] over ok rows</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
    return "\n".join(out)


def render(data: dict[str, Any], title: str | None = None) -> str:
    """The report page for `collect()`'s data."""
    summ: Q.Summary = data["summary"]
    title = title or f"stxpipe results: {M.basename(data['out']) or data['out']}"
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
    payload = {k: v for k, v in data.items() if k not in ("summary", "ci")}
    page, css, js = _assets()
    missing = ""
    if data["missing"]:
        items = "".join(f"<li><code>{_e(k)}</code>: {_e(v)}</li>" for k, v in data["missing"].items())
        missing = f'<details class="missing"><summary>{len(data["missing"])} image(s) could not be read</summary><ul>{items}</ul></details>'
    return page.format(
        csp=html.escape(content_security_policy(js, css), quote=False),  # ASCII, no '"': quotes read as written
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
        pair=_e(
            f"style {_f(summ.lpips_style_mean)} / {_f(summ.lpips_style_median)}, content {_f(summ.lpips_content_mean)} / {_f(summ.lpips_content_median)}"
        ),
        varying=_e(varying),
        fixed=_e(fixed or "-"),
        missing=missing,
        tables=_summary_tables(summ) + "\n" + _ci_tables(data["ci"]),
        css=css,
        js=js,
        data=script_json(payload),
    )


def write_report(out: str, path: str | os.PathLike[str], *, title: str | None = None, thumb: int = THUMB_PX) -> ReportInfo:
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
