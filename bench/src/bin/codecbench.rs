//! `codecbench` — the wideband codecs of `sipbridge::media::codec` (G.722 and Opus)
//! against the other pure-Rust candidates and the references (issue 22 point 5;
//! results in docs/benchmarks.md, "Wideband codecs"). scripts/bench-codecs drives
//! it around ffmpeg (G.722 reference) and libopus (opusenc/opusdec):
//!
//! ```text
//! codecbench g722-encode IMPL IN.pcm OUT.g722       IMPL: sipbridge | audio-codec
//! codecbench g722-decode IMPL IN.g722 OUT.pcm
//! codecbench opus-encode IMPL IN.pcm OUT.opuspk [BITRATE [COMPLEXITY]]   IMPL: sipbridge | opus-pure
//! codecbench opus-decode IMPL IN.opuspk OUT.pcm     (every sample the decoder gives, no trimming)
//! codecbench ogg2packets IN.opus OUT.opuspk [SECONDS]  (the packets of an Ogg Opus file)
//! codecbench compare REF.pcm TEST.pcm [MAX_DELAY]   SNR / segmental SNR (JSON)
//! codecbench cpu IMPL CODEC IN.pcm SECONDS [COMPLEXITY]  µs per 20 ms frame (JSON)
//! ```
//!
//! PCM files are raw s16le mono at 16000 Hz. `.opuspk` files are a u16-BE
//! pre-skip (48 kHz samples) then u16-BE length-prefixed packets; the script's
//! libopus side (Python ctypes on Debian's libopus0, encoder and decoder at 16 kHz
//! mono) reads and writes the same. `cpu` runs the encoder over `IN`
//! (looped) until SECONDS of audio have been coded, then the decoder over the
//! packets, each timed by `CLOCK_THREAD_CPUTIME_ID`, and counts heap allocations
//! in the timed loops (a counting global allocator): the codecs must not allocate
//! per packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use sipbridge::media::codec::{Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_PAYLOAD_BYTES};
use sipbridge::sdp::codec::AudioCodec;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
// SAFETY: forwards to the system allocator, counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

type Res<T> = Result<T, String>;

fn read_pcm(path: &str) -> Res<Vec<i16>> {
    let b = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect())
}

fn write_pcm(path: &str, pcm: &[i16]) -> Res<()> {
    let b: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, b).map_err(|e| format!("{path}: {e}"))
}

fn write(path: &str, b: &[u8]) -> Res<()> {
    std::fs::write(path, b).map_err(|e| format!("{path}: {e}"))
}

/// A frame-at-a-time codec pair behind one face, for the candidates.
trait Enc {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Res<usize>;
}
trait Dec {
    fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Res<usize>;
}

impl Enc for Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Res<usize> {
        Encoder::encode(self, pcm, out).map_err(|e| e.to_string())
    }
}
impl Dec for Decoder {
    fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Res<usize> {
        Decoder::decode(self, p, out).map_err(|e| e.to_string())
    }
}

struct AcG722Enc(audio_codec::g722::G722Encoder);
struct AcG722Dec(audio_codec::g722::G722Decoder);
impl Enc for AcG722Enc {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Res<usize> {
        audio_codec::Encoder::encode_into(&mut self.0, pcm, out).map_err(|e| format!("{e:?}"))
    }
}
impl Dec for AcG722Dec {
    fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Res<usize> {
        audio_codec::Decoder::decode_into(&mut self.0, p, out).map_err(|e| format!("{e:?}"))
    }
}

struct PureEnc(Box<opus_pure::OpusEncoder>);
struct PureDec(Box<opus_pure::OpusDecoder>);
impl Enc for PureEnc {
    fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Res<usize> {
        let cap = out.len().min(1275);
        self.0.encode_s16(pcm, pcm.len(), &mut out[..cap]).map_err(|e| e.to_string())
    }
}
impl Dec for PureDec {
    fn decode(&mut self, p: &[u8], out: &mut [i16]) -> Res<usize> {
        let n = opus_pure::packet::samples(p, 16000).map_err(|e| e.to_string())?;
        self.0.decode_s16(p, n, &mut out[..n]).map_err(|e| e.to_string())
    }
}

