"""DuckDB over a run's results: SQL views and a summary of a sweep (output formats: `pipeline.format`).

Views every query sees (one in-memory DuckDB per call; the Parquet parts are read through
`pipeline.results.read_all`, so local folders and `s3://`/`gs://` outputs work alike, and
DuckDB never needs a network extension):

- `results_all`: every attempt ever written (retries, forced reruns), as stored;
- `results`: the latest attempt per `row_id`: the highest `seq` (the driver's sequence number,
  increasing across attempts and runs); parts written before `seq` existed count as seq 0, and
  ties fall back to the latest `finished_at`, then the later part.

`params` is a struct, so `params.style_weight` works in SQL. Extension auto-install is off:
a query never reaches the network. Damaged parts are skipped with a warning (see
`pipeline.results`); a column DuckDB cannot scan (float16, decimal256) is given as text.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import results as R

# Formatting lives in pipeline.format; these names stay importable from here.
from pipeline.format import FORMATS, _cell, _f, _json_default, _text_grid, format_csv, format_json, format_text, write_output  # noqa: F401

_POS = "__stx_pos"
# Numeric result columns a report can sort by.
METRICS = ("lpips_style", "lpips_content", "gram_style", "loss_total", "loss_content", "loss_style", "loss_tv", "seconds", "iterations")


class QueryError(ValueError):
    """A query failed; the message is DuckDB's (or says what is missing)."""


class NoResultsError(FileNotFoundError):
    """The output folder holds no results parts yet."""


# --------------------------------------------------------------------------------------------
# Connection and queries


def _duckdb():
    # Local import: keeps `import pipeline.query` cheap, and duckdb is only needed here.
    import duckdb

    return duckdb


def load_results(out: str) -> pa.Table:
    """Every stored attempt under `<out>/results/`. Raises NoResultsError when there is none."""
    table = R.read_all(out)
    if table is None:
        raise NoResultsError(
            f"no results under {R.results_dir(out)} (no *.parquet parts); "
            f"run `stxpipe submit MANIFEST --out {out}` first, or check the path"
        )
    return table


def connect(out: str | None = None, table: pa.Table | None = None):
    """A DuckDB connection with the `results` and `results_all` views over `out`'s results
    (or over `table`, already read). Extension auto-install/auto-load is off (offline-safe)."""
    duckdb = _duckdb()
    if table is None:
        if out is None:
            raise ValueError("connect() needs `out` or `table`")
        table = load_results(out)
    raw = R.conform(table).append_column(_POS, pa.array(range(table.num_rows), pa.int64()))
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    _register(con, "__stx_raw", raw)
    con.execute(f'CREATE VIEW results_all AS SELECT * EXCLUDE ("{_POS}") FROM __stx_raw')
    # The same order as `R.latest`. Parts are read in name order (UTC time stamps), so a larger
    # position is a later part.
    con.execute(
        f'CREATE VIEW results AS SELECT * EXCLUDE ("{_POS}") FROM __stx_raw QUALIFY row_number() OVER '
        f'(PARTITION BY row_id ORDER BY coalesce(seq, 0) DESC, finished_at DESC NULLS LAST, "{_POS}" DESC) = 1'
    )
    return con


def _register(con, name: str, table: pa.Table) -> None:
    """Register `table` on `con`; a column DuckDB cannot scan (a float16 or decimal256 anywhere
    in it) is given as text, with one warning."""
    duckdb = _duckdb()
    try:
        con.register(name, table)
        return
    except duckdb.Error:
        pass
    with duckdb.connect(":memory:") as probe:
        for i, f in enumerate(table.schema):
            try:
                probe.register("p", table.select([i]).slice(0, 0))
            except duckdb.Error:
                table = table.set_column(i, f.name, R.as_text(table.column(i)))
                warnings.warn(
                    f"results column '{f.name}' ({f.type}) is given to SQL as text: DuckDB cannot read its type",
                    R.ResultsWarning,
                    stacklevel=2,
                )
    con.register(name, table)


def run_sql(con, sql: str) -> pa.Table:
    """Run `sql` on `con`; the last statement's rows as Arrow (empty for statements without
    rows). DuckDB errors become QueryError carrying DuckDB's message."""
    duckdb = _duckdb()
    if not sql or not sql.strip():
        raise QueryError("empty query; try: SELECT status, count(*) FROM results GROUP BY status")
    try:
        rel = con.sql(sql)
        if rel is None:  # a statement without rows (CREATE VIEW ..., SET ...)
            return pa.table({})
        # `to_arrow_table` since DuckDB 1.1; older releases call it `arrow`.
        fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
        return fetch()
    except duckdb.Error as e:
        raise QueryError(str(e).strip()) from None


