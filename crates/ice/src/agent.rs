//! The ICE agent (RFC 8445), full mode, one component, sans-IO.
//!
//! Implemented: host candidates (given by the driver, which owns the sockets),
//! server-reflexive candidates gathered from STUN servers (§5.1.1.2), relayed candidates
//! from TURN servers (the `peerlink-turn` client, in `relay.rs`), trickled remote
//! candidates and end-of-candidates (RFC 8838), check list with frozen/waiting/in-progress/
//! succeeded/failed pairs, pacing (§14.2), triggered checks (§7.3.1.4), peer-reflexive remote
//! candidates (§7.3.1.3), role conflicts (§7.3.1.1, 487), regular nomination (§8.1.1) and
//! accepting the peer's nomination, consent freshness (RFC 7675), ICE restart (§9; the old
//! path carries data until the new one is selected), ICE-lite (§2.5) in both directions.
//!
//! Not yet: ICE-TCP, several components.
//!
//! A driver with one UDP socket; the candidates and credentials cross through the
//! application's signaling (here two functions):
//!
//! ```no_run
//! use peerlink_ice::{Candidate, IceAgent, IceConfig, IceEvent};
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//!
//! # fn signal(_line: String) {}
//! # fn from_signaling() -> Option<String> { None }
//! # fn application(_datagram: &[u8]) {}
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let socket = UdpSocket::bind("0.0.0.0:0")?;
//! let config = IceConfig::new(true, "ufrag0001", "a-password-of-22-chars+");
//! let mut agent = IceAgent::new(config, [7; 32])?; // seed from a CSPRNG
//! let now = Instant::now();
//! agent.add_host_candidate(now, socket.local_addr()?); // one per socket the driver owns
//! agent.set_remote_credentials(now, "theirufrag", "their-password-of-22-ch")?;
//! let (mut packet, mut buf) = (vec![0u8; 2048], Vec::new());
//! loop {
//!     // As the peer's candidates trickle in; "" is its end of candidates.
//!     while let Some(line) = from_signaling() {
//!         match line.as_str() {
//!             "" => agent.end_of_remote_candidates(Instant::now()),
//!             line => agent.add_remote_candidate(Instant::now(), Candidate::parse(line)?)?,
//!         }
//!     }
//!     let wait = agent.poll_timeout().map(|t| t.saturating_duration_since(Instant::now()));
//!     socket.set_read_timeout(Some(wait.unwrap_or(Duration::from_millis(50)).max(Duration::from_millis(1))))?;
//!     let now = Instant::now();
//!     if let Ok((n, from)) = socket.recv_from(&mut packet) {
//!         if let Some(range) = agent.handle_receive(now, from, socket.local_addr()?, &packet[..n]) {
//!             application(&packet[range]); // not ICE's: DTLS, media, ...
//!         }
//!     }
//!     agent.handle_timeout(now); // early or spurious calls are fine
//!     while let Some(t) = agent.poll_transmit(now, &mut buf) {
//!         socket.send_to(t.datagram(&buf), t.route.remote)?; // from t.route.local: our one socket
//!         buf.clear();
//!     }
//!     while let Some(event) = agent.poll_event() {
//!         match event {
//!             IceEvent::LocalCandidate(c) => signal(c.to_string()),
//!             IceEvent::GatheringComplete => signal(String::new()),
//!             IceEvent::State(state) => println!("ICE {state:?}"),
//!             IceEvent::SelectedPair { local, remote, .. } => println!("data goes {local} -> {remote}"),
//!             _ => {}
//!         }
//!     }
//!     buf.extend_from_slice(b"application datagram"); // or sealed there by DTLS
//!     if let Some(t) = agent.send_data(&mut buf, 0) {
//!         socket.send_to(t.datagram(&buf), t.route.remote)?; // wrapped for TURN when relayed
//!     }
//!     buf.clear();
//! }
//! # }
//! ```

