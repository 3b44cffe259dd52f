"""Is one model's AP really better than another's on this set? A paired bootstrap.

    python -m conversion.compare_ap --ann_file=person_keypoints_val.json \
        --results=int8_qat=QAT_DIR/keypoints_results.json,int8_ptq=PTQ_DIR/keypoints_results.json \
        [--results=float=...] [--num_resamples=1000] [--confidence=0.95] [--out_file=FILE]

Takes COCO keypoint result files of the same images (as written by training.evaluate and
conversion.evaluate_tflite) and prints, for every pair, the AP difference in points with its
paired-bootstrap confidence interval over the images, and whether it is within noise.
"""

import itertools
import sys

from absl import app, flags

from fptflite.evaluation import bootstrap
from fptflite.utils import cli
from fptflite.utils.io import write_json_atomic

_ANN = cli.flag("ann_file")
_RESULTS = flags.DEFINE_list("results", None, "NAME=RESULTS_JSON, at least two.")
_RESAMPLES = flags.DEFINE_integer("num_resamples", bootstrap.DEFAULT_NUM_RESAMPLES,
                                  "Bootstrap resamples of the images.")
_CONFIDENCE = flags.DEFINE_float("confidence", bootstrap.DEFAULT_CONFIDENCE,
                                 "Confidence of the interval.")
_OUT = cli.flag("out_json")
flags.mark_flags_as_required(["ann_file", "results"])


def _named_files(items: list[str]) -> dict[str, str]:
    named = dict(item.split("=", 1) for item in items if "=" in item)
    if len(named) != len(items) or len(named) < 2:
        raise app.UsageError(f"--results needs at least two distinct NAME=FILE items, got {items}")
    return named


def main(argv):
    del argv
    tables = bootstrap.load_match_tables(_ANN.value, _named_files(_RESULTS.value))
    out = {}
    for a, b in itertools.combinations(tables, 2):
        d = bootstrap.paired_ap_difference(tables[a], tables[b], _RESAMPLES.value,
                                           _CONFIDENCE.value)
        out[f"{a} - {b}"] = d
        print(bootstrap.format_difference(a, b, d))
    if _OUT.value:
        write_json_atomic(_OUT.value, out)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
