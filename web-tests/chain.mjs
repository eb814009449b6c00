// The five-step chain in three browser contexts, against the real server (started by
// server/tests/browser.rs): a resident raises a petition with a photo at /, the worker's app at
// /worker shows a live alert and answers (text and a voice clip recorded from Chromium's fake
// microphone), the resident sees the answer and the read receipt, the worker resolves, the
// resident rates; the board (a supervisor signed in at /, sent on to /board) moves beside them.
// Connections are cut on both sides while the other side writes: each message arrives exactly once;
// a photo chosen offline is sent by the next page after its own page was closed. Then the
// resident reopens and withdraws the petition, and a second one is transferred to a worker of the
// next grid, whose app (a fourth context) alerts live while the first worker's inbox loses it.
// Screenshots of the resident's and the worker's pages at phone (360x740) and desktop (1280x800)
// widths go to the screenshot folder.
// Protocol with the Rust test, one line each: `STEP <name>` → `GO <name> <args…>`; `DONE` or `FAIL <why>`.
// Usage: node chain.mjs <base-url> <screenshot-dir>

import { chromium } from 'playwright-core';
import { args, finish, step } from './harness.mjs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';

const [base, shots] = args('chain.mjs');

const TIMEOUT = 15000;
const PHONE = { width: 360, height: 740 };
const DESKTOP = { width: 1280, height: 800 };

/** A small RGB PNG (a striped test picture), made here so the test needs no files. */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'ascii');
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * (width * 3 + 1) + 1 + x * 3;
      const lamp = (x - width / 2) ** 2 + (y - height / 3) ** 2 < (height / 6) ** 2;
      raw[i] = lamp ? 255 : 40 + ((x * 3) % 60);
      raw[i + 1] = lamp ? 220 : 50;
      raw[i + 2] = lamp ? 90 : 90 + (y % 40);
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

async function expectText(locator, text, what) {
  try {
    await locator.filter({ hasText: text }).first().waitFor({ timeout: TIMEOUT });
  } catch {
    const seen = await locator.first().textContent({ timeout: 1000 }).catch(() => '(nothing)');
    throw new Error(`${what}: expected "${text}", page shows "${seen}"`);
  }
}

/** Waits until exactly `n` messages with this text show, and stay so for a moment. */
async function expectCount(page, text, n, what) {
  const messages = page.locator('[data-testid=timeline] [data-testid=message]', { hasText: text });
  const deadline = Date.now() + TIMEOUT;
  while ((await messages.count()) !== n) {
    if (Date.now() > deadline) throw new Error(`${what}: ${await messages.count()} messages "${text}", expected ${n}`);
    await page.waitForTimeout(100);
  }
  await page.waitForTimeout(1500); // a late duplicate would show by now
  const count = await messages.count();
  if (count !== n) throw new Error(`${what}: ${count} messages "${text}" after settling, expected ${n}`);
}

async function signIn(page, path, login) {
  await page.goto(`${base}${path}`);
  await page.locator('[data-testid=sign-in] input[name=login]').fill(login);
  await page.locator('[data-testid=sign-in] input[name=password]').fill('lianxin-demo');
  await page.locator('[data-testid=sign-in] button[type=submit]').click();
}

const online = (page) => page.locator('[data-testid=status][data-state=online]').waitFor({ timeout: TIMEOUT });

