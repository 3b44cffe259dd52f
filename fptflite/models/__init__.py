"""Model zoo: ``build_model(name, ...)`` and the custom layers it uses."""

from fptflite.models.complexity import count_macs, summarize
from fptflite.models.layers import DepthToSpace, ImageNormalization
from fptflite.models.zoo import (
    MODELS,
    build_model,
    get_entry,
    heatmap_logits_model,
)

__all__ = [
    "DepthToSpace",
    "ImageNormalization",
    "MODELS",
    "build_model",
    "count_macs",
    "get_entry",
    "heatmap_logits_model",
    "summarize",
]