use crate::candidate::{foundation, pair_priority, Candidate, CandidateAddress, CandidateKind, Transport};
use peerlink_proto::{Backoff, BackoffConfig, Route, SeededRng, Transmit};
use peerlink_stun::{
    Attribute, AttributeType, Class, ErrorCode, Key, Message, MessageWriter, Method, TransactionId,
};
pub use peerlink_turn::ClientConfig as TurnServerConfig;
use peerlink_turn::{ClientError, ClientEvent, TurnClient};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Ta: one new check (or gathering request) per this interval (RFC 8445 §14.2; 20 ms as
/// WebRTC stacks use for one data stream, not the 50 ms default). Triggered checks do not
/// wait for it.
const TA: Duration = Duration::from_millis(20);
/// Checks repeat from 500 ms, doubling up to 3 s (RFC 8445 §14.3 leaves the RTO to the
/// agent; a cap keeps a dead pair from waiting RFC 8489's 39.5 s), seven requests in all
/// (RFC 8489's Rc).
const CHECK_BACKOFF: BackoffConfig = BackoffConfig {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(3),
    transmissions: Some(7),
    last_wait_factor: None,
};
/// Gathering gives up on a STUN server sooner: five requests.
const GATHER_BACKOFF: BackoffConfig = BackoffConfig { transmissions: Some(5), ..CHECK_BACKOFF };
/// Pairs in the check list (RFC 8445 §6.1.2.5).
const MAX_PAIRS: usize = 100;
/// Remote candidates kept.
const MAX_REMOTE: usize = 64;
/// RFC 7675 §5.1: a consent check every 5 s, jittered ±20 %...
const CONSENT_INTERVAL: Duration = Duration::from_secs(5);
/// ...consent lost after 30 s without an answer...
const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// ...and "disconnected" after this long without hearing from the selected pair.
const DISCONNECTED_AFTER: Duration = Duration::from_secs(7);
/// Checking without a selected pair for this long is failure (a peer that never nominates,
/// or never says it has no more candidates).
const CHECKING_TIMEOUT: Duration = Duration::from_secs(30);
/// The controlling side nominates its best valid pair once nothing better is pending, or
/// this long after the first success, whichever comes first.
const NOMINATION_WAIT: Duration = Duration::from_millis(500);

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct IceConfig {
    /// Controlling (the offerer, usually) or controlled.
    pub controlling: bool,
    /// Our ICE credentials (RFC 8445 §5.3: ufrag ≥ 4 and pwd ≥ 22 characters of ice-char).
    pub local_ufrag: String,
    pub local_pwd: String,
    /// STUN servers for server-reflexive candidates.
    pub stun_servers: Vec<SocketAddr>,
    /// TURN servers for relayed candidates (UDP to the server; one allocation per server
    /// and address family). The server's answer also yields a server-reflexive candidate.
    pub turn_servers: Vec<TurnServerConfig>,
    /// ICE-lite (RFC 8445 §2.5): host candidates only, always controlled, answers checks
    /// but sends none; the full peer nominates. For servers with a public address.
    pub lite: bool,
}

impl IceConfig {
    /// A full agent without STUN or TURN servers.
    pub fn new(controlling: bool, local_ufrag: &str, local_pwd: &str) -> IceConfig {
        IceConfig {
            controlling,
            local_ufrag: local_ufrag.to_owned(),
            local_pwd: local_pwd.to_owned(),
            stun_servers: Vec::new(),
            turn_servers: Vec::new(),
            lite: false,
        }
    }
}

/// ICE credentials of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Credentials {
    ufrag: String,
    key: Key,
}

/// The agent's overall state (the `RTCIceConnectionState` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceState {
    New,
    Checking,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

/// What the agent tells its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum IceEvent {
    /// Send this to the peer (trickle).
    LocalCandidate(Candidate),
    /// Every local candidate has been announced.
    GatheringComplete,
    State(IceState),
    /// Application data goes from `local` to `remote` from now on.
    SelectedPair {
        local: SocketAddr,
        remote: SocketAddr,
        local_kind: CandidateKind,
        remote_kind: CandidateKind,
    },
}

/// Why the agent failed (its state is [`IceState::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IceFailure {
    /// Checks found no working pair in time (RFC 8445 §8.2 leaves the limit to the agent).
    #[error("no candidate pair succeeded within {} s", .0.as_secs())]
    NoPairWithin(Duration),
    /// Every pair failed once both sides had announced all their candidates.
    #[error("every candidate pair failed")]
    AllPairsFailed,
    /// The selected pair stopped answering consent checks (RFC 7675 §5.1).
    #[error("consent lost: no answer on the selected pair for {} s", .0.as_secs())]
    ConsentLost(Duration),
}

/// A datagram waiting for [`IceAgent::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) route: Route,
    pub(crate) payload: Vec<u8>,
}

/// Caller mistakes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    #[error("remote candidate has a host name; resolve it (mDNS) and pass an address")]
    Unresolved,
    #[error("remote candidate is not UDP component 1")]
    Unsupported,
    #[error("too many remote candidates")]
    TooMany,
    #[error("ICE credentials must be printable and non-empty")]
    BadCredentials,
}

/// Counters of dropped input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceStats {
    pub not_stun: u64,
    pub bad_integrity: u64,
    pub unknown_transaction: u64,
    pub role_conflicts: u64,
    pub checks_sent: u64,
    pub checks_received: u64,
}

#[derive(Debug, Clone)]
struct Local {
    candidate: Candidate,
    /// The socket it is sent from (its own address for host candidates, the relayed
    /// address for relayed ones).
    base: SocketAddr,
    /// Relayed candidates: the allocation (index into `relays`) packets go through.
    relay: Option<usize>,
}

/// One TURN allocation, made from the driver's socket `base`.
#[derive(Debug)]
struct RelaySlot {
    base: SocketAddr,
    client: TurnClient,
    /// Allocated or given up (gathering waits for every slot).
    done: bool,
    /// The relayed candidate, once allocated (index into `locals`).
    local: Option<usize>,
}

