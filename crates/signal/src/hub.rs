//! The rooms, sans-IO: one owner, every connection's frames go in, frames to send come out.
//!
//! ```no_run
//! use peerlink_signal::hub::Output;
//! use peerlink_signal::{Hub, HubConfig};
//! use std::time::Instant;
//!
//! # fn frames() -> Vec<String> { Vec::new() }
//! # fn send(_conn: peerlink_signal::hub::ConnId, _text: &str) {}
//! let mut hub = Hub::new(HubConfig::default(), Instant::now(), 1_700_000_000, [7; 32]); // seed from a CSPRNG
//! // A WebSocket was accepted (its Host header); `None`: refused, close it.
//! let Some(conn) = hub.connect(Instant::now(), "example.org") else { return };
//! for text in frames() {
//!     hub.handle_text(Instant::now(), conn, &text); // each text frame it sends
//! }
//! hub.handle_timeout(Instant::now()); // at hub.poll_timeout()
//! while let Some(out) = hub.poll_output() {
//!     match out {
//!         Output::Send { conn, text } => send(conn, &text),
//!         Output::Ping { .. } | Output::Close { .. } => { /* to the WebSocket */ }
//!         Output::Publish(_) | Output::Sfu(_) => { /* to the cluster, to the SFU */ }
//!     }
//! }
//! hub.disconnect(Instant::now(), conn); // the socket ended
//! ```
//!
//! With a cluster (several nodes sharing rooms), `Publish` outputs go to the other nodes and
//! their messages come back in through [`Hub::handle_cluster`].

use crate::cluster::{ClusterMessage, RemotePeer};
use crate::protocol::{self, ClientMessage, ErrorCode, IceServer, ParseError, PeerInfo};
use crate::token;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code "going away", used for a connection that stopped answering.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code "try again later" (server full).
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// WebSocket close code (application range) for a connection whose peer came back on a newer
/// one with its resume token.
pub const CLOSE_REPLACED: u16 = 4000;

/// A `join`, as parsed.
struct Join {
    room: String,
    name: String,
    token: Option<String>,
    requested: Option<String>,
    resume: Option<String>,
}

/// 32 hex digits as 16 bytes.
fn hex16(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Limits and the `iceServers` handed out. `Default` is what `peerlink serve` uses.
#[derive(Clone)]
pub struct HubConfig {
    /// Largest text frame accepted; larger ones get `too-large`.
    pub max_frame_bytes: usize,
    /// Sustained messages per second per connection (token bucket)...
    pub messages_per_second: f64,
    /// ...and the burst above it.
    pub message_burst: f64,
    /// Peers in one room, counting every node of a cluster.
    pub max_room_peers: usize,
    /// Connections this node holds.
    pub max_connections: usize,
    /// A ping goes to each connection this often...
    pub ping_interval: Duration,
    /// ...and a connection silent this long (no frame, no pong) is dropped and leaves its room.
    pub idle_timeout: Duration,
    /// With a secret, `join` needs an HS256 JWT whose `room` claim is the room.
    pub token_secret: Option<Vec<u8>>,
    pub ice: IceConfig,
    /// Whether rooms are meshes, go through the SFU, or switch by size.
    pub room_mode: RoomMode,
    /// In [`RoomMode::Auto`], rooms of more peers than this go through the SFU.
    pub mesh_max: usize,
}

/// How a room's media flows (`--room-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomMode {
    /// Every peer connects to every other (the only mode of a hub with no SFU beside it).
    #[default]
    Mesh,
    /// Every peer connects to the server's SFU only.
    Sfu,
    /// A mesh up to `mesh_max` peers, the SFU above.
    Auto,
}

impl std::str::FromStr for RoomMode {
    type Err = String;
    fn from_str(s: &str) -> Result<RoomMode, String> {
        match s {
            "mesh" => Ok(RoomMode::Mesh),
            "sfu" => Ok(RoomMode::Sfu),
            "auto" => Ok(RoomMode::Auto),
            other => Err(format!("room mode {other:?}: expected auto, mesh or sfu")),
        }
    }
}

/// The peer id clients signal with in a room in SFU mode.
pub const SFU_PEER: &str = "sfu";
/// A member of a room in SFU mode may send frames this many times `max_frame_bytes`: its
/// answers to the server hold a section per track of everyone else (estimated at under 1 KB
/// each, not measured: 64 KiB may end them in rooms of a few dozen). Nothing it sends goes to
/// another client.
pub const SFU_FRAME_FACTOR: usize = 4;

