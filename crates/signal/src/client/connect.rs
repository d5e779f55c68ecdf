//! Opening one signaling connection, step by step (name → address → TCP → TLS → WebSocket
//! upgrade), so that a failure says which step failed and whether trying again can help.
//!
//! Retrying cannot fix a name that does not resolve, an HTTP answer that is not an upgrade
//! (404: wrong path), TLS spoken to a plain server, or a certificate the client does not
//! trust; a refused or unanswered connection may be a server that is restarting.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why an attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// May work later (refused, timed out, reset, a 5xx from a proxy).
    Retry(String),
    /// Will fail the same way every time: the message says what to change.
    Fatal(String),
}

/// What every attempt needs, prepared once.
pub(crate) struct Target {
    url: String,
    request: Request,
    host: String,
    port: u16,
    connector: Connector,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Target {
    /// Checks the URL and, for `wss://`, loads the trusted certificates.
    pub(crate) fn new(url: &str) -> Result<Target, String> {
        let tls = if url.starts_with("wss://") {
            true
        } else if url.starts_with("ws://") {
            false
        } else {
            return Err(format!("{url}: the signaling URL must start with ws:// or wss://"));
        };
        let request = url.into_client_request().map_err(|e| format!("{url}: not a usable URL: {e}"))?;
        let uri = request.uri();
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(format!("{url}: the URL has no host"));
        };
        // `[::1]` in a URL is the address ::1.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let connector = if tls { Connector::Rustls(Arc::new(tls_config()?)) } else { Connector::Plain };
        Ok(Target { url: url.to_owned(), request, host, port, connector })
    }

    /// One attempt, all of it within `timeout`.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Ws, Failure> {
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => {
                Err(Failure::Retry(format!("cannot connect to {}: no answer in {timeout:?}", self.url)))
            }
        }
    }

    async fn attempt(&self) -> Result<Ws, Failure> {
        let url = &self.url;
        let host = self.host.as_str();
        // RFC 6761 §6.4: names under .invalid never resolve; no need to ask a resolver.
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        if lower == "invalid" || lower.ends_with(".invalid") {
            return Err(Failure::Fatal(format!(
                "cannot find the signaling server {host}: no such host (names under .invalid never resolve)"
            )));
        }
        let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, self.port)).await {
            Ok(addrs) => addrs.collect(),
            // A resolver that is unreachable right now (EAI_AGAIN) may answer later.
            Err(e) if e.to_string().to_ascii_lowercase().contains("temporary") => {
                return Err(Failure::Retry(format!("cannot resolve {host}: {e}")))
            }
            Err(e) => {
                return Err(Failure::Fatal(format!(
                    "cannot find the signaling server {host}: no such host ({e})"
                )))
            }
        };
        if addrs.is_empty() {
            return Err(Failure::Fatal(format!(
                "cannot find the signaling server {host}: it has no address"
            )));
        }
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let Some(tcp) = tcp else {
            let (addr, e) = last.expect("at least one address was tried");
            return Err(Failure::Retry(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("cannot connect to {url}: connection refused by {addr} (is the server running?)")
                }
                _ => format!("cannot connect to {url} ({addr}): {e}"),
            }));
        };
        // Signaling is small messages each way: no Nagle delays.
        let _ = tcp.set_nodelay(true);
        let handshake = tokio_tungstenite::client_async_tls_with_config(
            self.request.clone(),
            tcp,
            None,
            Some(self.connector.clone()),
        );
        match handshake.await {
            Ok((ws, _)) => Ok(ws),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn classify(&self, e: WsError) -> Failure {
        let url = &self.url;
        match e {
            WsError::Http(response) => {
                let status = response.status();
                let code = status.as_u16();
                let what = format!("{} {}", code, status.canonical_reason().unwrap_or(""));
                match code {
                    404 => Failure::Fatal(format!(
                        "no signaling endpoint at {url}: the server answered {}; the path is usually /ws",
                        what.trim_end()
                    )),
                    // A proxy whose backend is restarting, or asking to slow down.
                    408 | 429 | 500..=599 => {
                        Failure::Retry(format!("cannot connect to {url}: the server answered {}", what.trim_end()))
                    }
                    _ => Failure::Fatal(format!(
                        "no signaling endpoint at {url}: the server answered {} instead of a WebSocket upgrade",
                        what.trim_end()
                    )),
                }
            }
            WsError::Io(io) => {
                if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                    return self.classify_tls(tls);
                }
                // A TLS handshake that the server ends without a word: a plain HTTP server
                // reading our ClientHello as a bad request.
                if matches!(self.connector, Connector::Rustls(_))
                    && matches!(
                        io.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    )
                {
                    return Failure::Fatal(format!(
                        "cannot connect to {url}: the server ended the TLS handshake ({io}); \
                         is it a plain ws:// server?"
                    ));
                }
                Failure::Retry(format!("cannot connect to {url}: {io}"))
            }
            WsError::Tls(tls) => Failure::Fatal(format!("cannot connect to {url}: {tls}")),
            // What came back was not HTTP: most likely a TLS server answering plain text.
            WsError::HttpFormat(_) | WsError::Protocol(_) if matches!(self.connector, Connector::Plain) => {
                Failure::Fatal(format!(
                    "cannot connect to {url}: the server did not answer in HTTP ({e}); \
                     if it serves TLS, use wss://"
                ))
            }
            WsError::Url(_) => Failure::Fatal(format!("{url}: {e}")),
            e => Failure::Retry(format!("cannot connect to {url}: {e}")),
        }
    }

    fn classify_tls(&self, tls: &rustls::Error) -> Failure {
        let url = &self.url;
        match tls {
            rustls::Error::InvalidCertificate(cert) => {
                Failure::Fatal(certificate_message(url, &self.host, cert))
            }
            // Bytes that are no TLS record: the server speaks plain HTTP.
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Failure::Fatal(format!(
                    "cannot connect to {url}: the server does not speak TLS ({tls}); \
                     for a plain server use ws:// instead of wss://"
                ))
            }
            other => Failure::Fatal(format!("cannot connect to {url}: TLS handshake failed: {other}")),
        }
    }
}

