#!/usr/bin/env node
// Drives sipbridge's room page (assets/room.html) in headless Chromium for the WebRTC
// integration test: joins with a WAV file as the microphone, samples the page's level
// hooks while holding the call, reports the codecs Chromium negotiated (its
// RTCPeerConnection.getStats(): the codec of the audio it sends and receives, and the
// answer's m=audio line), takes a screenshot, leaves.
//
//   node tests/browser/drive.mjs --url 'http://127.0.0.1:PORT/rooms/NAME#token=...' \
//       --wav mic.wav --screenshot out.png --hold 5 [--tones 500,900]
//
// stdout: one JSON object per line: {"event":"console"|"connected"|"sample"|"codecs"|
// "screenshot"|"left"|"error", ...}; "codecs" is {"outbound":{mimeType,clockRate,
// channels,payloadType,packets},"inbound":{...},"answer":"m=audio ..."}. Exit 0 on success, 1 on any failure, 2 on bad usage.
// Chromium is Debian's /usr/bin/chromium (or $CHROMIUM); playwright-core downloads none.

import { chromium } from 'playwright-core';
import { existsSync } from 'node:fs';
import path from 'node:path';

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function usage(msg) {
  emit({ event: 'error', message: `usage: ${msg}; drive.mjs --url URL --wav FILE --screenshot PNG --hold SECONDS [--tones 500,900]` });
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { tones: '500,900' };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(url|wav|screenshot|hold|tones)(?:=(.*))?$/.exec(argv[i]);
    if (!m) usage(`unknown argument ${JSON.stringify(argv[i])}`);
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value === undefined) usage(`--${m[1]} needs a value`);
    opts[m[1]] = value;
  }
  for (const k of ['url', 'wav', 'screenshot', 'hold']) if (!opts[k]) usage(`--${k} is required`);
  opts.hold = Number(opts.hold);
  if (!Number.isFinite(opts.hold) || opts.hold < 0) usage('--hold must be a number of seconds >= 0');
  opts.tones = opts.tones.split(',').filter(Boolean).map(Number);
  if (opts.tones.some((t) => !Number.isFinite(t) || t <= 0)) usage('--tones must be comma-separated frequencies in Hz');
  opts.wav = path.resolve(opts.wav);
  if (!existsSync(opts.wav)) usage(`no such WAV file: ${opts.wav}`);
  opts.screenshot = path.resolve(opts.screenshot);
  return opts;
}

