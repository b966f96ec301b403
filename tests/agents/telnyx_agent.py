#!/usr/bin/env python3
"""A Telnyx media-streaming voice agent for sipbridge's integration tests.

sipbridge connects to this agent as a WebSocket *client*, exactly as Telnyx
connects to a `stream_url` (design/PROTOCOLS.md §3); the agent is the server.
It plays one scripted role (--mode), and for every connection it appends one
JSON line to --log describing everything that happened, including a
`protocol_errors` list filled by an independent validator of what the box sent.

Modes (see README.md):
  echo         send every inbound-track media payload straight back
  prompt-echo  at `start` send --prompt (a WAV) as ONE media message, then mark
               `prompt-end`, then echo
  mark-clear   at `start` send 3 s of 1 kHz tone in 20 ms messages, mark `m1`,
               2 s more, mark `m2`; send `clear` --clear-after s after `start`
  refuse       answer the handshake with HTTP 403
  hang         accept TCP, never answer the handshake (connect-timeout tests)
  drop-after   echo, then abort the TCP connection (no close frame) after
               --drop-after s
  bad-json     after `start` send `not json{` and `{"event":"bogus"}`, then echo
  silent       never send anything

Stdout: exactly one line `LISTENING <port>` once the socket is listening.
The process exits by itself after --max-seconds, or cleanly on SIGTERM/SIGINT.

Log line (one per connection, written with fsync when the connection ends):
  {"path", "headers" (lowercased), "handshake": "accepted"|"rejected"|"hung",
   "http_status": 101|401|403|null, "opened_at" (unix time),
   "messages": [received, parsed JSON + "_t"], "sent": [sent + "_t"],
   "close": {"code", "reason", "by": "peer"|"agent"|"agent-abort"|"abnormal"}|null,
   "protocol_errors": [...], "agent_notes": [...], "summary": {...}}
Non-JSON text is recorded as {"_raw": text, "_t"}, binary frames as
{"_binary": nbytes, "_t"}. "_t" is seconds since the connection opened.

Usage: telnyx_agent.py --mode echo --log out.jsonl [--port 0] [--host 127.0.0.1]
       [--prompt F.wav] [--clear-after 1.0] [--drop-after S] [--max-seconds 120]
       [--require-token TOKEN] [--frame-ms 20] [--stall AT FOR]
"""

import argparse
import asyncio
import base64
import binascii
import json
import math
import os
import re
import signal
import sys
import time
import warnings
import wave
from collections import Counter
from http import HTTPStatus

# audioop is deprecated (removed in 3.13) but present in Debian 12's 3.11; it is
# only used for G.711 encoding and WAV normalisation.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

MODES = ["echo", "prompt-echo", "mark-clear", "refuse", "hang", "drop-after",
         "bad-json", "silent", "huge"]
# Modes that echo inbound media back to the box.
ECHO_MODES = {"echo", "prompt-echo", "drop-after", "bad-json"}
# Events the box may send (PROTOCOLS.md §3); anything else is a protocol error.
KNOWN_EVENTS = {"connected", "start", "media", "dtmf", "mark", "stop", "error"}
ENCODINGS = {"PCMU", "PCMA", "L16"}
# Coded encodings of `stream_bidirectional_codec` (Telnyx media streaming): one
# whole codec packet per `media` message, 16000 Hz. validate() knows them; the
# modes that make audio themselves (prompt, tones) stay PCMU/PCMA/L16.
CODED = {"G722", "OPUS"}
DTMF_DIGITS = set("0123456789*#ABCD")


def now():
    return time.monotonic()


# ---------------------------------------------------------------------------
# Log file
# ---------------------------------------------------------------------------

class Log:
    """Appends JSON lines; each line is one write() followed by fsync so a test
    can read it as soon as the connection is over."""

    def __init__(self, path):
        self.fd = None
        if path:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, entry):
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        if self.fd is None:
            return
        data = line.encode()
        while data:  # os.write may be partial for very large lines
            n = os.write(self.fd, data)
            data = data[n:]
        os.fsync(self.fd)


def lower_headers(headers):
    """websockets Headers (multi-valued) -> {lowercased name: value}; repeated
    headers are joined with ", "."""
    out = {}
    for name, value in headers.raw_items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def base_entry(path, headers, handshake, http_status):
    """The common shape of a log line, so tests can parse every line alike."""
    return {
        "path": path,
        "headers": headers,
        "handshake": handshake,
        "http_status": http_status,
        "opened_at": time.time(),
        "messages": [],
        "sent": [],
        "close": None,
        "protocol_errors": [],
        "agent_notes": [],
        "summary": summarize([]),
    }


