//! The TURN server core (RFC 8656, RFC 6156, RFC 6062): no sockets, no clock, one owner.

mod tcp;

pub use tcp::{ConnectionId, TcpOutput};

use crate::auth::{Credentials, NonceCheck, NonceIssuer, RateLimiter, Refusal};
use crate::channel::{ChannelData, CHANNEL_MAX, CHANNEL_MIN};
use crate::policy::PeerPolicy;
use peerlink_stun::binding;
use peerlink_stun::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, AttributeType, Class, ErrorCode, Header, Key,
    Message, MessageWriter, Method, PasswordAlgorithm, TransactionId, TypeList,
};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};
use tcp::TcpConnections;

/// RFC 8656 §19 / RFC 8489: IANA protocol number of UDP in REQUESTED-TRANSPORT.
const UDP: u8 = 17;
/// RFC 6062 §6.1: TCP in REQUESTED-TRANSPORT.
const TCP: u8 = 6;
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 8656 §7.2: a reserved port is held about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// ADDITIONAL-ADDRESS-FAMILY as drafts numbered it, still sent by coturn's clients.
const LEGACY_ADDITIONAL_ADDRESS_FAMILY: AttributeType = AttributeType(0x8032);
/// At most this many types are listed in UNKNOWN-ATTRIBUTES.
const MAX_UNKNOWN_LISTED: usize = 16;

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
    pub software: Option<String>,
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
            software: None,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// A relay socket, opened by the I/O layer on the core's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    pub id: RelayId,
    pub addr: SocketAddr,
}

/// Which relay port an Allocate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    /// EVEN-PORT with R=0.
    Even,
    /// EVEN-PORT with R=1: an even port, and the next one reserved.
    EvenWithNext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// No relay address of this family is configured (→ 440).
    FamilyUnsupported,
    /// No port free in the relay range (→ 508).
    Exhausted,
    /// This provider has no TCP relays (→ 442).
    TransportUnsupported,
}

/// The I/O layer's side of relay sockets.
pub trait RelayProvider {
    /// Opens a UDP relay socket of `family` (RFC 8656 §14.6 for the port requests). With
    /// [`PortRequest::EvenWithNext`] the second relay is on the next (odd) port.
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(Relay, Option<Relay>), RelayError>;
    /// RFC 6062 §5.1: opens a TCP relay of `family`, a listening socket on the relayed
    /// transport address; peers' connections to it are reported with
    /// [`TurnServer::handle_peer_accept`], and connections to peers are opened from it.
    fn open_tcp(&mut self, family: AddressFamily) -> Result<Relay, RelayError> {
        let _ = family;
        Err(RelayError::TransportUnsupported)
    }
    /// Closes a UDP or TCP relay.
    fn close(&mut self, relay: RelayId);
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
}

#[derive(Debug)]
struct Allocation {
    username: String,
    relays: Vec<Relay>,
    expires: Instant,
    allocate_tid: TransactionId,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    /// Bandwidth budget: bytes left and when it was last topped up.
    budget: (u64, Instant),
    /// RFC 6062: a TCP allocation (its relay listens; no channels, no Send indications).
    tcp: bool,
    /// RFC 6062: this allocation's peer data connections.
    connections: Vec<ConnectionId>,
}

