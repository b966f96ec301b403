//! Fuzz smoke (issue 17, "no panic on any input"): for each `sipbridge::fuzzing`
//! entry point — the functions the cargo-fuzz targets in `fuzz/` call — replays
//! the whole seed and regression corpus `fuzz/corpus/<target>/`, then runs cheap
//! deterministic mutations of those inputs (byte flips, truncations, splices,
//! inserted CR/LF/NUL/`€`/huge numbers, repeated ranges) through the same
//! function. Stable Rust, no nightly, no extra crate: the long coverage-guided runs
//! are `cargo +nightly fuzz run` (fuzz/README.md).
//!
//! Budget: each target stops after `MAX_MUTATIONS` inputs or `TIME_PER_TARGET`,
//! whichever comes first, and prints how many inputs it ran. A panic fails the
//! test and prints the input as hex (and as text when it is UTF-8), ready to be
//! added to the corpus as a regression input.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutated inputs per target at most.
const MAX_MUTATIONS: usize = 50_000;
/// Wall-clock budget of the mutation phase per target (7 targets: ≤ 35 s in all,
/// plus the corpus replays).
const TIME_PER_TARGET: Duration = Duration::from_secs(5);

/// Tokens that break parsers: line ends, NUL, multi-byte UTF-8 (a `€` across a
/// byte index), numbers past every integer width, SIP/SDP/JSON separators.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b"\0",
    "€".as_bytes(),
    "x€".as_bytes(),
    b"\xff\xfe",
    b"18446744073709551616",
    b"4294967296",
    b"99999999999999999999999999",
    b"-1",
    b"0",
    b"65536",
    b":",
    b";",
    b",",
    b"=",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"%",
    b"%0",
    b"[",
    b"]",
    b"{",
    b"}",
    b" ",
    b"\t",
    b"Content-Length: 99999\r\n",
    b"l: 4294967296\r\n",
    b"a=rtpmap:96 PCMU/0\r\n",
    b"m=audio 65536 RTP/AVP 0\r\n",
    b"c=IN IP4 999.0.0.1\r\n",
    b"\"payload\":\"",
    b"=",
    b".",
];

/// xorshift64* (Marsaglia / Vigna): deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("corpus file")).collect();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// One mutation of `seed` (with `other` for splices).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(8) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            // Set a byte to an interesting value.
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0x00, 0xff, 0x7f, 0x80, b'\r', b'\n', b'0', b'9'][rng.below(8)];
            }
            // Truncate.
            2 if len > 0 => v.truncate(rng.below(len)),
            // Insert a token.
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                v.splice(at..at, t.iter().copied());
            }
            // Splice: our head, the other input's tail.
            4 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            // Repeat a range (bounded growth).
            5 if len > 0 && len < 16_384 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let copy = v[a..b].to_vec();
                let times = 1 + rng.below(8);
                for _ in 0..times {
                    v.splice(b..b, copy.iter().copied());
                }
            }
            // Delete a range.
            6 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                v.drain(a..b);
            }
            // Replace a digit run with a huge number.
            7 if len > 0 => {
                let offset = rng.below(len);
                if let Some(i) = (0..len).map(|k| (k + offset) % len).find(|&k| v[k].is_ascii_digit()) {
                    let mut j = i;
                    while j < v.len() && v[j].is_ascii_digit() {
                        j += 1;
                    }
                    v.splice(i..j, b"340282366920938463463374607431768211456".iter().copied());
                }
            }
            _ => {}
        }
    }
    v
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `input` through `f`; on a panic, prints the input and fails.
fn run_one(target: &str, what: &str, f: fn(&[u8]), input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let text = std::str::from_utf8(input).map(|t| format!("\ntext: {t:?}")).unwrap_or_default();
        panic!("{target}: panic on {what} input ({} bytes)\nhex: {}{text}", input.len(), hex(input));
    }
}

fn smoke(target: &str, f: fn(&[u8]), seed: u64) {
    let inputs = corpus(target);
    for input in &inputs {
        run_one(target, "corpus", f, input);
    }
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut runs = 0;
    while runs < MAX_MUTATIONS && start.elapsed() < TIME_PER_TARGET {
        let seed = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())];
        let input = mutate(&mut rng, seed, other);
        run_one(target, "mutated", f, &input);
        runs += 1;
    }
    println!(
        "{target}: {} corpus inputs, {runs} mutations in {:.1} s ({:.0}/s)",
        inputs.len(),
        start.elapsed().as_secs_f64(),
        runs as f64 / start.elapsed().as_secs_f64().max(1e-9)
    );
    assert!(runs > 0, "{target}: no mutation ran");
}

#[test]
fn sip_message_never_panics() {
    smoke("sip_message", sipbridge::fuzzing::sip_message, 0x5195_0001);
}

#[test]
fn sdp_offer_answer_never_panics() {
    smoke("sdp_offer_answer", sipbridge::fuzzing::sdp_offer_answer, 0x5195_0002);
}

#[test]
fn rtp_rtcp_never_panics() {
    smoke("rtp_rtcp", sipbridge::fuzzing::rtp_rtcp, 0x5195_0003);
}

#[test]
fn rfc4733_never_panics() {
    smoke("rfc4733", sipbridge::fuzzing::rfc4733, 0x5195_0004);
}

#[test]
fn agent_json_never_panics() {
    smoke("agent_json", sipbridge::fuzzing::agent_json, 0x5195_0005);
}

#[test]
fn webrtc_offer_and_join_token_never_panic() {
    fn both(data: &[u8]) {
        sipbridge::fuzzing::webrtc_offer(data);
        sipbridge::fuzzing::join_token(data);
    }
    smoke("webrtc_offer", both, 0x5195_0006);
}

#[test]
fn codec_decode_never_panics() {
    smoke("codec_decode", sipbridge::fuzzing::codec_decode, 0x5195_0007);
}
