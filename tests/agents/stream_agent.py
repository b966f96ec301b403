#!/usr/bin/env python3
"""A voice agent written for Twilio, Exotel, Plivo or Asterisk AudioSocket, for
sipbridge's integration tests (tests/agent_protocols.rs).

sipbridge connects to it as the provider would: a WebSocket client for Twilio
Media Streams, Exotel's Voicebot applet and Plivo audio streams; a TCP client
(as Asterisk's AudioSocket() application) for AudioSocket. The agent is the
server. It plays one scripted role (--mode) and appends one JSON line per
connection to --log, with `protocol_errors` filled by a validator of what the
box sent, written from the providers' published message shapes (independently
of sipbridge's Rust code):

  twilio  https://www.twilio.com/docs/voice/media-streams/websocket-messages
  exotel  https://developer.exotel.com/docs/agentstream/websocket-protocol
  plivo   https://www.plivo.com/docs/voice/audio-streaming/audio-streaming
  audiosocket https://docs.asterisk.org/Configuration/Channel-Drivers/AudioSocket/

Modes:
  echo        send the caller's audio back with the provider's agent->box
              message (Twilio/Exotel `media`, Plivo `playAudio`, AudioSocket
              0x10); Exotel's echo is batched into 100 ms chunks as Exotel asks
  mark-clear  at start: 3 s of 1 kHz tone in 20 ms messages, mark/checkpoint
              `m1`, 2 s more, `m2`; clear (`clear` / `clearAudio`)
              --clear-after s after start (not for AudioSocket)
  prompt-mark at start: 1 s of 600 Hz tone as ONE message, then mark/checkpoint
              `prompt-end` (not for AudioSocket)
  hangup-after  echo, then end the call after --hangup-after s (AudioSocket
              0x00; the WebSocket protocols close the socket)
  silent      never send anything

Stdout: exactly one line `LISTENING <port>`. Exits after --max-seconds or on
SIGTERM/SIGINT.

Log line: {"protocol", "path", "headers", "messages": [received + "_t"],
 "sent": [sent + "_t"], "close": {"by": "peer"|"agent"|...} | null,
 "protocol_errors": [...], "summary": {"events", "inbound_media",
 "outbound_media", "dtmf", "marks_returned": [[name, t]], "cleared": [t],
 "stopped", "inbound_hz", "start"}}
Media the agent sent is logged with {"_bytes": n} for its payload; AudioSocket
messages as {"kind": "uuid"|"audio"|"dtmf"|"hangup"|"error"|"0x..", "len", ...}.
`inbound_hz` is the frequency (zero crossings) of the loud inbound audio as the
provider's format decodes it: a byte-order mistake shows as noise, not a tone.

Usage: stream_agent.py --protocol twilio --mode echo --log out.jsonl [--port 0]
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
from collections import Counter

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from telnyx_agent import Log, lower_headers, tone_pcm  # noqa: E402

PROTOCOLS = ["twilio", "exotel", "plivo", "audiosocket"]
MODES = ["echo", "mark-clear", "prompt-mark", "hangup-after", "silent"]
DIGITS = set("0123456789*#ABCD")


def now():
    return time.monotonic()


def is_digits(v):
    return isinstance(v, str) and re.fullmatch(r"[0-9]+", v) is not None


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def b64(payload, err):
    if not isinstance(payload, str):
        err("`payload` must be a base64 string")
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        err("`payload` is not valid base64")
        return None


def le16(pcm):
    """Native 16-bit PCM <-> little-endian."""
    return audioop.byteswap(pcm, 2) if sys.byteorder == "big" else pcm


# ---------------------------------------------------------------------------
# Validators of what the box sent, one per provider
# ---------------------------------------------------------------------------

class Check:
    """Shared bookkeeping: error list, per-message context, sequence counting."""

    def __init__(self):
        self.errors, self.i, self.event = [], 0, "?"
        self.last_seq = None
        self.chunks, self.stamps = {}, {}
        self.stopped = False
        self.returned = set()

    def err(self, text):
        self.errors.append(f"message {self.i} ({self.event}): {text}")

    def seq(self, value, as_string):
        ok = is_digits(value) if as_string else is_int(value)
        if not ok:
            self.err(f"sequence number must be {'a string of digits' if as_string else 'an integer'}, got {value!r}")
            return
        n = int(value)
        if self.last_seq is None and n != 1:
            self.err(f"first sequence number must be 1, got {n}")
        if self.last_seq is not None and n != self.last_seq + 1:
            self.err(f"sequence number {n} does not follow {self.last_seq}")
        self.last_seq = n

    def chunk(self, track, value, as_string):
        ok = is_digits(value) if as_string else is_int(value)
        if not ok:
            self.err(f"`media.chunk` has the wrong type: {value!r}")
            return
        n = int(value)
        if n != self.chunks.get(track, 0) + 1:
            self.err(f"`media.chunk` {n} on {track} does not follow {self.chunks.get(track, 0)}")
        self.chunks[track] = n

    def stamp(self, track, value):
        if not is_digits(value):
            self.err(f"`media.timestamp` must be a string of digits, got {value!r}")
            return
        n = int(value)
        if n < self.stamps.get(track, 0):
            self.err(f"`media.timestamp` {n} goes back on {track}")
        self.stamps[track] = n

    def mark(self, name, sent_marks):
        if not isinstance(name, str):
            self.err("mark name must be a string")
        elif name not in sent_marks:
            self.err(f"mark {name!r} was never sent by the agent")
        elif name in self.returned:
            self.err(f"mark {name!r} returned twice")
        self.returned.add(name)

    def keys(self, obj, allowed, where):
        extra = set(obj) - set(allowed) - {"_t"}
        if extra:
            self.err(f"unexpected keys in {where}: {sorted(extra)}")


def validate_json(protocol, messages, sent_marks):
    """Twilio, Exotel and Plivo messages as logged. Returns a list of errors."""
    c = Check()
    twilio, exotel, plivo = protocol == "twilio", protocol == "exotel", protocol == "plivo"
    seq_key = {"twilio": "sequenceNumber", "exotel": "sequence_number", "plivo": "sequenceNumber"}[protocol]
    sid_key = {"twilio": "streamSid", "exotel": "stream_sid", "plivo": "streamId"}[protocol]
    known = {"twilio": {"connected", "start", "media", "dtmf", "mark", "stop"},
             "exotel": {"connected", "start", "media", "dtmf", "mark", "stop"},
             "plivo": {"start", "media", "dtmf", "playedStream", "clearedAudio"}}[protocol]
    start, sid, frame, tracks = None, None, None, []
    for c.i, msg in enumerate(messages):
        c.event = msg.get("event", "?") if isinstance(msg, dict) else "?"
        if "_raw" in msg or "_binary" in msg:
            c.err("not a JSON text frame")
            continue
        if c.event not in known:
            c.err("unknown event for this provider")
            continue
        if c.stopped:
            c.err("message after `stop`")
        if c.event == "connected":
            want = {"event": "connected", "protocol": "Call", "version": "1.0.0"} if twilio else {"event": "connected"}
            if c.i != 0 or {k: v for k, v in msg.items() if k != "_t"} != want:
                c.err(f"`connected` must be the first message and exactly {want}")
            continue
        if c.i == (0 if plivo else 1) and c.event != "start":
            c.err("`start` must come " + ("first" if plivo else "right after `connected`"))
        c.seq(msg.get(seq_key), as_string=not plivo)
        if c.event != "start" and sid is not None and msg.get(sid_key) != sid:
            c.err(f"`{sid_key}` {msg.get(sid_key)!r} differs from start's {sid!r}")
        if c.event == "start":
            body = msg.get("start")
            if not isinstance(body, dict):
                c.err("missing `start` object")
                start = {}
                continue
            start = body
            if twilio or exotel:
                sid = msg.get(sid_key)
                if not isinstance(sid, str) or body.get(sid_key) != sid:
                    c.err(f"`{sid_key}` must be a string, the same in `start`")
            names = {"twilio": ("streamSid", "accountSid", "callSid"),
                     "exotel": ("stream_sid", "account_sid", "call_sid"),
                     "plivo": ("streamId", "accountId", "callId")}[protocol]
            for key in names:
                if not isinstance(body.get(key), str) or not body.get(key):
                    c.err(f"`start.{key}` must be a non-empty string")
            if plivo:
                sid = body.get("streamId")
                if not isinstance(msg.get("extra_headers"), str):
                    c.err("`extra_headers` must be a string")
            if twilio or plivo:
                tracks = body.get("tracks")
                if not (isinstance(tracks, list) and tracks and set(tracks) <= {"inbound", "outbound"}):
                    c.err(f"`start.tracks` must list inbound/outbound, got {tracks!r}")
                    tracks = []
            else:
                tracks = ["inbound"]
                for key in ("from", "to"):
                    if not isinstance(body.get(key), str):
                        c.err(f"`start.{key}` must be a string")
            params = body.get("customParameters" if twilio else "custom_parameters")
            if not plivo and not isinstance(params, dict):
                c.err("custom parameters must be an object")
            fmt = body.get("mediaFormat" if not exotel else "media_format")
            if twilio:
                if fmt != {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}:
                    c.err(f"`start.mediaFormat` must be audio/x-mulaw 8000 mono, got {fmt!r}")
                frame = 160
            elif exotel:
                if not (isinstance(fmt, dict) and fmt.get("encoding") == "audio/x-raw"
                        and fmt.get("sample_rate") in ("8000", "16000") and fmt.get("bit_rate") == "16"):
                    c.err(f"`start.media_format` must be audio/x-raw, string sample_rate, bit_rate \"16\": {fmt!r}")
                    frame = 320
                else:
                    frame = int(fmt["sample_rate"]) // 50 * 2
            else:
                enc = fmt.get("encoding") if isinstance(fmt, dict) else None
                rate = fmt.get("sampleRate") if isinstance(fmt, dict) else None
                if (enc, rate) not in (("audio/x-mulaw", 8000), ("audio/x-l16", 8000), ("audio/x-l16", 16000)):
                    c.err(f"`start.mediaFormat` must be mulaw/8000 or l16/8000|16000 with an integer rate: {fmt!r}")
                    frame = 160
                else:
                    frame = rate // 50 * (2 if enc == "audio/x-l16" else 1)
        elif start is None:
            c.err("sent before `start`")
        elif c.event == "media":
            media = msg.get("media")
            if not isinstance(media, dict):
                c.err("missing `media` object")
                continue
            if exotel:
                c.keys(media, ("chunk", "timestamp", "payload"), "media")
                track = "inbound"
            else:
                track = media.get("track")
                if track not in tracks:
                    c.err(f"`media.track` {track!r} is not one of start's tracks {tracks}")
            c.chunk(track, media.get("chunk"), as_string=not plivo)
            c.stamp(track, media.get("timestamp"))
            if plivo and is_digits(media.get("timestamp")) and int(media["timestamp"]) < 10**12:
                c.err("Plivo's `media.timestamp` is Unix milliseconds")
            audio = b64(media.get("payload"), c.err)
            if audio is not None and (not audio or len(audio) % frame):
                c.err(f"payload of {len(audio)} bytes is not a whole number of 20 ms frames ({frame} B)")
        elif c.event == "dtmf":
            dtmf = msg.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            if not (isinstance(digit, str) and len(digit) == 1 and digit in DIGITS):
                c.err(f"`dtmf.digit` must be one of 0-9*#A-D, got {digit!r}")
            if twilio and dtmf.get("track") != "inbound_track":
                c.err("Twilio's `dtmf.track` is \"inbound_track\"")
            if plivo and dtmf.get("track") != "inbound":
                c.err("Plivo's `dtmf.track` is \"inbound\"")
        elif c.event == "mark":
            mark = msg.get("mark")
            c.mark(mark.get("name") if isinstance(mark, dict) else None, sent_marks)
        elif c.event == "playedStream":
            c.mark(msg.get("name"), sent_marks)
        elif c.event == "stop":
            stop = msg.get("stop")
            names = ("accountSid", "callSid") if twilio else ("account_sid", "call_sid")
            if not isinstance(stop, dict):
                c.err("missing `stop` object")
            else:
                for key in names:
                    if stop.get(key) != start.get(key):
                        c.err(f"`stop.{key}` must equal start's")
                if exotel and not isinstance(stop.get("reason"), str):
                    c.err("`stop.reason` must be a string")
            c.stopped = True
    return c.errors


def validate_audiosocket(messages):
    c = Check()
    for c.i, msg in enumerate(messages):
        c.event = kind = msg.get("kind")
        if c.stopped:
            c.err("message after hangup")
        if c.i == 0 and kind != "uuid":
            c.err("the first message must be the UUID (0x01)")
        if kind == "uuid":
            if c.i != 0 or msg["len"] != 16:
                c.err("one 16-byte UUID, first")
        elif kind == "audio":
            if msg["len"] == 0 or msg["len"] % 320:
                c.err(f"slin payload of {msg['len']} bytes is not whole 20 ms frames (320 B)")
        elif kind == "dtmf":
            if msg["len"] != 1 or msg.get("digit") not in DIGITS:
                c.err(f"DTMF must be one ASCII digit, got {msg}")
        elif kind == "hangup":
            if msg["len"] != 0:
                c.err("hangup has no payload")
            c.stopped = True
        else:
            c.err(f"the box sends only 0x01, 0x10, 0x03, 0x00; got {kind}")
    return c.errors


def frequency(pcm_chunks, rate):
    """Frequency (Hz, from zero crossings) of the loud chunks of little-endian
    16-bit PCM at `rate` Hz; None when under 0.1 s of them is loud."""
    samples = []
    for chunk in pcm_chunks:
        n = len(chunk) // 2
        s = [int.from_bytes(chunk[2 * k:2 * k + 2], "little", signed=True) for k in range(n)]
        if s and math.sqrt(sum(x * x for x in s) / len(s)) > 500:
            samples += s
    if len(samples) < rate // 10:
        return None
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


# ---------------------------------------------------------------------------
# A connection
# ---------------------------------------------------------------------------

class Session:
    def __init__(self, args, log, path, headers):
        self.args, self.log, self.t0 = args, log, now()
        self.entry = {"protocol": args.protocol, "path": path, "headers": headers, "opened_at": time.time(),
                      "messages": [], "sent": [], "close": None, "protocol_errors": [], "summary": {}}
        self.sent_marks, self.tasks, self.start = [], [], None
        self.sid = None
        self.inbound_pcm = []       # LE 16-bit PCM of inbound audio (for inbound_hz)
        self.echo_buffer = b""
        self.closing = False

    def t(self):
        return round(now() - self.t0, 6)

    # --- what the provider's agent sends ---------------------------------
    def media_msg(self, payload_bytes):
        p = base64.b64encode(payload_bytes).decode()
        proto = self.args.protocol
        if proto == "twilio":
            return {"event": "media", "streamSid": self.sid, "media": {"payload": p}}
        if proto == "exotel":
            return {"event": "media", "stream_sid": self.sid, "media": {"payload": p}}
        fmt = self.start["start"]["mediaFormat"]
        return {"event": "playAudio", "streamId": self.sid,
                "media": {"contentType": fmt["encoding"], "sampleRate": fmt["sampleRate"], "payload": p}}

    def mark_msg(self, name):
        proto = self.args.protocol
        if proto == "plivo":
            return {"event": "checkpoint", "streamId": self.sid, "name": name}
        key = "streamSid" if proto == "twilio" else "stream_sid"
        return {"event": "mark", key: self.sid, "mark": {"name": name}}

    def clear_msg(self):
        proto = self.args.protocol
        if proto == "plivo":
            return {"event": "clearAudio", "streamId": self.sid}
        return {"event": "clear", ("streamSid" if proto == "twilio" else "stream_sid"): self.sid}

    def encode(self, pcm):
        """Native PCM -> the stream's wire encoding."""
        proto = self.args.protocol
        if proto == "twilio" or (proto == "plivo" and self.start["start"]["mediaFormat"]["encoding"] == "audio/x-mulaw"):
            return audioop.lin2ulaw(pcm, 2)
        return le16(pcm)

    def rate(self):
        if self.args.protocol == "exotel":
            return int(self.start["start"]["media_format"]["sample_rate"])
        if self.args.protocol == "plivo":
            return self.start["start"]["mediaFormat"]["sampleRate"]
        return 8000

    def decoded_le(self, audio):
        """Inbound wire audio -> LE 16-bit PCM (for the frequency check)."""
        if self.args.protocol == "twilio" or (self.args.protocol == "plivo" and
                                               self.start["start"]["mediaFormat"]["encoding"] == "audio/x-mulaw"):
            return le16(audioop.ulaw2lin(audio, 2))
        return audio

    # --- scripted roles -------------------------------------------------------
    async def on_start(self):
        mode = self.args.mode
        if mode == "mark-clear":
            self.spawn(self.mark_clear())
            self.spawn(self.later(self.args.clear_after, self.send(self.clear_msg())))
        elif mode == "prompt-mark":
            await self.send(self.media_msg(self.encode(tone_pcm(self.rate(), 1.0, freq=600.0))))
            await self.send(self.mark_msg("prompt-end"))
        elif mode == "hangup-after":
            self.spawn(self.later(self.args.hangup_after, self.hang_up()))

    async def on_inbound_audio(self, audio):
        self.inbound_pcm.append(self.decoded_le(audio))
        if self.args.mode not in ("echo", "hangup-after") or self.closing:
            return
        if self.args.protocol == "exotel":
            self.echo_buffer += audio       # Exotel: chunks of >= 100 ms, multiples of 320 B
            if len(self.echo_buffer) >= 3200:
                audio, self.echo_buffer = self.echo_buffer, b""
            else:
                return
        await self.send(self.media_msg(audio))

    async def mark_clear(self):
        pcm = tone_pcm(self.rate(), 5.0)
        step = self.rate() // 50 * 2
        frames = [pcm[k:k + step] for k in range(0, len(pcm), step)]
        for name, part in (("m1", frames[:150]), ("m2", frames[150:])):
            for f in part:
                if not await self.send(self.media_msg(self.encode(f))):
                    return
            if not await self.send(self.mark_msg(name)):
                return

    async def later(self, seconds, coro):
        await asyncio.sleep(seconds)
        await coro

    def spawn(self, coro):
        self.tasks.append(asyncio.create_task(coro))

    def summary(self):
        events = Counter(m.get("event", m.get("kind")) for m in self.entry["messages"])
        s = {"events": dict(events), "inbound_media": 0, "outbound_media": 0, "dtmf": "", "marks_returned": [],
             "cleared": [], "stopped": False, "start": self.start}
        for m in self.entry["messages"]:
            ev = m.get("event") or m.get("kind")
            if ev in ("media", "audio"):
                track = (m.get("media") or {}).get("track", "inbound")
                s["inbound_media" if track == "inbound" else "outbound_media"] += 1
            elif ev == "dtmf":
                s["dtmf"] += (m.get("dtmf") or {}).get("digit") or m.get("digit") or ""
            elif ev == "mark":
                s["marks_returned"].append([(m.get("mark") or {}).get("name"), m["_t"]])
            elif ev == "playedStream":
                s["marks_returned"].append([m.get("name"), m["_t"]])
            elif ev == "clearedAudio":
                s["cleared"].append(m["_t"])
            elif ev in ("stop", "hangup"):
                s["stopped"] = True
        s["inbound_hz"] = frequency(self.inbound_pcm, self.rate()) if self.start else None
        return s

    def finish(self, close):
        for task in self.tasks:
            task.cancel()
        self.entry["close"] = close
        msgs = self.entry["messages"]
        if self.args.protocol == "audiosocket":
            self.entry["protocol_errors"] = validate_audiosocket(msgs)
        else:
            self.entry["protocol_errors"] = validate_json(self.args.protocol, msgs, self.sent_marks)
        self.entry["summary"] = self.summary()
        self.log.write(self.entry)
        print(f"agent: {self.args.protocol} closed {close} received={len(msgs)} "
              f"errors={len(self.entry['protocol_errors'])}", file=sys.stderr, flush=True)


