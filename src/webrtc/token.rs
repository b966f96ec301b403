//! Join tokens: short-lived bearer tokens that let a page join one room without
//! the API token (`POST /v2/conferences/{id}/join_tokens`).
//!
//! A token is `sbj1.<room>.<expiry>.<mac>`: the room name (base64url), the
//! expiry (Unix seconds) and an HMAC-SHA256 (RFC 2104) over both, keyed from
//! the API token in force — no state on the box, valid across restarts, and all
//! revoked at once by changing `[api] token` (on reload: the API derives the key
//! from the config in force for every request). A token grants, for its room only: the
//! WebRTC join and leave, the participants list, and the room's events on
//! `/v2/events`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;

const PREFIX: &str = "sbj1";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a join token, or its MAC does not verify.
    #[error("not a valid join token")]
    Invalid,
    /// Past its expiry.
    #[error("the join token expired")]
    Expired,
}

/// Mints and checks join tokens.
pub struct JoinTokens {
    key: hmac::Key,
}

impl JoinTokens {
    /// Tokens keyed from `secret` (the API token); without one, from a random
    /// key that lives as long as the process.
    pub fn new(secret: Option<&[u8]>) -> Self {
        let key = match secret {
            Some(s) => {
                let root = hmac::Key::new(hmac::HMAC_SHA256, s);
                hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, b"sipbridge join tokens v1").as_ref())
            }
            None => {
                let mut k = [0u8; 32];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k);
                hmac::Key::new(hmac::HMAC_SHA256, &k)
            }
        };
        JoinTokens { key }
    }

    /// A token for `room` valid for `ttl` from `now`; returns it and its expiry.
    pub fn mint(&self, room: &str, ttl: Duration, now: SystemTime) -> (String, SystemTime) {
        let expires = now + ttl;
        let secs = expires.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let body = format!("{PREFIX}.{}.{secs}", B64.encode(room));
        (self.sign(&body), UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// `body.<mac>`: `body` with its HMAC-SHA256 under this key (base64url).
    /// [`JoinTokens::mint`] signs `sbj1.<room>.<expiry>` with it; the fuzzer
    /// (`crate::fuzzing`) signs arbitrary bodies to reach the checks after the MAC.
    #[doc(hidden)]
    pub fn sign(&self, body: &str) -> String {
        let mac = B64.encode(hmac::sign(&self.key, body.as_bytes()).as_ref());
        format!("{body}.{mac}")
    }

    /// The room `token` grants at `now`.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] (malformed, forged, another key) or
    /// [`TokenError::Expired`].
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<String, TokenError> {
        let (body, mac) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let mac = B64.decode(mac).map_err(|_| TokenError::Invalid)?;
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| TokenError::Invalid)?;
        let mut parts = body.split('.');
        let (Some(PREFIX), Some(room), Some(secs), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let room = B64.decode(room).ok().and_then(|r| String::from_utf8(r).ok()).ok_or(TokenError::Invalid)?;
        let secs: u64 = secs.parse().map_err(|_| TokenError::Invalid)?;
        if now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= secs {
            return Err(TokenError::Expired);
        }
        Ok(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_grants_its_room_until_it_expires() {
        let t = JoinTokens::new(Some(b"api-token"));
        let now = SystemTime::now();
        let (token, expires) = t.mint("support desk", Duration::from_secs(60), now);
        assert_eq!(t.verify(&token, now), Ok("support desk".to_string()));
        assert_eq!(t.verify(&token, expires), Err(TokenError::Expired));
        // Same API token after a restart: still valid; another API token: not.
        assert_eq!(JoinTokens::new(Some(b"api-token")).verify(&token, now), Ok("support desk".to_string()));
        assert_eq!(JoinTokens::new(Some(b"other")).verify(&token, now), Err(TokenError::Invalid));
    }

    #[test]
    fn forged_or_damaged_tokens_are_refused() {
        let t = JoinTokens::new(Some(b"api-token"));
        let now = SystemTime::now();
        let (token, _) = t.mint("a", Duration::from_secs(60), now);
        let (body, mac) = token.rsplit_once('.').unwrap();
        // Another room or a later expiry under the same MAC.
        let other = body.replacen(&B64.encode("a"), &B64.encode("b"), 1);
        assert_eq!(t.verify(&format!("{other}.{mac}"), now), Err(TokenError::Invalid));
        let later = format!("{}.{}", &body[..body.rfind('.').unwrap()], u64::MAX);
        assert_eq!(t.verify(&format!("{later}.{mac}"), now), Err(TokenError::Invalid));
        for junk in ["", ".", "sbj1", "sbj1.a.b.c.d", "Bearer x", &token[..token.len() - 2]] {
            assert_eq!(t.verify(junk, now), Err(TokenError::Invalid), "{junk:?}");
        }
    }
}
