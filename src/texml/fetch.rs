//! Requests to the app server: the documents (answer URL, fallback, `action`s,
//! `<Redirect>`) and the callbacks whose answer is not read (`statusCallback`).
//!
//! TwiML's request shape (www.twilio.com/docs/voice/twiml#request-parameters;
//! Telnyx TeXML sends the same names): `POST` with an
//! `application/x-www-form-urlencoded` body, or `GET` with the same fields in
//! the query string. Only `http`/`https` URLs are requested; no redirects are
//! followed (a 3xx is an error), no proxy from the environment, one timeout over
//! the whole request, and the body is counted while it streams in (at most
//! [`super::document::MAX_DOCUMENT_BYTES`]).

use std::time::Duration;

use super::document::{MAX_DOCUMENT_BYTES, Method};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Not an http(s) URL.
    #[error("{0}")]
    Url(String),
    /// Connect, TLS, read failure.
    #[error("request failed: {0}")]
    Http(String),
    /// No whole answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A non-2xx status.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// The body is over the limit.
    #[error("answered more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

/// Resolves `given` against the current document's URL (TwiML allows relative
/// `action` and `<Redirect>` URLs) and checks it is http or https with a host.
///
/// # Errors
/// Unparseable, another scheme, no host.
pub fn resolve(base: &url::Url, given: &str) -> Result<url::Url, FetchError> {
    let u = base.join(given).map_err(|e| FetchError::Url(format!("{given:?} is not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(FetchError::Url(format!("{given:?} must use http:// or https://")));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(FetchError::Url(format!("{given:?} has no host")));
    }
    Ok(u)
}

/// Requests `url` with `params` and returns the body as text.
///
/// # Errors
/// [`FetchError`].
pub async fn request(
    url: &url::Url,
    method: Method,
    params: &[(String, String)],
    timeout: Duration,
) -> Result<String, FetchError> {
    let client = client(timeout, url.scheme() == "https")?;
    let req = match method {
        Method::Post => {
            let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
            client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
        }
        Method::Get => {
            let mut u = url.clone();
            u.query_pairs_mut().extend_pairs(params);
            client.get(u)
        }
    };
    let err =
        |e: reqwest::Error| if e.is_timeout() { FetchError::Timeout(timeout) } else { FetchError::Http(describe(e)) };
    let work = async {
        let mut resp = req.send().await.map_err(err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if bytes.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| FetchError::Timeout(timeout))?
}

/// The error and its causes ("connection refused"), without the URL (its
/// query holds the call's numbers).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    for _ in 0..4 {
        let Some(c) = cause else { break };
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn client(timeout: Duration, https: bool) -> Result<reqwest::Client, FetchError> {
    crate::tts::http::plain_client(timeout, https).map_err(|e| FetchError::Http(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_against_the_document_and_other_schemes_are_refused() {
        let base: url::Url = "https://app.example/ivr/answer?x=1".parse().unwrap();
        assert_eq!(resolve(&base, "menu").unwrap().as_str(), "https://app.example/ivr/menu");
        assert_eq!(resolve(&base, "/top").unwrap().as_str(), "https://app.example/top");
        assert_eq!(resolve(&base, "http://other.example/a").unwrap().as_str(), "http://other.example/a");
        assert!(resolve(&base, "file:///etc/passwd").unwrap_err().to_string().contains("http:// or https://"));
        assert!(resolve(&base, "ftp://x/a").is_err());
        assert!(resolve(&base, "gopher://x").is_err());
    }
}
