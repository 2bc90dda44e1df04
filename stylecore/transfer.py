"""The optimisation of Gatys et al. (2016), batched: several rows of one output size at once.

Split the way the method is: models (`StyleTransfer.__init__`, cached per process), the
objective with its targets (`stylecore.objective.build_objective`: per-row loss modules from
Params, style targets cached per style), the scales (`stylecore.schedule.scale_plan`), the initial
image (`_init`) and the per-scale loop (`stylecore.loop.optimize_scale`). The core never prints:
progress, snapshots and each row's history go through callbacks and small dataclasses
(`stylecore.progress`: `Progress`, `Snapshot`; `TransferResult`).

Batching: rows are stacked along the batch dimension for one forward + backward per evaluation,
but each row is its own problem: per-row losses (no batch-level normaliser), per-row optimiser
state (Adam: one leaf tensor per row; L-BFGS: `stylecore.optim.BatchedLBFGS`, own history, line
search, step size and stopping per row). A row's image therefore depends only on its own content,
style, params and weights, not on its batch-mates, up to the kernels' batch-size-dependent
rounding (see `StyleTransfer.__init__`).

Huge rows: when the memory model (`stylecore.memory`) puts a row's one-piece peak over the tile
threshold (or `tile_size` asks for it), its scales larger than the tile go through
`stylecore.tiling.tiled_scale` instead of `optimize_scale`: overlapping tiles, each with its own
optimiser state, the whole style image's targets anchored to each tile's start
(`stylecore.anchor`), content targets from the content crops, a feathered blend, in rounds that
re-anchor the tiles to the blended image (`stylecore.tiling.ROUND_STEPS`). The row's schedule is
its own (`scale_plan`), tiled or not, so tiling (which depends on the device's memory) changes
how a row is computed, not what it asks for. Such a row runs alone."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from stylecore import memory
from stylecore.anchor import ANCHORS
from stylecore.images import match_colors, preserve_colors
from stylecore.images import resize_tensor as resize
from stylecore.loop import LBFGS_CHUNK, Objective, OptimSettings, StepFn, optimize_scale  # noqa: F401 - LBFGS_CHUNK: benchmarks read it here
from stylecore.losses import StyleLossKind, StyleTarget, style_loss_kind
from stylecore.objective import StyleTargets, build_objective, output_size
from stylecore.params import Params, check_job
from stylecore.precision import PRECISIONS, Features, autocast_dtype, channels_last_for  # noqa: F401 - PRECISIONS: the valid names, re-exported
from stylecore.progress import Progress as Progress
from stylecore.progress import ProgressFn as ProgressFn
from stylecore.progress import Snapshot as Snapshot
from stylecore.progress import SnapshotFn as SnapshotFn
from stylecore.progress import Tracker
from stylecore.schedule import scale_plan
from stylecore.tiling import tiled_scale
from stylecore.vgg import VGGFeatures
from stylecore.weights import load_vgg

if TYPE_CHECKING:
    from stylecore.lpips import LPIPS
    from stylecore.weights import ResolvedWeights


@dataclass(frozen=True)
class TransferJob:
    """One row: content and style images as (1, 3, H, W) tensors in [0, 1] at any size.

    `style_keys` name the style images (e.g. their paths) so their Gram targets are computed once
    per engine and reused by later rows; leave None to skip the cache."""

    content: torch.Tensor
    styles: tuple[torch.Tensor, ...]
    params: Params
    style_keys: tuple[str, ...] | None = None


@dataclass
class TransferResult:
    image: torch.Tensor  # (3, H, W) in [0, 1], on the CPU
    losses: dict[str, float]  # final unweighted content/style/tv (+hist) and the weighted total
    steps: int  # optimisation steps this row actually took, all scales
    seconds: float
    weights: str  # label of the transfer weights (name + sha256, or RANDOM)
    stopped: str = "cap"  # "converged" | "cap" | "timeout"
    # Per term ("total", "content", "style", "tv", "hist" when on): one value per step of this row,
    # all scales in order (the losses after the step; see `stylecore.loop`); unweighted terms,
    # weighted total.
    history: dict[str, list[float]] = field(default_factory=dict)
    scale_steps: list[int] = field(default_factory=list)  # steps taken at each scale


# Byte budget of the per-engine cache of style Gram targets (on the engine's device). One style's
# targets at the classic five layers are 2.4 MB (sum of C^2 float32), at every VGG-19 layer 22 MB:
# 256 MiB holds ~100 of the former, ~12 of the latter.
GRAM_CACHE_BYTES = 256 * 2**20

# Fields that must agree across rows optimised in one batch (one forward over the stack).
BATCH_FIELDS = (
    "size",
    "iterations",
    "content_layers",
    "style_layers",
    "content_loss",
    "optimizer",
    "lr",
    "pooling",
    "scales",
    "coarse_side",
    "weights",
    "lpips_weights",
    "style_loss",
    "histogram_weight",
    "ema",
    "tile_size",
)


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def hw_of(t: torch.Tensor) -> tuple[int, int]:
    """(H, W) of an image tensor (..., H, W)."""
    return int(t.shape[-2]), int(t.shape[-1])


def batch_key(params: Params, content_hw: tuple[int, int]) -> tuple[Any, ...]:
    """Rows with equal keys can be optimised together in one batch."""
    return (output_size(content_hw, params.size),) + tuple(getattr(params, f) for f in BATCH_FIELDS)


def upsample_with_detail(x: torch.Tensor, coarse_content: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The next scale's starting image: the coarse result upsampled, plus the content's detail that
    the coarse scale could not hold (the content minus its own down-and-up-sampled copy, the
    Laplacian band between the two scales). A bare upsample starts the finer scale blurred, and its
    content loss (conv4_2) never brings the photo's fine detail back (`stylecore.schedule`).
    x, coarse_content: (B, 3, h, w); content: (B, 3, H, W) -> (B, 3, H, W) in [0, 1]."""
    hw = hw_of(content)
    detail = content - resize(coarse_content, hw)  # (B, 3, H, W), zero-mean band-pass of the content
    return (resize(x, hw) + detail).clamp(0, 1)


