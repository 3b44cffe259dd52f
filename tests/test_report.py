"""benchmarks/report.py and fptflite/utils/provenance.py: results JSON -> BENCHMARKS.md.

Fast and TensorFlow-free: small JSON files in a temporary folder, rendered and checked for
the numbers they carry.
"""

import datetime
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import report
from fptflite import results
from fptflite.utils import provenance as prov_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
PROV = {"command": "python -m conversion.benchmark --thread_counts=2",
        "machine": "Test CPU, 2 cores", "date": "2026-11-23"}


def _write(folder, name, doc):
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def _latency_doc():
    rows = [{"model": m, "format": f, "threads": 2, "median_ms": ms}
            for m, f, ms in (("fasterpose_r50", "float32", 40.0),
                             ("fasterpose_r50", "int8_ptq", 10.0),
                             ("simplebaseline_r50", "float32", 160.0),
                             ("simplebaseline_r50", "int8_ptq", 25.0))]
    return {"kind": "latency", "provenance": PROV,
            "result": {"input_size": [256, 192], "rows": rows, "ratios": {}}}


def test_latency_json_renders_rows_with_command_machine_and_date(tmp_path):
    _write(tmp_path, "latency.json", _latency_doc())
    md = report.render_markdown(report.collect(str(tmp_path)), rel_to=str(tmp_path))
    assert ("| fasterpose_r50 256x192, LiteRT + XNNPACK, 2 threads | float32 40.0 ms, int8_ptq "
            "10.0 ms, int8 / float32 0.25 | `python -m conversion.benchmark --thread_counts=2` "
            "| m1 | 2026-11-23 |") in md
    assert "float32 40.0 / 160.0 ms = 0.25; int8_ptq 10.0 / 25.0 ms = 0.40" in md
    assert "- m1: Test CPU, 2 cores" in md
    assert "From `latency.json`." in md


def _main_job_report():
    """The keys of fptflite.tasks.main_job.run's report that report.py reads."""
    def diff(d, lo, hi):
        return {"delta_points": d, "ci_low_points": lo, "ci_high_points": hi,
                "within_noise": lo <= 0 <= hi, "num_images": 600, "num_resamples": 1000,
                "confidence": 0.95, "a": "x", "b": "y"}

    return {
        "config": "demo", "model": "fasterpose_mnv2_050", "input_size": [128, 128],
        "metric": "AP", "float_score": 0.5473, "float32_score": 0.5473,
        "int8_qat_score": 0.5459, "int8_ptq_score": 0.5462,
        "shipped": {"format": "int8_qat", "path": "x.tflite", "reason": "within noise",
                    "max_drop_points": 0.5, "parity_passed": True, "verdict": "parity ok"},
        "ap_differences": {"int8_qat - int8_ptq": diff(-0.02, -0.28, 0.29),
                           "int8_qat - float": diff(-0.14, -0.42, 0.16),
                           "int8_ptq - float": diff(-0.11, -0.40, 0.18)},
        "int8_qat_fidelity": {
            "heatmap_correlation": 0.99985, "mean_keypoint_shift_px": 0.138,
            "mean_keypoint_shift_ci_px": [0.103, 0.189], "max_keypoint_shift_px": 7.0,
            "num_crops": 64, "passed": False,
            "thresholds": {"min_heatmap_correlation": 0.999, "max_mean_keypoint_shift_px": 0.1},
            "ulp_sensitivity": {"heatmap_correlation": 0.99998, "mean_keypoint_shift_px": 0.028},
            "xla_sensitivity": {"heatmap_correlation": 0.9998, "mean_keypoint_shift_px": 0.150,
                                "identical_pixel_fraction": 0.94},
            "layer_divergence": [{"layer": n, "differing_fraction": f} for n, f in (
                ("input", 0.0), ("norm", 0.0), ("conv1", 0.0003), ("block1", 0.02),
                ("head", 0.378), ("sigmoid", 0.08))]},
        "parity": {"int8_qat": {"mean_keypoint_error_px": 0.290},
                   "int8_ptq": {"mean_keypoint_error_px": 0.303},
                   "float32": {"mean_keypoint_error_px": 0.0}},
        "tflite": {"int8_qat": {"path": "q.tflite", "size_bytes": 2_400_000,
                                "audit_passed": True, "ops": {}}},
        "timings_s": {"data_s": 11.0, "train_s": 495.0, "qat_s": 8.0, "convert_s": 58.0,
                      "evaluate_s": 18.0, "total_s": 589.0},
    }


