"""Top-down COCO keypoint evaluation shared by the float evaluator and the TFLite harness.

A *predictor* maps a batch of crops to heatmaps: ``predictor(images, indices) -> [B, h, w,
K]`` with images [B, H, W, 3] float32 RGB 0..255 and indices [B] into the instance list (only
the oracle uses them). Everything else (cropping, flip test, decoding, mapping back to the
image, rescoring, OKS-NMS, COCOeval, result files) lives here once.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence

import numpy as np

from fptflite import codec
from fptflite.data import geometry
from fptflite.data.coco import PersonInstance, load_coco
from fptflite.evaluation import postprocess
from fptflite.utils.io import write_json_atomic
from fptflite.utils.progress import ProgressCounter

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def predict_instances(
    predictor: Predictor,
    instances: Sequence[PersonInstance],
    input_size: Sequence[int],
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
    return_heatmaps: bool = False,
) -> dict[str, np.ndarray]:
    """Runs ``predictor`` over every instance's eval crop and decodes keypoints.

    Returns:
        dict with "coords" [N, K, 2] in image pixels, "crop_coords" [N, K, 2] in crop pixels,
        "scores" [N, K], and "heatmaps" [N, h, w, K] if ``return_heatmaps``.
    """
    from fptflite.data.pipeline import eval_dataset

    n = len(instances)
    out_coords, out_scores, heatmaps = [None] * n, [None] * n, [None] * n
    counter = ProgressCounter(n, "evaluating", enabled=progress)
    for images, idx in eval_dataset(instances, input_size, batch_size):
        images, idx = images.numpy(), idx.numpy()
        hm = np.asarray(predictor(images, idx), np.float32)
        if flip_test:
            flipped = np.ascontiguousarray(images[:, :, ::-1])
            hm = 0.5 * (hm + codec.flip_heatmaps(np.asarray(predictor(flipped, idx), np.float32)))
        uv, scores = codec.decode_heatmaps(hm, decode)
        stride = input_size[1] / hm.shape[2]
        crop_xy = codec.heatmap_to_crop(uv, stride)
        for j, i in enumerate(idx):
            out_coords[i], out_scores[i] = crop_xy[j], scores[j]
            if return_heatmaps:
                heatmaps[i] = hm[j]
        counter.update(len(idx))
    crop_coords = np.stack(out_coords)
    coords = np.stack([geometry.crop_to_image(c, inst.center, inst.size, input_size)
                       for c, inst in zip(crop_coords, instances, strict=True)])
    result = {"coords": coords, "crop_coords": crop_coords, "scores": np.stack(out_scores)}
    if return_heatmaps:
        result["heatmaps"] = np.stack(heatmaps)
    return result


def to_coco_results(instances: Sequence[PersonInstance], coords: np.ndarray,
                    scores: np.ndarray, nms_threshold: float = postprocess.OKS_NMS_THRESHOLD
                    ) -> list[dict]:
    """Rescoring and per-image OKS-NMS; returns COCO keypoint results (one dict per person)."""
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
                            "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
                            "score": float(inst_scores[i])})
    return results


def run_cocoeval(ann_file: str, results: list[dict]) -> dict[str, float]:
    """COCOeval keypoint stats for ``results`` (a list in COCO results format)."""
    from pycocotools.cocoeval import COCOeval

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
    head = " | ".join(f"{k:>6}" for k in STAT_NAMES)
    vals = " | ".join(f"{stats[k]:6.3f}" for k in STAT_NAMES)
    return (f"{title}\n" if title else "") + f"| {head} |\n| {vals} |"


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
    return_heatmaps: bool = False,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Predicts, post-processes and scores; writes results and metrics into ``out_dir``.

    Returns:
        (stats keyed by ``STAT_NAMES``, predictions from ``predict_instances``).
    """
    pred = predict_instances(predictor, instances, input_size, batch_size, flip_test, decode,
                             progress, return_heatmaps)
    results = to_coco_results(instances, pred["coords"], pred["scores"])
    stats = run_cocoeval(ann_file, results)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json_atomic(os.path.join(out_dir, "keypoints_results.json"), results, indent=None)
        write_json_atomic(os.path.join(out_dir, "metrics.json"), stats)
    return stats, pred


def keras_predictor(model) -> Predictor:
    """Predictor that runs a Keras model (compiled once as a tf.function)."""
    import tensorflow as tf

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
