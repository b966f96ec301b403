//! The request dispatcher: every new server transaction from rsipstack lands here.
//!
//! - a source that matches no trunk gets nothing (`[sip] unknown_source = "drop"`,
//!   the default) or 403 (`"reject"`), except: an INVITE (and its CANCEL) when some
//!   trunk admits callers by digest (challenged in `inbound`), and in-dialog
//!   requests of a dialog it already has;
//! - then the RFC 3261 §8.2 checks (`sanity`: 400/416/405/420/415/406/483);
//! - in-dialog requests (To tag) go to their dialog, or get 481;
//! - INVITE starts an incoming call (`inbound`);
//! - OPTIONS gets 200 (carriers' keepalives);
//! - stray BYE/INFO/UPDATE/... outside a dialog get 481.
//!
//! Responses to non-trunk destinations carry no `User-Agent`/`Server`
//! (`fingerprint`).

use std::sync::Arc;

use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transaction::transaction::Transaction;

use super::respond::{reply, unknown_source};
use super::{SipContext, inbound, msg, sanity};

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
    let in_dialog = msg::has_to_tag(&tx.original) && method != Method::Ack;
    let trunk = msg::source_ip(&tx).and_then(|ip| ctx.trunks.by_source(ip).map(|t| (t.name.clone(), ip)));
    if trunk.is_none() {
        let digest = ctx.trunks.has_credential_trunks();
        let admitted = match method {
            Method::Ack => true, // never answered; an ACK of our own 2xx/4xx goes to its transaction
            // The box's own route test call (`route_test`): from a local address
            // with this process's key, checked again in `inbound`.
            Method::Invite if !in_dialog && super::route_test::is_own(&ctx, &tx) => true,
            // Its CANCEL (a test call the route left ringing) carries no key; it
            // can only end a transaction it matches, and comes from this box.
            Method::Cancel if !in_dialog && super::route_test::is_local(&ctx, &tx) => true,
            Method::Invite | Method::Cancel if !in_dialog => digest,
            _ => in_dialog && ctx.dialogs.match_dialog(&tx).is_some(),
        };
        if !admitted {
            unknown_source(&ctx, &mut tx).await;
            return;
        }
    }
    if method != Method::Ack {
        if let Some(r) = sanity::check(&tx.original, ALLOW) {
            if r.status == StatusCode::BadRequest {
                crate::security::SIP_MALFORMED.inc();
            }
            tracing::info!(source = ?msg::source_addr(&tx), %method, status = %r.status, reason = %r.reason, "request refused (RFC 3261 §8.2)");
            reply(&mut tx, r.status, r.headers).await;
            return;
        }
    }
    if in_dialog {
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
            if let Some((name, ip)) = &trunk {
                ctx.activity.options(name, *ip, std::time::SystemTime::now());
            }
            let headers = vec![
                Header::Allow(ALLOW.into()),
                Header::Accept("application/sdp".into()),
                Header::Supported("timer".into()),
            ];
            reply(&mut tx, StatusCode::OK, headers).await;
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
