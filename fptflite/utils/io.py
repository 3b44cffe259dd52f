"""Atomic file output: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files get the mode a plain open() would give them (0666 minus the umask), not mkstemp's 0600:
# outputs such as the Android assets are copied and shared.
_FILE_MODE = 0o666 & ~_process_umask()


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
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically: readers see the old file or all of the new one."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str, obj: Any, indent: int | None = 2) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=indent).encode("utf-8"))
