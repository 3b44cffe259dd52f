"""Serves the pose page with a drop-in model on 127.0.0.1 and prints the address.

    python -m fptflite.serve_web --model=RUN_OR_FILE [--port=8000]

``--model`` is a drop-in ``.tflite`` or a training run dir (its drop-in: RUN/android/
fasterpose_singlepose.tflite, else the checkout's android_demo_assets/ copy). Open the
printed address in a browser: the page runs the model in LiteRT.js on an image, a video or
the webcam. Needs ``make web`` (LiteRT.js in web/node_modules). TensorFlow is not imported.
Exit codes: 0 after Ctrl-C, 2 when the model or the page's files are unusable (the reason is
printed).
"""

import sys

from absl import flags

from fptflite.serving import web_server
from fptflite.utils import cli

_MODEL = cli.flag("model", required=True, help_note="Here the drop-in .tflite, or a run "
                  "directory (its drop-in).")
_PORT = flags.DEFINE_integer("port", 8000, "Port on 127.0.0.1 (0: any free port).")


def main(argv):
    del argv
    try:
        path, how = web_server.find_dropin(_MODEL.value)
        model = web_server.check_dropin(path)
        server = web_server.make_server(model, _PORT.value)
    except (web_server.ModelError, OSError) as e:
        print(f"serve_web: {e}", file=sys.stderr)
        return 2
    print(f"model: {path} ({how}), {model.input_size}x{model.input_size} input"
          + (", dynamic batch: served as a static batch-1 copy" if model.static_copy else ""))
    print(f"serving the pose page at http://127.0.0.1:{server.server_address[1]}/ "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    cli.run_tool(main)
