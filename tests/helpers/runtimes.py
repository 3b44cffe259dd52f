"""Which runtimes a test may use: all of them in CI (``FPTFLITE_REQUIRE_RUNTIMES=1``, set by
.ci/run after installing them), else those that start here, the others skipped with the
reason."""

import os

import pytest

from fptflite.tflite import runtimes


def require_all() -> bool:
    return os.environ.get("FPTFLITE_REQUIRE_RUNTIMES") == "1"


def check_ran(rows: dict) -> None:
    """Fails (CI) or skips (elsewhere) when a runtime of a runtimes table did not run."""
    missing = {n: r["reason"] for n, r in rows.items() if not r["ran"]}
    if missing and require_all():
        pytest.fail(f"runtimes that must run in CI did not: {missing}")


def session_or_skip(name: str, path: str) -> runtimes.Session:
    try:
        return runtimes.open_session(name, path)
    except runtimes.RuntimeUnavailable as e:
        if require_all():
            raise
        pytest.skip(f"runtime {name} cannot run here: {e}")
