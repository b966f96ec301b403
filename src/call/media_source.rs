//! Where audio for `playback_start` and conference `play` may come from (issue 17):
//! the policy, and the bounded read or fetch under it.
//!
//! Who sends it: any holder of the API token names a source in `audio_url`. What it
//! could make the box do without this module: read any file the service user can
//! (`/etc/sipbridge/webhook.key`, `/dev/zero`, a FIFO that never ends), or fetch
//! from the box's own network (`http://127.0.0.1:...`, a router's admin page, a
//! cloud metadata address) and follow redirects there. So:
//!
//! - a path (`/abs/file.wav`, `file:///abs/file.wav`, or `name.wav` relative to
//!   `[media] dir`) is resolved (symlinks followed, `..` refused), must stay inside
//!   `[media] dir`, must be a regular file (no FIFO, device, directory) and at most
//!   `[media] max_fetch_bytes`; it is opened with `O_NOFOLLOW | O_NONBLOCK` and
//!   checked again on the open descriptor, so a swap after the check reads nothing
//!   else and a FIFO never blocks;
//! - a URL must be `http` or `https`; its host is resolved once, every address is
//!   checked ([`address_allowed`]: loopback, RFC 1918 / RFC 4193 private, link-local,
//!   CGNAT, unspecified, multicast and broadcast are refused unless
//!   `[media] allow_private_urls`), and the connection is pinned to the checked
//!   address, so a second DNS answer (rebinding) cannot move it; no proxy from the
//!   environment, no redirects (a 3xx is refused), one timeout over the whole
//!   fetch (`[media] fetch_timeout`), and the body is counted while it streams in
//!   (Content-Length is not trusted).
//!
//! Every refusal counts in [`crate::security::MEDIA_FETCH_REFUSED`].

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use crate::config::Media;

/// Why a source was not read; the text is shown to the API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The policy refused the source (outside `[media] dir`, not a regular file,
    /// private address, redirect, too large, timeout, bad scheme).
    #[error("{0}")]
    Refused(String),
    /// The source could not be read (missing file, DNS failure, HTTP error status).
    #[error("{0}")]
    Unavailable(String),
}

fn refused(why: String) -> MediaError {
    crate::security::MEDIA_FETCH_REFUSED.inc();
    MediaError::Refused(why)
}

/// Reads `source` under `policy`: the raw bytes (a WAV file, not decoded).
///
/// # Errors
/// [`MediaError::Refused`] when the policy refuses it (counted), or
/// [`MediaError::Unavailable`] when it cannot be read.
pub async fn read(source: &str, policy: &Media) -> Result<Vec<u8>, MediaError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return fetch(source, policy).await;
    }
    if let Some((scheme, _)) = source.split_once("://")
        && scheme != "file"
    {
        return Err(refused(format!("{scheme}:// is not supported: use a file in [media] dir or an http(s) URL")));
    }
    let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
    let (dir, max) = (policy.dir.clone(), policy.max_fetch_bytes);
    tokio::task::spawn_blocking(move || read_file(&dir, &path, max))
        .await
        .map_err(|e| MediaError::Unavailable(format!("reading {source}: {e}")))?
}

