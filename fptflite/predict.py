"""Top-down pose prediction on an image or a video.

    python -m fptflite.predict --model=X.tflite|MODEL_DIR|X.keras (--image=PATH | --video=PATH)
        [--det_file=COCO_DET_JSON [--ann_file=COCO_ANN_JSON | --image_id=ID]] [--track] [--smooth]
        --out=PATH [--out_json=PATH]

Writes the annotated image/video (--out) and COCO-results JSON (--out_json, default --out with
.json). The last line printed ends with "F frames/s" (end to end). With a .tflite model only
LiteRT, OpenCV and numpy are used (TensorFlow is not imported).

An image's boxes are the detections of its COCO id: --image_id, or the id of the --ann_file
``images`` entry whose file_name is the image's basename (never parsed from the file name).
A detection file of a single image needs neither. The results' ``image_id`` is that id; with
no --det_file and no id given it is 0. For a video, ``image_id`` is the frame index.
"""

import os
import sys

from absl import app, flags

from fptflite import rundir
from fptflite.serving import one_euro
from fptflite.serving.predictors import load_predictor
from fptflite.serving.video import (
    PredictError,
    PredictOptions,
    coco_image_id,
    predict_image,
    predict_video,
)
from fptflite.tflite import runtimes
from fptflite.utils import cli

_MODEL = cli.flag("model")
_IMAGE = flags.DEFINE_string("image", None, "Input image.")
_VIDEO = flags.DEFINE_string("video", None, "Input video.")
_BOXES = cli.flag("det_file")
_ANN_FILE = cli.flag("ann_file")
_IMAGE_ID = flags.DEFINE_integer("image_id", None, "Image: its COCO id (selects its --det_file "
                                 "and is written into the results).")
_BOX_SCORE = cli.flag("det_score_threshold")
_TRACK = flags.DEFINE_bool("track", False, "Video: place each crop from the previous frame's "
                           "keypoints (MoveNet's rule).")
_SMOOTH = flags.DEFINE_bool("smooth", False, "Video: One-Euro filter per keypoint coordinate.")
_MIN_CUTOFF = flags.DEFINE_float("min_cutoff", one_euro.DEFAULT_MIN_CUTOFF,
                                 "One-Euro minimum cutoff (Hz); lower = smoother.")
_BETA = flags.DEFINE_float("beta", one_euro.DEFAULT_BETA,
                           "One-Euro speed coefficient; higher = less lag.")
_D_CUTOFF = flags.DEFINE_float("d_cutoff", one_euro.DEFAULT_D_CUTOFF,
                               "One-Euro derivative cutoff (Hz).")
_THREADS = cli.flag("num_threads")
_RUNTIME = cli.flag("runtime", enum_values=list(runtimes.RUNTIMES))
_OUT = cli.flag("out")
_JSON = cli.flag("out_json")
flags.mark_flags_as_required(["model", "out"])


def _det_score_threshold() -> float:
    """--det_score_threshold, else the run's (a run directory or a model in one), else 0."""
    if _BOX_SCORE.value is not None:
        return _BOX_SCORE.value
    run = rundir.run_of(_MODEL.value)
    return float(rundir.read_config(run)["data"]["det_score_threshold"]) if run else 0.0


def _image_id() -> int | None:
    """The image's COCO id from --image_id or --ann_file (None when neither is given)."""
    if _ANN_FILE.value:
        return coco_image_id(_ANN_FILE.value, _IMAGE.value)
    return _IMAGE_ID.value


def main(argv):
    del argv
    if bool(_IMAGE.value) == bool(_VIDEO.value):
        raise app.UsageError("give exactly one of --image and --video")
    if _ANN_FILE.value and _IMAGE_ID.value is not None:
        raise app.UsageError("give at most one of --ann_file and --image_id")
    if _VIDEO.value and (_ANN_FILE.value or _IMAGE_ID.value is not None):
        raise app.UsageError("--ann_file and --image_id apply to --image only (a video's "
                             "image_id is the frame index)")
    json_out = _JSON.value or os.path.splitext(_OUT.value)[0] + ".json"
    opts = PredictOptions(track=_TRACK.value, smooth=_SMOOTH.value,
                          min_cutoff=_MIN_CUTOFF.value, beta=_BETA.value,
                          d_cutoff=_D_CUTOFF.value, box_score_threshold=_det_score_threshold())
    try:
        image_id = _image_id() if _IMAGE.value else None
        predictor = load_predictor(_MODEL.value, _THREADS.value, _RUNTIME.value)
        if _IMAGE.value:
            stats = predict_image(predictor, _IMAGE.value, _OUT.value, json_out, _BOXES.value,
                                  opts, image_id)
        else:
            stats = predict_video(predictor, _VIDEO.value, _OUT.value, json_out, _BOXES.value,
                                  opts)
    except (PredictError, FileNotFoundError, ValueError, runtimes.RuntimeUnavailable) as e:
        # RunDirError is a ValueError: a run directory without a model
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stats["incomplete"]:
        print(f"warning: {stats['incomplete']}", file=sys.stderr)
    image = f" of image_id {stats['image_id']}" if _IMAGE.value else ""
    print(f"wrote {_OUT.value} and {json_out}: {stats['people']} poses{image} in "
          f"{stats['frames']} frames")
    print(f"end to end: {stats['frames'] / stats['seconds']:.1f} frames/s")
    return 3 if stats["incomplete"] else 0


if __name__ == "__main__":
    sys.exit(app.run(main))
