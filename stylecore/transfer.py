"""The optimisation of Gatys et al. (2016), batched: several rows of one output size at once.

Split the way the method is: models (`StyleTransfer.__init__`, cached per process), targets
(`_targets`: content features, style Grams computed once per style), initial image (`_init`),
optimiser (`_optimizer`), and the loop (`_optimize`). The core never prints: progress goes to a
callback with a small `Progress` dataclass.

Batching: rows are stacked along the batch dimension and their (B,) losses summed. With Adam
the rows stay independent problems (element-wise updates), so a batch gives the same images as
single runs. With L-BFGS the rows share one quasi-Newton history and line search: each row still
converges, but not bit-for-bit as it would alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from stylecore.cache import ByteLRU
from stylecore.images import preserve_colors, resize_tensor as resize
from stylecore.losses import ContentLoss, StyleLoss, TVLoss, blend_grams, gram_matrix, normalized_layer_weights
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
    """One optimisation step of a batch; `losses` are means over the batch (unweighted)."""

    step: int
    total_steps: int
    scale: int
    n_scales: int
    losses: Mapping[str, float]


@dataclass
class TransferResult:
    image: torch.Tensor  # (3, H, W) in [0, 1], on the CPU
    losses: dict[str, float]  # final unweighted content/style/tv and the weighted total
    steps: int  # optimisation steps actually taken, all scales
    seconds: float
    weights: str  # label of the transfer weights (name + sha256, or RANDOM)
    extra: dict = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]

# Byte budget of the per-engine cache of style Gram targets (on the engine's device). One style's
# targets at the classic five layers are 2.4 MB (sum of C^2 float32), at every VGG-19 layer 22 MB:
# 256 MiB holds ~100 of the former, ~12 of the latter.
GRAM_CACHE_BYTES = 256 * 2**20

# L-BFGS iterations per optimizer.step() call (see `StyleTransfer._optimize`).
LBFGS_CHUNK = 25

# Fields that must agree across rows optimised in one batch (one forward over the stack).
BATCH_FIELDS = (
    "size", "iterations", "content_layers", "style_layers", "content_loss", "optimizer", "lr",
    "pooling", "scales", "weights", "lpips_weights",
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


class StyleTransfer:
    """The engine. Holds the models for its device; `run` optimises a batch of rows."""

    def __init__(self, device: str | torch.device | None = None, style_cache_bytes: int = GRAM_CACHE_BYTES, batch_invariant: bool = False):
        """`batch_invariant`: make a row's image independent of its batch-mates on the CPU by
        turning off oneDNN, whose batch-size-dependent kernels differ in the last bits; max
        pooling and ReLU kinks can amplify that to ~1e-2 on a few pixels. Costs 1.2-2x per step."""
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
    def run(self, jobs: Sequence[TransferJob], progress: ProgressFn | None = None) -> list[TransferResult]:
        """Optimise every job; all must share `batch_key` (same output size and BATCH_FIELDS)."""
        if not jobs:
            return []
        if self.batch_invariant and self.device.type == "cpu":
            with torch.backends.mkldnn.flags(enabled=False):
                return self._run(jobs, progress)
        return self._run(jobs, progress)

    def _run(self, jobs: Sequence[TransferJob], progress: ProgressFn | None) -> list[TransferResult]:
        t0 = time.perf_counter()
        p0 = jobs[0].params
        hw = output_size(tuple(jobs[0].content.shape[-2:]), p0.size)
        for j in jobs[1:]:
            _check_compatible(jobs[0], j)
        for j in jobs:  # a clear error, not a pooling shape error, for images too small for the layers
            check_job(j.params, tuple(j.content.shape[-2:]), [tuple(s.shape[-2:]) for s in j.styles])
        vgg, rw = self.vgg(p0)
        x: torch.Tensor | None = None
        steps = 0
        sizes = scale_sizes(p0)
        for si, long_side in enumerate(sizes):
            shw = output_size(hw, long_side) if long_side != p0.size else hw
            contents = torch.cat([resize(j.content.to(self.device), shw) for j in jobs])  # (B, 3, H, W)
            content_loss, style_loss = self._targets(jobs, contents, long_side, vgg)
            x = self._init(jobs, contents) if x is None else resize(x.detach(), shw)
            x, taken, losses = self._optimize(
                jobs, x, vgg, content_loss, style_loss, progress, si, len(sizes), steps, p0.iterations * len(sizes)
            )
            steps += taken
        assert x is not None
        out = x.detach().clamp(0, 1)
        if any(j.params.original_colors for j in jobs):
            keep = torch.tensor([j.params.original_colors for j in jobs], device=out.device).view(-1, 1, 1, 1)
            out = torch.where(keep, preserve_colors(out, contents), out)
        seconds = time.perf_counter() - t0
        label = rw.label()
        return [
            TransferResult(out[i].cpu(), {k: float(v[i]) for k, v in losses.items()}, steps, seconds / len(jobs), label)
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

    # ------------------------------------------------------------------ optimiser + loop
    @staticmethod
    def _optimizer(params: Params, x: torch.Tensor) -> torch.optim.Optimizer:
        if params.optimizer == "lbfgs":
            # max_iter is set per chunk in `_optimize`; the history persists across step() calls.
            return torch.optim.LBFGS(
                [x], lr=params.learning_rate, max_iter=LBFGS_CHUNK, max_eval=LBFGS_CHUNK * 4, history_size=50, line_search_fn="strong_wolfe"
            )
        return torch.optim.Adam([x], lr=params.learning_rate)

    def _optimize(self, jobs, x, vgg, content_loss, style_loss, progress, scale, n_scales, done, total):
        """Run `iterations` steps; returns (image, steps taken, final (B,) losses).

        L-BFGS runs in chunks of LBFGS_CHUNK iterations per step() call: every call re-evaluates
        its starting point, so one iteration per call would cost two evaluations per step. The
        image is clamped to [0, 1] between chunks (and Adam steps)."""
        p = jobs[0].params
        dev = x.device
        cw = torch.tensor([j.params.content_weight for j in jobs], device=dev)  # (B,)
        sw = torch.tensor([j.params.style_weight for j in jobs], device=dev)
        tw = torch.tensor([j.params.tv_weight for j in jobs], device=dev)
        layers = list(dict.fromkeys((p.content_layers if p.content_loss == "mse" else ()) + p.style_layers))
        # LPIPS content on the same backbone module as the style VGG (e.g. vgg16-hed for both):
        # one forward serves both losses instead of two.
        shared = isinstance(content_loss, _LPIPSContent) and content_loss.model.backbone is vgg
        if shared:
            layers = list(dict.fromkeys(layers + list(content_loss.model.layers)))
        tv = TVLoss()
        use_tv = bool((tw > 0).any())
        x = x.detach().requires_grad_(True)
        opt = self._optimizer(p, x)
        last: dict[str, torch.Tensor] = {}
        steps = 0

        def losses() -> dict[str, torch.Tensor]:
            feats = vgg(x, layers)
            if p.content_loss == "mse":
                lc = content_loss(feats)  # (B,)
            else:
                lc = content_loss.from_features(feats) if shared else content_loss(x)
            ls = style_loss(feats)
            lt = tv(x) if use_tv else torch.zeros_like(ls)  # skip the work when every tv_weight is 0
            return dict(content=lc, style=ls, tv=lt, total=cw * lc + sw * ls + tw * lt)

        def report(step: int) -> None:
            if progress is not None:
                progress(Progress(done + step, total, scale, n_scales, {k: float(v.mean()) for k, v in last.items()}))

        def closure() -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            ls = losses()
            loss = ls["total"].sum()
            loss.backward()
            last.update({k: v.detach() for k, v in ls.items()})
            if p.optimizer == "lbfgs":  # report each new iteration once, as the line search runs
                n = opt.state[x].get("n_iter", 1)  # cumulative over the chunks of this scale
                if n > reported[0]:
                    reported[0] = n
                    report(n)
            return loss

        reported = [0]
        while steps < p.iterations:
            if p.optimizer == "lbfgs":
                chunk = min(LBFGS_CHUNK, p.iterations - steps)
                opt.param_groups[0]["max_iter"] = chunk
                state = opt.state[x]
                before, evals_before = state.get("n_iter", 0), state.get("func_evals", 0)
                opt.param_groups[0]["max_eval"] = chunk * 4
                opt.step(closure)
                taken = state["n_iter"] - before
                steps += taken
                evals_left = state["func_evals"] - evals_before < chunk * 4
                if taken < chunk and evals_left:  # stopped on a tolerance: converged, not out of evaluations
                    break
            else:
                opt.step(closure)
                steps += 1
                report(steps)
            with torch.no_grad():
                x.clamp_(0, 1)  # keep pixels valid; the optimisers may step outside [0, 1]
        with torch.no_grad():  # losses of the returned (clamped) image
            final = losses()
        return x.detach(), steps, final


class _LPIPSContent(torch.nn.Module):
    """The founding paper's perceptual content loss: LPIPS(output, content), (B,).

    The content's LPIPS features are computed once; only the output's are recomputed per step."""

    def __init__(self, model, contents: torch.Tensor):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.target = model.features(contents)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.distance_to_features(x, self.target)

    def from_features(self, raw: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The same loss from backbone outputs already computed (a shared forward pass)."""
        return self.model.feature_distance(self.model.normalized(dict(raw)), self.target)


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
