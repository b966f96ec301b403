//! sipbridge patch: the answer to a request that could not be parsed or keyed into
//! a transaction, built from its raw text (RFC 3261 §8.2.6.2: Via, From, To with a
//! tag, Call-ID and CSeq are copied when present; Via and CSeq are required):
//! `505` for another SIP version, `501` for an unknown method, else `400` with a
//! `Warning`. ACKs and responses are never answered; without Via or CSeq there is
//! no response to form and the message is dropped. Also the raw checks the lenient
//! parser skips (Request-Line shape, Content-Length), and a process-wide filter
//! deciding which sources are answered at all ([`set_answer_filter`]).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// Decides, per source IP, whether a request refused at parse level is answered
/// (`true`) or dropped; it is also the application's place to count such refusals.
pub type AnswerFilter = dyn Fn(IpAddr) -> bool + Send + Sync;

static ANSWER_FILTER: RwLock<Option<Arc<AnswerFilter>>> = RwLock::new(None);

/// sipbridge patch: installs the process-wide [`AnswerFilter`] (e.g. answer only
/// trunk sources, so that unknown sources learn nothing). `None` = answer everyone.
pub fn set_answer_filter(filter: Option<Arc<AnswerFilter>>) {
    *ANSWER_FILTER.write().unwrap_or_else(|e| e.into_inner()) = filter;
}

/// Whether a parse-level refusal to `source` may be sent (see [`set_answer_filter`]).
pub fn may_answer(source: IpAddr) -> bool {
    let filter = ANSWER_FILTER.read().unwrap_or_else(|e| e.into_inner()).clone();
    filter.is_none_or(|f| f(source))
}

fn header_name(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// RFC 3261 §25.1 `token` (methods are tokens).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

const KNOWN_METHODS: &[&str] = &[
    "ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK", "PUBLISH", "REFER",
    "REGISTER", "SUBSCRIBE", "UPDATE",
];

/// The response for a request `raw` that could not be parsed or keyed, or `None`
/// when none can be formed (no Via or CSeq, an ACK, not a request): `505` for a
/// `SIP/x.y` other than 2.0 (RFC 3261 §21.5.6), `501` for a well-formed
/// request whose method is an unknown token (§8.2.1, RFC 4475 §3.1.1.2/§3.1.1.5),
/// else `400` with a `Warning` carrying `reason`. From, To, Call-ID are copied when
/// present (§8.2.6.2); To gets a tag.
pub fn bad_request(raw: &[u8], reason: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    // Method first, version last: a Request-URI with LWS in it (RFC 4475 §3.1.2.8)
    // still gets its 400.
    let tokens: Vec<&str> = request_line.split_whitespace().collect();
    let (&method, &version) = (tokens.first()?, tokens.last()?);
    if tokens.len() < 3 {
        return None;
    }
    let exact_line = request_line.split(' ').count() == 3;
    if method.eq_ignore_ascii_case("ACK") || !is_token(method) || !version.get(..4).is_some_and(|v| v.eq_ignore_ascii_case("SIP/")) {
        return None;
    }
    // Unfold continuation lines (RFC 3261 §7.3.1).
    let mut unfolded: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            unfolded.push(line.to_string());
        }
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in &unfolded {
        let Some((name, value)) = header_name(line) else { continue };
        match name.to_ascii_lowercase().as_str() {
            "via" | "v" => vias.push(value.to_string()),
            "from" | "f" => from = from.or(Some(value.to_string())),
            "to" | "t" => to = to.or(Some(value.to_string())),
            "call-id" | "i" => call_id = call_id.or(Some(value.to_string())),
            "cseq" => cseq = cseq.or(Some(value.to_string())),
            _ => {}
        }
    }
    let cseq: String = cseq?;
    if vias.is_empty() || vias.iter().any(|v| v.is_empty()) {
        return None;
    }
    let cseq_method = cseq.split_whitespace().nth(1).unwrap_or("");
    let (code, phrase) = if !version.eq_ignore_ascii_case("SIP/2.0") {
        (505, "Version Not Supported")
    } else if exact_line
        && cseq_method == method
        && !KNOWN_METHODS.contains(&method)
        && version.eq_ignore_ascii_case("SIP/2.0")
    {
        (501, "Not Implemented")
    } else if version.eq_ignore_ascii_case("SIP/2.0") {
        (400, "Bad Request")
    } else {
        return None;
    };
    let mut out = format!("SIP/2.0 {code} {phrase}\r\n");
    for v in vias {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    if let Some(from) = from {
        out.push_str(&format!("From: {from}\r\n"));
    }
    if let Some(mut to) = to {
        if !to.to_ascii_lowercase().contains(";tag=") {
            to.push_str(";tag=sbbad");
        }
        out.push_str(&format!("To: {to}\r\n"));
    }
    if let Some(call_id) = call_id {
        out.push_str(&format!("Call-ID: {call_id}\r\n"));
    }
    out.push_str(&format!("CSeq: {cseq}\r\n"));
    if code == 400 {
        let reason = reason.replace(['"', '\r', '\n'], " ");
        out.push_str(&format!("Warning: 399 - \"{}\"\r\n", reason.chars().take(200).collect::<String>()));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// What is wrong with a request's Request-Line, if anything (RFC 3261 §25.1
/// `Request-Line = Method SP Request-URI SP SIP-Version CRLF`): more than one SP
/// between the elements or trailing white space (RFC 4475 §3.1.2.9, §3.1.2.10), LWS
/// inside the Request-URI (§3.1.2.8), a URI in `<>` (§3.1.2.7), or headers in a
/// SIP Request-URI (§19.1.5, RFC 4475 §3.1.2.11). Responses are not checked.
pub fn request_line_error(raw: &[u8]) -> Option<&'static str> {
    let end = raw.windows(2).position(|w| w == b"\r\n").unwrap_or(raw.len());
    let line = &raw[..end];
    if line.starts_with(b"SIP/") {
        return None;
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || p.contains(&b'\t')) {
        return Some("Request-Line is not Method SP Request-URI SP SIP-Version");
    }
    let uri = parts[1];
    if uri.starts_with(b"<") {
        return Some("Request-URI in angle brackets");
    }
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with(b"sip:") || lower.starts_with(b"sips:") {
        // Headers follow the hostport; the user part may hold a '?' (RFC 3261 §25.1).
        let after_user = uri.iter().rposition(|&b| b == b'@').map_or(uri, |at| &uri[at..]);
        if after_user.contains(&b'?') {
            return Some("headers in the Request-URI");
        }
    }
    if !parts[2].eq_ignore_ascii_case(b"SIP/2.0") {
        return Some("SIP version is not 2.0");
    }
    None
}

/// What is wrong with a datagram's Content-Length, if anything: not a
/// non-negative integer (RFC 4475 §3.1.2.3), given more than once (§3.3.9), or
/// larger than the body (RFC 3261 §18.3: over UDP such a request gets 400, such a
/// response is discarded; §3.1.2.2). A body longer than it is cut by the parser.
pub fn content_length_error(raw: &[u8]) -> Option<&'static str> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut values = head.split("\r\n").skip(1).filter_map(|l| {
        let (n, v) = header_name(l)?;
        (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")).then_some(v)
    });
    let first = values.next()?;
    if values.next().is_some() {
        return Some("Content-Length given more than once");
    }
    let Ok(len) = first.parse::<usize>() else { return Some("Content-Length is not a non-negative integer") };
    (raw.len() - (end + 4) < len).then_some("body shorter than Content-Length")
}

