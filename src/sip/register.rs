//! Outbound registration of trunks with `register = true` (RFC 3261 §10): the box
//! REGISTERs to the trunk's proxy with digest credentials, refreshes at 75 % of the
//! expiry the registrar grants, backs off (1 s doubling to 60 s) on failure, and
//! unregisters (Expires: 0) on shutdown. Inbound INVITEs from the registrar's
//! addresses then belong to the trunk (`trunk::TrunkTable::by_source`).
//!
//! The state of every registration is published on a watch channel: the daemon
//! shows it in systemd's `STATUS=` and logs every change.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::{RefreshOutcome, Registration};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::trunk::TrunkTable;
use crate::config::Trunk;

/// State of one trunk's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// First REGISTER not answered yet.
    Registering,
    /// The registrar accepted the binding for this many seconds.
    Registered {
        /// Granted expiry in seconds.
        expires: u32,
    },
    /// The last attempt failed (retrying with backoff).
    Failed {
        /// SIP status or transport error.
        reason: String,
    },
}

impl std::fmt::Display for RegState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registering => write!(f, "registering"),
            Self::Registered { expires } => write!(f, "registered ({expires}s)"),
            Self::Failed { reason } => write!(f, "registration failed: {reason}"),
        }
    }
}

/// Registration states by trunk name.
pub type RegStates = BTreeMap<String, RegState>;

/// Starts one keep-alive task per registering trunk.
pub fn start_all(
    endpoint: EndpointInnerRef,
    trunks: Arc<TrunkTable>,
    states: watch::Sender<RegStates>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    trunks
        .trunks()
        .iter()
        .filter(|t| t.register)
        .cloned()
        .map(|t| tokio::spawn(keep_registered(endpoint.clone(), Arc::clone(&trunks), t, states.clone(), stop.clone())))
        .collect()
}

async fn resolve(host: &str, port: u16) -> Vec<IpAddr> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The expiry a 200 OK to REGISTER grants: the Contact's `expires` parameter or
/// the Expires header (RFC 3261 §10.2.4).
fn granted_expires(resp: &rsipstack::sip::Response) -> Option<u32> {
    resp.headers
        .iter()
        .find_map(|h| match h {
            rsipstack::sip::Header::Contact(c) => {
                let v = c.value().to_ascii_lowercase();
                v.split(';').find_map(|p| p.trim().strip_prefix("expires=").and_then(|e| e.trim().parse().ok()))
            }
            _ => None,
        })
        .or_else(|| {
            resp.headers.iter().find_map(|h| match h {
                rsipstack::sip::Header::Expires(e) => e.value().trim().parse().ok(),
                _ => None,
            })
        })
}

async fn keep_registered(
    endpoint: EndpointInnerRef,
    trunks: Arc<TrunkTable>,
    trunk: Trunk,
    states: watch::Sender<RegStates>,
    stop: CancellationToken,
) {
    let (Some(proxy), Some(username), Some(password)) = (&trunk.proxy, &trunk.username, &trunk.password) else {
        return; // config validation guarantees these for register = true
    };
    let server = match rsipstack::sip::Uri::try_from(proxy.text.as_str()) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(trunk = %trunk.name, error = %e, "cannot use the proxy URI for REGISTER");
            return;
        }
    };
    let set = |s: RegState| {
        states.send_if_modified(|m| {
            if m.get(&trunk.name) == Some(&s) {
                return false;
            }
            tracing::info!(trunk = %trunk.name, "registration: {s}");
            m.insert(trunk.name.clone(), s);
            true
        });
    };
    set(RegState::Registering);

    // Calls over the registration come from the registrar's addresses; keep them
    // current (DNS may move).
    let port = proxy.port.unwrap_or(if proxy.secure { 5061 } else { 5060 });
    let resolver = {
        let (trunks, name, host, stop) = (Arc::clone(&trunks), trunk.name.clone(), proxy.host.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let addrs = resolve(&host, port).await;
                if !addrs.is_empty() {
                    trunks.set_registrar_addrs(&name, addrs);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        })
    };

    let credential = Credential {
        username: username.clone(),
        password: password.expose().to_string(),
        realm: trunk.auth_realm.clone(),
        ..Default::default()
    };
    let mut reg = Registration::new(endpoint, Some(credential));
    let expires = trunk.register_expires.as_secs().clamp(60, 86_400) as u32;
    reg.keep_alive(server.clone(), expires, stop.clone(), |outcome| match outcome {
        RefreshOutcome::Registered(resp) => {
            set(RegState::Registered { expires: granted_expires(resp).unwrap_or(expires) })
        }
        RefreshOutcome::Rejected(resp) => set(RegState::Failed { reason: resp.status_code.to_string() }),
        RefreshOutcome::Failed(e) => set(RegState::Failed { reason: e.to_string() }),
    })
    .await;
    // Shutdown: remove the binding (best effort, bounded).
    let _ = tokio::time::timeout(Duration::from_secs(2), reg.register(server, Some(0))).await;
    resolver.abort();
}
