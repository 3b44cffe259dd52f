"""tf.data input pipelines for top-down pose: augmented training crops and eval crops.

Everything runs as TensorFlow graph ops (parallel, no GIL): JPEG decoding restricted to the
region the crop needs (``decode_and_crop_jpeg``), one affine warp per crop, Gaussian targets
from the codec. Augmentation randomness is stateless and keyed by (seed, epoch, sample), so an
epoch is reproducible and a resumed run can skip exactly the batches it already trained on.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from fptflite import codec
from fptflite.codec import HEATMAP_STRIDE
from fptflite.data import tfrecords
from fptflite.data.coco import PersonInstance, find_unreadable_image
from fptflite.keypoints import flip_permutation, upper_body_for


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (SimpleBaseline/HRNet defaults).

    Attributes:
        scale_factor: crop size multiplied by clip(1 + N(0, 1) * f, 1 - f, 1 + f).
        rotation_deg: rotation drawn uniformly in [-r, r] ...
        rotation_prob: ... with this probability.
        flip: horizontal flip with probability 0.5 (keypoint pairs swapped).
        half_body_prob: probability of cropping to the upper or lower body ...
        half_body_min_keypoints: ... when more than this many keypoints are labelled.
    """

    scale_factor: float = 0.35
    rotation_deg: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 8


NO_AUGMENTATION = AugmentConfig(0.0, 0.0, 0.0, False, 0.0)


def instance_table(instances: Sequence[PersonInstance]) -> dict[str, np.ndarray]:
    """Columns of the instance list as numpy arrays (the pipeline's constant tables)."""
    return {
        "path": np.array([i.image_path for i in instances]),
        "center": np.stack([i.center for i in instances]).astype(np.float32),
        "size": np.stack([i.size for i in instances]).astype(np.float32),
        "keypoints": np.stack([i.keypoints for i in instances]).astype(np.float32),
    }


