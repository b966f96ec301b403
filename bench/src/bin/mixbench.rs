//! `mixbench` — what local rooms cost and how many participants the box holds
//! (issue 10; results in docs/benchmarks.md, "Rooms").
//!
//! ```text
//! cargo run --release -p sipbridge-bench --features rooms --bin mixbench -- \
//!     [mixer] [rooms] [--seconds S] [--max-seconds T]
//! ```
//!
//! * `mixer`: the sans-IO `room::mixer::Mixer` alone on one thread, rooms of 3,
//!   10, 50 and 100 participants: all 8000 Hz; all 16000 Hz; one 16000 Hz
//!   participant and the rest 8000 Hz (resampled at the edges). Then the whole
//!   per-participant input path of a SIP participant at 8000 Hz (G.711 decode,
//!   jitter buffer push and pop) plus the mix. CPU is the thread's own
//!   (`CLOCK_THREAD_CPUTIME_ID`), each point runs until 0.5 s of CPU or 200 000
//!   ticks. Prints ns per participant per tick, µs per tick, and CPU-s per
//!   participant-minute (3000 ticks).
//! * `rooms`: real rooms (`room::Rooms`), each a timer job on a media engine
//!   with 2 worker threads (as in the daemon), fed from a tokio multi-thread
//!   runtime with 2 workers. Every participant is a SIP participant attached
//!   through a real `room_pair`; one feeder task per room plays the leg tasks' part: every
//!   20 ms it sends each participant one PCMU chunk (with RTP timestamps) and
//!   drains the frames the room played to it. Each point runs 1 s of warm-up
//!   then `--seconds` (default 30); a tick is late when it is mixed more than
//!   5 ms after its deadline on the clock (or skipped). Searches the largest
//!   single room, then the largest total across 5 rooms, with ≤ 0.1 % late ticks
//!   beyond the machine's own (a baseline of bare tokio tasks ticking first)
//!   (the first size above it ends a search). CPU is the whole process
//!   (getrusage: rooms and feeders).
//!
//! Without `mixer` or `rooms`, runs both. `--max-seconds` (default 1200, at most
//! 3600) bounds the whole run: a search stops when the next point would pass it.
//! Output: one JSON object per point on stdout, a summary table on stderr.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sipbridge::media::engine::Engine;
use sipbridge::media::g711::G711;
use sipbridge::media::pcm::{CHUNK_BYTES, Chunk, ChunkFormat, Direction, PcmPort, room_pair};
use sipbridge::media::transcode::RateConverter;
use sipbridge::room::jitter::{DEFAULT_TARGET_DELAY, JitterBuffer};
use sipbridge::room::mixer::{Mixer, Rate, Role};
use sipbridge::room::{Participant, ParticipantHandle, RoomOptions, Rooms};

/// Room sizes of the mixer benchmark.
const MIXER_SIZES: [usize; 4] = [3, 10, 50, 100];
/// Single-room sizes tried, ascending.
const SINGLE_ROOM_SIZES: [usize; 10] = [50, 100, 200, 400, 600, 800, 1000, 1300, 1600, 2000];
/// Rooms in the multi-room search, and participants per room tried.
const MULTI_ROOMS: usize = 5;
const MULTI_ROOM_SIZES: [usize; 9] = [20, 50, 100, 150, 200, 250, 300, 400, 500];
/// Late-tick ratio allowed (0.1 %).
const LATE_RATIO: f64 = 0.001;
/// Ticks per minute.
const TICKS_PER_MINUTE: f64 = 3000.0;

fn thread_cpu_ns() -> u64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One second of a tone at `rate` Hz, for inputs.
fn tone(freq: f64, rate: u32) -> Vec<i16> {
    (0..rate)
        .map(|n| (6000.0 * (2.0 * std::f64::consts::PI * freq * f64::from(n) / f64::from(rate)).sin()) as i16)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Narrowband,
    Wideband,
    MixedRates,
    /// Narrowband, with G.711 decode and a jitter buffer per participant.
    InputPath,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Narrowband => "8k",
            Scenario::Wideband => "16k",
            Scenario::MixedRates => "16k-mixed",
            Scenario::InputPath => "8k+jitter+g711",
        }
    }
}

