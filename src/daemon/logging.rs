//! Logging set-up (tracing): text, JSON or the systemd journal, chosen by
//! `[log].format`; level from `[log].level` unless `RUST_LOG` is set. The level can
//! be changed by SIGHUP ([`LogHandle::set_level`]).
//!
//! Levels are per target prefix (`tracing_subscriber::filter::Targets`):
//! `RUST_LOG` takes `level` and `target=level` items separated by commas, as
//! env_logger does (`RUST_LOG=info,rsipstack=debug`). Span and field filters
//! (`[span{field=x}]`) are not supported: they need tracing's regex-based
//! `EnvFilter`, whose regex crates were 268 KiB of the arm64 binary's code (issue 18).
//!
//! `auto` uses journald when stderr is connected to the journal — systemd sets
//! `JOURNAL_STREAM=<dev>:<inode>` of that stream (systemd.exec(5)); it is compared
//! with stderr's own device and inode so that a child process started from a unit
//! does not mistake its redirected stderr for the journal.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::config::{Log, LogFormat};

type FilterHandle = reload::Handle<Targets, Registry>;

/// The crates of the WebRTC stack (webrtc-rs): they warn about normal events of
/// every session (no candidate pairs yet, no DTLS server name); sipbridge logs
/// what matters of a session itself (`webrtc` module).
const WEBRTC_STACK: &[&str] = &[
    "webrtc",
    "rtc",
    "rtc_ice",
    "rtc_dtls",
    "rtc_srtp",
    "rtc_sctp",
    "rtc_interceptor",
    "rtc_mdns",
    "rtc_stun",
    "rtc_turn",
    "rtc_rtp",
    "rtc_rtcp",
    "rtc_datachannel",
    "rtc_shared",
    "rtc_sdp",
    "rtc_media",
];

/// The filter for a `[log].level`: rsipstack logs every SIP message at info,
/// so its own level is one step quieter (warn) unless we are debugging; the
/// WebRTC stack logs errors only unless we are debugging.
fn filter_for(level: &str) -> Targets {
    let debugging = matches!(level, "debug" | "trace");
    let stack = if debugging { level } else { "warn" };
    let webrtc = if debugging { level } else { "error" };
    let quiet: String = WEBRTC_STACK.iter().map(|c| format!(",{c}={webrtc}")).collect();
    format!("{level},rsipstack={stack}{quiet},sipbridge::webrtc={level}")
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

/// Lets the daemon change the level after a reload.
pub struct LogHandle {
    filter: FilterHandle,
    from_env: bool,
}

impl LogHandle {
    /// Applies a new `[log].level` (ignored while `RUST_LOG` is set).
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        if let Err(e) = self.filter.reload(filter_for(level)) {
            tracing::warn!(error = %e, "could not change the log level");
        }
    }
}

/// Whether stderr is the journal stream systemd gave us.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    // st_dev/st_ino are u32 on some 32-bit targets (armv7): the casts are needed there.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// The filter `RUST_LOG` asks for, or None when it is unset or not valid
/// (`[log].level` then applies; a warning says why once logging is up).
fn from_rust_log() -> Option<Targets> {
    std::env::var("RUST_LOG").ok()?.parse().ok()
}

/// Installs the global subscriber. Call once, after the config is read.
pub fn init(log: &Log) -> LogHandle {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = from_rust_log().unwrap_or_else(|| filter_for(&log.level));
    let (filter, handle) = reload::Layer::new(filter);
    let format = match log.format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let mut fallback_note = None;
    let output: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(l) => l.with_syslog_identifier("sipbridge".into()).boxed(),
            Err(e) => {
                fallback_note = Some(format!("journald is not reachable ({e}); logging to stderr"));
                text_layer()
            }
        },
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        _ => text_layer(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(output).try_init();
    if let Some(note) = fallback_note {
        tracing::warn!("{note}");
    }
    if from_env && from_rust_log().is_none() {
        tracing::warn!(
            rust_log = std::env::var("RUST_LOG").unwrap_or_default(),
            "RUST_LOG is not a list of `level` and `target=level` items; using [log].level"
        );
    }
    LogHandle { filter: handle, from_env }
}

fn text_layer<S>() -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_level_applies_to_sipbridge_and_the_stacks_stay_quieter() {
        let f = filter_for("info");
        assert!(f.would_enable("sipbridge::sip::inbound", &Level::INFO));
        assert!(!f.would_enable("sipbridge::sip::inbound", &Level::DEBUG));
        assert!(!f.would_enable("rsipstack::transport", &Level::INFO));
        assert!(f.would_enable("rsipstack::transport", &Level::WARN));
        assert!(!f.would_enable("rtc_ice::agent", &Level::WARN));
        assert!(f.would_enable("rtc_ice::agent", &Level::ERROR));
        assert!(f.would_enable("sipbridge::webrtc::session", &Level::INFO));

        let f = filter_for("debug");
        assert!(f.would_enable("rsipstack::transaction", &Level::DEBUG));
        assert!(f.would_enable("rtc_dtls::conn", &Level::DEBUG));
        assert!(!f.would_enable("sipbridge", &Level::TRACE));
    }

    #[test]
    fn rust_log_takes_env_logger_items() {
        let f: Targets = "warn,rsipstack=debug,sipbridge::media=trace".parse().unwrap();
        assert!(f.would_enable("rsipstack::dialog", &Level::DEBUG));
        assert!(f.would_enable("sipbridge::media::leg", &Level::TRACE));
        assert!(!f.would_enable("sipbridge::api", &Level::INFO));
        assert!("info,[span{x=1}]=debug".parse::<Targets>().is_err());
    }
}