# ---------------------------------------------------------------------------
# Validator of what the box sends (PROTOCOLS.md §3)
# ---------------------------------------------------------------------------

def is_digits(value):
    return isinstance(value, str) and re.fullmatch(r"[0-9]+", value) is not None


def frame_bytes(media_format, frame_ms):
    """Bytes of one frame_ms audio frame in the stream's format, or None when the
    format is unusable (already reported by the start checks)."""
    try:
        rate = int(media_format["sample_rate"])
        encoding = media_format["encoding"]
    except (KeyError, TypeError, ValueError):
        return None
    if encoding == "OPUS":
        return None  # variable: a packet's size depends on its content
    if encoding == "G722":
        return rate * frame_ms // 1000 // 2  # 64 kbit/s: 4 bits a sample
    return rate * frame_ms // 1000 * (2 if encoding == "L16" else 1)


def validate(messages, sent_marks=None, frame_ms=20):
    """Checks the messages the box sent (as logged: parsed JSON plus "_t", or
    {"_raw"} / {"_binary"}) against PROTOCOLS.md §3. Returns a list of strings.

    sent_marks: names of marks the agent sent; a returned mark must be one of
    them and come back at most once (None = don't check).
    Payloads must be a non-zero multiple of one frame_ms frame (160 bytes per
    20 ms for PCMU/PCMA at 8 kHz, 320 for L16/8k, 640 for L16/16k, 160 for
    G722/16k); an OPUS payload is one packet of any non-zero size."""
    errors = []
    start = None            # the `start` body, once seen
    stream_id = None
    frame = None            # bytes per frame_ms frame
    opus = False            # the stream is OPUS (packets of any non-zero size)
    last_seq = None         # last sequence_number seen (int)
    chunks = {}             # track -> last chunk (int)
    stamps = {}             # track -> last timestamp (int)
    stopped = False
    returned_marks = set()

    i, event = 0, "?"

    def err(text):
        errors.append(f"message {i} ({event}): {text}")

    for i, msg in enumerate(messages):
        event = "?"
        if "_raw" in msg:
            err(f"not a JSON object: {msg['_raw'][:60]!r}")
            continue
        if "_binary" in msg:
            err("binary frame (Telnyx sends text frames only)")
            continue
        event = msg.get("event")
        if not isinstance(event, str):
            err("missing or non-string `event`")
            continue
        if stopped:
            err("message after `stop`")

        # --- ordering: connected, then start, then the rest ---
        if i == 0:
            if event != "connected":
                err("first message must be `connected`")
            elif msg.get("version") != "1.0.0":
                err(f"`connected.version` must be \"1.0.0\", got {msg.get('version')!r}")
        elif event == "connected":
            err("`connected` must be sent once, first")
        if i == 1 and event != "start":
            err("second message must be `start`")
        if event not in KNOWN_EVENTS:
            err("unknown event name")
            continue
        if event not in ("connected", "start") and start is None and event != "error":
            err("sent before `start`")

        # --- sequence_number: required on start and media; wherever present it
        #     must continue the stream's sequence (+1 each message) ---
        if event != "connected":
            seq = msg.get("sequence_number")
            if seq is None:
                if event in ("start", "media"):
                    err("missing `sequence_number`")
            elif not is_digits(seq):
                err(f"`sequence_number` must be a string of digits, got {seq!r}")
            else:
                value = int(seq)
                if event == "start" and value != 1:
                    err(f"`start.sequence_number` must be \"1\", got {seq!r}")
                if last_seq is not None and value != last_seq + 1:
                    err(f"`sequence_number` {value} does not follow {last_seq}")
                last_seq = value

        # --- stream_id: must match start's wherever present ---
        if event != "start" and stream_id is not None and "stream_id" in msg \
                and msg["stream_id"] != stream_id:
            err(f"`stream_id` {msg['stream_id']!r} differs from start's {stream_id!r}")
        if event in ("media", "dtmf", "stop") and "stream_id" not in msg:
            err("missing `stream_id`")

        if event == "start":
            if start is not None:
                err("second `start`")
                continue
            sid = msg.get("stream_id")
            if not isinstance(sid, str) or not sid:
                err("`stream_id` must be a non-empty string")
            stream_id = sid
            body = msg.get("start")
            if not isinstance(body, dict):
                err("missing `start` object")
                start = {}
                continue
            start = body
            for key in ("call_control_id", "call_session_id", "from", "to"):
                if not isinstance(body.get(key), str):
                    err(f"`start.{key}` must be a string")
            if "client_state" not in body:
                err("missing `start.client_state` (may be null)")
            elif body["client_state"] is not None and not isinstance(body["client_state"], str):
                err("`start.client_state` must be a string or null")
            if not isinstance(body.get("custom_parameters"), dict):
                err("`start.custom_parameters` must be an object")
            fmt = body.get("media_format")
            if not isinstance(fmt, dict):
                err("missing `start.media_format` object")
                continue
            enc, rate = fmt.get("encoding"), fmt.get("sample_rate")
            if enc not in ENCODINGS | CODED:
                err(f"`media_format.encoding` must be PCMU/PCMA/L16/G722/OPUS, got {enc!r}")
            if not isinstance(rate, int) or isinstance(rate, bool):
                err(f"`media_format.sample_rate` must be an integer, got {rate!r}")
            elif enc in ("PCMU", "PCMA") and rate != 8000:
                err(f"{enc} must be 8000 Hz, got {rate}")
            elif enc == "L16" and rate not in (8000, 16000):
                err(f"L16 must be 8000 or 16000 Hz, got {rate}")
            elif enc in CODED and rate != 16000:
                err(f"{enc} must be 16000 Hz, got {rate}")
            if fmt.get("channels") != 1:
                err(f"`media_format.channels` must be 1, got {fmt.get('channels')!r}")
            if enc in ENCODINGS | CODED and isinstance(rate, int):
                frame = frame_bytes(fmt, frame_ms)
            opus = enc == "OPUS"

        elif event == "media":
            media = msg.get("media")
            if not isinstance(media, dict):
                err("missing `media` object")
                continue
            track = media.get("track")
            if track not in ("inbound", "outbound"):
                err(f"`media.track` must be inbound/outbound, got {track!r}")
            chunk = media.get("chunk")
            if not is_digits(chunk):
                err(f"`media.chunk` must be a string of digits, got {chunk!r}")
            else:
                value = int(chunk)
                if track in chunks and value != chunks[track] + 1:
                    err(f"`media.chunk` {value} on {track} does not follow {chunks[track]}")
                chunks[track] = value
            stamp = media.get("timestamp")
            if not is_digits(stamp):
                err(f"`media.timestamp` must be a string of digits, got {stamp!r}")
            else:
                value = int(stamp)
                if track in stamps and value < stamps[track]:
                    err(f"`media.timestamp` {value} on {track} goes back from {stamps[track]}")
                stamps[track] = value
            payload = media.get("payload")
            if not isinstance(payload, str):
                err("`media.payload` must be a base64 string")
                continue
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                err("`media.payload` is not valid base64")
                continue
            if not audio and opus:
                err("`media.payload` is an empty Opus packet (RFC 6716 §3: at least the TOC byte)")
            if frame and (len(audio) == 0 or len(audio) % frame):
                err(f"`media.payload` is {len(audio)} bytes, not a multiple of "
                    f"{frame} ({frame_ms} ms of {start['media_format']['encoding']}"
                    f"/{start['media_format']['sample_rate']})")

        elif event == "dtmf":
            dtmf = msg.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            if not (isinstance(digit, str) and len(digit) == 1 and digit in DTMF_DIGITS):
                err(f"`dtmf.digit` must be one of 0-9*#A-D, got {digit!r}")

        elif event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                err("`mark.name` must be a string")
            elif sent_marks is not None:
                if name not in sent_marks:
                    err(f"mark {name!r} was never sent by the agent")
                elif name in returned_marks:
                    err(f"mark {name!r} returned twice")
                returned_marks.add(name)

        elif event == "stop":
            stop = msg.get("stop")
            if not isinstance(stop, dict):
                err("missing `stop` object")
            elif not isinstance(stop.get("call_control_id"), str):
                err("`stop.call_control_id` must be a string")
            elif start and stop["call_control_id"] != start.get("call_control_id"):
                err("`stop.call_control_id` differs from start's")
            stopped = True

        elif event == "error":
            if not isinstance(msg.get("payload"), dict):
                err("`error.payload` must be an object")

    return errors


