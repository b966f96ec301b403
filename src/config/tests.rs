//! Tests of config loading: located errors, environment overrides, defaults,
//! secrets, and the shipped configs.

use std::path::{Path, PathBuf};

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["config/demo.toml", "config/sipbridge.toml"] {
        let loaded = load_with_env(&repo(name), env(&[])).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert!(!loaded.config.agents.is_empty(), "{name} has the echo agent");
    }
    let demo = load_with_env(&repo("config/demo.toml"), env(&[])).unwrap().config;
    assert_eq!(demo.routes.len(), 1);
    assert_eq!(demo.routes[0].target, RouteTarget::Agent("echo".into()));
    assert_eq!(demo.agent("echo").unwrap().url, AgentUrl::BuiltinEcho);
    assert_eq!(demo.node.data_dir, PathBuf::from("./var"));
    let template = load_with_env(&repo("config/sipbridge.toml"), env(&[])).unwrap();
    assert!(template.config.trunks.is_empty(), "the installed template enables no trunk");
    assert!(template.warnings.iter().any(|w| w.contains("no [[trunk]]")));
}

#[test]
fn design_example_is_valid_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("webhook.key");
    crate::credentials::signing_key::generate_to(&key, false).unwrap();
    // A verbatim copy of the design's reference config (shared/design/), the shape
    // field technicians edit: it must load as it is.
    let example = repo("tests/data/sipbridge.example.toml");
    let loaded = load_with_env(&example, env(&[("SIPBRIDGE_WEBHOOKS__SIGNING_KEY", key.to_str().unwrap())]))
        .unwrap_or_else(|e| panic!("{e}"));
    let c = loaded.config;
    assert_eq!(c.trunks.len(), 3);
    assert_eq!(c.trunk("telnyx-ip").unwrap().inbound_allow.len(), 2);
    assert_eq!(c.routes[1].target, RouteTarget::Forward("telnyx".into()));
    assert_eq!(c.routes[3].target, RouteTarget::RoomPerCaller("call-".into()));
    assert_eq!(c.rtp.timeout, std::time::Duration::from_secs(30));
    assert_eq!(c.recording.max_disk_usage, values::DiskBudget::Percent(80.0));
}

const BAD: &str = r#"[node]
name = "shop-042"
max_calls = "lots"

[[trunk]]
name = "telnyx"
proxy = "sip:sip.telnyx.com"
pasword = "x"

[[trunk]]
name = "telnyx-ip"
inbound_allow = [
  "192.76.120.10/32",
  "64.16.250",
]

[[route]]
agent = "nobody"
"#;

#[test]
fn every_error_is_listed_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "sipbridge.toml", BAD);
    let err = load_with_env(&path, env(&[])).unwrap_err();
    let shown: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let p = path.display();
    assert_eq!(
        shown,
        vec![
            format!("{p}:3: node.max_calls: \"lots\" is not a whole number"),
            format!("{p}:8: trunk[0].pasword: unknown key (did you mean \"password\"?)"),
            format!(
                "{p}:14: trunk[1].inbound_allow[1]: \"64.16.250\" is not an IP address or CIDR (e.g. 64.16.250.10/32)"
            ),
            format!("{p}:18: route[0].agent: \"nobody\" is not the name of an [[agent]]"),
        ]
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.toml", "[node]\nname = \"a\"\nmax_calls = = 3\n");
    let err = load_with_env(&path, env(&[])).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(3));
    assert!(err.problems[0].message.starts_with("TOML syntax error"), "{}", err.problems[0]);
}

