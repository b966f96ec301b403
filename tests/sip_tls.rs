//! SIP over TLS (RFC 3261 §26.3.1, port 5061): the daemon's TLS listener with a
//! certificate from the config (rustls, ring provider) answers a trunk's OPTIONS
//! over a TLS connection that verified the certificate.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn options_over_tls_with_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=sipbridge.test"])
        .args([
            "-addext",
            "subjectAltName=DNS:sipbridge.test,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .args([
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl) makes the test certificate");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let port = free_port();
    let text = format!(
        "[node]\ndata_dir = \"{data}\"\nshutdown_grace = \"1s\"\n[sip]\nlisten = [\"tls://127.0.0.1:{port}\"]\ntls_certificate = \"{cert}\"\ntls_private_key = \"{key}\"\n[rtp]\nport_range = \"40000-49999\"\n[[trunk]]\nname = \"tls\"\ninbound_allow = [\"127.0.0.0/8\"]\n[log]\nformat = \"text\"\n",
        data = dir.path().join("data").display(),
        cert = cert.display(),
        key = key.display()
    );
    let path = dir.path().join("sipbridge.toml");
    std::fs::write(&path, text).unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut d = Daemon::start(&path, Some(&notify.path), None, &[]);
    notify.wait_for("READY=1", WAIT).unwrap_or_else(|| panic!("{}", d.stderr()));

    // A client that trusts only the test certificate and checks the name.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    for c in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = rustls_pki_types::ServerName::try_from("sipbridge.test").unwrap();
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().expect("TLS handshake");
    let options = format!(
        "OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls1\r\nFrom: <sips:probe@127.0.0.1>;tag=t1\r\nTo: <sips:127.0.0.1>\r\nCall-ID: tls-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(options.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.unwrap().unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 200 OK"), "{resp}");
    assert!(resp.contains("Allow: INVITE"), "{resp}");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
