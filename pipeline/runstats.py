"""Run-level statistics over a run's results (DuckDB views of `pipeline.query`): group means
with bootstrap confidence intervals, the Pareto frontier of two metrics with its knee, and the
ArtFID check (the score needs Inception weights in a cache and enough rows; see `artfid`).

- `summary_by(out, by)`: for every value of `by` (a params field such as `style_weight`, or a
  top-level column such as `style`), the mean of each metric over the group's ok rows with a
  95% percentile-bootstrap interval (`stylecore.stats.bootstrap_ci`: rows resampled with
  replacement, seed 0, so the same results give the same interval).
- `pareto(out, x, y)`: the ok rows no other ok row beats on both metrics (both minimised unless
  told otherwise), sorted by x, and the knee: after scaling the frontier's x and y each to [0, 1]
  (its own minimum to maximum), the frontier point farthest from the straight line joining the
  frontier's two end points (the "maximum distance to the chord" rule; ties: the smaller x).
  It is the point where trading one metric for the other stops paying: on either side of it a
  small gain in one costs much of the other. A frontier of fewer than 3 points has no knee.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline import query as Q
from pipeline import results as R
from pipeline.format import _text_grid

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

# Per-row metrics a group summary reports, in this order, when the results hold them.
METRICS = (
    "lpips_style",
    "lpips_content",
    "gram_style",
    "lpips_content_gray",
    "w2_style",
    "hist_style",
    "cfsd",
    "seconds",
    "iterations_run",
)
LEVEL = 0.95


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): `stylecore.stats.bootstrap_ci` (imported on use: keeps numpy out of CLI start-up)."""
    from stylecore.stats import bootstrap_ci as ci

    mean, lo, hi = ci(list(values), n_boot=n_boot, level=level, seed=seed)
    return float(mean), float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Columns


def _columns(con: DuckDBPyConnection) -> dict[str, pa.DataType]:
    schema = Q.run_sql(con, "SELECT * FROM results LIMIT 0").schema
    return {f.name: f.type for f in schema}


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_key(t: pa.DataType) -> bool:
    """A column worth grouping by: text, integers, booleans (not measurements, times or nested values)."""
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t))


def metric_columns(con: DuckDBPyConnection) -> list[str]:
    """The numeric top-level columns (what `pareto` may compare), result columns first."""
    cols = _columns(con)
    return [n for n, t in cols.items() if _is_number(t) and n not in ("attempt", "seq")]


def group_keys(con: DuckDBPyConnection) -> dict[str, str]:
    """Every name `--by` accepts -> SQL giving its value as text: the params fields (they win
    over a top-level column of the same name, e.g. `weights`), then the top-level text, integer
    and boolean columns (`style` shortened to file names, as in the summary)."""
    keys = dict(Q.param_text_exprs(con))
    for name, t in _columns(con).items():
        if name in keys or not _is_key(t):
            continue
        keys[name] = Q.style_label_sql() if name == "style" else f"coalesce(CAST({Q._sql_ident(name)} AS VARCHAR), 'null')"
    return keys


def _unknown(kind: str, name: str, valid: Sequence[str]) -> KeyError:
    return KeyError(f"unknown {kind} '{name}'; valid: {', '.join(valid)}")


# --------------------------------------------------------------------------------------------
# Group means with confidence intervals


@dataclass(frozen=True)
class MetricCI:
    """A metric over a group's ok rows: mean and its bootstrap interval over `n` values."""

    n: int
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True)
class GroupCI:
    value: str
    rows: int
    ok: int
    metrics: dict[str, MetricCI | None]  # None: no finite value in this group


