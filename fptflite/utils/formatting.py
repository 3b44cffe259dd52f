"""Numbers and formats shared by every report (the main job's, the ablation's, BENCHMARKS.md);
TensorFlow-free, like the report renderer."""

from __future__ import annotations


def mean_sd(stats: dict, digits: int = 3, scale: float = 1.0) -> str:
    """"m ± s" of {"mean", "sd"}, both times ``scale``, with ``digits`` decimals."""
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['sd'] * scale:.{digits}f}"


def divergence_figures(rows: list[dict]) -> dict:
    """Layer-by-layer divergence rows (``{"layer", "differing_fraction"}`` in model order) ->
    {"num_layers", "identical_prefix", "first_1pct_layer" (1-based, None if none),
    "max_fraction"}: what ``tflite.divergence.summarize_divergence``
    says, as numbers."""
    fractions = [float(r["differing_fraction"]) for r in rows]
    prefix = next((i for i, f in enumerate(fractions) if f > 0), len(fractions))
    one = next((i + 1 for i, f in enumerate(fractions) if f >= 0.01), None)
    return {"num_layers": len(fractions), "identical_prefix": prefix,
            "first_1pct_layer": one, "max_fraction": max(fractions, default=0.0)}
