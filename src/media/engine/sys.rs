//! The two kernel facilities the media engine needs beyond `std::net`, through
//! `nix` (no `unsafe` here): a level-triggered `epoll` (epoll(7)) per worker, and
//! an `eventfd` (eventfd(2)) to wake a worker when a command is queued.
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
