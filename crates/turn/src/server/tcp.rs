//! RFC 6062 TCP allocations: Connect, ConnectionBind, ConnectionAttempt and the state of
//! every peer data connection. The I/O layer owns the sockets and moves the bytes; this
//! module decides which connections exist, answers the requests and runs the timers.

use super::{Auth, FiveTuple, Handled, RelayId, Reply, Request, TurnServer};
use crate::server::ClientAction;
use peerlink_stun::TransactionId;
use peerlink_stun::{binding, Attribute, AttributeType, Class, ErrorCode, MessageWriter, Method};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 6062 §5.2: a Connect fails with 447 after at least 30 seconds without a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 6062 §5.2, §5.3: a peer data connection waits 30 seconds for its ConnectionBind.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers and indications waiting for the I/O layer; more means it stopped draining them.
const MAX_QUEUED: usize = 4096;

/// RFC 6062 §6.2.1: CONNECTION-ID, naming one peer data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u32);

/// Work for the I/O layer, from [`TurnServer::poll_tcp_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOutput {
    /// Open a TCP connection from relay `relay`'s address to `peer`, then report the
    /// outcome with [`TurnServer::handle_peer_connected`].
    Connect { id: ConnectionId, relay: RelayId, peer: SocketAddr },
    /// Send `out` (a Connect answer or a ConnectionAttempt indication) on this control
    /// connection.
    ToClient(FiveTuple),
    /// Close this peer data connection and its client data connection, if bound; the core
    /// has already forgotten it.
    Close(ConnectionId),
}

/// The number nearest below `raw` (or above, at the top of the range) that is `shard`
/// modulo `shards`.
fn on_shard(raw: u32, shard: u32, shards: u32) -> u32 {
    let shard = shard % shards;
    let base = raw - raw % shards;
    base.checked_add(shard).unwrap_or(base.wrapping_sub(shards).wrapping_add(shard))
}

/// RFC 6062 §5.4: the shard (of `shards`) that issued the CONNECTION-ID a ConnectionBind
/// request names, so that the I/O layer can hand the data connection it arrived on to the
/// shard holding the allocation. `None` for anything else (other messages, junk, a
/// ConnectionBind without a CONNECTION-ID), which the receiving shard handles itself.
pub fn connection_bind_shard(frame: &[u8], shards: u32) -> Option<u32> {
    let message = peerlink_stun::Message::parse(frame).ok()?;
    if message.class() != Class::Request || message.method() != Method::CONNECTION_BIND {
        return None;
    }
    match message.get(AttributeType::CONNECTION_ID)? {
        Ok(Attribute::ConnectionId(raw)) => Some(raw % shards.max(1)),
        _ => None,
    }
}

#[derive(Debug)]
enum State {
    /// The I/O layer is connecting to the peer; the Connect request waits for the outcome.
    Connecting { reply: Reply, auth: Auth, deadline: Instant },
    /// The peer data connection is up and waits for its ConnectionBind.
    Pending { deadline: Instant },
    /// Piped to the client data connection `client`.
    Bound { client: FiveTuple },
}

#[derive(Debug)]
struct DataConnection {
    allocation: FiveTuple,
    peer: SocketAddr,
    /// Opened by a Connect (not accepted from the peer).
    outbound: bool,
    state: State,
}

#[derive(Debug)]
enum Queued {
    Connect { id: ConnectionId, relay: RelayId, peer: SocketAddr },
    Message { to: FiveTuple, bytes: Vec<u8> },
    Close(ConnectionId),
}

#[derive(Debug, Default)]
pub(super) struct TcpConnections {
    connections: HashMap<ConnectionId, DataConnection>,
    /// Client data connections and the peer data connection each is piped to.
    by_client: HashMap<FiveTuple, ConnectionId>,
    queue: VecDeque<Queued>,
    issued: u64,
}

impl TurnServer {
    /// The next piece of RFC 6062 work for the I/O layer; for [`TcpOutput::ToClient`] the
    /// message is in `out`. Drain after every batch of inputs.
    #[must_use]
    pub fn poll_tcp_output(&mut self, out: &mut Vec<u8>) -> Option<TcpOutput> {
        out.clear();
        Some(match self.tcp.queue.pop_front()? {
            Queued::Connect { id, relay, peer } => TcpOutput::Connect { id, relay, peer },
            Queued::Message { to, bytes } => {
                out.extend_from_slice(&bytes);
                TcpOutput::ToClient(to)
            }
            Queued::Close(id) => TcpOutput::Close(id),
        })
    }

