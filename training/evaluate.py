"""Keypoint evaluation of a trained model (or the codec oracle): COCO AP or MPII PCKh.

    python -m training.evaluate --model=RUN_OR_KERAS \
        [--ann_file=... --image_dir=... --det_file=...] [--[no]flip_test] [--decode=dark] \
        [--predictor=model|oracle] [--dataset=auto|coco|mpii] [--head_boxes_mat=...] \
        --out_dir=DIR

Flip test, decoder and batch size default to the model's training config (the run's
config.json, or the one beside a model file); with a run and no --ann_file the data is the
run's validation split (its detections if it used them), so the AP equals the run's own
evaluation.
The metric follows the dataset (``--dataset=auto``: an MPII JSON list or a COCO JSON object):
COCO writes keypoints_results.json and metrics.json and prints the AP table; MPII writes
pred.json and metrics.json and prints the PCKh table (head boxes from the records' head_box
fields or from --head_boxes_mat, the gt_valid.mat file).
"""


from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.data import datasets
from fptflite.evaluation import coco_eval, metrics
from fptflite.quantization.model_io import load_model
from fptflite.tasks import eval_settings, stages
from fptflite.utils import cli
from fptflite.utils.cli import parse_hw

FLAGS = cli.define("model", "ann_file", "image_dir", "det_file", "det_score_threshold",
                   "flip_test", "decode", "input_size", "batch_size", "out_dir",
                   "head_boxes_mat", required=["out_dir"],
                   enum_values={"decode": ["dark", "quarter", "argmax"]},
                   help_notes={"input_size": "Default: the model's (the oracle: 256x192)."})
_PREDICTOR = flags.DEFINE_enum("predictor", "model", ["model", "oracle"],
                               "oracle: GT keypoints encoded to heatmaps and decoded back.")
_DATASET = flags.DEFINE_enum("dataset", "auto", ["auto", "coco", "mpii"],
                             "Metric: COCO AP or MPII PCKh; auto reads the annotation file.")


def main(argv):
    del argv
    if _PREDICTOR.value == "oracle":
        input_size = parse_hw(FLAGS["input_size"].value or "256x192")
        predictor = None
    else:
        if not FLAGS["model"].value:
            raise cli.BadInput("give --model (a run directory or model file), or "
                               "--predictor=oracle")
        path = rundir.resolve_model(FLAGS["model"].value)
        model = load_model(path)
        input_size = tuple(int(d) for d in model.input_shape[1:3])
        if FLAGS["input_size"].value and parse_hw(FLAGS["input_size"].value) != input_size:
            raise cli.BadInput(f"--input_size {FLAGS['input_size'].value} does not match the "
                               f"model's {input_size[0]}x{input_size[1]} input ({path})")
        predictor = coco_eval.keras_predictor(model)
    data = stages.eval_data(FLAGS["model"].value, FLAGS["ann_file"].value,
                            FLAGS["image_dir"].value, FLAGS["det_file"].value,
                            FLAGS["det_score_threshold"].value)
    if _PREDICTOR.value == "oracle" and FLAGS["flip_test"].value:
        raise cli.BadInput("the oracle answers from the labels, not the pixels: no flip test")
    flip = False if _PREDICTOR.value == "oracle" else FLAGS["flip_test"].value
    settings = eval_settings.resolve(flip, FLAGS["decode"].value, FLAGS["batch_size"].value,
                                     [FLAGS["model"].value])
    kind = datasets.file_reader(data.ann_file) if _DATASET.value == "auto" else _DATASET.value
    instances, report = datasets.load_file(
        data.ann_file, data.image_dir, input_size[1] / input_size[0], kind,
        det_file=data.det_file, det_score_threshold=data.det_score_threshold,
        head_boxes_mat=FLAGS["head_boxes_mat"].value, skip_invalid=data.skip_invalid)
    metric = metrics.get_metric(kind)
    if predictor is None:
        predictor = coco_eval.oracle_predictor(instances, input_size)
    stats, _ = metric.evaluate(predictor, instances, data.ann_file, input_size,
                               FLAGS["out_dir"].value,
                               settings.batch_size, settings.flip_test, settings.decode)
    flip = "flip test" if settings.flip_test else "no flip test"
    print(metric.format_stats(stats, f"{kind}, {_PREDICTOR.value}, {settings.decode}, "
                                f"{flip} (from flags, else {settings.source}), "
                                f"{len(instances)} persons ({report.summary()})"))
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