/// Reads the file `given` (absolute, or relative to `dir`) when it resolves to a
/// regular file inside `dir` of at most `max_bytes` bytes.
///
/// # Errors
/// [`MediaError::Refused`]: `..`, outside `dir`, not a regular file, too large;
/// [`MediaError::Unavailable`]: the file or `dir` does not exist.
pub fn read_file(dir: &Path, given: &Path, max_bytes: u64) -> Result<Vec<u8>, MediaError> {
    let shown = given.display().to_string();
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(refused(format!("{shown}: \"..\" is not allowed in a media path")));
    }
    let joined = if given.is_absolute() { given.to_path_buf() } else { dir.join(given) };
    let root = std::fs::canonicalize(dir)
        .map_err(|e| MediaError::Unavailable(format!("[media] dir {}: {e}", dir.display())))?;
    let real = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        // Not found inside the directory: say so; outside it: the same refusal as
        // an existing file, so the API does not probe the file system.
        Err(e) if joined.starts_with(dir) || joined.starts_with(&root) => {
            return Err(MediaError::Unavailable(format!("{shown}: {e}")));
        }
        Err(_) => return Err(outside(&shown, dir)),
    };
    if !real.starts_with(&root) {
        return Err(outside(&shown, dir));
    }
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&real)
            .map_err(|e| MediaError::Unavailable(format!("{shown}: {e}")))?
    };
    let meta = file.metadata().map_err(|e| MediaError::Unavailable(format!("{shown}: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(refused(format!("{shown} is not a regular file")));
    }
    if meta.len() > max_bytes {
        return Err(too_large(&shown, max_bytes));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the cap.
    (&mut file)
        .take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MediaError::Unavailable(format!("{shown}: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(&shown, max_bytes));
    }
    Ok(bytes)
}

fn outside(shown: &str, dir: &Path) -> MediaError {
    refused(format!("{shown} is not a file in [media] dir ({})", dir.display()))
}

fn too_large(shown: &str, max: u64) -> MediaError {
    refused(format!("{shown} is larger than [media] max_fetch_bytes ({max} bytes)"))
}

/// Whether a URL may be fetched from `ip`: public unicast only, unless
/// `allow_private` (then only unspecified, multicast and broadcast stay refused).
/// Refused: 0.0.0.0/8, 127/8, 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT,
/// RFC 6598), 169.254/16, 224/4, 240/4, 255.255.255.255; `::`, `::1`, fc00::/7
/// (RFC 4193), fe80::/10, ff00::/8, and IPv4-mapped/compatible forms of the v4 ones.
pub fn address_allowed(ip: IpAddr, allow_private: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_private),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_allowed(v4, allow_private);
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return false;
            }
            let seg = v6.segments();
            // ::a.b.c.d (deprecated IPv4-compatible) and NAT64 64:ff9b::/96.
            if seg[..6] == [0; 6] && v6 != Ipv6Addr::LOCALHOST {
                return v4_allowed(Ipv4Addr::from(v6.to_bits() as u32), allow_private);
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return v4_allowed(Ipv4Addr::from(v6.to_bits() as u32), allow_private);
            }
            let private = v6.is_loopback() || (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfe80;
            allow_private || !private
        }
    }
}

fn v4_allowed(ip: Ipv4Addr, allow_private: bool) -> bool {
    let o = ip.octets();
    if o[0] == 0 || ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        return false;
    }
    let cgnat = o[0] == 100 && (o[1] & 0xc0) == 64;
    let private = ip.is_loopback() || ip.is_private() || ip.is_link_local() || cgnat;
    allow_private || !private
}

