"""The paper's two claims as a multi-seed ablation, trained by the one ``Trainer``.

Claim (a): RCE on sigmoid heatmaps trains faster and ends more accurate than MSE on a linear
output. Claim (b): the FasterPose head (low-resolution features, one conv, depth_to_space)
matches SimpleBaseline's three deconvolutions at a fraction of their MACs and int8 latency.

Every (variant, seed) is one ordinary training run (``trainer.Trainer``) in its own model dir
``OUT/runs/<variant>_seed<k>/``, of a config built from a base recipe (default the ``demo``
config) by replacing only the head, the loss, the seed and the evaluation period:

- ``fasterpose_rce``: the recipe's FasterPose head (demo: stride-16 features, 3x3 neck, r = 4),
  sigmoid output, RCE.
- ``fasterpose_mse``: the same head with a linear output, MSE.
- ``simplebaseline_mse``: SimpleBaseline's deconvolutions on the same backbone (stride 32, no
  neck), linear output, MSE.
- ``simplebaseline_rce``: the deconvolution head with a sigmoid output, RCE.

The seed changes the initial weights and the data order. The output conv's bias starts at the
logit of the mean target for RCE and at 0 for MSE (``fptflite.models.zoo``). Each run is
evaluated every ``eval_every_epochs`` (its ``eval_history.json`` is the AP curve) and at its
end; its final float model is then converted to int8 PTQ, whose AP and latency at 1 and 2
threads (LiteRT, XNNPACK) are measured, and the run's record ``ablation_run.json`` is written
last. A record marks a finished run, never retrained; a killed study resumes the unfinished
run from its checkpoint. Seeds are run in rounds (every variant's seed k before seed k + 1)
and a round starts only when its estimated cost (measured runs of the variant, else a probe
of a few training steps and one evaluation) fits the rest of the budget. At the end of every
invocation one int8 file per variant is timed again, side by side in one process
(``side_by_side_latency``): the latency fractions of claim (b) come from that timing, since
the per-run timings were taken hours apart. Paired differences over seeds get a Student-t
interval (``fptflite.evaluation.student_t``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence

import numpy as np
import tf_keras as keras

from fptflite.data import datasets
from fptflite.evaluation import student_t
from fptflite.models import MODELS, count_macs, get_entry
from fptflite.tasks import configs, trainer
from fptflite.tasks.configs import TrainConfig
from fptflite.tflite import benchmark, convert, runner
from fptflite.utils.formatting import mean_sd
from fptflite.utils.io import atomic_path, write_bytes_atomic, write_json_atomic

RESULT_FILE = "ablation.json"
RUN_RECORD = "ablation_run.json"
INT8_FILE = "int8_ptq.tflite"  # a run's int8 PTQ file, in its model dir
LATENCY_THREADS = (1, 2)
CURVE_FRACTIONS = (0.25, 0.5, 0.75)  # the table's AP "at 25/50/75% of training"
EVALS_PER_RUN = 8  # default evaluation period: epochs // EVALS_PER_RUN
INT8_FIXED_S = 20.0  # estimated conversion and latency seconds of a run (plus one evaluation)
# Claim (b) calls FasterPose's AP a match when its paired difference to SimpleBaseline's has
# an interval above -1 AP point.
AP_MATCH_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the ablation: a head and its loss (``TrainConfig.loss``)."""

    name: str
    head: str
    loss: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fasterpose_rce", "fasterpose", "rce"),
    Variant("fasterpose_mse", "fasterpose", "mse"),
    Variant("simplebaseline_mse", "simplebaseline", "mse"),
    Variant("simplebaseline_rce", "simplebaseline", "rce"),
)}
# Claim -> (variant a, variant b): the paired differences are a - b.
CLAIMS = {"a": ("fasterpose_rce", "fasterpose_mse"),
          "b": ("fasterpose_rce", "simplebaseline_mse")}


