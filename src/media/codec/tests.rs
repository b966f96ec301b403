//! The codecs through the common interface: round trips with SNR floors, the
//! committed reference vectors (tests/data/codec/, made by scripts/bench-codecs
//! --test-data with ffmpeg's G.722 and libopus's opusenc/opusdec), loss
//! concealment, and hostile payloads.

use super::*;

fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/codec").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pcm(name: &str) -> Vec<i16> {
    data(name).chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

/// The pre-skip (48 kHz samples, u16 big-endian) and the length-prefixed packets
/// (u16 big-endian length, then the packet) of an Ogg Opus file, as codecbench's
/// `ogg2packets` writes them.
fn packets(name: &str) -> (usize, Vec<Vec<u8>>) {
    let raw = data(name);
    let pre_skip = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    let mut out = Vec::new();
    let mut i = 2;
    while i + 2 <= raw.len() {
        let n = usize::from(u16::from_be_bytes([raw[i], raw[i + 1]]));
        out.push(raw[i + 2..i + 2 + n].to_vec());
        i += 2 + n;
    }
    (pre_skip, out)
}

fn tone(n: usize, hz: f64, amp: f64) -> Vec<i16> {
    (0..n).map(|i| ((i as f64 * hz * std::f64::consts::TAU / 16000.0).sin() * amp) as i16).collect()
}

/// SNR of `got` against `want`, dB, after the best integer delay in `0..=max_delay`
/// (codecs have look-ahead) and skipping `skip` samples of start-up.
fn snr_db(want: &[i16], got: &[i16], max_delay: usize, skip: usize) -> f64 {
    let mut best = f64::MIN;
    for delay in 0..=max_delay {
        let (mut sig, mut err) = (0.0, 0.0);
        for i in skip..want.len().min(got.len().saturating_sub(delay)) {
            let (w, g) = (f64::from(want[i]), f64::from(got[i + delay]));
            sig += w * w;
            err += (w - g) * (w - g);
        }
        best = best.max(10.0 * (sig / err.max(1.0)).log10());
    }
    best
}

fn rms(v: &[i16]) -> f64 {
    (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Encodes `input` in frames of `frame` samples and decodes every packet.
fn round_trip(codec: AudioCodec, input: &[i16], frame: usize) -> Vec<i16> {
    let mut enc = Encoder::new(codec).unwrap();
    let mut dec = Decoder::new(codec).unwrap();
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    let mut pcm = [0i16; MAX_FRAME_SAMPLES];
    let mut out = Vec::new();
    for f in input.chunks_exact(frame) {
        let n = enc.encode(f, &mut payload).unwrap();
        assert!(n <= MAX_PAYLOAD_BYTES);
        let m = dec.decode(&payload[..n], &mut pcm).unwrap();
        assert_eq!(m, frame);
        out.extend_from_slice(&pcm[..m]);
    }
    out
}

#[test]
fn g711_round_trips_through_the_common_interface() {
    for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
        let pcm: Vec<i16> = (0..160).map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16).collect();
        let mut payload = [0u8; MAX_PAYLOAD_BYTES];
        let n = Encoder::new(codec).unwrap().encode(&pcm, &mut payload).unwrap();
        assert_eq!(n, 160);
        let mut back = [0i16; MAX_FRAME_SAMPLES];
        let m = Decoder::new(codec).unwrap().decode(&payload[..n], &mut back).unwrap();
        assert_eq!(m, 160);
        let err: f64 = pcm.iter().zip(&back).map(|(a, b)| f64::from(a - b).abs()).sum::<f64>() / 160.0;
        assert!(err < 200.0, "{codec:?} mean error {err}");
    }
}