/// Whether a datagram's body is shorter than its Content-Length says (see
/// [`content_length_error`], which also catches malformed and repeated values).
pub fn truncated_body(raw: &[u8]) -> bool {
    content_length_error(raw) == Some("body shorter than Content-Length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_a_400_when_it_can() {
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nf: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: x INVITE\r\n\r\n";
        let resp = String::from_utf8(bad_request(req, "bad CSeq").unwrap()).unwrap();
        assert!(resp.starts_with("SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\n"));
        assert!(resp.contains("To: <sip:a@b>;tag=sbbad\r\n") && resp.contains("CSeq: x INVITE\r\n"));
        assert!(bad_request(b"ACK sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n", "").is_none());
        assert!(bad_request(b"INVITE sip:a@b SIP/2.0\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", "").is_none());
        assert!(bad_request(b"\xff\xfe garbage", "").is_none());
        assert!(bad_request(b"SIP/2.0 200 OK\r\n\r\n", "").is_none());
        assert!(truncated_body(b"INVITE x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc"));
        assert!(!truncated_body(b"INVITE x SIP/2.0\r\nl: 3\r\n\r\nabc"));
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nl: -999\r\n\r\nabc").is_some());
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nl: 3\r\nContent-Length : 3\r\n\r\nabc").is_some());
        assert!(content_length_error(b"INVITE x SIP/2.0\r\nContent-Length   : 2\r\n\r\nabc").is_none());
    }

    #[test]
    fn request_lines_with_extra_white_space_or_brackets_are_refused() {
        assert!(request_line_error(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n").is_none());
        assert!(request_line_error(b"SIP/2.0 200  OK\r\n").is_none());
        for bad in [
            &b"INVITE sip:a@b; lr SIP/2.0\r\n"[..],
            b"INVITE  sip:a@b  SIP/2.0\r\n",
            b"OPTIONS sip:a@b SIP/2.0  \r\n",
            b"INVITE <sip:a@b> SIP/2.0\r\n",
            b"INVITE sip:a@b?Route=%3Csip:c%3E SIP/2.0\r\n",
            b"INVITE sip:a@b\r\n",
        ] {
            assert!(request_line_error(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unknown_methods_get_501_and_other_versions_505() {
        let req = |line: &str, cseq: &str| {
            format!("{line}\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 {cseq}\r\n\r\n")
        };
        let status = |raw: String| bad_request(raw.as_bytes(), "x").map(|r| String::from_utf8(r).unwrap()[8..11].to_string());
        assert_eq!(status(req("NEWMETHOD sip:a@b SIP/2.0", "NEWMETHOD")).as_deref(), Some("501"));
        assert_eq!(status(req("!odd-Method'~ sip:a@b SIP/2.0", "!odd-Method'~")).as_deref(), Some("501"));
        assert_eq!(status(req("NEWMETHOD sip:a@b SIP/2.0", "INVITE")).as_deref(), Some("400"), "CSeq mismatch");
        assert_eq!(status(req("OPTIONS sip:a@b SIP/7.0", "OPTIONS")).as_deref(), Some("505"));
        assert_eq!(status(req("OPTIONS sip:a@b HTTP/1.1", "OPTIONS")), None);
    }
}
