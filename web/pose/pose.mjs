// The pose page: compiles /model.tflite (the drop-in: uint8 [1, S, S, 3] -> float32
// [1, 1, 17, 3]) in LiteRT.js and runs images, video files and the webcam through the
// Android sample's pipeline (pipeline.mjs), drawing the keypoints, the skeleton, the scores
// and the inference time. Query parameters: accelerator=wasm|webgpu, threads=N (wasm),
// fps=30 (the step for video files). `window.pose` exposes the results for tests.
import {compile, runOnce, startLiteRt, webGpuAvailable} from '/litert_page.mjs';
import {
  KEYPOINTS, MIN_CROP_KEYPOINT_SCORE, SKELETON, appInput, boxRegion, contractProblem,
  movenetCropRegion, parseOutput, wholeFrameRegion,
} from '/pose/pipeline.mjs';

const params = new URLSearchParams(location.search);
const accelerator = params.get('accelerator') === 'webgpu' ? 'webgpu' : 'wasm';
const threads = Number(params.get('threads') ||
                       Math.min(4, navigator.hardwareConcurrency || 1));
const fps = Number(params.get('fps') || 30);

const $ = (id) => document.getElementById(id);
const canvas = $('canvas');
const ctx = canvas.getContext('2d');
const scratch = document.createElement('canvas');
const scratchCtx = scratch.getContext('2d', {willReadFrequently: true});

// What tests read: every processed frame, the state, the last error in words.
const pose = {
  ready: false, busy: false, done: false, error: null, info: null, frames: [], times: [],
};
window.pose = pose;

let model = null;
let inputSize = 0;
let stopLive = null;

function fail(message) {
  pose.error = message;
  pose.busy = false;
  pose.done = true;
  $('error').textContent = message;
}