#[test]
fn g722_frames_are_160_bytes_per_20_ms_and_odd_lengths_are_refused() {
    let mut enc = Encoder::new(AudioCodec::G722).unwrap();
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    assert_eq!(enc.encode(&tone(320, 440.0, 8000.0), &mut payload).unwrap(), 160);
    assert_eq!(enc.encode(&tone(2, 440.0, 8000.0), &mut payload).unwrap(), 1);
    assert!(matches!(enc.encode(&[0; 321], &mut payload), Err(CodecError::BadFrame { samples: 321, .. })));
    assert!(matches!(enc.encode(&[0; 1922], &mut payload), Err(CodecError::BadFrame { .. })));
    assert!(matches!(enc.encode(&[0; 320], &mut payload[..100]), Err(CodecError::BadFrame { .. })));
    let mut dec = Decoder::new(AudioCodec::G722).unwrap();
    let mut out = [0i16; 320];
    assert_eq!(dec.decode(&payload[..160], &mut out).unwrap(), 320);
    assert!(matches!(dec.decode(&payload[..161], &mut out), Err(CodecError::BadPayload { len: 161, .. })));
    assert_eq!(dec.codec(), AudioCodec::G722);
}

#[test]
fn g722_round_trips_a_tone_and_speech() {
    for hz in [300.0, 1000.0, 3000.0, 6000.0] {
        let input = tone(16000, hz, 10000.0);
        let out = round_trip(AudioCodec::G722, &input, 320);
        let snr = snr_db(&input, &out, 40, 1600);
        assert!(snr > 20.0, "{hz} Hz: SNR {snr:.1} dB");
    }
    let speech = pcm("speech16k.g722.ffdec.pcm");
    let out = round_trip(AudioCodec::G722, &speech[..speech.len() / 320 * 320], 320);
    let snr = snr_db(&speech, &out, 40, 320);
    assert!(snr > 15.0, "speech: SNR {snr:.1} dB");
}

#[test]
fn g722_decodes_the_ffmpeg_reference_vector_bit_exactly() {
    let bits = data("speech16k.g722");
    let want = pcm("speech16k.g722.ffdec.pcm");
    assert_eq!(want.len(), bits.len() * 2);
    let mut dec = Decoder::new(AudioCodec::G722).unwrap();
    let mut got = Vec::new();
    let mut out = [0i16; 320];
    for chunk in bits.chunks(160) {
        let n = dec.decode(chunk, &mut out).unwrap();
        got.extend_from_slice(&out[..n]);
    }
    let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} of {} samples differ from ffmpeg's decoder", want.len());
}

#[test]
fn g722_encodes_like_ffmpeg() {
    // ffmpeg's encoder (no trellis) on the same input gave speech16k.g722.
    let input = pcm("speech16k.pcm");
    let want = data("speech16k.g722");
    let mut enc = Encoder::new(AudioCodec::G722).unwrap();
    let mut got = vec![0u8; input.len() / 2];
    for (f, o) in input.chunks(320).zip(got.chunks_mut(160)) {
        enc.encode(f, o).unwrap();
    }
    let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} of {} bytes differ from ffmpeg's encoder", want.len());
}

#[test]
fn opus_round_trips_a_tone_and_speech_in_every_frame_length() {
    for frame in [160, 320, 640, 960] {
        let input = tone(16000 / frame * frame, 440.0, 8000.0);
        let out = round_trip(AudioCodec::Opus, &input, frame);
        // Opus is not a waveform codec at 28 kbit/s: a tone still comes back close.
        let snr = snr_db(&input, &out, 400, 3200);
        assert!(snr > 10.0, "{frame}-sample frames: SNR {snr:.1} dB");
    }
    let speech = pcm("speech16k.pcm");
    let out = round_trip(AudioCodec::Opus, &speech[..speech.len() / 320 * 320], 320);
    let snr = snr_db(&speech, &out, 400, 640);
    assert!(snr > 3.0, "speech: SNR {snr:.1} dB");
    assert!((rms(&out) / rms(&speech) - 1.0).abs() < 0.3, "speech level {} vs {}", rms(&out), rms(&speech));
}

