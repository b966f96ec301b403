#!/usr/bin/env python3
"""A minimal webhook backend for sipbridge that verifies every request with the
official Telnyx Python SDK (PyPI `telnyx`, extra `webhooks`), exactly as a
backend verifies Telnyx's own webhooks: only the public key differs.

    pip install "telnyx[webhooks]"
    export TELNYX_PUBLIC_KEY="$(sudo sipbridge pubkey)"   # sipbridge's key, not Telnyx's
    python3 app.py --port 8000

and in /etc/sipbridge/sipbridge.toml:  [webhooks] url = "http://<this host>:8000/webhooks"

`Telnyx()` reads TELNYX_PUBLIC_KEY (no API key is needed to verify webhooks);
`client.webhooks.unwrap(raw_body, headers=...)` checks the Ed25519 signature in
`telnyx-signature-ed25519` over "{telnyx-timestamp}|{raw body}", rejects
timestamps more than 300 s away from this machine's clock, and returns the typed
event. It must get the raw body as sent (never re-serialised JSON).

Output: one JSON line per request on stdout, flushed at once:
  {"listening": PORT}                                   once, when ready
  {"verified": "call.hangup", "id": ..., "call_session_id": ..., "sdk_type": ...}
  {"rejected": "<the SDK's reason>"}                    answered 400
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from telnyx import Telnyx

client = Telnyx()  # public key from TELNYX_PUBLIC_KEY


def emit(line):
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # stdout carries the JSON lines only
        pass

    def answer(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = client.webhooks.unwrap(raw.decode("utf-8"), headers=dict(self.headers.items()))
        except Exception as exc:  # the SDK raises ValueError (or TelnyxError) on any failure
            emit({"rejected": str(exc)})
            self.answer(400, "signature verification failed")
            return
        data = event.data
        payload = getattr(data, "payload", None)
        emit({
            "verified": data.event_type,
            "id": data.id,
            "call_session_id": getattr(payload, "call_session_id", None),
            "sdk_type": type(event).__name__,
        })
        # Acknowledge at once; do real work elsewhere. Drop duplicates by data.id
        # (delivery is at-least-once).
        self.answer(200, "ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free one)")
    args = p.parse_args()
    if not client.public_key:
        sys.exit("set TELNYX_PUBLIC_KEY to sipbridge's public key (sudo sipbridge pubkey)")
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    emit({"listening": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()
