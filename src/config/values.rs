//! Typed config values and their parsers: durations, sizes, CIDRs, E.164 numbers,
//! SIP URIs, listen addresses, port ranges.
//!
//! Every parser returns `Result<T, String>` where the error is the sentence a field
//! technician reads after `file:line: key:` — it quotes the bad value and shows a
//! valid example. Nothing here knows about TOML or file positions.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// Parses a duration such as `"30s"`, `"500ms"`, `"24h"`, `"30d"` (humantime units).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration (e.g. \"500ms\", \"30s\", \"5m\", \"24h\", \"30d\")"))
}

/// A network: an IP address alone means a single host (/32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!("{s:?} is not an IP address or CIDR (e.g. 64.16.250.10/32)"))
}

/// An E.164 number: `+` then 8 to 15 digits (ITU-T E.164; Telnyx's `+13125550100`).
pub fn parse_e164(s: &str) -> Result<String, String> {
    let digits = s.strip_prefix('+').unwrap_or("");
    if s.starts_with('+') && (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an E.164 number (\"+\" and 8 to 15 digits, e.g. \"+13125550100\")"))
    }
}

/// A number pattern for routes: an exact number (`+13125550100`, `1001`) or a prefix
/// ending in `*` (`+1312*`, `*` alone matches everything).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum NumberPattern {
    /// Matches this number exactly.
    Exact(String),
    /// Matches every number starting with this prefix.
    Prefix(String),
}

impl NumberPattern {
    /// Parses `+1312*`, `+13125550100`, `100`, `*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        let digits = body.strip_prefix('+').unwrap_or(body);
        let ok = digits.bytes().all(|b| b.is_ascii_digit() || b == b'#') && (prefix || !digits.is_empty());
        if !ok || digits.len() > 15 {
            return Err(format!(
                "{s:?} is not a number pattern (digits with an optional leading \"+\" and an optional trailing \"*\", e.g. \"+13125550100\" or \"+1312*\")"
            ));
        }
        Ok(if prefix { Self::Prefix(body.to_string()) } else { Self::Exact(body.to_string()) })
    }

    /// Whether `number` (a Request-URI user part or E.164 number) matches.
    pub fn matches(&self, number: &str) -> bool {
        match self {
            Self::Exact(n) => n == number,
            Self::Prefix(p) => number.starts_with(p.as_str()),
        }
    }
}

/// SIP transport (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP, port 5060 by default.
    Udp,
    /// TCP, port 5060 by default.
    Tcp,
    /// TLS over TCP, port 5061 by default.
    Tls,
}

impl Transport {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Self::Udp),
            "tcp" => Some(Self::Tcp),
            "tls" => Some(Self::Tls),
            _ => None,
        }
    }

    /// The RFC 3261 default port: 5061 for TLS, 5060 otherwise.
    pub fn default_port(self) -> u16 {
        if self == Self::Tls { 5061 } else { 5060 }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        })
    }
}

/// One SIP listener from `[sip].listen`: `udp://0.0.0.0:5060`, `tls://[::]:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Listen {
    /// Transport of this listener.
    pub transport: Transport,
    /// Local address and port to bind.
    pub addr: SocketAddr,
}

impl Listen {
    /// Parses `udp://IP:PORT`, `tcp://IP:PORT`, `tls://IP:PORT` (IPv6 in brackets);
    /// the port may be left out (5060, or 5061 for TLS).
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "{s:?} is not a SIP listen address (e.g. \"udp://0.0.0.0:5060\", \"tcp://[::]:5060\", \"tls://0.0.0.0:5061\")"
            )
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(err)?;
        let transport = Transport::parse(scheme).ok_or_else(err)?;
        let addr = match rest.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let host = rest.trim_start_matches('[').trim_end_matches(']');
                let ip = host.parse::<IpAddr>().map_err(|_| err())?;
                SocketAddr::new(ip, transport.default_port())
            }
        };
        Ok(Self { transport, addr })
    }
}

/// A SIP or SIPS URI as written for a trunk's `proxy` (RFC 3261 §19.1), reduced to
/// what the config needs: where to send and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SipUri {
    /// `true` for `sips:` (TLS required).
    pub secure: bool,
    /// User part, if any (`sip:user@host`).
    pub user: Option<String>,
    /// Host name or IP literal (without IPv6 brackets).
    pub host: String,
    /// Explicit port; `None` means DNS SRV / the transport default.
    pub port: Option<u16>,
    /// `;transport=` parameter, or TLS for `sips:`.
    pub transport: Option<Transport>,
    /// The URI as written.
    pub text: String,
}

impl SipUri {
    /// Parses `sip:sip.telnyx.com`, `sip:abc.sip.livekit.cloud;transport=tcp`,
    /// `sips:host:5061`, `sip:[2001:db8::1]:5080`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("{s:?} is not a SIP URI ({why}; e.g. \"sip:sip.telnyx.com;transport=tcp\")");
        let (secure, rest) = if let Some(r) = s.strip_prefix("sips:") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("sip:") {
            (false, r)
        } else {
            return Err(err("it must start with sip: or sips:"));
        };
        let mut parts = rest.split(';');
        let hostport = parts.next().unwrap_or("");
        let (user, hostport) = match hostport.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, hostport),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| err("bad IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse::<u16>().map_err(|_| err("bad port"))?),
                None if after.is_empty() => None,
                None => return Err(err("unexpected text after ']'")),
            };
            (h.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().map_err(|_| err("bad port"))?)),
                None => (hostport.to_string(), None),
            }
        };
        let host_ok =
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
        if !host_ok {
            return Err(err("missing or invalid host"));
        }
        let mut transport = if secure { Some(Transport::Tls) } else { None };
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            if k.eq_ignore_ascii_case("transport") {
                transport = Some(Transport::parse(v).ok_or_else(|| err("transport must be udp, tcp or tls"))?);
            }
        }
        if port == Some(0) {
            return Err(err("port 0"));
        }
        Ok(Self { secure, user, host, port, transport, text: s.to_string() })
    }
}

