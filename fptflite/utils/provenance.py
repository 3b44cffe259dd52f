"""Where and when a figure was measured: the provenance block of every results JSON.

    {"command": "python -m conversion.benchmark --threads=2", "machine": "Intel(R) Xeon(R)
     Processor, 2 cores, Linux-6.1-x86_64-with-glibc2.36", "date": "2026-11-22"}

``benchmarks/report.py`` renders a results file only with this block, so BENCHMARKS.md shows
every figure next to the command, the machine and the (UTC) date it came from. Standard
library only: no TensorFlow, so any script can call it before or after its measurement.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence

CPUINFO = "/proc/cpuinfo"
KEYS = ("command", "machine", "date")


def cpu_model(cpuinfo_path: str = CPUINFO) -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``, else 'unknown
    CPU'."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(cpuinfo_path: str = CPUINFO) -> str:
    """'<CPU model>, <N> cores, <platform>' of this machine."""
    cores = os.cpu_count() or 0
    return f"{cpu_model(cpuinfo_path)}, {cores} core{'s' if cores != 1 else ''}, " \
           f"{platform.platform()}"


def utc_date(now: datetime.datetime | None = None) -> str:
    """Today's date in UTC, ISO format (YYYY-MM-DD)."""
    return (now or datetime.datetime.now(datetime.UTC)).date().isoformat()


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line; a script path run from the checkout becomes
    ``python -m package.module`` when it is one (so the line can be pasted again)."""
    args = list(argv)
    if not args:
        return ""
    first = args[0]
    if first.endswith(".py"):
        rel = os.path.relpath(os.path.abspath(first))
        if not rel.startswith(".."):
            module = rel[:-3].replace(os.sep, ".")
            args = ["python", "-m", module.removesuffix(".__main__"), *args[1:]]
    return shlex.join(args)


def provenance(argv: Sequence[str] | str | None = None) -> dict[str, str]:
    """The provenance block of a measurement made now, on this machine.

    Args:
        argv: the command that measured (``sys.argv`` when None); a string is taken as the
            command line itself (e.g. "make demo").

    Returns:
        {"command", "machine", "date"}.
    """
    if argv is None:
        argv = sys.argv
    command = argv if isinstance(argv, str) else command_line(argv)
    return {"command": command, "machine": machine(), "date": utc_date()}
