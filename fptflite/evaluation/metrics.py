"""The metric registry: COCO keypoint AP and MPII PCKh behind one interface.

A registered dataset (``fptflite.data.datasets``) names its metric by its reader ("coco" or
"mpii"); everything that scores predictions (training, ``training.evaluate``, the parity
harness, the main job) looks the metric up here instead of testing a layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from fptflite.data.coco import PersonInstance
from fptflite.evaluation import coco_eval, mpii
from fptflite.keypoints import COCO_KEYPOINT_NAMES, MPII_KEYPOINT_NAMES

Predictions = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Metric:
    """How one dataset family is scored.

    Attributes:
        name: the printed name ("AP" or "PCKh").
        primary: the stats key "best" and the parity budget use ("AP", or "mean" PCKh@0.5).
        keypoint_names: the K names, in heatmap order.
        score: ``score(instances, predictions, ann_file, out_dir) -> stats``; predictions are
            ``coco_eval.predict_instances`` outputs ("coords" [N, K, 2] image pixels, ...).
        format_stats: ``format_stats(stats, title) -> str``: the table papers print.
        evaluate: ``evaluate(predictor, instances, ann_file, input_size, out_dir,
            batch_size, flip_test, decode, progress) -> (stats, predictions)``: predicts
            every instance's crop (streaming, ``coco_eval.predict_instances``) and scores it.
        image_bootstrap: its differences have a paired bootstrap over images
            (``bootstrap.paired_ap_difference`` on the results files; COCO AP only).
    """

    name: str
    primary: str
    keypoint_names: tuple[str, ...]
    score: Callable[[Sequence[PersonInstance], Predictions, str, str | None], dict]
    format_stats: Callable[[dict, str], str]
    evaluate: Callable[..., tuple[dict[str, float], Predictions]]
    image_bootstrap: bool = False

    def value(self, stats: dict) -> float:
        """The primary number of a stats dict, in [0, 1]."""
        return float(stats[self.primary])


def _score_pckh(instances, pred, ann_file, out_dir):
    del ann_file  # PCKh needs the instances' joints and head boxes only
    return mpii.score_predictions(instances, pred["coords"], out_dir)


def _evaluate_pckh(predictor, instances, ann_file, input_size, *args, **kwargs):
    del ann_file
    return mpii.evaluate(predictor, instances, input_size, *args, **kwargs)


METRICS: dict[str, Metric] = {
    "coco": Metric("AP", "AP", COCO_KEYPOINT_NAMES, coco_eval.score_predictions,
                   coco_eval.format_stats, coco_eval.evaluate, image_bootstrap=True),
    "mpii": Metric("PCKh", "mean", MPII_KEYPOINT_NAMES, _score_pckh, mpii.format_pckh,
                   _evaluate_pckh),
}


def get_metric(name: str) -> Metric:
    """The metric of a dataset reader ("coco" or "mpii")."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; one of {sorted(METRICS)}")
    return METRICS[name]
