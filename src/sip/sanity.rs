//! RFC 3261 §8.2 checks a UAS runs on a parsed request before acting on it
//! (Kamailio's `sanity` module is the model), sans-IO: [`check`] takes the request
//! and returns the refusal to send, if any. The dispatcher (`server`) runs it after
//! the source was admitted (trunks only: unknown sources get nothing) and before
//! routing, dialogs or digest.
//!
//! In order (the first failure answers):
//! 1. mandatory headers present once and well-formed, CSeq method = request
//!    method, `Max-Forwards` 0..=255, Content-Length single → `400` (§8.2.6,
//!    RFC 4475 §3.1.2.17, §3.3.1, §3.3.8);
//! 2. Request-URI and To URI scheme `sip`, `sips` or `tel` → else `416` (§8.2.2.1,
//!    RFC 4475 §3.3.2, §3.3.3);
//! 3. method: REGISTER, SUBSCRIBE, MESSAGE, PUBLISH → `405` + `Allow` (§8.2.1; methods
//!    the parser does not know got `501` in the transport);
//! 4. `Require` with an option tag other than `timer` → `420` + `Unsupported`
//!    (§8.2.2.3; not for ACK/CANCEL);
//! 5. a body on INVITE/UPDATE that is not `application/sdp`, or a
//!    `Content-Encoding` other than identity → `415` + `Accept` (§8.2.3); an INVITE
//!    whose `Accept` excludes SDP → `406` (§21.4.7, RFC 4475 §3.3.15);
//! 6. `Max-Forwards: 0` on INVITE/OPTIONS → `483` (issue 17; RFC 4475 §3.3.11 lets an
//!    endpoint go on, a proxy must answer 483 — this box forwards calls).

use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Method, Request, StatusCode};

/// Option tags this UA supports (RFC 4028 session timers).
pub const SUPPORTED: &[&str] = &["timer"];

/// A request refused by [`check`]: the status, the headers the status calls for
/// (`Allow`, `Unsupported`, `Accept`) and a reason for logs and a `Warning`.
#[derive(Debug)]
pub struct Refusal {
    /// Status code to answer.
    pub status: StatusCode,
    /// Headers that go with it.
    pub headers: Vec<Header>,
    /// Why, for the log.
    pub reason: String,
}

fn refuse(status: StatusCode, headers: Vec<Header>, reason: impl Into<String>) -> Refusal {
    Refusal { status, headers, reason: reason.into() }
}

