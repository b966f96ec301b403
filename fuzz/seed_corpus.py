#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the project's own real
messages: the SIPp scenarios in tests/sipp/ (SIPp keywords filled in), the SDP
captures of src/sdp/tests.rs, RTP/RTCP and RFC 4733 packets as the code's tests
build them, Telnyx media-stream frames (PROTOCOLS.md section 3) and a Chromium
offer (tests/webrtc.rs). Run from the repository root: python3 fuzz/seed_corpus.py
(it only adds files; regression inputs found by fuzzing are added by hand)."""
import hashlib, os, re, struct, sys, glob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")

def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

KEYWORDS = {
    "local_ip": "192.76.120.10", "local_port": "5060", "remote_ip": "203.0.113.10",
    "remote_port": "5060", "service": "+13125550100", "transport": "UDP", "pid": "4242",
    "call_number": "1", "call_id": "1-4242@192.76.120.10", "branch": "z9hG4bK-4242-1-0",
    "peer_tag_param": ";tag=sb-7f3a", "media_port": "30412", "media_ip_type": "4",
    "local_ip_type": "4", "media_ip": "192.76.120.31",
    "authentication": 'Authorization: Digest username="livekit", realm="sipbridge", '
                      'nonce="FUZZNONCE", uri="sip:+13125550100@203.0.113.10", '
                      'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, '
                      'nc=00000001, cnonce="0a4f113b"',
    "$contact": "sip:bob@192.76.120.10:5060", "$caller": "+14155550123",
    "field0": "+14155550123", "field1": "+13125550100", "rtp_ip": "192.76.120.31",
}

def sipp_messages(path):
    text = open(path, encoding="latin-1").read()
    for block in re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", text, re.S):
        lines = [l.strip() for l in block.strip("\n").split("\n")]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        if not lines:
            continue
        try:
            blank = lines.index("")
            head, body = lines[:blank], lines[blank + 1:]
        except ValueError:
            head, body = lines, []
        body_text = "".join(l + "\r\n" for l in body)
        def sub(s):
            return re.sub(r"\[([a-z_$0-9]+)\]", lambda m: KEYWORDS.get(m.group(1), m.group(0)), s)
        last = {"Via": "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-last;received=203.0.113.10",
                "From": "<sip:+14155550123@192.76.120.10>;tag=4242", "To": "<sip:+13125550100@203.0.113.10>;tag=sb-7f3a",
                "Call-ID": "1-4242@192.76.120.10", "CSeq": "1 INVITE", "Record-Route": "<sip:192.76.120.10;lr>",
                "Contact": "<sip:box@203.0.113.10:5060>"}
        head = [re.sub(r"\[last_([A-Za-z-]+):?\]", lambda m: m.group(1) + ": " + last.get(m.group(1), "x"), l) for l in head]
        body_text = sub(body_text)
        head_text = sub("\r\n".join(head)).replace("[len]", str(len(body_text.encode())))
        yield (head_text + "\r\n\r\n" + body_text).encode()

def sip():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "sipp", "*.xml*"))):
        base = os.path.basename(path).split(".")[0]
        for i, msg in enumerate(sipp_messages(path)):
            put("sip_message", f"sipp-{base}-{i}.sip", msg)
    invite = ("INVITE sip:+13125550100;npdi@192.0.2.1:5060 SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 192.76.120.10:5060;branch=z9hG4bK-1\r\n"
              "From: \"Caller\" <sip:+14155550123@192.76.120.10>;tag=abc\r\n"
              "To: <sip:+13125550100@192.0.2.1>\r\nCall-ID: 123@192.76.120.10\r\nCSeq: 1 INVITE\r\n"
              "X-Telnyx-Session-Id: s-1\r\nx-custom: Hello\r\nContent-Length: 0\r\n\r\n")
    put("sip_message", "msg-rs-invite.sip", invite)
    # Compact forms (RFC 3261 7.3.3), folded header, as torture-style seeds of our own.
    compact = ("INVITE sip:%2B13125550100@192.0.2.1 SIP/2.0\r\n"
               "v: SIP/2.0/TCP 192.0.2.9:5060;branch=z9hG4bK-c;rport\r\n"
               "f: <sip:alice@192.0.2.9>;tag=1\r\nt: <sip:bob@192.0.2.1>\r\ni: c-1@192.0.2.9\r\n"
               "CSeq: 7 INVITE\r\nm: <sip:alice@192.0.2.9>\r\nx: 90;refresher=uas\r\n"
               "Subject: folded\r\n line\r\nc: application/sdp\r\nl: 0\r\n\r\n")
    put("sip_message", "compact-folded.sip", compact)
    notify = ("NOTIFY sip:box@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-n\r\n"
              "From: <sip:b@192.0.2.9>;tag=2\r\nTo: <sip:box@192.0.2.1>;tag=3\r\nCall-ID: n-1\r\n"
              "CSeq: 3 NOTIFY\r\nEvent: refer;id=2\r\nSubscription-State: terminated\r\n"
              "Content-Type: message/sipfrag\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n")
    put("sip_message", "notify-sipfrag.sip", notify)
    info = ("INFO sip:box@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-i\r\n"
            "From: <sip:b@192.0.2.9>;tag=2\r\nTo: <sip:box@192.0.2.1>;tag=3\r\nCall-ID: i-1\r\n"
            "CSeq: 4 INFO\r\nContent-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
            "Signal=5\r\nDuration=160\r\n")
    put("sip_message", "info-dtmf.sip", info)
    challenge = ("SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-r;received=203.0.113.10\r\n"
                 "From: <sip:box@sip.telnyx.com>;tag=a\r\nTo: <sip:box@sip.telnyx.com>;tag=b\r\nCall-ID: r-1\r\n"
                 "CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"sip.telnyx.com\", nonce=\"abc\", "
                 "qop=\"auth,auth-int\", algorithm=MD5, opaque=\"x\"\r\nContent-Length: 0\r\n\r\n")
    put("sip_message", "response-401-qop-list.sip", challenge)
    # Stream framing: two messages, a keepalive and a partial one in one read.
    put("sip_message", "stream-two-and-keepalive.sip", invite.encode() + b"\r\n\r\n" + notify.encode() + b"\r\n" + info.encode()[:40])
    put("sip_message", "truncated-body.sip", notify.replace("Content-Length: 16", "Content-Length: 90"))

def sdp():
    src = open(os.path.join(ROOT, "src", "sdp", "tests.rs")).read()
    for name, body in re.findall(r'const ([A-Z_0-9]+): &str = "(v=0.*?)";', src, re.S):
        text = body.replace("\\r\\n\\\n", "\r\n").replace("\\r\\n", "\r\n").replace('\\"', '"')
        put("sdp_offer_answer", name.lower() + ".sdp", text)
    put("sdp_offer_answer", "ipv6-hold.sdp",
        "v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 ::\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:4001 IN IP6 2001:db8::1\r\n"
        "a=ptime:30\r\na=maxptime:40\r\na=sendonly\r\nm=video 0 RTP/AVP 96\r\n")

def rtp_packet(pt, seq, ts, ssrc, payload, marker=False, csrcs=(), ext=None, pad=0):
    b0 = 0x80 | len(csrcs) | (0x10 if ext is not None else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    for c in csrcs:
        out += struct.pack("!I", c)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += b"\0" * (pad - 1) + bytes([pad])
    return out

def rtp():
    put("rtp_rtcp", "pcmu-20ms.rtp", rtp_packet(0, 1000, 160000, 0x11223344, b"\xff" * 160) + bytes([0x40] * 8))
    put("rtp_rtcp", "pcma-wrap.rtp", rtp_packet(8, 0xffff, 0xffffff60, 7, b"\xd5" * 160) + bytes([0x00, 0xff, 0x80, 0x41]))
    put("rtp_rtcp", "csrc-ext-pad.rtp", rtp_packet(0, 5, 800, 9, b"\x7f" * 40, True, (1, 2), b"\x10\xaa\x00\x00", 4))
    put("rtp_rtcp", "event.rtp", rtp_packet(101, 77, 4000, 9, bytes([5, 0x0a, 0x00, 0xa0]), True) + bytes([0, 0, 0xff]))
    sr = struct.pack("!BBHI", 0x81, 200, 12, 0xaabbccdd) + struct.pack("!IIIII", 0xe8000000, 0x80000000, 16000, 50, 8000)
    sr += struct.pack("!IIIIII", 0x12345678, 0x01000005, 1050, 20, 0x00010000, 0x00008000)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, 0xaabbccdd) + b"\x01\x04peer\x00\x00"
    put("rtp_rtcp", "sr-sdes.rtcp", sr + sdes)
    rr = struct.pack("!BBHI", 0x81, 201, 7, 0xaabbccdd) + struct.pack("!IIIIII", 0x12345678, 0, 0, 0, 0x1234, 0)
    put("rtp_rtcp", "rr.rtcp", rr)
    put("rtp_rtcp", "bye.rtcp", struct.pack("!BBHI", 0x81, 203, 1, 0xaabbccdd))

def dtmf():
    # 7-byte records: timestamp offset (u16, x8 samples), event payload, gap (x4 ms).
    def rec(tsoff, event, end, volume, duration, gap):
        return struct.pack("!HBBHB", tsoff, event, (0x80 if end else 0) | volume, duration, gap)
    press = b"".join(rec(0, 5, False, 10, d, 5) for d in (160, 320, 480)) + b"".join(rec(0, 5, True, 10, 800, 5) for _ in range(3))
    put("rfc4733", "one-press.bin", press)
    two = press + b"".join(rec(200, 9, i >= 2, 10, 160 * (i + 1), 5) for i in range(5))
    put("rfc4733", "two-presses.bin", two)
    put("rfc4733", "lost-end.bin", rec(0, 1, False, 10, 160, 5) + rec(0, 1, False, 10, 320, 200))
    put("rfc4733", "generate-hash.bin", b"#" + struct.pack("!HBBH", 250 // 4, 20, 10, 65530))
    put("rfc4733", "flash-and-wrap.bin", rec(0xffff, 16, False, 0, 0xffff, 1) + rec(0, 16, True, 63, 0xffff, 255))

def agent():
    frames = {
        "media.json": '{"event":"media","media":{"payload":"' + "//////////8=" + '"}}',
        "media-stream.json": '{"event":"media","sequence_number":"4","stream_id":"3c7c3a2e-2b1a-4c2d-9d2e-1f6e6b0a9c11",'
                             '"media":{"track":"outbound","chunk":"2","timestamp":"40","payload":"AQIDBAUGBwgJCg=="}}',
        "mark.json": '{"event":"mark","mark":{"name":"greeting-end"}}',
        "clear.json": '{"event":"clear"}',
        "connected.json": '{"event":"connected","version":"1.0.0"}',
        "start.json": '{"event":"start","sequence_number":"1","stream_id":"s","start":{"call_control_id":"v3:abc",'
                      '"media_format":{"encoding":"L16","sample_rate":16000,"channels":1}}}',
        "stop.json": '{"event":"stop","stream_id":"s","stop":{"call_control_id":"v3:abc"}}',
        "bad-base64.json": '{"event":"media","media":{"payload":"%%%"}}',
        "unicode-mark.json": '{"event":"mark","mark":{"name":"\\u20ac\\ud83d\\ude00 \u20ac"}}',
        "deep.json": '{"event":"media","media":' + '[' * 64 + ']' * 64 + '}',
    }
    for name, text in frames.items():
        put("agent_json", name, text)

def webrtc():
    src = open(os.path.join(ROOT, "tests", "webrtc.rs")).read()
    m = re.search(r'const DEAD_OFFER: &str = "(v=0.*?)";', src, re.S)
    text = m.group(1).replace("\\r\\n\\\n", "\r\n").replace("\\r\\n", "\r\n")
    put("webrtc_offer", "chromium-offer.sdp", text)
    put("webrtc_offer", "no-fingerprint.sdp", text.replace("a=fingerprint:", "a=x:"))
    put("webrtc_offer", "plain-rtp.sdp", text.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"))
    put("webrtc_offer", "join-token.txt", "sbj1.c3VwcG9ydCBkZXNr.1700000060.MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY")
    put("webrtc_offer", "join-token-body.txt", "sbj1.YQ.99999999999")

if __name__ == "__main__":
    sip(); sdp(); rtp(); dtmf(); agent(); webrtc()
    for t in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, t))
        print(t, len(files), sum(os.path.getsize(os.path.join(OUT, t, f)) for f in files))
