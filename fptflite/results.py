"""Result records and their one renderer: the figures of the main job's report, the
ablation, the runtimes and every benchmark, as rows ("what", "figure") for BENCHMARKS.md and
the reports the tasks write.

A results file (``benchmarks.report``) is a typed ``ResultsFile``: its ``kind`` names a
renderer of ``RENDERERS``, its ``provenance`` says where and how it was measured, its
``result`` is what the measuring code wrote. The main job's headline figures are a typed
``DemoResult`` (with one ``RuntimeResult`` per runtime), built from its report.json by
``demo_results`` and rendered by ``render_demo``, both for BENCHMARKS.md and for the run's
own report.md. TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from fptflite.utils.formatting import divergence_figures, mean_sd

INT8_FORMATS = ("int8_qat", "int8_ptq")  # the two int8 files a main job compares and ships


def markdown_cell(text: object) -> str:
    """``text`` as one markdown table cell (pipes escaped, on one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure of BENCHMARKS.md; ``command`` None means the file's provenance command."""

    what: str
    figure: str
    command: str | None = None


# ------------------------------------------------------------------------------- records

_Record = TypeVar("_Record")


def record_from_dict(cls: type[_Record], d: Any, where: str) -> _Record:
    """``cls(**d)`` for a record dataclass, strictly: a ValueError naming ``where`` for a
    non-object, an unknown key or a missing required one."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a {cls.__name__} is a JSON object, got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names)
    missing = [f.name for f in fields if f.name not in d
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        raise ValueError(f"{where}: not a {cls.__name__}: "
                         + "; ".join(x for x in (f"unknown keys {unknown}" if unknown else "",
                                                 f"missing keys {missing}" if missing else "")
                                     if x) + f" (its keys: {sorted(names)})")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where and how a figure was measured (``fptflite.utils.provenance.provenance``)."""

    command: str
    machine: str
    date: str  # YYYY-MM-DD, UTC
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class ResultsFile:
    """One docs/results/*.json file: ``result`` as the measuring code wrote it, rendered by
    ``RENDERERS[kind]``."""

    kind: str
    provenance: Provenance
    result: Any
    title: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ResultsFile:
        doc = record_from_dict(cls, d, where)
        if doc.kind not in RENDERERS:
            raise ValueError(f"{where}: unknown kind {doc.kind!r}; one of {', '.join(RENDERERS)}")
        prov = record_from_dict(Provenance, doc.provenance, f"{where}: provenance")
        return dataclasses.replace(doc, provenance=prov)

    def to_dict(self) -> dict:
        """The JSON object (optional fields that are None left out)."""
        prov = {k: v for k, v in dataclasses.asdict(self.provenance).items() if v is not None}
        d = {"kind": self.kind, "provenance": prov, "result": self.result}
        return d if self.title is None else {**d, "title": self.title}


@dataclasses.dataclass(frozen=True)
class RuntimeResult:
    """The shipped file on one runtime: AP in points against float, or why it did not run.

    Attributes:
        ran: whether the runtime ran the file.
        reason: why not (``ran`` False).
        ap: the file's score in points on that runtime.
        delta_points: ``ap`` - float's score, in points.
        passed: within the parity budget.
        shift_vs_cpu: keypoints against the CPU runtime's on the same crops:
            {"mean_px", "p95_px", "max_px", "share_above_1px"} (heatmap pixels).
        residency: for a GPU runtime, which ops ran on the GPU (``residency_text``).
    """

    ran: bool
    reason: str | None = None
    ap: float | None = None
    delta_points: float | None = None
    passed: bool | None = None
    shift_vs_cpu: dict | None = None
    residency: dict | None = None


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """The headline figures of one main job (``make demo``): the "result" of demo.json.

    Attributes:
        model, config, input_size: what was trained ((H, W) input).
        metric: "AP" or "PCKh": what every score is.
        num_val_images: validation images scored (ground-truth boxes).
        score_points: {"float", "float32_tflite", "int8_qat", "int8_ptq"} -> score in points.
        ap_differences: "a - b" -> paired-bootstrap difference {"delta_points",
            "ci_low_points", "ci_high_points", "confidence", "within_noise", "num_images"}.
        keypoint_error_px: int8 format -> mean keypoint error against float (crop px).
        shipped: {"format", "reason", "parity_passed", "max_drop_points"}.
        int8_qat_fidelity: the QAT file against its Keras model (``_fidelity_figures``).
        tflite_size_mb: format -> file size.
        timings_s: stage -> seconds.
        android: the drop-in's figures (``_android_figures``), or None.
        runtimes: runtime name -> ``RuntimeResult``, or None.
        wall_s: the whole command's wall time, when measured.
    """

    model: str
    metric: str
    score_points: dict[str, float]
    shipped: dict
    config: str | None = None
    input_size: list[int] | None = None
    num_val_images: int | None = None
    ap_differences: dict[str, dict] = dataclasses.field(default_factory=dict)
    keypoint_error_px: dict[str, float] = dataclasses.field(default_factory=dict)
    int8_qat_fidelity: dict | None = None
    tflite_size_mb: dict[str, float] = dataclasses.field(default_factory=dict)
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)
    android: dict | None = None
    runtimes: dict[str, RuntimeResult] | None = None
    wall_s: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "demo result") -> DemoResult:
        r = record_from_dict(cls, d, where)
        if r.runtimes is None:
            return r
        return dataclasses.replace(r, runtimes={
            name: x if isinstance(x, RuntimeResult)
            else record_from_dict(RuntimeResult, x, f"{where} runtime {name!r}")
            for name, x in r.runtimes.items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AblationResult:
    """ablation.json (``fptflite.tasks.ablation.build_result``): the study's recipe and
    options, every run's record, the per-arm summary, the learning-rate sweeps, the verdicts
    and the single-change comparisons."""

    recipe: dict
    variants: list[str]
    seeds: list[int]
    budget_minutes: float | None
    seeds_per_variant: dict[str, int]
    stopped: str | None
    cost_estimates: dict[str, dict]
    runs: list[dict]
    summary: dict[str, dict]
    int8_ms_side_by_side: dict | None
    verdicts: dict
    session_s: float
    learning_rate_sweeps: dict[str, dict] = dataclasses.field(default_factory=dict)
    comparisons: list[dict] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Any, where: str = "ablation result") -> AblationResult:
        return record_from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- formatting


def _points(d: dict) -> str:
    """'-0.14 points, 95% CI [-0.42, +0.16]' of a paired-bootstrap difference."""
    text = f"{d['delta_points']:+.2f} points"
    if d.get("ci_low_points") is not None:
        text += (f", {100 * d.get('confidence', 0.95):.0f}% CI [{d['ci_low_points']:+.2f}, "
                 f"{d['ci_high_points']:+.2f}]")
    return text


def _noise(d: dict) -> str:
    if d.get("within_noise") is None:
        return ""
    return ": within noise" if d["within_noise"] else ": beyond noise"


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _ms(v: float) -> str:
    return f"{v:.3f} ms" if v < 1 else f"{v:.1f} ms"


# ---------------------------------------------------------------------------- the main job


def _fidelity_figures(fid: dict | None) -> dict | None:
    if not fid:
        return None
    out = {k: fid.get(k) for k in ("heatmap_correlation", "mean_keypoint_shift_px",
                                   "mean_keypoint_shift_ci_px", "max_keypoint_shift_px",
                                   "num_crops", "passed", "thresholds")}
    out["ulp_floor_px"] = (fid.get("ulp_sensitivity") or {}).get("mean_keypoint_shift_px")
    out["xla_floor_px"] = (fid.get("xla_sensitivity") or {}).get("mean_keypoint_shift_px")
    if fid.get("layer_divergence"):
        out["layer_divergence"] = divergence_figures(fid["layer_divergence"])
    return out


def _android_figures(card: dict | None) -> dict | None:
    if not card:
        return None
    parity = card.get("decode_parity_heatmap_px") or {}
    return {"int8": card.get("int8"), "input_size": card.get("input_size"),
            "size_mb": round(card["size_bytes"] / 1e6, 3) if card.get("size_bytes") else None,
            "decode_parity_mean_px": parity.get("mean_px"),
            "decode_parity_max_px": parity.get("max_px"),
            "decode_parity_crops": parity.get("num_crops"),
            "latency_ms": card.get("latency_ms_xnnpack_cpu"),
            "gpu_residency": card.get("gpu_residency"),
            "web_gpu_residency": card.get("web_gpu_residency"),
            "runs_on": card.get("runs_on"),
            "keypoints_vs_cpu": card.get("keypoints_vs_cpu_heatmap_px")}


def runtime_results(rows: dict | None) -> dict[str, RuntimeResult] | None:
    """The main job's runtime rows (``parity`` rows of each runtime) as records: AP points,
    delta, keypoint shift vs the CPU's."""
    if not rows:
        return None
    return {name: (RuntimeResult(True, ap=100 * r["candidate_score"],
                                 delta_points=r["score_delta_points"], passed=r.get("passed"),
                                 shift_vs_cpu=r.get("shift_vs_cpu"),
                                 residency=r.get("residency")) if r["ran"]
                   else RuntimeResult(False, reason=r["reason"]))
            for name, r in rows.items()}


def demo_results(report: dict, card: dict | None = None) -> DemoResult:
    """The headline figures of a main job report (report.json) and its Android model card.

    Args:
        report: ``fptflite.tasks.main_job.run``'s report dict.
        card: the drop-in's model_card.json dict; else the report's "android" entry, if any.

    Returns:
        The "result" of a "demo" results file: AP in points, the bootstrap differences, the
        shipped file and why, the fidelity of the QAT file, file sizes, stage timings, the
        runtimes and the Android drop-in's figures.
    """
    parity = report.get("parity", {})
    diffs = {name: {k: d.get(k) for k in ("delta_points", "ci_low_points", "ci_high_points",
                                          "confidence", "within_noise", "num_images")}
             for name, d in report.get("ap_differences", {}).items()}
    shipped = report["shipped"]
    return DemoResult(
        config=report.get("config"),
        model=report["model"],
        input_size=report.get("input_size"),
        num_val_images=next((d["num_images"] for d in diffs.values()), None),
        metric=report["metric"],
        score_points={"float": 100 * report["float_score"],
                      "float32_tflite": 100 * report["float32_score"],
                      "int8_qat": 100 * report["int8_qat_score"],
                      "int8_ptq": 100 * report["int8_ptq_score"]},
        ap_differences=diffs,
        keypoint_error_px={f: parity[f]["mean_keypoint_error_px"]
                           for f in INT8_FORMATS if f in parity},
        shipped={"format": shipped["format"], "reason": shipped.get("reason"),
                 "parity_passed": shipped.get("parity_passed"),
                 "max_drop_points": shipped.get("max_drop_points")},
        int8_qat_fidelity=_fidelity_figures(report.get("int8_qat_fidelity")),
        tflite_size_mb={f: round(v["size_bytes"] / 1e6, 3)
                        for f, v in report.get("tflite", {}).items()},
        timings_s=report.get("timings_s", {}),
        android=_android_figures(card or report.get("android")),
        runtimes=runtime_results(report.get("runtimes")),
    )


def _demo_timing_row(r: DemoResult) -> Row:
    t = r.timings_s
    h, w = r.input_size or ("?", "?")
    stages = ", ".join(f"{label} {t[k]:.0f} s" for k, label in (
        ("data_s", "data"), ("train_s", "training"), ("qat_s", "QAT"),
        ("convert_s", "conversion"), ("evaluate_s", "evaluation")) if t.get(k) is not None)
    figure = f"main job {t['total_s']:.0f} s ({stages})" if t.get("total_s") else stages
    if r.wall_s:
        figure += f"; whole command {r.wall_s // 60:.0f} min {r.wall_s % 60:.0f} s"
    return Row(f"main job: {r.model} {h}x{w} on synthetic data, train -> QAT -> int8 "
               "-> evaluation", figure)


def _shipped_row(r: DemoResult) -> Row:
    s, errors = r.shipped, r.keypoint_error_px
    qat_ptq = r.ap_differences.get("int8_qat - int8_ptq", {})
    if qat_ptq.get("within_noise") and len(errors) == 2:
        why = (f"AP within noise, so keypoint error against float decided "
               f"({errors['int8_qat']:.3f} px QAT vs {errors['int8_ptq']:.3f} px PTQ)")
    else:
        why = "better AP beyond noise"
    gate = ""
    if s.get("parity_passed") is not None:
        drop = r.score_points["float"] - r.score_points[s["format"]]
        gate = (f"; parity {'ok' if s['parity_passed'] else 'FAILED'} (drop {drop:.2f} "
                f"points, budget {s.get('max_drop_points', 0.5):.2f})")
    return Row("int8 file shipped", f"{s['format']}: {why}{gate}")


def _fidelity_rows(fid: dict | None) -> list[Row]:
    if not fid:
        return []
    ci = fid.get("mean_keypoint_shift_ci_px")
    th = fid.get("thresholds") or {}
    verdict = "PASS" if fid.get("passed") else "FAIL"
    if th:
        verdict += (f" (goal corr >= {th['min_heatmap_correlation']}, shift <= "
                    f"{th['max_mean_keypoint_shift_px']:.3f} px: the model's own float noise, "
                    "at least 0.1 px)")
    figure = (f"heatmap corr {fid['heatmap_correlation']:.5f}, mean keypoint shift "
              f"{fid['mean_keypoint_shift_px']:.3f} crop px"
              + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "") + f": {verdict}")
    crops = f", {fid['num_crops']} eval crops" if fid.get("num_crops") else ""
    rows = [Row(f"Keras QAT model vs its int8 file{crops}", figure)]
    floors = [f"{label} {fid[k]:.3f} px" for k, label in (
        ("xla_floor_px", "XLA"), ("ulp_floor_px", "one float32 ulp on every BN variance"))
        if fid.get(k) is not None]
    if floors:
        rows.append(Row("float32 rounding floor: the Keras QAT model against itself",
                        ", ".join(floors)))
    div = fid.get("layer_divergence")
    if div:
        one = (f", >= 1% of values differ from layer {div['first_1pct_layer']}"
               if div.get("first_1pct_layer") else "")
        rows.append(Row("int8 file vs Keras QAT model, layer by layer",
                        f"first {div['identical_prefix']} layer outputs identical{one}, "
                        f"at most {100 * div['max_fraction']:.1f}%"))
    return rows