/// The first RFC 3261 §8.2 check `req` fails (see the module docs for the order),
/// or `None` when the request may be processed. `allow` is the `Allow` value for
/// 405. Never panics on any parsed request.
pub fn check(req: &Request, allow: &str) -> Option<Refusal> {
    let bad = |why: String| Some(refuse(StatusCode::BadRequest, vec![], why));
    // 1. Syntax and mandatory headers.
    let count = |f: fn(&Header) -> bool| req.headers.iter().filter(|h| f(h)).count();
    for (name, n) in [
        ("To", count(|h| matches!(h, Header::To(_)))),
        ("From", count(|h| matches!(h, Header::From(_)))),
        ("Call-ID", count(|h| matches!(h, Header::CallId(_)))),
        ("CSeq", count(|h| matches!(h, Header::CSeq(_)))),
    ] {
        if n != 1 {
            return bad(format!("{n} {name} headers"));
        }
    }
    if count(|h| matches!(h, Header::Via(_))) == 0 {
        return bad("no Via".into());
    }
    if count(|h| matches!(h, Header::MaxForwards(_))) > 1 || count(|h| matches!(h, Header::ContentLength(_))) > 1 {
        return bad("Max-Forwards or Content-Length given more than once".into());
    }
    let Ok(to) = req.to_header().and_then(|h| h.typed()) else { return bad("malformed To".into()) };
    if req.from_header().and_then(|h| h.typed()).is_err() {
        return bad("malformed From".into());
    }
    match req.cseq_header().and_then(|h| h.typed()) {
        Ok(c) if c.method == req.method => {}
        Ok(c) => return bad(format!("CSeq method {} is not the request's {}", c.method, req.method)),
        Err(_) => return bad("malformed CSeq".into()),
    }
    for h in req.headers.iter() {
        let (name, value) = match h {
            Header::To(v) => ("To", v.value()),
            Header::From(v) => ("From", v.value()),
            Header::Contact(v) => ("Contact", v.value()),
            Header::Via(v) => ("Via", v.value()),
            Header::Date(v) => {
                if !v.value().trim_end().ends_with("GMT") {
                    return bad("Date is not in GMT (RFC 3261 §20.17)".into());
                }
                continue;
            }
            _ => continue,
        };
        if let Some(why) = name_addr_error(value, name != "Via") {
            return bad(format!("{name}: {why}"));
        }
    }
    let max_forwards = match req.max_forwards_header() {
        Ok(h) => match h.value().trim().parse::<u32>() {
            Ok(n) if n <= 255 => Some(n),
            _ => return bad("Max-Forwards is not 0..255".into()),
        },
        Err(_) => None,
    };

    // 2. URI schemes.
    let scheme_ok = |u: &rsipstack::sip::Uri| match &u.scheme {
        // No scheme: the parser found none it could read (`soap.beep://...`).
        None => false,
        Some(rsipstack::sip::Scheme::Sip) | Some(rsipstack::sip::Scheme::Sips) => true,
        Some(rsipstack::sip::Scheme::Other(s)) => s.eq_ignore_ascii_case("tel"),
    };
    if !scheme_ok(&req.uri) || !scheme_ok(&to.uri) {
        return Some(refuse(StatusCode::UnsupportedUriScheme, vec![], "unsupported URI scheme"));
    }

    // 3. Methods this UA does not support.
    if matches!(req.method, Method::Register | Method::Subscribe | Method::Message | Method::Publish) {
        return Some(refuse(
            StatusCode::MethodNotAllowed,
            vec![Header::Allow(allow.into())],
            format!("{} not supported", req.method),
        ));
    }

    // 4. Require.
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Require(r) => Some(r.value().to_string()),
                _ => None,
            })
            .flat_map(|v| v.split(',').map(|t| t.trim().to_string()).collect::<Vec<_>>())
            .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return Some(refuse(
                StatusCode::BadExtension,
                vec![Header::Unsupported(list.clone().into())],
                format!("Require: {list}"),
            ));
        }
    }

    // 5. Content.
    if matches!(req.method, Method::Invite | Method::Update) {
        let accept = || vec![Header::Accept("application/sdp".into())];
        let content_type = req.headers.iter().find_map(|h| match h {
            Header::ContentType(c) => Some(c.value().to_string()),
            _ => None,
        });
        if !req.body.is_empty() {
            let media = content_type.as_deref().unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
            if !media.eq_ignore_ascii_case("application/sdp") {
                return Some(refuse(StatusCode::UnsupportedMediaType, accept(), format!("body of type {media:?}")));
            }
        }
        let encoding = req.headers.iter().find_map(|h| match h {
            Header::ContentEncoding(e) => Some(e.value().trim().to_string()),
            _ => None,
        });
        if encoding.is_some_and(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity")) {
            return Some(refuse(StatusCode::UnsupportedMediaType, accept(), "Content-Encoding"));
        }
        let accepts: Vec<String> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Accept(a) => Some(a.value().to_string()),
                _ => None,
            })
            .collect();
        if req.method == Method::Invite && !accepts.is_empty() {
            let ok = accepts.iter().flat_map(|v| v.split(',')).any(|range| {
                let r = range.split(';').next().unwrap_or("").trim();
                r.is_empty()
                    || r.eq_ignore_ascii_case("application/sdp")
                    || r.eq_ignore_ascii_case("application/*")
                    || r == "*/*"
            });
            if !ok {
                return Some(refuse(StatusCode::NotAcceptable, vec![], "Accept excludes application/sdp"));
            }
        }
    }

    // 6. Loops.
    if max_forwards == Some(0) && matches!(req.method, Method::Invite | Method::Options) {
        return Some(refuse(StatusCode::TooManyHops, vec![], "Max-Forwards: 0"));
    }
    None
}

