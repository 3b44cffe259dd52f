// The Android pose sample's single-pose pipeline (ml/MoveNet.kt) in the browser, the twin of
// fptflite/serving/app_pipeline.py and fptflite/serving/tracking.py:
//   square region (whole frame padded to a square first, then from the previous keypoints)
//   -> crop of the frame's RGB (black outside it) resized bilinearly to S x S uint8
//   -> model [1, S, S, 3] -> [1, 1, 17, 3] = (y, x, score) in [0, 1] of the crop
//   -> frame pixels (edge-based: 0 = the frame's left edge, as the app).
// Pure functions on plain arrays: no DOM, no LiteRT.

export const KEYPOINTS = [
  'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
  'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip',
  'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
];
// COCO's skeleton, 0-based (fptflite.keypoints.COCO_SKELETON).
export const SKELETON = [
  [15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7],
  [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6],
];
export const MIN_CROP_KEYPOINT_SCORE = 0.2;
export const TORSO_EXPANSION_RATIO = 1.9;
export const BODY_EXPANSION_RATIO = 1.2;
export const BOX_PADDING = 1.25;
const [L_SHOULDER, R_SHOULDER, L_HIP, R_HIP] = [5, 6, 11, 12];

/** The frame padded to a square around its centre: the app's first and fallback crop. */
export function wholeFrameRegion(width, height) {
  const side = Math.max(width, height);
  return {left: (width - side) / 2, top: (height - side) / 2, size: side};
}

/** A detector box [x, y, w, h] as a square region: its longer side x BOX_PADDING. */
export function boxRegion(box) {
  const [x, y, w, h] = box;
  const side = Math.max(w, h) * BOX_PADDING;
  return {left: x + w / 2 - side / 2, top: y + h / 2 - side / 2, size: side};
}

/** Rounds half to even, as Python's round() in app_pipeline.app_input. */
export function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * OpenCV's INTER_LINEAR taps for one axis (resize of `ssize` to `dsize` pixels): source
 * pixels and 11-bit fixed-point weights, pixel centres aligned, clamped at the borders.
 * @return {number[][]} per destination pixel [s0, s1, w0, w1] (w0 + w1 = 2048).
 */
export function linearTaps(dsize, ssize) {
  const scale = 1 / (dsize / ssize);
  const taps = [];
  for (let d = 0; d < dsize; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) { s = 0; f = 0; }
    if (s >= ssize - 1) { s = ssize - 1; f = 0; }
    taps.push([s, Math.min(s + 1, ssize - 1), roundHalfEven(Math.fround(1 - f) * 2048),
               roundHalfEven(f * 2048)]);
  }
  return taps;
}

/**
 * The uint8 [S, S, 3] input the app feeds for `region` of an RGBA frame.
 * The region's corner is snapped to whole pixels (half to even) and its side truncated (a
 * bitmap drawn at that offset); pixels outside the frame are black; the side x side crop is
 * resized to S x S bilinearly in OpenCV's fixed-point arithmetic (its vectorised
 * INTER_LINEAR path for uint8), so the crop equals app_pipeline.app_input's.
 * @param {Uint8ClampedArray} rgba frame pixels [H, W, 4].
 * @param {number} width W.
 * @param {number} height H.
 * @param {{left: number, top: number, size: number}} region square region in frame pixels.
 * @param {number} inputSize S.
 * @return {{input: Uint8Array, region: object}} the crop [S, S, 3] and the snapped region.
 */
export function appInput(rgba, width, height, region, inputSize) {
  const left = roundHalfEven(region.left);
  const top = roundHalfEven(region.top);
  const side = Math.trunc(region.size);
  if (side < 1) throw new Error(`crop region of size ${region.size} is empty`);
  const taps = linearTaps(inputSize, side);
  const pixel = (cx, cy, c) => {  // the crop's pixel: the frame's, or black outside it
    const fx = cx + left;
    const fy = cy + top;
    if (fx < 0 || fy < 0 || fx >= width || fy >= height) return 0;
    return rgba[(fy * width + fx) * 4 + c];
  };
  const horizontal = (cy) => {  // one crop row resized along x: [S * 3] at scale 2048
    const row = new Int32Array(inputSize * 3);
    taps.forEach(([x0, x1, w0, w1], dx) => {
      for (let c = 0; c < 3; c++) {
        row[dx * 3 + c] = pixel(x0, cy, c) * w0 + pixel(x1, cy, c) * w1;
      }
    });
    return row;
  };
  const cache = new Map();
  const rowOf = (cy) => {
    if (!cache.has(cy)) cache.set(cy, horizontal(cy));
    return cache.get(cy);
  };
  const out = new Uint8Array(inputSize * inputSize * 3);
  taps.forEach(([y0, y1, w0, w1], dy) => {
    const r0 = rowOf(y0);
    const r1 = rowOf(y1);
    for (let i = 0; i < inputSize * 3; i++) {
      const v = (((w0 * (r0[i] >> 4)) >> 16) + ((w1 * (r1[i] >> 4)) >> 16) + 2) >> 2;
      out[dy * inputSize * 3 + i] = Math.min(255, Math.max(0, v));
    }
  });
  return {input: out, region: {left, top, size: side}};
}

