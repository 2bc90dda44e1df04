"""`stxpipe stylize CONTENT STYLE [STYLE...] -o OUT.png`: one image, every `Params` field an option.

The options are generated from `stylecore.params.field_kinds(Params)` (names, types, defaults,
help), so a new field or a changed default reaches the CLI without an edit here. Every param option takes a
string and is converted and validated by `Params` itself, so a bad value is reported exactly as
a manifest row would report it (`error: param 'optimizer': ...`, exit 1).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pipeline.cli.common import friendly_errors
from stylecore.params import FieldKind, Params, field_kinds

if TYPE_CHECKING:
    from tqdm import tqdm

# Names of the command's own (non-Params) parameters; a Params field must not reuse them.
_OWN = ("content", "styles", "output", "device")


def _cli_default(value: Any) -> str | None:
    """A dataclass default as the option's string form (lists as comma lists)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _metavar(kind: FieldKind) -> str:
    """What the option takes, from the field's annotation."""
    if kind.is_list:
        return "NAME,..." if kind.elem is str else "X,..."
    return {int: "INT", float: "FLOAT"}.get(kind.elem, "TEXT")


def _param_option(kind: FieldKind) -> inspect.Parameter:
    """One keyword parameter carrying a `typer.Option` for one Params field."""
    f = kind.field
    flag = "--" + f.name.replace("_", "-")
    help_ = f.metadata.get("help", "")
    if kind.elem is bool and not kind.is_list:
        opt = typer.Option(f.default, f"{flag}/--no-{flag[2:]}", help=help_)
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=bool)
    if kind.is_list:
        help_ += " (comma list)"
    opt = typer.Option(_cli_default(f.default), flag, metavar=_metavar(kind), help=help_)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=Optional[str])  # noqa: UP045 - Typer reads it at runtime


def with_params_options(func: Callable[..., None] | None = None, *, params_cls: type[Params] | None = None) -> Any:
    """Append one option per field of `params_cls` (default `Params`) to `func`'s signature (for
    Typer); `func` is called with its own arguments plus `params=params_cls.from_dict(<the
    options>)`. A `ParamError` (a ValueError naming the field) becomes `error: ...` and exit 1.
    Use as `@with_params_options` or `with_params_options(func, params_cls=...)`."""
    if func is None:
        return functools.partial(with_params_options, params_cls=params_cls)
    cls = params_cls or Params
    kinds = field_kinds(cls)
    clash = [name for name in kinds if name in _OWN]
    assert not clash, f"Params fields clash with command parameters: {clash}"
    own = [p for name, p in inspect.signature(func, eval_str=True).parameters.items() if name != "params"]
    generated = [_param_option(k) for k in kinds.values()]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> None:
        values = {name: kwargs.pop(name) for name in kinds}
        with friendly_errors():
            params = cls.from_dict(values)
        func(**kwargs, params=params)

    wrapper.__signature__ = inspect.Signature(own + generated)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + generated}
    del wrapper.__wrapped__  # Typer must read the generated signature, not func's
    return wrapper


class _ProgressBar:
    """A tqdm bar fed by the engine's `Progress` callback; opened at the first step, so model
    loading does not count against the step rate."""

    def __init__(self, show_tv: bool):
        self.bar: tqdm | None = None
        self.show_tv = show_tv

    def __call__(self, p: Any) -> None:  # p: stylecore.transfer.Progress
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=p.total_steps, unit="step", file=sys.stderr, dynamic_ncols=True)
        where = [f"scale {p.scale + 1}/{p.n_scales}"] if p.n_scales > 1 else []
        if p.tiles is not None:  # a tiled scale: steps move once per round, tiles in between
            where.append(f"tiles {p.tiles[0]}/{p.tiles[1]}")
        self.bar.set_description(" ".join(where), refresh=False)
        keys = ("content", "style", "tv", "total") if self.show_tv else ("content", "style", "total")
        self.bar.set_postfix({k: f"{p.losses[k]:.4g}" for k in keys if k in p.losses}, refresh=False)
        self.bar.update(p.step - self.bar.n)
        if p.tiles is not None:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _device(name: str | None) -> str | None:
    """Check a `--device` value up front; None lets the engine pick (CUDA when present)."""
    if name is None:
        return None
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device '{name}' is not a torch device (try cpu, cuda or cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    return name


@with_params_options
def stylize(
    content: Path = typer.Argument(..., help="Content image (any Pillow format; EXIF orientation applied).", show_default=False),
    styles: list[Path] = typer.Argument(..., help="Style image(s); several make a blend (weights: --style-blend).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Output PNG (written atomically; carries the params in a text chunk)."),
    device: str | None = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda (default: CUDA when present, else CPU)."),
    *,
    params: Params,
) -> None:
    """Stylise CONTENT with STYLE (Gatys et al.; L-BFGS by default) and write OUT as a PNG."""
    from stylecore import transfer
    from stylecore.images import load_tensor, save_png

    with friendly_errors(OSError):
        dev = _device(device)
        if output.is_dir():
            raise ValueError(f"output '{output}' is a directory; give a file name such as {output / 'out.png'}")
        content_t = load_tensor(content, params.size)
        style_side = max(16, round(params.size * params.style_scale))
        style_ts = [load_tensor(s, style_side) for s in styles]
        bar = _ProgressBar(show_tv=params.tv_weight > 0)
        try:  # a missing weight set raises WeightsError, whose message says how to get it
            result = transfer.stylize(content_t, style_ts, params, device=dev, progress=bar)
        finally:
            bar.close()
        save_png(result.image, output, metadata={"stxpipe:params": params.to_json(), "stxpipe:weights": result.weights})
    h, w = result.image.shape[-2:]
    typer.echo(f"wrote {output} ({w}x{h}) in {result.seconds:.1f} s, {result.steps} steps, weights {result.weights}")
    typer.echo("losses: " + "  ".join(f"{k} {v:.4g}" for k, v in result.losses.items()))
