"""Latency benchmark (see conversion/benchmark.py): python benchmarks/latency.py [flags]."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402

import fptflite  # noqa: E402,F401
from conversion.benchmark import main  # noqa: E402

if __name__ == "__main__":
    app.run(main)
