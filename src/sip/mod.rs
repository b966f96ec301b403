//! SIP signalling: transports from `[sip].listen`, trunks (allow-lists,
//! registrations, digest-challenged peers), routing of incoming requests to calls,
//! outbound calls. Messages, transactions and dialogs come from rsipstack
//! (vendored with fixes, see `vendor/rsipstack/PATCHES.md`).
//!
//! [`SipStack::start`] binds every listener, starts the endpoint and the request
//! dispatcher (`server`), and returns once the listeners are bound — so the daemon
//! only reports READY when SIP can really be reached.

pub mod addr;
pub mod ban;
pub mod dial;
pub mod dialstring;
pub mod digest;
pub mod fingerprint;
pub mod forward;
pub mod inbound;
pub mod leg;
pub mod limit;
pub mod msg;
pub mod outbound;
pub mod refer;
pub mod register;
pub mod respond;
pub mod route_test;
pub mod routing;
pub mod sanity;
pub mod server;
pub mod trunk;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::{EndpointBuilder, transport::SipConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::lifecycle::Lifecycle;
use crate::config::values::{Listen, Transport};
use crate::config::{Config, PublicAddress};

/// The system's CA bundle on Debian (package ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Errors starting SIP.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A listener could not be bound.
    #[error("cannot listen on {transport}://{addr}: {reason}")]
    Bind {
        /// Transport.
        transport: Transport,
        /// Address.
        addr: SocketAddr,
        /// OS or TLS error.
        reason: String,
    },
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// What the SIP layer shares with every call.
pub struct SipContext {
    /// The rsipstack dialog layer (all dialogs of this box).
    pub dialogs: Arc<DialogLayer>,
    /// Trunks and their live state.
    pub trunks: Arc<trunk::TrunkTable>,
    /// Admission and draining.
    pub lifecycle: Arc<Lifecycle>,
    /// Digest challenger for trunks with inbound credentials.
    pub challenger: digest::DigestChallenger,
    /// Sources banned for failing digest authentication (the transport guard drops them).
    pub bans: ban::Bans,
    /// Local listener addresses, for Contact headers.
    pub listeners: Vec<(Transport, SocketAddr)>,
    /// `node.public_address`.
    pub public_address: PublicAddress,
    /// User-Agent / Server header value (`[sip] user_agent`; empty = none).
    pub user_agent: String,
    /// RTP ports and media settings (`rtp_timeout` here is the startup value; calls
    /// take the one of the config in force when they begin).
    pub media: crate::media::session::MediaEngine,
    /// The call layer's handles (config, events, live calls, rooms, shutdown).
    pub services: crate::call::services::CallServices,
    /// When each trunk's peer last sent OPTIONS and INVITE (`GET /v2/trunks`).
    pub activity: trunk::TrunkActivity,
    /// This process's key for its own route test calls (`route_test`): random,
    /// never sent off the box.
    pub route_test_key: route_test::Key,
    /// The BYEs and CANCELs the box sent whose transactions still run
    /// (retransmitted until answered or Timer F, RFC 3261 §17.1.2.2): a call
    /// does not wait for its own, the stack's stop does (at most
    /// [`ENDINGS_DRAIN`]).
    pub endings: TaskTracker,
}

/// How long stopping waits for the box's BYEs and CANCELs still unanswered:
/// their first retransmissions (T1 = 500 ms, then 1 s) go out; a peer that
/// stays silent longer is not waited for.
pub const ENDINGS_DRAIN: Duration = Duration::from_secs(2);

/// The running SIP stack.
pub struct SipStack {
    /// Shared with calls.
    pub ctx: Arc<SipContext>,
    /// Registration state of every registering trunk.
    pub registrations: watch::Receiver<register::RegStates>,
    cancel: CancellationToken,
    stop_registrations: CancellationToken,
    registration_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SipStack {
    /// Binds the listeners and starts the endpoint and the dispatcher.
    pub async fn start(
        services: crate::call::services::CallServices,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<Self, SipError> {
        let cfg = services.config.borrow().clone();
        let engine = Arc::clone(&services.engine);
        let cancel = CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.child_token());
        let trunks = Arc::new(trunk::TrunkTable::new(cfg.trunks.clone()));
        let bans = ban::Bans::default();
        transport_layer.set_whitelist(limit::Guard::new(Arc::clone(&trunks), bans.clone()));
        // Outbound TLS verifies trunks' certificates against [sip].tls_ca_file, or the
        // system's roots (Debian: ca-certificates).
        let ca_path = cfg.sip.tls_ca_file.clone().unwrap_or_else(|| SYSTEM_ROOTS.into());
        match std::fs::read(&ca_path) {
            Ok(ca) => transport_layer
                .set_tls_config(rsipstack::transport::tls::TlsConfig { ca_certs: Some(ca), ..Default::default() }),
            Err(e) if cfg.sip.tls_ca_file.is_some() => {
                return Err(SipError::Tls(format!("cannot read tls_ca_file {}: {e}", ca_path.display())));
            }
            Err(_) => tracing::warn!("no CA roots at {}: outbound TLS to trunks will fail", ca_path.display()),
        }

        let mut listeners = Vec::new();
        for l in &cfg.sip.listen {
            let conn = bind(l, &cfg, &cancel).await?;
            let bound = conn.get_addr().get_socketaddr().unwrap_or(l.addr);
            tracing::info!("SIP listening on {}://{bound}", l.transport);
            listeners.push((l.transport, bound));
            transport_layer.add_transport(conn);
        }

        // No version, and nothing at all towards sources that match no trunk
        // (`fingerprint`); parse-level refusals go to trunk sources only.
        let user_agent = cfg.sip.user_agent.clone();
        let filter_trunks = Arc::clone(&trunks);
        rsipstack::sip::bad_request::set_answer_filter(Some(Arc::new(move |ip| {
            crate::security::SIP_MALFORMED.inc();
            filter_trunks.by_source(ip).is_some()
        })));
        let option = EndpointOption { callid_suffix: Some(cfg.node.name.clone()), ..Default::default() };
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.child_token())
            .with_transport_layer(transport_layer)
            .with_user_agent(&user_agent)
            .with_inspector(Box::new(fingerprint::Fingerprint {
                trunks: Arc::clone(&trunks),
                user_agent: user_agent.clone(),
            }))
            .with_option(option)
            .build();
        let incoming = endpoint.incoming_transactions().map_err(|e| SipError::Bind {
            transport: Transport::Udp,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: e.to_string(),
        })?;
        let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let ctx = Arc::new(SipContext {
            dialogs,
            trunks,
            lifecycle,
            challenger: digest::DigestChallenger::new(&cfg.node.name, Duration::from_secs(300)),
            bans,
            listeners,
            public_address: cfg.node.public_address.clone(),
            user_agent,
            services,
            activity: trunk::TrunkActivity::default(),
            route_test_key: route_test::Key::random(),
            endings: TaskTracker::new(),
            media: crate::media::session::MediaEngine {
                engine,
                pool: crate::media::ports::PortPool::new(cfg.rtp.port_range),
                rtp_timeout: cfg.rtp.timeout,
                bind_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            },
        });
        let (reg_tx, registrations) = watch::channel(register::RegStates::new());
        let stop_registrations = CancellationToken::new();
        let registration_tasks =
            register::start_all(endpoint.inner.clone(), Arc::clone(&ctx.trunks), reg_tx, stop_registrations.clone());
        tokio::spawn(async move { endpoint.serve().await });
        tokio::spawn(server::dispatch(Arc::clone(&ctx), incoming));
        // rsipstack binds TCP/TLS listeners inside serve(): wait until each accepts
        // connections, so READY really means reachable.
        for (transport, addr) in ctx.listeners.iter().filter(|(t, _)| *t != Transport::Udp) {
            wait_listening(*transport, *addr).await?;
        }
        Ok(Self { ctx, registrations, cancel, stop_registrations, registration_tasks })
    }

