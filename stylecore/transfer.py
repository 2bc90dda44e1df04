"""The optimisation of Gatys et al. (2016), batched: several rows of one output size at once.

Split the way the method is: models (`StyleTransfer.__init__`, cached per process), targets
(`_targets`: content features, style Grams computed once per style), initial image (`_init`),
the objective (`_Objective`: per-row losses) and the per-scale loop (`stylecore.loop.optimize_scale`).
The core never prints: progress, snapshots and each row's history go through callbacks and
small dataclasses (`Progress`, `Snapshot`, `TransferResult`).

Batching: rows are stacked along the batch dimension for one forward + backward per evaluation,
but each row is its own problem: per-row losses (no batch-level normaliser), per-row optimiser
state (Adam: one leaf tensor per row; L-BFGS: `stylecore.optim.BatchedLBFGS`, own history, line
search, step size and stopping per row). A row's image therefore depends only on its own content,
style, params and weights, not on its batch-mates, up to the kernels' batch-size-dependent
rounding (see `StyleTransfer.__init__`)."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from stylecore.cache import ByteLRU
from stylecore.images import preserve_colors
from stylecore.images import resize_tensor as resize
from stylecore.loop import LBFGS_CHUNK, OptimSettings, StepFn, optimize_scale  # noqa: F401 - LBFGS_CHUNK: benchmarks read it here
from stylecore.losses import ContentLoss, StyleLoss, blend_grams, gram_matrix, normalized_layer_weights, total_variation
from stylecore.params import Params, check_job
from stylecore.weights import load_vgg


@dataclass(frozen=True)
class TransferJob:
    """One row: content and style images as (1, 3, H, W) tensors in [0, 1] at any size.

    `style_keys` name the style images (e.g. their paths) so their Gram targets are computed once
    per engine and reused by later rows; leave None to skip the cache."""

    content: torch.Tensor
    styles: tuple[torch.Tensor, ...]
    params: Params
    style_keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Progress:
    """One optimisation step of a batch. `step` counts the iterations of the row furthest on (rows
    may stop at different steps); `losses` are means (unweighted) over the rows evaluated last,
    i.e. the rows still optimising."""

    step: int
    total_steps: int
    scale: int
    n_scales: int
    losses: Mapping[str, float]


@dataclass(frozen=True)
class Snapshot:
    """A row's image during its optimisation, every `params.snapshot_every` steps of the row."""

    row: int  # index in `jobs`
    step: int  # the row's steps so far, all scales
    image: torch.Tensor  # (3, H, W) CPU in [0, 1], at the current scale's size


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


ProgressFn = Callable[[Progress], None]
SnapshotFn = Callable[[Snapshot], None]

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


def output_size(content_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) with the given long side, keeping the content's aspect ratio."""
    h, w = content_hw
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def batch_key(params: Params, content_hw: tuple[int, int]) -> tuple:
    """Rows with equal keys can be optimised together in one batch."""
    return (output_size(content_hw, params.size),) + tuple(getattr(params, f) for f in BATCH_FIELDS)


def scale_sizes(params: Params) -> list[int]:
    """Long sides, coarse to fine: size / 2^(n-1), ..., size."""
    return [max(16, round(params.size / 2 ** (params.scales - 1 - i))) for i in range(params.scales)]


def scale_plan(params: Params) -> list[tuple[int, int]]:
    """(long side, iterations) per scale, coarse to fine."""
    return [(side, params.iterations) for side in scale_sizes(params)]