def get_variant(name: str) -> Variant:
    """The variant called ``name``; a ValueError listing the known ones otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"unknown ablation variant {name!r}; choose from {list(VARIANTS)}")
    return VARIANTS[name]


@dataclasses.dataclass(frozen=True)
class AblationOptions:
    """What to run.

    Attributes:
        out_dir: results, ``runs/`` and (by default) the generated data go here.
        recipe: the base config's name (``fptflite.tasks.configs.CONFIGS``).
        variants: names of ``VARIANTS`` to train.
        seeds: training seeds; each variant trains once per seed while the budget lasts.
        epochs: replaces the recipe's epochs (None: the recipe's).
        budget_minutes: the whole study should fit this (None: no limit).
        overrides: further ``key=value`` overrides of the recipe (``configs.apply_overrides``).
        data_dir: the recipe's data dir (None: ``out_dir/data``).
        eval_every_epochs: the convergence curve's period (None: epochs // EVALS_PER_RUN).
        num_calibration: training crops the int8 PTQ calibrates on.
        latency_runs: timed invocations per thread count.
    """

    out_dir: str
    recipe: str = "demo"
    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    budget_minutes: float | None = None
    overrides: tuple[str, ...] = ()
    data_dir: str | None = None
    eval_every_epochs: int | None = None
    num_calibration: int = 64
    latency_runs: int = 30


# ----------------------------------------------------------------------------- configs


def recipe_config(opts: AblationOptions) -> TrainConfig:
    """The base config every run derives from: the recipe with the options' overrides."""
    cfg = configs.get_config(opts.recipe)
    items = [f"data.data_dir={opts.data_dir or os.path.join(opts.out_dir, 'data')}"]
    if opts.epochs is not None:
        items.append(f"epochs={opts.epochs}")
    cfg = configs.apply_overrides(cfg, [*items, *opts.overrides])
    every = opts.eval_every_epochs or max(cfg.epochs // EVALS_PER_RUN, 1)
    return dataclasses.replace(cfg, eval_every_epochs=every).validate()


def zoo_model(head: str, backbone: str) -> str:
    """The zoo name of ``head`` on ``backbone`` (a ValueError if the zoo has none)."""
    names = [n for n, e in MODELS.items() if e.head == head and e.backbone == backbone]
    if not names:
        raise ValueError(f"the zoo has no {head} model on backbone {backbone!r}; the ablation "
                         "needs both heads on the recipe's backbone")
    return names[0]


def variant_config(recipe: TrainConfig, variant: str, seed: int) -> TrainConfig:
    """The config of one run: the recipe with the variant's model and loss and ``seed``.

    FasterPose keeps the recipe's features (stride, neck) when the recipe is a FasterPose
    config (else stride 32, no neck); SimpleBaseline takes stride-32 features, no neck.
    """
    v = get_variant(variant)
    stride, neck = 32, 0
    if v.head == "fasterpose" and recipe.head == "fasterpose":
        stride, neck = recipe.feature_stride, recipe.neck_channels
    model = zoo_model(v.head, get_entry(recipe.model).backbone)
    return dataclasses.replace(recipe, model=model, loss=v.loss, seed=int(seed),
                               feature_stride=stride, neck_channels=neck).validate()


def portable(cfg: TrainConfig) -> dict:
    """``cfg.to_dict()`` as JSON reads it back (lists for tuples), without the data dir
    (where the data is, not what the recipe is)."""
    d = json.loads(json.dumps(cfg.to_dict()))
    d["data"]["data_dir"] = ""
    return d


def run_dir(out_dir: str, variant: str, seed: int) -> str:
    return os.path.join(out_dir, "runs", f"{variant}_seed{seed}")


def eval_epochs(cfg: TrainConfig) -> list[int]:
    """The epochs after which the Trainer evaluates ``cfg`` (see ``Trainer._eval_due``)."""
    every = cfg.eval_every_epochs
    return [e for e in range(1, cfg.epochs + 1) if e == cfg.epochs or (every and e % every == 0)]


# ------------------------------------------------------------------------------ budget


@dataclasses.dataclass(frozen=True)
class Cost:
    """Estimated seconds of a variant's run.

    Attributes:
        setup_s: building the Trainer and tracing its loop.
        epoch_s: the training steps of one epoch.
        eval_s: one evaluation (and its ``best`` export).
        int8_s: conversion, int8 evaluation and latency.
    """

    setup_s: float
    epoch_s: float
    eval_s: float
    int8_s: float

    def run_s(self, cfg: TrainConfig) -> float:
        return (self.setup_s + cfg.epochs * self.epoch_s + len(eval_epochs(cfg)) * self.eval_s
                + self.int8_s)

    def one_epoch_s(self) -> float:
        return self.setup_s + self.epoch_s + self.eval_s


def probe_cost(cfg: TrainConfig, scratch_dir: str, num_steps: int = 5) -> Cost:
    """Measures a variant's costs on a throwaway Trainer in ``scratch_dir`` (removed after):
    its construction, ``num_steps`` + 1 training steps and one evaluation."""
    shutil.rmtree(scratch_dir, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        t = trainer.Trainer(cfg, scratch_dir)
        build_s = time.perf_counter() - t0
        first_s, step_s = t.time_steps(num_steps)
        t0 = time.perf_counter()
        t.evaluate_and_export()
        eval_s = time.perf_counter() - t0
        return Cost(build_s + max(first_s - step_s, 0.0), step_s * t.data.steps, eval_s,
                    eval_s + INT8_FIXED_S)
    finally:
        keras.backend.clear_session()
        shutil.rmtree(scratch_dir, ignore_errors=True)


def check_budget(budget_s: float, one_epoch_s: dict[str, float]) -> None:
    """Raises a ValueError when ``budget_s`` does not cover one epoch of any variant."""
    if one_epoch_s and budget_s < min(one_epoch_s.values()):
        cheapest = min(one_epoch_s, key=one_epoch_s.get)
        raise ValueError(
            f"a budget of {budget_s / 60:.2f} min is too small for one epoch of any variant "
            f"(the cheapest, {cheapest}, needs about {one_epoch_s[cheapest] / 60:.2f} min for "
            "its setup, one epoch and one evaluation)")


def estimate_run_s(cfg: TrainConfig, records: list[dict], cost: Cost | None,
                   model_dir: str) -> float:
    """Seconds the rest of a run should take: its variant's mean measured run (records not
    resumed), else ``cost``; scaled by the share of epochs a killed run has left."""
    measured = [r["run_s"] for r in records if not r["resumed"]]
    full = float(np.mean(measured)) if measured else cost.run_s(cfg)
    history = trainer.read_eval_history(model_dir)
    done = history[-1]["epoch"] if history else 0
    return full * (1.0 - done / cfg.epochs)


# -------------------------------------------------------------------------------- runs


def int8_figures(model: keras.Model, cfg: TrainConfig, t: trainer.Trainer, path: str,
                 opts: AblationOptions) -> dict:
    """Converts ``model`` to int8 PTQ at ``path``; its AP (the run's evaluation settings) and
    median latency in ms per thread count."""
    crops = datasets.split_calibration_crops(cfg.data, cfg.input_size, "train",
                                             opts.num_calibration, cfg.seed)
    write_bytes_atomic(path, convert.convert(model, "int8_ptq", crops))
    metric = trainer.metric_of(cfg)
    stats, _ = metric.evaluate(
        runner.TFLitePredictor(path, cfg.input_size, num_threads=max(LATENCY_THREADS)),
        t.data.val_instances, t.data.paths["val_ann"], cfg.input_size, None,
        cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode, False)
    ms = {str(n): float(np.median(benchmark.time_tflite(path, n, runs=opts.latency_runs)))
          for n in LATENCY_THREADS}
    return {"int8_ap": metric.value(stats), "int8_ms": ms}


def curve_of(model_dir: str, cfg: TrainConfig) -> list[dict]:
    """The run's AP curve from its ``eval_history.json``: [{"epoch", "step", "ap"}]."""
    metric = trainer.metric_of(cfg)
    return [{"epoch": h["epoch"], "step": h["step"], "ap": metric.value(h)}
            for h in trainer.read_eval_history(model_dir)]


def train_run(cfg: TrainConfig, variant: str, model_dir: str, opts: AblationOptions) -> dict:
    """Trains (or resumes) one run, measures its int8 file; writes and returns its record."""
    t0 = time.perf_counter()
    resumed = os.path.isdir(os.path.join(model_dir, "checkpoints"))
    t = trainer.Trainer(cfg, model_dir)
    result = t.run()
    train_s = time.perf_counter() - t0
    with open(os.path.join(model_dir, "final_metrics.json")) as f:
        final = json.load(f)
    metric = trainer.metric_of(cfg)
    t1 = time.perf_counter()
    int8 = int8_figures(result.model, cfg, t, os.path.join(model_dir, INT8_FILE), opts)
    v = get_variant(variant)
    record = {
        "variant": variant, "seed": cfg.seed, "model": cfg.model, "head": v.head,
        "loss": v.loss, "output_activation": cfg.output_activation,
        "feature_stride": cfg.feature_stride, "neck_channels": cfg.neck_channels,
        "epochs": cfg.epochs, "model_dir": os.path.relpath(model_dir, opts.out_dir),
        "curve": curve_of(model_dir, cfg), "final_ap": metric.value(final),
        "best_ap": float(final["best_AP"]), "params": int(result.model.count_params()),
        "macs": int(count_macs(result.model)), **int8, "train_s": round(train_s, 2),
        "int8_s": round(time.perf_counter() - t1, 2),
        "run_s": round(time.perf_counter() - t0, 2), "resumed": resumed,
        "config": portable(cfg)}
    write_json_atomic(os.path.join(model_dir, RUN_RECORD), record)
    keras.backend.clear_session()
    return record


_RUN_NAME = re.compile(r"^(?P<variant>.+)_seed(?P<seed>-?\d+)$")


def load_records(out_dir: str, recipe: TrainConfig) -> list[dict]:
    """The records of every finished run under ``out_dir/runs`` (sorted by variant order and
    seed); a ValueError when one was trained from another recipe."""
    folder = os.path.join(out_dir, "runs")
    records = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match, path = _RUN_NAME.match(name), os.path.join(folder, name, RUN_RECORD)
        if not match or match["variant"] not in VARIANTS or not os.path.isfile(path):
            continue
        with open(path) as f:
            record = json.load(f)
        expected = portable(variant_config(recipe, match["variant"], int(match["seed"])))
        if record["config"] != expected:
            raise ValueError(f"{path} was trained from another recipe than this study's; use a "
                             "new output dir")
        records.append(record)
    order = list(VARIANTS)
    return sorted(records, key=lambda r: (order.index(r["variant"]), r["seed"]))


def check_results_dir(out_dir: str, recipe_entry: dict) -> None:
    """Refuses an output dir whose ``ablation.json`` comes from another recipe."""
    path = os.path.join(out_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        old = json.load(f).get("recipe")
    if old != recipe_entry:
        old_cfg, new_cfg = (old or {}).get("config", {}), recipe_entry["config"]
        diff = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
        raise ValueError(
            f"{path} holds results of another recipe ({(old or {}).get('name')!r}, differing "
            f"in {diff or 'name'}) than this one ({recipe_entry['name']!r}); its finished runs "
            "are never overwritten: use a new output dir")


# ------------------------------------------------------------------------- the study


def run(opts: AblationOptions, log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) the study; writes ablation.json, ablation.md and convergence.png.

    Returns:
        The result written to ablation.json (see ``build_result``).

    Raises:
        ValueError: an unknown variant, no seeds, an output dir holding another recipe's
            results, or a budget too small for one epoch of any variant.
    """
    start = time.perf_counter()
    for name in opts.variants:
        get_variant(name)
    if not opts.variants or not opts.seeds:
        raise ValueError("the ablation needs at least one variant and one seed")
    opts = dataclasses.replace(opts, variants=tuple(dict.fromkeys(opts.variants)),
                               seeds=tuple(dict.fromkeys(int(s) for s in opts.seeds)))
    recipe = recipe_config(opts)
    entry = {"name": opts.recipe, "config": portable(recipe)}
    check_results_dir(opts.out_dir, entry)
    records = load_records(opts.out_dir, recipe)
    state = {"recipe": entry, "options": opts, "costs": {}, "stopped": None, "start": start}
    write_outputs(opts.out_dir, build_result(records, state))
    budget_s = None if opts.budget_minutes is None else 60.0 * opts.budget_minutes
    done = {(r["variant"], r["seed"]) for r in records}
    todo = [(s, v) for s in opts.seeds for v in opts.variants if (v, s) not in done]
    if budget_s is not None and todo:
        state["costs"] = _probe_missing(opts, recipe, records, {v for _, v in todo}, log)
        check_budget(budget_s, _one_epoch_s(records, state["costs"]))
    for seed in dict.fromkeys(s for s, _ in todo):
        round_ = [v for s, v in todo if s == seed]
        if budget_s is not None:
            need = sum(estimate_run_s(variant_config(recipe, v, seed),
                                      [r for r in records if r["variant"] == v],
                                      state["costs"].get(v), run_dir(opts.out_dir, v, seed))
                       for v in round_)
            left = budget_s - (time.perf_counter() - start)
            if need > left:
                state["stopped"] = (f"seed {seed} needs about {need / 60:.1f} min for "
                                    f"{round_}, {left / 60:.1f} min of the budget were left")
                log(f"ablation: stopping: {state['stopped']}")
                break
        for v in round_:
            log(f"ablation: training {v} seed {seed} -> {run_dir(opts.out_dir, v, seed)}")
            train_run(variant_config(recipe, v, seed), v, run_dir(opts.out_dir, v, seed), opts)
            records = load_records(opts.out_dir, recipe)
            write_outputs(opts.out_dir, build_result(records, state))
    if records:
        log("ablation: timing one int8 file per variant side by side")
        state["side_by_side"] = side_by_side_latency(opts.out_dir, records, opts.latency_runs)
    result = build_result(records, state)
    write_outputs(opts.out_dir, result)
    log(f"ablation: seeds per variant {result['seeds_per_variant']}")
    return result


def _probe_missing(opts: AblationOptions, recipe: TrainConfig, records: list[dict],
                   variants: set[str], log: Callable[[str], None]) -> dict[str, Cost]:
    """Probes the variants without a measured (not resumed) run."""
    costs, scratch = {}, os.path.join(opts.out_dir, "probe")
    trainer.ensure_data(recipe)  # generate the data before timing anything
    try:
        for v in opts.variants:
            if v in variants and not any(r["variant"] == v and not r["resumed"]
                                         for r in records):
                costs[v] = probe_cost(variant_config(recipe, v, opts.seeds[0]),
                                      os.path.join(scratch, v))
                log(f"ablation: {v} cost estimate {dataclasses.asdict(costs[v])}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return costs


def _one_epoch_s(records: list[dict], costs: dict[str, Cost]) -> dict[str, float]:
    """Seconds of a setup, an epoch and an evaluation per variant (probed or measured)."""
    out = {v: c.one_epoch_s() for v, c in costs.items()}
    for r in records:
        if r["variant"] not in out and not r["resumed"]:
            out[r["variant"]] = r["run_s"] / r["epochs"]
    return out


def side_by_side_latency(out_dir: str, records: list[dict], runs: int,
                         rounds: int = 3) -> dict:
    """Median int8 ms per variant and thread count, timed side by side in this process.

    Latency does not depend on the weights, so one int8 file per variant (its lowest seed's)
    is timed; the files take turns in ``rounds`` interleaved rounds of ``runs // rounds``
    invocations so that machine noise hits every variant alike (the per-run figures of
    ``int8_figures`` were taken minutes or hours apart).

    Returns:
        {"rounds", "runs", "files": {variant: path relative to out_dir},
         "ms": {variant: {"1": ms, "2": ms}}}.
    """
    files = {}
    for r in records:
        files.setdefault(r["variant"], os.path.join(r["model_dir"], INT8_FILE))
    per_round = max(runs // rounds, 1)
    samples = {v: {str(n): [] for n in LATENCY_THREADS} for v in files}
    for _ in range(rounds):
        for n in LATENCY_THREADS:
            for v, rel in files.items():
                samples[v][str(n)].extend(benchmark.time_tflite(
                    os.path.join(out_dir, rel), n, runs=per_round))
    return {"rounds": rounds, "runs": per_round * rounds, "files": files,
            "ms": {v: {n: float(np.median(x)) for n, x in t.items()} for v, t in samples.items()}}


# ------------------------------------------------------------------- summary, verdicts


def ap_at(curve: list[dict], epochs: int, fraction: float) -> float:
    """AP at ``fraction`` of the training, interpolated linearly between evaluations (the
    first evaluation's AP before it)."""
    return float(np.interp(fraction * epochs, [p["epoch"] for p in curve],
                           [p["ap"] for p in curve]))


def _stats(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (0 for one value) of per-seed values."""
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def summarize(records: list[dict]) -> dict[str, dict]:
    """Per variant: seeds, final AP, AP at ``CURVE_FRACTIONS``, params, MACs, int8 figures."""
    out = {}
    for v in VARIANTS:
        rows = [r for r in records if r["variant"] == v]
        if not rows:
            continue
        out[v] = {
            "seeds": [r["seed"] for r in rows], "final_ap": _stats([r["final_ap"] for r in rows]),
            "ap_at": {f"{int(f * 100)}%": _stats([ap_at(r["curve"], r["epochs"], f)
                                                  for r in rows]) for f in CURVE_FRACTIONS},
            "params": rows[0]["params"], "macs": rows[0]["macs"],
            "int8_ap": _stats([r["int8_ap"] for r in rows]),
            "int8_ms": {n: _stats([r["int8_ms"][n] for r in rows]) for n in rows[0]["int8_ms"]},
            "train_s": _stats([r["train_s"] for r in rows])}
    return out


def paired(records: list[dict], a: str, b: str, value: Callable[[dict], float],
           ratio: bool = False) -> dict:
    """Per-seed paired ``value(a) - value(b)`` (or ``a / b``) over the seeds both variants
    have, with the mean and its paired t interval (``student_t.mean_interval``; None for one
    seed, where a mean has no interval)."""
    by_seed = {(r["variant"], r["seed"]): r for r in records}
    seeds = sorted(s for (v, s) in by_seed if v == a and (b, s) in by_seed)
    if not seeds:
        return {"seeds": [], "per_seed": [], "mean": None, "interval": None}
    x = [value(by_seed[(a, s)]) for s in seeds]
    y = [value(by_seed[(b, s)]) for s in seeds]
    d = np.divide(x, y) if ratio else np.subtract(x, y)
    interval = list(student_t.mean_interval(d)) if len(d) > 1 else None
    return {"seeds": seeds, "per_seed": [float(v) for v in d], "mean": float(d.mean()),
            "interval": interval}


def _sign_verdict(d: dict, tolerance: float = 0.0) -> str:
    """"supported" when a paired difference's interval lies above -``tolerance``,
    "contradicted" below it, else "undecided"; "not measured" without paired seeds and
    "one seed" (no interval) with one."""
    if d["mean"] is None:
        return "not measured"
    if d["interval"] is None:
        return "one seed"
    low, high = d["interval"]
    if low > -tolerance:
        return "supported"
    if high < -tolerance:
        return "contradicted"
    return "undecided"


def verdicts(records: list[dict], side_by_side: dict | None = None) -> dict:
    """Claim (a): RCE - MSE on the FasterPose head (final AP; AP at 25% for speed). Claim
    (b): FasterPose - SimpleBaseline final AP, their MACs and int8 latencies as fractions:
    per seed from each run's own timing, and (``int8_ms_fraction_side_by_side``, per thread
    count) from ``side_by_side_latency``, the figure to quote."""
    a, b = CLAIMS["a"], CLAIMS["b"]
    early = CURVE_FRACTIONS[0]
    final_a = paired(records, *a, lambda r: r["final_ap"])
    early_a = paired(records, *a, lambda r: ap_at(r["curve"], r["epochs"], early))
    final_b = paired(records, *b, lambda r: r["final_ap"])
    out = {"a": {"variants": list(a), "final_ap_difference": final_a,
                 "early_fraction": early, "early_ap_difference": early_a,
                 "ends_more_accurate": _sign_verdict(final_a),
                 "trains_faster": _sign_verdict(early_a)},
           "b": {"variants": list(b), "final_ap_difference": final_b,
                 "macs_fraction": paired(records, *b, lambda r: r["macs"], ratio=True),
                 "ap_matches": _sign_verdict(final_b, AP_MATCH_TOLERANCE)}}
    for n in LATENCY_THREADS:
        out["b"][f"int8_ms_fraction_{n}_threads"] = paired(
            records, *b, lambda r, n=n: r["int8_ms"][str(n)], ratio=True)
    ms = (side_by_side or {}).get("ms", {})
    out["b"]["int8_ms_fraction_side_by_side"] = (
        {n: ms[b[0]][n] / ms[b[1]][n] for n in ms[b[0]]} if b[0] in ms and b[1] in ms else None)
    return out


def seeds_per_variant(records: list[dict], requested: Sequence[str]) -> dict[str, int]:
    """Finished runs per variant, over the requested variants and every variant with a run in
    the output dir (a study may be run in several invocations with different variants)."""
    names = [v for v in VARIANTS if v in requested or any(r["variant"] == v for r in records)]
    return {v: sum(r["variant"] == v for r in records) for v in names}


def build_result(records: list[dict], state: dict) -> dict:
    """The ablation.json object: recipe, options, runs, summary, verdicts, budget notes."""
    opts: AblationOptions = state["options"]
    return {
        "recipe": state["recipe"], "variants": list(opts.variants), "seeds": list(opts.seeds),
        "budget_minutes": opts.budget_minutes,
        "seeds_per_variant": seeds_per_variant(records, opts.variants),
        "stopped": state["stopped"],
        "cost_estimates": {v: dataclasses.asdict(c) for v, c in state["costs"].items()},
        "runs": records, "summary": summarize(records),
        "int8_ms_side_by_side": state.get("side_by_side"),
        "verdicts": verdicts(records, state.get("side_by_side")),
        "session_s": round(time.perf_counter() - state["start"], 1)}


# ------------------------------------------------------------------------------ output


def _interval(d: dict, digits: int = 3, sign: str = "+") -> str:
    """A paired difference (``sign`` "+") or ratio ("") with its interval and seeds."""
    if d["mean"] is None:
        return "no paired seeds"
    fmt = f"{sign}.{digits}f"
    per_seed = ", ".join(f"{v:{fmt}}" for v in d["per_seed"])
    if d["interval"] is None:
        return f"{d['mean']:{fmt}} on seed {d['seeds'][0]} alone (no interval)"
    low, high = d["interval"]
    return (f"{d['mean']:{fmt}}, 95% paired t interval [{low:{fmt}}, {high:{fmt}}] over seeds "
            f"{d['seeds']} (per seed: {per_seed})")


def format_markdown(result: dict) -> str:
    """ablation.md: the variant x seeds table and the verdict per claim."""
    cfg = result["recipe"]["config"]
    threads = "/".join(str(n) for n in LATENCY_THREADS)
    lines = [f"# FasterPose ablation (recipe {result['recipe']['name']})", "",
             f"{cfg['model'].split('_', 1)[1]} backbone, input {cfg['input_size'][0]}x"
             f"{cfg['input_size'][1]}, {cfg['epochs']} epochs, evaluation every "
             f"{cfg['eval_every_epochs']} epochs (flip test {cfg['eval_flip_test']}); values "
             "are mean ± sd over seeds; AP at x% interpolated between evaluations; int8 = "
             f"full-integer PTQ, latency median ms at {threads} threads; training minutes "
             "include the evaluations.", "",
             "| variant | seeds | final AP | AP 25% / 50% / 75% | params (M) | MACs (M) | "
             f"int8 AP | int8 ms ({threads} thr) | training min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, s in result["summary"].items():
        curve = " / ".join(f"{s['ap_at'][k]['mean']:.3f}" for k in s["ap_at"])
        ms = " / ".join(f"{s['int8_ms'][str(n)]['mean']:.2f}" for n in LATENCY_THREADS)
        lines.append(f"| {v} | {len(s['seeds'])} | {mean_sd(s['final_ap'])} | {curve} | "
                     f"{s['params'] / 1e6:.3f} | {s['macs'] / 1e6:.1f} | {mean_sd(s['int8_ap'])} | "
                     f"{ms} | {mean_sd(s['train_s'], 1, 1 / 60)} |")
    a, b = result["verdicts"]["a"], result["verdicts"]["b"]
    lines += ["", f"Seeds per variant: {result['seeds_per_variant']}"
              + (f"; stopped: {result['stopped']}" if result["stopped"] else ""), "",
              f"**(a) RCE vs MSE** ({a['variants'][0]} - {a['variants'][1]}): ends more "
              f"accurate: **{a['ends_more_accurate']}**, final AP "
              f"{_interval(a['final_ap_difference'])}; trains faster: **{a['trains_faster']}**, "
              f"AP at {a['early_fraction']:.0%} {_interval(a['early_ap_difference'])}.", "",
              f"**(b) FasterPose vs SimpleBaseline** ({b['variants'][0]} vs {b['variants'][1]}): "
              f"AP matches (within {AP_MATCH_TOLERANCE:g}): **{b['ap_matches']}**, final AP "
              f"difference {_interval(b['final_ap_difference'])}; MACs fraction "
              f"{_interval(b['macs_fraction'], sign='')}" + "".join(
                  f"; int8 latency fraction at {n} thread(s) "
                  f"{_interval(b[f'int8_ms_fraction_{n}_threads'], sign='')}"
                  for n in LATENCY_THREADS)
              + "."]
    side = b.get("int8_ms_fraction_side_by_side")
    if side:
        ms = result["int8_ms_side_by_side"]["ms"]
        lines += ["", "Int8 latency timed side by side in one process (one file per variant, "
                  f"{result['int8_ms_side_by_side']['rounds']} interleaved rounds): "
                  + "; ".join(f"{v} {' / '.join(f'{t[str(n)]:.2f}' for n in LATENCY_THREADS)} ms"
                              for v, t in ms.items())
                  + f" ({threads} threads); FasterPose / SimpleBaseline "
                  + " / ".join(f"{side[str(n)]:.3f}" for n in LATENCY_THREADS) + "."]
    return "\n".join(lines) + "\n"


def plot_convergence(result: dict, path: str) -> None:
    """AP against epoch: each variant's mean over seeds, with the seeds' min-max band."""
    # lazy: matplotlib (and its Agg backend choice) only when a picture is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use, as pyplot requires

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v, s in result["summary"].items():
        curves = [r["curve"] for r in result["runs"] if r["variant"] == v]
        epochs = [p["epoch"] for p in curves[0]]
        aps = np.array([[p["ap"] for p in c] for c in curves if len(c) == len(epochs)])
        line, = ax.plot(epochs, aps.mean(axis=0), marker="o", markersize=3,
                        label=f"{v} (n={len(aps)}, {s['macs'] / 1e6:.0f} M MACs)")
        ax.fill_between(epochs, aps.min(axis=0), aps.max(axis=0), alpha=0.2,
                        color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("val AP (float)")
    ax.set_title(f"Ablation, recipe {result['recipe']['name']}: mean and seed range")
    ax.grid(alpha=0.3)
    if result["summary"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: str, result: dict) -> None:
    """Writes ablation.json, ablation.md and convergence.png atomically."""
    write_json_atomic(os.path.join(out_dir, RESULT_FILE), result)
    write_bytes_atomic(os.path.join(out_dir, "ablation.md"), format_markdown(result).encode())
    plot_convergence(result, os.path.join(out_dir, "convergence.png"))


def load_result(out_dir: str) -> dict:
    with open(os.path.join(out_dir, RESULT_FILE)) as f:
        return json.load(f)
