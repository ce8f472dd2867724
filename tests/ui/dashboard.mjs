// End-to-end test of the portcullis dashboard in Debian's chromium, driven
// by playwright-core. Run by host/server/tests/ui.rs after it has started the
// server and provoked a block of 127.0.0.1:
//
//   node tests/ui/dashboard.mjs <base-url> <admin-token> <screenshot.png>
//
// Exits 0 when every check holds; prints what failed and exits 1 otherwise.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [base, token, shot] = process.argv.slice(2);
if (!base || !token || !shot) {
  console.error('usage: node dashboard.mjs <base-url> <admin-token> <screenshot.png>');
  process.exit(2);
}
const IP = '127.0.0.1';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// Never hang a CI run.
const watchdog = setTimeout(() => {
  console.error('dashboard.mjs: timed out after 120 s');
  process.exit(1);
}, 120_000);

const step = (msg) => console.log(`ui: ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const profile = mkdtempSync(join(tmpdir(), 'portcullis-ui-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1200, height: 900 },
    timeout: 60_000,
  });
  context.setDefaultTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    // The deliberate 401/403 probes below are logged by chromium as
    // "Failed to load resource"; anything else is a script error.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });

  // 1. Signed out: only the sign-in form.
  step('open /admin/ui signed out');
  const res = await page.goto(`${base}/admin/ui`);
  assert.equal(res.status(), 200);
  assert.equal(res.headers()['x-frame-options'], 'DENY');
  assert.match(res.headers()['content-security-policy'] ?? '', /frame-ancestors 'none'/);
  await page.locator('#signin').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#dashboard').count(), 0, 'no dashboard before sign-in');
  assert.equal(await page.locator('#bans').count(), 0, 'no ban table before sign-in');
  const signedOutText = await page.locator('body').innerText();
  assert.ok(!signedOutText.includes(IP), 'no data before sign-in');
  const anon = await page.evaluate(async () => (await fetch('/admin/ui/data')).status);
  assert.equal(anon, 401, 'data endpoint refuses without the token');

  // 2. A wrong token is refused; the form stays.
  step('sign in with a wrong token');
  await page.fill('#token', 'not-the-token');
  await Promise.all([page.waitForURL(`${base}/admin/ui/login`), page.click('#signin-submit')]);
  await page.locator('#signin-error').waitFor({ state: 'visible' });
  assert.match(await page.locator('#signin-error').innerText(), /wrong token/i);
  assert.equal(await page.locator('#dashboard').count(), 0);

  // 3. The right token: the dashboard, with an HttpOnly, SameSite=Strict cookie.
  step('sign in');
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}/admin/ui`), page.click('#signin-submit')]);
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#signin').count(), 0);
  const cookies = await context.cookies(`${base}/admin/ui`);
  const c = cookies.find((x) => x.name === 'portcullis_admin');
  assert.ok(c, `session cookie set: ${JSON.stringify(cookies)}`);
  assert.equal(c.httpOnly, true);
  assert.equal(c.sameSite, 'Strict');
  assert.ok(!(await page.evaluate(() => document.cookie)).includes('portcullis_admin'), 'not readable by script');

  // 4. The blocked address, its reason and a countdown that runs.
  step('find the row of 127.0.0.1');
  const row = page.locator(`#bans tbody tr[data-ip="${IP}"][data-kind="request"]`);
  await row.waitFor({ state: 'visible' });
  assert.equal(await row.locator('td.reason').getAttribute('data-reason'), 'blocked');
  assert.equal((await row.locator('td.reason').innerText()).trim(), 'blocked');
  const left = row.locator('td.countdown');
  const secs = async () => Number(await left.getAttribute('data-seconds'));
  const text1 = await left.innerText();
  const s1 = await secs();
  assert.match(text1, /^\d+:\d\d$/, `countdown text ${text1}`);
  assert.ok(s1 > 0 && s1 <= 900, `countdown ${s1}`);
  await sleep(2600);
  const text2 = await left.innerText();
  const s2 = await secs();
  step(`countdown ${text1} -> ${text2}`);
  assert.ok(s2 < s1, `countdown decreases: ${s1} -> ${s2}`);
  assert.notEqual(text1, text2);

  // 4b. A manual range ban: listed as key "manual" with the operator's reason.
  step('find the manual range 203.0.113.0/24');
  const manual = page.locator('#bans tbody tr[data-ip="203.0.113.0/24"][data-kind="manual"]');
  await manual.waitFor({ state: 'visible' });
  assert.equal((await manual.locator('td.kind').innerText()).trim(), 'manual');
  assert.equal(await manual.locator('td.reason').getAttribute('data-reason'), 'banned');
  assert.equal((await manual.locator('td.reason').innerText()).trim(), 'banned: scanner');

  // 5. Chart, offenders and health tiles are filled from live data.
  step('chart, offenders, tiles');
  await page.waitForFunction(() => document.querySelectorAll('#chart polyline').length > 0);
  const series = await page.$$eval('#chart polyline', (ls) => ls.map((l) => l.getAttribute('data-series')));
  assert.ok(series.includes('allow'), `allow series drawn: ${series}`);
  assert.ok(series.some((s) => s !== 'allow'), `a denial series drawn: ${series}`);
  const off = page.locator(`#offenders tbody tr[data-ip="${IP}"]`);
  await off.waitFor({ state: 'visible' });
  assert.ok(Number(await off.locator('td.num').innerText()) >= 1);
  assert.match(await page.locator('#t-fill').innerText(), /^\d[\d,]* \/ \d[\d,]*$/);
  assert.match(await page.locator('#t-evict').innerText(), /^\d/);
  assert.equal(await page.locator('#t-store').innerText(), 'sqlite');
  assert.match(await page.locator('#t-fallback').innerText(), /fallback: n\/a/);

  // 6. The cookie alone cannot unban (the CSRF guard), the button can.
  const noHeader = await page.evaluate(
    async (ip) => (await fetch(`/admin/bans/${ip}`, { method: 'DELETE' })).status,
    IP,
  );
  assert.equal(noHeader, 403, 'DELETE without X-Requested-With is refused');

  step(`screenshot ${shot}`);
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(statSync(shot).size > 10_000, 'screenshot written');

  // 7. Phone width: nothing overflows sideways, the Unban button is reachable.
  await page.setViewportSize({ width: 375, height: 812 });
  await sleep(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scroll at phone width (overflow ${overflow}px)`);
  const btn = row.locator('button.unban');
  await btn.scrollIntoViewIfNeeded();
  const box = await btn.boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `unban button within the screen: ${JSON.stringify(box)}`);
  await page.screenshot({ path: shot.replace(/\.png$/, '') + '-phone.png', fullPage: true });
  await page.setViewportSize({ width: 1200, height: 900 });

  // 8. Unban: the rows go and stay gone across refreshes; the range is
  // sent percent-encoded and lifts exactly that manual ban.
  step('unban the manual range');
  const delRange = page.waitForResponse(
    (r) => r.url().endsWith('/admin/bans/203.0.113.0%2F24') && r.request().method() === 'DELETE',
  );
  await manual.locator('button.unban').click();
  const delRangeRes = await delRange;
  assert.equal(delRangeRes.status(), 200);
  assert.equal((await delRangeRes.json()).lifted, 1);
  await manual.waitFor({ state: 'detached' });
  step('unban');
  const del = page.waitForResponse((r) => r.url().endsWith(`/admin/bans/${IP}`) && r.request().method() === 'DELETE');
  await btn.click();
  const delRes = await del;
  assert.equal(delRes.status(), 200);
  await row.waitFor({ state: 'detached' });
  await sleep(2500);
  assert.equal(await row.count(), 0, 'row stays gone after the next refresh');
  assert.equal(await page.locator('#bans-empty').isVisible(), true);

  assert.deepEqual(errors, [], 'no script errors on the page');
  step('all checks passed');
  await context.close();
  clearTimeout(watchdog);
} catch (e) {
  console.error(`ui: FAILED: ${e && e.stack ? e.stack : e}`);
  if (context) {
    try {
      const p = context.pages()[0];
      if (p) await p.screenshot({ path: `${shot}.failed.png`, fullPage: true });
    } catch {}
    await context.close().catch(() => {});
  }
  process.exitCode = 1;
  clearTimeout(watchdog);
} finally {
  rmSync(profile, { recursive: true, force: true });
}
