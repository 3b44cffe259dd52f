"""The whole main job end to end on a model that really predicts, and a parity check that fails
when the int8 file is broken."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers.runtimes import check_ran, require_all

from fptflite import results, rundir
from fptflite.tasks import main_job
from fptflite.tflite import runtimes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Float training fits a few synthetic images (no augmentation, evaluated on those images).
FIT_OVERRIDES = (
    "model=fasterpose_mnv2_035", "input_size=[64,64]", "neck_channels=32",
    "epochs=80", "batch_size_per_replica=8", "learning_rate=0.005", "warmup_epochs=0",
    "eval_flip_test=false", "augment.scale_factor=0.0", "augment.rotation_prob=0.0",
    "augment.flip=false", "augment.half_body_prob=0.0")
# 11 persons make AP coarse (one keypoint crossing an OKS threshold moves it by ~1 point).
# Measured (80 epochs, 2:07 for the test): float AP 80.5, int8_qat 81.5, int8_ptq 80.5; Keras
# QAT vs int8_qat corr 0.99988, shift 0.076 px; the broken file: AP 39.4, corr 0.817.
TEST_MAX_AP_DROP = 2.0


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    """A synthetic set whose validation split is (a copy of) its few training images, with
    the training annotations repeated so that one epoch is several steps."""
    from fptflite.data import synthetic

    root = str(tmp_path_factory.mktemp("fit"))
    paths = synthetic.generate_dataset(root, num_train=6, num_val=1, seed=5, progress=False)
    with open(paths["train_ann"]) as f:
        train = json.load(f)
    shutil.rmtree(paths["val_images"])
    shutil.copytree(paths["train_images"], paths["val_images"])
    with open(paths["val_ann"], "w") as f:
        json.dump(train, f)
    repeated = dict(train, annotations=[
        dict(a, id=a["id"] + 100_000 * r) for r in range(6) for a in train["annotations"]])
    with open(paths["train_ann"], "w") as f:
        json.dump(repeated, f)
    return root


def _break_head_weight_scales(src: str, dst: str) -> None:
    """Rewrites the last CONV_2D's per-channel weight scales (x0.3 / x3 alternating)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(src)
    graph = model.subgraphs[0]
    conv_code = [i for i, c in enumerate(model.operatorCodes)
                 if max(c.builtinCode, c.deprecatedBuiltinCode) == 3]  # CONV_2D
    head = [op for op in graph.operators if op.opcodeIndex in conv_code][-1]
    q = graph.tensors[head.inputs[1]].quantization
    q.scale = [s * (0.3 if i % 2 else 3.0) for i, s in enumerate(q.scale)]
    flatbuffer_utils.write_model(model, dst)


@pytest.fixture(scope="module")
def main_job_run(fit_data, tmp_path_factory):
    """The main job on the fitted data, with the tools' defaults (QAT: calibrated ranges, 0
    epochs): (run dir, report.json, data dir, scratch dir)."""
    tmp_path = tmp_path_factory.mktemp("main_job")
    out = tmp_path / "demo"
    report = main_job.run(main_job.MainJobOptions(
        run_dir=str(out), config="demo", data_dir=fit_data, overrides=FIT_OVERRIDES,
        num_threads=2, max_drop=TEST_MAX_AP_DROP, android_assets_dir=str(tmp_path / "assets")))
    on_disk = json.load(open(out / rundir.REPORT_JSON))
    for key in ("float_score", "int8_qat_score", "int8_ptq_score"):
        assert on_disk[key] == report[key]
    return out, on_disk, fit_data, tmp_path


