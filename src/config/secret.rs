//! A string that must never be shown: SIP passwords, API tokens, agent tokens.
//!
//! `Debug` and `Display` print `****` followed by at most the last 4 characters
//! (only when the secret is long enough that 4 characters do not give it away);
//! `Serialize` writes the same redacted form, so a config dumped to JSON or to a
//! log line cannot leak it. The only way to the clear text is [`Secret::expose`],
//! which call sites use exactly where the secret goes on the wire.

use std::fmt;

/// A secret string (password, token). See the module docs for what it reveals.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a clear-text secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear text, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form: `****` plus the last 4 characters when the secret has
    /// at least 12 characters, otherwise `****` alone.
    pub fn redacted(&self) -> String {
        let n = self.0.chars().count();
        if n >= 12 {
            let tail: String = self.0.chars().skip(n - 4).collect();
            format!("****{tail}")
        } else {
            "****".to_string()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secret_shows_nothing() {
        let s = Secret::new("change-me");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert_eq!(s.to_string(), "****");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"****\"");
    }

    #[test]
    fn long_secret_shows_last_four_only() {
        let s = Secret::new("a-very-long-password-9f3k");
        assert_eq!(s.to_string(), "****9f3k");
        assert!(!format!("{s:?}").contains("very-long"));
        assert_eq!(s.expose(), "a-very-long-password-9f3k");
    }
}
