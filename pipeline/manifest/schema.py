"""The manifest's schema: its columns, rows, problems, row ids and the params struct.

A manifest is a Parquet table of `(content, style, params)` rows (design.md, "Data contracts"):

- `content`: string path or URI of the content image;
- `style`: string path/URI, or a list of them for a blend (weights in `params.style_blend`);
- `params`: struct (or JSON string) of `stylecore.params.Params` fields; a missing or null field
  takes the engine's default, so a manifest never freezes defaults that might later improve;
- `row_id` (optional): string matching `ROW_ID_PATTERN` (it names the output file); default =
  `row_id_for(content, styles, params)`;
- any other column is carried through to the results untouched, unless its name is one of the
  results table's columns (`reserved_result_columns()`): such a manifest is refused.

The params struct, list-valued params and coercion all derive from the `Params` dataclass
(`stylecore.params.field_kinds`), so a new field needs no edit here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline import storage
from stylecore.params import MAX_STYLES, ParamError, Params, field_kinds, param_field

REQUIRED_COLUMNS = ("content", "style")
# The manifest's own columns; every other column is carried through to the results.
RESERVED_COLUMNS = ("content", "style", "params", "row_id")
# A row_id names the output file (`<out>/images/<row_id>.png`): letters, digits, '.', '_', '-',
# starting with a letter or digit (so never '..', a leading dot, a separator or an absolute path).
ROW_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ROW_ID_CHARS = 16

# Paths in a manifest resolve against its folder (`pipeline.storage` knows paths from URIs).
resolve_path = storage.resolve
_manifest_dir = storage.parent


class ManifestError(ValueError):
    """A manifest cannot be used as it is; `problems` lists everything wrong with it."""

    def __init__(self, path: str, problems: Sequence[Problem]):
        self.path = str(path)
        self.problems = tuple(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:10])
        more = f"\n  ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
        hint = f"\nrun `stxpipe manifest validate {self.path}` for the full list" if more else ""
        super().__init__(f"manifest {self.path}: {len(self.problems)} problem(s):\n{shown}{more}{hint}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. `row` is the 0-based row index (None: the whole file)."""

    row: int | None
    column: str
    message: str

    def __str__(self) -> str:
        where = "manifest" if self.row is None else f"row {self.row}"
        return f"{where}, {self.column}: {self.message}"


@dataclass(frozen=True)
class ManifestRow:
    """One resolved job: absolute paths/URIs, full `Params`, id, and the carried-through columns."""

    index: int
    row_id: str
    content: str
    styles: tuple[str, ...]
    params: Params
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RowSpec:
    """One row to write: paths as they should appear in the file, and only the explicitly set
    params (so unset ones stay null and keep following the engine's defaults)."""

    content: str
    styles: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    row_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationReport:
    """What `validate_manifest` found. `rows` holds every row whose params resolved."""

    path: str
    n_rows: int
    rows: tuple[ManifestRow, ...]
    problems: tuple[Problem, ...]
    files_checked: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: OK with counts, or the number of problems."""
        contents = len({r.content for r in self.rows})
        styles = len({s for r in self.rows for s in r.styles})
        if self.ok:
            checked = f", {self.files_checked} distinct files decoded" if self.files_checked else ""
            return f"OK {self.path}: {self.n_rows} rows, {contents} contents, {styles} styles{checked}"
        bad_rows = len({p.row for p in self.problems if p.row is not None})
        where = f" in {bad_rows} of {self.n_rows} rows" if bad_rows else f" ({self.n_rows} rows)"
        return f"{self.path}: {len(self.problems)} problem(s){where}"


# --------------------------------------------------------------------------------------------
# Row ids, output paths, reserved columns


def row_id_problem(row_id: str) -> str | None:
    """None if `row_id` is a valid id (`ROW_ID_PATTERN`), else what is wrong and what to do."""
    if isinstance(row_id, str) and ROW_ID_PATTERN.fullmatch(row_id):
        return None
    shown = repr(row_id) if len(str(row_id)) <= 80 else repr(str(row_id)[:77] + "...")
    return (
        f"{shown} is not a valid row_id: it names the output file, so use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (no '/', no leading '.'); or leave it null for the default id"
    )


def safe_output_path(out_root: str, row_id: str, suffix: str = ".png") -> str:
    """`<out_root>/<row_id><suffix>`, resolved, after checking that it stays under `out_root`.

    Local roots: both sides go through `os.path.realpath` (symlinks included). URIs
    (`s3://bucket/prefix`): the path part is normalised and `..` segments are refused. Raises
    ValueError naming the id when it does not match `ROW_ID_PATTERN` or the result would lie
    outside the root (defence in depth: validate refuses such ids first)."""
    why = row_id_problem(row_id)
    if why:
        raise ValueError(why)
    if not re.fullmatch(r"(\.[A-Za-z0-9]{1,16})*", suffix):
        raise ValueError(f"suffix {suffix!r} must be empty or like '.png'")
    return storage.child_path(out_root, row_id + suffix, what=f"row_id {row_id!r}")


def reserved_result_columns() -> tuple[str, ...]:
    """Names a manifest may not carry: the results table's columns (read from
    `pipeline.results.RESULT_COLUMNS` at call time) other than the manifest's own."""
    from pipeline.results import RESULT_COLUMNS  # lazy: results pulls in the results schema

    return tuple(c for c in RESULT_COLUMNS if c not in RESERVED_COLUMNS)


