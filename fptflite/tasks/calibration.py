"""Calibration crops for the conversion binaries: from files given on the command line, else
from the training split of the run a model came from (through the dataset registry, so COCO,
MPII and the synthetic sets are all read by their own reader)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from fptflite.data import datasets
from fptflite.tasks import configs


def calibration_crops_for(model: str, ann_file: str | None, image_dir: str | None,
                          input_size: Sequence[int],
                          num: int = datasets.DEFAULT_NUM_CALIBRATION) -> np.ndarray:
    """Eval-preprocessed crops [num, H, W, 3] float32 that int8 files calibrate on.

    Args:
        model: the ``--model`` argument: a training dir, or a model file.
        ann_file, image_dir: calibration annotations and images (both or neither); when
            given they win over the training dir's data.
        input_size: (H, W) of the model.
        num: how many crops.

    Raises:
        ValueError: only one of ``ann_file`` and ``image_dir``, or neither and ``model`` is
            not a training dir.
    """
    if ann_file or image_dir:
        if not (ann_file and image_dir):
            raise ValueError("give both --calib_ann_file and --calib_image_dir")
        return datasets.file_calibration_crops(ann_file, image_dir, input_size, num)
    if os.path.isdir(model):
        return datasets.split_calibration_crops(configs.load_config(model).data, input_size,
                                                "train", num)
    raise ValueError("int8 conversion needs calibration data: give --calib_ann_file and "
                     "--calib_image_dir, or a training dir as --model")
