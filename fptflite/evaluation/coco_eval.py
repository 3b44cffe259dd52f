"""Top-down COCO keypoint evaluation shared by the float evaluator and the TFLite harness.

A *predictor* maps a batch of crops to heatmaps: ``predictor(images, indices) -> [B, h, w,
K]`` with images [B, H, W, 3] float32 RGB 0..255 and indices [B] into the instance list (only
the oracle uses them). Everything else (cropping, flip test, decoding, mapping back to the
image, rescoring, OKS-NMS, COCOeval, result files) lives here once.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from pycocotools.cocoeval import COCOeval

from fptflite import codec
from fptflite.data import geometry
from fptflite.data.coco import PersonInstance, load_coco
from fptflite.data.pipeline import eval_dataset, iterate_eval_crops
from fptflite.evaluation import postprocess
from fptflite.utils.io import atomic_path, write_json_atomic
from fptflite.utils.progress import ProgressCounter

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
BatchCallback = Callable[[np.ndarray, Mapping[str, np.ndarray]], None]
RESULTS_FILE = "keypoints_results.json"
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
# Keypoint accuracy beside AP (``keypoint_accuracy``): where keypoints land, whatever the
# person scores that rank them. PCK counts a keypoint within PCK_THRESHOLD of the crop height.
KEYPOINT_STAT_NAMES = ("kp_error", "PCK")
PCK_THRESHOLD = 0.05


def predict_heatmaps(predictor: Predictor, images: np.ndarray, indices: np.ndarray,
                     flip_test: bool = False) -> np.ndarray:
    """Heatmaps [B, h, w, K] of one batch of crops [B, H, W, 3], averaged with the flipped
    crops' (mapped back) when ``flip_test``."""
    hm = np.asarray(predictor(images, indices), np.float32)
    if flip_test:
        flipped = np.ascontiguousarray(images[:, :, ::-1])
        hm = 0.5 * (hm + codec.flip_heatmaps(np.asarray(predictor(flipped, indices),
                                                        np.float32)))
    return hm


class KeypointStore:
    """Decoded keypoints of N instances, filled batch by batch (no heatmaps kept).

    Attributes:
        crop_coords: [N, K, 2] float64 crop-pixel coordinates.
        scores: [N, K] float32 heatmap maxima.
    """

    def __init__(self, n: int):
        self.n = n
        self.crop_coords: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.filled = np.zeros(n, bool)

    def add(self, indices: np.ndarray, crop_xy: np.ndarray, scores: np.ndarray) -> None:
        if self.crop_coords is None:
            k = crop_xy.shape[1]
            self.crop_coords = np.zeros((self.n, k, 2), np.float64)
            self.scores = np.zeros((self.n, k), np.float32)
        self.crop_coords[indices] = crop_xy
        self.scores[indices] = scores
        self.filled[indices] = True

    def result(self, instances: Sequence[PersonInstance], input_size: Sequence[int]
               ) -> dict[str, np.ndarray]:
        """{"coords" [N, K, 2] image pixels, "crop_coords" [N, K, 2], "scores" [N, K]}."""
        if self.crop_coords is None or not self.filled.all():
            raise RuntimeError(f"predictions missing for {int((~self.filled).sum())} of "
                               f"{self.n} instances")
        coords = np.empty_like(self.crop_coords)
        for i, inst in enumerate(instances):
            coords[i] = geometry.crop_to_image(self.crop_coords[i], inst.center, inst.size,
                                               input_size)
        return {"coords": coords, "crop_coords": self.crop_coords, "scores": self.scores}