/**
 * MoveNet.kt's parsing of the output [1, 1, K, 3] for a crop covering `region`.
 * @return {{keypoints: number[][], scores: number[], score: number}} (x, y) frame pixels
 *     (edge-based), scores, and the person score (mean of the K scores).
 */
export function parseOutput(output, region) {
  const keypoints = [];
  const scores = [];
  for (let k = 0; k < output.length / 3; k++) {
    keypoints.push([output[3 * k + 1] * region.size + region.left,
                    output[3 * k] * region.size + region.top]);
    scores.push(output[3 * k + 2]);
  }
  return {keypoints, scores, score: scores.reduce((a, b) => a + b, 0) / scores.length};
}

/** A hip and a shoulder score above `threshold`. */
export function torsoVisible(scores, threshold = MIN_CROP_KEYPOINT_SCORE) {
  return (scores[L_HIP] > threshold || scores[R_HIP] > threshold) &&
      (scores[L_SHOULDER] > threshold || scores[R_SHOULDER] > threshold);
}

/** The next frame's square region from this frame's keypoints (MoveNet.kt's rule). */
export function movenetCropRegion(keypoints, scores, width, height,
                                  threshold = MIN_CROP_KEYPOINT_SCORE) {
  if (!torsoVisible(scores, threshold)) return wholeFrameRegion(width, height);
  const cx = (keypoints[L_HIP][0] + keypoints[R_HIP][0]) / 2;
  const cy = (keypoints[L_HIP][1] + keypoints[R_HIP][1]) / 2;
  let torso = 0;
  for (const k of [L_SHOULDER, R_SHOULDER, L_HIP, R_HIP]) {
    torso = Math.max(torso, Math.abs(keypoints[k][0] - cx), Math.abs(keypoints[k][1] - cy));
  }
  let body = 0;
  keypoints.forEach((p, k) => {
    if (scores[k] >= threshold) {
      body = Math.max(body, Math.abs(p[0] - cx), Math.abs(p[1] - cy));
    }
  });
  let half = Math.max(torso * TORSO_EXPANSION_RATIO, body * BODY_EXPANSION_RATIO);
  half = Math.min(half, Math.max(cx, width - cx, cy, height - cy));
  if (half > Math.max(width, height) / 2 || half <= 0) return wholeFrameRegion(width, height);
  return {left: cx - half, top: cy - half, size: 2 * half};
}

/**
 * Why a compiled model is not a pose drop-in, in words (null when it is one).
 * @param {object} info compile info: inputs and outputs with dtype and shape.
 */
export function contractProblem(info) {
  const ins = info.inputs;
  const outs = info.outputs;
  if (ins.length !== 1 || outs.length !== 1) {
    return `this model has ${ins.length} inputs and ${outs.length} outputs; a pose drop-in ` +
        'has one image input and one keypoint output';
  }
  const [i, o] = [ins[0], outs[0]];
  const s = i.shape;
  if (i.dtype !== 'uint8' || s.length !== 4 || s[0] !== 1 || s[1] !== s[2] || s[3] !== 3) {
    return `this model's input is ${i.dtype} [${s.join(', ')}]; a pose drop-in takes one ` +
        'uint8 RGB square crop [1, S, S, 3]';
  }
  const t = o.shape;
  if (o.dtype !== 'float32' || t.join(',') !== `1,1,${KEYPOINTS.length},3`) {
    return `this model's output is ${o.dtype} [${t.join(', ')}], not a pose model's ` +
        `keypoints: the page needs float32 [1, 1, ${KEYPOINTS.length}, 3] (y, x, score of ` +
        'the 17 COCO keypoints, like MoveNet); a heatmap file [1, S/4, S/4, 17] needs ' +
        '`python -m conversion.export_android` first';
  }
  return null;
}
