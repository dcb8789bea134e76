// The dashboard in a real browser: Debian's Chromium driven by playwright-core.
//
// Signs in as admin, opens every dashboard page and reads the numbers it shows, opens
// an audit entry of each kind, accepts a pending worksheet, checks a narrow window,
// signs out, and checks that the pages are closed again. Prints one JSON object on
// standard output (the Rust test crates/cli/tests/dashboard_browser.rs asserts on it)
// and keeps a screenshot of each step in $MEDICODAX_SCREENSHOTS.
//
// Environment: MEDICODAX_URL (the gateway), MEDICODAX_ADMIN_PASSWORD,
// MEDICODAX_SCREENSHOTS (a folder), MEDICODAX_WORKSHEET (optional: the
// "connection/encounter" to accept; default the first pending one).

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.MEDICODAX_URL;
const password = process.env.MEDICODAX_ADMIN_PASSWORD;
const shots = process.env.MEDICODAX_SCREENSHOTS;
if (!base || !password || !shots) {
  console.error('set MEDICODAX_URL, MEDICODAX_ADMIN_PASSWORD and MEDICODAX_SCREENSHOTS');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const profile = mkdtempSync(join(tmpdir(), 'medicodax-chromium-'));
const result = { ok: false, pages: {}, screenshots: [], console_errors: [] };
let context;

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

async function metrics(page) {
  return page.$$eval('[data-metric]', els => Object.fromEntries(els.map(e => [e.getAttribute('data-metric'), e.textContent.trim()])));
}

async function open(page, path, name) {
  const resp = await page.goto(base + path, { waitUntil: 'load' });
  const info = {
    status: resp ? resp.status() : 0,
    url: page.url().replace(base, ''),
    title: await page.title(),
    h1: (await page.textContent('h1'))?.trim(),
    metrics: await metrics(page),
    has_main_landmark: (await page.$('main#main')) !== null,
    nav: await page.$$eval('nav[aria-label="Dashboard pages"] a', as => as.map(a => a.textContent.trim())),
  };
  await shot(page, name);
  result.pages[name] = info;
  return info;
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', m => { if (m.type() === 'error') result.console_errors.push(m.text()); });

  // Sign in.
  await page.goto(base + '/login');
  await shot(page, '01-login');
  await page.fill('#user', 'admin');
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(u => !u.pathname.startsWith('/login')), page.click('button[type=submit]')]);
  result.after_login = page.url().replace(base, '');

  // Every page, with the numbers it shows.
  const integrations = await open(page, '/integrations', '02-integrations');
  integrations.connections = await page.$$eval('section.card h2[id^="conn-"]', hs => hs.map(h => h.textContent.trim()));
  integrations.key_ids = await page.$$eval('code.kid', cs => cs.map(c => c.textContent.trim()));
  integrations.renewals = await page.$$eval('dd[data-metric="renewals"]', ds => ds.map(d => Number(d.textContent.trim())));
  await open(page, '/savings', '03-savings');
  const ws = await open(page, '/worksheets', '04-worksheets');
  ws.links = await page.$$eval('table tbody th a', as => as.map(a => a.getAttribute('href')));
  const audit = await open(page, '/audit', '05-audit');
  audit.rows = await page.$$eval('table.log tbody tr', trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent.trim())));

  // The filter: denied calls only.
  const denied = await open(page, '/audit?decision=denied', '05b-audit-denied');
  denied.rows = await page.$$eval('table.log tbody tr', trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent.trim())));

  // An outcome entry (receipt claims) and an intent entry (the decoded call).
  const outcomeRow = audit.rows.find(r => r[2] === 'outcome' && r[7] === 'allowed');
  const intentRow = audit.rows.find(r => r[2] === 'intent');
  if (outcomeRow) {
    const e = await open(page, `/audit/entries/${outcomeRow[0]}`, '06-audit-outcome');
    e.receipt = JSON.parse(e.metrics.receipt);
  }
  if (intentRow) {
    const e = await open(page, `/audit/entries/${intentRow[0]}`, '07-audit-intent');
    e.claims = await page.$$eval('pre code', cs => cs.map(c => c.textContent));
  }
  const agents = await open(page, '/agents', '08-agents');
  agents.rows = await page.$$eval('table tbody tr', trs => trs.map(tr => Array.from(tr.children).map(td => td.textContent.trim())));
  const users = await open(page, '/users', '09-users');
  users.rows = await page.$$eval('table tbody tr th', ths => ths.map(t => t.textContent.trim()));
  await open(page, '/me', '10-me');

  // Accept a worksheet.
  const target = process.env.MEDICODAX_WORKSHEET
    ? `/worksheets/${process.env.MEDICODAX_WORKSHEET}`
    : ws.links[0];
  const detail = await open(page, target, '11-worksheet');
  detail.diagnoses = await page.$$eval('article.dx', as => as.length);
  detail.codes = await page.$$eval('article.dx tbody th code', cs => cs.map(c => c.textContent.trim()));
  await page.waitForTimeout(1200); // the coder reads: review time is measured by the server
  await Promise.all([page.waitForLoadState('load'), page.click('button[name=action][value=accept]')]);
  await page.waitForURL(u => u.pathname === target);
  result.accepted = { path: target, status: (await page.textContent('[data-metric="status"]'))?.trim() };
  await shot(page, '12-worksheet-accepted');
  await open(page, '/savings', '13-savings-after-review');

  // A narrow window: nothing may widen the page itself (tables scroll in their boxes).
  await page.setViewportSize({ width: 375, height: 800 });
  const narrow = {};
  for (const p of ['/integrations', '/worksheets', '/audit', target]) {
    await page.goto(base + p);
    narrow[p] = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  }
  result.narrow = narrow;
  await page.goto(base + '/savings');
  await shot(page, '14-savings-narrow');
  await page.setViewportSize({ width: 1280, height: 900 });

  // Sign out; the pages are closed again.
  await page.goto(base + '/me');
  await Promise.all([page.waitForURL(u => u.pathname === '/login'), page.click('form.signout button')]);
  result.after_logout = page.url().replace(base, '');
  await page.goto(base + '/integrations');
  result.after_logout_protected = page.url().replace(base, '');
  await shot(page, '15-signed-out');
  result.ok = true;
} catch (e) {
  result.error = String(e && e.stack || e);
  try { const p = context?.pages()[0]; if (p) await shot(p, '99-failure'); } catch {}
} finally {
  try { await context?.close(); } catch {}
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
