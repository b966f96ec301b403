//! Recording benchmark, two modes (run by scripts/bench-record):
//!
//! - `record_bench [calls=200] [seconds=60] [dir=target/bench-record] [checkpoint_ms]`: the
//!   recording core alone. N concurrent calls' worth of stereo audio through
//!   `record::Recorder` (timeline + crash-safe WAV writer) as fast as one thread
//!   can, with a fake clock advancing 20 ms per round; reports CPU per
//!   call-minute, write throughput and the cost of the periodic `fdatasync`.
//!   Each call pushes one 20 ms packet (160 samples at 8 kHz) per side per round
//!   and ticks every 100 ms, as a call's writer thread would. `checkpoint_ms`
//!   overrides the header checkpoint interval (default 500 ms), for comparisons.
//! - `record_bench tap [calls=200] [seconds=60] [dir]`: the daemon's whole path,
//!   in real time. N `call::recording::CallRecording`s, each with its writer
//!   thread, fed through their taps by one thread that plays the media tasks
//!   (one PCMU packet per direction per call every 20 ms); reports the CPU the
//!   recording adds per call-minute (process CPU minus the feeding thread: tap
//!   channel, thread wake-ups, G.711 decoding, timeline, writes, checkpoints,
//!   syncs, finish), packets dropped, and that every file has the call's length.
//!
//! `RECORD_FORMAT=mp3` records MP3 instead of WAV in either mode (the encoder
//! runs where it runs in the daemon: on the recording's thread).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sipbridge::call::recording::CallRecording;
use sipbridge::config::values::DiskBudget;
use sipbridge::config::{Channels, Recording, RecordingFormat};
use sipbridge::media::g711::G711;
use sipbridge::record::{Recorder, WriterOptions};

/// CPU time of this thread, from /proc/thread-self/schedstat (ns on CPU).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// CPU time of the whole process, exited threads included: utime + stime of
/// /proc/self/stat, in USER_HZ ticks (100 per second on Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    // Fields 14 and 15 of stat(5); after "pid (comm)" they are the 12th and 13th.
    let f: Vec<u64> = after_comm.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// `RECORD_FORMAT`: `mp3`, else WAV.
fn format() -> RecordingFormat {
    match std::env::var("RECORD_FORMAT").as_deref() {
        Ok("mp3") => RecordingFormat::Mp3,
        _ => RecordingFormat::Wav,
    }
}

/// Speech-like content so nothing is trivially zero.
fn audio() -> (Vec<i16>, Vec<i16>) {
    let left: Vec<i16> = (0..160).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
    let right = left.iter().map(|s| -s).collect();
    (left, right)
}

fn fresh_dir(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tap = args.first().is_some_and(|a| a == "tap");
    if tap {
        args.remove(0);
    }
    let calls: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let seconds: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let dir = PathBuf::from(args.get(2).map(String::as_str).unwrap_or("target/bench-record"));
    fresh_dir(&dir)?;
    let mut opts = WriterOptions::default();
    if let Some(ms) = args.get(3) {
        opts.checkpoint_every = Duration::from_millis(ms.parse()?);
    }
    if tap { tap_path(calls, seconds, &dir) } else { core(calls, seconds, &dir, opts) }?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The recording core alone, fake clock, one thread.
fn core(calls: usize, seconds: u64, dir: &Path, opts: WriterOptions) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let cpu0 = thread_cpu();
    let mut recs = Vec::with_capacity(calls);
    for i in 0..calls {
        let path = dir.join(format!("call-{i}.{}", format().as_str()));
        recs.push(Recorder::start_as(format(), &path, t0, 8000, Channels::Dual, opts)?);
    }
    let (left, right) = audio();
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
    let (mut syncs, mut sync_time, mut checkpoints) = (0u64, Duration::ZERO, 0u64);
    for r in &recs {
        syncs += r.file().stats().syncs;
        sync_time += r.file().stats().sync_time;
        checkpoints += r.file().stats().checkpoints;
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
    println!(
        "core: {} calls {calls}, {seconds} s each, dir {}, checkpoint every {:?}, fdatasync every {:?}",
        format().as_str(),
        dir.display(),
        opts.checkpoint_every,
        opts.sync_every
    );
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
        "checkpoints: {checkpoints} ({:.2} per call-second)",
        checkpoints as f64 / (calls as f64 * seconds as f64)
    );
    println!(
        "fdatasync: {syncs} calls, mean {:.3} ms, total {:.2} s",
        if syncs > 0 { sync_time.as_secs_f64() * 1e3 / syncs as f64 } else { 0.0 },
        sync_time.as_secs_f64()
    );
    Ok(())
}

