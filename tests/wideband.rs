//! Wideband calls with real peers (issue 22 point 6, the SIP part): G.722 and Opus
//! legs carry audio above 4 kHz end to end, G.711 legs do not.
//!
//! - `harness`: baresip calls baresip directly on loopback (no daemon), once per
//!   codec, each side forced to one codec. It proves the peer (the codec baresip
//!   negotiates is the one forced, its `snd/` dumps are at that codec's rate) and
//!   the spectral check (tests/common/spectrum.rs): what crossed a G.722 or Opus
//!   call keeps its energy above 4 kHz, what crossed a PCMU call has none.
//! - `product`: the same peers against the box, each scenario run per codec:
//!   G.722 and Opus calls are wideband end to end, the PCMU runs of the same code
//!   keep narrowband calls narrowband.
//!
//! Figures (harness, idle and under two busy loops alike), energy 4.5–7.5 kHz
//! over 0.3–3.4 kHz: the chirp −0.9 dB at the source, heard −0.9 dB over G.722,
//! −2.5 dB over Opus, −82 dB over PCMU (brought to 16 kHz); espeak-ng speech
//! −12.8 dB, heard −13.6 / −16.7 / −76.5 dB. Today's box: PCMU to an L16/16000
//! agent −84.5 dB, a PCMU call's echo and recording −77 dB.
//!
//! The sources are 16 kHz mono WAVs made at test time: a 300–7000 Hz chirp
//! (sox) and espeak-ng speech resampled to 16 kHz (its fricatives reach 8 kHz).
//!
//! What these tests expect of the product (issue 22, read naturally where it is
//! silent):
//! - `[[trunk]] codecs = ["G722", "OPUS", "PCMU"]` (names "PCMU", "PCMA", "G722",
//!   "OPUS") is the order the box offers, and the box answers an offer with the
//!   first codec of that list the offer has. baresip here offers one codec only,
//!   so the choice is never ambiguous.
//! - The box's SDP names G.722 `9 G722/8000` and Opus `opus/48000/2` on a dynamic
//!   payload type (111 in its own offers; in an answer, the offerer's, here
//!   baresip's 96) with `stereo=0` in its fmtp.
//! - A G.722 or Opus leg is 16 kHz inside the box: the built-in echo agent
//!   (`builtin:echo`) returns 16 kHz audio to it, an agent with
//!   `encoding = "L16"`, `sample_rate = 16000` gets 16 kHz audio that was never
//!   at 8 kHz, and a recording with a wideband party is a 16 kHz WAV (dual
//!   channel: caller left); a PCMU-only call's recording stays 8 kHz. So is a
//!   forwarded call's recording when its caller is wideband, and a room's own
//!   recording (conference `record_start`) when the room mixes at 16 kHz.
//! - A forward route between a wideband leg and a G.711-only trunk transcodes
//!   (the legs share no codec), and the G.711 trunk is offered G.711 only.
//! - Audio the box plays itself (`playback_start` of a 16 kHz WAV, `speak` with
//!   espeak-ng, which speaks at 22.05 kHz) reaches a G.722 or Opus caller at
//!   16 kHz, never through 8 kHz; a PCMU caller gets it at 8 kHz.
//! - `POST /v2/calls` through a trunk with `codecs = ["G722", "PCMU"]` (or
//!   `["OPUS", "PCMU"]`) offers those, and an L16/16000 stream
//!   (`stream_bidirectional_codec = "L16"`, `stream_bidirectional_sampling_rate =
//!   16000`) of that call is wideband both ways.
//! - A `bridge` of a G.722 or Opus call with a PCMU-only call (another trunk,
//!   `codecs = ["PCMU"]`), or a `transfer` of a PCMU call to a wideband phone,
//!   transcodes: each phone hears the other (and not itself), each in its own
//!   codec; the PCMU phone's speech reaches the wideband phone with no band
//!   above 4 kHz added; `call.bridged` comes on both calls, naming the other.
//! - An agent with `encoding = "G722"` or `"OPUS"` (`sample_rate = 16000`)
//!   gets `media_format` {that encoding, 16000, 1} and one whole codec packet
//!   per `media` message (G.722: 160 bytes a 20 ms); the packets decode
//!   (ffmpeg; Opus from an Ogg file the test writes) to the caller's speech,
//!   wideband from a wideband caller, narrowband from a PCMU caller; the packets
//!   the agent sends back (its echo) reach the caller in the caller's codec.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::audio;
use common::baresip::{Baresip, Codec, Phone, sdp_rtpmaps};
use common::spectrum;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(40);

/// The wideband bar: [`spectrum::band_ratio_db`] of speech or the chirp after a
/// G.722 or Opus leg is above this (measured: see `harness`).
const WIDEBAND_DB: f64 = -30.0;
/// The narrowband bar: audio that crossed G.711, brought to 16 kHz, is below this.
const NARROWBAND_DB: f64 = -50.0;

/// The caller's sentence: sibilants and fricatives (energy up to 8 kHz).
const SENTENCE: &str = "Six sisters sell fresh fish, seashells and sausages on Saturday.";
/// The callee's sentence.
const REPLY: &str = "Yes, she sells sixty six thick socks.";

/// How much of what a phone sent was found in what was heard (or received, or
/// recorded): 0.5 s segments with speech, each searched on its own.
#[derive(Debug)]
struct Matched {
    /// Segments with speech in what was sent.
    voiced: usize,
    /// Per voiced segment: (lag in ms where it matched best, that correlation).
    best: Vec<(i64, f64)>,
}

impl Matched {
    /// Segments found (correlation at least 0.5).
    fn found(&self) -> usize {
        self.best.iter().filter(|b| b.1 >= 0.5).count()
    }

    /// At least 3 segments with speech, and 80 % of them found.
    fn is_found(&self) -> bool {
        self.voiced >= 3 && self.found() * 10 >= self.voiced * 8
    }

    fn describe(&self) -> String {
        let mut lags: Vec<i64> = self.best.iter().map(|b| b.0).collect();
        lags.sort();
        let worst = self.best.iter().map(|b| b.1).fold(1.0f64, f64::min);
        format!(
            "{}/{} segments found, median lag {} ms, worst correlation {worst:.2}",
            self.found(),
            self.voiced,
            lags.get(lags.len() / 2).copied().unwrap_or_default()
        )
    }
}

