#!/usr/bin/env node
// Drives sipbridge's console (assets/console.html) in headless Chromium for tests/console.rs:
// logs in with the API token, checks the trunk `--trunk` shows as registered and the live
// call `--call` is listed, checks the ended call `--record` (a call_leg_id) has its jitter/loss
// plot over time (a sparkline in its row, then the full plot with its scales after a tap on
// its Plot button), takes a screenshot of every view (desktop, then a phone-sized viewport),
// hangs the call up from the page (two taps), plays the newest recording, and tests the
// first route with its Test button.
//
//   node tests/browser/console.mjs --url http://127.0.0.1:PORT/console --token-file FILE \
//       --trunk NAME --call CALL_CONTROL_ID --record CALL_LEG_ID --out DIR
//
// stdout: one JSON object per line: {"event":"console"|"step"|"screenshot"|"done"|"error", ...}.
// Exit 0 on success, 1 on any failure, 2 on bad usage. Every wait is bounded.
// Chromium is Debian's /usr/bin/chromium (or $CHROMIUM); playwright-core downloads none.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const VIEWS = ['overview', 'trunks', 'routes', 'calls', 'recordings', 'webhooks', 'config'];
const WAIT_MS = 15_000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function usage(msg) {
  emit({ event: 'error', message: `usage: ${msg}; console.mjs --url URL --token-file FILE --trunk NAME --call ID --record LEG --out DIR` });
  process.exit(2);
}

const opts = {};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const m = /^--(url|token-file|trunk|call|record|out)$/.exec(argv[i]);
  if (!m || argv[i + 1] === undefined) usage(`bad argument ${JSON.stringify(argv[i])}`);
  opts[m[1]] = argv[++i];
}
for (const k of ['url', 'token-file', 'trunk', 'call', 'record', 'out']) if (!opts[k]) usage(`--${k} is required`);
// The token comes from a file: it must not show in `ps` or in test logs.
const token = readFileSync(opts['token-file'], 'utf8').trim();
mkdirSync(opts.out, { recursive: true });

let browser = null;
let page = null;
const consoleLines = [];

async function fail(message) {
  let state = null;
  try { state = await withTimeout(page.evaluate(() => window.sipbridgeConsole), 2000); } catch (_) { /* page gone */ }
  emit({ event: 'error', message: String(message).replace(/\u001b\[[0-9;]*m/g, '').replaceAll(token, '…'), state, console: consoleLines });
  if (browser) { try { await withTimeout(browser.close(), 10_000); } catch (_) { } }
  process.exit(1);
}

function withTimeout(promise, ms) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

const hardTimer = setTimeout(() => {
  fail('overall timeout after 150 s');
  setTimeout(() => process.exit(1), 12_000).unref();
}, 150_000);
process.on('unhandledRejection', (e) => fail(`unhandled: ${e && e.stack ? e.stack : e}`));

// `what` must become true in the page within WAIT_MS.
async function until(what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 });
  } catch (_) {
    throw new Error(`${what}: not within ${WAIT_MS / 1000} s`);
  }
}

// Opens a view by its tab and waits for it to be drawn from fresh API answers.
async function show(view) {
  const before = await page.evaluate(() => window.sipbridgeConsole.renders);
  await page.click(`nav a[data-view="${view}"]`, { timeout: 5000 });
  await until(`the ${view} view drawn`, ([v, n]) => {
    const s = window.sipbridgeConsole;
    return s.view === v && s.rendered === v && s.renders > n;
  }, [view, before]);
}

