//! The media engine (issue 20): every call's RTP and every room's mixer on a few
//! worker threads, one per core by default (`[rtp] workers`). A worker owns many
//! jobs (`job`: the echo, a leg bridged to a PCM endpoint, the relay between two
//! SIP legs, and leg-less timer jobs, `timer`, such as a room) and drives them
//! from one loop:
//!
//! - one level-triggered `epoll_wait` (`sys`, through `nix`) returns up to 256 ready sockets at
//!   once, the batch; each ready socket gives one datagram (`recvfrom` into the
//!   worker's one buffer), which its job handles in place and, relaying, sends
//!   with one `sendto`. (`recvmmsg`/`sendmmsg` batch per socket; with one 50
//!   packets/s stream per socket a socket nearly never holds two datagrams, and
//!   the bare relay in `shared/bench/media-anchor` measured recv/sendto cheaper
//!   than recvmmsg/sendmmsg: 7.2–7.5 vs 8.0–8.5 µs per packet.)
//! - one timer wheel (`wheel`, 1 ms slots) for everything timed: the 20 ms pacer
//!   (`media::pacer`) of PCM jobs and of rooms (`room::task`, a [`TimerJob`]: its
//!   mix ticks, the commands it takes at each tick, its empty-room linger), the
//!   echo's delay line, RTCP reports, RTP timeouts, DTMF end timeouts. Every paced
//!   thing on the box runs here. A job has at most one live wheel entry.
//! - commands (start, stop, update, mute, tap, DTMF) arrive on a channel and ring
//!   the worker's eventfd; they are applied after the batch of datagrams.
//!
//! Per packet: no allocation, no lock, no log above trace, one clock read per
//! batch. The agent's WebSocket and the recorder stay off these threads: chunks
//! to an endpoint go through bounded channels with `try_send` (full = dropped and
//! counted), playback comes back through a channel the job polls at each frame.

pub mod convert;
mod job;
pub mod sys;
mod timer;
pub mod wheel;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

pub use job::{EchoJob, Events, Finished, Job, Leg, PcmJob, RelayJob};
pub use timer::{TimerJob, TimerOutcome};

use crate::media::bridge::Side;
use crate::media::leg::{LegCommand, MAX_DATAGRAM, Socket};
use job::Scratch;
use wheel::{Entry, Wheel};

/// The token of a worker's doorbell.
const BELL: u64 = u64::MAX;
/// Ready sockets taken per `epoll_wait`.
const BATCH: usize = 256;
/// Longest sleep of an idle worker, ms.
const MAX_SLEEP_MS: u16 = 1000;

enum Control {
    Start {
        id: u64,
        job: Job,
        done: oneshot::Sender<Finished>,
    },
    Command {
        id: u64,
        side: Side,
        command: LegCommand,
    },
    /// Run the job's timer pass now (a timer job has input waiting elsewhere).
    Wake {
        id: u64,
    },
    Shutdown,
}

struct WorkerHandle {
    control: std_mpsc::Sender<Control>,
    bell: Arc<sys::EventFd>,
    /// Legs running on the worker (a relay counts two).
    legs: Arc<AtomicUsize>,
    /// Timer jobs (rooms) running on the worker.
    timers: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// The engine: its workers and a job id counter.
pub struct Engine {
    /// The first worker and the others: never empty by construction.
    first: WorkerHandle,
    others: Vec<WorkerHandle>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("workers", &self.workers()).finish()
    }
}

/// A way to send commands to a running job (cloneable: both sides of a relay
/// hold one).
#[derive(Clone)]
pub struct Commands {
    id: u64,
    control: std_mpsc::Sender<Control>,
    bell: Arc<sys::EventFd>,
}

impl Commands {
    /// Queues `command` for the job's side `side` (single-leg jobs: `Side::A`).
    /// Never blocks. Errors when the engine is gone.
    pub fn send(&self, side: Side, command: LegCommand) -> Result<(), String> {
        self.control
            .send(Control::Command { id: self.id, side, command })
            .map_err(|_| "the media engine stopped".to_string())?;
        self.bell.ring();
        Ok(())
    }

    /// Makes the worker run the job's timer pass now rather than at its next
    /// deadline: a timer job (a room) whose commands arrive on a channel of its
    /// own takes them at once. Never blocks; does nothing once the engine is gone.
    pub fn wake(&self) {
        if self.control.send(Control::Wake { id: self.id }).is_ok() {
            self.bell.ring();
        }
    }
}

/// A running job: its commands and, once stopped, its legs. Dropping it stops
/// the job (as dropping a call's command channel ended its tokio task before):
/// a call that ends without `stop` leaves no media running and no ports held.
pub struct Task {
    commands: Commands,
    finished: Option<oneshot::Receiver<Finished>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        // After `stop` the job is gone and the worker ignores this.
        let _ = self.commands.send(Side::A, LegCommand::Stop);
    }
}

impl Task {
    /// The job's command handle.
    pub fn commands(&self) -> &Commands {
        &self.commands
    }

