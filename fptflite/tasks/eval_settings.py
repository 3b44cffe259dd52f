"""Evaluation settings that agree with training: flip test and decoder from the model's config.

The evaluation CLIs take ``--flip_test`` and ``--decode`` from, in order: the flags when given;
the ``evaluation`` section of a .tflite's sidecar JSON; the ``config.json`` of the training
run the model came from (a model dir, or the folder of a .keras / .h5 file); the
``TrainConfig`` defaults (logged as such). So ``training.evaluate --model=RUN`` scores the
run's model exactly as the run's own evaluation did.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

from fptflite import rundir
from fptflite.tasks import configs
from fptflite.tasks.configs import TrainConfig


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Resolved evaluation settings and where each came from (for the printed summary)."""

    flip_test: bool
    decode: str
    batch_size: int
    source: str


def find_config(path: str | None) -> tuple[TrainConfig | None, str | None]:
    """The training config of a model dir or of the dir holding a model file.

    Returns:
        (config, path of its config.json), or (None, None) where there is none.
    """
    run = rundir.run_of(path) if path else None
    if run is None:
        return None, None
    return configs.load_config(run), os.path.join(run, rundir.CONFIG_FILE)


def sidecar_settings(tflite_path: str) -> dict | None:
    """The ``evaluation`` section ({"flip_test", "decode"}) of a .tflite's sidecar JSON."""
    sidecar = os.path.splitext(tflite_path)[0] + ".json"
    if not os.path.isfile(sidecar):
        return None
    with open(sidecar) as f:
        section = json.load(f).get("evaluation")
    return section if isinstance(section, dict) else None


def resolve(flip_test: bool | None, decode: str | None, batch_size: int | None,
            model_paths: list[str | None], tflite_path: str | None = None) -> EvalSettings:
    """Fills the settings not given explicitly (None) from the first source that has them.

    Args:
        flip_test, decode, batch_size: the flags' values (None: not given).
        model_paths: model dirs or files whose training config may apply, in order.
        tflite_path: a .tflite whose sidecar may carry an ``evaluation`` section.
    """
    source, found = "TrainConfig defaults (no config.json found)", None
    side = sidecar_settings(tflite_path) if tflite_path else None
    if side is not None:
        found = {"flip_test": side.get("flip_test"), "decode": side.get("decode")}
        source = f"the sidecar of {tflite_path}"
    else:
        for p in model_paths:
            cfg, cfg_path = find_config(p)
            if cfg is not None:
                found = {"flip_test": cfg.eval_flip_test, "decode": cfg.eval_decode,
                         "batch_size": cfg.eval_batch_size}
                source = cfg_path
                break
    default = TrainConfig()
    found = found or {}
    if found.get("flip_test") is None or found.get("decode") is None:
        logging.warning("evaluation settings not found for %s: using the TrainConfig defaults "
                        "(flip test %s, decode %s) unless given as flags",
                        tflite_path or model_paths, default.eval_flip_test, default.eval_decode)
    settings = EvalSettings(
        flip_test=flip_test if flip_test is not None
        else _first(found.get("flip_test"), default.eval_flip_test),
        decode=decode or _first(found.get("decode"), default.eval_decode),
        batch_size=batch_size or _first(found.get("batch_size"), default.eval_batch_size),
        source=source)
    logging.info("evaluation: flip test %s, decode %s, batch %d (flags, else %s)",
                 settings.flip_test, settings.decode, settings.batch_size, source)
    return settings


def _first(value, default):
    return default if value is None else value
