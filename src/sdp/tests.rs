//! Offer/answer against real offers, written out verbatim.
//!
//! Sources: baresip 1.0.0 (Debian `baresip-core`) and SIPp 3.6 (`sip-tester`,
//! scenario `uac_pcap`) were captured on loopback from the packages on these
//! machines; LiveKit's offer follows `livekit/media-sdk` `sdp/offer.go` (static
//! types first by priority: G722 9, PCMU 0, PCMA 8, then telephone-event 101
//! `0-16`, `a=ptime:20`, `a=sendrecv`, `s=LiveKit`); the Telnyx offer has the shape
//! of Telnyx's inbound INVITEs (codecs 0 8 9 18 101, `0-16`, ptime 20, `a=rtcp`).

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::sdp::codec::AudioCodec;

const TELNYX: &str = "v=0\r\n\
o=- 1718205466 1718205467 IN IP4 192.76.120.31\r\n\
s=-\r\n\
c=IN IP4 192.76.120.31\r\n\
t=0 0\r\n\
m=audio 30412 RTP/AVP 0 8 9 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:30413 IN IP4 192.76.120.31\r\n";

const LIVEKIT: &str = "v=0\r\n\
o=- 8841352066239045211 8841352066239045211 IN IP4 34.123.45.67\r\n\
s=LiveKit\r\n\
c=IN IP4 34.123.45.67\r\n\
t=0 0\r\n\
m=audio 10044 RTP/AVP 9 0 8 101\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// Captured from `baresip -e "/dial sip:agent@127.0.0.1:5098"` with opus, g722,
/// g711 loaded and `rtcp_mux yes`.
const BARESIP: &str = "v=0\r\n\
o=- 3254839050 43003852 IN IP4 192.0.2.2\r\n\
s=-\r\n\
c=IN IP4 192.0.2.2\r\n\
t=0 0\r\n\
a=tool:baresip 1.0.0\r\n\
m=audio 28380 RTP/AVP 96 9 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=28000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=sendrecv\r\n\
a=label:1\r\n\
a=rtcp-rsize\r\n\
a=ssrc:1863596903 cname:sip:bob@127.0.0.1\r\n\
a=rtcp-mux\r\n\
a=minptime:20\r\n\
a=ptime:20\r\n";

/// Captured from `sipp -sf uac_pcap.xml 127.0.0.1:5098 -i 127.0.0.1` (the built-in
/// `uac_pcap` scenario: PCMA, not PCMU, and `0-11,16`), `[media_ip]` substituted.
const SIPP_UAC_PCAP: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 8 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-11,16\r\n\
\r\n";

/// SIPp's built-in `uac` scenario: a static payload type without `a=rtpmap`.
const SIPP_UAC: &str = "v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

const G729_ONLY: &str = "v=0\r\n\
o=- 1 1 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 18 101\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n";

const IPV6: &str = "v=0\r\n\
o=- 20518 0 IN IP6 2001:db8::10\r\n\
s=-\r\n\
c=IN IP6 2001:db8::10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:30\r\n";

const SRTP: &str = "v=0\r\n\
o=- 5 5 IN IP4 198.51.100.9\r\n\
s=-\r\n\
c=IN IP4 198.51.100.9\r\n\
t=0 0\r\n\
m=audio 16000 RTP/SAVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
a=sendrecv\r\n";

fn local() -> LocalAudio {
    LocalAudio {
        codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        address: "203.0.113.5".parse().unwrap(),
        port: 40000,
    }
}

