//! The STUN server: Binding over UDP and TCP on one port.

use crate::shutdown::Shutdown;
use anyhow::Context;
use peerlink_stun::binding::{self, Outcome};
use peerlink_stun::framing::{next_frame, Frame};
use peerlink_udp::{RecvBatch, SendBatch, UdpSocket, MAX_BATCH};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Larger datagrams are truncated, and a truncated STUN message fails its length check.
const DATAGRAM: usize = 2048;
/// How often a blocked receive wakes to look at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of one STUN listener.
#[derive(Debug, Clone)]
pub struct StunConfig {
    /// UDP and TCP on this address; port 0 picks a free port (the same for both).
    pub listen: SocketAddr,
    /// UDP receive threads, each with its own `SO_REUSEPORT` socket. Default: one per core.
    pub udp_workers: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Connections beyond this many are closed as soon as they are accepted.
    pub max_tcp_connections: usize,
}

impl StunConfig {
    pub fn new(listen: SocketAddr) -> StunConfig {
        StunConfig {
            listen,
            udp_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tcp_idle_timeout: Duration::from_secs(60),
            max_tcp_connections: 4096,
        }
    }
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct StunStats {
    /// Success responses sent.
    pub answered: AtomicU64,
    /// Error responses sent (400, 420).
    pub rejected: AtomicU64,
    /// Packets dropped silently: junk, indications, responses, other methods.
    pub ignored: AtomicU64,
    pub send_errors: AtomicU64,
    pub tcp_accepted: AtomicU64,
    /// TCP connections refused because `max_tcp_connections` were open.
    pub tcp_refused: AtomicU64,
}

impl StunStats {
    fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Answered => &self.answered,
            Outcome::Rejected(_) => &self.rejected,
            Outcome::Ignored(_) => &self.ignored,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds another server's counters into these.
    pub fn add(&self, other: &StunStats) {
        let pairs = [
            (&self.answered, &other.answered),
            (&self.rejected, &other.rejected),
            (&self.ignored, &other.ignored),
            (&self.send_errors, &other.send_errors),
            (&self.tcp_accepted, &other.tcp_accepted),
            (&self.tcp_refused, &other.tcp_refused),
        ];
        for (mine, theirs) in pairs {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl std::fmt::Display for StunStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "answered={} rejected={} ignored={} send_errors={} tcp_accepted={} tcp_refused={}",
            Self::load(&self.answered),
            Self::load(&self.rejected),
            Self::load(&self.ignored),
            Self::load(&self.send_errors),
            Self::load(&self.tcp_accepted),
            Self::load(&self.tcp_refused),
        )
    }
}

/// A running STUN server. Dropping it does not stop it; call [`StunServer::stop`].
#[derive(Debug)]
pub struct StunServer {
    local_addr: SocketAddr,
    stats: Arc<StunStats>,
    shutdown: Shutdown,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    tcp_task: tokio::task::JoinHandle<()>,
}

impl StunServer {
    /// Binds UDP and TCP and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: StunConfig) -> anyhow::Result<StunServer> {
        let (sockets, listener) = bind_both(config.listen, config.udp_workers)
            .with_context(|| format!("cannot listen on {} (udp and tcp)", config.listen))?;
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(StunStats::default());
        let shutdown = Shutdown::new();

        let mut udp_threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            let stats = stats.clone();
            let shutdown = shutdown.clone();
            let mut socket = UdpSocket::new(socket);
            // On a wildcard address, answers leave from the address each request came to:
            // a client on a multi-homed host hears only the address it asked.
            if config.listen.ip().is_unspecified() {
                socket.enable_pktinfo().context("cannot enable packet info")?;
            }
            let thread = std::thread::Builder::new()
                .name(format!("stun-udp-{i}"))
                .spawn(move || serve_udp(&socket, &stats, &shutdown))
                .context("cannot start udp thread")?;
            udp_threads.push(thread);
        }

