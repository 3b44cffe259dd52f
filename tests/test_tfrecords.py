"""Per-person TFRecord shards: region geometry, determinism, record dealing, training."""

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


def _ids(ds):
    return [tuple(i) for batch in ds for i in batch[3].numpy().tolist()]


def test_workers_read_equal_disjoint_records(shards):
    inst, out, index = shards
    n = len(inst)
    assert index["num_records"] == n and len(index["shards"]) == 4
    all_ids = {(i.image_id, i.ann_id) for i in inst}
    for workers in (1, 2, 5):  # 5 workers on 4 files: records are dealt, not files
        steps = pipeline.tfrecord_steps_per_epoch(index, 4, workers)
        assert steps == n // (4 * workers)
        seen = [_ids(pipeline.tfrecord_train_dataset(out, (64, 64), 4, 3, seed=1,
                                                     num_shards=workers, shard_index=w,
                                                     with_ids=True))
                for w in range(workers)]
        assert [len(s) for s in seen] == [steps * 4] * workers
        flat = [i for s in seen for i in s]
        assert len(set(flat)) == len(flat) and set(flat) <= all_ids


def test_epoch_plan_by_hand():
    index = {"num_records": 15, "shards": {"a": 5, "b": 3, "c": 7}}
    # batch 2 x 2 workers: 3 steps, m = 6 records per worker, 3 dropped per epoch.
    assert pipeline.tfrecord_steps_per_epoch(index, 2, 2) == 3
    for epoch in range(4):
        plans = [pipeline.tfrecord_epoch_plan(index, 2, epoch, 0, 2, w) for w in range(2)]
        rows = [(f, r) for plan in plans for f, skip, take in plan
                for r in range(skip, skip + take)]
        assert [sum(t for _, _, t in p) for p in plans] == [6, 6]
        assert len(set(rows)) == 12 and all(r < index["shards"][f] for f, r in rows)
        assert sum(len(p) for p in plans) <= 3 + 1  # one stream: at most one file is split
    with pytest.raises(ValueError, match="cannot feed"):
        pipeline.tfrecord_steps_per_epoch(index, 2, 16)


def test_coco_size_dealing_leaves_no_worker_short():
    from benchmarks.data_order import shard_counts, simulate_dealing

    counts = shard_counts(149_813, 64)
    for workers in range(1, 9):
        r = simulate_dealing(counts, 16, workers, 140)
        assert r["short_pairs"] == 0 and r["records_read_twice"] == 0, r
        assert r["persons_dropped"] < 16 * workers
        if workers == 6:  # what the issue measured for the previous file-level dealing
            assert r["old_dealing_short_pairs"] == 61


def test_index_overstating_a_shard_is_a_clear_error(shards, tmp_path):
    import json
    import shutil

    import tensorflow as tf

    _, out, index = shards
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    name = sorted(index["shards"])[0]
    index = dict(index, num_records=index["num_records"] + 8,
                 shards=dict(index["shards"], **{name: index["shards"][name] + 8}))
    (bad / "train_index.json").write_text(json.dumps(index))
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain"):
        list(pipeline.tfrecord_train_dataset(str(bad), (64, 64), 8, 0))


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
    import tensorflow as tf
    import tf_keras as keras

    from fptflite.tasks import configs, trainer
    inst, out, index = shards
    cfg = configs.apply_overrides(configs.get_config("demo"), [
        f"data.data_dir={synthetic_data['root']}", f"data.tfrecord_dir={out}",
        "model=fasterpose_mnv2_035", "input_size=[64,64]", "neck_channels=16", "epochs=2",
        "batch_size_per_replica=8", "eval_flip_test=false", "steps_per_loop=4"])
    keras.utils.set_random_seed(cfg.seed)
    init = trainer.build_training_model(cfg).get_weights()
    result = trainer.train(cfg, str(tmp_path / "m"))
    steps = len(inst) // 8
    ckpt = tf.train.load_checkpoint(str(tmp_path / "m" / "checkpoints"))
    (key,) = [k for k in ckpt.get_variable_to_shape_map()
              if k.startswith("optimizer/_iterations")]
    assert ckpt.get_tensor(key) == 2 * steps
    changed = [not np.array_equal(a, b) for a, b in zip(init, result.model.get_weights(),
                                                         strict=True)]
    assert np.mean(changed) > 0.9  # trained, from the same seeded initial weights
    assert 0.0 <= result.stats["AP"] <= 1.0
    # The records the run's own dataset function feeds, epoch by epoch: every kept record once.
    topo = trainer.topology(tf.distribute.get_strategy())
    data = trainer.load_train_data(cfg, topo)
    ds = trainer.make_dataset_fn(cfg, data, topo, 0, 0, with_ids=True)(
        tf.distribute.InputContext())
    ids = _ids(ds)
    all_ids = {(i.image_id, i.ann_id) for i in inst}
    for e in range(2):
        epoch = ids[e * steps * 8:(e + 1) * steps * 8]
        assert len(set(epoch)) == steps * 8 and set(epoch) <= all_ids
    assert len(ids) == 2 * steps * 8
    with pytest.raises(ValueError, match="prepared for input"):
        trainer.train(configs.override(cfg, "input_size", "[96,96]"), str(tmp_path / "m2"))