def summarize(messages):
    """Counts and timings of what the box sent, for quick assertions in tests."""
    events = Counter()
    summary = {"events": {}, "inbound_media": 0, "outbound_media": 0, "dtmf": "",
               "marks_returned": [], "first_media_t": None, "last_media_t": None,
               "errors_from_box": [], "stopped": False, "stream_id": None,
               "media_format": None}
    for msg in messages:
        event = msg.get("event")
        if not isinstance(event, str):
            continue
        events[event] += 1
        if event == "start" and isinstance(msg.get("start"), dict):
            summary["stream_id"] = msg.get("stream_id")
            summary["media_format"] = msg["start"].get("media_format")
        elif event == "media":
            track = (msg.get("media") or {}).get("track")
            if track in ("inbound", "outbound"):
                summary[f"{track}_media"] += 1
            if summary["first_media_t"] is None:
                summary["first_media_t"] = msg["_t"]
            summary["last_media_t"] = msg["_t"]
        elif event == "dtmf":
            digit = (msg.get("dtmf") or {}).get("digit")
            if isinstance(digit, str):
                summary["dtmf"] += digit
        elif event == "mark":
            summary["marks_returned"].append([(msg.get("mark") or {}).get("name"), msg["_t"]])
        elif event == "error":
            summary["errors_from_box"].append(msg.get("payload"))
        elif event == "stop":
            summary["stopped"] = True
    summary["events"] = dict(events)
    return summary


