//! What the box tells about itself (issue 17: unknown sources learn nothing, not
//! even the product's version). An rsipstack `MessageInspector` on every message
//! the endpoint sends: a response whose destination (the top Via's `received`, else
//! its host, RFC 3261 §18.2.2) is not a trunk address loses `User-Agent` and
//! `Server`; an empty `[sip] user_agent` removes the header from everything.
//! Requests keep the configured value: they only go to trunks and dialog peers.
//! Parse-level refusals (400/501/505 built in the transport) carry neither header
//! and are sent to trunk sources only (`rsipstack::sip::bad_request` filter, set in
//! `sip::start`).

use std::net::IpAddr;
use std::sync::Arc;

use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Host, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::{SipAddr, SipConnection};

use super::trunk::TrunkTable;

/// The inspector; `user_agent` is the configured value (empty = never sent).
pub struct Fingerprint {
    /// Trunks, to tell where a response goes.
    pub trunks: Arc<TrunkTable>,
    /// `[sip] user_agent`.
    pub user_agent: String,
}

/// The IP a response is sent to: the top Via's `received`, else its host when
/// that is an IP (`None` for a domain or no Via).
pub fn response_target(msg: &rsipstack::sip::Response) -> Option<IpAddr> {
    let (_, hp) = SipConnection::parse_target_from_via(msg.via_header().ok()?).ok()?;
    match hp.host {
        Host::IpAddr(ip) => Some(ip),
        Host::Domain(_) => None,
    }
}

fn strip(headers: &mut rsipstack::sip::Headers) {
    headers.retain(|h| !matches!(h, Header::UserAgent(_) | Header::Server(_)));
}

impl MessageInspector for Fingerprint {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        match msg {
            SipMessage::Request(mut r) => {
                if self.user_agent.is_empty() {
                    strip(&mut r.headers);
                }
                r.into()
            }
            SipMessage::Response(mut r) => {
                let to_trunk = response_target(&r).is_some_and(|ip| self.trunks.by_source(ip).is_some());
                if !to_trunk || self.user_agent.is_empty() {
                    strip(&mut r.headers);
                }
                r.into()
            }
        }
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        msg
    }
}
