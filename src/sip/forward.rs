//! Forward routes (B2BUA): a call that arrived on one trunk leaves through another
//! (LiveKit outbound → Telnyx, Telnyx → LiveKit room). This file dials the far
//! leg; the call core pairs the two legs (progress and the answer pass back to the
//! caller, BYE and CANCEL propagate both ways, a final failure of the far leg is
//! answered to the caller with the same code, session timers on both legs) and the
//! shell relays their media (`media::engine::RelayJob`: pass-through, or PCMU↔PCMA by
//! table), so the box can record it. Both legs share one `call_session_id`;
//! `call.bridged` is emitted when both are up.

use std::sync::Arc;
use std::time::Duration;

use super::SipContext;
use super::leg::SipLeg;
use super::outbound::{Dial, dial};
use crate::call::CallInfo;

/// How long the far leg may ring before the box gives up (`no_answer`).
pub const RING_TIMEOUT: Duration = Duration::from_secs(60);

/// Dials the far leg of the call `near` through `trunk`: caller ID is the
/// caller's number as the near trunk gave it, the X- headers pass on, and the
/// caller's RFC 4028 interval (`session_expires`, seconds) is asked of the far
/// end too.
///
/// # Errors
/// The trunk is not configured (any more), or the INVITE could not be sent.
pub async fn dial_far(
    ctx: &Arc<SipContext>,
    near: &CallInfo,
    trunk: &str,
    session_expires: Option<u64>,
) -> Result<(CallInfo, SipLeg), String> {
    let cfg = ctx.services.config.borrow().clone();
    let far_trunk = cfg.trunk(trunk).cloned().ok_or_else(|| format!("no [[trunk]] named {trunk:?}"))?;
    let request = Dial {
        trunk: far_trunk,
        from: near.from.clone(),
        to: near.to.clone(),
        ring_timeout: RING_TIMEOUT,
        call_session_id: Some(near.ids.call_session_id.clone()),
        headers: near.custom_headers.clone(),
        private_headers: Vec::new(),
        client_state: None,
        webhook_url: None,
        session_expires,
    };
    dial(ctx, request).await.map_err(|e| e.to_string())
}
