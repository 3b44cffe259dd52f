// The `web` and `web_gpu` runtimes' worker: one .tflite in LiteRT.js in headless Chromium.
//
//   node litert_worker.mjs MODEL.tflite wasm|webgpu THREADS
//
// Serves web/ (runner.html, litert_page.mjs, node_modules) and the model on 127.0.0.1 with
// cross-origin isolation headers, starts the system Chromium ($FPTFLITE_CHROMIUM, else
// `chromium` on PATH) through puppeteer-core (no browser download), compiles the model and
// then speaks fptflite.tflite.runtimes' .npy protocol: on stdout first a uint8 array holding
// the compile info as JSON (or a string array with the error), then one output [B, ...] per
// .npy batch [B, ...] read from stdin, run one item at a time. Ends at the end of stdin.
// Everything the browser loads comes from this machine; its network is not used.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.mjs': 'text/javascript', '.js': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.tflite': 'application/octet-stream',
  '.css': 'text/css', '.png': 'image/png', '.jpg': 'image/jpeg', '.webm': 'video/webm',
};

/** A static file server on 127.0.0.1 for `root`, plus fixed `extra` URL -> file entries. */
export function serveStatic(root, extra = {}) {
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    let file = extra[url];
    if (!file) {
      file = path.join(root, path.normalize(url));
      if (!file.startsWith(root + path.sep)) {
        res.writeHead(403).end('outside the served directory');
        return;
      }
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, {
        'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
        'Cross-Origin-Resource-Policy': 'same-origin',
        'Cache-Control': 'no-store',
      });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** The Chromium flags: headless, nothing fetched, a fresh profile; WebGPU on Vulkan. */
export function chromiumArgs(userDataDir, webgpu) {
  const args = [
    '--headless=new', '--no-sandbox', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
    '--disable-default-apps', '--disable-extensions', '--metrics-recording-only',
    '--no-default-browser-check', '--disable-dev-shm-usage', `--user-data-dir=${userDataDir}`,
  ];
  if (webgpu) {
    args.push('--enable-unsafe-webgpu', '--enable-features=Vulkan,WebGPUService',
              '--use-angle=vulkan', '--use-webgpu-adapter=default', '--ignore-gpu-blocklist');
  } else {
    args.push('--disable-gpu');
  }
  return args;
}

/** The system Chromium: $FPTFLITE_CHROMIUM, else `chromium` / `chromium-browser` on PATH. */
export function findChromium() {
  if (process.env.FPTFLITE_CHROMIUM) return process.env.FPTFLITE_CHROMIUM;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const candidate = path.join(dir, name);
      if (fs.existsSync(candidate)) return candidate;
    }
  }
  return null;
}

/** Starts Chromium headless; XDG_RUNTIME_DIR is set for Vulkan when missing. */
export async function launchChromium(webgpu) {
  const {default: puppeteer} = await import('puppeteer-core');
  const executablePath = findChromium();
  if (!executablePath) throw new Error('Chromium not found (apt-get install chromium)');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fptflite-chromium-'));
  if (!process.env.XDG_RUNTIME_DIR) {
    process.env.XDG_RUNTIME_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'fptflite-xdg-'));
  }
  const browser = await puppeteer.launch({
    executablePath, headless: true, args: chromiumArgs(userDataDir, webgpu),
    ignoreDefaultArgs: ['--enable-automation'], env: process.env,
  });
  browser.fptUserDataDir = userDataDir;
  return browser;
}

/** Closes a browser of `launchChromium` and removes its profile once Chromium has exited. */
export async function closeChromium(browser) {
  await browser.close();
  fs.rmSync(browser.fptUserDataDir, {recursive: true, force: true, maxRetries: 10});
}

// ---- .npy over pipes (numpy's format 1.0) ----

const DESCR = {'|u1': Uint8Array, '|i1': Int8Array, '<f4': Float32Array, '<i4': Int32Array};
const DESCR_OF = {uint8: '|u1', int8: '|i1', float32: '<f4', int32: '<i4'};

function npyBytes(descr, shape, payload) {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  Buffer.from([0x93]).copy(head, 0);
  head.write('NUMPY', 1, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(payload)]);
}

