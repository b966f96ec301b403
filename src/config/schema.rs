//! Reads the merged config tree into [`Config`], applying defaults and checking
//! every value and every cross-reference (routes → trunks/agents, unique names,
//! keys that only make sense together). All problems are collected.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Dict;

use super::model::*;
use super::reader::{Issues, Table};
use super::secret::Secret;
use super::values::{self, DiskBudget, Listen, NumberPattern, PortRange, Transport};

const ROOT: &[&str] = &[
    "node",
    "sip",
    "rtp",
    "trunk",
    "agent",
    "route",
    "rooms",
    "webrtc",
    "media",
    "tts",
    "recording",
    "webhooks",
    "api",
    "log",
];
const ROOMS: &[&str] = &["max_participants", "linger"];
const WEBRTC: &[&str] = &[
    "enabled",
    "max_participants",
    "address",
    "public_address",
    "stun_servers",
    "port_range",
    "consent_timeout",
    "join_token_ttl",
    "max_participants_per_room",
];
const MEDIA: &[&str] = &["dir", "max_fetch_bytes", "fetch_timeout", "allow_private_urls"];
const TTS: &[&str] = &[
    "engine",
    "voice",
    "program",
    "url",
    "model",
    "api_key",
    "response_format",
    "pcm_sample_rate",
    "timeout",
    "cache_dir",
    "cache_max_bytes",
];
const NODE: &[&str] = &["name", "data_dir", "public_address", "max_calls", "shutdown_grace"];
const SIP: &[&str] = &[
    "listen",
    "tls_certificate",
    "tls_private_key",
    "tls_ca_file",
    "auth_max_failures",
    "auth_failure_window",
    "auth_ban_time",
    "unknown_source",
    "user_agent",
    "max_connections",
    "max_connections_per_source",
    "tls_handshake_timeout",
    "first_message_timeout",
    "idle_timeout",
];
const RTP: &[&str] = &[
    "port_range",
    "timeout",
    "learning_window",
    "relatch_after",
    "strict_source",
    "workers",
    "max_suppressed_streams",
];
const TRUNK: &[&str] = &[
    "name",
    "provider",
    "proxy",
    "username",
    "password",
    "register",
    "register_expires",
    "numbers",
    "codecs",
    "inbound_allow",
    "inbound_username",
    "inbound_password",
    "auth_realm",
];
const AGENT: &[&str] = &[
    "name",
    "url",
    "protocol",
    "auth_token",
    "encoding",
    "sample_rate",
    "track",
    "bidirectional",
    "on_disconnect",
    "connect_timeout",
    "noise_suppression",
];
const ROUTE: &[&str] = &[
    "name",
    "trunk",
    "to",
    "from",
    "agent",
    "room",
    "room_per_caller",
    "forward",
    "park",
    "answer_url",
    "answer_method",
    "answer_timeout",
    "fallback_url",
    "status_callback",
    "record",
    "ring_for",
    "pin",
    "noise_suppression",
    "record_format",
];
const RECORDING: &[&str] = &["enabled", "dir", "channels", "format", "retention", "max_disk_usage", "upload"];
const RECORDING_UPLOAD: &[&str] = &[
    "endpoint",
    "region",
    "bucket",
    "prefix",
    "access_key_id",
    "secret_access_key",
    "path_style",
    "delete_local_after",
    "url_lifetime",
    "part_size",
];
const WEBHOOKS: &[&str] = &[
    "url",
    "failover_url",
    "signing_key",
    "timeout",
    "max_age",
    "retry_initial",
    "retry_max",
    "failover_after",
    "max_in_flight",
    "delivered_retention",
];
const API: &[&str] =
    &["listen", "token", "tls_certificate", "tls_private_key", "max_connections", "header_read_timeout"];
const LOG: &[&str] = &["level", "format"];

/// Names of the top-level sections, for environment overrides.
pub const SECTIONS: &[&str] = ROOT;

/// Things that are valid but probably not what the technician wants.
pub type Warnings = Vec<String>;

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "sipbridge".into())
}

fn name_ok(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid name (1 to 64 letters, digits, '-', '_' or '.')"))
    }
}

fn secret(t: &Table<'_>, key: &str, issues: &mut Issues) -> Option<Secret> {
    t.string(key, issues).filter(|s| !s.is_empty()).map(Secret::new)
}

fn duration(t: &Table<'_>, key: &str, issues: &mut Issues, default: Duration) -> Duration {
    t.parsed(key, issues, values::parse_duration).unwrap_or(default)
}

/// `TimeoutStopSec=` of the shipped unit (`systemd/sipbridge.service`; a test
/// keeps the two equal).
pub const UNIT_STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// The longest a stop (SIGTERM) can take, as `daemon::run` and `sip` bound its
/// steps: `shutdown_grace` for the calls, 2 s for the ones hung up at its end
/// to send BYE, 2 s for BYEs and CANCELs still unanswered (`sip::ENDINGS_DRAIN`),
/// 3 s per registering trunk to unregister, 5 s for the webhook worker.
pub fn longest_stop(shutdown_grace: Duration, registering_trunks: usize) -> Duration {
    let per_trunk = Duration::from_secs(3) * u32::try_from(registering_trunks).unwrap_or(u32::MAX / 4);
    shutdown_grace + Duration::from_secs(2 + 2 + 5) + per_trunk
}

