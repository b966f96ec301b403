"""A TeXML/TwiML app server for tests/texml.rs: answers each request with the
document configured for its path and records every request it got.

--docs FILE is a JSON object: path (without the query) -> either a string (the
document, served as text/xml) or an object:
  {"status": 500}                  answer this status with an empty body
  {"delay": 3.0, "body": "..."}    wait before answering
  {"wav_hz": 1000, "ms": 1000}     a 16-bit mono 8000 Hz WAV of that tone
A path not in FILE answers 404. Every request is appended to --log as one JSON
line before it is answered: {"method", "path", "query": {..}, "form": {..},
"content_type"} (form = the application/x-www-form-urlencoded body of a POST;
a repeated name keeps its last value).

Prints "LISTENING <port>" once ready; stops on SIGTERM.
"""

import argparse
import io
import json
import math
import struct
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


def tone_wav(hz, ms, rate=8000, amplitude=8000):
    n = rate * ms // 1000
    pcm = b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * i / rate))) for i in range(n))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    with open(args.docs) as f:
        docs = json.load(f)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def handle_any(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", "0") or "0")
            body = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type")
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)) \
                if ctype == "application/x-www-form-urlencoded" else {}
            entry = {"method": self.command, "path": url.path,
                     "query": dict(parse_qsl(url.query, keep_blank_values=True)),
                     "form": form, "content_type": ctype}
            with open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
            doc = docs.get(url.path)
            if doc is None:
                self.send_response(404)
                self.end_headers()
                return
            if isinstance(doc, str):
                doc = {"body": doc}
            if doc.get("delay"):
                time.sleep(doc["delay"])
            if "status" in doc:
                self.send_response(doc["status"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if "wav_hz" in doc:
                data, kind = tone_wav(doc["wav_hz"], doc.get("ms", 1000)), "audio/wav"
            else:
                data, kind = doc["body"].encode(), "text/xml"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = handle_any
        do_POST = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
