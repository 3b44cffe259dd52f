"""Writes sharded TFRecords of per-person training crops for large or multi-worker training.

    python -m training.prepare_coco --config=NAME --data_dir=DIR --out_dir=DIR [--num_shards=64]
    python -m training.prepare_coco --ann_file=A --image_dir=I --input_size=256x192 --out_dir=DIR

Then train with --set=data.tfrecord_dir=DIR. Each record is one person's reachable image
region (see fptflite/data/tfrecords.py); every epoch the pipeline deals the records to the
workers in equal parts (fptflite.data.pipeline.tfrecord_epoch_plan).
"""

import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import datasets, tfrecords
from fptflite.tasks import configs, trainer
from fptflite.utils import cli
from fptflite.utils.cli import parse_hw

_CONFIG = cli.flag("config")
_DATA = cli.flag("data_dir")
_ANN = cli.flag("ann_file")
_IMAGES = cli.flag("image_dir")
_INPUT = cli.flag("input_size", default="256x192")
_OUT = cli.flag("out_dir")
_SHARDS = flags.DEFINE_integer("num_shards", 64, "Number of TFRecord files.")
_SKIP = flags.DEFINE_bool("skip_invalid", False, "Skip (and count) invalid records/images.")
flags.mark_flags_as_required(["out_dir"])


def main(argv):
    del argv
    if _CONFIG.value:
        cfg = configs.get_config(_CONFIG.value)
        if _DATA.value:
            cfg = configs.override(cfg, "data.data_dir", _DATA.value)
        paths = trainer.ensure_data(cfg)
        ann, images, size = paths["train_ann"], paths["train_images"], cfg.input_size
    elif _ANN.value and _IMAGES.value:
        ann, images, size = _ANN.value, _IMAGES.value, parse_hw(_INPUT.value)
    else:
        raise app.UsageError("give --config (and --data_dir) or --ann_file and --image_dir")
    instances, report = datasets.load_file(ann, images, size[1] / size[0], training=True,
                                           skip_invalid=_SKIP.value)
    index = tfrecords.write_shards(instances, _OUT.value, "train", size, _SHARDS.value)
    print(f"{index['num_records']} persons in {len(index['shards'])} shards in {_OUT.value} "
          f"({report.summary()})")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
