"""The browser as a runtime: static batch-1 files (signature copy and conversion), and the
same file in LiteRT.js (headless Chromium, ``web`` / ``web_gpu``) against LiteRT on the CPU."""

import numpy as np
import pytest
from helpers.runtimes import require_all, session_or_skip
from helpers.tiny_net import tiny_net

from fptflite.models import build_model
from fptflite.tflite import convert, litert, runtimes, static_batch, web_runtime

SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small conv net with sigmoid outputs as int8 (uint8 I/O), int8 (int8 I/O) and float32
    files, all with the converter's dynamic batch [-1, 16, 16, 3]."""
    model, crops = tiny_net(SIZE)
    root = tmp_path_factory.mktemp("web")
    paths = {}
    for name, fmt, io in (("int8", "int8_ptq", "uint8"), ("int8_io", "int8_ptq", "int8"),
                          ("float32", "float32", "uint8")):
        paths[name] = str(root / f"{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(convert.convert(model, fmt, None if fmt == "float32" else crops, io, io))
    return paths, crops


def _signature(path):
    return list(litert.load_interpreter(path).get_input_details()[0]["shape_signature"])


def test_static_batch_copy_fixes_the_signature_and_keeps_the_outputs(files, tmp_path):
    paths, crops = files
    data = open(paths["int8"], "rb").read()
    assert static_batch.input_signatures(data) == [[-1, SIZE, SIZE, 3]]
    copy = static_batch.static_batch_copy(data)
    assert len(copy) == len(data) and not static_batch.has_dynamic_batch(copy)
    path = tmp_path / "static.tflite"
    path.write_bytes(copy)
    interp = litert.load_interpreter(str(path))
    assert all(-1 not in list(t["shape_signature"]) for t in interp.get_tensor_details())
    x = np.round(crops[:1]).astype(np.uint8)
    np.testing.assert_array_equal(runtimes.open_session("cpu", str(path)).run(x),
                                  runtimes.open_session("cpu", paths["int8"]).run(x))
    assert static_batch.static_batch_copy(copy) == copy


@pytest.fixture(scope="module")
def simplebaseline(tmp_path_factory):
    """SimpleBaseline-MNV2-0.5 64x64 (random weights) as float32 with the converter's dynamic
    batch (None) and with a static batch of 1."""
    model = build_model("simplebaseline_mnv2_050", (64, 64))
    root = tmp_path_factory.mktemp("simplebaseline")
    files = {}
    for batch in (None, 1):
        files[batch] = str(root / f"b{batch}.tflite")
        with open(files[batch], "wb") as f:
            f.write(convert.convert(model, "float32", batch_size=batch))
    return files


def test_batch_one_conversion_folds_the_batch_shape_ops(simplebaseline):
    """SimpleBaseline's TRANSPOSE_CONV output shapes come from SHAPE / STRIDED_SLICE / PACK on
    the batch; traced at batch 1 they fold away, and the heatmaps are the same."""
    files = simplebaseline
    ops = {b: {op.name for op in litert.list_ops(p)} for b, p in files.items()}
    assert {"SHAPE", "STRIDED_SLICE", "PACK"} <= ops[None]
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & ops[1] and "TRANSPOSE_CONV" in ops[1]
    assert _signature(files[None]) == [-1, 64, 64, 3] and _signature(files[1]) == [1, 64, 64, 3]
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    a = runtimes.open_session("cpu", files[1]).run(x)
    b = runtimes.open_session("cpu", files[None]).run(x)
    np.testing.assert_allclose(a, b, atol=1e-5)  # the same graph, ops folded
    names = [litert.load_interpreter(p).get_signature_list() for p in files.values()]
    assert names[0] == names[1]  # the same input and output names


def test_batch_one_simplebaseline_compiles_on_the_gpu_accelerator(simplebaseline):
    """Dynamic batch: LiteRT's GPU accelerator refuses the graph (dynamic-sized tensors).
    Batch 1: it compiles, the three TRANSPOSE_CONV ops (version 4; the accelerator takes 3)
    on the CPU and the rest on the GPU (measured: 63 ops on the GPU, 4 on the CPU)."""
    session_or_skip("gpu", simplebaseline[1])
    dynamic = runtimes.gpu_residency(simplebaseline[None])
    assert not dynamic["checked"] and "dynamic-sized tensors" in dynamic["reason"]
    static = runtimes.gpu_residency(simplebaseline[1])
    assert static["checked"] and not static["fully_accelerated"]
    log = " ".join(static["cpu_ops_log"])
    assert "TRANSPOSE_CONV: Max version supported: 3. Requested version 4." in log
    assert "63 operations will run on the GPU, and the remaining 4 operations will run on " \
        "the CPU" in log


def test_web_gpu_residency_says_which_ops_fall_back_to_wasm(simplebaseline, files):
    """LiteRT.js on WebGPU: the batch-1 SimpleBaseline keeps 4 of its 67 ops off WebGPU
    (partitioned to wasm, the JSPI build; its ``isFullyAccelerated`` still says true), and
    the delegate's report in the runtime's log names them; the FasterPose int8 file runs
    whole on WebGPU."""
    session_or_skip("web_gpu", simplebaseline[1]).close()
    partial = web_runtime.web_gpu_residency(simplebaseline[1])
    print(partial)
    assert partial["checked"] and not partial["fully_accelerated"]
    assert (partial["gpu_ops"], partial["cpu_ops"]) == (63, 4)
    assert "Following operations are not supported by GPU delegate" in partial["cpu_ops_log"][0]
    assert any("TRANSPOSE_CONV" in ln for ln in partial["cpu_ops_log"][1:-1])
    whole = web_runtime.web_gpu_residency(files[0]["int8"])
    assert whole == {"checked": True, "fully_accelerated": True, "cpu_ops_log": [],
                     "gpu_ops": None, "cpu_ops": None}


def test_residency_log_parsing_by_hand():
    lines = ["[page log] loading", "[page error] ERROR: Following operations are not "
             "supported by GPU delegate:", "[page error] GATHER_ND: Operation is not supported.",
             "[page error] 10 operations will run on the GPU, and the remaining 2 operations "
             "will run on the CPU.", "[page warn] [LiteRT] Model not fully compiled for webgpu."]
    r = web_runtime.residency_from_log(lines, True)
    assert (r["fully_accelerated"], r["gpu_ops"], r["cpu_ops"]) == (False, 10, 2)
    assert r["cpu_ops_log"][1] == "GATHER_ND: Operation is not supported."
    none = web_runtime.residency_from_log(["No operations will run on the GPU, and all 7 "
                                           "operations will run on the CPU."], False)
    assert (none["fully_accelerated"], none["gpu_ops"], none["cpu_ops"]) == (False, 0, 7)


def test_web_runs_the_int8_file_as_the_cpu_does(files):
    """LiteRT.js on wasm runs XNNPACK's int8 kernels: measured identical to LiteRT's CPU
    runtime. The dynamic-batch file runs as a static copy, batches one crop at a time."""
    paths, crops = files
    web = session_or_skip("web", paths["int8"])
    assert web.static_copy and web.info["accelerator"] == "wasm"
    assert web.input.shape == (1, SIZE, SIZE, 3) and web.input.dtype == np.uint8
    x = np.round(crops).astype(np.uint8)
    out = web.run(x)
    assert out.shape == (16, SIZE, SIZE, 5) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, runtimes.open_session("cpu", paths["int8"]).run(x))
    f32 = session_or_skip("web", paths["float32"]).run(crops)
    # Measured: max 1.2e-7 (float32 rounding of a different summation order).
    np.testing.assert_allclose(f32, runtimes.open_session("cpu", paths["float32"]).run(crops),
                               atol=1e-6)