class _Tracker:
    """The engine's side of `optimize_scale`'s step callback: each row's history, steps per scale,
    snapshots, progress (of the row furthest on) and the deadline."""

    def __init__(
        self,
        jobs: Sequence[TransferJob],
        progress: ProgressFn | None,
        snapshot: SnapshotFn | None,
        deadline: float | None,
        row0: int,
        total: int,
        n_scales: int,
    ):
        self.jobs, self.progress, self.snapshot, self.deadline, self.row0 = jobs, progress, snapshot, deadline, row0
        self.total, self.n_scales = total, n_scales
        self.history: list[dict[str, list[float]]] = [{} for _ in jobs]
        self.scale_steps: list[list[int]] = [[] for _ in jobs]
        self.done = [0] * len(jobs)  # steps per row before the current scale
        self.latest: dict[int, Mapping[str, float]] = {}
        self.reported = self.base = self.scale_index = 0

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def scale(self, index: int) -> StepFn:
        self.scale_index, self.base, self.latest = index, max(self.done), {}
        return self.on_step

    def on_step(self, i: int, step: int, terms: Mapping[str, float], image: Callable[[], torch.Tensor]) -> bool:
        h = self.history[i]
        for k, v in terms.items():
            h.setdefault(k, []).append(v)
        n, every = self.done[i] + step, self.jobs[i].params.snapshot_every
        if self.snapshot is not None and every > 0 and n % every == 0:
            self.snapshot(Snapshot(self.row0 + i, n, image().detach()[0].clamp(0, 1).cpu()))
        self.latest[i] = terms
        if self.progress is not None and self.base + step > self.reported:
            self.reported = self.base + step
            means = {k: sum(t[k] for t in self.latest.values()) / len(self.latest) for k in terms}
            self.progress(Progress(self.reported, self.total, self.scale_index, self.n_scales, means))
        return self.past_deadline()

    def end_scale(self, steps: Sequence[int]) -> None:
        for i, n in enumerate(steps):
            self.scale_steps[i].append(n)
            self.done[i] += n