/// What the SFU beside the hub must know: membership of rooms in SFU mode and the signals
/// their peers send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// `peer` is in `room` and the room is in SFU mode (it joined, or the room switched).
    Join { room: String, peer: String },
    /// `peer` is gone from the SFU: it left, or (`switched`) the room went back to a mesh,
    /// when its media may go on through the SFU for a moment while the mesh connects.
    Leave { room: String, peer: String, switched: bool },
    /// `peer` sent `data` (JSON) to `"sfu"`.
    Signal { room: String, peer: String, data: String },
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_frame_bytes: 64 * 1024,
            messages_per_second: 50.0,
            message_burst: 200.0,
            max_room_peers: 6,
            max_connections: 100_000,
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(25),
            token_secret: None,
            ice: IceConfig::default(),
            room_mode: RoomMode::Mesh,
            mesh_max: 4,
        }
    }
}

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("messages_per_second", &self.messages_per_second)
            .field("message_burst", &self.message_burst)
            .field("max_room_peers", &self.max_room_peers)
            .field("max_connections", &self.max_connections)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("token_secret", &self.token_secret.as_ref().map(|_| "<redacted>"))
            .field("ice", &self.ice)
            .field("room_mode", &self.room_mode)
            .field("mesh_max", &self.mesh_max)
            .finish()
    }
}

/// STUN and TURN URLs for `welcome.iceServers`; `{host}` in a URL is replaced by the host
/// name the client used to reach us (its HTTP `Host`), so one config serves every network.
#[derive(Clone, Default)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    /// TURN REST secret: credentials `expiry:peer-id` / base64(HMAC-SHA1(secret, username)).
    pub turn_secret: Option<Vec<u8>>,
    /// How long handed-out TURN credentials stay valid.
    pub credential_ttl: Duration,
}

impl std::fmt::Debug for IceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceConfig")
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<redacted>"))
            .field("credential_ttl", &self.credential_ttl)
            .finish()
    }
}

/// A connection, as the hub knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send one text frame.
    Send { conn: ConnId, text: Arc<str> },
    /// Send a WebSocket ping.
    Ping { conn: ConnId },
    /// Send a close frame and drop the connection; the hub has forgotten it already.
    Close { conn: ConnId, code: u16, reason: &'static str },
    /// Tell the other nodes of the cluster.
    Publish(ClusterMessage),
    /// Tell the SFU.
    Sfu(SfuEvent),
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    pub connections: u64,
    pub joined: u64,
    pub rooms: u64,
    pub remote_peers: u64,
    pub signals_relayed: u64,
    pub errors_sent: u64,
    pub closed_for_abuse: u64,
    pub closed_idle: u64,
    pub dropped_slow: u64,
    pub refused_full: u64,
}

