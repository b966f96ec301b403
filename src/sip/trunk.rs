//! Which trunk a request belongs to (ARCHITECTURE.md "sip::trunk").
//!
//! In order:
//! 1. the source IP is in a trunk's `inbound_allow` (Telnyx IP connection: both
//!    proxy IPs of the region);
//! 2. the source IP is an address of a registering trunk's proxy (Telnyx
//!    credential connection: calls arrive over the registration from the registrar's
//!    addresses, refreshed at every registration);
//! 3. otherwise, when some trunk has `inbound_username`/`inbound_password`, the
//!    request must authenticate (digest, `sip::digest`) and the username picks the
//!    trunk (LiveKit's outbound trunk, whose source addresses are not fixed).
//!
//! Nothing matches → dropped (`[sip] unknown_source`, or 403 with "reject"), and
//! the request never reaches routing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::config::{Secret, Trunk};

/// How a request was tied to its trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// By source address (allow-list or registrar address).
    Address,
    /// By digest credentials.
    Credentials,
}

/// The trunks with their live state (registrar addresses).
#[derive(Debug)]
pub struct TrunkTable {
    trunks: Vec<Trunk>,
    registrar_addrs: RwLock<Vec<Vec<IpAddr>>>,
}

impl TrunkTable {
    /// A table for the configured trunks.
    pub fn new(trunks: Vec<Trunk>) -> Self {
        let n = trunks.len();
        Self { trunks, registrar_addrs: RwLock::new(vec![Vec::new(); n]) }
    }

    /// All trunks, in config order.
    pub fn trunks(&self) -> &[Trunk] {
        &self.trunks
    }

    /// The trunk named `name`.
    pub fn get(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// Records the resolved addresses of a registering trunk's registrar.
    pub fn set_registrar_addrs(&self, trunk: &str, addrs: Vec<IpAddr>) {
        if let Some(i) = self.trunks.iter().position(|t| t.name == trunk) {
            let mut all = self.registrar_addrs.write().unwrap_or_else(|e| e.into_inner());
            all[i] = addrs;
        }
    }

    /// The trunk a request from `source` belongs to by address, if any.
    pub fn by_source(&self, source: IpAddr) -> Option<&Trunk> {
        let source = canonical(source);
        if let Some(t) = self.trunks.iter().find(|t| t.inbound_allow.iter().any(|net| net.contains(&source))) {
            return Some(t);
        }
        let regs = self.registrar_addrs.read().unwrap_or_else(|e| e.into_inner());
        self.trunks.iter().zip(regs.iter()).find(|(t, addrs)| t.register && addrs.contains(&source)).map(|(t, _)| t)
    }

    /// Whether any trunk admits callers by credentials.
    pub fn has_credential_trunks(&self) -> bool {
        self.trunks.iter().any(|t| t.inbound_username.is_some())
    }

    /// The password of `username` among credential trunks.
    pub fn inbound_password(&self, username: &str) -> Option<&Secret> {
        self.by_inbound_username(username).and_then(|t| t.inbound_password.as_ref())
    }

    /// The credential trunk of `username`.
    pub fn by_inbound_username(&self, username: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.inbound_username.as_deref() == Some(username))
    }

    /// Whether `source` is a known trunk address (used to exempt trunks from the
    /// per-source rate limit).
    pub fn is_trunk_address(&self, source: IpAddr) -> bool {
        self.by_source(source).is_some()
    }
}

/// When a trunk's peer last reached the box: its last OPTIONS (a carrier's
/// keepalive, RFC 3261 §11) and its last INVITE that was tied to the trunk
/// (`GET /v2/trunks`, the console's trunks view). Since this process started:
/// not persisted (the call records keep every admitted call). One entry per
/// configured trunk name, so its size is bounded by the config.
#[derive(Debug, Clone, Default)]
pub struct TrunkActivity(Arc<Mutex<HashMap<String, Seen>>>);

/// What one trunk last sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The last OPTIONS: when, and from which address.
    pub last_options: Option<(SystemTime, IpAddr)>,
    /// The last INVITE tied to the trunk (by address or digest): when, and from where.
    pub last_invite: Option<(SystemTime, IpAddr)>,
    /// OPTIONS seen since start.
    pub options: u64,
    /// INVITEs seen since start.
    pub invites: u64,
}

impl TrunkActivity {
    /// Records an OPTIONS from `trunk`'s peer at `source`.
    pub fn options(&self, trunk: &str, source: IpAddr, at: SystemTime) {
        self.update(trunk, |s| {
            s.last_options = Some((at, source));
            s.options += 1;
        });
    }

    /// Records an INVITE (a new call) from `trunk`'s peer at `source`.
    pub fn invite(&self, trunk: &str, source: IpAddr, at: SystemTime) {
        self.update(trunk, |s| {
            s.last_invite = Some((at, source));
            s.invites += 1;
        });
    }

    /// What `trunk` last sent (all `None`/0 when nothing yet).
    pub fn get(&self, trunk: &str) -> Seen {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(trunk).copied().unwrap_or_default()
    }

    fn update(&self, trunk: &str, f: impl FnOnce(&mut Seen)) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match all.get_mut(trunk) {
            Some(s) => f(s),
            None => f(all.entry(trunk.to_string()).or_default()),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack sockets) compare
/// as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Codec, Provider};

    fn trunk(name: &str) -> Trunk {
        Trunk {
            name: name.into(),
            provider: Provider::Generic,
            proxy: None,
            username: None,
            password: None,
            register: false,
            register_expires: std::time::Duration::from_secs(600),
            numbers: vec![],
            codecs: vec![Codec::Pcmu],
            inbound_allow: vec![],
            inbound_username: None,
            inbound_password: None,
            auth_realm: None,
        }
    }

    #[test]
    fn allow_list_registrar_and_credentials() {
        let mut ip = trunk("telnyx-ip");
        ip.inbound_allow = vec!["192.76.120.10/32".parse().unwrap(), "64.16.250.10/32".parse().unwrap()];
        let mut reg = trunk("telnyx");
        reg.register = true;
        let mut lk = trunk("livekit");
        lk.inbound_username = Some("lk".into());
        lk.inbound_password = Some(Secret::new("pw"));
        let table = TrunkTable::new(vec![ip, reg, lk]);

        assert_eq!(table.by_source("64.16.250.10".parse().unwrap()).unwrap().name, "telnyx-ip");
        assert_eq!(table.by_source("::ffff:192.76.120.10".parse().unwrap()).unwrap().name, "telnyx-ip");
        assert!(table.by_source("10.0.0.1".parse().unwrap()).is_none());
        table.set_registrar_addrs("telnyx", vec!["192.0.2.7".parse().unwrap()]);
        assert_eq!(table.by_source("192.0.2.7".parse().unwrap()).unwrap().name, "telnyx");
        assert!(table.has_credential_trunks());
        assert_eq!(table.inbound_password("lk").unwrap().expose(), "pw");
        assert!(table.inbound_password("other").is_none());
    }

    #[test]
    fn activity_keeps_the_last_options_and_invite_per_trunk() {
        let seen = TrunkActivity::default();
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(seen.get("telnyx"), Seen::default());
        seen.options("telnyx", a, t0);
        seen.options("telnyx", b, t0 + std::time::Duration::from_secs(30));
        seen.invite("livekit", a, t0);
        let t = seen.get("telnyx");
        assert_eq!(t.last_options, Some((t0 + std::time::Duration::from_secs(30), b)));
        assert_eq!((t.options, t.invites, t.last_invite), (2, 0, None));
        assert_eq!(seen.get("livekit").last_invite, Some((t0, a)));
    }
}