    /// Stops the job and returns its legs (`None` if the engine is gone).
    pub async fn stop(mut self) -> Option<Finished> {
        let _ = self.commands.send(Side::A, LegCommand::Stop);
        self.finished.take()?.await.ok()
    }
}

impl Engine {
    /// Starts `workers` worker threads (0 = one per core this process may run on).
    ///
    /// Errors: epoll/eventfd creation or thread spawn failed (resource limits).
    pub fn start(workers: usize) -> io::Result<Arc<Engine>> {
        let n = if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
        let first = start_worker(0)?;
        let others = (1..n).map(start_worker).collect::<io::Result<Vec<_>>>()?;
        tracing::debug!(workers = n, "media engine started");
        Ok(Arc::new(Engine { first, others, next_id: AtomicU64::new(1) }))
    }

    fn all(&self) -> impl Iterator<Item = &WorkerHandle> {
        std::iter::once(&self.first).chain(&self.others)
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        1 + self.others.len()
    }

    /// Legs running on each worker.
    pub fn load(&self) -> Vec<usize> {
        self.all().map(|w| w.legs.load(Ordering::Relaxed)).collect()
    }

    /// Timer jobs (rooms) running on each worker.
    pub fn timers(&self) -> Vec<usize> {
        self.all().map(|w| w.timers.load(Ordering::Relaxed)).collect()
    }

    /// The worker with the fewest legs plus timer jobs (a room weighs as one
    /// leg; its participants' legs are counted where their own jobs run), so
    /// rooms spread over the workers too.
    fn least_loaded(&self) -> &WorkerHandle {
        let load = |w: &WorkerHandle| w.legs.load(Ordering::Relaxed) + w.timers.load(Ordering::Relaxed);
        self.others.iter().fold(&self.first, |best, w| if load(w) < load(best) { w } else { best })
    }

    /// Runs `job` on the least loaded worker.
    pub fn spawn(&self, job: Job) -> Task {
        let worker = self.least_loaded();
        match &job {
            Job::Timer(_) => worker.timers.fetch_add(1, Ordering::Relaxed),
            job => worker.legs.fetch_add(job.legs().count(), Ordering::Relaxed),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, finished) = oneshot::channel();
        let commands = Commands { id, control: worker.control.clone(), bell: Arc::clone(&worker.bell) };
        if worker.control.send(Control::Start { id, job, done }).is_ok() {
            worker.bell.ring();
        }
        Task { commands, finished: Some(finished) }
    }