/// Mixer CPU per tick for `n` participants: (ns per tick, ticks measured).
fn mixer_point(n: usize, scenario: Scenario) -> (f64, u64) {
    let mut mixer = Mixer::new();
    let rates: Vec<Rate> = (0..n)
        .map(|i| match scenario {
            Scenario::Wideband => Rate::Wideband,
            Scenario::MixedRates if i == 0 => Rate::Wideband,
            _ => Rate::Narrowband,
        })
        .collect();
    let keys: Vec<_> = rates.iter().map(|&r| mixer.add(r, Role::Participant)).collect();
    let signals: Vec<Vec<i16>> = rates.iter().enumerate().map(|(i, r)| tone(300.0 + 37.0 * i as f64, r.hz())).collect();
    // For the input path: each participant's audio as PCMU packets, and a jitter buffer.
    let pcmu: Vec<Vec<u8>> = signals
        .iter()
        .map(|s| {
            let mut b = vec![0u8; s.len()];
            G711::Pcmu.encode(s, &mut b);
            b
        })
        .collect();
    let mut jitters: Vec<JitterBuffer> = (0..n).map(|_| JitterBuffer::new(8000, DEFAULT_TARGET_DELAY)).collect();
    let mut decoded = [0i16; 160];
    let mut tick = |t: u64| {
        for (i, &k) in keys.iter().enumerate() {
            let frame = rates[i].frame_samples();
            let start = (t as usize * frame) % signals[i].len();
            if let Scenario::InputPath = scenario {
                let packet = &pcmu[i][start..start + frame];
                let len = G711::Pcmu.decode(packet, &mut decoded);
                jitters[i].push((t as u32).wrapping_mul(160), &decoded[..len]);
                if let Some(input) = mixer.input_mut(k) {
                    jitters[i].pop_frame(input);
                }
            } else if let Some(input) = mixer.input_mut(k) {
                input.copy_from_slice(&signals[i][start..start + frame]);
            }
        }
        mixer.mix();
        for &k in &keys {
            black_box(mixer.output(k).map(|o| o[o.len() / 2]));
        }
    };
    for t in 0..100 {
        tick(t);
    }
    let cpu0 = thread_cpu_ns();
    let mut ticks = 0u64;
    while ticks < 200_000 && thread_cpu_ns() - cpu0 < 500_000_000 {
        for _ in 0..10 {
            tick(100 + ticks);
            ticks += 1;
        }
    }
    let ns = (thread_cpu_ns() - cpu0) as f64;
    (ns / ticks as f64, ticks)
}

/// CPU of one 20 ms frame through the 8→16 kHz upsampler and back down (the
/// rooms' converters, `RateConverter`), in ns.
fn resampler_pair_ns() -> f64 {
    let mut up = RateConverter::up().unwrap();
    let mut down = RateConverter::down().unwrap();
    let input = tone(440.0, 8000);
    let (mut wide, mut narrow) = ([0i16; 320], [0i16; 160]);
    let cpu0 = thread_cpu_ns();
    let frames = 100_000u64;
    for f in 0..frames as usize {
        let start = (f * 160) % input.len();
        let mut k = 0;
        up.process(black_box(&input[start..start + 160]), |s| {
            wide[k % 320] = s;
            k += 1;
        });
        let mut k = 0;
        down.process(black_box(&wide), |s| {
            narrow[k % 160] = s;
            k += 1;
        });
        black_box(narrow[80]);
    }
    (thread_cpu_ns() - cpu0) as f64 / frames as f64
}

