//! Server-side HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 7616,
//! RFC 8760 for SHA-256): the box challenges INVITEs from trunks that must present
//! credentials (LiveKit's outbound trunk) and verifies the answers.
//!
//! rsipstack has no challenger (RSIPSTACK.md pitfall 2); this one:
//! - issues stateless nonces: `base64url(issued_at_secs ‖ HMAC-SHA256(secret,
//!   issued_at ‖ realm ‖ source IP)[..16])`, valid for `nonce_ttl`; an expired but
//!   genuine nonce gets `stale=true` so the client retries without asking the user;
//!   a nonce is good only from the source it was issued to (a guesser cannot farm
//!   nonces from one address and spend them from others);
//! - offers MD5 first, then SHA-256 (RFC 8760), both with `qop="auth"`. RFC 8760
//!   §2.4 would list the preferred (SHA-256) first, but many SIP UAs read only
//!   the first challenge and know only MD5 (SIPp 3.6 refuses anything else), so
//!   interoperability wins; a client that prefers SHA-256 still finds it;
//! - tracks the nonce count per nonce (RFC 7616 §3.4: nc must grow) and treats
//!   qop-less answers as single-use, so a captured Authorization cannot be replayed;
//! - compares responses in constant time.
//!
//! Sans-IO: the caller passes the time and gets header values back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use md5::Digest as _;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Digest algorithm (RFC 7616 §3.3, RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617), still what most SIP stacks send.
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hash_hex(self, data: &str) -> String {
        let bytes: Vec<u8> = match self {
            Self::Md5 => md5::Md5::digest(data.as_bytes()).to_vec(),
            Self::Sha256 => ring::digest::digest(&ring::digest::SHA256, data.as_bytes()).as_ref().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The parameters of an `Authorization` / `Proxy-Authorization` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestCredentials {
    /// `username`
    pub username: String,
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `uri` (the digest-uri as the client wrote it)
    pub uri: String,
    /// `response` (hex)
    pub response: String,
    /// `algorithm` (absent = MD5)
    pub algorithm: Option<String>,
    /// `qop` (`auth` or absent)
    pub qop: Option<String>,
    /// `nc` (8 hex digits)
    pub nc: Option<String>,
    /// `cnonce`
    pub cnonce: Option<String>,
}

/// Parses `Digest k=v, k="v", ...` (RFC 7616 §3.4). Quoted strings may contain
/// commas and `\"`. Returns `None` when the scheme is not Digest or a required
/// parameter (username, realm, nonce, uri, response) is missing.
pub fn parse_credentials(header: &str) -> Option<DigestCredentials> {
    let rest = header.trim_start();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut c = DigestCredentials::default();
    let bytes = params.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let key = params.get(start..i)?.trim().to_ascii_lowercase();
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = String::new();
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = params.get(i..)?.chars().next()?.len_utf8();
                v.push_str(params.get(i..i + ch_len)?);
                i += ch_len;
            }
            i += 1; // closing quote
            v
        } else {
            let s = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            params.get(s..i)?.trim().to_string()
        };
        match key.as_str() {
            "username" => c.username = value,
            "realm" => c.realm = value,
            "nonce" => c.nonce = value,
            "uri" => c.uri = value,
            "response" => c.response = value.to_ascii_lowercase(),
            "algorithm" => c.algorithm = Some(value),
            "qop" => c.qop = Some(value),
            "nc" => c.nc = Some(value),
            "cnonce" => c.cnonce = Some(value),
            _ => {}
        }
    }
    let complete = !c.username.is_empty() && !c.nonce.is_empty() && !c.uri.is_empty() && !c.response.is_empty();
    complete.then_some(c)
}

/// The outcome of checking an answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials of this user.
    Accepted {
        /// The authenticated username.
        username: String,
    },
    /// A genuine nonce that has expired: challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, forged or replayed nonce, or a malformed
    /// header: challenge again (and count the failure when [`Verdict::is_guess`]).
    Rejected(&'static str),
}