fn g722_pair(imp: &str) -> Res<(Box<dyn Enc>, Box<dyn Dec>)> {
    match imp {
        "sipbridge" => Ok((
            Box::new(Encoder::new(AudioCodec::G722).map_err(|e| e.to_string())?),
            Box::new(Decoder::new(AudioCodec::G722).map_err(|e| e.to_string())?),
        )),
        "audio-codec" => Ok((
            Box::new(AcG722Enc(audio_codec::g722::G722Encoder::new())),
            Box::new(AcG722Dec(audio_codec::g722::G722Decoder::new())),
        )),
        _ => Err(format!("unknown G.722 implementation {imp}")),
    }
}

/// The Opus pair of `imp` at `bitrate` and `complexity`: sipbridge's (opus-rs
/// behind `media::codec`) or opus-pure with the same settings (VOIP, in-band FEC
/// for 5 % loss, at most wideband).
fn opus_pair(imp: &str, bitrate: i32, complexity: i32) -> Res<(Box<dyn Enc>, Box<dyn Dec>)> {
    match imp {
        "sipbridge" => Ok((
            Box::new(Encoder::opus_with(bitrate, complexity).map_err(|e| e.to_string())?),
            Box::new(Decoder::new(AudioCodec::Opus).map_err(|e| e.to_string())?),
        )),
        "opus-pure" => {
            let mut e =
                opus_pure::OpusEncoder::new(16000, 1, opus_pure::Application::Voip).map_err(|e| e.to_string())?;
            e.bitrate_bps = bitrate;
            e.complexity = complexity;
            e.use_inband_fec = true;
            e.packet_loss_perc = 5;
            e.max_bandwidth = opus_pure::Bandwidth::Wideband;
            e.lsb_depth = 16;
            let d = opus_pure::OpusDecoder::new(16000, 1).map_err(|e| e.to_string())?;
            Ok((Box::new(PureEnc(Box::new(e))), Box::new(PureDec(Box::new(d)))))
        }
        _ => Err(format!("unknown Opus implementation {imp}")),
    }
}

fn opus_settings(args: &[String], at: usize) -> Res<(i32, i32)> {
    use sipbridge::media::codec::{OPUS_BITRATE_BPS, OPUS_COMPLEXITY};
    let b = args.get(at).map(|s| s.parse().map_err(|_| format!("bad bitrate {s}"))).transpose()?;
    let c = args.get(at + 1).map(|s| s.parse().map_err(|_| format!("bad complexity {s}"))).transpose()?;
    Ok((b.unwrap_or(OPUS_BITRATE_BPS), c.unwrap_or(OPUS_COMPLEXITY)))
}

fn read_ogg(path: &str) -> Res<(u16, Vec<Vec<u8>>)> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut r = opus_pure::OggOpusReader::new(std::io::BufReader::new(f)).map_err(|e| format!("{path}: {e}"))?;
    let pre_skip = r.head().pre_skip;
    let mut v = Vec::new();
    for p in r.packets() {
        v.push(p.map_err(|e| format!("{path}: {e}"))?.data);
    }
    Ok((pre_skip, v))
}

/// The `.opuspk` format: u16-BE pre-skip (48 kHz samples), then packets each
/// prefixed by its u16-BE length (what src/media/codec/tests.rs reads).
fn write_packets(path: &str, pre_skip: u16, pkts: &[Vec<u8>]) -> Res<()> {
    let mut out = pre_skip.to_be_bytes().to_vec();
    for p in pkts {
        let len = u16::try_from(p.len()).map_err(|_| "packet over 65535 bytes")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(p);
    }
    write(path, &out)
}

