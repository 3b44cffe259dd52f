"""Keypoint evaluation of a trained model (or the codec oracle): COCO AP or MPII PCKh.

    python -m training.evaluate --model_dir=DIR | --weights=FILE.keras \
        [--ann_file=... --image_dir=... --det_file=...] [--[no]flip_test] [--decode=dark] \
        [--predictor=model|oracle] [--dataset=auto|coco|mpii] [--head_boxes_mat=...] \
        --out_dir=DIR

Flip test, decoder and batch size default to the model's training config (config.json in
--model_dir or beside --weights); with --model_dir and no --ann_file the data is the run's
validation split (its detections if it used them), so the AP equals the run's own evaluation.
The metric follows the dataset (``--dataset=auto``: an MPII JSON list or a COCO JSON object):
COCO writes keypoints_results.json and metrics.json and prints the AP table; MPII writes
pred.json and metrics.json and prints the PCKh table (head boxes from the records' head_box
fields or from --head_boxes_mat, the gt_valid.mat file).
"""

import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import datasets
from fptflite.evaluation import coco_eval, metrics
from fptflite.quantization.model_io import load_model
from fptflite.tasks import eval_settings, trainer
from fptflite.utils.cli import parse_hw

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training dir: uses its best export.")
_WEIGHTS = flags.DEFINE_string("weights", None, "A saved .keras model.")
_ANN = flags.DEFINE_string("ann_file", None, "Annotations JSON (default with --model_dir: "
                           "the run's validation set).")
_IMAGES = flags.DEFINE_string("image_dir", None, "Folder of the images (default with "
                              "--model_dir: the run's).")
_DET = flags.DEFINE_string("det_file", None, "Person detections JSON (else GT boxes; default "
                           "with --model_dir and no --ann_file: the run's choice).")
_DET_THR = flags.DEFINE_float("det_score_threshold", None, "Minimum detection score "
                              "(default: the run's, else 0).")
_FLIP = flags.DEFINE_bool("flip_test", None, "Average with the flipped image's heatmaps "
                          "(default: the model's training config).")
_DECODE = flags.DEFINE_enum("decode", None, ["dark", "quarter", "argmax"],
                            "Decoder (default: the model's training config).")
_PREDICTOR = flags.DEFINE_enum("predictor", "model", ["model", "oracle"],
                               "oracle: GT keypoints encoded to heatmaps and decoded back.")
_INPUT = flags.DEFINE_string("input_size", None, "HxW; taken from the model if omitted.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Crops per batch (default: the config's).")
_OUT = flags.DEFINE_string("out_dir", None, "Results and metrics go here.")
_DATASET = flags.DEFINE_enum("dataset", "auto", ["auto", "coco", "mpii"],
                             "Metric: COCO AP or MPII PCKh; auto reads the annotation file.")
_HEAD_MAT = flags.DEFINE_string("head_boxes_mat", None, "MPII: gt_valid.mat with head boxes.")
flags.mark_flags_as_required(["out_dir"])


def _data_flags(cfg) -> dict:
    """Annotation, image and detection files: the flags, else the training run's val split."""
    paths = cfg.data.paths() if cfg is not None else {}
    use_run = cfg is not None and not _ANN.value
    data = {"ann": _ANN.value or paths.get("val_ann"),
            "images": _IMAGES.value or paths.get("val_images"),
            "det": _DET.value if _DET.value or not use_run else paths.get("val_det"),
            "det_thr": _DET_THR.value if _DET_THR.value is not None
            else (cfg.data.det_score_threshold if cfg is not None else 0.0),
            "skip_invalid": bool(cfg is not None and cfg.data.skip_invalid)}
    if not data["ann"] or not data["images"]:
        raise app.UsageError("give --ann_file and --image_dir (or a --model_dir/--weights "
                             "whose folder holds the training run's config.json)")
    return data


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
    cfg, _ = eval_settings.find_config(_MODEL_DIR.value or _WEIGHTS.value)
    data = _data_flags(cfg)
    if _PREDICTOR.value == "oracle" and _FLIP.value:
        raise app.UsageError("the oracle answers from the labels, not the pixels: no flip test")
    flip = False if _PREDICTOR.value == "oracle" else _FLIP.value
    settings = eval_settings.resolve(flip, _DECODE.value, _BATCH.value,
                                     [_MODEL_DIR.value or _WEIGHTS.value])
    kind = datasets.file_reader(data["ann"]) if _DATASET.value == "auto" else _DATASET.value
    instances, report = datasets.load_file(
        data["ann"], data["images"], input_size[1] / input_size[0], kind, det_file=data["det"],
        det_score_threshold=data["det_thr"], head_boxes_mat=_HEAD_MAT.value,
        skip_invalid=data["skip_invalid"])
    metric = metrics.get_metric(kind)
    if predictor is None:
        predictor = coco_eval.oracle_predictor(instances, input_size)
    stats, _ = metric.evaluate(predictor, instances, data["ann"], input_size, _OUT.value,
                               settings.batch_size, settings.flip_test, settings.decode)
    flip = "flip test" if settings.flip_test else "no flip test"
    print(metric.format_stats(stats, f"{kind}, {_PREDICTOR.value}, {settings.decode}, "
                                f"{flip} (from flags, else {settings.source}), "
                                f"{len(instances)} persons ({report.summary()})"))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
