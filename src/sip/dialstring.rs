//! What a caller may dial, and how a number becomes a Request-URI user part
//! (issue 17: toll fraud through forward routes). Sans-IO.
//!
//! The dialled user part arrives percent-decoded (RFC 3261 §19.1.2), so a caller
//! can smuggle `@`, `;` or a whole host into it (`sip:+1312%40evil.example%3Bx@box`).
//! Two checks keep that from steering a call:
//!
//! - [`is_user`]: every dialled user part must be a plain SIP user token (letters,
//!   digits and `- _ . ! ~ * ' ( ) + #`, at most [`MAX_USER`] characters): no `@`,
//!   `;`, `?`, `:`, `/`, `%`, `,`, whitespace or control characters survive. A user
//!   part like `echo` stays valid (agents and rooms are reached by name);
//! - [`is_dial_string`]: a number that leaves the box on a trunk (forward routes,
//!   dial-out, transfer) must be a dial string: `0-9 + * #` only, `+` only first,
//!   1 to [`MAX_DIAL_STRING`] characters (ITU-T E.164 allows 15 digits; 32 leaves
//!   room for prefixes, `*` codes and DTMF-style `#`).
//!
//! Anything else is answered 484 Address Incomplete (RFC 3261 §21.4.22) before it
//! reaches a route. [`uri_user`] then writes a checked value into a URI with `#`
//! escaped (`%23`, RFC 3261 §25.1: `#` is not a `user` character).

/// Longest dial string accepted (characters).
pub const MAX_DIAL_STRING: usize = 32;

/// Longest SIP user part accepted (characters).
pub const MAX_USER: usize = 64;

/// Whether `s` is a dial string: 1–32 of `0-9 * #`, optionally after one leading `+`.
pub fn is_dial_string(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty()
        && s.len() <= MAX_DIAL_STRING
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// Whether `s` is a plain SIP user token (see the module docs): 1–64 characters of
/// ASCII letters, digits and `- _ . ! ~ * ' ( ) + #`.
pub fn is_user(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_USER && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()+#".contains(&b))
}

/// `s` (already checked with [`is_user`]) as a URI user part: `#` escaped as `%23`.
pub fn uri_user(s: &str) -> String {
    s.replace('#', "%23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings() {
        for ok in ["+13125550100", "100", "*72", "#", "+1#2*3", &"9".repeat(32)] {
            assert!(is_dial_string(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "++1",
            "1+2",
            &"9".repeat(33),
            "+1312@127.0.0.77",
            "+1312;x",
            "+1312 ",
            "+1312\r\n",
            "echo",
            "+1312%40",
            "１２３",
        ] {
            assert!(!is_dial_string(bad), "{bad:?}");
        }
    }

    #[test]
    fn user_tokens_keep_names_and_refuse_smuggled_hosts() {
        for ok in ["echo", "+13125550100", "sales.desk", "a_b-c", "*72", "room(1)"] {
            assert!(is_user(ok), "{ok}");
        }
        for bad in [
            "",
            "+1312@127.0.0.77;x",
            "+1312;x",
            "a b",
            "a\r\nVia: x",
            "a\0",
            "a:b",
            "a/b",
            "a?b",
            "a%40b",
            "a,b",
            "€",
            &"a".repeat(65),
        ] {
            assert!(!is_user(bad), "{bad:?}");
        }
    }

    #[test]
    fn hash_is_escaped_in_uris() {
        assert_eq!(uri_user("*72#"), "*72%23");
        let u = format!("sip:{}@192.0.2.1", uri_user("+1#2"));
        let parsed = rsipstack::sip::Uri::try_from(u.as_str()).unwrap();
        assert_eq!(parsed.host_with_port.to_string(), "192.0.2.1");
    }
}
