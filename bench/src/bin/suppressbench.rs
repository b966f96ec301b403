//! `suppressbench` — what noise suppression (`sipbridge::media::suppress`,
//! RNNoise through nnnoiseless) does to speech in noise, and what it costs per
//! stream (issue 21 point 3; results in docs/benchmarks.md, "Noise suppression").
//!
//! ```text
//! suppressbench --rate 8000|16000 --speech CLEAN.wav --noise NAME=NOISE.wav ... \
//!     [--snr 0,5,10] [--cpu-seconds 60]
//! ```
//!
//! Every WAV is mono PCM16 at `--rate` (scripts/bench-suppress makes them with
//! espeak-ng and sox). For each noise and each input speech-to-noise ratio the
//! noise is scaled to that ratio against the speech (RMS over the spoken
//! windows: 10 ms windows above an RMS of 300, gaps under 200 ms bridged) and
//! added; the sum goes through a fresh `Suppressor` in 20 ms frames (as a call's
//! packets do). Reported per point: the speech-to-noise ratio before and after
//! (mean energy in the spoken windows against mean energy in the windows at
//! least 200 ms from speech, after the first 0.6 s, the suppressor's delay taken
//! out), the gain, and the correlation of the output with the clean speech in
//! the spoken windows (how much of the speech is left, 1.0 = all). CPU: one
//! thread runs the suppressor over the mixed audio, again and again, until
//! `--cpu-seconds` of audio (default 60) have passed, timed by
//! `CLOCK_THREAD_CPUTIME_ID`: µs per 20 ms frame and CPU-s per call-minute
//! (= % of one core while a suppressed direction runs, ÷ 100 × 60).
//! Output: one JSON object per point on stdout, a table on stderr.

use std::ops::Range;
use std::process::ExitCode;

use sipbridge::media::suppress::Suppressor;

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read_wav(path: &str, rate: u32) -> Result<Vec<i16>, String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{path}: {e}"))?;
    let spec = r.spec();
    if (spec.channels, spec.sample_rate, spec.bits_per_sample) != (1, rate, 16) {
        return Err(format!("{path}: not mono 16-bit at {rate} Hz"));
    }
    r.samples::<i16>().collect::<Result<_, _>>().map_err(|e| format!("{path}: {e}"))
}