#[test]
fn missing_file_is_one_clear_error() {
    let err = load_with_env(Path::new("/nonexistent/sipbridge.toml"), env(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/sipbridge.toml: cannot read the config file: No such file or directory (os error 2)"
    );
}

const SMALL: &str = r#"[node]
name = "a"
max_calls = 10

[[trunk]]
name = "telnyx-ip"
provider = "telnyx"
inbound_allow = ["192.76.120.10"]
username = "u"
password = "file-password"

[[agent]]
name = "echo"
url = "builtin:echo"

[[route]]
agent = "echo"
"#;

#[test]
fn environment_overrides_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.toml", SMALL);
    let c = load_with_env(
        &path,
        env(&[
            ("SIPBRIDGE_NODE__MAX_CALLS", "25"),
            ("SIPBRIDGE_RTP__TIMEOUT", "1m"),
            ("SIPBRIDGE_TRUNK__TELNYX_IP__PASSWORD", "env-password"),
            ("SIPBRIDGE_CONFIG", "/ignored/because/it/is/the/cli/option"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.node.max_calls, 25);
    assert_eq!(c.rtp.timeout, std::time::Duration::from_secs(60));
    assert_eq!(c.trunks[0].password.as_ref().unwrap().expose(), "env-password");
    // The provider preset filled the proxy.
    assert_eq!(c.trunks[0].proxy.as_ref().unwrap().host, "sip.telnyx.com");
}

#[test]
fn bad_environment_overrides_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.toml", SMALL);
    let err = load_with_env(&path, env(&[("SIPBRIDGE_NODE__MAX_CALLS", "0")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment SIPBRIDGE_NODE__MAX_CALLS: node.max_calls: 0 is out of range (1 to 100000)"
    );
    let err = load_with_env(&path, env(&[("SIPBRIDGE_TRUNK__NOPE__PASSWORD", "x")])).unwrap_err();
    assert!(err.to_string().contains("no [[trunk]] is named \"nope\""), "{err}");
    let err = load_with_env(&path, env(&[("SIPBRIDGE_MAXCALLS", "3")])).unwrap_err();
    assert!(err.to_string().starts_with("environment SIPBRIDGE_MAXCALLS: not a config override"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.toml", &format!("{SMALL}\n[api]\ntoken = \"api-token-0123456789\"\n"));
    let c = load_with_env(&path, env(&[])).unwrap().config;
    let debug = format!("{c:?}");
    let json = serde_json::to_string(&c).unwrap();
    for shown in [&debug, &json] {
        assert!(!shown.contains("file-password"), "password leaked");
        assert!(!shown.contains("api-token-0123"), "token leaked");
    }
    assert!(json.contains("****6789"), "the last 4 characters of a long token help tell tokens apart");
}

#[test]
fn defaults_apply_when_sections_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.toml", "");
    let loaded = load_with_env(&path, env(&[])).unwrap();
    let c = loaded.config;
    assert_eq!(c.node.max_calls, 100);
    assert_eq!(c.node.data_dir, PathBuf::from("/var/lib/sipbridge"));
    assert_eq!(c.sip.listen.len(), 2);
    assert_eq!(c.rtp.port_range.first, 16384);
    assert_eq!(c.recording.dir, PathBuf::from("/var/lib/sipbridge/recordings"));
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
    assert!(c.webhooks.url.is_none());
}

#[test]
fn cross_references_and_combinations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[[trunk]]
name = "a"
register = true
inbound_username = "x"

[[trunk]]
name = "a"
inbound_allow = ["10.0.0.0/8"]

[[agent]]
name = "hd"
url = "wss://agent.lan/x"
encoding = "PCMU"
sample_rate = 16000

[[route]]
forward = "a"
pin = "12"

[[route]]
room = "r"
agent = "hd"

[webhooks]
url = "https://example.com/hook"
signing_key = "/nonexistent/webhook.key"
"#;
    let path = write(dir.path(), "s.toml", text);
    let err = load_with_env(&path, env(&[])).unwrap_err();
    let all = err.to_string();
    for needle in [
        "trunk[0].register: register = true needs proxy, username and password",
        "trunk[0].inbound_password: missing; inbound_username and inbound_password go together",
        "trunk[1].name: another trunk is already named \"a\"",
        "agent[0].sample_rate: 16000 Hz needs encoding = \"L16\"",
        "route[0].forward: trunk \"a\" has no proxy to send calls to",
        "route[0].pin: a PIN only applies to routes with room",
        "route[1]: has more than one target",
        "webhooks.signing_key: cannot read signing key /nonexistent/webhook.key",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn webhook_delivery_keys_have_defaults_and_located_errors() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let w = load_with_env(&write(dir.path(), "d.toml", ""), env(&[])).unwrap().config.webhooks;
    assert_eq!((w.retry_initial, w.retry_max), (Duration::from_secs(1), Duration::from_secs(300)));
    assert_eq!((w.failover_after, w.max_in_flight), (3, 16));
    assert_eq!(w.delivered_retention, Some(Duration::from_secs(7 * 86_400)));

    let good = "[webhooks]\nretry_initial = \"250ms\"\nretry_max = \"1m\"\nfailover_after = 5\nmax_in_flight = 4\n\
                delivered_retention = \"forever\"\n";
    let w = load_with_env(&write(dir.path(), "g.toml", good), env(&[])).unwrap().config.webhooks;
    assert_eq!((w.retry_initial, w.retry_max), (Duration::from_millis(250), Duration::from_secs(60)));
    assert_eq!((w.failover_after, w.max_in_flight, w.delivered_retention), (5, 4, None));
    let policy = crate::webhook::DeliveryPolicy::from_config(&w);
    assert_eq!((policy.retry_initial, policy.failover_after, policy.max_in_flight), (w.retry_initial, 5, 4));
    assert_eq!(policy.delivered_retention, Duration::MAX, "forever");
    let w = load_with_env(
        &write(dir.path(), "e.toml", ""),
        env(&[("SIPBRIDGE_WEBHOOKS__MAX_IN_FLIGHT", "2"), ("SIPBRIDGE_WEBHOOKS__DELIVERED_RETENTION", "2d")]),
    )
    .unwrap()
    .config
    .webhooks;
    assert_eq!((w.max_in_flight, w.delivered_retention), (2, Some(Duration::from_secs(2 * 86_400))));

    let bad = "[webhooks]\nretry_initial = \"0s\"\nretry_max = \"10ms\"\nfailover_after = 0\nmax_in_flight = \"many\"\n\
               delivered_retention = \"a week\"\nretry_inital = \"1s\"\n";
    let path = write(dir.path(), "sipbridge.toml", bad);
    let shown: Vec<String> =
        load_with_env(&path, env(&[])).unwrap_err().problems.iter().map(|p| p.to_string()).collect();
    let p = path.display();
    for want in [
        format!("{p}:2: webhooks.retry_initial: \"0s\" must be longer than 0 (e.g. \"1s\")"),
        format!("{p}:4: webhooks.failover_after: 0 is out of range (1 to 1000)"),
        format!("{p}:5: webhooks.max_in_flight: \"many\" is not a whole number"),
        format!(
            "{p}:6: webhooks.delivered_retention: \"a week\" is not a duration (e.g. \"500ms\", \"30s\", \"5m\", \"24h\", \"30d\"), or \"forever\""
        ),
        format!("{p}:7: webhooks.retry_inital: unknown key (did you mean \"retry_initial\"?)"),
    ] {
        assert!(shown.contains(&want), "missing {want:?} in:\n{}", shown.join("\n"));
    }
    let path = write(dir.path(), "cap.toml", "[webhooks]\nretry_initial = \"2s\"\nretry_max = \"1s\"\n");
    let err = load_with_env(&path, env(&[])).unwrap_err().to_string();
    assert!(err.contains(":3: webhooks.retry_max: 1s is shorter than retry_initial (2s)"), "{err}");
}

#[test]
fn park_routes_wait_for_the_api_and_are_one_target_only() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[trunk]]\nname = \"t\"\ninbound_allow = [\"10.0.0.0/8\"]\n[[agent]]\nname = \"e\"\nurl = \"builtin:echo\"\n\
                [[route]]\npark = true\n[[route]]\npark = true\nagent = \"e\"\n[[route]]\npark = false\n";
    let err = load_with_env(&write(dir.path(), "p.toml", text), env(&[])).unwrap_err().to_string();
    assert!(err.contains("route[1]: has more than one target"), "{err}");
    assert!(err.contains("route[2]: needs exactly one target"), "{err}");
    let ok = "[[trunk]]\nname = \"t\"\ninbound_allow = [\"10.0.0.0/8\"]\n[[route]]\npark = true\n";
    let c = load_with_env(&write(dir.path(), "ok.toml", ok), env(&[])).unwrap().config;
    assert_eq!(c.routes[0].target, RouteTarget::Park);
}

#[test]
fn api_tls_keys_go_together_and_name_their_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plain = load_with_env(&write(dir.path(), "p.toml", "[api]\nlisten = \"10.0.0.5:8080\"\n"), env(&[])).unwrap();
    assert!(!plain.config.api.tls());
    assert_eq!(plain.config.api.base_url(), "http://10.0.0.5:8080");

    let half = "[api]\ntls_certificate = \"/etc/sipbridge/api.pem\"\n";
    let err = load_with_env(&write(dir.path(), "h.toml", half), env(&[])).unwrap_err().to_string();
    assert!(err.contains("api.tls_private_key: missing; tls_certificate and tls_private_key go together"), "{err}");

    let not_pem = write(dir.path(), "cert.pem", "this is not a certificate\n");
    let text = format!(
        "[node]\nname = \"t\"\n\n[api]\nlisten = \"127.0.0.1:8443\"\ntls_certificate = \"{}\"\ntls_private_key = \"{}\"\n",
        not_pem.display(),
        dir.path().join("missing-key.pem").display()
    );
    let path = write(dir.path(), "bad.toml", &text);
    let err = load_with_env(&path, env(&[])).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{}:6: api.tls_certificate: {} holds no PEM certificate",
            path.display(),
            not_pem.display()
        )),
        "{err}"
    );
}