/// Builds the typed config from the merged tree.
pub fn read(root: &Dict, issues: &mut Issues, warnings: &mut Warnings) -> Option<Config> {
    let root = Table::root(root, ROOT);
    let node = read_node(&root, issues);
    let sip = read_sip(&root, issues);
    let rtp = read_rtp(&root, issues);
    let trunks = read_trunks(&root, issues, warnings);
    let agents = read_agents(&root, issues);
    let routes = read_routes(&root, issues, &trunks, &agents);
    let rooms = read_rooms(&root, issues);
    let webrtc = read_webrtc(&root, issues);
    let media = read_media(&root, issues, &node.data_dir);
    let tts = read_tts(&root, issues, &node.data_dir);
    let (recording, recording_upload) = read_recording(&root, issues, &node.data_dir);
    let webhooks = read_webhooks(&root, issues);
    let api = read_api(&root, issues, warnings);
    let log = read_log(&root, issues);
    root.finish(issues);

    if trunks.is_empty() {
        warnings.push("no [[trunk]] is configured: every incoming call is refused (403) until one is".into());
    }
    if routes.is_empty() && !trunks.is_empty() {
        warnings.push("no [[route]] is configured: every incoming call gets 404".into());
    }
    let registering = trunks.iter().filter(|t| t.register).count();
    let stop = longest_stop(node.shutdown_grace, registering);
    if stop > UNIT_STOP_TIMEOUT {
        warnings.push(format!(
            "node.shutdown_grace = {}s: with {registering} registering trunk(s) a stop can take {}s, longer than \
             the systemd unit's TimeoutStopSec={}s; systemd would kill the daemon before the calls' BYEs, the \
             unregistrations and the last webhooks are out (lower shutdown_grace, or raise TimeoutStopSec \
             with `systemctl edit sipbridge`)",
            node.shutdown_grace.as_secs(),
            stop.as_secs(),
            UNIT_STOP_TIMEOUT.as_secs()
        ));
    }
    if issues.0.is_empty() {
        Some(Config {
            node,
            sip,
            rtp,
            trunks,
            agents,
            routes,
            rooms,
            webrtc,
            media,
            tts,
            recording,
            recording_upload,
            webhooks,
            api,
            log,
        })
    } else {
        None
    }
}

fn read_node(root: &Table<'_>, issues: &mut Issues) -> Node {
    let t = root.table("node", NODE, issues);
    let name = t.parsed("name", issues, name_ok).unwrap_or_else(hostname);
    let data_dir = t.string("data_dir", issues).map(PathBuf::from).unwrap_or_else(|| "/var/lib/sipbridge".into());
    let public_address = t
        .parsed("public_address", issues, |s| {
            if s == "auto" {
                Ok(PublicAddress::Auto)
            } else if let Ok(ip) = s.parse::<IpAddr>() {
                Ok(PublicAddress::Ip(ip))
            } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
                Ok(PublicAddress::Host(s.to_string()))
            } else {
                Err(format!("{s:?} is not \"auto\", an IP address or a host name"))
            }
        })
        .unwrap_or(PublicAddress::Auto);
    let max_calls = t.integer("max_calls", issues, 1, 100_000).unwrap_or(100) as u32;
    let shutdown_grace = duration(&t, "shutdown_grace", issues, Duration::from_secs(30));
    t.finish(issues);
    Node { name, data_dir, public_address, max_calls, shutdown_grace }
}

fn read_sip(root: &Table<'_>, issues: &mut Issues) -> Sip {
    let t = root.table("sip", SIP, issues);
    let listen = t.parsed_list("listen", issues, Listen::parse).unwrap_or_else(|| {
        ["udp://0.0.0.0:5060", "tcp://0.0.0.0:5060"].iter().filter_map(|s| Listen::parse(s).ok()).collect()
    });
    let tls_certificate = t.string("tls_certificate", issues).map(PathBuf::from);
    let tls_private_key = t.string("tls_private_key", issues).map(PathBuf::from);
    let tls_ca_file = t.string("tls_ca_file", issues).map(PathBuf::from);
    if listen.iter().any(|l| l.transport == Transport::Tls) {
        for (key, val) in [("tls_certificate", &tls_certificate), ("tls_private_key", &tls_private_key)] {
            match val {
                None => {
                    t.missing(key, issues, "a tls:// listener needs tls_certificate and tls_private_key (PEM files)")
                }
                Some(p) if std::fs::File::open(p).is_err() => {
                    issues.push(t.key_path(key), format!("cannot read {}", p.display()))
                }
                Some(_) => {}
            }
        }
    }
    if listen.is_empty() {
        issues.push(t.key_path("listen"), "needs at least one listener (e.g. [\"udp://0.0.0.0:5060\"])");
    }
    let auth_ban = BanPolicy {
        max_failures: t.integer("auth_max_failures", issues, 0, 1000).unwrap_or(5) as u32,
        window: duration(&t, "auth_failure_window", issues, Duration::from_secs(600)),
        ban_time: duration(&t, "auth_ban_time", issues, Duration::from_secs(600)),
    };
    let unknown_source = t
        .choice("unknown_source", issues, &[("drop", UnknownSource::Drop), ("reject", UnknownSource::Reject)])
        .unwrap_or(UnknownSource::Drop);
    let user_agent = t
        .parsed("user_agent", issues, |s| {
            // A header value: printable ASCII, no CR/LF (RFC 3261 §20.41, §25.1 TEXT-UTF8 kept to ASCII).
            if s.len() <= 100 && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                Ok(s.trim().to_string())
            } else {
                Err(format!(
                    "{s:?} must be printable ASCII, at most 100 characters (e.g. \"sipbridge\"; \"\" for none)"
                ))
            }
        })
        .unwrap_or_else(|| "sipbridge".into());
    let streams = read_sip_streams(&t, issues);
    t.finish(issues);
    Sip { listen, tls_certificate, tls_private_key, tls_ca_file, auth_ban, unknown_source, user_agent, streams }
}

