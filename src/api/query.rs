//! Query strings of the listing routes, Telnyx style: `filter[...]` and
//! `page[number]` / `page[size]` (Telnyx API v2 pagination: number from 1,
//! size 1 to 250, default 20), plus RFC 3339 instants. Every parameter a route
//! does not know is a 400 naming it, so a typo (`filter[call_sesion_id]`) is not
//! silently "no filter".

use std::time::{Duration, SystemTime};

use super::error::ApiError;
use crate::store::Page;

/// Default `page[size]` (Telnyx's).
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest `page[size]` (Telnyx's).
pub const MAX_PAGE_SIZE: u32 = 250;

/// The decoded `key=value` pairs of one query string, consumed by name.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `raw` (`application/x-www-form-urlencoded`, as browsers and SDKs send it).
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        Self { pairs }
    }

    /// Takes `name`'s value (the last one when repeated); an empty value counts as absent.
    pub fn text(&mut self, name: &str) -> Option<String> {
        let mut found = None;
        self.pairs.retain(|(k, v)| {
            if k == name {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found.filter(|v| !v.is_empty())
    }

    /// Takes `name` as an RFC 3339 instant (`2026-11-22T08:30:00Z`,
    /// `2026-11-22T10:30:00.5+02:00`); 400 naming it when it is not one.
    pub fn instant(&mut self, name: &str) -> Result<Option<SystemTime>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => parse_instant(&v).map(Some).ok_or_else(|| {
                ApiError::bad_parameter(
                    name,
                    format!("{v:?} is not an RFC 3339 instant with a time zone (e.g. 2026-11-22T08:30:00Z)"),
                )
            }),
        }
    }

    /// Takes `name` as one of `choices`; 400 naming it otherwise.
    pub fn choice<T: Copy>(&mut self, name: &str, choices: &[(&str, T)]) -> Result<Option<T>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => choices.iter().find(|(k, _)| *k == v).map(|(_, t)| Some(*t)).ok_or_else(|| {
                let known: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
                ApiError::bad_parameter(name, format!("{v:?} is not one of {}", known.join(", ")))
            }),
        }
    }

    /// Takes `page[number]` (from 1, default 1) and `page[size]` (1 to 250,
    /// default 20).
    pub fn page(&mut self) -> Result<Page, ApiError> {
        let mut int = |name: &str, min: u32, max: u32, default: u32| match self.text(name) {
            None => Ok(default),
            Some(v) => v.parse::<u32>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                ApiError::bad_parameter(name, format!("{v:?} is not a whole number from {min} to {max}"))
            }),
        };
        let number = int("page[number]", 1, u32::MAX, 1)?;
        let size = int("page[size]", 1, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?;
        Ok(Page { number, size })
    }

    /// Ends reading: 400 naming the first parameter nobody took.
    pub fn finish(self, known: &str) -> Result<(), ApiError> {
        match self.pairs.into_iter().next() {
            None => Ok(()),
            Some((k, _)) => {
                Err(ApiError::bad_parameter(&k, format!("unknown parameter {k:?}; this route takes {known}")))
            }
        }
    }
}

/// An RFC 3339 instant (RFC 3339 §5.6 `date-time`: `Z` or a `±hh:mm` offset,
/// optional fraction). A `+` decoded to a space by form decoding (an unencoded
/// `+02:00` in a URL) is read as `+`. `None` for anything else, including times
/// without a zone (ambiguous).
pub fn parse_instant(s: &str) -> Option<SystemTime> {
    let s = s.trim_start();
    if let Some(utc) = s.strip_suffix(['Z', 'z']) {
        return humantime::parse_rfc3339_weak(&format!("{utc}Z")).ok().filter(|_| utc.len() >= 19);
    }
    // ±hh:mm at the end.
    let (local, zone) = s.split_at_checked(s.len().checked_sub(6)?)?;
    let zb = zone.as_bytes();
    let sign = match zb[0] {
        b'+' | b' ' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    if zb[3] != b':' || !zb[1..3].iter().chain(&zb[4..6]).all(u8::is_ascii_digit) || local.len() < 19 {
        return None;
    }
    let hours: u64 = zone[1..3].parse().ok()?;
    let minutes: u64 = zone[4..6].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let at_offset = humantime::parse_rfc3339_weak(&format!("{local}Z")).ok()?;
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    // Local time = UTC + offset, so UTC = local − offset.
    if sign > 0 { at_offset.checked_sub(offset) } else { at_offset.checked_add(offset) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn instants_with_zones() {
        let utc = UNIX_EPOCH + Duration::from_secs(1_795_336_200); // 2026-11-22T08:30:00Z
        assert_eq!(parse_instant("2026-11-22T08:30:00Z"), Some(utc));
        assert_eq!(parse_instant("2026-11-22T10:30:00+02:00"), Some(utc));
        assert_eq!(parse_instant("2026-11-22T10:30:00 02:00"), Some(utc), "a + decoded to a space");
        assert_eq!(parse_instant("2026-11-22T03:00:00-05:30"), Some(utc));
        assert_eq!(parse_instant("2026-11-22T08:30:00.250Z"), Some(utc + Duration::from_millis(250)));
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22T08:30:00",
            "2026-11-22T08:30:00+2:00",
            "2026-13-01T00:00:00Z",
            "2026-11-22T08:30:00+24:00",
            "Z",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pages_and_unknown_parameters_are_named() {
        let mut p = Params::parse(Some("page%5Bsize%5D=5&page[number]=3&filter[x]=1"));
        assert_eq!(p.page().unwrap(), Page { number: 3, size: 5 });
        let e = p.finish("page[...]").unwrap_err();
        assert_eq!((e.status.as_u16(), e.pointer.as_deref()), (400, Some("filter[x]")));
        let e = Params::parse(Some("page[size]=251")).page().unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("page[size]"));
        let e = Params::parse(Some("page[number]=0")).page().unwrap_err();
        assert_eq!(e.pointer.as_deref(), Some("page[number]"));
        assert_eq!(Params::parse(None).page().unwrap(), Page { number: 1, size: DEFAULT_PAGE_SIZE });
        let e = Params::parse(Some("from=noon")).instant("from").unwrap_err();
        assert!(e.detail.contains("\"noon\" is not an RFC 3339 instant"), "{}", e.detail);
    }
}
