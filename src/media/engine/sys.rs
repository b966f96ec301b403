//! The two kernel facilities the media engine (and the agent I/O threads,
//! `agent::hub`) need beyond `std::net`, through `nix` (no `unsafe` here): a
//! level-triggered `epoll` (epoll(7)) per thread, and an `eventfd` (eventfd(2))
//! to wake a thread when something is queued for it.
//!
//! Level-triggered on purpose: a worker reads one datagram per ready socket per
//! `epoll_wait`, and a socket with more queued is simply reported again; with
//! edge triggering (mio, tokio) every wake-up would need one more `recvfrom` to
//! see `EAGAIN` (at 50 packets/s per socket, nearly always one datagram per
//! wake-up).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::epoll::{Epoll as NixEpoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd as NixEventFd};

/// One readiness event: the token given to [`Epoll::add`].
pub type Event = EpollEvent;

/// The token of an event.
pub fn token(event: &Event) -> u64 {
    event.data()
}

/// Whether the event says the descriptor can be written to (`EPOLLOUT`).
pub fn writable(event: &Event) -> bool {
    event.events().contains(EpollFlags::EPOLLOUT)
}

/// Whether the event says the descriptor has input, an error or a hang-up
/// (`EPOLLIN`, `EPOLLERR`, `EPOLLHUP`: a read will tell which).
pub fn readable(event: &Event) -> bool {
    event.events().intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
}

/// An empty event buffer slot.
pub fn empty_event() -> Event {
    EpollEvent::empty()
}

fn io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll(NixEpoll);

impl Epoll {
    /// A new instance (close-on-exec).
    pub fn new() -> io::Result<Self> {
        NixEpoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map(Epoll).map_err(io)
    }

    /// Watches `fd` for input, level-triggered, reporting `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.0.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token)).map_err(io)
    }

    /// Watches `fd` for input and, with `write`, for room to write (`EPOLLOUT`,
    /// level-triggered: only while something waits to be written), reporting
    /// `token`; replaces what was watched for `fd` before, if anything.
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64, read: bool, write: bool) -> io::Result<()> {
        let mut flags = EpollFlags::empty();
        if read {
            flags |= EpollFlags::EPOLLIN;
        }
        if write {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut event = EpollEvent::new(flags, token);
        match self.0.modify(fd, &mut event) {
            Err(nix::Error::ENOENT) => self.0.add(fd, event).map_err(io),
            other => other.map_err(io),
        }
    }

    /// Stops watching `fd` (before it is closed or handed elsewhere); a
    /// descriptor that was not watched changes nothing.
    pub fn delete(&self, fd: BorrowedFd<'_>) {
        let _ = self.0.delete(fd);
    }

    /// Waits up to `timeout_ms` for events; returns how many of `events` were
    /// filled. An interrupted wait returns 0.
    pub fn wait(&self, events: &mut [Event], timeout_ms: u16) -> io::Result<usize> {
        match self.0.wait(events, EpollTimeout::from(timeout_ms)) {
            Ok(n) => Ok(n),
            Err(nix::Error::EINTR) => Ok(0),
            Err(e) => Err(io(e)),
        }
    }
}

/// An eventfd used as a doorbell: any thread rings it, the worker's epoll sees it.
#[derive(Debug)]
pub struct EventFd(NixEventFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        NixEventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).map(EventFd).map_err(io)
    }

    /// The descriptor to watch.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Rings (adds 1; a saturated counter is harmless: it stays readable).
    pub fn ring(&self) {
        let _ = self.0.write(1);
    }

    /// Resets the counter (after a wake-up).
    pub fn drain(&self) {
        let _ = self.0.read();
    }
}
