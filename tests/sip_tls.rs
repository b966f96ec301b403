//! SIP over TLS (RFC 3261 §26.3.1, port 5061): the daemon's TLS listener with a
//! certificate from the config (rustls, ring provider) answers a trunk's OPTIONS
//! over a TLS connection that verified the certificate.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::gateway::{Gateway, Route, Trunk};
use common::*;
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
    let gw = Gateway::builder(dir.path())
        .sip_listen(&[&format!("tls://127.0.0.1:{port}")], port)
        .sip_extra(&format!("tls_certificate = \"{}\"\ntls_private_key = \"{}\"", cert.display(), key.display()))
        .trunk(Trunk::new("tls").allow("127.0.0.0/8"))
        .start();

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
    gw.stop();
}

fn make_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=carrier.test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=digitalSignature,keyEncipherment", "-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(ok.status.success());
    (cert, key)
}

/// A box forwards over TLS to a "carrier" (a second sipbridge with a TLS listener
/// and the echo agent): the call goes through when the carrier's certificate
/// verifies against tls_ca_file, and fails when it does not.
#[test]
fn forward_over_tls_verifies_the_carrier_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let carrier_dir = dir.path().join("carrier");
    let box_dir = dir.path().join("box");
    std::fs::create_dir_all(&carrier_dir).unwrap();
    std::fs::create_dir_all(&box_dir).unwrap();
    let (cert, key) = make_cert(dir.path(), "carrier");
    let (other_ca, _) = make_cert(dir.path(), "other");
    let tls_port = free_port();
    let carrier = Gateway::builder(&carrier_dir)
        .sip_listen(&[&format!("tls://127.0.0.1:{tls_port}")], tls_port)
        .sip_extra(&format!("tls_certificate = \"{}\"\ntls_private_key = \"{}\"", cert.display(), key.display()))
        .trunk(Trunk::new("customer").allow("127.0.0.0/8"))
        .agent("echo", "builtin:echo", "")
        .route(Route::new().agent("echo"))
        .start();
    for (ca, expect_ok) in [(&cert, true), (&other_ca, false)] {
        let box_dir = box_dir.join(if expect_ok { "trusting" } else { "distrusting" });
        std::fs::create_dir_all(&box_dir).unwrap();
        let bx = Gateway::builder(&box_dir)
            .sip_extra(&format!("tls_ca_file = \"{}\"", ca.display()))
            .trunk(Trunk::new("pbx").allow("127.0.0.2/32"))
            .trunk(Trunk::new("carrier").proxy(&format!("sip:127.0.0.1:{tls_port};transport=tls")))
            .route(Route::new().trunk("pbx").extra("forward = \"carrier\""))
            .start();
        let target = format!("127.0.0.1:{}", bx.sip_port);
        let mut s = Sipp::start(
            &box_dir,
            if expect_ok { "ok" } else { "bad" },
            &sipp_args("uac_call.xml", "+13125550100", &target, "127.0.0.2", &["-t", "u1", "-timeout", "15s"]),
        );
        let code = s.wait(WAIT);
        if expect_ok {
            assert_eq!(code, 0, "{}\n--- box ---\n{}\n--- carrier ---\n{}", s.report(), bx.stderr(), carrier.stderr());
        } else {
            assert_ne!(code, 0, "an unverified carrier must not get the call\n{}", s.report());
            assert!(!s.messages().contains("SIP/2.0 200 OK"), "{}", s.report());
        }
        bx.stop();
    }
    carrier.stop();
}