def residency_text(res: dict) -> str:
    """A GPU residency check (``runtimes.gpu_residency``, ``web_runtime.web_gpu_residency``)
    in words: every op on the GPU, which ops stay off it, or why it was not checked."""
    if not res.get("checked"):
        return f"not checked: {res.get('reason')}"
    if res.get("fully_accelerated"):
        return "every op on the GPU"
    counts = (f"{res['gpu_ops']} ops on the GPU, {res['cpu_ops']} off it; "
              if res.get("cpu_ops") is not None else "")
    return f"{counts}ops stay on the CPU: {'; '.join(res.get('cpu_ops_log') or []) or '(no log)'}"


def _android_rows(a: dict | None) -> list[Row]:
    if not a:
        return []
    rows = []
    if a.get("decode_parity_mean_px") is not None:
        rows.append(Row(f"Android drop-in ({a.get('int8')} body): in-graph vs Python DARK "
                        f"decode, {a.get('decode_parity_crops')} crops",
                        f"mean {a['decode_parity_mean_px']:.2g}, max "
                        f"{a['decode_parity_max_px']:.2g} heatmap px"))
    for key, where in (("gpu_residency", "LiteRT's GPU accelerator (lavapipe)"),
                       ("web_gpu_residency", "LiteRT.js on WebGPU (headless Chromium, "
                                             "lavapipe)")):
        if a.get(key):
            rows.append(Row(f"Android drop-in on {where}", residency_text(a[key])))
    for name, x in (a.get("keypoints_vs_cpu") or {}).items():
        rows.append(Row(f"Android drop-in on {name}: keypoints vs the CPU runtime's, val crops",
                        f"mean {x['mean_px']:.3f}, p95 {x['p95_px']:.3f}, max {x['max_px']:.2f}"
                        f" heatmap px, {100 * x['share_above_1px']:.2f}% > 1 px"
                        if x["ran"] else f"not run: {x['reason']}"))
    old = (a.get("runs_on") or {}).get("tflite_2.14")
    if old:
        rows.append(Row("Android drop-in on TensorFlow Lite 2.14 (export_android "
                        "--min_runtime=2.14)", f"loads and runs; the converter's "
                        f"min_runtime_version says {old.get('converter_min_runtime_version')}"))
    lat = a.get("latency_ms") or {}
    if lat:
        cells = "; ".join(f"{k.replace('_', ' ')}: {v['dropin_ms']:.3f} vs "
                          f"{v['heatmap_int8_ms']:.3f} ms ({100 * v['decode_overhead']:+.1f}%)"
                          for k, v in lat.items())
        rows.append(Row("Android drop-in vs the same body's heatmap int8 file, XNNPACK",
                        cells))
    return rows


