//! Final responses sent outside a dialog: the one `reply` helper, and what a
//! request from a source that matches no trunk gets (`[sip] unknown_source`).
//! Used by the dispatcher (`server`) and the INVITE handler (`inbound`).

use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;

use super::{SipContext, msg};
use crate::config::UnknownSource;

/// Sends a final response, logging (not failing) when the transport refuses.
pub async fn reply(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status.clone(), headers, None).await {
        tracing::debug!(error = %e, %status, "could not send response");
    }
}

/// A request from a source that matches no trunk: dropped (`[sip] unknown_source =
/// "drop"`, counted in `SIP_UNKNOWN_SOURCE_DROPPED`) or answered 403 without
/// `User-Agent`/`Server` (`"reject"`, `SIP_UNKNOWN_SOURCE_REJECTED`); logged at most
/// once per second with the number of suppressed lines.
pub async fn unknown_source(ctx: &SipContext, tx: &mut Transaction) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let reject = ctx.services.config.borrow().sip.unknown_source == UnknownSource::Reject;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    if LAST_LOG.swap(now, Ordering::Relaxed) != now {
        let more = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            source = ?msg::source_addr(tx),
            method = %tx.original.method,
            suppressed = more,
            "request from a source that matches no trunk: {}",
            if reject { "403" } else { "dropped" }
        );
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
    if reject {
        crate::security::SIP_UNKNOWN_SOURCE_REJECTED.inc();
        reply(tx, StatusCode::Forbidden, vec![]).await;
    } else {
        crate::security::SIP_UNKNOWN_SOURCE_DROPPED.inc();
    }
}
