"""Exact data order: every person once per epoch on any number of replicas and workers.

    python benchmarks/data_order.py --data_dir=DIR [--replicas=1,2,3] [--epochs=2]
    python benchmarks/data_order.py --simulate [--shards=64 --persons=149813 --sim_epochs=140]

The first form splits the CPU into logical devices and, for each replica count, iterates the
trainer's own distributed dataset (MirroredStrategy, ``distribute_datasets_from_function``)
for whole epochs, from image files and from TFRecord shards, recording which person every
replica receives at every step. It prints per epoch the persons used, duplicates, the
documented remainder dropped, and whether any batch is left over after the last epoch (a
leftover batch is what used to leak into the next epoch and break resume).

The second form simulates the TFRecord dealing of ``pipeline.tfrecord_epoch_plan`` at COCO
size (149,813 persons in 64 shards) for 1-8 workers over 140 epochs and counts the
(epoch, worker) pairs short of a step, next to the previous file-level dealing.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import pipeline
from fptflite.utils import cli

_DATA = cli.flag("data_dir")
_REPLICAS = flags.DEFINE_list("replicas", ["1", "2", "3"], "Replica counts to check.")
_BATCH = cli.flag("batch_size", default=4)
_EPOCHS = cli.flag("epochs", default=2)
_SIMULATE = flags.DEFINE_bool("simulate", False, "Simulate the TFRecord dealing instead.")
_SHARDS = flags.DEFINE_integer("shards", 64, "Simulation: TFRecord shard files.")
_PERSONS = flags.DEFINE_integer("persons", 149_813, "Simulation: training persons (COCO).")
_SIM_EPOCHS = flags.DEFINE_integer("sim_epochs", 140, "Simulation: epochs.")
_SIM_BATCH = flags.DEFINE_integer("sim_batch", 16, "Simulation: batch per worker.")
_JSON = cli.flag("out_json")


def shard_counts(num_records: int, num_shards: int) -> list[int]:
    """Records per shard as ``tfrecords.write_shards`` deals them (instances[s::num_shards])."""
    return [len(range(s, num_records, num_shards)) for s in range(num_shards)]


def _file_level_short(index: dict, batch: int, workers: int, epoch: int, seed: int) -> int:
    """Workers short of a step in ``epoch`` under the previous dealing: steps from the
    unshuffled file split, files re-dealt every epoch."""
    counts = [index["shards"][n] for n in sorted(index["shards"])]
    steps = min(sum(counts[w::workers]) for w in range(workers)) // batch
    perm = np.random.default_rng([seed, epoch]).permutation(len(counts))
    dealt = [sum(counts[i] for i in perm[w::workers]) for w in range(workers)]
    return sum(d < steps * batch for d in dealt)


def simulate_dealing(counts: list[int], batch: int, workers: int, epochs: int,
                     seed: int = 0) -> dict:
    """Deals ``epochs`` epochs of shards with ``counts`` records to ``workers`` workers.

    Returns:
        dict: steps per epoch, (epoch, worker) pairs short of a step, records read twice in
        an epoch, persons used and dropped per epoch (min over epochs), and the same shortfall
        count under the previous file-level dealing.
    """
    index = {"num_records": sum(counts),
             "shards": {f"train-{i:05d}": c for i, c in enumerate(counts)}}
    steps = pipeline.tfrecord_steps_per_epoch(index, batch, workers)
    short = overlaps = old_short = 0
    used = []
    for e in range(epochs):
        seen: dict[str, set] = {}
        total = 0
        for w in range(workers):
            plan = pipeline.tfrecord_epoch_plan(index, batch, e, seed, workers, w)
            n = sum(take for _, _, take in plan)
            short += n < steps * batch
            total += n
            for name, skip, take in plan:
                rows = set(range(skip, skip + take))
                overlaps += len(seen.setdefault(name, set()) & rows)
                seen[name] |= rows
        used.append(total)
        old_short += _file_level_short(index, batch, workers, e, seed)
    return {"workers": workers, "steps_per_epoch": steps, "short_pairs": short,
            "pairs": epochs * workers, "records_read_twice": overlaps,
            "persons_used": min(used), "persons_dropped": sum(counts) - min(used),
            "old_dealing_short_pairs": old_short}


def run_simulation() -> list[dict]:
    counts = shard_counts(_PERSONS.value, _SHARDS.value)
    rows = [simulate_dealing(counts, _SIM_BATCH.value, w, _SIM_EPOCHS.value)
            for w in range(1, 9)]
    print(f"\nTFRecord dealing, {_PERSONS.value} persons in {_SHARDS.value} shards, batch "
          f"{_SIM_BATCH.value} per worker, {_SIM_EPOCHS.value} epochs")
    print(f"{'workers':>7} {'steps/epoch':>11} {'short (epoch,worker)':>21} {'read twice':>10} "
          f"{'used/epoch':>10} {'dropped':>7} {'previous dealing: short':>24}")
    for r in rows:
        print(f"{r['workers']:>7} {r['steps_per_epoch']:>11} "
              f"{r['short_pairs']:>12} of {r['pairs']:<6} {r['records_read_twice']:>10} "
              f"{r['persons_used']:>10} {r['persons_dropped']:>7} "
              f"{r['old_dealing_short_pairs']:>15} of {r['pairs']:<6}")
    return rows


def replica_epochs(cfg, strategy, num_epochs: int) -> dict:
    """Iterates the trainer's distributed dataset for ``num_epochs`` whole epochs.

    Returns:
        dict: steps per epoch, per epoch the annotation ids each replica received, and the
        number of per-replica batches left over after the last epoch.
    """
    # lazy: TensorFlow only for the replica runs; --simulate needs numpy alone
    import tensorflow as tf

    from fptflite.tasks import trainer  # lazy, as above

    topo = trainer.topology(strategy)
    data = trainer.load_train_data(cfg, topo)
    fn = trainer.make_dataset_fn(cfg, data, topo, 0, 0, with_ids=True)
    iterator = iter(strategy.distribute_datasets_from_function(fn))
    ann_ids = np.array([i.ann_id for i in data.instances], np.int64)
    epochs = []
    for _ in range(num_epochs):
        per_replica: list[list[int]] = [[] for _ in range(topo.replicas)]
        for _ in range(data.steps):
            batch = next(iterator)
            for r, ids in enumerate(strategy.experimental_local_results(batch[3])):
                ids = ids.numpy()
                per_replica[r] += (ids[:, 1] if ids.ndim == 2 else ann_ids[ids]).tolist()
        epochs.append(per_replica)
    leftover = 0
    try:
        while True:
            batch = next(iterator)
            leftover += len(strategy.experimental_local_results(batch[0]))
    except (StopIteration, tf.errors.OutOfRangeError):
        pass
    return {"steps": data.steps, "epochs": epochs, "leftover": leftover,
            "persons": data.report.kept}


def run_replicas() -> list[dict]:
    # lazy: TensorFlow only for the replica runs; --simulate needs numpy alone
    import tensorflow as tf

    from fptflite.data import datasets, synthetic, tfrecords  # lazy, as above
    from fptflite.tasks import configs, trainer  # lazy, as above

    counts = [int(r) for r in _REPLICAS.value]
    devices = trainer.configure_cpu_replicas(max(counts))
    root = _DATA.value
    if not os.path.isfile(os.path.join(root, "annotations", "person_keypoints_val.json")):
        synthetic.generate_dataset(root, 40, 12, seed=3, progress=False)
    cfg = configs.apply_overrides(configs.get_config("demo"), [
        f"data.data_dir={root}", "model=fasterpose_mnv2_035", "input_size=[64,64]",
        f"batch_size_per_replica={_BATCH.value}", f"epochs={_EPOCHS.value}"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inst, _ = datasets.load_split(cfg.data, "train", 1.0, training=True)
        tfrecords.write_shards(inst, tmp, "train", (64, 64), 5, progress=False)
        all_ids = {i.ann_id for i in inst}
        for source in ("image files", "tfrecords"):
            src_cfg = configs.override(cfg, "data.tfrecord_dir", tmp) \
                if source == "tfrecords" else cfg
            for n in counts:
                out = replica_epochs(src_cfg, tf.distribute.MirroredStrategy(devices[:n]),
                                     _EPOCHS.value)
                for e, per_replica in enumerate(out["epochs"]):
                    ids = [i for r in per_replica for i in r]
                    rows.append({
                        "source": source, "replicas": n, "epoch": e, "steps": out["steps"],
                        "persons": len(all_ids), "used": len(ids),
                        "distinct": len(set(ids)), "unknown": len(set(ids) - all_ids),
                        "per_replica": [len(r) for r in per_replica],
                        "dropped": len(all_ids) - len(set(ids)),
                        "expected_dropped": len(all_ids) % (n * _BATCH.value),
                        "leftover_batches": out["leftover"]})
    print(f"\nPersons per epoch through MirroredStrategy on logical CPUs, batch "
          f"{_BATCH.value} per replica")
    print(f"{'source':<12} {'replicas':>8} {'epoch':>5} {'steps':>5} {'persons':>7} "
          f"{'used':>5} {'distinct':>8} {'dropped':>7} {'= N mod global batch':>20} "
          f"{'leftover batches':>16}")
    for r in rows:
        print(f"{r['source']:<12} {r['replicas']:>8} {r['epoch']:>5} {r['steps']:>5} "
              f"{r['persons']:>7} {r['used']:>5} {r['distinct']:>8} {r['dropped']:>7} "
              f"{str(r['dropped'] == r['expected_dropped']):>20} {r['leftover_batches']:>16}")
    return rows


def main(argv):
    del argv
    rows = run_simulation() if _SIMULATE.value else run_replicas()
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    app.run(main)
