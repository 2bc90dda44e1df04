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
      D.carried.length ? el("div", { cls: "carried", text: carriedText(r) }) : null,
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
