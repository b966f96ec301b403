//! Fuzzing entry points (issue 17, "no panic on any input"): one function per
//! kind of untrusted input, each running the bytes through exactly the code the
//! daemon runs on them when they arrive from the network — the same parsers,
//! accessors and sans-IO cores, never a copy of their logic.
//!
//! Used by the cargo-fuzz targets in `fuzz/` (libFuzzer, nightly) and by the
//! suite's stable smoke test `tests/fuzz_smoke.rs`, which replays the corpora in
//! `fuzz/corpus/<target>/` and cheap mutations of them. Every function accepts any
//! bytes and must return normally; a panic is a bug (in sipbridge or in
//! `vendor/rsipstack`). Functions may assert properties that must hold for every
//! input (a minted join token verifies to its room); such an assertion failing is
//! a finding like any other panic.
//!
//! Not an API: hidden from the docs, no stability promise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Request, Response, SipMessage};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::SipConnection;
use rsipstack::transport::stream::{SipCodec, SipCodecType};
use tokio_util::codec::Decoder;

use crate::agent::protocol::{Inbound, parse_inbound};
use crate::config::{Encoding, Secret};
use crate::media::dtmf::{DtmfDetector, DtmfTone, TelephoneEvent, generate};
use crate::media::g711::{G711, transcode_in_place};
use crate::media::playout::Playout;
use crate::media::rtcp::RtcpState;
use crate::media::rtp::{RtpPacket, RtpPacketMut, is_rtcp};
use crate::media::stats::ReceiverStats;
use crate::media::transcode::FromStream;
use crate::sdp::codec::AudioCodec;
use crate::sdp::{LocalAudio, LocalSession, OfferOptions, SessionDescription, answer_offer, apply_answer, build_offer};
use crate::sip::digest::{DigestChallenger, parse_credentials};
use crate::sip::msg;

/// Most SIP messages one input is framed into on the stream path (a TCP segment
/// full of tiny messages must not make one input run unbounded).
const MAX_STREAM_MESSAGES: usize = 64;
/// Most RTP datagrams / RFC 4733 packets one input is cut into.
const MAX_PACKETS: usize = 256;

/// The source address a fuzzed message "arrived" from (TEST-NET-1).
fn peer() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060)
}

/// The media side of a typical trunk: PCMU then PCMA on a public address.
fn trunk_audio() -> LocalAudio {
    LocalAudio {
        codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::G722, AudioCodec::Opus],
        address: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        port: 20_000,
    }
}

/// The box's digest challenger, one per process as in the daemon (it tracks
/// nonce counts across requests).
fn challenger() -> &'static DigestChallenger {
    static C: OnceLock<DigestChallenger> = OnceLock::new();
    C.get_or_init(|| DigestChallenger::new("sipbridge", Duration::from_secs(300)))
}

