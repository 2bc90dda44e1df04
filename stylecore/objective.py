"""The objective: per-row losses composed of small loss modules, built from each row's `Params`.

    total = content_weight * content + style_weight * style + tv_weight * tv (+ histogram_weight * hist)

Each term is a small module with a per-row value (B,) and `take(rows)` (its targets restricted to
some rows, for the rows still optimising under per-row L-BFGS):

- `content`: `ContentLoss` on VGG features (`mse`) or `LPIPSContentLoss` (`lpips`; from the
  style VGG's own forward pass when the LPIPS backbone is the same module);
- `style`: the module of the row's `style_loss` from the registry (`stylecore.losses.style_loss_kind`):
  adding a style loss is a class and a registry line there, nothing here;
- `hist`: Risser et al.'s histogram term (`stylecore.losses.HISTOGRAM`), only when some row has
  `histogram_weight > 0`;
- `tv`: total variation of the image (computed only when some row has `tv_weight > 0`).

One VGG forward per evaluation serves every feature term. Nothing couples rows: every term is per
row and the weights are a (B, T) tensor. Style targets (statistics of the style images) come from
`StyleTargets`, cached per style image like the former Gram cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from stylecore import memory
from stylecore.anchor import ANCHORS, anchored
from stylecore.cache import ByteLRU
from stylecore.featuretiles import tiled_targets
from stylecore.images import resize_tensor as resize
from stylecore.losses import HISTOGRAM, ContentLoss, LPIPSContentLoss, StyleLossKind, StyleTarget, TVLoss, style_loss_kind
from stylecore.losses import normalized_layer_weights as normalized_weights
from stylecore.params import Params

Feats = Mapping[str, Tensor]


def output_size(content_hw: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) with the given long side, keeping the aspect ratio."""
    h, w = content_hw
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


class Term(Protocol):
    """One loss term of a batch: (VGG features, images (R, 3, H, W)) -> (R,)."""

    def __call__(self, feats: Feats, x: Tensor) -> Tensor: ...

    def take(self, rows: Tensor) -> Term: ...


class FeatureTerm(nn.Module):
    """A loss module on VGG features (`ContentLoss`, a style module): forward(feats) -> (B,)."""

    def __init__(self, loss: Any):
        super().__init__()
        self.loss = loss

    def forward(self, feats: Feats, x: Tensor) -> Tensor:
        out: Tensor = self.loss(feats)
        return out

    def take(self, rows: Tensor) -> FeatureTerm:
        return FeatureTerm(self.loss.take(rows))


class ImageTerm(nn.Module):
    """A loss module on the image itself (tv, LPIPS on its own backbone): forward(x) -> (B,).
    `enabled=False`: zeros (every row's weight is 0; skip the work)."""

    def __init__(self, loss: Any, enabled: bool = True):
        super().__init__()
        self.loss, self.enabled = loss, enabled

    def forward(self, feats: Feats, x: Tensor) -> Tensor:
        if not self.enabled:
            return x.new_zeros(x.shape[0], dtype=torch.float32)
        out: Tensor = self.loss(x)
        return out

    def take(self, rows: Tensor) -> ImageTerm:
        return ImageTerm(self.loss.take(rows) if hasattr(self.loss, "take") else self.loss, self.enabled)


class SharedLPIPSTerm(nn.Module):
    """LPIPS content loss from the style VGG's forward pass (same backbone module): no second pass."""

    def __init__(self, loss: LPIPSContentLoss):
        super().__init__()
        self.loss = loss

    def forward(self, feats: Feats, x: Tensor) -> Tensor:
        return self.loss.from_features(feats)

    def take(self, rows: Tensor) -> SharedLPIPSTerm:
        return SharedLPIPSTerm(self.loss.take(rows))