/// Fetches `source` (http or https) under `policy`.
async fn fetch(source: &str, policy: &Media) -> Result<Vec<u8>, MediaError> {
    let url = url::Url::parse(source).map_err(|e| refused(format!("{source:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused(format!("{}:// URLs are not fetched: use http or https", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused("URLs with user:password@ are not fetched".into()));
    }
    let host = url.host().ok_or_else(|| refused(format!("{source:?} has no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let deadline = tokio::time::Instant::now() + policy.fetch_timeout;
    let timed_out = || refused(format!("fetching {source} took longer than [media] fetch_timeout"));
    // Resolve once; every address must pass, and the connection uses the first.
    let (name, addrs): (Option<String>, Vec<SocketAddr>) = match host {
        url::Host::Ipv4(ip) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        url::Host::Ipv6(ip) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        url::Host::Domain(d) => {
            let d = d.to_string();
            let found = tokio::time::timeout_at(deadline, tokio::net::lookup_host((d.clone(), port)))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| MediaError::Unavailable(format!("cannot resolve {d}: {e}")))?;
            let found: Vec<SocketAddr> = found.collect();
            (Some(d), found)
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Err(MediaError::Unavailable(format!("{source}: the host has no address")));
    };
    if let Some(bad) = addrs.iter().find(|a| !address_allowed(a.ip(), policy.allow_private_urls)) {
        return Err(refused(format!(
            "{source}: {} is a loopback, private, link-local or otherwise non-public address \
             ([media] allow_private_urls = false)",
            bad.ip()
        )));
    }
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(policy.fetch_timeout)
        .connect_timeout(policy.fetch_timeout);
    if let Some(name) = &name {
        client = client.resolve(name, first);
    }
    let client = client.build().map_err(|e| MediaError::Unavailable(format!("HTTP client: {e}")))?;
    let http_err = |e: reqwest::Error| {
        if e.is_timeout() { timed_out() } else { MediaError::Unavailable(format!("cannot fetch {source}: {e}")) }
    };
    let work = async {
        let mut resp = client.get(url.clone()).send().await.map_err(http_err)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(refused(format!(
                "{source} answered HTTP {} (a redirect): redirects are not followed",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(MediaError::Unavailable(format!("fetching {source} answered HTTP {}", status.as_u16())));
        }
        let max = policy.max_fetch_bytes;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large(source, max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large(source, max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout_at(deadline, work).await.map_err(|_| timed_out())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(dir: &Path) -> Media {
        Media {
            dir: dir.to_path_buf(),
            max_fetch_bytes: 1024,
            fetch_timeout: Duration::from_secs(2),
            allow_private_urls: false,
        }
    }

    #[test]
    fn addresses() {
        let no = |s: &str| assert!(!address_allowed(s.parse().unwrap(), false), "{s} refused");
        let yes = |s: &str| assert!(address_allowed(s.parse().unwrap(), false), "{s} allowed");
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            no(s);
        }
        for s in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "203.0.113.7", "2001:4860::8888", "::ffff:8.8.8.8"] {
            yes(s);
        }
        assert!(address_allowed("127.0.0.1".parse().unwrap(), true), "allowed when configured");
        assert!(address_allowed("fd00::1".parse().unwrap(), true));
        assert!(!address_allowed("0.0.0.0".parse().unwrap(), true), "never the unspecified address");
        assert!(!address_allowed("ff02::1".parse().unwrap(), true), "never multicast");
    }

    #[test]
    fn files_stay_inside_the_media_dir() {
        let root = tempfile::tempdir().unwrap();
        let media = root.path().join("media");
        std::fs::create_dir(&media).unwrap();
        std::fs::write(media.join("ok.wav"), b"RIFF").unwrap();
        std::fs::write(root.path().join("secret.key"), b"key").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret.key"), media.join("link.wav")).unwrap();
        std::fs::write(media.join("big.wav"), vec![0u8; 2000]).unwrap();
        nix::unistd::mkfifo(&media.join("fifo.wav"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir(media.join("sub")).unwrap();
        let p = policy(&media);
        let read = |s: &str| read_file(&p.dir, Path::new(s), p.max_fetch_bytes);

        assert_eq!(read("ok.wav").unwrap(), b"RIFF", "relative to the dir");
        assert_eq!(read(media.join("ok.wav").to_str().unwrap()).unwrap(), b"RIFF", "absolute inside");
        let refused = |s: &str, why: &str| match read(s) {
            Err(MediaError::Refused(e)) => assert!(e.contains(why), "{s}: {e}"),
            other => panic!("{s}: {other:?}"),
        };
        refused("../secret.key", "..");
        refused(root.path().join("secret.key").to_str().unwrap(), "not a file in [media] dir");
        refused("link.wav", "not a file in [media] dir");
        refused("/etc/passwd", "not a file in [media] dir");
        refused("/dev/zero", "not a file in [media] dir");
        refused("/nonexistent/x.wav", "not a file in [media] dir");
        refused("fifo.wav", "not a regular file");
        refused("sub", "not a regular file");
        refused("big.wav", "larger than");
        assert!(matches!(read("missing.wav"), Err(MediaError::Unavailable(_))));
        // /dev/zero with the dir at / : a device, never read.
        let all = policy(Path::new("/"));
        assert!(matches!(
            read_file(&all.dir, Path::new("/dev/zero"), all.max_fetch_bytes),
            Err(MediaError::Refused(e)) if e.contains("not a regular file")
        ));
    }

    #[tokio::test]
    async fn urls_are_checked_before_any_connection() {
        let p = policy(Path::new("/nonexistent"));
        for (url, why) in [
            ("http://127.0.0.1:9/x.wav", "127.0.0.1"),
            ("http://[::1]:9/x.wav", "::1"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
            ("http://localhost:9/x.wav", "non-public"),
            ("http://user:pw@example.com/x.wav", "user:password"),
        ] {
            match read(url, &p).await {
                Err(MediaError::Refused(e)) => assert!(e.contains(why), "{url}: {e}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        match read("ftp://example.com/x.wav", &p).await {
            Err(MediaError::Refused(e)) => assert!(e.contains("ftp://"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