def render_demo(result: DemoResult | dict) -> list[Row]:
    """The main job's figures, for BENCHMARKS.md and the run's report.md (a dict is read as
    a ``DemoResult``, strictly)."""
    r = result if isinstance(result, DemoResult) else DemoResult.from_dict(result)
    ap, diffs, metric = r.score_points, r.ap_differences, r.metric
    n = f" ({r.num_val_images} val images, GT boxes)" if r.num_val_images else ""
    rows = [_demo_timing_row(r), Row(f"{metric}, float Keras model{n}", f"{ap['float']:.2f}")]
    if ap.get("float32_tflite") is not None:
        rows.append(Row(f"{metric}, float32 .tflite", f"{ap['float32_tflite']:.2f}"))
    for fmt in INT8_FORMATS:
        d = diffs.get(f"{fmt} - float")
        vs = f" ({_points(d)} vs float{_noise(d)})" if d else ""
        rows.append(Row(f"{metric}, {fmt} .tflite", f"{ap[fmt]:.2f}{vs}"))
    d = diffs.get("int8_qat - int8_ptq")
    if d:
        rows.append(Row("int8_qat - int8_ptq (paired bootstrap over the images)",
                        f"{_points(d)}{_noise(d)}"))
    rows.append(_shipped_row(r))
    rows += _fidelity_rows(r.int8_qat_fidelity)
    if r.tflite_size_mb:
        rows.append(Row("file sizes", ", ".join(f"{f} {mb:.2f} MB"
                                                for f, mb in r.tflite_size_mb.items())))
    return rows + _runtime_rows(r.runtimes, metric) + _android_rows(r.android)