/// Finds `sent` (a WAV of any rate) in `heard` (a WAV of any rate), both brought
/// to 8 kHz: the waveform check works in the telephone band, which every codec
/// carries (the band above 4 kHz is [`spectrum`]'s to judge). Each 0.5 s segment
/// with speech is searched on its own from 0.8 s before its place to 1.2 s after
/// it, so that a sender re-timed under load still counts. Measured at a load
/// average of 12 on 2 cores: a Python agent's echo 267 ms late (0–67 ms idle),
/// a recording's caller channel 198 ms early against baresip's own dump (the
/// two start at different moments). (A 32768-point FFT per segment: 1–2 s per
/// call in a debug build.)
fn found_in(sent: &Path, heard: &Path) -> Matched {
    const SEG: usize = 4000;
    let (before, after) = (6400usize, 9600usize);
    let narrow = |p: &Path| audio::read_mono(&spectrum::resample(p, 8000));
    let (sent, heard) = (narrow(sent), narrow(heard));
    let mut m = Matched { voiced: 0, best: Vec::new() };
    for start in (0..sent.len()).step_by(SEG) {
        let seg = &sent[start..(start + SEG).min(sent.len())];
        if seg.len() < SEG || audio::rms(seg) < 100.0 {
            continue;
        }
        m.voiced += 1;
        let from = start.saturating_sub(before).min(heard.len());
        let to = (start + after + SEG).min(heard.len());
        let (k, c) = spectrum::best_match(seg, &heard[from..to]);
        m.best.push((((from + k) as i64 - start as i64) / 8, c));
    }
    m
}

/// [`found_in`] for the dumps of two phones, which start at different moments
/// (each when its own call's audio started): `heard` is first shifted by the
/// median of where each 0.5 s segment with speech in `sent` matches it best
/// (searched over all of `heard`, in the telephone band; matches of at least
/// 0.5 only), written beside it as `<stem>.aligned.wav`. Per segment, not one
/// long excerpt: a playout slip (20–80 ms, seen under load right after the
/// join) spoils any excerpt that spans it.
fn found_across(sent: &Path, heard: &Path) -> Matched {
    const SEG: usize = 4000;
    let narrow = |p: &Path| audio::read_mono(&spectrum::resample(p, 8000));
    let (s, h) = (narrow(sent), narrow(heard));
    let mut shifts: Vec<i64> = s
        .chunks_exact(SEG)
        .enumerate()
        .filter(|(_, seg)| audio::rms(seg) >= 100.0)
        .filter_map(|(i, seg)| {
            let (at, c) = spectrum::best_match(seg, &h);
            (c >= 0.5).then_some(at as i64 - (i * SEG) as i64)
        })
        .collect();
    shifts.sort_unstable();
    let shift = shifts.get(shifts.len() / 2).copied().unwrap_or(0);
    let skip = usize::try_from(shift.max(0)).unwrap_or(0).min(h.len());
    let pad = usize::try_from(-shift.min(0)).unwrap_or(0);
    let shifted: Vec<i16> = std::iter::repeat_n(0, pad).chain(h[skip..].iter().copied()).collect();
    let stem = heard.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let aligned = heard.with_file_name(format!("{stem}.aligned.wav"));
    spectrum::write_wav(&aligned, 8000, &shifted);
    found_in(sent, &aligned)
}

/// [`spectrum::band_ratio_db`] of a WAV at 16 kHz (resampled by sox when it is
/// not): what a 16 kHz recorder would hold of it.
fn ratio_at_16k(path: &Path) -> f64 {
    let (rate, _) = spectrum::read_wav(path);
    let p: PathBuf = if rate == 16_000 { path.to_path_buf() } else { spectrum::resample(path, 16_000) };
    spectrum::wav_band_ratio_db(&p)
}

/// The dump a phone left (`heard` or `sent`), or a panic with its log.
fn dump(phone: &Baresip, what: Option<PathBuf>) -> PathBuf {
    what.unwrap_or_else(|| panic!("baresip left no snd/ dump: {}", phone.log()))
}

/// A phone on `ip` playing `source`, quitting by itself after [`WAIT`].
fn phone<'a>(ip: &'a str, user: &'a str, auto_answer: bool, source: &'a Path) -> Phone<'a> {
    Phone { ip, user, auto_answer, source, max: WAIT }
}

/// Asserts that `phone` negotiated `codec` and nothing else: its encoder and the
/// first (only) audio format of the SDP it received.
fn assert_negotiated(phone: &Baresip, codec: Codec, who: &str) {
    assert_eq!(
        phone.encoder(),
        Some((codec.name().to_string(), codec.pcm_rate())),
        "{who} encodes with {codec:?}: {}",
        phone.log()
    );
    let sdp = phone.sdp_received().pop().unwrap_or_else(|| panic!("{who} received an SDP: {}", phone.log()));
    let formats = sdp_rtpmaps(&sdp);
    let audio: Vec<&(u8, String, String)> = formats.iter().filter(|f| !f.1.starts_with("telephone-event")).collect();
    assert!(
        audio.first().is_some_and(|f| f.1.eq_ignore_ascii_case(codec.rtpmap())),
        "{who} was sent {} first: {formats:?}",
        codec.rtpmap()
    );
    if codec == Codec::Opus {
        assert!(audio[0].2.contains("stereo=0"), "mono Opus: {formats:?}");
    }
}

mod harness {
    //! baresip ↔ baresip, no daemon: the peer and the spectral check, proven.

    use super::*;

    /// What one direct call left behind.
    struct Direct {
        caller: Baresip,
        callee: Baresip,
        chirp: PathBuf,
        speech: PathBuf,
        /// Dropped last, after the phones are stopped.
        _dir: tempfile::TempDir,
    }