/// The `[sip]` bounds on accepted TCP/TLS connections.
fn read_sip_streams(t: &Table<'_>, issues: &mut Issues) -> SipStreams {
    let d = SipStreams::default();
    let count = |key: &str, issues: &mut Issues, default: u32| {
        t.integer(key, issues, 1, 1_000_000).map_or(default, |n| n as u32)
    };
    let max_connections = count("max_connections", issues, d.max_connections);
    let max_connections_per_source = count("max_connections_per_source", issues, d.max_connections_per_source);
    if max_connections_per_source > max_connections {
        issues.push(
            t.key_path("max_connections_per_source"),
            format!("{max_connections_per_source} is more than max_connections ({max_connections})"),
        );
    }
    let mut bounded = |key: &str, default: Duration, min: Duration, max: Duration| {
        let v = duration(t, key, issues, default);
        if v < min || v > max {
            issues.push(
                t.key_path(key),
                format!(
                    "{key} must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        v
    };
    let tls_handshake_timeout =
        bounded("tls_handshake_timeout", d.tls_handshake_timeout, Duration::from_millis(100), Duration::from_secs(120));
    let first_message_timeout =
        bounded("first_message_timeout", d.first_message_timeout, Duration::from_millis(100), Duration::from_secs(120));
    let idle_timeout = bounded("idle_timeout", d.idle_timeout, Duration::from_secs(1), Duration::from_secs(3600));
    SipStreams {
        max_connections,
        max_connections_per_source,
        tls_handshake_timeout,
        first_message_timeout,
        idle_timeout,
    }
}

fn read_rtp(root: &Table<'_>, issues: &mut Issues) -> Rtp {
    let t = root.table("rtp", RTP, issues);
    let port_range =
        t.parsed("port_range", issues, PortRange::parse).unwrap_or(PortRange { first: 16384, last: 32767 });
    let timeout = duration(&t, "timeout", issues, Duration::from_secs(30));
    let learning_window = duration(&t, "learning_window", issues, Duration::from_secs(3));
    if learning_window > Duration::from_secs(60) {
        issues.push(t.key_path("learning_window"), "learning_window must be at most 60s (e.g. \"3s\")");
    }
    let relatch_after = duration(&t, "relatch_after", issues, Duration::from_secs(2));
    if relatch_after < Duration::from_millis(200) {
        issues.push(
            t.key_path("relatch_after"),
            "relatch_after must be at least 200ms (e.g. \"2s\"): shorter lets a spoofed SDP address steal a live stream",
        );
    }
    let strict_source = t.bool("strict_source", issues).unwrap_or(false);
    let workers = t.integer("workers", issues, 0, 64).unwrap_or(0) as usize;
    let max_suppressed_streams = t.integer("max_suppressed_streams", issues, 0, 10_000).unwrap_or(0) as usize;
    t.finish(issues);
    Rtp { port_range, timeout, learning_window, relatch_after, strict_source, workers, max_suppressed_streams }
}

fn read_trunks(root: &Table<'_>, issues: &mut Issues, warnings: &mut Warnings) -> Vec<Trunk> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in root.tables("trunk", TRUNK, issues) {
        let name = t.parsed("name", issues, name_ok);
        if name.is_none() && t.value("name").is_none() {
            t.missing("name", issues, "every trunk needs a unique name (e.g. name = \"telnyx\")");
        }
        if let Some(n) = &name {
            if !seen.insert(n.clone()) {
                issues.push(t.key_path("name"), format!("another trunk is already named {n:?}"));
            }
        }
        let provider = t
            .choice(
                "provider",
                issues,
                &[("telnyx", Provider::Telnyx), ("livekit", Provider::Livekit), ("generic", Provider::Generic)],
            )
            .unwrap_or(Provider::Generic);
        let mut proxy = t.parsed("proxy", issues, values::SipUri::parse);
        if proxy.is_none() && t.value("proxy").is_none() && provider == Provider::Telnyx {
            proxy = values::SipUri::parse("sip:sip.telnyx.com").ok();
        }
        let username = t.string("username", issues).filter(|s| !s.is_empty());
        let password = secret(&t, "password", issues);
        let register = t.bool("register", issues).unwrap_or(false);
        let register_expires = duration(&t, "register_expires", issues, Duration::from_secs(600));
        let numbers = t.parsed_list("numbers", issues, values::parse_e164).unwrap_or_default();
        let codecs = t
            .parsed_list("codecs", issues, |s| match s.to_ascii_uppercase().as_str() {
                "PCMU" => Ok(Codec::Pcmu),
                "PCMA" => Ok(Codec::Pcma),
                "G722" => Ok(Codec::G722),
                "OPUS" => Ok(Codec::Opus),
                _ => Err(format!("{s:?} is not a supported codec (\"PCMU\", \"PCMA\", \"G722\", \"OPUS\")")),
            })
            .unwrap_or_else(|| vec![Codec::Pcmu, Codec::Pcma]);
        if let Some(bad) = codecs.iter().find(|c| !provider.supports(**c)) {
            issues.push(
                t.key_path("codecs"),
                format!("{bad:?} is not carried by {provider:?} SIP trunks (LiveKit SIP: PCMU, PCMA, G722)"),
            );
        }
        let inbound_allow = t.parsed_list("inbound_allow", issues, values::parse_cidr).unwrap_or_default();
        let inbound_username = t.string("inbound_username", issues).filter(|s| !s.is_empty());
        let inbound_password = secret(&t, "inbound_password", issues);
        let auth_realm = t.string("auth_realm", issues).filter(|s| !s.is_empty());
        if auth_realm.is_some() && username.is_none() {
            issues
                .push(t.key_path("auth_realm"), "auth_realm restricts where username/password are sent: set them too");
        }

        if username.is_some() != password.is_some() {
            let key = if username.is_some() { "password" } else { "username" };
            t.missing(key, issues, "username and password go together");
        }
        if inbound_username.is_some() != inbound_password.is_some() {
            let key = if inbound_username.is_some() { "inbound_password" } else { "inbound_username" };
            t.missing(key, issues, "inbound_username and inbound_password go together");
        }
        if register && (username.is_none() || password.is_none() || proxy.is_none()) {
            issues.push(t.key_path("register"), "register = true needs proxy, username and password");
        }
        if t.value("codecs").is_some() && codecs.is_empty() {
            issues.push(t.key_path("codecs"), "needs at least one codec (\"PCMU\", \"PCMA\", \"G722\", \"OPUS\")");
        }
        if proxy.is_none()
            && !register
            && t.value("inbound_allow").is_none()
            && inbound_username.is_none()
            && t.present()
        {
            issues.push(
                t.path_of(),
                "this trunk can neither send nor receive calls: set proxy, register, inbound_allow or inbound_username",
            );
        }
        for (key, pw) in [("password", &password), ("inbound_password", &inbound_password)] {
            if pw.as_ref().is_some_and(|p| p.expose().starts_with("change-me")) {
                warnings.push(format!("{}: still the placeholder password", t.key_path(key)));
            }
        }
        t.finish(issues);
        if let Some(name) = name {
            out.push(Trunk {
                name,
                provider,
                proxy,
                username,
                password,
                register,
                register_expires,
                numbers,
                codecs,
                inbound_allow,
                inbound_username,
                inbound_password,
                auth_realm,
            });
        }
    }
    out
}

fn read_agents(root: &Table<'_>, issues: &mut Issues) -> Vec<Agent> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in root.tables("agent", AGENT, issues) {
        let name = t.parsed("name", issues, name_ok);
        if t.value("name").is_none() {
            t.missing("name", issues, "every agent needs a unique name (e.g. name = \"sales\")");
        }
        if let Some(n) = &name {
            if !seen.insert(n.clone()) {
                issues.push(t.key_path("name"), format!("another agent is already named {n:?}"));
            }
        }
        let protocol = t.choice("protocol", issues, &StreamProtocol::CHOICES).unwrap_or(StreamProtocol::Telnyx);
        let url = t.parsed("url", issues, |s| match s {
            "builtin:echo" => Ok(AgentUrl::BuiltinEcho),
            s if s.starts_with("builtin:") => {
                Err(format!("{s:?} is not a built-in agent (the only one is \"builtin:echo\")"))
            }
            s => match values::parse_url(s, protocol.schemes()) {
                Ok(u) if u.port_or_known_default().is_none() => {
                    Err(format!("{s:?} has no port (e.g. tcp://host:9092)"))
                }
                u => u.map(AgentUrl::WebSocket),
            },
        });
        if t.value("url").is_none() {
            t.missing(
                "url",
                issues,
                "the agent's WebSocket URL (e.g. \"wss://agent.lan:8765/telnyx\") or \"builtin:echo\"",
            );
        }
        let auth_token = secret(&t, "auth_token", issues);
        let encoding = t
            .choice(
                "encoding",
                issues,
                &[
                    ("PCMU", Encoding::Pcmu),
                    ("PCMA", Encoding::Pcma),
                    ("L16", Encoding::L16),
                    ("G722", Encoding::G722),
                    ("OPUS", Encoding::Opus),
                ],
            )
            .unwrap_or(protocol.default_encoding());
        let default_rate = encoding.fixed_rate().unwrap_or(8000);
        let sample_rate = t.integer("sample_rate", issues, 8000, 16000).unwrap_or(i64::from(default_rate)) as u32;
        if sample_rate != 8000 && sample_rate != 16000 {
            issues.push(t.key_path("sample_rate"), format!("{sample_rate} is not 8000 or 16000"));
        } else if sample_rate == 16000 && matches!(encoding, Encoding::Pcmu | Encoding::Pcma) {
            issues.push(
                t.key_path("sample_rate"),
                "16000 Hz needs encoding = \"L16\", \"G722\" or \"OPUS\" (PCMU and PCMA are 8000 Hz only)",
            );
        } else if let Err(why) = protocol.check_format(encoding, sample_rate) {
            let key = if t.value("encoding").is_some() { "encoding" } else { "protocol" };
            issues.push(t.key_path(key), why);
        }
        let track = t
            .choice(
                "track",
                issues,
                &[
                    ("inbound_track", StreamTrack::InboundTrack),
                    ("outbound_track", StreamTrack::OutboundTrack),
                    ("both_tracks", StreamTrack::BothTracks),
                ],
            )
            .unwrap_or(StreamTrack::InboundTrack);
        let bidirectional = t.bool("bidirectional", issues).unwrap_or(true);
        let on_disconnect = t
            .choice("on_disconnect", issues, &[("hangup", OnDisconnect::Hangup), ("continue", OnDisconnect::Continue)])
            .unwrap_or(OnDisconnect::Hangup);
        let connect_timeout = duration(&t, "connect_timeout", issues, Duration::from_secs(5));
        let noise_suppression = noise_suppression(&t, issues).unwrap_or(Suppression::OFF);
        t.finish(issues);
        if let (Some(name), Some(url)) = (name, url) {
            out.push(Agent {
                name,
                url,
                protocol,
                auth_token,
                encoding,
                sample_rate,
                track,
                bidirectional,
                on_disconnect,
                connect_timeout,
                noise_suppression,
            });
        }
    }
    out
}

/// `noise_suppression = "inbound" | "outbound" | "both" | "disabled"` (Telnyx's
/// values for a connection's `noise_suppression.direction`).
fn noise_suppression(t: &Table<'_>, issues: &mut Issues) -> Option<Suppression> {
    let both = Suppression { inbound: true, outbound: true };
    t.choice(
        "noise_suppression",
        issues,
        &[
            ("inbound", Suppression { inbound: true, outbound: false }),
            ("outbound", Suppression { inbound: false, outbound: true }),
            ("both", both),
            ("disabled", Suppression::OFF),
        ],
    )
}

fn read_routes(root: &Table<'_>, issues: &mut Issues, trunks: &[Trunk], agents: &[Agent]) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, t) in root.tables("route", ROUTE, issues).into_iter().enumerate() {
        let name = t.string("name", issues).unwrap_or_else(|| format!("route {}", i + 1));
        let trunk = t.string("trunk", issues);
        if let Some(tr) = &trunk {
            if !trunks.iter().any(|x| &x.name == tr) {
                issues.push(t.key_path("trunk"), format!("{tr:?} is not the name of a [[trunk]]"));
            }
        }
        let to = t.parsed("to", issues, NumberPattern::parse);
        let from = t.parsed("from", issues, NumberPattern::parse);
        let mut targets = Vec::new();
        if let Some(a) = t.string("agent", issues) {
            if !agents.iter().any(|x| x.name == a) {
                issues.push(t.key_path("agent"), format!("{a:?} is not the name of an [[agent]]"));
            }
            targets.push(RouteTarget::Agent(a));
        }
        if let Some(r) = t.parsed("room", issues, name_ok) {
            targets.push(RouteTarget::Room(r));
        }
        if let Some(p) = t.parsed("room_per_caller", issues, |s| {
            if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a valid room prefix (letters, digits, '-', '_', '.')"))
            }
        }) {
            targets.push(RouteTarget::RoomPerCaller(p));
        }
        if let Some(f) = t.string("forward", issues) {
            match trunks.iter().find(|x| x.name == f) {
                None => issues.push(t.key_path("forward"), format!("{f:?} is not the name of a [[trunk]]")),
                Some(tr) if tr.proxy.is_none() => {
                    issues.push(t.key_path("forward"), format!("trunk {f:?} has no proxy to send calls to"))
                }
                Some(_) => {}
            }
            targets.push(RouteTarget::Forward(f));
        }
        if t.bool("park", issues) == Some(true) {
            targets.push(RouteTarget::Park);
        }
        let web = |s: &str| values::parse_url(s, &["http", "https"]);
        let answer_url = t.parsed("answer_url", issues, web);
        let method = t.parsed("answer_method", issues, |s| match s {
            "POST" | "post" => Ok(HttpMethod::Post),
            "GET" | "get" => Ok(HttpMethod::Get),
            _ => Err(format!("{s:?} is not POST or GET")),
        });
        let timeout = t.parsed("answer_timeout", issues, |s| {
            values::parse_duration(s).and_then(|d| match d {
                d if d < Duration::from_secs(1) || d > Duration::from_secs(30) => {
                    Err(format!("{s:?} must be between 1s and 30s"))
                }
                d => Ok(d),
            })
        });
        let fallback_url = t.parsed("fallback_url", issues, web);
        let status_callback = t.parsed("status_callback", issues, web);
        match answer_url {
            Some(url) => targets.push(RouteTarget::AnswerUrl(Box::new(AnswerUrl {
                url,
                method: method.unwrap_or(HttpMethod::Post),
                timeout: timeout.unwrap_or(Duration::from_secs(5)),
                fallback_url,
                status_callback,
            }))),
            None => {
                for key in ["answer_method", "answer_timeout", "fallback_url", "status_callback"] {
                    if t.value(key).is_some() && t.value("answer_url").is_none() {
                        issues.push(t.key_path(key), "only applies to routes with answer_url = \"...\"");
                    }
                }
            }
        }
        let record = t.bool("record", issues).unwrap_or(false);
        let ring_for = duration(&t, "ring_for", issues, Duration::ZERO);
        let pin = t.parsed("pin", issues, |s| {
            if (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a PIN (1 to 16 digits)"))
            }
        });
        if pin.is_some() && !matches!(targets.first(), Some(RouteTarget::Room(_))) {
            issues.push(t.key_path("pin"), "a PIN only applies to routes with room = \"...\"");
        }
        let record_format =
            t.choice("record_format", issues, &[("wav", RecordingFormat::Wav), ("mp3", RecordingFormat::Mp3)]);
        if record_format.is_some() && !record {
            issues.push(t.key_path("record_format"), "only applies with record = true");
        }
        let noise_suppression = noise_suppression(&t, issues);
        if noise_suppression.is_some() && matches!(targets.first(), Some(RouteTarget::Park)) {
            issues.push(
                t.key_path("noise_suppression"),
                "a parked call's media is chosen by the API: use suppression_start there",
            );
        }
        match targets.len() {
            1 => out.push(Route {
                name,
                trunk,
                to,
                from,
                target: targets.remove(0),
                record,
                ring_for,
                pin,
                noise_suppression,
                record_format,
            }),
            0 => issues.push(
                t.path_of(),
                "needs exactly one target: agent, room, room_per_caller, forward, answer_url or park = true",
            ),
            _ => issues.push(
                t.path_of(),
                "has more than one target: keep exactly one of agent, room, room_per_caller, forward, answer_url, park",
            ),
        }
        t.finish(issues);
    }
    out
}