/// What to tell the user about a certificate the client refused.
fn certificate_message(url: &str, host: &str, error: &CertificateError) -> String {
    let what = match error {
        CertificateError::UnknownIssuer => "issued by a CA that is not trusted".to_owned(),
        CertificateError::BadSignature => "its signature does not check".to_owned(),
        CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            "it is a self-signed certificate marked as a CA".to_owned()
        }
        other => format!("{other:?}"),
    };
    match error {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
            "cannot connect to {url}: the server's certificate is not valid for {host} ({error}); \
             use a name the certificate was issued for"
        ),
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            format!(
                "cannot connect to {url}: the server's certificate is out of its validity period ({error})"
            )
        }
        _ => match std::env::var_os("SSL_CERT_FILE") {
            Some(file) => format!(
                "cannot connect to {url}: the server's certificate is not trusted ({what}): \
                 SSL_CERT_FILE={} does not vouch for it; put the certificate of the CA that \
                 signed it, or the server's own self-signed certificate, in that file",
                file.to_string_lossy()
            ),
            None => format!(
                "cannot connect to {url}: the server's certificate is not trusted ({what}) (to trust a \
                 private CA instead of the system's roots, set SSL_CERT_FILE=ca.pem; for a \
                 self-signed certificate, SSL_CERT_FILE=that-certificate.pem)"
            ),
        },
    }
}

/// rustls with the system's roots, or those of `SSL_CERT_FILE` / `SSL_CERT_DIR` when set;
/// a self-signed certificate given in `SSL_CERT_FILE` is trusted as the server's own.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs.iter().cloned());
    if added == 0 {
        if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
            return Err(format!(
                "SSL_CERT_FILE={} holds no certificate to trust: put the certificate of the CA that \
                 signed the server's, or the server's own self-signed certificate, in that file",
                file.to_string_lossy()
            ));
        }
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no trusted root certificates found ({}); install the system's CA certificates or set \
             SSL_CERT_FILE=ca.pem",
            if errors.is_empty() { "none installed".to_owned() } else { errors.join("; ") }
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot use the trusted certificates: {e}"))?;
    // Only certificates the user named explicitly count as pinned.
    let pinned = if std::env::var_os("SSL_CERT_FILE").is_some() { loaded.certs } else { Vec::new() };
    let verifier = Arc::new(Verifier { webpki, pinned });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// The WebPKI verifier, plus one case it refuses: a self-signed certificate that is marked
/// as a CA (as `openssl req -x509` makes them) presented as the server's own. WebPKI calls
/// that `CaUsedAsEndEntity` even when the very certificate is a trust anchor; when the user
/// trusts exactly that certificate (byte for byte, in `SSL_CERT_FILE`), it is the server's.
/// Its validity period was checked before that error (WebPKI's order); its names are
/// checked here. Everything else is the WebPKI verifier's answer.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if other.to_string().contains("CaUsedAsEndEntity")
                    && self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