def _runtime_rows(runtimes: dict[str, RuntimeResult] | None, metric: str) -> list[Row]:
    rows = []
    for name, x in (runtimes or {}).items():
        if not x.ran:
            rows.append(Row(f"shipped int8 file on {name}", f"not run: {x.reason}"))
            continue
        s = x.shift_vs_cpu
        shift = (f"; keypoints vs cpu: mean {s['mean_px']:.3f}, p95 {s['p95_px']:.3f}, max "
                 f"{s['max_px']:.2f} heatmap px, {100 * s['share_above_1px']:.2f}% > 1 px"
                 if s else "")
        residency = f"; {residency_text(x.residency)}" if x.residency else ""
        rows.append(Row(f"shipped int8 file on {name}",
                        f"{metric} {x.ap:.2f} ({x.delta_points:+.2f} vs float){shift}"
                        f"{residency}"))
    return rows


# ---------------------------------------------------------------------------- benchmarks


def render_latency(r: dict) -> list[Row]:
    """conversion/benchmark.py's JSON: {"input_size", "rows": [{"model", "format", "threads",
    "median_ms", ...}], "ratios"}."""
    h, w = r["input_size"]
    med = {(x["model"], x["format"], int(x["threads"])): float(x["median_ms"]) for x in r["rows"]}
    models = list(dict.fromkeys(m for m, _, _ in med))
    threads = sorted({t for _, _, t in med})
    rows = []
    for t in threads:
        for m in models:
            cells = [f"{f} {_ms(v)}" for (mm, f, tt), v in med.items() if mm == m and tt == t]
            if (m, "int8_ptq", t) in med and (m, "float32", t) in med:
                ratio = med[m, "int8_ptq", t] / med[m, "float32", t]
                cells.append(f"int8 / float32 {ratio:.2f}")
            if cells:
                rows.append(Row(f"{m} {h}x{w}, LiteRT + XNNPACK, {_threads(t)}",
                                ", ".join(cells)))
        for fp in (m for m in models if m.startswith("fasterpose_")):
            sb = fp.replace("fasterpose_", "simplebaseline_")
            cells = [f"{f} {med[fp, f, t]:.1f} / {med[sb, f, t]:.1f} ms = "
                     f"{med[fp, f, t] / med[sb, f, t]:.2f}"
                     for f in ("float32", "float16", "int8_ptq")
                     if (fp, f, t) in med and (sb, f, t) in med]
            if cells:
                rows.append(Row(f"{fp} / {sb} latency, {_threads(t)}", "; ".join(cells)))
    return rows