    /// Waits for the box's BYEs and CANCELs still unanswered and unregisters
    /// (each bounded), then stops the listeners and the endpoint.
    pub async fn stop(self) {
        self.ctx.endings.close();
        if tokio::time::timeout(ENDINGS_DRAIN, self.ctx.endings.wait()).await.is_err() {
            tracing::info!(unanswered = self.ctx.endings.len(), "stopping without the answer to some BYEs or CANCELs");
        }
        self.stop_registrations.cancel();
        for t in self.registration_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        self.cancel.cancel();
    }
}

/// Connects to our own stream listener until it accepts (at most 5 s).
async fn wait_listening(transport: Transport, addr: SocketAddr) -> Result<(), SipError> {
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(if addr.is_ipv6() { std::net::Ipv6Addr::LOCALHOST.into() } else { [127, 0, 0, 1].into() });
    }
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(probe).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(SipError::Bind { transport, addr, reason: "the listener did not start accepting connections".into() })
}

/// The `[sip]` stream bounds as the transport's limits. Which peers are exempt
/// (trunk addresses) the transport asks the whitelist, [`limit::Guard`].
fn stream_limits(cfg: &Config) -> rsipstack::transport::StreamLimits {
    let s = &cfg.sip.streams;
    rsipstack::transport::StreamLimits {
        max_connections: s.max_connections as usize,
        max_connections_per_source: s.max_connections_per_source as usize,
        tls_handshake_timeout: s.tls_handshake_timeout,
        first_message_timeout: s.first_message_timeout,
        idle_timeout: s.idle_timeout,
    }
}

