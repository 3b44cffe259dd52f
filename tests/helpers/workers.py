"""Runs ``training.train`` as a MultiWorkerMirroredStrategy cluster of processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(args: list[str], log_dir: pathlib.Path, num_workers: int = 2,
                timeout: float = 300) -> list[str]:
    """Starts ``num_workers`` ``python -m training.train ARGS --strategy=multi_worker``
    processes with their TF_CONFIG and waits for all of them.

    Each worker logs to ``log_dir/workerI.log``, never to a pipe: a worker blocked on a full
    pipe (its ~77 KB of logs exceed the 64 KiB pipe buffer) while the harness reads another
    one leaves every other worker waiting in an all-reduce for ever. When a worker fails or
    the cluster outlives ``timeout``, all workers are killed: a hang fails the test instead of
    stalling the suite.

    Returns:
        Each worker's log text, worker 0 (the chief) first.

    Raises:
        AssertionError: a worker exited non-zero or the cluster timed out (with its log tail).
    """
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(num_workers)]}
    paths = [log_dir / f"worker{i}.log" for i in range(num_workers)]
    procs = []
    try:
        for i, path in enumerate(paths):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}))
            with open(path, "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "training.train", *args, "--strategy=multi_worker"],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        for i, p in enumerate(procs):
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker {i} still running after {timeout} s (hung?): "
                                     f"{paths[i].read_text()[-3000:]}") from None
            assert p.returncode == 0, f"worker {i}: {paths[i].read_text()[-3000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [path.read_text() for path in paths]