def render_input_pipeline(r: list[dict] | dict) -> list[Row]:
    """benchmarks/input_pipeline.py's JSON: [{"decode", "median_images_per_s", "min", "max"}]."""
    rows = r["rows"] if isinstance(r, dict) else r
    out = []
    for x in rows:
        spread = (f" (min {x['min']:.0f}, max {x['max']:.0f})"
                  if x.get("min") is not None else "")
        out.append(Row(f"training input pipeline, 640x480 JPEGs -> crops, full augmentation, "
                       f"decode: {x['decode']}",
                       f"{x['median_images_per_s']:.0f} images/s median{spread}"))
    return out


def render_data_order(r: list[dict] | dict) -> list[Row]:
    """benchmarks/data_order.py's JSON: per-epoch rows of the replica check, or the
    per-worker rows of ``--simulate``."""
    rows = r["rows"] if isinstance(r, dict) else r
    if rows and "workers" in rows[0]:
        short = sum(x["short_pairs"] for x in rows)
        pairs = sum(x["pairs"] for x in rows)
        old = max(rows, key=lambda x: x["old_dealing_short_pairs"])
        return [Row(f"TFRecord dealing, {rows[0]['persons_used'] + rows[0]['persons_dropped']:,}"
                    f" persons, {min(x['workers'] for x in rows)}-"
                    f"{max(x['workers'] for x in rows)} workers",
                    f"{short} of {pairs} (epoch, worker) pairs short of a step, "
                    f"{sum(x['records_read_twice'] for x in rows)} records read twice "
                    f"(previous file-level dealing: {old['old_dealing_short_pairs']} of "
                    f"{old['pairs']} short at {old['workers']} workers)")]
    out = []
    for source in dict.fromkeys(x["source"] for x in rows):
        for n in sorted({x["replicas"] for x in rows if x["source"] == source}):
            ep = [x for x in rows if x["source"] == source and x["replicas"] == n]
            repeats = sum(x["used"] - x["distinct"] for x in ep)
            exact = all(x["dropped"] == x["expected_dropped"] for x in ep)
            out.append(Row(f"persons per epoch, {source}, {n} replica{'s' if n > 1 else ''}, "
                           f"{len(ep)} epochs",
                           f"{ep[0]['persons']} persons: {min(x['distinct'] for x in ep)} used "
                           f"once, {max(x['dropped'] for x in ep)} dropped "
                           f"({'=' if exact else '!='} persons mod global batch), {repeats} "
                           f"repeats, {sum(x['leftover_batches'] for x in ep)} leftover "
                           "batches"))
    return out


