"""Evaluation: post-processing, OKS and AP by hand, flip test, streaming parity, oracle AP."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fptflite import codec
from fptflite.data import coco, geometry
from fptflite.evaluation import coco_eval, postprocess
from fptflite.keypoints import COCO_OKS_SIGMAS

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


def _hand_case(tmp_path):
    """One 640x480 image, two persons of area 4000 with all 17 keypoints labelled."""
    rng = np.random.default_rng(7)
    gt = [np.stack([rng.uniform(60, 200, 17), rng.uniform(60, 400, 17)], -1),
          np.stack([rng.uniform(400, 560, 17), rng.uniform(60, 400, 17)], -1)]
    anns = [{"id": i + 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "area": 4000.0,
             "bbox": [float(g[:, 0].min()), float(g[:, 1].min()), 140.0, 340.0],
             "num_keypoints": 17,
             "keypoints": [v for x, y in g for v in (float(x), float(y), 2)]}
            for i, g in enumerate(gt)]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({
        "images": [{"id": 5, "file_name": "a.jpg", "width": 640, "height": 480}],
        "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return str(ann_file), gt


def test_oks_and_ap_worked_by_hand(tmp_path):
    """OKS and AP of a two-person case worked by hand (not by pycocotools).

    pycocotools' OKS: e_j = d_j^2 / (2 sigma_j)^2 / area / 2, OKS = mean_j exp(-e_j).
    Detection A (score 0.9 x 0.8) misses only keypoint 11 by a distance giving e = 1:
    OKS_A = (16 + e^-1) / 17 = 0.9628, a match at every threshold 0.50..0.95. Detection B
    (score 0.5 x 0.8) misses every keypoint with e = 0.5: OKS_B = e^-0.5 = 0.6065, a match at
    0.50, 0.55, 0.60 only. Where both match, precision is 1 at every recall: AP_t = 1. Where
    only A (ranked first) matches, precision is 1 up to recall 0.5 and there is no recall
    above: 51 of COCO's 101 recall points, AP_t = 51/101. AP = (3 + 7 * 51/101) / 10.
    """
    ann_file, gt = _hand_case(tmp_path)
    sig = COCO_OKS_SIGMAS
    area = 4000.0
    det_a = gt[0].copy()
    det_a[11, 0] += np.sqrt(1.0 * (2 * sig[11]) ** 2 * area * 2)
    det_b = gt[1] + np.sqrt(0.5 * (2 * sig) ** 2 * area * 2)[:, None] / np.sqrt(2)
    oks_a = (16 + np.exp(-1)) / 17
    oks_b = np.exp(-0.5)
    assert postprocess.oks(gt[0], det_a[None], area, np.array([area]))[0] == \
        pytest.approx(oks_a)
    assert postprocess.oks(gt[1], det_b[None], area, np.array([area]))[0] == \
        pytest.approx(oks_b)
    inst = [coco.PersonInstance(5, "a.jpg", np.zeros(2), np.ones(2), np.zeros((17, 3)), s,
                                area) for s in (0.9, 0.5)]
    pred = {"coords": np.stack([det_a, det_b]), "scores": np.full((2, 17), 0.8, np.float32)}
    stats = coco_eval.score_predictions(inst, pred, ann_file, str(tmp_path / "out"))
    assert stats["AP"] == pytest.approx((3 + 7 * 51 / 101) / 10, abs=1e-9)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(51 / 101, abs=1e-9)
    assert stats["AR"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10, abs=1e-9)
    written = json.load(open(tmp_path / "out" / "metrics.json"))
    assert written["AP"] == stats["AP"]
    results = json.load(open(tmp_path / "out" / "keypoints_results.json"))
    assert [r["score"] for r in results] == pytest.approx([0.9 * 0.8, 0.5 * 0.8])
    # Swapping the scores ranks the false positive first at 0.65..0.95: precision 0.5 there.
    inst[0].box_score, inst[1].box_score = 0.5, 0.9
    stats = coco_eval.score_predictions(inst, pred, ann_file)
    assert stats["AP"] == pytest.approx((3 + 7 * 0.5 * 51 / 101) / 10, abs=1e-9)


def _crop_keypoints(inst, size):
    m = geometry.crop_matrix(inst.center, inst.size, size)
    k = inst.keypoints.copy()
    k[:, :2] = geometry.apply_affine(m, k[:, :2])
    return k


def _content_predictor(inst, size, shift_px):
    """A predictor that sees only pixels: it recognises each crop (or its mirror image) among
    the instances' eval crops and answers that view's keypoints shifted ``shift_px`` right."""
    from fptflite.data.pipeline import eval_dataset

    crops = np.concatenate([im.numpy() for im, _ in eval_dataset(inst, size, 64)])
    bank = np.concatenate([crops, crops[:, :, ::-1]])

    def predict(images, indices):
        del indices  # only the pixels count
        out = []
        for img in images:
            dist = np.abs(bank - img[None]).reshape(len(bank), -1).max(axis=1)
            j = int(dist.argmin())
            assert dist[j] == 0, "a crop the predictor has never seen"
            k = _crop_keypoints(inst[j % len(inst)], size)
            if j >= len(inst):  # a mirrored crop: the person's left is on the other side
                k = codec.flip_keypoints(k, size[1])
            k[:, 0] += shift_px
            out.append(codec.encode_keypoints(k, (size[0] // 4, size[1] // 4), 4)[0])
        return np.stack(out)

    return predict


def test_keypoint_error_and_pck_worked_by_hand():
    # Crop of a 200x200 box centred at (100, 100) into 100x100: image px / 2 - 0.5 + 0.5...
    # crop = (x - 100) / 2 + 49.5. Ground truth at (100, 100) -> crop (49.5, 49.5).
    kps = np.zeros((17, 3))
    kps[0] = (100, 100, 2)
    kps[1] = (120, 80, 1)  # -> crop (59.5, 39.5)
    inst = coco.PersonInstance(1, "x.jpg", np.array([100.0, 100.0]),
                               np.array([200.0, 200.0]), kps, ann_id=7)
    detection = coco.PersonInstance(1, "x.jpg", np.array([100.0, 100.0]),
                                    np.array([200.0, 200.0]), np.zeros((17, 3)))
    pred = np.zeros((2, 17, 2))
    pred[0, 0] = (52.5, 53.5)  # 3-4-5: error 5 px
    pred[0, 1] = (59.5, 41.5)  # error 2 px
    stats = coco_eval.keypoint_accuracy([inst, detection], pred, (100, 100))
    # Mean of 5 and 2; PCK threshold 0.05 * 100 = 5 px: both within (<=).
    assert stats == {"kp_error": 3.5, "PCK": 1.0}
    pred[0, 0] = (52.5, 53.6)  # just beyond 5 px
    assert coco_eval.keypoint_accuracy([inst], pred[:1], (100, 100))["PCK"] == 0.5
    assert coco_eval.keypoint_accuracy([detection], pred[1:], (100, 100)) == {}


def test_flip_test_averages_the_mirrored_view(synthetic_data):
    """Flip test mirrors the crop, maps the heatmaps back with pairs swapped and averages:
    a bias of +4 px in the model's own view becomes -4 px after the flip and cancels."""
    size = (128, 96)
    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    predictor = _content_predictor(inst, size, shift_px=4.0)
    truth = np.stack([_crop_keypoints(i, size) for i in inst])
    labelled = truth[..., 2] > 0
    err = {}
    for flip in (False, True):
        stats, pred = coco_eval.evaluate(predictor, inst, synthetic_data["val_ann"], size,
                                         flip_test=flip, progress=False)
        err[flip] = np.linalg.norm(pred["crop_coords"] - truth[..., :2], axis=-1)[labelled]
    print(f"mean crop error: no flip {err[False].mean():.3f} px, flip {err[True].mean():.3f} px")
    assert err[False].mean() == pytest.approx(4.0, abs=0.05)
    assert err[True].mean() < 0.06  # measured 0.041 (two Gaussians 8 px apart, averaged)


