"""`stxpipe manifest show` / `validate` output: problems grouped by message, rows as a table."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pipeline import storage
from pipeline.manifest.schema import ManifestRow, Problem, ValidationReport, _manifest_dir, non_default_params


def format_problems(problems: Sequence[Problem]) -> list[str]:
    """One line per distinct (column, message), listing its rows as ranges (`rows 0-99, 120`):
    a missing image shared by 5,000 rows is one line, not 5,000."""
    groups: dict[tuple[str, str], list[int | None]] = {}
    for p in problems:
        groups.setdefault((p.column, p.message), []).append(p.row)
    lines = []
    for (column, message), rows in groups.items():
        nums = sorted(r for r in rows if r is not None)
        where = "manifest" if not nums else ("row " if len(nums) == 1 else "rows ") + row_ranges(nums)
        lines.append(f"{where}, {column}: {message}")
    return lines


def row_ranges(nums: Sequence[int], limit: int | None = None) -> str:
    """`0-9999`, or `1, 3, 5-9`; past `limit` runs: `…, (N rows)`. `nums` sorted, unique."""
    parts, start, prev = [], nums[0], nums[0]
    for x in [*nums[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    if limit is not None and len(parts) > limit:
        return ", ".join(parts[:limit]) + f", … ({len(nums)} rows)"
    return ", ".join(parts)


def describe_manifest(report: ValidationReport, *, limit: int | None = 50) -> list[str]:
    """The rows as a text table (paths shortened against the manifest's folder, only params that
    differ from the defaults), then counts."""
    folder = _manifest_dir(report.path)

    def short(p: str) -> str:
        if storage.is_uri(p) or storage.is_uri(folder):
            return p
        rel = os.path.relpath(p, folder)
        return rel if len(rel) < len(p) else p

    shown = report.rows if limit is None else report.rows[:limit]
    extra_names = list(dict.fromkeys(k for r in shown for k in r.extra))
    header = ["row", "row_id", "content", "style", *extra_names, "params (non-default)"]
    table = [header]
    for r in shown:
        params = " ".join(f"{k}={_fmt_value(v)}" for k, v in non_default_params(r.params).items()) or "-"
        cells = [str(r.index), r.row_id, short(r.content), " + ".join(short(s) for s in r.styles)]
        cells += [_fmt_cell(r.extra.get(k)) for k in extra_names] + [params]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    if len(shown) < len(report.rows):
        lines.append(f"... {len(report.rows) - len(shown)} more rows (--limit 0 shows all)")
    param_sets = len({r.params for r in report.rows})
    lines.append("")
    lines.append(
        f"{report.n_rows} rows, {len({r.content for r in report.rows})} distinct contents, "
        f"{len({s for r in report.rows for s in r.styles})} distinct styles, {param_sets} distinct param sets"
    )
    varying = _varying_params(report.rows)
    if varying:
        lines.append("params that vary: " + ", ".join(f"{k} ({n} values)" for k, n in varying.items()))
    if report.problems:
        lines.append(
            f"{len(report.problems)} problem(s) hide {report.n_rows - len(report.rows)} row(s); run `stxpipe manifest validate {report.path}`"
        )
    return lines


def _fmt_value(v: Any) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _fmt_cell(v: Any) -> str:
    return "" if v is None else _fmt_value(v)


def _varying_params(rows: Sequence[ManifestRow]) -> dict[str, int]:
    seen: dict[str, set] = {}
    for p in {r.params for r in rows}:
        for k, v in p.to_dict().items():
            seen.setdefault(k, set()).add(json.dumps(v))
    return {k: len(v) for k, v in seen.items() if len(v) > 1}