/// A token bucket on a float scale.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket { tokens: capacity, last: now }
    }

    fn take(&mut self, now: Instant, cost: f64, rate: f64, capacity: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

// Abuse: each refused message costs strikes; out of strikes closes with 1008.
const STRIKES: f64 = 10.0;
const STRIKE_REFILL_PER_SECOND: f64 = 0.5;
const STRIKE_BAD: f64 = 1.0;
const STRIKE_THROTTLED: f64 = 0.1;

// Cluster: heartbeat period and how long a silent node's peers are kept.
const HEARTBEAT: Duration = Duration::from_secs(5);
const NODE_TIMEOUT: Duration = Duration::from_secs(20);
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Conn {
    host: String,
    peer: Option<String>,
    rate: Bucket,
    strikes: Bucket,
    throttled: bool,
    last_heard: Instant,
    last_ping: Instant,
}

#[derive(Debug)]
enum Location {
    Local(ConnId),
    Remote(String),
}

#[derive(Debug)]
struct Peer {
    name: String,
    room: String,
    at: Location,
}

/// Every room of this node (and, in a cluster, the other nodes' members of them).
pub struct Hub {
    config: HubConfig,
    node: String,
    id_key: [u8; 32],
    id_counter: u64,
    /// Wall-clock seconds at `epoch.0`, for token expiry and TURN credentials.
    epoch: (Instant, u64),
    next_conn: u64,
    conns: HashMap<ConnId, Conn>,
    peers: HashMap<String, Peer>,
    /// Room name → its peers' ids, in joining order.
    rooms: HashMap<String, Vec<String>>,
    /// Rooms in SFU mode (the others are meshes).
    sfu_rooms: std::collections::HashSet<String>,
    /// Other nodes of the cluster → when we last heard them.
    nodes: HashMap<String, Instant>,
    clustered: bool,
    /// Shutting down: no new connections.
    closing: bool,
    /// An SFU is beside the hub: rooms may leave mesh mode.
    sfu: bool,
    next_tick: Instant,
    next_heartbeat: Instant,
    out: VecDeque<Output>,
    stats: HubStats,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No id key, no token secret.
        f.debug_struct("Hub")
            .field("node", &self.node)
            .field("connections", &self.conns.len())
            .field("peers", &self.peers.len())
            .field("rooms", &self.rooms.len())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// `unix_now` is the wall clock at `now` (seconds); `seed` comes from a CSPRNG and makes
    /// peer ids unguessable.
    pub fn new(config: HubConfig, now: Instant, unix_now: u64, seed: [u8; 32]) -> Hub {
        let mut hub = Hub {
            config,
            node: String::new(),
            id_key: seed,
            id_counter: 0,
            epoch: (now, unix_now),
            next_conn: 1,
            conns: HashMap::new(),
            peers: HashMap::new(),
            rooms: HashMap::new(),
            sfu_rooms: std::collections::HashSet::new(),
            nodes: HashMap::new(),
            clustered: false,
            closing: false,
            sfu: false,
            next_tick: now + TICK,
            next_heartbeat: now,
            out: VecDeque::new(),
            stats: HubStats::default(),
        };
        hub.node = hub.fresh_id();
        hub
    }

    /// Joins a cluster: from now on membership and signals for other nodes come out as
    /// `Publish`. Says hello so the others announce their peers.
    pub fn enable_cluster(&mut self, now: Instant) {
        self.clustered = true;
        self.next_heartbeat = now + HEARTBEAT;
        self.out.push_back(Output::Publish(ClusterMessage::Hello { node: self.node.clone() }));
    }

    /// After the link to the other nodes came back: they may have forgotten us, and we
    /// missed their news. Hello gets their announcements; ours goes out unasked.
    pub fn resync_cluster(&mut self, now: Instant) {
        if !self.clustered {
            return;
        }
        self.out.push_back(Output::Publish(ClusterMessage::Hello { node: self.node.clone() }));
        self.out.push_back(Output::Publish(self.announcement()));
        self.next_heartbeat = now + HEARTBEAT;
    }

    fn announcement(&self) -> ClusterMessage {
        let peers = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.at, Location::Local(_)))
            .map(|(id, p)| RemotePeer { room: p.room.clone(), id: id.clone(), name: p.name.clone() })
            .collect();
        ClusterMessage::Announce { node: self.node.clone(), peers }
    }

    /// An SFU now takes [`Output::Sfu`]: rooms follow `room_mode` from their next join.
    pub fn enable_sfu(&mut self) {
        self.sfu = true;
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> HubStats {
        let mut stats = self.stats.clone();
        stats.connections = self.conns.len() as u64;
        stats.joined = self.conns.values().filter(|c| c.peer.is_some()).count() as u64;
        stats.rooms = self.rooms.len() as u64;
        stats.remote_peers =
            self.peers.values().filter(|p| matches!(p.at, Location::Remote(_))).count() as u64;
        stats
    }

    /// A WebSocket was accepted; `host` is the host name the client reached us by.
    /// `None` when this node is full (close the socket with [`CLOSE_TRY_AGAIN`]).
    pub fn connect(&mut self, now: Instant, host: &str) -> Option<ConnId> {
        if self.closing || self.conns.len() >= self.config.max_connections {
            self.stats.refused_full += 1;
            return None;
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                host: host.to_owned(),
                peer: None,
                rate: Bucket::full(self.config.message_burst, now),
                strikes: Bucket::full(STRIKES, now),
                throttled: false,
                last_heard: now,
                last_ping: now,
            },
        );
        Some(id)
    }

    /// The connection ended (closed, errored, or the driver gave up on it).
    pub fn disconnect(&mut self, _now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(peer) = c.peer {
                self.remove_peer(&peer, true);
            }
        }
    }

    /// The driver gave up on a connection that does not read what it is sent.
    pub fn drop_slow(&mut self, now: Instant, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.stats.dropped_slow += 1;
            self.disconnect(now, conn);
        }
    }

    /// A pong (or any other sign of life that is not a frame).
    pub fn handle_pong(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_heard = now;
        }
    }

    /// A binary frame: this protocol is text only.
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_heard = now;
            self.refuse(
                now,
                conn,
                ErrorCode::BadRequest,
                "binary frames are not part of the protocol",
                STRIKE_BAD,
            );
        }
    }

    /// A text frame over `max_frame_bytes` (the driver may check sizes itself and not pass
    /// such frames on).
    pub fn handle_oversized(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_heard = now;
            let message = "frame larger than the server accepts";
            self.refuse(now, conn, ErrorCode::TooLarge, message, STRIKE_BAD);
        }
    }

    /// One text frame from a client.
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.last_heard = now;
        let in_sfu_room =
            c.peer.as_ref().and_then(|p| self.peers.get(p)).is_some_and(|p| self.sfu_rooms.contains(&p.room));
        let limit = self.config.max_frame_bytes * if in_sfu_room { SFU_FRAME_FACTOR } else { 1 };
        if text.len() > limit {
            return self.handle_oversized(now, conn);
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let (rate, burst) = (self.config.messages_per_second, self.config.message_burst);
        if !c.rate.take(now, 1.0, rate, burst) {
            // One error per throttled stretch, not one per message: no amplification.
            let first = !c.throttled;
            c.throttled = true;
            if first {
                self.refuse(
                    now,
                    conn,
                    ErrorCode::RateLimited,
                    "too many messages; slow down",
                    STRIKE_THROTTLED,
                );
            } else {
                self.strike(now, conn, STRIKE_THROTTLED);
            }
            return;
        }
        c.throttled = false;
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Join { room, name, token, id, resume }) => {
                self.join(now, conn, Join { room, name, token, requested: id, resume })
            }
            Ok(ClientMessage::Signal { to, data }) => self.signal(now, conn, &to, data),
            Ok(ClientMessage::Leave) => self.leave(now, conn),
            Err(e @ ParseError::BadRequest(_)) => {
                self.refuse(now, conn, ErrorCode::BadRequest, &e.to_string(), STRIKE_BAD)
            }
            Err(e @ ParseError::UnknownType(_)) => {
                self.refuse(now, conn, ErrorCode::UnknownType, &e.to_string(), STRIKE_BAD)
            }
        }
    }

    fn join(&mut self, now: Instant, conn: ConnId, join: Join) {
        let Join { room, name, token, requested, resume } = join;
        if self.conns[&conn].peer.is_some() {
            let message = "already in a room; send leave first";
            return self.refuse(now, conn, ErrorCode::AlreadyJoined, message, STRIKE_BAD);
        }
        if !protocol::valid_room(&room) {
            let message =
                "room names are 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit";
            return self.refuse(now, conn, ErrorCode::BadRoom, message, STRIKE_BAD);
        }
        if !protocol::valid_name(&name) {
            let message = "names are 1-32 characters without control characters";
            return self.refuse(now, conn, ErrorCode::BadName, message, STRIKE_BAD);
        }
        if let Some(secret) = &self.config.token_secret {
            let unix = self.unix(now);
            if let Err(why) = token::verify(secret, token.as_deref(), &room, unix) {
                return self.refuse(now, conn, ErrorCode::Unauthorized, why, STRIKE_BAD);
            }
        }
        // A peer coming back on a new connection while this node still holds its old one (a
        // connection that died without a close and has not timed out yet) proves who it is
        // with the resume token of its `welcome`; it takes its place back, full room or not.
        let resuming = requested.as_deref().is_some_and(|id| self.may_resume(id, &room, resume.as_deref()));
        let members = self.rooms.get(&room).map_or(0, Vec::len);
        if members >= self.config.max_room_peers && !resuming {
            let message = format!("room is full ({} peers)", self.config.max_room_peers);
            // Not abuse: the room may have room again soon.
            return self.refuse(now, conn, ErrorCode::RoomFull, &message, 0.0);
        }
        // A client back from a lost connection (or a server restart) asks for its old id, so
        // the peers it still has connections with recognise it. Granted only for an id of
        // the server's own form that nobody holds now, on this node or another: a member can
        // never take over a present peer's id (only the peer itself, resuming).
        let id = match requested {
            Some(id) if resuming => {
                self.replace_connection(&id);
                id
            }
            Some(id) if protocol::valid_peer_id(&id) && !self.peers.contains_key(&id) => id,
            _ => self.fresh_id(),
        };
        let peers: Vec<PeerInfo> = self.rooms.get(&room).map_or_else(Vec::new, |ids| {
            ids.iter().map(|id| PeerInfo { id: id.clone(), name: self.peers[id].name.clone() }).collect()
        });
        let ice = self.ice_servers(now, &self.conns[&conn].host, &id);
        let was_sfu = self.sfu_rooms.contains(&room);
        let sfu = self.wants_sfu(peers.len() + 1);
        let mode = if sfu { "sfu" } else { "mesh" };
        let welcome = protocol::encode_welcome(&id, &room, &peers, &ice, &self.resume_token(&id), mode);
        self.send(conn, welcome.into());
        if sfu && !was_sfu {
            self.switch_mode(&room, true);
        }
        let info = PeerInfo { id: id.clone(), name: name.clone() };
        self.broadcast(&room, protocol::encode_peer_joined(&info).into());
        if sfu {
            self.out.push_back(Output::Sfu(SfuEvent::Join { room: room.clone(), peer: id.clone() }));
        }
        if self.clustered {
            let peer = RemotePeer { room: room.clone(), id: id.clone(), name: name.clone() };
            self.out.push_back(Output::Publish(ClusterMessage::Joined { node: self.node.clone(), peer }));
        }
        self.rooms.entry(room.clone()).or_default().push(id.clone());
        self.peers.insert(id.clone(), Peer { name, room, at: Location::Local(conn) });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(id);
        }
    }

    fn signal(&mut self, now: Instant, conn: ConnId, to: &str, data: &RawValue) {
        let Some(from) = self.conns[&conn].peer.clone() else {
            return self.refuse(now, conn, ErrorCode::NotJoined, "join a room before signaling", STRIKE_BAD);
        };
        let room = &self.peers[&from].room;
        if to == SFU_PEER {
            if !self.sfu_rooms.contains(room) {
                // A switch back to a mesh may cross the client's last signals: not abuse.
                let message = "this room is not in sfu mode";
                return self.refuse(now, conn, ErrorCode::UnknownPeer, message, 0.25);
            }
            self.stats.signals_relayed += 1;
            let event = SfuEvent::Signal { room: room.clone(), peer: from, data: data.get().to_owned() };
            self.out.push_back(Output::Sfu(event));
            return;
        }
        let target = match self.peers.get(to).filter(|p| &p.room == room && to != from).map(|p| &p.at) {
            Some(Location::Local(target)) => Ok(*target),
            Some(Location::Remote(node)) => Err(Some(node.clone())),
            None => Err(None),
        };
        match target {
            Ok(target) => {
                self.stats.signals_relayed += 1;
                self.send(target, protocol::encode_signal(&from, data).into());
            }
            Err(Some(node)) => {
                self.stats.signals_relayed += 1;
                let msg = ClusterMessage::Signal {
                    node: self.node.clone(),
                    to_node: node,
                    from,
                    to: to.to_owned(),
                    data: data.get().to_owned(),
                };
                self.out.push_back(Output::Publish(msg));
            }
            // A peer that just left is a normal race, not abuse.
            Err(None) => self.refuse(now, conn, ErrorCode::UnknownPeer, "no such peer in your room", 0.25),
        }
    }

    fn leave(&mut self, now: Instant, conn: ConnId) {
        match self.conns.get_mut(&conn).and_then(|c| c.peer.take()) {
            Some(peer) => self.remove_peer(&peer, true),
            None => self.refuse(now, conn, ErrorCode::NotJoined, "not in a room", STRIKE_BAD),
        }
    }

    /// Whether `token` is the resume token of `id`, a peer of `room` on this node.
    fn may_resume(&self, id: &str, room: &str, token: Option<&str>) -> bool {
        let local =
            matches!(self.peers.get(id), Some(Peer { at: Location::Local(_), room: r, .. }) if r == room);
        match token.and_then(hex16) {
            Some(tag) if local => self.resume_mac(id).verify_truncated_left(&tag).is_ok(),
            _ => false,
        }
    }

    fn resume_mac(&self, id: &str) -> Hmac<sha2::Sha256> {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.id_key).expect("any key length");
        mac.update(b"resume:");
        mac.update(id.as_bytes());
        mac
    }

    /// 32 hex digits, HMAC-SHA256(seed, "resume:" id) truncated: proves that a rejoin is the
    /// peer this node gave `id` to.
    fn resume_token(&self, id: &str) -> String {
        let bytes = self.resume_mac(id).finalize().into_bytes();
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The peer `id` is back on a new connection: the old one is closed, and nobody is told it
    /// left (it is back at once, under the same id; the others get `peer-joined` for it).
    fn replace_connection(&mut self, id: &str) {
        let Some(Peer { at: Location::Local(old), .. }) = self.unlist(id) else { return };
        self.conns.remove(&old);
        self.out.push_back(Output::Close {
            conn: old,
            code: CLOSE_REPLACED,
            reason: "replaced by a newer connection",
        });
        // The other nodes of a cluster need not know: the peer is still here, in the same room
        // (the `joined` that follows changes nothing for them).
    }

    /// Forgets a peer without telling anyone.
    fn unlist(&mut self, id: &str) -> Option<Peer> {
        let peer = self.peers.remove(id)?;
        if let Some(ids) = self.rooms.get_mut(&peer.room) {
            ids.retain(|p| p != id);
            if ids.is_empty() {
                self.rooms.remove(&peer.room);
            }
        }
        Some(peer)
    }

    /// Whether a room of `count` peers goes through the SFU. Rooms that span a cluster
    /// stay meshes: an SFU room's media lives on one node.
    fn wants_sfu(&self, count: usize) -> bool {
        self.sfu
            && !self.clustered
            && match self.config.room_mode {
                RoomMode::Mesh => false,
                RoomMode::Sfu => true,
                RoomMode::Auto => count > self.config.mesh_max,
            }
    }

    /// A room changes modes: its peers are told (before any other news), and the SFU takes
    /// them in or lets them go.
    fn switch_mode(&mut self, room: &str, sfu: bool) {
        let ids = self.rooms.get(room).cloned().unwrap_or_default();
        let local: Vec<String> =
            ids.into_iter().filter(|id| matches!(self.peers[id].at, Location::Local(_))).collect();
        if sfu {
            self.sfu_rooms.insert(room.to_owned());
        } else {
            self.sfu_rooms.remove(room);
        }
        tracing::info!(
            room,
            mode = if sfu { "sfu" } else { "mesh" },
            peers = local.len(),
            "room switches modes"
        );
        self.broadcast(room, protocol::encode_mode(if sfu { "sfu" } else { "mesh" }).into());
        for peer in local {
            let (room, peer) = (room.to_owned(), peer);
            self.out.push_back(Output::Sfu(if sfu {
                SfuEvent::Join { room, peer }
            } else {
                SfuEvent::Leave { room, peer, switched: true }
            }));
        }
    }

    /// The SFU sends `data` (JSON) to `peer`, as the peer `"sfu"`. Dropped when the peer is
    /// gone or its room is no longer in SFU mode.
    pub fn sfu_signal(&mut self, peer: &str, data: &str) {
        let Some(Peer { at: Location::Local(conn), room, .. }) = self.peers.get(peer) else { return };
        if !self.sfu_rooms.contains(room) {
            return;
        }
        let Ok(data) = RawValue::from_string(data.to_owned()) else { return };
        let conn = *conn;
        self.send(conn, protocol::encode_signal(SFU_PEER, &data).into());
    }

    /// Forgets a peer, tells its room, and (for a local one) the cluster.
    fn remove_peer(&mut self, id: &str, publish: bool) {
        let Some(peer) = self.unlist(id) else { return };
        if self.sfu_rooms.contains(&peer.room) {
            let event = SfuEvent::Leave { room: peer.room.clone(), peer: id.to_owned(), switched: false };
            self.out.push_back(Output::Sfu(event));
            let left = self.rooms.get(&peer.room).map_or(0, Vec::len);
            if left == 0 {
                self.sfu_rooms.remove(&peer.room);
            } else if !self.wants_sfu(left) {
                self.switch_mode(&peer.room, false);
            }
        }
        self.broadcast(&peer.room, protocol::encode_peer_left(id).into());
        if publish && self.clustered && matches!(peer.at, Location::Local(_)) {
            self.out.push_back(Output::Publish(ClusterMessage::Left {
                node: self.node.clone(),
                id: id.to_owned(),
            }));
        }
    }

    /// Sends to every local peer of a room.
    fn broadcast(&mut self, room: &str, text: Arc<str>) {
        let Some(ids) = self.rooms.get(room) else { return };
        for id in ids {
            if let Some(Peer { at: Location::Local(conn), .. }) = self.peers.get(id) {
                self.out.push_back(Output::Send { conn: *conn, text: text.clone() });
            }
        }
    }

    fn send(&mut self, conn: ConnId, text: Arc<str>) {
        self.out.push_back(Output::Send { conn, text });
    }

    /// Answers with an error frame and charges strikes; out of strikes closes with 1008.
    fn refuse(&mut self, now: Instant, conn: ConnId, code: ErrorCode, message: &str, strikes: f64) {
        if self.strike(now, conn, strikes) {
            self.stats.errors_sent += 1;
            self.send(conn, protocol::encode_error(code, message).into());
        }
    }

    /// False when the connection ran out of strikes and was closed.
    fn strike(&mut self, now: Instant, conn: ConnId, cost: f64) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        if cost == 0.0 || c.strikes.take(now, cost, STRIKE_REFILL_PER_SECOND, STRIKES) {
            return true;
        }
        self.stats.closed_for_abuse += 1;
        self.close(now, conn, CLOSE_POLICY, "policy violation: too many bad messages");
        false
    }

    fn close(&mut self, now: Instant, conn: ConnId, code: u16, reason: &'static str) {
        self.disconnect(now, conn);
        self.out.push_back(Output::Close { conn, code, reason });
    }

    /// The server is stopping: every connection is closed with 1001 and new ones refused.
    ///
    /// Nobody is told `peer-left`: a server going away (for a restart, an upgrade) is not its
    /// peers leaving. Their peer-to-peer connections go on; they reconnect, to this server
    /// once it is back or to another node, and ask for their ids again. The other nodes of a
    /// cluster hear `bye` and forget this node's peers just as quietly, so those ids are free
    /// to be taken again wherever the peers come back.
    pub fn close_all(&mut self, _now: Instant) {
        self.closing = true;
        if self.clustered {
            self.out.push_back(Output::Publish(ClusterMessage::Bye { node: self.node.clone() }));
        }
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort();
        for conn in ids {
            if let Some(peer) = self.conns.remove(&conn).and_then(|c| c.peer) {
                self.unlist(&peer);
            }
            self.out.push_back(Output::Close {
                conn,
                code: CLOSE_GOING_AWAY,
                reason: "server shutting down",
            });
        }
    }

    /// Keepalive pings, idle connections, cluster heartbeats and dead nodes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let mut idle = Vec::new();
            for (&id, c) in &mut self.conns {
                if now.saturating_duration_since(c.last_heard) >= self.config.idle_timeout {
                    idle.push(id);
                } else if now.saturating_duration_since(c.last_ping) >= self.config.ping_interval {
                    c.last_ping = now;
                    self.out.push_back(Output::Ping { conn: id });
                }
            }
            idle.sort();
            for id in idle {
                self.stats.closed_idle += 1;
                self.close(now, id, CLOSE_GOING_AWAY, "no answer to keepalive pings");
            }
            let dead: Vec<String> = self
                .nodes
                .iter()
                .filter(|(_, &heard)| now.saturating_duration_since(heard) >= NODE_TIMEOUT)
                .map(|(node, _)| node.clone())
                .collect();
            for node in dead {
                tracing::info!(node, "signaling node went silent; its peers leave their rooms");
                self.forget_node(&node);
            }
        }
        if self.clustered && now >= self.next_heartbeat {
            self.next_heartbeat = now + HEARTBEAT;
            self.out.push_back(Output::Publish(ClusterMessage::Heartbeat { node: self.node.clone() }));
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        if self.clustered {
            self.next_tick.min(self.next_heartbeat)
        } else {
            self.next_tick
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// A message from another node.
    pub fn handle_cluster(&mut self, now: Instant, msg: ClusterMessage) {
        if !self.clustered || msg.node() == self.node {
            return;
        }
        let node = msg.node().to_owned();
        self.nodes.insert(node.clone(), now);
        match msg {
            ClusterMessage::Hello { .. } => {
                let announcement = self.announcement();
                self.out.push_back(Output::Publish(announcement));
            }
            ClusterMessage::Heartbeat { .. } => {}
            ClusterMessage::Bye { .. } => {
                // A graceful shutdown: its peers are reconnecting (here, or wherever the load
                // balancer sends them) and keep their calls; no `peer-left` for them.
                tracing::info!(node, "signaling node shut down; its peers are reconnecting");
                self.nodes.remove(&node);
                let gone: Vec<String> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| matches!(&p.at, Location::Remote(n) if *n == node))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.unlist(&id);
                }
            }
            ClusterMessage::Announce { peers, .. } => {
                // The node's whole membership: whoever it no longer lists has left (a `left`
                // may have been lost while the link was down).
                let listed: std::collections::HashSet<&str> = peers.iter().map(|p| p.id.as_str()).collect();
                let gone: Vec<String> = self
                    .peers
                    .iter()
                    .filter(|(id, p)| {
                        matches!(&p.at, Location::Remote(n) if *n == node) && !listed.contains(id.as_str())
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in gone {
                    self.remove_peer(&id, false);
                }
                for peer in peers {
                    self.add_remote(&node, peer);
                }
            }
            ClusterMessage::Joined { peer, .. } => self.add_remote(&node, peer),
            ClusterMessage::Left { id, .. } => {
                if matches!(self.peers.get(&id), Some(Peer { at: Location::Remote(n), .. }) if *n == node) {
                    self.remove_peer(&id, false);
                }
            }
            ClusterMessage::Signal { to_node, from, to, data, .. } => {
                if to_node != self.node {
                    return;
                }
                let from_room = match self.peers.get(&from) {
                    Some(Peer { at: Location::Remote(n), room, .. }) if *n == node => room,
                    _ => return,
                };
                // Relayed only if it is JSON, as from a local client.
                let Ok(data) = serde_json::from_str::<&RawValue>(&data) else { return };
                if let Some(Peer { at: Location::Local(conn), room, .. }) = self.peers.get(&to) {
                    if room == from_room {
                        let conn = *conn;
                        let text = protocol::encode_signal(&from, data).into();
                        self.send(conn, text);
                    }
                }
            }
        }
    }

    fn add_remote(&mut self, node: &str, peer: RemotePeer) {
        let plausible_id =
            (1..=64).contains(&peer.id.len()) && peer.id.bytes().all(|b| b.is_ascii_alphanumeric());
        if self.peers.contains_key(&peer.id)
            || !plausible_id
            || !protocol::valid_room(&peer.room)
            || !protocol::valid_name(&peer.name)
        {
            return;
        }
        let info = PeerInfo { id: peer.id.clone(), name: peer.name.clone() };
        self.broadcast(&peer.room, protocol::encode_peer_joined(&info).into());
        self.rooms.entry(peer.room.clone()).or_default().push(peer.id.clone());
        self.peers.insert(
            peer.id,
            Peer { name: peer.name, room: peer.room, at: Location::Remote(node.to_owned()) },
        );
    }

    fn forget_node(&mut self, node: &str) {
        self.nodes.remove(node);
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(&p.at, Location::Remote(n) if n == node))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_peer(&id, false);
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn ice_servers(&self, now: Instant, host: &str, peer: &str) -> Vec<IceServer> {
        let ice = &self.config.ice;
        let fill =
            |urls: &[String]| -> Vec<String> { urls.iter().map(|u| u.replace("{host}", host)).collect() };
        let mut servers = Vec::new();
        if !ice.stun_urls.is_empty() {
            servers.push(IceServer { urls: fill(&ice.stun_urls), username: None, credential: None });
        }
        if let (false, Some(secret)) = (ice.turn_urls.is_empty(), &ice.turn_secret) {
            let username = format!("{}:{peer}", self.unix(now) + ice.credential_ttl.as_secs());
            let credential = peerlink_turn::auth::rest_password(secret, &username);
            servers.push(IceServer {
                urls: fill(&ice.turn_urls),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }

    /// 16 hex digits from HMAC-SHA256(seed, counter): unique and unguessable (and never one
    /// a rejoining peer holds already).
    fn fresh_id(&mut self) -> String {
        loop {
            self.id_counter += 1;
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.id_key).expect("any key length");
            mac.update(&self.id_counter.to_be_bytes());
            let bytes = mac.finalize().into_bytes();
            let id: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
            if !self.peers.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