#[test]
fn opus_refuses_frames_it_cannot_code() {
    let mut enc = Encoder::new(AudioCodec::Opus).unwrap();
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    for bad in [0, 1, 100, 319, 480, 1920] {
        let pcm = vec![0i16; bad];
        assert!(
            matches!(enc.encode(&pcm, &mut payload), Err(CodecError::BadFrame { codec: AudioCodec::Opus, .. })),
            "{bad} samples"
        );
    }
    assert!(matches!(enc.encode(&[0; 320], &mut payload[..1]), Err(CodecError::BadFrame { .. })));
    assert_eq!(enc.codec(), AudioCodec::Opus);
}

/// libopus made the packets (its encoder at sipbridge's settings: SILK wideband
/// speech; opusenc: CELT fullband stereo, hybrid) and the reference PCM (its
/// decoder at 16 kHz mono). Ours must decode each to close to what libopus does.
#[test]
fn opus_decodes_libopus_packets_of_every_mode() {
    // opus-rs decodes all three sample-exactly but for float rounding (≥ 100 dB).
    for (name, floor) in [("speech-silk-wb", 60.0), ("chirp-celt-fb-stereo", 60.0), ("speech-hybrid-swb", 60.0)] {
        let (_, pkts) = packets(&format!("{name}.opuspk"));
        let want = pcm(&format!("{name}.libopus.pcm"));
        assert!(pkts.len() >= 20, "{name}: {} packets", pkts.len());
        let mut dec = Decoder::new(AudioCodec::Opus).unwrap();
        let mut out = [0i16; MAX_FRAME_SAMPLES];
        let mut got = Vec::new();
        for p in &pkts {
            let n = dec.decode(p, &mut out).unwrap();
            got.extend_from_slice(&out[..n]);
        }
        assert_eq!(got.len(), want.len(), "{name}: samples against libopus's");
        let snr = snr_db(&want, &got, 0, 0);
        assert!(snr > floor, "{name}: SNR against libopus {snr:.1} dB");
    }
}

#[test]
fn opus_conceals_a_loss_with_a_continuation_and_recovers_from_fec() {
    let speech = pcm("speech16k.pcm");
    let input = tone(16000, 300.0, 8000.0);
    let mut enc = Encoder::new(AudioCodec::Opus).unwrap();
    let mut dec = Decoder::new(AudioCodec::Opus).unwrap();
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0i16; MAX_FRAME_SAMPLES];
    let mut pkts = Vec::new();
    for f in input.chunks_exact(320) {
        let n = enc.encode(f, &mut payload).unwrap();
        pkts.push(payload[..n].to_vec());
    }
    for p in &pkts[..25] {
        dec.decode(p, &mut out).unwrap();
    }
    // Packet 25 is lost: concealment continues the tone rather than going silent.
    let n = dec.conceal(&mut out[..320]);
    assert_eq!(n, 320);
    assert!(rms(&out[..n]) > 1000.0, "concealment RMS {}", rms(&out[..n]));
    // A second stream: packet 25 lost, rebuilt from packet 26's FEC (or concealed).
    let mut dec2 = Decoder::new(AudioCodec::Opus).unwrap();
    for p in &pkts[..25] {
        dec2.decode(p, &mut out).unwrap();
    }
    let n = dec2.decode_fec(&pkts[26], &mut out).unwrap();
    assert_eq!(n, 320);
    assert!(rms(&out[..n]) > 1000.0, "FEC RMS {}", rms(&out[..n]));
    assert_eq!(dec2.decode(&pkts[26], &mut out).unwrap(), 320);
    // Concealment rounds to 2.5 ms, caps at 120 ms, and is silence before any packet.
    let mut fresh = Decoder::new(AudioCodec::Opus).unwrap();
    let mut big = vec![1i16; 4000];
    assert_eq!(fresh.conceal(&mut big[..100]), 80);
    assert_eq!(fresh.conceal(&mut big[..39]), 0);
    assert_eq!(fresh.conceal(&mut big), MAX_FRAME_SAMPLES);
    assert!(big[..MAX_FRAME_SAMPLES].iter().all(|&s| s.abs() < 10));
    // G.722 has no concealment of its own: silence.
    let mut g722 = Decoder::new(AudioCodec::G722).unwrap();
    assert_eq!(g722.conceal(&mut out[..320]), 320);
    assert!(out[..320].iter().all(|&s| s == 0));
    drop(speech);
}

