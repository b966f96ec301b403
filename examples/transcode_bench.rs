//! `transcode_bench` — CPU per transcoded call on a forward route (issue 22
//! point 3; results in docs/benchmarks.md, "Wideband codecs").
//!
//! ```text
//! cargo run --release --example transcode_bench [-- --seconds 60]
//! ```
//!
//! Runs exactly what a relay job does per 20 ms packet when two legs share no
//! codec (`media::engine::convert`: decode once, 8 ↔ 16 kHz as needed, encode
//! for the far leg), both directions, for each codec pair, over speech
//! (tests/data/codec/speech16k.pcm, looped; pre-encoded in each codec so the
//! sender's encoder is not counted). One thread, timed by
//! `CLOCK_THREAD_CPUTIME_ID`: µs per 20 ms of call (both directions), CPU-s per
//! call-minute and % of one core per call. PCMU↔PCMA (the in-place table) and a
//! pass-through copy are the baselines. Output: a table on stdout.

use sipbridge::media::codec::{Encoder, MAX_PAYLOAD_BYTES};
use sipbridge::media::engine::convert::{Inbound, Outbound};
use sipbridge::sdp::codec::AudioCodec;

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { clock_gettime(3, &mut ts) }; // CLOCK_THREAD_CPUTIME_ID
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// 20 ms packets of `pcm16k` (16 kHz speech) in `codec` (taken to 8 kHz first
/// for G.711).
fn packets(codec: AudioCodec, pcm16k: &[i16]) -> Vec<Vec<u8>> {
    let mut enc = Outbound::new(codec).expect("codec");
    pcm16k.chunks_exact(320).filter_map(|frame| enc.encode(frame, 16_000).map(<[u8]>::to_vec)).collect()
}

fn main() {
    let seconds: u64 =
        std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let raw = std::fs::read("tests/data/codec/speech16k.pcm").expect("run from the repository root");
    let speech: Vec<i16> = raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    // Warm the Opus encoder's code (first use) outside the timing.
    let _ = Encoder::new(AudioCodec::Opus).map(|mut e| e.encode(&[0; 320], &mut [0; MAX_PAYLOAD_BYTES]));
    println!("| legs | µs per 20 ms (both ways) | CPU-s per call-minute | % of one core per call |");
    println!("|---|---:|---:|---:|");
    let pairs = [
        (AudioCodec::Opus, AudioCodec::Pcmu),
        (AudioCodec::G722, AudioCodec::Pcmu),
        (AudioCodec::Opus, AudioCodec::G722),
        (AudioCodec::G722, AudioCodec::Pcma),
    ];
    for (a, b) in pairs {
        let (from_a, from_b) = (packets(a, &speech), packets(b, &speech));
        let (mut dec_a, mut dec_b) = (Inbound::new(a).expect("a"), Inbound::new(b).expect("b"));
        let (mut enc_a, mut enc_b) = (Outbound::new(a).expect("a"), Outbound::new(b).expect("b"));
        let frames = seconds * 50;
        let mut bytes = 0usize;
        let start = thread_cpu_ns();
        for i in 0..frames as usize {
            let pa = &from_a[i % from_a.len()];
            if dec_a.decode(pa) {
                enc_b.encode_each(dec_a.pcm(), a.sample_rate(), |p| bytes += p.len());
            }
            let pb = &from_b[i % from_b.len()];
            if dec_b.decode(pb) {
                enc_a.encode_each(dec_b.pcm(), b.sample_rate(), |p| bytes += p.len());
            }
        }
        let ns = thread_cpu_ns() - start;
        let per_frame_us = ns as f64 / 1000.0 / frames as f64;
        // 3000 frames per call-minute.
        let per_minute = per_frame_us * 3000.0 / 1e6;
        println!(
            "| {} ↔ {} | {:.1} | {:.4} | {:.2} % |",
            a.encoding_name(),
            b.encoding_name(),
            per_frame_us,
            per_minute,
            per_frame_us / 20_000.0 * 100.0
        );
        std::hint::black_box(bytes);
    }
}
