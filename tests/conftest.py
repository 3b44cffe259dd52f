"""Shared fixtures. Importing fptflite first selects tf_keras before TensorFlow loads."""

import os
import pathlib

import numpy as np
import pytest

import fptflite  # noqa: F401  (must precede tensorflow)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("FPTFLITE_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO_SAMPLE = SHARED_DATA / "coco_val2017_sample"

# The longest test files first (minutes on a 2-core CPU, measured by make test's
# --durations): with `-n 2 --dist loadfile` a worker takes whole files in collection order, and
# the main job's file (about 12 minutes) collected near the end ran alone while the other
# worker idled: 21.7 minutes in all.
LONGEST_FILES_FIRST = ("test_main_job.py", "test_mpii_chain.py", "test_android.py",
                       "test_training.py", "test_imports.py")


def pytest_collection_modifyitems(session, config, items):
    """Moves the longest files to the front, each file's tests kept in order (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES_FIRST)))


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