impl Allocation {
    /// Takes `bytes` from the bandwidth budget; false when it would go over `rate`.
    fn spend(&mut self, now: Instant, bytes: usize, rate: Option<u64>) -> bool {
        let Some(rate) = rate else { return true };
        let bytes = bytes as u64;
        if bytes > self.budget_left(now, rate) {
            return false;
        }
        self.budget.0 -= bytes;
        true
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

    /// A packet from `peer` on relay `relay`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> PeerAction {
        out.clear();
        let peer = binding::canonical(peer);
        let Some(tuple) = self.by_relay.get(&relay).copied() else { return PeerAction::Nothing };
        let rate = self.config.max_bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&tuple) else { return PeerAction::Nothing };
        if allocation.tcp {
            return self.drop_peer();
        }
        // RFC 8656 §11: data from a peer without a permission is dropped.
        if !allocation.permitted(peer.ip(), now) {
            self.stats.dropped += 1;
            tracing::debug!(%peer, client = %tuple.client, "peer data without permission dropped");
            return PeerAction::Nothing;
        }
        if !allocation.spend(now, payload.len(), rate) {
            self.stats.over_bandwidth += 1;
            return PeerAction::Nothing;
        }
        let channel = allocation
            .channel_of_peer
            .get(&peer)
            .copied()
            .filter(|number| allocation.channels.get(number).is_some_and(|(_, expires)| *expires > now));
        if let Some(number) = channel {
            if payload.len() > usize::from(u16::MAX) {
                return self.drop_peer();
            }
            ChannelData::encode(number, payload, tuple.transport != Transport::Udp, out);
        } else {
            let mut tid = [0u8; 12];
            // Indications need a transaction id; it need not be unpredictable.
            tid[..8].copy_from_slice(&self.stats.packets_to_clients.to_be_bytes());
            let mut w = MessageWriter::new(out, Class::Indication, Method::DATA, TransactionId(tid));
            let written = w
                .attribute(&Attribute::XorPeerAddress(peer))
                .and_then(|()| w.attribute(&Attribute::Data(payload)));
            if written.is_err() {
                return self.drop_peer();
            }
        }
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += payload.len() as u64;
        PeerAction::ToClient(tuple)
    }

    fn drop_peer(&mut self) -> PeerAction {
        self.stats.dropped += 1;
        PeerAction::Nothing
    }

    fn drop_packet(&mut self, why: &'static str) -> ClientAction {
        self.stats.dropped += 1;
        tracing::debug!(why, "dropped client packet");
        ClientAction::Nothing
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn client_channel_data(&mut self, now: Instant, tuple: &FiveTuple, packet: &[u8]) -> ClientAction {
        let Some(data) = ChannelData::parse(packet) else { return self.drop_packet("bad channeldata") };
        let rate = self.config.max_bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(tuple) else {
            return self.drop_packet("no allocation");
        };
        let Some(&(peer, expires)) = allocation.channels.get(&data.channel) else {
            return self.drop_packet("channel not bound");
        };
        if expires <= now || !allocation.permitted(peer.ip(), now) {
            return self.drop_packet("channel or permission expired");
        }
        let Some(relay) = allocation.relay_for(&peer) else { return self.drop_packet("no relay") };
        let relay = relay.id;
        if !allocation.spend(now, data.payload.len(), rate) {
            self.stats.over_bandwidth += 1;
            return ClientAction::Nothing;
        }
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += data.payload.len() as u64;
        ClientAction::ToPeer { relay, peer, payload: 4..4 + data.payload.len() }
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
                binding::Outcome::Ignored(_) => ClientAction::Nothing,
                _ => ClientAction::Reply,
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
                // RFC 8656 §7.3, §9.2, §12.2, RFC 6062 §5.2: everything but Allocate needs an
                // allocation; ConnectionBind comes on a new connection, without one.
                if method != Method::ALLOCATE
                    && method != Method::CONNECTION_BIND
                    && !self.allocations.contains_key(&tuple)
                {
                    return self.error(out, &reply, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
                }
                match method {
                    Method::ALLOCATE => self.allocate(now, tuple, &message, auth, out, &reply, relays),
                    Method::REFRESH => self.refresh(now, tuple, &message, auth, out, &reply, relays),
                    Method::CREATE_PERMISSION => {
                        self.create_permission(now, tuple, &message, auth, out, &reply)
                    }
                    Method::CONNECT => self.connect(now, tuple, &message, auth, out, &reply),
                    Method::CONNECTION_BIND => self.connection_bind(tuple, &message, auth, out, &reply),
                    _ => self.channel_bind(now, tuple, &message, auth, out, &reply),
                }
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, &tuple, &message, packet),
            _ => self.drop_packet("unsupported class or method"),
        }
    }

    /// RFC 8489 §6.3.1: unknown comprehension-required attributes → 420.
    fn unknown_attributes(
        &mut self,
        message: &Message<'_>,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Option<Handled> {
        let mut unknown = [AttributeType(0); MAX_UNKNOWN_LISTED];
        let unknown = message.collect_unknown_comprehension_required(&mut unknown);
        if unknown.is_empty() {
            return None;
        }
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(ErrorCode::UNKNOWN_ATTRIBUTE));
        let _ = w.attribute(&Attribute::UnknownAttributes(TypeList::Values(unknown)));
        reply.seal(w, None);
        Some(ClientAction::Reply)
    }

    /// RFC 8489 §9.2.4: long-term credential checks, in the RFC's order.
    fn authenticate(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        message: &Message<'_>,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Result<Auth, Handled> {
        let unix_now = self.unix_now(now);
        if !message.has_integrity() && !message.has_integrity_sha256() {
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        }
        let text = |typ| match message.get(typ) {
            Some(Ok(Attribute::Username(s) | Attribute::Realm(s) | Attribute::Nonce(s))) => Some(s),
            _ => None,
        };
        let (Some(username), Some(realm), Some(nonce)) =
            (text(AttributeType::USERNAME), text(AttributeType::REALM), text(AttributeType::NONCE))
        else {
            // USERHASH alone is not accepted: REST usernames cannot be found by hash.
            return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None));
        };
        match self.nonces.check(nonce, nonce_subject(tuple), unix_now) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Err(self.challenge(now, tuple, out, reply, ErrorCode::STALE_NONCE)),
            NonceCheck::Invalid => {
                return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED))
            }
        }
        if realm != self.config.realm {
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        }
        // RFC 8489 §9.2.4: a client that saw our password-algorithms nonce and picked an
        // algorithm must echo our list unchanged.
        let algorithm = match message.get(AttributeType::PASSWORD_ALGORITHM) {
            // PASSWORD-ALGORITHMS without a choice is malformed.
            None if message.attribute(AttributeType::PASSWORD_ALGORITHMS).is_some() => {
                return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None));
            }
            None => PasswordAlgorithm::Md5,
            Some(Ok(Attribute::PasswordAlgorithm(chosen))) => {
                let echoed = match message.get(AttributeType::PASSWORD_ALGORITHMS) {
                    Some(Ok(Attribute::PasswordAlgorithms(list))) => list == AlgorithmList::Values(&OFFERED),
                    _ => false,
                };
                match (echoed, PasswordAlgorithm::from_code(chosen.algorithm)) {
                    (true, Some(algorithm)) if chosen.parameters.is_empty() => algorithm,
                    _ => return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None)),
                }
            }
            Some(_) => return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None)),
        };
        let keys = match self.config.credentials.keys(username, realm, algorithm, unix_now) {
            Ok(keys) => keys,
            Err(refusal) => {
                self.stats.auth_failures += 1;
                tracing::debug!(client = %tuple.client, ?refusal, "authentication refused");
                return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
            }
        };
        let sha256 = message.has_integrity_sha256();
        let key = keys.into_iter().find(|key| {
            if sha256 {
                message.verify_integrity_sha256(key)
            } else {
                message.verify_integrity(key)
            }
        });
        let Some(key) = key else {
            self.stats.auth_failures += 1;
            tracing::debug!(client = %tuple.client, refusal = ?Refusal::UnknownUser, "integrity check failed");
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        };
        // RFC 8656 §6.2: later requests on an allocation must come from its owner.
        if let Some(allocation) = self.allocations.get(tuple) {
            if allocation.username != username {
                let auth = Auth { username: username.to_owned(), key, sha256 };
                return Err(self.error(out, reply, ErrorCode::WRONG_CREDENTIALS, Some(&auth)));
            }
        }
        Ok(Auth { username: username.to_owned(), key, sha256 })
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS; throttled per IP.
    fn challenge(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        out: &mut Vec<u8>,
        reply: &Reply,
        error: ErrorCode<'static>,
    ) -> Handled {
        // Only UDP sources can be spoofed, and a stale nonce (438) proves we served this
        // client before: neither is throttled, so a spoofing flood cannot starve a victim.
        let ms = now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        let throttle = tuple.transport == Transport::Udp && error.code != ErrorCode::STALE_NONCE.code;
        if throttle && !self.limiter.allow(tuple.client.ip(), ms) {
            self.stats.unauthenticated_throttled += 1;
            return ClientAction::Nothing;
        }
        let nonce = self.nonces.issue(nonce_subject(tuple), self.unix_now(now));
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(error));
        let _ = w.attribute(&Attribute::Realm(&self.config.realm));
        let _ = w.attribute(&Attribute::Nonce(&nonce));
        let _ = w.attribute(&Attribute::PasswordAlgorithms(AlgorithmList::Values(&OFFERED)));
        self.software(&mut w);
        reply.seal(w, None);
        ClientAction::Reply
    }

    fn error(
        &mut self,
        out: &mut Vec<u8>,
        reply: &Reply,
        error: ErrorCode<'static>,
        auth: Option<&Auth>,
    ) -> Handled {
        tracing::debug!(code = error.code, method = ?reply.method, "error response");
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(error));
        self.software(&mut w);
        reply.seal(w, auth);
        ClientAction::Reply
    }

    fn software(&self, w: &mut MessageWriter<'_>) {
        if let Some(software) = &self.config.software {
            let _ = w.attribute(&Attribute::Software(software));
        }
    }

    fn lifetime(&self, message: &Message<'_>) -> Duration {
        // RFC 8656 §7.2: min(requested, maximum), but never below the default.
        match message.get(AttributeType::LIFETIME) {
            Some(Ok(Attribute::Lifetime(secs))) => Duration::from_secs(u64::from(secs))
                .min(self.config.max_lifetime)
                .max(self.config.default_lifetime),
            _ => self.config.default_lifetime,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        message: &Message<'_>,
        auth: Auth,
        out: &mut Vec<u8>,
        reply: &Reply,
        relays: &mut impl RelayProvider,
    ) -> Handled {
        // RFC 8656 §7.2 step 2: an existing allocation answers its own retransmission again.
        if let Some(existing) = self.allocations.get(&tuple) {
            if existing.allocate_tid != message.transaction_id() {
                return self.error(out, reply, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
            }
            let relays_now: Vec<Relay> = existing.relays.clone();
            let remaining = existing.expires.saturating_duration_since(now);
            return self.allocate_success(tuple, &relays_now, remaining, None, None, out, reply, &auth);
        }
        let tcp = match message.get(AttributeType::REQUESTED_TRANSPORT) {
            Some(Ok(Attribute::RequestedTransport(UDP))) => false,
            Some(Ok(Attribute::RequestedTransport(TCP))) => true,
            Some(Ok(Attribute::RequestedTransport(_))) => {
                return self.error(out, reply, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, Some(&auth));
            }
            _ => return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth)),
        };
        let port_request = match message.get(AttributeType::EVEN_PORT) {
            Some(Ok(Attribute::EvenPort(true))) => PortRequest::EvenWithNext,
            Some(Ok(Attribute::EvenPort(false))) => PortRequest::Even,
            _ => PortRequest::Any,
        };
        let requested = match message.get(AttributeType::REQUESTED_ADDRESS_FAMILY) {
            Some(Ok(Attribute::RequestedAddressFamily(family))) => Some(family),
            _ => None,
        };
        let additional = match message.get(AttributeType::ADDITIONAL_ADDRESS_FAMILY) {
            Some(Ok(Attribute::AdditionalAddressFamily(family))) => Some(family),
            // coturn's clients still send the pre-RFC number 0x8032 (same layout).
            _ => match message.attribute(LEGACY_ADDITIONAL_ADDRESS_FAMILY).map(|raw| raw.value) {
                Some([0x01, ..]) => Some(AddressFamily::V4),
                Some([0x02, ..]) => Some(AddressFamily::V6),
                _ => None,
            },
        };
        let token = match message.get(AttributeType::RESERVATION_TOKEN) {
            Some(Ok(Attribute::ReservationToken(token))) => Some(token),
            _ => None,
        };
        // RFC 8656 §7.2 steps 4–6: conflicting combinations are bad requests.
        if (token.is_some()
            && (port_request != PortRequest::Any || requested.is_some() || additional.is_some()))
            || (requested.is_some() && additional.is_some())
            || (additional.is_some() && port_request == PortRequest::EvenWithNext)
            || additional == Some(AddressFamily::V4)
        {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        }
        // RFC 6062 §5.1: a TCP allocation needs a TCP or TLS control connection and takes no
        // DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN. A second address family is not
        // offered for TCP relays.
        if tcp
            && (tuple.transport == Transport::Udp
                || message.attribute(AttributeType::DONT_FRAGMENT).is_some()
                || message.attribute(AttributeType::EVEN_PORT).is_some()
                || token.is_some()
                || additional.is_some())
        {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        }
        let owned = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if owned >= self.config.max_allocations_per_user {
            return self.error(out, reply, ErrorCode::ALLOCATION_QUOTA_REACHED, Some(&auth));
        }
        // Reserved ports hold sockets too, so they count against the total.
        if self.allocations.len() + self.reservations.len() >= self.config.max_allocations {
            return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        }
        let mut issued_token = None;
        let first = if let Some(token) = token {
            // RFC 8656 §7.2: an unknown or lapsed token → 508.
            match self.reservations.remove(&token) {
                Some((relay, expires)) if expires > now => relay,
                Some((relay, _)) => {
                    relays.close(relay.id);
                    return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
                }
                None => return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth)),
            }
        } else if tcp {
            match relays.open_tcp(requested.unwrap_or(AddressFamily::V4)) {
                Ok(relay) => relay,
                Err(RelayError::FamilyUnsupported) => {
                    return self.error(out, reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, Some(&auth));
                }
                Err(RelayError::Exhausted) => {
                    return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth))
                }
                Err(RelayError::TransportUnsupported) => {
                    return self.error(out, reply, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, Some(&auth))
                }
            }
        } else {
            let family = requested.unwrap_or(AddressFamily::V4);
            match relays.open(family, port_request) {
                Ok((relay, reserved)) => {
                    if let Some(reserved) = reserved {
                        let token = self.reservation_token();
                        self.reservations.insert(token, (reserved, now + RESERVATION_LIFETIME));
                        issued_token = Some(token);
                    }
                    relay
                }
                Err(RelayError::FamilyUnsupported) => {
                    return self.error(out, reply, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, Some(&auth));
                }
                Err(RelayError::Exhausted) => {
                    return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth))
                }
                Err(RelayError::TransportUnsupported) => {
                    return self.error(out, reply, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, Some(&auth))
                }
            }
        };
        let mut opened = vec![first];
        // RFC 8656 §7.2: a failed additional IPv6 relay is reported, not fatal.
        let mut address_error = None;
        if additional == Some(AddressFamily::V6) {
            match relays.open(AddressFamily::V6, PortRequest::Any) {
                Ok((relay, _)) => opened.push(relay),
                Err(RelayError::FamilyUnsupported) => {
                    address_error = Some((AddressFamily::V6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
                }
                Err(RelayError::Exhausted | RelayError::TransportUnsupported) => {
                    address_error = Some((AddressFamily::V6, ErrorCode::INSUFFICIENT_CAPACITY))
                }
            }
        }
        let lifetime = self.lifetime(message);
        for relay in &opened {
            self.by_relay.insert(relay.id, tuple);
        }
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        self.allocations.insert(
            tuple,
            Allocation {
                username: auth.username.clone(),
                relays: opened.clone(),
                expires: now + lifetime,
                allocate_tid: message.transaction_id(),
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
                budget: (self.config.max_bytes_per_second.unwrap_or(0), now),
                tcp,
                connections: Vec::new(),
            },
        );
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.allocations_created += 1;
        tracing::debug!(client = %tuple.client, relay = %opened[0].addr, "allocation created");
        self.allocate_success(tuple, &opened, lifetime, address_error, issued_token, out, reply, &auth)
    }

    /// An unguessable RESERVATION-TOKEN: HMAC of a counter under the server's secret.
    fn reservation_token(&mut self) -> [u8; 8] {
        use hmac::{Hmac, Mac};
        self.reservations_issued += 1;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.config.nonce_secret)
            .expect("hmac takes any key length");
        mac.update(b"reservation");
        mac.update(&self.reservations_issued.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..8].try_into().expect("8 bytes")
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_success(
        &mut self,
        tuple: FiveTuple,
        relays: &[Relay],
        lifetime: Duration,
        address_error: Option<(AddressFamily, ErrorCode<'static>)>,
        token: Option<[u8; 8]>,
        out: &mut Vec<u8>,
        reply: &Reply,
        auth: &Auth,
    ) -> Handled {
        let mut w = reply.writer(out, Class::SuccessResponse);
        for relay in relays {
            let _ = w.attribute(&Attribute::XorRelayedAddress(relay.addr));
        }
        if let Some((family, error)) = address_error {
            let _ = w.attribute(&Attribute::AddressErrorCode { family, error });
        }
        if let Some(token) = token {
            let _ = w.attribute(&Attribute::ReservationToken(token));
        }
        let _ = w.attribute(&Attribute::Lifetime(lifetime.as_secs() as u32));
        let _ = w.attribute(&Attribute::XorMappedAddress(binding::canonical(tuple.client)));
        self.software(&mut w);
        reply.seal(w, Some(auth));
        ClientAction::Reply
    }

    #[allow(clippy::too_many_arguments)]
    fn refresh(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        message: &Message<'_>,
        auth: Auth,
        out: &mut Vec<u8>,
        reply: &Reply,
        relays: &mut impl RelayProvider,
    ) -> Handled {
        let Some(allocation) = self.allocations.get(&tuple) else {
            return self.error(out, reply, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        };
        if let Some(Ok(Attribute::RequestedAddressFamily(family))) =
            message.get(AttributeType::REQUESTED_ADDRESS_FAMILY)
        {
            if !allocation.relays.iter().any(|r| AddressFamily::of(&r.addr) == family) {
                return self.error(out, reply, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, Some(&auth));
            }
        }
        let delete = matches!(message.get(AttributeType::LIFETIME), Some(Ok(Attribute::Lifetime(0))));
        let lifetime = if delete {
            self.remove_allocation(&tuple, relays);
            Duration::ZERO
        } else {
            let lifetime = self.lifetime(message);
            if let Some(allocation) = self.allocations.get_mut(&tuple) {
                allocation.expires = now + lifetime;
            }
            lifetime
        };
        let mut w = reply.writer(out, Class::SuccessResponse);
        let _ = w.attribute(&Attribute::Lifetime(lifetime.as_secs() as u32));
        self.software(&mut w);
        reply.seal(w, Some(&auth));
        ClientAction::Reply
    }

    /// Checks a peer address for CreatePermission and ChannelBind: family, then policy.
    fn check_peer(&mut self, tuple: &FiveTuple, peer: SocketAddr) -> Result<(), ErrorCode<'static>> {
        let allocation = self.allocations.get(tuple).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        if allocation.relay_for(&peer).is_none() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.config.policy.permits(peer.ip()) {
            self.stats.refused_peers += 1;
            tracing::debug!(client = %tuple.client, %peer, "peer refused by policy");
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        message: &Message<'_>,
        auth: Auth,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Handled {
        let mut peers = [None::<IpAddr>; 16];
        let mut count = 0;
        for raw in message.attributes().filter(|a| a.typ == AttributeType::XOR_PEER_ADDRESS) {
            let Ok(Attribute::XorPeerAddress(peer)) = message.decode(raw) else { continue };
            if let Err(error) = self.check_peer(&tuple, peer) {
                return self.error(out, reply, error, Some(&auth));
            }
            if count == peers.len() {
                return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
            }
            peers[count] = Some(peer.ip());
            count += 1;
        }
        if count == 0 {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        }
        let max = self.config.max_permissions_per_allocation;
        let Some(allocation) = self.allocations.get_mut(&tuple) else {
            return self.error(out, reply, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        };
        let new =
            peers[..count].iter().flatten().filter(|ip| !allocation.permissions.contains_key(ip)).count();
        if allocation.permissions.len() + new > max {
            return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        }
        for ip in peers[..count].iter().flatten() {
            allocation.permissions.insert(*ip, now + PERMISSION_LIFETIME);
        }
        self.success(out, reply, &auth)
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        message: &Message<'_>,
        auth: Auth,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Handled {
        let number = match message.get(AttributeType::CHANNEL_NUMBER) {
            Some(Ok(Attribute::ChannelNumber(n))) if (CHANNEL_MIN..=CHANNEL_MAX).contains(&n) => n,
            _ => return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth)),
        };
        let Some(Ok(Attribute::XorPeerAddress(peer))) = message.get(AttributeType::XOR_PEER_ADDRESS) else {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        };
        if let Err(error) = self.check_peer(&tuple, peer) {
            return self.error(out, reply, error, Some(&auth));
        }
        let max = self.config.max_channels_per_allocation;
        let max_permissions = self.config.max_permissions_per_allocation;
        let allocation = self.allocations.get_mut(&tuple).expect("check_peer found the allocation");
        // RFC 6062 §5: channels carry datagrams, a TCP allocation has none to carry.
        if allocation.tcp {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        }
        // RFC 8656 §12.2: a channel is bound to one peer and a peer to one channel.
        let bound_peer = allocation.channels.get(&number).map(|(p, _)| *p);
        let bound_number = allocation.channel_of_peer.get(&peer).copied();
        if bound_peer.is_some_and(|p| p != peer) || bound_number.is_some_and(|n| n != number) {
            return self.error(out, reply, ErrorCode::BAD_REQUEST, Some(&auth));
        }
        if bound_peer.is_none() && allocation.channels.len() >= max {
            return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        }
        if !allocation.permissions.contains_key(&peer.ip()) && allocation.permissions.len() >= max_permissions
        {
            return self.error(out, reply, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        }
        allocation.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        allocation.channel_of_peer.insert(peer, number);
        allocation.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        self.success(out, reply, &auth)
    }

    fn success(&mut self, out: &mut Vec<u8>, reply: &Reply, auth: &Auth) -> Handled {
        let mut w = reply.writer(out, Class::SuccessResponse);
        self.software(&mut w);
        reply.seal(w, Some(auth));
        ClientAction::Reply
    }

    /// RFC 8656 §10.2: Send indications are not authenticated; without an allocation or a
    /// permission they are dropped.
    fn send_indication(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        message: &Message<'_>,
        packet: &[u8],
    ) -> Handled {
        let rate = self.config.max_bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(tuple) else {
            return self.drop_packet("send without allocation");
        };
        // RFC 6062 §5: a TCP allocation relays through data connections only.
        if allocation.tcp {
            return self.drop_packet("send on a tcp allocation");
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = message.get(AttributeType::XOR_PEER_ADDRESS) else {
            return self.drop_packet("send without peer");
        };
        let Some(data) = message.attribute(AttributeType::DATA) else {
            return self.drop_packet("send without data");
        };
        if !allocation.permitted(peer.ip(), now) {
            return self.drop_packet("send without permission");
        }
        let Some(relay) = allocation.relay_for(&peer) else { return self.drop_packet("no relay for family") };
        let relay = relay.id;
        if !allocation.spend(now, data.value.len(), rate) {
            self.stats.over_bandwidth += 1;
            return ClientAction::Nothing;
        }
        // The DATA value lies inside `packet`: find its range by address.
        let start = data.value.as_ptr() as usize - packet.as_ptr() as usize;
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += data.value.len() as u64;
        ClientAction::ToPeer { relay, peer, payload: start..start + data.value.len() }
    }

    fn remove_allocation(&mut self, tuple: &FiveTuple, relays: &mut impl RelayProvider) {
        if let Some(allocation) = self.allocations.remove(tuple) {
            // RFC 6062 §5.5: the allocation's data connections go with it.
            self.close_connections(&allocation.connections);
            for relay in &allocation.relays {
                self.by_relay.remove(&relay.id);
                relays.close(relay.id);
            }
            if let Some(count) = self.per_user.get_mut(&allocation.username) {
                *count -= 1;
                if *count == 0 {
                    self.per_user.remove(&allocation.username);
                }
            }
            self.stats.allocations = self.allocations.len() as u64;
        }
    }

    /// Whether this 5-tuple holds an allocation (the I/O layer gives such connections a
    /// longer idle time).
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.allocations.contains_key(tuple)
    }

    /// Closes every allocation (shutdown).
    pub fn close_all(&mut self, relays: &mut impl RelayProvider) {
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in tuples {
            self.remove_allocation(&tuple, relays);
        }
        for (_, (relay, _)) in self.reservations.drain() {
            relays.close(relay.id);
        }
    }

    /// Drops allocations of a client transport that went away (a closed TCP connection).
    pub fn handle_client_closed(&mut self, tuple: &FiveTuple, relays: &mut impl RelayProvider) {
        self.remove_allocation(tuple, relays);
    }
}

/// Whom a nonce is issued to: a UDP client's address and port, a TCP or TLS client's
/// address alone (it cannot be spoofed), so that an RFC 6062 ConnectionBind on a new
/// connection can use the nonce its control connection got.
fn nonce_subject(tuple: &FiveTuple) -> SocketAddr {
    match tuple.transport {
        Transport::Udp => tuple.client,
        Transport::Tcp | Transport::Tls => SocketAddr::new(tuple.client.ip(), 0),
    }
}

/// Offered password algorithms, in preference order.
const OFFERED: [AlgorithmEntry<'static>; 2] = [
    AlgorithmEntry { algorithm: 0x0002, parameters: &[] },
    AlgorithmEntry { algorithm: 0x0001, parameters: &[] },
];

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