@pytest.mark.slow
def test_main_job_end_to_end(main_job_run):
    from fptflite.data.coco import load_instances
    from fptflite.evaluation import parity
    from fptflite.quantization.model_io import load_model
    from fptflite.tflite import parity_gate

    out, on_disk, fit_data, tmp_path = main_job_run
    print({k: on_disk[k] for k in ("float_score", "int8_qat_score", "int8_ptq_score")},
          on_disk["shipped"]["reason"], on_disk["int8_qat_fidelity"])
    # A model that predicts: the float model fits its images.
    assert on_disk["metric"] == "AP" and on_disk["float_score"] >= 0.5
    parity_dir = out / rundir.PARITY_DIR
    float_metrics = json.load(open(parity_dir / "float" / "metrics.json"))
    assert on_disk["float_score"] == float_metrics["AP"]
    for fmt in ("int8_qat", "int8_ptq", "float32"):
        metrics = json.load(open(parity_dir / fmt / "metrics.json"))
        assert on_disk[f"{fmt}_score"] == metrics["AP"]
        assert on_disk["tflite"][fmt]["audit_passed"]
    assert abs(on_disk["float32_score"] - on_disk["float_score"]) < 1e-3
    # The run directory has the layout every tool reads: the QAT run beside the float run.
    assert on_disk["qat_model"] == rundir.best_export(rundir.qat_dir(str(out)))
    assert on_disk["qat_recipe"] == {"epochs": 0, "learning_rate": None}
    # Both int8 files keep the float model's heatmaps; the shipped one its AP.
    for fmt in ("int8_qat", "int8_ptq"):
        assert on_disk["parity"][fmt]["heatmap_correlation"] >= 0.99
    best = max(on_disk["int8_qat_score"], on_disk["int8_ptq_score"])
    assert 100 * (on_disk["float_score"] - best) <= TEST_MAX_AP_DROP
    # The bootstrap's full-set differences are pycocotools' APs; the shipped file is the
    # better one beyond noise, else the one closer to the float keypoints.
    diffs = on_disk["ap_differences"]
    for fmt in ("int8_qat", "int8_ptq"):
        assert diffs[f"{fmt} - float"]["delta_points"] == pytest.approx(
            100 * (on_disk[f"{fmt}_score"] - on_disk["float_score"]), abs=1e-9)
    qat_vs_ptq = diffs["int8_qat - int8_ptq"]
    assert qat_vs_ptq["ci_low_points"] <= qat_vs_ptq["delta_points"] <= \
        qat_vs_ptq["ci_high_points"]
    if qat_vs_ptq["within_noise"]:
        closer = min(("int8_qat", "int8_ptq"),
                     key=lambda f: on_disk["parity"][f]["mean_keypoint_error_px"])
        assert on_disk["shipped"]["format"] == closer
    else:
        assert on_disk[f"{on_disk['shipped']['format']}_score"] == best
    # The Keras QAT simulation is the file that ships (same crops).
    fid = on_disk["int8_qat_fidelity"]
    # int8 arithmetic rounds where the simulation does not, and DARK's sub-pixel step moves
    # with single 1/256 steps (0.12 px on a 30-epoch fit).
    assert fid["heatmap_correlation"] >= 0.999 and fid["mean_keypoint_shift_px"] <= 0.2
    shipped = on_disk["shipped"]
    assert shipped["parity_passed"] and shipped["format"] in ("int8_qat", "int8_ptq")
    assert shipped["format"] in shipped["reason"]
    card = json.load(open(tmp_path / "assets" / "model_card.json"))  # the Android drop-in
    assert "int8_" + card["int8"] == shipped["format"]
    assert card["decode_parity_heatmap_px"]["mean_px"] <= 0.25
    for png in on_disk["pictures"].values():
        img = cv2.imread(png)
        assert img is not None and img.shape[0] > 100
    markdown = (out / "report.md").read_text()
    assert f"Shipped int8 file: {shipped['format']}" in markdown
    # report.md's figures are the rows BENCHMARKS.md shows: the one renderer.
    for row in results.render_demo(results.demo_results(on_disk)):
        assert f"| {row.what} | {row.figure} |" in markdown
    for name, d in diffs.items():  # each difference names its two sides
        assert f"{d['a']} - {d['b']}" == name
        assert f"{d['delta_points']:+.2f} points" in markdown

    # A broken int8 file fails the same check.
    broken = str(tmp_path / "broken.tflite")
    _break_head_weight_scales(shipped["path"], broken)
    float_model = load_model(on_disk["float_model"])
    val, _ = load_instances(os.path.join(fit_data, "annotations", "person_keypoints_val.json"),
                            os.path.join(fit_data, "images", "val"), 1.0)
    # One pass for both files (the float model runs once per batch): the shipped file's
    # figures are those of the main job's three-file pass.
    _, reps = parity.evaluate_files_against_float(
        {"broken": (broken, str(tmp_path / "broken_eval")),
         "shipped": (shipped["path"], str(tmp_path / "shipped_eval"))},
        float_model, val, os.path.join(fit_data, "annotations", "person_keypoints_val.json"),
        str(tmp_path / "float_eval"), 2, progress=False)
    rep = reps["broken"]
    print("broken:", rep["candidate_score"], rep["heatmap_correlation"])
    assert reps["shipped"]["candidate_score"] == on_disk[shipped["format"] + "_score"]
    assert rep["reference_score"] == reps["shipped"]["reference_score"] == \
        on_disk["float_score"]
    assert reps["shipped"]["heatmap_correlation"] == pytest.approx(
        on_disk["parity"][shipped["format"]]["heatmap_correlation"], abs=1e-6)
    assert rep["heatmap_correlation"] < 0.99
    with pytest.raises(parity_gate.ParityError, match=r"AP .* vs .*float|parity FAILED"):
        parity_gate.check_drop(rep["reference_score"], rep["candidate_score"], TEST_MAX_AP_DROP,
                                  broken)
    assert np.isfinite(rep["candidate_score"])

    # The same gate from the command line: exit status 1 and the message naming both APs
    # when the budget demands a 5-point gain (within budget, the gate above passed).
    ann = os.path.join(fit_data, "annotations", "person_keypoints_val.json")
    run = subprocess.run(
        [sys.executable, "-m", "conversion.evaluate_tflite", f"--tflite={shipped['path']}",
         f"--ann_file={ann}", f"--image_dir={os.path.join(fit_data, 'images', 'val')}",
         "--num_threads=2", f"--model={out}", "--max_drop=-5",
         f"--out_dir={tmp_path / 'gate'}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "tflite - float: " in run.stdout and "paired bootstrap over 6 images" in run.stdout
    assert (f"parity FAILED: {shipped['path']} on cpu: AP "
            f"{100 * on_disk[shipped['format'] + '_score']:.2f} vs "
            f"{100 * on_disk['float_score']:.2f}"
            f" for {out}") in run.stderr


@pytest.mark.slow
def test_shipped_file_on_every_runtime(main_job_run):
    """The main job's runtime table: the shipped file's AP on each runtime against the float
    model within the budget, and its keypoints against the CPU runtime's. TFLite 2.14's int8
    kernels are LiteRT's builtin ones (XNNPACK does not take int8 graphs there), so its
    predictions equal cpu_reference's exactly: an independent check that both ran the file."""
    out, on_disk, fit_data, tmp_path = main_job_run
    rows = on_disk["runtimes"]
    assert list(rows) == list(runtimes.RUNTIMES)
    check_ran(rows)
    shipped = on_disk["shipped"]["format"]
    assert rows["cpu"]["candidate_score"] == on_disk[shipped + "_score"]
    for name, row in rows.items():
        if not row["ran"]:
            continue
        assert row["passed"] and row["reference_score"] == on_disk["float_score"], \
            row["verdict"]
        metrics = json.load(open(out / rundir.PARITY_DIR / (
            "runtimes/" + name if name != "cpu" else shipped) / "metrics.json"))
        assert row["candidate_score"] == metrics["AP"]
    if rows["web_gpu"]["ran"]:  # LiteRT.js runs every op of the FasterPose file on WebGPU
        assert rows["web_gpu"]["residency"] == {"checked": True, "fully_accelerated": True,
                                                "cpu_ops_log": [], "gpu_ops": None,
                                                "cpu_ops": None}
    if rows["tflite2.14"]["ran"] and rows["cpu_reference"]["ran"]:
        assert rows["tflite2.14"]["candidate_score"] == rows["cpu_reference"]["candidate_score"]
        assert rows["tflite2.14"]["shift_vs_cpu"] == rows["cpu_reference"]["shift_vs_cpu"]
    card = json.load(open(tmp_path / "assets" / "model_card.json"))
    assert {n: r["ran"] for n, r in card["runtimes"].items()} == \
        {n: r["ran"] for n, r in rows.items()}
    if card["gpu_residency"]["checked"] or require_all():  # the drop-in runs whole on the GPU
        assert card["gpu_residency"]["fully_accelerated"], card["gpu_residency"]
    assert card["runs_on"]["tflite_2.14"]["ran"]  # export_android's --min_runtime=2.14
    # The drop-in's keypoints on each runtime against the CPU's, on every val crop.
    agree = card["keypoints_vs_cpu_heatmap_px"]
    check_ran(agree)
    num_val = rows["cpu"]["num_instances"]
    print("agreement", json.dumps(agree))
    # Measured on this fit (187 keypoints, heatmap px; the demo recipe's linear MSE output):
    # cpu_reference mean 0.0186, p95 0.0297 (TFLite's int8 kernels round where XNNPACK's do
    # not), one keypoint (0.53%) 1.05 px away: its heatmap has two near-equal peaks and the
    # rounding picks the other; gpu (fp16 arithmetic on dequantized weights) mean 0.026, p95
    # 0.065, max 0.13; web (LiteRT.js on wasm: XNNPACK's int8 kernels, the float decode's
    # last bits differ) mean 1.2e-6, max 8.1e-6; web_gpu (WebGPU on lavapipe) mean 0.0023,
    # p95 0.012, max 0.016. Bounds: (mean, p95, share of keypoints > 1 px).
    bounds = {"cpu_reference": (0.03, 0.05, 0.01), "tflite2.14": (0.03, 0.05, 0.01),
              "gpu": (0.05, 0.1, 0.0), "web": (1e-5, 1e-4, 0.0), "web_gpu": (0.01, 0.03, 0.0)}
    for name, x in agree.items():
        if x["ran"]:
            mean_bound, p95_bound, share_bound = bounds[name]
            assert x["num_keypoints"] == 17 * num_val, (name, x)
            assert x["mean_px"] <= mean_bound and x["p95_px"] <= p95_bound, (name, x)
            assert x["share_above_1px"] <= share_bound, (name, x)
            assert x["max_score_diff"] <= 0.03, (name, x)
    if agree["tflite2.14"]["ran"] and agree["cpu_reference"]["ran"]:
        # The same int8 kernels; the decode's float kernels differ in the last bits
        # (measured: largest difference 9.3e-6 px, on max_px).
        for key in ("mean_px", "p95_px", "max_px"):
            assert agree["tflite2.14"][key] == pytest.approx(agree["cpu_reference"][key],
                                                             abs=2e-5), key
    # The gate from the command line on every runtime: a 5-point gain demanded fails.
    ann = os.path.join(fit_data, "annotations", "person_keypoints_val.json")
    for name in runtimes.RUNTIMES[1:]:
        if not rows[name]["ran"]:
            continue
        run = subprocess.run(
            [sys.executable, "-m", "conversion.evaluate_tflite",
             f"--tflite={on_disk['shipped']['path']}", f"--ann_file={ann}",
             f"--image_dir={os.path.join(fit_data, 'images', 'val')}", f"--runtime={name}",
             f"--model={out}", "--max_drop=-5",
             f"--out_dir={tmp_path / ('gate_' + name)}"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        assert run.returncode == 1, run.stderr[-3000:]
        assert f"parity FAILED: {on_disk['shipped']['path']} on {name}: AP " in run.stderr
        stem = os.path.splitext(os.path.basename(on_disk["shipped"]["path"]))[0]
        gate = json.load(open(tmp_path / ("gate_" + name) / stem / "metrics.json"))
        assert gate["AP"] == rows[name]["candidate_score"]


def readme_chain() -> tuple[dict[str, str], list[list[str]]]:
    """The variables and the commands of README's "From COCO to a phone file" block (lines
    joined at backslashes, comments dropped), each command split as a shell would."""
    text = open(os.path.join(REPO, "README.md")).read()
    block = text.split("## From COCO to a phone file", 1)[1].split("```bash\n", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    variables, commands = {}, []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(". "):
            continue
        words = shlex.split(line)
        if all("=" in w and not w.startswith("-") for w in words):
            variables.update(w.split("=", 1) for w in words)
        else:
            commands.append(words)
    return variables, commands


def _swap_for_run(words: list[str], run: str, data: str, model: str, assets: str) -> list[str]:
    """A README command on the main job's run: its paths for $RUN and $DATA, the run's
    config and overrides for the COCO recipe, its model's file name, a scratch assets dir."""
    out = []
    for w in words:
        w = w.replace("$RUN", run).replace("$DATA", data)
        if w.startswith("--set="):
            continue
        if w.startswith("--config="):
            out += ["--config=demo", *(f"--set={o}" for o in FIT_OVERRIDES)]
            continue
        if w.startswith("--tflite="):
            w = w.replace("fasterpose_mnv2_int8_qat", f"{model}_int8_qat")
        if w.startswith("--out_dir=android_demo_assets"):
            w = f"--out_dir={assets}"
        out.append(w)
    return out


@pytest.mark.slow
def test_readme_chain_runs_on_the_main_job_run(main_job_run):
    """Every command of README's phone-file block, as written but for the data paths (the
    fitted synthetic set for COCO), works on the main job's run directory, and the AP that
    evaluate_tflite prints for the QAT file equals the main job's report."""
    out, on_disk, fit_data, tmp_path = main_job_run
    variables, commands = readme_chain()
    assert set(variables) == {"RUN", "DATA"}
    assert [c[:3] for c in commands] == [
        ["python", "-m", "training.train"], ["python", "-m", "conversion.qat"],
        ["python", "-m", "conversion.convert"], ["python", "-m", "conversion.evaluate_tflite"],
        ["python", "-m", "conversion.export_android"]]
    codes, printed = [], {}
    for words in commands:
        args = _swap_for_run(words, str(out), fit_data, on_disk["model"],
                             str(tmp_path / "readme_assets"))
        done = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        codes.append((args[2], done.returncode))
        printed[args[2]] = done.stdout
        assert done.returncode == 0, (args, done.stderr[-3000:])
    print(codes)
    qat_file = os.path.join(str(out), "tflite", f"{on_disk['model']}_int8_qat.tflite")
    line = f"AP {100 * on_disk['int8_qat_score']:.2f} ({qat_file} on cpu)"
    assert line in printed["conversion.evaluate_tflite"], printed["conversion.evaluate_tflite"]
    card = json.load(open(tmp_path / "readme_assets" / "model_card.json"))
    assert card["int8"] == "qat"
