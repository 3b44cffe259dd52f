"""Evaluation: post-processing by hand, stats equal pycocotools on the written file, oracle AP."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fptflite import codec
from fptflite.data import coco, geometry
from fptflite.evaluation import coco_eval, postprocess
from fptflite.keypoints import flip_permutation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rescore_by_hand():
    s = np.array([[0.9, 0.1, 0.5], [0.1, 0.15, 0.2]])
    got = postprocess.rescore(s, np.array([0.5, 1.0]))
    np.testing.assert_allclose(got, [0.5 * (0.9 + 0.5) / 2, 0.0])


def test_oks_nms_by_hand():
    base = np.random.default_rng(0).uniform(0, 100, (17, 2))
    coords = np.stack([base, base + 0.5, base + 300])
    keep = postprocess.oks_nms(coords, np.array([0.8, 0.9, 0.1]), np.full(3, 100.0**2))
    assert keep == [1, 2]  # the 0.8 duplicate of pose 1 is suppressed
    o = postprocess.oks(base, base[None] + 3.0, 50.0**2, np.array([50.0**2]))
    sig = postprocess.COCO_OKS_SIGMAS
    expected = np.mean(np.exp(-18.0 / (2 * sig) ** 2 / (50.0**2) / 2))
    assert o[0] == pytest.approx(expected)


def _noisy_oracle(instances, input_size, noise_px, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, noise_px, (len(instances), 17, 2))
    oracle = coco_eval.oracle_predictor(instances, input_size)

    def predict(images, indices):
        hm = oracle(images, indices)
        out = []
        for h, i in zip(hm, indices, strict=True):
            inst = instances[int(i)]
            m = geometry.crop_matrix(inst.center, inst.size, input_size)
            k = inst.keypoints.copy()
            k[:, :2] = geometry.apply_affine(m, k[:, :2]) + noise[int(i)]
            out.append(codec.encode_keypoints(k, h.shape[:2], 4)[0])
        return np.stack(out)

    return predict


def test_printed_stats_equal_cocoeval_on_written_results(synthetic_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    stats, _ = coco_eval.evaluate(_noisy_oracle(inst, (256, 192), 6.0), inst,
                                  synthetic_data["val_ann"], (256, 192), str(tmp_path),
                                  progress=False)
    assert 0.05 < stats["AP"] < 0.98  # noisy: a non-trivial value to compare
    gt = COCO(synthetic_data["val_ann"])
    dt = gt.loadRes(str(tmp_path / "keypoints_results.json"))
    ev = COCOeval(gt, dt, "keypoints")
    ev.params.useSegm = None
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    written = json.load(open(tmp_path / "metrics.json"))
    for name, value in zip(coco_eval.STAT_NAMES, ev.stats, strict=True):
        assert stats[name] == pytest.approx(value, abs=1e-12)
        assert written[name] == pytest.approx(value, abs=1e-12)


def test_flip_test_path_swaps_pairs(synthetic_data):
    """A predictor that sees flips correctly keeps its AP under --flip_test."""
    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    size = (256, 192)
    oracle = coco_eval.oracle_predictor(inst, size)
    calls = []

    def flip_aware(images, indices):
        calls.append(1)
        hm = oracle(images, indices)
        if len(calls) % 2 == 0:  # the evaluator's second call per batch is the flipped crop
            out = []
            for i in indices:
                m = geometry.crop_matrix(inst[int(i)].center, inst[int(i)].size, size, flip=True)
                k = inst[int(i)].keypoints.copy()
                k[:, :2] = geometry.apply_affine(m, k[:, :2])
                k = k[flip_permutation()]
                out.append(codec.encode_keypoints(k, (64, 48), 4)[0])
            hm = np.stack(out)
        return hm

    stats, _ = coco_eval.evaluate(flip_aware, inst, synthetic_data["val_ann"], size,
                                  flip_test=True, progress=False)
    assert stats["AP"] > 0.99


def test_oracle_on_real_coco_sample(coco_sample, capsys):
    inst, _ = coco.load_instances(coco_sample["ann_file"], coco_sample["image_dir"], 0.75)
    ap = {}
    for method in ("dark", "quarter"):
        stats, _ = coco_eval.evaluate(coco_eval.oracle_predictor(inst, (256, 192)), inst,
                                      coco_sample["ann_file"], (256, 192), decode=method,
                                      progress=False)
        ap[method] = stats["AP"]
    print(f"oracle AP on the real COCO sample (GT boxes, 256x192): {ap}")
    assert ap["dark"] >= 0.99


def test_evaluate_cli_oracle_writes_results(coco_sample, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--predictor=oracle",
         f"--ann_file={coco_sample['ann_file']}", f"--image_dir={coco_sample['image_dir']}",
         f"--out_dir={tmp_path}", "--decode=dark"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["AP"] >= 0.99
    assert f"{metrics['AP']:6.3f}" in out.stdout
    assert len(json.load(open(tmp_path / "keypoints_results.json"))) == 12


def test_oracle_refuses_detections(coco_sample):
    inst, _ = coco.load_instances(coco_sample["ann_file"], coco_sample["image_dir"], 0.75,
                                  det_file=coco_sample["det_file"])
    with pytest.raises(ValueError, match="ground-truth boxes"):
        coco_eval.oracle_predictor(inst, (256, 192))
