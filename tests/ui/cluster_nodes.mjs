// The dashboard's Store tile on a Redis Cluster with one master down, in
// Debian's chromium driven by playwright-core. Run by
// host/server/tests/fleet_cluster.rs while the master on <dead-port> is dead:
//
//   node tests/ui/cluster_nodes.mjs <base-url> <admin-token> <dead-port>
//
// Checks: three masters listed with their slot ranges, the dead one marked
// DOWN (class "bad") with one outage, the others up; the fallback line says
// ACTIVE. Exits 0 when every check holds, 1 otherwise.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [base, token, deadPort] = process.argv.slice(2);
if (!base || !token || !deadPort) {
  console.error('usage: node cluster_nodes.mjs <base-url> <admin-token> <dead-port>');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const watchdog = setTimeout(() => {
  console.error('cluster_nodes.mjs: timed out after 120 s');
  process.exit(1);
}, 120_000);

const profile = mkdtempSync(join(tmpdir(), 'portcullis-ui-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    timeout: 60_000,
  });
  context.setDefaultTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/admin/ui`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}/admin/ui`), page.click('#signin-submit')]);
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  await page.waitForFunction(() => document.querySelectorAll('#t-nodes li').length === 3);
  assert.equal(await page.locator('#t-nodes').isVisible(), true, 'node list shown');
  const items = await page.$$eval('#t-nodes li', (ls) => ls.map((l) => ({ text: l.textContent, bad: l.className === 'bad' })));
  console.log(`ui: nodes ${JSON.stringify(items)}`);
  for (const it of items) {
    assert.match(it.text, /^127\.0\.0\.1:\d+ \[\d+-\d+(,\d+-\d+)*\] /, it.text);
    const dead = it.text.startsWith(`127.0.0.1:${deadPort} `);
    assert.equal(it.bad, dead, it.text);
    assert.match(it.text, dead ? / DOWN · outages: 1$/ : / up$/, it.text);
  }
  assert.equal(items.filter((i) => i.bad).length, 1, 'one master down');
  assert.match(await page.locator('#t-fallback').innerText(), /fallback: ACTIVE/);
  assert.deepEqual(errors, [], 'no script errors');
  console.log('ui: cluster nodes ok');
} catch (e) {
  console.error(`cluster_nodes.mjs: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