async function shoot(name) {
  const file = path.join(opts.out, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
  emit({ event: 'screenshot', path: file });
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--autoplay-policy=no-user-gesture-required'],
  });
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  page = await context.newPage();
  page.on('console', (m) => { const text = `${m.type()}: ${m.text()}`; consoleLines.push(text); emit({ event: 'console', text }); });
  page.on('pageerror', (e) => { const text = `pageerror: ${e.message}`; consoleLines.push(text); emit({ event: 'console', text }); });
  page.on('crash', () => fail('the page crashed'));

  const res = await page.goto(opts.url, { waitUntil: 'load', timeout: 15_000 });
  if (!res || !res.ok()) throw new Error(`GET ${opts.url}: HTTP ${res ? res.status() : 'no response'}`);
  await shoot('login');

  // A wrong token is refused with a message, and nothing is kept.
  await page.fill('#token', 'not-the-token');
  await page.click('#signin');
  await until('the wrong token refused', () => !document.getElementById('loginerr').hidden);
  const kept = await page.evaluate(() => sessionStorage.getItem('sipbridge.token'));
  if (kept !== null) throw new Error('a refused token was kept in sessionStorage');

  await page.fill('#token', token);
  await page.click('#signin');
  await until('logged in, overview drawn, live events connected', () => {
    const s = window.sipbridgeConsole;
    return s.state === 'ready' && s.rendered === 'overview' && s.socket === 'open';
  });
  const stored = await page.evaluate(() => [sessionStorage.getItem('sipbridge.token'), localStorage.length]);
  if (stored[0] !== token || stored[1] !== 0) throw new Error('the token is not in sessionStorage only');
  emit({ event: 'step', step: 'logged in' });

  await show('trunks');
  await until(`trunk ${opts.trunk} registered`, (t) => !!document.querySelector(`tr[data-trunk="${t}"][data-state="registered"]`), opts.trunk);
  emit({ event: 'step', step: 'trunk registered', trunk: opts.trunk });

  await show('calls');
  await until(`call ${opts.call} listed live`, (id) => !!document.querySelector(`tr[data-call="${id}"] button.hangup`), opts.call);
  emit({ event: 'step', step: 'live call listed', call: opts.call });

  // The recorded call's jitter and loss over time: a sparkline in its row, and the
  // full plot (both lines, scales in ms and %) once its Plot button is tapped.
  const polylinePoints = (sel) => Array.from(document.querySelectorAll(sel)).map((l) => l.points.numberOfItems);
  await until(`call ${opts.record} has a sparkline`, (leg) => !!document.querySelector(`svg.spark[data-leg="${leg}"] polyline`), opts.record);
  const spark = await page.evaluate(polylinePoints, `svg.spark[data-leg="${opts.record}"] polyline`);
  if (spark.length !== 2 || spark.some((n) => n < 2)) throw new Error(`the sparkline is not two lines of 2+ points: ${JSON.stringify(spark)}`);
  await page.click(`button.qsel[data-id="${opts.record}"]`, { timeout: 5000 });
  await until(`call ${opts.record} plotted`, (leg) => {
    const svg = document.querySelector(`#qplot[data-leg="${leg}"]`);
    return !!svg && window.sipbridgeConsole.plotted === leg && svg.querySelectorAll('polyline').length === 2;
  }, opts.record);
  const plot = await page.evaluate((leg) => {
    const svg = document.querySelector(`#qplot[data-leg="${leg}"]`);
    const pts = (c) => svg.querySelector(`polyline.${c}`).points.numberOfItems;
    return { points: +svg.dataset.points, jitter: pts('jitter'), loss: pts('loss'), labels: Array.from(svg.querySelectorAll('text')).map((t) => t.textContent) };
  }, opts.record);
  if (plot.jitter < 2 || plot.jitter !== plot.points || plot.loss !== plot.points) throw new Error(`the plot's lines do not have the call's points: ${JSON.stringify(plot)}`);
  for (const unit of [' ms', ' %', '0:00']) {
    if (!plot.labels.some((l) => l.endsWith(unit) || l === unit)) throw new Error(`the plot has no ${JSON.stringify(unit)} scale label: ${JSON.stringify(plot.labels)}`);
  }
  emit({ event: 'step', step: 'call quality plotted', leg: opts.record, ...plot });
  await shoot('desktop-calls-plot');

  // Every view, desktop size (the call still up).
  for (const v of VIEWS) {
    await show(v);
    await shoot(`desktop-${v}`);
  }
  // The config view names the refused reload's error; no secret is on the page.
  await show('config');
  const cfg = await page.evaluate(() => [(document.getElementById('rejected') || {}).textContent || '', document.body.innerText]);
  if (!cfg[0].includes('max_disk_usage')) throw new Error(`the refused reload is not shown: ${JSON.stringify(cfg[0])}`);
  if (cfg[1].includes(token) || cfg[1].includes('reg-pass-secret')) throw new Error('a secret shows in the config view');

  // Hang up from the page: the first tap arms, the second sends. The row goes when
  // call.hangup arrives on the event socket.
  await show('calls');
  const hangup = `tr[data-call="${opts.call}"] button.hangup`;
  await page.click(hangup, { timeout: 5000 });
  await until('the hang-up button armed', (sel) => document.querySelector(sel).dataset.armed === '1', hangup);
  await page.click(hangup, { timeout: 5000 });
  await until('the call gone from the live list', (id) => !document.querySelector(`tr[data-call="${id}"]`) && window.sipbridgeConsole.rendered === 'calls', opts.call);
  emit({ event: 'step', step: 'hung up', call: opts.call });

  // Play the newest recording in the page.
  await show('recordings');
  await page.click('tr[data-rec] button.play', { timeout: 5000 });
  await until('a recording playing', () => {
    const a = document.getElementById('player');
    return !!a && a.duration > 0 && (a.currentTime > 0.2 || a.ended);
  });
  const played = await page.evaluate(() => {
    const a = document.getElementById('player');
    return { id: window.sipbridgeConsole.playing, duration: a.duration, currentTime: a.currentTime };
  });
  emit({ event: 'step', step: 'recording played', ...played });
  await shoot('desktop-recordings-playing');
  await page.evaluate(() => document.getElementById('player').pause());

  // The route's Test button: the box calls the first route (the echo agent) and
  // the page shows what happened.
  await show('routes');
  await page.click('button.routetest[data-index="0"]', { timeout: 5000 });
  await until('the route test reported', () => !!document.querySelector('[data-test="0"][data-result]'));
  const routeTest = await page.evaluate(() => {
    const el = document.querySelector('[data-test="0"][data-result]');
    return { result: el.dataset.result, text: el.textContent };
  });
  emit({ event: 'step', step: 'route tested', ...routeTest });
  await shoot('desktop-routes-tested');

  // Phone-sized: every view must fit the width (no sideways scrolling of the page).
  await page.setViewportSize({ width: 390, height: 844 });
  for (const v of VIEWS) {
    await show(v);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 1) throw new Error(`the ${v} view is ${overflow} px wider than a phone's screen`);
    if (v === 'calls') {
      // The per-call plot is still there and fits the phone's width.
      const fit = await page.evaluate(() => {
        const svg = document.getElementById('qplot');
        return svg ? svg.getBoundingClientRect().right - document.documentElement.clientWidth : null;
      });
      if (fit === null || fit > 1) throw new Error(`the call's plot is missing or wider than a phone's screen (${fit})`);
    }
    await shoot(`phone-${v}`);
  }

  clearTimeout(hardTimer);
  emit({ event: 'done', played, routeTest });
  await withTimeout(browser.close(), 10_000).catch(() => { });
  process.exit(0);
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
