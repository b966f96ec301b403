#!/usr/bin/env python3
"""A webhook backend for sipbridge's tests: verifies every request the way a
Telnyx backend does, independently of sipbridge's Rust code, and records it.

Verification (Telnyx docs, "Webhook signing"; what the Telnyx SDKs'
`webhooks.signature.verify` does): the `telnyx-signature-ed25519` header is the
base64 Ed25519 signature over b"{telnyx-timestamp}|{raw body}", checked with the
base64 32-byte public key that `sipbridge keygen` printed, using the
`cryptography` package. Timestamps older than 5 minutes (or more than 5 minutes in
the future) are rejected.

Every request becomes one JSON line in --log (flushed before the answer is sent):
  accepted: {"answered": 200|500, "event_id", "event_type", "session", "attempt",
             "delivered_to", "path", "timestamp", "received_at", "body"}
  (received_at: this receiver's clock when the request's body was read, Unix
  seconds as a float)
  rejected: {"rejected": "<reason>", "answered": 400|401, "path"}

Behaviour is set at start (--status, --fail-session, --delay-ms) and can be
changed while running with POST /_control {"status": 200, "fail_session": null,
"delay_ms": 0} (loopback test control; not signed). --fail-session is a prefix:
events whose payload.call_session_id starts with it are answered 500. Being "down" is being killed:
the test stops this process by pid and starts it again on the same --port.

Usage: webhook_receiver.py --public-key B64 --log out.jsonl [--port 0]
       [--port-file F] [--status 200] [--fail-session S] [--delay-ms 0]
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_S = 300


class State:
    def __init__(self, args):
        raw = base64.b64decode(args.public_key, validate=True)
        self.key = Ed25519PublicKey.from_public_bytes(raw)
        self.log = open(args.log, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.status = args.status
        self.fail_session = args.fail_session
        self.delay_ms = args.delay_ms

    def record(self, entry):
        line = json.dumps(entry, separators=(",", ":"))
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()


def verify(key, headers, body):
    """Returns None when the request is authentic and fresh, else the reason."""
    sig_b64 = headers.get("telnyx-signature-ed25519")
    ts = headers.get("telnyx-timestamp")
    if not sig_b64 or not ts:
        return "missing signature headers"
    try:
        ts_int = int(ts)
    except ValueError:
        return "timestamp is not an integer"
    if abs(time.time() - ts_int) > TOLERANCE_S:
        return "stale timestamp"
    try:
        signature = base64.b64decode(sig_b64, validate=True)
    except ValueError:
        return "signature is not base64"
    try:
        key.verify(signature, ts.encode() + b"|" + body)
    except InvalidSignature:
        return "bad signature"
    return None


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle plus
        # the client's delayed ACK adds ~40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # quiet: the JSONL file is the record
            pass

        def answer(self, code, text=b""):
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            received_at = time.time()
            if self.path == "/_control":
                change = json.loads(body or b"{}")
                with state.lock:
                    state.status = change.get("status", state.status)
                    state.fail_session = change.get("fail_session", state.fail_session)
                    state.delay_ms = change.get("delay_ms", state.delay_ms)
                self.answer(200, b"ok")
                return
            reason = verify(state.key, self.headers, body)
            if reason is not None:
                code = 401 if reason == "bad signature" else 400
                state.record({"rejected": reason, "answered": code, "path": self.path})
                self.answer(code, reason.encode())
                return
            try:
                doc = json.loads(body)
                data = doc["data"]
                meta = doc["meta"]
                session = data["payload"].get("call_session_id")
            except (ValueError, KeyError, TypeError, AttributeError):
                state.record({"rejected": "not a Telnyx envelope", "answered": 400, "path": self.path})
                self.answer(400, b"not a Telnyx envelope")
                return
            with state.lock:
                status, fail_session, delay_ms = state.status, state.fail_session, state.delay_ms
            if fail_session and isinstance(session, str) and session.startswith(fail_session):
                status = 500
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            state.record({
                "answered": status,
                "event_id": data.get("id"),
                "event_type": data.get("event_type"),
                "session": session,
                "attempt": meta.get("attempt"),
                "delivered_to": meta.get("delivered_to"),
                "path": self.path,
                "timestamp": int(self.headers["telnyx-timestamp"]),
                "received_at": received_at,
                "body": doc,
            })
            self.answer(status, b"ok" if status < 300 else b"receiver told to fail")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--public-key", required=True, help="base64 Ed25519 public key (sipbridge keygen)")
    p.add_argument("--log", required=True, help="JSONL file, appended to")
    p.add_argument("--port", type=int, default=0, help="127.0.0.1 port; 0 = any free one")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--status", type=int, default=200, help="HTTP status to answer verified requests with")
    p.add_argument("--fail-session", help="answer 500 to events whose call_session_id starts with this")
    p.add_argument("--delay-ms", type=int, default=0, help="wait this long before answering")
    args = p.parse_args()
    state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
