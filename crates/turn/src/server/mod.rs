//! The TURN server core (RFC 8656, RFC 6156, RFC 6062): no sockets, no clock, one owner.
//!
//! One state machine, [`TurnServer`], split by what it handles:
//! - this module: its state, the entry points, and the dispatch of a request once it is
//!   authenticated, as a `Request` that a handler consumes by answering it;
//! - `auth`: RFC 8489 §9.2 long-term credentials, nonces, and how answers are written;
//! - `allocate`: RFC 8656 §7 Allocate and Refresh, relay sockets and reservations;
//! - `permission`: RFC 8656 §9 CreatePermission and §12 ChannelBind;
//! - `relay`: the data path (RFC 8656 §10–§12): Send and Data indications, ChannelData;
//! - `tcp`: RFC 6062 TCP allocations (Connect, ConnectionBind, data connections).

mod allocate;
mod auth;
mod permission;
mod relay;
mod tcp;

pub use allocate::{PortRequest, QuotaError, Relay, RelayError, RelayId, RelayProvider};
pub use tcp::{connection_bind_shard, ConnectionId, TcpOutput};

use crate::auth::{Credentials, NonceIssuer, RateLimiter};
use crate::policy::PeerPolicy;
use crate::rate::SharedRate;
use peerlink_stun::binding;
use peerlink_stun::{Class, ErrorCode, Header, Key, Message, MessageWriter, Method, TransactionId};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcp::TcpConnections;

const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Server settings. `Debug` leaves out the nonce secret (credentials print only counts).
#[derive(Clone)]
pub struct ServerConfig {
    pub realm: String,
    pub credentials: Credentials,
    /// Key of the stateless nonces; random per process (or shared by a cluster).
    pub nonce_secret: [u8; 32],
    pub nonce_lifetime: Duration,
    pub policy: PeerPolicy,
    /// RFC 8656 §7.2: default and maximum allocation lifetimes.
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub max_allocations_per_user: usize,
    pub max_allocations: usize,
    pub max_permissions_per_allocation: usize,
    pub max_channels_per_allocation: usize,
    /// RFC 6062: peer data connections a TCP allocation may hold (bound or not).
    pub max_tcp_connections_per_allocation: usize,
    /// RFC 6062: of those, connections not yet bound by ConnectionBind (being connected,
    /// or waiting up to 30 s for their client data connection).
    pub max_pending_tcp_connections_per_allocation: usize,
    /// 401 answers per second per client IP (with a burst of ten times that).
    pub unauthenticated_per_second: u32,
    /// Relayed payload bytes per second per allocation, both directions together (a
    /// token bucket holding one second's worth); `None` for no limit.
    pub max_bytes_per_second: Option<u64>,
    /// Relayed payload bytes per second per user, over all of the user's allocations
    /// (shared by every core when the [`RelayProvider`] shares it); `None` for no limit.
    pub max_bytes_per_second_per_user: Option<u64>,
    /// Relayed payload bytes per second of the whole server (every core holds the same
    /// bucket): packets over it are dropped, and new allocations refused with 486 while it
    /// is used up (coturn's `bps-capacity`); `None` for no limit.
    pub capacity: Option<Arc<SharedRate>>,
    pub software: Option<String>,
    /// This core is shard `shard.0` of `shard.1` (event loop threads of one server): the
    /// CONNECTION-IDs it issues name it ([`connection_bind_shard`]), so that a
    /// ConnectionBind arriving at another shard can be handed to this one.
    pub shard: (u32, u32),
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("realm", &self.realm)
            .field("credentials", &self.credentials)
            .field("policy", &self.policy)
            .field("max_lifetime", &self.max_lifetime)
            .field("max_allocations_per_user", &self.max_allocations_per_user)
            .field("max_allocations", &self.max_allocations)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    pub fn new(realm: &str, credentials: Credentials, nonce_secret: [u8; 32]) -> ServerConfig {
        ServerConfig {
            realm: realm.to_owned(),
            credentials,
            nonce_secret,
            nonce_lifetime: Duration::from_secs(600),
            policy: PeerPolicy::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_allocations_per_user: 10,
            max_allocations: 10_000,
            max_permissions_per_allocation: 128,
            max_channels_per_allocation: 128,
            max_tcp_connections_per_allocation: 64,
            max_pending_tcp_connections_per_allocation: 16,
            unauthenticated_per_second: 20,
            max_bytes_per_second: None,
            max_bytes_per_second_per_user: None,
            capacity: None,
            software: None,
            shard: (0, 1),
        }
    }
}

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// RFC 8656 §2: client address, server address and transport identify an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// The fields packed into one write: the derived hash fed SipHash about ten small writes,
/// the largest share of hashing per relayed datagram. Equal tuples pack equally (IPv4 as
/// IPv4-mapped IPv6); IPv6 flow info and scope id are left out, which only adds collisions.
impl Hash for FiveTuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut packed = [0u8; 37];
        packed[0] = self.transport as u8;
        for (at, addr) in [(1, self.client), (19, self.server)] {
            let ip = match addr.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            packed[at..at + 16].copy_from_slice(&ip.octets());
            packed[at + 16..at + 18].copy_from_slice(&addr.port().to_be_bytes());
        }
        state.write(&packed);
    }
}

