// Drives the real board page in headless Chromium while the Rust test (server/tests/browser.rs)
// acts through WebSocket clients. The two talk over stdin/stdout, one line each:
//   this script prints `STEP <name>` when the page is ready for the next act, the test answers
//   `GO <name> <args…>` once it acted; `DONE` ends a good run, `FAIL <why>` a bad one (exit 1).
// Usage: node board.mjs <base-url> <screenshot-dir>

import { chromium } from 'playwright-core';
import { args, finish, step } from './harness.mjs';
import { join } from 'node:path';

const [base, shots] = args('board.mjs');

const TIMEOUT = 15000;

async function signIn(page, login) {
  await page.goto(`${base}/board`);
  await page.locator('[data-testid=sign-in] input[name=login]').fill(login);
  await page.locator('[data-testid=sign-in] input[name=password]').fill('lianxin-demo');
  await page.locator('[data-testid=sign-in] button[type=submit]').click();
  await page.locator('[data-testid=board]').waitFor({ state: 'visible', timeout: TIMEOUT });
}

const kpi = (page, key) => page.locator(`[data-testid=kpi-${key}] .fig`);

async function expectText(locator, text, what) {
  try {
    await locator.filter({ hasText: text }).first().waitFor({ timeout: TIMEOUT });
  } catch {
    const seen = await locator.first().textContent().catch(() => '(nothing)');
    throw new Error(`${what}: expected "${text}", page shows "${seen}"`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 1000 }, locale: 'zh-CN' });
  const page = await desktop.newPage();
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`));
  await signIn(page, 'sup-01');
  await expectText(kpi(page, 'received'), '0', 'received before any petition');
  // Marks this page load: a reload would lose it.
  await page.evaluate(() => { window.__noReload = true; });

  // A resident raises a petition through a WebSocket client: the page shows it live.
  const [petition, worker] = await step('submit');
  await expectText(kpi(page, 'received'), '1', 'received after the petition');
  await expectText(page.locator(`[data-testid=workers] tr[data-row-id="${worker}"] td:nth-child(4)`), '1',
    "the worker's received figure");
  if (!(await page.evaluate(() => window.__noReload === true))) throw new Error('the page reloaded');
  await page.screenshot({ path: join(shots, 'board-desktop-live.png'), fullPage: true });

  // Drill-down: the received figure lists the petition.
  await kpi(page, 'received').click();
  await page.locator(`[data-testid=drill] tr[data-petition-id="${petition}"]`).waitFor({ timeout: TIMEOUT });
  await page.locator('[data-testid=drill] button').click();

  // Half a day later it is overdue and tops the overdue list.
  await step('overdue');
  await page.locator(`[data-testid=overdue] li[data-petition-id="${petition}"]`).waitFor({ timeout: TIMEOUT });
  await expectText(kpi(page, 'overdueResponse'), '1', 'overdue figure');

  // A dropped connection: the page says so, comes back by itself and keeps updating.
  await page.evaluate(() => window.lianxinBoard.conn.drop());
  await page.locator('[data-testid=status][data-state=online]').waitFor({ timeout: TIMEOUT });
  await step('second');
  await expectText(kpi(page, 'received'), '2', 'received after reconnecting');

  // English.
  await page.locator('[data-testid=lang]').click();
  await expectText(page.locator('h1'), 'Response board', 'English title');
  await page.screenshot({ path: join(shots, 'board-desktop-en.png'), fullPage: true });
  await page.locator('[data-testid=lang]').click();
  await expectText(page.locator('h1'), '响应看板', 'Chinese title');
  await page.screenshot({ path: join(shots, 'board-desktop.png'), fullPage: true });

  // A phone-sized screen.
  const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, locale: 'zh-CN' });
  const small = await phone.newPage();
  await signIn(small, 'sup-01');
  await expectText(kpi(small, 'received'), '2', 'received on the phone');
  await small.screenshot({ path: join(shots, 'board-phone.png'), fullPage: true });
  console.log('DONE');
} catch (e) {
  console.log(`FAIL ${String(e.message || e).split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  finish();
}
