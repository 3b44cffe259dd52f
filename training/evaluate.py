"""Keypoint evaluation of a trained model (or the codec oracle): COCO AP or MPII PCKh.

    python -m training.evaluate --model_dir=DIR | --weights=FILE.keras \
        --ann_file=... --image_dir=... [--det_file=...] [--flip_test] [--decode=dark] \
        [--predictor=model|oracle] [--dataset=auto|coco|mpii] [--head_boxes_mat=...] \
        --out_dir=DIR

The metric follows the dataset (``--dataset=auto``: an MPII JSON list or a COCO JSON object):
COCO writes keypoints_results.json and metrics.json and prints the AP table; MPII writes
pred.json and metrics.json and prints the PCKh table (head boxes from the records' head_box
fields or from --head_boxes_mat, the gt_valid.mat file).
"""

import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.evaluation import coco_eval
from fptflite.models.io import load_model
from fptflite.tasks import datasets, trainer
from fptflite.utils.cli import parse_hw

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training dir: uses its best export.")
_WEIGHTS = flags.DEFINE_string("weights", None, "A saved .keras model.")
_ANN = flags.DEFINE_string("ann_file", None, "COCO person keypoints JSON.")
_IMAGES = flags.DEFINE_string("image_dir", None, "Folder of the images.")
_DET = flags.DEFINE_string("det_file", None, "Person detections JSON (else GT boxes).")
_DET_THR = flags.DEFINE_float("det_score_threshold", 0.0, "Minimum detection score.")
_FLIP = flags.DEFINE_bool("flip_test", False, "Average with the flipped image's heatmaps.")
_DECODE = flags.DEFINE_enum("decode", "dark", ["dark", "quarter", "argmax"], "Decoder.")
_PREDICTOR = flags.DEFINE_enum("predictor", "model", ["model", "oracle"],
                               "oracle: GT keypoints encoded to heatmaps and decoded back.")
_INPUT = flags.DEFINE_string("input_size", None, "HxW; taken from the model if omitted.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Crops per batch.")
_OUT = flags.DEFINE_string("out_dir", None, "Results and metrics go here.")
_DATASET = flags.DEFINE_enum("dataset", "auto", ["auto", "coco", "mpii"],
                             "Metric: COCO AP or MPII PCKh; auto reads the annotation file.")
_HEAD_MAT = flags.DEFINE_string("head_boxes_mat", None, "MPII: gt_valid.mat with head boxes.")
flags.mark_flags_as_required(["ann_file", "image_dir", "out_dir"])


def main(argv):
    del argv
    if _PREDICTOR.value == "oracle":
        input_size = parse_hw(_INPUT.value or "256x192")
        predictor = None
    else:
        if _WEIGHTS.value:
            path = _WEIGHTS.value
        elif _MODEL_DIR.value:
            path = trainer.best_export(_MODEL_DIR.value)
        else:
            raise app.UsageError("give --model_dir or --weights (or --predictor=oracle)")
        model = load_model(path)
        input_size = tuple(int(d) for d in model.input_shape[1:3])
        if _INPUT.value and parse_hw(_INPUT.value) != input_size:
            raise ValueError(f"--input_size {_INPUT.value} does not match the model's "
                             f"{input_size[0]}x{input_size[1]} input ({path})")
        predictor = coco_eval.keras_predictor(model)
    kind = datasets.file_kind(_ANN.value) if _DATASET.value == "auto" else _DATASET.value
    instances, report = datasets.load_instances(
        kind, _ANN.value, _IMAGES.value, input_size[1] / input_size[0], det_file=_DET.value,
        det_score_threshold=_DET_THR.value, head_boxes_mat=_HEAD_MAT.value)
    if predictor is None:
        predictor = coco_eval.oracle_predictor(instances, input_size)
    stats = datasets.evaluate(kind, predictor, instances, _ANN.value, input_size, _OUT.value,
                              _BATCH.value, _FLIP.value, _DECODE.value)
    print(datasets.format_stats(stats, f"{kind}, {_PREDICTOR.value}, {_DECODE.value}, "
                                f"{len(instances)} persons ({report.summary()})"))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
