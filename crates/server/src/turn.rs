//! The TURN server's I/O: N event loop threads (mio), the shards, each owning a sans-IO core,
//! its own `SO_REUSEPORT` UDP socket on the listening address (the kernel's 4-tuple hash keeps
//! a client on one shard) and the relay sockets of its allocations. Each shard also has its own
//! `SO_REUSEPORT` TCP and TLS listeners (see `stream`), and the RFC 6062 TCP relays and data
//! connections of the allocations made on it (see `pipe`). A ConnectionBind that arrives on a
//! connection accepted by another shard is handed, with its connection, to the shard whose
//! CONNECTION-ID it names (a channel and a waker, used once per data connection, never on the
//! packet path). Shards share the allocation
//! quotas and the EVEN-PORT reservations (a ledger touched only when allocations and
//! reservations come and go: a reserved socket leaves its shard's loop and joins the loop of
//! the shard its token is redeemed on); nonces are stateless; stats are summed when read. No
//! locks on the packet path.

mod pipe;
mod stream;

use crate::shutdown::Shutdown;
use anyhow::Context;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use peerlink_stun::AddressFamily;
use peerlink_turn::{
    ClientAction, ConnectionId, FiveTuple, PeerAction, PortRequest, QuotaError, Relay, RelayError, RelayId,
    RelayProvider, ServerConfig, SharedRate, Transport, TurnServer, TurnStats,
};
use peerlink_udp::{RecvBatch, SendBatch, MAX_BATCH};
use pipe::{PeerConn, Pipe};
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A UDP socket of the event loop, with batched receive and send.
type Udp = peerlink_udp::UdpSocket<UdpSocket>;

const UDP_LISTEN: Token = Token(0);
const TCP_LISTEN: Token = Token(1);
const TLS_LISTEN: Token = Token(2);
/// Another shard handed this one connections (see [`Mailbox`]).
const WAKE: Token = Token(3);
const FIRST_ENTRY: usize = 4;
/// Largest datagram accepted from clients and peers.
const DATAGRAM: usize = 65_536;
/// A TCP client whose unsent output exceeds this loses relayed data instead of growing it.
const MAX_TCP_BACKLOG: usize = 1 << 20;
/// How often the loop wakes to look at the shutdown flag and publish stats.
const TICK: Duration = Duration::from_millis(200);
/// How soon a TCP pipe held back by the bandwidth limit is read again.
const THROTTLE_RETRY: Duration = Duration::from_millis(10);
/// A TCP/TLS connection must finish its handshake and send a whole message this soon.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without an allocation is closed after this much silence.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// With an allocation, silence longer than the longest lifetime means the client is gone.
const ALLOCATED_IDLE_TIMEOUT: Duration = Duration::from_secs(3660);
/// Batches taken from one socket per turn of the loop, so a flooded relay cannot starve
/// the others; a socket with more waiting is served again on the next turn.
const MAX_BATCHES_PER_TURN: usize = 8;
/// TCP/TLS connections one client IP may hold open.
const MAX_TCP_PER_IP: usize = 64;
/// Bytes read from a stream before its frames are handled.
const READ_CHUNK: usize = 16 * 1024;

/// Settings of the TURN listener and its relays.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Clients reach the server here, UDP and TCP.
    pub listen: SocketAddr,
    /// Relay addresses: at most one IPv4 and one IPv6.
    pub relay_ips: Vec<IpAddr>,
    pub relay_ports: RangeInclusive<u16>,
    /// 1:1 NAT (`--external-ip`): a relay opened on the first address of a pair is announced
    /// to its client (XOR-RELAYED-ADDRESS) on the second, with the same port.
    pub advertised: Vec<(IpAddr, IpAddr)>,
    pub max_tcp_connections: usize,
    pub core: ServerConfig,
    /// TURN over TLS (RFC 8656 §3.1) on this address, with this certificate.
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Event loop threads (shards), at least one.
    pub threads: usize,
}

impl TurnConfig {
    /// UDP and TCP on a free loopback port, relays on 127.0.0.1, no TLS: for tests.
    pub fn loopback(core: ServerConfig, threads: usize) -> TurnConfig {
        TurnConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_ips: vec![IpAddr::from([127, 0, 0, 1])],
            relay_ports: 49152..=65535,
            advertised: Vec::new(),
            max_tcp_connections: 64,
            core,
            tls: None,
            threads,
        }
    }
}

/// One event loop thread per core (the default of `--relay-threads`).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The shards' counters, summed when read.
#[derive(Debug, Clone, Default)]
pub struct SharedStats(Vec<Arc<Mutex<TurnStats>>>);