/// Binds one listener; TCP and TLS listeners bound the connections they accept
/// by `[sip]` `max_connections`, `max_connections_per_source` and the timeouts.
async fn bind(l: &Listen, cfg: &Config, cancel: &CancellationToken) -> Result<SipConnection, SipError> {
    let external = match &cfg.node.public_address {
        PublicAddress::Ip(ip) => Some(SocketAddr::new(*ip, l.addr.port())),
        _ => None,
    };
    let err = |reason: String| SipError::Bind { transport: l.transport, addr: l.addr, reason };
    if l.transport != Transport::Udp {
        // rsipstack binds stream listeners later, inside the endpoint, and only logs
        // a failure there; bind once here so a busy or forbidden port stops startup.
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(l.addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(|e| err(e.to_string()))?;
        probe.set_reuse_address(true).map_err(|e| err(e.to_string()))?;
        probe.bind(&l.addr.into()).and_then(|_| probe.listen(1)).map_err(|e| err(e.to_string()))?;
    }
    Ok(match l.transport {
        Transport::Udp => UdpConnection::create_connection(l.addr, external, Some(cancel.child_token()))
            .await
            .map_err(|e| err(e.to_string()))?
            .into(),
        Transport::Tcp => TcpListenerConnection::new_with_limits(l.addr, external, Some(stream_limits(cfg)))
            .await
            .map_err(|e| err(e.to_string()))?
            .into(),
        Transport::Tls => {
            let read = |p: &Option<std::path::PathBuf>| -> Result<Vec<u8>, SipError> {
                let p = p
                    .as_ref()
                    .ok_or_else(|| SipError::Tls("tls_certificate and tls_private_key are required".into()))?;
                std::fs::read(p).map_err(|e| SipError::Tls(format!("cannot read {}: {e}", p.display())))
            };
            let tls = rsipstack::transport::tls::TlsConfig {
                cert: Some(read(&cfg.sip.tls_certificate)?),
                key: Some(read(&cfg.sip.tls_private_key)?),
                ca_certs: match &cfg.sip.tls_ca_file {
                    Some(p) => {
                        Some(std::fs::read(p).map_err(|e| SipError::Tls(format!("cannot read {}: {e}", p.display())))?)
                    }
                    None => None,
                },
                ..Default::default()
            };
            rsipstack::transport::tls::TlsListenerConnection::new_with_limits(
                l.addr,
                external,
                tls,
                Some(stream_limits(cfg)),
            )
            .await
            .map_err(|e| err(e.to_string()))?
            .into()
        }
    })
}
