"""Lint, format and type checks as part of the suite (issue 15 item 7): `ruff check`, `ruff format
--check` and `mypy` (strict on `stylecore/`, default on `pipeline/`), each configured in
pyproject.toml and run from the repository root exactly as a developer would.

Not marked slow on purpose: `python -m pytest -m "not slow"` must still catch a lint or type
error. mypy is the longest (~20-30 s cold on 2 cores, a few seconds with its cache)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECKS = {
    "ruff check": ("ruff", ["check", "."]),
    "ruff format": ("ruff", ["format", "--check", "--diff", "."]),
    "mypy": ("mypy", []),  # files and flags from [tool.mypy] in pyproject.toml
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_tool_is_green(name: str) -> None:
    module, args = CHECKS[name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; it comes with the test extra: pip install -e '.[test]'")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    rc, output = proc.returncode, (proc.stdout + proc.stderr).strip()
    assert rc == 0, f"`{name}` failed (exit {rc}) in {ROOT}:\n{output}"