/// xorshift64: a deterministic byte source for the hostile-payload tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 100 000 random payloads per decoder (with the TOC byte's code-3 frame counts
/// and lengths pushed to their extremes half of the time): errors are
/// `BadPayload`, successes fit the buffer, nothing panics, and the whole run is
/// bounded in time.
#[test]
fn decoders_survive_100k_hostile_payloads() {
    for codec in [AudioCodec::Opus, AudioCodec::G722] {
        let started = std::time::Instant::now();
        let mut rng = Rng(0x5eed_c0de_cafe_f00d);
        let mut dec = Decoder::new(codec).unwrap();
        let mut payload = [0u8; 1500];
        let mut out = [0i16; MAX_FRAME_SAMPLES];
        let (mut ok, mut bad) = (0u32, 0u32);
        for i in 0..100_000u32 {
            // Every G.722 byte is a valid code word, so its length only matters at
            // the buffer's edge: mostly short payloads keep the debug build quick.
            let len = match (i % 4, codec) {
                (0, _) => (rng.next() % 8) as usize,
                (_, AudioCodec::G722) if i % 64 != 2 => (rng.next() % 48) as usize,
                (1, _) => (rng.next() % 200) as usize,
                _ => (rng.next() % 1500) as usize,
            };
            for b in &mut payload[..len] {
                *b = rng.next() as u8;
            }
            if i % 2 == 0 && len >= 2 {
                // Code 3 (arbitrary frame count), VBR/padding flags and a count up to 63.
                payload[0] |= 0x03;
                payload[1] = (rng.next() as u8) | if i % 8 == 0 { 0x3f } else { 0 };
            }
            let out_len = if i % 16 == 0 { 320 } else { MAX_FRAME_SAMPLES };
            match dec.decode(&payload[..len], &mut out[..out_len]) {
                Ok(n) => {
                    assert!(n <= out_len);
                    ok += 1;
                }
                Err(CodecError::BadPayload { codec: c, len: l, .. }) => {
                    assert_eq!((c, l), (codec, len));
                    bad += 1;
                }
                Err(e) => panic!("{codec:?}: unexpected {e}"),
            }
            if i % 1000 == 0 {
                dec.conceal(&mut out[..320]);
            }
        }
        eprintln!("{codec:?}: {ok} decoded, {bad} refused in {:?}", started.elapsed());
        assert!(ok > 0 && bad > 0, "{codec:?}: ok {ok} bad {bad}");
        // ~3 s each unloaded; generous for an unoptimised build on a loaded
        // machine: a hang or a quadratic path would blow it by orders of magnitude.
        assert!(started.elapsed() < std::time::Duration::from_secs(300), "{codec:?}: {:?}", started.elapsed());
    }
}

/// The fuzz target's entry point (`fuzzing::codec_decode`) on its seed corpus and
/// on 5 000 deterministic mutations of it (tests/fuzz_smoke.rs does not list it).
#[test]
fn fuzz_entry_point_survives_its_corpus_and_mutations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/codec_decode");
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(&dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    seeds.sort();
    assert!(seeds.len() >= 3);
    let mut rng = Rng(0xf00d_5eed_1234_5678);
    for seed in &seeds {
        crate::fuzzing::codec_decode(seed);
    }
    for i in 0..5_000usize {
        let mut input = seeds[i % seeds.len()].clone();
        for _ in 0..1 + rng.next() % 8 {
            let at = (rng.next() as usize) % input.len();
            input[at] = rng.next() as u8;
        }
        input.truncate(1 + (rng.next() as usize) % input.len());
        crate::fuzzing::codec_decode(&input);
    }
}