#[derive(Debug, Clone)]
struct Remote {
    candidate: Candidate,
    addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct Transaction {
    id: TransactionId,
    backoff: Backoff,
    nominating: bool,
    /// The role this request claimed (a 487 answer means: take the other one).
    as_controlling: bool,
}

#[derive(Debug, Clone)]
struct Pair {
    local: usize,
    remote: usize,
    foundation: (String, String),
    priority: u64,
    state: PairState,
    transaction: Option<Transaction>,
    /// The controlled side saw USE-CANDIDATE on it.
    nominated_by_peer: bool,
    nominated: bool,
    /// The XOR-MAPPED-ADDRESS of our check's answer: which local candidate the peer sees
    /// (§7.2.5.3.1; a server-reflexive one, or a new peer-reflexive one).
    mapped: Option<SocketAddr>,
    /// Checks cancelled by a triggered check: no more retransmissions, but their answers
    /// still count (§7.3.1.4). The last few are kept.
    cancelled: Vec<Transaction>,
}

#[derive(Debug, Clone)]
struct Gather {
    base: SocketAddr,
    server: SocketAddr,
    transaction: Option<Transaction>,
    done: bool,
}

/// One ICE agent for one data stream with one component.
#[derive(Debug)]
pub struct IceAgent {
    controlling: bool,
    tie_breaker: u64,
    local_creds: Credentials,
    remote_creds: Option<Credentials>,
    stun_servers: Vec<SocketAddr>,
    turn_servers: Vec<TurnServerConfig>,
    lite: bool,
    /// The peer is ICE-lite: it sends no checks, we must control.
    remote_lite: bool,
    relays: Vec<RelaySlot>,
    /// After an ICE restart, the old selected pair (local index, remote address) carries
    /// data until a new pair is selected.
    previous: Option<(usize, SocketAddr)>,
    locals: Vec<Local>,
    remotes: Vec<Remote>,
    pairs: Vec<Pair>,
    gathers: Vec<Gather>,
    triggered: VecDeque<usize>,
    next_pace: Option<Instant>,
    /// When checking began (for `CHECKING_TIMEOUT`).
    checking_since: Option<Instant>,
    /// The pair being nominated (controlling side), if any.
    nominating: Option<usize>,
    /// Nominate by then even if better pairs are still being checked.
    nominate_by: Option<Instant>,
    state: IceState,
    failure: Option<IceFailure>,
    selected: Option<usize>,
    gathering_complete_sent: bool,
    remote_complete: bool,
    last_heard: Option<Instant>,
    last_consent: Option<Instant>,
    next_consent: Option<Instant>,
    /// Earlier consent checks still worth an answer (a late answer to one is consent too).
    earlier_consent: VecDeque<TransactionId>,
    rng: SeededRng,
    buf: Vec<u8>,
    transmits: VecDeque<Queued>,
    events: VecDeque<IceEvent>,
    stats: IceStats,
}

fn printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic())
}