fn run_mixer() {
    let pair = resampler_pair_ns();
    println!("{{\"bench\": \"resampler\", \"ns_per_frame_up_and_down\": {pair:.1}}}");
    eprintln!("\nresampler: 20 ms up 8→16 kHz and back down: {pair:.0} ns");
    eprintln!("\nmixer CPU (one thread)\n");
    eprintln!("{:<16} {:>5} {:>14} {:>12} {:>22}", "scenario", "N", "ns/part./tick", "µs/tick", "CPU-s/part.-minute");
    for scenario in [Scenario::Narrowband, Scenario::Wideband, Scenario::MixedRates, Scenario::InputPath] {
        for n in MIXER_SIZES {
            let (ns_tick, ticks) = mixer_point(n, scenario);
            let per_part = ns_tick / n as f64;
            let cpu_minute = per_part * TICKS_PER_MINUTE / 1e9;
            println!(
                "{{\"bench\": \"mixer\", \"scenario\": \"{}\", \"participants\": {n}, \"ticks\": {ticks}, \
                 \"ns_per_participant_tick\": {per_part:.1}, \"us_per_tick\": {:.3}, \
                 \"cpu_s_per_participant_minute\": {cpu_minute:.6}}}",
                scenario.name(),
                ns_tick / 1000.0
            );
            eprintln!("{:<16} {n:>5} {per_part:>14.0} {:>12.2} {cpu_minute:>22.6}", scenario.name(), ns_tick / 1000.0);
        }
    }
}

/// One feeder: the leg tasks of one room. Returns frames received.
async fn feed(mut ports: Vec<PcmPort>, stop: Instant) -> u64 {
    let audio = tone(440.0, 8000);
    let mut pcmu = vec![0u8; audio.len()];
    G711::Pcmu.encode(&audio, &mut pcmu);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut received = 0u64;
    let mut t = 0usize;
    while Instant::now() < stop {
        tick.tick().await;
        let start = (t * 160) % pcmu.len();
        for (i, port) in ports.iter_mut().enumerate() {
            let mut c = Chunk {
                direction: Direction::Heard,
                codec: ChunkFormat::G711(G711::Pcmu),
                len: 160,
                rtp_timestamp: (t as u32).wrapping_mul(160).wrapping_add(i as u32 * 7919),
                data: [0; CHUNK_BYTES],
            };
            c.data[..160].copy_from_slice(&pcmu[start..start + 160]);
            let _ = port.chunks.try_send(c);
            if let Some(frames) = port.frames.as_mut() {
                while let Ok(f) = frames.try_recv() {
                    black_box(f.samples[0]);
                    received += 1;
                }
            }
        }
        t += 1;
    }
    received
}

/// Result of one rooms point.
struct Point {
    ticks: u64,
    late: u64,
    dropped: u64,
    resyncs: u64,
    busy: Duration,
    max_lateness: Duration,
    cpu_s: f64,
    received_per_participant_s: f64,
}

