"""What a `Params` field holds, read from its annotation (`FieldKind`), and the per-field rules
that follow from it: coercion of CLI strings / JSON values to the field's type, and the checks
driven by each field's metadata (finite numbers, bounds, registry choices, booleans).

Kept apart from `stylecore.params` so that the dataclass module holds the fields themselves."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stylecore.bounds import MAX_LIST_ITEMS, ParamError

_ELEMENTS = (int, float, bool, str)


@dataclass(frozen=True)
class FieldKind:
    """What a `Params` field holds, from its annotation: `elem` (int, float, bool or str), a
    tuple of them (`is_list`), None allowed (`optional`); and its dataclass field (default,
    metadata: help, bounds)."""

    name: str
    elem: type
    is_list: bool
    optional: bool
    field: dataclasses.Field[Any]

    @property
    def is_number(self) -> bool:
        return not self.is_list and self.elem in (int, float)

    def describe(self) -> str:
        """What the value must be, for messages: 'an integer', 'a list of numbers', ..."""
        if self.is_list:
            return "a list of " + ("numbers" if self.elem in (int, float) else self.field.metadata.get("items", "names"))
        return {int: "an integer", float: "a number", bool: "true/false"}.get(self.elem, "a string")


def coerce(name: str, value: Any, kinds: Mapping[str, FieldKind]) -> Any:
    """Turn CLI strings, lists and JSON numbers into the field's type, or raise ParamError."""
    if value is None:
        return None
    kind = kinds[name]
    if isinstance(value, (list, tuple)):
        if not kind.is_list:
            raise ParamError(name, f"takes a single value, not a list ({kind.describe()})")
        if any(isinstance(x, (list, tuple, dict)) for x in value):
            raise ParamError(name, f"must be a flat list ({kind.describe()}), not a nested one")
    elif isinstance(value, dict):
        raise ParamError(name, f"must be {kind.describe()}, not an object")
    too_long = 0
    try:
        if kind.is_list:
            items = value.split(",") if isinstance(value, str) else list(value)
            if len(items) > MAX_LIST_ITEMS:
                too_long = len(items)
                raise ValueError
            return tuple(_item(kind.elem, s) for s in items if str(s).strip())
        return _scalar(kind.elem, value)
    except (TypeError, ValueError):
        if too_long:
            raise ParamError(name, f"lists {too_long} items; at most {MAX_LIST_ITEMS}") from None
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ParamError(name, f"cannot read {shown} as {kind.describe()}") from None


def _scalar(elem: type, value: Any) -> Any:
    """One value as `elem`; raises ValueError/TypeError when it is not one."""
    if elem is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if elem is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    if elem is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise ValueError
    return str(value) if not isinstance(value, str) else value


def _item(elem: type, value: Any) -> Any:
    """One item of a list field (names are stripped; numbers read as by float()/int())."""
    if elem is str:
        return str(value).strip()
    return float(value) if elem is float else _scalar(elem, value)


def _finite_problem(kind: FieldKind, v: Any) -> str | None:
    if not kind.is_number or v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return f"must be a finite number, got {v!r}"
    return None


def _bounds_problem(kind: FieldKind, v: Any) -> str | None:
    """A number outside the field's metadata bounds: `min`/`max` (inclusive), `gt` (exclusive);
    `unit` and `format` (a format spec, e.g. ',') shape the message."""
    if not kind.is_number or v is None:
        return None
    meta = kind.field.metadata
    lo, hi, gt, fmt = meta.get("min"), meta.get("max"), meta.get("gt"), meta.get("format", "")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if lo is not None and hi is not None and not lo <= v <= hi:
        return f"must be between {lo:{fmt}} and {hi:{fmt}}{unit}, got {v:{fmt}}"
    if lo is not None and hi is None and v < lo:
        return f"must be >= {lo}, got {v}"
    if gt is not None and v <= gt:
        return f"must be > {gt}, got {v}"
    return None


def _choice_problem(kind: FieldKind, v: Any) -> str | None:
    """A name not in the field's `choices` registry (its message lists the valid ones)."""
    choices = kind.field.metadata.get("choices")
    if choices is None or v is None:
        return None
    try:
        choices.check(v)
    except KeyError as e:
        return str(e.args[0])
    return None


def _bool_problem(kind: FieldKind, v: Any) -> str | None:
    if kind.elem is not bool or kind.is_list or v is None or isinstance(v, bool):
        return None
    return "must be true or false"