impl IceAgent {
    /// `seed` (32 bytes from a CSPRNG) keys the generator of transaction ids and the
    /// tie-breaker, which must not be guessable (RFC 7675 §5.1 relies on the ids).
    pub fn new(config: IceConfig, seed: [u8; 32]) -> Result<IceAgent, UsageError> {
        if !printable(&config.local_ufrag) || !printable(&config.local_pwd) {
            return Err(UsageError::BadCredentials);
        }
        let key = Key::short_term(&config.local_pwd).map_err(|_| UsageError::BadCredentials)?;
        let mut agent = IceAgent {
            // §6.1.1: a lite agent is always controlled.
            controlling: config.controlling && !config.lite,
            tie_breaker: 0,
            local_creds: Credentials { ufrag: config.local_ufrag, key },
            remote_creds: None,
            stun_servers: if config.lite { Vec::new() } else { config.stun_servers },
            turn_servers: if config.lite { Vec::new() } else { config.turn_servers },
            lite: config.lite,
            remote_lite: false,
            relays: Vec::new(),
            previous: None,
            locals: Vec::new(),
            remotes: Vec::new(),
            pairs: Vec::new(),
            gathers: Vec::new(),
            triggered: VecDeque::new(),
            next_pace: None,
            checking_since: None,
            nominating: None,
            nominate_by: None,
            state: IceState::New,
            failure: None,
            selected: None,
            gathering_complete_sent: false,
            remote_complete: false,
            last_heard: None,
            last_consent: None,
            next_consent: None,
            earlier_consent: VecDeque::new(),
            rng: SeededRng::new(&seed),
            buf: Vec::with_capacity(256),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: IceStats::default(),
        };
        agent.tie_breaker = agent.rng.next_u64();
        Ok(agent)
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    pub fn stats(&self) -> &IceStats {
        &self.stats
    }

    pub fn is_controlling(&self) -> bool {
        self.controlling
    }

    /// The selected pair: (local candidate's base, remote address). For a relayed local
    /// candidate the base is the relayed address on the TURN server; use
    /// [`IceAgent::send_data`] to send.
    pub fn selected_pair(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.selected
            .map(|p| (self.locals[self.pairs[p].local].base, self.remotes[self.pairs[p].remote].addr))
    }

    /// Sends the application datagram at `buf[start..]` on the selected pair: as it is on a
    /// direct pair, wrapped in place for the TURN server on a relayed one. During an ICE
    /// restart the old pair is used until a new one is selected. `None`: no usable pair, and
    /// `buf` is cut back to `start`.
    pub fn send_data(&mut self, buf: &mut Vec<u8>, start: usize) -> Option<Transmit> {
        let Some((local, remote)) = self.data_path() else {
            buf.truncate(start);
            return None;
        };
        match self.locals[local].relay {
            None => Some(Transmit {
                route: Route { local: self.locals[local].base, remote },
                len: buf.len() - start,
            }),
            Some(r) => {
                // A copy on the relayed path only: the TURN header goes in front.
                let payload = buf.split_off(start);
                let slot = &mut self.relays[r];
                let t = slot.client.send_to(remote, &payload, buf).ok()?;
                Some(Transmit { route: Route { local: slot.base, remote: slot.client.server() }, len: t.len })
            }
        }
    }

    /// (local candidate, remote address) that application data goes on.
    fn data_path(&self) -> Option<(usize, SocketAddr)> {
        match self.selected {
            Some(p) => Some((self.pairs[p].local, self.remotes[self.pairs[p].remote].addr)),
            None => self.previous,
        }
    }

    /// Sets the role before checks start (JSEP: the offerer controls). Later, role
    /// conflicts decide (§7.3.1.1). Ignored by a lite agent, which is always controlled.
    pub fn set_controlling(&mut self, controlling: bool) {
        if !self.lite && self.controlling != controlling {
            self.switch_role(controlling);
        }
    }

    /// The peer is ICE-lite (`a=ice-lite` in its description): it never checks, so this
    /// agent takes the controlling role (§6.1.1). Ignored by a lite agent.
    pub fn set_remote_lite(&mut self, lite: bool) {
        self.remote_lite = lite && !self.lite;
        if self.remote_lite && !self.controlling {
            self.switch_role(true);
        }
    }

    fn transaction(&mut self, nominating: bool, backoff: BackoffConfig) -> Transaction {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&a.to_be_bytes());
        id[8..].copy_from_slice(&b.to_be_bytes()[..4]);
        Transaction {
            id: TransactionId(id),
            backoff: Backoff::new(backoff),
            nominating,
            as_controlling: self.controlling,
        }
    }

    fn fail(&mut self, failure: IceFailure) {
        if !matches!(self.state, IceState::Failed | IceState::Closed) {
            tracing::debug!(%failure, "ICE failed");
            self.failure = Some(failure);
        }
        self.set_state(IceState::Failed);
    }

    /// Why the agent failed, once it has.
    pub fn failure(&self) -> Option<IceFailure> {
        self.failure
    }

    fn set_state(&mut self, state: IceState) {
        if matches!(self.state, IceState::Failed | IceState::Closed) {
            return; // final
        }
        if self.state != state {
            self.state = state;
            self.events.push_back(IceEvent::State(state));
        }
    }

    /// A socket the driver owns: a host candidate, and a base for server-reflexive and
    /// relayed ones.
    pub fn add_host_candidate(&mut self, now: Instant, addr: SocketAddr) {
        if self.locals.iter().any(|l| l.base == addr && l.candidate.kind == CandidateKind::Host) {
            return;
        }
        // RFC 8445 §5.1.2.1: one local preference per host address, the first highest.
        let hosts = self.locals.iter().filter(|l| l.candidate.kind == CandidateKind::Host).count();
        let local_preference = 65535 - hosts.min(65535) as u16;
        let candidate = Candidate::udp(
            CandidateKind::Host,
            foundation(CandidateKind::Host, addr.ip(), None, &Transport::Udp),
            Candidate::compute_priority(CandidateKind::Host, local_preference, 1),
            addr,
            None,
        );
        self.add_local(candidate, addr, None);
        let servers: Vec<SocketAddr> =
            self.stun_servers.iter().copied().filter(|s| s.is_ipv4() == addr.is_ipv4()).collect();
        for server in servers {
            let transaction = Some(self.transaction(false, GATHER_BACKOFF));
            self.gathers.push(Gather { base: addr, server, transaction, done: false });
        }
        self.start_relays(now, addr);
        self.schedule_pace(now);
        self.check_gathering_complete();
    }

    fn add_local(&mut self, candidate: Candidate, base: SocketAddr, relay: Option<usize>) {
        self.events.push_back(IceEvent::LocalCandidate(candidate.clone()));
        // Server-reflexive candidates are paired through their base (§6.1.2.4); host and
        // relayed ones pair.
        let pairs = candidate.kind != CandidateKind::ServerReflexive;
        self.locals.push(Local { candidate, base, relay });
        if pairs {
            let local = self.locals.len() - 1;
            for remote in 0..self.remotes.len() {
                self.add_pair(local, remote);
            }
        }
    }

