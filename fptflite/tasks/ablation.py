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
import itertools
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence

import numpy as np
import tf_keras as keras

from fptflite import codec
from fptflite.data import datasets
from fptflite.evaluation import coco_eval, student_t
from fptflite.models import MODELS, count_macs, get_entry, heatmap_logits_model
from fptflite.results import AblationResult, paired_text, stat_text
from fptflite.rundir import EVAL_DIR
from fptflite.tasks import configs, trainer
from fptflite.tasks.configs import TrainConfig
from fptflite.tflite import benchmark, convert, runner
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
    Variant("fasterpose_sigmoid_mse", "fasterpose", "sigmoid_mse"),
)}
# The arms a study trains when none are given: the two claims' four variants.
DEFAULT_ARMS = ("fasterpose_rce", "fasterpose_mse", "simplebaseline_mse", "simplebaseline_rce")
# Claim -> (variant a, variant b): the paired differences are a - b.
CLAIMS = {"a": ("fasterpose_rce", "fasterpose_mse"),
          "b": ("fasterpose_rce", "simplebaseline_mse")}


def get_variant(name: str) -> Variant:
    """The variant called ``name``; a ValueError listing the known ones otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"unknown ablation variant {name!r}; choose from {list(VARIANTS)}")
    return VARIANTS[name]


# An arm is a variant with config overrides of its own, spelled "variant[:key=value...]"
# (e.g. "fasterpose_rce:learning_rate=0.01:epochs=68"); the plain variant name is the arm
# with the recipe's settings. Its runs live in OUT/runs/<arm, ':' -> '+'>_seed<k>/.
ARM_SEPARATOR = ":"
DIR_SEPARATOR = "+"
SWEPT_KEY = "learning_rate"  # arms differing only in it form a variant's learning-rate sweep


@dataclasses.dataclass(frozen=True)
class Arm:
    """One trained configuration of the study: a variant and its own overrides.

    Attributes:
        name: the canonical spelling "variant[:key=value...]" (JSON values re-printed, so
            1e-2 and 0.01 name one arm).
        variant: the ``Variant`` it derives from.
        overrides: its "key=value" overrides of the recipe, in order.
    """

    name: str
    variant: Variant
    overrides: tuple[str, ...]

    @property
    def rate_overrides(self) -> tuple[str, ...]:
        """Its overrides of the swept learning rate (none or one)."""
        return tuple(o for o in self.overrides if o.partition("=")[0] == SWEPT_KEY)

    @property
    def change(self) -> tuple[str, ...]:
        """Its overrides beyond the learning rate (e.g. ("epochs=68",))."""
        return tuple(o for o in self.overrides if o not in self.rate_overrides)

    @property
    def is_sweep_point(self) -> bool:
        """True when the arm only sets the swept learning rate (or nothing)."""
        return not self.change


def _canonical_value(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw))
    except json.JSONDecodeError:
        return raw


def parse_arm(spec: str) -> Arm:
    """The arm spelled ``spec``; a ValueError naming the spec when its variant is unknown or
    an override is not key=value (the overrides' keys and values are checked when the arm's
    config is built, ``variant_config``)."""
    head, *items = [p.strip() for p in spec.strip().split(ARM_SEPARATOR)]
    variant = get_variant(head)
    overrides = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"ablation arm {spec!r}: override {item!r} is not key=value")
        overrides.append(f"{key.strip()}={_canonical_value(value.strip())}")
    name = ARM_SEPARATOR.join([head, *overrides])
    if DIR_SEPARATOR in name or os.sep in name:
        raise ValueError(f"ablation arm {spec!r} may not contain {DIR_SEPARATOR!r} or {os.sep!r}")
    return Arm(name, variant, tuple(overrides))


@dataclasses.dataclass(frozen=True)
class AblationOptions:
    """What to run.

    Attributes:
        out_dir: results, ``runs/`` and (by default) the generated data go here.
        recipe: the base config's name (``fptflite.tasks.configs.CONFIGS``).
        variants: the arms to train: ``VARIANTS`` names, optionally with overrides
            ("variant:key=value...", ``parse_arm``).
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
    variants: tuple[str, ...] = DEFAULT_ARMS
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