#[test]
fn rooms_defaults_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), "ok.toml", "[rooms]\nmax_participants = 8\nlinger = \"30s\"\n");
    let c = load_with_env(&ok, env(&[])).unwrap().config;
    assert_eq!((c.rooms.max_participants, c.rooms.linger), (8, std::time::Duration::from_secs(30)));
    assert_eq!(c.rooms.options().max_participants, 8);
    let none = write(dir.path(), "none.toml", "");
    let c = load_with_env(&none, env(&[])).unwrap().config;
    assert_eq!((c.rooms.max_participants, c.rooms.linger), (50, std::time::Duration::ZERO));
    let bad = write(dir.path(), "bad.toml", "[rooms]\nmax_participants = 1\nlinger = \"2h\"\n");
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    assert!(e.contains("bad.toml:2: rooms.max_participants"), "{e}");
    assert!(e.contains("bad.toml:3: rooms.linger: linger must be at most 1h"), "{e}");
}

#[test]
fn recording_format_defaults_to_wav_and_bad_ones_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "");
    assert_eq!(load_with_env(&none, env(&[])).unwrap().config.recording.format, RecordingFormat::Wav);
    let mp3 = write(dir.path(), "mp3.toml", "[recording]\nformat = \"mp3\"\n");
    assert_eq!(load_with_env(&mp3, env(&[])).unwrap().config.recording.format, RecordingFormat::Mp3);
    let over = env(&[("SIPBRIDGE_RECORDING__FORMAT", "mp3")]);
    assert_eq!(load_with_env(&none, over).unwrap().config.recording.format, RecordingFormat::Mp3);
    let bad = write(dir.path(), "bad.toml", "[recording]\nchannels = \"dual\"\nformat = \"ogg\"\n");
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    assert!(e.contains("bad.toml:3: recording.format"), "{e}");
}