    fn check_gathering_complete(&mut self) {
        let done = self.gathers.iter().all(|g| g.done) && self.relays.iter().all(|r| r.done);
        if !self.gathering_complete_sent && done && !self.locals.is_empty() {
            self.gathering_complete_sent = true;
            self.events.push_back(IceEvent::GatheringComplete);
        }
    }

    /// The peer's credentials. New ones (a different ufrag) after the first mean the peer
    /// restarted ICE: its candidates are forgotten and checks start over, while the old
    /// pair keeps carrying data until a new one is selected.
    pub fn set_remote_credentials(&mut self, now: Instant, ufrag: &str, pwd: &str) -> Result<(), UsageError> {
        if !printable(ufrag) || !printable(pwd) {
            return Err(UsageError::BadCredentials);
        }
        let key = Key::short_term(pwd).map_err(|_| UsageError::BadCredentials)?;
        let creds = Credentials { ufrag: ufrag.to_owned(), key };
        match &self.remote_creds {
            Some(old) if *old == creds => return Ok(()),
            Some(_) => self.reset_checks(),
            None => {}
        }
        self.remote_creds = Some(creds);
        self.schedule_pace(now);
        Ok(())
    }

    /// ICE restart (RFC 8445 §9) with new local credentials: the peer gets them (and
    /// needs them before it checks again); the local candidates are announced again and the
    /// peer's candidates must be given again with its new credentials. The old selected
    /// pair carries data until a new pair is selected. Also the way out of `Failed`.
    pub fn restart(&mut self, now: Instant, ufrag: &str, pwd: &str) -> Result<(), UsageError> {
        if !printable(ufrag) || !printable(pwd) {
            return Err(UsageError::BadCredentials);
        }
        if self.state == IceState::Closed {
            return Ok(());
        }
        let key = Key::short_term(pwd).map_err(|_| UsageError::BadCredentials)?;
        self.local_creds = Credentials { ufrag: ufrag.to_owned(), key };
        self.remote_creds = None;
        self.reset_checks();
        for local in &self.locals {
            self.events.push_back(IceEvent::LocalCandidate(local.candidate.clone()));
        }
        if self.gathering_complete_sent {
            self.events.push_back(IceEvent::GatheringComplete);
        }
        self.schedule_pace(now);
        Ok(())
    }

    /// Forgets the peer's candidates and every pair; keeps the selected path as
    /// `previous` for data.
    fn reset_checks(&mut self) {
        if let Some(p) = self.selected {
            self.previous = Some((self.pairs[p].local, self.remotes[self.pairs[p].remote].addr));
        }
        self.remotes.clear();
        self.pairs.clear();
        self.triggered.clear();
        self.selected = None;
        self.nominating = None;
        self.nominate_by = None;
        self.remote_complete = false;
        self.checking_since = None;
        self.last_consent = None;
        self.next_consent = None;
        self.earlier_consent.clear();
        if self.state == IceState::Failed {
            // The one way out of a final state: start over.
            self.state = IceState::New;
            self.failure = None;
            self.events.push_back(IceEvent::State(IceState::New));
        }
    }

    /// A remote candidate (trickled or from the SDP). Host names must be resolved first.
    pub fn add_remote_candidate(&mut self, now: Instant, candidate: Candidate) -> Result<(), UsageError> {
        let CandidateAddress::Ip(ip) = candidate.address else { return Err(UsageError::Unresolved) };
        if candidate.transport != Transport::Udp || candidate.component != 1 {
            return Err(UsageError::Unsupported);
        }
        let addr = SocketAddr::new(ip, candidate.port);
        if let Some(r) = self.remotes.iter().position(|r| r.addr == addr) {
            // One remote candidate per address, its pairs kept. A peer-reflexive one learned
            // from a check stands in until the peer signals it (§7.3.1.3): the signaled type,
            // priority and foundation replace the check's. Of two signaled ones, the lower
            // priority is redundant (§5.1.3): without a NAT a server-reflexive candidate has
            // the host candidate's address, and the host one stays.
            let existing = &self.remotes[r].candidate;
            if existing.kind == CandidateKind::PeerReflexive || candidate.priority > existing.priority {
                self.replace_remote(now, r, candidate);
            }
            return Ok(());
        }
        if self.remotes.len() >= MAX_REMOTE {
            return Err(UsageError::TooMany);
        }
        self.remotes.push(Remote { candidate, addr });
        let remote = self.remotes.len() - 1;
        for local in 0..self.locals.len() {
            if self.locals[local].candidate.kind != CandidateKind::ServerReflexive {
                self.add_pair(local, remote);
            }
        }
        self.start_checking(now);
        self.schedule_pace(now);
        Ok(())
    }