fn read_rooms(root: &Table<'_>, issues: &mut Issues) -> Rooms {
    let t = root.table("rooms", ROOMS, issues);
    let max_participants = t.integer("max_participants", issues, 2, 1000).map_or(50, |n| n as usize);
    let linger = duration(&t, "linger", issues, Duration::ZERO);
    if linger > Duration::from_secs(3600) {
        issues.push(t.key_path("linger"), "linger must be at most 1h");
    }
    t.finish(issues);
    Rooms { max_participants, linger }
}

fn read_webrtc(root: &Table<'_>, issues: &mut Issues) -> WebRtc {
    let t = root.table("webrtc", WEBRTC, issues);
    let enabled = t.bool("enabled", issues).unwrap_or(true);
    let max_participants = t.integer("max_participants", issues, 0, 500).map_or(20, |n| n as usize);
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address"));
    let address = t.parsed("address", issues, ip).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let public_address = t.parsed("public_address", issues, |s| {
        let a = ip(s)?;
        if a.is_unspecified() { Err("public_address must be a real address, not 0.0.0.0".into()) } else { Ok(a) }
    });
    let stun_servers = t
        .parsed_list("stun_servers", issues, |s| {
            if s.starts_with("stun:") && s.len() > 5 {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a STUN URL (stun:host:port)"))
            }
        })
        .unwrap_or_default();
    let port_range = t.parsed("port_range", issues, |s| {
        let bad = || format!("{s:?} is not a port range (first-last, e.g. 40000-40999)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (a, b) = (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?);
        if a == 0 || a > b { Err(bad()) } else { Ok((a, b)) }
    });
    let consent_timeout = duration(&t, "consent_timeout", issues, Duration::from_secs(30));
    if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&consent_timeout) {
        issues.push(t.key_path("consent_timeout"), "consent_timeout must be between 2s and 5m");
    }
    let join_token_ttl = duration(&t, "join_token_ttl", issues, Duration::from_secs(3600));
    if join_token_ttl > Duration::from_secs(7 * 86_400) || join_token_ttl.is_zero() {
        issues.push(t.key_path("join_token_ttl"), "join_token_ttl must be between 1s and 7 days");
    }
    let max_participants_per_room = t.integer("max_participants_per_room", issues, 1, 500).map_or(10, |n| n as usize);
    t.finish(issues);
    WebRtc {
        max_participants_per_room,
        enabled,
        max_participants,
        address,
        public_address,
        stun_servers,
        port_range,
        consent_timeout,
        join_token_ttl,
    }
}