#[test]
fn webrtc_defaults_and_bad_values_named() {
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "");
    let w = load_with_env(&none, env(&[])).unwrap().config.webrtc;
    assert!(w.enabled);
    assert_eq!((w.max_participants, w.address.to_string(), w.port_range), (20, "0.0.0.0".to_string(), None));
    assert_eq!((w.consent_timeout.as_secs(), w.join_token_ttl.as_secs()), (30, 3600));
    let ok = write(
        dir.path(),
        "ok.toml",
        "[webrtc]\naddress = \"192.168.1.20\"\npublic_address = \"203.0.113.7\"\nport_range = \"40000-40199\"\n\
         stun_servers = [\"stun:stun.example.net:3478\"]\nmax_participants = 4\n",
    );
    let w = load_with_env(&ok, env(&[])).unwrap().config.webrtc;
    assert_eq!(w.port_range, Some((40000, 40199)));
    assert_eq!(w.public_address.map(|a| a.to_string()).as_deref(), Some("203.0.113.7"));
    assert_eq!(w.stun_servers, ["stun:stun.example.net:3478"]);
    let bad = write(
        dir.path(),
        "bad.toml",
        "[webrtc]\naddress = \"box.lan\"\nport_range = \"50000-40000\"\nstun_servers = [\"turn:x\"]\n\
         consent_timeout = \"1s\"\npublic_address = \"0.0.0.0\"\nmax_participants = 501\n",
    );
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    for (line, key) in [
        (2, "webrtc.address"),
        (3, "webrtc.port_range"),
        (4, "webrtc.stun_servers"),
        (5, "webrtc.consent_timeout"),
        (6, "webrtc.public_address"),
        (7, "webrtc.max_participants"),
    ] {
        assert!(e.contains(&format!("bad.toml:{line}: {key}")), "{key} at line {line}: {e}");
    }
}

#[test]
fn auth_bans_and_realms_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nauth_max_failures = 3\nauth_failure_window = \"1m\"\nauth_ban_time = \"1h\"\n[[trunk]]\nname = \"t\"\nproxy = \"sip:192.0.2.1\"\nusername = \"u\"\npassword = \"p-long-enough\"\nauth_realm = \"sip.example\"\n";
    let c = load_with_env(&write(dir.path(), "good.toml", good), env(&[])).unwrap().config;
    assert_eq!(c.sip.auth_ban.max_failures, 3);
    assert_eq!(c.sip.auth_ban.window, std::time::Duration::from_secs(60));
    assert_eq!(c.sip.auth_ban.ban_time, std::time::Duration::from_secs(3600));
    assert_eq!(c.trunks[0].auth_realm.as_deref(), Some("sip.example"));
    let defaults =
        load_with_env(&write(dir.path(), "d.toml", "[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\n"), env(&[]))
            .unwrap()
            .config;
    assert_eq!(defaults.sip.auth_ban, BanPolicy::default());

    let bad = "[sip]\nlisten = [\"udp://127.0.0.1:5060\"]\nauth_max_failures = -1\nauth_ban_time = \"soon\"\n[[trunk]]\nname = \"t\"\nproxy = \"sip:192.0.2.1\"\nauth_realm = \"sip.example\"\n";
    let path = write(dir.path(), "bad.toml", bad);
    let err = load_with_env(&path, env(&[])).unwrap_err();
    let shown: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let p = path.display();
    assert!(shown.iter().any(|s| s.starts_with(&format!("{p}:3: sip.auth_max_failures:"))), "{shown:?}");
    assert!(shown.iter().any(|s| s.starts_with(&format!("{p}:4: sip.auth_ban_time:"))), "{shown:?}");
    assert!(shown.iter().any(|s| s.starts_with(&format!("{p}:8: trunk[0].auth_realm:"))), "{shown:?}");
}

