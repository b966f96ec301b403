//! systemd service notifications (sd_notify(3)): `READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `RELOADING=1`, `STOPPING=1`. Without `NOTIFY_SOCKET` (not under
//! systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STATUS=...`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `RELOADING=1` (SIGHUP received).
pub fn reloading() {
    send(&[NotifyState::Reloading, NotifyState::Status("reloading configuration")]);
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog ping interval: half of `WATCHDOG_USEC` when the watchdog is enabled
/// for this process (`WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 { Some(Duration::from_micros(usec / 2)) } else { None }
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
