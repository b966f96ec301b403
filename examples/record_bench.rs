//! Recording benchmark: N concurrent calls' worth of stereo audio through
//! `record::Recorder` (timeline + crash-safe WAV writer) as fast as one thread
//! can, with a fake clock advancing 20 ms per round; reports CPU seconds per
//! call-minute, write throughput, and the cost of the periodic `fdatasync`.
//!
//! Usage: `record_bench [calls=200] [seconds=60] [dir=target/bench-record]`
//! (run by scripts/bench-record). Each call pushes one 20 ms packet (160 samples
//! at 8 kHz) per side per round and ticks every 100 ms, as a call task would.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sipbridge::config::Channels;
use sipbridge::record::{Recorder, WriterOptions};

/// CPU time of this (single) thread, from /proc/thread-self/schedstat (ns on CPU).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let dir = PathBuf::from(args.get(3).map(String::as_str).unwrap_or("target/bench-record"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;

    let t0 = Instant::now();
    let cpu0 = thread_cpu();
    let mut recs = Vec::with_capacity(calls);
    for i in 0..calls {
        recs.push(Recorder::start(
            &dir.join(format!("call-{i}.wav")),
            t0,
            8000,
            Channels::Dual,
            WriterOptions::default(),
        )?);
    }
    // Speech-like content so nothing is trivially zero.
    let left: Vec<i16> = (0..160).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
    let right: Vec<i16> = left.iter().map(|s| -s).collect();
    let rounds = seconds * 50;
    for round in 0..rounds {
        let at = t0 + Duration::from_millis(20 * (round + 1));
        for r in recs.iter_mut() {
            r.push_left(&left, at);
            r.push_right(&right, at);
            if round % 5 == 4 {
                if let Some(e) = r.tick(at) {
                    return Err(format!("recording failed: {e}").into());
                }
            }
        }
    }
    let writing_cpu = thread_cpu() - cpu0;
    let (mut syncs, mut sync_time) = (0u64, Duration::ZERO);
    for r in &recs {
        syncs += r.file().stats().syncs;
        sync_time += r.file().stats().sync_time;
    }
    let cpu1 = thread_cpu();
    let end = t0 + Duration::from_secs(seconds);
    let mut bytes = 0u64;
    for r in recs {
        let saved = r.finish(end)?;
        if saved.frames != seconds * 8000 {
            return Err(
                format!("{}: {} frames, expected {}", saved.path.display(), saved.frames, seconds * 8000).into()
            );
        }
        bytes += saved.size_bytes;
    }
    let finish_cpu = thread_cpu() - cpu1;
    let wall = t0.elapsed();
    let cpu = writing_cpu + finish_cpu;
    let call_minutes = calls as f64 * seconds as f64 / 60.0;
    let mb = bytes as f64 / 1e6;
    println!("calls {calls}, {seconds} s each, dir {}", dir.display());
    println!("audio written: {mb:.1} MB in {:.2} s wall, {:.2} s CPU", wall.as_secs_f64(), cpu.as_secs_f64());
    println!(
        "cpu per call-minute: {:.2} ms (writing {:.2} ms, finish incl. SHA-256 {:.2} ms)",
        cpu.as_secs_f64() * 1e3 / call_minutes,
        writing_cpu.as_secs_f64() * 1e3 / call_minutes,
        finish_cpu.as_secs_f64() * 1e3 / call_minutes
    );
    println!(
        "throughput: {:.1} MB/s (real time needs {:.3} MB/s for {calls} calls)",
        mb / wall.as_secs_f64(),
        calls as f64 * 32_000.0 / 1e6
    );
    println!(
        "fdatasync: {syncs} calls, mean {:.3} ms, total {:.2} s",
        if syncs > 0 { sync_time.as_secs_f64() * 1e3 / syncs as f64 } else { 0.0 },
        sync_time.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