/// What to do after a client packet. Replies are in the caller's `out` buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Nothing,
    /// Send `out` back to the client on the same 5-tuple.
    Reply,
    /// Send `packet[payload]` from the relay to the peer.
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        payload: Range<usize>,
    },
}

/// What to do after a packet from a peer arrived on a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAction {
    Nothing,
    /// Send `out` (a Data indication or ChannelData) to the client of this 5-tuple.
    ToClient(FiveTuple),
}

/// Counters and gauges for metrics. Bad input is counted here and logged at debug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    pub allocations: u64,
    pub permissions: u64,
    pub channels: u64,
    pub allocations_created: u64,
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_to_clients: u64,
    pub bytes_to_clients: u64,
    pub auth_failures: u64,
    pub refused_peers: u64,
    pub dropped: u64,
    /// Packets dropped because their allocation was over its bandwidth limit.
    pub over_bandwidth: u64,
    /// Packets dropped because their user's bandwidth (over every allocation) was used up.
    pub over_user_bandwidth: u64,
    /// Packets dropped because the server's bandwidth capacity was used up.
    pub over_capacity: u64,
    /// Allocates refused (486) while the capacity was used up.
    pub capacity_refusals: u64,
    pub unauthenticated_throttled: u64,
    /// RFC 6062 peer data connections now (connecting, waiting for their bind, or bound).
    pub tcp_connections: u64,
    /// Peer data connections established (Connect succeeded, or a peer was accepted).
    pub tcp_connections_opened: u64,
    /// Connect requests answered 447 (refused, unreachable, or no answer in 30 s).
    pub tcp_connect_failures: u64,
    /// Bytes piped between client and peer data connections, as the I/O layer reports them.
    pub tcp_bytes_to_peers: u64,
    pub tcp_bytes_to_clients: u64,
    /// Allocations that went (expired, deleted, connection closed) without relaying a packet.
    pub silent_allocations: u64,
    /// Allocate requests refused for the per-user (486) or server-wide (508) quota.
    pub quota_refusals: u64,
    /// STUN Binding requests on the TURN port: answered, rejected (an error response), ignored.
    pub binding_answered: u64,
    pub binding_rejected: u64,
    pub binding_ignored: u64,
}

