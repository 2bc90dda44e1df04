"""`stxpipe results ...`: DuckDB SQL over a run's results, summaries with confidence intervals, the
Pareto frontier, the ArtFID check (logic in pipeline.query and pipeline.runstats)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from pipeline import query as Q
from pipeline import runstats as S
from pipeline.cli.common import friendly_errors
from pipeline.format import write_output

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
        text = write_output(table, fmt.value, output)
    if text is not None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"wrote {table.num_rows} rows to {output}", err=True)


@app.command("summary")
def summary(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    by: str | None = typer.Option(
        None,
        "--by",
        help="Group by a params field (style_weight, style_loss, ...) or a top-level column (style, content, tag, ...): "
        "each group's mean of every metric with a 95% bootstrap confidence interval.",
    ),
    metric: list[str] | None = typer.Option(None, "--metric", "-m", help="With --by: only this metric (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text tables."),
) -> None:
    """Counts by status, time, and the LPIPS Distance pair by style and by every param that varies;
    with --by, each group's metric means with 95% bootstrap confidence intervals."""
    with friendly_errors():
        if metric and by is None:
            raise ValueError("--metric needs --by PARAM")
        s = Q.summary(out) if by is None else S.summary_by(out, by, metrics=metric or None)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=1, default=str))
    else:
        typer.echo("\n".join(s.lines()))


@app.command("pareto")
def pareto(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    x: str = typer.Option("lpips_content", "--x", help="Metric column on the x axis (minimised unless --maximize-x)."),
    y: str = typer.Option("gram_style", "--y", help="Metric column on the y axis (minimised unless --maximize-y)."),
    maximize_x: bool = typer.Option(False, "--maximize-x", help="Larger x is better."),
    maximize_y: bool = typer.Option(False, "--maximize-y", help="Larger y is better."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a text table."),
) -> None:
    """The ok rows no other row beats on both metrics, sorted by x, with the knee marked (*): the
    frontier point farthest from the line joining its end points, both axes scaled to [0, 1]."""
    with friendly_errors():
        f = S.pareto(out, x, y, maximize_x=maximize_x, maximize_y=maximize_y)
    typer.echo(json.dumps(f.to_dict(), indent=1) if as_json else "\n".join(f.lines()))


@app.command("artfid")
def artfid(
    out: str = typer.Argument(..., help="The run's output folder (local path or s3://, gs:// URI)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """ArtFID run score, when the run is large enough and the FID Inception weights are cached
    offline; otherwise says why it is skipped and how to stage the weights."""
    with friendly_errors():
        c = S.artfid(out)
    typer.echo(json.dumps(c.__dict__, indent=1) if as_json else "\n".join(c.lines()))