fn answer(offer: &str, local: &LocalAudio) -> Result<Answer, SdpError> {
    let offer = SessionDescription::parse(offer.as_bytes())?;
    answer_offer(&offer, local, &mut LocalSession::new(4242))
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn telnyx_offer_gets_pcmu_and_telephone_event() {
    let a = answer(TELNYX, &local()).unwrap();
    assert_eq!(
        a.body,
        "v=0\r\n\
o=- 4242 4242 IN IP4 203.0.113.5\r\n\
s=sipbridge\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n"
    );
    let n = a.audio;
    assert_eq!((n.codec, n.payload_type, n.telephone_event), (AudioCodec::Pcmu, 0, Some(101)));
    assert_eq!(n.remote_rtp, addr("192.76.120.31:30412"));
    assert_eq!(n.remote_rtcp, addr("192.76.120.31:30413"), "from a=rtcp");
    assert_eq!((n.ptime_ms, n.rtcp_mux, n.direction), (20, false, Direction::SendRecv));
}

#[test]
fn trunk_order_wins_over_offerer_order() {
    // Telnyx lists PCMU first, the trunk prefers PCMA: the answerer chooses among the
    // offered formats (RFC 3264 §6.1), by the trunk's `codecs` order (issue 22).
    let pcma_first = LocalAudio { codecs: vec![AudioCodec::Pcma, AudioCodec::Pcmu], ..local() };
    assert_eq!(answer(TELNYX, &pcma_first).unwrap().audio.codec, AudioCodec::Pcma);
    // A trunk that allows only PCMA gets PCMA.
    let pcma_only = LocalAudio { codecs: vec![AudioCodec::Pcma], ..local() };
    let a = answer(TELNYX, &pcma_only).unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type), (AudioCodec::Pcma, 8));
    assert!(a.body.contains("m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"));
}

#[test]
fn livekit_offer_skips_g722_unless_the_trunk_allows_it() {
    let a = answer(LIVEKIT, &LocalAudio { codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma], ..local() }).unwrap();
    assert_eq!((a.audio.codec, a.audio.telephone_event), (AudioCodec::Pcmu, Some(101)));
    assert_eq!(a.audio.remote_rtp, addr("34.123.45.67:10044"));
    assert_eq!(a.audio.remote_rtcp, addr("34.123.45.67:10045"), "RTP port + 1 without a=rtcp");
    assert!(a.body.contains("m=audio 40000 RTP/AVP 0 101\r\n"));
    // A wideband trunk takes LiveKit's G.722 (RTP clock 8000, RFC 3551 §4.5.2).
    let wide = LocalAudio { codecs: vec![AudioCodec::G722, AudioCodec::Pcmu], ..local() };
    let a = answer(LIVEKIT, &wide).unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type, a.audio.telephone_event), (AudioCodec::G722, 9, Some(101)));
    assert!(a.body.contains("m=audio 40000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n"), "{}", a.body);
    assert!(a.body.contains("a=rtpmap:101 telephone-event/8000\r\n"));
}

#[test]
fn baresip_opus_offer_is_answered_with_opus_and_its_own_payload_type() {
    let wide = LocalAudio { codecs: vec![AudioCodec::Opus, AudioCodec::G722, AudioCodec::Pcmu], ..local() };
    let a = answer(BARESIP, &wide).unwrap();
    let n = a.audio;
    assert_eq!((n.codec, n.payload_type, n.receive_payload_type), (AudioCodec::Opus, 96, 96));
    // baresip offers telephone-event only at 8000 Hz: none beside Opus (RFC 4733 §2.1).
    assert_eq!(n.telephone_event, None);
    assert!(a.body.contains("m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"), "{}", a.body);
    assert!(a.body.contains("a=fmtp:96 useinbandfec=1;maxplaybackrate=16000;stereo=0;sprop-maxcapturerate=16000\r\n"));
    assert_eq!(n.ptime_ms, 20);
    // With telephone-event/48000 offered it is answered at that clock.
    let with_te = BARESIP.replace("RTP/AVP 96 9 0 8 101", "RTP/AVP 96 9 0 8 101 110").replace(
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=rtpmap:101 telephone-event/8000\r\na=rtpmap:110 telephone-event/48000\r\n",
    );
    let n = answer(&with_te, &wide).unwrap().audio;
    assert_eq!((n.codec, n.telephone_event), (AudioCodec::Opus, Some(110)));
    // A G.722 preference takes G.722 from the same offer.
    let g722 = LocalAudio { codecs: vec![AudioCodec::G722, AudioCodec::Opus], ..local() };
    assert_eq!(answer(BARESIP, &g722).unwrap().audio.codec, AudioCodec::G722);
    // Opus at the wrong clock or channel count is not Opus (RFC 7587 §7).
    let bad = BARESIP.replace("opus/48000/2", "opus/48000").replace("RTP/AVP 96 9 0 8 101", "RTP/AVP 96 101");
    assert!(matches!(answer(&bad, &wide), Err(SdpError::NoCommonCodec { .. })));
}