def predict_many(
    predictors: Mapping[str, Predictor],
    instances: Sequence[PersonInstance],
    input_size: Sequence[int],
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
    on_batch: BatchCallback | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Runs several predictors over the same eval crops in one streaming pass.

    Each batch is cropped once, predicted by every predictor, decoded and dropped: memory
    holds one batch of heatmaps per predictor plus the decoded keypoints ([N, K, 2] and
    [N, K]), whatever the number of instances.

    Args:
        predictors: name -> predictor.
        on_batch: optional ``on_batch(indices [B], {name: heatmaps [B, h, w, K]})`` called
            for every batch before its heatmaps are dropped (streaming statistics).

    Returns:
        name -> {"coords" [N, K, 2] in image pixels, "crop_coords" [N, K, 2] in crop pixels,
        "scores" [N, K]}.
    """
    n = len(instances)
    stores = {name: KeypointStore(n) for name in predictors}
    counter = ProgressCounter(n, "evaluating", enabled=progress)
    dataset = eval_dataset(instances, input_size, batch_size)
    for images, idx in iterate_eval_crops(dataset, instances, batch_size):
        heatmaps = {name: predict_heatmaps(p, images, idx, flip_test)
                    for name, p in predictors.items()}
        for name, hm in heatmaps.items():
            uv, scores = codec.decode_heatmaps(hm, decode)
            stores[name].add(idx, codec.heatmap_to_crop(uv, input_size[1] / hm.shape[2]),
                             scores)
        if on_batch is not None:
            on_batch(idx, heatmaps)
        counter.update(len(idx))
    return {name: s.result(instances, input_size) for name, s in stores.items()}


def predict_instances(
    predictor: Predictor,
    instances: Sequence[PersonInstance],
    input_size: Sequence[int],
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Runs ``predictor`` over every instance's eval crop and decodes keypoints (streaming).

    Returns:
        dict with "coords" [N, K, 2] in image pixels, "crop_coords" [N, K, 2] in crop pixels
        and "scores" [N, K].
    """
    return predict_many({"model": predictor}, instances, input_size, batch_size, flip_test,
                        decode, progress)["model"]


def to_coco_results(instances: Sequence[PersonInstance], coords: np.ndarray,
                    scores: np.ndarray, nms_threshold: float = postprocess.OKS_NMS_THRESHOLD
                    ) -> list[dict]:
    """Rescoring and per-image OKS-NMS; returns COCO keypoint results (one dict per person).

    "keypoints" is a float64 array [K * 3] (x, y, score rounded to 3 decimals), not a list:
    pycocotools takes either, and an array costs a quarter of the memory of 51 Python floats
    at detector-file scale (``write_results`` turns it into JSON).
    """
    inst_scores = postprocess.rescore(scores, np.array([i.box_score for i in instances]))
    by_image: dict[int, list[int]] = {}
    for i, inst in enumerate(instances):
        by_image.setdefault(inst.image_id, []).append(i)
    results = []
    for image_id, idx in by_image.items():
        idx = np.array(idx)
        keep = postprocess.oks_nms(coords[idx], inst_scores[idx],
                                   np.array([instances[i].area for i in idx]), nms_threshold)
        for k in keep:
            i = idx[k]
            kps = np.concatenate([coords[i], scores[i][:, None]], axis=1)
            results.append({"image_id": int(image_id), "category_id": 1,
                            "keypoints": np.round(kps.reshape(-1), 3),
                            "score": float(inst_scores[i])})
    return results


def write_results(path: str, results: list[dict]) -> None:
    """Writes COCO keypoint results as JSON, one record at a time, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for j, r in enumerate(results):
            rec = {"image_id": r["image_id"], "category_id": r["category_id"],
                   "keypoints": np.asarray(r["keypoints"], np.float64).tolist(),
                   "score": r["score"]}
            f.write(("," if j else "") + json.dumps(rec))
        f.write("]")


def run_cocoeval(ann_file: str, results: list[dict]) -> dict[str, float]:
    """COCOeval keypoint stats for ``results`` (a list in COCO results format)."""
    coco_gt = load_coco(ann_file)
    if not results:
        return {k: 0.0 for k in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats, strict=True)}


def format_stats(stats: dict[str, float], title: str = "") -> str:
    """The COCO table, with the keypoint error (crop px) and PCK where ``stats`` has them."""
    names = STAT_NAMES + tuple(k for k in KEYPOINT_STAT_NAMES if k in stats)
    head = " | ".join(f"{k:>6}" for k in names)
    vals = " | ".join(f"{stats[k]:6.3f}" for k in names)
    return (f"{title}\n" if title else "") + f"| {head} |\n| {vals} |"


def score_predictions(
    instances: Sequence[PersonInstance],
    pred: dict[str, np.ndarray],
    ann_file: str,
    out_dir: str | None = None,
) -> dict[str, float]:
    """Rescoring, OKS-NMS and COCOeval of decoded predictions; writes ``RESULTS_FILE`` and
    ``metrics.json`` into ``out_dir`` if given."""
    results = to_coco_results(instances, pred["coords"], pred["scores"])
    stats = run_cocoeval(ann_file, results)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_results(os.path.join(out_dir, RESULTS_FILE), results)
        write_json_atomic(os.path.join(out_dir, "metrics.json"), stats)
    return stats


def evaluate(
    predictor: Predictor,
    instances: Sequence[PersonInstance],
    ann_file: str,
    input_size: Sequence[int],
    out_dir: str | None = None,
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Predicts (streaming), post-processes and scores; writes results and metrics into
    ``out_dir``.

    Returns:
        (stats keyed by ``STAT_NAMES``, predictions from ``predict_instances``).
    """
    pred = predict_instances(predictor, instances, input_size, batch_size, flip_test, decode,
                             progress)
    stats = score_predictions(instances, pred, ann_file, out_dir)
    return {**stats, **keypoint_accuracy(instances, pred["crop_coords"], input_size)}, pred


def keypoint_accuracy(instances: Sequence[PersonInstance], crop_coords: np.ndarray,
                      input_size: Sequence[int]) -> dict[str, float]:
    """Mean keypoint error and PCK on the crops of ground-truth persons.

    Each labelled keypoint (v > 0) of a ground-truth instance (``ann_id >= 0``) is mapped into
    its crop and compared with the prediction there; detections (no ground truth) are skipped.

    Args:
        instances: the N evaluated persons.
        crop_coords: [N, K, 2] predicted keypoints in crop pixels.
        input_size: (H, W) of the crop.

    Returns:
        {"kp_error": mean distance in crop pixels, "PCK": share within PCK_THRESHOLD * H};
        {} when no instance has a labelled keypoint.
    """
    errors = []
    for inst, pred_xy in zip(instances, crop_coords, strict=True):
        if inst.ann_id < 0:
            continue
        visible = inst.keypoints[:, 2] > 0
        if not visible.any():
            continue
        matrix = geometry.crop_matrix(inst.center, inst.size, input_size)
        gt_xy = geometry.apply_affine(matrix, inst.keypoints[visible, :2])
        errors.append(np.linalg.norm(pred_xy[visible] - gt_xy, axis=1))
    if not errors:
        return {}
    d = np.concatenate(errors)
    return {"kp_error": float(d.mean()),
            "PCK": float((d <= PCK_THRESHOLD * input_size[0]).mean())}


def keras_predictor(model) -> Predictor:
    """Predictor that runs a Keras model (compiled once as a tf.function)."""
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda images, indices: fn(tf.constant(images)).numpy()


def oracle_predictor(instances: Sequence[PersonInstance], input_size: Sequence[int],
                     sigma: float = 2.0, stride: int = 4) -> Predictor:
    """Predictor that encodes the ground-truth keypoints of each crop into heatmaps.

    Its AP is the ceiling set by the codec, heatmap size and crop geometry.
    """
    if any(i.ann_id < 0 for i in instances):
        raise ValueError("the oracle predictor needs ground-truth boxes (no --det_file)")
    hm_size = (input_size[0] // stride, input_size[1] // stride)

    def predict(images, indices):
        out = []
        for i in indices:
            inst = instances[int(i)]
            m = geometry.crop_matrix(inst.center, inst.size, input_size)
            kps = inst.keypoints.copy()
            kps[:, :2] = geometry.apply_affine(m, kps[:, :2])
            out.append(codec.encode_keypoints(kps, hm_size, stride, sigma)[0])
        return np.stack(out)

    return predict