// Without the fragment: the join token is a secret and must not land in test logs.
function redact(url) {
  return String(url).replace(/#.*/, '#…');
}

const opts = parseArgs(process.argv.slice(2));
const CONNECT_TIMEOUT_MS = 20_000;
const LEAVE_TIMEOUT_MS = 10_000;
const consoleLines = [];
let browser = null;
let page = null;
let finished = false;

async function fail(message) {
  if (finished) return;
  finished = true;
  let pageError = null;
  let state = null;
  if (page) {
    try {
      ({ state, pageError } = await withTimeout(page.evaluate(() => ({
        state: window.sipbridgeRoom ? window.sipbridgeRoom.state : null,
        pageError: (document.getElementById('error') || {}).textContent || null,
      })), 2000));
    } catch (_) { /* page gone */ }
  }
  // Playwright's messages quote the URL: keep the join token and colour codes out of logs.
  message = String(message).replace(/#[^\s"']*/g, '#…').replace(/\u001b\[[0-9;]*m/g, '');
  emit({ event: 'error', message, state, pageError, console: consoleLines });
  await closeBrowser();
  process.exit(1);
}

function withTimeout(promise, ms) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

async function closeBrowser() {
  if (!browser) return;
  const b = browser;
  browser = null;
  try { await withTimeout(b.close(), 10_000); } catch (_) { /* the hard timeout covers a hang */ }
}

const hardTimeoutMs = (opts.hold + 60) * 1000;
const hardTimer = setTimeout(() => {
  fail(`overall timeout after ${hardTimeoutMs / 1000} s`);
  // If even closing hangs, go anyway.
  setTimeout(() => process.exit(1), 12_000).unref();
}, hardTimeoutMs);

process.on('unhandledRejection', (e) => fail(`unhandled: ${e && e.stack ? e.stack : e}`));

async function roomState() {
  return page.evaluate(() => (window.sipbridgeRoom ? window.sipbridgeRoom.state : null));
}

async function main() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
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
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${opts.wav}`,
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const context = await browser.newContext({ permissions: ['microphone'], viewport: { width: 800, height: 700 } });
  // Keep the page's peer connections reachable for getStats() (the page keeps its own private).
  await context.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    if (!Native) return;
    window.__sipbridgePcs = [];
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sipbridgePcs.push(this);
      }
    };
  });
  page = await context.newPage();
  page.on('console', (m) => {
    const text = `${m.type()}: ${m.text()}`;
    consoleLines.push(text);
    emit({ event: 'console', text });
  });
  page.on('pageerror', (e) => {
    const text = `pageerror: ${e.message}`;
    consoleLines.push(text);
    emit({ event: 'console', text });
  });
  page.on('crash', () => fail('the page crashed'));

  const res = await page.goto(opts.url, { waitUntil: 'load', timeout: 15_000 });
  if (!res || !res.ok()) throw new Error(`GET ${redact(opts.url)}: HTTP ${res ? res.status() : 'no response'}`);
  await page.waitForFunction(() => !!window.sipbridgeRoom, null, { timeout: 5000 });

  await page.click('#join', { timeout: 5000 });
  try {
    await page.waitForFunction(
      () => ['connected', 'failed', 'left'].includes(window.sipbridgeRoom.state),
      null,
      { timeout: CONNECT_TIMEOUT_MS, polling: 100 },
    );
  } catch (_) {
    throw new Error(`not connected after ${CONNECT_TIMEOUT_MS / 1000} s (state ${await roomState()})`);
  }
  const joined = await page.evaluate(() => ({ state: window.sipbridgeRoom.state, participantId: window.sipbridgeRoom.participantId }));
  if (joined.state !== 'connected') {
    const why = await page.evaluate(() => document.getElementById('error').textContent);
    throw new Error(`join ended in state ${joined.state}: ${why}`);
  }
  emit({ event: 'connected', participantId: joined.participantId });

  const t0 = Date.now();
  const end = t0 + opts.hold * 1000;
  for (let next = t0; ;) {
    const s = await page.evaluate((tones) => {
      const r = window.sipbridgeRoom;
      return {
        state: r.state,
        levelDb: r.levelDb(),
        tones: tones.map((hz) => r.toneDb(hz)),
        participants: r.participants.map((p) => p.call_control_id),
      };
    }, opts.tones);
    const sample = { event: 'sample', t: Number(((Date.now() - t0) / 1000).toFixed(3)), levelDb: s.levelDb };
    opts.tones.forEach((hz, i) => { sample[`tone${hz}Db`] = s.tones[i]; });
    sample.participants = s.participants;
    sample.state = s.state;
    emit(sample);
    if (s.state !== 'connected') throw new Error(`state became ${s.state} while holding the call`);
    next += 250;
    if (next > end) break;
    await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
  }

  const codecs = await withTimeout(page.evaluate(async () => {
    const pcs = window.__sipbridgePcs || [];
    const pc = pcs[pcs.length - 1];
    if (!pc) return { error: 'no RTCPeerConnection seen' };
    const stats = await pc.getStats();
    const byId = new Map();
    stats.forEach((s) => byId.set(s.id, s));
    const out = { answer: null };
    stats.forEach((s) => {
      if (s.kind !== 'audio' || !s.codecId || (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp')) return;
      const c = byId.get(s.codecId) || {};
      out[s.type === 'inbound-rtp' ? 'inbound' : 'outbound'] = {
        mimeType: c.mimeType, clockRate: c.clockRate, channels: c.channels, payloadType: c.payloadType,
        packets: s.type === 'inbound-rtp' ? s.packetsReceived : s.packetsSent,
      };
    });
    const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : '';
    out.answer = (sdp.split(/\r?\n/).find((l) => l.startsWith('m=audio')) || null);
    return out;
  }), 5000);
  emit({ event: 'codecs', ...codecs });

  await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 10_000 });
  emit({ event: 'screenshot', path: opts.screenshot });

  await page.click('#leave', { timeout: 5000 });
  try {
    await page.waitForFunction(() => window.sipbridgeRoom.state === 'left', null, { timeout: LEAVE_TIMEOUT_MS, polling: 100 });
  } catch (_) {
    throw new Error(`not left after ${LEAVE_TIMEOUT_MS / 1000} s (state ${await roomState()})`);
  }
  emit({ event: 'left' });
  finished = true;
  clearTimeout(hardTimer);
  await closeBrowser();
  process.exit(0);
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