#[test]
fn media_and_api_limits_defaults_and_bad_values_named() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "[node]\ndata_dir = \"/srv/sb\"\n[api]\n");
    let c = load_with_env(&none, env(&[])).unwrap().config;
    assert_eq!(c.media.dir, PathBuf::from("/srv/sb/media"), "under data_dir by default");
    assert_eq!((c.media.max_fetch_bytes, c.media.fetch_timeout), (20 * 1024 * 1024, Duration::from_secs(10)));
    assert!(!c.media.allow_private_urls);
    assert_eq!((c.api.max_connections, c.api.header_read_timeout), (256, Duration::from_secs(10)));
    assert_eq!(c.webrtc.max_participants_per_room, 10);
    let ok = write(
        dir.path(),
        "ok.toml",
        "[media]\ndir = \"/srv/prompts\"\nmax_fetch_bytes = \"1MiB\"\nfetch_timeout = \"3s\"\n\
         allow_private_urls = true\n[api]\nmax_connections = 8\nheader_read_timeout = \"2s\"\n\
         [webrtc]\nmax_participants_per_room = 3\n",
    );
    let c = load_with_env(&ok, env(&[])).unwrap().config;
    assert_eq!(c.media.dir, PathBuf::from("/srv/prompts"));
    assert_eq!((c.media.max_fetch_bytes, c.media.fetch_timeout), (1024 * 1024, Duration::from_secs(3)));
    assert!(c.media.allow_private_urls);
    assert_eq!((c.api.max_connections, c.api.header_read_timeout), (8, Duration::from_secs(2)));
    assert_eq!(c.webrtc.max_participants_per_room, 3);
    let bad = write(
        dir.path(),
        "bad.toml",
        "[media]\ndir = \"prompts\"\nmax_fetch_bytes = \"1GiB\"\nfetch_timeout = \"1h\"\nallow_private_urls = \"yes\"\n\
         [api]\nmax_connections = 0\nheader_read_timeout = \"0s\"\n[webrtc]\nmax_participants_per_room = 0\n",
    );
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    for (line, key) in [
        (2, "media.dir"),
        (3, "media.max_fetch_bytes"),
        (4, "media.fetch_timeout"),
        (5, "media.allow_private_urls"),
        (7, "api.max_connections"),
        (8, "api.header_read_timeout"),
        (10, "webrtc.max_participants_per_room"),
    ] {
        assert!(e.contains(&format!("bad.toml:{line}: {key}")), "{key} at line {line}: {e}");
    }
}

#[test]
fn rtp_latching_defaults_and_bounds() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "");
    let r = load_with_env(&none, env(&[])).unwrap().config.rtp;
    assert_eq!(
        (r.learning_window, r.relatch_after, r.strict_source),
        (Duration::from_secs(3), Duration::from_secs(2), false)
    );
    let ok = write(
        dir.path(),
        "ok.toml",
        "[rtp]\nlearning_window = \"500ms\"\nrelatch_after = \"10s\"\nstrict_source = true\n",
    );
    let r = load_with_env(&ok, env(&[])).unwrap().config.rtp;
    assert_eq!(
        (r.learning_window, r.relatch_after, r.strict_source),
        (Duration::from_millis(500), Duration::from_secs(10), true)
    );
    let bad = write(
        dir.path(),
        "bad.toml",
        "[rtp]\nlearning_window = \"2m\"\nrelatch_after = \"50ms\"\nstrict_source = \"yes\"\n",
    );
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    assert!(e.contains("bad.toml:2: rtp.learning_window: learning_window must be at most 60s"), "{e}");
    assert!(e.contains("bad.toml:3: rtp.relatch_after: relatch_after must be at least 200ms"), "{e}");
    assert!(e.contains("bad.toml:4: rtp.strict_source: must be true or false"), "{e}");
}

#[test]
fn sip_unknown_source_and_user_agent_defaults_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "");
    let c = load_with_env(&none, env(&[])).unwrap().config;
    assert_eq!((c.sip.unknown_source, c.sip.user_agent.as_str()), (UnknownSource::Drop, "sipbridge"));
    let ok = write(dir.path(), "ok.toml", "[sip]\nunknown_source = \"reject\"\nuser_agent = \"\"\n");
    let c = load_with_env(&ok, env(&[])).unwrap().config;
    assert_eq!((c.sip.unknown_source, c.sip.user_agent.as_str()), (UnknownSource::Reject, ""));
    let bad = write(dir.path(), "bad.toml", "[sip]\nunknown_source = \"ignore\"\nuser_agent = \"a\\r\\nX-Evil: 1\"\n");
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    assert!(e.contains("bad.toml:2: sip.unknown_source: \"ignore\" is not one of \"drop\", \"reject\""), "{e}");
    assert!(e.contains("bad.toml:3: sip.user_agent"), "{e}");
}

