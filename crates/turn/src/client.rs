//! The TURN client state machine (RFC 8656 §6–§12, client side), sans-IO: Allocate with the
//! 401/438 credential dance, Refresh, CreatePermission, ChannelBind, Send indications and
//! ChannelData, with RFC 8489 §6.2.1 retransmission over UDP. The ICE agent uses it for
//! relayed candidates.

use crate::channel::{ChannelData, CHANNEL_MIN};
use peerlink_proto::{Backoff, BackoffConfig, SeededRng, Transmit};
use peerlink_stun::{
    Attribute, AttributeType, Class, ErrorCode, Key, Message, MessageWriter, Method, PasswordAlgorithm,
    TransactionId,
};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

/// RFC 8656 §9: permissions last 300 s; refresh a minute early.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// RFC 8656 §12: channels last 600 s.
const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
const REQUESTED_LIFETIME: u32 = 600;
const UDP: u8 = 17;

/// Credentials and server of one allocation.
#[derive(Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
        lifetime: Duration,
    },
    PermissionCreated(IpAddr),
    ChannelBound {
        peer: SocketAddr,
        channel: u16,
    },
    /// A Refresh was answered: the allocation now lasts `lifetime` from here.
    Refreshed {
        lifetime: Duration,
    },
    /// A request was refused; the allocation lives on unless `Closed` follows.
    Refused {
        method: Method,
        code: u16,
    },
    /// The allocation is gone (failed, expired, refused, or closed on request).
    Closed {
        reason: String,
    },
}

/// A caller mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no allocation yet")]
    NotAllocated,
    #[error("no permission for peer {0}")]
    NoPermission(IpAddr),
    #[error("payload of {0} bytes does not fit one message")]
    TooLarge(usize),
    #[error("all channel numbers are in use")]
    NoChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh { lifetime: u32 },
    Permission(IpAddr),
    Channel { peer: SocketAddr, channel: u16 },
}

#[derive(Debug)]
struct Transaction {
    kind: Kind,
    request: Vec<u8>,
    /// RFC 8489 §6.2.1 ([`BackoffConfig::STUN`]).
    backoff: Backoff,
    /// Retried once after 401/438 with fresh credentials.
    retried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Allocating,
    Allocated { relayed: SocketAddr, expires: Instant },
    Closed,
}

/// One TURN allocation seen from the client.
#[derive(Debug)]
pub struct TurnClient {
    config: ClientConfig,
    state: State,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<Key>,
    transactions: HashMap<TransactionId, Transaction>,
    /// Peer IP → when its permission lapses (refresh before).
    permissions: HashMap<IpAddr, Instant>,
    /// Peer → (channel, confirmed, refresh at).
    channels: HashMap<SocketAddr, (u16, bool, Instant)>,
    peers_of_channels: HashMap<u16, SocketAddr>,
    next_channel: u16,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    refresh_at: Option<Instant>,
    rng: SeededRng,
}