# ---------------------------------------------------------------------------
# Audio helpers
# ---------------------------------------------------------------------------

def encode_pcm(pcm, encoding):
    """Native-endian 16-bit linear PCM -> the stream's encoding."""
    if encoding == "PCMU":
        return audioop.lin2ulaw(pcm, 2)
    if encoding == "PCMA":
        return audioop.lin2alaw(pcm, 2)
    # L16 is big-endian (RFC 2586).
    return audioop.byteswap(pcm, 2) if sys.byteorder == "little" else pcm


def read_wav(path, rate):
    """Reads a WAV as native-endian mono 16-bit PCM at `rate` Hz. The prompt is
    expected to be mono 16-bit at the stream's rate already; anything else is
    converted (with a note returned) so a test never fails on the fixture."""
    notes = []
    with wave.open(path, "rb") as w:
        channels, width, wav_rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        data = w.readframes(w.getnframes())
    if sys.byteorder == "big" and width > 1:
        data = audioop.byteswap(data, width)
    if width == 1:
        data = audioop.bias(data, 1, -128)  # 8-bit WAV is unsigned
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
        notes.append(f"prompt converted from {8 * width}-bit")
    if channels != 1:
        data = audioop.tomono(data, 2, 0.5, 0.5) if channels == 2 else data
        notes.append(f"prompt converted from {channels} channels")
    if wav_rate != rate:
        want = len(data) // 2 * rate // wav_rate * 2   # exact length at the new rate
        data, _ = audioop.ratecv(data, 2, 1, wav_rate, rate, None)
        data = data[:want].ljust(want, b"\0")          # ratecv may be a sample short
        notes.append(f"prompt resampled {wav_rate} -> {rate} Hz")
    return data, notes


def tone_pcm(rate, seconds, freq=1000.0, amplitude=10000):
    """Native-endian 16-bit PCM sine tone, phase-continuous for the whole length."""
    n = int(rate * seconds)
    samples = [int(amplitude * math.sin(2 * math.pi * freq * k / rate)) for k in range(n)]
    return b"".join(s.to_bytes(2, sys.byteorder, signed=True) for s in samples)


def stream_format(start_msg):
    """(encoding, sample_rate) from a `start` message, defaulting to PCMU/8000."""
    fmt = ((start_msg or {}).get("start") or {}).get("media_format") or {}
    encoding = fmt.get("encoding") if fmt.get("encoding") in ENCODINGS else "PCMU"
    rate = fmt.get("sample_rate") if fmt.get("sample_rate") in (8000, 16000) else 8000
    return encoding, rate


# ---------------------------------------------------------------------------
# WebSocket connections
# ---------------------------------------------------------------------------

