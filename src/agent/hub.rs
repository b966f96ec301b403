//! The agent I/O threads (issue 20 point 2): once connected, every agent stream
//! of the box is driven by one of a few threads (`sipbridge-agent-N`, as many as
//! the media engine has workers, `[rtp] workers`), never by a media worker and
//! never by the async runtime's workers.
//!
//! A thread owns many streams ([`Driven`]) and one loop:
//!
//! - one level-triggered `epoll_wait` (`media::engine::sys`) over its streams'
//!   sockets (input always, output only while bytes wait) and a doorbell
//!   eventfd;
//! - the channels from the media engine (chunks of call audio, reached marks)
//!   and from the call (DTMF, stop) are tokio channels polled with a waker of
//!   this thread's own: a send from a media worker marks the stream ready and
//!   rings the doorbell, at most once until the thread has looked (the
//!   doorbell is written only while the thread sleeps);
//! - one heap of deadlines (pings, the 2 s close, playback retries);
//! - after a round with work, a 1 ms pause (`COALESCE`) so the next round
//!   takes a batch: ~550 wake-ups a second at 400 agent calls instead of
//!   ~6 800 (`docs/benchmarks.md`, Media engine, eighth pass).
//!
//! A panic in one stream's code ends that stream only (the hub drops it; its
//! task reports `streaming.failed` and the call applies `on_disconnect`), as a
//! media worker contains a panicking job. Should a thread end all the same, it
//! is marked dead: its streams' tasks hear of it, and new streams go to the
//! other threads.
//!
//! No task, no per-stream `select!`, no reactor registration per frame: a frame
//! to the agent is one channel pop and one `sendto`, a frame from it one
//! `recvfrom` and one `try_send` into the leg's playback queue. Queues toward a
//! media worker are bounded and only ever `try_send`: a full one pauses reading
//! that agent's socket, never a worker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use crate::media::engine::guarded;
use crate::media::engine::sys::{self, Epoll, EventFd};

/// Why a stream is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It was just attached.
    Start,
    /// One of its channels has something (or closed).
    Wake,
    /// Its socket has input, an error or a hang-up.
    Readable,
    /// Its socket can take the bytes that wait.
    Writable,
    /// Its deadline ([`Wants::deadline`]) passed.
    Timer,
}

/// Whether a stream goes on after being driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep driving it.
    Continue,
    /// It has ended: the thread drops it (closing its socket).
    Done,
}

/// What a stream waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    /// Report input on the socket.
    pub read: bool,
    /// Report room to write (only while bytes wait: the epoll is level-triggered).
    pub write: bool,
    /// Drive it with [`Why::Timer`] at this instant.
    pub deadline: Option<Instant>,
}

/// A connected stream an I/O thread drives. Every method runs on that thread
/// (outside the async runtime: channels and events only, no spawning) and
/// must not block.
pub trait Driven: Send {
    /// The socket to watch.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Handles `why`; channels are polled with `cx`, whose waker brings
    /// [`Why::Wake`].
    fn drive(&mut self, why: Why, cx: &mut Context<'_>, now: Instant) -> Step;
    /// Asked after every [`Driven::drive`].
    fn wants(&self) -> Wants;
    /// The thread cannot go on driving it (its socket cannot be watched): it
    /// ends now with this failure, and the thread drops it.
    fn abort(&mut self, reason: String);
}

/// The threads, started on the first stream.
static HUBS: OnceLock<Vec<Arc<Shared>>> = OnceLock::new();
/// Threads to start (0: one per core this process may run on).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many I/O threads the first stream starts (the media engine's
/// worker count; 0 = one per core). Later calls change nothing once started.
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// Hands `stream` to the least loaded I/O thread, which drives it with
/// [`Why::Start`] at once. Errors (with the stream back): no thread could be
/// started (the reason, as a `failure_reason`).
pub fn attach<D: Driven + 'static>(stream: D) -> Result<(), (D, String)> {
    let hubs = HUBS.get_or_init(start_all);
    let mut by_load: Vec<&Arc<Shared>> = hubs.iter().collect();
    by_load.sort_by_key(|h| h.load.load(Ordering::Relaxed));
    for hub in by_load {
        let mut inbox = lock(&hub.inbox);
        // Checked under the inbox's lock: a thread that ends empties its inbox
        // under it, so no stream is left in a dead thread's.
        if !hub.alive.load(Ordering::Acquire) {
            continue;
        }
        hub.load.fetch_add(1, Ordering::Relaxed);
        inbox.push(Box::new(stream));
        drop(inbox);
        hub.ring();
        return Ok(());
    }
    Err((stream, "no agent I/O thread is running".into()))
}

