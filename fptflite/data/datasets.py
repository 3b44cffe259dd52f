"""The dataset registry: every reader of a split goes through here.

A data layout (``DataConfig.layout``) names a registered ``Dataset``: where its files sit
under ``data_dir``, which annotation reader it takes ("coco" JSON objects or "mpii" JSON
lists), how many keypoints it has, which metric scores it (COCO keypoint AP or MPII PCKh, by
the name ``fptflite.evaluation.metrics`` looks up) and, for the synthetic sets, the generator
that writes it on first use. Training on TFRecord shards (``DataConfig.tfrecord_dir``,
written by ``training.prepare_coco``) replaces only the training split's reader; validation
still reads the layout's files.

Training, evaluation, PTQ and QAT calibration, ``debug_quant``, the Android export, the
ablation and the benchmarks all load their persons with ``load_split`` (a config's split),
``train_source`` (the training split, annotations or TFRecord shards) or ``load_file`` (an
annotation file given on a command line): all produce ``PersonInstance`` records (or shards of
them), so the pipeline, codec, crop geometry and prediction are shared.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from fptflite.data import coco, mpii, pipeline, synthetic, synthetic_mpii, tfrecords
from fptflite.data.coco import DataError, LoadReport, PersonInstance
from fptflite.keypoints import MPII_NUM_KEYPOINTS, NUM_KEYPOINTS

DEFAULT_NUM_CALIBRATION = 200  # eval crops PTQ calibrates on and QAT's ranges start from
Generator = Callable[[str, int, int, int], dict]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One registered data layout.

    Attributes:
        layout: the registry key (``DataConfig.layout``).
        reader: "coco" or "mpii": the annotation format, and the metric's name.
        num_keypoints: K of its annotations.
        files: split file role -> path relative to ``data_dir`` ("train_ann", "train_images",
            "val_ann", "val_images", optionally "val_det" and "val_head_boxes").
        generator: writes the set on first use (synthetic layouts), else None.
        is_complete: ``is_complete(data_dir)``: the generated set is whole.
    """

    layout: str
    reader: str
    num_keypoints: int
    files: dict[str, str]
    generator: Generator | None = None
    is_complete: Callable[[str], bool] | None = None

    @property
    def metric(self) -> str:
        """The metric that scores this dataset: "coco" (keypoint AP) or "mpii" (PCKh)."""
        return self.reader


def _relative(paths: dict[str, str], root: str) -> dict[str, str]:
    return {k: os.path.relpath(v, root) for k, v in paths.items()}


DATASETS: dict[str, Dataset] = {d.layout: d for d in (
    Dataset("coco", "coco", NUM_KEYPOINTS, {
        "train_ann": "annotations/person_keypoints_train2017.json",
        "train_images": "train2017",
        "val_ann": "annotations/person_keypoints_val2017.json",
        "val_images": "val2017",
        "val_det": "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"}),
    Dataset("synthetic", "coco", NUM_KEYPOINTS,
            _relative(synthetic.dataset_paths("/d"), "/d"),
            lambda d, n, v, s: synthetic.generate_dataset(d, n, v, s),
            synthetic.is_complete),
    Dataset("mpii", "mpii", MPII_NUM_KEYPOINTS, {
        "train_ann": "annot/train.json", "train_images": "images",
        "val_ann": "annot/valid.json", "val_images": "images",
        "val_head_boxes": "annot/gt_valid.mat"}),
    # The val file is written last, so its presence marks a whole set.
    Dataset("synthetic_mpii", "mpii", MPII_NUM_KEYPOINTS,
            _relative(synthetic_mpii.dataset_paths("/d"), "/d"),
            synthetic_mpii.generate_dataset,
            lambda d: os.path.isfile(synthetic_mpii.dataset_paths(d)["val_ann"])),
)}


def get_dataset(layout: str) -> Dataset:
    """The registered dataset of a layout; a clear error naming the known ones."""
    if layout not in DATASETS:
        raise ValueError(f"unknown data layout {layout!r}; one of {sorted(DATASETS)}")
    return DATASETS[layout]