class Session:
    """One accepted WebSocket connection: receives and logs, runs the mode."""

    def __init__(self, ws, args, log):
        self.ws, self.args, self.log = ws, args, log
        self.t0 = now()
        self.entry = base_entry(ws.request.path, lower_headers(ws.request.headers),
                                "accepted", 101)
        self.tasks = []            # background tasks of the mode
        self.sent_marks = []
        self.start_msg = None
        self.aborted = False
        self.stalled = False

    def t(self):
        return round(now() - self.t0, 6)

    async def send(self, message):
        """Sends a dict as JSON (or a str verbatim) and records it in `sent`."""
        text = message if isinstance(message, str) else json.dumps(message)
        record = dict(message) if isinstance(message, dict) else {"_raw": message}
        record["_t"] = self.t()
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            return False
        self.entry["sent"].append(record)
        if isinstance(message, dict) and message.get("event") == "mark":
            self.sent_marks.append(message["mark"]["name"])
        return True

    def spawn(self, coro):
        self.tasks.append(asyncio.create_task(coro))

    async def run(self):
        mode = self.args.mode
        if mode == "drop-after":
            self.spawn(self.drop_later())
        try:
            async for raw in self.ws:
                t = self.t()
                if isinstance(raw, bytes):
                    self.entry["messages"].append({"_binary": len(raw), "_t": t})
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict):
                    self.entry["messages"].append({"_raw": raw, "_t": t})
                    continue
                msg["_t"] = t
                self.entry["messages"].append(msg)
                await self.on_message(msg)
        except ConnectionClosed:
            pass  # abnormal closes are described by `close` below

    async def on_message(self, msg):
        mode = self.args.mode
        event = msg.get("event")
        stall_at, stall_for = self.args.stall
        if stall_for > 0 and not self.stalled and self.t() >= stall_at:
            # A busy agent: its whole event loop blocks (a close handshake
            # started meanwhile waits too).
            self.stalled = True
            self.entry["agent_notes"].append(f"stalled {stall_for} s at {self.t():.3f}")
            time.sleep(stall_for)
        if event == "start" and self.start_msg is None:
            self.start_msg = msg
            if mode == "prompt-echo":
                await self.send_prompt()
            elif mode == "mark-clear":
                self.spawn(self.mark_clear())
                self.spawn(self.clear_later())
            elif mode == "bad-json":
                await self.send("not json{")
                await self.send({"event": "bogus"})
            elif mode == "huge":
                # One 5 MiB media message: over the box's 4 MiB cap per message.
                await self.send({"event": "media", "media": {"payload": "A" * (5 * 1024 * 1024)}})
        elif event == "media" and mode in ECHO_MODES:
            media = msg.get("media") or {}
            if media.get("track") == "inbound" and isinstance(media.get("payload"), str):
                await self.send({"event": "media", "media": {"payload": media["payload"]}})

    async def send_prompt(self):
        """prompt-echo: the whole WAV as one media message, then mark prompt-end."""
        encoding, rate = stream_format(self.start_msg)
        pcm, notes = read_wav(self.args.prompt, rate)
        self.entry["agent_notes"] += notes
        payload = base64.b64encode(encode_pcm(pcm, encoding)).decode()
        await self.send({"event": "media", "media": {"payload": payload}})
        await self.send({"event": "mark", "mark": {"name": "prompt-end"}})

    async def mark_clear(self):
        """mark-clear: 3 s of tone in 20 ms messages, mark m1, 2 s more, mark m2,
        all sent as fast as the socket takes them."""
        encoding, rate = stream_format(self.start_msg)
        pcm = tone_pcm(rate, 5.0)
        step = rate // 50 * 2              # 20 ms of 16-bit samples
        frames = [pcm[k:k + step] for k in range(0, len(pcm), step)]
        for name, part in (("m1", frames[:150]), ("m2", frames[150:])):
            for frame in part:
                payload = base64.b64encode(encode_pcm(frame, encoding)).decode()
                if not await self.send({"event": "media", "media": {"payload": payload}}):
                    return
            if not await self.send({"event": "mark", "mark": {"name": name}}):
                return

    async def clear_later(self):
        await asyncio.sleep(self.args.clear_after)
        await self.send({"event": "clear"})

    async def drop_later(self):
        """drop-after: kill the TCP connection without a close frame."""
        await asyncio.sleep(self.args.drop_after)
        self.aborted = True
        self.entry["agent_notes"].append(f"aborted TCP at {self.t()}")
        self.ws.transport.abort()

    def finish(self):
        """Stops the mode's tasks, validates, and writes the log line."""
        for task in self.tasks:
            task.cancel()
        proto = self.ws.protocol
        if self.aborted:
            by = "agent-abort"
        elif proto.close_rcvd is None:
            by = "abnormal"
        else:
            by = "peer" if proto.close_rcvd_then_sent else "agent"
        self.entry["close"] = {"code": self.ws.close_code, "reason": self.ws.close_reason,
                               "by": by}
        messages = self.entry["messages"]
        self.entry["protocol_errors"] = validate(messages, self.sent_marks, self.args.frame_ms)
        self.entry["summary"] = summarize(messages)
        self.log.write(self.entry)
        print(f"agent: {self.entry['path']} closed {self.entry['close']} "
              f"received={len(messages)} sent={len(self.entry['sent'])} "
              f"errors={len(self.entry['protocol_errors'])}", file=sys.stderr, flush=True)