def test_streaming_parity_equals_stacked_statistics(synthetic_data):
    """Correlation and keypoint error accumulated per batch equal those of stacked heatmaps."""
    from fptflite.evaluation import parity

    size = (128, 96)
    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    ref = _content_predictor(inst, size, 0.0)
    cand = _content_predictor(inst, size, 2.5)
    ref_pred, cands, corr = parity.compare_predictors(ref, {"c": cand}, inst, size,
                                                      batch_size=5, progress=False)
    alone = coco_eval.predict_instances(cand, inst, size, batch_size=7, progress=False)
    np.testing.assert_array_equal(cands["c"]["crop_coords"], alone["crop_coords"])
    images = np.zeros((len(inst), *size, 3), np.float32)
    from fptflite.data.pipeline import eval_dataset

    for im, idx in eval_dataset(inst, size, 64):
        images[idx.numpy()] = im.numpy()
    idx = np.arange(len(inst))
    expected = parity.heatmap_correlation(ref(images, idx), cand(images, idx))
    assert 0.3 < corr["c"] < 0.99
    assert corr["c"] == pytest.approx(expected, abs=1e-12)
    rep = parity.parity_report(ref_pred, cands["c"], {"AP": 0.5}, {"AP": 0.4},
                               correlation=corr["c"])
    truth = np.stack([_crop_keypoints(i, size) for i in inst])
    labelled = truth[..., 2] > 0
    err = np.linalg.norm(cands["c"]["crop_coords"] - ref_pred["crop_coords"], axis=-1)
    assert err[labelled].mean() == pytest.approx(2.5, abs=0.05)
    assert rep["score_delta_points"] == pytest.approx(-10.0)
    assert rep["heatmap_correlation"] == corr["c"]


