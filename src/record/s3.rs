//! The S3 requests the uploader makes (`PutObject`, the multipart trio
//! `CreateMultipartUpload` / `UploadPart` / `CompleteMultipartUpload`, and
//! presigned `GetObject` URLs for `call.recording.uploaded`), against any service
//! with the S3 API.
//!
//! The S3 model (bucket URLs in path or virtual-host style, the multipart XML,
//! query-string presigning) is `rusty-s3`, a sans-IO crate; requests go out through
//! reqwest (rustls on ring). Requests are signed in the `Authorization` header
//! with AWS Signature Version 4 ([`authorization`]; AWS "Signature Calculations for
//! the Authorization Header: Transferring Payload in a Single Chunk"), with the
//! payload's SHA-256 in `x-amz-content-sha256`, so the server checks both the
//! signature and the bytes. `rusty-s3` only presigns URLs, and servers such as
//! moto verify header signatures only.

use std::time::{Duration, SystemTime};

use ring::{digest, hmac};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use crate::config::RecordingUpload;

/// Why an S3 request failed, worded for a technician.
#[derive(Debug, Clone, thiserror::Error)]
pub enum S3Error {
    /// The server answered with an error (S3's `<Error><Code>` and `<Message>`).
    #[error("S3 answered {status} {code}: {message}{hint}")]
    Service {
        /// HTTP status.
        status: u16,
        /// S3 error code (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, `NoSuchBucket`, ...).
        code: String,
        /// The server's message.
        message: String,
        /// What to check, for the codes that have an obvious cause.
        hint: &'static str,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("S3 endpoint not reached: {0}")]
    Network(String),
    /// The answer was not what S3 answers (missing ETag, unreadable XML).
    #[error("unexpected S3 answer: {0}")]
    Protocol(String),
    /// The configuration cannot make a request URL.
    #[error("[recording.upload]: {0}")]
    Config(String),
}

impl S3Error {
    /// The multipart upload is unknown to the server (expired, aborted, or the
    /// server lost it): start a new one.
    pub fn no_such_upload(&self) -> bool {
        matches!(self, Self::Service { code, .. } if code == "NoSuchUpload")
    }
}

fn hint_for(code: &str) -> &'static str {
    match code {
        "SignatureDoesNotMatch" => " (check [recording.upload] secret_access_key and region)",
        "InvalidAccessKeyId" | "InvalidClientTokenId" => " (check [recording.upload] access_key_id)",
        "AccessDenied" => " (the key's policy must allow s3:PutObject on the bucket: see the operator guide)",
        "NoSuchBucket" => " (check [recording.upload] bucket and path_style)",
        "AuthorizationHeaderMalformed" => " (check [recording.upload] region)",
        _ => "",
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, lowercase hex (`x-amz-content-sha256`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// AWS's URI encoding (SigV4): unreserved characters `A-Z a-z 0-9 - _ . ~` as
/// they are, every other byte as `%XX` (uppercase hex).
pub fn aws_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` of `t` (SigV4's `x-amz-date`).
pub fn amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes()).as_ref().to_vec()
}

/// The SigV4 `Authorization` header value of a request to `url` (its path is the
/// canonical URI as sent; its query must already be in canonical form: sorted,
/// [`aws_encode`]d). `headers` are the signed headers, names lowercase, sorted
/// by name, `host` and `x-amz-date` among them; `payload_sha256` is the body's
/// SHA-256 in hex. Service `s3`, scope `<date>/<region>/s3/aws4_request`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    payload_sha256: &str,
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    amz_date: &str,
) -> String {
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}",
        url.path(),
        url.query().unwrap_or("")
    );
    let day = &amz_date[..8];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let k_date = hmac_sha256(format!("AWS4{secret_access_key}").as_bytes(), day);
    let k_region = hmac_sha256(&k_date, region);
    let k_service = hmac_sha256(&k_region, "s3");
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let signature = hex(&hmac_sha256(&k_signing, &string_to_sign));
    format!("AWS4-HMAC-SHA256 Credential={access_key_id}/{scope},SignedHeaders={signed_headers},Signature={signature}")
}

/// A client for one `[recording.upload]` bucket.
#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    region: String,
}

impl S3Client {
    /// A client for `cfg`'s bucket; requests time out after `timeout` (a part of
    /// `part_size` bytes must go up within it).
    pub fn new(cfg: &RecordingUpload, timeout: Duration) -> Result<Self, S3Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let style = if cfg.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(cfg.endpoint.clone(), style, cfg.bucket.clone(), cfg.region.clone())
            .map_err(|e| S3Error::Config(format!("endpoint {}: {e}", cfg.endpoint)))?;
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("sipbridge/", env!("CARGO_PKG_VERSION")))
        };
        let http = match builder().build() {
            Ok(c) => c,
            Err(e) if cfg.endpoint.scheme() == "https" => return Err(S3Error::Config(format!("HTTPS client: {e}"))),
            // Plain HTTP needs no CA roots.
            Err(_) => builder()
                .tls_certs_only(std::iter::empty())
                .build()
                .map_err(|e| S3Error::Config(format!("HTTP client: {e}")))?,
        };
        Ok(Self {
            http,
            bucket,
            credentials: Credentials::new(cfg.access_key_id.expose(), cfg.secret_access_key.expose()),
            region: cfg.region.clone(),
        })
    }

    /// The object's URL, unsigned (the recording's remote location).
    pub fn object_url(&self, key: &str) -> Result<Url, S3Error> {
        self.bucket.object_url(key).map_err(|e| S3Error::Config(format!("object key {key:?}: {e}")))
    }

    /// A presigned `GetObject` URL of `key` valid for `lifetime` (SigV4 query
    /// string; at most 7 days).
    pub fn presigned_get(&self, key: &str, lifetime: Duration) -> String {
        rusty_s3::actions::GetObject::new(&self.bucket, Some(&self.credentials), key).sign(lifetime).to_string()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, S3Error> {
        let mut url = self.object_url(key)?;
        let mut pairs: Vec<(String, String)> = query.iter().map(|(k, v)| (aws_encode(k), aws_encode(v))).collect();
        pairs.sort();
        let q = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        url.set_query(if q.is_empty() { None } else { Some(&q) });
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let payload = sha256_hex(&body);
        let date = amz_date(SystemTime::now());
        // Signed headers, sorted by name (SigV4's canonical request).
        let mut signed = Vec::with_capacity(4);
        if let Some(ct) = content_type {
            signed.push(("content-type", ct));
        }
        signed.extend([("host", host.as_str()), ("x-amz-content-sha256", &payload), ("x-amz-date", &date)]);
        let auth = authorization(
            method.as_str(),
            &url,
            &signed,
            &payload,
            self.credentials.key(),
            self.credentials.secret(),
            &self.region,
            &date,
        );
        let mut request = self.http.request(method, url);
        if let Some(ct) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let resp = request
            .header("x-amz-content-sha256", payload)
            .header("x-amz-date", date)
            .header(reqwest::header::AUTHORIZATION, auth)
            .body(body)
            .send()
            .await
            .map_err(|e| S3Error::Network(error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = text.find(&open)? + open.len();
            let end = text[start..].find(&format!("</{name}>"))? + start;
            Some(text[start..end].trim().to_string())
        };
        let code = tag("Code").unwrap_or_else(|| format!("HTTP{status}"));
        let message = tag("Message").unwrap_or_else(|| "no message".into());
        Err(S3Error::Service { status, hint: hint_for(&code), code, message })
    }

    /// `PutObject` of `body` at `key`, stored with the `Content-Type` of the
    /// key's extension ([`content_type`]).
    pub async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.send(reqwest::Method::PUT, key, &[], Some(content_type(key)), body).await.map(drop)
    }

    /// `CreateMultipartUpload` at `key` (the object's `Content-Type` is set
    /// here, from the key's extension); the `UploadId`.
    pub async fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        let resp =
            self.send(reqwest::Method::POST, key, &[("uploads", "")], Some(content_type(key)), Vec::new()).await?;
        let xml = resp.text().await.map_err(|e| S3Error::Network(error_chain(&e)))?;
        let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&xml)
            .map_err(|e| S3Error::Protocol(format!("CreateMultipartUpload: {e}")))?;
        Ok(parsed.upload_id().to_string())
    }

    /// `UploadPart` number `part_number` (1-based); the part's ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Vec<u8>,
    ) -> Result<String, S3Error> {
        let n = part_number.to_string();
        let query = [("partNumber", n.as_str()), ("uploadId", upload_id)];
        let resp = self.send(reqwest::Method::PUT, key, &query, None, body).await?;
        resp.headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| S3Error::Protocol(format!("UploadPart {part_number}: no ETag")))
    }

    /// `CompleteMultipartUpload` with the parts' ETags in order.
    pub async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), S3Error> {
        let body = rusty_s3::actions::CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        )
        .body();
        let resp = self.send(reqwest::Method::POST, key, &[("uploadId", upload_id)], None, body.into_bytes()).await?;
        // S3 may answer 200 with an <Error> body when the completion failed late.
        let text = resp.text().await.map_err(|e| S3Error::Network(error_chain(&e)))?;
        if text.contains("<Error>") {
            return Err(S3Error::Protocol(format!("CompleteMultipartUpload failed: {text}")));
        }
        Ok(())
    }

    /// `GetObject` of `key` (signed in the header), the whole body.
    pub async fn get_object(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let resp = self.send(reqwest::Method::GET, key, &[], None, Vec::new()).await?;
        resp.bytes().await.map(|b| b.to_vec()).map_err(|e| S3Error::Network(error_chain(&e)))
    }
}

/// The `Content-Type` a recording is stored (and later served, to a presigned
/// GET) with, by the key's extension: `audio/wav` for `.wav`, `audio/mpeg` for
/// `.mp3` (RFC 3003), `application/octet-stream` otherwise (S3's own default).
pub fn content_type(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_are_stored_with_their_media_type() {
        assert_eq!(content_type("node/2026/12/06/v3:abc/rec-1.wav"), "audio/wav");
        assert_eq!(content_type("rec-1.MP3"), "audio/mpeg");
        assert_eq!(content_type("rec.d/rec-1"), "application/octet-stream");
    }

    /// AWS's worked example "GET Object" (Signature Calculations for the
    /// Authorization Header, Amazon S3 API Reference): the signature AWS publishes.
    #[test]
    fn the_aws_get_object_example_signs_as_published() {
        let url = Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex(b""), empty);
        let auth = authorization(
            "GET",
            &url,
            &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", empty),
                ("x-amz-date", "20130524T000000Z"),
            ],
            empty,
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "20130524T000000Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn dates_and_encoding_are_sigv4s() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        assert_eq!(amz_date(t), "20130524T000000Z");
        assert_eq!(aws_encode("a b/c~d=+"), "a%20b%2Fc~d%3D%2B");
    }
}
