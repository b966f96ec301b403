#!/usr/bin/env python3
"""Self-test of telnyx_agent.py: starts the agent in every mode on loopback and
plays sipbridge's role with a websockets client (connected, start, a few 160-byte
PCMU media messages, a dtmf, stop), checking the agent's behaviour, its log, and
that its validator catches deliberately wrong messages.

Run: tests/.venv/bin/python tests/agents/selftest.py   (exit 0 = all passed)
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import wave
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "telnyx_agent.py")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep tests/agents free of __pycache__
import telnyx_agent  # noqa: E402  (for validate() and the tone helper)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # noqa: E402

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus  # noqa: E402

TMP = tempfile.mkdtemp(prefix="telnyx-agent-selftest-")
STREAM_ID = "32de0dea-53cb-4b21-89a4-9e1819c043bc"
CCID = "v3:call-control-id"


# ---------------------------------------------------------------------------
# Helpers: run the agent, play the box
# ---------------------------------------------------------------------------

class Agent:
    """The agent as a subprocess, the way the Rust tests run it."""

    counter = 0

    def __init__(self, mode, *extra):
        Agent.counter += 1
        self.log = os.path.join(TMP, f"{Agent.counter}-{mode}.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, AGENT, "--port", "0", "--mode", mode, "--log", self.log,
             "--max-seconds", "60", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("LISTENING "), f"bad first line {line!r}: {self.proc.stderr.read()}"
        self.port = int(line.split()[1])
        self.url = f"ws://127.0.0.1:{self.port}/stream?call=1"

    async def entries(self, count=1, timeout=3.0):
        """Waits (without blocking the event loop) for `count` log lines and
        returns them parsed."""
        deadline = time.monotonic() + timeout
        while True:
            lines = []
            if os.path.exists(self.log):
                with open(self.log) as f:
                    lines = [json.loads(line) for line in f if line.strip()]
            if len(lines) >= count or time.monotonic() > deadline:
                assert len(lines) >= count, f"expected {count} log lines, got {len(lines)}"
                return lines
            await asyncio.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        assert rc == 0, f"agent exited {rc}: {self.proc.stderr.read()}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_msg(encoding="PCMU", rate=8000, **over):
    msg = {"event": "start", "sequence_number": "1", "stream_id": STREAM_ID,
           "start": {"call_control_id": CCID, "call_session_id": "sess-1",
                     "from": "+15550001", "to": "+15550002", "client_state": None,
                     "custom_parameters": {"k": "v"},
                     "media_format": {"encoding": encoding, "sample_rate": rate,
                                      "channels": 1}}}
    msg.update(over)
    return msg


class Box:
    """Plays sipbridge: numbers messages and media chunks like the real box."""

    def __init__(self, ws):
        self.ws = ws
        self.seq = 1               # `start` is 1
        self.chunks = {}
        self.received = []         # what the agent sent: parsed JSON or raw str
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                try:
                    self.received.append(json.loads(raw))
                except ValueError:
                    self.received.append(raw)
        except ConnectionClosed:
            pass

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def begin(self, encoding="PCMU", rate=8000):
        await self.send({"event": "connected", "version": "1.0.0"})
        await self.send(start_msg(encoding, rate))

    def next_seq(self):
        self.seq += 1
        return str(self.seq)

    async def media(self, payload, track="inbound", chunk=None):
        c = self.chunks.get(track, 0) + 1 if chunk is None else chunk
        self.chunks[track] = c
        await self.send({"event": "media", "sequence_number": self.next_seq(),
                         "stream_id": STREAM_ID,
                         "media": {"track": track, "chunk": str(c), "timestamp": str(20 * (c - 1)),
                                   "payload": base64.b64encode(payload).decode()}})

    async def dtmf(self, digit):
        await self.send({"event": "dtmf", "sequence_number": self.next_seq(),
                         "stream_id": STREAM_ID, "dtmf": {"digit": digit}})

    async def mark(self, name):
        await self.send({"event": "mark", "sequence_number": self.next_seq(),
                         "stream_id": STREAM_ID, "mark": {"name": name}})

    async def stop(self):
        await self.send({"event": "stop", "sequence_number": self.next_seq(),
                         "stream_id": STREAM_ID,
                         "stop": {"call_control_id": CCID, "call_session_id": "sess-1"}})

    async def wait_for(self, predicate, timeout=3.0):
        deadline = time.monotonic() + timeout
        while not predicate(self.received):
            assert time.monotonic() < deadline, f"timed out; received {len(self.received)}"
            await asyncio.sleep(0.01)

    async def close(self):
        await self.ws.close()
        await self.reader


def frames(n, first=0):
    """n distinct 160-byte PCMU payloads (20 ms at 8 kHz)."""
    return [bytes([(first + k) % 256]) * 160 for k in range(n)]


def media_payloads(received):
    return [base64.b64decode(m["media"]["payload"]) for m in received
            if isinstance(m, dict) and m.get("event") == "media"]


def write_wav(path, rate, seconds):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(telnyx_agent.tone_pcm(rate, seconds, freq=440))
    return path


def check(cond, what):
    assert cond, what


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

async def test_echo():
    with Agent("echo") as agent:
        async with connect(agent.url, additional_headers={"Authorization": "Bearer abc"}) as ws:
            box = Box(ws)
            await box.begin()
            sent = frames(5)
            for payload in sent:
                await box.media(payload)
            await box.media(bytes(160), track="outbound")    # must not be echoed
            await box.dtmf("5")
            await box.wait_for(lambda r: len(r) >= 5)
            await box.stop()
            await asyncio.sleep(0.2)
            await box.close()
        check(media_payloads(box.received) == sent, "echo returns the inbound payloads in order")
        check(all(set(m) == {"event", "media"} and set(m["media"]) == {"payload"}
                  for m in box.received), "echo messages are {event, media:{payload}}")
        entry = (await agent.entries())[0]
        agent.stop()
    check(entry["protocol_errors"] == [], f"no protocol errors: {entry['protocol_errors']}")
    check(entry["path"] == "/stream?call=1", "path logged with query")
    check(entry["headers"].get("authorization") == "Bearer abc", "authorization header logged")
    check(entry["handshake"] == "accepted" and entry["http_status"] == 101, "handshake accepted")
    s = entry["summary"]
    check(s["events"] == {"connected": 1, "start": 1, "media": 6, "dtmf": 1, "stop": 1},
          f"event counts {s['events']}")
    check(s["inbound_media"] == 5 and s["outbound_media"] == 1, "media counts")
    check(s["dtmf"] == "5" and s["stopped"] and s["stream_id"] == STREAM_ID, "dtmf/stop summary")
    check(0 <= s["first_media_t"] <= s["last_media_t"], "media timings")
    check(len(entry["sent"]) == 5 and all("_t" in m for m in entry["sent"]), "sent logged with _t")
    check([m["_t"] for m in entry["messages"]] == sorted(m["_t"] for m in entry["messages"]),
          "_t increases")
    check(entry["close"]["code"] == 1000 and entry["close"]["by"] == "peer", f"close {entry['close']}")


async def prompt_case(encoding, rate, wav_rate):
    wav = write_wav(os.path.join(TMP, f"prompt-{wav_rate}.wav"), wav_rate, 0.5)
    with Agent("prompt-echo", "--prompt", wav) as agent:
        async with connect(agent.url) as ws:
            box = Box(ws)
            await box.begin(encoding, rate)
            await box.wait_for(lambda r: len(r) >= 2)
            width = 2 if encoding == "L16" else 1
            echo = bytes(rate // 50 * width)
            await box.media(echo)
            await box.wait_for(lambda r: len(r) >= 3)
            await box.mark("prompt-end")
            await box.stop()
            await box.close()
        entry = (await agent.entries())[0]
        agent.stop()
    first, mark, third = box.received[:3]
    prompt = base64.b64decode(first["media"]["payload"])
    check(len(prompt) == rate // 2 * width, f"{encoding}/{rate}: prompt is one 0.5 s message ({len(prompt)} bytes)")
    check(mark == {"event": "mark", "mark": {"name": "prompt-end"}}, "mark prompt-end follows the prompt")
    check(base64.b64decode(third["media"]["payload"]) == echo, "then echo")
    # Decode the payload independently and compare with the WAV's samples.
    pcm = telnyx_agent.tone_pcm(wav_rate, 0.5, freq=440)
    if wav_rate != rate:
        pcm, _ = audioop.ratecv(pcm, 2, 1, wav_rate, rate, None)
        pcm = pcm.ljust(len(prompt) // width * 2, b"\0")
    if encoding == "PCMU":
        decoded = audioop.ulaw2lin(prompt, 2)
    elif encoding == "PCMA":
        decoded = audioop.alaw2lin(prompt, 2)
    else:  # L16: big-endian
        decoded = b"".join(int.from_bytes(prompt[k:k + 2], "big", signed=True)
                           .to_bytes(2, sys.byteorder, signed=True) for k in range(0, len(prompt), 2))
    diff = audioop.rms(audioop.add(decoded, audioop.mul(pcm, 2, -1), 2), 2)
    check(diff < 400, f"{encoding}/{rate}: prompt audio matches the WAV (rms diff {diff})")
    check(entry["protocol_errors"] == [], f"no protocol errors: {entry['protocol_errors']}")
    check(entry["summary"]["marks_returned"][0][0] == "prompt-end", "returned mark logged")
    check((wav_rate != rate) == bool(entry["agent_notes"]), "resampling noted")


async def test_prompt_echo():
    await prompt_case("PCMU", 8000, 8000)
    await prompt_case("PCMA", 8000, 8000)
    await prompt_case("L16", 8000, 8000)
    await prompt_case("L16", 16000, 16000)
    await prompt_case("L16", 16000, 8000)    # WAV at the wrong rate is resampled


async def mark_clear_case(encoding, rate):
    with Agent("mark-clear", "--clear-after", "0.5") as agent:
        async with connect(agent.url) as ws:
            box = Box(ws)
            t0 = time.monotonic()
            await box.begin(encoding, rate)
            await box.wait_for(lambda r: any(m.get("event") == "mark" and m["mark"]["name"] == "m1"
                                             for m in r))
            await box.mark("m1")               # as if playback reached it
            await box.wait_for(lambda r: r[-1] == {"event": "clear"})
            t_clear = time.monotonic() - t0
            await box.mark("m2")               # pending marks come back on clear
            await box.stop()
            await box.close()
        entry = (await agent.entries())[0]
        agent.stop()
    events = [m["event"] for m in box.received]
    check(events == ["media"] * 150 + ["mark"] + ["media"] * 100 + ["mark", "clear"],
          f"{encoding}/{rate}: 150 media, m1, 100 media, m2, clear")
    check([m["mark"]["name"] for m in box.received if m["event"] == "mark"] == ["m1", "m2"], "mark names")
    width = 2 if encoding == "L16" else 1
    check(all(len(p) == rate // 50 * width for p in media_payloads(box.received)), "20 ms payloads")
    check(0.4 < t_clear < 1.5, f"clear after ~0.5 s (was {t_clear:.2f})")
    check([m[0] for m in entry["summary"]["marks_returned"]] == ["m1", "m2"], "marks_returned logged")
    check(entry["protocol_errors"] == [], f"no protocol errors: {entry['protocol_errors']}")


async def test_mark_clear():
    await mark_clear_case("PCMU", 8000)
    await mark_clear_case("L16", 16000)


async def test_refuse():
    with Agent("refuse") as agent:
        try:
            async with connect(agent.url, additional_headers={"Authorization": "Bearer x"}):
                raise AssertionError("handshake should be refused")
        except InvalidStatus as e:
            check(e.response.status_code == 403, f"403, got {e.response.status_code}")
        entry = (await agent.entries())[0]
        agent.stop()
    check(entry["handshake"] == "rejected" and entry["http_status"] == 403, "rejection logged")
    check(entry["headers"]["authorization"] == "Bearer x", "headers of rejected attempt logged")


async def test_require_token():
    with Agent("echo", "--require-token", "sekrit") as agent:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            try:
                async with connect(agent.url, additional_headers=headers):
                    raise AssertionError("handshake should be refused")
            except InvalidStatus as e:
                check(e.response.status_code == 401, f"401, got {e.response.status_code}")
        async with connect(agent.url, additional_headers={"Authorization": "Bearer sekrit"}) as ws:
            box = Box(ws)
            await box.begin()
            await box.media(frames(1)[0])
            await box.wait_for(lambda r: len(r) == 1)
            await box.stop()
            await box.close()
        entries = await agent.entries(3)
        agent.stop()
    check([e["http_status"] for e in entries] == [401, 401, 101], "two 401s then accepted")


async def test_hang():
    with Agent("hang") as agent:
        t0 = time.monotonic()
        try:
            async with connect(agent.url, open_timeout=1):
                raise AssertionError("handshake should never complete")
        except TimeoutError:
            pass
        check(0.9 < time.monotonic() - t0 < 2, "client timed out after its open_timeout")
        entry = (await agent.entries())[0]
        agent.stop()
    check(entry["handshake"] == "hung" and entry["path"] == "/stream?call=1", "hung attempt logged")
    check(entry["headers"].get("upgrade", "").lower() == "websocket", "request headers parsed")


async def test_hang_sigterm():
    """An open hung connection is logged when the agent is told to stop."""
    with Agent("hang") as agent:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        agent.stop()
        check((await agent.entries())[0]["path"] == "/x", "logged on shutdown")
        writer.close()


async def test_drop_after():
    with Agent("drop-after", "--drop-after", "0.5") as agent:
        t0 = time.monotonic()
        async with connect(agent.url) as ws:
            box = Box(ws)
            await box.begin()
            try:
                for payload in frames(100):
                    await box.media(payload)
                    await asyncio.sleep(0.02)
                raise AssertionError("connection should have been dropped")
            except ConnectionClosedError as e:
                check(e.rcvd is None, "no close frame from the agent")
            dropped_at = time.monotonic() - t0
            await box.reader
        entry = (await agent.entries())[0]
        agent.stop()
    check(0.4 < dropped_at < 1.5, f"dropped after ~0.5 s (was {dropped_at:.2f})")
    check(len(box.received) > 5, "echoed before dropping")
    check(entry["close"]["by"] == "agent-abort" and entry["close"]["code"] == 1006,
          f"close logged {entry['close']}")
    check(entry["protocol_errors"] == [], f"no protocol errors: {entry['protocol_errors']}")


async def test_bad_json():
    with Agent("bad-json") as agent:
        async with connect(agent.url) as ws:
            box = Box(ws)
            await box.begin()
            await box.wait_for(lambda r: len(r) >= 2)
            # the box would answer with an error event; that is not a violation
            await box.send({"event": "error", "sequence_number": box.next_seq(),
                            "stream_id": STREAM_ID, "payload": {"code": 100003, "title": "bad"}})
            await box.media(frames(1)[0])
            await box.wait_for(lambda r: len(r) >= 3)
            await box.stop()
            await box.close()
        entry = (await agent.entries())[0]
        agent.stop()
    check(box.received[0] == "not json{", "raw garbage first")
    check(box.received[1] == {"event": "bogus"}, "then unknown event")
    check(box.received[2]["event"] == "media", "then echo")
    check(entry["sent"][0] == {"_raw": "not json{", "_t": entry["sent"][0]["_t"]}, "raw sent logged")
    check(entry["protocol_errors"] == [], f"no protocol errors: {entry['protocol_errors']}")
    check(entry["summary"]["errors_from_box"] == [{"code": 100003, "title": "bad"}], "box errors summarized")


async def test_silent():
    with Agent("silent") as agent:
        async with connect(agent.url) as ws:
            box = Box(ws)
            await box.begin()
            for payload in frames(5):
                await box.media(payload)
            await box.dtmf("#")
            await asyncio.sleep(0.5)
            await box.stop()
            await box.close()
        entry = (await agent.entries())[0]
        agent.stop()
    check(box.received == [] and entry["sent"] == [], "silent sends nothing")
    check(entry["summary"]["dtmf"] == "#" and entry["protocol_errors"] == [], "still logged")


async def test_validator_catches_violations():
    with Agent("echo") as agent:
        async with connect(agent.url) as ws:
            box = Box(ws)
            await box.begin()
            await box.media(frames(1)[0])
            await box.media(frames(1)[0])
            await box.media(frames(1)[0], chunk=4)              # chunk skips 3
            await box.media(bytes(100))                         # wrong size
            box.seq += 1                                        # sequence_number skips
            await box.media(frames(1)[0])
            await box.dtmf("X")                                 # bad digit
            await box.send({"event": "weird", "stream_id": STREAM_ID})   # unknown event
            await box.mark("never-sent")                        # mark the agent never sent
            await box.send({"event": "media", "sequence_number": box.next_seq(),
                            "stream_id": "other", "media": {"track": "inbound", "chunk": "x",
                            "timestamp": "0", "payload": "!!"}})
            await box.stop()
            await box.dtmf("1")                                 # after stop
            await asyncio.sleep(0.2)
            await box.close()
        entry = (await agent.entries())[0]
        agent.stop()
    errors = "\n".join(entry["protocol_errors"])
    for needle in ("chunk` 4 on inbound does not follow 2", "100 bytes, not a multiple of 160",
                   "`sequence_number` 7 does not follow 5", "`dtmf.digit` must be", "(weird): unknown event name",
                   "'never-sent' was never sent", "differs from start's",
                   "`media.chunk` must be a string of digits", "not valid base64",
                   "(dtmf): message after `stop`"):
        check(needle in errors, f"validator reports {needle!r}; got:\n{errors}")


def test_validate_unit():
    """validate() directly, on the start/connected shapes."""
    good = [{"event": "connected", "version": "1.0.0", "_t": 0}, dict(start_msg(), _t=0)]
    check(telnyx_agent.validate(good) == [], "good prologue passes")
    bad_start = start_msg()
    del bad_start["start"]["client_state"]
    bad_start["start"]["media_format"] = {"encoding": "AMR-WB", "sample_rate": "8000", "channels": 2}
    bad_start["sequence_number"] = "2"
    errors = telnyx_agent.validate([{"event": "connected", "version": "1.0", "_t": 0},
                                    dict(bad_start, _t=0), {"_raw": "x", "_t": 0}])
    text = "\n".join(errors)
    for needle in ("version", "client_state", "encoding", "sample_rate", "channels",
                   "must be \"1\"", "not a JSON object"):
        check(needle in text, f"unit: {needle!r} reported; got:\n{text}")
    errors = telnyx_agent.validate([dict(start_msg(), _t=0)])
    check(any("first message must be `connected`" in e for e in errors), "connected must be first")
    # L16/16k needs 640-byte frames
    l16 = [good[0], dict(start_msg("L16", 16000), _t=0),
           {"event": "media", "sequence_number": "2", "stream_id": STREAM_ID, "_t": 0,
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                      "payload": base64.b64encode(bytes(320)).decode()}}]
    check(any("not a multiple of 640" in e for e in telnyx_agent.validate(l16)), "L16/16k frame size")

    # G722 and OPUS (stream_bidirectional_codec): 16 kHz only; a G722 payload is
    # 160 bytes a 20 ms, an OPUS one a packet of any non-zero size.
    def coded(encoding, rate, sizes):
        return [good[0], dict(start_msg(encoding, rate), _t=0)] + [
            {"event": "media", "sequence_number": str(2 + k), "stream_id": STREAM_ID, "_t": 0,
             "media": {"track": "inbound", "chunk": str(1 + k), "timestamp": "0",
                       "payload": base64.b64encode(bytes(n)).decode()}} for k, n in enumerate(sizes)]
    check(telnyx_agent.validate(coded("G722", 16000, [160, 320])) == [], "G722 packets pass")
    check(telnyx_agent.validate(coded("OPUS", 16000, [1, 61, 400])) == [], "OPUS packets pass")
    check(any("not a multiple of 160" in e for e in telnyx_agent.validate(coded("G722", 16000, [100]))),
          "G722 frame size")
    check(any("empty Opus packet" in e for e in telnyx_agent.validate(coded("OPUS", 16000, [0]))),
          "empty Opus packet")
    check(any("must be 16000 Hz" in e for e in telnyx_agent.validate(coded("G722", 8000, []))), "G722 rate")


def test_lifecycle():
    """--max-seconds bounds the agent's life; SIGTERM with an open connection exits 0
    and logs the connection."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, AGENT, "--max-seconds", "1"],
                            stdout=subprocess.PIPE, text=True)
    check(proc.stdout.readline().startswith("LISTENING "), "listening line")
    check(proc.wait(timeout=5) == 0 and time.monotonic() - t0 < 4, "exits by itself after max-seconds")

    async def open_then_term():
        with Agent("echo") as agent:
            async with connect(agent.url) as ws:
                box = Box(ws)
                await box.begin()
                await asyncio.sleep(0.2)
                agent.proc.send_signal(signal.SIGTERM)
                await box.reader
                check(ws.close_code == 1001, f"agent closed with 1001, got {ws.close_code}")
            agent.stop()
            entry = (await agent.entries())[0]
        check(entry["close"]["by"] == "agent", f"close logged {entry['close']}")
    asyncio.run(open_then_term())


# ---------------------------------------------------------------------------

def main():
    tests = [test_validate_unit, test_echo, test_prompt_echo, test_mark_clear, test_refuse,
             test_require_token, test_hang, test_hang_sigterm, test_drop_after, test_bad_json,
             test_silent, test_validator_catches_violations, test_lifecycle]
    failed = 0
    for test in tests:
        t0 = time.monotonic()
        try:
            result = test()
            if asyncio.iscoroutine(result):
                asyncio.run(asyncio.wait_for(result, 30))
            print(f"ok   {test.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {test.__name__}", flush=True)
            traceback.print_exc()
    if failed:
        print(f"{len(tests) - failed}/{len(tests)} passed (logs kept in {TMP})")
    else:
        shutil.rmtree(TMP, ignore_errors=True)
        print(f"{len(tests)}/{len(tests)} passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