fn read_packets(path: &str) -> Res<(u16, Vec<Vec<u8>>)> {
    let raw = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let bad = || format!("{path}: truncated .opuspk");
    let pre_skip = u16::from_be_bytes([*raw.first().ok_or_else(bad)?, *raw.get(1).ok_or_else(bad)?]);
    let mut pkts = Vec::new();
    let mut i = 2;
    while i < raw.len() {
        let n = usize::from(u16::from_be_bytes([raw[i], *raw.get(i + 1).ok_or_else(bad)?]));
        pkts.push(raw.get(i + 2..i + 2 + n).ok_or_else(bad)?.to_vec());
        i += 2 + n;
    }
    Ok((pre_skip, pkts))
}

fn snr(want: &[i16], got: &[i16]) -> (f64, f64) {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    let mut seg = Vec::new();
    for (w, g) in want.chunks(320).zip(got.chunks(320)) {
        let (mut s, mut e) = (0.0f64, 0.0f64);
        for (&a, &b) in w.iter().zip(g) {
            let (a, b) = (f64::from(a), f64::from(b));
            s += a * a;
            e += (a - b) * (a - b);
        }
        sig += s;
        err += e;
        // Segmental SNR over active frames (RMS > 100), each clamped to [-10, 35] dB.
        if s / w.len() as f64 > 100.0 * 100.0 {
            seg.push((10.0 * (s / e.max(1e-9)).log10()).clamp(-10.0, 35.0));
        }
    }
    let segsnr = if seg.is_empty() { f64::NAN } else { seg.iter().sum::<f64>() / seg.len() as f64 };
    (10.0 * (sig / err.max(1e-9)).log10(), segsnr)
}