    /// The remote candidate `r` is `candidate` from now on: its pairs are prioritized again,
    /// and the controlled agent follows the best nomination by the new priorities.
    fn replace_remote(&mut self, now: Instant, r: usize, candidate: Candidate) {
        let kind = self.remotes[r].candidate.kind;
        for pair in self.pairs.iter_mut().filter(|p| p.remote == r) {
            pair.foundation.1 = candidate.foundation.clone();
        }
        self.remotes[r].candidate = candidate;
        self.prioritize();
        let selected = self.selected;
        self.follow_nomination(now);
        // Still the same pair, now known by another type: say so.
        if let Some(p) = self.selected.filter(|&p| Some(p) == selected && self.pairs[p].remote == r) {
            if self.remotes[r].candidate.kind != kind {
                self.report_selected(p);
            }
        }
    }

    /// Checks begin (again, after a restart): the deadline runs; a new agent says so.
    fn start_checking(&mut self, now: Instant) {
        if self.checking_since.is_none() && self.selected.is_none() {
            self.checking_since = Some(now);
        }
        if self.state == IceState::New {
            self.set_state(IceState::Checking);
        }
    }

    /// The peer will send no more candidates (RFC 8838 §4.4): a check list that runs out
    /// now means failure.
    pub fn end_of_remote_candidates(&mut self, now: Instant) {
        self.remote_complete = true;
        self.update_failed(now);
    }

    fn add_pair(&mut self, local: usize, remote: usize) -> Option<usize> {
        let (l, r) = (&self.locals[local], &self.remotes[remote]);
        if l.base.is_ipv4() != r.addr.is_ipv4() || self.pairs.len() >= MAX_PAIRS {
            return None;
        }
        if let Some(i) = self.pairs.iter().position(|p| p.local == local && p.remote == remote) {
            return Some(i);
        }
        let foundation = (l.candidate.foundation.clone(), r.candidate.foundation.clone());
        // Frozen unless it is the first of its foundation (§6.1.2.6).
        let first = !self.pairs.iter().any(|p| p.foundation == foundation);
        self.pairs.push(Pair {
            local,
            remote,
            foundation,
            priority: 0,
            state: if first { PairState::Waiting } else { PairState::Frozen },
            transaction: None,
            nominated_by_peer: false,
            nominated: false,
            mapped: None,
            cancelled: Vec::new(),
        });
        self.prioritize();
        Some(self.pairs.len() - 1)
    }

    fn prioritize(&mut self) {
        for pair in &mut self.pairs {
            let (l, r) =
                (self.locals[pair.local].candidate.priority, self.remotes[pair.remote].candidate.priority);
            pair.priority = if self.controlling { pair_priority(l, r) } else { pair_priority(r, l) };
        }
    }

    fn schedule_pace(&mut self, now: Instant) {
        if self.next_pace.is_none() {
            self.next_pace = Some(now);
        }
    }

    /// A triggered check (an answer to the peer's check, or a nomination) goes out now
    /// rather than at the next pacing slot: the peer's own pacing already limits them, and
    /// waiting a slot adds Ta to every connection's set-up.
    pub(super) fn pace_now(&mut self, now: Instant) {
        self.next_pace = Some(self.next_pace.map_or(now, |t| t.min(now)));
    }