/// The daemon's path in real time: taps → channels → writer threads.
fn tap_path(calls: usize, seconds: u64, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Recording {
        enabled: true,
        dir: dir.to_path_buf(),
        channels: Channels::Dual,
        format: format(),
        retention: None,
        max_disk_usage: DiskBudget::Percent(100.0),
    };
    let (left, right) = audio();
    let (mut pcmu_l, mut pcmu_r) = ([0u8; 160], [0u8; 160]);
    G711::Pcmu.encode(&left, &mut pcmu_l);
    G711::Pcmu.encode(&right, &mut pcmu_r);
    let proc0 = process_cpu();
    let feed0 = thread_cpu();
    let t0 = Instant::now();
    let mut recs = Vec::with_capacity(calls);
    for i in 0..calls {
        let rec = CallRecording::start(&cfg, &format!("call-{i}"), &format!("cc-{i}"), 1, 8000)?;
        let tap = rec.tap();
        recs.push((rec, tap));
    }
    let start_cost = t0.elapsed();
    // The media tasks: every 20 ms of wall clock, one packet each way per call.
    let t1 = Instant::now();
    for round in 0..seconds * 50 {
        let due = t1 + Duration::from_millis(20 * round);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        for (_, tap) in &recs {
            tap.heard(G711::Pcmu, &pcmu_l);
            tap.said(G711::Pcmu, &pcmu_r);
        }
    }
    let feed_cpu = thread_cpu() - feed0;
    let dropped: u64 = recs.iter().map(|(r, _)| r.dropped_packets()).sum();
    let proc1 = process_cpu();
    let t2 = Instant::now();
    let mut bytes = 0u64;
    let mut shortest = Duration::MAX;
    for (rec, tap) in recs {
        drop(tap);
        let saved = rec.stop_blocking().ok_or("a recording could not be finished")?;
        shortest = shortest.min(saved.file.duration());
        bytes += saved.file.size_bytes;
    }
    let finish_wall = t2.elapsed();
    let proc2 = process_cpu();
    let recording_cpu = (proc1 - proc0).saturating_sub(feed_cpu);
    let finish_cpu = proc2 - proc1;
    let call_minutes = calls as f64 * seconds as f64 / 60.0;
    println!("tap: {} calls {calls}, {seconds} s each in real time, dir {}", format().as_str(), dir.display());
    println!(
        "recording CPU per call-minute: {:.1} ms while the calls run + {:.1} ms to finish \
         ({:.3} % of one core per recorded call); the feeding thread (media tasks' tap calls) {:.1} ms",
        recording_cpu.as_secs_f64() * 1e3 / call_minutes,
        finish_cpu.as_secs_f64() * 1e3 / call_minutes,
        (recording_cpu + finish_cpu).as_secs_f64() / (calls as f64 * seconds as f64) * 100.0,
        feed_cpu.as_secs_f64() * 1e3 / call_minutes
    );
    println!(
        "{:.1} MB written; start {:.2} ms per recording; finish (stop → file renamed and hashed) {:.1} ms \
         per recording, {calls} in sequence; packets dropped {dropped}; shortest file {:.3} s",
        bytes as f64 / 1e6,
        start_cost.as_secs_f64() * 1e3 / calls as f64,
        finish_wall.as_secs_f64() * 1e3 / calls as f64,
        shortest.as_secs_f64()
    );
    Ok(())
}
