"""`stxpipe results ...`: DuckDB SQL over a run's results, and a summary (logic in pipeline.query)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from pipeline import query as Q
from pipeline.cli.common import friendly_errors

app = typer.Typer(help="Query (DuckDB SQL) and summarise a run's results table.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command("query")
def query(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    sql: str = typer.Argument(
        ...,
        help="DuckDB SQL. Views: `results` (latest attempt per row_id) and `results_all` (every attempt); "
        "params is a struct: params.style_weight.",
    ),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout (needed for parquet)."),
) -> None:
    """Run SQL over the results, e.g. "SELECT params.style_weight, avg(lpips_style) FROM results GROUP BY 1"."""
    with friendly_errors():
        table = Q.query(out, sql)
        text = Q.write_output(table, fmt.value, output)
    if text is not None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {table.num_rows} rows to {output}", err=True)


@app.command("summary")
def summary(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text tables."),
) -> None:
    """Counts by status, time, and the LPIPS Distance pair by style and by every param that varies."""
    with friendly_errors():
        s = Q.summary(out)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=1, default=str))
    else:
        typer.echo("\n".join(s.lines()))