@dataclass(frozen=True)
class GroupSummary:
    """`summary_by`'s answer: one GroupCI per value of `by`, naturally sorted."""

    out: str
    by: str
    metrics: tuple[str, ...]
    groups: tuple[GroupCI, ...]
    level: float = LEVEL
    n_boot: int = 2000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """One table per metric: group, n, mean and its interval."""
        pct = f"{self.level * 100:g}%"
        out = [
            f"results: {self.out}",
            f"by {self.by}: {len(self.groups)} groups; mean over each group's ok rows with a {pct} bootstrap CI "
            f"({self.n_boot} resamples, seed 0)",
        ]
        if not self.metrics:
            out.append("no metric column holds a value")
        for m in self.metrics:
            header = [self.by, "rows", "n", "mean", f"{pct} CI"]
            body = []
            for g in self.groups:
                s = g.metrics.get(m)
                ci = "-" if s is None else f"[{_num(s.lo)}, {_num(s.hi)}]"
                body.append([g.value, str(g.rows), "0" if s is None else str(s.n), "-" if s is None else _num(s.mean), ci])
            out += ["", m, *_text_grid(header, body, right={1, 2, 3})]
        return out


def _num(x: float) -> str:
    a = abs(x)
    return f"{x:.3e}" if a and (a >= 1e5 or a < 1e-3) else f"{x:.4f}" if a < 100 else f"{x:.1f}"


def summary_by(out: str, by: str, *, table: pa.Table | None = None, metrics: Sequence[str] | None = None) -> GroupSummary:
    """Each value of `by`: its rows, ok rows, and every metric's mean with a 95% bootstrap CI
    over the group's ok rows (null and non-finite values left out). `metrics` restricts the
    metrics (default: those of METRICS the results hold with at least one value)."""
    with Q.connect(out, table) as con:
        return _summary_by(con, out, by, metrics)


def _summary_by(con: DuckDBPyConnection, out: str, by: str, metrics: Sequence[str] | None = None) -> GroupSummary:
    keys = group_keys(con)
    if by not in keys:
        raise _unknown("--by name", by, list(keys))
    cols = _columns(con)
    if metrics is None:
        present = [m for m in METRICS if m in cols]
        counts = Q.run_sql(con, "SELECT " + ", ".join(f"count({Q._sql_ident(m)}) AS {Q._sql_ident(m)}" for m in present) + " FROM results")
        row = counts.to_pylist()[0] if present else {}
        chosen = [m for m in present if row.get(m)]
    else:
        numeric = metric_columns(con)
        for m in metrics:
            if m not in numeric:
                raise _unknown("metric", m, numeric)
        chosen = list(dict.fromkeys(metrics))
    lists = "".join(
        f", list(CAST({Q._sql_ident(m)} AS DOUBLE)) FILTER (WHERE status = 'ok' AND isfinite(CAST({Q._sql_ident(m)} AS DOUBLE))) AS m{i}"
        for i, m in enumerate(chosen)
    )
    sql = f"SELECT {keys[by]} AS v, count(*) AS n, count(*) FILTER (WHERE status = 'ok') AS ok{lists} FROM results GROUP BY v"
    groups = []
    for r in Q.run_sql(con, sql).to_pylist():
        stats: dict[str, MetricCI | None] = {}
        for i, m in enumerate(chosen):
            vals = r[f"m{i}"] or []
            stats[m] = MetricCI(len(vals), *bootstrap_ci(vals)) if vals else None
        groups.append(GroupCI(str(r["v"]), int(r["n"]), int(r["ok"]), stats))
    groups.sort(key=lambda g: Q._natural_key(g.value))
    return GroupSummary(out=out, by=by, metrics=tuple(chosen), groups=tuple(groups))


# --------------------------------------------------------------------------------------------
# Pareto frontier and knee


@dataclass(frozen=True)
class FrontierRow:
    row_id: str
    x: float
    y: float
    label: str  # content × style and the varying params, for people