def paired_text(d: dict, digits: int = 3, sign: str = "+", per_seed: bool = False) -> str:
    """A paired difference over seeds (``sign`` "+") or a ratio ("") with its 95% t interval,
    from ``fptflite.tasks.ablation.paired``'s {"seeds", "per_seed", "mean", "interval"};
    with ``per_seed``, each seed's value too."""
    if d.get("mean") is None:
        return "no paired seeds"
    fmt = f"{sign}.{digits}f"
    if d.get("interval") is None:
        return f"{d['mean']:{fmt}} on seed {d['seeds'][0]} alone (no interval)"
    low, high = d["interval"]
    text = (f"{d['mean']:{fmt}}, 95% paired t interval [{low:{fmt}}, {high:{fmt}}] over "
            f"{len(d['seeds'])} seeds")
    if per_seed:
        text += f" {d['seeds']} (per seed: {', '.join(f'{v:{fmt}}' for v in d['per_seed'])})"
    return text


def stat_text(stats: dict | None, digits: int = 3, num_seeds: int = 2) -> str:
    """``mean_sd`` of per-seed stats; the mean alone for one seed (whose sd is not a
    measurement); "-" where a figure was not measured."""
    if stats is None:
        return "-"
    return mean_sd(stats, digits) if num_seeds > 1 else f"{stats['mean']:.{digits}f}"


