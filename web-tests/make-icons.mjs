// Draws the app icons (server/web/icon-192.png and icon-512.png) with Chromium: "连心" in white on
// the app's red, with a margin that survives the round masks of phone launchers. Run it again after
// changing the design: node web-tests/make-icons.mjs
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'server', 'web');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  for (const size of [192, 512]) {
    const page = await browser.newPage({ viewport: { width: size, height: size } });
    await page.setContent(`<!doctype html><body style="margin:0">
      <div style="width:${size}px;height:${size}px;background:#b22222;display:flex;align-items:center;justify-content:center;
        font-family:'Noto Sans CJK SC',sans-serif;font-weight:700;color:#fff;font-size:${Math.round(size * 0.3)}px;letter-spacing:-0.02em">
        <div style="text-align:center;line-height:1.05">连心<div style="height:${Math.round(size * 0.03)}px;margin:${Math.round(size * 0.04)}px auto 0;width:55%;background:#ffd54f;border-radius:${size}px"></div></div>
      </div></body>`);
    await page.screenshot({ path: join(out, `icon-${size}.png`) });
    await page.close();
  }
} finally {
  await browser.close();
}