impl TurnStats {
    /// Adds `other`'s counters and gauges to these (the shards of one server).
    pub fn add(&mut self, other: &TurnStats) {
        let TurnStats {
            allocations,
            permissions,
            channels,
            allocations_created,
            packets_to_peers,
            bytes_to_peers,
            packets_to_clients,
            bytes_to_clients,
            auth_failures,
            refused_peers,
            dropped,
            over_bandwidth,
            over_user_bandwidth,
            over_capacity,
            capacity_refusals,
            unauthenticated_throttled,
            tcp_connections,
            tcp_connections_opened,
            tcp_connect_failures,
            tcp_bytes_to_peers,
            tcp_bytes_to_clients,
            silent_allocations,
            quota_refusals,
            binding_answered,
            binding_rejected,
            binding_ignored,
        } = other;
        self.allocations += allocations;
        self.permissions += permissions;
        self.channels += channels;
        self.allocations_created += allocations_created;
        self.packets_to_peers += packets_to_peers;
        self.bytes_to_peers += bytes_to_peers;
        self.packets_to_clients += packets_to_clients;
        self.bytes_to_clients += bytes_to_clients;
        self.auth_failures += auth_failures;
        self.refused_peers += refused_peers;
        self.dropped += dropped;
        self.over_bandwidth += over_bandwidth;
        self.over_user_bandwidth += over_user_bandwidth;
        self.over_capacity += over_capacity;
        self.capacity_refusals += capacity_refusals;
        self.unauthenticated_throttled += unauthenticated_throttled;
        self.tcp_connections += tcp_connections;
        self.tcp_connections_opened += tcp_connections_opened;
        self.tcp_connect_failures += tcp_connect_failures;
        self.tcp_bytes_to_peers += tcp_bytes_to_peers;
        self.tcp_bytes_to_clients += tcp_bytes_to_clients;
        self.silent_allocations += silent_allocations;
        self.quota_refusals += quota_refusals;
        self.binding_answered += binding_answered;
        self.binding_rejected += binding_rejected;
        self.binding_ignored += binding_ignored;
    }
}

#[derive(Debug)]
struct Allocation {
    username: String,
    relays: Vec<Relay>,
    expires: Instant,
    allocate_tid: TransactionId,
    // Ordered maps, not hash maps: each relayed datagram looks up one or two of these, they
    // hold a few entries (bounded by the permission and channel limits), and a comparison or
    // two costs less than SipHash of an address (about 2% of the relay's CPU in a profile).
    permissions: BTreeMap<IpAddr, Instant>,
    channels: BTreeMap<u16, (SocketAddr, Instant)>,
    channel_of_peer: BTreeMap<SocketAddr, u16>,
    /// Bandwidth budget: bytes left and when it was last topped up.
    budget: (u64, Instant),
    /// Its user's bandwidth, shared with the user's other allocations on every core.
    user_rate: Option<Arc<SharedRate>>,
    /// RFC 6062: a TCP allocation (its relay listens; no channels, no Send indications).
    tcp: bool,
    /// RFC 6062: this allocation's peer data connections.
    connections: Vec<ConnectionId>,
    /// Whether it has relayed a packet, and if not, why (see [`TurnServer::note_silence`]).
    silence: Silence,
}

/// Which bandwidth limit a packet would go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Allocation,
    User,
    Capacity,
}

/// What an operator is told about an allocation that relays nothing: the first reason at
/// info when it happens (once per allocation, so a flood cannot fill the log), and the
/// last one when the allocation goes without ever having relayed a packet.
#[derive(Debug, Default)]
struct Silence {
    relayed: bool,
    reason: Option<&'static str>,
    told: bool,
}

impl Allocation {
    /// Takes `bytes` from the allocation's budget (at most `rate` a second), its user's and
    /// the server's `capacity`, or says which limit it would go over; a refused packet is
    /// charged to none of them.
    fn spend(
        &mut self,
        now: Instant,
        bytes: usize,
        rate: Option<u64>,
        capacity: Option<&SharedRate>,
    ) -> Result<(), Over> {
        if let Some(rate) = rate {
            if bytes as u64 > self.budget_left(now, rate) {
                return Err(Over::Allocation);
            }
        }
        if self.user_rate.as_ref().is_some_and(|user| !user.spend(now, bytes)) {
            return Err(Over::User);
        }
        if capacity.is_some_and(|capacity| !capacity.spend(now, bytes)) {
            if let Some(user) = &self.user_rate {
                user.refund(bytes);
            }
            return Err(Over::Capacity);
        }
        if rate.is_some() {
            self.budget.0 -= bytes as u64;
        }
        Ok(())
    }

    /// The bytes the budget holds now (topped up at `rate` per second, up to one second's
    /// worth).
    fn budget_left(&mut self, now: Instant, rate: u64) -> u64 {
        let (tokens, last) = &mut self.budget;
        let elapsed = now.saturating_duration_since(*last);
        let refill = (elapsed.as_micros().min(u128::from(u64::MAX)) as u64).saturating_mul(rate) / 1_000_000;
        if refill > 0 {
            *tokens = tokens.saturating_add(refill).min(rate);
            *last = now;
        }
        *tokens
    }