def scale_sizes(params: Params) -> list[int]:
    """Long sides of the scales, coarse to fine (`stylecore.schedule.scale_plan`)."""
    return [s.long_side for s in scale_plan(params)]


class StyleTransfer:
    """The engine. Holds the models for its device; `run` optimises a batch of rows."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        style_cache_bytes: int = GRAM_CACHE_BYTES,
        batch_invariant: bool = False,
        precision: str = "auto",
        compile: bool | str = False,
        memory_budget: int | None = None,
    ):
        """`batch_invariant`: optimise the rows of a batch one at a time, so that each row's image is
        bitwise the image of a lone run (`run([job])`). Without it the rows share one batched
        forward + backward per evaluation; each row still has its own losses, optimiser state and
        stopping, but multi-threaded CPU kernels (oneDNN convolutions, reductions, bmm) round a row
        differently at batch size 1 than inside a batch (~1e-7 relative in losses and gradients),
        and L-BFGS's line searches amplify that over tens of steps (2 threads, 48-256 px, 20-30
        steps: mean 0-5 of 255, metrics within ~4%; Adam < 0.01 of 255). Cost: the batching
        speed-up, small on the CPU (batch of 4, per step: 1.12x at 96x128, 0.9x at 192x256 with one
        thread; ~1.6x at 48x64), most of it on a GPU. Progress then reports each row's steps in turn.

        `precision` (PRECISIONS): the VGG forward under bf16/fp16 autocast, losses in fp32; "auto"
        is bf16 (else fp16) on CUDA, and on the CPU bf16 where it computes bf16 natively (AMX,
        AVX512-BF16: ~2x faster there), else fp32. `compile`: `torch.compile` the VGG forward
        (True: inductor; a string names the backend). Activations are channels_last on CUDA and under
        bf16 on the CPU (`precision.channels_last_for`).

        `memory_budget`: bytes a row may peak at; rows with `tile_size` unset run their largest
        scales tiled when the memory model (`stylecore.memory`) puts them over its tile threshold."""
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = autocast_dtype(precision, self.device)
        self.precision, self.compile = precision, compile
        self._features: dict[int, Features] = {}  # by id of the cached VGG module
        self.batch_invariant = batch_invariant
        # Bytes a row may peak at (None: `memory.default_budget` of the device, read when first
        # needed); a row whose one-piece peak is over `memory.tile_budget` of it runs tiled.
        self.memory_budget = memory_budget
        # Style targets by (style key, style side, weights, pooling, layers, loss, seed if used, device).
        self.style_targets = StyleTargets(style_cache_bytes, self.device, budget=self.budget)  # style forwards over it: in tiles
        self._gram_cache = self.style_targets.cache  # the former name (tests and benchmarks read it)

    # ------------------------------------------------------------------ models
    def vgg(self, params: Params) -> tuple[VGGFeatures, ResolvedWeights]:
        return load_vgg(params.weights, params.pooling, self.device)

    def features(self, vgg: VGGFeatures) -> Features:
        """The forward the objective calls (precision, memory format, compile) for a cached VGG."""
        f = self._features.get(id(vgg))
        if f is None or f.module is not vgg:
            f = self._features[id(vgg)] = Features(vgg, self.dtype, channels_last_for(self.device, self.dtype), self.compile)
        return f

    def lpips(self, params: Params) -> LPIPS:
        from stylecore.lpips import load_lpips  # only needed for the perceptual content loss

        return load_lpips(params.lpips_weights, self.device)

    # ------------------------------------------------------------------ public
    def run(
        self,
        jobs: Sequence[TransferJob],
        progress: ProgressFn | None = None,
        snapshot: SnapshotFn | None = None,
        deadline: float | None = None,
    ) -> list[TransferResult]:
        """Optimise every job; all must share `batch_key` (same output size and BATCH_FIELDS).

        `snapshot` receives each row's image every `params.snapshot_every` steps of the row;
        `deadline` (a `time.monotonic()` value): rows still running then stop, `stopped="timeout"`."""
        if not jobs:
            return []
        if self.batch_invariant and len(jobs) > 1:
            for j in jobs[1:]:
                _check_compatible(jobs[0], j)  # the same contract as a batch
            return [self._run([j], progress, snapshot, deadline, row0=i)[0] for i, j in enumerate(jobs)]
        return self._run(jobs, progress, snapshot, deadline)

    def _run(
        self, jobs: Sequence[TransferJob], progress: ProgressFn | None, snapshot: SnapshotFn | None, deadline: float | None, row0: int = 0
    ) -> list[TransferResult]:
        t0 = time.perf_counter()
        p0 = jobs[0].params
        hw = output_size(hw_of(jobs[0].content), p0.size)
        for j in jobs[1:]:
            _check_compatible(jobs[0], j)
        for j in jobs:  # a clear error, not a pooling shape error, for images too small for the layers
            check_job(j.params, hw_of(j.content), [hw_of(s) for s in j.styles])
        tile = self._tile(p0, hw)
        if tile and len(jobs) > 1:  # the tiled pass takes one row at a time
            return [self._run([j], progress, snapshot, deadline, row0=row0 + i)[0] for i, j in enumerate(jobs)]
        vgg, rw = self.vgg(p0)
        feats = self.features(vgg)
        plan = scale_plan(p0)
        # Tiles share the row's style targets through the cache: style images without keys get
        # keys of this run's own, so the whole style image is measured once per scale, not per tile.
        keyed = [
            j if j.style_keys is not None else dataclasses.replace(j, style_keys=tuple(f"run:{uuid.uuid4().hex}" for _ in j.styles))
            for j in jobs
        ]
        track = Tracker(jobs, progress, snapshot, deadline, row0, sum(s.iterations for s in plan), len(plan))
        x: torch.Tensor | None = None
        prev_contents = torch.empty(0)
        stopped = ["cap"] * len(jobs)
        for si, (long_side, iterations) in enumerate((s.long_side, s.iterations) for s in plan):
            if x is not None and track.past_deadline():
                stopped = ["timeout"] * len(jobs)  # no time for the finer scales
                break
            shw = output_size(hw, long_side) if long_side != p0.size else hw
            contents = torch.cat([resize(j.content.to(self.device), shw) for j in jobs])  # (B, 3, H, W)
            x = self._init(jobs, contents) if x is None else upsample_with_detail(x.detach(), prev_contents, contents)
            prev_contents = contents
            settings = dataclasses.replace(OptimSettings.from_params(p0, iterations), tol=tuple(j.params.tol for j in jobs))

            tiled = bool(tile) and max(shw) > tile  # the tiled pass (one row, see above)
            kind = style_loss_kind(p0.style_loss)

            def measure(img: torch.Tensor, kind: StyleLossKind = kind, feats: Features = feats) -> StyleTarget | None:
                """Tiles' targets are anchored to their start: the whole image's statistics there, (1, ...)."""
                return self.style_targets.measure(kind, feats, img, p0.style_layers, p0.seed) if kind.name in ANCHORS else None

            def make_objective(
                c: torch.Tensor,
                start: torch.Tensor | None = None,
                whole: Any = None,
                rows: Sequence[TransferJob] = keyed,
                side: int = long_side,
            ) -> Objective:
                rows = list(rows) * (c.shape[0] // len(rows))  # tiles: the row's job once per tile
                return build_objective(
                    [j.params for j in rows],
                    c,
                    [j.styles for j in rows],
                    [j.style_keys for j in rows],
                    side,  # the scale's long side: every tile gets the whole style image's targets
                    feats,
                    self.style_targets,
                    lambda: self.lpips(p0),
                    None if start is None or whole is None else (start, whole),
                )

            if tiled:  # tiles batched per `_tile_batch`
                batch = self._tile_batch(p0, shw, tile)
                step = track.scale(si)
                out = tiled_scale(
                    make_objective, measure, contents, x, tile, settings, step, track.past_deadline, batch, on_tiles=track.tiles
                )
            else:
                out = optimize_scale(make_objective(contents), x, settings, track.scale(si))
            x, losses = out.x, out.final
            track.end_scale(out.steps)
            stopped = ["timeout" if s == "stopped" else s for s in out.stopped]
            if "timeout" in stopped:
                break
        assert x is not None
        out_img = x.detach().clamp(0, 1)
        if hw_of(out_img) != hw:  # stopped by the deadline before the last scale
            out_img = resize(out_img, hw).clamp(0, 1)
            contents = torch.cat([resize(j.content.to(self.device), hw) for j in jobs])
        if any(j.params.original_colors for j in jobs):
            keep = torch.tensor([j.params.original_colors for j in jobs], device=out_img.device).view(-1, 1, 1, 1)
            out_img = torch.where(keep, preserve_colors(out_img, contents), out_img)
        seconds = time.perf_counter() - t0
        label = rw.label()
        return [
            TransferResult(
                out_img[i].cpu(),
                {k: float(v[i]) for k, v in losses.items()},
                sum(track.scale_steps[i]),
                seconds / len(jobs),
                label,
                stopped=stopped[i],
                history=track.history[i],
                scale_steps=track.scale_steps[i],
            )
            for i in range(len(jobs))
        ]

    # ------------------------------------------------------------------ tiles
    def budget(self) -> int:
        """Bytes a row may peak at on this engine's device (`memory_budget`, else the default)."""
        if self.memory_budget is None:
            self.memory_budget = memory.default_budget(str(self.device))
        return self.memory_budget

    def _tile(self, p: Params, hw: tuple[int, int]) -> int:
        """Tile side at the final scale, 0 for one piece: `tile_size` when set (0 = never), else
        the memory model's largest tile under the tile threshold (`memory.tile_budget`)."""
        return memory.plan_tile(p, memory.tile_budget(self.budget(), self.device.type), hw, self.device.type)

    def _tile_batch(self, p: Params, hw: tuple[int, int], tile: int) -> int:
        """Tiles per forward: one on a CPU (bitwise the same result, and batching buys little
        there); on a GPU as many as the budget holds."""
        if self.device.type != "cuda":
            return 1
        one = memory.estimate_tiled(p, hw, tile, 1, "cuda")
        per_tile = one.per_step - memory.FULL_IMAGE_TENSORS * 3 * hw[0] * hw[1] * 4
        return max(1, int((self.budget() - one.total) // max(1, per_tile)) + 1)

    # ------------------------------------------------------------------ init
    def _init(self, jobs: Sequence[TransferJob], contents: torch.Tensor) -> torch.Tensor:
        hw = hw_of(contents)
        imgs = []
        for i, j in enumerate(jobs):
            if j.params.init == "content":
                imgs.append(contents[i : i + 1])
            elif j.params.init == "color_matched":
                imgs.append(match_colors(contents[i : i + 1], j.styles, j.params.style_blend))  # moments on the CPU, map on the device
            elif j.params.init == "noise":
                # A per-row generator: the same seed gives the same noise alone or in a batch.
                g = torch.Generator().manual_seed(j.params.seed)
                imgs.append(torch.rand((1, 3, *hw), generator=g).to(self.device))
            else:
                imgs.append(resize(j.styles[0].to(self.device), hw))
        return torch.cat(imgs).clone()


def _check_compatible(a: TransferJob, b: TransferJob) -> None:
    for f in BATCH_FIELDS:
        if getattr(a.params, f) != getattr(b.params, f):
            raise ValueError(f"rows in one batch must share '{f}': {getattr(a.params, f)!r} != {getattr(b.params, f)!r}")
    ha = output_size(hw_of(a.content), a.params.size)
    hb = output_size(hw_of(b.content), b.params.size)
    if ha != hb:
        raise ValueError(f"rows in one batch must share the output size: {ha} != {hb}")


def stylize(
    content: torch.Tensor,
    style: torch.Tensor | Sequence[torch.Tensor],
    params: Params | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
) -> TransferResult:
    """Stylise one content image (1, 3, H, W) with one style image or a blend of several."""
    styles = (style,) if isinstance(style, torch.Tensor) else tuple(style)
    return StyleTransfer(device).run([TransferJob(content, styles, params or Params())], progress)[0]