/// What a thread shares with the threads that feed it.
struct Shared {
    bell: EventFd,
    /// The thread sleeps (or is about to): a ring must write the eventfd.
    armed: AtomicBool,
    /// Streams whose channels woke them, in order.
    ready: Mutex<Vec<u64>>,
    /// Streams attached and not yet taken.
    inbox: Mutex<Vec<Box<dyn Driven>>>,
    /// Streams on this thread.
    load: AtomicUsize,
    /// The thread runs (cleared, under `inbox`'s lock, if it ever ends).
    alive: AtomicBool,
}

impl Shared {
    fn ring(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.bell.ring();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn start_all() -> Vec<Arc<Shared>> {
    let n = match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    (0..n)
        .filter_map(|i| start(i).inspect_err(|e| tracing::error!("agent I/O thread {i} not started: {e}")).ok())
        .collect()
}

fn start(index: usize) -> io::Result<Arc<Shared>> {
    let shared = Arc::new(Shared {
        bell: EventFd::new()?,
        armed: AtomicBool::new(false),
        ready: Mutex::new(Vec::new()),
        inbox: Mutex::new(Vec::new()),
        load: AtomicUsize::new(0),
        alive: AtomicBool::new(true),
    });
    let epoll = Epoll::new()?;
    epoll.add(shared.bell.fd(), BELL)?;
    let hub =
        Hub { shared: Arc::clone(&shared), epoll, slots: HashMap::new(), timers: BinaryHeap::new(), next_token: 0 };
    std::thread::Builder::new().name(format!("sipbridge-agent-{index}")).spawn(move || hub.run())?;
    Ok(shared)
}

/// The doorbell's token.
const BELL: u64 = u64::MAX;
/// Ready sockets taken per `epoll_wait`.
const BATCH: usize = 256;
/// After a round that had work, the thread pauses this long before it looks
/// again, so the next round finds a batch: the frames of many calls per wake-up
/// instead of two or three (at 400 agent calls on one core, waking per
/// arrival cost ~7 000 context switches a second). It adds at most this much
/// to each direction of the agent path.
const COALESCE: Duration = Duration::from_millis(1);
/// Longest sleep of an idle thread.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// A stream's waker: marks it ready and rings the doorbell, once until the
/// thread has driven it.
struct Ready {
    token: u64,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for Ready {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.shared.ready).push(self.token);
            self.shared.ring();
        }
    }
}

struct Slot {
    stream: Box<dyn Driven>,
    ready: Arc<Ready>,
    waker: Waker,
    /// What the epoll watches for it (`None`: not in the epoll).
    watched: Option<(bool, bool)>,
    /// Its live entry in the heap.
    deadline: Option<Instant>,
}

struct Hub {
    shared: Arc<Shared>,
    epoll: Epoll,
    slots: HashMap<u64, Slot>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_token: u64,
}

/// Marks its thread dead when the thread ends, however it ends (a panic
/// outside any one stream's code included): streams no longer go to it, and
/// those waiting in its inbox are dropped, so their tasks hear of it.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        let mut inbox = lock(&self.0.inbox);
        self.0.alive.store(false, Ordering::Release);
        let orphans = std::mem::take(&mut *inbox);
        drop(inbox);
        tracing::error!(
            streams = self.0.load.load(Ordering::Relaxed),
            "an agent I/O thread ended: its streams end with it"
        );
        drop(orphans);
    }
}

