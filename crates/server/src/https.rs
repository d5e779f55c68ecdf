//! HTTPS for `peerlink serve`: browsers grant camera and microphone only to secure pages
//! (https, or localhost), so a server reached from other machines needs TLS. An axum
//! [`Listener`](axum::serve::Listener) that accepts TCP, runs each TLS handshake in its own
//! task (a slow or silent client holds up nobody) and hands over finished streams; the
//! certificate can be swapped while running (SIGHUP).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this, new connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 1024;

/// The certificate in use; [`TlsConfig::replace`] swaps it for new connections.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    /// ALPN protocols announced: HTTP/1.1, and `acme-tls/1` when TLS-ALPN-01 is answered.
    alpn: Vec<Vec<u8>>,
}

impl TlsConfig {
    /// `config` as loaded by [`crate::tls::load`]; HTTP/1.1 is announced by ALPN.
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig::with_alpn(config, vec![b"http/1.1".to_vec()])
    }

    /// `config` from [`crate::acme::Acme::server_config`]: `acme-tls/1` is announced too, so
    /// that the CA's TLS-ALPN-01 validation gets its answer here.
    pub fn with_acme(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig::with_alpn(config, vec![b"http/1.1".to_vec(), crate::acme::ACME_TLS_ALPN.to_vec()])
    }

    fn with_alpn(config: Arc<rustls::ServerConfig>, alpn: Vec<Vec<u8>>) -> TlsConfig {
        let tls = TlsConfig { current: Arc::new(RwLock::new(config.clone())), alpn };
        tls.replace(config);
        tls
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        let mut config = (*config).clone();
        config.alpn_protocols = self.alpn.clone();
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(config);
        }
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// TLS connections, ready for axum.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on the current runtime).
    pub fn new(tcp: TcpListener, config: TlsConfig) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, config, tx));
        Ok(TlsListener { local, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: TlsConfig,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "https accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
        let out = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                // A TLS-ALPN-01 validation is over once the handshake showed the certificate.
                Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) => {
                    tracing::info!(%addr, "acme: tls-alpn-01 validation handshake answered");
                }
                Ok(Ok(tls)) => {
                    drop(permit);
                    let _ = out.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%addr, "tls handshake timed out"),
            }
        });
        if ready.is_closed() {
            return;
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
