"""An OpenAI-compatible speech endpoint for tests: POST /v1/audio/speech with
{"model", "input", "voice", "response_format"} answers a WAV (16-bit mono,
24000 Hz) or raw PCM of the same: a 1 s tone whose pitch is 300 Hz plus 100 Hz
per word of the input, so a test can tell which text it hears. An input
containing "fail" answers 500. Every request is appended to the JSONL log
(body and Authorization header) before the answer is sent.

Prints "LISTENING <port>" once ready; stops on SIGTERM.
"""

import argparse
import io
import json
import math
import struct
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE = 24000


def tone(hz, seconds=1.0, amplitude=8000):
    n = int(RATE * seconds)
    return b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * i / RATE))) for i in range(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path, "body": body,
                                    "authorization": self.headers.get("Authorization")}) + "\n")
            if self.path != "/v1/audio/speech":
                self.send_response(404)
                self.end_headers()
                return
            text = body.get("input", "")
            if "fail" in text:
                self.send_response(500)
                self.end_headers()
                return
            pcm = tone(300 + 100 * len(text.split()))
            if body.get("response_format") == "pcm":
                data, kind = pcm, "audio/pcm"
            else:
                buf = io.BytesIO()
                with wave.open(buf, "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(RATE)
                    w.writeframes(pcm)
                data, kind = buf.getvalue(), "audio/wav"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
