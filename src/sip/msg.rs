//! Small accessors over rsipstack's SIP messages: user parts, header values by
//! name (long or compact form), X- headers, tags, the source address of a
//! transaction. They never panic on malformed input; missing parts are `None`.

use std::net::{IpAddr, SocketAddr};

use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Request, Uri};
use rsipstack::transaction::transaction::Transaction;

/// The user part of a URI (`sip:+13125550100@host;user=phone` → `+13125550100`),
/// without `;params` that some carriers put in the user part (`;npdi`, `;rn=`).
pub fn uri_user(uri: &Uri) -> String {
    let user = uri.auth.as_ref().map(|a| a.user.clone()).unwrap_or_default();
    let user = user.split(';').next().unwrap_or("").to_string();
    percent_decode(&user)
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The dialled number: the Request-URI user part, or the To user part when the
/// Request-URI has none.
pub fn dialled(req: &Request) -> String {
    let u = uri_user(&req.uri);
    if !u.is_empty() {
        return u;
    }
    req.to_header().ok().and_then(|h| h.typed().ok()).map(|t| uri_user(&t.uri)).unwrap_or_default()
}

/// The dialled number of an INVITE that arrived over a registration: a registrar
/// (Telnyx credential connections) sends calls to the registered Contact, so the
/// Request-URI user is the box's own `contact_user` (the SIP username), not the
/// number; the number is then the To user (RFC 3261 §8.1.1.2). Otherwise as
/// [`dialled`].
pub fn dialled_over_registration(req: &Request, contact_user: &str) -> String {
    let u = uri_user(&req.uri);
    if u.is_empty() || u == contact_user {
        let to = req.to_header().ok().and_then(|h| h.typed().ok()).map(|t| uri_user(&t.uri)).unwrap_or_default();
        if !to.is_empty() {
            return to;
        }
    }
    u
}

/// The caller: From user part.
pub fn caller(req: &Request) -> String {
    req.from_header().ok().and_then(|h| h.typed().ok()).map(|f| uri_user(&f.uri)).unwrap_or_default()
}

/// Whether the request is inside a dialog (To has a tag).
pub fn has_to_tag(req: &Request) -> bool {
    req.to_header().ok().and_then(|h| h.tag().ok().flatten()).is_some()
}

/// The Call-ID.
pub fn call_id(req: &Request) -> String {
    req.call_id_header().map(|c| c.value().to_string()).unwrap_or_default()
}

fn header_name(h: &Header) -> Option<(&str, String)> {
    Some(match h {
        Header::Other(n, v) => (n.as_str(), v.clone()),
        Header::Authorization(v) => ("Authorization", v.value().to_string()),
        Header::ProxyAuthorization(v) => ("Proxy-Authorization", v.value().to_string()),
        Header::ContentType(v) => ("Content-Type", v.value().to_string()),
        Header::SessionExpires(v) => ("Session-Expires", v.value().to_string()),
        Header::MinSE(v) => ("Min-SE", v.value().to_string()),
        Header::Supported(v) => ("Supported", v.value().to_string()),
        Header::Require(v) => ("Require", v.value().to_string()),
        Header::Event(v) => ("Event", v.value().to_string()),
        _ => return None,
    })
}

/// The first value of header `name` (case-insensitive; `compact` is the RFC 3261
/// §7.3.3 short form, e.g. `c` for Content-Type, `x` for Session-Expires).
pub fn header(req: &Request, name: &str, compact: Option<&str>) -> Option<String> {
    req.headers.iter().filter_map(header_name).find_map(|(n, v)| {
        (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))).then_some(v)
    })
}