def test_demo_report_becomes_demo_json_with_headline_rows(tmp_path):
    results = tmp_path / "results"
    report_path = _write(tmp_path, "report.json", _main_job_report())
    card = {"int8": "qat", "size_bytes": 2_500_000, "input_size": [128, 128],
            "decode_parity_heatmap_px": {"num_crops": 64, "mean_px": 2.4e-6, "max_px": 2e-5},
            "latency_ms_xnnpack_cpu": {"2_threads": {"dropin_ms": 0.661, "heatmap_int8_ms": 0.623,
                                                     "decode_overhead": 0.061}}}
    card_path = _write(tmp_path, "model_card.json", card)
    doc = report.write_demo_results(str(report_path), str(results / "demo.json"), str(card_path))
    assert doc["provenance"]["command"] == "make demo"
    saved = json.loads((results / "demo.json").read_text())
    assert saved["result"]["score_points"]["int8_qat"] == pytest.approx(54.59)
    assert saved["result"]["int8_qat_fidelity"]["layer_divergence"] == {
        "num_layers": 6, "identical_prefix": 2, "first_1pct_layer": 4, "max_fraction": 0.378}
    md = report.render_markdown(report.collect(str(results)), rel_to=str(tmp_path))
    for expected in (
            "| AP, float Keras model (600 val images, GT boxes) | 54.73 | `make demo` |",
            "| AP, int8_qat .tflite | 54.59 (-0.14 points, 95% CI [-0.42, +0.16] vs float: "
            "within noise) |",
            "-0.02 points, 95% CI [-0.28, +0.29]: within noise",
            "keypoint error against float decided (0.290 px QAT vs 0.303 px PTQ); parity ok "
            "(drop 0.14 points, budget 0.50)",
            "heatmap corr 0.99985, mean keypoint shift 0.138 crop px (95% CI 0.103-0.189): FAIL",
            "XLA 0.150 px, one float32 ulp on every BN variance 0.028 px",
            "first 2 layer outputs identical, >= 1% of values differ from layer 4, at most 37.8%",
            "main job 589 s (data 11 s, training 495 s, QAT 8 s, conversion 58 s, evaluation 18 s)",
            "int8_qat 2.40 MB",
            "2 threads: 0.661 vs 0.623 ms (+6.1%)",
            "mean 2.4e-06, max 2e-05 heatmap px"):
        assert expected in md, expected


