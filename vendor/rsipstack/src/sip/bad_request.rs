//! sipbridge patch: a `400 Bad Request` for a request that could not be parsed or
//! keyed into a transaction, built from its raw text when the headers a response
//! needs are present (RFC 3261 §8.2.6.2: Via, From, To with a tag, Call-ID and
//! CSeq are copied). ACKs are never answered; without those headers there is no
//! response to form and the message is dropped.

fn header_name(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// The 400 response for `raw`, or `None` when none can be formed.
pub fn bad_request(raw: &[u8], reason: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?;
    let _uri = parts.next()?;
    let version = parts.next()?;
    if !version.eq_ignore_ascii_case("SIP/2.0")
        || method.eq_ignore_ascii_case("ACK")
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
    {
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
    let (from, mut to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    if vias.is_empty() || call_id.is_empty() {
        return None;
    }
    if !to.to_ascii_lowercase().contains(";tag=") {
        to.push_str(";tag=sbbad");
    }
    let reason = reason.replace(['"', '\r', '\n'], " ");
    let mut out = String::from("SIP/2.0 400 Bad Request\r\n");
    for v in vias {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!(
        "From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nWarning: 399 sipbridge \"{}\"\r\nContent-Length: 0\r\n\r\n",
        reason.chars().take(200).collect::<String>()
    ));
    Some(out.into_bytes())
}

/// Whether a datagram's body is shorter than its Content-Length says (RFC 3261
/// §18.3: over UDP such a request gets 400, such a response is discarded).
pub fn truncated_body(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..end]);
    let declared = head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = header_name(l)?;
        (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")).then(|| v.parse::<usize>().ok())?
    });
    declared.is_some_and(|len| raw.len() - (end + 4) < len)
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
        assert!(bad_request(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCSeq: 1 INVITE\r\n\r\n", "").is_none());
        assert!(bad_request(b"\xff\xfe garbage", "").is_none());
        assert!(bad_request(b"SIP/2.0 200 OK\r\n\r\n", "").is_none());
        assert!(truncated_body(b"INVITE x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc"));
        assert!(!truncated_body(b"INVITE x SIP/2.0\r\nl: 3\r\n\r\nabc"));
    }
}