def crop_matrix_tf(center, size, output_size, rotation_deg, flip):
    """TensorFlow twin of ``geometry.crop_matrix``: [3, 3] image -> crop affine matrix."""
    out_h, out_w = output_size
    center = tf.cast(center, tf.float32)
    s = out_w / tf.cast(size[0], tf.float32)
    a = tf.cast(rotation_deg, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(a) * s, tf.sin(a) * s
    tx = -(cos * center[0] + sin * center[1]) + (out_w - 1) / 2
    ty = -(-sin * center[0] + cos * center[1]) + (out_h - 1) / 2
    m = tf.stack([tf.stack([cos, sin, tx]), tf.stack([-sin, cos, ty]),
                  tf.constant([0.0, 0.0, 1.0])])
    fm = tf.constant([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return tf.cond(tf.cast(flip, tf.bool), lambda: fm @ m, lambda: m)


def _read_crop(contents, matrix, output_size, decode_roi: bool = True):
    """Decodes only the image region the crop needs and warps it. Returns [H, W, 3] float32
    in [0, 255].

    ``decode_roi=False`` decodes whole JPEGs (for the benchmark's comparison). The bilinear
    warp's float32 weights can sum to a hair over 1 (255.00002 on 1.3% of random warps of a
    white image); the clip keeps crops within the pixel range, which the QAT input quantizer
    would otherwise widen during training (scale 1.0000001 instead of 1: every input pixel of
    the int8 file then rounds differently from the Keras QAT model's).
    """
    out_h, out_w = output_size
    inv = tf.linalg.inv(matrix)
    corners = tf.constant([[0.0, 0.0, 1.0], [out_w - 1.0, 0.0, 1.0], [0.0, out_h - 1.0, 1.0],
                           [out_w - 1.0, out_h - 1.0, 1.0]])
    pts = tf.linalg.matmul(corners, inv, transpose_b=True)[:, :2]

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(contents), tf.float32)
        lo = tf.clip_by_value(tf.floor(tf.reduce_min(pts, 0)) - 1, 0, shape[1::-1] - 1)
        hi = tf.clip_by_value(tf.math.ceil(tf.reduce_max(pts, 0)) + 2, lo + 1, shape[1::-1])
        window = tf.cast(tf.stack([lo[1], lo[0], hi[1] - lo[1], hi[0] - lo[0]]), tf.int32)
        img = tf.io.decode_and_crop_jpeg(contents, window, channels=3)
        return img, lo

    def other():
        img = tf.io.decode_image(contents, channels=3, expand_animations=False)
        return img, tf.zeros([2])

    img, offset = tf.cond(tf.io.is_jpeg(contents), jpeg, other) if decode_roi else other()
    shift = tf.stack([tf.stack([1.0, 0.0, -offset[0]]), tf.stack([0.0, 1.0, -offset[1]]),
                      tf.constant([0.0, 0.0, 1.0])])
    t = shift @ inv
    transform = tf.concat([t[0], t[1], [0.0, 0.0]], axis=0)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(img, tf.float32)[None], transforms=transform,
        output_shape=tf.constant([out_h, out_w]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.clip_by_value(warped[0], 0.0, 255.0)


def _half_body(kps, center, size, aspect, u_choice):
    """HRNet's half-body crop: the box of the labelled upper- or lower-body keypoints x 1.5."""
    vis = kps[:, 2] > 0
    upper_ids = tf.constant(upper_body_for(kps.shape[0]))  # COCO or MPII, by K
    upper = vis & tf.reduce_any(
        tf.range(tf.shape(kps)[0])[:, None] == upper_ids[None, :], axis=1)
    lower = vis & ~upper
    n_up = tf.reduce_sum(tf.cast(upper, tf.int32))
    n_lo = tf.reduce_sum(tf.cast(lower, tf.int32))
    use_upper = ((u_choice < 0.5) & (n_up > 2)) | (n_lo <= 2)
    sel = tf.where(use_upper, upper, lower)
    pts = tf.boolean_mask(kps[:, :2], sel)
    ok = tf.shape(pts)[0] >= 2

    def box():
        lt, rb = tf.reduce_min(pts, 0), tf.reduce_max(pts, 0)
        c = (lt + rb) / 2
        w, h = rb[0] - lt[0], rb[1] - lt[1]
        w2 = tf.maximum(w, h * aspect)
        h2 = tf.maximum(h, w / aspect)
        return c, tf.stack([w2, h2]) * 1.5

    return tf.cond(ok, box, lambda: (center, size))


def _augment(contents, center, size, kps, sample_key, input_size, sigma, aug: AugmentConfig,
             flip_perm, decode_roi=True):
    """One augmented training example from encoded image bytes and its person record."""
    h, w = input_size
    aspect = w / h
    r = tf.random.stateless_uniform([6], seed=sample_key)
    z = tf.random.stateless_normal([1], seed=sample_key + 1)[0]
    n_vis = tf.reduce_sum(tf.cast(kps[:, 2] > 0, tf.int32))
    do_half = (r[0] < aug.half_body_prob) & (n_vis > aug.half_body_min_keypoints)
    center, size = tf.cond(do_half, lambda: _half_body(kps, center, size, aspect, r[1]),
                           lambda: (center, size))
    f = aug.scale_factor
    size = size * tf.clip_by_value(1.0 + z * f, 1.0 - f, 1.0 + f)
    rot = tf.where(r[2] < aug.rotation_prob, (r[3] * 2 - 1) * aug.rotation_deg, 0.0)
    flip = aug.flip & (r[4] < 0.5)
    m = crop_matrix_tf(center, size, input_size, rot, flip)
    image = _read_crop(contents, m, input_size, decode_roi)
    xy = tf.linalg.matmul(kps[:, :2], m[:2, :2], transpose_b=True) + m[:2, 2]
    crop_kps = tf.concat([xy, kps[:, 2:]], axis=1)
    crop_kps = tf.cond(flip, lambda: tf.gather(crop_kps, flip_perm), lambda: crop_kps)
    targets, weights = codec.encode_keypoints_tf(
        crop_kps, (h // HEATMAP_STRIDE, w // HEATMAP_STRIDE), HEATMAP_STRIDE, sigma)
    return image, targets, weights[None, None, :]


def _train_example(index, sample_key, table, input_size, sigma, aug: AugmentConfig, flip_perm,
                   decode_roi=True):
    contents = tf.io.read_file(tf.gather(table["path"], index))
    return _augment(contents, tf.gather(table["center"], index), tf.gather(table["size"], index),
                    tf.gather(table["keypoints"], index), sample_key, tuple(input_size), sigma,
                    aug, flip_perm, decode_roi)


def _with_ids(example_fn, with_ids: bool):
    """``example_fn(i, key) -> (image, targets, weights)``, plus the id ``i`` if asked."""
    if not with_ids:
        return example_fn
    return lambda i, k: (*example_fn(i, k), i)


def train_dataset(
    instances: Sequence[PersonInstance],
    input_size: Sequence[int],
    batch_size: int,
    epoch: int,
    seed: int = 0,
    sigma: float = 2.0,
    augment: AugmentConfig = AugmentConfig(),
    skip_batches: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    deterministic: bool = True,
    decode_roi: bool = True,
    num_epochs: int = 1,
    replicas_per_shard: int = 1,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Augmented per-replica training batches of epochs ``epoch`` .. ``epoch + num_epochs - 1``.

    The dataset of one input pipeline (worker ``shard_index`` of ``num_shards``) feeding
    ``replicas_per_shard`` local replicas, as ``tf.distribute`` expects from
    ``distribute_datasets_from_function``: per-replica batches that the strategy deals to the
    local replicas round-robin. Per epoch it yields exactly ``steps_per_epoch(...) *
    replicas_per_shard`` batches (see ``epoch_order``), so no batch straddles two epochs, and
    the batch of global replica g at step s is the same for any split of the replicas into
    workers and local devices. Augmentation is keyed by (seed, epoch, person).
    ``skip_batches`` drops already-trained batches of the first epoch cheaply (before any
    decoding) when a run resumes mid-epoch. One dataset for all remaining epochs avoids
    re-tracing and re-filling the pipeline at every epoch.

    Returns:
        Dataset of (images [B, H, W, 3] float32 RGB 0..255, targets [B, H/4, W/4, K],
        weights [B, 1, 1, K]) and, with ``with_ids``, instance indices [B] int32; B =
        ``batch_size`` (per replica), full batches only.
    """
    table = {k: tf.constant(v) for k, v in instance_table(instances).items()}
    n = len(instances)
    orders, keys = [], []
    for e in range(epoch, epoch + num_epochs):
        order = epoch_order(n, batch_size, e, seed, num_shards, shard_index, replicas_per_shard)
        if e == epoch:
            order = order[skip_batches * batch_size:]
        orders.append(order)
        keys.append(np.stack([np.full(n, seed, np.int64), e * n + np.arange(n)], 1)[order])
    order, keys = np.concatenate(orders), np.concatenate(keys)
    flip_perm = tf.constant(flip_permutation(table["keypoints"].shape[1]))
    ds = tf.data.Dataset.from_tensor_slices((order.astype(np.int32), keys))
    example = _with_ids(lambda i, k: _train_example(i, k, table, tuple(input_size), sigma,
                                                    augment, flip_perm, decode_roi), with_ids)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_instances: int, batch_size: int, num_shards: int = 1,
                    replicas_per_shard: int = 1) -> int:
    """Optimizer steps per epoch: whole global batches of ``batch_size`` per replica x
    ``replicas_per_shard`` x ``num_shards``. The same on every worker by construction; the
    remainder (fewer persons than one global batch) is dropped, a different one each epoch."""
    return num_instances // (batch_size * replicas_per_shard * num_shards)


def epoch_order(num_instances: int, batch_size: int, epoch: int, seed: int = 0,
                num_shards: int = 1, shard_index: int = 0,
                replicas_per_shard: int = 1) -> np.ndarray:
    """Instance indices one input pipeline yields in ``epoch``, in order.

    The epoch is a seeded permutation of all instances, cut into global batches of
    ``batch_size x replicas_per_shard x num_shards`` (the remainder dropped). In global batch
    s, global replica g = shard_index * replicas_per_shard + r takes the g-th slice of
    ``batch_size``; shard ``shard_index`` yields, step by step, the slices of its local
    replicas r = 0 .. replicas_per_shard - 1. Every kept person appears exactly once over all
    shards and replicas.

    Returns:
        int64 [steps * replicas_per_shard * batch_size] instance indices.
    """
    steps = steps_per_epoch(num_instances, batch_size, num_shards, replicas_per_shard)
    local = batch_size * replicas_per_shard
    order = np.random.default_rng([seed, epoch]).permutation(num_instances)
    order = order[:steps * local * num_shards].reshape(steps, num_shards, local)
    return order[:, shard_index].reshape(-1)


def eval_dataset(
    instances: Sequence[PersonInstance],
    input_size: Sequence[int],
    batch_size: int,
    indices: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Eval crops in instance order: the affine crop only.

    Returns:
        Dataset of (images [B, H, W, 3] float32 RGB 0..255, instance indices [B] int32).
    """
    table = {k: tf.constant(v) for k, v in instance_table(instances).items()}
    idx = np.arange(len(instances)) if indices is None else np.asarray(indices)

    def crop(i):
        m = crop_matrix_tf(tf.gather(table["center"], i), tf.gather(table["size"], i),
                           tuple(input_size), 0.0, False)
        return _read_crop(tf.io.read_file(tf.gather(table["path"], i)), m,
                          tuple(input_size)), i

    ds = tf.data.Dataset.from_tensor_slices(idx.astype(np.int32))
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def iterate_eval_crops(dataset, instances: Sequence[PersonInstance], batch_size: int,
                       indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """Yields numpy (images [B, H, W, 3], indices [B]) from ``eval_dataset(instances,
    input_size, batch_size, indices)``; an image file that cannot be read or decoded raises
    ``DataError`` naming the file, the image id and the annotation (or detection box)."""
    order = np.arange(len(instances)) if indices is None else np.asarray(indices)
    it = iter(dataset)
    batch = 0
    while True:
        try:
            images, idx = next(it)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            # Prefetching may surface the error a batch early or late: look around it.
            lo, hi = max(batch - 1, 0) * batch_size, (batch + 2) * batch_size
            raise find_unreadable_image(instances, order[lo:hi], e) from e
        yield images.numpy(), idx.numpy()
        batch += 1


def tfrecord_steps_per_epoch(index: dict, batch_size: int, num_shards: int = 1,
                             replicas_per_shard: int = 1) -> int:
    """Optimizer steps per epoch from ``training.prepare_coco`` shards (see
    ``tfrecord_epoch_plan``): the same on every worker in every epoch by construction."""
    if num_shards > index["num_records"]:
        raise ValueError(f"{index['num_records']} TFRecord records cannot feed {num_shards} "
                         "workers")
    return steps_per_epoch(index["num_records"], batch_size, num_shards, replicas_per_shard)


def tfrecord_epoch_plan(index: dict, batch_size: int, epoch: int, seed: int = 0,
                        num_shards: int = 1, shard_index: int = 0,
                        replicas_per_shard: int = 1) -> list[tuple[str, int, int]]:
    """Which records worker ``shard_index`` reads in ``epoch``: [(file, skip, take)].

    The shard files are permuted with (seed, epoch) and read as one stream; worker w takes
    records [w * m, (w + 1) * m) of it, m = steps x replicas_per_shard x batch_size. Every
    worker so gets exactly m records, whatever the files' sizes, and no record is read by two
    workers; the last num_records - num_shards * m records of the stream (fewer than one
    global batch) are dropped, different ones each epoch. A worker reads at most two files
    partially.
    """
    names = sorted(index["shards"])
    steps = tfrecord_steps_per_epoch(index, batch_size, num_shards, replicas_per_shard)
    m = steps * replicas_per_shard * batch_size
    lo, hi = shard_index * m, (shard_index + 1) * m
    plan, start = [], 0
    for i in np.random.default_rng([seed, epoch]).permutation(len(names)):
        count = int(index["shards"][names[i]])
        a, b = max(lo, start), min(hi, start + count)
        if a < b:
            plan.append((names[i], a - start, b - a))
        start += count
    return plan


def _keyed_records(tfrecord_dir: str, plan: list, file_ids: dict[str, int], epoch: int
                   ) -> tf.data.Dataset:
    """The records an epoch's plan deals, each with a key unique per (epoch, file, record)
    that seeds its augmentation."""
    def read(path, file_id, skip, take):
        base = (epoch * 100_000 + file_id) * 10_000_000
        records = tf.data.TFRecordDataset(path).skip(skip).take(take)
        return tf.data.Dataset.zip((tf.data.Dataset.range(skip, skip + take), records)).map(
            lambda pos, record: (base + pos, record))

    pieces = tf.data.Dataset.from_tensor_slices((
        [os.path.join(tfrecord_dir, f) for f, _, _ in plan],
        np.array([file_ids[f] for f, _, _ in plan], np.int64),
        np.array([s for _, s, _ in plan], np.int64),
        np.array([t for _, _, t in plan], np.int64)))
    return pieces.interleave(read, cycle_length=max(1, min(4, len(plan))),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def tfrecord_train_dataset(
    tfrecord_dir: str,
    input_size: Sequence[int],
    batch_size: int,
    epoch: int,
    seed: int = 0,
    sigma: float = 2.0,
    augment: AugmentConfig = AugmentConfig(),
    skip_batches: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    num_epochs: int = 1,
    num_keypoints: int = 17,
    shuffle_buffer: int = 4096,
    prefix: str = "train",
    replicas_per_shard: int = 1,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Like ``train_dataset`` but reading ``training.prepare_coco`` shards.

    Per epoch a worker reads the records ``tfrecord_epoch_plan`` deals it (the same count on
    every worker), shuffles them in a seeded buffer and batches them per replica: exactly
    ``steps x replicas_per_shard`` batches. Augmentation is keyed by (seed, epoch, file,
    record). Deterministic for a seed, so ``skip_batches`` resumes exactly. A shard holding
    fewer records than its index says is an error naming the epoch, not a short epoch.

    Returns:
        As ``train_dataset``; with ``with_ids`` the last element is [B, 2] int64 (image id,
        annotation id) of each record.
    """
    index = tfrecords.read_index(tfrecord_dir, prefix)
    names = sorted(index["shards"])
    file_ids = {n: i for i, n in enumerate(names)}
    steps = tfrecord_steps_per_epoch(index, batch_size, num_shards, replicas_per_shard)
    expected = steps * replicas_per_shard * batch_size
    flip_perm = tf.constant(flip_permutation(num_keypoints))
    size = tuple(input_size)

    def example(key, record):
        contents, center, box, kps, ids = tfrecords.parse_record(record, num_keypoints,
                                                                 with_ids=True)
        out = _augment(contents, center, box, kps, tf.stack([tf.constant(seed, tf.int64), key]),
                       size, sigma, augment, flip_perm)
        return (*out, ids) if with_ids else out

    epochs = []
    for e in range(epoch, epoch + num_epochs):
        plan = tfrecord_epoch_plan(index, batch_size, e, seed, num_shards, shard_index,
                                   replicas_per_shard)
        ds = _keyed_records(tfrecord_dir, plan, file_ids, e)
        ds = ds.apply(tf.data.experimental.assert_cardinality(expected))
        ds = ds.shuffle(shuffle_buffer, seed=seed * 100003 + e, reshuffle_each_iteration=False)
        if e == epoch and skip_batches:
            ds = ds.skip(skip_batches * batch_size)
        epochs.append(ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                      .batch(batch_size, drop_remainder=True))
    out = epochs[0]
    for ds in epochs[1:]:
        out = out.concatenate(ds)
    return out.prefetch(tf.data.AUTOTUNE)
