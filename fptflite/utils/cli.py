"""The command-line vocabulary: one spelling and one meaning per concept across every tool.

Every flag that more than one tool takes is defined here, once, and a tool asks for it by
name::

    _MODEL = cli.flag("model", required=True)
    FLAGS = cli.define("num_threads", "out_json")     # several at once
    _MODEL.value, FLAGS["num_threads"].value

A tool's own flags (those no other tool has) stay in the tool. ``tests/test_cli.py`` fails when
two tools define the same flag themselves, or when a tool spells a concept with one of the
rejected spellings in ``REJECTED_SPELLINGS``; ``python -m fptflite.utils.cli_doc`` writes
docs/cli.md from these definitions and the tools' own.

Bad input (a path that is not what a tool expected, a runtime that cannot run here) ends a
tool with exit status 2 and one line naming the path and the problem: ``run_tool``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One shared flag: its absl kind (string, integer, float, bool, list, enum, multi_string),
    default and help; ``enum_values`` for enums whose values the tool passes in."""

    kind: str
    default: Any
    help: str


SHARED_FLAGS: dict[str, FlagSpec] = {
    "model": FlagSpec("string", None, "A run directory (its best export) or a model file "
                      "(.keras float, .h5 QAT; .tflite where the tool runs files)."),
    "run_dir": FlagSpec("string", None, "The run directory the tool writes into (config, "
                        "checkpoints, exports, qat/, tflite/, eval/, reports)."),
    "qat_model": FlagSpec("string", None, "The QAT model: a QAT run directory or .h5 file "
                          "(default: MODEL/qat when --model is a run directory)."),
    "tflite": FlagSpec("string", None, "A .tflite file."),
    "config": FlagSpec("string", None, "A training config name (python -m fptflite.models "
                       "--list shows the models; docs/training.md the configs)."),
    "zoo_model": FlagSpec("string", None, "A zoo model name (python -m fptflite.models "
                          "--list)."),
    "zoo_models": FlagSpec("list", None, "Zoo model names, comma-separated."),
    "set": FlagSpec("multi_string", [], "Config override key=value (repeatable), e.g. "
                    "--set=learning_rate=5e-4 --set=data.use_detections=true."),
    "data_dir": FlagSpec("string", None, "Dataset root (see DataConfig.layout)."),
    "ann_file": FlagSpec("string", None, "Annotations: COCO person keypoints JSON or MPII JSON "
                         "list (default with a run directory: the run's validation set)."),
    "image_dir": FlagSpec("string", None, "Folder of the images (default with a run "
                          "directory: the run's)."),
    "det_file": FlagSpec("string", None, "Person detections JSON (COCO results format); "
                         "default: ground-truth boxes (or the run's choice)."),
    "det_score_threshold": FlagSpec("float", None, "Ignore detections scoring below this "
                                    "(default: the run's data.det_score_threshold, else 0)."),
    "head_boxes_mat": FlagSpec("string", None, "MPII: gt_valid.mat with head boxes (default: "
                               "the records' head_box fields)."),
    "calib_ann_file": FlagSpec("string", None, "Calibration annotations (default: the "
                               "training set of --model's run)."),
    "calib_image_dir": FlagSpec("string", None, "Calibration images."),
    "num_calibration": FlagSpec("integer", None, "Calibration crops for int8 files "
                                "(datasets.DEFAULT_NUM_CALIBRATION)."),
    "flip_test": FlagSpec("bool", None, "Average with the flipped image's heatmaps (default: "
                          "the model's training config)."),
    "decode": FlagSpec("enum", None, "Heatmap decoder (default: the model's training "
                       "config)."),
    "batch_size": FlagSpec("integer", None, "Crops per batch (default: the config's)."),
    "epochs": FlagSpec("integer", None, "Epochs (default: the config's)."),
    "learning_rate": FlagSpec("float", None, "Peak learning rate (default: the config's)."),
    "strategy": FlagSpec("enum", "default", "tf.distribute strategy (multi_worker reads "
                         "TF_CONFIG)."),
    "deterministic": FlagSpec("bool", False, "Enable TensorFlow op determinism."),
    "formats": FlagSpec("list", None, "File formats: float32, float16, int8_ptq, int8_qat."),
    "runtime": FlagSpec("enum", "cpu", "Where a .tflite runs: cpu (LiteRT + XNNPACK), "
                        "cpu_reference (LiteRT's builtin kernels), gpu (LiteRT's GPU "
                        "accelerator), tflite2.14 (TensorFlow Lite 2.14, make runtimes), web / "
                        "web_gpu (LiteRT.js on wasm / WebGPU in headless Chromium, make web)."),
    "num_threads": FlagSpec("integer", None, "LiteRT CPU threads (default: all cores)."),
    "thread_counts": FlagSpec("list", ["1", "2"], "CPU thread counts to time, "
                              "comma-separated."),
    "input_size": FlagSpec("string", None, "HxW, e.g. 256x192."),
    "runs": FlagSpec("integer", 50, "Timed runs per measurement."),
    "rounds": FlagSpec("integer", 3, "Interleaved rounds (the median of rounds is quoted)."),
    "max_drop": FlagSpec("float", None, "Exit 1 when the .tflite scores more than this many "
                         "points below the float model (COCO AP or MPII PCKh, named in the "
                         "output; negative: demand a gain; parity_gate.DEFAULT_MAX_DROP_POINTS)."),
    "seed": FlagSpec("integer", 0, "Random seed."),
    "out_dir": FlagSpec("string", None, "The folder the tool writes into."),
    "out_json": FlagSpec("string", None, "Where the tool writes its JSON result record."),
    "out": FlagSpec("string", None, "The one file the tool writes (an image, a video, a "
                    "Markdown page)."),
}

