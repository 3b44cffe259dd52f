"""Training input-pipeline throughput on 640x480 JPEGs (COCO-sized), images/s.

    python benchmarks/input_pipeline.py [--num_images=200] [--batch_size=32] [--epochs=3]

Generates synthetic 640x480 JPEGs in a temporary folder, then times full training epochs
(decode, augment, warp, targets) side by side: decoding only the crop's region of the JPEG
(the default), decoding the whole image, and reading per-person TFRecord shards written by
training.prepare_coco's library code. Prints a table with medians over epochs.

Scaling: every stage is a TensorFlow graph op inside one parallel ``map``, so throughput grows
about linearly with cores until the disk or the accelerator is the limit; a GPU that trains
at thousands of images/s needs ~10x this machine's cores, or TFRecord shards of regions.
"""

from __future__ import annotations

import os
import tempfile
import time

import cv2
import numpy as np
from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import pipeline, synthetic, tfrecords
from fptflite.data.datasets import load_file
from fptflite.utils import cli
from fptflite.utils.io import write_json_atomic

_NUM = flags.DEFINE_integer("num_images", 200, "Synthetic 640x480 images to generate.")
_BATCH = cli.flag("batch_size", default=32)
_EPOCHS = cli.flag("epochs", default=3)
_INPUT = cli.flag("input_size", default="256x192")
_JSON = cli.flag("out_json")


def make_images(out_dir: str, n: int) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    d = synthetic.generate_split(out_dir, "bench", 0, 0, 1, progress=False)

    images, anns = [], []
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    for i in range(n):
        img, a = synthetic.generate_image(rng, i + 1, size=(480, 640))
        name = f"{i + 1:012d}.jpg"
        cv2.imwrite(os.path.join(out_dir, "images", name), img[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": name, "height": 480, "width": 640})
        for ann in a:
            ann["id"] = len(anns) + 1
            anns.append(ann)
    d.update(images=images, annotations=anns)
    ann_file = os.path.join(out_dir, "ann.json")
    write_json_atomic(ann_file, d)
    return ann_file, os.path.join(out_dir, "images")


def main(argv):
    del argv
    h, w = (int(v) for v in _INPUT.value.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        ann_file, image_dir = make_images(tmp, _NUM.value)
        instances, _ = load_file(ann_file, image_dir, w / h)
        record_dir = os.path.join(tmp, "records")
        tfrecords.write_shards(instances, record_dir, "train", (h, w), 8, progress=False)
        variants = {
            "crop region": lambda e: pipeline.train_dataset(instances, (h, w), _BATCH.value, e),
            "whole image": lambda e: pipeline.train_dataset(instances, (h, w), _BATCH.value, e,
                                                            decode_roi=False),
            "tfrecords": lambda e: pipeline.tfrecord_train_dataset(record_dir, (h, w),
                                                                   _BATCH.value, e),
        }
        rates = {k: [] for k in variants}
        for epoch in range(_EPOCHS.value + 1):  # variants interleaved, epoch 0 is warm-up
            for name, make in variants.items():
                t0, count = time.perf_counter(), 0
                for images, _, _ in make(epoch):
                    count += int(images.shape[0])
                if epoch:
                    rates[name].append(count / (time.perf_counter() - t0))
        rows = [{"decode": name, "median_images_per_s": float(np.median(r)),
                 "min": float(np.min(r)), "max": float(np.max(r)), "persons": len(instances)}
                for name, r in rates.items()]
    print(f"\ninput pipeline, 640x480 JPEGs -> {h}x{w} crops, batch {_BATCH.value}, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'decode':<14} {'median img/s':>13} {'min':>8} {'max':>8}")
    for r in rows:
        print(f"{r['decode']:<14} {r['median_images_per_s']:>13.1f} {r['min']:>8.1f} "
              f"{r['max']:>8.1f}")
    if _JSON.value:
        write_json_atomic(_JSON.value, rows)


if __name__ == "__main__":
    app.run(main)