function writeArray(typed, shape) {
  const descr = Object.keys(DESCR).find((k) => typed instanceof DESCR[k]);
  const bytes = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
  process.stdout.write(npyBytes(descr, shape, bytes));
}

function writeString(text) {
  const codes = Uint32Array.from(Array.from(text), (c) => c.codePointAt(0));
  process.stdout.write(npyBytes(`<U${Math.max(codes.length, 1)}`, [],
                                codes.length ? new Uint8Array(codes.buffer) : new Uint8Array(4)));
}

/** Reads .npy arrays from a stream, one at a time. */
class NpyReader {
  constructor(stream) {
    this.chunks = [];
    this.length = 0;
    this.ended = false;
    this.waiting = null;
    stream.on('data', (c) => { this.chunks.push(c); this.length += c.length; this.wake(); });
    stream.on('end', () => { this.ended = true; this.wake(); });
  }

  wake() {
    if (this.waiting) { const w = this.waiting; this.waiting = null; w(); }
  }

  async take(n) {
    while (this.length < n) {
      if (this.ended) return null;
      await new Promise((resolve) => { this.waiting = resolve; });
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(n)];
    this.length = all.length - n;
    return all.subarray(0, n);
  }

  /** The next array as {descr, shape, bytes}, or null at the end of the stream. */
  async next() {
    const magic = await this.take(8);  // \x93NUMPY, major, minor
    if (!magic) return null;
    const size = magic[6] === 1 ? 2 : 4;
    const lengthBytes = await this.take(size);
    const headerLength = size === 2 ? lengthBytes.readUInt16LE(0) : lengthBytes.readUInt32LE(0);
    const header = (await this.take(headerLength)).toString('latin1');
    const descr = /'descr': '([^']+)'/.exec(header)[1];
    const shape = (/'shape': \(([^)]*)\)/.exec(header)[1]).split(',')
        .map((s) => s.trim()).filter((s) => s).map(Number);
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = await this.take(count * DESCR[descr].BYTES_PER_ELEMENT);
    return {descr, shape, bytes};
  }
}

async function main() {
  const [modelPath, accelerator = 'wasm', threadsText = '1'] = process.argv.slice(2);
  const numThreads = Number(threadsText);
  // The .npy protocol owns stdout: anything else goes to stderr.
  console.log = console.error;
  let browser = null;
  let server = null;
  try {
    if (!modelPath || !fs.existsSync(modelPath)) throw new Error(`no model file ${modelPath}`);
    server = await serveStatic(HERE, {'/model.tflite': path.resolve(modelPath)});
    browser = await launchChromium(accelerator === 'webgpu');
    const page = await browser.newPage();
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e}\n`));
    await page.goto(`http://127.0.0.1:${server.address().port}/runner.html`);
    await page.waitForFunction('window.fptReady === true', {timeout: 60000});
    const info = await page.evaluate((a, t) => window.fpt.open(a, t, a === 'webgpu'),
                                     accelerator, numThreads);
    info.browser = await browser.version();
    const infoBytes = new Uint8Array(Buffer.from(JSON.stringify(info)));
    writeArray(infoBytes, [infoBytes.length]);
    const outShape = info.outputs[0].shape;
    const outType = {uint8: Uint8Array, float32: Float32Array, int32: Int32Array}[
      info.outputs[0].dtype];
    const reader = new NpyReader(process.stdin);
    for (;;) {
      const batch = await reader.next();
      if (!batch) break;
      const count = batch.shape[0];
      try {
        if (DESCR_OF[info.inputs[0].dtype] !== batch.descr) {
          throw new Error(`input dtype ${batch.descr}, the model takes ${info.inputs[0].dtype}`);
        }
        const b64 = await page.evaluate((s, n) => window.fpt.run(s, n),
                                        batch.bytes.toString('base64'), count);
        const raw = Buffer.from(b64, 'base64');
        const out = new outType(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
        writeArray(out, [count, ...outShape.slice(1)]);
      } catch (e) {
        writeString(`${e.message || e}`);
      }
    }
  } catch (e) {
    writeString(`${e.message || e}`.split('\n')[0]);
  } finally {
    if (browser) await closeChromium(browser);
    if (server) server.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main();
}
