//! Calls dialled by the control API (`POST /v2/calls`, Telnyx "Dial"): an outbound
//! leg through a trunk, registered for call control at once (state `bridging`
//! until answered), media from answer to an agent stream (`stream_url` or a
//! configured `[[agent]]`) or silence, recorded from answer when asked
//! (`record: "record-from-answer"`).

use std::sync::Arc;

use super::SipContext;
use super::outbound::{self, Dial, DialError};
use crate::call::control::{ActionError, CallView};
use crate::call::core::{Answer, CallCore, Plan, Role, Setup};
use crate::call::shell::{MediaPlan, Shell};
use crate::config::OnDisconnect;

pub use crate::call::services::DialRequest;

/// Places the call; returns its view as soon as the INVITE is out.
///
/// Errors: unknown trunk or one without `proxy` (400-class `ActionError` with
/// status 422), no capacity (503), no RTP ports (503), INVITE not sendable (500).
pub async fn dial(ctx: &Arc<SipContext>, req: DialRequest) -> Result<CallView, ActionError> {
    let cfg = ctx.services.config.borrow().clone();
    let trunk = cfg.trunk(&req.trunk).cloned().ok_or_else(|| ActionError {
        status: 422,
        code: "10015",
        title: "Invalid connection_id",
        detail: format!("no [[trunk]] named {:?}", req.trunk),
    })?;
    let permit = ctx.lifecycle.admit().map_err(|r| ActionError::no_capacity(format!("{r:?}")))?;
    let dial = Dial {
        trunk,
        from: req.from.clone(),
        to: req.to.clone(),
        ring_timeout: req.timeout,
        call_session_id: None,
        headers: Vec::new(),
        private_headers: Vec::new(),
        client_state: req.client_state.clone(),
        webhook_url: req.webhook_url.clone(),
        session_expires: None,
    };
    let (info, leg) = outbound::dial(ctx, dial).await.map_err(|e| match e {
        DialError::NoProxy(t) => ActionError {
            status: 422,
            code: "10015",
            title: "Invalid connection_id",
            detail: format!("trunk {t:?} has no proxy to send calls to"),
        },
        DialError::NoPorts => ActionError::no_capacity("no RTP ports left"),
        DialError::BadNumber(why) => ActionError { status: 422, code: "10015", title: "Invalid number", detail: why },
        DialError::Sip(why) => ActionError { status: 500, code: "10007", title: "Dial failed", detail: why },
    })?;
    let control = ctx.services.calls.register(&info, "bridging");
    let view = CallView { info: info.clone(), state: "bridging".into(), stream_id: None, park_after_unbridge: false };
    let setup = Setup { info, role: Role::Uac, plan: Plan::Terminate, answer: Answer::Now, session_expires: None };
    let core = CallCore::new(setup, std::time::Instant::now());
    // No stream: silence to the callee (and the recording goes on). A stream the
    // API started ends alone and the call stays up (Telnyx).
    let plan = match req.stream {
        Some(spec) => MediaPlan::Agent { spec: Box::new(spec), on_disconnect: OnDisconnect::Continue },
        None => MediaPlan::Silence,
    };
    let mut shell =
        Shell::new(ctx.services.clone(), core, leg, None, plan, req.record, control, Some(Box::new(permit)));
    shell.bridge_with = req.bridge_with;
    shell.amd = req.answering_machine_detection;
    shell.record_format = req.record_format;
    tokio::spawn(Box::new(shell).run());
    Ok(view)
}

/// The SIP stack places the calls of the control API and `transfer`.
impl crate::call::services::Dialer for Arc<SipContext> {
    fn dial(&self, req: DialRequest) -> crate::call::services::Dialing<'_> {
        Box::pin(dial(self, req))
    }

    fn test_route(&self, req: crate::call::services::RouteTestRequest) -> crate::call::services::Testing<'_> {
        super::route_test::testing(self, req)
    }
}