    /// baresip on 127.0.0.2 plays the chirp to baresip on 127.0.0.3 (auto
    /// answer), which plays speech back; both offer and accept `codec` only. The
    /// caller hangs up when its file ends.
    fn direct_call(codec: Codec) -> Direct {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let chirp = spectrum::chirp(&dir, "chirp", 4.0, 300, 500);
        let speech = audio::espeak_at(&dir, "speech", "en", super::REPLY, 300, 3000, 16_000);
        let callee = Baresip::start_with(&dir, "callee", phone("127.0.0.3", "callee", true, &speech), &[codec]);
        let mut caller = Baresip::start_with(&dir, "caller", phone("127.0.0.2", "caller", false, &chirp), &[codec]);
        caller.dial(&callee.uri());
        assert!(caller.wait_event("CALL_ESTABLISHED", WAIT).is_some(), "answered: {}\n{}", caller.log(), callee.log());
        let closed = caller.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("ended: {}", caller.log()));
        assert_eq!(closed["param"], "end of file", "the caller's file ended the call: {}", caller.log());
        assert!(callee.wait_event("CALL_CLOSED", WAIT).is_some(), "the callee saw the BYE: {}", callee.log());
        Direct { caller, callee, chirp, speech, _dir: tmp }
    }

    /// The call's figures, printed; returns (chirp heard by the callee, speech
    /// heard by the caller) as band ratios in dB at 16 kHz.
    fn measure(codec: Codec, d: &Direct) -> (f64, f64) {
        assert_negotiated(&d.caller, codec, "the caller");
        assert_negotiated(&d.callee, codec, "the callee");
        let (callee_heard, caller_heard) = (dump(&d.callee, d.callee.heard()), dump(&d.caller, d.caller.heard()));
        for p in [&callee_heard, &caller_heard, &dump(&d.caller, d.caller.sent())] {
            assert_eq!(spectrum::read_wav(p).0, codec.pcm_rate(), "sndfile dumps at the codec's rate: {}", p.display());
        }
        let (chirp_src, speech_src) = (spectrum::wav_band_ratio_db(&d.chirp), spectrum::wav_band_ratio_db(&d.speech));
        let (chirp_heard, speech_heard) = (ratio_at_16k(&callee_heard), ratio_at_16k(&caller_heard));
        // Against what each side encoded (its source after baresip's own
        // resampler): what is left is the codec's doing.
        let chirp_found = found_in(&dump(&d.caller, d.caller.sent()), &callee_heard);
        let speech_found = found_in(&dump(&d.callee, d.callee.sent()), &caller_heard);
        eprintln!(
            "{codec:?}: energy 4.5-7.5 kHz / 0.3-3.4 kHz: chirp source {chirp_src:.1} dB, heard {chirp_heard:.1} dB; \
             speech source {speech_src:.1} dB, heard {speech_heard:.1} dB; chirp found {}; speech found {}",
            chirp_found.describe(),
            speech_found.describe()
        );
        assert!(chirp_src > -3.0 && speech_src > WIDEBAND_DB + 5.0, "the sources are wideband");
        assert!(chirp_found.is_found(), "the callee heard the chirp: {chirp_found:?}");
        assert!(speech_found.is_found(), "the caller heard the speech: {speech_found:?}");
        (chirp_heard, speech_heard)
    }

    #[test]
    fn a_g722_call_between_two_baresips_carries_energy_above_4_khz() {
        let d = direct_call(Codec::G722);
        let (chirp, speech) = measure(Codec::G722, &d);
        assert!(chirp > WIDEBAND_DB && speech > WIDEBAND_DB, "G.722 is wideband: {chirp:.1} dB, {speech:.1} dB");
    }

    #[test]
    fn an_opus_call_between_two_baresips_carries_energy_above_4_khz() {
        let d = direct_call(Codec::Opus);
        let (chirp, speech) = measure(Codec::Opus, &d);
        assert!(chirp > WIDEBAND_DB && speech > WIDEBAND_DB, "Opus is wideband: {chirp:.1} dB, {speech:.1} dB");
    }

    #[test]
    fn a_pcmu_call_between_two_baresips_carries_nothing_above_4_khz() {
        let d = direct_call(Codec::Pcmu);
        let (chirp, speech) = measure(Codec::Pcmu, &d);
        assert!(chirp < NARROWBAND_DB && speech < NARROWBAND_DB, "PCMU is narrowband: {chirp:.1} dB, {speech:.1} dB");
    }
}

mod product {
    //! The same peers against the box (the real daemon, tests/common/gateway.rs).
    //! Most scenarios run once per codec: the G.722 and Opus runs are wideband end
    //! to end, the PCMU runs of the same code keep narrowband narrowband (and
    //! prove the tests' own plumbing). (g) and (h) mix the two: a wideband call
    //! joined to a PCMU call, and G722/OPUS agent streams (also from a PCMU caller).

    use base64::Engine as _;
    use serde_json::{Value, json};

    use super::*;
    use common::agent::PyAgent;
    use common::gateway::{Gateway, Trunk, event_type, payload};

    const NUMBER: &str = "+13125550100";
    const CALLER: &str = "+14155550123";
    const TOKEN: &str = "wideband-token-0123456789";

    /// What a leg of `codec` must carry above 4 kHz: wideband for G.722 and Opus.
    fn assert_band(codec: Codec, ratio_db: f64, what: &str) {
        match codec {
            Codec::G722 | Codec::Opus => {
                assert!(ratio_db > WIDEBAND_DB, "{what} ({codec:?}) is wideband: {ratio_db:.1} dB")
            }
            Codec::Pcmu | Codec::Pcma => {
                assert!(ratio_db < NARROWBAND_DB, "{what} ({codec:?}) is narrowband: {ratio_db:.1} dB")
            }
        }
    }