    /// Runs a leg-less timer job (a room) on the least loaded worker: the
    /// worker calls it at once, then at each deadline it asks for, until it
    /// reports [`TimerOutcome::Finished`] (its `Task::stop` then resolves with
    /// [`Finished::Timer`]) or the task is stopped or dropped.
    pub fn spawn_timer(&self, job: Box<dyn TimerJob>) -> Task {
        self.spawn(Job::Timer(job))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for w in std::iter::once(&self.first).chain(&self.others) {
            let _ = w.control.send(Control::Shutdown);
            w.bell.ring();
        }
        for w in std::iter::once(&mut self.first).chain(&mut self.others) {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Starts worker `index`: its epoll, doorbell and thread.
fn start_worker(index: usize) -> io::Result<WorkerHandle> {
    let (tx, rx) = std_mpsc::channel();
    let bell = Arc::new(sys::EventFd::new()?);
    let epoll = sys::Epoll::new()?;
    epoll.add(bell.fd(), BELL)?;
    let legs = Arc::new(AtomicUsize::new(0));
    let timers = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(epoll, Arc::clone(&bell), rx, Arc::clone(&legs), Arc::clone(&timers));
    let thread = std::thread::Builder::new().name(format!("sipbridge-media-{index}")).spawn(move || worker.run())?;
    Ok(WorkerHandle { control: tx, bell, legs, timers, thread: Some(thread) })
}

struct Slot {
    id: u64,
    generation: u32,
    job: Option<Job>,
    /// The tick of the job's live wheel entry.
    armed: Option<u64>,
    done: Option<oneshot::Sender<Finished>>,
}

struct Worker {
    epoll: sys::Epoll,
    bell: Arc<sys::EventFd>,
    control: std_mpsc::Receiver<Control>,
    legs: Arc<AtomicUsize>,
    timers: Arc<AtomicUsize>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_id: HashMap<u64, u32>,
    wheel: Wheel,
    due: Vec<Entry>,
    scratch: Scratch,
    buf: Box<[u8; MAX_DATAGRAM]>,
    /// The `epoll_wait` batch.
    events: Vec<sys::Event>,
}

fn encode(slot: u32, leg: usize, socket: Socket) -> u64 {
    (u64::from(slot) << 8) | ((leg as u64) << 1) | u64::from(socket == Socket::Rtcp)
}

fn decode(token: u64) -> (u32, usize, Socket) {
    let socket = if token & 1 == 1 { Socket::Rtcp } else { Socket::Rtp };
    ((token >> 8) as u32, ((token >> 1) & 0x7f) as usize, socket)
}

impl Worker {
    fn new(
        epoll: sys::Epoll,
        bell: Arc<sys::EventFd>,
        control: std_mpsc::Receiver<Control>,
        legs: Arc<AtomicUsize>,
        timers: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            epoll,
            bell,
            control,
            legs,
            timers,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            wheel: Wheel::new(Instant::now()),
            due: Vec::new(),
            scratch: Scratch::new(),
            buf: Box::new([0; MAX_DATAGRAM]),
            // Made here, on the starting thread: an idle worker allocates nothing
            // (no malloc arena of its own until it has calls).
            events: vec![sys::empty_event(); BATCH],
        }
    }

    fn run(mut self) {
        let mut events = std::mem::take(&mut self.events);
        loop {
            let now = Instant::now();
            let timeout = self
                .wheel
                .next_timeout(now)
                .map_or(MAX_SLEEP_MS, |d| d.as_nanos().div_ceil(1_000_000).min(u128::from(MAX_SLEEP_MS)) as u16);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("media worker: epoll_wait failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    0
                }
            };
            let now = Instant::now();
            let mut rang = false;
            for ev in &events[..n] {
                let token = sys::token(ev);
                if token == BELL {
                    rang = true;
                } else {
                    self.on_readable(token, now);
                }
            }
            if rang {
                self.bell.drain();
                if !self.on_control(now) {
                    break;
                }
            }
            self.on_timers(now);
        }
    }

    fn on_readable(&mut self, token: u64, now: Instant) {
        let (slot, leg, socket) = decode(token);
        let Worker { slots, buf, wheel, .. } = self;
        let Some(s) = slots.get_mut(slot as usize) else { return };
        let Some(job) = s.job.as_mut() else { return };
        let Some(sock) = job.socket(leg, socket) else { return };
        let Ok((n, from)) = sock.recv_from(&mut buf[..]) else { return };
        let handled = guarded(|| job.on_datagram(leg, socket, &mut buf[..n], from, now)).is_some();
        if handled {
            arm(wheel, s, slot);
        } else {
            self.abandon(slot);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        self.wheel.expire(now, &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for e in due.drain(..) {
            let Some(s) = self.slots.get_mut(e.key as usize) else { continue };
            if s.generation != e.generation || s.armed != Some(e.tick) {
                continue;
            }
            s.armed = None;
            self.pass(e.key, None, now);
        }
        self.due = due;
    }

    /// Drops a job whose code panicked: its call loses its media (the call's
    /// `stop` gets nothing back), every other call on the worker goes on.
    fn abandon(&mut self, slot: u32) {
        let Some((job, _done)) = self.remove(slot) else { return };
        tracing::error!("media job panicked: its call's media stopped (a bug; the worker goes on)");
        // Dropping may panic too (a broken invariant): contain that as well.
        let _ = guarded(move || drop(job));
    }

    /// Takes the job out of `slot`: its sockets leave the epoll, its wheel entry
    /// goes stale, the slot is free again.
    fn remove(&mut self, slot: u32) -> Option<(Job, Option<oneshot::Sender<Finished>>)> {
        let s = &mut self.slots[slot as usize];
        let job = s.job.take()?;
        for l in job.legs() {
            self.epoll.delete(l.ports.rtp.as_fd());
            self.epoll.delete(l.ports.rtcp.as_fd());
        }
        match &job {
            Job::Timer(_) => self.timers.fetch_sub(1, Ordering::Relaxed),
            job => self.legs.fetch_sub(job.legs().count(), Ordering::Relaxed),
        };
        s.generation = s.generation.wrapping_add(1);
        s.armed = None;
        self.by_id.remove(&s.id);
        let done = s.done.take();
        self.free.push(slot);
        Some((job, done))
    }

    /// Applies queued control messages; false = shut down.
    fn on_control(&mut self, now: Instant) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::Start { id, job, done }) => self.start(id, job, done, now),
                Ok(Control::Command { id, side, command }) => self.on_input(id, Some((side, command)), now),
                Ok(Control::Wake { id }) => self.on_input(id, None, now),
                Ok(Control::Shutdown) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    let live: Vec<u32> = self.by_id.values().copied().collect();
                    for slot in live {
                        self.finish(slot);
                    }
                    return false;
                }
                Err(std_mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// A command for job `id` (or, `None`, a wake-up): applied, then a timer
    /// pass (a new negotiation may move deadlines earlier, and the pass sends
    /// what the command made ready; a timer job takes its waiting input).
    fn on_input(&mut self, id: u64, command: Option<(Side, LegCommand)>, now: Instant) {
        let Some(&slot) = self.by_id.get(&id) else { return };
        if matches!(command, Some((_, LegCommand::Stop))) {
            self.finish(slot);
            return;
        }
        self.pass(slot, command, now);
    }

    /// One pass of the job in `slot`: `command` applied (if any), then what is
    /// due at `now` run; then the job is re-armed on the wheel, finished (a
    /// timer job that reported it), or abandoned (it panicked).
    fn pass(&mut self, slot: u32, command: Option<(Side, LegCommand)>, now: Instant) {
        let Some(s) = self.slots.get_mut(slot as usize) else { return };
        let Some(job) = s.job.as_mut() else { return };
        let scratch = &mut self.scratch;
        let mut running = true;
        let handled = guarded(|| {
            if let Some((side, command)) = command {
                job.on_command(side, command, now);
            }
            running = run_due(job, now, scratch);
        })
        .is_some();
        if !handled {
            self.abandon(slot);
        } else if running {
            arm(&mut self.wheel, s, slot);
        } else {
            self.finish(slot);
        }
    }

    fn start(&mut self, id: u64, job: Job, done: oneshot::Sender<Finished>, now: Instant) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { id: 0, generation: 0, job: None, armed: None, done: None });
                (self.slots.len() - 1) as u32
            }
        };
        let mut failed = None;
        for (leg, l) in job.legs().enumerate() {
            for (socket, fd) in [(Socket::Rtp, l.ports.rtp.as_fd()), (Socket::Rtcp, l.ports.rtcp.as_fd())] {
                if let Err(e) = self.epoll.add(fd, encode(slot, leg, socket)) {
                    failed = Some(e);
                }
            }
        }
        let s = &mut self.slots[slot as usize];
        s.id = id;
        s.done = Some(done);
        s.armed = None;
        s.job = Some(job);
        self.by_id.insert(id, slot);
        if let Some(e) = failed {
            tracing::error!("media worker: cannot watch the call's sockets: {e}");
            // Hands the legs back at once (a socket not watched is no matter).
            self.finish(slot);
            return;
        }
        self.pass(slot, None, now);
    }

    fn finish(&mut self, slot: u32) {
        let Some((job, done)) = self.remove(slot) else { return };
        if let Some(done) = done {
            let _ = done.send(job.finish());
        }
    }
}