/// What is wrong with a To/From/Contact (`name_addr`) or Via (`!name_addr`) value
/// at the level RFC 4475 §3.1.2 tests it: unbalanced quotes (§3.1.2.6), white
/// space just inside `<>` (§3.1.2.14), empty parameters (`;;`, §3.1.2.1), an
/// addr-spec with `?` or `,` outside `<>` (RFC 3261 §20.10, RFC 4475 §3.1.2.13).
fn name_addr_error(value: &str, name_addr: bool) -> Option<&'static str> {
    let (mut quoted, mut escaped, mut angle) = (false, false, false);
    let mut outside = String::with_capacity(value.len());
    let mut prev = ' ';
    for c in value.chars() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' => angle = true,
            '>' if angle => {
                if prev.is_whitespace() {
                    return Some("white space before '>'");
                }
                angle = false;
            }
            c if angle && prev == '<' && c.is_whitespace() => return Some("white space after '<'"),
            _ => {}
        }
        if !angle && c != '<' && c != '>' {
            outside.push(c);
        }
        prev = c;
    }
    if quoted || angle {
        return Some("unbalanced quotes or angle brackets");
    }
    let compact: String = outside.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains(";;") || compact.contains(";,") || compact.ends_with(';') {
        return Some("empty parameter");
    }
    if name_addr && !value.contains('<') && value.trim() != "*" {
        let spec = value.split(';').next().unwrap_or("");
        if spec.contains('?') || spec.contains(',') {
            return Some("an addr-spec with '?' or ',' must be in <>");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match rsipstack::sip::SipMessage::try_from(text.replace('\n', "\r\n").as_str()) {
            Ok(rsipstack::sip::SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:+13125550100@192.0.2.1 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-1
From: <sip:a@192.0.2.9>;tag=1
To: <sip:+13125550100@192.0.2.1>
Call-ID: c1
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

";

    fn status(text: &str) -> Option<u16> {
        check(&req(text), "INVITE").map(|r| r.status.code())
    }

    #[test]
    fn a_plain_request_passes() {
        assert_eq!(status(OPTIONS), None);
        assert_eq!(status(&OPTIONS.replace("sip:+13125550100@192.0.2.1>", "tel:+13125550100>")), None);
    }

    #[test]
    fn each_check_answers_its_status() {
        assert_eq!(status(&OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")), Some(400));
        assert_eq!(status(&OPTIONS.replace("Call-ID: c1\n", "")), Some(400));
        assert_eq!(status(&OPTIONS.replace("To: <sip:", "To: <sip:x@y>\nTo: <sip:")), Some(400));
        assert_eq!(status(&OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 300")), Some(400));
        assert_eq!(status(&OPTIONS.replace("OPTIONS sip:+13125550100@192.0.2.1", "OPTIONS foo:bar")), Some(416));
        assert_eq!(status(&OPTIONS.replace("To: <sip:", "To: <nobody:")), Some(416));
        let reg = OPTIONS.replace("OPTIONS", "REGISTER");
        let r = check(&req(&reg), "INVITE, BYE").unwrap();
        assert_eq!(r.status.code(), 405);
        assert!(matches!(&r.headers[..], [Header::Allow(a)] if a.value() == "INVITE, BYE"));
        let r = check(&req(&OPTIONS.replace("Max-Forwards: 70", "Require: timer, foo,bar")), "").unwrap();
        assert_eq!(r.status.code(), 420);
        assert!(matches!(&r.headers[..], [Header::Unsupported(u)] if u.value() == "foo, bar"));
        assert_eq!(status(&OPTIONS.replace("Max-Forwards: 70", "Require: timer")), None);
        assert_eq!(status(&OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 0")), Some(483));
        assert_eq!(status(&OPTIONS.replace("To: <sip:", "To: \"Mr. J <sip:")), Some(400));
        assert_eq!(status(&OPTIONS.replace("To: <sip:+13125550100@192.0.2.1>", "To: < sip:x@y >")), Some(400));
        assert_eq!(status(&OPTIONS.replace("branch=z9hG4bK-1", "branch=z9hG4bK-1;;,;")), Some(400));
        assert_eq!(status(&OPTIONS.replace("Max-Forwards: 70", "Date: Fri, 01 Jan 2010 16:00:00 EST")), Some(400));
        assert_eq!(status(&OPTIONS.replace("Max-Forwards: 70", "Date: Fri, 01 Jan 2010 16:00:00 GMT")), None);
        assert_eq!(status(&OPTIONS.replace("From: <sip:a@192.0.2.9>", "From: \"a \\\"q\\\" <b>\" <sip:a@b>")), None);
    }

    #[test]
    fn invite_bodies_must_be_sdp() {
        let invite = OPTIONS
            .replace("OPTIONS", "INVITE")
            .replace("Content-Length: 0\n\n", "Content-Type: application/unknownformat\nContent-Length: 4\n\nabcd");
        let r = check(&req(&invite), "").unwrap();
        assert_eq!(r.status.code(), 415);
        assert!(matches!(&r.headers[..], [Header::Accept(a)] if a.value() == "application/sdp"));
        assert_eq!(status(&invite.replace("application/unknownformat", "Application/SDP")), None);
        assert_eq!(status(&invite.replace("Max-Forwards: 70", "Accept: text/nobodyKnowsThis")), Some(415));
        let sdp = invite.replace("application/unknownformat", "application/sdp");
        assert_eq!(status(&sdp.replace("Max-Forwards: 70", "Accept: text/nobodyKnowsThis")), Some(406));
        assert_eq!(status(&sdp.replace("Max-Forwards: 70", "Accept: application/sdp, text/html")), None);
    }

    /// The vendored transport's parse-level refusals (`rsipstack::sip::bad_request`,
    /// sipbridge patches; rsipstack's own tests do not run in this workspace).
    #[test]
    fn transport_refusals_pick_400_501_505_or_nothing() {
        use rsipstack::sip::bad_request::{bad_request, content_length_error, request_line_error};
        let req = |line: &str, cseq: &str| {
            format!("{line}\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 {cseq}\r\n\r\n")
        };
        let status =
            |raw: String| bad_request(raw.as_bytes(), "x").map(|r| String::from_utf8_lossy(&r[8..11]).into_owned());
        assert_eq!(status(req("NEWMETHOD sip:a@b SIP/2.0", "NEWMETHOD")).as_deref(), Some("501"));
        assert_eq!(status(req("!odd-Method'~ sip:a@b SIP/2.0", "!odd-Method'~")).as_deref(), Some("501"));
        assert_eq!(status(req("NEWMETHOD sip:a@b SIP/2.0", "INVITE")).as_deref(), Some("400"), "CSeq mismatch");
        assert_eq!(status(req("OPTIONS sip:a@b SIP/7.0", "OPTIONS")).as_deref(), Some("505"));
        assert_eq!(status(req("INVITE sip:a@b; lr SIP/2.0", "INVITE")).as_deref(), Some("400"));
        assert_eq!(status(req("OPTIONS sip:a@b HTTP/1.1", "OPTIONS")), None);
        assert_eq!(status(req("ACK sip:a@b SIP/2.0", "ACK")), None, "an ACK is never answered");
        assert_eq!(status("INVITE sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n".into()), None, "no Via");
        let r =
            String::from_utf8(bad_request(req("INVITE sip:a@b SIP/2.0", "INVITE").as_bytes(), "bad \"x\"").unwrap())
                .unwrap();
        assert!(!r.contains("User-Agent") && !r.contains("Server") && !r.contains("sipbridge"), "{r}");
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nl: -999\r\n\r\nabc").is_some());
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nl: 3\r\nContent-Length : 3\r\n\r\nabc").is_some());
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc").is_some());
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nContent-Length   : 2\r\n\r\nabc").is_none());
        assert!(request_line_error(b"INVITE sip:a?b@c SIP/2.0\r\n").is_none(), "a '?' in the user part");
        assert!(request_line_error(b"SIP/2.0 200  OK\r\n").is_none(), "responses are not checked");
        for bad in [
            &b"INVITE  sip:a@b  SIP/2.0\r\n"[..],
            b"OPTIONS sip:a@b SIP/2.0  \r\n",
            b"INVITE <sip:a@b> SIP/2.0\r\n",
            b"INVITE sip:a@b?Route=%3Csip:c%3E SIP/2.0\r\n",
            b"INVITE sip:a@b\r\n",
        ] {
            assert!(request_line_error(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// Vendored parser patches: LWS around a parameter's `=`; an RFC 2543 request
    /// without From tag can be keyed into a transaction.
    #[test]
    fn lws_around_equals_and_rfc2543_requests_are_accepted() {
        use rsipstack::transaction::key::{TransactionKey, TransactionRole};
        let r = req(&OPTIONS.replace(";tag=1", " ;\n  tag = 98asjd8"));
        assert_eq!(r.from_header().unwrap().tag().unwrap().map(|t| t.value().to_string()).as_deref(), Some("98asjd8"));
        let r = req(&OPTIONS.replace(";tag=1", "").replace("branch=z9hG4bK-1", "x=1"));
        assert!(TransactionKey::from_request(&r, TransactionRole::Server).is_ok());
    }
}