async fn rooms_point(room_count: usize, per_room: usize, seconds: u64) -> Result<Point, String> {
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::start(2).map_err(|e| format!("media engine: {e}"))?;
    let rooms = Rooms::new(tx, engine);
    let options = RoomOptions { max_participants: per_room, ..RoomOptions::default() };
    let warm_up = Duration::from_secs(1);
    let stop = Instant::now() + warm_up + Duration::from_secs(seconds) + Duration::from_millis(100);
    let mut handles: Vec<ParticipantHandle> = Vec::new();
    let mut feeders = Vec::new();
    for r in 0..room_count {
        let name = format!("bench-{r}");
        let mut ports = Vec::new();
        for p in 0..per_room {
            let (port, endpoint) = room_pair(64, true, false);
            let h = rooms
                .join(&name, options, Participant::leg(format!("r{r}-p{p}"), endpoint))
                .await
                .map_err(|e| format!("join {name}: {e}"))?;
            handles.push(h);
            ports.push(port);
        }
        feeders.push(tokio::spawn(feed(ports, stop)));
    }
    tokio::time::sleep(warm_up).await;
    let totals = |rooms: &Rooms| {
        rooms.list().iter().fold((0, 0, 0, 0, Duration::ZERO, Duration::ZERO), |a, r| {
            let s = r.stats;
            (
                a.0 + s.ticks,
                a.1 + s.late_ticks,
                a.2 + s.dropped_frames,
                a.3 + s.resyncs,
                a.4 + s.busy,
                a.5.max(s.max_lateness),
            )
        })
    };
    let before = totals(&rooms);
    let cpu0 = sipbridge_bench::cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = totals(&rooms);
    let cpu_s = sipbridge_bench::cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let mut received = 0;
    for f in feeders {
        received += f.await.map_err(|e| format!("feeder: {e}"))?;
    }
    drop(handles);
    // Let the rooms end before the next point.
    for _ in 0..100 {
        if rooms.list().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let participants = (room_count * per_room) as f64;
    Ok(Point {
        ticks: after.0 - before.0,
        late: after.1 - before.1,
        dropped: after.2 - before.2,
        resyncs: after.3 - before.3,
        busy: after.4 - before.4,
        max_lateness: after.5,
        cpu_s: cpu_s * wall.recip() * seconds as f64,
        received_per_participant_s: received as f64 / participants / (wall + warm_up.as_secs_f64()),
    })
}

/// Tries `sizes` per room with `room_count` rooms until a point's late ratio
/// exceeds the machine's own (`baseline`, see [`timer_baseline`]) by more than
/// the allowed ratio, or the time budget ends; returns the largest passing
/// per-room size.
async fn search(room_count: usize, sizes: &[usize], seconds: u64, deadline: Instant, baseline: f64) -> Option<usize> {
    let mut best = None;
    for &per_room in sizes {
        if Instant::now() + Duration::from_secs(seconds + 3) > deadline {
            eprintln!("time budget reached");
            break;
        }
        let p = match rooms_point(room_count, per_room, seconds).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("mixbench: {e}");
                break;
            }
        };
        let total = room_count * per_room;
        let ratio = if p.ticks > 0 { p.late as f64 / p.ticks as f64 } else { 1.0 };
        let minutes = total as f64 * seconds as f64 / 60.0;
        let cpu_minute = p.cpu_s / minutes;
        let us_tick = p.busy.as_secs_f64() * 1e6 / p.ticks.max(1) as f64;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?").to_string();
        println!(
            "{{\"bench\": \"rooms\", \"rooms\": {room_count}, \"per_room\": {per_room}, \"participants\": {total}, \
             \"seconds\": {seconds}, \"ticks\": {}, \"late_ticks\": {}, \"late_ratio\": {ratio:.6}, \"resyncs\": {}, \
             \"max_lateness_ms\": {:.2}, \"dropped_frames\": {}, \"us_per_tick\": {us_tick:.1}, \
             \"process_cpu_s_per_participant_minute\": {cpu_minute:.5}, \"process_cpu_cores\": {:.3}, \
             \"frames_received_per_participant_s\": {:.1}, \"load1\": \"{load}\"}}",
            p.ticks,
            p.late,
            p.resyncs,
            p.max_lateness.as_secs_f64() * 1e3,
            p.dropped,
            p.cpu_s / seconds as f64,
            p.received_per_participant_s
        );
        eprintln!(
            "{room_count} × {per_room:>4} = {total:>5}: late {}/{} ({:.3} %), max lateness {:.1} ms, \
             tick {us_tick:.0} µs, process {:.2} cores, {cpu_minute:.4} CPU-s/part.-min, dropped {}, load {load}",
            p.late,
            p.ticks,
            ratio * 100.0,
            p.max_lateness.as_secs_f64() * 1e3,
            p.cpu_s / seconds as f64,
            p.dropped
        );
        if ratio - baseline > LATE_RATIO {
            break;
        }
        best = Some(per_room);
    }
    best
}