    fn relay_for(&self, peer: &SocketAddr) -> Option<&Relay> {
        self.relays.iter().find(|r| r.addr.is_ipv4() == peer.is_ipv4())
    }

    fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions.get(&peer).is_some_and(|&expires| expires > now)
    }
}

/// Who the request is from, once authenticated.
#[derive(Debug)]
struct Auth {
    username: String,
    key: Key,
    sha256: bool,
}

/// How to answer a request: its method and transaction id, and whether to add FINGERPRINT.
#[derive(Debug, Clone)]
struct Reply {
    method: Method,
    tid: TransactionId,
    fingerprint: bool,
}

fn header_reply(header: &Header<'_>) -> Reply {
    Reply { method: header.method(), tid: header.transaction_id(), fingerprint: false }
}

impl Reply {
    fn to(message: &Message<'_>) -> Reply {
        Reply {
            method: message.method(),
            tid: message.transaction_id(),
            fingerprint: message.has_fingerprint(),
        }
    }

    fn writer<'b>(&self, out: &'b mut Vec<u8>, class: Class) -> MessageWriter<'b> {
        MessageWriter::new(out, class, self.method, self.tid)
    }

    /// Adds MESSAGE-INTEGRITY(-SHA256) with the request's key, then FINGERPRINT if the
    /// request had one (RFC 8489 §9.2.4, §7.3).
    fn seal(&self, mut w: MessageWriter<'_>, auth: Option<&Auth>) {
        if let Some(auth) = auth {
            let _ = if auth.sha256 {
                w.message_integrity_sha256(&auth.key)
            } else {
                w.message_integrity(&auth.key)
            };
        }
        if self.fingerprint {
            let _ = w.fingerprint();
        }
        w.finish();
    }
}

/// An authenticated request on its way to its handler. A handler answers it by giving it
/// to one of the answering methods (`refuse`, `succeed`, ...), which consume it: one
/// request, one answer.
#[derive(Debug)]
struct Request<'a> {
    now: Instant,
    tuple: FiveTuple,
    message: &'a Message<'a>,
    auth: Auth,
    reply: Reply,
    /// The answer goes here.
    out: &'a mut Vec<u8>,
}

/// Result of request processing that already wrote its answer.
type Handled = ClientAction;

/// The TURN server state machine.
#[derive(Debug)]
pub struct TurnServer {
    config: ServerConfig,
    nonces: NonceIssuer,
    limiter: RateLimiter,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayId, FiveTuple>,
    per_user: HashMap<String, usize>,
    /// Users' bandwidth when the I/O layer does not share it between cores.
    user_rates: HashMap<String, Arc<SharedRate>>,
    /// RESERVATION-TOKEN → the reserved relay and when the reservation lapses.
    reservations: HashMap<[u8; 8], (Relay, Instant)>,
    reservations_issued: u64,
    epoch: (Instant, u64),
    next_sweep: Instant,
    stats: TurnStats,
    tcp: TcpConnections,
}