impl SharedStats {
    /// The sum over every shard (each refreshed a few times a second).
    pub fn snapshot(&self) -> TurnStats {
        let mut sum = TurnStats::default();
        for shard in &self.0 {
            if let Ok(stats) = shard.lock() {
                sum.add(&stats);
            }
        }
        sum
    }

    /// Each shard's own counters.
    pub fn per_shard(&self) -> Vec<TurnStats> {
        self.0.iter().map(|s| s.lock().map(|s| s.clone()).unwrap_or_default()).collect()
    }
}

/// Allocations per user and in total over every shard. Touched when an allocation is made or
/// goes, never for a relayed packet.
#[derive(Debug)]
struct Ledger {
    per_user: Mutex<HashMap<String, usize>>,
    /// Users' bandwidth (`--max-bandwidth-per-user`), one bucket per user for every shard;
    /// the allocations hold it, so the entry is dropped once none does.
    user_rates: Mutex<HashMap<String, Weak<SharedRate>>>,
    total: AtomicUsize,
    max_per_user: usize,
    max_total: usize,
    /// RFC 8656 §7.2: EVEN-PORT reservations, redeemable on any shard (the redeeming
    /// Allocate comes from another 4-tuple, which the kernel may hand to another shard).
    /// Locked only when a reservation is made, redeemed or swept.
    reservations: Mutex<HashMap<[u8; 8], Reserved>>,
    /// How many are held, so that shards skip the lock when there are none.
    reserved: AtomicUsize,
    /// TCP and TLS client connections open on every shard, in total and per client IP.
    /// Touched when a connection is accepted or closed.
    tcp_open: AtomicUsize,
    tcp_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Addresses of open TCP relays on every shard: their sockets share ports
    /// (`SO_REUSEPORT`, so that connections to peers can leave from the relayed address),
    /// so the kernel cannot tell us a port is taken, by us or by another shard.
    tcp_relay_addrs: Mutex<HashSet<SocketAddr>>,
    /// Client connections handed from one shard to another (a ConnectionBind for a
    /// connection of another shard's allocation).
    handoffs: AtomicU64,
}

/// Where a shard receives the connections other shards hand it.
struct Mailbox {
    tx: Sender<Conn>,
    waker: mio::Waker,
}

/// A reserved relay port: its socket, out of every shard's event loop until redeemed.
#[derive(Debug)]
struct Reserved {
    socket: UdpSocket,
    /// The address announced to clients (`--external-ip`).
    addr: SocketAddr,
    expires: Instant,
}

impl Ledger {
    fn admit(&self, user: &str) -> Result<(), QuotaError> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(QuotaError::Server);
        }
        let Ok(mut per_user) = self.per_user.lock() else {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(QuotaError::Server);
        };
        let held = per_user.entry(user.to_owned()).or_default();
        if *held >= self.max_per_user {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(QuotaError::User);
        }
        *held += 1;
        Ok(())
    }

    fn user_rate(&self, user: &str, bytes_per_second: u64, now: Instant) -> Option<Arc<SharedRate>> {
        let mut rates = self.user_rates.lock().ok()?;
        if let Some(rate) = rates.get(user).and_then(Weak::upgrade) {
            return Some(rate);
        }
        let rate = Arc::new(SharedRate::new(bytes_per_second, now));
        rates.insert(user.to_owned(), Arc::downgrade(&rate));
        if rates.len() > 64 && rates.len().is_power_of_two() {
            rates.retain(|_, rate| rate.strong_count() > 0);
        }
        Some(rate)
    }

    /// Holds a reserved port; it counts against the server's allocations while held.
    fn reserve(&self, token: [u8; 8], reserved: Reserved) {
        let Ok(mut reservations) = self.reservations.lock() else { return };
        self.total.fetch_add(1, Ordering::Relaxed);
        self.reserved.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = reservations.insert(token, reserved) {
            // Tokens name the reserved address: a repeat would be a bug, not a client's doing.
            tracing::warn!(addr = %old.addr, "reservation token issued twice; the older is dropped");
            self.forget(1);
        }
    }

    /// The reservation of `token` if it is held and not lapsed (a lapsed one is closed).
    fn redeem(&self, token: [u8; 8], now: Instant) -> Option<Reserved> {
        if self.reserved.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let reserved = self.reservations.lock().ok()?.remove(&token)?;
        self.forget(1);
        (reserved.expires > now).then_some(reserved)
    }

    /// Closes the reservations lapsed at `now`.
    fn sweep_reservations(&self, now: Instant) {
        if self.reserved.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(mut reservations) = self.reservations.lock() else { return };
        let before = reservations.len();
        reservations.retain(|_, reserved| reserved.expires > now);
        self.forget(before - reservations.len());
    }

    fn forget(&self, reservations: usize) {
        self.reserved.fetch_sub(reservations, Ordering::Relaxed);
        self.total.fetch_sub(reservations, Ordering::Relaxed);
    }

    /// Counts a new TCP/TLS client connection from `ip`; false when over the limits.
    fn open_tcp(&self, ip: IpAddr, max_total: usize) -> bool {
        if self.tcp_open.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.tcp_open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%ip, "tcp connection refused: too many open");
            return false;
        }
        let Ok(mut per_ip) = self.tcp_per_ip.lock() else {
            self.tcp_open.fetch_sub(1, Ordering::Relaxed);
            return false;
        };
        let held = per_ip.entry(ip).or_default();
        if *held >= MAX_TCP_PER_IP {
            self.tcp_open.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(%ip, "tcp connection refused: too many from this address");
            return false;
        }
        *held += 1;
        true
    }

    fn close_tcp(&self, ip: IpAddr) {
        self.tcp_open.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut per_ip) = self.tcp_per_ip.lock() {
            if let Some(held) = per_ip.get_mut(&ip) {
                *held -= 1;
                if *held == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    /// Takes a TCP relay address for one shard; false when some shard holds it.
    fn claim_tcp_relay(&self, addr: SocketAddr) -> bool {
        self.tcp_relay_addrs.lock().is_ok_and(|mut addrs| addrs.insert(addr))
    }

    fn release_tcp_relay(&self, addr: SocketAddr) {
        if let Ok(mut addrs) = self.tcp_relay_addrs.lock() {
            addrs.remove(&addr);
        }
    }

    fn release(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut per_user) = self.per_user.lock() {
            if let Some(held) = per_user.get_mut(user) {
                *held -= 1;
                if *held == 0 {
                    per_user.remove(user);
                }
            }
        }
    }
}