    /// The outcome of a [`TcpOutput::Connect`]. Returns whether the I/O layer keeps the
    /// connection (false: close it; the Connect may have timed out meanwhile).
    pub fn handle_peer_connected(&mut self, now: Instant, id: ConnectionId, connected: bool) -> bool {
        let Some(connection) = self.tcp.connections.get_mut(&id) else { return false };
        if !matches!(connection.state, State::Connecting { .. }) {
            return false;
        }
        let state = std::mem::replace(&mut connection.state, State::Pending { deadline: now + BIND_TIMEOUT });
        let tuple = connection.allocation;
        let State::Connecting { reply, auth, .. } = state else { return false };
        if connected {
            self.stats.tcp_connections_opened += 1;
            let mut bytes = Vec::new();
            let mut w = reply.writer(&mut bytes, Class::SuccessResponse);
            let _ = w.attribute(&Attribute::ConnectionId(id.0));
            self.software(&mut w);
            reply.seal(w, Some(&auth));
            self.queue(Queued::Message { to: tuple, bytes });
            tracing::debug!(client = %tuple.client, ?id, "peer data connection open");
        } else {
            self.forget(id);
            self.connect_failed(tuple, &reply, &auth);
        }
        connected
    }

    /// RFC 6062 §5.3: a peer connected to TCP relay `relay`. `Some` keeps the connection
    /// under that id (the client hears of it in a ConnectionAttempt); `None` closes it.
    pub fn handle_peer_accept(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        let peer = binding::canonical(peer);
        let tuple = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get(&tuple)?;
        if !allocation.tcp {
            return None;
        }
        // RFC 6062 §5.3: without a permission the connection is closed at once.
        if !allocation.permitted(peer.ip(), now) {
            self.stats.refused_peers += 1;
            tracing::debug!(client = %tuple.client, %peer, "peer connection without permission closed");
            return None;
        }
        if !self.room_for_connection(&tuple) {
            tracing::debug!(client = %tuple.client, %peer, "peer connection over quota closed");
            return None;
        }
        let id = self.new_connection_id()?;
        self.insert_connection(
            id,
            DataConnection {
                allocation: tuple,
                peer,
                outbound: false,
                state: State::Pending { deadline: now + BIND_TIMEOUT },
            },
        );
        self.stats.tcp_connections_opened += 1;
        let mut tid = [0u8; 12];
        // Indications need a transaction id; it need not be unpredictable.
        tid[..4].copy_from_slice(b"conn");
        tid[4..].copy_from_slice(&self.tcp.issued.to_be_bytes());
        let mut bytes = Vec::new();
        let mut w =
            MessageWriter::new(&mut bytes, Class::Indication, Method::CONNECTION_ATTEMPT, TransactionId(tid));
        let _ = w.attribute(&Attribute::XorPeerAddress(peer));
        let _ = w.attribute(&Attribute::ConnectionId(id.0));
        self.software(&mut w);
        w.finish();
        self.queue(Queued::Message { to: tuple, bytes });
        tracing::debug!(client = %tuple.client, %peer, ?id, "peer connected to a tcp relay");
        Some(id)
    }

    /// A peer or client data connection ended (RFC 6062 §5.5: the I/O layer closes the
    /// other side of the pipe).
    pub fn handle_data_closed(&mut self, id: ConnectionId) {
        let Some(connection) = self.forget(id) else { return };
        if let State::Connecting { reply, auth, .. } = connection.state {
            self.connect_failed(connection.allocation, &reply, &auth);
        }
    }

    /// RFC 6062 §5.4: after a [`ClientAction::Reply`] on a TCP or TLS connection, `Some`
    /// when that reply accepted a ConnectionBind: send it, then the connection carries no
    /// more STUN but the bytes of peer data connection `id`, both ways (bytes after the
    /// request belong to the peer).
    pub fn bound_connection(&self, client: &FiveTuple) -> Option<ConnectionId> {
        self.tcp.by_client.get(client).copied()
    }

    /// Bytes the I/O layer moved through data connections, for the counters.
    pub fn count_tcp_relayed(&mut self, to_peers: u64, to_clients: u64) {
        self.stats.tcp_bytes_to_peers += to_peers;
        self.stats.tcp_bytes_to_clients += to_clients;
    }