def query(out: str, sql: str) -> pa.Table:
    """Run DuckDB `sql` over the results of `out` (views `results`, `results_all`)."""
    with connect(out) as con:
        return run_sql(con, sql)


# --------------------------------------------------------------------------------------------
# Summary


@dataclass(frozen=True)
class GroupStat:
    """The LPIPS Distance pair (and time) of the rows sharing one value of a key."""

    value: str
    rows: int
    ok: int
    lpips_style_mean: float | None
    lpips_style_median: float | None
    lpips_content_mean: float | None
    lpips_content_median: float | None
    seconds_mean: float | None


@dataclass(frozen=True)
class Summary:
    """What `summary(out)` found: counts, time, the LPIPS pair overall and per group.

    `groups` maps a key (`style`, a varying param's name, or `a × b` for the full grid of the
    varying params) to one GroupStat per value. `varying` maps each param that differs across
    rows to its distinct values (lists shown as comma-joined strings), most values first."""

    out: str
    rows: int
    attempts: int
    status: dict[str, int]
    seconds_total: float
    seconds_per_row_mean: float | None
    seconds_per_row_median: float | None
    wall_seconds: float | None
    lpips_style_mean: float | None
    lpips_style_median: float | None
    lpips_content_mean: float | None
    lpips_content_median: float | None
    weights: tuple[str, ...]
    lpips_weights: tuple[str, ...]
    varying: dict[str, tuple[str, ...]]
    groups: dict[str, tuple[GroupStat, ...]] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        """True when any row was produced with untrained (RANDOM) weights."""
        return any(is_random_label(w) for w in self.weights + self.lpips_weights)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = {k: [asdict(g) for g in v] for k, v in self.groups.items()}
        d["random_weights"] = self.random_weights
        return d

    def lines(self) -> list[str]:
        """Human-readable text: counts, time, weights, then one table per grouping."""
        st = ", ".join(f"{k} {v}" for k, v in sorted(self.status.items()))
        out = [f"results: {self.out}", f"rows: {self.rows} ({st}); attempts stored: {self.attempts}"]
        t = f"time: {self.seconds_total:.1f} s of compute over all attempts"
        if self.seconds_per_row_mean is not None:
            t += f"; per row mean {self.seconds_per_row_mean:.2f} s, median {self.seconds_per_row_median:.2f} s"
        if self.wall_seconds is not None:
            t += f"; wall {self.wall_seconds:.1f} s (first start to last finish)"
        out.append(t)
        out.append("weights: " + (", ".join(self.weights) or "-") + " | LPIPS weights: " + (", ".join(self.lpips_weights) or "-"))
        if self.random_weights:
            out.append("WARNING: RANDOM (untrained) weights produced some rows: their images and LPIPS values mean nothing")
        out.append(
            f"LPIPS Distance to style: mean {_f(self.lpips_style_mean)}, median {_f(self.lpips_style_median)}; "
            f"to content: mean {_f(self.lpips_content_mean)}, median {_f(self.lpips_content_median)}"
        )
        out.append("params that vary: " + (", ".join(f"{k} ({len(v)})" for k, v in self.varying.items()) or "none"))
        for key, stats in self.groups.items():
            out += ["", *_group_table(key, stats)]
        return out


def _group_table(key: str, stats: Sequence[GroupStat]) -> list[str]:
    header = [key, "rows", "ok", "lpips_style mean", "median", "lpips_content mean", "median", "s/row"]
    body = [
        [
            g.value,
            str(g.rows),
            str(g.ok),
            _f(g.lpips_style_mean),
            _f(g.lpips_style_median),
            _f(g.lpips_content_mean),
            _f(g.lpips_content_median),
            _f(g.seconds_mean, 2),
        ]
        for g in stats
    ]
    return _text_grid(header, body, right=set(range(1, len(header))))


def is_random_label(label: str | None) -> bool:
    """True for a `weights` value that names untrained weights."""
    if not label:
        return False
    return "RANDOM" in label or label.split("@", 1)[0].strip().lower().startswith("random")


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _as_text(expr: str, dtype: pa.DataType) -> str:
    """SQL turning a param value into a comparable, readable string (lists comma-joined)."""
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return f"coalesce(array_to_string({expr}, ','), 'default')"
    return f"coalesce(CAST({expr} AS VARCHAR), 'default')"


def param_text_exprs(con) -> dict[str, str]:
    """name -> SQL expression giving that param as text, for every field of `params`."""
    t = run_sql(con, "SELECT params FROM results LIMIT 0").schema.field("params").type
    return {t.field(i).name: _as_text(f"params.{_sql_ident(t.field(i).name)}", t.field(i).type) for i in range(t.num_fields)}


