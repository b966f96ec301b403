//! Live listen-in (`/v2/calls/{id}/listen`): a per-call broadcast of the audio both
//! ways, fed by a [`Tap`] on the call's media task. Without listeners a packet costs
//! one atomic load; a listener that falls behind
//! loses chunks (it never slows the call).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::broadcast;

use crate::agent::protocol::Track;
use crate::media::g711::G711;
use crate::media::leg::Tap;

/// Largest chunk carried (60 ms of G.711); longer payloads are cut.
pub const CHUNK: usize = 480;

/// One packet's audio for listeners.
#[derive(Clone, Copy)]
pub struct ListenChunk {
    /// `inbound` (from the caller) or `outbound` (to the caller).
    pub track: Track,
    /// The call's codec.
    pub codec: G711,
    /// Valid bytes.
    pub len: u16,
    /// G.711 bytes.
    pub data: [u8; CHUNK],
}

impl ListenChunk {
    /// The audio bytes.
    pub fn audio(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// The call's listen channel (one per call, created when it registers). The
/// broadcast ring (256 chunks, ~130 KiB) is made by the first listener: most calls
/// never have one, and allocating and freeing that ring per call was ~5 % of the
/// box's signalling CPU (a fresh `mmap` and `munmap` each, issue 19).
#[derive(Clone, Default)]
pub struct ListenTap {
    inner: Arc<ListenInner>,
}

/// What the media worker's tap points at, in one allocation: the packet path
/// reads `listeners` next to the `Arc`'s counts, one cache line (with the
/// listener count in an `Arc` of its own and a `ListenTap` boxed around it,
/// the three dependent cold loads per packet were ~5 % of the relay's CPU at
/// 800 calls, issue 20).
#[derive(Default)]
struct ListenInner {
    /// Listeners connected: the packet path checks this atomic, not the channel.
    listeners: AtomicUsize,
    tx: OnceLock<broadcast::Sender<ListenChunk>>,
}

/// Chunks a listener may fall behind by before it loses some (20 ms each).
const RING: usize = 256;

/// One listener's receiving end; dropping it stops the copies when it was the
/// last. When the call ends (its tap dropped by the registry and the media
/// job), `rx` reports `Closed`: the listener holds the count only weakly, never
/// the sender.
pub struct Listener {
    /// The chunks.
    pub rx: broadcast::Receiver<ListenChunk>,
    inner: Weak<ListenInner>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.listeners.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ListenTap {
    /// A new listener.
    pub fn subscribe(&self) -> Listener {
        let rx = self.inner.tx.get_or_init(|| broadcast::channel(RING).0).subscribe();
        self.inner.listeners.fetch_add(1, Ordering::Relaxed);
        Listener { rx, inner: Arc::downgrade(&self.inner) }
    }
}

impl ListenInner {
    fn send(&self, track: Track, codec: G711, payload: &[u8]) {
        if self.listeners.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(tx) = self.tx.get() else { return };
        let len = payload.len().min(CHUNK);
        let mut c = ListenChunk { track, codec, len: len as u16, data: [0; CHUNK] };
        c.data[..len].copy_from_slice(&payload[..len]);
        let _ = tx.send(c);
    }
}

impl Tap for ListenInner {
    fn heard(&self, codec: G711, payload: &[u8]) {
        self.send(Track::Inbound, codec, payload);
    }

    fn said(&self, codec: G711, payload: &[u8]) {
        self.send(Track::Outbound, codec, payload);
    }
}

/// Several taps as one (the recorder and the listeners).
pub struct Taps(pub Vec<Arc<dyn Tap>>);

impl Tap for Taps {
    fn heard(&self, codec: G711, payload: &[u8]) {
        for t in &self.0 {
            t.heard(codec, payload);
        }
    }

    fn said(&self, codec: G711, payload: &[u8]) {
        for t in &self.0 {
            t.said(codec, payload);
        }
    }

    fn said_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        for t in &self.0 {
            t.said_wideband(codec, payload, wideband);
        }
    }

    fn heard_wideband(&self, codec: G711, payload: &[u8], wideband: &[i16]) {
        for t in &self.0 {
            t.heard_wideband(codec, payload, wideband);
        }
    }
}

/// The tap a call's media task gets: its listen channel, plus the recorder when
/// recording.
pub fn call_tap(listen: &ListenTap, recording: Option<Arc<dyn Tap>>) -> Option<Arc<dyn Tap>> {
    let listen: Arc<dyn Tap> = listen.inner.clone();
    Some(match recording {
        Some(r) => Arc::new(Taps(vec![r, listen])),
        None => listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_counted_and_see_the_end_of_the_call() {
        let tap = ListenTap::default();
        let media: Arc<dyn Tap> = call_tap(&tap, None).unwrap();
        // No listener: nothing is copied (the channel is not even made).
        media.heard(G711::Pcmu, &[1, 2, 3]);
        let mut a = tap.subscribe();
        let b = tap.subscribe();
        assert_eq!(tap.inner.listeners.load(Ordering::Relaxed), 2);
        media.said(G711::Pcmu, &[9; 160]);
        let Ok(c) = a.rx.try_recv() else { panic!("the listener gets the chunk") };
        assert_eq!((c.track, c.audio().len()), (Track::Outbound, 160));
        drop(b);
        assert_eq!(tap.inner.listeners.load(Ordering::Relaxed), 1);
        // The call ends: the registry's tap and the media job's go; the
        // listener is told (its WebSocket sends `stop` and closes).
        drop(tap);
        drop(media);
        assert!(matches!(a.rx.try_recv(), Err(broadcast::error::TryRecvError::Closed)));
    }
}
