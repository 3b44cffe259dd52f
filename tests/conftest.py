"""Shared fixtures. Importing fptflite first selects tf_keras before TensorFlow loads."""

import os
import pathlib

import numpy as np
import pytest

import fptflite  # noqa: F401  (must precede tensorflow)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("FPTFLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_SAMPLE = SHARED_DATA / "coco_val2017_sample"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def coco_sample():
    """Paths of the real COCO val2017 sample in ../shared/data (skips where it is absent)."""
    ann = COCO_SAMPLE / "person_keypoints_sample.json"
    if not ann.is_file():
        pytest.skip(f"real COCO sample not found at {COCO_SAMPLE} (../shared/data is absent)")
    return {
        "ann_file": str(ann),
        "image_dir": str(COCO_SAMPLE / "images"),
        "det_file": str(COCO_SAMPLE / "person_detections_sample.json"),
    }


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A small synthetic COCO-format dataset generated once per test session."""
    from fptflite.data import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    paths = synthetic.generate_dataset(str(out), num_train=40, num_val=12, seed=3, progress=False)
    paths["root"] = str(out)
    return paths


@pytest.fixture(scope="session")
def mpii_sample():
    """Paths of the real MPII sample in ../shared/data (skips where it is absent)."""
    folder = SHARED_DATA / "mpii_sample"
    ann = folder / "annotations_sample.json"
    if not ann.is_file():
        pytest.skip(f"real MPII sample not found at {folder} (../shared/data is absent)")
    return {"ann_file": str(ann), "image_dir": str(folder / "images")}