fn read_media(root: &Table<'_>, issues: &mut Issues, data_dir: &std::path::Path) -> Media {
    let t = root.table("media", MEDIA, issues);
    let dir = t.string("dir", issues).map(PathBuf::from).unwrap_or_else(|| data_dir.join("media"));
    if !dir.is_absolute() && t.value("dir").is_some() {
        issues.push(t.key_path("dir"), format!("{:?} is not an absolute path", dir.display().to_string()));
    }
    let max_fetch_bytes = t
        .parsed("max_fetch_bytes", issues, |s| {
            let n =
                s.parse::<bytesize::ByteSize>().map_err(|_| format!("{s:?} is not a size (e.g. \"20MiB\")"))?.as_u64();
            if (1024..=500 * 1024 * 1024).contains(&n) { Ok(n) } else { Err(format!("{s:?} must be 1KiB to 500MiB")) }
        })
        .unwrap_or(20 * 1024 * 1024);
    let fetch_timeout = duration(&t, "fetch_timeout", issues, Duration::from_secs(10));
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&fetch_timeout) {
        issues.push(t.key_path("fetch_timeout"), "fetch_timeout must be between 100ms and 5m");
    }
    let allow_private_urls = t.bool("allow_private_urls", issues).unwrap_or(false);
    t.finish(issues);
    Media { dir, max_fetch_bytes, fetch_timeout, allow_private_urls }
}