def render_ablation(result: AblationResult | dict) -> list[Row]:
    """ablation.json of ``fptflite.tasks.ablation.run`` (a dict is read as an
    ``AblationResult``, strictly): per arm the mean ± sd over seeds, the learning-rate sweeps,
    the verdict on each of the paper's two claims and the single-change comparisons."""
    r = result if isinstance(result, AblationResult) else AblationResult.from_dict(result)
    cfg = r.recipe["config"]
    size = f"{cfg['input_size'][0]}x{cfg['input_size'][1]}"
    out = []
    side = (r.int8_ms_side_by_side or {}).get("ms", {})
    for v, s in r.summary.items():
        variant = s.get("variant", v)
        if variant in side:  # timed side by side in one process: comparable across variants
            ms, how = " / ".join(f"{x:.2f}" for x in side[variant].values()), ", side by side"
        else:
            ms, how = " / ".join(f"{x['mean']:.2f}" for x in s["int8_ms"].values()), ""
        curve = (f"AP at {' / '.join(s['ap_at'])} of training "
                 + " / ".join(f"{x['mean']:.3f}" for x in s["ap_at"].values()) + ", "
                 if s["ap_at"] else "")
        n = len(s["seeds"])
        hidden = (f"AR {stat_text(s.get('final_ar'), 3, n)}, keypoint error "
                  f"{stat_text(s.get('kp_error'), 2, n)} crop px, "
                  f"PCK {stat_text(s.get('pck'), 3, n)}, " if s.get("kp_error") else "")
        setting = (f"recipe {r.recipe['name']}, {size}, "
                   f"{s.get('epochs', cfg['epochs'])} epochs")  # an arm may set its own
        seeds = f"{n} seed{'s' if n != 1 else ''}"
        out.append(Row(f"ablation {v}, {setting}, {seeds}",
                       f"final AP {stat_text(s['final_ap'], 3, n)}, {hidden}{curve}int8 PTQ AP "
                       f"{stat_text(s['int8_ap'], 3, n)}, int8 "
                       f"{ms} ms ({' / '.join(s['int8_ms'])} threads{how}); "
                       f"{s['macs'] / 1e6:.1f} M MACs, {s['params'] / 1e6:.3f} M params"))
    for v, sw in r.learning_rate_sweeps.items():
        if len(sw["rows"]) > 1:
            out.append(Row(f"learning-rate sweep, {v}, seed {sw['seed']}", "; ".join(
                f"{x['learning_rate']:g}: AP {x['final_ap']:.3f}"
                + (f", kp error {x['kp_error']:.2f} px" if x.get("kp_error") else "")
                for x in sw["rows"]) + f"; chosen {sw['chosen']}"))
    # A claim whose variants this study did not both train has no row.
    a, b = ((c if c and c["final_ap_difference"].get("mean") is not None else None)
            for c in (r.verdicts.get("a"), r.verdicts.get("b")))
    if a:
        kp = a.get("kp_error_difference")
        out.append(Row(f"claim (a), {a['variants'][0]} - {a['variants'][1]}",
                       f"ends more accurate: {a['ends_more_accurate']} (final AP "
                       f"{paired_text(a['final_ap_difference'])}); trains faster: "
                       f"{a['trains_faster']} (AP at {a['early_fraction']:.0%} "
                       f"{paired_text(a['early_ap_difference'])})"
                       + (f"; keypoint error in crop px {paired_text(kp, 2)}"
                          if kp and kp.get("mean") is not None else "")))
    if b:
        side = b.get("int8_ms_fraction_side_by_side")
        if side:  # timed side by side in one process: the figure to quote
            latency = "; ".join(f"int8 latency fraction (side by side), {_threads(int(n))} "
                                f"{x:.3f}" for n, x in side.items())
        else:
            latency = "; ".join(f"int8 latency fraction, {_threads(int(k.split('_')[-2]))} "
                                f"{d['mean']:.2f}" for k, d in b.items()
                                if k.endswith("_threads") and d.get("mean") is not None)
        macs = b.get("macs_fraction", {})
        out.append(Row(f"claim (b), {b['variants'][0]} vs {b['variants'][1]}",
                       f"AP matches: {b['ap_matches']} (final AP difference "
                       f"{paired_text(b['final_ap_difference'])})"
                       + (f"; MACs fraction {macs['mean']:.3f}" if macs.get("mean") else "")
                       + (f"; {latency}" if latency else "")))
    for c in r.comparisons:
        out.append(Row(f"{c['arm']} - {c['baseline']}",
                       f"final AP {paired_text(c['final_ap_difference'])}; keypoint error in "
                       f"crop px {paired_text(c['kp_error_difference'], 2)}"))
    return out


def render_android_latency(r: dict | list) -> list[Row]:
    """{"model" (optional), "rows": [compare_latency dicts {"threads", "ms", "reference_ms",
    "overhead"}]} of benchmarks/android_latency.py."""
    rows = r["rows"] if isinstance(r, dict) else r
    label = f" ({r['model']})" if isinstance(r, dict) and r.get("model") else ""
    return [Row(f"Android drop-in vs its heatmap int8 file{label}, XNNPACK, "
                f"{_threads(int(x['threads']))}",
                f"{x['ms']:.3f} vs {x['reference_ms']:.3f} ms: decode adds "
                f"{100 * x['overhead']:+.1f}%") for x in rows]


def render_predict_video(r: dict) -> list[Row]:
    """{"num_frames", "runs": {name: {"fps", "jitter_px", "error_px"}}, "lag_frames"} of
    benchmarks/predict_video.py."""
    runs = r["runs"]
    out = [Row(f"fptflite.predict on {r.get('num_frames', '?')} rendered 640x480 frames, {name}",
               f"{x['fps']:.1f} frames/s end to end, frame-to-frame motion "
               f"{x['jitter_px']:.2f} px, error vs truth {x['error_px']:.2f} px")
           for name, x in runs.items()]
    raw, smooth = runs.get("static, noisy boxes"), runs.get("static, noisy boxes, --smooth")
    if raw and smooth:
        lag = (f"; lag added on the moving figure {r['lag_frames']:.2f} frames"
               if r.get("lag_frames") is not None else "")
        out.append(Row("One-Euro smoothing (--smooth), static figure with noisy boxes",
                       f"jitter {raw['jitter_px']:.2f} -> {smooth['jitter_px']:.2f} px "
                       f"({raw['jitter_px'] / smooth['jitter_px']:.1f}x lower){lag}"))
    return out