def test_ablation_json_renders_variants_and_verdicts(tmp_path):
    stats = lambda m, sd: {"mean": m, "sd": sd}  # noqa: E731
    summary = {v: {"seeds": [0, 1], "final_ap": stats(ap, 0.01), "int8_ap": stats(ap, 0.02),
                   "int8_ms": {"1": stats(ms, 0.1), "2": stats(ms / 2, 0.1)},
                   "params": params, "macs": macs, "train_s": stats(1, 0),
                   "ap_at": {"25%": stats(ap / 4, 0), "50%": stats(ap / 2, 0),
                             "75%": stats(ap * 0.75, 0)}}
               for v, ap, ms, params, macs in (
                   ("fasterpose_rce", 0.201, 0.89, 358_000, 34_800_000),
                   ("simplebaseline_mse", 0.131, 9.7, 8_054_000, 455_200_000))}
    paired = {"seeds": [0, 1], "per_seed": [0.07, 0.06], "mean": 0.065,
              "interval": [0.06, 0.07]}
    result = results.AblationResult(
        recipe={"name": "demo", "config": {"input_size": [128, 128], "epochs": 34}},
        variants=list(summary), seeds=[0, 1], budget_minutes=None,
        seeds_per_variant={v: 2 for v in summary}, stopped=None, cost_estimates={}, runs=[],
        summary=summary, int8_ms_side_by_side=None, session_s=1.0,
        verdicts={"b": {"variants": ["fasterpose_rce", "simplebaseline_mse"],
                        "final_ap_difference": paired, "ap_matches": "supported",
                        "macs_fraction": {**paired, "mean": 0.0771},
                        "int8_ms_fraction_1_threads": {**paired, "mean": 0.092}}}).to_dict()
    _write(tmp_path, "ablation.json", {"kind": "ablation", "provenance": PROV, "result": result})
    md = report.render_markdown(report.collect(str(tmp_path)), rel_to=str(tmp_path))
    assert ("| ablation fasterpose_rce, recipe demo, 128x128, 34 epochs, 2 seeds | final AP "
            "0.201 ± 0.010, AP at 25% / 50% / 75% of training 0.050 / 0.101 / 0.151, int8 PTQ AP "
            "0.201 ± 0.020, int8 0.89 / 0.45 ms (1 / 2 threads); "
            "34.8 M MACs, 0.358 M params |") in md
    assert ("AP matches: supported (final AP difference +0.065, 95% paired t interval "
            "[+0.060, +0.070] over 2 seeds); "
            "MACs fraction 0.077; int8 latency fraction, 1 thread 0.09") in md
    # A side-by-side timing, when the study made one, is the latency figure quoted.
    result["verdicts"]["b"]["int8_ms_fraction_side_by_side"] = {"1": 0.1234, "2": 0.15}
    result["int8_ms_side_by_side"] = {"ms": {"fasterpose_rce": {"1": 0.9, "2": 0.59}}}
    _write(tmp_path, "ablation.json", {"kind": "ablation", "provenance": PROV, "result": result})
    md = report.render_markdown(report.collect(str(tmp_path)), rel_to=str(tmp_path))
    assert ("MACs fraction 0.077; int8 latency fraction (side by side), 1 thread 0.123; int8 "
            "latency fraction (side by side), 2 threads 0.150 |") in md
    assert "int8 0.90 / 0.59 ms (1 / 2 threads, side by side)" in md
    assert "int8 9.70 / 4.85 ms (1 / 2 threads)" in md  # not timed side by side: the runs' own
    # An arm of one seed with its own epochs: its epochs in the setting, its means alone (one
    # seed has no sd to print).
    result["summary"]["fasterpose_rce:epochs=68"] = {
        **summary["fasterpose_rce"], "seeds": [0], "epochs": 68, "final_ap": stats(0.3, 0.0),
        "int8_ap": stats(0.299, 0.0), "kp_error": stats(3.5, 0.0), "final_ar": stats(0.33, 0.0),
        "pck": stats(0.9, 0.0)}
    _write(tmp_path, "ablation.json", {"kind": "ablation", "provenance": PROV, "result": result})
    md = report.render_markdown(report.collect(str(tmp_path)), rel_to=str(tmp_path))
    assert ("| ablation fasterpose_rce:epochs=68, recipe demo, 128x128, 68 epochs, 1 seed | "
            "final AP 0.300, AR 0.330, keypoint error 3.50 crop px, PCK 0.900, AP at 25% / 50% / "
            "75% of training 0.050 / 0.101 / 0.151, int8 PTQ AP 0.299, int8 ") in md


def test_unknown_kind_is_an_error_naming_the_file(tmp_path):
    _write(tmp_path, "latency.json", _latency_doc())
    _write(tmp_path, "mystery.json", {"kind": "mystery", "provenance": PROV, "result": {}})
    with pytest.raises(report.ResultsError, match=r"mystery\.json: unknown kind 'mystery'"):
        report.collect(str(tmp_path))