#[test]
fn wideband_offer_lists_opus_with_fmtp_and_both_telephone_event_clocks() {
    let wide = LocalAudio { codecs: vec![AudioCodec::Opus, AudioCodec::G722, AudioCodec::Pcmu], ..local() };
    let mut session = LocalSession::new(1);
    let offer = build_offer(&wide, OfferOptions::default(), &mut session);
    assert!(offer.body.contains("m=audio 40000 RTP/AVP 111 9 0 101 110\r\n"), "{}", offer.body);
    assert!(offer.body.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1;"));
    assert!(offer.body.contains("a=rtpmap:9 G722/8000\r\n"));
    assert!(offer.body.contains("a=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-16\r\n"));
    // The peer answers Opus at its own payload type with telephone-event/48000.
    let answer_sdp = "v=0\r\no=- 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
                      m=audio 7000 RTP/AVP 107 126\r\na=rtpmap:107 opus/48000/2\r\na=rtpmap:126 telephone-event/48000\r\n";
    let n = apply_answer(&offer.offered, &SessionDescription::parse(answer_sdp.as_bytes()).unwrap()).unwrap();
    assert_eq!((n.codec, n.payload_type, n.receive_payload_type), (AudioCodec::Opus, 107, 111));
    assert_eq!((n.telephone_event, n.receive_telephone_event), (Some(126), Some(110)));
    // A G.722 answer keeps telephone-event/8000.
    let g722 = answer_sdp
        .replace("107 126", "9 101")
        .replace("a=rtpmap:107 opus/48000/2", "a=rtpmap:9 G722/8000")
        .replace("telephone-event/48000", "telephone-event/8000")
        .replace("a=rtpmap:126", "a=rtpmap:101");
    let n = apply_answer(&offer.offered, &SessionDescription::parse(g722.as_bytes()).unwrap()).unwrap();
    assert_eq!((n.codec, n.telephone_event, n.receive_telephone_event), (AudioCodec::G722, Some(101), Some(101)));
}

#[test]
fn baresip_offer_skips_opus_and_accepts_rtcp_mux() {
    let a = answer(BARESIP, &local()).unwrap();
    let n = a.audio;
    assert_eq!((n.codec, n.payload_type, n.telephone_event), (AudioCodec::Pcmu, 0, Some(101)));
    assert!(n.rtcp_mux);
    assert_eq!(n.remote_rtcp, n.remote_rtp);
    assert_eq!(n.remote_rtp, addr("192.0.2.2:28380"));
    assert!(a.body.ends_with("a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"), "{}", a.body);
    // The parser saw opus as a 48 kHz stereo format and kept its fmtp.
    let offer = SessionDescription::parse(BARESIP.as_bytes()).unwrap();
    let opus = &offer.media[0].formats[0];
    assert_eq!((opus.payload_type, opus.clock_rate_hz, opus.channels), (96, 48000, 2));
    assert!(opus.is("OPUS"));
    assert_eq!(opus.fmtp.as_deref(), Some("stereo=1;sprop-stereo=1;maxaveragebitrate=28000"));
}

#[test]
fn sipp_offers() {
    let a = answer(SIPP_UAC_PCAP, &local()).unwrap();
    assert_eq!((a.audio.codec, a.audio.payload_type, a.audio.telephone_event), (AudioCodec::Pcma, 8, Some(101)));
    assert_eq!(a.audio.ptime_ms, 20, "no a=ptime: default 20");
    assert!(a.body.contains("a=fmtp:101 0-16\r\na=ptime:20\r\n"));
    let offer = SessionDescription::parse(SIPP_UAC_PCAP.as_bytes()).unwrap();
    assert_eq!(offer.media[0].format("telephone-event", 8000).unwrap().fmtp.as_deref(), Some("0-11,16"));

    let a = answer(SIPP_UAC, &local()).unwrap();
    assert_eq!((a.audio.codec, a.audio.telephone_event), (AudioCodec::Pcmu, None));
    assert!(a.body.contains("m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"));
    // Static payload type without a=rtpmap (RFC 3551 Table 4).
    let bare = SIPP_UAC.replace("a=rtpmap:0 PCMU/8000\r\n", "");
    assert_eq!(answer(&bare, &local()).unwrap().audio.codec, AudioCodec::Pcmu);
}

#[test]
fn hold_reinvites_mirror_direction_and_bump_the_version() {
    let local = local();
    let mut session = LocalSession::new(4242);
    let first = answer_offer(&SessionDescription::parse(TELNYX.as_bytes()).unwrap(), &local, &mut session).unwrap();
    assert!(first.body.contains("o=- 4242 4242 "));

    // Same offer again (session refresh): identical answer, same version.
    let again = answer_offer(&SessionDescription::parse(TELNYX.as_bytes()).unwrap(), &local, &mut session).unwrap();
    assert_eq!(again.body, first.body);

    // RFC 3264 hold: a=sendonly → we answer recvonly, new version.
    let sendonly = TELNYX.replace("a=sendrecv", "a=sendonly");
    let held = answer_offer(&SessionDescription::parse(sendonly.as_bytes()).unwrap(), &local, &mut session).unwrap();
    assert_eq!(held.audio.direction, Direction::RecvOnly);
    assert!(held.body.contains("o=- 4242 4243 ") && held.body.ends_with("a=recvonly\r\n"));
    assert!(!held.audio.direction.sends() && held.audio.direction.receives());

    // Old-style hold: c=0.0.0.0 with sendrecv → no address to send to, answer recvonly.
    let zero = TELNYX.replace("c=IN IP4 192.76.120.31", "c=IN IP4 0.0.0.0");
    let old = answer_offer(&SessionDescription::parse(zero.as_bytes()).unwrap(), &local, &mut session).unwrap();
    assert_eq!(old.audio.remote_rtp, None);
    assert_eq!(old.audio.direction, Direction::RecvOnly);
    assert!(old.body.contains("o=- 4242 4243 "), "same answer as the previous one: same version");

    // recvonly and inactive offers.
    for (attr, expected) in [("a=recvonly", Direction::SendOnly), ("a=inactive", Direction::Inactive)] {
        let text = TELNYX.replace("a=sendrecv", attr);
        let a = answer_offer(&SessionDescription::parse(text.as_bytes()).unwrap(), &local, &mut session).unwrap();
        assert_eq!(a.audio.direction, expected);
        assert!(a.body.ends_with(&format!("a={}\r\n", expected.attribute())));
    }

    // Resume: back to sendrecv, version still increasing.
    let resumed = answer_offer(&SessionDescription::parse(TELNYX.as_bytes()).unwrap(), &local, &mut session).unwrap();
    assert!(resumed.body.contains("o=- 4242 4246 "), "{}", resumed.body);
    assert_eq!(resumed.audio.direction, Direction::SendRecv);
}

#[test]
fn session_level_direction_applies_unless_the_media_overrides_it() {
    let session_level = LIVEKIT.replace("a=sendrecv\r\n", "").replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    assert_eq!(answer(&session_level, &local()).unwrap().audio.direction, Direction::RecvOnly);
    let overridden = LIVEKIT.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
    assert_eq!(answer(&overridden, &local()).unwrap().audio.direction, Direction::SendRecv);
}

#[test]
fn g729_only_is_488_no_common_codec() {
    let err = answer(G729_ONLY, &local()).unwrap_err();
    assert_eq!(
        err,
        SdpError::NoCommonCodec {
            offered: "G729/8000 telephone-event/8000".to_string(),
            allowed: "PCMU PCMA".to_string()
        }
    );
    assert_eq!(err.sip_status(), 488);
    assert_eq!(
        err.to_string(),
        "no common audio codec: the peer has G729/8000 telephone-event/8000; this leg allows PCMU PCMA"
    );
}

#[test]
fn ipv6_offer_and_answer() {
    let local = LocalAudio { address: "2001:db8::5".parse().unwrap(), ..local() };
    let a = answer(IPV6, &local).unwrap();
    assert_eq!(a.audio.codec, AudioCodec::Pcmu, "the trunk lists PCMU first");
    assert_eq!(a.audio.remote_rtp, addr("[2001:db8::10]:49170"));
    assert_eq!(a.audio.ptime_ms, 30, "offered ptime is echoed");
    assert!(a.body.starts_with("v=0\r\no=- 4242 4242 IN IP6 2001:db8::5\r\ns=sipbridge\r\nc=IN IP6 2001:db8::5\r\n"));
    assert!(a.body.contains("a=ptime:30\r\n"));
}

#[test]
fn srtp_offer_is_rejected_with_a_reason() {
    let err = answer(SRTP, &local()).unwrap_err();
    assert_eq!(err, SdpError::UnsupportedTransport { proto: "RTP/SAVP".to_string() });
    assert_eq!(err.sip_status(), 488);
    assert!(err.to_string().contains("RTP/SAVP is not supported"));
}

#[test]
fn extra_streams_are_rejected_with_port_zero() {
    // Best-effort SRTP style: an SAVP audio line, then a plain one; plus video.
    let two = format!(
        "{}m=audio 30414 RTP/AVP 0\r\nc=IN IP4 192.76.120.32\r\na=rtpmap:0 PCMU/8000\r\nm=video 30500 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        SRTP.replace("\r\na=sendrecv\r\n", "\r\n")
    );
    let a = answer(&two, &local()).unwrap();
    assert_eq!(a.audio.remote_rtp, addr("192.76.120.32:30414"), "media-level c= wins");
    let m_lines: Vec<&str> = a.body.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines, vec!["m=audio 0 RTP/SAVP 0 101", "m=audio 40000 RTP/AVP 0", "m=video 0 RTP/AVP 96"]);
}

