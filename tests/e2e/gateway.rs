//! The box as the end-to-end scenarios run it: the real daemon binary on loopback
//! with a config of the scenario's own (trunks, agents, routes), recording on,
//! Ed25519-signed webhooks to `tests/receivers/webhook_receiver.py` (which verifies
//! every signature with the public key `sipbridge keygen` printed), the control API
//! on a free port. Also: `kill -9` and restart on the same config and data dir, the
//! control API over HTTP, and the call records read from `{data_dir}/sipbridge.db`
//! as a technician's `sqlite3` would. Included with `#[path]` by `tests/e2e_*.rs`,
//! next to `common` and `harness`.
#![allow(dead_code)] // each scenario file uses a different subset

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::baresip::{Baresip, Phone};
#[allow(unused_imports)] // each scenario file uses a different subset
pub use crate::common::gateway::{Gateway, event_type, files_ending, payload, time};
use crate::common::{Sipp, free_even_block, free_port};

/// Upper bound of every wait in the scenarios.
pub const WAIT: Duration = Duration::from_secs(40);
/// The control API's bearer token.
pub const TOKEN: &str = "e2e-token-0123456789";
/// The caller's number (baresip's account) on inbound calls.
pub const CALLER: &str = "+14155550123";
/// The box's number on the Telnyx trunk.
pub const NUMBER: &str = "+13125550100";

/// A Telnyx IP connection to the box (calls come from 127.0.0.2 only), an agent
/// named `support-bot` at `agent_url` (with `agent_extra` TOML lines), and the
/// route that sends the box's number to it, recorded.
pub fn telnyx_trunk_to_agent(agent_url: &str, agent_extra: &str) -> String {
    format!(
        "[[trunk]]\nname = \"telnyx-ip\"\nprovider = \"telnyx\"\nproxy = \"sip:127.0.0.2:5060\"\n\
         inbound_allow = [\"127.0.0.2/32\"]\nnumbers = [\"{NUMBER}\"]\n\
         [[agent]]\nname = \"support-bot\"\nurl = \"{agent_url}\"\n{agent_extra}\n\
         [[route]]\nname = \"main number to the agent\"\ntrunk = \"telnyx-ip\"\nto = \"{NUMBER}\"\n\
         agent = \"support-bot\"\nrecord = true\n"
    )
}

/// baresip on 127.0.0.2 (as Telnyx's proxy) calls the box's number at `sip_port`
/// playing `source` (it hangs up when the file ends), and once answered presses
/// `digits` 400 ms apart from `keys_at` after the answer. Returns the phone and
/// when the call was answered.
pub fn call_in(dir: &Path, sip_port: u16, source: &Path, keys_at: Duration, digits: &str) -> (Baresip, Instant) {
    let mut phone = Baresip::start(
        dir,
        "caller-phone",
        Phone { ip: "127.0.0.2", user: CALLER, auto_answer: false, source, max: Duration::from_secs(90) },
    );
    phone.dial(&format!("sip:{NUMBER}@127.0.0.1:{sip_port}"));
    assert!(phone.wait_event("CALL_ESTABLISHED", WAIT).is_some(), "the box answered: {}", phone.log());
    let answered = Instant::now();
    if !digits.is_empty() {
        std::thread::sleep(keys_at.saturating_sub(answered.elapsed()));
        for d in digits.chars() {
            phone.press(d);
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    (phone, answered)
}

/// The box with `body` (its `[[trunk]]`, `[[agent]]` and `[[route]]` blocks):
/// recording on (dual channel), signed webhooks that retry fast (200 ms, at most
/// 1 s apart, so a backend that comes back is served within a second), the control
/// API with [`TOKEN`]; started, READY.
pub fn start(dir: &Path, body: &str) -> Gateway {
    Gateway::builder(dir)
        .node_name("e2e")
        .blocks(body)
        .recording("channels = \"dual\"")
        .webhooks("retry_initial = \"200ms\"\nretry_max = \"1s\"")
        .api(TOKEN)
        .log_level("debug")
        .start()
}

/// Events of one leg (by `call_control_id`), in delivery order.
pub fn of_leg<'a>(bodies: &'a [Value], call_control_id: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| payload(b)["call_control_id"] == call_control_id).collect()
}

/// Their event types.
pub fn types<'a>(bodies: &[&'a Value]) -> Vec<&'a str> {
    bodies.iter().map(|b| event_type(b)).collect()
}

// ---------------------------------------------------------------------------
// LiveKit's outbound trunk through the box to Telnyx (SIPp on both sides)

/// A SIPp run of one of this directory's scenarios (tests/e2e/*.xml).
pub fn e2e_scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e").join(name)
}

/// SIPp arguments for `scenario_file` on `ip`:`port`, one call, bounded.
pub fn sipp(scenario_file: &Path, ip: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-sf".into(),
        scenario_file.display().to_string(),
        "-i".into(),
        ip.into(),
        "-p".into(),
        port.to_string(),
        "-mp".into(),
        free_even_block(4).to_string(),
        "-m".into(),
        "1".into(),
        "-t".into(),
        "u1".into(),
        "-timeout".into(),
        "40s".into(),
        "-timeout_error".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The box between LiveKit (outbound trunk, digest-authenticated) and Telnyx on
/// 127.0.0.3:`telnyx_port`, forwarding and recording every call from LiveKit.
pub fn livekit_to_telnyx(telnyx_port: u16) -> String {
    format!(
        "[[trunk]]\nname = \"livekit\"\nprovider = \"livekit\"\nproxy = \"sip:127.0.0.9:5999\"\n\
         inbound_username = \"livekit-out\"\ninbound_password = \"lk-secret-1234\"\n\
         [[trunk]]\nname = \"telnyx\"\nprovider = \"telnyx\"\nproxy = \"sip:127.0.0.3:{telnyx_port}\"\n\
         inbound_allow = [\"127.0.0.3/32\"]\nnumbers = [\"+14155550123\"]\n\
         [[route]]\nname = \"livekit out to telnyx\"\ntrunk = \"livekit\"\nforward = \"telnyx\"\nrecord = true\n"
    )
}

/// Runs Telnyx's side (`b_sf`, echoing RTP) and LiveKit's call through the box
/// (`a_sf`) to the end: each side's exit code and SIPp run.
pub async fn livekit_and_telnyx(
    dir: &Path,
    gw: &Gateway,
    a_sf: &Path,
    b_sf: &Path,
    telnyx_port: u16,
) -> ((i32, Sipp), (i32, Sipp)) {
    let mut telnyx = Sipp::start(dir, "telnyx", &sipp(b_sf, "127.0.0.3", telnyx_port, &["-rtp_echo"]));
    let mut a_args = sipp(a_sf, "127.0.0.4", free_port(), &["-au", "livekit-out", "-ap", "lk-secret-1234"]);
    a_args.extend(["-s".into(), NUMBER.into(), format!("127.0.0.1:{}", gw.sip_port)]);
    let mut livekit = Sipp::start(dir, "livekit", &a_args);
    tokio::task::spawn_blocking(move || {
        let a = livekit.wait(Duration::from_secs(45));
        let b = telnyx.wait(Duration::from_secs(45));
        ((a, livekit), (b, telnyx))
    })
    .await
    .unwrap()
}