impl TurnClient {
    /// `seed` makes transaction ids unpredictable: 32 bytes from a CSPRNG.
    pub fn new(config: ClientConfig, seed: [u8; 32]) -> TurnClient {
        TurnClient {
            config,
            state: State::Idle,
            realm: None,
            nonce: None,
            key: None,
            transactions: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peers_of_channels: HashMap::new(),
            next_channel: CHANNEL_MIN,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            refresh_at: None,
            rng: SeededRng::new(&seed),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub fn relayed_address(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Starts the allocation (an unauthenticated Allocate, answered by 401 with a nonce).
    pub fn allocate(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.state = State::Allocating;
            self.request(now, Kind::Allocate);
        }
    }

    /// Installs (and keeps refreshing) a permission for `peer`'s IP.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), ClientError> {
        self.relayed_address().ok_or(ClientError::NotAllocated)?;
        if let std::collections::hash_map::Entry::Vacant(entry) = self.permissions.entry(peer) {
            entry.insert(now + PERMISSION_REFRESH);
            self.request(now, Kind::Permission(peer));
        }
        Ok(())
    }

    /// Binds a channel to `peer` (which also installs its permission).
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, ClientError> {
        self.relayed_address().ok_or(ClientError::NotAllocated)?;
        if let Some(&(channel, _, _)) = self.channels.get(&peer) {
            return Ok(channel);
        }
        // RFC 8656 §12: 0x4000..=0x4FFF.
        if self.next_channel > 0x4FFF {
            return Err(ClientError::NoChannel);
        }
        let channel = self.next_channel;
        self.next_channel += 1;
        self.channels.insert(peer, (channel, false, now + CHANNEL_REFRESH));
        self.peers_of_channels.insert(channel, peer);
        self.permissions.entry(peer.ip()).or_insert(now + PERMISSION_REFRESH);
        self.request(now, Kind::Channel { peer, channel });
        Ok(channel)
    }

    /// Appends `payload` for `peer` to `out` as one datagram for the server (ChannelData
    /// once a channel is confirmed, else a Send indication).
    pub fn send_to(
        &mut self,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Transmit<()>, ClientError> {
        self.relayed_address().ok_or(ClientError::NotAllocated)?;
        if !self.permissions.contains_key(&peer.ip()) {
            return Err(ClientError::NoPermission(peer.ip()));
        }
        if payload.len() > usize::from(u16::MAX) - 64 {
            return Err(ClientError::TooLarge(payload.len()));
        }
        let start = out.len();
        if let Some(&(channel, true, _)) = self.channels.get(&peer) {
            ChannelData::encode(channel, payload, false, out);
            return Ok(Transmit { route: (), len: out.len() - start });
        }
        let tid = self.next_tid();
        let mut w = MessageWriter::new(out, Class::Indication, Method::SEND, tid);
        let written = w
            .attribute(&Attribute::XorPeerAddress(peer))
            .and_then(|()| w.attribute(&Attribute::Data(payload)));
        if written.is_err() {
            out.truncate(start);
            return Err(ClientError::TooLarge(payload.len()));
        }
        w.finish();
        Ok(Transmit { route: (), len: out.len() - start })
    }

    /// Refreshes the allocation, its permissions and its channels now instead of when they
    /// are due (`Refreshed` and `PermissionCreated` report the answers).
    pub fn refresh(&mut self, now: Instant) {
        if !matches!(self.state, State::Allocated { .. }) {
            return;
        }
        self.refresh_at = Some(now);
        self.permissions.values_mut().for_each(|at| *at = now);
        self.channels.values_mut().for_each(|entry| entry.2 = now);
        self.handle_timeout(now);
    }

    /// Deletes the allocation (Refresh with lifetime 0).
    pub fn close(&mut self, now: Instant) {
        if matches!(self.state, State::Allocated { .. }) {
            self.request(now, Kind::Refresh { lifetime: 0 });
        } else {
            self.finish("closed");
        }
    }

    /// A datagram from the server. Returns the peer and the range of `packet` holding its
    /// payload when it carries data from a peer.
    pub fn handle_receive(&mut self, now: Instant, packet: &[u8]) -> Option<(SocketAddr, Range<usize>)> {
        match packet.first() {
            Some(b) if b & 0xC0 == 0x40 => {
                let data = ChannelData::parse(packet)?;
                let peer = *self.peers_of_channels.get(&data.channel)?;
                Some((peer, 4..4 + data.payload.len()))
            }
            Some(b) if b & 0xC0 == 0 => {
                let message = Message::parse(packet).ok()?;
                match message.class() {
                    Class::Indication if message.method() == Method::DATA => {
                        let Some(Ok(Attribute::XorPeerAddress(peer))) =
                            message.get(AttributeType::XOR_PEER_ADDRESS)
                        else {
                            return None;
                        };
                        let data = message.attribute(AttributeType::DATA)?;
                        let start = data.value.as_ptr() as usize - packet.as_ptr() as usize;
                        Some((peer, start..start + data.value.len()))
                    }
                    Class::SuccessResponse | Class::ErrorResponse => {
                        self.handle_response(now, &message);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmissions and transaction timeouts.
        let due: Vec<TransactionId> =
            self.transactions.iter().filter(|(_, t)| t.backoff.is_due(now)).map(|(tid, _)| *tid).collect();
        for tid in due {
            let Some(mut t) = self.transactions.remove(&tid) else { continue };
            if t.backoff.is_exhausted() {
                self.timed_out(t.kind);
                continue;
            }
            let _ = t.backoff.on_transmit(now);
            self.transmit.push_back(t.request.clone());
            self.transactions.insert(tid, t);
        }
        if let State::Allocated { expires, .. } = self.state {
            if now >= expires {
                self.finish("allocation expired");
                return;
            }
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh_at = None;
            self.request(now, Kind::Refresh { lifetime: REQUESTED_LIFETIME });
        }
        let stale: Vec<IpAddr> =
            self.permissions.iter().filter(|(_, at)| **at <= now).map(|(ip, _)| *ip).collect();
        for ip in stale {
            // Channels last 10 minutes but the permission under them only 5: refresh it on
            // its own schedule (RFC 8656 §12).
            self.permissions.insert(ip, now + PERMISSION_REFRESH);
            self.request(now, Kind::Permission(ip));
        }
        let stale: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, (_, _, at))| *at <= now)
            .map(|(peer, (c, _, _))| (*peer, *c))
            .collect();
        for (peer, channel) in stale {
            if let Some(entry) = self.channels.get_mut(&peer) {
                entry.2 = now + CHANNEL_REFRESH;
            }
            // A channel refresh refreshes the permission too.
            self.permissions.insert(peer.ip(), now + PERMISSION_REFRESH);
            self.request(now, Kind::Channel { peer, channel });
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.transactions.values().filter_map(|t| t.backoff.deadline()).min();
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        if let State::Allocated { expires, .. } = self.state {
            consider(expires);
            self.permissions.values().for_each(|&at| consider(at));
            self.channels.values().for_each(|&(_, _, at)| consider(at));
            if let Some(at) = self.refresh_at {
                consider(at);
            }
        }
        next
    }

    /// Appends the next datagram for the server ([`TurnClient::server`]) to `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let datagram = self.transmit.pop_front()?;
        buf.extend_from_slice(&datagram);
        Some(Transmit { route: (), len: datagram.len() })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn next_tid(&mut self) -> TransactionId {
        // Unpredictable to anyone without the seed, and never repeating within a session.
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        TransactionId(tid)
    }

    /// Sends a new request and starts its retransmission timer.
    fn send_request(
        &mut self,
        now: Instant,
        tid: TransactionId,
        kind: Kind,
        request: Vec<u8>,
        retried: bool,
    ) {
        self.transmit.push_back(request.clone());
        let mut backoff = Backoff::new(BackoffConfig::STUN);
        let _ = backoff.on_transmit(now);
        self.transactions.insert(tid, Transaction { kind, request, backoff, retried });
    }

    fn request(&mut self, now: Instant, kind: Kind) {
        let tid = self.next_tid();
        let request = self.encode(kind, tid);
        self.send_request(now, tid, kind, request, false);
    }

    fn encode(&self, kind: Kind, tid: TransactionId) -> Vec<u8> {
        let method = match kind {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh { .. } => Method::REFRESH,
            Kind::Permission(_) => Method::CREATE_PERMISSION,
            Kind::Channel { .. } => Method::CHANNEL_BIND,
        };
        let mut buf = Vec::with_capacity(160);
        let mut w = MessageWriter::new(&mut buf, Class::Request, method, tid);
        let _ = match kind {
            Kind::Allocate => w
                .attribute(&Attribute::RequestedTransport(UDP))
                .and_then(|()| w.attribute(&Attribute::Lifetime(REQUESTED_LIFETIME))),
            Kind::Refresh { lifetime } => w.attribute(&Attribute::Lifetime(lifetime)),
            Kind::Permission(ip) => w.attribute(&Attribute::XorPeerAddress(SocketAddr::new(ip, 0))),
            Kind::Channel { peer, channel } => w
                .attribute(&Attribute::ChannelNumber(channel))
                .and_then(|()| w.attribute(&Attribute::XorPeerAddress(peer))),
        };
        if let (Some(realm), Some(nonce), Some(key)) = (&self.realm, &self.nonce, &self.key) {
            let _ = w.attribute(&Attribute::Username(&self.config.username));
            let _ = w.attribute(&Attribute::Realm(realm));
            let _ = w.attribute(&Attribute::Nonce(nonce));
            let _ = w.message_integrity(key);
        }
        let _ = w.fingerprint();
        w.finish();
        buf
    }

    fn handle_response(&mut self, now: Instant, message: &Message<'_>) {
        let tid = message.transaction_id();
        if !self.transactions.contains_key(&tid) {
            return;
        }
        // Once we have a key, answers must carry a valid MESSAGE-INTEGRITY; 401/438 carry
        // none and are checked through the retry instead.
        let code = match message.get(AttributeType::ERROR_CODE) {
            Some(Ok(Attribute::ErrorCode(ErrorCode { code, .. }))) => Some(code),
            _ => None,
        };
        // Once we have a key, a success must carry a valid MESSAGE-INTEGRITY, and so must any
        // answer that carries one at all. Errors without one are accepted: servers answer
        // 400/420 (and 401/438, checked by the retry) before they know who is asking.
        let signed = message.has_integrity();
        let valid = self.key.as_ref().is_some_and(|key| message.verify_integrity(key));
        if self.key.is_some() && !valid && (signed || message.class() == Class::SuccessResponse) {
            return; // forged or corrupted: wait for the real answer
        }
        let Some(transaction) = self.transactions.remove(&tid) else { return };
        let kind = transaction.kind;
        match (message.class(), code) {
            (Class::ErrorResponse, Some(code @ (401 | 438))) if !transaction.retried => {
                let realm = match message.get(AttributeType::REALM) {
                    Some(Ok(Attribute::Realm(r))) => Some(r.to_owned()),
                    _ => self.realm.clone(),
                };
                let nonce = match message.get(AttributeType::NONCE) {
                    Some(Ok(Attribute::Nonce(n))) => Some(n.to_owned()),
                    _ => None,
                };
                let (Some(realm), Some(nonce)) = (realm, nonce) else {
                    return self.refused(kind, code);
                };
                if code == 401 || self.key.is_none() {
                    match Key::long_term(
                        PasswordAlgorithm::Md5,
                        &self.config.username,
                        &realm,
                        &self.config.password,
                    ) {
                        Ok(key) => self.key = Some(key),
                        Err(_) => return self.refused(kind, code),
                    }
                }
                self.realm = Some(realm);
                self.nonce = Some(nonce);
                let tid = self.next_tid();
                let request = self.encode(kind, tid);
                self.send_request(now, tid, kind, request, true);
            }
            (Class::ErrorResponse, code) => self.refused(kind, code.unwrap_or(0)),
            (Class::SuccessResponse, _) => self.succeeded(now, kind, message),
            _ => {}
        }
    }

    fn succeeded(&mut self, now: Instant, kind: Kind, message: &Message<'_>) {
        let lifetime = match message.get(AttributeType::LIFETIME) {
            Some(Ok(Attribute::Lifetime(secs))) => Duration::from_secs(u64::from(secs)),
            _ => Duration::from_secs(u64::from(REQUESTED_LIFETIME)),
        };
        match kind {
            Kind::Allocate => {
                let Some(Ok(Attribute::XorRelayedAddress(relayed))) =
                    message.get(AttributeType::XOR_RELAYED_ADDRESS)
                else {
                    return self.finish("allocate success without a relayed address");
                };
                let mapped = match message.get(AttributeType::XOR_MAPPED_ADDRESS) {
                    Some(Ok(Attribute::XorMappedAddress(a))) => Some(a),
                    _ => None,
                };
                self.state = State::Allocated { relayed, expires: now + lifetime };
                self.refresh_at = Some(now + refresh_after(lifetime));
                self.events.push_back(ClientEvent::Allocated { relayed, mapped, lifetime });
            }
            Kind::Refresh { lifetime: 0 } => self.finish("closed"),
            Kind::Refresh { .. } => {
                if let State::Allocated { relayed, .. } = self.state {
                    self.state = State::Allocated { relayed, expires: now + lifetime };
                    self.refresh_at = Some(now + refresh_after(lifetime));
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            Kind::Permission(ip) => self.events.push_back(ClientEvent::PermissionCreated(ip)),
            Kind::Channel { peer, channel } => {
                if let Some(entry) = self.channels.get_mut(&peer) {
                    if !entry.1 {
                        entry.1 = true;
                        self.events.push_back(ClientEvent::ChannelBound { peer, channel });
                    }
                }
            }
        }
    }

    fn refused(&mut self, kind: Kind, code: u16) {
        let method = match kind {
            Kind::Allocate => Method::ALLOCATE,
            Kind::Refresh { .. } => Method::REFRESH,
            Kind::Permission(_) => Method::CREATE_PERMISSION,
            Kind::Channel { .. } => Method::CHANNEL_BIND,
        };
        self.events.push_back(ClientEvent::Refused { method, code });
        match kind {
            Kind::Allocate => self.finish(&format!("allocate refused with {code}")),
            // RFC 8656 §7.3: a refused refresh (437) means the allocation is gone.
            Kind::Refresh { .. } => self.finish(&format!("refresh refused with {code}")),
            Kind::Permission(ip) => {
                self.permissions.remove(&ip);
            }
            Kind::Channel { peer, channel } => {
                self.channels.remove(&peer);
                self.peers_of_channels.remove(&channel);
            }
        }
    }

    fn timed_out(&mut self, kind: Kind) {
        match kind {
            Kind::Allocate | Kind::Refresh { .. } => self.finish("server did not answer"),
            other => self.refused(other, 0),
        }
    }

    fn finish(&mut self, reason: &str) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.transactions.clear();
            self.refresh_at = None;
            self.permissions.clear();
            self.channels.clear();
            self.events.push_back(ClientEvent::Closed { reason: reason.to_owned() });
        }
    }
}

/// Refresh a minute before expiry, or halfway through short lifetimes.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > Duration::from_secs(120) {
        lifetime - Duration::from_secs(60)
    } else {
        lifetime / 2
    }
}
