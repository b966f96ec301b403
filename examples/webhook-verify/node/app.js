#!/usr/bin/env node
// A minimal webhook backend for sipbridge that verifies every request with the
// official Telnyx Node SDK (npm `telnyx`), exactly as a backend verifies Telnyx's
// own webhooks: only the public key differs.
//
//   npm ci
//   export TELNYX_PUBLIC_KEY="$(sudo sipbridge pubkey)"   # sipbridge's key, not Telnyx's
//   node app.js --port 8000
//
// and in /etc/sipbridge/sipbridge.toml:  [webhooks] url = "http://<this host>:8000/webhooks"
//
// `new Telnyx()` reads TELNYX_PUBLIC_KEY (no API key is needed to verify webhooks).
// `await client.webhooks.unwrap(rawBody, { headers })` checks the Ed25519 signature
// in `telnyx-signature-ed25519` over "{telnyx-timestamp}|{raw body}" (WebCrypto),
// rejects timestamps more than 300 s away from this machine's clock, and returns
// the parsed event. It is async: without `await`, a bad signature is not caught.
// It must get the raw body as sent (never re-serialised JSON).
//
// Output: one JSON line per request on stdout:
//   {"listening": PORT}                                   once, when ready
//   {"verified": "call.hangup", "id": ..., "call_session_id": ...}
//   {"rejected": "<the SDK's reason>"}                    answered 400

'use strict';

const http = require('node:http');
const Telnyx = require('telnyx').default;

const client = new Telnyx(); // public key from TELNYX_PUBLIC_KEY

function emit(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function answer(res, code, text) {
  res.writeHead(code, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    answer(res, 405, 'POST only');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    let event;
    try {
      event = await client.webhooks.unwrap(raw, { headers: req.headers });
    } catch (err) {
      emit({ rejected: String(err && err.message ? err.message : err) });
      answer(res, 400, 'signature verification failed');
      return;
    }
    const data = event.data || {};
    emit({
      verified: data.event_type,
      id: data.id,
      call_session_id: data.payload ? data.payload.call_session_id : null,
    });
    // Acknowledge at once; do real work elsewhere. Drop duplicates by data.id
    // (delivery is at-least-once).
    answer(res, 200, 'ok');
  });
});

if (!client.publicKey) {
  console.error("set TELNYX_PUBLIC_KEY to sipbridge's public key (sudo sipbridge pubkey)");
  process.exit(2);
}
server.listen(Number(arg('--port', '8000')), arg('--host', '127.0.0.1'), () => {
  emit({ listening: server.address().port });
});
