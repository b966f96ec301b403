//! An unbounded channel whose queue slots hold a pointer (sipbridge patch 13).
//!
//! tokio's unbounded channel allocates its first block of 32 slots when the
//! channel is made, each slot the size of the message: for `DialogState` (~300
//! bytes) and `TransactionEvent` (~170 bytes) that is 5–10 KiB per channel, and
//! every call has several (one per dialog, one per transaction), held for the
//! whole call. Boxing each message makes a slot 8 bytes: one small allocation per
//! message (signalling rate, not media rate) instead of ~40 KiB resident per
//! call. Same method names as tokio's channel for the calls rsipstack and
//! sipbridge make.

use crate::platform::mpsc::{self, UnboundedReceiver, UnboundedSender};
use alloc::boxed::Box;

/// The sending half (cloneable).
pub struct LeanSender<T>(UnboundedSender<Box<T>>);

/// The receiving half.
pub struct LeanReceiver<T>(UnboundedReceiver<Box<T>>);

impl<T> Clone for LeanSender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> core::fmt::Debug for LeanSender<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LeanSender")
    }
}

impl<T> core::fmt::Debug for LeanReceiver<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LeanReceiver")
    }
}

/// A new channel.
pub fn channel<T>() -> (LeanSender<T>, LeanReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (LeanSender(tx), LeanReceiver(rx))
}

impl<T> LeanSender<T> {
    /// Queues `value`; gives it back when the receiver is gone.
    pub fn send(&self, value: T) -> Result<(), mpsc::error::SendError<T>> {
        self.0.send(Box::new(value)).map_err(|e| mpsc::error::SendError(*e.0))
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T> LeanReceiver<T> {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|b| *b)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }

    /// Refuses further messages (those queued can still be received).
    pub fn close(&mut self) {
        self.0.close()
    }
}
