//! The request dispatcher: every new server transaction from rsipstack lands here.
//!
//! - in-dialog requests (To tag) go to their dialog, or get 481;
//! - INVITE starts an incoming call (`inbound`);
//! - OPTIONS from a trunk gets 200 (carriers' keepalives), from anyone else 403;
//! - stray BYE/INFO/UPDATE/... outside a dialog get 481;
//! - other methods get 405 with `Allow`.

use std::sync::Arc;

use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::transaction::Transaction;

use super::{SipContext, inbound, msg};

/// Methods this UA handles (RFC 3261 §20.5 `Allow`).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// Runs until the endpoint stops: one task per incoming transaction.
pub async fn dispatch(ctx: Arc<SipContext>, mut incoming: TransactionReceiver) {
    while let Some(tx) = incoming.recv().await {
        tokio::spawn(handle(Arc::clone(&ctx), tx));
    }
}

async fn handle(ctx: Arc<SipContext>, mut tx: Transaction) {
    let method = tx.original.method;
    if msg::has_to_tag(&tx.original) && method != Method::Ack {
        match ctx.dialogs.match_dialog(&tx) {
            Some(rsipstack::dialog::dialog::Dialog::Invite(mut d)) => {
                if let Err(e) = d.handle(&mut tx).await {
                    tracing::debug!(error = %e, %method, "in-dialog request failed");
                }
            }
            _ => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await,
        }
        return;
    }
    match method {
        Method::Invite => inbound::incoming_invite(ctx, tx).await,
        Method::Ack => {}
        Method::Options => {
            let from_trunk = msg::source_ip(&tx).is_some_and(|ip| ctx.trunks.by_source(ip).is_some());
            if from_trunk {
                let headers = vec![
                    Header::Allow(ALLOW.into()),
                    Header::Accept("application/sdp".into()),
                    Header::Supported("timer".into()),
                ];
                reply(&mut tx, StatusCode::OK, headers).await;
            } else {
                forbidden(&ctx, &mut tx).await;
            }
        }
        Method::Bye
        | Method::Cancel
        | Method::Info
        | Method::Update
        | Method::PRack
        | Method::Refer
        | Method::Notify => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await,
        _ => reply(&mut tx, StatusCode::MethodNotAllowed, vec![Header::Allow(ALLOW.into())]).await,
    }
}

/// Sends a final response, logging (not failing) when the transport refuses.
pub async fn reply(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status.clone(), headers, None).await {
        tracing::debug!(error = %e, %status, "could not send response");
    }
}

/// 403 for a request that matches no trunk; logged at most once per second.
pub async fn forbidden(_ctx: &SipContext, tx: &mut Transaction) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    if LAST_LOG.swap(now, Ordering::Relaxed) != now {
        let more = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            source = ?msg::source_addr(tx),
            method = %tx.original.method,
            suppressed = more,
            "request from a source that matches no trunk: 403"
        );
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
    reply(tx, StatusCode::Forbidden, vec![]).await;
}
