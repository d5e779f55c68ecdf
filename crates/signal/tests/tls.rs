//! wss:// and the certificates the client trusts through SSL_CERT_FILE, against a small TLS
//! WebSocket server on loopback (rustls over std sockets, one thread per connection) that
//! answers a `join` with a `welcome`. One test function: SSL_CERT_FILE is process-wide.

use peerlink_signal::{ClientEvent, SignalClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

const WAIT: Duration = Duration::from_secs(10);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A wss:// signaling stand-in with the self-signed certificate of tests/data (made by
/// `openssl req -x509`, so it is marked as a CA, for localhost and 127.0.0.1).
fn tls_server() -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data("self-signed.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(data("self-signed.key")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
                // A client that refuses the certificate ends here.
                let Ok(mut ws) = tungstenite::accept(tls) else { return };
                while let Ok(message) = ws.read() {
                    if message.to_text().is_ok_and(|t| t.contains(r#""type":"join""#)) {
                        let welcome = r#"{"type":"welcome","id":"0123456789abcdef","room":"r","peers":[],"iceServers":[]}"#;
                        let _ = ws.send(tungstenite::Message::text(welcome));
                    }
                }
            });
        }
    });
    addr
}

async fn first_event(url: &str) -> ClientEvent {
    let mut client = SignalClient::connect(url, "r", "x", None);
    tokio::time::timeout(WAIT, client.next_event()).await.expect("an event in time").expect("an event")
}

#[tokio::test]
async fn trusted_and_untrusted_certificates_through_ssl_cert_file() {
    let addr = tls_server();
    let url = format!("wss://localhost:{}/ws", addr.port());

    // The server's own self-signed certificate in SSL_CERT_FILE: trusted, although WebPKI
    // alone refuses a CA certificate as a server's (CaUsedAsEndEntity).
    std::env::set_var("SSL_CERT_FILE", data("self-signed.pem"));
    match first_event(&url).await {
        ClientEvent::Joined { id, .. } => assert_eq!(id, "0123456789abcdef"),
        other => panic!("the self-signed certificate in SSL_CERT_FILE was not accepted: {other:?}"),
    }
    // By address too (the certificate names 127.0.0.1).
    assert!(matches!(first_event(&format!("wss://{addr}/ws")).await, ClientEvent::Joined { .. }));

    // Trusted, but not for that name (the same address, IPv4-mapped): refused, saying so.
    match first_event(&format!("wss://[::ffff:127.0.0.1]:{}/ws", addr.port())).await {
        ClientEvent::Closed { reason } => {
            println!("reason: {reason}");
            assert!(reason.contains("not valid for ::ffff:127.0.0.1"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // Another certificate in SSL_CERT_FILE: refused at once, naming the file that does not
    // vouch for the server.
    let other = data("other.pem");
    std::env::set_var("SSL_CERT_FILE", &other);
    match first_event(&url).await {
        ClientEvent::Closed { reason } => {
            println!("reason: {reason}");
            assert!(
                reason.contains(&format!("SSL_CERT_FILE={} does not vouch", other.display())),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }

    // No SSL_CERT_FILE: the system's roots do not know it; the hint says what to set.
    std::env::remove_var("SSL_CERT_FILE");
    match first_event(&url).await {
        ClientEvent::Closed { reason } => {
            println!("reason: {reason}");
            assert!(reason.contains("not trusted") && reason.contains("set SSL_CERT_FILE="), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // ws:// to this TLS server: refused at once, suggesting wss://.
    match first_event(&format!("ws://localhost:{}/ws", addr.port())).await {
        ClientEvent::Closed { reason } => {
            println!("reason: {reason}");
            assert!(reason.contains("wss://"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