async def run_websocket_server(args, log, stop):
    async def handler(ws):
        session = Session(ws, args, log)
        try:
            await session.run()
        finally:
            session.finish()

    def process_request(connection, request):
        """Rejects the handshake for `refuse` (403) or a bad token (401); logs
        the attempt, since the test still wants to see what the box sent."""
        status = None
        if args.mode == "refuse":
            status = HTTPStatus.FORBIDDEN
        elif args.require_token is not None and \
                request.headers.get("Authorization") != f"Bearer {args.require_token}":
            status = HTTPStatus.UNAUTHORIZED
        if status is None:
            return None
        log.write(base_entry(request.path, lower_headers(request.headers),
                             "rejected", int(status)))
        return connection.respond(status, f"{status.phrase}\n")

    ssl_context = None
    if args.tls_cert:
        # wss:// — the box must verify this certificate (the test makes it trusted).
        import ssl
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    async with serve(handler, args.host, args.port, process_request=process_request,
                     close_timeout=2, ssl=ssl_context) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"LISTENING {port}", flush=True)
        await stop.wait()
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass  # leftover handlers are cancelled by asyncio.run; they still log


async def run_hang_server(args, log, stop):
    """hang: a raw TCP server that reads the HTTP upgrade request and never
    answers. Logs one line per TCP connection when the client gives up."""
    writers = set()

    async def on_client(reader, writer):
        writers.add(writer)
        t0 = now()
        data = b""
        try:
            while chunk := await reader.read(4096):
                data += chunk
        except ConnectionError:
            pass
        finally:
            writers.discard(writer)
            writer.transport.abort()
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            parts = head[0].split(" ") if head and head[0] else []
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            entry = base_entry(parts[1] if len(parts) > 1 else None, headers, "hung", None)
            entry["agent_notes"].append(f"client gave up after {now() - t0:.3f} s")
            log.write(entry)

    server = await asyncio.start_server(on_client, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    await stop.wait()
    server.close()
    for writer in list(writers):
        writer.transport.abort()     # wakes on_client, which logs
    await asyncio.sleep(0.1)


async def main_async(args):
    log = Log(args.log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)   # bounded lifetime
    if args.mode == "hang":
        await run_hang_server(args, log, stop)
    else:
        await run_websocket_server(args, log, stop)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Telnyx media-stream test agent (WebSocket server)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--mode", choices=MODES, default="echo")
    p.add_argument("--log", help="append one JSON line per connection here")
    p.add_argument("--prompt", help="WAV file for prompt-echo (mono 16-bit, 8 or 16 kHz)")
    p.add_argument("--clear-after", type=float, default=1.0,
                   help="mark-clear: seconds after `start` to send `clear`")
    p.add_argument("--drop-after", type=float, default=2.0,
                   help="drop-after: seconds after the connection opens to abort it")
    p.add_argument("--stall", type=float, nargs=2, default=(0.0, 0.0), metavar=("AT", "FOR"),
                   help="a busy agent: at the first message AT s into a connection, "
                        "block the event loop FOR s")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="exit by itself after this long")
    p.add_argument("--require-token",
                   help="reject handshakes without `Authorization: Bearer TOKEN` (401)")
    p.add_argument("--tls-cert", help="serve wss:// with this PEM certificate (and --tls-key)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--frame-ms", type=int, default=20,
                   help="validator: media payloads must be a multiple of this many ms")
    args = p.parse_args(argv)
    if args.mode == "prompt-echo" and not args.prompt:
        p.error("--mode prompt-echo needs --prompt")
    return args


def main():
    asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    main()