#[test]
fn sip_stream_bounds_have_defaults_and_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let none = write(dir.path(), "none.toml", "");
    let s = load_with_env(&none, env(&[])).unwrap().config.sip.streams;
    assert_eq!(s, SipStreams::default());
    assert_eq!((s.max_connections, s.max_connections_per_source), (1024, 16));
    assert_eq!(
        (s.tls_handshake_timeout.as_secs(), s.first_message_timeout.as_secs(), s.idle_timeout.as_secs()),
        (10, 10, 180)
    );
    let ok = write(
        dir.path(),
        "ok.toml",
        "[sip]\nmax_connections = 4096\nmax_connections_per_source = 64\ntls_handshake_timeout = \"5s\"\n\
         first_message_timeout = \"500ms\"\nidle_timeout = \"2m\"\n",
    );
    let s = load_with_env(&ok, env(&[])).unwrap().config.sip.streams;
    assert_eq!((s.max_connections, s.max_connections_per_source), (4096, 64));
    assert_eq!(s.first_message_timeout, std::time::Duration::from_millis(500));
    assert_eq!(s.idle_timeout.as_secs(), 120);
    let bad = write(
        dir.path(),
        "bad.toml",
        "[sip]\nmax_connections = 0\nmax_connections_per_source = \"many\"\ntls_handshake_timeout = \"1h\"\n\
         first_message_timeout = \"10ms\"\nidle_timeout = \"soon\"\n",
    );
    let e = load_with_env(&bad, env(&[])).unwrap_err().to_string();
    for (line, key) in [
        (2, "sip.max_connections"),
        (3, "sip.max_connections_per_source"),
        (4, "sip.tls_handshake_timeout"),
        (5, "sip.first_message_timeout"),
        (6, "sip.idle_timeout"),
    ] {
        assert!(e.contains(&format!("bad.toml:{line}: {key}")), "{key} at line {line}: {e}");
    }
    let more = write(dir.path(), "more.toml", "[sip]\nmax_connections = 8\nmax_connections_per_source = 9\n");
    let e = load_with_env(&more, env(&[])).unwrap_err().to_string();
    assert!(e.contains("more.toml:3: sip.max_connections_per_source: 9 is more than max_connections (8)"), "{e}");
}

#[test]
fn recording_upload_reads_defaults_secrets_from_the_environment_and_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "up.toml",
        "[node]\nname = \"shop-1\"\n[recording.upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"acme-rec\"\n\
         access_key_id = \"AKIAEXAMPLE\"\npath_style = true\ndelete_local_after = \"0s\"\n",
    );
    let e = load_with_env(&p, env(&[])).unwrap_err().to_string();
    assert!(e.contains("recording.upload.secret_access_key") && e.contains("SECRET_ACCESS_KEY"), "{e}");
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let c = load_with_env(&p, env(&[("SIPBRIDGE_RECORDING__UPLOAD__SECRET_ACCESS_KEY", secret)])).unwrap().config;
    let u = c.recording_upload.expect("[recording.upload]");
    assert_eq!(
        (u.bucket.as_str(), u.region.as_str(), u.prefix.as_str()),
        ("acme-rec", "us-east-1", "{node}/{yyyy}/{mm}/{dd}/")
    );
    assert_eq!(u.secret_access_key.expose(), secret);
    assert_eq!(u.delete_local_after, Some(std::time::Duration::ZERO));
    assert_eq!(u.part_size, 8 << 20);
    assert!(u.path_style);
    let shown = serde_json::to_string(&u).unwrap();
    assert!(!shown.contains("EXAMPLEKEY") && shown.contains("****"), "secrets masked: {shown}");

    let p = write(
        dir.path(),
        "bad.toml",
        "[recording.upload]\nendpoint = \"ftp://x\"\nbucket = \"Bad_Bucket\"\nprefix = \"{date}/\"\n\
         access_key_id = \"a\"\nsecret_access_key = \"b\"\npart_size = \"1MiB\"\nurl_lifetime = \"30d\"\n",
    );
    let e = load_with_env(&p, env(&[])).unwrap_err().to_string();
    for needle in ["bad.toml:2", "recording.upload.bucket", "unknown placeholder {date}", "5MiB to 5GiB", "7d"] {
        assert!(e.contains(needle), "{needle:?} in:\n{e}");
    }
    let none = write(dir.path(), "none.toml", "[recording]\nenabled = true\n");
    assert!(load_with_env(&none, env(&[])).unwrap().config.recording_upload.is_none());
}

#[test]
fn agent_protocols_pick_their_defaults_and_bad_ones_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[[agent]]
name = "tw"
url = "wss://agent.lan/twilio"
protocol = "twilio"

[[agent]]
name = "ex"
url = "ws://agent.lan/exotel"
protocol = "exotel"
sample_rate = 16000

[[agent]]
name = "as"
url = "tcp://127.0.0.1:9092"
protocol = "audiosocket"

[[agent]]
name = "default"
url = "ws://agent.lan/"
"#;
    let c = load_with_env(&write(dir.path(), "g.toml", good), env(&[])).unwrap().config;
    let a = |n: &str| c.agent(n).unwrap().clone();
    assert_eq!((a("tw").protocol, a("tw").encoding), (StreamProtocol::Twilio, Encoding::Pcmu));
    assert_eq!(
        (a("ex").protocol, a("ex").encoding, a("ex").sample_rate),
        (StreamProtocol::Exotel, Encoding::L16, 16000)
    );
    assert_eq!((a("as").protocol, a("as").encoding), (StreamProtocol::AudioSocket, Encoding::L16));
    assert_eq!((a("default").protocol, a("default").encoding), (StreamProtocol::Telnyx, Encoding::Pcmu));

    let bad = r#"