    /// Appends the next datagram (a check, an answer, a TURN request) to `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let q = self.transmits.pop_front()?;
        buf.extend_from_slice(&q.payload);
        Some(Transmit { route: q.route, len: q.payload.len() })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, IceState::Failed | IceState::Closed) {
            return None;
        }
        let retransmits = self
            .pairs
            .iter()
            .filter_map(|p| p.transaction.as_ref())
            .chain(self.gathers.iter().filter_map(|g| g.transaction.as_ref()))
            .filter_map(|t| t.backoff.deadline())
            .chain(self.relays.iter().filter_map(|r| r.client.poll_timeout()));
        // Once disconnected, that deadline has passed: only consent's own timers remain.
        let silence =
            self.last_heard.filter(|_| self.state == IceState::Connected).map(|t| t + DISCONNECTED_AFTER);
        let consent = self.next_consent.into_iter().chain(silence);
        let consent_lost = self.last_consent.map(|t| t + CONSENT_TIMEOUT);
        let checking = self.checking_since.filter(|_| self.selected.is_none()).map(|t| t + CHECKING_TIMEOUT);
        // Only a controlling agent nominates: a controlled one whose deadline passed would
        // otherwise wake up at once, again and again.
        let nominate = self
            .nominate_by
            .filter(|_| self.controlling && self.nominating.is_none() && self.selected.is_none());
        self.next_pace
            .into_iter()
            .chain(retransmits)
            .chain(consent)
            .chain(consent_lost)
            .chain(checking)
            .chain(nominate)
            .min()
    }

    /// Timers: pacing of new checks, retransmissions, consent.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, IceState::Failed | IceState::Closed) {
            return;
        }
        if self.next_pace.is_some_and(|t| t <= now) {
            self.next_pace = if self.pace(now) { Some(now + TA) } else { None };
        }
        for r in 0..self.relays.len() {
            if self.relays[r].client.poll_timeout().is_some_and(|t| t <= now) {
                self.relays[r].client.handle_timeout(now);
                self.drain_relay(now, r);
            }
        }
        self.retransmit(now);
        self.consent(now);
        if self.nominate_by.is_some_and(|t| t <= now) {
            self.maybe_nominate(now, true);
        }
        self.update_failed(now);
    }

    /// Sends one new request (gathering first, then triggered checks, then ordinary ones).
    fn pace(&mut self, now: Instant) -> bool {
        if let Some(i) = self
            .gathers
            .iter()
            .position(|g| !g.done && g.transaction.as_ref().is_some_and(|t| t.backoff.transmissions() == 0))
        {
            self.send_gather(now, i);
            return true;
        }
        // A lite agent never checks (§2.5).
        if self.remote_creds.is_none() || self.lite {
            return false;
        }
        while let Some(i) = self.triggered.pop_front() {
            if !matches!(self.pairs[i].state, PairState::Succeeded) || self.wants_nomination(i) {
                self.start_check(now, i);
                return true;
            }
        }
        let next = self.best(PairState::Waiting).or_else(|| {
            // §6.1.4.2: nothing waiting: unfreeze the best frozen pair.
            self.best(PairState::Frozen)
        });
        match next {
            Some(i) => {
                self.start_check(now, i);
                true
            }
            None => false,
        }
    }

    fn best(&self, state: PairState) -> Option<usize> {
        (0..self.pairs.len())
            .filter(|&i| self.pairs[i].state == state)
            .max_by_key(|&i| self.pairs[i].priority)
    }

    fn wants_nomination(&self, i: usize) -> bool {
        self.controlling && self.selected.is_none() && self.nominating == Some(i)
    }

    fn start_check(&mut self, now: Instant, i: usize) {
        let nominating = self.wants_nomination(i);
        let transaction = self.transaction(nominating, CHECK_BACKOFF);
        self.pairs[i].state = if self.pairs[i].state == PairState::Succeeded {
            PairState::Succeeded
        } else {
            PairState::InProgress
        };
        if let Some(old) = self.pairs[i].transaction.replace(transaction) {
            let cancelled = &mut self.pairs[i].cancelled;
            cancelled.push(old);
            if cancelled.len() > 3 {
                cancelled.remove(0);
            }
        }
        self.send_check(now, i);
    }

    fn send_check(&mut self, now: Instant, i: usize) {
        let Some(remote) = self.remote_creds.clone() else { return };
        let (local, remote_addr) =
            (self.locals[self.pairs[i].local].base, self.remotes[self.pairs[i].remote].addr);
        let Some(transaction) = self.pairs[i].transaction.as_mut() else { return };
        let _ = transaction.backoff.on_transmit(now);
        transaction.as_controlling = self.controlling;
        let (id, nominating) = (transaction.id, transaction.nominating && self.controlling);
        let username = format!("{}:{}", remote.ufrag, self.local_creds.ufrag);
        // §7.1.1: the priority a peer-reflexive candidate learned from this check would get
        // (the peer-reflexive type preference with the local candidate's local preference).
        let local_preference = (self.locals[self.pairs[i].local].candidate.priority >> 8) as u16;
        let prflx = Candidate::compute_priority(CandidateKind::PeerReflexive, local_preference, 1);
        self.buf.clear();
        let mut w = MessageWriter::new(&mut self.buf, Class::Request, Method::BINDING, id);
        let mut attrs = vec![Attribute::Username(&username), Attribute::Priority(prflx)];
        attrs.push(if self.controlling {
            Attribute::IceControlling(self.tie_breaker)
        } else {
            Attribute::IceControlled(self.tie_breaker)
        });
        if nominating {
            attrs.push(Attribute::UseCandidate);
        }
        for a in &attrs {
            let _ = w.attribute(a);
        }
        let _ = w.message_integrity(&remote.key);
        let _ = w.fingerprint();
        w.finish();
        self.stats.checks_sent += 1;
        self.emit_buf(now, local, remote_addr);
    }

    /// Sends `self.buf` from the local candidate whose base is `from` (through its TURN
    /// allocation when it is relayed).
    fn emit_buf(&mut self, now: Instant, from: SocketAddr, to: SocketAddr) {
        let payload = std::mem::take(&mut self.buf);
        let relay = self.locals.iter().find(|l| l.base == from).and_then(|l| l.relay);
        match relay {
            None => self
                .transmits
                .push_back(Queued { route: Route { local: from, remote: to }, payload: payload.clone() }),
            Some(r) => self.send_relayed(now, r, to, &payload),
        }
        self.buf = payload;
    }

    fn send_gather(&mut self, now: Instant, i: usize) {
        let g = &mut self.gathers[i];
        let Some(transaction) = g.transaction.as_mut() else { return };
        let _ = transaction.backoff.on_transmit(now);
        self.buf.clear();
        let mut w = MessageWriter::new(&mut self.buf, Class::Request, Method::BINDING, transaction.id);
        let _ = w.fingerprint();
        w.finish();
        self.transmits.push_back(Queued {
            route: Route { local: g.base, remote: g.server },
            payload: self.buf.clone(),
        });
    }

    fn retransmit(&mut self, now: Instant) {
        for i in 0..self.gathers.len() {
            let due =
                self.gathers[i].transaction.as_ref().filter(|t| t.backoff.is_due(now)).map(|t| t.backoff);
            match due {
                Some(backoff) if backoff.is_exhausted() => {
                    self.gathers[i].transaction = None;
                    self.gathers[i].done = true;
                    self.check_gathering_complete();
                }
                Some(_) => self.send_gather(now, i),
                None => {}
            }
        }
        for i in 0..self.pairs.len() {
            let due = self.pairs[i].transaction.as_ref().filter(|t| t.backoff.is_due(now)).map(|t| t.backoff);
            match due {
                Some(backoff) if backoff.is_exhausted() => {
                    self.pairs[i].transaction = None;
                    if self.nominating == Some(i) {
                        // The nominated pair stopped answering: try the next best.
                        self.nominating = None;
                        self.pairs[i].state = PairState::Failed;
                        self.maybe_nominate(now, true);
                    } else if self.pairs[i].state == PairState::InProgress {
                        self.pairs[i].state = PairState::Failed;
                    }
                }
                Some(_) => self.send_check(now, i),
                None => {}
            }
        }
    }

    /// RFC 7675 consent on the selected pair, and the disconnected/failed states. A lite
    /// agent sends no consent checks: the full peer's checks are its consent.
    fn consent(&mut self, now: Instant) {
        let Some(selected) = self.selected else { return };
        if self.last_consent.is_some_and(|t| now.saturating_duration_since(t) >= CONSENT_TIMEOUT) {
            self.fail(IceFailure::ConsentLost(CONSENT_TIMEOUT));
            return;
        }
        if self.last_heard.is_some_and(|t| now.saturating_duration_since(t) >= DISCONNECTED_AFTER) {
            self.set_state(IceState::Disconnected);
        }
        if self.lite {
            return;
        }
        if self.next_consent.is_some_and(|t| t <= now) {
            let jitter = 0.8 + (self.rng.next_u64() % 400) as f64 / 1000.0;
            self.next_consent = Some(now + CONSENT_INTERVAL.mul_f64(jitter));
            let transaction = self.transaction(false, CHECK_BACKOFF);
            if let Some(old) = self.pairs[selected].transaction.replace(transaction) {
                self.earlier_consent.push_back(old.id);
                if self.earlier_consent.len() > 4 {
                    self.earlier_consent.pop_front();
                }
            }
            self.send_check(now, selected);
        }
    }

    fn update_failed(&mut self, now: Instant) {
        if self.selected.is_some() || self.state == IceState::Failed {
            return;
        }
        if self.checking_since.is_some_and(|t| now.saturating_duration_since(t) >= CHECKING_TIMEOUT) {
            return self.fail(IceFailure::NoPairWithin(CHECKING_TIMEOUT));
        }
        // Only with both sides' candidates all known can an empty check list mean failure.
        if !self.remote_complete || !self.gathering_complete_sent {
            return;
        }
        let open = self.pairs.iter().any(|p| !matches!(p.state, PairState::Failed));
        if !open {
            self.fail(IceFailure::AllPairsFailed);
        }
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        if self.state == IceState::Disconnected {
            self.set_state(IceState::Connected);
        }
    }

    /// Stops everything; TURN allocations are deleted (those requests are the last
    /// transmits).
    pub fn close(&mut self, now: Instant) {
        self.set_state(IceState::Closed);
        self.transmits.clear();
        for r in 0..self.relays.len() {
            self.relays[r].client.close(now);
            self.drain_relay(now, r);
        }
    }
}

fn ip_of(c: &Candidate) -> std::net::IpAddr {
    match &c.address {
        CandidateAddress::Ip(ip) => *ip,
        CandidateAddress::Name(_) => std::net::IpAddr::from([0, 0, 0, 0]),
    }
}

mod inbound;
mod relay;
mod select;

/// For drivers and tests that treat the agent as a whole: what ICE does not take for itself
/// (application data) is dropped here; a PeerConnection calls the inherent methods.
impl peerlink_proto::Machine for IceAgent {
    type Route = Route;
    type Event = IceEvent;

    fn handle_receive(&mut self, now: Instant, route: Route, datagram: &[u8]) {
        let _ = IceAgent::handle_receive(self, now, route.remote, route.local, datagram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        IceAgent::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        IceAgent::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<IceEvent> {
        IceAgent::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        IceAgent::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests;