/// Rejections decided before the nonce is known to be ours and issued to this
/// source: the sender never had to receive our 401 to send them.
const BEFORE_NONCE: [&str; 3] = ["malformed Authorization", "wrong realm", "foreign nonce"];

impl Verdict {
    /// Whether this is a failed guess by a sender that holds a nonce we issued to
    /// its address, i.e. one that really receives at that address. Only those count
    /// towards a ban (`super::ban`): a forged or foreign nonce can come from a
    /// spoofed UDP source, and counting it would let anyone ban a legitimate peer's
    /// address; it never reaches the password check, so it guesses nothing.
    pub fn is_guess(&self) -> bool {
        matches!(self, Verdict::Rejected(why) if !BEFORE_NONCE.contains(why))
    }
}

/// Issues challenges and verifies answers for one realm.
pub struct DigestChallenger {
    realm: String,
    key: ring::hmac::Key,
    nonce_ttl: Duration,
    /// Highest nonce count seen per nonce (`u32::MAX` = used without qop).
    counts: Mutex<HashMap<String, (u64, u32)>>,
}

impl std::fmt::Debug for DigestChallenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestChallenger").field("realm", &self.realm).finish_non_exhaustive()
    }
}

const MAX_TRACKED_NONCES: usize = 50_000;

impl DigestChallenger {
    /// A challenger for `realm` with a random HMAC secret; nonces live `nonce_ttl`.
    pub fn new(realm: &str, nonce_ttl: Duration) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes()));
        Self { realm: realm.to_string(), key, nonce_ttl, counts: Mutex::new(HashMap::new()) }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn nonce_at(&self, secs: u64, source: IpAddr) -> String {
        let mut msg = secs.to_be_bytes().to_vec();
        msg.extend_from_slice(self.realm.as_bytes());
        match super::trunk::canonical(source) {
            IpAddr::V4(v4) => msg.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => msg.extend_from_slice(&v6.octets()),
        }
        let tag = ring::hmac::sign(&self.key, &msg);
        let mut raw = secs.to_be_bytes().to_vec();
        raw.extend_from_slice(&tag.as_ref()[..16]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// `WWW-Authenticate` values for a 401 to `source` (one per algorithm, MD5 first).
    pub fn challenge(&self, now: SystemTime, stale: bool, source: IpAddr) -> Vec<String> {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let nonce = self.nonce_at(secs, source);
        [Algorithm::Md5, Algorithm::Sha256]
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks an `Authorization` header value for `method`, received from `source`,
    /// against the password of its user (`password_of(username)`; `None` = unknown
    /// user).
    pub fn verify<'p>(
        &self,
        method: &str,
        header: &str,
        now: SystemTime,
        source: IpAddr,
        password_of: impl Fn(&str) -> Option<&'p Secret>,
    ) -> Verdict {
        let Some(c) = parse_credentials(header) else { return Verdict::Rejected("malformed Authorization") };
        if c.realm != self.realm {
            return Verdict::Rejected("wrong realm");
        }
        // Nonce: ours and fresh?
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&c.nonce) else {
            return Verdict::Rejected("foreign nonce");
        };
        if raw.len() != 24 {
            return Verdict::Rejected("foreign nonce");
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let issued = u64::from_be_bytes(ts);
        let expected = self.nonce_at(issued, source);
        if !bool::from(expected.as_bytes().ct_eq(c.nonce.as_bytes())) {
            return Verdict::Rejected("foreign nonce");
        }
        let algorithm = match c.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            Some(_) => return Verdict::Rejected("unsupported algorithm"),
        };
        let Some(password) = password_of(&c.username) else { return Verdict::Rejected("unknown user") };
        let ha1 = algorithm.hash_hex(&format!("{}:{}:{}", c.username, c.realm, password.expose()));
        let ha2 = algorithm.hash_hex(&format!("{method}:{}", c.uri));
        let (want, nc) = match c.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (c.nc.as_deref(), c.cnonce.as_deref()) else {
                    return Verdict::Rejected("qop without nc/cnonce");
                };
                let Ok(n) = u32::from_str_radix(nc, 16) else { return Verdict::Rejected("bad nc") };
                (algorithm.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce)), n)
            }
            Some(_) => return Verdict::Rejected("unsupported qop"),
            None => (algorithm.hash_hex(&format!("{ha1}:{}:{ha2}", c.nonce)), u32::MAX),
        };
        if !bool::from(want.as_bytes().ct_eq(c.response.as_bytes())) {
            return Verdict::Rejected("wrong password");
        }
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now_s.saturating_sub(issued) > self.nonce_ttl.as_secs() {
            return Verdict::Stale;
        }
        // Replay protection: nc must grow per nonce; qop-less answers are single-use.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= MAX_TRACKED_NONCES {
            let ttl = self.nonce_ttl.as_secs();
            counts.retain(|_, (issued, _)| now_s.saturating_sub(*issued) <= ttl);
        }
        match counts.get(&c.nonce) {
            Some((_, last)) if *last == u32::MAX || nc == u32::MAX || nc <= *last => {
                return Verdict::Rejected("replayed nonce");
            }
            _ => {}
        }
        counts.insert(c.nonce.clone(), (issued, nc));
        Verdict::Accepted { username: c.username }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    /// A client computing its answer the RFC 2617 way, independent of the server code.
    fn answer(ch: &str, user: &str, pass: &str, method: &str, uri: &str, nc: u32, alg: Algorithm) -> String {
        let nonce = ch.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap();
        let realm = ch.split("realm=\"").nth(1).unwrap().split('"').next().unwrap();
        let ha1 = alg.hash_hex(&format!("{user}:{realm}:{pass}"));
        let ha2 = alg.hash_hex(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let resp = alg.hash_hex(&format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"abc\"",
            alg.name()
        )
    }

    #[test]
    fn rfc_2617_md5_vector() {
        // RFC 2617 §3.5 example (HTTP, but the computation is the same).
        let ha1 = Algorithm::Md5.hash_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = Algorithm::Md5.hash_hex("GET:/dir/index.html");
        let r =
            Algorithm::Md5.hash_hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn accepts_right_password_for_both_algorithms_and_rejects_replays() {
        let d = DigestChallenger::new("sipbridge", Duration::from_secs(300));
        let pw = Secret::new("s3cret");
        let t0 = SystemTime::now();
        assert!(d.challenge(t0, false, SRC)[0].contains("algorithm=MD5"));
        assert!(d.challenge(t0, false, SRC)[1].contains("algorithm=SHA-256"));
        for (i, alg) in [Algorithm::Md5, Algorithm::Sha256].into_iter().enumerate() {
            // A fresh nonce per algorithm (nonces are per second).
            let now = t0 + Duration::from_secs(i as u64);
            let challenges = d.challenge(now, false, SRC);
            let h = answer(&challenges[i], "livekit", "s3cret", "INVITE", "sip:+1555@box", 1, alg);
            let pw_of = |u: &str| (u == "livekit").then_some(&pw);
            assert_eq!(d.verify("INVITE", &h, now, SRC, pw_of), Verdict::Accepted { username: "livekit".into() });
            assert_eq!(d.verify("INVITE", &h, now, SRC, pw_of), Verdict::Rejected("replayed nonce"));
            let h2 = answer(&challenges[i], "livekit", "s3cret", "INVITE", "sip:+1555@box", 2, alg);
            assert!(matches!(d.verify("INVITE", &h2, now, SRC, pw_of), Verdict::Accepted { .. }), "nc 2 is fresh");
        }
    }

    #[test]
    fn wrong_password_unknown_user_forged_nonce_and_stale() {
        let d = DigestChallenger::new("sipbridge", Duration::from_secs(60));
        let pw = Secret::new("s3cret");
        let t0 = SystemTime::now();
        let ch = &d.challenge(t0, false, SRC)[0];
        let pw_of = |u: &str| (u == "lk").then_some(&pw);
        let bad = answer(ch, "lk", "guess", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        assert_eq!(d.verify("INVITE", &bad, t0, SRC, pw_of), Verdict::Rejected("wrong password"));
        let who = answer(ch, "nobody", "s3cret", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        assert_eq!(d.verify("INVITE", &who, t0, SRC, pw_of), Verdict::Rejected("unknown user"));
        let other = DigestChallenger::new("sipbridge", Duration::from_secs(60));
        let forged =
            answer(&other.challenge(t0, false, SRC)[0], "lk", "s3cret", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        assert_eq!(d.verify("INVITE", &forged, t0, SRC, pw_of), Verdict::Rejected("foreign nonce"));
        let late = answer(ch, "lk", "s3cret", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        assert_eq!(d.verify("INVITE", &late, t0 + Duration::from_secs(120), SRC, pw_of), Verdict::Stale);
        assert!(d.challenge(t0, true, SRC)[0].ends_with("stale=true"));
    }

    #[test]
    fn a_nonce_is_good_only_from_the_source_it_was_issued_to() {
        let d = DigestChallenger::new("sipbridge", Duration::from_secs(60));
        let pw = Secret::new("s3cret");
        let t0 = SystemTime::now();
        let ch = &d.challenge(t0, false, SRC)[0];
        let pw_of = |u: &str| (u == "lk").then_some(&pw);
        let h = answer(ch, "lk", "s3cret", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        let elsewhere: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(d.verify("INVITE", &h, t0, elsewhere, pw_of), Verdict::Rejected("foreign nonce"));
        // The same address written as IPv4-mapped IPv6 is the same source.
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert!(matches!(d.verify("INVITE", &h, t0, mapped, pw_of), Verdict::Accepted { .. }));
    }

    #[test]
    fn only_answers_to_our_nonce_count_as_guesses() {
        let d = DigestChallenger::new("sipbridge", Duration::from_secs(60));
        let pw = Secret::new("s3cret");
        let t0 = SystemTime::now();
        let ch = &d.challenge(t0, false, SRC)[0];
        let pw_of = |u: &str| (u == "lk").then_some(&pw);
        let wrong =
            d.verify("INVITE", &answer(ch, "lk", "guess", "INVITE", "sip:x@y", 1, Algorithm::Md5), t0, SRC, pw_of);
        assert!(wrong.is_guess(), "{wrong:?}");
        let who =
            d.verify("INVITE", &answer(ch, "nobody", "x", "INVITE", "sip:x@y", 1, Algorithm::Md5), t0, SRC, pw_of);
        assert!(who.is_guess(), "{who:?}");
        // A spoofed source never saw the nonce: its junk is no guess.
        let spoofed: IpAddr = "203.0.113.5".parse().unwrap();
        let h = answer(ch, "lk", "guess", "INVITE", "sip:x@y", 1, Algorithm::Md5);
        let v = d.verify("INVITE", &h, t0, spoofed, pw_of);
        assert!(!v.is_guess(), "{v:?}");
        assert!(!d.verify("INVITE", "Digest junk", t0, SRC, pw_of).is_guess());
        assert!(!Verdict::Stale.is_guess());
    }

    #[test]
    fn parses_quoted_commas_and_escapes() {
        let c = parse_credentials(
            r#"Digest username="a\"b", realm="r,1", nonce="n", uri="sip:x@y;transport=tcp", response="ABC", qop=auth, nc=00000001, cnonce="c""#,
        )
        .unwrap();
        assert_eq!((c.username.as_str(), c.realm.as_str(), c.response.as_str()), ("a\"b", "r,1", "abc"));
        assert_eq!(c.uri, "sip:x@y;transport=tcp");
        assert!(parse_credentials("Basic dXNlcjpwYXNz").is_none());
        assert!(parse_credentials("Digest username=\"u\"").is_none());
        assert!(parse_credentials("Digest username=\"unterminated").is_none());
    }
}