impl TurnServer {
    /// `unix_now` is the wall-clock time (Unix seconds) at `now`; REST usernames and nonces
    /// carry wall-clock times.
    pub fn new(config: ServerConfig, now: Instant, unix_now: u64) -> TurnServer {
        let nonces = NonceIssuer::new(config.nonce_secret, config.nonce_lifetime.as_secs());
        let seed = u64::from_le_bytes(config.nonce_secret[..8].try_into().expect("8 bytes"));
        let rate = config.unauthenticated_per_second;
        TurnServer {
            config,
            nonces,
            limiter: RateLimiter::new(rate, rate.saturating_mul(10), seed),
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            user_rates: HashMap::new(),
            reservations: HashMap::new(),
            reservations_issued: 0,
            epoch: (now, unix_now),
            next_sweep: now + SWEEP_INTERVAL,
            stats: TurnStats::default(),
            tcp: TcpConnections::default(),
        }
    }

    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        self.next_sweep
    }

    /// Expires allocations, permissions and channels.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut impl RelayProvider) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let expired: Vec<FiveTuple> =
            self.allocations.iter().filter(|(_, a)| a.expires <= now).map(|(t, _)| *t).collect();
        for tuple in expired {
            tracing::debug!(client = %tuple.client, "allocation expired");
            self.remove_allocation(&tuple, relays);
        }
        self.reservations.retain(|_, (relay, expires)| {
            let keep = *expires > now;
            if !keep {
                relays.close(relay.id);
            }
            keep
        });
        let (mut permissions, mut channels) = (0, 0);
        for allocation in self.allocations.values_mut() {
            allocation.permissions.retain(|_, expires| *expires > now);
            // RFC 8656 §12: an expired binding keeps its number and peer for five more
            // minutes, so late packets cannot reach a new peer on the old number.
            allocation.channels.retain(|_, (_, expires)| *expires + CHANNEL_QUARANTINE > now);
            let bound = &allocation.channels;
            allocation.channel_of_peer.retain(|_, number| bound.contains_key(number));
            permissions += allocation.permissions.len() as u64;
            channels += allocation.channels.values().filter(|(_, expires)| *expires > now).count() as u64;
        }
        self.stats.permissions = permissions;
        self.stats.channels = channels;
        self.sweep_tcp(now);
    }

    /// A packet from a client: STUN (requests, Send indications) or ChannelData.
    pub fn handle_client(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &[u8],
        out: &mut Vec<u8>,
        relays: &mut impl RelayProvider,
    ) -> ClientAction {
        out.clear();
        match packet.first() {
            Some(b) if b & 0xC0 == 0x40 => self.client_channel_data(now, &tuple, packet),
            Some(b) if b & 0xC0 == 0 => self.client_stun(now, tuple, packet, out, relays),
            _ => self.drop_packet("not stun or channeldata"),
        }
    }

    fn drop_packet(&mut self, why: &'static str) -> ClientAction {
        self.stats.dropped += 1;
        tracing::debug!(why, "dropped client packet");
        ClientAction::Nothing
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn client_stun(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &[u8],
        out: &mut Vec<u8>,
        relays: &mut impl RelayProvider,
    ) -> ClientAction {
        let Ok(header) = Header::parse(packet) else { return self.drop_packet("not stun") };
        let request = header.class() == Class::Request;
        let message = match Message::parse(packet) {
            Ok(message) => message,
            Err(_) if request && usize::from(header.length()) + 20 == packet.len() => {
                return self.error(out, &header_reply(&header), ErrorCode::BAD_REQUEST, None);
            }
            Err(_) => return self.drop_packet("malformed stun"),
        };
        if message.has_fingerprint() && !message.verify_fingerprint() {
            return self.drop_packet("bad fingerprint");
        }
        let reply = Reply::to(&message);
        match (message.class(), message.method()) {
            (Class::Request, Method::BINDING) => match binding::respond(packet, tuple.client, out) {
                binding::Outcome::Ignored(_) => {
                    self.stats.binding_ignored += 1;
                    ClientAction::Nothing
                }
                binding::Outcome::Rejected(_) => {
                    self.stats.binding_rejected += 1;
                    ClientAction::Reply
                }
                binding::Outcome::Answered => {
                    self.stats.binding_answered += 1;
                    ClientAction::Reply
                }
            },
            (Class::Request, method)
                if [
                    Method::ALLOCATE,
                    Method::REFRESH,
                    Method::CREATE_PERMISSION,
                    Method::CHANNEL_BIND,
                    Method::CONNECT,
                    Method::CONNECTION_BIND,
                ]
                .contains(&method) =>
            {
                if let Some(action) = self.unknown_attributes(&message, out, &reply) {
                    return action;
                }
                // Malformed comprehension-optional attributes are ignored like unknown ones.
                let required = message.attributes().filter(|raw| raw.typ.is_comprehension_required());
                if let Some(Err(e)) = required.map(|raw| message.decode(raw)).find(Result::is_err) {
                    tracing::debug!(client = %tuple.client, error = %e, "malformed attribute");
                    return self.error(out, &reply, ErrorCode::BAD_REQUEST, None);
                }
                let auth = match self.authenticate(now, &tuple, &message, out, &reply) {
                    Ok(auth) => auth,
                    Err(action) => return action,
                };
                let req = Request { now, tuple, message: &message, auth, reply, out };
                // RFC 8656 §7.3, §9.2, §12.2, RFC 6062 §5.2: everything but Allocate needs an
                // allocation; ConnectionBind comes on a new connection, without one.
                if method != Method::ALLOCATE
                    && method != Method::CONNECTION_BIND
                    && !self.allocations.contains_key(&tuple)
                {
                    tracing::info!(client = %tuple.client, transport = ?tuple.transport, ?method,
                        "request without an allocation on its 5-tuple (437): expired, deleted, or the client's address changed");
                    return self.refuse(req, ErrorCode::ALLOCATION_MISMATCH);
                }
                match method {
                    Method::ALLOCATE => self.allocate(req, relays),
                    Method::REFRESH => self.refresh(req, relays),
                    Method::CREATE_PERMISSION => self.create_permission(req),
                    Method::CONNECT => self.connect(req),
                    Method::CONNECTION_BIND => self.connection_bind(req),
                    _ => self.channel_bind(req),
                }
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, &tuple, &message, packet),
            _ => self.drop_packet("unsupported class or method"),
        }
    }

    /// Whether this 5-tuple holds an allocation (the I/O layer gives such connections a
    /// longer idle time).
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.allocations.contains_key(tuple)
    }

    /// A packet over a bandwidth limit is dropped and counted.
    fn over_limit(&mut self, tuple: &FiveTuple, over: Over) {
        let reason = match over {
            Over::Allocation => {
                self.stats.over_bandwidth += 1;
                "over its bandwidth limit"
            }
            Over::User => {
                self.stats.over_user_bandwidth += 1;
                "over its user's bandwidth limit"
            }
            Over::Capacity => {
                self.stats.over_capacity += 1;
                "over the server's bandwidth capacity"
            }
        };
        self.note_silence(tuple, reason);
    }

    /// Something kept the allocation on `tuple` from relaying: the operator hears of the
    /// first such reason of an allocation that has relayed nothing yet.
    fn note_silence(&mut self, tuple: &FiveTuple, reason: &'static str) {
        let Some(allocation) = self.allocations.get_mut(tuple) else { return };
        let silence = &mut allocation.silence;
        if silence.relayed {
            return;
        }
        silence.reason = Some(reason);
        if !silence.told {
            silence.told = true;
            tracing::info!(client = %tuple.client, transport = ?tuple.transport, user = %allocation.username,
                reason, "allocation relays nothing yet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

    fn hash(tuple: &FiveTuple) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(tuple)
    }

    #[test]
    fn five_tuple_hash_follows_every_field() {
        let base = FiveTuple {
            transport: Transport::Udp,
            client: "192.0.2.1:5000".parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
        };
        assert_eq!(hash(&base), hash(&base.clone()));
        let changed = [
            FiveTuple { transport: Transport::Tcp, ..base },
            FiveTuple { client: "192.0.2.1:5001".parse().unwrap(), ..base },
            FiveTuple { client: "192.0.2.3:5000".parse().unwrap(), ..base },
            FiveTuple { server: "192.0.2.2:3479".parse().unwrap(), ..base },
            FiveTuple { client: base.server, server: base.client, ..base },
            FiveTuple { client: "[2001:db8::1]:5000".parse().unwrap(), ..base },
        ];
        for other in changed {
            assert_ne!(hash(&base), hash(&other), "{other:?}");
        }
    }

    #[test]
    fn allocations_are_found_by_an_equal_five_tuple() {
        let tuple = FiveTuple {
            transport: Transport::Udp,
            client: "[2001:db8::1]:5000".parse().unwrap(),
            server: "[2001:db8::2]:3478".parse().unwrap(),
        };
        let mut map = HashMap::new();
        map.insert(tuple, 1);
        let mapped = FiveTuple { client: "[::ffff:192.0.2.1]:5000".parse().unwrap(), ..tuple };
        let v4 = FiveTuple { client: "192.0.2.1:5000".parse().unwrap(), ..tuple };
        map.insert(v4, 2);
        assert_eq!(map.get(&tuple), Some(&1));
        assert_eq!(map.get(&v4), Some(&2));
        // Hashes like `v4` but is not equal to it.
        assert_eq!(map.get(&mapped), None);
    }
}
