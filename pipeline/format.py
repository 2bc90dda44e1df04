"""Query output as text: an aligned table, CSV, JSON or a Parquet file (`stxpipe results query
--format`), and the number formatting the summary and the report share."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("table", "csv", "json", "parquet")


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cell(v: Any) -> Any:
    """A value as CSV/text-friendly scalar: nested values as compact JSON, times as ISO."""
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=_json_default, separators=(",", ":"))
    return _json_default(v) if isinstance(v, (dt.datetime, dt.date, dt.time, bytes)) else v


def _json_default(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes):
        return v.hex()
    if hasattr(v, "__float__"):  # Decimal
        return float(v)
    return str(v)


def _text_grid(header: list[str], body: list[list[str]], right: Iterable[int] = (), max_width: int = 60) -> list[str]:
    def clip(s: str) -> str:
        s = s.replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    rows = [[clip(c) for c in header]] + [[clip(c) for c in r] for r in body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = set(right)

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return [fmt(rows[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]


def format_text(table: pa.Table, max_width: int = 60) -> str:
    """An aligned text table (numbers right-aligned, long cells clipped), with a row count."""
    names = table.column_names
    if not names:
        return "(no rows)\n"
    numeric = {
        i for i, f in enumerate(table.schema) if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
    }

    def show(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(_cell(v))

    body = [[show(v) for v in row.values()] for row in table.to_pylist()]
    n = table.num_rows
    return "\n".join(_text_grid(names, body, numeric, max_width) + [f"({n} row{'s' if n != 1 else ''})"]) + "\n"


def format_csv(table: pa.Table) -> str:
    """CSV with a header; structs and lists as JSON text, NULL as an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.column_names)
    for row in table.to_pylist():
        w.writerow(["" if v is None else _cell(v) for v in row.values()])
    return buf.getvalue()


def format_json(table: pa.Table) -> str:
    """A JSON array of row objects (times as ISO 8601 text, NaN as null)."""
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in table.to_pylist()]
    return json.dumps(rows, default=_json_default, indent=1, ensure_ascii=False) + "\n"


def write_output(table: pa.Table, fmt: str, path: str | os.PathLike | None) -> str | None:
    """Render `table` as `fmt`; write it to `path`, or return the text for stdout when `path`
    is None. Parquet needs a path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if path is None:
            raise ValueError("--format parquet writes a binary file: give -o FILE.parquet")
        pq.write_table(table, os.fspath(path))
        return None
    text = {"table": format_text, "csv": format_csv, "json": format_json}[fmt](table)
    if path is None:
        return text
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return None
