//! The technician's console (issue 24) and the one route it needs that nothing
//! else serves:
//!
//! - `GET /console`: the page (`assets/console.html`, plain HTML/JS inside the
//!   binary, no CDN, no build step). The page itself holds no secret and needs no
//!   credentials; it asks for the API token and keeps it in the tab's
//!   `sessionStorage`, then uses only the public API (`/v2/status`, `/v2/trunks`,
//!   `/v2/routes`, `/v2/calls`, `/v2/call_records`, `/v2/recordings`,
//!   `/v2/config`, `/v2/events`, ...).
//! - `GET /v2/config` → `{"data": {"path", "config": {...}, "reload":
//!   {"last_applied_at", "last_rejected": null | {"at", "errors": ["..."]}}}}`:
//!   the config in force as JSON (sections as in the TOML file, `trunks`,
//!   `agents`, `routes` as lists in file order), secrets masked
//!   ([`crate::config::Secret`]'s `****` plus at most the last 4 characters; a
//!   route's `pin` and a URL's password as `****`), durations as strings
//!   (`"30s"`, `"1.5s"`); and the outcome of SIGHUP reloads since the daemon
//!   started (a rejected reload keeps the old config; its errors are the same
//!   `file:line: key: ...` lines `sipbridge check-config` prints).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use crate::store::timestamp;

/// The console page, served at `/console`.
const CONSOLE_PAGE: &str = include_str!("../../assets/console.html");

/// `GET /console`: the page, with a policy that lets it reach only this origin
/// (and its WebSockets) and play recordings it fetched (`blob:`).
pub async fn page() -> Response {
    html_page(
        CONSOLE_PAGE,
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
         media-src blob:; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )
}

/// One of the box's own pages (`body`, inline script and style): never cached, no
/// `Referer` sent from it, under the Content-Security-Policy `csp`.
pub fn html_page(body: &'static str, csp: &'static str) -> Response {
    let mut r = Html(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    r
}

/// What SIGHUP reloads did since start: the daemon writes it, `GET /v2/config`
/// reads it. Cloning shares the one record.
#[derive(Clone, Default)]
pub struct ReloadLog(Arc<Mutex<ReloadRecord>>);

#[derive(Default, Clone)]
struct ReloadRecord {
    applied_at: Option<SystemTime>,
    rejected: Option<(SystemTime, Vec<String>)>,
}

impl ReloadLog {
    /// A reload was applied at `at`.
    pub fn applied(&self, at: SystemTime) {
        if let Ok(mut r) = self.0.lock() {
            r.applied_at = Some(at);
        }
    }

    /// A reload was refused at `at` for `errors` (one line each, as logged).
    pub fn rejected(&self, at: SystemTime, errors: Vec<String>) {
        if let Ok(mut r) = self.0.lock() {
            r.rejected = Some((at, errors));
        }
    }

    /// `{"last_applied_at", "last_rejected": null | {"at", "errors"}}`.
    pub fn to_json(&self) -> Value {
        let r = self.0.lock().map(|r| r.clone()).unwrap_or_default();
        json!({
            "last_applied_at": r.applied_at.map(timestamp),
            "last_rejected": r.rejected.map(|(at, errors)| json!({"at": timestamp(at), "errors": errors})),
        })
    }
}

/// `GET /v2/config`.
pub async fn config(State(st): State<ApiState>) -> Response {
    let cfg = st.config.borrow().clone();
    let mut value = match serde_json::to_value(&*cfg) {
        Ok(v) => v,
        Err(e) => return ApiError::internal(format!("the config could not be shown: {e}")).into_response(),
    };
    mask(&mut value);
    Json(json!({"data": {
        "path": st.config_path.as_ref().map(|p| p.display().to_string()),
        "config": value,
        "reload": st.reloads.to_json(),
    }}))
    .into_response()
}

/// Masks what [`crate::config::Secret`] does not cover, in place: a `pin` is
/// `****`, a URL's password is `****`, and `{"secs", "nanos"}` duration objects
/// become strings (`"30s"`).
pub fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.len() == 2
                && let (Some(s), Some(n)) =
                    (map.get("secs").and_then(Value::as_u64), map.get("nanos").and_then(Value::as_u64))
            {
                *v = Value::String(duration(s, n));
                return;
            }
            for (k, x) in map.iter_mut() {
                if k == "pin" && x.is_string() {
                    *x = Value::String("****".into());
                } else {
                    mask(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        Value::String(s) if s.contains("://") => {
            if let Ok(mut u) = url::Url::parse(s)
                && u.password().is_some()
                && u.set_password(Some("****")).is_ok()
            {
                *s = u.to_string();
            }
        }
        _ => {}
    }
}

/// `secs` + `nanos` as the config writes durations: `"30s"`, `"0.25s"`.
fn duration(secs: u64, nanos: u64) -> String {
    if nanos == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_url_passwords_and_durations_are_masked_or_written_as_strings() {
        let mut v = json!({
            "routes": [{"pin": "4321", "to": "+1312"}],
            "webhooks": {"url": "https://hook:s3cret@backend.example/in", "timeout": {"secs": 30, "nanos": 0}},
            "rtp": {"ptime": {"secs": 0, "nanos": 250_000_000}},
            "api": {"token": "****abcd"},
            "other": {"secs": 1, "nanos": 0, "extra": 1},
        });
        mask(&mut v);
        assert_eq!(v["routes"][0]["pin"], "****");
        assert_eq!(v["webhooks"]["url"], "https://hook:****@backend.example/in");
        assert_eq!((v["webhooks"]["timeout"].as_str(), v["rtp"]["ptime"].as_str()), (Some("30s"), Some("0.25s")));
        assert_eq!(v["other"]["secs"], 1, "only an object of exactly secs and nanos is a duration");
        assert!(!v.to_string().contains("s3cret") && !v.to_string().contains("4321"));
    }

    #[test]
    fn the_reload_log_keeps_the_last_rejection() {
        let log = ReloadLog::default();
        assert_eq!(log.to_json(), json!({"last_applied_at": null, "last_rejected": null}));
        log.rejected(SystemTime::UNIX_EPOCH, vec!["sipbridge.toml:3: trunk[0].proxy: bad".into()]);
        log.applied(SystemTime::UNIX_EPOCH);
        let j = log.to_json();
        assert_eq!(j["last_rejected"]["errors"][0], "sipbridge.toml:3: trunk[0].proxy: bad");
        assert!(j["last_applied_at"].is_string());
    }
}
