"""The README's params table lists every `Params` field (the table is written from the dataclass;
this keeps it from falling behind when a field is added)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from stylecore.params import Params

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_params_table_lists_every_field() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [f.name for f in fields(Params) if f"| `{f.name}` |" not in text]
    assert not missing, f"README.md's params table lacks {missing}: regenerate it from stylecore/params.py"