impl Hub {
    fn run(mut self) {
        let _alive = Alive(Arc::clone(&self.shared));
        let mut events = vec![sys::empty_event(); BATCH];
        let mut woken = Vec::new();
        loop {
            self.shared.armed.store(true, Ordering::SeqCst);
            let busy = !lock(&self.shared.ready).is_empty() || !lock(&self.shared.inbox).is_empty();
            let timeout = if busy {
                0
            } else {
                let until = self
                    .timers
                    .peek()
                    .map_or(MAX_SLEEP, |Reverse((at, _))| at.saturating_duration_since(Instant::now()).min(MAX_SLEEP));
                // Round up: waking early would only spin.
                u16::try_from(until.as_micros().div_ceil(1000)).unwrap_or(u16::MAX)
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("agent I/O thread: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    0
                }
            };
            self.shared.armed.store(false, Ordering::SeqCst);
            let now = Instant::now();
            for event in &events[..n] {
                let token = sys::token(event);
                if token == BELL {
                    self.shared.bell.drain();
                    continue;
                }
                if sys::writable(event) {
                    self.drive(token, Why::Writable, now);
                }
                if sys::readable(event) {
                    self.drive(token, Why::Readable, now);
                }
            }
            let attached = std::mem::take(&mut *lock(&self.shared.inbox));
            for stream in attached {
                let token = self.next_token;
                self.next_token += 1;
                let ready = Arc::new(Ready { token, queued: AtomicBool::new(false), shared: Arc::clone(&self.shared) });
                let waker = Waker::from(Arc::clone(&ready));
                self.slots.insert(token, Slot { stream, ready, waker, watched: None, deadline: None });
                self.drive(token, Why::Start, now);
            }
            std::mem::swap(&mut woken, &mut *lock(&self.shared.ready));
            let worked = n > 0 || !woken.is_empty();
            for token in woken.drain(..) {
                if let Some(slot) = self.slots.get(&token) {
                    slot.ready.queued.store(false, Ordering::Release);
                    self.drive(token, Why::Wake, now);
                }
            }
            while let Some(&Reverse((at, token))) = self.timers.peek() {
                if at > now {
                    break;
                }
                self.timers.pop();
                let Some(slot) = self.slots.get_mut(&token) else { continue };
                if slot.deadline == Some(at) {
                    slot.deadline = None;
                    self.drive(token, Why::Timer, now);
                }
            }
            if worked {
                // Let frames gather (the doorbell stays quiet meanwhile).
                std::thread::sleep(COALESCE);
            }
        }
    }

    fn drive(&mut self, token: u64, why: Why, now: Instant) {
        let Some(slot) = self.slots.get_mut(&token) else { return };
        let mut cx = Context::from_waker(&slot.waker);
        let stream = &mut slot.stream;
        // A bug in one stream's code ends that stream (its task reports the
        // stream failed), not every stream on the thread; free when nothing
        // panics.
        let driven = guarded(|| match stream.drive(why, &mut cx, now) {
            Step::Continue => Some(stream.wants()),
            Step::Done => None,
        });
        let wants = match driven {
            Some(Some(wants)) => wants,
            Some(None) => return self.remove(token),
            None => {
                tracing::error!("an agent stream's code panicked ({why:?}): the stream ends");
                return self.remove(token);
            }
        };
        let watch = (wants.read || wants.write).then_some((wants.read, wants.write));
        if watch != slot.watched {
            let result = match watch {
                Some((read, write)) => self.epoll.watch(slot.stream.fd(), token, read, write),
                None => {
                    self.epoll.delete(slot.stream.fd());
                    Ok(())
                }
            };
            match result {
                Ok(()) => slot.watched = watch,
                Err(e) => {
                    // Unwatched, it would hear nothing more until its pings
                    // failed (30 s): it ends now, and its call hears why.
                    tracing::error!("agent I/O thread: cannot watch a stream's socket: {e}");
                    let stream = &mut slot.stream;
                    let reason = format!("the agent's socket cannot be watched: {e}");
                    let _ = guarded(|| stream.abort(reason));
                    return self.remove(token);
                }
            }
        }
        if wants.deadline != slot.deadline {
            slot.deadline = wants.deadline;
            if let Some(at) = wants.deadline {
                self.timers.push(Reverse((at, token)));
            }
        }
    }