    /// The trunk's `codecs` for a leg of `codec`: that codec first, then PCMU.
    fn codecs(codec: Codec) -> &'static str {
        match codec {
            Codec::G722 => "codecs = [\"G722\", \"PCMU\"]",
            Codec::Opus => "codecs = [\"OPUS\", \"PCMU\"]",
            Codec::Pcmu => "codecs = [\"PCMU\"]",
            Codec::Pcma => "codecs = [\"PCMA\"]",
        }
    }

    /// The box: the carrier trunk (calls from 127.0.0.2 only, `codecs` for
    /// `codec`), then `blocks` (agents, routes, more trunks), recording (dual),
    /// signed webhooks, the API.
    fn gateway(dir: &Path, codec: Codec, carrier: Trunk, blocks: &str) -> Gateway {
        Gateway::builder(dir)
            .trunk(carrier.extra(codecs(codec)))
            .blocks(blocks)
            .recording("channels = \"dual\"")
            .webhooks("")
            .api(TOKEN)
            .log_level("debug")
            .start()
    }

    /// The carrier trunk of inbound calls: baresip on 127.0.0.2.
    fn carrier() -> Trunk {
        Trunk::new("carrier").provider("telnyx").allow("127.0.0.2/32").number(NUMBER)
    }

    /// The caller's sentence at 16 kHz, with room for the echo after it.
    fn sentence(dir: &Path) -> PathBuf {
        audio::espeak_at(dir, "sentence", "en", SENTENCE, 300, 1500, 16_000)
    }

    /// baresip on 127.0.0.2 (only `codec`) calls the box's number playing
    /// `source`; returns once its file has ended the call.
    fn call_in(dir: &Path, gw: &Gateway, codec: Codec, source: &Path) -> Baresip {
        let mut phone = Baresip::start_with(dir, "caller", phone("127.0.0.2", CALLER, false, source), &[codec]);
        phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{}", gw.sip_port));
        assert!(
            phone.wait_event("CALL_ESTABLISHED", WAIT).is_some(),
            "the box answered: {}\n{}",
            phone.log(),
            gw.stderr()
        );
        let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("call ended: {}", phone.log()));
        assert_eq!(
            closed["param"],
            "end of file",
            "the caller's file ended the call: {}\n{}",
            phone.log(),
            gw.stderr()
        );
        phone
    }

    /// The phone heard its own audio back (the echo of what it encoded, within
    /// 1 s), with energy above 4 kHz when `codec` is wideband; returns the ratio.
    fn assert_heard_back(phone: &Baresip, codec: Codec, what: &str) -> f64 {
        let heard = dump(phone, phone.heard());
        let found = found_in(&dump(phone, phone.sent()), &heard);
        let ratio = ratio_at_16k(&heard);
        eprintln!("{what} ({codec:?}): heard back {}, {ratio:.1} dB above 4 kHz", found.describe());
        assert!(found.is_found(), "{what}: the caller heard itself back: {found:?}");
        ratio
    }

    /// The agent's one connection, free of protocol errors, with its stream's
    /// `media_format` `encoding` at 16000 Hz, mono.
    fn connection(agent: &PyAgent, encoding: &str) -> Value {
        let conns = agent.wait_connections(1, WAIT);
        assert_eq!(conns.len(), 1, "one stream: {conns:?}");
        let c = conns[0].clone();
        assert_eq!(c["protocol_errors"], json!([]), "{}", c["protocol_errors"]);
        assert_eq!(
            c["summary"]["media_format"],
            json!({"encoding": encoding, "sample_rate": 16000, "channels": 1}),
            "{}",
            c["summary"]
        );
        c
    }

    /// The `inbound` audio an L16 agent received (base64 of big-endian 16-bit
    /// PCM, RFC 2586), written as `dir/<name>.wav` at 16 kHz.
    fn l16_inbound(c: &Value, dir: &Path, name: &str) -> PathBuf {
        let b64 = base64::engine::general_purpose::STANDARD;
        let pcm: Vec<i16> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["event"] == "media" && m["media"]["track"] == "inbound")
            .filter_map(|m| b64.decode(m["media"]["payload"].as_str()?).ok())
            .flat_map(|bytes| bytes.chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]])).collect::<Vec<_>>())
            .collect();
        let path = dir.join(format!("{name}.wav"));
        spectrum::write_wav(&path, 16_000, &pcm);
        path
    }

    /// The agent received the caller's audio at 16 kHz, with energy above 4 kHz
    /// when `codec` is wideband (never through 8 kHz).
    fn assert_agent_heard(c: &Value, phone: &Baresip, codec: Codec, dir: &Path) {
        let got = l16_inbound(c, dir, "agent-inbound");
        let found = found_in(&dump(phone, phone.sent()), &got);
        let ratio = spectrum::wav_band_ratio_db(&got);
        eprintln!("{codec:?}: the L16/16000 agent got the caller {}, {ratio:.1} dB above 4 kHz", found.describe());
        assert!(found.is_found(), "the agent got the caller's audio: {found:?}");
        assert_band(codec, ratio, "what the agent received");
    }

    // -----------------------------------------------------------------------
    // (a) baresip → the box → the built-in echo agent

    fn echo(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(
            dir.path(),
            codec,
            carrier(),
            "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\ntrunk = \"carrier\"\nagent = \"echo\"\n",
        );
        let phone = call_in(dir.path(), &gw, codec, &sentence(dir.path()));
        assert_negotiated(&phone, codec, "the caller");
        let ratio = assert_heard_back(&phone, codec, "echo agent");
        assert_band(codec, ratio, "the echo the caller heard");
        gw.stop();
    }

    #[test]
    fn a_g722_caller_hears_the_echo_agent_in_wideband() {
        echo(Codec::G722);
    }

    #[test]
    fn an_opus_caller_hears_the_echo_agent_in_wideband() {
        echo(Codec::Opus);
    }

    #[test]
    fn a_pcmu_caller_hears_the_echo_agent_in_narrowband() {
        echo(Codec::Pcmu);
    }

    // -----------------------------------------------------------------------
    // (b) baresip → the box → a Python agent with L16/16000

    fn l16_agent(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
        let blocks = format!(
            "[[agent]]\nname = \"bot\"\nurl = \"{}\"\nencoding = \"L16\"\nsample_rate = 16000\n\
             [[route]]\ntrunk = \"carrier\"\nagent = \"bot\"\n",
            agent.url("/wideband")
        );
        let gw = gateway(dir.path(), codec, carrier(), &blocks);
        let phone = call_in(dir.path(), &gw, codec, &sentence(dir.path()));
        assert_negotiated(&phone, codec, "the caller");
        let c = connection(&agent, "L16");
        assert_agent_heard(&c, &phone, codec, dir.path());
        // The agent echoes its 16 kHz audio: the caller hears it in its codec.
        let ratio = assert_heard_back(&phone, codec, "L16/16000 agent");
        assert_band(codec, ratio, "the agent's echo the caller heard");
        gw.stop();
    }

    #[test]
    fn a_g722_caller_reaches_an_l16_16000_agent_in_wideband() {
        l16_agent(Codec::G722);
    }

    #[test]
    fn an_opus_caller_reaches_an_l16_16000_agent_in_wideband() {
        l16_agent(Codec::Opus);
    }

    #[test]
    fn a_pcmu_caller_reaches_an_l16_16000_agent_in_narrowband() {
        l16_agent(Codec::Pcmu);
    }

    // -----------------------------------------------------------------------
    // (c) baresip → the box → forwarded to a G.711-only SIPp UAS (echoing RTP)

    /// The audio formats of the SDP in the first message of a SIPp trace that
    /// starts with `first_line`.
    fn sipp_sdp(trace: &str, first_line: &str) -> Vec<(u8, String, String)> {
        trace
            .split("----------------------------------------------")
            .find_map(|m| m.find(first_line).map(|at| sdp_rtpmaps(&m[at..])))
            .unwrap_or_default()
    }

    async fn forward_to_g711(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let pstn_port = common::free_port();
        let blocks = format!(
            "[[trunk]]\nname = \"pstn\"\nproxy = \"sip:127.0.0.3:{pstn_port}\"\ncodecs = [\"PCMU\"]\n\
             [[route]]\nname = \"to the pstn\"\ntrunk = \"carrier\"\nto = \"{NUMBER}\"\nforward = \"pstn\"\nrecord = true\n"
        );
        let gw = gateway(dir.path(), codec, carrier(), &blocks);
        let mut pstn = common::sipp_uas(dir.path(), "pstn", "uas_answer.xml", pstn_port, true);
        let phone = call_in(dir.path(), &gw, codec, &sentence(dir.path()));
        let code = pstn.wait(WAIT);
        assert_eq!(code, 0, "the G.711 side got INVITE, ACK and the box's BYE: {}\n{}", pstn.report(), gw.stderr());
        assert_negotiated(&phone, codec, "the caller");
        let offered = sipp_sdp(&pstn.messages(), "INVITE sip:");
        assert!(
            !offered.is_empty()
                && offered.iter().all(|f| ["PCMU/8000", "telephone-event/8000"].contains(&f.1.as_str())),
            "the G.711-only trunk was offered PCMU only: {offered:?}"
        );
        // The caller hears itself through the box, the G.711 leg and back: both
        // directions carry audio (transcoded when the caller's codec is not PCMU).
        let ratio = assert_heard_back(&phone, codec, "forwarded to G.711");
        if codec == Codec::Pcmu {
            assert_band(codec, ratio, "the echo through the G.711 leg");
        }
        // The forwarded call's recording: 16 kHz when the caller is wideband.
        assert_caller_recorded(&gw, dir.path(), &phone, codec, "the forwarded call").await;
        gw.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_g722_call_forwarded_to_a_g711_only_carrier_is_transcoded_both_ways() {
        forward_to_g711(Codec::G722).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opus_call_forwarded_to_a_g711_only_carrier_is_transcoded_both_ways() {
        forward_to_g711(Codec::Opus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pcmu_call_forwarded_to_a_g711_only_carrier_flows_both_ways() {
        forward_to_g711(Codec::Pcmu).await;
    }

    // -----------------------------------------------------------------------
    // (d) the box calls baresip (POST /v2/calls), streamed to an L16/16000 agent

    async fn call_out(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let source = sentence(dir.path());
        let phone = Baresip::start_with(dir.path(), "callee", phone("127.0.0.2", CALLER, true, &source), &[codec]);
        let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
        let trunk = Trunk::new("carrier").provider("telnyx").proxy(&format!("sip:127.0.0.2:{}", phone.sip_port));
        let gw = gateway(dir.path(), codec, trunk.number(NUMBER), "");
        let (code, created) = gw
            .api()
            .post(
                "/v2/calls",
                json!({
                    "connection_id": "carrier",
                    "to": CALLER,
                    "from": NUMBER,
                    "timeout_secs": 20,
                    "stream_url": agent.url("/outbound"),
                    "stream_track": "inbound_track",
                    "stream_bidirectional_mode": "rtp",
                    "stream_bidirectional_codec": "L16",
                    "stream_bidirectional_sampling_rate": 16000,
                }),
            )
            .await;
        assert_eq!(code, 200, "{created}");
        let answered = phone.wait_event("CALL_ESTABLISHED", WAIT);
        assert!(answered.is_some(), "baresip answered: {}\n{}", phone.log(), gw.stderr());
        // baresip hangs up when its file ends.
        let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("call ended: {}", phone.log()));
        assert_eq!(closed["param"], "end of file", "{}", phone.log());
        assert_negotiated(&phone, codec, "the callee");
        let offer = phone.sdp_received().into_iter().next().expect("the box's offer");
        let first = sdp_rtpmaps(&offer).into_iter().next();
        assert!(
            first.as_ref().is_some_and(|f| f.1.eq_ignore_ascii_case(codec.rtpmap())),
            "the box offered the trunk's first codec first: {offer}"
        );
        let c = connection(&agent, "L16");
        assert_eq!(c["path"], "/outbound");
        assert_agent_heard(&c, &phone, codec, dir.path());
        let ratio = assert_heard_back(&phone, codec, "called by the box");
        assert_band(codec, ratio, "the agent's echo the callee heard");
        gw.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_box_calls_a_g722_phone_in_wideband() {
        call_out(Codec::G722).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_box_calls_an_opus_phone_in_wideband() {
        call_out(Codec::Opus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_box_calls_a_pcmu_phone_in_narrowband() {
        call_out(Codec::Pcmu).await;
    }

    // -----------------------------------------------------------------------
    // (f) audio the box plays itself: a 16 kHz file and espeak-ng speech

    async fn box_audio(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        // `[media] dir` is the test's directory: the prompt is `prompt.wav` there.
        let prompt = spectrum::chirp(dir.path(), "prompt", 2.0, 0, 0);
        let quiet = dir.path().join("quiet.wav");
        spectrum::write_wav(&quiet, 16_000, &vec![0; 16_000 * 30]);
        let blocks = format!(
            "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\ntrunk = \"carrier\"\nagent = \"echo\"\n\
             [media]\ndir = \"{}\"\n[tts]\nengine = \"espeak-ng\"\ncache_dir = \"{}\"\n",
            dir.path().display(),
            dir.path().join("tts").display()
        );
        let gw = gateway(dir.path(), codec, carrier(), &blocks);
        let mut phone = Baresip::start_with(dir.path(), "caller", phone("127.0.0.2", CALLER, false, &quiet), &[codec]);
        phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{}", gw.sip_port));
        assert!(phone.wait_event("CALL_ESTABLISHED", WAIT).is_some(), "answered: {}\n{}", phone.log(), gw.stderr());
        let api = gw.api();
        let calls = api
            .wait_for("/v2/calls", "the call answered", |b| {
                b["data"].as_array().is_some_and(|a| a.len() == 1 && a[0]["state"] == "answered")
            })
            .await;
        let id = calls["data"][0]["call_control_id"].as_str().unwrap().to_string();
        let ended = |kind: &'static str| {
            move |b: &[Value]| b.iter().any(|x| event_type(x) == kind && payload(x)["call_control_id"].is_string())
        };
        let (code, body) = api.action(&id, "playback_start", r#"{"audio_url": "prompt.wav"}"#).await;
        assert_eq!(code, 200, "{body}");
        gw.events("call.playback.ended", ended("call.playback.ended")).await;
        let (code, body) = api.action(&id, "speak", &json!({"payload": SENTENCE}).to_string()).await;
        assert_eq!(code, 200, "{body}");
        gw.events("call.speak.ended", ended("call.speak.ended")).await;
        let (code, body) = api.action(&id, "hangup", "{}").await;
        assert_eq!(code, 200, "{body}");
        assert!(phone.wait_event("CALL_CLOSED", WAIT).is_some(), "the box hung up: {}", phone.log());
        assert_negotiated(&phone, codec, "the caller");

        // Where the prompt is in what the caller heard (a 0.5 s piece of its
        // middle, found in the telephone band), then the band above 4 kHz of the
        // prompt and of the speech after it, each at 16 kHz.
        let heard = dump(&phone, phone.heard());
        let (heard8, prompt8) =
            (audio::read_mono(&spectrum::resample(&heard, 8000)), audio::read_mono(&spectrum::resample(&prompt, 8000)));
        let (k, c) = spectrum::best_match(&prompt8[4000..8000], &heard8);
        assert!(c >= 0.5, "{codec:?}: the caller heard the prompt (best correlation {c:.2})");
        let start16 = 2 * k.saturating_sub(4000);
        let (rate, _) = spectrum::read_wav(&heard);
        let heard16 = if rate == 16_000 { heard.clone() } else { spectrum::resample(&heard, 16_000) };
        let (_, heard16) = spectrum::read_wav(&heard16);
        let prompt_part = &heard16[start16.min(heard16.len())..(start16 + 32_000).min(heard16.len())];
        let speech_part = &heard16[(start16 + 36_000).min(heard16.len())..];
        assert!(audio::rms(speech_part) > 100.0, "{codec:?}: the caller heard the speech after the prompt");
        let (prompt_db, speech_db) =
            (spectrum::band_ratio_db(prompt_part, 16_000), spectrum::band_ratio_db(speech_part, 16_000));
        eprintln!(
            "{codec:?}: the box's own audio: the 16 kHz prompt heard {prompt_db:.1} dB above 4 kHz (correlation \
             {c:.2}), espeak-ng speech {speech_db:.1} dB"
        );
        assert_band(codec, prompt_db, "the 16 kHz prompt the caller heard");
        assert_band(codec, speech_db, "the speech the caller heard");
        gw.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_g722_caller_hears_16_khz_playback_and_speech_in_wideband() {
        box_audio(Codec::G722).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opus_caller_hears_16_khz_playback_and_speech_in_wideband() {
        box_audio(Codec::Opus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pcmu_caller_hears_playback_and_speech_in_narrowband() {
        box_audio(Codec::Pcmu).await;
    }

    // -----------------------------------------------------------------------
    // (e) recordings: 16 kHz with energy above 4 kHz when a party is wideband

    async fn recording(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(
            dir.path(),
            codec,
            carrier(),
            "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n\
             [[route]]\ntrunk = \"carrier\"\nagent = \"echo\"\nrecord = true\n",
        );
        let phone = call_in(dir.path(), &gw, codec, &sentence(dir.path()));
        assert_caller_recorded(&gw, dir.path(), &phone, codec, "the echo call").await;
        gw.stop();
    }

    /// The call's `call.recording.saved` file: dual channel, 16 kHz when the
    /// caller is wideband (8 kHz otherwise), the caller's speech on the left with
    /// the band the caller sent.
    async fn assert_caller_recorded(gw: &Gateway, dir: &Path, phone: &Baresip, codec: Codec, what: &str) {
        let bodies =
            gw.events("call.recording.saved", |b| b.iter().any(|x| event_type(x) == "call.recording.saved")).await;
        let saved = payload(bodies.iter().find(|b| event_type(b) == "call.recording.saved").unwrap()).clone();
        let path = PathBuf::from(saved["file_path"].as_str().expect("file_path"));
        let (spec, left, _) = audio::read_stereo(&path);
        let rate = if matches!(codec, Codec::G722 | Codec::Opus) { 16_000 } else { 8000 };
        assert_eq!((spec.channels, spec.sample_rate), (2, rate), "{what}, {codec:?}: {saved}");
        let left_wav = dir.join("recorded-caller.wav");
        spectrum::write_wav(&left_wav, spec.sample_rate, &left);
        let found = found_in(&dump(phone, phone.sent()), &left_wav);
        let ratio = ratio_at_16k(&left_wav);
        eprintln!(
            "{what} ({codec:?}): recording at {} Hz, the caller on the left {}, {ratio:.1} dB above 4 kHz",
            spec.sample_rate,
            found.describe()
        );
        assert!(found.is_found(), "{what}: the caller is on the left: {found:?}");
        assert_band(codec, ratio, "the recording's caller channel");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_g722_calls_recording_is_16_khz_with_energy_above_4_khz() {
        recording(Codec::G722).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opus_calls_recording_is_16_khz_with_energy_above_4_khz() {
        recording(Codec::Opus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pcmu_calls_recording_is_8_khz_with_nothing_above_4_khz() {
        recording(Codec::Pcmu).await;
    }

    // -----------------------------------------------------------------------
    // (g) a wideband call joined to a PCMU-only call: `bridge` and `transfer`

    /// The second phone's number, and the box's number it calls.
    const NARROW_CALLER: &str = "+14155550124";
    const OFFICE_NUMBER: &str = "+13125550101";

    /// The second phone's trunk: calls from 127.0.0.3, PCMU only.
    const OFFICE: &str = "[[trunk]]\nname = \"office\"\nprovider = \"telnyx\"\ninbound_allow = [\"127.0.0.3/32\"]\n\
                          numbers = [\"+13125550101\"]\ncodecs = [\"PCMU\"]\n";

    /// Stops the box and checks its log: no panic, no ERROR; WARN lines, and
    /// the media engine's own account of audio it dropped or re-timed, printed.
    fn stop_clean(gw: Gateway, what: &str) {
        let log = gw.stop();
        let noted = ["audio dropped", "schedule moved"];
        for line in log.lines().filter(|l| l.contains(" WARN ") || noted.iter().any(|n| l.contains(n))) {
            eprintln!("{what}: the box: {line}");
        }
        let bad: Vec<&str> = log.lines().filter(|l| l.contains("panicked") || l.contains(" ERROR ")).collect();
        assert!(bad.is_empty(), "{what}: the box's log: {bad:#?}");
    }

    /// The PCMU phone's sentence: as long as [`SENTENCE`] (10 voiced half
    /// seconds), so that a segment spoilt by a slip of the wideband phone's
    /// playout (20–80 ms: in a third of the idle Opus runs, in most runs under
    /// load; the segment across it correlates 0.5–0.9) leaves 9 of 10 found.
    const ANSWER: &str = "Yes, she sells sixty six thick socks and silver spoons.";

    /// How the two calls come together.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Join {
        /// Both phones call in (on the built-in echo); `bridge` on the PCMU call.
        Bridge,
        /// The PCMU phone calls in (on the echo); `transfer` dials the wideband phone.
        Transfer,
    }

    /// `count` webhooks of `kind` among `data` (webhook bodies' `data`).
    fn count(data: &[Value], kind: &str) -> usize {
        data.iter().filter(|d| d["event_type"] == kind).count()
    }

    /// A wideband phone (127.0.0.2, `wide` only) and a PCMU phone (127.0.0.3,
    /// trunk `office`) joined by `join`. Both play silence until `call.bridged`
    /// has come for both calls, then each its own speech (padded to one length,
    /// so that neither's end cuts the other short): each hears the other's,
    /// through a room that mixes at 16 kHz and gives each leg its own codec.
    async fn wide_to_narrow(wide: Codec, join: Join) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let quiet = d.join("quiet.wav");
        spectrum::write_wav(&quiet, 16_000, &vec![0; 16_000 * 30]);
        let wide_talk = audio::espeak_at(d, "talk-wide", "en", SENTENCE, 300, 1500, 16_000);
        let narrow_talk = audio::espeak_at(d, "talk-narrow", "en", ANSWER, 300, 1500, 16_000);
        let (_, mut pcm) = spectrum::read_wav(&narrow_talk);
        pcm.resize(pcm.len().max(spectrum::read_wav(&wide_talk).1.len()), 0);
        spectrum::write_wav(&narrow_talk, 16_000, &pcm);

        let transfer = join == Join::Transfer;
        let mut wb = Baresip::start_with(d, "wide", phone("127.0.0.2", CALLER, transfer, &quiet), &[wide]);
        let carrier = if transfer {
            Trunk::new("carrier").provider("telnyx").proxy(&format!("sip:127.0.0.2:{}", wb.sip_port)).number(NUMBER)
        } else {
            carrier()
        };
        let echo = "[[agent]]\nname = \"echo\"\nurl = \"builtin:echo\"\n[[route]]\nagent = \"echo\"\n";
        let gw = gateway(d, wide, carrier, &format!("{OFFICE}{echo}"));
        let mut nb = Baresip::start_with(d, "narrow", phone("127.0.0.3", NARROW_CALLER, false, &quiet), &[Codec::Pcmu]);
        nb.dial(&format!("sip:{OFFICE_NUMBER}@127.0.0.1:{}", gw.sip_port));
        if !transfer {
            wb.dial(&format!("sip:{NUMBER}@127.0.0.1:{}", gw.sip_port));
        }
        let inbound = if transfer { 1 } else { 2 };
        let data = gw.event_data("the calls in answered", |d| count(d, "call.answered") == inbound).await;
        let id_of = |from: &str| {
            let answered = data.iter().find(|d| d["event_type"] == "call.answered" && d["payload"]["from"] == from);
            answered.unwrap_or_else(|| panic!("call.answered from {from}: {data:?}"))["payload"]["call_control_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let nb_id = id_of(NARROW_CALLER);
        let api = gw.api();
        let (code, body) = if transfer {
            let to = json!({"to": CALLER, "connection_id": "carrier", "timeout_secs": 20});
            api.action(&nb_id, "transfer", &to.to_string()).await
        } else {
            api.action(&nb_id, "bridge", &json!({"call_control_id": id_of(CALLER)}).to_string()).await
        };
        assert_eq!(code, 200, "{join:?}: {body}");
        let data = gw.event_data("call.bridged on both", |d| count(d, "call.bridged") == 2).await;
        let bridged: Vec<(&str, &str)> = data
            .iter()
            .filter(|d| d["event_type"] == "call.bridged")
            .filter_map(|d| {
                Some((d["payload"]["call_control_id"].as_str()?, d["payload"]["bridged_call_control_id"].as_str()?))
            })
            .collect();
        let wb_id = bridged.iter().find(|b| b.0 != nb_id).map(|b| b.0).unwrap_or_default();
        assert!(
            bridged.len() == 2
                && bridged.contains(&(nb_id.as_str(), wb_id))
                && bridged.contains(&(wb_id, nb_id.as_str())),
            "call.bridged names the other call on both: {bridged:?}"
        );
        if transfer {
            assert!(wb.wait_event("CALL_ESTABLISHED", WAIT).is_some(), "the new leg: {}", wb.log());
        }

        wb.play(&wide_talk);
        nb.play(&narrow_talk);
        // The first file to end hangs its call up; the box then ends the other.
        for p in [&wb, &nb] {
            assert!(p.wait_event("CALL_CLOSED", WAIT).is_some(), "{join:?}: ended: {}\n{}", p.log(), gw.stderr());
        }
        assert_negotiated(&wb, wide, "the wideband phone");
        assert_negotiated(&nb, Codec::Pcmu, "the PCMU phone");
        let (wb_heard, nb_heard) = (dump(&wb, wb.heard()), dump(&nb, nb.heard()));
        let narrow_got_wide = found_across(&dump(&wb, wb.sent()), &nb_heard);
        let wide_got_narrow = found_across(&dump(&nb, nb.sent()), &wb_heard);
        let wide_got_itself = found_in(&dump(&wb, wb.sent()), &wb_heard);
        let (nb_ratio, wb_ratio) = (ratio_at_16k(&nb_heard), ratio_at_16k(&wb_heard));
        eprintln!(
            "{join:?} {wide:?} and PCMU: the PCMU phone heard the {wide:?} phone {}, {nb_ratio:.1} dB above 4 kHz; \
             the {wide:?} phone heard the PCMU phone {}, {wb_ratio:.1} dB, itself {}",
            narrow_got_wide.describe(),
            wide_got_narrow.describe(),
            wide_got_itself.describe()
        );
        assert!(narrow_got_wide.is_found(), "{join:?}: the PCMU phone heard the {wide:?} phone: {narrow_got_wide:?}");
        assert!(wide_got_narrow.is_found(), "{join:?}: the {wide:?} phone heard the PCMU phone: {wide_got_narrow:?}");
        assert!(wide_got_itself.found() * 2 < wide_got_itself.voiced, "no echo of itself: {wide_got_itself:?}");
        assert_band(Codec::Pcmu, nb_ratio, "what the PCMU phone heard");
        // What the wideband phone heard of the PCMU phone is printed, not judged:
        // about −61 dB above 4 kHz, but up to −44 dB when its playout slipped
        // 20–40 ms (the click of the splice), which happens in some runs.
        stop_clean(gw, &format!("{join:?} {wide:?}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_g722_call_bridged_to_a_pcmu_call_is_transcoded_both_ways() {
        wide_to_narrow(Codec::G722, Join::Bridge).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opus_call_bridged_to_a_pcmu_call_is_transcoded_both_ways() {
        wide_to_narrow(Codec::Opus, Join::Bridge).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pcmu_call_transferred_to_an_opus_phone_is_transcoded_both_ways() {
        wide_to_narrow(Codec::Opus, Join::Transfer).await;
    }

    // -----------------------------------------------------------------------
    // (h) G722 and OPUS agent streams with a real agent (echoing each packet)

    /// The `inbound` media payloads the agent received, one codec packet each.
    fn inbound_packets(c: &Value) -> Vec<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["event"] == "media" && m["media"]["track"] == "inbound")
            .filter_map(|m| b64.decode(m["media"]["payload"].as_str()?).ok())
            .collect()
    }

    /// ffmpeg decodes `input` (demuxer `format`) to a mono 16 kHz WAV beside it.
    fn ffmpeg_decode(input: &Path, format: &str) -> PathBuf {
        let out = input.with_extension("wav");
        let run = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", format, "-i"])
            .arg(input)
            .args(["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"])
            .arg(&out)
            .output()
            .expect("ffmpeg is installed (scripts/setup-tests)");
        assert!(run.status.success(), "ffmpeg {}: {}", input.display(), String::from_utf8_lossy(&run.stderr));
        out
    }

    /// Ogg's CRC-32 (RFC 3533 §6: polynomial 0x04c11db7, not reflected, from 0).
    fn ogg_crc(data: &[u8]) -> u32 {
        data.iter().fold(0u32, |mut crc, &b| {
            crc ^= u32::from(b) << 24;
            for _ in 0..8 {
                crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
            }
            crc
        })
    }

    /// One Ogg page (RFC 3533 §6) holding `packet` whole, appended to `out`.
    fn ogg_page(out: &mut Vec<u8>, flags: u8, granule: u64, seq: u32, packet: &[u8]) {
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        assert!(lacing.len() <= 255, "a packet of {} bytes fits one page", packet.len());
        let mut page = b"OggS\0".to_vec();
        page.push(flags);
        page.extend(granule.to_le_bytes());
        page.extend(0x5742_u32.to_le_bytes()); // the stream's serial number
        page.extend(seq.to_le_bytes());
        page.extend([0; 4]); // the CRC, computed with this field zero
        page.push(lacing.len() as u8);
        page.extend(&lacing);
        page.extend(packet);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        out.extend(page);
    }

    /// Samples at 48 kHz in an Opus packet, from its TOC byte (RFC 6716 §3.1).
    fn opus_samples(packet: &[u8]) -> u64 {
        let Some(&toc) = packet.first() else { return 0 };
        let config = usize::from(toc >> 3);
        let frame = match config {
            0..=11 => [480, 960, 1920, 2880][config % 4], // SILK: 10, 20, 40, 60 ms
            12..=15 => [480, 960][config % 2],            // hybrid: 10, 20 ms
            _ => [120, 240, 480, 960][config % 4],        // CELT: 2.5, 5, 10, 20 ms
        };
        let frames = match toc & 3 {
            0 => 1,
            1 | 2 => 2,
            _ => packet.get(1).map_or(0, |b| u64::from(b & 0x3f)),
        };
        frame * frames
    }

    /// Opus packets as an Ogg Opus file (RFC 7845: `OpusHead`, mono, input
    /// rate 16000, no pre-skip; `OpusTags`; one packet a page), decoded by ffmpeg.
    fn decode_opus(packets: &[Vec<u8>], dir: &Path, name: &str) -> PathBuf {
        let mut ogg = Vec::new();
        let mut head = b"OpusHead\x01\x01".to_vec();
        head.extend(0u16.to_le_bytes()); // pre-skip
        head.extend(16_000u32.to_le_bytes());
        head.extend([0, 0, 0]); // output gain, mapping family 0
        ogg_page(&mut ogg, 0x02, 0, 0, &head);
        let mut tags = b"OpusTags".to_vec();
        tags.extend(8u32.to_le_bytes());
        tags.extend(b"wideband");
        tags.extend(0u32.to_le_bytes());
        ogg_page(&mut ogg, 0, 0, 1, &tags);
        let mut granule = 0;
        for (k, p) in packets.iter().enumerate() {
            granule += opus_samples(p);
            let last = if k + 1 == packets.len() { 0x04 } else { 0 };
            ogg_page(&mut ogg, last, granule, 2 + k as u32, p);
        }
        let path = dir.join(format!("{name}.opus"));
        std::fs::write(&path, ogg).unwrap();
        ffmpeg_decode(&path, "ogg")
    }

    /// baresip on `caller` reaches an echoing agent whose stream is `encoding`
    /// (`"G722"` or `"OPUS"`) at 16000 Hz: the agent gets whole codec packets
    /// (G.722: 160 bytes a 20 ms), which decode to the caller's speech, wideband
    /// when the caller is; the caller hears itself back through the agent.
    fn coded_agent(caller: Codec, encoding: &str) {
        let dir = tempfile::tempdir().unwrap();
        let agent = PyAgent::start(dir.path(), "agent", "echo", &[]);
        let blocks = format!(
            "[[agent]]\nname = \"bot\"\nurl = \"{}\"\nencoding = \"{encoding}\"\nsample_rate = 16000\n\
             [[route]]\ntrunk = \"carrier\"\nagent = \"bot\"\n",
            agent.url("/coded")
        );
        let gw = gateway(dir.path(), caller, carrier(), &blocks);
        let phone = call_in(dir.path(), &gw, caller, &sentence(dir.path()));
        assert_negotiated(&phone, caller, "the caller");
        let c = connection(&agent, encoding);
        let packets = inbound_packets(&c);
        assert!(packets.len() > 100, "{encoding}: packets came ({})", packets.len());
        // One whole packet per message: 20 ms of G.722 (160 bytes), or an Opus
        // packet of 2.5 to 120 ms by its TOC byte (RFC 6716 §3.1, §3.2.5).
        let whole =
            |p: &Vec<u8>| if encoding == "G722" { p.len() == 160 } else { (120..=5760).contains(&opus_samples(p)) };
        assert!(
            packets.iter().all(whole),
            "{encoding}: whole packets: {:?}",
            packets.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let got = if encoding == "G722" {
            let raw = dir.path().join("agent-inbound.g722");
            std::fs::write(&raw, packets.concat()).unwrap();
            ffmpeg_decode(&raw, "g722")
        } else {
            decode_opus(&packets, dir.path(), "agent-inbound")
        };
        let found = found_in(&dump(&phone, phone.sent()), &got);
        let ratio = spectrum::wav_band_ratio_db(&got);
        let sizes = (packets.iter().map(Vec::len).min(), packets.iter().map(Vec::len).max());
        eprintln!(
            "{caller:?} caller, {encoding} agent: {} packets of {sizes:?} bytes, decoded: the caller {}, {ratio:.1} dB \
             above 4 kHz",
            packets.len(),
            found.describe()
        );
        assert!(found.is_found(), "{encoding}: the agent's packets hold the caller's speech: {found:?}");
        assert_band(caller, ratio, "what the agent received");
        let ratio = assert_heard_back(&phone, caller, &format!("{encoding} agent"));
        assert_band(caller, ratio, "the agent's echo the caller heard");
        stop_clean(gw, &format!("{caller:?} to {encoding}"));
    }

    #[test]
    fn a_g722_caller_reaches_a_g722_agent_in_wideband() {
        coded_agent(Codec::G722, "G722");
    }

    #[test]
    fn an_opus_caller_reaches_an_opus_agent_in_wideband() {
        coded_agent(Codec::Opus, "OPUS");
    }

    #[test]
    fn a_pcmu_caller_reaches_a_g722_agent_in_narrowband() {
        coded_agent(Codec::Pcmu, "G722");
    }

    // -----------------------------------------------------------------------
    // (i) a conference's own recording: 16 kHz when the room is wideband

    async fn conference_recording(codec: Codec) {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path(), codec, carrier(), "[[route]]\ntrunk = \"carrier\"\nroom = \"wide\"\n");
        // The speech starts 3 s in: after the recording has started.
        let source = audio::espeak_at(dir.path(), "sentence", "en", SENTENCE, 3000, 1500, 16_000);
        let mut phone = Baresip::start_with(dir.path(), "caller", phone("127.0.0.2", CALLER, false, &source), &[codec]);
        phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{}", gw.sip_port));
        let joined = gw
            .events("conference.participant.joined", |b| {
                b.iter().any(|x| event_type(x) == "conference.participant.joined")
            })
            .await;
        let conference_id = joined
            .iter()
            .find(|x| event_type(x) == "conference.participant.joined")
            .map(|x| payload(x)["conference_id"].as_str().unwrap().to_string())
            .unwrap();
        let rec = format!("/v2/conferences/{conference_id}/actions/record_start");
        let (code, body) = gw.api().post(&rec, json!({"format": "wav"})).await;
        assert_eq!(code, 200, "{body}");
        let closed = phone.wait_event("CALL_CLOSED", WAIT).unwrap_or_else(|| panic!("call ended: {}", phone.log()));
        assert_eq!(closed["param"], "end of file", "{}\n{}", phone.log(), gw.stderr());
        let bodies = gw
            .events("conference.recording.saved", |b| b.iter().any(|x| event_type(x) == "conference.recording.saved"))
            .await;
        let saved = payload(bodies.iter().find(|b| event_type(b) == "conference.recording.saved").unwrap()).clone();
        let path = PathBuf::from(saved["file_path"].as_str().expect("file_path"));
        let (rate, _) = spectrum::read_wav(&path);
        let wide = matches!(codec, Codec::G722 | Codec::Opus);
        assert_eq!(rate, if wide { 16_000 } else { 8000 }, "{codec:?}: {saved}");
        // The recording starts when the API asks, not with the call: each voiced
        // 0.5 s of what the caller sent is searched for anywhere in it.
        let (sent8, rec8) = (
            audio::read_mono(&spectrum::resample(&dump(&phone, phone.sent()), 8000)),
            audio::read_mono(&spectrum::resample(&path, 8000)),
        );
        let voiced: Vec<&[i16]> = sent8.chunks_exact(4000).filter(|s| audio::rms(s) >= 100.0).collect();
        let found = voiced.iter().filter(|seg| spectrum::best_match(seg, &rec8).1 >= 0.5).count();
        let ratio = ratio_at_16k(&path);
        eprintln!(
            "{codec:?}: the room's recording at {rate} Hz: {found}/{} segments of the caller found, {ratio:.1} dB above 4 kHz",
            voiced.len()
        );
        assert!(voiced.len() >= 3 && found * 10 >= voiced.len() * 8, "the caller is in the room's recording");
        assert_band(codec, ratio, "the room's recording");
        gw.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_with_a_g722_caller_is_recorded_at_16_khz() {
        conference_recording(Codec::G722).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_of_pcmu_callers_is_recorded_at_8_khz() {
        conference_recording(Codec::Pcmu).await;
    }
}
