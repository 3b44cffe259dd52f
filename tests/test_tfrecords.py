"""Per-person TFRecord shards: region geometry, determinism, worker sharding, training."""

import cv2
import numpy as np
import pytest

from fptflite.data import coco, geometry, pipeline, tfrecords


@pytest.fixture(scope="module")
def shards(synthetic_data, tmp_path_factory):
    inst, _ = coco.load_instances(synthetic_data["train_ann"], synthetic_data["train_images"],
                                  0.75)
    out = str(tmp_path_factory.mktemp("records"))
    index = tfrecords.write_shards(inst, out, "train", (64, 64), 4, progress=False)
    return inst, out, index


def test_region_crop_equals_crop_of_the_original_image(shards):
    inst = shards[0]
    for i in (0, 3, 7):
        jpeg, center, size, kps = tfrecords.person_region(inst[i], (256, 192))
        region = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        full = cv2.imread(inst[i].image_path)
        m_full = geometry.crop_matrix(inst[i].center, inst[i].size, (256, 192))
        m_reg = geometry.crop_matrix(center, size, (256, 192))
        a = cv2.warpAffine(full, m_full[:2], (192, 256)).astype(np.float32)
        b = cv2.warpAffine(region, m_reg[:2], (192, 256)).astype(np.float32)
        assert np.abs(a - b).mean() < 4.0  # JPEG re-encoding (and area resizing) only
        lab = inst[i].keypoints[:, 2] > 0
        np.testing.assert_allclose(geometry.apply_affine(m_reg, kps[lab, :2]),
                                   geometry.apply_affine(m_full, inst[i].keypoints[lab, :2]),
                                   atol=1e-6)


def test_index_counts_and_worker_steps(shards):
    inst, out, index = shards
    assert index["num_records"] == len(inst) and len(index["shards"]) == 4
    steps_1 = pipeline.tfrecord_steps_per_epoch(index, 8, 1)
    steps_2 = pipeline.tfrecord_steps_per_epoch(index, 8, 2)
    assert steps_1 == len(inst) // 8 and steps_2 <= len(inst) // 2 // 8
    ds = [list(pipeline.tfrecord_train_dataset(out, (64, 64), 8, 0, num_shards=2,
                                               shard_index=w)) for w in range(2)]
    assert len(ds[0]) == len(ds[1]) == steps_2
    with pytest.raises(ValueError, match="cannot feed"):
        pipeline.tfrecord_steps_per_epoch(index, 8, 5)


def test_tfrecord_dataset_is_deterministic_and_resumable(shards):
    _, out, _ = shards
    a = list(pipeline.tfrecord_train_dataset(out, (64, 64), 8, 1, seed=2, num_epochs=2))
    b = list(pipeline.tfrecord_train_dataset(out, (64, 64), 8, 1, seed=2, num_epochs=2,
                                             skip_batches=2))
    assert len(a) == len(b) + 2
    for x, y in zip(a[2:], b, strict=True):
        np.testing.assert_array_equal(x[0].numpy(), y[0].numpy())
        np.testing.assert_array_equal(x[1].numpy(), y[1].numpy())
    w = np.concatenate([x[2].numpy() for x in a])
    assert (w > 0).mean() > 0.5


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(coco.DataError, match="prepare_coco"):
        tfrecords.read_index(str(tmp_path))


def test_training_reads_tfrecords(shards, synthetic_data, tmp_path):
    from fptflite.tasks import configs, trainer
    _, out, _ = shards
    cfg = configs.apply_overrides(configs.get_config("demo"), [
        f"data.data_dir={synthetic_data['root']}", f"data.tfrecord_dir={out}",
        "model=fasterpose_mnv2_035", "input_size=[64,64]", "neck_channels=16", "epochs=1",
        "batch_size_per_replica=8", "eval_flip_test=false"])
    result = trainer.train(cfg, str(tmp_path / "m"))
    assert 0.0 <= result.stats["AP"] <= 1.0
    with pytest.raises(ValueError, match="prepared for input"):
        trainer.train(configs.override(cfg, "input_size", "[96,96]"), str(tmp_path / "m2"))