fn run(args: &[String]) -> Res<()> {
    let a = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| "missing argument (see --help)".to_string());
    let mut payload = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut pcm = vec![0i16; MAX_FRAME_SAMPLES];
    match a(0)? {
        "g722-encode" => {
            let (mut enc, _) = g722_pair(a(1)?)?;
            let input = read_pcm(a(2)?)?;
            let mut out = Vec::new();
            for f in input.chunks(320) {
                let f = &f[..f.len() & !1];
                let n = enc.encode(f, &mut payload)?;
                out.extend_from_slice(&payload[..n]);
            }
            write(a(3)?, &out)
        }
        "g722-decode" => {
            let (_, mut dec) = g722_pair(a(1)?)?;
            let bits = std::fs::read(a(2)?).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for p in bits.chunks(160) {
                let n = dec.decode(p, &mut pcm)?;
                out.extend_from_slice(&pcm[..n]);
            }
            write_pcm(a(3)?, &out)
        }
        "opus-encode" => {
            let (b, c) = opus_settings(args, 4)?;
            let (mut enc, _) = opus_pair(a(1)?, b, c)?;
            let input = read_pcm(a(2)?)?;
            let mut pkts = Vec::new();
            for f in input.chunks_exact(320) {
                let n = enc.encode(f, &mut payload)?;
                pkts.push(payload[..n].to_vec());
            }
            let bytes: usize = pkts.iter().map(Vec::len).sum();
            eprintln!(
                "{} frames, mean {:.1} kbit/s",
                pkts.len(),
                bytes as f64 * 8.0 / (pkts.len() as f64 * 0.02) / 1000.0
            );
            write_packets(a(3)?, 0, &pkts)
        }
        "opus-decode" => {
            let (_, mut dec) = opus_pair(a(1)?, sipbridge::media::codec::OPUS_BITRATE_BPS, 5)?;
            let (_, pkts) = read_packets(a(2)?)?;
            let mut out = Vec::new();
            for p in &pkts {
                let n = dec.decode(p, &mut pcm)?;
                out.extend_from_slice(&pcm[..n]);
            }
            write_pcm(a(3)?, &out)
        }
        "ogg2packets" => {
            let (pre_skip, pkts) = read_ogg(a(1)?)?;
            let secs: f64 = args.get(3).map_or(Ok(1e9), |s| s.parse().map_err(|_| format!("bad seconds {s}")))?;
            let mut dur = 0.0;
            let mut keep = Vec::new();
            for p in pkts {
                if dur >= secs {
                    break;
                }
                dur += opus_pure::packet::samples(&p, 48000).map_err(|e| e.to_string())? as f64 / 48000.0;
                keep.push(p);
            }
            write_packets(a(2)?, pre_skip, &keep)
        }
        "compare" => {
            let want = read_pcm(a(1)?)?;
            let got = read_pcm(a(2)?)?;
            let max_delay: usize = args.get(3).map_or(Ok(0), |s| s.parse().map_err(|_| format!("bad delay {s}")))?;
            let mut best = (f64::MIN, f64::MIN, 0usize);
            for d in 0..=max_delay.min(got.len()) {
                let (s, seg) = snr(&want, &got[d..]);
                if s > best.0 {
                    best = (s, seg, d);
                }
            }
            println!(
                "{{\"ref\":\"{}\",\"test\":\"{}\",\"snr_db\":{:.2},\"segsnr_db\":{:.2},\"delay\":{},\"samples\":{}}}",
                a(1)?,
                a(2)?,
                best.0,
                best.1,
                best.2,
                want.len().min(got.len())
            );
            Ok(())
        }
        "cpu" => {
            let (imp, codec) = (a(1)?, a(2)?);
            let input = read_pcm(a(3)?)?;
            let secs: f64 = a(4)?.parse().map_err(|_| "bad seconds")?;
            let c = args.get(5).map_or(Ok(sipbridge::media::codec::OPUS_COMPLEXITY), |s| {
                s.parse().map_err(|_| format!("bad complexity {s}"))
            })?;
            let (mut enc, mut dec) = match codec {
                "g722" => g722_pair(imp)?,
                "opus" => opus_pair(imp, sipbridge::media::codec::OPUS_BITRATE_BPS, c)?,
                _ => return Err(format!("unknown codec {codec}")),
            };
            let frames: Vec<&[i16]> = input.chunks_exact(320).collect();
            let total = (secs * 50.0) as usize;
            let mut packets: Vec<u8> = vec![0; total * MAX_PAYLOAD_BYTES.min(400)];
            let mut lens = vec![0usize; total];
            // Warm-up (first packets, lazily built tables) outside the count.
            for f in frames.iter().take(10) {
                enc.encode(f, &mut payload)?;
            }
            let allocs0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = thread_cpu_ns();
            for i in 0..total {
                let n = enc.encode(frames[i % frames.len()], &mut payload)?;
                let slot = &mut packets[i * 400..i * 400 + 400];
                slot[..n.min(400)].copy_from_slice(&payload[..n.min(400)]);
                lens[i] = n.min(400);
            }
            let enc_ns = thread_cpu_ns() - t0;
            let enc_allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
            let allocs0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = thread_cpu_ns();
            for i in 0..total {
                dec.decode(&packets[i * 400..i * 400 + lens[i]], &mut pcm)?;
            }
            let dec_ns = thread_cpu_ns() - t0;
            let dec_allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
            let us = |ns: u64| ns as f64 / 1000.0 / total as f64;
            let bytes: usize = lens.iter().sum();
            println!(
                "{{\"impl\":\"{imp}\",\"codec\":\"{codec}\",\"complexity\":{c},\"frames\":{total},\"enc_us_per_20ms\":{:.2},\"dec_us_per_20ms\":{:.2},\"core_pct_per_call\":{:.3},\"kbit_s\":{:.1},\"enc_allocs\":{enc_allocs},\"dec_allocs\":{dec_allocs}}}",
                us(enc_ns),
                us(dec_ns),
                (us(enc_ns) + us(dec_ns)) / 20_000.0 * 100.0,
                bytes as f64 * 8.0 / (total as f64 * 0.02) / 1000.0,
            );
            Ok(())
        }
        other => Err(format!("unknown command {other} (see the doc comment of bench/src/bin/codecbench.rs)")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codecbench: {e}");
            ExitCode::FAILURE
        }
    }
}
