"""One interface over the datasets training and evaluation use: COCO (AP) and MPII (PCKh).

The data layout of a config (``DataConfig.layout``) picks the reader, the metric and the table:
"coco" and "synthetic" read COCO JSON and score COCO keypoint AP; "mpii" and
"synthetic_mpii" read the MPII JSON layout and score PCKh. Both produce the same
``PersonInstance`` records, so the pipeline, codec, crop geometry and prediction are shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import logging

from fptflite.data import coco, mpii

COCO_LAYOUTS = ("coco", "synthetic")
MPII_LAYOUTS = ("mpii", "synthetic_mpii")
PRIMARY_METRIC = {"coco": "AP", "mpii": "mean"}  # what "best" means for each dataset


def dataset_kind(layout: str) -> str:
    """"coco" or "mpii" for a data layout."""
    if layout in COCO_LAYOUTS:
        return "coco"
    if layout in MPII_LAYOUTS:
        return "mpii"
    raise ValueError(f"unknown data layout {layout!r}; one of {COCO_LAYOUTS + MPII_LAYOUTS}")


def file_kind(ann_file: str) -> str:
    """"mpii" for an MPII JSON list, "coco" for a COCO JSON object."""
    if not os.path.isfile(ann_file):
        raise coco.DataError(f"annotation file not found: {ann_file}")
    return "mpii" if mpii.is_mpii_file(ann_file) else "coco"


def ensure_data(data_cfg) -> dict:
    """Resolves a ``DataConfig``'s paths; generates a synthetic set on first use."""
    paths = data_cfg.paths()
    from fptflite.data import synthetic

    done = synthetic.is_complete(data_cfg.data_dir) if data_cfg.layout == "synthetic" \
        else os.path.isfile(paths["val_ann"])  # synthetic_mpii: no completion marker yet
    if data_cfg.layout in ("synthetic", "synthetic_mpii") and not done:
        logging.info("generating the %s dataset in %s", data_cfg.layout, data_cfg.data_dir)
        if data_cfg.layout == "synthetic":
            from fptflite.data import synthetic as generator
        else:
            from fptflite.data import synthetic_mpii as generator
        generator.generate_dataset(data_cfg.data_dir, data_cfg.synthetic_num_train,
                                   data_cfg.synthetic_num_val, data_cfg.synthetic_seed)
    return paths


def load_instances(kind: str, ann_file: str, image_dir: str, aspect_ratio: float,
                   training: bool = False, det_file: str | None = None,
                   det_score_threshold: float = 0.0, head_boxes_mat: str | None = None,
                   skip_invalid: bool = False) -> tuple[list, coco.LoadReport]:
    """Person instances of one split of a COCO or MPII dataset.

    Args:
        kind: "coco" or "mpii".
        det_file, det_score_threshold: COCO only (MPII is evaluated on its person boxes).
        head_boxes_mat: MPII only: ``gt_valid.mat`` with the validation head boxes; None uses
            the records' ``head_box`` fields.
        skip_invalid: skip and count invalid records and unreadable images.
    """
    if kind == "coco":
        instances, report = coco.load_instances(
            ann_file, image_dir, aspect_ratio, det_file=det_file,
            det_score_threshold=det_score_threshold, training=training,
            skip_invalid=skip_invalid)
    elif kind == "mpii":
        if det_file:
            raise ValueError("MPII is evaluated on its annotated person boxes; no det_file")
        instances, report = mpii.load_mpii(ann_file, image_dir, aspect_ratio, head_boxes_mat,
                                           skip_invalid)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}: coco or mpii")
    if skip_invalid:
        instances = coco.drop_unreadable_images(instances, report)
    return instances, report


def load_split(data_cfg, paths: dict, split: str, aspect_ratio: float
               ) -> tuple[list, coco.LoadReport]:
    """The "train" or "val" instances of a config's data (val: its detections, head boxes)."""
    kind = dataset_kind(data_cfg.layout)
    if split == "train":
        return load_instances(kind, paths["train_ann"], paths["train_images"], aspect_ratio,
                              training=True, skip_invalid=data_cfg.skip_invalid)
    mat = paths.get("val_head_boxes")
    if mat and not os.path.isfile(mat):
        logging.info("no %s: PCKh uses the head_box fields of %s", mat, paths["val_ann"])
        mat = None
    instances, report = load_instances(kind, paths["val_ann"], paths["val_images"],
                                       aspect_ratio, det_file=paths.get("val_det"),
                                       det_score_threshold=data_cfg.det_score_threshold,
                                       head_boxes_mat=mat, skip_invalid=data_cfg.skip_invalid)
    if kind == "mpii":  # fail before training, not at the first evaluation
        from fptflite.evaluation import mpii as mpii_eval

        mpii_eval.instance_head_sizes(instances)
    return instances, report


def evaluate(kind: str, predictor, instances: Sequence, ann_file: str,
             input_size: Sequence[int], out_dir: str | None = None, batch_size: int = 32,
             flip_test: bool = False, decode: str = "dark", progress: bool = True
             ) -> dict[str, float]:
    """COCO keypoint AP stats or MPII PCKh stats of ``predictor`` on ``instances``."""
    if kind == "mpii":
        from fptflite.evaluation import mpii as mpii_eval

        stats, _ = mpii_eval.evaluate(predictor, instances, input_size, out_dir, batch_size,
                                      flip_test, decode, progress)
    else:
        from fptflite.evaluation import coco_eval

        stats, _ = coco_eval.evaluate(predictor, instances, ann_file, input_size, out_dir,
                                      batch_size, flip_test, decode, progress)
    return stats


def stats_kind(stats: dict) -> str:
    """Which dataset a stats dict comes from (PCKh stats have "mean", COCO stats "AP")."""
    return "mpii" if "mean" in stats else "coco"


def primary_metric(stats: dict) -> float:
    """The number "best" is chosen by: COCO AP, or MPII mean PCKh@0.5."""
    return float(stats[PRIMARY_METRIC[stats_kind(stats)]])


def format_stats(stats: dict, title: str = "") -> str:
    """The COCO AP table or the PCKh table."""
    if stats_kind(stats) == "mpii":
        from fptflite.evaluation import mpii as mpii_eval

        return mpii_eval.format_pckh(stats, title)
    from fptflite.evaluation import coco_eval

    return coco_eval.format_stats(stats, title)
