"""Style-transfer losses: pure functions (`functional`, also the test references), content and
smoothness modules (`content`), and style modules with the registry of style losses (`style`).

Every loss returns one value per image, shape (B,), so a batch of rows with different targets and
weights optimises as independent problems summed into one scalar.

Scale: the paper's E_l and L_content depend on the feature scale of the weight set (Caffe-style
0-255 input gives features ~60x larger than torchvision's). The modules therefore use *relative*
forms (error over the target's energy), which are invariant to that scale, so one set of default
loss weights serves every weight set. The paper's absolute forms stay available as functions
(`gatys_style_layer_loss`, `gatys_content_loss`).
"""

from __future__ import annotations

from stylecore.losses.content import ContentLoss, LPIPSContentLoss, TVLoss, take_buffers
from stylecore.losses.functional import (
    N_QUANTILES,
    gatys_content_loss,
    gatys_style_layer_loss,
    gaussian_energy,
    gaussian_stats,
    gaussian_w2,
    gram_matrix,
    histogram_matching_loss,
    histogram_remap,
    mean_std_loss,
    mean_std_stats,
    project,
    psd_sqrt,
    quantile_energy,
    quantiles,
    random_directions,
    relative_sq_error,
    resample_quantiles,
    sliced_wasserstein,
    total_variation,
)
from stylecore.losses.style import (
    HISTOGRAM,
    RECOMMENDED_HISTOGRAM_WEIGHT,
    STYLE_LOSS_KINDS,
    GramKind,
    HistogramKind,
    HistogramStyleLoss,
    MeanStdKind,
    MeanStdStyleLoss,
    SlicedWKind,
    SlicedWStyleLoss,
    StyleLoss,
    StyleLossKind,
    StyleLossModule,
    StyleTarget,
    W2Kind,
    W2StyleLoss,
    blend_grams,
    direction_seed,
    normalized_layer_weights,
    pack_gaussian,
    sliced_directions,
    style_loss_kind,
    unpack_gaussian,
)

__all__ = [
    "HISTOGRAM",
    "N_QUANTILES",
    "RECOMMENDED_HISTOGRAM_WEIGHT",
    "STYLE_LOSS_KINDS",
    "ContentLoss",
    "GramKind",
    "HistogramKind",
    "HistogramStyleLoss",
    "LPIPSContentLoss",
    "MeanStdKind",
    "MeanStdStyleLoss",
    "SlicedWKind",
    "SlicedWStyleLoss",
    "StyleLoss",
    "StyleLossKind",
    "StyleLossModule",
    "StyleTarget",
    "TVLoss",
    "W2Kind",
    "W2StyleLoss",
    "blend_grams",
    "direction_seed",
    "gatys_content_loss",
    "gatys_style_layer_loss",
    "gaussian_energy",
    "gaussian_stats",
    "gaussian_w2",
    "gram_matrix",
    "histogram_matching_loss",
    "histogram_remap",
    "mean_std_loss",
    "mean_std_stats",
    "normalized_layer_weights",
    "pack_gaussian",
    "project",
    "psd_sqrt",
    "quantile_energy",
    "quantiles",
    "random_directions",
    "relative_sq_error",
    "resample_quantiles",
    "sliced_directions",
    "sliced_wasserstein",
    "style_loss_kind",
    "take_buffers",
    "total_variation",
    "unpack_gaussian",
]