fn read_tts(root: &Table<'_>, issues: &mut Issues, data_dir: &std::path::Path) -> Tts {
    let t = root.table("tts", TTS, issues);
    let engine = t
        .parsed("engine", issues, |s| match s {
            "espeak-ng" => Ok(TtsEngine::EspeakNg),
            "http" => Ok(TtsEngine::Http),
            _ => Err(format!("{s:?} is not \"espeak-ng\" or \"http\"")),
        })
        .unwrap_or(TtsEngine::EspeakNg);
    let url = t.parsed("url", issues, |s| values::parse_url(s, &["http", "https"]));
    if engine == TtsEngine::Http && url.is_none() && t.value("url").is_none() {
        t.missing("url", issues, "engine = \"http\" needs the speech endpoint's url");
    }
    let default_voice = if engine == TtsEngine::Http { "alloy" } else { "en" };
    let word = |s: &str| {
        if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c)) {
            Ok(s.to_string())
        } else {
            Err(format!("{s:?} must be 1 to 64 letters, digits or -_+."))
        }
    };
    let voice = t.parsed("voice", issues, word).unwrap_or_else(|| default_voice.into());
    let model = t.parsed("model", issues, word).unwrap_or_else(|| "tts-1".into());
    let program = t.string("program", issues).filter(|s| !s.is_empty()).unwrap_or_else(|| "espeak-ng".into());
    let response_format = t
        .parsed("response_format", issues, |s| match s {
            "wav" => Ok(TtsFormat::Wav),
            "pcm" => Ok(TtsFormat::Pcm),
            _ => Err(format!("{s:?} is not \"wav\" or \"pcm\"")),
        })
        .unwrap_or(TtsFormat::Wav);
    let pcm_sample_rate = t
        .parsed("pcm_sample_rate", issues, |s| {
            s.parse::<u32>()
                .ok()
                .filter(|r| (8000..=48000).contains(r))
                .ok_or_else(|| format!("{s:?} must be 8000 to 48000"))
        })
        .unwrap_or(24000);
    let timeout = duration(&t, "timeout", issues, Duration::from_secs(10));
    if !(Duration::from_millis(500)..=Duration::from_secs(120)).contains(&timeout) {
        issues.push(t.key_path("timeout"), "timeout must be between 500ms and 2m");
    }
    let cache_dir = t.string("cache_dir", issues).map(PathBuf::from).unwrap_or_else(|| data_dir.join("tts-cache"));
    if !cache_dir.is_absolute() && t.value("cache_dir").is_some() {
        issues.push(t.key_path("cache_dir"), format!("{:?} is not an absolute path", cache_dir.display().to_string()));
    }
    let cache_max_bytes = t
        .parsed("cache_max_bytes", issues, |s| {
            s.parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| format!("{s:?} is not a size (e.g. \"64MiB\")"))
        })
        .unwrap_or(64 * 1024 * 1024);
    let api_key = secret(&t, "api_key", issues);
    t.finish(issues);
    Tts {
        engine,
        voice,
        program,
        url,
        model,
        api_key,
        response_format,
        pcm_sample_rate,
        timeout,
        cache_dir,
        cache_max_bytes,
    }
}