    /// Drops an ended stream (closing its socket); a panic in its drop ends
    /// nothing else.
    fn remove(&mut self, token: u64) {
        let Some(slot) = self.slots.remove(&token) else { return };
        if slot.watched.is_some() {
            self.epoll.delete(slot.stream.fd());
        }
        let _ = guarded(move || drop(slot));
        self.shared.load.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    use super::*;

    /// A stream that reports what it is driven for, and panics on start if told to.
    struct Probe {
        sock: UnixStream,
        /// Watched instead of the socket when set (a file no epoll takes).
        file: Option<std::fs::File>,
        panics: bool,
        seen: mpsc::Sender<Why>,
        aborted: Option<mpsc::Sender<String>>,
    }

    impl Driven for Probe {
        fn fd(&self) -> BorrowedFd<'_> {
            match &self.file {
                Some(f) => f.as_fd(),
                None => self.sock.as_fd(),
            }
        }
        fn abort(&mut self, reason: String) {
            if let Some(tx) = &self.aborted {
                let _ = tx.send(reason);
            }
        }
        fn drive(&mut self, why: Why, _cx: &mut Context<'_>, _now: Instant) -> Step {
            let _ = self.seen.send(why);
            if self.panics {
                panic!("test: a bug in one stream's code");
            }
            if why == Why::Readable {
                let mut buf = [0u8; 16];
                let _ = io::Read::read(&mut self.sock, &mut buf);
            }
            Step::Continue
        }
        fn wants(&self) -> Wants {
            Wants { read: true, write: false, deadline: None }
        }
    }

    fn probe(panics: bool) -> (Probe, UnixStream, mpsc::Receiver<Why>) {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        let (seen, rx) = mpsc::channel();
        (Probe { sock: ours, file: None, panics, seen, aborted: None }, theirs, rx)
    }

    /// A stream whose descriptor the epoll refuses (`/dev/null` cannot be
    /// polled: `epoll_ctl` says EPERM) ends at once with the reason, rather
    /// than waiting unheard for its pings to fail.
    #[test]
    fn a_stream_whose_socket_cannot_be_watched_ends_at_once() {
        const WAIT: Duration = Duration::from_secs(5);
        let (mut p, _peer, seen) = probe(false);
        p.file = Some(std::fs::File::open("/dev/null").expect("/dev/null"));
        let (aborted, reason) = mpsc::channel();
        p.aborted = Some(aborted);
        if attach(p).is_err() {
            panic!("no I/O thread");
        }
        assert_eq!(seen.recv_timeout(WAIT), Ok(Why::Start));
        let reason = reason.recv_timeout(WAIT).expect("aborted");
        assert!(reason.starts_with("the agent's socket cannot be watched"), "{reason}");
        // Then dropped: nothing drives it again.
        assert_eq!(seen.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected));
    }

    #[test]
    fn a_panicking_stream_ends_alone_and_the_thread_drives_the_next() {
        const WAIT: Duration = Duration::from_secs(5);
        let (bad, _peer, bad_seen) = probe(true);
        if attach(bad).is_err() {
            panic!("no I/O thread");
        }
        assert_eq!(bad_seen.recv_timeout(WAIT), Ok(Why::Start));
        // Dropped after its panic: its sender is gone (as a session's `done` is).
        assert_eq!(bad_seen.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected));

        let hubs = HUBS.get().expect("started");
        assert!(hubs.iter().all(|h| h.alive.load(Ordering::Acquire)), "every I/O thread still runs");
        // The next streams are driven as before, on whichever thread.
        for _ in 0..hubs.len() {
            let (good, mut peer, seen) = probe(false);
            if attach(good).is_err() {
                panic!("no I/O thread");
            }
            assert_eq!(seen.recv_timeout(WAIT), Ok(Why::Start));
            io::Write::write_all(&mut peer, b"x").expect("write");
            assert_eq!(seen.recv_timeout(WAIT), Ok(Why::Readable));
        }
    }
}
