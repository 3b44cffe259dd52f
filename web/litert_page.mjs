// LiteRT.js in a page: load the runtime once, compile a .tflite on 'wasm' or 'webgpu', run
// uint8/float32/int32 batches one crop at a time. Shared by runner.html (the `web` runtime's
// worker page) and pose/index.html (the pose page). The runtime files come from the local
// node_modules (`make web`); the page's import map names them, nothing is fetched elsewhere.
import {
  Tensor, isWebGPUSupported, loadAndCompile, loadLiteRt, supportsFeature,
} from '@litertjs/core';

export const WASM_DIR = '/node_modules/@litertjs/core/wasm/';

let loaded = null;

/**
 * Loads LiteRT.js's wasm module once per page.
 * @param {{threads?: boolean, jspi?: boolean}} options threads: the threaded build (needs a
 *     cross-origin isolated page); jspi: the JSPI build (WebGPU/wasm partitioning).
 *     The two are exclusive, as in LiteRT.js.
 * @return {Promise<object>} what was loaded: {threads, jspi, crossOriginIsolated}.
 */
export async function startLiteRt(options = {}) {
  if (loaded) return loaded;
  const threads = Boolean(options.threads) && self.crossOriginIsolated &&
      await supportsFeature('threads');
  const jspi = !threads && Boolean(options.jspi) && await supportsFeature('jspi');
  await loadLiteRt(WASM_DIR, {threads, jspi});
  loaded = {threads, jspi, crossOriginIsolated: self.crossOriginIsolated};
  return loaded;
}

/** Whether the browser offers a WebGPU adapter (LiteRT.js's check plus an adapter). */
export async function webGpuAvailable() {
  if (!isWebGPUSupported()) return false;
  try {
    return Boolean(await navigator.gpu.requestAdapter());
  } catch (e) {
    return false;
  }
}

/**
 * Compiles a model for one accelerator.
 * @param {string|Uint8Array} model URL or bytes of the .tflite.
 * @param {'wasm'|'webgpu'} accelerator where it runs.
 * @param {number} numThreads wasm threads (0 = LiteRT.js's default).
 * @return {Promise<object>} {model, info}: info has the accelerator the model really runs on
 *     (LiteRT.js falls back to wasm when WebGPU cannot take every op and JSPI is absent),
 *     isFullyAccelerated, and the inputs' and outputs' name, dtype and shape.
 */
export async function compile(model, accelerator, numThreads = 0) {
  const options = {accelerator};
  if (accelerator === 'wasm' && numThreads > 0) options.cpuOptions = {numThreads};
  const compiled = await loadAndCompile(model, options);
  const describe = (d) => ({name: d.name, dtype: d.dtype, shape: Array.from(d.shape)});
  return {
    model: compiled,
    info: {
      accelerator: compiled.options.accelerator,
      numThreads: compiled.options.cpuOptions?.numThreads ?? null,
      isFullyAccelerated: compiled.isFullyAccelerated,
      inputs: compiled.getInputDetails().map(describe),
      outputs: compiled.getOutputDetails().map(describe),
    },
  };
}

const TYPED = {uint8: Uint8Array, float32: Float32Array, int32: Int32Array};

/**
 * Runs one input through a single-input, single-output model.
 * @param {object} compiled a CompiledModel of `compile`.
 * @param {Uint8Array|Float32Array|Int32Array} data the input, in the input's dtype and
 *     layout (e.g. uint8 [1, S, S, 3] RGB).
 * @return {Promise<Uint8Array|Float32Array|Int32Array>} the output (a copy).
 */
export async function runOnce(compiled, data) {
  const detail = compiled.getInputDetails()[0];
  const input = new Tensor(data, Array.from(detail.shape));
  let outputs;
  try {
    outputs = await compiled.run(input);
  } finally {
    input.delete();
  }
  const host = outputs[0].accelerator === 'wasm' ? outputs[0] :
      await outputs[0].moveTo('wasm');
  const result = host.toTypedArray().slice();
  host.delete();
  if (host !== outputs[0]) outputs[0].delete();
  return result;
}

/**
 * Runs a batch [B, ...] one item at a time (LiteRT.js takes the file's static batch of 1).
 * @param {object} compiled a CompiledModel of `compile`.
 * @param {Uint8Array|Float32Array|Int32Array} batch B inputs back to back.
 * @param {number} count B.
 * @return {Promise<Uint8Array|Float32Array|Int32Array>} B outputs back to back.
 */
export async function runBatch(compiled, batch, count) {
  const inDetail = compiled.getInputDetails()[0];
  const outDetail = compiled.getOutputDetails()[0];
  const inSize = inDetail.shape.reduce((a, b) => a * b, 1);
  const outSize = outDetail.shape.reduce((a, b) => a * b, 1);
  const out = new TYPED[outDetail.dtype](count * outSize);
  for (let i = 0; i < count; i++) {
    out.set(await runOnce(compiled, batch.subarray(i * inSize, (i + 1) * inSize)), i * outSize);
  }
  return out;
}

export const typedArrayOf = (dtype) => TYPED[dtype];