class StyleTransfer:
    """The engine. Holds the models for its device; `run` optimises a batch of rows."""

    def __init__(self, device: str | torch.device | None = None, style_cache_bytes: int = GRAM_CACHE_BYTES, batch_invariant: bool = False):
        """`batch_invariant`: optimise the rows of a batch one at a time, so that each row's image is
        bitwise the image of a lone run (`run([job])`). Without it the rows share one batched
        forward + backward per evaluation; each row still has its own losses, optimiser state and
        stopping, but multi-threaded CPU kernels (oneDNN convolutions, reductions, bmm) round a row
        differently at batch size 1 than inside a batch (~1e-7 relative in losses and gradients),
        and L-BFGS's line searches amplify that over tens of steps (2 threads, 48-256 px, 20-30
        steps: mean 0-5 of 255, metrics within ~4%; Adam < 0.01 of 255). Cost: the batching
        speed-up, small on the CPU (batch of 4, per step: 1.12x at 96x128, 0.9x at 192x256 with one
        thread; ~1.6x at 48x64), most of it on a GPU. Progress then reports each row's steps in turn."""
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_invariant = batch_invariant
        # Style Gram targets by (style key, style side, weights, pooling, layers, device).
        self._gram_cache: ByteLRU[tuple, dict[str, torch.Tensor]] = ByteLRU(style_cache_bytes)

    # ------------------------------------------------------------------ models
    def vgg(self, params: Params):
        return load_vgg(params.weights, params.pooling, self.device)

    def lpips(self, params: Params):
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
        hw = output_size(tuple(jobs[0].content.shape[-2:]), p0.size)
        for j in jobs[1:]:
            _check_compatible(jobs[0], j)
        for j in jobs:  # a clear error, not a pooling shape error, for images too small for the layers
            check_job(j.params, tuple(j.content.shape[-2:]), [tuple(s.shape[-2:]) for s in j.styles])
        vgg, rw = self.vgg(p0)
        plan = scale_plan(p0)
        track = _Tracker(jobs, progress, snapshot, deadline, row0, sum(it for _, it in plan), len(plan))
        x: torch.Tensor | None = None
        stopped = ["cap"] * len(jobs)
        for si, (long_side, iterations) in enumerate(plan):
            if x is not None and track.past_deadline():
                stopped = ["timeout"] * len(jobs)  # no time for the finer scales
                break
            shw = output_size(hw, long_side) if long_side != p0.size else hw
            contents = torch.cat([resize(j.content.to(self.device), shw) for j in jobs])  # (B, 3, H, W)
            content_loss, style_loss = self._targets(jobs, contents, long_side, vgg)
            objective = _Objective(jobs, vgg, content_loss, style_loss)
            x = self._init(jobs, contents) if x is None else resize(x.detach(), shw)
            settings = dataclasses.replace(OptimSettings.from_params(p0, iterations), tol=tuple(j.params.tol for j in jobs))
            out = optimize_scale(objective, x, settings, track.scale(si))
            x, losses = out.x, out.final
            track.end_scale(out.steps)
            stopped = ["timeout" if s == "stopped" else s for s in out.stopped]
            if "timeout" in stopped:
                break
        assert x is not None
        out_img = x.detach().clamp(0, 1)
        if tuple(out_img.shape[-2:]) != hw:  # stopped by the deadline before the last scale
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

    # ------------------------------------------------------------------ targets
    def _targets(self, jobs: Sequence[TransferJob], contents: torch.Tensor, long_side: int, vgg) -> tuple:
        p = jobs[0].params
        if p.content_loss == "mse":
            with torch.no_grad():
                c_feats = vgg(contents, p.content_layers) if p.content_layers else {}
            content_loss = ContentLoss(c_feats)
        else:
            content_loss = _LPIPSContent(self.lpips(p), contents)
        grams = [self._style_grams(j, long_side, vgg) for j in jobs]
        targets = {n: torch.cat([g[n] for g in grams]) for n in p.style_layers}  # (B, C, C) per layer
        lw = torch.tensor(
            [normalized_layer_weights(j.params.style_layer_weights, len(p.style_layers)) for j in jobs],
            device=self.device,
        )  # (B, L)
        return content_loss, StyleLoss(targets, lw)

    def _style_grams(self, job: TransferJob, long_side: int, vgg) -> dict[str, torch.Tensor]:
        """Blended, size-normalised Gram targets of one row's style image(s): (1, C, C) per layer."""
        p = job.params
        if p.style_blend is not None and len(p.style_blend) != len(job.styles):
            raise ValueError(f"style_blend has {len(p.style_blend)} weights for {len(job.styles)} style images")
        style_side = max(16, round(long_side * p.style_scale))
        per_style = []
        for k, style in enumerate(job.styles):
            key = None
            if job.style_keys is not None:
                key = (job.style_keys[k], style_side, p.weights, p.pooling, p.style_layers, str(self.device))
                hit = self._gram_cache.get(key)
                if hit is not None:
                    per_style.append(hit)
                    continue
            s = resize(style.to(self.device), output_size(tuple(style.shape[-2:]), style_side))
            with torch.no_grad():
                feats = vgg(s, p.style_layers)
                grams = {n: gram_matrix(f, normalize=True) for n, f in feats.items()}  # (1, C, C)
            if key is not None:
                self._gram_cache.put(key, grams)
            per_style.append(grams)
        return blend_grams(per_style, p.style_blend) if len(per_style) > 1 else per_style[0]

    # ------------------------------------------------------------------ init
    def _init(self, jobs: Sequence[TransferJob], contents: torch.Tensor) -> torch.Tensor:
        hw = tuple(contents.shape[-2:])
        imgs = []
        for i, j in enumerate(jobs):
            if j.params.init == "content":
                imgs.append(contents[i : i + 1])
            elif j.params.init == "noise":
                # A per-row generator: the same seed gives the same noise alone or in a batch.
                g = torch.Generator().manual_seed(j.params.seed)
                imgs.append(torch.rand((1, 3, *hw), generator=g).to(self.device))
            else:
                imgs.append(resize(j.styles[0].to(self.device), hw))
        return torch.cat(imgs).clone()