/// One SIP message from the network (UDP datagram, or bytes of a TCP/TLS
/// stream): `rsipstack::sip::SipMessage::try_from` and, when that fails, the
/// `400 Bad Request` builder (`vendor/rsipstack/src/sip/bad_request.rs`); the
/// truncated-body check, Via `received`/`rport` update and transaction keying
/// the stack does next; then sipbridge's accessors over a request (`sip::msg`:
/// dialled number, caller, headers, X- headers, Call-ID, tags), the digest
/// checker on `Authorization`, `Session-Expires`, REFER NOTIFY and INFO DTMF
/// bodies, and the SDP body through offer/answer. The same bytes also go through
/// the stream transport's framing (`SipCodec`, Content-Length), each framed
/// message through the same steps.
pub fn sip_message(data: &[u8]) {
    // Datagram path (transport/udp.rs).
    match SipMessage::try_from(data) {
        Ok(m) => {
            if !rsipstack::sip::bad_request::truncated_body(data) {
                sip_parsed(m);
            } else {
                let _ = rsipstack::sip::bad_request::bad_request(data, "body shorter than Content-Length");
            }
        }
        Err(e) => {
            let _ = rsipstack::sip::bad_request::bad_request(data, &e.to_string());
        }
    }
    // Stream path (transport/stream.rs): frame as many messages as the bytes hold.
    let mut codec = SipCodec::new();
    let mut buf = BytesMut::from(data);
    for _ in 0..MAX_STREAM_MESSAGES {
        match codec.decode(&mut buf) {
            Ok(Some(SipCodecType::Message(m))) => sip_parsed(m),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

fn sip_parsed(m: SipMessage) {
    let _ = m.to_string();
    let Ok(m) = SipConnection::update_msg_received(m, peer(), rsipstack::sip::Transport::Udp) else { return };
    match m {
        SipMessage::Request(req) => sip_request(&req),
        SipMessage::Response(resp) => sip_response(&resp),
    }
}

fn sip_request(req: &Request) {
    let _ = TransactionKey::from_request(req, TransactionRole::Server);
    let _ = (msg::dialled(req), msg::dialled_over_registration(req, "box-user"), msg::caller(req));
    let _ = (msg::has_to_tag(req), msg::call_id(req), msg::x_headers(req));
    let _ = crate::sip::msg::session_expires(req);
    let _ = msg::header(req, "Content-Type", Some("c"));
    let _ = crate::sip::refer::notify_status(req);
    let _ = crate::sip::msg::dtmf_from_info(&req.body);
    for name in ["Authorization", "Proxy-Authorization"] {
        if let Some(h) = msg::header(req, name, None) {
            sip_digest(req, &h);
        }
    }
    let _ = (req.via_header().map(|v| v.typed()), req.cseq_header().map(|c| c.typed()));
    let _ = (req.from_header().map(|f| f.typed()), req.contact_header().map(|c| c.typed()));
    if !req.body.is_empty() {
        sdp_offer_answer(&req.body);
    }
}

fn sip_response(resp: &Response) {
    let _ = TransactionKey::from_response(resp, TransactionRole::Client);
    let _ = (resp.to_header().map(|t| t.typed()), resp.cseq_header().map(|c| c.typed()));
    // The client's challenge readers (dialog/authenticate.rs): 401 and 407.
    for h in resp.headers.iter() {
        match h {
            rsipstack::sip::Header::WwwAuthenticate(h) => {
                let _ = h.typed();
            }
            rsipstack::sip::Header::ProxyAuthenticate(h) => {
                let _ = h.typed();
            }
            _ => {}
        }
    }
    if !resp.body.is_empty() {
        sdp_offer_answer(&resp.body);
    }
}

/// The digest checker on an `Authorization` value. A `nonce` written as
/// `FUZZNONCE` is replaced by a fresh nonce of the challenger, so inputs reach the
/// checks behind the nonce (algorithm, qop, nc, response).
fn sip_digest(req: &Request, header: &str) {
    let _ = parse_credentials(header);
    let now = SystemTime::now();
    // Nonces are bound to the source address they were issued to (issue 17).
    let source = std::net::IpAddr::from([198, 51, 100, 7]);
    let header = if header.contains("FUZZNONCE") {
        let challenge = challenger().challenge(now, false, source);
        let nonce = challenge
            .first()
            .and_then(|c| c.split("nonce=\"").nth(1))
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        header.replace("FUZZNONCE", &nonce)
    } else {
        header.to_string()
    };
    static PASSWORD: OnceLock<Secret> = OnceLock::new();
    let password = PASSWORD.get_or_init(|| Secret::new("fuzz-password"));
    let _ = challenger().verify(req.method.to_string().as_str(), &header, now, source, |_| Some(password));
}

/// An SDP body (RFC 4566) as an offer in an INVITE/re-INVITE and as an answer
/// to our offer: `SessionDescription::parse`, then `answer_offer` for a trunk
/// allowing PCMU and PCMA, and `apply_answer` against the offer `build_offer`
/// writes for that trunk; the error's SIP status and text as the SIP layer uses
/// them.
pub fn sdp_offer_answer(data: &[u8]) {
    let sdp = match SessionDescription::parse(data) {
        Ok(sdp) => sdp,
        Err(e) => {
            let _ = (e.sip_status(), e.to_string());
            return;
        }
    };
    let local = trunk_audio();
    let mut session = LocalSession::new(0x5eed);
    match answer_offer(&sdp, &local, &mut session) {
        Ok(answer) => {
            // Our answer must itself be SDP we can read back.
            assert!(SessionDescription::parse(answer.body.as_bytes()).is_ok(), "unparsable answer: {}", answer.body);
        }
        Err(e) => {
            let _ = (e.sip_status(), e.to_string());
        }
    }
    let offer = build_offer(&local, OfferOptions::default(), &mut session);
    if let Err(e) = apply_answer(&offer.offered, &sdp) {
        let _ = (e.sip_status(), e.to_string());
    }
}

/// Datagrams arriving on an RTP port: RFC 5761 demultiplexing (`is_rtcp`), the
/// RTCP reader (`RtcpState::on_packet`) and the RTP view (`RtpPacket::parse` and
/// every accessor), RFC 3550 receiver statistics (sequence, loss, jitter, report
/// block, call quality), in-place rewriting and G.711 transcoding as the relay
/// does. The input is the first datagram; then copies of it with the sequence
/// number, timestamp and SSRC moved as the input's bytes say, arriving 20 ms
/// apart on a virtual clock, so sequences (wraps, jumps, new sources) are
/// exercised too.
pub fn rtp_rtcp(data: &[u8]) {
    let start = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut stats = ReceiverStats::new(8000);
    let mut rtcp = RtcpState::new(0x1234_5678, "sipbridge-fuzz", start);
    let mut dtmf = DtmfDetector::new(Duration::from_millis(400));
    let mut buf = data.to_vec();
    // Each later byte of the input steers one more copy of the packet.
    let steps = data.iter().skip(12).take(MAX_PACKETS).copied().collect::<Vec<u8>>();
    let mut now = start;
    for i in 0..=steps.len() {
        rtp_datagram(&mut buf, now, wall, &mut stats, &mut rtcp, &mut dtmf);
        let Some(&step) = steps.get(i) else { break };
        now += Duration::from_millis(u64::from(step & 0x3f));
        if let Ok(mut p) = RtpPacketMut::parse(&mut buf) {
            let v = p.view();
            let (seq, ts, ssrc) = (v.sequence_number(), v.timestamp(), v.ssrc());
            let seq = match step >> 6 {
                0 => seq.wrapping_add(1),
                1 => seq.wrapping_sub(u16::from(step)),
                2 => seq.wrapping_add(u16::from(step) * 300),
                _ => seq,
            };
            p.set_sequence_number(seq);
            p.set_timestamp(ts.wrapping_add(u32::from(step) * 160));
            if step == 0xff {
                p.set_ssrc(ssrc.wrapping_add(1));
            }
        }
    }
    let _ = stats.report_block();
    let _ = stats.call_quality_stats(rtcp.rtt().map_or(Duration::from_millis(40), |r| r / 2), true).to_telnyx_json();
    let mut out = [0u8; 256];
    let block = stats.report_block();
    let _ = rtcp.build(&mut out, None, block, now, wall);
}

fn rtp_datagram(
    buf: &mut [u8],
    now: Instant,
    wall: SystemTime,
    stats: &mut ReceiverStats,
    rtcp: &mut RtcpState,
    dtmf: &mut DtmfDetector,
) {
    if is_rtcp(buf) {
        rtcp.on_packet(buf, now, wall);
        return;
    }
    // The RTCP reader is also fed whatever arrives on the RTCP port.
    rtcp.on_packet(buf, now, wall);
    let Ok(p) = RtpPacket::parse(buf) else { return };
    let _ = (p.marker(), p.csrc_count(), p.csrcs().count(), p.has_extension(), p.has_padding(), p.header_len());
    let _ = p.as_bytes().len();
    let payload_type = p.payload_type();
    if payload_type == crate::media::dtmf::DEFAULT_PAYLOAD_TYPE {
        stats.on_packet_without_timing(p.ssrc(), p.sequence_number(), now);
        let _ = dtmf.on_packet(p.timestamp(), p.payload(), now);
        while dtmf.poll_digit().is_some() {}
        return;
    }
    stats.on_packet(p.ssrc(), p.sequence_number(), p.timestamp(), now);
    let from = G711::from_payload_type(payload_type).unwrap_or(G711::Pcmu);
    if let Ok(mut m) = RtpPacketMut::parse(buf) {
        m.set_payload_type(8);
        m.set_marker(!m.view().marker());
        transcode_in_place(from, G711::Pcma, m.payload_mut());
    }
}

/// RFC 4733 telephone-events: the input cut into 7-byte packets (RTP timestamp
/// offset u16, 4-byte event payload, arrival gap in ms) fed to `DtmfDetector` on a
/// virtual clock, with its end timeout handled when due; each payload also through
/// `TelephoneEvent::parse`. Then the generator (`generate`, as `send_dtmf` uses
/// it) for a tone whose digit, duration and ptime come from the first bytes.
pub fn rfc4733(data: &[u8]) {
    let start = Instant::now();
    let mut now = start;
    let mut detector = DtmfDetector::new(Duration::from_millis(400));
    let base = 0xffff_0000u32;
    for chunk in data.chunks(7).take(MAX_PACKETS) {
        let [t0, t1, e0, e1, e2, e3, gap] = *chunk else {
            let _ = TelephoneEvent::parse(chunk);
            let _ = detector.on_packet(base, chunk, now);
            break;
        };
        let payload = [e0, e1, e2, e3];
        if let Ok(ev) = TelephoneEvent::parse(&payload) {
            let _ = (ev.digit(), ev.to_bytes());
        }
        let ts = base.wrapping_add(u32::from(u16::from_be_bytes([t0, t1])) * 8);
        let _ = detector.on_packet(ts, &payload, now);
        now += Duration::from_millis(u64::from(gap) * 4);
        if detector.poll_timeout().is_some_and(|due| now >= due) {
            detector.handle_timeout(now);
        }
        while detector.poll_digit().is_some() {}
    }
    if let [d, dur0, dur1, ptime, volume, seq0, seq1, ..] = *data {
        let tone = DtmfTone {
            digit: char::from(d),
            duration: Duration::from_millis(u64::from(u16::from_be_bytes([dur0, dur1])) * 4),
            volume,
            ptime: Duration::from_millis(u64::from(ptime)),
        };
        if let Ok(packets) = generate(&tone, u16::from_be_bytes([seq0, seq1]), base) {
            let mut detector = DtmfDetector::new(Duration::from_millis(400));
            // Bounded: at most 65535 units of duration / one ptime, plus 3 end packets.
            for p in packets.take(70_000) {
                let _ = detector.on_packet(p.timestamp, &p.payload, start + p.send_offset);
            }
            while detector.poll_digit().is_some() {}
        }
    }
}

/// One text frame from a voice agent's WebSocket (Telnyx media streaming,
/// PROTOCOLS.md §3): `parse_inbound` (JSON, event, base64 payload), then what the
/// stream task does with the result: a `media` payload converted from each stream
/// encoding (`FromStream`: PCMU, PCMA, L16 at 8000 and 16000 Hz) and queued in a
/// bounded `Playout` with marks and `clear`. WebSocket text frames are UTF-8, so
/// other bytes are dropped as tungstenite drops them.
pub fn agent_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut playout = Playout::new(8000 * 2);
    match parse_inbound(text) {
        Ok(Inbound::Media(bytes)) => {
            for (encoding, rate) in
                [(Encoding::Pcmu, 8000), (Encoding::Pcma, 8000), (Encoding::L16, 8000), (Encoding::L16, 16_000)]
            {
                let Ok(mut from) = FromStream::new(encoding, rate) else { continue };
                let mut pcm = Vec::new();
                from.convert(&bytes, &mut pcm);
                from.flush(&mut pcm);
                playout.push(&pcm);
            }
            let mut frame = [0i16; 160];
            while playout.next_frame(&mut frame) > 0 {}
        }
        Ok(Inbound::Mark(name)) => {
            playout.push(&[0; 320]);
            playout.mark(name);
            let mut frame = [0i16; 160];
            let _ = playout.next_frame(&mut frame);
            let _ = playout.clear();
            while playout.pop_reached().is_some() {}
        }
        Ok(Inbound::Clear | Inbound::Ignored | Inbound::Hangup) => {}
        Err(e) => {
            let _ = e.detail;
        }
    }
}

/// A browser's WebRTC offer as `POST /v2/conferences/{id}/webrtc` receives it:
/// the body must be UTF-8, then `webrtc::offered_codec` (sipbridge's checks and
/// SDP parser) and webrtc-rs's own parse of the offer
/// (`RTCSessionDescription::offer`, the first step of `set_remote_description`).
pub fn webrtc_offer(data: &[u8]) {
    let Ok(offer) = String::from_utf8(data.to_vec()) else { return };
    let _ = crate::webrtc::offered_codec(&offer);
    let _ = rtc::peer_connection::sdp::RTCSessionDescription::offer(offer);
}

/// A join token as the API reads it (`Authorization: Bearer`, or `?token=` on the
/// event socket): `JoinTokens::verify` on the input as given, and on the input
/// signed with the box's key (so the checks behind the MAC — prefix, room,
/// expiry — see arbitrary bodies). Asserts that a token minted for a room named
/// by the input verifies to that room.
pub fn join_token(data: &[u8]) {
    static TOKENS: OnceLock<crate::webrtc::token::JoinTokens> = OnceLock::new();
    let tokens = TOKENS.get_or_init(|| crate::webrtc::token::JoinTokens::new(Some(b"fuzz-api-token")));
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let text = String::from_utf8_lossy(data);
    let _ = tokens.verify(&text, now);
    let _ = tokens.verify(&tokens.sign(&text), now);
    let (token, _) = tokens.mint(&text, Duration::from_secs(60), now);
    assert_eq!(tokens.verify(&token, now).as_deref(), Ok(text.as_ref()), "minted token {token:?}");
}

/// A received audio stream of G.722 or Opus as a SIP or WebRTC leg's media worker
/// decodes it (`media::codec::Decoder`): the first byte picks the codec (bit 0)
/// and the output buffer (bits 1–2: 20, 60 or 120 ms, or a 7-sample buffer);
/// the rest is cut into packets by a one-byte length prefix (at most
/// `MAX_PACKETS`), each decoded in turn, with loss concealment and in-band FEC
/// recovery interleaved (a prefix byte whose value is 0 or 255 stands for a lost
/// packet). Asserts that every result fits the buffer and that every refusal is
/// `BadPayload`.
pub fn codec_decode(data: &[u8]) {
    use crate::media::codec::{CodecError, Decoder as AudioDecoder, MAX_FRAME_SAMPLES};
    use crate::sdp::codec::AudioCodec;
    let Some((&head, mut rest)) = data.split_first() else { return };
    let codec = if head & 1 == 0 { AudioCodec::Opus } else { AudioCodec::G722 };
    let Ok(mut dec) = AudioDecoder::new(codec) else { return };
    let mut buf = [0i16; MAX_FRAME_SAMPLES];
    let out_len = [320, 960, MAX_FRAME_SAMPLES, 7][usize::from((head >> 1) & 3)];
    let out = &mut buf[..out_len];
    for _ in 0..MAX_PACKETS {
        let Some((&len, tail)) = rest.split_first() else { break };
        let (packet, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        let result = match len {
            0 => Ok(dec.conceal(out)),
            255 => dec.decode_fec(packet, out),
            _ => dec.decode(packet, out),
        };
        match result {
            Ok(n) => assert!(n <= out_len, "{codec:?} wrote {n} samples into {out_len}"),
            Err(CodecError::BadPayload { .. }) => {}
            Err(e) => panic!("{codec:?}: {e}"),
        }
    }
}
