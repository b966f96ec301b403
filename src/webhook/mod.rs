//! Webhooks: Telnyx's event envelope, Ed25519 signatures, the durable outbox and
//! its delivery worker (PROTOCOLS.md §2).
//!
//! Flow: a call hands a `CallEvent` to the event bus (`call::EventBus`), which
//! passes it to [`Outbox::submit_then`]: one store job commits it to the store's
//! `webhook_outbox` table together with its call-record change
//! (`store::call_events`), and the bus broadcasts it once committed. The
//! [`Worker`] POSTs it signed (`envelope`), retrying with backoff and failover
//! (`retry`) until a 2xx, or dead-letters it after `max_age`. Semantics for
//! backend authors: `docs/webhooks.md`.
//!
//! | file | owns |
//! |---|---|
//! | `key` | the signing key file (`sipbridge keygen`) |
//! | `envelope` | body and signature of one POST (sans-IO) |
//! | `retry` | backoff, failover, dead-letter decisions (sans-IO) |
//! | `outbox` | `emit`, the crash-recovery pass, [`start`] |
//! | `delivery` | the worker task and the HTTP client |
//! | `cli` | `sipbridge webhooks status` / `retry-dead` |

pub mod cli;
pub mod delivery;
pub mod envelope;
/// The signing key lives in `credentials` (config validation loads it too).
pub use crate::credentials::signing_key as key;
pub mod outbox;
pub mod retry;

pub use delivery::{Targets, Worker};
pub use outbox::{Outbox, StartError, start};
pub use retry::DeliveryPolicy;