def test_corrupt_image_during_evaluation_names_file_and_record(synthetic_data, tmp_path):
    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    inst[3].image_path = str(bad)
    with pytest.raises(coco.DataError, match=rf"corrupt.jpg.*annotation {inst[3].ann_id}"):
        coco_eval.predict_instances(lambda im, i: np.zeros((len(im), 32, 24, 17)), inst,
                                    (128, 96), batch_size=2, progress=False)


def test_oracle_on_real_coco_sample(coco_sample, capsys):
    inst, _ = coco.load_instances(coco_sample["ann_file"], coco_sample["image_dir"], 0.75)
    ap = {}
    for method in ("dark", "quarter"):
        stats, _ = coco_eval.evaluate(coco_eval.oracle_predictor(inst, (256, 192)), inst,
                                      coco_sample["ann_file"], (256, 192), decode=method,
                                      progress=False)
        ap[method] = stats["AP"]
    print(f"oracle AP on the real COCO sample (GT boxes, 256x192): {ap}")
    # Both decoders recover every labelled keypoint within OKS tolerance (measured 1.0 each).
    assert ap == {"dark": pytest.approx(1.0, abs=1e-9), "quarter": pytest.approx(1.0, abs=1e-9)}


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


def test_corrupt_image_during_calibration_names_file_and_record(synthetic_data, tmp_path):
    from fptflite.data import datasets

    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    inst[-1].image_path = str(bad)
    with pytest.raises(coco.DataError, match=rf"broken.jpg.*annotation {inst[-1].ann_id}"):
        datasets.calibration_crops(inst, (64, 48), num=len(inst))


def test_eval_settings_come_from_the_model_config(tmp_path):
    """Flags win; else a .tflite sidecar's "evaluation" section; else the run's config.json
    (model dir, or the folder of a model file); else TrainConfig's defaults."""
    import dataclasses

    from fptflite.tasks import eval_settings as defaults
    from fptflite.tasks.configs import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    cfg = dataclasses.replace(TrainConfig(), eval_flip_test=False, eval_decode="quarter",
                              eval_batch_size=16)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    for path in (str(run), str(run / "best.keras")):
        s = defaults.resolve(None, None, None, [path])
        assert (s.flip_test, s.decode, s.batch_size) == (False, "quarter", 16)
        assert s.source.endswith("config.json")
    s = defaults.resolve(True, "argmax", 8, [str(run)])
    assert (s.flip_test, s.decode, s.batch_size) == (True, "argmax", 8)
    tfl = tmp_path / "m.tflite"
    (tmp_path / "m.json").write_text(json.dumps({"evaluation": {"flip_test": True,
                                                                "decode": "argmax"}}))
    s = defaults.resolve(None, None, None, [str(run)], str(tfl))
    assert (s.flip_test, s.decode) == (True, "argmax")
    s = defaults.resolve(None, None, None, [str(tmp_path / "elsewhere")])
    d = TrainConfig()
    assert (s.flip_test, s.decode, s.batch_size) == (d.eval_flip_test, d.eval_decode,
                                                     d.eval_batch_size)
