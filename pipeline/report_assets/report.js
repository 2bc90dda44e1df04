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
function valueText(v) {
  if (v === null || v === undefined) return "\u2013";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}
function carriedText(r) {
  return D.carried.map(function (k) { return k + "=" + valueText(r.x[k]); }).join("  ");
}
function tooltip(r) {
  return r.row_id + " [" + r.status + "]\n" + r.content + " \u00d7 " + r.style + "\nLPIPS " + pairText(r) +
    (D.varying.length ? "\n" + paramText(r) : "") + (D.carried.length ? "\n" + carriedText(r) : "") +
    (r.error ? "\n" + r.error : "");
}

var EXTRA = ["gram_style", "lpips_content_gray", "w2_style", "hist_style", "cfsd"];
function extraMetrics(r) {
  var parts = EXTRA.filter(function (k) { return r.m[k] !== null && r.m[k] !== undefined; }).map(function (k) { return k + " " + fmt(r.m[k]); });
  return parts.length ? el("div", { cls: "metrics", text: parts.join(" \u00b7 ") }) : null;
}

// ---------------------------------------------------------------- loss curves and snapshots
var TERMS = { total: "#222", content: "#4e79a7", style: "#e15759", tv: "#59a14f", hist: "#b07aa1" };
function lossCurve(r) {
  var c = r.curve;
  if (!c) return null;
  var terms = Object.keys(TERMS).filter(function (t) { return c[t] && c[t].some(function (v) { return v !== null && v > 0; }); });
  if (!terms.length) return null;
  // Log scale: the terms differ by orders of magnitude (unweighted terms, weighted total).
  var logs = [];
  terms.forEach(function (t) { c[t].forEach(function (v) { if (v !== null && v > 0) logs.push(Math.log10(v)); }); });
  var lo = Math.min.apply(null, logs), hi = Math.max.apply(null, logs);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  var s0 = c.step[0], s1 = c.step[c.step.length - 1] > s0 ? c.step[c.step.length - 1] : s0 + 1;
  var W = 380, H = 120, L = 40, R = 70, T = 8, B = 20, pw = W - L - R, ph = H - T - B;
  function X(s) { return L + (s - s0) / (s1 - s0) * pw; }
  function Y(v) { return T + ph - (Math.log10(v) - lo) / (hi - lo) * ph; }
  var svg = sv("svg", { "class": "curve", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "loss by step, " + r.row_id });
  svg.appendChild(sv("rect", { x: L, y: T, width: pw, height: ph, fill: "#fff", stroke: "#bbb" }));
  (c.scale_start || []).forEach(function (s) {
    if (s <= s0 || s > s1) return;  // the first scale starts at the axis
    svg.appendChild(sv("line", { "class": "scale-start", x1: X(s), x2: X(s), y1: T, y2: T + ph, stroke: "#999", "stroke-dasharray": "3 3" }));
  });
  [Math.ceil(lo), Math.floor(hi)].filter(function (e, i, a) { return a.indexOf(e) === i && e >= lo && e <= hi; }).forEach(function (e) {
    svg.appendChild(sv("text", { x: L - 4, y: Y(Math.pow(10, e)) + 4, "text-anchor": "end", "font-size": 10, fill: "#555" }, "1e" + e));
  });
  svg.appendChild(sv("text", { x: L, y: H - 6, "font-size": 10, fill: "#555" }, "step " + s0));
  svg.appendChild(sv("text", { x: L + pw, y: H - 6, "text-anchor": "end", "font-size": 10, fill: "#555" }, String(c.step[c.step.length - 1])));
  terms.forEach(function (t, j) {
    var pts = [];
    c[t].forEach(function (v, i) { if (v !== null && v > 0) pts.push(X(c.step[i]).toFixed(1) + "," + Y(v).toFixed(1)); });
    var line = sv("polyline", { "class": "term", points: pts.join(" "), fill: "none", stroke: TERMS[t], "stroke-width": t === "total" ? 1.8 : 1.2 });
    line.appendChild(sv("title", {}, t));
    svg.appendChild(line);
    svg.appendChild(sv("text", { x: L + pw + 6, y: T + 10 + j * 13, "font-size": 10, fill: TERMS[t] }, t));
  });
  return svg;
}
function snapStrip(r) {
  if (!r.snaps || !r.snaps.length) return null;
  return el("div", { cls: "snaps" }, [el("span", { cls: "hint", text: "snapshots" })].concat(r.snaps.map(function (x) {
    return thumb(x.k, x.label, "snapshot " + x.name, "snapshot missing");
  })));
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
    var figs = [thumb(r.c, "content: " + r.content, "content " + r.content, "content image missing")].concat(styleFigs).concat([out]);
    if (r.crop) {
      var cf = thumb(r.crop.k, "100% crop, centre of " + r.crop.w + "\u00d7" + r.crop.h, "100% crop " + r.row_id, "crop missing");
      cf.className = "crop";
      figs.push(cf);
    }
    var thumbs = el("div", { cls: "thumbs" }, figs);
    var meta = el("div", { cls: "meta" }, [
      el("div", {}, [el("code", { text: r.row_id }), " ", el("span", { cls: "status-" + r.status, text: r.status }),
        r.attempt && r.attempt > 1 ? " (attempt " + r.attempt + ")" : ""]),
      el("div", { cls: "pair" }, ["LPIPS to style ", el("b", { text: fmt(r.m.lpips_style) }), " \u00b7 to content ", el("b", { text: fmt(r.m.lpips_content) }),
        r.m.seconds !== null ? " \u00b7 " + r.m.seconds.toFixed(2) + " s" : "",
        r.m.iterations_run !== null && r.m.iterations_run !== undefined ? " \u00b7 " + r.m.iterations_run + " steps" : "",
        r.stopped ? " (" + r.stopped + ")" : ""]),
      extraMetrics(r),
      D.varying.length ? el("div", { cls: "params", text: paramText(r) }) : null,
      D.carried.length ? el("div", { cls: "carried", text: carriedText(r) }) : null,
      r.error ? el("pre", { cls: "err-msg", text: r.error }) : null
    ]);
    var card = el("div", { cls: "card " + r.status, id: "row-" + r.row_id, title: tooltip(r) }, [thumbs, meta, lossCurve(r), snapStrip(r)]);
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
// The Pareto frontier of the plotted points (both axes minimised) and its knee: the same rule as
// `stxpipe results pareto` (pipeline/runstats.py): sort by x then y, keep a point when its y is
// below every earlier one's (equal points all kept); the knee is the frontier point farthest
// from the line joining the frontier's end points after scaling x and y to [0, 1].
function frontier(pts, xk, yk) {
  var order = pts.map(function (r, i) { return i; }).sort(function (a, b) {
    return (pts[a].m[xk] - pts[b].m[xk]) || (pts[a].m[yk] - pts[b].m[yk]) || a - b;
  });
  var keep = [], best = Infinity;
  order.forEach(function (i) {
    var p = pts[i], last = keep.length ? keep[keep.length - 1] : null;
    if (p.m[yk] < best) { keep.push(p); best = p.m[yk]; }
    else if (last && p.m[xk] === last.m[xk] && p.m[yk] === last.m[yk]) keep.push(p);
  });
  return keep;
}
function knee(front, xk, yk) {
  var xs = front.map(function (r) { return r.m[xk]; }), ys = front.map(function (r) { return r.m[yk]; });
  var distinct = {};
  front.forEach(function (r) { distinct[r.m[xk] + "," + r.m[yk]] = 1; });
  if (Object.keys(distinct).length < 3) return null;
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs), y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  var nx = xs.map(function (x) { return x1 > x0 ? (x - x0) / (x1 - x0) : 0; }), ny = ys.map(function (y) { return y1 > y0 ? (y - y0) / (y1 - y0) : 0; });
  var ax = nx[0], ay = ny[0], bx = nx[nx.length - 1], by = ny[ny.length - 1], len = Math.hypot(bx - ax, by - ay);
  if (len === 0) return null;
  var bestI = -1, bestD = 0;
  nx.forEach(function (px, i) {
    var d = Math.abs((bx - ax) * (ay - ny[i]) - (ax - px) * (by - ay)) / len;
    if (d > bestD) { bestD = d; bestI = i; }
  });
  return bestI < 0 ? null : front[bestI];
}
var PLOT = { front: [], knee: null };
function plotMetrics() {
  return D.metrics.filter(function (m) { return D.rows.some(function (r) { return r.status === "ok" && r.m[m] !== null && r.m[m] !== undefined; }); });
}
function buildScatter() {
  var key = document.getElementById("colour-by").value;
  var xk = document.getElementById("plot-x").value, yk = document.getElementById("plot-y").value;
  var box = document.getElementById("scatter");
  box.textContent = "";
  var all = D.rows.filter(function (r) { return r.status === "ok"; });
  var pts = all.filter(function (r) { return r.m[xk] !== null && r.m[xk] !== undefined && r.m[yk] !== null && r.m[yk] !== undefined; });
  var left = all.length - pts.length;
  document.getElementById("plot-note").textContent = left ? left + " ok row(s) not plotted: " + xk + " or " + yk + " is missing" : "";
  var W = 820, H = 460, L = 70, R = 220, T = 20, B = 56;
  var svg = sv("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": xk + " against " + yk });
  PLOT = { front: [], knee: null };
  if (!pts.length) {
    svg.appendChild(sv("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#666" }, "no ok rows with " + xk + " and " + yk + " to plot"));
    box.appendChild(svg);
    return;
  }
  var xe = extent(pts.map(function (r) { return r.m[xk]; }));
  var ye = extent(pts.map(function (r) { return r.m[yk]; }));
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
  svg.appendChild(sv("text", { x: L + pw / 2, y: H - 14, "text-anchor": "middle", "font-size": 13, "class": "axis-label" }, xk + (LABELS[xk] ? ": " + LABELS[xk] : "")));
  svg.appendChild(sv("text", { x: 16, y: T + ph / 2, "text-anchor": "middle", "font-size": 13, "class": "axis-label", transform: "rotate(-90 16 " + (T + ph / 2) + ")" }, yk + (LABELS[yk] ? ": " + LABELS[yk] : "")));
  // Frontier under the points: a line through it, a ring on each of its points, the knee marked.
  var front = frontier(pts, xk, yk), kn = knee(front, xk, yk);
  PLOT = { front: front, knee: kn };
  var fg = sv("g", { "class": "frontier" });
  fg.appendChild(sv("polyline", { points: front.map(function (r) { return X(r.m[xk]).toFixed(1) + "," + Y(r.m[yk]).toFixed(1); }).join(" "), fill: "none", stroke: "#d62728", "stroke-width": 2, "stroke-dasharray": "6 3" }));
  front.forEach(function (r) {
    fg.appendChild(sv("circle", { "class": "front-ring", cx: X(r.m[xk]).toFixed(1), cy: Y(r.m[yk]).toFixed(1), r: 10, fill: "none", stroke: "#d62728", "stroke-width": 2 }));
  });
  if (kn) {
    var kx = X(kn.m[xk]), ky = Y(kn.m[yk]);
    fg.appendChild(sv("rect", { "class": "knee", x: (kx - 14).toFixed(1), y: (ky - 14).toFixed(1), width: 28, height: 28, fill: "none", stroke: "#000", "stroke-width": 2, transform: "rotate(45 " + kx.toFixed(1) + " " + ky.toFixed(1) + ")" }));
    fg.appendChild(sv("text", { "class": "knee-label", x: (kx + 18).toFixed(1), y: (ky - 12).toFixed(1), "font-size": 12, "font-weight": 600 }, "knee: " + kn.row_id));
  }
  svg.appendChild(fg);
  var values = key ? D.axes[key] : ["all rows"];
  var cmap = colours(values);
  pts.forEach(function (r) {
    var c = sv("circle", { cx: X(r.m[xk]).toFixed(1), cy: Y(r.m[yk]).toFixed(1), r: 6, fill: cmap[key ? r.p[key] : "all rows"] || "#888" });
    c.appendChild(sv("title", {}, tooltip(r) + "\n" + xk + " " + fmt(r.m[xk]) + ", " + yk + " " + fmt(r.m[yk]) + (front.indexOf(r) >= 0 ? "\non the Pareto frontier" : "") + (r === kn ? " (knee)" : "")));
    svg.appendChild(c);
  });
  var lg = sv("g", { "class": "legend", transform: "translate(" + (L + pw + 18) + "," + T + ")" });
  lg.appendChild(sv("text", { x: 0, y: 4, "font-size": 12, "font-weight": 600 }, key || "colour"));
  values.forEach(function (v, i) {
    lg.appendChild(sv("circle", { cx: 6, cy: 22 + i * 18, r: 6, fill: cmap[v] }));
    var label = String(v);
    lg.appendChild(sv("text", { x: 18, y: 26 + i * 18, "font-size": 12 }, label.length > 26 ? label.slice(0, 25) + "\u2026" : label));
  });
  var ly = 22 + values.length * 18 + 10;
  lg.appendChild(sv("line", { x1: 0, x2: 14, y1: ly, y2: ly, stroke: "#d62728", "stroke-width": 2, "stroke-dasharray": "6 3" }));
  lg.appendChild(sv("text", { x: 18, y: ly + 4, "font-size": 12 }, "Pareto frontier (" + front.length + ")"));
  lg.appendChild(sv("rect", { x: 2, y: ly + 12, width: 10, height: 10, fill: "none", stroke: "#000", "stroke-width": 2, transform: "rotate(45 7 " + (ly + 17) + ")" }));
  lg.appendChild(sv("text", { x: 18, y: ly + 22, "font-size": 12 }, kn ? "knee" : "no knee (< 3 points)"));
  svg.appendChild(lg);
  box.appendChild(svg);
}
var LABELS = { lpips_content: "LPIPS Distance to the content image", lpips_style: "LPIPS Distance to the style image", gram_style: "Gram distance to the style" };
function hashAxes() {
  var out = {};
  String(location.hash || "").replace(/^#/, "").split("&").forEach(function (kv) {
    var i = kv.indexOf("=");
    if (i > 0) out[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
  });
  return out;
}
function setupScatter() {
  var sel = document.getElementById("colour-by");
  var keys = Object.keys(D.axes);
  axisOptions(sel, keys[0] || "", true);
  var ms = plotMetrics(), want = hashAxes();
  [["plot-x", "x", "lpips_content"], ["plot-y", "y", "lpips_style"]].forEach(function (a) {
    var s = document.getElementById(a[0]);
    (ms.length ? ms : [a[2]]).forEach(function (m) { s.appendChild(el("option", { value: m, text: m })); });
    s.value = ms.indexOf(want[a[1]]) >= 0 ? want[a[1]] : (ms.indexOf(a[2]) >= 0 ? a[2] : s.options[0].value);
    s.addEventListener("change", function () {
      location.hash = "x=" + encodeURIComponent(document.getElementById("plot-x").value) + "&y=" + encodeURIComponent(document.getElementById("plot-y").value);
      buildScatter();
    });
  });
  sel.addEventListener("change", buildScatter);
  buildScatter();
}

