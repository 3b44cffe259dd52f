"""Serving the pose page (``web/pose/``) with a drop-in model on 127.0.0.1 (TensorFlow-free).

The server serves the checkout's ``web/`` folder (the page, LiteRT.js from
``web/node_modules`` after ``make web``) and the model at ``/model.tflite``, with the
cross-origin isolation headers (COOP ``same-origin``, COEP ``require-corp``) that threaded
wasm needs (``SharedArrayBuffer``). A request whose path resolves outside ``web/`` is refused
(403) with the reason in words.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import subprocess
import tempfile
import threading
import urllib.parse

import numpy as np

from fptflite.keypoints import NUM_KEYPOINTS
from fptflite.tflite import litert, static_batch, web_runtime

DROPIN_FILENAME = "fasterpose_singlepose.tflite"
MODEL_URL = "/model.tflite"
PAGE_URL = "/pose/index.html"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class ModelError(ValueError):
    """The model cannot be served to the page (the message says why, in words)."""


def find_dropin(run_or_file: str) -> tuple[str, str]:
    """The drop-in file of ``--model``: the file itself, or for a directory (a training run)
    ``RUN/android/fasterpose_singlepose.tflite``, else the ``android_demo_assets/`` copy of the
    checkout that holds the run (``make demo`` writes ``runs/demo`` and
    ``android_demo_assets/``), looked for in RUN's parent folders.

    Returns:
        (path, how it was found).

    Raises:
        ModelError: nothing there, naming every place looked at.
    """
    if os.path.isfile(run_or_file):
        return run_or_file, "the file given"
    if not os.path.isdir(run_or_file):
        raise ModelError(f"--model {run_or_file}: no such file or directory")
    tried = [os.path.join(run_or_file, "android", DROPIN_FILENAME)]
    parent = os.path.abspath(run_or_file)
    for _ in range(3):
        parent = os.path.dirname(parent)
        tried.append(os.path.join(parent, "android_demo_assets", DROPIN_FILENAME))
    for i, path in enumerate(tried):
        if os.path.isfile(path):
            return path, "the run's android/ folder" if i == 0 else \
                "the android_demo_assets/ folder of the run's checkout"
    raise ModelError(f"--model {run_or_file}: no drop-in found; looked at {', '.join(tried)} "
                     "(export one with python -m conversion.export_android)")


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """The bytes the page gets and what was checked."""

    path: str
    data: bytes
    input_size: int
    static_copy: bool  # the file had a dynamic batch: a static batch-1 copy is served


def check_dropin(path: str) -> ServedModel:
    """Checks that ``path`` is a pose drop-in the page can run: one uint8 [1, S, S, 3] input,
    one float32 [1, 1, 17, 3] output. A dynamic batch ([-1, S, S, 3], which LiteRT.js
    refuses) is served as a static batch-1 copy.

    Raises:
        ModelError: what is wrong, in words.
    """
    try:
        interp = litert.load_interpreter(path, delegates=False)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise ModelError(f"{path} is not a model LiteRT can load: {e}") from e
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ModelError(f"{path} has {len(ins)} inputs and {len(outs)} outputs; a pose "
                         "drop-in has one image input and one keypoint output")
    shape, dtype = [int(d) for d in ins[0]["shape"]], np.dtype(ins[0]["dtype"])
    if dtype != np.uint8 or len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] \
            or shape[3] != 3:
        raise ModelError(f"{path}: its input is {dtype} {shape}; a pose drop-in takes one "
                         "uint8 RGB square crop [1, S, S, 3]")
    out_shape, out_dtype = [int(d) for d in outs[0]["shape"]], np.dtype(outs[0]["dtype"])
    if out_dtype != np.float32 or out_shape != [1, 1, NUM_KEYPOINTS, 3]:
        raise ModelError(
            f"{path}: its output is {out_dtype} {out_shape}, not a pose drop-in's keypoints: "
            f"the page needs float32 [1, 1, {NUM_KEYPOINTS}, 3] (y, x, score of the 17 COCO "
            "keypoints, like MoveNet); a heatmap file needs python -m "
            "conversion.export_android first")
    with open(path, "rb") as f:
        data = f.read()
    dynamic = static_batch.has_dynamic_batch(data)
    if dynamic:
        data = static_batch.static_batch_copy(data)
    return ServedModel(path, data, shape[1], dynamic)


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of ``directory`` plus the model; isolation headers; nothing outside."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm",
                      ".tflite": "application/octet-stream"}

    def __init__(self, *args, model: ServedModel, directory: str, **kwargs):
        self.model = model
        super().__init__(*args, directory=directory, **kwargs)

    def end_headers(self):
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # quiet: the page's requests are not news

    def _inside(self, url_path: str) -> bool:
        root = os.path.realpath(self.directory)
        target = os.path.realpath(os.path.join(root, url_path.lstrip("/")))
        return target == root or target.startswith(root + os.sep)

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        query = urllib.parse.urlsplit(self.path).query
        if path == "/":
            self.send_response(302)
            self.send_header("Location", PAGE_URL + (f"?{query}" if query else ""))
            self.end_headers()
            return
        if path == MODEL_URL:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(self.model.data)))
            self.end_headers()
            self.wfile.write(self.model.data)
            return
        if not self._inside(path):
            self.send_error(403, "Forbidden", f"{path} is outside the served directory")
            return
        super().do_GET()

    def do_HEAD(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path != MODEL_URL and not self._inside(path):
            self.send_error(403, "Forbidden", f"{path} is outside the served directory")
            return
        super().do_HEAD()


def make_server(model: ServedModel, port: int = 0, directory: str | None = None
                ) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0: a free port) for the page and ``model``.

    Raises:
        ModelError: ``make web`` has not been run (no LiteRT.js to serve).
    """
    directory = directory or web_runtime.web_dir()
    if not os.path.isfile(os.path.join(directory, "node_modules", "@litertjs", "core",
                                       "package.json")):
        raise ModelError(f"LiteRT.js is missing in {directory}/node_modules: make web")
    handler = functools.partial(PageHandler, model=model, directory=directory)
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def serve_in_thread(model: ServedModel, port: int = 0
                    ) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Starts ``make_server`` in a daemon thread; returns it and its base URL (for tests and
    benchmarks; call ``server.shutdown()`` when done)."""
    server = make_server(model, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def drive_page(url: str, upload: str | None = None, boxes: str | None = None,
               screenshot: str | None = None, webgpu: bool = False, wait: str | None = None,
               result: str | None = None, timeout: float = 300) -> dict:
    """Opens ``url`` in headless Chromium (``web/page_driver.mjs``) and returns what the page
    computed: ``window.pose`` (or the ``result`` expression), after uploading ``upload``
    through the page's file input (with ``boxes`` JSON in its boxes field) and waiting for it.

    Returns:
        {"result": the page's value (JSON), "log": the page's console lines, "browser":
        Chromium's name and version, e.g. "Chrome/156.0.8078.129"}.

    Raises:
        RuntimeError: the driver failed (with its stderr).
    """
    with tempfile.TemporaryDirectory(prefix="fptflite-page-") as tmp:
        out = os.path.join(tmp, "page.json")
        cmd = ["node", os.path.join(web_runtime.web_dir(), "page_driver.mjs"), url, out,
               f"--timeout={timeout}"]
        cmd += [f"--upload={upload}"] if upload else []
        cmd += [f"--boxes={boxes}"] if boxes else []
        cmd += [f"--screenshot={screenshot}"] if screenshot else []
        cmd += ["--webgpu"] if webgpu else []
        cmd += [f"--wait={wait}"] if wait else []
        cmd += [f"--result={result}"] if result else []
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", tmp)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60,
                              env=env)
        if done.returncode or not os.path.isfile(out):
            raise RuntimeError(f"page_driver failed on {url}: {done.stderr.strip()[-2000:]}")
        with open(out) as f:
            return json.load(f)