@dataclass(frozen=True)
class Frontier:
    """`pareto`'s answer: the frontier rows sorted by x (ascending), the knee's row_id."""

    out: str
    x: str
    y: str
    maximize_x: bool
    maximize_y: bool
    ok: int  # ok rows considered
    excluded: int  # ok rows left out: x or y null or not finite
    rows: tuple[FrontierRow, ...]
    knee: str | None
    why_no_knee: str | None = None
    varying: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        sense = f"{self.x} {'max' if self.maximize_x else 'min'}imised, {self.y} {'max' if self.maximize_y else 'min'}imised"
        out = [
            f"results: {self.out}",
            f"Pareto frontier ({sense}): {len(self.rows)} of {self.ok} ok rows"
            + (f"; {self.excluded} ok row(s) left out ({self.x} or {self.y} is null or not finite)" if self.excluded else ""),
        ]
        body = [["*" if r.row_id == self.knee else "", r.row_id, _num(r.x), _num(r.y), r.label] for r in self.rows]
        out += _text_grid(["knee", "row_id", self.x, self.y, "row"], body, right={2, 3})
        if self.knee is not None:
            out.append(
                f"knee (*): {self.knee}, the frontier point farthest from the line joining its end points "
                "(both axes scaled to the frontier's range)"
            )
        else:
            out.append(f"no knee: {self.why_no_knee}")
        return out