def render_evaluation_scale(r: dict) -> list[Row]:
    """{"mode", "flip_test", "rows": [{"boxes", "wall_s", "peak_rss_mb"}]} of
    benchmarks/evaluation.py."""
    mode = r.get("mode", "float + TFLite (parity)")
    flip = f", flip test {r['flip_test']}" if r.get("flip_test") is not None else ""
    return [Row(f"streaming evaluation, {x['boxes']:,} detector-style boxes, {mode}{flip}",
                f"{x['boxes'] / x['wall_s']:.1f} boxes/s for the whole command "
                f"({x['wall_s']:.0f} s), peak RSS {x['peak_rss_mb']:.0f} MB")
            for x in r["rows"]]


def render_qat_fidelity(r: dict | list) -> list[Row]:
    """{"model", "seed", "rows": ``fptflite.tasks.qat_fidelity.run``'s rows} of
    benchmarks/qat_fidelity.py."""
    rows = r["rows"] if isinstance(r, dict) else r
    model = r.get("model", "random-weight model") if isinstance(r, dict) else "random weights"
    seed = f", seed {r['seed']}" if isinstance(r, dict) and r.get("seed") is not None else ""
    out = []
    for x in rows:
        fid = x["fidelity"]
        lo, hi = fid["mean_keypoint_shift_ci_px"]
        floors = [f"{label} {s['mean_keypoint_shift_px']:.3f} px"
                  for label, s in (("XLA", fid.get("xla_sensitivity")),
                                   ("1-ulp", fid.get("ulp_sensitivity"))) if s]
        out.append(Row(f"Keras QAT model vs its int8 file, {model} (random weights{seed}, BN "
                       f"{x['mode']}, {x['steps']} QAT steps)",
                       f"corr {fid['heatmap_correlation']:.5f}, shift "
                       f"{fid['mean_keypoint_shift_px']:.3f} px (95% CI {lo:.3f}-{hi:.3f}): "
                       f"{'PASS' if fid['passed'] else 'FAIL'}"
                       + (f"; floors: {', '.join(floors)}" if floors else "")))
    return out


def render_gpu_residency(r: dict) -> list[Row]:
    """benchmarks/gpu_residency.py's JSON: {"rows": [{"model", "input_size", "format",
    "residency": runtimes.gpu_residency(...)}]}."""
    out = []
    for x in r["rows"]:
        res = x["residency"]
        h, w = x["input_size"]
        if not res["checked"]:
            cell = f"does not compile: {res['reason'][-300:]}"
        elif res["fully_accelerated"]:
            cell = "every op on the GPU"
        else:
            cell = f"some ops stay on the CPU: {'; '.join(res['cpu_ops_log']) or '(no log)'}"
        out.append(Row(f"{x['model']} {h}x{w} {x['format']}", cell))
    return out


def render_figures(r: list[dict]) -> list[Row]:
    """Figures without a script of their own: [{"what", "figure", "command" (optional)}]."""
    return [Row(x["what"], x["figure"], x.get("command")) for x in r]


RENDERERS: dict[str, tuple[str, Callable[..., list[Row]]]] = {
    "demo": ("make demo: the main job on synthetic data", render_demo),
    "latency": ("Latency of zoo models as .tflite (LiteRT + XNNPACK, CPU)", render_latency),
    "android_latency": ("Android drop-in latency", render_android_latency),
    "predict_video": ("Image and video prediction", render_predict_video),
    "evaluation_scale": ("Evaluation at detector-file scale", render_evaluation_scale),
    "qat_fidelity": ("QAT fidelity from random weights", render_qat_fidelity),
    "ablation": ("The paper's claims: ablation", render_ablation),
    "input_pipeline": ("Training input pipeline", render_input_pipeline),
    "data_order": ("Data order across replicas and workers", render_data_order),
    "gpu_residency": ("Zoo on LiteRT's GPU accelerator (lavapipe): which files run whole on "
                      "the GPU", render_gpu_residency),
    "figures": ("Other figures", render_figures),
}
