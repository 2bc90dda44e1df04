"""Peak memory of one optimisation, predicted from a row's params before anything runs.

What a Gatys optimisation holds at its peak (the start of a backward pass), per row:

- autograd's saved tensors of the VGG forward up to the deepest layer any loss needs: every ReLU
  saves its output (which is also the next conv's saved input), max pooling saves int64 indices
  (and its output, the next conv's input), a tapped conv output stays alive for its loss, the
  content loss keeps its difference tensor; LPIPS as the content loss adds its own VGG-16 pass to
  relu5_3 (unless it shares the style VGG) and two channel-normalised copies of each tap;
- the backward's transient gradients: a few tensors of the largest activation (block 1);
- image-sized tensors: the pixels, their gradient, the content image, and the optimiser's state
  (L-BFGS: `min(iterations, history)` pairs (s, y) plus direction, previous gradient and the line
  search's trial point; Adam: two moments);
- targets: content features (B, C, h, w) and per-layer style statistics;
- per process, once: the weights of the VGG (and of the LPIPS backbone), and the runtime itself.

The constants were calibrated against peak RSS on this CPU (`benchmarks/bench_memory.py`
prints predicted against measured); `BACKWARD_FACTOR` and `SLACK` absorb oneDNN's reorder
buffers and the allocator's fragmentation. Torch-free (the driver packs batches with it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from stylecore.layers import ARCHITECTURES, layer_names
from stylecore.params import Params

_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LBFGS_HISTORY = 50  # stylecore.transfer's L-BFGS history_size
GIB = 2**30

# Transient gradients of the backward pass, in units of the largest activation tensor. Fitted: by
# the time the backward reaches block 1 (where gradients are largest) the saved tensors of blocks
# 2-5 are freed, so the peak is little above the saved set (vgg16-hed, 256-1024 px: within -15%..+3%).
BACKWARD_FACTOR = 1.5
# Multiplies the tensors above: allocator fragmentation and oneDNN's blocked-format copies (CPU).
SLACK = {"cpu": 1.15, "cuda": 1.05}
# Resident size of a process with torch imported and nothing allocated (not in a row's peak when
# measured against a baseline; part of a worker's footprint).
PROCESS_BYTES = {"cpu": 350 * 2**20, "cuda": 0}
# CPU workers: beyond this per-row peak the engine tiles even if RAM would allow more: the time
# per pixel is the same tiled or not (convolutions are linear in pixels), so memory past a few GB
# buys nothing on a CPU and puts the host at risk of swapping.
CPU_TILE_BUDGET = 3 * GIB
# Share of the device's memory a worker's budget defaults to (the rest: other processes, slack).
BUDGET_FRACTION = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak bytes of one optimisation, by part; `total` is what to compare with a budget."""

    activations: int  # autograd's saved tensors of the forward (all rows)
    backward: int  # transient gradients during the backward
    images: int  # pixels, gradient, content, optimiser state (all rows)
    targets: int  # content features and style statistics (all rows)
    models: int  # weights of the VGG(s), once per process
    slack: int  # allocator and oneDNN copies

    @property
    def per_step(self) -> int:
        """Bytes that scale with the rows (all but the models)."""
        return self.activations + self.backward + self.images + self.targets + self.slack

    @property
    def total(self) -> int:
        return self.per_step + self.models


def _arch(weights: str) -> str:
    from stylecore.catalog import arch_of

    return arch_of(weights) or "vgg19"


def _shape(name: str, h: int, w: int) -> tuple[int, int, int]:
    """(C, h, w) of VGG layer `name` for an (h, w) input: block b runs at 1/2^(b-1), pool b at 1/2^b."""
    kind = name.rstrip("0123456789_")
    block = int(name[len(kind)]) if kind != "pool" else int(name[4:])
    down = block - 1 + (kind == "pool")
    return _CHANNELS[block - 1], h >> down, w >> down


def forward_saved_bytes(arch: str, layers: Iterable[str], h: int, w: int, dtype_bytes: int = 4) -> tuple[int, int]:
    """(saved bytes, largest activation in bytes) of one image's differentiable forward to the
    deepest of `layers`, counting what autograd keeps for the backward and the tapped outputs."""
    wanted = set(layers)
    if not wanted:
        return 0, 0
    names = layer_names(arch)
    last = max(names.index(n) for n in wanted)
    saved = 3 * h * w * dtype_bytes  # the normalised input, saved by conv1_1
    largest = 0
    for name in names[: last + 1]:
        c, hh, ww = _shape(name, h, w)
        n = c * hh * ww
        largest = max(largest, n * dtype_bytes)
        if name.startswith("relu"):
            saved += n * dtype_bytes
        elif name.startswith("pool"):
            saved += n * 8  # int64 indices of the max
            if name != names[last] or name in wanted:
                saved += n * dtype_bytes  # output: the next conv's input, or a tapped layer
        elif name in wanted:  # a conv output tapped for a loss (otherwise freed after its ReLU)
            saved += n * dtype_bytes
    return saved, largest


