//! Leg-less jobs driven only by a worker's timer wheel: paced work that has no
//! socket of its own, such as a room's 20 ms mixer (`room::task`). The engine
//! knows them only through [`TimerJob`] (a trait object, so `media` names
//! nothing above it). A timer job runs on one worker thread beside the calls'
//! jobs: it must not block, wait or do I/O beyond non-blocking channel
//! operations; what it needs from other tasks arrives on channels it polls with
//! `try_recv` at its wake-ups.
//!
//! Started with `Engine::spawn_timer`; it runs until it reports
//! [`TimerOutcome::Finished`] (the worker then removes it and resolves its
//! `Task`'s `stop` with `Finished::Timer`) or its `Task` is stopped or dropped
//! (the worker drops it where it stands).

use std::time::Instant;

/// What a timer job says after a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// Wake it again at its [`TimerJob::deadline`].
    Running,
    /// Done: the worker removes it (and drops it on the worker thread).
    Finished,
}

/// A job with no legs: the worker calls [`TimerJob::on_timer`] when it starts
/// the job and then at each deadline it asks for (1 ms wheel slots, never before
/// the deadline).
pub trait TimerJob: Send {
    /// Runs what is due at `now` (the worker's clock read for this pass; may be
    /// called with nothing due, then does nothing due-bound). Once it returned
    /// [`TimerOutcome::Finished`] it does nothing more and keeps returning it.
    fn on_timer(&mut self, now: Instant) -> TimerOutcome;

    /// When `on_timer` must run next.
    fn deadline(&self) -> Instant;
}