def _reserved_problem(names: Iterable[str]) -> Problem | None:
    """One problem naming every carried column that clashes with a results column (compared
    case-insensitively: DuckDB, which `stxpipe query` uses, folds case)."""
    reserved = {c.lower() for c in reserved_result_columns()} | {c.lower() for c in RESERVED_COLUMNS}
    bad = [n for n in names if n not in RESERVED_COLUMNS and str(n).lower() in reserved]
    if not bad:
        return None
    renames = ", ".join(f"{b} -> user_{b}" for b in bad)
    return Problem(
        None,
        ", ".join(bad),
        f"column name(s) reserved: the results table has columns of these names, which the engine fills; rename them, e.g. {renames}",
    )


def row_id_for(content: str, styles: Sequence[str], params: Params) -> str:
    """Stable id of one job: sha256 over the content and style strings as written in the
    manifest and the fully resolved params, first 16 hex chars. Paths as written (not as
    resolved) keep the id of a shipped manifest the same in every clone."""
    key = f'{{"content": {json.dumps(content)}, "params": {_params_json(params)}, "style": {json.dumps(list(styles))}}}'
    return hashlib.sha256(key.encode()).hexdigest()[:ROW_ID_CHARS]


@functools.lru_cache(maxsize=4096)
def _params_json(params: Params) -> str:
    # Params is frozen and hashable; a sweep has few distinct ones, so serialise each once.
    return params.to_json()


# --------------------------------------------------------------------------------------------
# Params: types and resolution


def is_list_param(name: str, params_cls: type[Params] | None = None) -> bool:
    """True for list-valued params (`style_layers`, `style_blend`, ...), from the annotation of
    `params_cls` (default `Params`)."""
    param_field(name, params_cls)  # raises ParamError with the closest valid name
    return field_kinds(params_cls)[name].is_list


_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


@functools.cache
def params_struct_type(params_cls: type[Params] | None = None) -> pa.StructType:
    """Arrow struct with one typed, nullable field per field of `params_cls` (default
    `Params`), typed from its annotation: the manifest's `params` column and the results'."""
    out = []
    for name, kind in field_kinds(params_cls).items():
        t = _ARROW[kind.elem]
        out.append(pa.field(name, pa.list_(t) if kind.is_list else t))
    return pa.struct(out)


def _strip_prefix(e: ParamError) -> str:
    msg = str(e)
    prefix = f"param '{e.field}': "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _column_of(field_name: str) -> str:
    return "params" if field_name == "params" else f"params.{field_name}"


class _ParamsResolver:
    """Resolves raw param mappings to `Params`, once per distinct mapping: a 10,000-row sweep has
    a handful of distinct param sets, and building Params validates layers (imports torch)."""

    def __init__(self, base: Params | None = None):
        self.base = base
        self._cache: dict[str, tuple[Params | None, tuple[tuple[str, str], ...]]] = {}

    def resolve(self, raw: Mapping[str, Any]) -> tuple[Params | None, tuple[tuple[str, str], ...]]:
        """(params or None, ((column, message), ...)): every problem, not just the first."""
        data = {k: v for k, v in raw.items() if v is not None}
        key = json.dumps(data, sort_keys=True, default=str)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(data)
        return hit

    def _resolve(self, data: dict[str, Any]) -> tuple[Params | None, tuple[tuple[str, str], ...]]:
        problems: list[tuple[str, str]] = []
        # Params raises on the first bad field; drop it and retry, so one row reports all its
        # bad fields. Stops when an error names a field not in the row (a cross-field check
        # against a default), which dropping cannot fix.
        while True:
            try:
                params = Params.from_dict(data, base=self.base)
                return (None if problems else params), tuple(problems)
            except ParamError as e:
                problems.append((_column_of(e.field), _strip_prefix(e)))
                if e.field not in data:
                    return None, tuple(problems)
                del data[e.field]


def _explicit_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Coerced values of the explicitly set (non-null) params; raises ParamError."""
    data = {k: v for k, v in (raw or {}).items() if v is not None}
    resolved = Params.from_dict(data)
    return {k: (list(v) if isinstance(v, tuple) else v) for k in data for v in [getattr(resolved, k)]}


def non_default_params(params: Params) -> dict[str, Any]:
    """The fields of `params` that differ from the engine's defaults (for display and writing);
    the defaults of `params`' own class, so a subclass with more fields works too."""
    default = _default_params(type(params))
    return {k: v for k, v in params.to_dict().items() if v != default[k]}


# Per class, not functools.cache: mypy cannot see that a class object is hashable when its
# instances define __hash__ (a frozen dataclass), and rejects it as an lru_cache argument.
_DEFAULTS: dict[type[Params], dict[str, Any]] = {}


def _default_params(params_cls: type[Params] = Params) -> dict[str, Any]:
    """The defaults of `params_cls` as a dict, computed once per class."""
    if params_cls not in _DEFAULTS:
        _DEFAULTS[params_cls] = params_cls().to_dict()
    return _DEFAULTS[params_cls]


def _blend_problems(params: Params, n_styles: int) -> list[tuple[str, str]]:
    if n_styles > MAX_STYLES:
        return [("style", f"{n_styles} style images in one blend; a blend takes at most {MAX_STYLES}: split the row or drop styles")]
    if params.style_blend is not None and len(params.style_blend) != n_styles:
        return [("params.style_blend", f"has {len(params.style_blend)} weight(s) for {n_styles} style image(s); give one weight per style")]
    return []