/// An inclusive UDP port range for RTP, `"16384-32767"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortRange {
    /// First port (even).
    pub first: u16,
    /// Last port.
    pub last: u16,
}

impl PortRange {
    /// Parses `"LOW-HIGH"`; LOW even and ≥ 1024, HIGH > LOW (RTP takes even ports,
    /// RTCP the next odd one, RFC 3550 §11).
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("{s:?} is not a port range ({why}; e.g. \"16384-32767\")");
        let (a, b) = s.split_once('-').ok_or_else(|| err("expected LOW-HIGH"))?;
        let first: u16 = a.trim().parse().map_err(|_| err("LOW is not a port number"))?;
        let last: u16 = b.trim().parse().map_err(|_| err("HIGH is not a port number"))?;
        if first < 1024 {
            return Err(err("ports below 1024 are reserved"));
        }
        if first % 2 != 0 {
            return Err(err("LOW must be even: RTP uses even ports, RTCP the next odd one"));
        }
        if last <= first {
            return Err(err("HIGH must be above LOW"));
        }
        Ok(Self { first, last })
    }

    /// Number of RTP/RTCP port pairs in the range.
    pub fn pairs(&self) -> u32 {
        (u32::from(self.last) - u32::from(self.first)).div_ceil(2)
    }
}

/// A disk budget: a percentage of the file system or an absolute size.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum DiskBudget {
    /// Percent of the file system's size, 0 < p ≤ 100.
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

impl DiskBudget {
    /// Parses `"80%"`, `"2GiB"`, `"500 MB"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(Self::Percent(v)),
                _ => Err(format!("{s:?} is not a percentage between 0 and 100 (e.g. \"80%\")")),
            };
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| Self::Bytes(b.as_u64()))
            .map_err(|_| format!("{s:?} is not a size or percentage (e.g. \"2GiB\", \"500MB\", \"80%\")"))
    }
}

/// A URL whose scheme must be one of `schemes` (`ws`/`wss` for agents,
/// `http`/`https` for webhooks).
pub fn parse_url(s: &str, schemes: &[&str]) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !schemes.contains(&u.scheme()) {
        return Err(format!(
            "{s:?} must use {}",
            schemes.iter().map(|x| format!("{x}://")).collect::<Vec<_>>().join(" or ")
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(parse_duration("30").unwrap_err().contains("\"30\" is not a duration"));
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("192.76.120.10/32").unwrap().to_string(), "192.76.120.10/32");
        assert_eq!(parse_cidr("127.0.0.2").unwrap().to_string(), "127.0.0.2/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr("64.16.250").unwrap_err(),
            "\"64.16.250\" is not an IP address or CIDR (e.g. 64.16.250.10/32)"
        );
    }

    #[test]
    fn e164() {
        assert!(parse_e164("+13125550100").is_ok());
        assert!(parse_e164("13125550100").is_err());
        assert!(parse_e164("+1234567").is_err());
        assert!(parse_e164("+1234567890123456").is_err());
        assert!(parse_e164("+1312555O100").is_err());
    }

    #[test]
    fn number_patterns() {
        let p = NumberPattern::parse("+1312*").unwrap();
        assert!(p.matches("+13125550100"));
        assert!(!p.matches("+14155550100"));
        assert!(NumberPattern::parse("*").unwrap().matches("anything"));
        assert!(NumberPattern::parse("+13125550100").unwrap().matches("+13125550100"));
        assert!(NumberPattern::parse("sales").is_err());
        assert!(NumberPattern::parse("").is_err());
    }

    #[test]
    fn listen_addresses() {
        let l = Listen::parse("udp://0.0.0.0:5060").unwrap();
        assert_eq!(l.transport, Transport::Udp);
        assert_eq!(l.addr.port(), 5060);
        assert_eq!(Listen::parse("tls://[::]").unwrap().addr.port(), 5061);
        assert!(Listen::parse("ws://0.0.0.0:80").is_err());
        assert!(Listen::parse("0.0.0.0:5060").is_err());
    }

    #[test]
    fn sip_uris() {
        let u = SipUri::parse("sip:sip.telnyx.com;transport=tcp").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.transport), ("sip.telnyx.com", None, Some(Transport::Tcp)));
        let u = SipUri::parse("sips:user@[2001:db8::1]:5081").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.transport), ("2001:db8::1", Some(5081), Some(Transport::Tls)));
        assert!(SipUri::parse("sip.telnyx.com").is_err());
        assert!(SipUri::parse("sip:").is_err());
        assert!(SipUri::parse("sip:host;transport=sctp").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(PortRange::parse("16384-32767").unwrap().pairs(), 8192);
        assert!(PortRange::parse("16385-32767").is_err());
        assert!(PortRange::parse("100-200").is_err());
        assert!(PortRange::parse("2000-1000").is_err());
    }

    #[test]
    fn disk_budgets() {
        assert_eq!(DiskBudget::parse("80%").unwrap(), DiskBudget::Percent(80.0));
        assert_eq!(DiskBudget::parse("2GiB").unwrap(), DiskBudget::Bytes(2 * 1024 * 1024 * 1024));
        assert!(DiskBudget::parse("120%").is_err());
        assert!(DiskBudget::parse("lots").is_err());
    }

    #[test]
    fn urls() {
        assert!(parse_url("wss://agent.lan:8765/telnyx", &["ws", "wss"]).is_ok());
        assert!(parse_url("https://agent.lan", &["ws", "wss"]).unwrap_err().contains("ws:// or wss://"));
    }
}
