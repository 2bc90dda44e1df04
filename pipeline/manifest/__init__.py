"""Parquet manifests: the schema users write, the builder, the reader and the validator.

A manifest is a Parquet table of `(content, style, params)` rows; see `schema` for its columns.
Relative paths resolve against the manifest's folder; URIs (`s3://`, `gs://`, `file://`, ...)
go through `pyarrow.fs` (`pipeline.storage`), so remote stores work wherever pyarrow has
credentials. Validation collects every problem (schema, param names and values, files,
duplicate ids) as a `Problem` instead of stopping at the first, so one run tells the user
everything to fix.

- `schema`: columns, `ManifestRow`, `RowSpec`, `Problem`, `ManifestError`, row ids, the params
  struct, reserved columns;
- `validate`: `validate_manifest` (a list of small checks) and `read_manifest`;
- `build`: `BuildConfig`, `plan_manifest`, `build_manifest`, `--param`/`--sweep` parsing, CSV;
- `show`: `describe_manifest`, `format_problems`, `row_ranges`;
- `io`: reading and writing the Parquet files (`write_manifest`).

Every name other modules and tests import from `pipeline.manifest` is re-exported here.
"""

from pipeline.manifest.build import (
    BuildConfig,
    BuildSummary,
    _coerce_one,
    _expand_remote,
    _has_glob,
    _read_csv,
    build_manifest,
    expand_inputs,
    parse_param,
    parse_sweep,
    plan_manifest,
)
from pipeline.manifest.io import _as_spec, write_manifest
from pipeline.manifest.io import read_table as _read_table
from pipeline.manifest.schema import (
    _ARROW,
    IMAGE_SUFFIXES,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    ROW_ID_CHARS,
    ROW_ID_PATTERN,
    ManifestError,
    ManifestRow,
    Problem,
    RowSpec,
    ValidationReport,
    _blend_problems,
    _column_of,
    _default_params,
    _explicit_params,
    _manifest_dir,
    _params_json,
    _ParamsResolver,
    _reserved_problem,
    _strip_prefix,
    is_list_param,
    non_default_params,
    params_struct_type,
    reserved_result_columns,
    resolve_path,
    row_id_for,
    row_id_problem,
    safe_output_path,
)
from pipeline.manifest.show import _fmt_cell, _fmt_value, _varying_params, describe_manifest, format_problems, row_ranges
from pipeline.manifest.validate import (
    _is_str,
    _is_str_list,
    _parse_params_json,
    _probe,
    _probe_all,
    _schema_problems,
    _size_problems,
    read_manifest,
    validate_manifest,
)
from pipeline.storage import _filesystem, is_uri, local_file_problem, read_bytes
from stylecore.params import MAX_STYLES, ParamError, Params

__all__ = [
    "BuildConfig",
    "BuildSummary",
    "IMAGE_SUFFIXES",
    "MAX_STYLES",
    "ManifestError",
    "ManifestRow",
    "ParamError",
    "Params",
    "Problem",
    "REQUIRED_COLUMNS",
    "RESERVED_COLUMNS",
    "ROW_ID_CHARS",
    "ROW_ID_PATTERN",
    "RowSpec",
    "ValidationReport",
    "build_manifest",
    "describe_manifest",
    "expand_inputs",
    "format_problems",
    "is_list_param",
    "is_uri",
    "local_file_problem",
    "non_default_params",
    "params_struct_type",
    "parse_param",
    "parse_sweep",
    "plan_manifest",
    "read_bytes",
    "read_manifest",
    "reserved_result_columns",
    "resolve_path",
    "row_id_for",
    "row_id_problem",
    "row_ranges",
    "safe_output_path",
    "validate_manifest",
    "write_manifest",
    # private names other modules and tests reach for
    "_ARROW",
    "_ParamsResolver",
    "_as_spec",
    "_blend_problems",
    "_coerce_one",
    "_column_of",
    "_default_params",
    "_expand_remote",
    "_explicit_params",
    "_filesystem",
    "_fmt_cell",
    "_fmt_value",
    "_has_glob",
    "_is_str",
    "_is_str_list",
    "_manifest_dir",
    "_params_json",
    "_parse_params_json",
    "_probe",
    "_probe_all",
    "_read_csv",
    "_read_table",
    "_reserved_problem",
    "_schema_problems",
    "_size_problems",
    "_strip_prefix",
    "_varying_params",
]
