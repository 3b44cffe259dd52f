"""Paired bootstrap of AP differences: the accumulation against pycocotools, image weights
against duplicated images, and the interval on cases whose answer is known."""

import copy
import json

import numpy as np
import pytest

from fptflite.data.coco import load_coco
from fptflite.evaluation import bootstrap, coco_eval


def _case(rng, num_images=12, noise_px=(2.0, 25.0)):
    """An annotation dict of ``num_images`` 640x480 images with 1-3 labelled persons each, and
    results: every person detected with keypoint noise drawn in ``noise_px`` and a random
    score, plus one false positive in every third image."""
    images, anns, results = [], [], []
    for i in range(num_images):
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.uniform(0, 400), rng.uniform(0, 200)
            kp = np.stack([rng.uniform(x0, x0 + 150, 17), rng.uniform(y0, y0 + 250, 17)], -1)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 1,
                         "iscrowd": 0, "area": 150.0 * 250.0, "bbox": [x0, y0, 150.0, 250.0],
                         "num_keypoints": 17,
                         "keypoints": [v for x, y in kp for v in (float(x), float(y), 2)]})
            det = kp + rng.normal(0, rng.uniform(*noise_px), kp.shape)
            results.append({"image_id": 100 + i, "category_id": 1, "score": float(rng.random()),
                            "keypoints": [v for x, y in det for v in (float(x), float(y), 1)]})
        if i % 3 == 0:
            fp = rng.uniform(0, 400, (17, 2))
            results.append({"image_id": 100 + i, "category_id": 1, "score": float(rng.random()),
                            "keypoints": [v for x, y in fp for v in (float(x), float(y), 1)]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]}, results


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_accumulation_reproduces_pycocotools(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(3):
        gt, results = _case(rng)
        ann = _write(tmp_path, f"ann{trial}.json", gt)
        table = bootstrap.match_table(load_coco(ann), results)
        expected = coco_eval.run_cocoeval(ann, results)["AP"]
        assert 0.2 < expected < 0.95  # neither trivial nor empty
        assert bootstrap.average_precision(table) == pytest.approx(expected, abs=1e-12)


def test_image_weights_equal_duplicated_images(tmp_path):
    """Weighting image i by 2 is pycocotools' AP of a dataset where image i appears twice."""
    rng = np.random.default_rng(1)
    gt, results = _case(rng)
    table = bootstrap.match_table(load_coco(_write(tmp_path, "ann.json", gt)), results)
    weights = np.ones(len(gt["images"]))
    dup_gt, dup_results = copy.deepcopy(gt), list(results)
    for i in (0, 4, 5):
        weights[i] = 2
        new_id = 1000 + i
        dup_gt["images"].append({**gt["images"][i], "id": new_id})
        for a in gt["annotations"]:
            if a["image_id"] == gt["images"][i]["id"]:
                dup_gt["annotations"].append(
                    {**a, "id": len(dup_gt["annotations"]) + 1, "image_id": new_id})
        dup_results += [{**r, "image_id": new_id} for r in results
                        if r["image_id"] == gt["images"][i]["id"]]
    weights[7] = 0  # an image left out of the resample
    dup_gt["images"] = [im for im in dup_gt["images"] if im["id"] != 107]
    dup_gt["annotations"] = [a for a in dup_gt["annotations"] if a["image_id"] != 107]
    dup_results = [r for r in dup_results if r["image_id"] != 107]
    expected = coco_eval.run_cocoeval(_write(tmp_path, "dup.json", dup_gt), dup_results)["AP"]
    assert bootstrap.average_precision(table, weights) == pytest.approx(expected, abs=1e-12)
    assert bootstrap.average_precision(table, weights) != pytest.approx(
        bootstrap.average_precision(table), abs=1e-4)


def test_paired_interval_on_known_answers(tmp_path):
    rng = np.random.default_rng(2)
    gt, good = _case(rng, num_images=40, noise_px=(1.0, 3.0))
    coco_gt = load_coco(_write(tmp_path, "ann.json", gt))
    bad = [{**r, "keypoints": list(np.asarray(r["keypoints"])
                                   + np.tile([15.0, -15.0, 0.0], 17))} for r in good]
    a, b = bootstrap.match_table(coco_gt, good), bootstrap.match_table(coco_gt, bad)
    # A model against itself: no difference, a zero-width interval.
    same = bootstrap.paired_ap_difference(a, a, num_resamples=200)
    assert (same["delta_points"], same["ci_low_points"], same["ci_high_points"]) == (0, 0, 0)
    assert same["within_noise"]
    # 15 px off on every keypoint of every image: worse beyond noise, and the interval holds
    # the full-set difference (pycocotools' APs).
    d = bootstrap.paired_ap_difference(a, b, num_resamples=300)
    expected = 100 * (coco_eval.run_cocoeval(str(tmp_path / "ann.json"), good)["AP"]
                      - coco_eval.run_cocoeval(str(tmp_path / "ann.json"), bad)["AP"])
    assert d["delta_points"] == pytest.approx(expected, abs=1e-9) and expected > 10
    assert 0 < d["ci_low_points"] < expected < d["ci_high_points"]
    assert not d["within_noise"]
    assert "good - bad: +" in bootstrap.format_difference("good", "bad", d)
    # Each of two results is 15 px off on a different four images: the interval holds 0.
    first = [bad[j] if r["image_id"] < 104 else r for j, r in enumerate(good)]
    second = [bad[j] if 104 <= r["image_id"] < 108 else r for j, r in enumerate(good)]
    near = bootstrap.paired_ap_difference(bootstrap.match_table(coco_gt, first),
                                          bootstrap.match_table(coco_gt, second),
                                          num_resamples=300)
    assert near["within_noise"] and near["ci_low_points"] < 0 < near["ci_high_points"]
    assert abs(near["delta_points"]) < 0.5 * expected


def test_bootstrap_refuses_mismatched_inputs(tmp_path):
    rng = np.random.default_rng(3)
    gt1, res1 = _case(rng, num_images=5)
    gt2, res2 = _case(rng, num_images=6)
    t1 = bootstrap.match_table(load_coco(_write(tmp_path, "a.json", gt1)), res1)
    t2 = bootstrap.match_table(load_coco(_write(tmp_path, "b.json", gt2)), res2)
    with pytest.raises(ValueError, match="different images"):
        bootstrap.paired_ap_difference(t1, t2)
    empty = _write(tmp_path, "empty_results.json", [])
    with pytest.raises(ValueError, match=r"empty_results\.json holds no results"):
        bootstrap.load_match_tables(str(tmp_path / "a.json"), {"m": empty})


def test_mean_interval_against_the_normal_approximation():
    rng = np.random.default_rng(4)
    values = rng.exponential(0.1, (2000, 17))  # skewed per-keypoint shifts of 2000 crops
    low, high = bootstrap.mean_interval(values)
    per_crop = values.mean(axis=1)
    half = 1.96 * per_crop.std() / np.sqrt(len(per_crop))
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap.mean_interval(np.full((50, 17), 0.25)) == pytest.approx((0.25, 0.25))


def test_compare_ap_binary_prints_and_writes_every_pair(tmp_path):
    """conversion.compare_ap (a subprocess: absl flags stay out of the test process) against
    the library on a case with a known order: good beats bad beyond noise."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    gt, good = _case(rng, num_images=20, noise_px=(1.0, 3.0))
    ann = _write(tmp_path, "ann.json", gt)
    bad = [{**r, "keypoints": list(np.asarray(r["keypoints"])
                                   + np.tile([15.0, -15.0, 0.0], 17))} for r in good]
    files = {"good": _write(tmp_path, "good.json", good), "bad": _write(tmp_path, "bad.json", bad)}
    out = tmp_path / "diff.json"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run(
        [sys.executable, "-m", "conversion.compare_ap", f"--ann_file={ann}",
         f"--results=good={files['good']},bad={files['bad']}", "--num_resamples=200",
         f"--out_json={out}"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    tables = bootstrap.load_match_tables(ann, files)
    expected = bootstrap.paired_ap_difference(tables["good"], tables["bad"], num_resamples=200)
    assert json.loads(out.read_text()) == {"good - bad": expected}
    assert bootstrap.format_difference("good", "bad", expected) in run.stdout
    assert expected["delta_points"] > 10 and not expected["within_noise"]
    one = subprocess.run([sys.executable, "-m", "conversion.compare_ap", f"--ann_file={ann}",
                          f"--results=good={files['good']}"], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert one.returncode != 0 and "at least two distinct NAME=FILE" in one.stderr
