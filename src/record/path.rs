//! Recording file names: the path template and id sanitising.
//!
//! The template's placeholders are `{dir}` (the `[recording].dir`), `{yyyy}`,
//! `{mm}`, `{dd}`, `{hh}` (UTC date and hour of the recording's start, proleptic
//! Gregorian calendar as in RFC 3339), `{call_session_id}`, `{call_control_id}`
//! and `{recording_id}`. Ids are sanitised so no value can leave `dir`: every
//! byte outside `[A-Za-z0-9._-]` becomes `_` and a leading `.` becomes `_`
//! (no `..`, no hidden files, no `/`).

use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::RecordError;

/// Telnyx-like default: one folder per UTC day, one file per call session.
pub const DEFAULT_TEMPLATE: &str = "{dir}/{yyyy}/{mm}/{dd}/{call_session_id}.wav";

/// The ids a recording's file name may use.
#[derive(Debug, Clone, Copy)]
pub struct PathIds<'a> {
    /// Telnyx `call_session_id`.
    pub call_session_id: &'a str,
    /// Telnyx `call_control_id`.
    pub call_control_id: &'a str,
    /// This recording's id (one per start/stop span).
    pub recording_id: &'a str,
}

/// `id` made safe as one path component (see the module documentation).
pub fn sanitize_id(id: &str) -> String {
    let mut s: String = id
        .chars()
        .take(128)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.replace_range(0..0, "_");
    }
    s
}

/// UTC (year, month 1–12, day 1–31, hour 0–23) of `t`; times before 1970 count as 1970-01-01.
/// Days-to-civil conversion after H. Hinnant, "chrono-Compatible Low-Level Date Algorithms".
pub fn utc_date(t: SystemTime) -> (i64, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, hour)
}

/// The `.wav` path for a recording started at `started` (UTC date), from
/// `template` (normally [`DEFAULT_TEMPLATE`]). `span` numbers the start/stop spans
/// of one call from 1: spans after the first get `-{span}` before `.wav` unless
/// the template already contains `{recording_id}`. Fails if the template does not
/// start with `{dir}`, has an unknown placeholder, does not end in `.wav`, or
/// contains a `..` component.
pub fn recording_path(
    template: &str,
    dir: &Path,
    ids: PathIds<'_>,
    started: SystemTime,
    span: u32,
) -> Result<PathBuf, RecordError> {
    let bad = |reason| RecordError::Template { template: template.to_string(), reason };
    let rest = template.strip_prefix("{dir}").ok_or(bad("must start with {dir}"))?;
    let (y, m, d, h) = utc_date(started);
    let mut out = String::with_capacity(rest.len() + 64);
    let mut tail = rest;
    for _ in 0..rest.len() + 1 {
        let Some(open) = tail.find('{') else {
            out.push_str(tail);
            break;
        };
        out.push_str(&tail[..open]);
        let close = tail[open..].find('}').ok_or(bad("unclosed {"))? + open;
        let value = match &tail[open + 1..close] {
            "yyyy" => format!("{y:04}"),
            "mm" => format!("{m:02}"),
            "dd" => format!("{d:02}"),
            "hh" => format!("{h:02}"),
            "call_session_id" => sanitize_id(ids.call_session_id),
            "call_control_id" => sanitize_id(ids.call_control_id),
            "recording_id" => sanitize_id(ids.recording_id),
            _ => {
                return Err(bad(
                    "unknown placeholder (use dir, yyyy, mm, dd, hh, call_session_id, call_control_id, recording_id)",
                ));
            }
        };
        out.push_str(&value);
        tail = &tail[close + 1..];
    }
    let stem = out.strip_suffix(".wav").ok_or(bad("must end in .wav"))?;
    let file =
        if span > 1 && !template.contains("{recording_id}") { format!("{stem}-{span}.wav") } else { out.clone() };
    let relative = Path::new(file.trim_start_matches('/'));
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad("must not contain '..' or '.' components"));
    }
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ids<'a>(session: &'a str) -> PathIds<'a> {
        PathIds { call_session_id: session, call_control_id: "v3:cc", recording_id: "rec-1" }
    }

    #[test]
    fn default_template_uses_the_utc_date() {
        // 2024-02-29T23:59:59Z, a leap day, one second before the date changes.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        let p = recording_path(DEFAULT_TEMPLATE, Path::new("/rec"), ids("abc-123"), t, 1).unwrap();
        assert_eq!(p, PathBuf::from("/rec/2024/02/29/abc-123.wav"));
        let p2 = recording_path(DEFAULT_TEMPLATE, Path::new("/rec"), ids("abc-123"), t, 2).unwrap();
        assert_eq!(p2, PathBuf::from("/rec/2024/02/29/abc-123-2.wav"));
        assert_eq!(utc_date(t + Duration::from_secs(1)), (2024, 3, 1, 0));
        assert_eq!(utc_date(UNIX_EPOCH), (1970, 1, 1, 0));
        assert_eq!(utc_date(UNIX_EPOCH - Duration::from_secs(5)), (1970, 1, 1, 0));
        // 2000-12-31T13:00:00Z (a day-400 leap year end).
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(978_267_600)), (2000, 12, 31, 13));
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        let t = UNIX_EPOCH;
        for evil in ["../../etc/passwd", "..", ".", "", "a/b", "/abs", "x\0y", "ü\\..\\"] {
            let p = recording_path(DEFAULT_TEMPLATE, Path::new("/rec"), ids(evil), t, 1).unwrap();
            assert!(p.starts_with("/rec/1970/01/01/"), "{p:?}");
            assert_eq!(p.components().count(), 6, "{evil:?} → {p:?}");
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(!name.starts_with('.'), "{name}");
        }
        assert_eq!(sanitize_id("../x"), "_.._x");
    }

    #[test]
    fn bad_templates_are_rejected() {
        let t = UNIX_EPOCH;
        let d = Path::new("/rec");
        for tpl in [
            "/tmp/{call_session_id}.wav",
            "{dir}/../{call_session_id}.wav",
            "{dir}/{nope}.wav",
            "{dir}/{yyyy",
            "{dir}/x.mp3",
        ] {
            assert!(recording_path(tpl, d, ids("a"), t, 1).is_err(), "{tpl}");
        }
        let p = recording_path("{dir}/{hh}/{recording_id}.wav", d, ids("a"), t, 3).unwrap();
        assert_eq!(p, PathBuf::from("/rec/00/rec-1.wav"));
    }
}