/// Runs what is due in `job` at `now`; false once a timer job reported
/// [`TimerOutcome::Finished`] (the worker then removes it). Jobs with legs end
/// only when stopped. Called per wheel wake-up, never per datagram.
fn run_due(job: &mut Job, now: Instant, scratch: &mut Scratch) -> bool {
    match job {
        Job::Timer(t) => t.on_timer(now) == TimerOutcome::Running,
        job => {
            job.on_timer(now, scratch);
            true
        }
    }
}

/// Runs `f`, containing a panic (a bug in one call's media code must not end
/// every call on the worker, as it would end only its own task under tokio);
/// `None` if it panicked. Free when nothing panics. The agent I/O threads
/// (`agent::hub`) contain their streams with it too.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Arms the wheel for the job in `s` if its deadline is earlier than its live entry.
fn arm(wheel: &mut Wheel, s: &mut Slot, key: u32) {
    let Some(job) = s.job.as_ref() else { return };
    let at = job.deadline();
    let tick = wheel.tick_for(at);
    if s.armed.is_none_or(|armed| tick < armed) {
        s.armed = Some(wheel.insert(at, key, s.generation));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::values::PortRange;
    use crate::media::g711::G711;
    use crate::media::latch::LatchConfig;
    use crate::media::leg::{LegEvent, RtpSession};
    use crate::media::ports::PortPool;
    use crate::media::rtp::RtpHeader;
    use crate::sdp::codec::AudioCodec;
    use crate::sdp::{Direction, NegotiatedAudio};

    fn audio_to(peer: SocketAddr, codec: impl Into<AudioCodec>) -> NegotiatedAudio {
        let codec: AudioCodec = codec.into();
        NegotiatedAudio {
            codec,
            payload_type: codec.offered_payload_type(),
            receive_payload_type: codec.offered_payload_type(),
            telephone_event: Some(101),
            receive_telephone_event: Some(101),
            remote_rtp: Some(peer),
            remote_rtcp: Some(SocketAddr::new(peer.ip(), peer.port() + 1)),
            rtcp_mux: false,
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    fn peer() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A relay job on `engine` between two legs on ports from `base`, each
    /// answering a peer socket of the test: the caller's in `codec_a`, the far
    /// one's in `codec_b`.
    struct Relayed {
        caller: UdpSocket,
        far: UdpSocket,
        port_a: u16,
        port_b: u16,
        task: Task,
        events: tokio::sync::mpsc::UnboundedReceiver<(Side, LegEvent)>,
    }

    fn relay(engine: &Engine, base: u16, codec_a: impl Into<AudioCodec>, codec_b: impl Into<AudioCodec>) -> Relayed {
        let (codec_a, codec_b): (AudioCodec, AudioCodec) = (codec_a.into(), codec_b.into());
        let pool = PortPool::new(PortRange { first: base, last: base + 7 });
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (pa, pb) = (pool.take(ip).unwrap(), pool.take(ip).unwrap());
        let (port_a, port_b) = (pa.port, pb.port);
        let (caller, far) = (peer(), peer());
        let session = |to: &UdpSocket, codec| {
            let audio = audio_to(to.local_addr().unwrap(), codec);
            RtpSession::new(audio, LatchConfig::default(), Duration::from_secs(30), Instant::now(), SystemTime::now())
        };
        let a = Leg { ports: pa, session: session(&caller, codec_a) };
        let b = Leg { ports: pb, session: session(&far, codec_b) };
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = engine.spawn(Job::Relay(Box::new(RelayJob::new(a, b, tx, None))));
        Relayed { caller, far, port_a, port_b, task, events }
    }

    /// A relay job on a real worker: PCMU from the caller's peer reaches the far
    /// peer as PCMA from the far leg's port, a key press is reported as a digit,
    /// and stopping hands both legs back with their statistics.
    #[tokio::test]
    async fn a_worker_relays_between_two_real_legs() {
        let engine = Engine::start(1).unwrap();
        let base = 47_100 + (std::process::id() % 200) as u16 * 8;
        let Relayed { caller, far, port_a, port_b, task, mut events } = relay(&engine, base, G711::Pcmu, G711::Pcma);
        let mut pkt = [0u8; 200];
        let mut buf = [0u8; 1500];
        for seq in 0..5u16 {
            let h = RtpHeader {
                marker: false,
                payload_type: 0,
                sequence_number: seq,
                timestamp: 160 * u32::from(seq),
                ssrc: 9,
            };
            let n = h.write(&[0xff; 160], &mut pkt).unwrap();
            caller.send_to(&pkt[..n], ("127.0.0.1", port_a)).unwrap();
            let (m, from) = far.recv_from(&mut buf).unwrap();
            assert_eq!(from.port(), port_b, "sent from the far leg's port");
            assert_eq!((m, buf[1] & 0x7f), (n, 8), "PCMA now");
            assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), seq, "sequence passes through");
        }
        // A key press from the caller: events end with the E bit, three times.
        for (i, end) in [false, false, true, true, true].into_iter().enumerate() {
            let h =
                RtpHeader { marker: i == 0, payload_type: 101, sequence_number: 5 + i as u16, timestamp: 800, ssrc: 9 };
            let duration = (160 * (i as u16 + 1)).to_be_bytes();
            let payload = [5, if end { 0x8a } else { 0x0a }, duration[0], duration[1]];
            let n = h.write(&payload, &mut pkt).unwrap();
            caller.send_to(&pkt[..n], ("127.0.0.1", port_a)).unwrap();
            let (_, _) = far.recv_from(&mut buf).unwrap();
            assert_eq!(buf[1] & 0x7f, 101, "events relayed with the far leg's type");
        }
        // Quality samples (one per RTCP report) may come first on a slow machine.
        let ev = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.recv().await {
                    Some((_, LegEvent::Quality(_))) => continue,
                    other => break other,
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(ev, Some((Side::A, LegEvent::Dtmf('5'))));
        assert_eq!(engine.load(), [2]);
        let Some(Finished::Two(a, b)) = task.stop().await else { panic!("both legs back") };
        assert_eq!(a.session.stats.received(), 10, "5 audio + 5 event packets");
        assert_eq!(b.session.sent.packets, 10);
        assert_eq!(engine.load(), [0]);
    }

    /// Amplitude of `hz` in `pcm` at `rate` Hz (one DFT bin, ×2/N).
    fn amplitude(pcm: &[i16], hz: f64, rate: f64) -> f64 {
        let (mut re, mut im) = (0f64, 0f64);
        for (i, &x) in pcm.iter().enumerate() {
            let phase = std::f64::consts::TAU * hz * i as f64 / rate;
            re += f64::from(x) * phase.cos();
            im += f64::from(x) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / pcm.len().max(1) as f64
    }

    /// Relays between codecs that share no table (issue 22 point 3): each side's
    /// tone, encoded in its own codec, reaches the other side decodable in the
    /// other codec with the far leg's payload type, both ways; frequencies above
    /// 4 kHz cross between two wideband legs and none come out of a G.711 one.
    #[tokio::test]
    async fn a_relay_transcodes_between_wideband_and_narrowband_codecs() {
        use crate::media::codec::{Decoder, Encoder, MAX_FRAME_SAMPLES, MAX_PAYLOAD_BYTES};
        let engine = Engine::start(1).unwrap();
        let pairs = [
            (AudioCodec::G722, AudioCodec::Pcmu),
            (AudioCodec::Opus, AudioCodec::Pcma),
            (AudioCodec::G722, AudioCodec::Opus),
        ];
        for (k, (ca, cb)) in pairs.into_iter().enumerate() {
            let base = 45_500 + (std::process::id() % 100) as u16 * 32 + k as u16 * 8;
            let Relayed { caller, far, port_a, port_b, task, .. } = relay(&engine, base, ca, cb);
            // Each side sends 1 s of 20 ms packets: A a 1 kHz tone (plus 6 kHz when
            // wideband), B 700 Hz; each side's received packets are decoded.
            let mut sides = [(ca, cb, &caller, &far, port_a, Vec::new()), (cb, ca, &far, &caller, port_b, Vec::new())];
            for (codec, other, from, to, port, heard) in sides.iter_mut() {
                let rate = f64::from(codec.sample_rate());
                let n = (codec.sample_rate() / 50) as usize;
                let mut enc = Encoder::new(*codec).unwrap();
                let mut dec = Decoder::new(*other).unwrap();
                let (mut pkt, mut buf, mut payload) = ([0u8; 1500], [0u8; 1500], [0u8; MAX_PAYLOAD_BYTES]);
                let mut pcm = [0i16; MAX_FRAME_SAMPLES];
                for seq in 0..50u16 {
                    let frame: Vec<i16> = (0..n)
                        .map(|i| {
                            let t = (usize::from(seq) * n + i) as f64 / rate;
                            let f = if *port == port_a { 1000.0 } else { 700.0 };
                            let wide = if codec.is_wideband() && *port == port_a {
                                (std::f64::consts::TAU * 6000.0 * t).sin() * 3000.0
                            } else {
                                0.0
                            };
                            ((std::f64::consts::TAU * f * t).sin() * 6000.0 + wide) as i16
                        })
                        .collect();
                    let len = enc.encode(&frame, &mut payload).unwrap();
                    let units = codec.rtp_units_per_ms() * 20;
                    let h = RtpHeader {
                        marker: false,
                        payload_type: codec.offered_payload_type(),
                        sequence_number: seq,
                        timestamp: units * u32::from(seq),
                        ssrc: 9,
                    };
                    let m = h.write(&payload[..len], &mut pkt).unwrap();
                    from.send_to(&pkt[..m], ("127.0.0.1", *port)).unwrap();
                    let (got, _) = to.recv_from(&mut buf).unwrap();
                    assert_eq!(buf[1] & 0x7f, other.offered_payload_type(), "{codec:?} → {other:?}: far type");
                    let d = dec.decode(&buf[12..got], &mut pcm).unwrap();
                    heard.extend_from_slice(&pcm[..d]);
                }
            }
            for (codec, other, _, _, port, heard) in &sides {
                let rate = f64::from(other.sample_rate());
                let tail = &heard[heard.len() / 2..];
                let f = if *port == port_a { 1000.0 } else { 700.0 };
                let a = amplitude(tail, f, rate);
                assert!(a > 3000.0, "{codec:?} → {other:?}: {f} Hz at {a:.0}");
                if *port == port_a && codec.is_wideband() {
                    let high = amplitude(tail, 6000.0, rate);
                    if other.is_wideband() {
                        assert!(high > 1000.0, "{codec:?} → {other:?}: 6 kHz kept ({high:.0})");
                    }
                }
            }
            let Some(Finished::Two(..)) = task.stop().await else { panic!("both legs back") };
        }
    }

    /// Noise suppression on a relay: side A's `inbound` cleans what A sends
    /// before B gets it (steady room-like noise down by more than 10 dB once
    /// RNNoise has heard it), and leaves what B sends to A as it was.
    #[tokio::test]
    async fn a_relay_suppresses_the_direction_asked_for() {
        let engine = Engine::start(1).unwrap();
        let base = 46_700 + (std::process::id() % 200) as u16 * 8;
        let Relayed { caller, far, port_a, port_b, task, .. } = relay(&engine, base, G711::Pcmu, G711::Pcmu);
        let inbound = crate::media::suppress::Suppression { inbound: true, outbound: false };
        task.commands().send(Side::A, LegCommand::Suppress(inbound)).unwrap();
        // Room-like noise: white noise through a one-pole low-pass.
        let (mut x, mut low) = (7u32, 0f32);
        let mut noise = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            low = 0.9 * low + 0.3 * (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * 3000.0;
            low as i16
        };
        let energy = |p: &[u8]| p.iter().map(|&c| f64::from(G711::Pcmu.decode_sample(c)).powi(2)).sum::<f64>();
        let (mut pkt, mut buf) = ([0u8; 200], [0u8; 1500]);
        // (energy sent, energy received) over the last 0.8 s, per direction. 2 s
        // of audio sent at once: within what a leg takes ahead of real time
        // (`media::leg::INBOUND_BURST`).
        let mut a_to_b = (0f64, 0f64);
        let mut b_to_a = (0f64, 0f64);
        for seq in 0..100u16 {
            for (from, to, port, sums) in [(&caller, &far, port_a, &mut a_to_b), (&far, &caller, port_b, &mut b_to_a)] {
                let mut payload = [0u8; 160];
                payload.iter_mut().for_each(|c| *c = G711::Pcmu.encode_sample(noise()));
                let h = RtpHeader {
                    marker: false,
                    payload_type: 0,
                    sequence_number: seq,
                    timestamp: 160 * u32::from(seq),
                    ssrc: 9,
                };
                let n = h.write(&payload, &mut pkt).unwrap();
                from.send_to(&pkt[..n], ("127.0.0.1", port)).unwrap();
                let (m, _) = to.recv_from(&mut buf).unwrap();
                assert_eq!(m, n, "one packet out for one in");
                if seq >= 60 {
                    sums.0 += energy(&payload);
                    sums.1 += energy(&buf[12..m]);
                }
            }
        }
        let db = |(sent, got): (f64, f64)| 10.0 * (sent / got.max(1.0)).log10();
        assert!(db(a_to_b) > 10.0, "A → B suppressed: {:.1} dB down", db(a_to_b));
        assert!(db(b_to_a).abs() < 0.5, "B → A untouched: {:.1} dB", db(b_to_a));
        let Some(Finished::Two(..)) = task.stop().await else { panic!("both legs back") };
    }

    /// The echo job sends the caller's audio back, from its own stream, and a
    /// command (mute inbound) takes effect.
    #[tokio::test]
    async fn a_worker_echoes_and_obeys_commands() {
        let engine = Engine::start(1).unwrap();
        let base = 48_900 + (std::process::id() % 200) as u16 * 4;
        let pool = PortPool::new(PortRange { first: base, last: base + 3 });
        let ports = pool.take(std::net::IpAddr::from([127, 0, 0, 1])).unwrap();
        let port = ports.port;
        let caller = peer();
        let audio = audio_to(caller.local_addr().unwrap(), G711::Pcmu);
        let session =
            RtpSession::new(audio, LatchConfig::default(), Duration::from_secs(30), Instant::now(), SystemTime::now());
        let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
        let task = engine.spawn(Job::Echo(Box::new(EchoJob::new(Leg { ports, session }, Events::One(tx), None))));
        let mut pkt = [0u8; 200];
        let mut buf = [0u8; 1500];
        let h = RtpHeader { marker: false, payload_type: 0, sequence_number: 1, timestamp: 0, ssrc: 9 };
        let n = h.write(&[0x42; 160], &mut pkt).unwrap();
        caller.send_to(&pkt[..n], ("127.0.0.1", port)).unwrap();
        let (m, _) = caller.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[12..m], &[0x42; 160][..]);
        assert_ne!(&buf[8..12], &9u32.to_be_bytes(), "our own SSRC");
        task.commands().send(Side::A, LegCommand::MuteInbound(true)).unwrap();
        // Commands and datagrams take different paths: wait for the mute to apply
        // by checking that a later packet is not echoed (bounded).
        caller.set_read_timeout(Some(Duration::from_millis(600))).unwrap();
        let mut echoed_after_mute = 0;
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let h = RtpHeader { marker: false, payload_type: 0, sequence_number: 2 + i, timestamp: 160, ssrc: 9 };
            let n = h.write(&[0x42; 160], &mut pkt).unwrap();
            caller.send_to(&pkt[..n], ("127.0.0.1", port)).unwrap();
            if i == 2 {
                while let Ok((m, _)) = caller.recv_from(&mut buf) {
                    if m > 12 && buf[1] & 0x7f == 0 {
                        echoed_after_mute += 1;
                    }
                }
            }
        }
        assert!(echoed_after_mute <= 2, "at most what was in flight before the mute: {echoed_after_mute}");
        let Some(Finished::One(leg)) = task.stop().await else { panic!("leg back") };
        assert_eq!(leg.session.stats.received(), 4);
    }
    /// A task dropped without `stop` (a call that ended abnormally) stops its job:
    /// the worker's load goes back to zero and the port pair returns to the pool.
    #[tokio::test]
    async fn dropping_a_task_stops_its_job() {
        let engine = Engine::start(1).unwrap();
        let base = 49_800 + (std::process::id() % 100) as u16 * 4;
        let pool = PortPool::new(PortRange { first: base, last: base + 3 });
        let ports = pool.take(std::net::IpAddr::from([127, 0, 0, 1])).unwrap();
        let audio = audio_to("127.0.0.1:9".parse().unwrap(), G711::Pcmu);
        let session =
            RtpSession::new(audio, LatchConfig::default(), Duration::from_secs(30), Instant::now(), SystemTime::now());
        let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
        let task = engine.spawn(Job::Echo(Box::new(EchoJob::new(Leg { ports, session }, Events::One(tx), None))));
        assert_eq!(pool.available(), 1);
        drop(task);
        // Bounded wait for the worker to take the stop.
        let deadline = Instant::now() + Duration::from_secs(5);
        while (engine.load() != [0] || pool.available() != 2) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(engine.load(), [0]);
        assert_eq!(pool.available(), 2, "the port pair is back in the pool");
    }

    /// A leg-less job on the box's 20 ms schedule: wake-ups it saw (the first,
    /// at start, has nothing due) and whether the worker dropped it.
    struct Ticker {
        pacer: crate::media::pacer::Pacer,
        frames: u32,
        /// Finished after this many frames (`None`: never).
        last: Option<u32>,
        /// (deadline, now) of each wake-up with frames due.
        seen: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
        dropped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl TimerJob for Ticker {
        fn on_timer(&mut self, now: Instant) -> TimerOutcome {
            if self.last.is_some_and(|last| self.frames >= last) {
                return TimerOutcome::Finished;
            }
            let deadline = self.pacer.poll_timeout();
            let due = self.pacer.handle_timeout(now);
            if due.frames > 0 {
                self.seen.lock().unwrap().push((deadline, now));
            }
            self.frames += due.frames;
            if self.last.is_some_and(|last| self.frames >= last) {
                TimerOutcome::Finished
            } else {
                TimerOutcome::Running
            }
        }

        fn deadline(&self) -> Instant {
            self.pacer.poll_timeout()
        }
    }

    impl Drop for Ticker {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    type Seen = Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

    fn ticker(last: Option<u32>) -> (Box<Ticker>, Seen, Arc<std::sync::atomic::AtomicBool>) {
        let seen = Seen::default();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let job = Ticker {
            pacer: crate::media::pacer::Pacer::new(Instant::now()),
            frames: 0,
            last,
            seen: Arc::clone(&seen),
            dropped: Arc::clone(&dropped),
        };
        (Box::new(job), seen, dropped)
    }

    /// Waits (bounded) until the worker dropped the job.
    async fn until_dropped(dropped: &std::sync::atomic::AtomicBool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dropped.load(Ordering::Relaxed) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(dropped.load(Ordering::Relaxed), "the worker dropped the job");
    }

    /// A timer job is woken on its 20 ms schedule, never before a deadline, and
    /// the worker removes it once it says it is finished; it counts as a timer,
    /// not as legs, and its task's `stop` gets `Finished::Timer`.
    #[tokio::test]
    async fn a_timer_job_ticks_every_20_ms_until_it_finishes() {
        let engine = Engine::start(1).unwrap();
        let (job, seen, dropped) = ticker(Some(5));
        let task = engine.spawn_timer(job);
        until_dropped(&dropped).await;
        assert_eq!(engine.timers(), [0]);
        assert_eq!(engine.load(), [0]);
        let seen = seen.lock().unwrap().clone();
        assert!((1..=5).contains(&seen.len()), "5 frames in at most 5 wake-ups: {seen:?}");
        for (deadline, now) in &seen {
            assert!(now >= deadline, "woken before its deadline");
        }
        assert!(matches!(task.stop().await, Some(Finished::Timer)), "its done channel resolved");
    }

    /// A timer job whose task is dropped is stopped and dropped by the worker
    /// (as a call's job is): the engine holds no room nobody owns.
    #[tokio::test]
    async fn dropping_a_task_stops_its_timer_job() {
        let engine = Engine::start(2).unwrap();
        let (job, seen, dropped) = ticker(None);
        let task = engine.spawn_timer(job);
        assert_eq!(engine.timers().iter().sum::<usize>(), 1);
        // Bounded wait for a first frame, so the job is known to run.
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!seen.lock().unwrap().is_empty(), "it ticked");
        drop(task);
        until_dropped(&dropped).await;
        assert_eq!(engine.timers(), [0, 0]);
    }

    /// Timer jobs count as load: two rooms on two workers go one to each.
    #[tokio::test]
    async fn timer_jobs_spread_over_the_workers() {
        let engine = Engine::start(2).unwrap();
        let (a, _, _) = ticker(None);
        let (b, _, _) = ticker(None);
        let (ta, tb) = (engine.spawn_timer(a), engine.spawn_timer(b));
        assert_eq!(engine.timers(), [1, 1]);
        assert!(matches!(ta.stop().await, Some(Finished::Timer)));
        assert!(matches!(tb.stop().await, Some(Finished::Timer)));
        assert_eq!(engine.timers(), [0, 0]);
    }

    /// A job that only counts its timer passes and is due in an hour.
    struct Sleeper {
        passes: Arc<AtomicUsize>,
        due: Instant,
    }

    impl TimerJob for Sleeper {
        fn on_timer(&mut self, _now: Instant) -> TimerOutcome {
            self.passes.fetch_add(1, Ordering::Relaxed);
            TimerOutcome::Running
        }

        fn deadline(&self) -> Instant {
            self.due
        }
    }

    /// `Commands::wake` runs a timer job now (a room's command is taken at once,
    /// not at its next tick).
    #[tokio::test]
    async fn a_wake_runs_a_timer_job_before_its_deadline() {
        let engine = Engine::start(1).unwrap();
        let passes = Arc::new(AtomicUsize::new(0));
        let due = Instant::now() + Duration::from_secs(3600);
        let task = engine.spawn_timer(Box::new(Sleeper { passes: Arc::clone(&passes), due }));
        let until = |n: usize| {
            let passes = Arc::clone(&passes);
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                while passes.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                passes.load(Ordering::Relaxed)
            }
        };
        assert_eq!(until(1).await, 1, "the pass at start");
        for n in 2..5 {
            task.commands().wake();
            assert_eq!(until(n).await, n, "one pass per wake");
        }
        assert!(matches!(task.stop().await, Some(Finished::Timer)));
    }
}