function clearError() {
  pose.error = null;
  $('error').textContent = '';
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** RGBA pixels of an image, bitmap or video frame, at its own resolution. */
function pixelsOf(source, width, height) {
  scratch.width = width;
  scratch.height = height;
  scratchCtx.drawImage(source, 0, 0, width, height);
  return scratchCtx.getImageData(0, 0, width, height).data;
}

/** One person: crop, model, parse. */
async function runRegion(rgba, width, height, region) {
  const {input, region: snapped} = appInput(rgba, width, height, region, inputSize);
  const t0 = performance.now();
  const output = await runOnce(model, input);
  const ms = performance.now() - t0;
  pose.times.push(ms);
  return {...parseOutput(output, snapped), region: snapped, ms,
          output: Array.from(output), input: toBase64(input)};
}

function meanMs() {
  const recent = pose.times.slice(-50);
  return recent.reduce((a, b) => a + b, 0) / Math.max(recent.length, 1);
}

function draw(source, width, height, people) {
  canvas.width = width;
  canvas.height = height;
  ctx.drawImage(source, 0, 0, width, height);
  const unit = Math.max(2, Math.round(Math.max(width, height) / 200));
  for (const person of people) {
    const {keypoints, scores} = person;
    const shown = (k) => scores[k] > MIN_CROP_KEYPOINT_SCORE;
    ctx.lineWidth = unit;
    ctx.strokeStyle = 'rgba(0, 255, 255, 0.9)';
    for (const [a, b] of SKELETON) {
      if (!shown(a) || !shown(b)) continue;
      ctx.beginPath();
      ctx.moveTo(...keypoints[a]);
      ctx.lineTo(...keypoints[b]);
      ctx.stroke();
    }
    keypoints.forEach((p, k) => {
      if (!shown(k)) return;
      ctx.fillStyle = `hsl(${Math.round(120 * scores[k])}, 100%, 50%)`;
      ctx.beginPath();
      ctx.arc(p[0], p[1], 1.5 * unit, 0, 2 * Math.PI);
      ctx.fill();
    });
    const visible = keypoints.filter((_, k) => shown(k));
    const anchor = visible.length ? visible.reduce((a, p) => [Math.min(a[0], p[0]),
                                                              Math.min(a[1], p[1])]) :
        [person.region.left, person.region.top];
    ctx.font = `bold ${6 * unit}px sans-serif`;
    const y = Math.max(anchor[1] - 2 * unit, 6 * unit);
    ctx.lineWidth = unit;
    ctx.strokeStyle = 'black';
    ctx.strokeText(`person ${person.score.toFixed(2)}`, anchor[0], y);
    ctx.fillStyle = 'yellow';
    ctx.fillText(`person ${person.score.toFixed(2)}`, anchor[0], y);
  }
  const last = pose.times[pose.times.length - 1] || 0;
  const label = `${pose.info.accelerator}${pose.info.accelerator === 'wasm' ?
    ` ${pose.info.numThreads} thr` : ''}: ${last.toFixed(1)} ms/crop (mean ${meanMs().toFixed(1)})`;
  ctx.font = `${7 * unit}px monospace`;
  ctx.fillStyle = 'rgba(0, 0, 0, 0.6)';
  ctx.fillRect(0, 0, ctx.measureText(label).width + 4 * unit, 10 * unit);
  ctx.fillStyle = 'white';
  ctx.fillText(label, 2 * unit, 7.5 * unit);
  $('status').textContent = `${people.length} person(s); inference ${last.toFixed(2)} ms ` +
      `(mean ${meanMs().toFixed(2)} ms over the last ${Math.min(pose.times.length, 50)} crops)`;
  const rows = ['<tr><th>keypoint</th><th>score</th><th>x</th><th>y</th></tr>'];
  if (people.length) {
    KEYPOINTS.forEach((name, k) => {
      const [x, y] = people[0].keypoints[k];
      rows.push(`<tr><td>${name}</td><td>${people[0].scores[k].toFixed(2)}</td>` +
                `<td>${x.toFixed(1)}</td><td>${y.toFixed(1)}</td></tr>`);
    });
  }
  $('scores').innerHTML = rows.join('');
}

function parseBoxes(text, width, height) {
  if (!text.trim()) return null;
  let boxes;
  try {
    boxes = JSON.parse(text);
  } catch (e) {
    throw new Error(`the boxes are not JSON: ${e.message}; give [[x, y, w, h], ...]`);
  }
  if (!Array.isArray(boxes) || !boxes.every((b) => Array.isArray(b) && b.length === 4 &&
                                                   b.every(Number.isFinite))) {
    throw new Error('the boxes must be a list of [x, y, w, h] numbers in image pixels');
  }
  for (const [x, y, w, h] of boxes) {
    if (w <= 0 || h <= 0 || x >= width || y >= height || x + w <= 0 || y + h <= 0) {
      throw new Error(`box [${x}, ${y}, ${w}, ${h}] lies outside the ${width}x${height} image`);
    }
  }
  return boxes;
}

async function runImage(file) {
  let bitmap;
  try {
    // No colour management: the pixels as decoded, like OpenCV's imread.
    bitmap = await createImageBitmap(file, {colorSpaceConversion: 'none'});
  } catch (e) {
    throw new Error(`the browser cannot decode ${file.name || 'this file'} ` +
                    `(${file.type || 'unknown type'}) as an image: ${e.message}`);
  }
  const {width, height} = bitmap;
  const boxes = parseBoxes($('boxes').value, width, height);
  const regions = boxes ? boxes.map(boxRegion) : [wholeFrameRegion(width, height)];
  const rgba = pixelsOf(bitmap, width, height);
  const people = [];
  for (const region of regions) people.push(await runRegion(rgba, width, height, region));
  pose.frames.push({index: 0, width, height, people, boxes});
  draw(bitmap, width, height, people);
}

function videoError(video, name) {
  const codes = {1: 'loading was aborted', 2: 'a network error',
                 3: 'it could not be decoded', 4: 'its format is not supported'};
  const err = video.error;
  return `the browser cannot play ${name}: ${err ? codes[err.code] || err.message : 'unknown'}` +
      (err && err.message ? ` (${err.message})` : '');
}

function waitFor(target, event, errorMessage) {
  return new Promise((resolve, reject) => {
    const ok = () => { target.removeEventListener('error', bad); resolve(); };
    const bad = () => { target.removeEventListener(event, ok); reject(new Error(errorMessage())); };
    target.addEventListener(event, ok, {once: true});
    target.addEventListener('error', bad, {once: true});
  });
}

/** Video files: stepped frame by frame (seeking to frame centres at `fps`), with tracking. */
async function runVideoFile(file) {
  const video = document.createElement('video');
  video.muted = true;
  video.preload = 'auto';
  const name = file.name || 'this video';
  const loaded = waitFor(video, 'loadeddata', () => videoError(video, name));
  video.src = URL.createObjectURL(file);
  await loaded;
  const {videoWidth: width, videoHeight: height, duration} = video;
  if (!width || !height || !(duration > 0)) {
    throw new Error(`${name} has no video frames (${width}x${height}, ${duration} s)`);
  }
  const count = Math.max(1, Math.round(duration * fps));
  let region = wholeFrameRegion(width, height);
  for (let i = 0; i < count; i++) {
    const t = (i + 0.5) / fps;
    if (t >= duration) break;
    const seeked = waitFor(video, 'seeked', () => videoError(video, name));
    video.currentTime = t;
    await seeked;
    const rgba = pixelsOf(video, width, height);
    const person = await runRegion(rgba, width, height, region);
    const next = movenetCropRegion(person.keypoints, person.scores, width, height);
    pose.frames.push({index: i, time: t, width, height, people: [person], nextRegion: next});
    draw(video, width, height, [person]);
    region = next;
  }
  if (!pose.frames.length) throw new Error(`${name} has no video frames`);
  URL.revokeObjectURL(video.src);
}

async function startWebcam() {
  if (stopLive) { stopLive(); return; }
  if (!navigator.mediaDevices?.getUserMedia) {
    fail('this browser gives the page no camera (it needs a secure context such as ' +
         'http://127.0.0.1)');
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
  } catch (e) {
    fail(`no camera: ${e.name}: ${e.message}`);
    return;
  }
  const video = document.createElement('video');
  video.muted = true;
  video.srcObject = stream;
  await video.play();
  let region = null;
  let running = true;
  stopLive = () => {
    running = false;
    stream.getTracks().forEach((t) => t.stop());
    stopLive = null;
    $('webcam').textContent = 'Webcam';
  };
  $('webcam').textContent = 'Stop webcam';
  const step = async () => {
    if (!running) return;
    const {videoWidth: width, videoHeight: height} = video;
    if (width && height) {
      region = region || wholeFrameRegion(width, height);
      const rgba = pixelsOf(video, width, height);
      const person = await runRegion(rgba, width, height, region);
      region = movenetCropRegion(person.keypoints, person.scores, width, height);
      draw(video, width, height, [person]);
    }
    video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);
}

async function onFile(file) {
  if (!model) return;
  if (stopLive) stopLive();
  clearError();
  pose.frames = [];
  pose.busy = true;
  pose.done = false;
  try {
    if ((file.type || '').startsWith('video/') || /\.(webm|mp4|ogv|mov|mkv)$/i.test(file.name)) {
      await runVideoFile(file);
    } else {
      await runImage(file);
    }
    pose.busy = false;
    pose.done = true;
  } catch (e) {
    fail(e.message || String(e));
  }
}

async function main() {
  $('accelerator').value = accelerator;
  $('accelerator').addEventListener('change', (e) => {
    params.set('accelerator', e.target.value);
    location.search = params.toString();
  });
  $('file').addEventListener('change', (e) => {
    if (e.target.files.length) onFile(e.target.files[0]);
  });
  $('webcam').addEventListener('click', startWebcam);
  try {
    const runtime = await startLiteRt({threads: accelerator === 'wasm' && threads > 1,
                                       jspi: accelerator === 'webgpu'});
    if (accelerator === 'webgpu' && !(await webGpuAvailable())) {
      throw new Error('this browser offers no WebGPU adapter: choose wasm');
    }
    let compiled;
    try {
      compiled = await compile('/model.tflite', accelerator,
                               runtime.threads ? threads : 1);
    } catch (e) {
      throw new Error(`LiteRT.js cannot load the model: ${e.message || e} (is it a .tflite ` +
                      'file with a static batch of 1?)');
    }
    const problem = contractProblem(compiled.info);
    if (problem) throw new Error(problem);
    model = compiled.model;
    pose.info = {...compiled.info, runtime};
    inputSize = compiled.info.inputs[0].shape[1];
    // Warm-up runs (the first ones allocate and pack weights): the times shown are steady.
    for (let i = 0; i < 3; i++) await runOnce(model, new Uint8Array(inputSize * inputSize * 3));
    $('model').textContent = `model ${inputSize}x${inputSize} uint8 -> 17 keypoints on ` +
        `${compiled.info.accelerator}` + (compiled.info.accelerator === 'wasm' ?
        ` (${compiled.info.numThreads} thread${compiled.info.numThreads > 1 ? 's' : ''})` : '');
    pose.ready = true;
  } catch (e) {
    $('model').textContent = 'no model';
    fail(e.message || String(e));
  }
}

main();