    /// How many bytes data connection `id` may relay now under the bandwidth limits (its
    /// allocation's, shared by both directions and every connection of the allocation, its
    /// user's and the server's); None when there is no limit. A byte stream cannot drop
    /// what is over: the I/O layer reads no more than this and tries again later.
    ///
    /// Once a limit runs out it allows nothing until it holds 10 ms of its rate again (at
    /// most 16 KiB, `min_tcp_read`): a budget handed out as it trickles back (a few bytes per microsecond) would
    /// have the I/O layer read a few bytes at a time, as fast as its loop turns.
    pub fn tcp_allowance(&mut self, now: Instant, id: ConnectionId) -> Option<usize> {
        let tuple = self.tcp.connections.get(&id)?.allocation;
        let allocation = self.allocations.get_mut(&tuple)?;
        let limits = [
            self.config.max_bytes_per_second.map(|rate| (allocation.budget_left(now, rate), rate)),
            allocation.user_rate.as_ref().map(|user| (user.available(now), user.bytes_per_second())),
            self.config
                .capacity
                .as_ref()
                .map(|capacity| (capacity.available(now), capacity.bytes_per_second())),
        ];
        let allowance = limits
            .into_iter()
            .flatten()
            .map(|(left, rate)| if left < min_tcp_read(rate) { 0 } else { left })
            .min()?;
        Some(allowance.min(usize::MAX as u64) as usize)
    }

    /// Takes what data connection `id` relayed from its allocation's bandwidth budget.
    pub fn spend_tcp(&mut self, now: Instant, id: ConnectionId, bytes: usize) {
        let Some(tuple) = self.tcp.connections.get(&id).map(|c| c.allocation) else { return };
        let Some(allocation) = self.allocations.get_mut(&tuple) else { return };
        if let Some(rate) = self.config.max_bytes_per_second {
            let left = allocation.budget_left(now, rate);
            allocation.budget.0 = left.saturating_sub(bytes as u64);
        }
        if let Some(user) = &allocation.user_rate {
            user.take(now, bytes);
        }
        if let Some(capacity) = &self.config.capacity {
            capacity.take(now, bytes);
        }
    }