def test_web_threaded_build_gives_the_same_outputs(files):
    paths, crops = files
    web = session_or_skip("web", paths["int8"])
    threaded = web_runtime.WebSession(paths["int8"], num_threads=2)
    assert threaded.info["runtime"]["threads"] and threaded.info["numThreads"] == 2
    x = np.round(crops[:4]).astype(np.uint8)
    np.testing.assert_array_equal(threaded.run(x), web.run(x))


def test_web_gpu_runs_the_file_on_webgpu(files):
    """WebGPU (lavapipe on a machine without a GPU): an int8 file runs in float on
    dequantized weights; measured identical to the CPU on this net (max 0 steps), float32
    within 1.2e-7."""
    paths, crops = files
    gpu = session_or_skip("web_gpu", paths["float32"])
    assert gpu.info["accelerator"] == "webgpu" and gpu.info["isFullyAccelerated"]
    np.testing.assert_allclose(gpu.run(crops),
                               runtimes.open_session("cpu", paths["float32"]).run(crops),
                               atol=1e-6)
    x = np.round(crops).astype(np.uint8)
    step = 1  # one uint8 output step
    diff = np.abs(session_or_skip("web_gpu", paths["int8"]).run(x).astype(int)
                  - runtimes.open_session("cpu", paths["int8"]).run(x))
    assert diff.max() <= step


def test_web_says_what_is_missing_and_what_it_cannot_load(files, tmp_path, monkeypatch):
    paths, _ = files
    if require_all() or not web_runtime.missing():
        with pytest.raises(runtimes.RuntimeUnavailable, match="Element type INT8"):
            runtimes.open_session("web", paths["int8_io"])  # LiteRT.js has no int8 tensors
    monkeypatch.setenv("FPTFLITE_WEB_DIR", str(tmp_path))  # no node_modules there
    monkeypatch.setenv("FPTFLITE_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(runtimes.RuntimeUnavailable) as e:
        runtimes.open_session("web_gpu", paths["int8"])
    message = str(e.value)
    assert message.startswith("web_gpu: missing") and message.endswith(": make web")
    assert "@litertjs/core" in message and "puppeteer-core" in message and "Chromium" in message
    assert "web" in runtimes.RUNTIMES and "web_gpu" in runtimes.RUNTIMES