[[agent]]
name = "a"
url = "ws://agent.lan/"
protocol = "vonage"

[[agent]]
name = "b"
url = "ws://agent.lan/"
protocol = "audiosocket"

[[agent]]
name = "c"
url = "tcp://agent.lan"
protocol = "audiosocket"

[[agent]]
name = "d"
url = "wss://agent.lan/"
protocol = "twilio"
encoding = "L16"

[[agent]]
name = "e"
url = "tcp://agent.lan:9092"
protocol = "audiosocket"
sample_rate = 16000
"#;
    let path = write(dir.path(), "b.toml", bad);
    let all = load_with_env(&path, env(&[])).unwrap_err().to_string();
    for needle in [
        "b.toml:5: agent[0].protocol: \"vonage\" is not one of \"telnyx\", \"twilio\", \"exotel\", \"plivo\", \"audiosocket\"",
        "agent[1].url: \"ws://agent.lan/\" must use tcp:// or audiosocket://",
        "agent[2].url: \"tcp://agent.lan\" has no port",
        "agent[3].encoding: Twilio streams are PCMU at 8000 Hz only",
        "agent[4].protocol: AudioSocket streams are L16 (slin, little-endian) at 8000 Hz only",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn noise_suppression_is_read_on_agents_and_routes_and_bad_values_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[rtp]
max_suppressed_streams = 4

[[agent]]
name = "clean"
url = "ws://agent.lan/"
noise_suppression = "both"

[[agent]]
name = "plain"
url = "ws://agent.lan/"

[[route]]
to = "+1555*"
agent = "plain"
noise_suppression = "inbound"
record = true
record_format = "mp3"

[[route]]
agent = "clean"
"#;
    let c = load_with_env(&write(dir.path(), "g.toml", good), env(&[])).unwrap().config;
    let both = Suppression { inbound: true, outbound: true };
    assert_eq!(c.agent("clean").unwrap().noise_suppression, both);
    assert_eq!(c.agent("plain").unwrap().noise_suppression, Suppression::OFF);
    assert_eq!(c.routes[0].noise_suppression, Some(Suppression { inbound: true, outbound: false }));
    assert_eq!(c.routes[1].noise_suppression, None);
    assert_eq!((both.direction(), Suppression::OFF.direction()), ("both", "disabled"));
    assert_eq!(c.rtp.max_suppressed_streams, 4);
    assert_eq!((c.routes[0].record_format, c.routes[1].record_format), (Some(RecordingFormat::Mp3), None));

    let bad = r#"
[[agent]]
name = "a"
url = "ws://agent.lan/"
noise_suppression = "loud"

[rtp]
max_suppressed_streams = -1

[[route]]
park = true
noise_suppression = "inbound"

[[route]]
agent = "a"
record_format = "ogg"
"#;
    let all = load_with_env(&write(dir.path(), "b.toml", bad), env(&[])).unwrap_err().to_string();
    for needle in [
        "b.toml:5: agent[0].noise_suppression: \"loud\" is not one of \"inbound\", \"outbound\", \"both\", \"disabled\"",
        "route[0].noise_suppression: a parked call's media is chosen by the API",
        "rtp.max_suppressed_streams",
        "route[1].record_format: \"ogg\" is not one of \"wav\", \"mp3\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn answer_url_routes_read_their_method_timeout_and_fallback_and_bad_ones_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let trunk = "[[trunk]]\nname = \"t\"\ninbound_allow = [\"10.0.0.0/8\"]\n";
    let ok = format!(
        "{trunk}[[route]]\nanswer_url = \"https://app.example/answer\"\n\
         [[route]]\nanswer_url = \"http://10.0.0.2/a\"\nanswer_method = \"GET\"\nanswer_timeout = \"2s\"\n\
         fallback_url = \"https://app.example/fallback\"\nstatus_callback = \"https://app.example/status\"\n"
    );
    let c = load_with_env(&write(dir.path(), "ok.toml", &ok), env(&[])).unwrap().config;
    let RouteTarget::AnswerUrl(a) = &c.routes[0].target else { panic!("{:?}", c.routes[0].target) };
    assert_eq!(
        **a,
        AnswerUrl {
            url: "https://app.example/answer".parse().unwrap(),
            method: HttpMethod::Post,
            timeout: std::time::Duration::from_secs(5),
            fallback_url: None,
            status_callback: None,
        }
    );
    let RouteTarget::AnswerUrl(b) = &c.routes[1].target else { panic!() };
    assert_eq!((b.method, b.timeout), (HttpMethod::Get, std::time::Duration::from_secs(2)));
    assert_eq!(b.fallback_url.as_ref().map(url::Url::as_str), Some("https://app.example/fallback"));
    assert_eq!(b.status_callback.as_ref().map(url::Url::as_str), Some("https://app.example/status"));
    assert_eq!(c.routes[1].target.to_json()["type"], "answer_url");

    let bad = format!(
        "{trunk}[[route]]\nanswer_url = \"ftp://app.example/a\"\n\
         [[route]]\nanswer_url = \"https://app.example/a\"\nanswer_method = \"PUT\"\nanswer_timeout = \"90s\"\n\
         fallback_url = \"file:///etc/passwd\"\n\
         [[route]]\npark = true\nfallback_url = \"https://app.example/f\"\nstatus_callback = \"x\"\n\
         [[route]]\npark = true\nanswer_url = \"https://app.example/a\"\n"
    );
    let err = load_with_env(&write(dir.path(), "bad.toml", &bad), env(&[])).unwrap_err().to_string();
    assert!(err.contains(":5: route[0].answer_url: \"ftp://app.example/a\" must use http:// or https://"), "{err}");
    assert!(err.contains(":8: route[1].answer_method: \"PUT\" is not POST or GET"), "{err}");
    assert!(err.contains(":9: route[1].answer_timeout: \"90s\" must be between 1s and 30s"), "{err}");
    assert!(err.contains(":10: route[1].fallback_url: \"file:///etc/passwd\" must use http:// or https://"), "{err}");
    assert!(err.contains("route[2].fallback_url: only applies to routes with answer_url"), "{err}");
    assert!(err.contains("route[2].status_callback: \"x\" is not a URL"), "{err}");
    assert!(err.contains("route[3]: has more than one target"), "{err}");
}

#[test]
fn wideband_codecs_and_stream_encodings_are_read_and_located() {
    use crate::config::{Codec, Encoding};
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[[trunk]]
name = "wide"
provider = "telnyx"
codecs = ["OPUS", "g722", "PCMU"]

[[trunk]]
name = "lk"
provider = "livekit"
proxy = "sip:lk.example.com"
codecs = ["G722", "PCMA"]

[[agent]]
name = "g722"
url = "ws://agent.lan/"
encoding = "G722"

[[agent]]
name = "opus"
url = "ws://agent.lan/"
encoding = "OPUS"
sample_rate = 16000
"#;
    let c = load_with_env(&write(dir.path(), "w.toml", good), env(&[])).unwrap().config;
    assert_eq!(c.trunks[0].codecs, vec![Codec::Opus, Codec::G722, Codec::Pcmu]);
    assert_eq!(c.trunks[1].codecs, vec![Codec::G722, Codec::Pcma]);
    let agent = |n: &str| c.agents.iter().find(|a| a.name == n).unwrap();
    assert_eq!((agent("g722").encoding, agent("g722").sample_rate), (Encoding::G722, 16000), "16 kHz by default");
    assert_eq!((agent("opus").encoding, agent("opus").sample_rate), (Encoding::Opus, 16000));

    let bad = r#"
[[trunk]]
name = "lk"
provider = "livekit"
proxy = "sip:lk.example.com"
codecs = ["OPUS"]

[[trunk]]
name = "g"
codecs = ["G729"]

[[agent]]
name = "a"
url = "ws://agent.lan/"
encoding = "G722"
sample_rate = 8000

[[agent]]
name = "b"
url = "wss://agent.lan/"
protocol = "twilio"
encoding = "OPUS"

[[agent]]
name = "c"
url = "wss://agent.lan/"
protocol = "plivo"
encoding = "G722"
"#;
    let all = load_with_env(&write(dir.path(), "x.toml", bad), env(&[])).unwrap_err().to_string();
    for needle in [
        "x.toml:6: trunk[0].codecs: Opus is not carried by Livekit SIP trunks",
        "trunk[1].codecs[0]: \"G729\" is not a supported codec (\"PCMU\", \"PCMA\", \"G722\", \"OPUS\")",
        "agent[0].encoding: G722 and OPUS streams are 16000 Hz",
        "agent[1].encoding: Twilio streams are PCMU at 8000 Hz only",
        "agent[2].encoding: Plivo streams are PCMU at 8000 Hz or L16",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

/// A `shutdown_grace` the unit's `TimeoutStopSec` cannot cover is warned about
/// (the technician would otherwise only see systemd kill the daemon), and the
/// constant matches the shipped unit.
#[test]
fn a_shutdown_grace_longer_than_the_unit_allows_is_warned_about() {
    let unit = std::fs::read_to_string(repo("systemd/sipbridge.service")).unwrap();
    let timeout = unit.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).expect("the unit sets TimeoutStopSec");
    assert_eq!(timeout.trim(), format!("{}s", super::schema::UNIT_STOP_TIMEOUT.as_secs()));

    let dir = tempfile::tempdir().unwrap();
    let warned = |grace: &str| {
        let path = dir.path().join("grace.toml");
        std::fs::write(&path, format!("[node]\nshutdown_grace = \"{grace}\"\n")).unwrap();
        let loaded = load_with_env(&path, env(&[])).unwrap();
        loaded.warnings.iter().any(|w| w.contains("TimeoutStopSec"))
    };
    assert!(!warned("30s"), "the default fits");
    assert!(warned("40s"));
}