class WsSession(Session):
    def __init__(self, ws, args, log):
        super().__init__(args, log, ws.request.path, lower_headers(ws.request.headers))
        self.ws = ws

    async def send(self, message):
        record = dict(message)
        if "media" in record and isinstance(record["media"], dict):
            record["media"] = dict(record["media"], payload={"_bytes": len(message["media"]["payload"]) * 3 // 4})
        record["_t"] = self.t()
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed:
            return False
        self.entry["sent"].append(record)
        if message["event"] in ("mark", "checkpoint"):
            self.sent_marks.append(message.get("name") or message["mark"]["name"])
        return True

    async def hang_up(self):
        self.closing = True
        await self.ws.close()

    async def run(self):
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
                    self.entry["messages"].append({"_raw": raw[:200], "_t": t})
                    continue
                audio = None
                media = msg.get("media")
                if msg.get("event") == "media" and isinstance(media, dict) and isinstance(media.get("payload"), str):
                    try:
                        audio = base64.b64decode(media["payload"], validate=True)
                    except (binascii.Error, ValueError):
                        audio = None
                logged = dict(msg, _t=t)
                self.entry["messages"].append(logged)
                if msg.get("event") == "start" and self.start is None:
                    self.start = msg
                    body = msg.get("start") or {}
                    self.sid = msg.get("streamSid") or msg.get("stream_sid") or body.get("streamId")
                    await self.on_start()
                elif audio is not None and media.get("track", "inbound") == "inbound":
                    await self.on_inbound_audio(audio)
        except ConnectionClosed:
            pass
        proto = self.ws.protocol
        by = "abnormal" if proto.close_rcvd is None else ("peer" if proto.close_rcvd_then_sent else "agent")
        return {"code": self.ws.close_code, "by": by}


def kind_name(k):
    return {0x00: "hangup", 0x01: "uuid", 0x03: "dtmf", 0x10: "audio", 0xff: "error"}.get(k, f"{k:#04x}")


class SocketSession(Session):
    def __init__(self, reader, writer, args, log):
        super().__init__(args, log, None, {})
        self.reader, self.writer = reader, writer
        self.start = {"start": {}}

    def media_msg(self, payload_bytes):
        return bytes([0x10]) + len(payload_bytes).to_bytes(2, "big") + payload_bytes

    async def send(self, message):
        self.entry["sent"].append({"kind": kind_name(message[0]), "len": len(message) - 3, "_t": self.t()})
        try:
            self.writer.write(message)
            await self.writer.drain()
        except ConnectionError:
            return False
        return True

    async def hang_up(self):
        self.closing = True
        await self.send(b"\x00\x00\x00")

    async def run(self):
        by = "peer"
        try:
            while True:
                header = await self.reader.readexactly(3)
                kind, length = header[0], int.from_bytes(header[1:3], "big")
                payload = await self.reader.readexactly(length) if length else b""
                msg = {"kind": kind_name(kind), "len": length, "_t": self.t()}
                if kind == 0x01 and length == 16:
                    msg["uuid"] = payload.hex()
                elif kind == 0x03:
                    msg["digit"] = payload.decode("ascii", "replace")
                self.entry["messages"].append(msg)
                if kind == 0x01 and len(self.entry["messages"]) == 1:
                    await self.on_start()
                elif kind == 0x10:
                    await self.on_inbound_audio(payload)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self.entry["messages"].append({"kind": "truncated", "len": len(e.partial), "_t": self.t()})
        except ConnectionError:
            by = "abnormal"
        self.writer.close()
        return {"by": by}


async def main_async(args):
    log = Log(args.log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.max_seconds, stop.set)
    if args.protocol == "audiosocket":
        async def on_client(reader, writer):
            s = SocketSession(reader, writer, args, log)
            close = None
            try:
                close = await s.run()
            finally:
                s.finish(close)
        server = await asyncio.start_server(on_client, args.host, args.port)
        print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        server.close()
        return

    async def handler(ws):
        s = WsSession(ws, args, log)
        close = None
        try:
            close = await s.run()
        finally:
            s.finish(close)

    async with serve(handler, args.host, args.port, close_timeout=2) as server:
        print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass


def main():
    p = argparse.ArgumentParser(description="Twilio/Exotel/Plivo/AudioSocket test agent")
    p.add_argument("--protocol", choices=PROTOCOLS, required=True)
    p.add_argument("--mode", choices=MODES, default="echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log")
    p.add_argument("--clear-after", type=float, default=1.0)
    p.add_argument("--hangup-after", type=float, default=1.5)
    p.add_argument("--max-seconds", type=float, default=120.0)
    args = p.parse_args()
    if args.protocol == "audiosocket" and args.mode in ("mark-clear", "prompt-mark"):
        p.error("AudioSocket has no marks or clear")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