def varying_params(con) -> dict[str, tuple[str, ...]]:
    """Params with more than one distinct value across the latest rows, most values first
    (ties in Params' order); each with its distinct values (as text, sorted naturally)."""
    exprs = param_text_exprs(con)
    if not exprs:
        return {}
    sel = ", ".join(f"list(DISTINCT {e}) AS {_sql_ident(n)}" for n, e in exprs.items())
    row = run_sql(con, f"SELECT {sel} FROM results").to_pylist()[0]
    found = {n: tuple(sorted(v, key=_natural_key)) for n, v in row.items() if v is not None and len(v) > 1}
    order = list(exprs)
    return dict(sorted(found.items(), key=lambda kv: (-len(kv[1]), order.index(kv[0]))))


def _natural_key(s: str) -> tuple:
    """Sort numbers as numbers, the rest as text ('1e2' < '1000.0' < 'abc')."""
    try:
        return (0, float(s), s)
    except (TypeError, ValueError):
        return (1, 0.0, str(s))


def _stats_sql(key_expr: str) -> str:
    return (
        f"SELECT {key_expr} AS v, count(*) AS n, count(*) FILTER (WHERE status = 'ok') AS ok, "
        "avg(lpips_style) AS a, median(lpips_style) AS b, avg(lpips_content) AS c, median(lpips_content) AS d, "
        "avg(seconds) FILTER (WHERE status = 'ok') AS e "
        "FROM results GROUP BY v"
    )


def _groups(con, key_expr: str) -> tuple[GroupStat, ...]:
    stats = [
        GroupStat(str(r["v"]), int(r["n"]), int(r["ok"]), *[_num(x) for x in list(r.values())[3:]])
        for r in run_sql(con, _stats_sql(key_expr)).to_pylist()
    ]
    return tuple(sorted(stats, key=lambda g: _natural_key(g.value)))


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def style_label_sql() -> str:
    """SQL: the style column shortened to file names (blends joined with ' + ')."""
    return "replace(regexp_replace(style, '[^;]*[/\\\\]', '', 'g'), ';', ' + ')"


def summary(out: str, table: pa.Table | None = None) -> Summary:
    """Counts by status, time, the LPIPS pair (mean, median) overall, by style and by every
    param that varies across rows (and by their full grid when two or more vary)."""
    with connect(out, table) as con:
        return _summary(con, out)


def _summary(con, out: str) -> Summary:
    status = {r["status"]: int(r["n"]) for r in run_sql(con, "SELECT status, count(*) AS n FROM results GROUP BY status").to_pylist()}
    attempts = run_sql(con, "SELECT count(*) AS n, coalesce(sum(seconds), 0) AS s FROM results_all").to_pylist()[0]
    agg = run_sql(
        con,
        "SELECT count(*) AS rows, "
        "avg(seconds) FILTER (WHERE status = 'ok') AS sm, median(seconds) FILTER (WHERE status = 'ok') AS smed, "
        "epoch(max(finished_at)) - epoch(min(started_at)) AS wall, "
        "avg(lpips_style) AS lsm, median(lpips_style) AS lsmed, avg(lpips_content) AS lcm, median(lpips_content) AS lcmed, "
        "list(DISTINCT weights) FILTER (WHERE weights IS NOT NULL) AS w, "
        "list(DISTINCT lpips_weights) FILTER (WHERE lpips_weights IS NOT NULL) AS lw "
        "FROM results",
    ).to_pylist()[0]
    varying = varying_params(con)
    exprs = param_text_exprs(con)
    groups: dict[str, tuple[GroupStat, ...]] = {"style": _groups(con, style_label_sql())}
    for name in varying:
        groups[name] = _groups(con, exprs[name])
    if len(varying) >= 2:
        combo = " || ' | ' || ".join(exprs[n] for n in varying)
        groups[" × ".join(varying)] = _groups(con, combo)
    return Summary(
        out=out,
        rows=int(agg["rows"]),
        attempts=int(attempts["n"]),
        status=status,
        seconds_total=float(attempts["s"] or 0.0),
        seconds_per_row_mean=_num(agg["sm"]),
        seconds_per_row_median=_num(agg["smed"]),
        wall_seconds=_num(agg["wall"]),
        lpips_style_mean=_num(agg["lsm"]),
        lpips_style_median=_num(agg["lsmed"]),
        lpips_content_mean=_num(agg["lcm"]),
        lpips_content_median=_num(agg["lcmed"]),
        weights=tuple(sorted(agg["w"] or ())),
        lpips_weights=tuple(sorted(agg["lw"] or ())),
        varying=varying,
        groups=groups,
    )