# Spellings of shared concepts that no tool may define (the concept's one spelling after the
# arrow). tests/test_cli.py fails on any of them.
REJECTED_SPELLINGS: dict[str, str] = {
    "model_dir": "run_dir (written) or model (read)",
    "weights": "model", "compare_to": "model", "init_from": "model", "qat_dir": "model",
    "models": "zoo_models", "threads": "thread_counts or num_threads",
    "json_out": "out_json", "out_file": "out_json", "boxes": "det_file",
    "box_score_threshold": "det_score_threshold", "max_ap_drop": "max_drop",
    "tflite_file": "tflite", "det_thr": "det_score_threshold", "num_calib": "num_calibration",
}

# Shared flags with one default in every tool: what a tool reads, and every threshold and
# evaluation setting (a tool may give its own default to the others: where it writes, how long
# it times, which sizes or formats it sweeps). max_drop and num_calibration default to a library
# constant above this layer, which every tool passes (tests/test_cli.py checks).
FIXED_DEFAULTS = {"model", "run_dir", "qat_model", "tflite", "config", "set", "ann_file",
                  "image_dir", "det_file", "det_score_threshold", "head_boxes_mat",
                  "calib_ann_file", "calib_image_dir", "flip_test", "decode", "runtime",
                  "strategy", "deterministic"}

_DEFINERS: dict[str, Callable[..., Any]] = {
    "string": flags.DEFINE_string, "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float, "bool": flags.DEFINE_bool, "list": flags.DEFINE_list,
    "multi_string": flags.DEFINE_multi_string,
}


_UNSET = object()


def flag(name: str, *, required: bool = False, enum_values: Sequence[str] | None = None,
         help_note: str | None = None, default: Any = _UNSET) -> flags.FlagHolder:
    """Defines one shared flag (a key of ``SHARED_FLAGS``) for the calling tool.

    Args:
        required: the tool cannot run without it.
        enum_values: the allowed values of an enum flag (the tool knows them: runtimes, ...).
        help_note: a sentence added to the help, saying what the flag is in this tool.
        default: a tool's own default, for a flag not in ``FIXED_DEFAULTS``.
    """
    spec = SHARED_FLAGS[name]
    if default is not _UNSET and name in FIXED_DEFAULTS:
        raise ValueError(f"--{name} keeps its one default ({spec.default!r})")
    value = spec.default if default is _UNSET else default
    text = spec.help + (f" {help_note}" if help_note else "")
    if spec.kind == "enum":
        holder = flags.DEFINE_enum(name, value, list(enum_values), text)
    else:
        holder = _DEFINERS[spec.kind](name, value, text)
    if required:
        flags.mark_flag_as_required(name)
    return holder


def define(*names: str, required: Sequence[str] = (), enum_values: dict[str, list] | None = None,
           help_notes: dict[str, str] | None = None, defaults: dict[str, Any] | None = None
           ) -> dict[str, flags.FlagHolder]:
    """``flag`` for several shared flags; the keyword arguments are keyed by flag name.

    Returns:
        name -> FlagHolder.
    """
    enum_values, help_notes, defaults = enum_values or {}, help_notes or {}, defaults or {}
    return {name: flag(name, required=name in required, enum_values=enum_values.get(name),
                       help_note=help_notes.get(name), default=defaults.get(name, _UNSET))
            for name in names}


def parse_hw(text: str) -> tuple[int, int]:
    """Parses "256x192" into (256, 192) = (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected a size like 256x192 (height x width), got {text!r}") from None
    return h, w


class BadInput(Exception):
    """Input a tool cannot use: exit status 2 with this message (``run_tool``)."""


def run_tool(main: Callable[[list[str]], int], bad_input: tuple[type[BaseException], ...] = ()
             ) -> None:
    """``absl.app.run(main)``, where ``BadInput`` and the given exception types (a path that
    is not what the tool expected, a runtime that cannot run here) end the tool with one line
    "error: ..." on stderr and exit status 2, instead of a stack trace."""
    caught = (BadInput, *bad_input)

    def wrapped(argv):
        try:
            return main(argv)
        except caught as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    app.run(wrapped)