@dataclasses.dataclass
class DataConfig:
    """Where the data is: a registered ``layout`` and its root ``data_dir``.

    layout "coco": annotations/person_keypoints_{train,val}2017.json, {train,val}2017/,
    person_detection_results/COCO_val2017_detections_AP_H_56_person.json.
    layout "synthetic": the ``fptflite.data.synthetic`` layout, generated on first use.
    layout "mpii": SimpleBaseline/HRNet's MPII folder: annot/{train,valid}.json, images/, and
    annot/gt_valid.mat (validation head boxes; if absent, the JSON's head_box fields).
    layout "synthetic_mpii": the ``fptflite.data.synthetic_mpii`` layout, generated on first
    use.
    """

    layout: str = "coco"
    data_dir: str = ""
    use_detections: bool = False
    det_score_threshold: float = 0.0
    skip_invalid: bool = False
    tfrecord_dir: str = ""  # train from training.prepare_coco shards instead of image files
    synthetic_num_train: int = 0
    synthetic_num_val: int = 0
    synthetic_seed: int = 0

    @property
    def dataset(self) -> Dataset:
        return get_dataset(self.layout)

    def paths(self) -> dict[str, str | None]:
        """Absolute paths of the layout's files ("val_det" is None without detections)."""
        if not self.data_dir:
            raise ValueError("data_dir is not set (give --data_dir)")
        files = self.dataset.files
        if self.use_detections and "val_det" not in files:
            raise ValueError(f"layout {self.layout!r} has no person detections; MPII is "
                             "evaluated on its annotated person boxes")
        out: dict[str, str | None] = {k: os.path.join(self.data_dir, v)
                                      for k, v in files.items()}
        if not self.use_detections:
            out["val_det"] = None
        return out


def ensure_data(data_cfg: DataConfig) -> dict[str, str | None]:
    """Resolves a config's paths; generates a synthetic set on first use."""
    paths = data_cfg.paths()
    ds = data_cfg.dataset
    if ds.generator is not None and not ds.is_complete(data_cfg.data_dir):
        logging.info("generating the %s dataset in %s", ds.layout, data_cfg.data_dir)
        ds.generator(data_cfg.data_dir, data_cfg.synthetic_num_train,
                     data_cfg.synthetic_num_val, data_cfg.synthetic_seed)
    return paths


def _read_coco(ann_file, image_dir, aspect_ratio, training, det_file, det_score_threshold,
               head_boxes_mat, skip_invalid):
    if head_boxes_mat:
        raise ValueError("head boxes are MPII's (PCKh); a COCO file has none")
    return coco.load_instances(ann_file, image_dir, aspect_ratio, det_file=det_file,
                               det_score_threshold=det_score_threshold, training=training,
                               skip_invalid=skip_invalid)


def _read_mpii(ann_file, image_dir, aspect_ratio, training, det_file, det_score_threshold,
               head_boxes_mat, skip_invalid):
    del training, det_score_threshold  # MPII persons are all annotated boxes
    if det_file:
        raise ValueError("MPII is evaluated on its annotated person boxes; no det_file")
    return mpii.load_mpii(ann_file, image_dir, aspect_ratio, head_boxes_mat, skip_invalid)


# Annotation readers by name: a dataset's ``reader`` (and its metric's name).
READERS: dict[str, Callable[..., tuple[list[PersonInstance], LoadReport]]] = {
    "coco": _read_coco, "mpii": _read_mpii}
# Checks a validation split must pass before training starts (PCKh needs head boxes).
VAL_CHECKS: dict[str, Callable[[list[PersonInstance]], None]] = {
    "mpii": mpii.check_head_boxes}


def file_reader(ann_file: str) -> str:
    """"mpii" for an MPII JSON list, "coco" for a COCO JSON object."""
    if not os.path.isfile(ann_file):
        raise DataError(f"annotation file not found: {ann_file}")
    return "mpii" if mpii.is_mpii_file(ann_file) else "coco"


def load_file(ann_file: str, image_dir: str, aspect_ratio: float, reader: str | None = None,
              training: bool = False, det_file: str | None = None,
              det_score_threshold: float = 0.0, head_boxes_mat: str | None = None,
              skip_invalid: bool = False) -> tuple[list[PersonInstance], LoadReport]:
    """Person instances of one annotation file, COCO or MPII.

    Args:
        reader: "coco" or "mpii"; None reads the file's first byte (``file_reader``).
        det_file, det_score_threshold: COCO only (MPII is evaluated on its person boxes).
        head_boxes_mat: MPII only: ``gt_valid.mat`` with the validation head boxes; None uses
            the records' ``head_box`` fields.
        skip_invalid: skip and count invalid records and unreadable images.

    Raises:
        DataError: naming the file and the record (see the readers).
        ValueError: an unknown reader, or detections for MPII.
    """
    reader = reader or file_reader(ann_file)
    if reader not in READERS:
        raise ValueError(f"unknown annotation reader {reader!r}: one of {sorted(READERS)}")
    instances, report = READERS[reader](ann_file, image_dir, aspect_ratio, training, det_file,
                                        det_score_threshold, head_boxes_mat, skip_invalid)
    if skip_invalid:
        instances = coco.drop_unreadable_images(instances, report)
    return instances, report