        let tcp_task = tokio::spawn(accept_loop(listener, config, stats.clone(), shutdown.clone()));
        tracing::info!(udp = %local_addr, tcp = %local_addr, workers = udp_threads.len(), "stun server listening");
        Ok(StunServer { local_addr, stats, shutdown, udp_threads, tcp_task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &Arc<StunStats> {
        &self.stats
    }

    /// Stops accepting, closes connections and joins the UDP threads.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.tcp_task.await;
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
        tracing::info!(stats = %self.stats, "stun server stopped");
    }
}

/// UDP sockets and a TCP listener on the same port. With port 0 the UDP port is chosen
/// first; if TCP cannot have it, try again with another.
fn bind_both(listen: SocketAddr, workers: usize) -> std::io::Result<(Vec<socket2::Socket>, TcpListener)> {
    let attempts = if listen.port() == 0 { 8 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let sockets = peerlink_udp::bind_reuseport(listen, workers)?;
        for socket in &sockets {
            socket.set_read_timeout(Some(POLL_INTERVAL))?;
        }
        let port = sockets[0].local_addr()?.as_socket().map_or(listen.port(), |a| a.port());
        match bind_tcp(SocketAddr::new(listen.ip(), port)) {
            Ok(listener) => return Ok((sockets, listener)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no port")))
}

/// Answers Binding requests in batches until shutdown: one `recvmmsg` (blocking for the
/// first datagram), the answers written into reused buffers, one `sendmmsg`. Allocates only
/// when it starts.
fn serve_udp(socket: &UdpSocket<socket2::Socket>, stats: &StunStats, shutdown: &Shutdown) {
    let mut received = RecvBatch::new(MAX_BATCH, DATAGRAM);
    let mut replies = SendBatch::with_capacity(MAX_BATCH, MAX_BATCH * 256);
    let mut out = Vec::with_capacity(256);
    while !shutdown.is_triggered() {
        match socket.recv(&mut received) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        for d in received.iter() {
            // A datagram cut to fit the buffer is handed on as empty, so it is ignored.
            let packet = if d.truncated { &d.data[..0] } else { d.data };
            out.clear();
            let outcome = binding::respond(packet, d.source, &mut out);
            stats.count(outcome);
            tracing::trace!(source = %binding::canonical(d.source), ?outcome, "udp");
            if !matches!(outcome, Outcome::Ignored(_)) {
                // Without packet info (a specific address) the destination is `None`.
                replies.push_from(d.source, d.destination, &out);
            }
        }
        if let Err(e) = socket.send(&mut replies) {
            // A blocking socket does not say WouldBlock; whatever this is, the answers go.
            tracing::debug!(error = %e, "udp send failed");
            stats.send_errors.fetch_add(replies.discard() as u64, Ordering::Relaxed);
        }
        let dropped = replies.take_dropped();
        if dropped > 0 {
            stats.send_errors.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(crate::sockets::tcp_listener(addr)?)
}

async fn accept_loop(listener: TcpListener, config: StunConfig, stats: Arc<StunStats>, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(config.max_tcp_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "tcp connection refused: too many open");
            continue;
        };
        stats.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        let idle = config.tcp_idle_timeout;
        tokio::spawn(async move {
            tokio::select! {
                result = serve_tcp(stream, peer, idle, &stats) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "tcp connection ended");
                    }
                }
                () = shutdown.wait() => {}
            }
            drop(permit);
        });
    }
}

/// RFC 8489 §6.2.2: messages back to back on the stream, delimited by their length field.
///
/// `idle` bounds the time since the last whole message (so a slow drip of bytes does not
/// hold a connection slot) and every write (so a client that never reads does not either).
async fn serve_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    stats: &StunStats,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "idle");
    let mut deadline = tokio::time::Instant::now() + idle;
    let _ = stream.set_nodelay(true);
    let peer = binding::canonical(peer);
    let mut input = Vec::with_capacity(2048);
    let mut output = Vec::with_capacity(512);
    let mut response = Vec::with_capacity(128);
    loop {
        let mut consumed = 0;
        loop {
            match next_frame(&input[consumed..]) {
                Frame::Complete(len) => {
                    let outcome = binding::respond(&input[consumed..consumed + len], peer, &mut response);
                    stats.count(outcome);
                    output.extend_from_slice(&response);
                    consumed += len;
                    deadline = tokio::time::Instant::now() + idle;
                }
                Frame::Incomplete(_) => break,
                Frame::Invalid => {
                    stats.ignored.fetch_add(1, Ordering::Relaxed);
                    tokio::time::timeout(idle, stream.write_all(&output))
                        .await
                        .map_err(|_| timed_out())??;
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not stun"));
                }
            }
        }
        input.drain(..consumed);
        if !output.is_empty() {
            tokio::time::timeout(idle, stream.write_all(&output)).await.map_err(|_| timed_out())??;
            output.clear();
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut input)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        }
    }
}