def variant_config(recipe: TrainConfig, arm: str, seed: int) -> TrainConfig:
    """The config of one run: the recipe with the arm's model, loss and overrides and ``seed``.

    FasterPose keeps the recipe's features (stride, neck) when the recipe is a FasterPose
    config (else stride 32, no neck); SimpleBaseline takes stride-32 features, no neck. An
    arm's overrides apply last (a ValueError naming the arm when one is invalid: an unknown
    key or loss, a learning rate <= 0).
    """
    a = parse_arm(arm)
    v = a.variant
    stride, neck = 32, 0
    if v.head == "fasterpose" and recipe.head == "fasterpose":
        stride, neck = recipe.feature_stride, recipe.neck_channels
    model = zoo_model(v.head, get_entry(recipe.model).backbone)
    cfg = dataclasses.replace(recipe, model=model, loss=v.loss, seed=int(seed),
                              feature_stride=stride, neck_channels=neck)
    try:
        return configs.apply_overrides(cfg, list(a.overrides)).validate()
    except ValueError as e:
        raise ValueError(f"ablation arm {arm!r}: {e}") from None


def portable(cfg: TrainConfig) -> dict:
    """``cfg.to_dict()`` as JSON reads it back (lists for tuples), without the data dir
    (where the data is, not what the recipe is)."""
    d = json.loads(json.dumps(cfg.to_dict()))
    d["data"]["data_dir"] = ""
    return d


def run_dir(out_dir: str, arm: str, seed: int) -> str:
    """OUT/runs/<arm with ':' as '+'>_seed<seed>."""
    name = parse_arm(arm).name.replace(ARM_SEPARATOR, DIR_SEPARATOR)
    return os.path.join(out_dir, "runs", f"{name}_seed{seed}")


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
    """Seconds the rest of a run should take: its variant's mean measured seconds per epoch
    (records not resumed) times its epochs, else ``cost``; scaled by the share of epochs a
    killed run has left."""
    measured = [r["run_s"] / r["epochs"] for r in records if not r["resumed"]]
    full = float(np.mean(measured)) * cfg.epochs if measured else cost.run_s(cfg)
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
    """The run's curve from its ``eval_history.json``: [{"epoch", "step", "ap", "kp_error"}]
    (kp_error: mean keypoint error in crop pixels, None where the evaluation had none)."""
    metric = trainer.metric_of(cfg)
    return [{"epoch": h["epoch"], "step": h["step"], "ap": metric.value(h),
             "kp_error": h.get("kp_error")} for h in trainer.read_eval_history(model_dir)]