def activation_bytes(device: str = "cpu") -> int:
    """Bytes per VGG activation under the engine's default precision ("auto", `stylecore.precision`):
    2 on CUDA (bf16/fp16 autocast) and on CPUs with native bf16, else 4. Measured on this project's
    Xeon (AMX), bf16 peaks at 256-1024 px are 0.77-1.05x the fp32 model's (`benchmarks/bench_memory.py`)."""
    return 2 if str(device).startswith("cuda") or cpu_has_native_bf16() else 4


def cpu_has_native_bf16(_memo: dict[str, bool] = {}) -> bool:  # noqa: B006 - a per-process memo
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16: the `amx_tile` and
    `avx512_bf16` flags of /proc/cpuinfo), where oneDNN's bf16 convolutions are ~2x faster than fp32
    (a VGG-16 forward + backward at 256x341 on one thread of this project's Xeon: 0.94 s fp32,
    0.53 s bf16); elsewhere CPU bf16 is emulated and slower. Torch-free, so the driver's memory plan
    and the engine's precision ("auto", `stylecore.precision`) read the same answer. No
    /proc/cpuinfo (not Linux): False, i.e. fp32."""
    if "v" not in _memo:
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        except OSError:
            flags = []
        _memo["v"] = "amx_tile" in flags or "avx512_bf16" in flags
    return _memo["v"]


def _layer_elems(arch: str, layers: Iterable[str], h: int, w: int) -> int:
    return sum(math.prod(_shape(n, h, w)) for n in layers if n in layer_names(arch))


def estimate(
    params: Params,
    hw: tuple[int, int] | None = None,
    batch: int = 1,
    device: str = "cpu",
    dtype_bytes: int = 4,
    iterations: int | None = None,
    act_bytes: int | None = None,
) -> MemoryEstimate:
    """Predicted peak of optimising `batch` rows of `params` at output size `hw` (H, W; default a
    square of `params.size`) in one batched forward on `device` ("cpu" or "cuda"). `act_bytes`:
    bytes per VGG activation (None: `activation_bytes(device)`, the engine's default precision)."""
    h, w = hw if hw is not None else (params.size, params.size)
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    act_b = activation_bytes(kind) if act_bytes is None else act_bytes
    arch = _arch(params.weights)
    layers = list(params.style_layers)
    if params.content_loss == "mse":
        layers += list(params.content_layers)
    saved, _ = forward_saved_bytes(arch, dict.fromkeys(layers), h, w, act_b)
    # The backward's transients in fp32 units even under bf16: fitted (bench_memory, bf16 on this
    # Xeon: halving them too under-predicts 256-512 px by 16-24%; oneDNN's reorders stay fp32-sized).
    _, largest = forward_saved_bytes(arch, dict.fromkeys(layers), h, w, dtype_bytes)
    if act_b < dtype_bytes:  # the losses' fp32 copies of the tapped features, saved for their backward
        saved += _layer_elems(arch, dict.fromkeys(layers), h, w) * dtype_bytes
    content_elems = _layer_elems(arch, params.content_layers, h, w) if params.content_loss == "mse" else 0
    saved += content_elems * dtype_bytes  # the content loss's (F - P)
    model_params = _vgg_params(arch, layers)
    if params.content_loss == "lpips":
        shared = params.lpips_weights == params.weights
        lp_saved, _ = forward_saved_bytes("vgg16", LPIPS_LAYERS, h, w, act_b)
        _, lp_largest = forward_saved_bytes("vgg16", LPIPS_LAYERS, h, w, dtype_bytes)
        lp_taps = _layer_elems("vgg16", LPIPS_LAYERS, h, w) * dtype_bytes
        saved += (0 if shared else lp_saved) + 2 * lp_taps  # normalised taps and their squared difference
        largest = max(largest, lp_largest)
        content_elems = _layer_elems("vgg16", LPIPS_LAYERS, h, w)  # the target's normalised taps
        if not shared:
            model_params += _vgg_params("vgg16", LPIPS_LAYERS)
    saved += _style_loss_bytes(params, arch, h, w, dtype_bytes)
    steps = params.iterations if iterations is None else iterations
    image = 3 * h * w * dtype_bytes
    if params.optimizer == "lbfgs":
        state = 2 * min(steps, LBFGS_HISTORY) + 4  # history pairs, d, previous gradient, trial point, flat copy
    else:
        state = 2
    images = (4 + state) * image  # pixels, gradient, content, init + the optimiser's state
    targets = content_elems * dtype_bytes + _style_target_bytes(params, arch, dtype_bytes)
    act = batch * saved
    bwd = int(BACKWARD_FACTOR * batch * largest)
    per_rows = act + bwd + batch * (images + targets)
    slack = int((SLACK[kind] - 1) * per_rows)
    models = model_params * dtype_bytes + PROCESS_BYTES[kind]
    return MemoryEstimate(act, bwd, batch * images, batch * targets, models, slack)


def _style_loss_bytes(params: Params, arch: str, h: int, w: int, dtype_bytes: int) -> int:
    """Extra saved tensors of the style loss beyond the tapped features."""
    elems = _layer_elems(arch, params.style_layers, h, w)
    extra = {"gram": 0.0, "mean_std": 1.0, "w2": 1.0, "sliced_w": 3.0}.get(params.style_loss, 1.0)  # centred copies, projections + sort
    if params.histogram_weight > 0:
        extra += 3.0  # the histogram term's projections, sorted values and int64 indices
    return int(extra * elems * dtype_bytes)


def _style_target_bytes(params: Params, arch: str, dtype_bytes: int) -> int:
    chans = [_shape(n, 16, 16)[0] for n in params.style_layers if n in layer_names(arch)]
    return sum(c * c + 2 * c for c in chans) * dtype_bytes * 2  # Gram/covariance + means, and a blend's copy


def _vgg_params(arch: str, layers: Iterable[str]) -> int:
    """Parameter count of the VGG convs up to the deepest of `layers` (the whole net when empty)."""
    names = layer_names(arch)
    wanted = [n for n in layers if n in names]
    last = max((names.index(n) for n in wanted), default=len(names) - 1)
    total, c_in = 0, 3
    for block, (n_convs, c) in enumerate(zip(ARCHITECTURES[arch], _CHANNELS), start=1):
        for i in range(1, n_convs + 1):
            if names.index(f"conv{block}_{i}") > last:
                return total
            total += c_in * c * 9 + c
            c_in = c
    return total


# ------------------------------------------------------------------------------------ tiles

# Tile sides are multiples of this (VGG's four poolings before conv5_1 halve the size 4 times).
TILE_MULTIPLE = 16
# Image-sized tensors of the whole image alive beside a tiled pass: the image, the content, the
# blend's accumulator and its normaliser, the previous scale's upsampled result, the output.
FULL_IMAGE_TENSORS = 6


def no_grad_peak(arch: str, layers: Iterable[str], h: int, w: int, dtype_bytes: int = 4) -> int:
    """Peak of a forward without autograd (targets, metrics): the tapped outputs kept, plus the
    live input and output of the largest layer."""
    wanted = list(dict.fromkeys(layers))
    _, largest = forward_saved_bytes(arch, wanted, h, w, dtype_bytes)
    return _layer_elems(arch, wanted, h, w) * dtype_bytes + 2 * largest


# A style image (or metric input) measured in tiles (`stylecore.featuretiles`): the halo around each
# tile and, beyond `no_grad_peak`, the statistics' own working copies (a centred copy for the
# moments; sorted values and int64 indices for the quantile sketches), in units of the largest tap.
FEATURE_HALO = 64
FEATURE_STATS_FACTOR = 3
# Share of the tile threshold (`tile_budget`) a measuring forward may use: the rest holds the
# process, the models and the whole images alive beside it (content, style, output: 150 MB each
# at 4096 x 3072). Measured: with the whole threshold, a 4096 px row's worker peaked at 3.9 GB.
FEATURE_BUDGET_FRACTION = 0.5


def feature_budget(budget: int, device: str = "cpu") -> int:
    """Bytes a measuring forward (style targets, metrics) may peak at under a row budget `budget`."""
    return int(FEATURE_BUDGET_FRACTION * tile_budget(budget, device))


def feature_forward_peak(arch: str, layers: Iterable[str], h: int, w: int, batch: int = 1) -> int:
    """Predicted peak of measuring statistics of `batch` images (h, w) in one no-grad forward to
    `layers` (style targets): `no_grad_peak` plus the statistics' working copies."""
    wanted = [n for n in dict.fromkeys(layers) if n in layer_names(arch)]
    if not wanted:
        return 0
    largest_tap = max(math.prod(_shape(n, h, w)) for n in wanted) * 4
    return batch * (no_grad_peak(arch, wanted, h, w) + FEATURE_STATS_FACTOR * largest_tap)


def feature_tile(arch: str, layers: Iterable[str], hw: tuple[int, int], budget: int, batch: int = 1, halo: int = FEATURE_HALO) -> int:
    """Interior tile side (a multiple of 32 px) for measuring an (h, w) image's feature statistics
    under `budget` bytes: 0 when the whole image fits in one forward, else the largest tile whose
    crop (tile + 2 halo) is predicted to fit; never below 64 px."""
    h, w = hw
    layers = list(layers)
    if feature_forward_peak(arch, layers, h, w, batch) <= budget:
        return 0
    lo, hi = 64, max(h, w)
    while hi - lo > 32:  # the peak grows with the tile's area: bisect
        mid = (lo + hi) // 2
        if feature_forward_peak(arch, layers, min(h, mid + 2 * halo), min(w, mid + 2 * halo), batch) <= budget:
            lo = mid
        else:
            hi = mid
    return max(64, lo // 32 * 32)


def estimate_tiled(params: Params, hw: tuple[int, int], tile: int, tile_batch: int = 1, device: str = "cpu") -> MemoryEstimate:
    """Predicted peak of a tiled pass at output size `hw`: `tile_batch` tiles of `tile` px
    optimised at once, plus the whole image's own tensors."""
    h, w = hw
    part = estimate(params, (min(tile, h), min(tile, w)), tile_batch, device)
    full = FULL_IMAGE_TENSORS * 3 * h * w * 4
    return MemoryEstimate(part.activations, part.backward, part.images + full, part.targets, part.models, part.slack)


def tiles_apply(params: Params, hw: tuple[int, int] | None = None) -> bool:
    """Whether `params` (with an explicit tile size) tile at the final scale."""
    h, w = hw if hw is not None else (params.size, params.size)
    return bool(params.tile_size) and max(h, w) > int(params.tile_size or 0)


def row_peak(params: Params, hw: tuple[int, int] | None = None, device: str = "cpu", batch: int = 1) -> MemoryEstimate:
    """The row's predicted peak as it will run: tiled when its `tile_size` says so, else one piece."""
    size = hw if hw is not None else (params.size, params.size)
    if tiles_apply(params, size):
        return estimate_tiled(params, size, int(params.tile_size or 0), 1, device)
    return estimate(params, size, batch, device)


def plan_tile(params: Params, budget: int, hw: tuple[int, int] | None = None, device: str = "cpu") -> int:
    """Tile side for a row under `budget` bytes: 0 when the row fits in one piece (or tiling is
    off: `tile_size=0`), `tile_size` when set, else the largest tile (a multiple of 16 px) whose
    tiled pass is predicted to fit. Never below 64 px."""
    size = hw if hw is not None else (params.size, params.size)
    if params.tile_size is not None:
        return int(params.tile_size) if tiles_apply(params, size) else 0
    if estimate(params, size, 1, device).total <= budget:
        return 0
    lo, hi = 64, max(size)
    while hi - lo > 16:  # the peak grows with the tile's area: bisect
        mid = (lo + hi) // 2
        if estimate_tiled(params, size, mid, 1, device).total <= budget:
            lo = mid
        else:
            hi = mid
    return round_tile(lo)


def round_tile(side: float) -> int:
    """A tile side rounded down to a multiple of TILE_MULTIPLE (at least 4 of them)."""
    return max(4 * TILE_MULTIPLE, int(side) // TILE_MULTIPLE * TILE_MULTIPLE)


def parse_bytes(text: str | float | int) -> int:
    """'6G', '6GiB', '6GB' (all 2^30 multiples), '512M', '2.5g', or a number of bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}.get(t[-1:], 1)
    num = t[:-1] if mult != 1 else t
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size in bytes; use e.g. 6G, 512M or 2.5GiB") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"size {text!r} must be a positive number of bytes")
    return int(value * mult)


# ------------------------------------------------------------------------------------ budgets


def device_memory(device: str = "cpu") -> int:
    """Bytes a process may use on `device`: CUDA's total memory, else the host's available RAM."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    return available_ram()


def available_ram() -> int:
    """The host's available memory (MemAvailable), or total RAM where /proc is missing."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_budget(device: str = "cpu", workers: int = 1) -> int:
    """A worker's default budget: BUDGET_FRACTION of CUDA's total memory, or of the host's
    available RAM divided among `workers` CPU workers."""
    return int(BUDGET_FRACTION * device_memory(device) / max(1, workers))


def tile_budget(budget: int, device: str = "cpu") -> int:
    """Per-row peak above which the engine tiles: the budget, capped at CPU_TILE_BUDGET on a CPU."""
    return budget if str(device).startswith("cuda") else min(budget, CPU_TILE_BUDGET)


def fmt_bytes(n: float) -> str:
    """1.23 GiB / 456 MiB / 12 KiB."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"