fn read_recording(
    root: &Table<'_>,
    issues: &mut Issues,
    data_dir: &std::path::Path,
) -> (Recording, Option<RecordingUpload>) {
    let t = root.table("recording", RECORDING, issues);
    let enabled = t.bool("enabled", issues).unwrap_or(true);
    let dir = t.string("dir", issues).map(PathBuf::from).unwrap_or_else(|| data_dir.join("recordings"));
    let channels = t
        .choice("channels", issues, &[("dual", Channels::Dual), ("single", Channels::Single)])
        .unwrap_or(Channels::Dual);
    let format =
        t.choice("format", issues, &[("wav", RecordingFormat::Wav), ("mp3", RecordingFormat::Mp3)]).unwrap_or_default();
    let retention = match t.string("retention", issues).as_deref() {
        None => Some(Duration::from_secs(30 * 86_400)),
        Some("forever") => None,
        Some(_) => t.parsed("retention", issues, values::parse_duration),
    };
    let max_disk_usage = t.parsed("max_disk_usage", issues, DiskBudget::parse).unwrap_or(DiskBudget::Percent(80.0));
    let upload = read_recording_upload(&t, issues);
    t.finish(issues);
    (Recording { enabled, dir, channels, format, retention, max_disk_usage }, upload)
}

/// Placeholders of `[recording.upload] prefix`.
pub const UPLOAD_PREFIX_PLACEHOLDERS: &[&str] =
    &["node", "yyyy", "mm", "dd", "call_session_id", "call_control_id", "trunk"];