/// The machine's own timer noise, with no room work: `tasks` tokio tasks on the
/// same 2-worker runtime tick every 20 ms on the clock (bare timers; the rooms
/// themselves are woken by the engine's wheel, through `epoll_wait` timeouts)
/// for `seconds` and count ticks woken more than 5 ms late. If this baseline is
/// already above 0.1 %, the rooms' late-tick figure measures the VM, not rooms.
async fn timer_baseline(tasks: usize, seconds: u64) -> (u64, u64, Duration) {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        handles.push(tokio::spawn(async move {
            let (mut ticks, mut late, mut worst) = (0u64, 0u64, Duration::ZERO);
            let mut next = tokio::time::Instant::now() + Duration::from_millis(20);
            while Instant::now() < stop {
                tokio::time::sleep_until(next).await;
                let lateness = tokio::time::Instant::now().saturating_duration_since(next);
                worst = worst.max(lateness);
                ticks += 1;
                late += u64::from(lateness > Duration::from_millis(5));
                next += Duration::from_millis(20);
            }
            (ticks, late, worst)
        }));
    }
    let (mut ticks, mut late, mut worst) = (0, 0, Duration::ZERO);
    for h in handles {
        if let Ok((t, l, w)) = h.await {
            ticks += t;
            late += l;
            worst = worst.max(w);
        }
    }
    (ticks, late, worst)
}

fn main() -> ExitCode {
    let (mut mixer, mut rooms) = (false, false);
    let mut seconds: u64 = 30;
    let mut max_seconds: u64 = 1200;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "mixer" => mixer = true,
            "rooms" => rooms = true,
            "--seconds" | "--max-seconds" => {
                let v = args.next().and_then(|v| v.parse::<u64>().ok());
                match (a.as_str(), v) {
                    ("--seconds", Some(s)) if (5..=300).contains(&s) => seconds = s,
                    ("--max-seconds", Some(s)) if (10..=3600).contains(&s) => max_seconds = s,
                    _ => {
                        eprintln!("--seconds must be 5..=300, --max-seconds 10..=3600");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => {
                eprintln!("usage: mixbench [mixer] [rooms] [--seconds S] [--max-seconds T]");
                return ExitCode::from(2);
            }
        }
    }
    if !mixer && !rooms {
        (mixer, rooms) = (true, true);
    }
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    if mixer {
        run_mixer();
    }
    if rooms {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("mixbench: runtime: {e}");
                return ExitCode::from(1);
            }
        };
        rt.block_on(async {
            eprintln!("\nrooms on a 2-worker media engine, {seconds} s per point, late = > 5 ms after the deadline\n");
            let (ticks, late, worst) = timer_baseline(MULTI_ROOMS, seconds).await;
            println!(
                "{{\"point\":\"timer_baseline\",\"tasks\":{MULTI_ROOMS},\"ticks\":{ticks},\"late_ticks\":{late},\"max_lateness_ms\":{:.2}}}",
                worst.as_secs_f64() * 1e3
            );
            eprintln!(
                "baseline (no rooms, {MULTI_ROOMS} tasks ticking): late {late}/{ticks} ({:.3} %), max lateness {:.1} ms",
                100.0 * late as f64 / ticks.max(1) as f64,
                worst.as_secs_f64() * 1e3
            );
            let baseline = late as f64 / ticks.max(1) as f64;
            let single = search(1, &SINGLE_ROOM_SIZES, seconds, deadline, baseline).await;
            let multi = search(MULTI_ROOMS, &MULTI_ROOM_SIZES, seconds, deadline, baseline).await;
            eprintln!(
                "\nlargest single room with ≤ 0.1 % late ticks beyond the baseline: {}\nlargest total across {MULTI_ROOMS} rooms: {}",
                single.map_or("none".into(), |n| n.to_string()),
                multi.map_or("none".into(), |n| format!("{} ({MULTI_ROOMS} × {n})", MULTI_ROOMS * n)),
            );
        });
    }
    ExitCode::SUCCESS
}