class _Objective:
    """Per-row losses of a batch: `(x (R, 3, H, W), rows (R,) or None = all) -> dict of (R,)`
    (content, style, tv, total = weighted sum). Nothing couples rows: every term is per row, and
    the loss modules' per-row targets are restricted to `rows` when only some rows are evaluated."""

    def __init__(self, jobs: Sequence[TransferJob], vgg, content_loss, style_loss):
        p = jobs[0].params
        dev = next(iter(style_loss.buffers())).device
        self.vgg, self.p, self.n = vgg, p, len(jobs)
        self.weights = torch.tensor(
            [[j.params.content_weight, j.params.style_weight, j.params.tv_weight] for j in jobs], device=dev
        )  # (B, 3)
        self.use_tv = bool((self.weights[:, 2] > 0).any())  # skip the work when every tv_weight is 0
        layers = list(dict.fromkeys((p.content_layers if p.content_loss == "mse" else ()) + p.style_layers))
        # LPIPS content on the same backbone module as the style VGG (e.g. vgg16-hed for both):
        # one forward serves both losses instead of two.
        self.shared = isinstance(content_loss, _LPIPSContent) and content_loss.model.backbone is vgg
        if self.shared:
            layers = list(dict.fromkeys(layers + list(content_loss.model.layers)))
        self.layers = layers
        self.full = (content_loss, style_loss)
        self._subsets: dict[tuple[int, ...], tuple] = {}

    def _losses_for(self, rows: torch.Tensor | None) -> tuple:
        """(content loss, style loss, weights (R, 3)) restricted to `rows`."""
        key = tuple(rows.tolist()) if rows is not None else tuple(range(self.n))
        if key == tuple(range(self.n)):
            return self.full + (self.weights,)
        if key not in self._subsets:
            self._subsets = {key: tuple(_take_rows(m, rows) for m in self.full)}  # only the latest active set
        return self._subsets[key] + (self.weights.index_select(0, rows),)

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        content_loss, style_loss, w = self._losses_for(rows)
        feats = self.vgg(x, self.layers)
        if self.p.content_loss == "mse":
            lc = content_loss(feats)  # (R,)
        else:
            lc = content_loss.from_features(feats) if self.shared else content_loss(x)
        ls = style_loss(feats)
        lt = total_variation(x) if self.use_tv else torch.zeros_like(ls)
        return dict(content=lc, style=ls, tv=lt, total=w[:, 0] * lc + w[:, 1] * ls + w[:, 2] * lt)


def _take_rows(loss: torch.nn.Module, rows: torch.Tensor) -> torch.nn.Module:
    """A per-row loss module restricted to `rows`: its targets are indexed, never recomputed."""
    if isinstance(loss, _LPIPSContent):
        return loss.take(rows)
    sub = copy.copy(loss)  # ContentLoss / StyleLoss: every buffer is (B, ...)
    object.__setattr__(sub, "_buffers", {k: v.index_select(0, rows) for k, v in loss._buffers.items()})
    return sub


class _LPIPSContent(torch.nn.Module):
    """The founding paper's perceptual content loss: LPIPS(output, content), (B,).

    The content's LPIPS features are computed once; only the output's are recomputed per step."""

    def __init__(self, model, contents: torch.Tensor | None, target: list[torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        if target is None:
            with torch.no_grad():
                target = model.features(contents)
        self.target = target  # per LPIPS layer: (B, C_l, H_l, W_l)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.distance_to_features(x, self.target)

    def from_features(self, raw: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The same loss from backbone outputs already computed (a shared forward pass)."""
        return self.model.feature_distance(self.model.normalized(dict(raw)), self.target)

    def take(self, rows: torch.Tensor) -> _LPIPSContent:
        """The same loss for `rows` (R,) of the batch only."""
        return _LPIPSContent(self.model, None, [t.index_select(0, rows) for t in self.target])


def _check_compatible(a: TransferJob, b: TransferJob) -> None:
    for f in BATCH_FIELDS:
        if getattr(a.params, f) != getattr(b.params, f):
            raise ValueError(f"rows in one batch must share '{f}': {getattr(a.params, f)!r} != {getattr(b.params, f)!r}")
    ha = output_size(tuple(a.content.shape[-2:]), a.params.size)
    hb = output_size(tuple(b.content.shape[-2:]), b.params.size)
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