    /// RFC 6062 §5.2.
    pub(super) fn connect(&mut self, req: Request<'_>) -> Handled {
        let (now, tuple, message) = (req.now, req.tuple, req.message);
        let Some(allocation) = self.allocations.get(&tuple) else {
            return self.refuse(req, ErrorCode::ALLOCATION_MISMATCH);
        };
        if !allocation.tcp {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = message.get(AttributeType::XOR_PEER_ADDRESS) else {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        };
        let peer = binding::canonical(peer);
        if let Err(error) = self.check_peer(&tuple, peer) {
            return self.refuse(req, error);
        }
        let allocation = self.allocations.get(&tuple).expect("check_peer found the allocation");
        // Like Send and ChannelData, a connection needs the peer's permission.
        if !allocation.permitted(peer.ip(), now) {
            return self.refuse(req, ErrorCode::FORBIDDEN);
        }
        // RFC 6062 §5.2: one connection per peer address, while connecting or open.
        let exists = allocation
            .connections
            .iter()
            .filter_map(|id| self.tcp.connections.get(id))
            .any(|c| c.outbound && c.peer == peer);
        if exists {
            return self.refuse(req, ErrorCode::CONNECTION_ALREADY_EXISTS);
        }
        let Some(relay) = allocation.relay_for(&peer).map(|r| r.id) else {
            return self.refuse(req, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        };
        if !self.room_for_connection(&tuple) {
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let Some(id) = self.new_connection_id() else {
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        };
        let deadline = now + CONNECT_TIMEOUT;
        let Request { reply, auth, .. } = req;
        let state = State::Connecting { reply, auth, deadline };
        self.insert_connection(id, DataConnection { allocation: tuple, peer, outbound: true, state });
        self.queue(Queued::Connect { id, relay, peer });
        tracing::debug!(client = %tuple.client, %peer, ?id, "connecting to a peer");
        ClientAction::Nothing
    }

    /// RFC 6062 §5.4.
    pub(super) fn connection_bind(&mut self, req: Request<'_>) -> Handled {
        let (tuple, message) = (req.tuple, req.message);
        // A control connection cannot become a data connection; nor can a datagram.
        if tuple.transport == super::Transport::Udp || self.allocations.contains_key(&tuple) {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        let Some(Ok(Attribute::ConnectionId(raw))) = message.get(AttributeType::CONNECTION_ID) else {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        };
        let id = ConnectionId(raw);
        let owner = self
            .tcp
            .connections
            .get(&id)
            .filter(|c| matches!(c.state, State::Pending { .. }))
            .and_then(|c| self.allocations.get(&c.allocation))
            .map(|a| a.username.as_str());
        let owner_matches = owner == Some(req.auth.username.as_str());
        // Someone else's connection looks unknown: the id is no oracle for other users.
        if !owner_matches {
            tracing::debug!(client = %tuple.client, ?id, "connection bind for no pending connection of this user");
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        if let Some(connection) = self.tcp.connections.get_mut(&id) {
            connection.state = State::Bound { client: tuple };
            self.tcp.by_client.insert(tuple, id);
        }
        tracing::debug!(client = %tuple.client, ?id, "client data connection bound");
        self.succeed(req, [])
    }

    /// RFC 6062 §5.2, §5.3: Connects and unbound connections past their 30 seconds.
    pub(super) fn sweep_tcp(&mut self, now: Instant) {
        let expired: Vec<ConnectionId> = self
            .tcp
            .connections
            .iter()
            .filter(|(_, c)| match &c.state {
                State::Connecting { deadline, .. } | State::Pending { deadline } => *deadline <= now,
                State::Bound { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            tracing::debug!(?id, "tcp connection not completed in time");
            self.queue(Queued::Close(id));
            self.handle_data_closed(id);
        }
    }

    /// Closes the data connections of an allocation that is going away.
    pub(super) fn close_connections(&mut self, ids: &[ConnectionId]) {
        for id in ids {
            if let Some(connection) = self.tcp.connections.remove(id) {
                if let State::Bound { client } = connection.state {
                    self.tcp.by_client.remove(&client);
                }
                self.queue(Queued::Close(*id));
            }
        }
        self.stats.tcp_connections = self.tcp.connections.len() as u64;
    }

    fn connect_failed(&mut self, tuple: FiveTuple, reply: &Reply, auth: &Auth) {
        self.stats.tcp_connect_failures += 1;
        if !self.allocations.contains_key(&tuple) {
            return;
        }
        let mut bytes = Vec::new();
        let mut w = reply.writer(&mut bytes, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE));
        self.software(&mut w);
        reply.seal(w, Some(auth));
        self.queue(Queued::Message { to: tuple, bytes });
    }

    fn room_for_connection(&self, tuple: &FiveTuple) -> bool {
        let Some(allocation) = self.allocations.get(tuple) else { return false };
        let pending = allocation
            .connections
            .iter()
            .filter_map(|id| self.tcp.connections.get(id))
            .filter(|c| !matches!(c.state, State::Bound { .. }))
            .count();
        allocation.connections.len() < self.config.max_tcp_connections_per_allocation
            && pending < self.config.max_pending_tcp_connections_per_allocation
    }

    fn insert_connection(&mut self, id: ConnectionId, connection: DataConnection) {
        if let Some(allocation) = self.allocations.get_mut(&connection.allocation) {
            allocation.connections.push(id);
        }
        self.tcp.connections.insert(id, connection);
        self.stats.tcp_connections = self.tcp.connections.len() as u64;
    }

    /// Removes a connection from the table and from its allocation.
    fn forget(&mut self, id: ConnectionId) -> Option<DataConnection> {
        let connection = self.tcp.connections.remove(&id)?;
        if let State::Bound { client } = connection.state {
            self.tcp.by_client.remove(&client);
        }
        if let Some(allocation) = self.allocations.get_mut(&connection.allocation) {
            allocation.connections.retain(|c| *c != id);
        }
        self.stats.tcp_connections = self.tcp.connections.len() as u64;
        Some(connection)
    }

    fn queue(&mut self, item: Queued) {
        if self.tcp.queue.len() >= MAX_QUEUED {
            // The I/O layer is not draining; closes must not be lost, answers may.
            if !matches!(item, Queued::Close(_)) {
                self.stats.dropped += 1;
                return;
            }
        }
        self.tcp.queue.push_back(item);
    }

    /// An unguessable CONNECTION-ID (HMAC of this shard and a counter under the server's
    /// secret) that names this shard (`id % shards == shard`, see [`connection_bind_shard`]),
    /// unique among the live ones; `None` only if sixteen draws in a row collide.
    fn new_connection_id(&mut self) -> Option<ConnectionId> {
        use hmac::{Hmac, Mac};
        let (shard, shards) = (self.config.shard.0, self.config.shard.1.max(1));
        for _ in 0..16 {
            self.tcp.issued += 1;
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.config.nonce_secret)
                .expect("hmac takes any key length");
            mac.update(b"connection-id");
            mac.update(&shard.to_be_bytes());
            mac.update(&self.tcp.issued.to_be_bytes());
            let digest = mac.finalize().into_bytes();
            let id = ConnectionId(on_shard(
                u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
                shard,
                shards,
            ));
            if !self.tcp.connections.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }
}

/// The least a bandwidth limit of `bytes_per_second` lets a TCP pipe read at once: 10 ms of
/// the rate (the I/O layer's retry interval), at most 16 KiB, at least one byte.
fn min_tcp_read(bytes_per_second: u64) -> u64 {
    (bytes_per_second / 100).clamp(1, 16 * 1024)
}