/// `X-` headers of the request as (name, value), Telnyx's `custom_headers`.
pub fn x_headers(req: &Request) -> Vec<(String, String)> {
    req.headers
        .iter()
        .filter_map(|h| match h {
            // `get`, not `[..2]`: a name may start with a multi-byte character
            // (`€-x`), and slicing inside it would panic.
            Header::Other(n, v) if n.len() > 2 && n.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) => {
                Some((n.clone(), v.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Where the request came from (the packet's source, not the Via).
pub fn source_addr(tx: &Transaction) -> Option<SocketAddr> {
    tx.connection.as_ref()?.get_remote_addr()?.get_socketaddr().ok()
}

/// The source IP of the request.
pub fn source_ip(tx: &Transaction) -> Option<IpAddr> {
    source_addr(tx).map(|a| a.ip())
}

/// `Session-Expires` of the request: (seconds, refresher) (RFC 4028 §4).
pub fn session_expires(req: &rsipstack::sip::Request) -> Option<(u64, Option<String>)> {
    parse_session_expires(&header(req, "Session-Expires", Some("x"))?)
}

/// `Session-Expires` of a response (a UAC's 200 OK, RFC 4028 §7.2).
pub fn session_expires_of_response(resp: &rsipstack::sip::Response) -> Option<(u64, Option<String>)> {
    let v = resp.headers.iter().find_map(|h| match h {
        Header::SessionExpires(v) => Some(v.to_string()),
        Header::Other(n, v) if n.eq_ignore_ascii_case("session-expires") || n.eq_ignore_ascii_case("x") => {
            Some(v.clone())
        }
        _ => None,
    })?;
    parse_session_expires(&v)
}

fn parse_session_expires(v: &str) -> Option<(u64, Option<String>)> {
    let mut parts = v.split(';');
    let secs = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| p.trim().strip_prefix("refresher=").map(|r| r.trim().to_ascii_lowercase()));
    Some((secs, refresher))
}

/// The digit of an INFO body: `Signal=5` (`application/dtmf-relay`) or a bare
/// digit (`application/dtmf`).
pub fn dtmf_from_info(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })
        .unwrap_or(text.trim());
    let c = value.chars().next()?;
    let c = c.to_ascii_uppercase();
    (value.chars().count() == 1 && (c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        let msg = rsipstack::sip::SipMessage::try_from(text.replace('\n', "\r\n").as_str()).unwrap();
        match msg {
            rsipstack::sip::SipMessage::Request(r) => r,
            _ => panic!("not a request"),
        }
    }

    const INVITE: &str = "INVITE sip:+13125550100;npdi@192.0.2.1:5060 SIP/2.0
Via: SIP/2.0/UDP 192.76.120.10:5060;branch=z9hG4bK-1
From: \"Caller\" <sip:+14155550123@192.76.120.10>;tag=abc
To: <sip:+13125550100@192.0.2.1>
Call-ID: 123@192.76.120.10
CSeq: 1 INVITE
X-Telnyx-Session-Id: s-1
x-custom: Hello
Content-Length: 0

";

    #[test]
    fn calls_over_a_registration_are_routed_by_the_to_number() {
        let over_reg = INVITE.replace("INVITE sip:+13125550100;npdi@", "INVITE sip:box-user@");
        let r = req(&over_reg);
        assert_eq!(dialled(&r), "box-user");
        assert_eq!(dialled_over_registration(&r, "box-user"), "+13125550100");
        // A registrar that puts the number in the Request-URI keeps it.
        assert_eq!(dialled_over_registration(&req(INVITE), "box-user"), "+13125550100");
    }

    #[test]
    fn numbers_headers_and_tags() {
        let r = req(INVITE);
        assert_eq!(dialled(&r), "+13125550100");
        assert_eq!(caller(&r), "+14155550123");
        assert!(!has_to_tag(&r));
        assert_eq!(call_id(&r), "123@192.76.120.10");
        let x = x_headers(&r);
        assert_eq!(x.len(), 2);
        assert_eq!(x[1], ("x-custom".to_string(), "Hello".to_string()));
        assert_eq!(header(&r, "X-Telnyx-Session-Id", None).as_deref(), Some("s-1"));
    }

    #[test]
    fn header_names_starting_with_a_multibyte_character_do_not_panic() {
        let r = req(&INVITE.replace("x-custom: Hello", "€-x: 1\nx€: 2\nX-€: 3"));
        let x = x_headers(&r);
        assert_eq!(x.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["X-Telnyx-Session-Id", "X-€"]);
        assert_eq!(header(&r, "€-x", None).as_deref(), Some("1"));
    }

    #[test]
    fn percent_decoding_never_panics() {
        assert_eq!(percent_decode("%2B1555"), "+1555");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz1"), "%zz1");
    }

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(dtmf_from_info(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(dtmf_from_info(b"Signal= #\r\nDuration=100"), Some('#'));
        assert_eq!(dtmf_from_info(b"7"), Some('7'));
        assert_eq!(dtmf_from_info(b"Signal=12\r\n"), None);
        assert_eq!(dtmf_from_info(b"Signal=x"), None);
        assert_eq!(dtmf_from_info(&[0xff, 0xfe]), None);
    }
}
