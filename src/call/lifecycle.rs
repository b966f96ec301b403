//! Admission and draining of calls, shared by every part that starts a call.
//!
//! A call holds a [`CallPermit`] from admission to hangup. [`Lifecycle::admit`]
//! refuses new calls once the box is full (`node.max_calls`) or shutting down;
//! SIP maps those refusals to 503 with Retry-After. On SIGTERM the daemon stops
//! admitting and waits for the permits to drain ([`Lifecycle::drained`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::watch;

/// Why a new call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `node.max_calls` calls are active.
    Full,
    /// The daemon is shutting down.
    ShuttingDown,
}

/// Shared admission state.
#[derive(Debug)]
pub struct Lifecycle {
    accepting: AtomicBool,
    max_calls: AtomicU32,
    active: watch::Sender<u32>,
}

/// Proof that a call was admitted; dropping it ends the call's slot.
#[derive(Debug)]
pub struct CallPermit {
    lifecycle: Arc<Lifecycle>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.lifecycle.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Lifecycle {
    /// A lifecycle admitting up to `max_calls` concurrent calls.
    pub fn new(max_calls: u32) -> Arc<Self> {
        Arc::new(Self {
            accepting: AtomicBool::new(true),
            max_calls: AtomicU32::new(max_calls),
            active: watch::channel(0).0,
        })
    }

    /// Admits a call or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<CallPermit, Refusal> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Refusal::ShuttingDown);
        }
        let max = self.max_calls.load(Ordering::Relaxed);
        let mut admitted = false;
        self.active.send_if_modified(|n| {
            if *n < max {
                *n += 1;
                admitted = true;
            }
            admitted
        });
        if admitted { Ok(CallPermit { lifecycle: Arc::clone(self) }) } else { Err(Refusal::Full) }
    }

    /// Calls currently admitted.
    pub fn active(&self) -> u32 {
        *self.active.borrow()
    }

    /// Changes the limit (config reload); active calls are not affected.
    pub fn set_max_calls(&self, max_calls: u32) {
        self.max_calls.store(max_calls, Ordering::Relaxed);
    }

    /// Stops admitting calls (SIGTERM).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Whether new calls are admitted.
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Resolves when no call is active.
    pub async fn drained(&self) {
        let mut rx = self.active.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let l = Lifecycle::new(2);
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert_eq!(l.admit().unwrap_err(), Refusal::Full);
        drop(a);
        assert_eq!(l.active(), 1);
        assert!(l.admit().is_ok());
    }

    #[tokio::test]
    async fn shutting_down_refuses_and_drains() {
        let l = Lifecycle::new(10);
        let a = l.admit().unwrap();
        l.stop_accepting();
        assert_eq!(l.admit().unwrap_err(), Refusal::ShuttingDown);
        let waiter = tokio::spawn({
            let l = Arc::clone(&l);
            async move { l.drained().await }
        });
        drop(a);
        waiter.await.unwrap();
        assert_eq!(l.active(), 0);
    }
}