def load_split(data_cfg: DataConfig, split: str, aspect_ratio: float, training: bool = False,
               ) -> tuple[list[PersonInstance], LoadReport]:
    """The "train" or "val" persons of a config's data (generated first if synthetic).

    The val split takes the config's detections (COCO) or head boxes (MPII). ``training``
    marks the persons for augmentation (see ``coco.load_instances``).

    Raises:
        DataError: a bad file or record, named; an MPII val record without a head box.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    paths = ensure_data(data_cfg)
    reader = data_cfg.dataset.reader
    if split == "train":
        return load_file(paths["train_ann"], paths["train_images"], aspect_ratio, reader,
                         training=training, skip_invalid=data_cfg.skip_invalid)
    mat = paths.get("val_head_boxes")
    if mat and not os.path.isfile(mat):
        logging.info("no %s: PCKh uses the head_box fields of %s", mat, paths["val_ann"])
        mat = None
    instances, report = load_file(paths["val_ann"], paths["val_images"], aspect_ratio, reader,
                                  det_file=paths.get("val_det"),
                                  det_score_threshold=data_cfg.det_score_threshold,
                                  head_boxes_mat=mat, skip_invalid=data_cfg.skip_invalid)
    if reader in VAL_CHECKS:  # fail before training, not at the first evaluation
        VAL_CHECKS[reader](instances)
    return instances, report


@dataclasses.dataclass
class TrainSource:
    """What a config trains on: person records of image files, or TFRecord shards.

    Attributes:
        instances: training persons (empty when reading shards).
        tfrecord_index: the shards' index (``tfrecords.read_index``), or None.
        report: what loading kept and skipped (for shards: the record count).
    """

    instances: list[PersonInstance]
    tfrecord_index: dict | None
    report: LoadReport


def train_source(data_cfg: DataConfig, input_size: Sequence[int]) -> TrainSource:
    """The training split of a config: the layout's annotation file through its reader, or
    the TFRecord shards of ``data_cfg.tfrecord_dir`` (written by ``training.prepare_coco``,
    whose images were validated and cut when the shards were written).

    Raises:
        ValueError: shards prepared for another input size.
    """
    if data_cfg.tfrecord_dir:
        index = tfrecords.read_index(data_cfg.tfrecord_dir)
        if index["input_size"] != list(input_size):
            raise ValueError(f"{data_cfg.tfrecord_dir} was prepared for input "
                             f"{index['input_size']}, the config trains at {list(input_size)}")
        return TrainSource([], index, LoadReport(kept=index["num_records"]))
    h, w = input_size
    instances, report = load_split(data_cfg, "train", w / h, training=True)
    return TrainSource(instances, None, report)


def calibration_crops(instances: Sequence[PersonInstance], input_size: Sequence[int],
                      num: int = DEFAULT_NUM_CALIBRATION, seed: int = 0) -> np.ndarray:
    """Eval-preprocessed crops (the affine crop only, no augmentation) of ``num`` instances
    drawn without replacement: what PTQ calibrates on and QAT's ranges start from.

    Returns:
        [min(num, N), H, W, 3] float32 RGB 0..255.

    Raises:
        ValueError: no instances (or ``num`` < 1).
        DataError: an unreadable image, named.
    """
    if num < 1 or not instances:
        raise ValueError("the calibration set is empty: give at least one person instance")
    idx = np.sort(np.random.default_rng(seed).permutation(len(instances))[:num])
    dataset = pipeline.eval_dataset(instances, input_size, 32, idx)
    crops = [images for images, _ in pipeline.iterate_eval_crops(dataset, instances, 32, idx)]
    return np.concatenate(crops)


def split_calibration_crops(data_cfg: DataConfig, input_size: Sequence[int], split: str = "train",
                            num: int = DEFAULT_NUM_CALIBRATION, seed: int = 0) -> np.ndarray:
    """``calibration_crops`` of a config's split. Returns [num, H, W, 3] float32.

    Raises:
        ValueError: the split has no usable person.
    """
    h, w = (int(v) for v in input_size)
    instances, _ = load_split(data_cfg, split, w / h)
    if not instances:
        raise ValueError(f"the calibration set is empty: the {split} split of "
                         f"{data_cfg.data_dir} ({data_cfg.layout}) has no usable person")
    return calibration_crops(instances, (h, w), num, seed)


def file_calibration_crops(ann_file: str, image_dir: str, input_size: Sequence[int],
                           num: int = DEFAULT_NUM_CALIBRATION, seed: int = 0) -> np.ndarray:
    """``calibration_crops`` of an annotation file given on a command line (COCO or MPII).
    Returns [num, H, W, 3] float32."""
    h, w = (int(v) for v in input_size)
    instances, _ = load_file(ann_file, image_dir, w / h)
    if not instances:
        raise ValueError(f"the calibration set is empty: {ann_file} has no usable person")
    return calibration_crops(instances, (h, w), num, seed)
