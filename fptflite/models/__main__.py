"""Lists the zoo or prints one model's size: ``python -m fptflite.models --list``."""

import json
import sys

from absl import app, flags

from fptflite.models import MODELS, build_model, summarize
from fptflite.utils import cli
from fptflite.utils.cli import parse_hw

_MODEL = cli.flag("zoo_model")
_LIST = flags.DEFINE_bool("list", False, "Print the zoo as a table.")
_INPUT = cli.flag("input_size", default="256x192")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object for --zoo_model.")


def main(argv):
    del argv
    size = parse_hw(_INPUT.value)
    if _LIST.value:
        print(f"{'model':<22} {'description':<32} {'params (M)':>10} {'GMACs':>7}  output")
        for name, entry in MODELS.items():
            s = summarize(build_model(name, input_size=size))
            print(f"{name:<22} {entry.description:<32} {s['params'] / 1e6:>10.2f} "
                  f"{s['macs'] / 1e9:>7.3f}  {'x'.join(map(str, s['output_shape']))}")
        return 0
    if not _MODEL.value:
        raise app.UsageError("give --list or --zoo_model=NAME")
    s = summarize(build_model(_MODEL.value, input_size=size))
    s["input_size"] = list(size)
    if _JSON.value:
        print(json.dumps(s))
    else:
        for k, v in s.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