#[test]
fn ptime_and_maxptime() {
    let with = |extra: &str| LIVEKIT.replace("a=ptime:20\r\n", extra);
    assert_eq!(answer(&with(""), &local()).unwrap().audio.ptime_ms, 20);
    assert_eq!(answer(&with("a=ptime:40\r\n"), &local()).unwrap().audio.ptime_ms, 40);
    assert_eq!(answer(&with("a=ptime:40\r\na=maxptime:30\r\n"), &local()).unwrap().audio.ptime_ms, 30);
    assert_eq!(answer(&with("a=maxptime:10\r\n"), &local()).unwrap().audio.ptime_ms, 10);
    assert_eq!(answer(&with("a=ptime:1000\r\n"), &local()).unwrap().audio.ptime_ms, 20, "out of range");
}

#[test]
fn malformed_and_unusable_offers() {
    let garbage = answer("hello world", &local()).unwrap_err();
    assert!(matches!(garbage, SdpError::Syntax(_)), "{garbage:?}");
    assert_eq!(garbage.sip_status(), 400);
    let fqdn = answer(&SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com"), &local()).unwrap_err();
    assert_eq!(fqdn, SdpError::BadAddress { address: "media.example.com".to_string() });
    let no_c = answer(&SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", ""), &local()).unwrap_err();
    assert_eq!((no_c.clone(), no_c.sip_status()), (SdpError::MissingConnection, 400));
    let video_only =
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n";
    assert_eq!(answer(video_only, &local()).unwrap_err(), SdpError::NoAudio);
    let disabled = SIPP_UAC.replace("m=audio 6000", "m=audio 0");
    assert_eq!(answer(&disabled, &local()).unwrap_err(), SdpError::NoAudio);
    let bad_rtpmap = SIPP_UAC.replace("PCMU/8000", "PCMU");
    assert!(matches!(answer(&bad_rtpmap, &local()), Err(SdpError::Syntax(_))));
    let no_codecs = LocalAudio { codecs: vec![], ..local() };
    assert!(matches!(answer(TELNYX, &no_codecs), Err(SdpError::NoCommonCodec { .. })));
    // Tolerated real-world deviations: LF-only lines, missing s= and t=.
    let sloppy = SIPP_UAC.replace("\r\n", "\n").replace("s=-\n", "").replace("t=0 0\n", "");
    assert_eq!(answer(&sloppy, &local()).unwrap().audio.codec, AudioCodec::Pcmu);
}

#[test]
fn every_answer_parses_back() {
    for offer in [TELNYX, LIVEKIT, BARESIP, SIPP_UAC_PCAP, SIPP_UAC, IPV6] {
        let a = answer(offer, &local()).unwrap();
        let parsed = SessionDescription::parse(a.body.as_bytes()).unwrap();
        let m = &parsed.media[0];
        assert_eq!(m.port, 40000);
        assert_eq!(m.connection, Some("203.0.113.5".parse::<IpAddr>().unwrap()));
        assert_eq!(m.formats[0].payload_type, a.audio.payload_type);
        assert_eq!(m.direction, a.audio.direction);
    }
}

#[test]
fn outbound_offer_and_telnyx_answer() {
    let mut session = LocalSession::new(77);
    let offer = build_offer(&local(), OfferOptions::default(), &mut session);
    assert_eq!(
        offer.body,
        "v=0\r\n\
o=- 77 77 IN IP4 203.0.113.5\r\n\
s=sipbridge\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n"
    );
    let telnyx_answer = "v=0\r\no=- 1718205500 1718205501 IN IP4 192.76.120.31\r\ns=-\r\nc=IN IP4 192.76.120.31\r\nt=0 0\r\n\
m=audio 31066 RTP/AVP 8 100\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-16\r\n\
a=ptime:20\r\na=sendrecv\r\n";
    let n = apply_answer(&offer.offered, &SessionDescription::parse(telnyx_answer.as_bytes()).unwrap()).unwrap();
    assert_eq!((n.codec, n.payload_type, n.receive_payload_type), (AudioCodec::Pcma, 8, 8));
    assert_eq!((n.telephone_event, n.receive_telephone_event), (Some(100), Some(101)), "send theirs, receive ours");
    assert_eq!(n.remote_rtp, addr("192.76.120.31:31066"));
    assert_eq!((n.direction, n.rtcp_mux, n.ptime_ms), (Direction::SendRecv, false, 20));

    // Our own answer to our own offer closes the loop.
    let mut peer = LocalSession::new(5);
    let remote = LocalAudio { codecs: vec![AudioCodec::Pcmu], address: "198.51.100.20".parse().unwrap(), port: 7000 };
    let their = answer_offer(&SessionDescription::parse(offer.body.as_bytes()).unwrap(), &remote, &mut peer).unwrap();
    let n = apply_answer(&offer.offered, &SessionDescription::parse(their.body.as_bytes()).unwrap()).unwrap();
    assert_eq!((n.codec, n.telephone_event, n.remote_rtp), (AudioCodec::Pcmu, Some(101), addr("198.51.100.20:7000")));
}

#[test]
fn outbound_hold_offer_and_answer_errors() {
    let mut session = LocalSession::new(77);
    let options = OfferOptions { direction: Direction::SendOnly, rtcp_mux: true, ptime_ms: 20 };
    let offer = build_offer(&local(), options, &mut session);
    assert!(offer.body.ends_with("a=ptime:20\r\na=rtcp-mux\r\na=sendonly\r\n"));
    let parse = |s: &str| SessionDescription::parse(s.as_bytes()).unwrap();
    let ok = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 9000 RTP/AVP 0\r\na=recvonly\r\na=rtcp-mux\r\n";
    let n = apply_answer(&offer.offered, &parse(ok)).unwrap();
    assert_eq!((n.direction, n.rtcp_mux, n.telephone_event), (Direction::SendOnly, true, None));
    assert_eq!(apply_answer(&offer.offered, &parse(&ok.replace("9000", "0"))), Err(SdpError::AudioRejected));
    let g729 = ok.replace("RTP/AVP 0", "RTP/AVP 18");
    assert!(matches!(apply_answer(&offer.offered, &parse(&g729)), Err(SdpError::NoCommonCodec { .. })));
    let two = format!("{ok}m=video 0 RTP/AVP 96\r\n");
    assert!(matches!(apply_answer(&offer.offered, &parse(&two)), Err(SdpError::BadAnswer(_))));
}

#[test]
fn mutated_offers_never_panic() {
    // xorshift64: deterministic byte flips, truncations and insertions of the real offers.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let offers = [TELNYX, LIVEKIT, BARESIP, SIPP_UAC_PCAP, SIPP_UAC, G729_ONLY, IPV6, SRTP];
    let alphabet = b" :/=\r\n0123456789amcv.-";
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..4000 {
        let mut bytes = offers[(next() % offers.len() as u64) as usize].as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at.max(1)),
                2 => bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                _ => bytes.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
            }
        }
        match SessionDescription::parse(&bytes).and_then(|o| answer_offer(&o, &local(), &mut LocalSession::new(1))) {
            Ok(a) => {
                accepted += 1;
                assert!(SessionDescription::parse(a.body.as_bytes()).is_ok());
            }
            Err(e) => {
                rejected += 1;
                assert!(matches!(e.sip_status(), 400 | 488));
            }
        }
    }
    assert!(accepted > 500 && rejected > 500, "both outcomes exercised: {accepted} / {rejected}");
}