// ---------------------------------------------------------------- self-check
function selftest() {
  var imgs = Array.prototype.slice.call(document.images);
  // The load event waited for every image; decode() only those not ready yet (each decode is real
  // work a headless browser's virtual clock does not wait for).
  var waits = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
    .map(function (i) { return i.decode ? i.decode().catch(function () {}) : Promise.resolve(); });
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
      plot_x: document.getElementById("plot-x").value, plot_y: document.getElementById("plot-y").value,
      frontier: PLOT.front.map(function (r) { return r.row_id; }), knee: PLOT.knee ? PLOT.knee.row_id : null,
      frontier_rings: document.querySelectorAll("#scatter g.frontier circle.front-ring").length,
      knee_marks: document.querySelectorAll("#scatter g.frontier rect.knee").length,
      curves: document.querySelectorAll("#cards svg.curve").length,
      curve_lines: document.querySelectorAll("#cards svg.curve polyline.term").length,
      scale_marks: document.querySelectorAll("#cards svg.curve line.scale-start").length,
      snapshots: document.querySelectorAll("#cards .snaps img").length,
      crops: Array.prototype.map.call(document.querySelectorAll("#cards figure.crop img"), function (i) { return [i.naturalWidth, i.naturalHeight, i.width, i.height]; }),
      ci_tables: document.querySelectorAll("table.ci-table").length,
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