class Objective:
    """Per-row losses of a batch: `(x (R, 3, H, W), rows (R,) or None = all) -> dict of (R,)`, one
    entry per term (unweighted) and "total" (weighted sum). `weights` is (B, T), one column per term."""

    def __init__(self, vgg: Callable[..., dict[str, Tensor]], layers: Sequence[str], terms: Mapping[str, Term], weights: Tensor):
        self.vgg, self.layers, self.terms, self.weights = vgg, list(layers), dict(terms), weights
        self.n = weights.shape[0]
        self._subset: tuple[tuple[int, ...], dict[str, Term], Tensor] | None = None  # the latest active rows

    def _for(self, rows: Tensor | None) -> tuple[dict[str, Term], Tensor]:
        key = tuple(rows.tolist()) if rows is not None else tuple(range(self.n))
        if key == tuple(range(self.n)):
            return self.terms, self.weights
        if self._subset is None or self._subset[0] != key:
            assert rows is not None
            self._subset = (key, {k: t.take(rows) for k, t in self.terms.items()}, self.weights.index_select(0, rows))
        return self._subset[1], self._subset[2]

    def __call__(self, x: Tensor, rows: Tensor | None = None) -> dict[str, Tensor]:
        terms, w = self._for(rows)
        feats = self.vgg(x, self.layers) if self.layers else {}
        out = {name: term(feats, x).float() for name, term in terms.items()}  # (R,) each, fp32
        out["total"] = sum((w[:, k] * v for k, v in enumerate(out.values())), torch.zeros_like(w[:, 0]))
        return out


def _uses_seed(kind: StyleLossKind, _memo: dict[str, bool] = {}) -> bool:  # noqa: B006 - a per-process memo
    """Whether a kind's targets depend on the seed (e.g. random projections): probed once on a tiny
    random feature map, so a new kind needs no declaration here. Decides the cache key."""
    if kind.name not in _memo:
        f = {"probe": torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(0))}
        a, b = kind.targets(f, 0), kind.targets(f, 1)
        _memo[kind.name] = not all(torch.equal(a[n], b[n]) for n in a)
    return _memo[kind.name]


class StyleTargets:
    """Style targets per (style image key, style side, weights, pooling, layers, loss kind, seed if the
    kind uses it, device), in a byte-bounded LRU; a row's several styles are blended by the kind.

    Bounded memory: a style image whose one-piece forward the memory model puts over the tile
    threshold of `budget` (bytes a row may peak at; a callable, read when needed; None: the
    device's default budget) is measured in tiles with a halo (`stylecore.featuretiles`), its
    statistics merged by the kind (`partial`/`merge`/`finish`)."""

    def __init__(self, cache_bytes: int, device: torch.device, budget: Callable[[], int] | None = None):
        self.cache: ByteLRU[tuple[Any, ...], StyleTarget] = ByteLRU(cache_bytes)
        self.device = device
        self.budget = budget

    def forward_tile(self, vgg: Any, layers: Sequence[str], hw: tuple[int, int]) -> int:
        """Tile side for measuring a style image of size `hw` (0: one forward), from the memory model."""
        budget = self.budget() if self.budget is not None else memory.default_budget(str(self.device))
        arch = getattr(getattr(vgg, "module", vgg), "arch", "vgg19")
        return memory.feature_tile(arch, layers, hw, memory.feature_budget(budget, self.device.type))

    def measure(self, kind: StyleLossKind, vgg: Any, image: Tensor, layers: Sequence[str], seed: int) -> StyleTarget:
        """`kind`'s statistics (1, ...) per layer of one image (1, 3, H, W), in tiles when its one-piece
        forward is over the budget."""
        tile = self.forward_tile(vgg, layers, (image.shape[-2], image.shape[-1]))
        with torch.no_grad():
            return tiled_targets(kind, vgg, image, layers, seed, tile) if tile else kind.targets(vgg(image, layers), seed)

    def row(
        self, kind: StyleLossKind, p: Params, styles: Sequence[Tensor], keys: Sequence[str] | None, long_side: int, vgg: Any
    ) -> StyleTarget:
        """One row's blended targets: (1, ...) per style layer."""
        if p.style_blend is not None and len(p.style_blend) != len(styles):
            raise ValueError(f"style_blend has {len(p.style_blend)} weights for {len(styles)} style images")
        side = max(16, round(long_side * p.style_scale))
        seed = p.seed if _uses_seed(kind) else None
        per_style = []
        for k, style in enumerate(styles):
            key = None if keys is None else (keys[k], side, p.weights, p.pooling, p.style_layers, kind.name, seed, str(self.device))
            hit = self.cache.get(key) if key is not None else None
            if hit is None:
                s = resize(style.to(self.device), output_size((style.shape[-2], style.shape[-1]), side))
                hit = self.measure(kind, vgg, s, p.style_layers, p.seed)
                if key is not None:
                    self.cache.put(key, hit)
            per_style.append(hit)
        if len(per_style) == 1:
            return per_style[0]
        return kind.blend(per_style, normalized_weights(p.style_blend, len(per_style)))