/// A running TURN server.
#[derive(Debug)]
pub struct TurnHandle {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    /// One per shard.
    reload: Mutex<Vec<Sender<Arc<rustls::ServerConfig>>>>,
    stats: SharedStats,
    ledger: Arc<Ledger>,
    shutdown: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TurnHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// New TLS connections use `config` (a renewed certificate); open connections and their
    /// allocations carry on untouched.
    pub fn reload_tls(&self, config: Arc<rustls::ServerConfig>) {
        if let Ok(senders) = self.reload.lock() {
            for tx in senders.iter() {
                let _ = tx.send(config.clone());
            }
        }
    }

    /// TCP/TLS client connections handed from one relay thread to another so far (RFC 6062
    /// ConnectionBinds that arrived on another thread than their allocation's).
    pub fn tcp_handoffs(&self) -> u64 {
        self.ledger.handoffs.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters, summed over the shards (refreshed a few times a second).
    pub fn stats(&self) -> TurnStats {
        self.stats.snapshot()
    }

    pub fn shared_stats(&self) -> SharedStats {
        self.stats.clone()
    }

    pub fn stop(self) {
        self.shutdown.trigger();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Binds and starts the event loop threads.
pub fn start(config: TurnConfig) -> anyhow::Result<TurnHandle> {
    let shards = config.threads.max(1);
    let (udps, tcps) = bind(config.listen, shards)
        .with_context(|| format!("cannot listen on {} (udp and tcp)", config.listen))?;
    let local_addr = udps[0].get_ref().local_addr()?;
    let (tls_listeners, tls_config) = match &config.tls {
        Some((addr, tls)) => {
            let listeners =
                bind_tcp(*addr, shards).with_context(|| format!("cannot listen on {addr} (tls)"))?;
            (listeners.into_iter().map(Some).collect(), Some(tls.clone()))
        }
        None => ((0..shards).map(|_| None).collect::<Vec<_>>(), None),
    };
    let tls_addr = tls_listeners.first().and_then(|l| l.as_ref()).map(|l| l.local_addr()).transpose()?;
    let shutdown = Shutdown::new();
    let ledger = Arc::new(Ledger {
        per_user: Mutex::new(HashMap::new()),
        user_rates: Mutex::new(HashMap::new()),
        total: AtomicUsize::new(0),
        max_per_user: config.core.max_allocations_per_user,
        max_total: config.core.max_allocations,
        reservations: Mutex::new(HashMap::new()),
        reserved: AtomicUsize::new(0),
        tcp_open: AtomicUsize::new(0),
        tcp_per_ip: Mutex::new(HashMap::new()),
        tcp_relay_addrs: Mutex::new(HashSet::new()),
        handoffs: AtomicU64::new(0),
    });
    let mut polls = Vec::with_capacity(shards);
    let mut mailboxes = Vec::with_capacity(shards);
    let mut inboxes = Vec::with_capacity(shards);
    for _ in 0..shards {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let (tx, rx) = std::sync::mpsc::channel();
        polls.push(poll);
        mailboxes.push(Mailbox { tx, waker });
        inboxes.push(rx);
    }
    let mailboxes = Arc::new(mailboxes);
    let mut reload_senders = Vec::with_capacity(shards);
    let mut all_stats = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    let parts = udps.into_iter().zip(tcps).zip(tls_listeners).zip(polls).zip(inboxes);
    for (index, ((((udp, tcp), tls), poll), inbox)) in parts.enumerate() {
        let stats = Arc::new(Mutex::new(TurnStats::default()));
        all_stats.push(stats.clone());
        let (reload_tx, reload_rx) = std::sync::mpsc::channel();
        reload_senders.push(reload_tx);
        let mut event_loop = shard(
            &config,
            Shard { index, poll, udp, tcp, tls, reload: reload_rx, inbox, mailboxes: mailboxes.clone() },
            (local_addr, tls_addr),
            tls_config.clone(),
            ledger.clone(),
            stats,
            shutdown.clone(),
        )?;
        threads.push(std::thread::Builder::new().name(format!("turn-{index}")).spawn(move || {
            if let Err(e) = event_loop.run() {
                tracing::error!(error = %e, "turn event loop failed");
            }
        })?);
    }
    tracing::info!(listen = %local_addr, tls = ?tls_addr, relays = ?config.relay_ips, realm = %config.core.realm,
        threads = shards, "turn server listening");
    Ok(TurnHandle {
        local_addr,
        tls_addr,
        reload: Mutex::new(reload_senders),
        stats: SharedStats(all_stats),
        ledger,
        shutdown,
        threads,
    })
}

/// What one shard listens on: its UDP, TCP and TLS sockets, the certificate reloads and the
/// connections other shards hand it.
struct Shard {
    index: usize,
    poll: Poll,
    udp: Udp,
    tcp: TcpListener,
    tls: Option<TcpListener>,
    reload: Receiver<Arc<rustls::ServerConfig>>,
    inbox: Receiver<Conn>,
    /// Every shard's, this one's included.
    mailboxes: Arc<Vec<Mailbox>>,
}

fn shard(
    config: &TurnConfig,
    listeners: Shard,
    (local_addr, tls_addr): (SocketAddr, Option<SocketAddr>),
    tls_config: Option<Arc<rustls::ServerConfig>>,
    ledger: Arc<Ledger>,
    stats: Arc<Mutex<TurnStats>>,
    shutdown: Shutdown,
) -> anyhow::Result<EventLoop> {
    let Shard { index, poll, udp, tcp, tls, reload, inbox, mailboxes } = listeners;
    let mut core = config.core.clone();
    core.shard = (index as u32, mailboxes.len() as u32);
    let mut event_loop = EventLoop {
        core: TurnServer::new(core, Instant::now(), unix_now()),
        io: Io {
            poll,
            udp,
            tcp,
            tls,
            index,
            mailboxes,
            inbox,
            tls_config,
            tls_addr,
            local_addr,
            entries: Vec::new(),
            free: Vec::new(),
            tcp_by_client: HashMap::new(),
            peers: HashMap::new(),
            relay_ips: config.relay_ips.clone(),
            relay_ports: config.relay_ports.clone(),
            advertised: config.advertised.clone(),
            max_tcp_connections: config.max_tcp_connections,
            rng: seed(),
            ledger,
        },
        out: Vec::with_capacity(DATAGRAM + 64),
        stats,
        shutdown,
        reload,
        pending: Vec::new(),
        throttled: Vec::new(),
        throttle_round: Vec::new(),
    };
    event_loop.io.poll.registry().register(event_loop.io.udp.get_mut(), UDP_LISTEN, Interest::READABLE)?;
    event_loop.io.poll.registry().register(&mut event_loop.io.tcp, TCP_LISTEN, Interest::READABLE)?;
    if let Some(tls) = event_loop.io.tls.as_mut() {
        event_loop.io.poll.registry().register(tls, TLS_LISTEN, Interest::READABLE)?;
    }
    Ok(event_loop)
}

/// `shards` UDP sockets and TCP listeners on `listen` (with `SO_REUSEPORT` when more than one).
fn bind(listen: SocketAddr, shards: usize) -> std::io::Result<(Vec<Udp>, Vec<TcpListener>)> {
    let attempts = if listen.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let sockets = if shards > 1 {
            peerlink_udp::bind_reuseport(listen, shards)?
        } else {
            vec![peerlink_udp::bind(listen)?]
        };
        let addr = sockets[0].local_addr()?.as_socket().unwrap_or(listen);
        match bind_tcp(addr, shards) {
            Ok(tcp) => {
                let mut udps = Vec::with_capacity(sockets.len());
                for socket in sockets {
                    socket.set_nonblocking(true)?;
                    let mut udp = Udp::new(UdpSocket::from_std(socket.into()));
                    // A client's 5-tuple holds the address it sent to: answers and its
                    // relayed data leave from it. On a wildcard address, packet info says which.
                    if listen.ip().is_unspecified() {
                        udp.enable_pktinfo()?;
                    }
                    udps.push(udp);
                }
                return Ok((udps, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port")))
}

/// `shards` TCP listeners on `addr` (with `SO_REUSEPORT` when more than one; the first picks
/// the port when `addr` has none).
fn bind_tcp(addr: SocketAddr, shards: usize) -> std::io::Result<Vec<TcpListener>> {
    let first = crate::sockets::tcp_listener_shared(addr, shards > 1)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![TcpListener::from_std(first)];
    for _ in 1..shards {
        listeners.push(TcpListener::from_std(crate::sockets::tcp_listener_shared(addr, true)?));
    }
    Ok(listeners)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn seed() -> u64 {
    u64::from_le_bytes(peerlink_proto::os_random()) | 1
}

enum Entry {
    Relay {
        socket: Udp,
        id: RelayId,
    },
    /// RFC 6062: a TCP relay's listening socket.
    TcpRelay {
        listener: TcpListener,
        id: RelayId,
        addr: SocketAddr,
    },
    /// RFC 6062: a peer data connection.
    Peer(PeerConn),
    Conn(Conn),
}

struct Conn {
    stream: TcpStream,
    /// Present on TLS connections: plaintext goes in and out through it.
    tls: Option<Box<rustls::ServerConnection>>,
    tuple: FiveTuple,
    input: Vec<u8>,
    output: Vec<u8>,
    writable_interest: bool,
    /// Closed if nothing complete arrives by then.
    deadline: Instant,
    /// RFC 6062: a client data connection after its ConnectionBind; no more STUN.
    pipe: Option<Pipe>,
    /// The other side of its pipe ended: close once `output` is written.
    closing: bool,
}

struct Io {
    poll: Poll,
    udp: Udp,
    tcp: TcpListener,
    tls: Option<TcpListener>,
    /// This shard's place in `mailboxes`.
    index: usize,
    mailboxes: Arc<Vec<Mailbox>>,
    inbox: Receiver<Conn>,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    tls_addr: Option<SocketAddr>,
    local_addr: SocketAddr,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    tcp_by_client: HashMap<FiveTuple, Token>,
    /// RFC 6062 peer data connections by id.
    peers: HashMap<ConnectionId, Token>,
    relay_ips: Vec<IpAddr>,
    relay_ports: RangeInclusive<u16>,
    advertised: Vec<(IpAddr, IpAddr)>,
    max_tcp_connections: usize,
    rng: u64,
    ledger: Arc<Ledger>,
}

impl Io {
    fn insert(&mut self, entry: Entry) -> Token {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(entry);
                Token(i + FIRST_ENTRY)
            }
            None => {
                self.entries.push(Some(entry));
                Token(self.entries.len() - 1 + FIRST_ENTRY)
            }
        }
    }

    fn remove(&mut self, token: Token) -> Option<Entry> {
        let i = token.0.checked_sub(FIRST_ENTRY)?;
        let entry = self.entries.get_mut(i)?.take()?;
        self.free.push(i);
        Some(entry)
    }

    fn entry(&mut self, token: Token) -> Option<&mut Entry> {
        self.entries.get_mut(token.0.checked_sub(FIRST_ENTRY)?)?.as_mut()
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: port choice need not be unpredictable, only spread.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn relay_socket(&mut self, relay: RelayId) -> Option<&UdpSocket> {
        match self.entry(Token(relay.0 as usize))? {
            Entry::Relay { socket, .. } => Some(socket.get_ref()),
            _ => None,
        }
    }

    /// The address a relay bound on `local` is announced on (`--external-ip`).
    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        match self.advertised.iter().find(|(bound, _)| *bound == local.ip()) {
            Some((_, public)) => SocketAddr::new(*public, local.port()),
            None => local,
        }
    }

    /// The server side of a UDP client's 5-tuple: on a wildcard address, the address its
    /// datagram was sent to (packet info), so answers and relayed data can leave from it.
    fn server_addr(&self, destination: Option<IpAddr>) -> SocketAddr {
        match destination {
            Some(ip) if self.local_addr.ip().is_unspecified() => {
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                SocketAddr::new(ip, self.local_addr.port())
            }
            _ => self.local_addr,
        }
    }

    /// Where datagrams to a UDP client leave from: the address it sent to, when listening on
    /// a wildcard address (else the kernel picks the address it asked, the only one).
    fn source(&self, tuple: &FiveTuple) -> Option<IpAddr> {
        let ip = tuple.server.ip();
        (self.local_addr.ip().is_unspecified() && !ip.is_unspecified()).then_some(ip)
    }
}

impl Io {
    /// Binds a relay socket and registers it; `None` when the port is taken.
    fn open_port(&mut self, ip: IpAddr, port: u16) -> Option<Relay> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
        let addr = socket.local_addr().ok()?;
        let advertised = self.advertised(addr);
        self.adopt(socket, advertised)
    }

    /// Registers a relay socket with this shard's loop; `addr` is what clients are told.
    fn adopt(&mut self, mut socket: UdpSocket, addr: SocketAddr) -> Option<Relay> {
        let vacant = self.free.last().copied().unwrap_or(self.entries.len());
        let token = Token(vacant + FIRST_ENTRY);
        self.poll.registry().register(&mut socket, token, Interest::READABLE).ok()?;
        let id = RelayId(token.0 as u32);
        let inserted = self.insert(Entry::Relay { socket: Udp::new(socket), id });
        debug_assert_eq!(inserted, token);
        Some(Relay { id, addr })
    }
}

impl RelayProvider for Io {
    fn open(
        &mut self,
        family: AddressFamily,
        request: PortRequest,
    ) -> Result<(Relay, Option<Relay>), RelayError> {
        let ip = *self
            .relay_ips
            .iter()
            .find(|ip| ip.is_ipv4() == (family == AddressFamily::V4))
            .ok_or(RelayError::FamilyUnsupported)?;
        let (low, high) = (*self.relay_ports.start(), *self.relay_ports.end());
        let span = u64::from(high - low) + 1;
        for _ in 0..64 {
            let mut port = low + (self.next_random() % span) as u16;
            if request != PortRequest::Any && port % 2 == 1 {
                port = if port == high { port - 1 } else { port + 1 };
            }
            if port < low || (request == PortRequest::EvenWithNext && port == high) {
                continue;
            }
            let Some(relay) = self.open_port(ip, port) else { continue };
            if request != PortRequest::EvenWithNext {
                return Ok((relay, None));
            }
            match self.open_port(ip, port + 1) {
                Some(next) => return Ok((relay, Some(next))),
                None => self.close(relay.id),
            }
        }
        Err(RelayError::Exhausted)
    }

    fn open_tcp(&mut self, family: AddressFamily) -> Result<Relay, RelayError> {
        let ip = *self
            .relay_ips
            .iter()
            .find(|ip| ip.is_ipv4() == (family == AddressFamily::V4))
            .ok_or(RelayError::FamilyUnsupported)?;
        let (low, high) = (*self.relay_ports.start(), *self.relay_ports.end());
        let span = u64::from(high - low) + 1;
        for _ in 0..64 {
            let port = low + (self.next_random() % span) as u16;
            if let Some(relay) = self.open_tcp_port(SocketAddr::new(ip, port)) {
                return Ok(relay);
            }
        }
        Err(RelayError::Exhausted)
    }

    fn admit(&mut self, user: &str) -> Result<(), QuotaError> {
        self.ledger.admit(user)
    }

    fn release(&mut self, user: &str) {
        self.ledger.release(user);
    }

    fn user_rate(&mut self, user: &str, bytes_per_second: u64, now: Instant) -> Option<Arc<SharedRate>> {
        self.ledger.user_rate(user, bytes_per_second, now)
    }

    fn reserve(&mut self, token: [u8; 8], relay: Relay, expires: Instant) -> Option<Relay> {
        match self.remove(Token(relay.id.0 as usize)) {
            Some(Entry::Relay { socket, .. }) => {
                let mut socket = socket.into_inner();
                let _ = self.poll.registry().deregister(&mut socket);
                self.ledger.reserve(token, Reserved { socket, addr: relay.addr, expires });
                None
            }
            // Not a UDP relay of this shard: put it back and let the core keep it.
            Some(other) => {
                self.insert(other);
                Some(relay)
            }
            None => Some(relay),
        }
    }

    fn redeem(&mut self, token: [u8; 8], now: Instant) -> Option<Relay> {
        let Reserved { socket, addr, .. } = self.ledger.redeem(token, now)?;
        self.adopt(socket, addr)
    }

    fn close(&mut self, relay: RelayId) {
        match self.remove(Token(relay.0 as usize)) {
            Some(Entry::Relay { mut socket, .. }) => {
                let _ = self.poll.registry().deregister(socket.get_mut());
            }
            Some(Entry::TcpRelay { mut listener, addr, .. }) => {
                let _ = self.poll.registry().deregister(&mut listener);
                self.ledger.release_tcp_relay(addr);
            }
            // Not a relay: put it back (the core never names other entries).
            Some(other) => {
                let token = self.insert(other);
                debug_assert_eq!(token, Token(relay.0 as usize));
            }
            None => {}
        }
    }
}

/// The loop's batch buffers, shared by its UDP sockets.
struct Batches {
    recv: RecvBatch,
    /// Datagrams for UDP clients, sent together at the end of each loop turn.
    to_clients: SendBatch,
    /// When the loop woke: the time of every UDP datagram of this turn. Reading the clock
    /// once per datagram cost about 1% of the loop's CPU; a turn is bounded (512 events, 8
    /// batches a socket), and what `now` decides (lifetimes of seconds, bandwidth buckets
    /// refilled by elapsed time) does not change if it is a few milliseconds late.
    now: Instant,
}

struct EventLoop {
    core: TurnServer,
    io: Io,
    out: Vec<u8>,
    stats: Arc<Mutex<TurnStats>>,
    shutdown: Shutdown,
    /// Renewed certificates for new TLS connections.
    reload: Receiver<Arc<rustls::ServerConfig>>,
    /// Sockets that still had datagrams when their turn ended.
    pending: Vec<Token>,
    /// TCP pipe sides paused by the bandwidth limit: read again every THROTTLE_RETRY.
    throttled: Vec<Token>,
    /// The sides already read in the THROTTLE_RETRY round under way (empty between rounds).
    throttle_round: Vec<Token>,
}

impl EventLoop {
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(512);
        let mut batch = Batches {
            recv: RecvBatch::new(MAX_BATCH, DATAGRAM),
            to_clients: SendBatch::new(),
            now: Instant::now(),
        };
        while !self.shutdown.is_triggered() {
            let now = Instant::now();
            let wait = if !self.pending.is_empty() {
                Duration::ZERO
            } else if !self.throttled.is_empty() {
                self.core.poll_timeout().saturating_duration_since(now).min(THROTTLE_RETRY)
            } else {
                self.core.poll_timeout().saturating_duration_since(now).min(TICK)
            };
            if let Err(e) = self.io.poll.poll(&mut events, Some(wait)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            batch.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    UDP_LISTEN => self.udp_readable(&mut batch),
                    TCP_LISTEN => self.accept(false),
                    TLS_LISTEN => self.accept(true),
                    WAKE => self.adopt_conns(),
                    token => {
                        if event.is_writable() || event.is_error() {
                            self.connect_finished(token);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.entry_readable(token, &mut batch);
                        }
                        if event.is_writable() {
                            self.flush(token);
                        }
                    }
                }
            }
            for token in std::mem::take(&mut self.pending) {
                match token {
                    UDP_LISTEN => self.udp_readable(&mut batch),
                    token => self.entry_readable(token, &mut batch),
                }
            }
            // Each retry starts with the next side in turn, and a side whose partner still
            // waits for its turn takes at most half of what the budget allows (pipe_read):
            // without both, one direction of a busy pipe starves the other.
            if !self.throttled.is_empty() {
                let mut round = self.throttled.clone();
                round.rotate_left(1);
                for token in round {
                    self.throttled.retain(|t| *t != token);
                    self.pipe_read(token);
                    self.throttle_round.push(token);
                }
                self.throttle_round.clear();
            }
            self.drain_tcp_outputs();
            flush_udp(&self.io.udp, &mut batch.to_clients);
            while let Ok(config) = self.reload.try_recv() {
                if self.io.index == 0 {
                    tracing::info!("tls certificate reloaded; new connections use it");
                }
                self.io.tls_config = Some(config);
            }
            let now = Instant::now();
            if now >= self.core.poll_timeout() {
                self.expire_connections(now);
                self.core.handle_timeout(now, &mut self.io);
                self.io.ledger.sweep_reservations(now);
                self.drain_tcp_outputs();
                if let Ok(mut shared) = self.stats.lock() {
                    *shared = self.core.stats().clone();
                }
            }
        }
        self.core.close_all(&mut self.io);
        Ok(())
    }

    fn udp_readable(&mut self, batch: &mut Batches) {
        for _ in 0..MAX_BATCHES_PER_TURN {
            match self.io.udp.recv(&mut batch.recv) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    return;
                }
            }
            for d in batch.recv.iter().filter(|d| !d.truncated) {
                let (client, packet) = (d.source, d.data);
                let tuple = FiveTuple {
                    transport: Transport::Udp,
                    client,
                    server: self.io.server_addr(d.destination),
                };
                let action = self.core.handle_client(batch.now, tuple, packet, &mut self.out, &mut self.io);
                match action {
                    ClientAction::Nothing => {}
                    ClientAction::Reply => {
                        batch.to_clients.push_from(client, self.io.source(&tuple), &self.out);
                        if batch.to_clients.len() >= MAX_BATCH {
                            flush_udp(&self.io.udp, &mut batch.to_clients);
                        }
                    }
                    ClientAction::ToPeer { relay, peer, payload } => {
                        if let Some(socket) = self.io.relay_socket(relay) {
                            let _ = socket.send_to(&packet[payload], peer);
                        }
                    }
                }
            }
            if !batch.recv.is_full() {
                return;
            }
        }
        self.pending.push(UDP_LISTEN);
    }

    fn entry_readable(&mut self, token: Token, batch: &mut Batches) {
        match self.io.entry(token) {
            Some(Entry::Relay { .. }) => self.relay_readable(token, batch),
            Some(Entry::TcpRelay { .. }) => self.accept_peers(token),
            Some(Entry::Peer(_)) => self.pipe_read(token),
            Some(Entry::Conn(conn)) if conn.pipe.is_some() || conn.closing => self.pipe_read(token),
            Some(Entry::Conn(_)) => self.conn_readable(token),
            None => {}
        }
    }

    fn relay_readable(&mut self, token: Token, batch: &mut Batches) {
        let Some(Entry::Relay { id, .. }) = self.io.entry(token) else { return };
        let id = *id;
        for _ in 0..MAX_BATCHES_PER_TURN {
            // The relay may have been closed while its datagrams were handled.
            let received = match self.io.entry(token) {
                Some(Entry::Relay { socket, id: current }) if *current == id => socket.recv(&mut batch.recv),
                _ => return,
            };
            if received.is_err() {
                return;
            }
            for d in batch.recv.iter().filter(|d| !d.truncated) {
                let action = self.core.handle_peer(batch.now, id, d.source, d.data, &mut self.out);
                if let PeerAction::ToClient(tuple) = action {
                    self.send_to_client(tuple, &mut batch.to_clients);
                }
            }
            if !batch.recv.is_full() {
                return;
            }
        }
        self.pending.push(token);
    }

    fn send_to_client(&mut self, tuple: FiveTuple, to_clients: &mut SendBatch) {
        match tuple.transport {
            Transport::Udp => {
                to_clients.push_from(tuple.client, self.io.source(&tuple), &self.out);
                if to_clients.len() >= MAX_BATCH {
                    flush_udp(&self.io.udp, to_clients);
                }
            }
            Transport::Tcp | Transport::Tls => {
                let Some(&token) = self.io.tcp_by_client.get(&tuple) else { return };
                if let Some(Entry::Conn(conn)) = self.io.entry(token) {
                    if conn.output.len() + self.out.len() <= MAX_TCP_BACKLOG {
                        conn.output.extend_from_slice(&self.out);
                    }
                }
                self.flush(token);
            }
        }
    }
}

/// Sends the datagrams waiting for UDP clients. What a full socket does not take, and what
/// the kernel refuses, is dropped, as UDP may.
fn flush_udp(socket: &Udp, batch: &mut SendBatch) {
    if socket.send(batch).is_err() {
        batch.discard();
    }
    batch.take_dropped();
}

/// Addresses a relay can use when none is configured: the first global (or at least
/// non-loopback) IPv4 and IPv6 addresses of this host's interfaces, else loopback.
pub fn default_relay_ips() -> Vec<IpAddr> {
    let mut v4 = None;
    let mut v6 = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifaddr in addrs {
            let Some(address) = ifaddr.address else { continue };
            if let Some(sin) = address.as_sockaddr_in() {
                let ip = sin.ip();
                if !ip.is_loopback() && !ip.is_link_local() && v4.is_none() {
                    v4 = Some(IpAddr::V4(ip));
                }
            } else if let Some(sin6) = address.as_sockaddr_in6() {
                let ip = sin6.ip();
                let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
                if !ip.is_loopback() && !link_local && v6.is_none() {
                    v6 = Some(IpAddr::V6(ip));
                }
            }
        }
    }
    let mut ips: Vec<IpAddr> = v4.into_iter().chain(v6).collect();
    if ips.is_empty() {
        ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    ips
}
