// Opens a page of the running server in headless Chromium and reports what it computed.
//
//   node page_driver.mjs URL OUT.json [--upload=FILE] [--boxes=JSON] [--screenshot=PNG]
//       [--webgpu] [--timeout=SECONDS] [--wait=EXPR] [--result=EXPR]
//
// Waits until `--wait` (default: the pose page is ready or has an error) is true, uploads
// FILE through the page's file input (with --boxes typed into the boxes field first), waits
// for `window.pose.done`, then writes `--result` (default: window.pose) as JSON to OUT.json
// and a screenshot of the page. Used by the page's tests and benchmarks.web_latency.
import fs from 'node:fs';

import {closeChromium, launchChromium} from './litert_worker.mjs';

function option(name, fallback = null) {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
}

async function main() {
  const [url, out] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const timeout = 1000 * Number(option('timeout', '300'));
  const browser = await launchChromium(process.argv.includes('--webgpu'));
  const log = [];
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(timeout);
    page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`pageerror: ${e}`));
    await page.setViewport({width: 1100, height: 800});
    await page.goto(url);
    await page.waitForFunction(option('wait', 'window.pose && (window.pose.ready || ' +
                                              'window.pose.error !== null)'), {timeout});
    const upload = option('upload');
    const ready = await page.evaluate('Boolean(window.pose && window.pose.ready)');
    if (upload && ready) {
      const boxes = option('boxes');
      if (boxes) await page.$eval('#boxes', (el, v) => { el.value = v; }, boxes);
      const input = await page.$('#file');
      await input.uploadFile(upload);
      await page.waitForFunction('window.pose.done === true', {timeout});
    }
    const result = await page.evaluate(option('result', 'window.pose'));
    fs.writeFileSync(out, JSON.stringify({result, log, browser: await browser.version()}));
    const shot = option('screenshot');
    if (shot) await page.screenshot({path: shot, fullPage: true});
  } finally {
    await closeChromium(browser);
  }
}

main().catch((e) => {
  process.stderr.write(`page_driver: ${e.stack || e}\n`);
  process.exit(1);
});