def _style_term(kind: StyleLossKind, params: Sequence[Params], targets: Sequence[StyleTarget], device: torch.device) -> FeatureTerm:
    layers = params[0].style_layers
    stacked = {n: torch.cat([t[n] for t in targets]) for n in layers}  # (B, ...) per layer
    lw = torch.tensor([normalized_weights(p.style_layer_weights, len(layers)) for p in params], device=device)  # (B, L)
    return FeatureTerm(kind.module(stacked, lw, [p.seed for p in params]))


def build_objective(
    params: Sequence[Params],
    contents: Tensor,
    styles: Sequence[Sequence[Tensor]],
    style_keys: Sequence[Sequence[str] | None],
    long_side: int,
    vgg: Any,
    targets: StyleTargets,
    lpips: Callable[[], Any],
    anchor: tuple[Tensor, StyleTarget] | None = None,
) -> Objective:
    """The objective of a batch at one scale: `contents` (B, 3, H, W) at this scale, each row's style
    images, the style VGG's forward (`(x, layers) -> features`; its `.module`, if any, is the VGG
    module, compared with the LPIPS backbone), the style-target cache and a loader of the LPIPS model (only called for
    `content_loss="lpips"`). Rows share the BATCH_FIELDS (layers, losses, weights).

    `anchor` (the tiled pass; the rows are one row's tiles): (the tiles at their start (T, 3, h, w),
    the whole image's statistics at the start (1, ...)); each tile's style target is anchored to its
    own start (`stylecore.anchor`)."""
    p0, dev = params[0], contents.device
    layers = list(p0.style_layers)
    terms: dict[str, Term] = {}
    if p0.content_loss == "mse":
        with torch.no_grad():
            c_feats = vgg(contents, p0.content_layers) if p0.content_layers else {}
        terms["content"] = FeatureTerm(ContentLoss(c_feats))
        layers = list(p0.content_layers) + layers
    else:
        model = lpips()
        loss = LPIPSContentLoss(model, contents)
        if model.backbone is getattr(vgg, "module", vgg):  # e.g. vgg16-hed for both: one forward serves both losses
            terms["content"] = SharedLPIPSTerm(loss)
            layers += list(model.layers)
        else:
            terms["content"] = ImageTerm(loss)
    kind = style_loss_kind(p0.style_loss)
    rows = [targets.row(kind, p, s, k, long_side, vgg) for p, s, k in zip(params, styles, style_keys)]
    if anchor is not None and kind.name in ANCHORS:
        start, whole = anchor
        with torch.no_grad():
            tiles = kind.targets(vgg(start, p0.style_layers), p0.seed)  # (T, ...) per layer
        shifted = anchored(kind.name, rows[0], tiles, whole)
        rows = [{n: v[i : i + 1] for n, v in shifted.items()} for i in range(len(rows))]
    terms["style"] = _style_term(kind, params, rows, dev)
    terms["tv"] = ImageTerm(TVLoss(), enabled=any(p.tv_weight > 0 for p in params))
    columns = [[p.content_weight, p.style_weight, p.tv_weight] for p in params]
    if p0.histogram_weight > 0:  # a batch field: every row has it on or off together
        hist = [targets.row(HISTOGRAM, p, s, k, long_side, vgg) for p, s, k in zip(params, styles, style_keys)]
        terms["hist"] = _style_term(HISTOGRAM, params, hist, dev)
        columns = [c + [p.histogram_weight] for c, p in zip(columns, params)]
    weights = torch.tensor(columns, device=dev, dtype=torch.float32)  # (B, T)
    return Objective(vgg, list(dict.fromkeys(layers)), terms, weights)