def logit_flip_predictor(model: keras.Model) -> coco_eval.Predictor:
    """Flip test that averages a sigmoid model's logits (then applies the sigmoid) instead of
    its probabilities: heatmaps [B, h, w, K] of crops [B, H, W, 3]; evaluate it with
    ``flip_test=False``."""
    logits = coco_eval.keras_predictor(heatmap_logits_model(model))

    def predict(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
        z = logits(images, indices)
        z_flipped = codec.flip_heatmaps(logits(np.ascontiguousarray(images[:, :, ::-1]),
                                               indices))
        return 1.0 / (1.0 + np.exp(-0.5 * (z + z_flipped)))

    return predict


def constant_score_ap(model_dir: str, ann_file: str) -> float:
    """COCO AP of the run's last evaluation with every person scored 1: AP without the
    ranking of persons by their keypoint scores (the results keep their order)."""
    with open(os.path.join(model_dir, EVAL_DIR, coco_eval.RESULTS_FILE)) as f:
        results = [{**r, "score": 1.0} for r in json.load(f)]
    return coco_eval.run_cocoeval(ann_file, results)["AP"]


def diagnostics(model: keras.Model, cfg: TrainConfig, t: trainer.Trainer, model_dir: str,
                final: dict) -> dict:
    """What AP hides, for a COCO run: AR, AP with constant person scores, keypoint error
    (crop px) and PCK of the final evaluation; for a sigmoid output with flip test, the AP of
    the flip test averaged on logits. None for figures a run does not have."""
    out = {"final_ar": final.get("AR"), "kp_error": final.get("kp_error"),
           "pck": final.get("PCK"), "ap_constant_score": None, "flip_logits_ap": None}
    if trainer.metric_of(cfg).name != "AP":
        return out
    ann_file = t.data.paths["val_ann"]
    out["ap_constant_score"] = constant_score_ap(model_dir, ann_file)
    if cfg.output_activation == "sigmoid" and cfg.eval_flip_test:
        stats, _ = coco_eval.evaluate(logit_flip_predictor(model), t.data.val_instances,
                                      ann_file, cfg.input_size, None, cfg.eval_batch_size,
                                      False, cfg.eval_decode, False)
        out["flip_logits_ap"] = stats["AP"]
    return out


def train_run(cfg: TrainConfig, arm: str, model_dir: str, opts: AblationOptions) -> dict:
    """Trains (or resumes) one run, measures what AP hides and its int8 file; writes and
    returns its record."""
    t0 = time.perf_counter()
    resumed = os.path.isdir(os.path.join(model_dir, "checkpoints"))
    t = trainer.Trainer(cfg, model_dir)
    result = t.run()
    train_s = time.perf_counter() - t0
    with open(os.path.join(model_dir, "final_metrics.json")) as f:
        final = json.load(f)
    metric = trainer.metric_of(cfg)
    extra = diagnostics(result.model, cfg, t, model_dir, final)
    t1 = time.perf_counter()
    int8 = int8_figures(result.model, cfg, t, os.path.join(model_dir, INT8_FILE), opts)
    a = parse_arm(arm)
    record = {
        "arm": a.name, "variant": a.variant.name, "seed": cfg.seed, "model": cfg.model,
        "head": a.variant.head, "loss": a.variant.loss,
        "output_activation": cfg.output_activation, "learning_rate": cfg.learning_rate,
        "feature_stride": cfg.feature_stride, "neck_channels": cfg.neck_channels,
        "epochs": cfg.epochs, "model_dir": os.path.relpath(model_dir, opts.out_dir),
        "curve": curve_of(model_dir, cfg), "final_ap": metric.value(final), **extra,
        "best_ap": float(final["best_AP"]), "params": int(result.model.count_params()),
        "macs": int(count_macs(result.model)), **int8, "train_s": round(train_s, 2),
        "int8_s": round(time.perf_counter() - t1, 2),
        "run_s": round(time.perf_counter() - t0, 2), "resumed": resumed,
        "config": portable(cfg)}
    write_json_atomic(os.path.join(model_dir, RUN_RECORD), record)
    keras.backend.clear_session()
    return record


_RUN_NAME = re.compile(r"^(?P<arm>.+)_seed(?P<seed>-?\d+)$")


def arm_order(arm: str) -> tuple:
    """Sort key of arms: variant order, then the plain arm, then by overrides (numbers by
    value, so learning rates ascend)."""
    a = parse_arm(arm)

    def value(o: str):
        raw = o.partition("=")[2]
        try:
            return (0, float(raw), "")
        except ValueError:
            return (1, 0.0, raw)

    return (list(VARIANTS).index(a.variant.name), len(a.overrides),
            [(o.partition("=")[0], value(o)) for o in a.overrides])


def load_records(out_dir: str, recipe: TrainConfig) -> list[dict]:
    """The records of every finished run under ``out_dir/runs`` (sorted by arm and seed); a
    ValueError naming the record when one was trained from another recipe than the one its
    arm and seed give."""
    folder = os.path.join(out_dir, "runs")
    records = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match, path = _RUN_NAME.match(name), os.path.join(folder, name, RUN_RECORD)
        if not match or not os.path.isfile(path):
            continue
        arm = match["arm"].replace(DIR_SEPARATOR, ARM_SEPARATOR)
        with open(path) as f:
            record = json.load(f)
        try:
            expected = portable(variant_config(recipe, arm, int(match["seed"])))
        except ValueError as e:
            raise ValueError(f"{path}: {e}; use a new output dir") from None
        if record["config"] != expected:
            diff = sorted(k for k in set(expected) | set(record["config"])
                          if expected.get(k) != record["config"].get(k))
            raise ValueError(f"{path} was trained from another recipe than this study's "
                             f"(differing in {diff}); use a new output dir")
        records.append({"arm": parse_arm(arm).name, **record})
    return sorted(records, key=lambda r: (arm_order(r["arm"]), r["seed"]))


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
    if not opts.variants or not opts.seeds:
        raise ValueError("the ablation needs at least one variant and one seed")
    opts = dataclasses.replace(
        opts, variants=tuple(dict.fromkeys(parse_arm(v).name for v in opts.variants)),
        seeds=tuple(dict.fromkeys(int(s) for s in opts.seeds)))
    recipe = recipe_config(opts)
    for arm in opts.variants:  # every arm's config is valid before anything is written
        variant_config(recipe, arm, opts.seeds[0])
    entry = {"name": opts.recipe, "config": portable(recipe)}
    check_results_dir(opts.out_dir, entry)
    records = load_records(opts.out_dir, recipe)
    state = {"recipe": entry, "options": opts, "costs": {}, "stopped": None, "start": start}
    write_outputs(opts.out_dir, build_result(records, state))
    budget_s = None if opts.budget_minutes is None else 60.0 * opts.budget_minutes
    done = {(r["arm"], r["seed"]) for r in records}
    todo = [(s, v) for s in opts.seeds for v in opts.variants if (v, s) not in done]
    if budget_s is not None and todo:
        state["costs"] = _probe_missing(opts, recipe, records, {v for _, v in todo}, log)
        check_budget(budget_s, _one_epoch_s(records, state["costs"]))
    for seed in dict.fromkeys(s for s, _ in todo):
        round_ = [v for s, v in todo if s == seed]
        if budget_s is not None:
            need = sum(estimate_run_s(
                variant_config(recipe, v, seed),
                [r for r in records if r["variant"] == parse_arm(v).variant.name],
                state["costs"].get(parse_arm(v).variant.name), run_dir(opts.out_dir, v, seed))
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
                   arms: set[str], log: Callable[[str], None]) -> dict[str, Cost]:
    """Probes (per variant, on its first arm to run) the variants without a measured (not
    resumed) run; costs per epoch do not depend on an arm's overrides."""
    costs, scratch = {}, os.path.join(opts.out_dir, "probe")
    trainer.ensure_data(recipe)  # generate the data before timing anything
    try:
        for arm in opts.variants:
            v = parse_arm(arm).variant.name
            if arm in arms and v not in costs and not any(
                    r["variant"] == v and not r["resumed"] for r in records):
                costs[v] = probe_cost(variant_config(recipe, arm, opts.seeds[0]),
                                      os.path.join(scratch, v))
                log(f"ablation: {v} cost estimate {dataclasses.asdict(costs[v])}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return costs


def _one_epoch_s(records: list[dict], costs: dict[str, Cost]) -> dict[str, float]:
    """Seconds of a setup, an epoch and an evaluation per variant (probed or measured)."""
    out = {v: c.one_epoch_s() for v, c in costs.items()}
    for r in records:  # a measured run's mean epoch (its setup and evaluations spread)
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


def _stats(values: Sequence[float | None]) -> dict | None:
    """Mean and sample standard deviation (0 for one value) of per-seed values, over those
    that are not None; None when none is."""
    a = np.asarray([v for v in values if v is not None], np.float64)
    if not len(a):
        return None
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def arm_of(record: dict) -> str:
    """A record's arm (records written before arms existed name their variant only)."""
    return record.get("arm") or record["variant"]


# Per-run figures beyond AP (``diagnostics``), summarised like the final AP.
DIAGNOSTICS = ("final_ar", "kp_error", "pck", "ap_constant_score", "flip_logits_ap")


def summarize(records: list[dict]) -> dict[str, dict]:
    """Per arm: seeds, learning rate, epochs, final AP and ``DIAGNOSTICS``, AP at
    ``CURVE_FRACTIONS``, params, MACs, int8 figures, training seconds."""
    out = {}
    for arm in dict.fromkeys(arm_of(r) for r in records):
        rows = [r for r in records if arm_of(r) == arm]
        out[arm] = {
            "variant": rows[0]["variant"], "learning_rate": rows[0].get("learning_rate"),
            "epochs": rows[0]["epochs"], "seeds": [r["seed"] for r in rows],
            "final_ap": _stats([r["final_ap"] for r in rows]),
            **{k: _stats([r.get(k) for r in rows]) for k in DIAGNOSTICS},
            "ap_at": {f"{int(f * 100)}%": _stats([ap_at(r["curve"], r["epochs"], f)
                                                  for r in rows]) for f in CURVE_FRACTIONS},
            "params": rows[0]["params"], "macs": rows[0]["macs"],
            "int8_ap": _stats([r["int8_ap"] for r in rows]),
            "int8_ms": {n: _stats([r["int8_ms"][n] for r in rows]) for n in rows[0]["int8_ms"]},
            "train_s": _stats([r["train_s"] for r in rows])}
    return out


def learning_rate_sweeps(records: list[dict]) -> dict[str, dict]:
    """Per variant, its arms that set at most the learning rate, on the sweep seed (the
    lowest seed among them), and the chosen arm: the highest final AP there.

    Returns:
        {variant: {"seed", "rows": [{"arm", "learning_rate", "final_ap", "kp_error"}]
        (ascending rate), "chosen": arm}}.
    """
    out = {}
    for v in VARIANTS:
        runs = [r for r in records if r["variant"] == v and parse_arm(arm_of(r)).is_sweep_point]
        if not runs:
            continue
        seed = min(r["seed"] for r in runs)
        rows = sorted(({"arm": arm_of(r), "learning_rate": r.get("learning_rate"),
                        "final_ap": r["final_ap"], "kp_error": r.get("kp_error")}
                       for r in runs if r["seed"] == seed),
                      key=lambda x: x["learning_rate"] or 0.0)
        out[v] = {"seed": seed, "rows": rows,
                  "chosen": max(rows, key=lambda x: x["final_ap"])["arm"]}
    return out


def chosen_arm(sweeps: dict[str, dict], variant: str) -> str:
    """The variant's chosen arm (``learning_rate_sweeps``), else the variant's plain arm."""
    return sweeps[variant]["chosen"] if variant in sweeps else variant


def paired(records: list[dict], a: str, b: str, value: Callable[[dict], float | None],
           ratio: bool = False) -> dict:
    """Per-seed paired ``value(a) - value(b)`` (or ``a / b``) of arms ``a`` and ``b`` over the
    seeds both have (and both have a value for), with the mean and its paired t interval
    (``student_t.mean_interval``; None for one seed, where a mean has no interval)."""
    by_seed = {(arm_of(r), r["seed"]): r for r in records}
    seeds = sorted(s for (v, s) in by_seed if v == a and (b, s) in by_seed
                   and value(by_seed[(a, s)]) is not None and value(by_seed[(b, s)]) is not None)
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
    """Claim (a): RCE - MSE on the FasterPose head, each at its chosen learning rate
    (``learning_rate_sweeps``): final AP, AP at 25% for speed, keypoint error (crop px;
    negative is RCE better). Claim (b): FasterPose - SimpleBaseline final AP, their MACs and
    int8 latencies as fractions: per seed from each run's own timing, and
    (``int8_ms_fraction_side_by_side``, per thread count) from ``side_by_side_latency``, the
    figure to quote."""
    sweeps = learning_rate_sweeps(records)
    a = tuple(chosen_arm(sweeps, v) for v in CLAIMS["a"])
    b = tuple(chosen_arm(sweeps, v) for v in CLAIMS["b"])
    early = CURVE_FRACTIONS[0]
    final_a = paired(records, *a, lambda r: r["final_ap"])
    early_a = paired(records, *a, lambda r: ap_at(r["curve"], r["epochs"], early))
    final_b = paired(records, *b, lambda r: r["final_ap"])
    out = {"a": {"variants": list(a), "final_ap_difference": final_a,
                 "early_fraction": early, "early_ap_difference": early_a,
                 "kp_error_difference": paired(records, *a, lambda r: r.get("kp_error")),
                 "final_ar_difference": paired(records, *a, lambda r: r.get("final_ar")),
                 "ends_more_accurate": _sign_verdict(final_a),
                 "trains_faster": _sign_verdict(early_a)},
           "b": {"variants": list(b), "final_ap_difference": final_b,
                 "macs_fraction": paired(records, *b, lambda r: r["macs"], ratio=True),
                 "ap_matches": _sign_verdict(final_b, AP_MATCH_TOLERANCE)}}
    for n in LATENCY_THREADS:
        out["b"][f"int8_ms_fraction_{n}_threads"] = paired(
            records, *b, lambda r, n=n: r["int8_ms"][str(n)], ratio=True)
    ms = (side_by_side or {}).get("ms", {})
    vb = [parse_arm(x).variant.name for x in b]
    out["b"]["int8_ms_fraction_side_by_side"] = (
        {n: ms[vb[0]][n] / ms[vb[1]][n] for n in ms[vb[0]]}
        if vb[0] in ms and vb[1] in ms else None)
    return out


# The baselines of arms that change more than the learning rate: the same variant at the same
# rate (``_same_rate_arm``); MSE on the sigmoid output against RCE (same output) and MSE (same
# loss), each at its chosen rate.
SIGMOID_MSE_BASELINES = ("fasterpose_rce", "fasterpose_mse")


def comparisons(records: list[dict]) -> list[dict]:
    """Every arm beyond the sweeps (longer training, another prior, MSE on the sigmoid
    output) against its baselines, and claim (a)'s two losses under one same change
    (``claim_a_under_same_change``), seed by seed: final AP and keypoint error differences.

    Returns:
        [{"arm", "baseline", "final_ap_difference", "kp_error_difference"}] (``paired``).
    """
    sweeps = learning_rate_sweeps(records)
    out = []
    for arm in dict.fromkeys(arm_of(r) for r in records):
        a = parse_arm(arm)
        if a.variant.name == "fasterpose_sigmoid_mse":
            baselines = [chosen_arm(sweeps, v) for v in SIGMOID_MSE_BASELINES]
        elif not a.is_sweep_point:
            baselines = [_same_rate_arm(arm, records, sweeps)]
        else:
            continue
        for base in baselines:
            out.append(_comparison(records, arm, base))
    # Claim (a) under one same change (e.g. twice the epochs): each loss at its chosen rate.
    for arm, base in claim_a_under_same_change(records, sweeps):
        out.append(_comparison(records, arm, base))
    return out


def _same_rate_arm(arm: str, records: list[dict], sweeps: dict[str, dict]) -> str:
    """The baseline of an arm that changes more than the rate: its variant at the same rate
    when that has runs (e.g. ":learning_rate=0.01:epochs=68" against ":learning_rate=0.01"),
    else the variant's chosen arm."""
    a = parse_arm(arm)
    same_rate = ARM_SEPARATOR.join([a.variant.name, *a.rate_overrides])
    return same_rate if any(arm_of(r) == same_rate for r in records) else chosen_arm(
        sweeps, a.variant.name)


def _comparison(records: list[dict], arm: str, base: str) -> dict:
    return {"arm": arm, "baseline": base,
            "final_ap_difference": paired(records, arm, base, lambda r: r["final_ap"]),
            "kp_error_difference": paired(records, arm, base, lambda r: r.get("kp_error"))}


def claim_a_under_same_change(records: list[dict],
                              sweeps: dict[str, dict]) -> list[tuple[str, str]]:
    """(RCE arm, MSE arm) pairs of claim (a)'s variants, each at its chosen rate with one and
    the same further change (e.g. ":epochs=68" on both), that both have runs."""
    chosen = {v: parse_arm(chosen_arm(sweeps, v)).rate_overrides for v in CLAIMS["a"]}
    changed = {v: {} for v in CLAIMS["a"]}
    for arm in dict.fromkeys(arm_of(r) for r in records):
        a = parse_arm(arm)
        v = a.variant.name
        if v in changed and a.change and a.rate_overrides == chosen[v]:
            changed[v][a.change] = arm
    first, second = (changed[v] for v in CLAIMS["a"])
    return [(first[c], second[c]) for c in first if c in second]


def seeds_per_variant(records: list[dict], requested: Sequence[str]) -> dict[str, int]:
    """Finished runs per arm, over the requested arms and every arm with a run in the output
    dir (a study may be run in several invocations with different arms)."""
    names = list(dict.fromkeys([*requested, *(arm_of(r) for r in records)]))
    names.sort(key=arm_order)
    return {v: sum(arm_of(r) == v for r in records) for v in names}


def build_result(records: list[dict], state: dict) -> dict:
    """The ablation.json object (an ``results.AblationResult``): recipe, options, runs,
    summary, learning-rate sweeps, verdicts, comparisons, budget notes."""
    opts: AblationOptions = state["options"]
    return AblationResult(
        recipe=state["recipe"], variants=list(opts.variants), seeds=list(opts.seeds),
        budget_minutes=opts.budget_minutes,
        seeds_per_variant=seeds_per_variant(records, opts.variants),
        stopped=state["stopped"],
        cost_estimates={v: dataclasses.asdict(c) for v, c in state["costs"].items()},
        runs=records, summary=summarize(records),
        learning_rate_sweeps=learning_rate_sweeps(records),
        comparisons=comparisons(records),
        int8_ms_side_by_side=state.get("side_by_side"),
        verdicts=verdicts(records, state.get("side_by_side")),
        session_s=round(time.perf_counter() - state["start"], 1)).to_dict()


# ------------------------------------------------------------------------------ output


def _interval(d: dict, digits: int = 3, sign: str = "+") -> str:
    """``results.paired_text`` with each seed's value: ablation.md's long form."""
    return paired_text(d, digits, sign, per_seed=True)


def format_markdown(result: dict) -> str:
    """ablation.md: the arm x seeds table, the learning-rate sweeps, the verdict per claim and
    the single-change comparisons."""
    cfg = result["recipe"]["config"]
    threads = "/".join(str(n) for n in LATENCY_THREADS)
    lines = [f"# FasterPose ablation (recipe {result['recipe']['name']})", "",
             f"{cfg['model'].split('_', 1)[1]} backbone, input {cfg['input_size'][0]}x"
             f"{cfg['input_size'][1]}, {cfg['epochs']} epochs at learning rate "
             f"{cfg['learning_rate']:g} unless an arm says otherwise, evaluation every "
             f"{cfg['eval_every_epochs']} epochs (flip test {cfg['eval_flip_test']}); values "
             "are mean ± sd over seeds (the mean alone for one seed); AR, keypoint error "
             "(kp err, crop pixels), PCK (within "
             f"{coco_eval.PCK_THRESHOLD:g} of the crop height) and AP with every person scored 1 "
             "(AP const) are of the final evaluation; flip-logit AP averages the flip test's "
             "logits instead of its probabilities (sigmoid outputs); AP at x% interpolated "
             "between evaluations; int8 = full-integer PTQ, latency median ms at "
             f"{threads} threads; training minutes include the evaluations.", "",
             "| arm | seeds | final AP | AR | kp err | PCK | AP const | flip-logit AP | "
             f"AP 25% / 50% / 75% | MACs (M) | int8 AP | int8 ms ({threads} thr) | "
             "training min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, s in result["summary"].items():
        curve = " / ".join(f"{s['ap_at'][k]['mean']:.3f}" for k in s["ap_at"])
        ms = " / ".join(f"{s['int8_ms'][str(n)]['mean']:.2f}" for n in LATENCY_THREADS)
        n = len(s["seeds"])
        lines.append(
            f"| {v} | {n} | {stat_text(s['final_ap'], 3, n)} | "
            f"{stat_text(s.get('final_ar'), 3, n)} | "
            f"{stat_text(s.get('kp_error'), 2, n)} | {stat_text(s.get('pck'), 3, n)} | "
            f"{stat_text(s.get('ap_constant_score'), 3, n)} | "
            f"{stat_text(s.get('flip_logits_ap'), 3, n)} | {curve} | "
            f"{s['macs'] / 1e6:.1f} | {stat_text(s['int8_ap'], 3, n)} | {ms} | "
            f"{stat_text({k: x / 60 for k, x in s['train_s'].items()}, 1, n)} |")
    sweeps = result.get("learning_rate_sweeps") or {}
    if sweeps:
        lines += ["", "Learning-rate sweeps (one seed each; the chosen rate has the highest "
                  "final AP):", "", "| variant | seed | learning rate | final AP | kp err | "
                  "chosen |", "|---|---:|---:|---:|---:|---|"]
        for v, sw in sweeps.items():
            for row in sw["rows"]:
                kp = "-" if row["kp_error"] is None else f"{row['kp_error']:.2f}"
                lr = "-" if row["learning_rate"] is None else f"{row['learning_rate']:g}"
                lines.append(f"| {v} | {sw['seed']} | {lr} | "
                             f"{row['final_ap']:.3f} | {kp} | "
                             f"{'**yes**' if row['arm'] == sw['chosen'] else ''} |")
    a, b = result["verdicts"]["a"], result["verdicts"]["b"]
    kp_a = a.get("kp_error_difference")
    lines += ["", f"Seeds per arm: {result['seeds_per_variant']}"
              + (f"; stopped: {result['stopped']}" if result["stopped"] else ""), "",
              f"**(a) RCE vs MSE** ({a['variants'][0]} - {a['variants'][1]}): ends more "
              f"accurate: **{a['ends_more_accurate']}**, final AP "
              f"{_interval(a['final_ap_difference'])}; trains faster: **{a['trains_faster']}**, "
              f"AP at {a['early_fraction']:.0%} {_interval(a['early_ap_difference'])}"
              + (f"; keypoint error (crop px) {_interval(kp_a, 2)}" if kp_a else "") + ".", "",
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
    if result.get("comparisons"):
        lines += ["", "One change against its baseline, seed by seed (arm - baseline):", "",
                  "| arm | baseline | final AP difference | kp err difference (px) |",
                  "|---|---|---|---|"]
        for c in result["comparisons"]:
            lines.append(f"| {c['arm']} | {c['baseline']} | "
                         f"{_interval(c['final_ap_difference'])} | "
                         f"{_interval(c['kp_error_difference'], 2)} |")
    return "\n".join(lines) + "\n"


# One colour family per variant (shades for its arms), in order of first appearance.
PLOT_COLORMAPS = ("Reds", "Blues", "Purples", "Greens", "Oranges", "Greys")


def arm_styles(arms: Sequence[str], chosen: Sequence[str]) -> dict[str, dict]:
    """matplotlib line styles per arm: the variant's colour family, a shade per arm; chosen
    arms thick and solid, other sweep points thin and dashed, other changes solid."""
    import matplotlib  # lazy, as in plot_convergence

    by_variant: dict[str, list[str]] = {}
    for arm in arms:
        by_variant.setdefault(parse_arm(arm).variant.name, []).append(arm)
    styles = {}
    for members, cmap_name in zip(by_variant.values(), itertools.cycle(PLOT_COLORMAPS)):
        cmap = matplotlib.colormaps[cmap_name]
        for i, arm in enumerate(members):
            shade = 0.5 + 0.45 * (i / max(len(members) - 1, 1))
            sweep_point = parse_arm(arm).is_sweep_point
            styles[arm] = {"color": cmap(shade),
                           "linewidth": 2.4 if arm in chosen else 1.0 if sweep_point else 1.6,
                           "linestyle": "--" if sweep_point and arm not in chosen else "-"}
    return styles


def plot_convergence(result: dict, path: str) -> None:
    """AP and keypoint error against epoch: each arm's mean over seeds, with the seeds'
    min-max band; one colour family per variant, chosen arms thick (``arm_styles``)."""
    # lazy: matplotlib (and its Agg backend choice) only when a picture is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use, as pyplot requires

    chosen = [sw["chosen"] for sw in (result.get("learning_rate_sweeps") or {}).values()]
    styles = arm_styles(list(result["summary"]), chosen)
    fig, (ax_ap, ax_kp) = plt.subplots(1, 2, figsize=(12, 6.4))
    for v in result["summary"]:
        curves = [r["curve"] for r in result["runs"] if arm_of(r) == v]
        epochs = [p["epoch"] for p in curves[0]]
        same = [c for c in curves if len(c) == len(epochs)]
        for ax, key in ((ax_ap, "ap"), (ax_kp, "kp_error")):
            if any(p.get(key) is None for c in same for p in c):
                continue
            y = np.array([[p[key] for p in c] for c in same])
            ax.plot(epochs, y.mean(axis=0), marker="o", markersize=2.5,
                    label=f"{v} (n={len(y)}){' chosen' if v in chosen else ''}", **styles[v])
            ax.fill_between(epochs, y.min(axis=0), y.max(axis=0), alpha=0.15,
                            color=styles[v]["color"])
    ax_ap.set_ylabel("val AP (float)")
    ax_kp.set_ylabel("mean keypoint error (crop px)")
    ax_kp.set_yscale("log")
    for ax in (ax_ap, ax_kp):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Ablation, recipe {result['recipe']['name']}: mean and seed range")
    if result["summary"]:
        fig.legend(*ax_ap.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7)
        fig.tight_layout(rect=(0, 0.06 + 0.022 * ((len(result["summary"]) + 2) // 3), 1, 1))
    else:
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