async function shoot(page, name) {
  // Passing messages (toasts) would hide what the picture is about.
  await page.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}-phone.png`) });
  await page.setViewportSize(DESKTOP);
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(shots, `${name}-desktop.png`) });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // A fake microphone (a beeping tone) for hold-to-talk, granted without a prompt.
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  ],
});
const pages = [];
let where = 'start';
/** Notes where the run is (a failure names it). */
const at = (what) => { where = what; console.log(`# ${what}`); };
try {
  const context = (extra = {}) => browser.newContext({ viewport: DESKTOP, locale: 'zh-CN', ...extra });
  const residentContext = await context({ permissions: ['microphone'] });
  const workerContext = await context({ permissions: ['microphone', 'notifications'] });
  const supervisorContext = await context();
  let resident = await residentContext.newPage();
  const worker = await workerContext.newPage();
  const board = await supervisorContext.newPage();
  pages.push(resident, worker, board);
  const watch = (name, page) => page.on('pageerror', (e) => console.log(`# ${name} page error: ${e.message}`));
  for (const [name, page] of [['resident', resident], ['worker', worker], ['board', board]]) watch(name, page);

  // The supervisor signs in at the resident's page and is sent on to the board.
  at('The supervisor signs in at the resident\'s page and is sent ');
  await signIn(board, '/', 'sup-01');
  await board.waitForURL(/\/board$/, { timeout: TIMEOUT });
  await board.locator('[data-testid=board]').waitFor({ state: 'visible', timeout: TIMEOUT });
  await expectText(board.locator('[data-testid=kpi-received] .fig'), '0', 'board before the petition');

  // The worker opens the app: an empty inbox, on duty; the app is installable.
  at('The worker opens the app: an empty inbox, on duty; the app i');
  await signIn(worker, '/worker', 'worker-01-1a');
  await worker.locator('#app:not([hidden])').waitFor({ timeout: TIMEOUT });
  await expectText(worker.locator('[data-testid=inbox]'), '没有待办诉求', 'empty inbox');
  const pwa = await worker.evaluate(async () => {
    const reg = await navigator.serviceWorker.ready;
    const manifest = await (await fetch(document.querySelector('link[rel=manifest]').href)).json();
    for (let i = 0; i < 50 && !(await caches.has('lianxin-shell-v1')); i++) await new Promise((r) => setTimeout(r, 100));
    const cache = await caches.open('lianxin-shell-v1');
    return { scope: reg.scope, start: manifest.start_url, icons: manifest.icons.length, shell: Boolean(await cache.match('/worker')) };
  });
  if (!pwa.scope.endsWith('/') || pwa.start !== '/worker' || pwa.icons < 2 || !pwa.shell) {
    throw new Error(`the worker's app is not installable: ${JSON.stringify(pwa)}`);
  }
  await worker.evaluate(() => { window.__noReload = true; });

  // 1. The resident signs in, sees the grid and whom to @, and raises a petition with a photo.
  at('1. The resident signs in, sees the grid and whom to @, and r');
  await signIn(resident, '/', 'resident-01-1a');
  await resident.locator('[data-testid=home]').waitFor({ state: 'visible', timeout: TIMEOUT });
  const worker1 = resident.locator('[data-testid=worker]', { hasText: '网格员1' });
  await expectText(worker1, '在岗', 'the worker on duty');
  await shoot(resident, 'resident-home');
  await worker1.locator('a.at').click();
  await resident.locator('[data-testid=new]').waitFor({ state: 'visible', timeout: TIMEOUT });
  await resident.locator('[data-testid=categories] label', { hasText: '情况反映' }).click();
  await resident.locator('[data-testid=title]').fill('路灯不亮');
  await resident.locator('[data-testid=new] [data-testid=text]').fill('楼下路灯坏了三天了，晚上很黑。');
  await resident.locator('[data-testid=new] [data-testid=gallery]').setInputFiles({
    name: 'lamp.png', mimeType: 'image/png', buffer: png(96, 72),
  });
  await resident.locator('[data-testid=new] [data-testid=previews] img').waitFor({ timeout: TIMEOUT });
  await resident.locator('[data-testid=submit]').click();
  await resident.waitForURL(/#\/p\/\d+$/, { timeout: TIMEOUT });
  const petition = resident.url().match(/#\/p\/(\d+)$/)[1];
  const residentPhoto = resident.locator('[data-testid=timeline] img.thumb[src^="blob:"]');
  await residentPhoto.waitFor({ timeout: TIMEOUT });

  // 2. The worker's app alerts at once: banner, badge, system notification; the inbox has it.
  at('2. The worker\'s app alerts at once: banner, badge, system n');
  const alert = worker.locator('[data-testid=alert]');
  await expectText(alert, '新诉求', 'the alert of a new petition');
  await expectText(alert, '路灯不亮', 'the alert names the petition');
  await expectText(worker.locator('[data-testid=badge]'), '1', 'the badge count');
  await expectText(worker.locator('[data-testid=inbox-item]'), '路灯不亮', 'the inbox');
  const notified = await worker.evaluate(() => window.lianxinWorker.state.systemNotifications);
  if (notified < 1) throw new Error('no system notification was shown (permission granted)');
  await expectText(board.locator('[data-testid=kpi-received] .fig'), '1', 'board after the petition');

  // Half a day later the response is overdue: the reminder reaches the worker live.
  at('Half a day later the response is overdue: the reminder reach');
  await step('remind');
  await expectText(alert, '超时提醒', 'the reminder alert');
  await expectText(worker.locator('[data-testid=inbox-item] [data-testid=due]'), '已超时', 'the overdue inbox item');
  await expectText(board.locator('[data-testid=kpi-overdueResponse] .fig'), '1', 'board overdue figure');
  await shoot(worker, 'worker-inbox');

  // 3. The worker opens it (the photo shows), answers by text and by voice.
  at('3. The worker opens it (the photo shows), answers by text an');
  await worker.locator(`[data-testid=inbox-item][data-petition-id="${petition}"] a`).click();
  await worker.locator('[data-testid=timeline] img.thumb[src^="blob:"]').waitFor({ timeout: TIMEOUT });
  if (!(await worker.locator('[data-testid=badge]').isHidden())) throw new Error('the badge stayed after opening');
  await worker.locator('#conv-composer [data-testid=text]').fill('收到，今天下午去看。');
  await worker.locator('#conv-composer [data-testid=send]').click();
  const talk = worker.locator('#conv-composer [data-testid=talk]');
  const box = await talk.boundingBox();
  await worker.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await worker.mouse.down();
  await worker.waitForTimeout(1500);
  await worker.mouse.up();
  await worker.locator('[data-testid=timeline] .msg.mine audio[data-media-id]').waitFor({ timeout: TIMEOUT });

  // The resident sees the answer, the voice clip and that the worker read the petition.
  at('The resident sees the answer, the voice clip and that the wo');
  await expectCount(resident, '收到，今天下午去看。', 1, "the worker's answer on the resident's page");
  await resident.locator('[data-testid=timeline] .msg.theirs audio[src^="blob:"]').waitFor({ timeout: TIMEOUT });
  await expectText(resident.locator('[data-testid=conv-state]'), '处理中', 'state after the answer');
  await expectText(resident.locator('[data-testid=timeline] .msg.mine [data-testid=receipt]'), '已读', 'the read receipt');
  // …and the worker sees the resident read the answer.
  at('…and the worker sees the resident read the answer.');
  await expectText(worker.locator('[data-testid=timeline] .msg.mine [data-testid=receipt]').last(), '已读', "the worker's read receipt");

  // The resident's connection is cut; meanwhile the worker writes and so does the resident.
  at('The resident\'s connection is cut; meanwhile the worker writ');
  await residentContext.setOffline(true);
  await resident.evaluate(() => window.lianxinResident.conn.drop());
  await resident.locator('[data-testid=status][data-state=offline]').waitFor({ timeout: TIMEOUT });
  await worker.locator('#conv-composer [data-testid=text]').fill('师傅明早八点到。');
  await worker.locator('#conv-composer [data-testid=send]').click();
  await expectCount(worker, '师傅明早八点到。', 1, "the worker's message on the worker's page");
  await resident.locator('#conv-composer [data-testid=text]').fill('好的，谢谢！');
  await resident.locator('#conv-composer [data-testid=send]').click();
  await expectText(resident.locator('[data-testid=pending]'), '等待网络', 'the message waiting for the network');
  await resident.waitForTimeout(1000);
  await residentContext.setOffline(false);
  await online(resident);
  await expectCount(resident, '师傅明早八点到。', 1, 'the message sent while the resident was offline');
  await expectCount(resident, '好的，谢谢！', 1, "the resident's offline message, on the resident's page");
  await expectCount(worker, '好的，谢谢！', 1, "the resident's offline message, on the worker's page");

  // Now the worker's connection drops (the socket closes under the page) while the resident writes.
  at('Now the worker\'s connection drops (the socket closes under ');
  await worker.evaluate(() => window.lianxinWorker.conn.drop());
  await resident.locator('#conv-composer [data-testid=text]').fill('门口那盏也不亮。');
  await resident.locator('#conv-composer [data-testid=send]').click();
  await online(worker);
  await expectCount(worker, '门口那盏也不亮。', 1, 'the message sent while the worker was away');
  await expectCount(resident, '门口那盏也不亮。', 1, "the resident's message on the resident's page");
  if (!(await worker.evaluate(() => window.__noReload === true))) throw new Error("the worker's page reloaded");

  // A photo chosen while offline outlives its page: closed before the network came back, the
  // resident's next page (same browser) sends it, once.
  at('an offline photo survives closing the page');
  await residentContext.setOffline(true);
  await resident.evaluate(() => window.lianxinResident.conn.drop());
  await resident.locator('[data-testid=status][data-state=offline]').waitFor({ timeout: TIMEOUT });
  await resident.locator('#conv-composer [data-testid=text]').fill('门口这盏的照片');
  await resident.locator('#conv-composer [data-testid=gallery]').setInputFiles({
    name: 'door.png', mimeType: 'image/png', buffer: png(80, 60),
  });
  await resident.locator('#conv-composer [data-testid=previews] img').waitFor({ timeout: TIMEOUT });
  await resident.locator('#conv-composer [data-testid=send]').click();
  await expectText(resident.locator('[data-testid=pending]'), '等待网络', 'the photo waiting for the network');
  await resident.evaluate(() => window.lianxinResident.outbox.saved());
  await resident.close();
  await residentContext.setOffline(false);
  resident = await residentContext.newPage();
  pages[0] = resident;
  watch('resident', resident);
  await resident.goto(`${base}/#/p/${petition}`);
  await expectCount(worker, '门口这盏的照片', 1, "the offline photo's message on the worker's page");
  await worker.locator('[data-testid=timeline] [data-testid=message]', { hasText: '门口这盏的照片' })
    .locator('img.thumb[src^="blob:"]').waitFor({ timeout: TIMEOUT });
  await expectCount(resident, '门口这盏的照片', 1, "the offline photo's message on the resident's new page");
  if (await resident.locator('[data-testid=pending]').count()) throw new Error('a pending message stayed after sending');
  await shoot(worker, 'worker');

  // The matter needs the community: the worker escalates it; the resident sees it.
  at('escalate');
  await worker.locator('[data-testid=escalate]').click();
  await worker.locator('[data-testid=escalate-dialog] textarea[name=note]').fill('需要社区协调更换灯杆');
  await worker.locator('[data-testid=escalate-dialog] button[value=ok]').click();
  await expectText(worker.locator('[data-testid=conv-state]'), '已上报', "the worker's state after escalating");
  await expectText(resident.locator('[data-testid=conv-state]'), '已上报', "the resident's state after escalating");
  await expectText(resident.locator('[data-testid=timeline] .line'), '需要社区协调更换灯杆', 'the escalation note');

  // 4. The worker resolves with a summary; the petition leaves the inbox.
  at('4. The worker resolves with a summary; the petition leaves t');
  await worker.locator('[data-testid=resolve]').click();
  await worker.locator('[data-testid=resolve-dialog] textarea[name=summary]').fill('两盏路灯已更换，晚上亮了。');
  await worker.locator('[data-testid=resolve-dialog] button[value=ok]').click();
  await expectText(worker.locator('[data-testid=conv-state]'), '已办结待确认', "the worker's state after resolving");
  await expectText(worker.locator('[data-testid=inbox]'), '没有待办诉求', 'the inbox after resolving');

  // 5. The resident sees it resolved and rates it.
  at('5. The resident sees it resolved and rates it.');
  await expectText(resident.locator('[data-testid=conv-state]'), '已办结待确认', "the resident's state after resolving");
  await resident.locator('[data-testid=rate-box]').waitFor({ state: 'visible', timeout: TIMEOUT });
  await shoot(resident, 'resident');
  await resident.locator('[data-testid=rate-box] button[data-level=RATING_LEVEL_SATISFIED]').click();
  await expectText(resident.locator('[data-testid=conv-state]'), '已关闭', 'state after rating');
  await resident.locator('[data-testid=reopen-box]').waitFor({ state: 'visible', timeout: TIMEOUT });
  await expectText(worker.locator('[data-testid=timeline] .line'), '满意', 'the rating on the worker\'s page');

  // The board moved along: resolved, nothing open.
  at('The board moved along: resolved, nothing open.');
  await expectText(board.locator('[data-testid=kpi-resolutionRate] .fig'), '100%', 'board resolution rate');
  await expectText(board.locator('[data-testid=kpi-open] .fig'), '0', 'board open figure');
  await board.screenshot({ path: join(shots, 'board-chain-desktop.png'), fullPage: true });

  // Not settled after all: the resident reopens it, and it is back in the worker's inbox.
  at('reopen');
  await resident.locator('#reopen-reason').fill('另一头的路灯又不亮了');
  await resident.locator('#reopen').click();
  await expectText(resident.locator('[data-testid=conv-state]'), '待响应', 'state after reopening');
  await expectText(worker.locator('[data-testid=inbox-item]'), '路灯不亮', "the reopened petition in the worker's inbox");
  await expectText(worker.locator('[data-testid=timeline] .line'), '另一头的路灯又不亮了', "the reopening on the worker's page");

  // The resident withdraws it: a cancelled confirmation changes nothing; a confirmed one, with a
  // reason, ends it on both pages and empties the worker's inbox.
  at('withdraw');
  await resident.locator('[data-testid=withdraw]').click();
  await resident.locator('[data-testid=withdraw-dialog] button[value=cancel]').click();
  await resident.waitForTimeout(300);
  await expectText(resident.locator('[data-testid=conv-state]'), '待响应', 'state after a cancelled withdrawal');
  await resident.locator('[data-testid=withdraw]').click();
  await resident.locator('[data-testid=withdraw-dialog] textarea[name=reason]').fill('物业已经修好了');
  await shoot(resident, 'resident-withdraw');
  await resident.locator('[data-testid=withdraw-dialog] button[value=ok]').click();
  await expectText(resident.locator('[data-testid=conv-state]'), '已撤回', 'state after withdrawing');
  await expectText(resident.locator('[data-testid=timeline] .line'), '物业已经修好了', 'the withdrawal reason');
  if (!(await resident.locator('[data-testid=withdraw]').isHidden())) throw new Error('withdraw still offered');
  if (!(await resident.locator('#conv-composer').isHidden())) throw new Error('composer still offered');
  await expectText(worker.locator('[data-testid=conv-state]'), '已撤回', "the worker's state after the withdrawal");
  await expectText(worker.locator('[data-testid=timeline] .line'), '物业已经修好了', "the withdrawal on the worker's page");
  await expectText(worker.locator('[data-testid=inbox]'), '没有待办诉求', 'the inbox after the withdrawal');

  // A second petition belongs to the next grid: the worker transfers it to a worker there (found
  // by an address), whose app (another browser context) alerts live; it leaves the first inbox.
  at('transfer');
  const worker2Context = await context({ permissions: ['notifications'] });
  const worker2 = await worker2Context.newPage();
  pages.push(worker2);
  watch('worker2', worker2);
  await signIn(worker2, '/worker', 'worker-01-2a');
  await worker2.locator('#app:not([hidden])').waitFor({ timeout: TIMEOUT });
  await expectText(worker2.locator('[data-testid=inbox]'), '没有待办诉求', "the second grid's empty inbox");
  await resident.locator('[data-testid=conversation] [data-back]').click();
  await resident.locator('[data-testid=worker]', { hasText: '网格员1' }).locator('a.at').click();
  await resident.locator('[data-testid=new]').waitFor({ state: 'visible', timeout: TIMEOUT });
  await resident.locator('[data-testid=title]').fill('楼道堆放杂物');
  await resident.locator('[data-testid=new] [data-testid=text]').fill('12号三楼楼道堆满了纸箱，怕着火。');
  await resident.locator('[data-testid=submit]').click();
  await resident.waitForURL(/#\/p\/\d+$/, { timeout: TIMEOUT });
  const second = resident.url().match(/#\/p\/(\d+)$/)[1];
  if (second === petition) throw new Error('the second petition has the first one\'s id');
  await expectText(alert, '楼道堆放杂物', 'the alert of the second petition');
  await worker.locator(`[data-testid=inbox-item][data-petition-id="${second}"] a`).click();
  await expectText(worker.locator('#conv-title'), '楼道堆放杂物', 'the second petition open');
  await worker.locator('[data-testid=transfer]').click();
  await worker.locator('[data-testid=transfer-address]').fill('条心路12号');
  await worker.locator('[data-testid=transfer-look-up]').click();
  const other = worker.locator('[data-testid=transfer-other]');
  await other.waitFor({ state: 'visible', timeout: TIMEOUT });
  await expectText(worker.locator('#transfer-grid'), '第2网格', 'the grid of the address');
  const toWorker = await other.locator('option', { hasText: '2网格员1' }).getAttribute('value');
  await other.selectOption(toWorker);
  await worker.locator('[data-testid=transfer-dialog] textarea[name=reason]').fill('12号属于第2网格');
  await shoot(worker, 'worker-transfer');
  await worker.locator('[data-testid=transfer-dialog] button[value=ok]').click();
  const alert2 = worker2.locator('[data-testid=alert]');
  await expectText(alert2, '转来的诉求', "the transferred-in alert on the second grid's app");
  await expectText(alert2, '楼道堆放杂物', 'the transferred-in alert names the petition');
  await expectText(worker2.locator('[data-testid=badge]'), '1', "the second grid's badge");
  await expectText(worker2.locator('[data-testid=inbox-item]'), '楼道堆放杂物', "the second grid's inbox");
  await expectText(alert, '诉求已转出', "the first worker's transferred-out alert");
  await expectText(worker.locator('[data-testid=inbox]'), '没有待办诉求', "the first worker's inbox after the transfer");
  if (!(await worker.locator('#conv').isHidden())) throw new Error('the transferred petition stayed open on the first worker');
  await expectText(resident.locator('[data-testid=conv-state]'), '已转办', "the resident's state after the transfer");
  await worker2.locator(`[data-testid=inbox-item][data-petition-id="${second}"] a`).click();
  await worker2.locator('#conv-composer [data-testid=text]').fill('我是第2网格的，马上来看。');
  await worker2.locator('#conv-composer [data-testid=send]').click();
  await expectCount(resident, '我是第2网格的，马上来看。', 1, "the second grid's answer on the resident's page");
  await expectText(resident.locator('[data-testid=conv-state]'), '处理中', 'state after the second grid answered');
  await resident.goto(`${base}/#/p/${petition}`);
  await resident.locator('[data-testid=conversation]').waitFor({ state: 'visible', timeout: TIMEOUT });


  // The worker goes off duty; the resident's list of whom to @ says so.
  at('off duty');
  await worker.locator('[data-testid=duty] input').uncheck();
  await expectText(worker.locator('[data-testid=duty]'), '不在岗', "the worker's duty switch");
  await resident.locator('[data-testid=conversation] [data-back]').click();
  await expectText(resident.locator('[data-testid=worker]', { hasText: '网格员1' }), '不在岗', 'the worker off duty on the resident\'s page');
  await resident.goto(`${base}/#/p/${petition}`);
  await resident.locator('[data-testid=conversation]').waitFor({ state: 'visible', timeout: TIMEOUT });

  // English, with one click.
  at('English, with one click.');
  await resident.locator('[data-testid=lang]').click();
  await expectText(resident.locator('h1'), 'Got a problem?', 'English title');
  await expectText(resident.locator('[data-testid=conv-state]'), 'Withdrawn', 'English state');
  await resident.screenshot({ path: join(shots, 'resident-desktop-en.png') });
  await resident.locator('[data-testid=lang]').click();
  await expectText(resident.locator('h1'), '有事@我', 'Chinese title again');

  // The same petition, opened afresh on another device of the resident: its whole story, once.
  at('The same petition, opened afresh on another device of the re');
  const again = await residentContext.newPage();
  await again.goto(`${base}/#/p/${petition}`);
  await expectCount(again, '师傅明早八点到。', 1, 'a fresh page after everything');
  await expectCount(again, '好的，谢谢！', 1, 'a fresh page after everything');
  console.log('DONE');
} catch (e) {
  for (const page of pages) await page.screenshot({ path: join(shots, `failed-${pages.indexOf(page)}.png`) }).catch(() => {});
  console.log(`FAIL at "${where}": ${String(e.message || e).split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  finish();
}
