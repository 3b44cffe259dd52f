"""Evaluation at detector-file scale: crops/s and peak memory for N person boxes.

    python -m benchmarks.evaluation --tflite=FILE.tflite --model=FLOAT_RUN_OR_KERAS \
        --data_dir=SYNTHETIC_DATA [--num_boxes=10000,50000,100000] [--noflip_test] --out_dir=DIR

For each N it writes a detector-style file of N boxes over the synthetic val images (true
boxes jittered by N(0, 6%) of their size, each box used again with new jitter until N are
drawn; scores uniform in [0.05, 1]) and runs the real command,

    python -m conversion.evaluate_tflite --tflite=... --model=... --det_file=N.json

in a fresh process, whose peak resident memory (``ru_maxrss`` from ``wait4``) and wall time
it reports in a table. Memory that grows with N beyond the results (decoded keypoints and
the COCO results list) would show as a slope far above ~2-3 kB per box. Run it under the CPU
lock: ``flock /tmp/team/cpu.lock python -m benchmarks.evaluation ...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from fptflite.utils import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TFLITE = cli.flag("tflite", required=True)
_MODEL = cli.flag("model", required=True, help_note="Here: the float model the file came from.")
_DATA = cli.flag("data_dir", required=True,
                 help_note="Here: a synthetic dataset (fptflite.data.synthetic).")
_BOXES = flags.DEFINE_list("num_boxes", ["10000", "50000", "100000"], "Box counts N.")
_FLIP = cli.flag("flip_test")
_THREADS = cli.flag("num_threads", default=2)
_OUT = cli.flag("out_dir", default="/tmp/fptflite_eval_bench")


def detector_style_boxes(ann_file: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` jittered person boxes (COCO detection results) drawn from the true boxes."""
    with open(ann_file) as f:
        anns = [a for a in json.load(f)["annotations"] if a.get("category_id") == 1]
    rng = np.random.default_rng(seed)
    src = np.array([a["bbox"] for a in anns], np.float64)
    ids = np.array([a["image_id"] for a in anns])
    pick = rng.integers(0, len(anns), n)
    box = src[pick]
    wh = np.repeat(box[:, 2:], 2, axis=1)
    box = box + rng.normal(0, 0.06, (n, 4)) * wh
    box[:, 2:] = np.maximum(box[:, 2:], 4.0)
    scores = rng.uniform(0.05, 1.0, n)
    return [{"image_id": int(i), "category_id": 1, "bbox": [round(float(v), 2) for v in b],
             "score": round(float(s), 4)} for i, b, s in zip(ids[pick], box, scores,
                                                               strict=True)]


def run_once(det_file: str, out_dir: str) -> tuple[float, float, str]:
    """Runs conversion.evaluate_tflite in a new process: (wall s, peak RSS MB, stdout)."""
    cmd = [sys.executable, "-m", "conversion.evaluate_tflite", f"--tflite={_TFLITE.value}",
           f"--ann_file={os.path.join(_DATA.value, 'annotations', 'person_keypoints_val.json')}",
           f"--image_dir={os.path.join(_DATA.value, 'images', 'val')}",
           f"--det_file={det_file}", f"--out_dir={out_dir}", f"--num_threads={_THREADS.value}",
           f"--model={_MODEL.value}", "--max_drop=100"]
    if _FLIP.value is not None:
        cmd.append("--flip_test" if _FLIP.value else "--noflip_test")
    log = open(os.path.join(out_dir, "log.txt"), "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log.name}")
    return wall, usage.ru_maxrss / 1024.0, stdout


def main(argv):
    del argv
    os.makedirs(_OUT.value, exist_ok=True)
    ann = os.path.join(_DATA.value, "annotations", "person_keypoints_val.json")
    rows = []
    for n in (int(b) for b in _BOXES.value):
        out = os.path.join(_OUT.value, f"n{n}")
        os.makedirs(out, exist_ok=True)
        det = os.path.join(out, "detections.json")
        with open(det, "w") as f:
            json.dump(detector_style_boxes(ann, n), f)
        wall, rss, stdout = run_once(det, out)
        rate = next((line for line in stdout.splitlines() if line.startswith("evaluated ")), "")
        rows.append((n, wall, rss, rate))
        print(f"N={n}: {wall:.0f} s, peak RSS {rss:.0f} MB; {rate}", flush=True)
    mode = "float + TFLite (parity)"
    print(f"\n{mode}, {os.path.basename(_TFLITE.value)}, flip test "
          f"{'config default' if _FLIP.value is None else _FLIP.value}, "
          f"{_THREADS.value} interpreter threads")
    print("| boxes | wall (s) | boxes/s (whole command) | peak RSS (MB) | RSS growth (kB/box) |")
    print("|---:|---:|---:|---:|---:|")
    for i, (n, wall, rss, _) in enumerate(rows):
        slope = (f"{(rss - rows[0][2]) * 1024 / (n - rows[0][0]):.2f}" if i else "-")
        print(f"| {n} | {wall:.0f} | {n / wall:.1f} | {rss:.0f} | {slope} |")
    return 0


if __name__ == "__main__":
    app.run(main)