fn rms(v: &[i16]) -> f64 {
    (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Spoken windows of `v` at `rate` Hz (10 ms windows over RMS 300, gaps
/// under 200 ms bridged).
fn speech_windows(v: &[i16], rate: usize) -> Vec<Range<usize>> {
    let w = rate / 100;
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, c) in v.chunks(w).enumerate() {
        if rms(c) < 300.0 {
            continue;
        }
        let r = i * w..i * w + c.len();
        match out.last_mut() {
            Some(last) if r.start <= last.end + rate / 5 => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

/// Windows at least 200 ms from any speech, after the first 0.6 s.
fn quiet_windows(spoken: &[Range<usize>], len: usize, rate: usize) -> Vec<Range<usize>> {
    let guard = rate / 5;
    let mut out = Vec::new();
    let mut from = rate * 6 / 10;
    for s in spoken {
        let to = s.start.saturating_sub(guard);
        if to > from + rate / 10 {
            out.push(from..to);
        }
        from = from.max(s.end + guard);
    }
    if len > from + rate / 10 {
        out.push(from..len);
    }
    out
}

fn energy(v: &[i16], ranges: &[Range<usize>], shift: usize) -> f64 {
    let (mut sum, mut n) = (0f64, 0usize);
    for r in ranges {
        let (a, b) = ((r.start + shift).min(v.len()), (r.end + shift).min(v.len()));
        sum += v[a..b].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        n += b - a;
    }
    sum / n.max(1) as f64
}

/// Correlation of `clean` and `out[shift..]` over `ranges`.
fn ncc(clean: &[i16], out: &[i16], ranges: &[Range<usize>], shift: usize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for r in ranges {
        for i in r.clone() {
            let (Some(&x), Some(&y)) = (clean.get(i), out.get(i + shift)) else { continue };
            let (x, y) = (f64::from(x), f64::from(y));
            (ab, aa, bb) = (ab + x * y, aa + x * x, bb + y * y);
        }
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

fn suppress(input: &[i16], rate: u32) -> Result<Vec<i16>, String> {
    let mut s = Suppressor::new(rate).map_err(|e| e.to_string())?;
    let mut out = input.to_vec();
    for f in out.chunks_mut(rate as usize / 50) {
        s.process(f);
    }
    Ok(out)
}

fn db(x: f64) -> f64 {
    10.0 * x.max(1e-9).log10()
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut rate, mut speech, mut noises, mut snrs, mut cpu_seconds) =
        (8000u32, None, Vec::new(), vec![0.0, 5.0, 10.0], 60.0);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rate" => rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--speech" => speech = Some(value()?),
            "--noise" => {
                let v = value()?;
                let (name, path) = v.split_once('=').ok_or("--noise NAME=FILE.wav")?;
                noises.push((name.to_string(), path.to_string()));
            }
            "--snr" => {
                snrs = value()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--snr: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--cpu-seconds" => cpu_seconds = value()?.parse().map_err(|e| format!("--cpu-seconds: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let speech = read_wav(&speech.ok_or("--speech is required")?, rate)?;
    let r = rate as usize;
    let spoken = speech_windows(&speech, r);
    let quiet = quiet_windows(&spoken, speech.len(), r);
    let speech_rms = energy(&speech, &spoken, 0).sqrt();
    // The suppressor's delay: the lag that best aligns clean speech with its output.
    let through = suppress(&speech, rate)?;
    let delay = (0..r / 20)
        .max_by(|&a, &b| ncc(&speech, &through, &spoken, a).total_cmp(&ncc(&speech, &through, &spoken, b)))
        .unwrap_or(0);
    eprintln!(
        "{rate} Hz: suppressor delay {delay} samples ({:.1} ms); clean speech through it keeps ncc {:.3}",
        delay as f64 * 1000.0 / rate as f64,
        ncc(&speech, &through, &spoken, delay)
    );
    eprintln!("{:<10} {:>7} {:>9} {:>9} {:>8} {:>6}", "noise", "SNR in", "measured", "after", "gain", "ncc");
    let mut cpu_input = Vec::new();
    for (name, path) in &noises {
        let noise = read_wav(path, rate)?;
        if noise.len() < speech.len() {
            return Err(format!("{path}: shorter than the speech"));
        }
        for &snr in &snrs {
            let gain = speech_rms / 10f64.powf(snr / 20.0) / rms(&noise[..speech.len()]).max(1.0);
            let mixed: Vec<i16> = speech
                .iter()
                .zip(&noise)
                .map(|(&s, &n)| (f64::from(s) + f64::from(n) * gain).round().clamp(-32768.0, 32767.0) as i16)
                .collect();
            let before = db(energy(&mixed, &spoken, 0) / energy(&mixed, &quiet, 0));
            let out = suppress(&mixed, rate)?;
            let after = db(energy(&out, &spoken, delay) / energy(&out, &quiet, delay));
            let kept = ncc(&speech, &out, &spoken, delay);
            eprintln!("{name:<10} {snr:>7.1} {before:>9.1} {after:>9.1} {:>8.1} {kept:>6.3}", after - before);
            println!(
                "{}",
                serde_json::json!({"rate": rate, "noise": name, "snr_in_db": snr, "snr_measured_before_db": before,
                    "snr_after_db": after, "gain_db": after - before, "speech_ncc": kept})
            );
            if cpu_input.is_empty() {
                cpu_input = mixed;
            }
        }
    }
    // CPU: one direction of one call, frame by frame.
    let frame = r / 50;
    let frames_wanted = (cpu_seconds * 50.0) as usize;
    let mut s = Suppressor::new(rate).map_err(|e| e.to_string())?;
    let mut buf = vec![0i16; frame];
    let (t0, mut done) = (thread_cpu_ns(), 0usize);
    'outer: loop {
        for f in cpu_input.chunks_exact(frame) {
            buf.copy_from_slice(f);
            s.process(&mut buf);
            std::hint::black_box(&buf);
            done += 1;
            if done == frames_wanted {
                break 'outer;
            }
        }
    }
    let ns = (thread_cpu_ns() - t0) as f64;
    let us_per_frame = ns / 1000.0 / done as f64;
    let per_call_minute = us_per_frame * 3000.0 / 1e6;
    eprintln!(
        "cpu: {done} frames of 20 ms at {rate} Hz: {us_per_frame:.1} µs per frame, {:.2} % of a core, \
         {per_call_minute:.3} CPU-s per suppressed call-minute (one direction)",
        us_per_frame / 200.0
    );
    println!(
        "{}",
        serde_json::json!({"rate": rate, "cpu_us_per_frame": us_per_frame, "core_percent": us_per_frame / 200.0,
            "cpu_s_per_call_minute": per_call_minute, "frames": done})
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("suppressbench: {e}");
            ExitCode::from(2)
        }
    }
}
