"""Shared CLI helpers: turning library errors into one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from stylecore.catalog import WeightsError  # torch-free: keeps `stxpipe --help` fast


@contextlib.contextmanager
def friendly_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Print known errors as `error: ...` on stderr and exit 1, instead of a traceback."""
    caught: tuple[type[BaseException], ...] = (WeightsError, KeyError, ValueError, FileNotFoundError, *extra)
    try:
        yield
    except caught as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
