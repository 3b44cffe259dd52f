"""Model zoo: ``build_model(name, ...)`` and the custom layers it uses."""

from fptflite.models.complexity import count_macs, summarize
from fptflite.models.layers import DepthToSpace, ImageNormalization
from fptflite.models.zoo import (
    HEATMAP_STRIDE,
    MODELS,
    build_model,
    get_entry,
    heatmap_logits_model,
)

__all__ = [
    "DepthToSpace",
    "HEATMAP_STRIDE",
    "ImageNormalization",
    "MODELS",
    "build_model",
    "count_macs",
    "get_entry",
    "heatmap_logits_model",
    "summarize",
]