fn read_recording_upload(recording: &Table<'_>, issues: &mut Issues) -> Option<RecordingUpload> {
    let t = recording.table("upload", RECORDING_UPLOAD, issues);
    if !t.present() {
        return None;
    }
    let endpoint = t.parsed("endpoint", issues, |s| values::parse_url(s, &["http", "https"]));
    if t.value("endpoint").is_none() {
        t.missing("endpoint", issues, "the S3 endpoint, e.g. \"https://s3.eu-west-1.amazonaws.com\"");
    }
    let region = t
        .parsed("region", issues, |s| {
            if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a region name (e.g. \"us-east-1\", \"auto\" for R2)"))
            }
        })
        .unwrap_or_else(|| "us-east-1".into());
    let bucket = t.parsed("bucket", issues, |s| {
        let ok = (3..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric();
        if ok {
            Ok(s.to_string())
        } else {
            Err(format!("{s:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' and '.')"))
        }
    });
    if t.value("bucket").is_none() {
        t.missing("bucket", issues, "the bucket recordings go to (e.g. \"acme-recordings\")");
    }
    let prefix = t
        .parsed("prefix", issues, |s| {
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').ok_or_else(|| format!("{s:?}: unclosed '{{'"))?;
                let name = &rest[open + 1..open + close];
                if !UPLOAD_PREFIX_PLACEHOLDERS.contains(&name) {
                    return Err(format!(
                        "{s:?}: unknown placeholder {{{name}}} (known: {})",
                        UPLOAD_PREFIX_PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
                    ));
                }
                rest = &rest[open + close + 1..];
            }
            if s.starts_with('/') || s.contains("..") || s.len() > 512 {
                return Err(format!("{s:?} must not start with '/' or contain \"..\" (at most 512 characters)"));
            }
            Ok(s.to_string())
        })
        .unwrap_or_else(|| "{node}/{yyyy}/{mm}/{dd}/".into());
    let access_key_id = secret(&t, "access_key_id", issues);
    if access_key_id.is_none() {
        t.missing(
            "access_key_id",
            issues,
            "the access key id (or SIPBRIDGE_RECORDING__UPLOAD__ACCESS_KEY_ID in the environment)",
        );
    }
    let secret_access_key = secret(&t, "secret_access_key", issues);
    if secret_access_key.is_none() {
        t.missing(
            "secret_access_key",
            issues,
            "the secret access key (or SIPBRIDGE_RECORDING__UPLOAD__SECRET_ACCESS_KEY in the environment)",
        );
    }
    let path_style = t.bool("path_style", issues).unwrap_or(false);
    let delete_local_after = match t.string("delete_local_after", issues).as_deref() {
        None | Some("never") => None,
        Some(_) => t.parsed("delete_local_after", issues, |s| {
            values::parse_duration(s).map_err(|e| format!("{e}, or \"never\" (\"0s\" deletes once uploaded)"))
        }),
    };
    let url_lifetime = duration(&t, "url_lifetime", issues, Duration::from_secs(7 * 86_400));
    if url_lifetime.is_zero() || url_lifetime > Duration::from_secs(7 * 86_400) {
        issues.push(t.key_path("url_lifetime"), "url_lifetime must be between 1s and 7d (SigV4's limit)");
    }
    let part_size = t
        .parsed("part_size", issues, |s| {
            let n =
                s.parse::<bytesize::ByteSize>().map_err(|_| format!("{s:?} is not a size (e.g. \"8MiB\")"))?.as_u64();
            if (5 << 20..=5 << 30).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{s:?} must be 5MiB to 5GiB (S3's part sizes)"))
            }
        })
        .unwrap_or(8 << 20);
    t.finish(issues);
    Some(RecordingUpload {
        endpoint: endpoint?,
        region,
        bucket: bucket?,
        prefix,
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        path_style,
        delete_local_after,
        url_lifetime,
        part_size,
    })
}

fn read_webhooks(root: &Table<'_>, issues: &mut Issues) -> Webhooks {
    let t = root.table("webhooks", WEBHOOKS, issues);
    let url = t.parsed("url", issues, |s| values::parse_url(s, &["http", "https"]));
    let failover_url = t.parsed("failover_url", issues, |s| values::parse_url(s, &["http", "https"]));
    if failover_url.is_some() && url.is_none() && t.value("url").is_none() {
        t.missing("url", issues, "failover_url is only used together with url");
    }
    let signing_key =
        t.string("signing_key", issues).map(PathBuf::from).unwrap_or_else(|| "/etc/sipbridge/webhook.key".into());
    if url.is_some() {
        if let Err(e) = crate::credentials::signing_key::load_signing_key(&signing_key) {
            issues.push(
                t.key_path("signing_key"),
                format!("{e} (create it with: sipbridge keygen --out {})", signing_key.display()),
            );
        }
    }
    let timeout = duration(&t, "timeout", issues, Duration::from_secs(5));
    let max_age = duration(&t, "max_age", issues, Duration::from_secs(86_400));
    let positive = |s: &str| {
        values::parse_duration(s).and_then(|d| match d.is_zero() {
            true => Err(format!("{s:?} must be longer than 0 (e.g. \"1s\")")),
            false => Ok(d),
        })
    };
    let retry_initial = t.parsed("retry_initial", issues, positive).unwrap_or(Duration::from_secs(1));
    let retry_max = t.parsed("retry_max", issues, positive).unwrap_or(Duration::from_secs(300));
    if retry_max < retry_initial {
        issues.push(
            t.key_path("retry_max"),
            format!(
                "{} is shorter than retry_initial ({}): the backoff cap must be at least the first delay",
                humantime::format_duration(retry_max),
                humantime::format_duration(retry_initial)
            ),
        );
    }
    let failover_after = t.integer("failover_after", issues, 1, 1000).unwrap_or(3) as u32;
    let max_in_flight = t.integer("max_in_flight", issues, 1, 1024).unwrap_or(16) as usize;
    let delivered_retention = match t.string("delivered_retention", issues).as_deref() {
        None => Some(Duration::from_secs(7 * 86_400)),
        Some("forever") => None,
        Some(_) => t.parsed("delivered_retention", issues, |s| {
            values::parse_duration(s).map_err(|e| format!("{e}, or \"forever\""))
        }),
    };
    t.finish(issues);
    Webhooks {
        url,
        failover_url,
        signing_key,
        timeout,
        max_age,
        retry_initial,
        retry_max,
        failover_after,
        max_in_flight,
        delivered_retention,
    }
}

fn read_api(root: &Table<'_>, issues: &mut Issues, warnings: &mut Warnings) -> Api {
    let t = root.table("api", API, issues);
    let enabled = t.present();
    let listen = t
        .parsed("listen", issues, |s| {
            s.parse::<SocketAddr>().map_err(|_| format!("{s:?} is not an address and port (e.g. \"127.0.0.1:8080\")"))
        })
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let token = secret(&t, "token", issues);
    if !enabled {
        // No [api]: nothing is served, nothing to warn about.
    } else if token.is_none() {
        warnings.push("api.token is not set: the control API answers only /healthz".into());
    } else if token.as_ref().is_some_and(|p| p.expose().starts_with("change-me")) {
        warnings.push("api.token: still the placeholder token".into());
    }
    let tls_certificate = t.string("tls_certificate", issues).map(PathBuf::from);
    let tls_private_key = t.string("tls_private_key", issues).map(PathBuf::from);
    match (&tls_certificate, &tls_private_key) {
        (Some(_), None) => t.missing("tls_private_key", issues, "tls_certificate and tls_private_key go together"),
        (None, Some(_)) => t.missing("tls_certificate", issues, "tls_certificate and tls_private_key go together"),
        (Some(cert), Some(key)) if enabled => {
            // Checked now so a bad file fails the start (or a reload), not the first client.
            if let Err(e) = crate::credentials::tls_server::server_config(cert, key) {
                let key_of = match &e {
                    crate::credentials::tls_server::TlsError::Read { path, .. } if path == cert => "tls_certificate",
                    crate::credentials::tls_server::TlsError::NoCertificate(_) => "tls_certificate",
                    _ => "tls_private_key",
                };
                issues.push(t.key_path(key_of), e.to_string());
            }
        }
        _ => {}
    }
    let max_connections = t.integer("max_connections", issues, 1, 65_536).map_or(256, |n| n as usize);
    let header_read_timeout = duration(&t, "header_read_timeout", issues, Duration::from_secs(10));
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&header_read_timeout) {
        issues.push(t.key_path("header_read_timeout"), "header_read_timeout must be between 100ms and 5m");
    }
    t.finish(issues);
    Api { enabled, listen, token, tls_certificate, tls_private_key, max_connections, header_read_timeout }
}

fn read_log(root: &Table<'_>, issues: &mut Issues) -> Log {
    let t = root.table("log", LOG, issues);
    let level = t
        .choice(
            "level",
            issues,
            &[("error", "error"), ("warn", "warn"), ("info", "info"), ("debug", "debug"), ("trace", "trace")],
        )
        .unwrap_or("info")
        .to_string();
    let format = t
        .choice(
            "format",
            issues,
            &[
                ("auto", LogFormat::Auto),
                ("text", LogFormat::Text),
                ("json", LogFormat::Json),
                ("journald", LogFormat::Journald),
            ],
        )
        .unwrap_or(LogFormat::Auto);
    t.finish(issues);
    Log { level, format }
}