@pytest.mark.parametrize("doc, message", [
    ([{"decode": "crop region", "median_images_per_s": 300}], "not a results file"),
    ({"kind": "latency", "provenance": {"command": "x"}, "result": {}},
     "provenance lacks machine, date"),
    ({"kind": "latency", "provenance": PROV, "result": {"input_size": [1, 1]}},
     "cannot render kind 'latency': KeyError"),
    ({"kind": "latency", "provenance": PROV, "result": {}, "figures": []},
     "not a ResultsFile: unknown keys ['figures']"),
    ({"kind": "latency", "provenance": {**PROV, "host": "x"}, "result": {}},
     "provenance: not a Provenance: unknown keys ['host']"),
    ({"kind": "demo", "provenance": PROV, "result": {"model": "m", "metric": "AP",
                                                     "score_points": {}, "shipped": {},
                                                     "ap": 50.0}},
     "cannot render kind 'demo': ValueError: demo result: not a DemoResult: unknown keys "
     "['ap']"),
])
def test_bad_results_files_are_errors_naming_the_file(tmp_path, doc, message):
    _write(tmp_path, "bad.json", doc)
    with pytest.raises(report.ResultsError, match=r"bad\.json: " + re.escape(message)):
        report.collect(str(tmp_path))


def test_committed_results_are_typed_records_that_round_trip():
    """Every committed results file reads as a ResultsFile; the demo's and the ablation's
    results read as their records and write back the same JSON."""
    for path in sorted((REPO / "docs" / "results").glob("*.json")):
        doc = report.load_results(str(path))
        assert doc.to_dict() == json.loads(path.read_text()), path
        for kind, cls in (("demo", results.DemoResult), ("ablation", results.AblationResult)):
            if doc.kind != kind:
                continue
            record = cls.from_dict(doc.result)
            assert cls.from_dict(record.to_dict()) == record
            written = record.to_dict()  # the file's figures, plus optional fields as None
            assert all(written[k] == v for k, v in doc.result.items() if k != "runtimes")
            if kind == "demo":
                assert all(isinstance(x, results.RuntimeResult)
                           for x in record.runtimes.values())


def test_binary_writes_benchmarks_and_fails_on_unknown_json(tmp_path):
    _write(tmp_path, "latency.json", _latency_doc())
    out = tmp_path / "B.md"
    cmd = [sys.executable, "-m", "benchmarks.report", f"--results_dir={tmp_path}", f"--out={out}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "float32 40.0 ms, int8_ptq 10.0 ms" in out.read_text()
    _write(tmp_path, "other.json", {"kind": "nope", "provenance": PROV, "result": []})
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "other.json: unknown kind 'nope'" in done.stderr


def test_report_and_provenance_do_not_import_tensorflow():
    code = ("import sys, benchmarks.report, fptflite.utils.provenance as p; p.provenance(); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_provenance_has_the_keys_and_a_plausible_date():
    p = prov_lib.provenance(["benchmarks/report.py", "--out=B.md"])
    assert set(p) == {"command", "machine", "date"}
    date = datetime.date.fromisoformat(p["date"])
    today = datetime.datetime.now(datetime.UTC).date()
    assert abs((today - date).days) <= 1 and date.year >= 2024
    assert f"{os.cpu_count()} core" in p["machine"]
    assert prov_lib.provenance("make demo")["command"] == "make demo"


def test_provenance_reads_the_cpu_model_and_quotes_the_command(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test  CPU @ 2.0GHz\nflags\t: sse\n")
    assert prov_lib.cpu_model(str(cpuinfo)) == "Test CPU @ 2.0GHz"
    assert prov_lib.machine(str(cpuinfo)).startswith("Test CPU @ 2.0GHz, ")
    assert prov_lib.command_line(["python", "-m", "x", "--name=a b"]) == \
        "python -m x '--name=a b'"


def test_committed_results_render_and_benchmarks_md_is_up_to_date():
    sections = report.collect(str(REPO / report.RESULTS_DIR))
    assert {s.path.rsplit(os.sep, 1)[-1] for s in sections} >= {"demo.json", "latency.json"}
    rendered = report.render_markdown(sections, rel_to=str(REPO))
    assert (REPO / report.BENCHMARKS_FILE).read_text() == rendered, \
        "BENCHMARKS.md is stale: run python -m benchmarks.report"


def test_guides_stay_short_and_free_of_commit_hashes():
    assert (REPO / "README.md").stat().st_size <= 10240
    hexword = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
    for path in [REPO / "README.md", REPO / "BENCHMARKS.md", *(REPO / "docs").glob("*.md")]:
        assert not hexword.findall(path.read_text()), path
