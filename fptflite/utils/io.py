"""Atomic file output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path next to ``path``; renames it over ``path`` on success only.

    The temporary name keeps ``path``'s extension (Keras and TFLite writers check it).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    _, ext = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json_atomic(path: str, obj: Any, indent: int | None = 2) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))