def frontier_indices(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (both minimised: p beats q when p <= q in both
    and < in one), sorted by x then y; equal points are all kept."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i], i))
    keep: list[int] = []
    best = math.inf
    for i in order:
        if ys[i] < best:
            keep.append(i)
            best = ys[i]
        elif keep and (xs[i], ys[i]) == (xs[keep[-1]], ys[keep[-1]]):
            keep.append(i)  # the same point as the last one kept: beaten by nothing either
    return keep


def knee_index(xs: Sequence[float], ys: Sequence[float]) -> int | None:
    """The position (in the given frontier order, sorted by x) of the knee: the point farthest
    from the chord joining the first and last points, after scaling x and y to [0, 1]. None for
    fewer than 3 distinct points."""
    if len({(x, y) for x, y in zip(xs, ys, strict=True)}) < 3:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    nx = [(x - x0) / (x1 - x0) if x1 > x0 else 0.0 for x in xs]
    ny = [(y - y0) / (y1 - y0) if y1 > y0 else 0.0 for y in ys]
    ax, ay, bx, by = nx[0], ny[0], nx[-1], ny[-1]
    length = math.hypot(bx - ax, by - ay)
    if length == 0:
        return None
    dist = [abs((bx - ax) * (ay - py) - (ax - px) * (by - ay)) / length for px, py in zip(nx, ny, strict=True)]
    best = max(dist)
    return dist.index(best) if best > 0 else None


def pareto(out: str, x: str = "lpips_content", y: str = "gram_style", *, maximize_x: bool = False, maximize_y: bool = False,
           table: pa.Table | None = None) -> Frontier:  # fmt: skip
    """The Pareto frontier of the ok rows on metrics `x` and `y` (see the module doc)."""
    with Q.connect(out, table) as con:
        return _pareto(con, out, x, y, maximize_x, maximize_y)


def _pareto(con: DuckDBPyConnection, out: str, x: str, y: str, maximize_x: bool = False, maximize_y: bool = False) -> Frontier:
    numeric = metric_columns(con)
    for name in (x, y):
        if name not in numeric:
            raise _unknown("metric", name, numeric)
    varying = Q.varying_params(con)
    exprs = Q.param_text_exprs(con)
    ptext = "".join(f", {exprs[n]} AS {Q._sql_ident('p_' + n)}" for n in varying)
    xs_, ys_ = (f"CAST({Q._sql_ident(n)} AS DOUBLE)" for n in (x, y))
    table = Q.run_sql(
        con,
        f"SELECT row_id, {xs_} AS x, {ys_} AS y, content, {Q.style_label_sql()} AS style_label{ptext} "
        f"FROM results WHERE status = '{R.STATUS_OK}' ORDER BY row_id",
    )
    rows = table.to_pylist()
    good = [r for r in rows if _finite(r["x"]) and _finite(r["y"])]
    sx, sy = (-1.0 if maximize_x else 1.0), (-1.0 if maximize_y else 1.0)
    idx = frontier_indices([sx * r["x"] for r in good], [sy * r["y"] for r in good])
    front = [good[i] for i in idx]  # sorted by x then y in minimisation coordinates
    k = knee_index([sx * r["x"] for r in front], [sy * r["y"] for r in front])
    knee = None if k is None else front[k]["row_id"]
    why = None
    if knee is None:
        why = "the frontier has fewer than 3 distinct points" if len({(r["x"], r["y"]) for r in front}) < 3 else "the frontier is a line"
    front.sort(key=lambda r: (r["x"], sy * r["y"], r["row_id"]))  # by x, as people read the axis
    return Frontier(
        out=out,
        x=x,
        y=y,
        maximize_x=maximize_x,
        maximize_y=maximize_y,
        ok=len(rows),
        excluded=len(rows) - len(good),
        rows=tuple(FrontierRow(r["row_id"], float(r["x"]), float(r["y"]), _label(r, list(varying))) for r in front),
        knee=knee,
        why_no_knee=why,
        varying=tuple(varying),
    )


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def _label(r: dict[str, Any], varying: Sequence[str]) -> str:
    content = (r.get("content") or "").replace("\\", "/").rsplit("/", 1)[-1]
    params = " ".join(f"{n}={r['p_' + n]}" for n in varying)
    return f"{content} × {r.get('style_label') or ''}" + (f"  {params}" if params else "")


# --------------------------------------------------------------------------------------------
# ArtFID (Wright & Ommer 2022): (1 + mean LPIPS(output, content)) * (1 + FID(outputs, styles))

ARTFID_MIN_ROWS = 50  # FID's estimate is strongly biased below this many images (Chong & Forsyth 2020)
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # the FID Inception (pytorch-fid), as ArtFID uses
INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE


@dataclass(frozen=True)
class ArtFIDCheck:
    """Whether an ArtFID score can be computed for a run, and why not."""

    ok_rows: int
    inception: str | None  # the weights file found, or None
    looked_in: tuple[str, ...]
    score: float | None
    reason: str  # why there is no score (empty when there is one)

    def lines(self) -> list[str]:
        if self.score is not None:
            return [f"ArtFID: {self.score:.4f} over {self.ok_rows} ok rows"]
        return [f"ArtFID: skipped: {self.reason}"]


def inception_paths() -> list[str]:
    """Where an offline FID Inception file is looked for: stxpipe's weights cache, then torch's hub cache."""
    from stylecore.catalog import cache_dir, torch_hub_dir

    return [str(cache_dir() / "weights" / INCEPTION_FILE), str(torch_hub_dir() / "checkpoints" / INCEPTION_FILE)]


def artfid(out: str, table: pa.Table | None = None) -> ArtFIDCheck:
    """Check whether `out` can get an ArtFID score. It needs at least ARTFID_MIN_ROWS ok rows and
    the FID Inception weights in a cache (this tool never downloads them). This version does not
    compute the score itself: when both hold, the answer says so instead of inventing a number."""
    with Q.connect(out, table) as con:
        ok = int(Q.run_sql(con, f"SELECT count(*) AS n FROM results WHERE status = '{R.STATUS_OK}'").to_pylist()[0]["n"])
    paths = inception_paths()
    found = next((p for p in paths if Path(p).is_file()), None)
    reasons = []
    if found is None:
        reasons.append(
            f"no FID Inception weights in the cache (looked for {' and '.join(paths)}); ArtFID's FID term needs them and "
            f"stxpipe never downloads them. To stage them offline, fetch {INCEPTION_URL} on a connected machine and copy it "
            f"to {paths[0]} (or point STXPIPE_HOME / TORCH_HOME at a cache holding it)"
        )
    if ok < ARTFID_MIN_ROWS:
        reasons.append(f"the run has {ok} ok rows; FID needs at least {ARTFID_MIN_ROWS} outputs to mean anything")
    if not reasons:
        reasons.append(f"Inception weights found at {found}, but this version of stxpipe has no FID implementation yet")
    return ArtFIDCheck(ok_rows=ok, inception=found, looked_in=tuple(paths), score=None, reason="; and ".join(reasons))
