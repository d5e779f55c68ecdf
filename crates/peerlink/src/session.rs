//! The lower layer of [`Room`](crate::Room): one task owns the signaling client and a
//! connection ([`peerlink_io::Peer`]) per other participant, with the browser app's
//! conventions (docs/file-transfer.md, shared DESIGN): the newcomer offers to everyone listed
//! in its welcome, perfect negotiation by id (the greater id is polite), candidates trickled
//! as `{"candidate":{...}}` with `null` at the end, and the offer fallback after 4 s.
//!
//! The application reads [`SessionEvent`]s from a channel (cancel-safe in any `select!`) and
//! commands each connection through its [`PeerHandle`]; nothing the application does can
//! cut a negotiation in half. Candidates found before our description went to a peer are
//! held until it has gone (a peer cannot use them before). A signaling outage does not touch
//! established connections: a peer is gone when its connection ends, or when the server says
//! it left before it was ever connected.
//!
//! In a room the server runs in SFU mode (docs/signaling.md, "Rooms in SFU mode") there is
//! one connection, to the peer `"sfu"` (the server): we offer what we send, we are polite,
//! the server offers the other participants' tracks (each track's stream id is its
//! publisher's id, [`RtcEvent::Track`]'s `stream_id`). At a switch of mode the new
//! connections are made first and the old ones close once they are up (or after
//! [`SWITCH_BOUND`]), as the browser app does.

use peerlink_io::{Peer, PeerConfig, PeerEvents, PeerHandle};
use peerlink_rtc::{
    CongestionControl, ConnectionState, Description, Direction, MediaKind, RtcConfig, RtcEvent, SdpType,
    TrackConfig,
};
use peerlink_signal::{ClientEvent, ClientOptions, IceServer, SignalClient};
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a peer told of another waits for its offer before offering itself.
const OFFER_FALLBACK: Duration = Duration::from_secs(4);
/// A connection not up after this long is given up (an offer or answer lost with a
/// signaling outage, a peer that never answers): ICE's own timeout starts only once there
/// are candidate pairs to check.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// The connections of the old mode close at most this long after a switch.
pub const SWITCH_BOUND: Duration = Duration::from_secs(10);
/// A lost connection to the server of a room in SFU mode is made again after this long.
const SFU_REOPEN: Duration = Duration::from_secs(2);
/// The peer id of the server in a room in SFU mode.
pub const SFU_PEER: &str = "sfu";

/// How the room carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    /// A connection per other participant.
    Mesh,
    /// One connection, to the server ([`SFU_PEER`]), which forwards everyone's media.
    Sfu,
}

/// An event of connection `generation` to peer `id` (`None`: its driver ended). The
/// generation tells a new connection to the same id from one being closed.
type PeerEvent = (String, u64, Option<RtcEvent>);

/// What the session tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A connection to `peer` is being set up. `offerer`: we made the first offer (the app's
    /// convention: the offerer opens the first channel).
    Connecting {
        /// Who.
        peer: Remote,
        /// Commands to the connection.
        handle: PeerHandle,
        /// Whether we made the first offer.
        offerer: bool,
    },
    /// An event of the connection to `peer`.
    Rtc {
        /// The peer's id.
        peer: String,
        /// What happened.
        event: RtcEvent,
    },
    /// The connection to `peer` is over; nothing more comes from it.
    Gone {
        /// The peer's id.
        peer: String,
        /// Why.
        reason: Gone,
    },
    /// Someone is in the room (from the server's lists: those there when we joined, then
    /// each newcomer). In SFU mode no connection to it follows: its media comes from the
    /// server, as a stream whose id is its id.
    PeerJoined(Remote),
    /// Someone left the room (its connection, if any, may outlive this a little).
    PeerLeft(String),
    /// The room carries media this way now: after joining when it is not a mesh, and at
    /// every switch.
    Mode(RoomMode),
}

/// Another participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its id in the room (given by the server).
    pub id: String,
    /// The name it joined with.
    pub name: String,
}

/// Why a connection is over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gone {
    /// It left the room before a connection was up.
    Left,
    /// The connection closed (the other side closed it, or it left while connected).
    Closed,
    /// The connection failed; `during_setup`: it never came up.
    Failed {
        /// What failed, for a person.
        reason: String,
        /// It had never been connected.
        during_setup: bool,
    },
}

impl Gone {
    /// Whether the connection failed (rather than being closed or never started).
    pub fn is_failure(&self) -> bool {
        matches!(self, Gone::Failed { .. })
    }
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gone::Left => f.write_str("the other peer left"),
            Gone::Closed => f.write_str("the other peer closed the connection"),
            Gone::Failed { reason, during_setup: true } => {
                write!(f, "the connection could not be set up: {reason}")
            }
            Gone::Failed { reason, during_setup: false } => write!(f, "the connection failed: {reason}"),
        }
    }
}

/// A sink for status lines meant for a person (who joined, offers, signaling outages).
pub type StatusFn = Arc<dyn Fn(&str) + Send + Sync>;

/// How the session reaches the server and sets up connections. Set fields on
/// `SessionOptions::default()`.
#[derive(Clone)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Room token, when the server requires one (HS256 JWT).
    pub token: Option<String>,
    /// Local addresses to gather host candidates on; empty: every usable address.
    pub bind: Vec<IpAddr>,
    /// Keep trying to reach a server that refuses connections for this long before the
    /// first join (`None`: forever). Default 30 s.
    pub wait: Option<Duration>,
    /// Transceivers every connection gets before its first offer or answer (what we send).
    pub tracks: Vec<(MediaKind, Direction, TrackConfig)>,
    /// What a transceiver made for a peer's audio or video section does (`None`: recvonly).
    pub accept_media: Option<Direction>,
    /// Transceivers made for a peer's (or the server's) sections deliver raw RTP packets
    /// ([`RtcEvent::Rtp`]) rather than frames: for programs that forward or measure packets.
    pub accept_raw: bool,
    /// Bytes each data channel delivers before the application gives credit for more
    /// ([`PeerHandle::add_receive_credit`]); `None`: no limit.
    pub channel_receive_credit: Option<usize>,
    /// The data channels' SCTP congestion controller; `None`: the SCTP crate's default.
    pub congestion_control: Option<CongestionControl>,
    /// Where status lines go; `None`: `tracing` at info level.
    pub status: Option<StatusFn>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            token: None,
            bind: Vec::new(),
            wait: Some(Duration::from_secs(30)),
            tracks: Vec::new(),
            accept_media: None,
            accept_raw: false,
            channel_receive_credit: None,
            congestion_control: None,
            status: None,
        }
    }
}

impl std::fmt::Debug for SessionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOptions")
            .field("bind", &self.bind)
            .field("wait", &self.wait)
            .field("tracks", &self.tracks.len())
            .field("accept_media", &self.accept_media)
            .field("accept_raw", &self.accept_raw)
            .field("channel_receive_credit", &self.channel_receive_credit)
            .field("congestion_control", &self.congestion_control)
            .finish_non_exhaustive()
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The server refused us or could not be reached (a wrong URL, an unreachable server,
    /// a full room, a refused token...); the message says which.
    #[error("signaling: {0}")]
    Signaling(String),
    /// No local socket could be set up for a connection.
    #[error("starting a connection: {0}")]
    Start(#[from] std::io::Error),
}

/// Status lines go to the application's sink, or to `tracing`.
#[derive(Clone)]
struct Status(Option<StatusFn>);

impl Status {
    fn say(&self, line: &str) {
        match &self.0 {
            Some(f) => f(line),
            None => tracing::info!("{line}"),
        }
    }
}

macro_rules! status {
    ($status:expr, $($arg:tt)*) => { $status.say(&format!($($arg)*)) };
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A task that runs until told to stop (it then closes what it owns).
#[derive(Debug)]
pub(crate) struct Worker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Spawns `run`, which must return soon after its receiver fires.
    pub(crate) fn spawn<F>(run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F) -> Worker
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        Worker { stop, task: tokio::spawn(run(stopped)) }
    }

    /// Tells the task to stop and waits until it has.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The application's side of the session.
#[derive(Debug)]
pub struct Session {
    id: String,
    events: mpsc::UnboundedReceiver<SessionEvent>,
    worker: Worker,
}

/// STUN and TURN servers from the server's `iceServers` (UDP URLs; `turns:` and TCP are
/// skipped: the native peer relays over UDP). Names are resolved with tokio's resolver;
/// IPv4 and IPv6 addresses are both kept.
async fn rtc_config(servers: &[IceServer], status: &Status) -> RtcConfig {
    let mut config = RtcConfig::default();
    for server in servers {
        for url in &server.urls {
            let (scheme, rest) = url.split_once(':').unwrap_or(("", ""));
            let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.contains("transport=tcp") {
                continue;
            }
            let hostport = if hostport.parse::<IpAddr>().is_ok()
                || (hostport.starts_with('[') && hostport.ends_with(']'))
                || !hostport.contains(':')
            {
                let bare = hostport.trim_start_matches('[').trim_end_matches(']');
                match bare.parse::<IpAddr>() {
                    Ok(IpAddr::V6(v6)) => format!("[{v6}]:3478"),
                    _ => format!("{bare}:3478"),
                }
            } else {
                hostport.to_owned()
            };
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(&hostport).await {
                Ok(addrs) => addrs.collect(),
                Err(e) => {
                    status!(status, "peerlink: ICE server {url}: {e}; skipped");
                    continue;
                }
            };
            for addr in addrs {
                match (scheme, &server.username, &server.credential) {
                    ("stun", _, _) => config.stun_servers.push(addr),
                    ("turn", Some(username), Some(password)) => {
                        config.turn_servers.push(peerlink_ice::TurnServerConfig {
                            server: addr,
                            username: username.clone(),
                            password: password.clone(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }
    config
}

impl Session {
    /// Joins `room` on the signaling server at `url` (`ws://` or `wss://`) as `name`;
    /// returns once the server has welcomed us (an error if it refused, or could not be
    /// reached within `options.wait`).
    pub async fn join(
        url: &str,
        room: &str,
        name: &str,
        options: SessionOptions,
    ) -> Result<Session, JoinError> {
        let status = Status(options.status.clone());
        let mut client_options = ClientOptions::default();
        client_options.give_up_after = options.wait;
        let mut signal = SignalClient::connect_with(url, room, name, options.token.clone(), client_options);
        let (my_id, peers, ice_servers, mode) = loop {
            match signal.next_event().await {
                Some(ClientEvent::Joined { id, peers, ice_servers, mode, .. }) => {
                    break (id, peers, ice_servers, mode)
                }
                Some(ClientEvent::Closed { reason }) => return Err(JoinError::Signaling(reason)),
                Some(ClientEvent::Disconnected { reason }) => {
                    status!(status, "peerlink: signaling: {reason}; retrying")
                }
                Some(_) => {}
                None => return Err(JoinError::Signaling("the signaling client stopped".to_owned())),
            }
        };
        status!(status, "peerlink: joined room {room} as {name} ({my_id})");
        let mut rtc = rtc_config(&ice_servers, &status).await;
        rtc.accept_media = options.accept_media;
        rtc.accept_raw = options.accept_raw;
        rtc.channel_receive_credit = options.channel_receive_credit;
        rtc.congestion_control = options.congestion_control;
        let (app, events) = mpsc::unbounded_channel();
        let (peer_events, merged) = mpsc::unbounded_channel();
        let mut task = Task {
            signal,
            my_id: my_id.clone(),
            config: PeerConfig { rtc, addresses: options.bind.clone() },
            conns: HashMap::new(),
            names: peers.iter().map(|p| (p.id.clone(), p.name.clone())).collect(),
            order: peers.iter().map(|p| p.id.clone()).chain([my_id.clone()]).collect(),
            generations: 0,
            app,
            peer_events,
            tracks: options.tracks.clone(),
            status: status.clone(),
            mode: RoomMode::Mesh,
            retiring: Vec::new(),
            retire_at: None,
            reopen_sfu_at: None,
        };
        for p in &peers {
            let _ =
                task.app.send(SessionEvent::PeerJoined(Remote { id: p.id.clone(), name: p.name.clone() }));
        }
        if mode == "sfu" {
            task.switch(RoomMode::Sfu).await?;
        } else {
            if peers.is_empty() {
                status!(status, "peerlink: waiting for someone to join");
            }
            for p in peers {
                status!(status, "peerlink: {} ({}) is here; offering", p.name, p.id);
                task.open(Remote { id: p.id, name: p.name }, true).await?;
            }
        }
        let worker = Worker::spawn(|stopped| task.run(merged, stopped));
        Ok(Session { id: my_id, events, worker })
    }

    /// Our id in the room when we joined (the server may give a new one after an outage).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event; `None` when signaling ended for good and no connection is left.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Closes every connection and leaves the room.
    pub async fn close(self) {
        self.worker.stop().await;
    }
}

/// The room task's state of one other participant.
struct Conn {
    name: String,
    generation: u64,
    started: Instant,
    handle: PeerHandle,
    forward: tokio::task::JoinHandle<()>,
    making_offer: bool,
    /// Our offer is out and not answered.
    offered: bool,
    /// We have sent a description (offer or answer): candidates may follow it.
    described: bool,
    held: Vec<serde_json::Value>,
    fallback_at: Option<Instant>,
    connected: bool,
}

struct Task {
    signal: SignalClient,
    my_id: String,
    config: PeerConfig,
    conns: HashMap<String, Conn>,
    /// Names of the participants, from the server's lists.
    names: HashMap<String, String>,
    /// Who is in the room (us too), in the order they joined as far as we know.
    order: Vec<String>,
    mode: RoomMode,
    /// Connections of the mode before a switch: closed once the new ones are up, or at
    /// `retire_at`.
    retiring: Vec<String>,
    retire_at: Option<Instant>,
    /// The connection to the server of a room in SFU mode was lost: a new one then.
    reopen_sfu_at: Option<Instant>,
    generations: u64,
    app: mpsc::UnboundedSender<SessionEvent>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    tracks: Vec<(MediaKind, Direction, TrackConfig)>,
    status: Status,
}

async fn forward(id: String, generation: u64, mut events: PeerEvents, to: mpsc::UnboundedSender<PeerEvent>) {
    while let Some(e) = events.next().await {
        if to.send((id.clone(), generation, Some(e))).is_err() {
            return;
        }
    }
    let _ = to.send((id, generation, None));
}

impl Task {
    /// Starts a connection to `remote`; `offer`: we offer now (we are the newcomer).
    async fn open(&mut self, remote: Remote, offer: bool) -> Result<(), JoinError> {
        let peer = Peer::start(self.config.clone()).await?;
        let (handle, events) = peer.split();
        for (kind, direction, config) in &self.tracks {
            handle
                .add_transceiver(*kind, *direction, config.clone())
                .await
                .map_err(|e| JoinError::Start(std::io::Error::other(e)))?;
        }
        self.generations += 1;
        let generation = self.generations;
        let forward = tokio::spawn(forward(remote.id.clone(), generation, events, self.peer_events.clone()));
        let fallback_at = (!offer).then(|| Instant::now() + OFFER_FALLBACK);
        self.conns.insert(
            remote.id.clone(),
            Conn {
                name: remote.name.clone(),
                generation,
                started: Instant::now(),
                handle: handle.clone(),
                forward,
                making_offer: false,
                offered: false,
                described: false,
                held: Vec::new(),
                fallback_at,
                connected: false,
            },
        );
        let _ = self.app.send(SessionEvent::Connecting { peer: remote.clone(), handle, offerer: offer });
        if offer {
            self.offer(&remote.id).await;
        }
        Ok(())
    }

    async fn run(
        mut self,
        mut merged: mpsc::UnboundedReceiver<PeerEvent>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut signaling = true;
        loop {
            let fallback =
                self.conns.iter().filter_map(|(id, c)| c.fallback_at.map(|t| (t, id.clone()))).min();
            let setup = self
                .conns
                .iter()
                .filter(|(_, c)| !c.connected)
                .map(|(id, c)| (c.started + SETUP_DEADLINE, id.clone()))
                .min();
            tokio::select! {
                _ = &mut stop => break,
                e = self.signal.next_event(), if signaling => match e {
                    Some(e) => self.on_signaling(e).await,
                    None => signaling = false,
                },
                Some((id, generation, event)) = merged.recv() => {
                    // Events of a connection since replaced (same peer id) are not this one's.
                    if self.conns.get(&id).is_some_and(|c| c.generation == generation) {
                        self.on_peer_event(id, event).await;
                    }
                }
                () = sleep_until(setup.as_ref().map(|s| s.0)), if setup.is_some() => {
                    let id = setup.expect("checked").1;
                    let reason = format!("no connection within {SETUP_DEADLINE:?} (no answer through signaling, or no candidate pair)");
                    self.drop_conn(&id, Gone::Failed { reason, during_setup: true }).await;
                }
                () = sleep_until(self.retire_at), if self.retire_at.is_some() => {
                    self.retire_at = None;
                    for id in std::mem::take(&mut self.retiring) {
                        tracing::debug!(%id, "closing a connection of the room's previous mode");
                        self.drop_conn(&id, Gone::Closed).await;
                    }
                }
                () = sleep_until(self.reopen_sfu_at), if self.reopen_sfu_at.is_some() => {
                    self.reopen_sfu_at = None;
                    if self.mode == RoomMode::Sfu && !self.conns.contains_key(SFU_PEER) {
                        status!(self.status, "peerlink: connecting to the server again");
                        if let Err(e) = self.open_sfu().await {
                            status!(self.status, "peerlink: cannot start a connection: {e}");
                        }
                    }
                }
                () = sleep_until(fallback.as_ref().map(|f| f.0)), if fallback.is_some() => {
                    let id = fallback.expect("checked").1;
                    status!(self.status, "peerlink: no offer from {id} after {OFFER_FALLBACK:?}; offering");
                    self.offer(&id).await;
                }
            }
            if !signaling && self.conns.is_empty() {
                break;
            }
        }
        // Every connection closes gracefully (what is queued is delivered first), all at once.
        let mut closes = tokio::task::JoinSet::new();
        for (_, conn) in self.conns.drain() {
            closes.spawn(async move {
                conn.handle.close().await;
                conn.forward.abort();
            });
        }
        while closes.join_next().await.is_some() {}
        self.signal.close().await;
    }

    async fn on_signaling(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Joined { id: new_id, peers, mode, .. }
            | ClientEvent::Rejoined { id: new_id, peers, mode, .. } => {
                // Back after losing the server. Established connections stay as they are;
                // a peer we have no connection with is offered to, as a newcomer does.
                let old_id = std::mem::replace(&mut self.my_id, new_id.clone());
                let renamed = new_id != old_id;
                if renamed {
                    status!(self.status, "peerlink: signaling is back; this peer is now {new_id}");
                } else {
                    status!(self.status, "peerlink: signaling is back (same id)");
                }
                for p in &peers {
                    if !self.order.contains(&p.id) {
                        let _ = self.app.send(SessionEvent::PeerJoined(Remote {
                            id: p.id.clone(),
                            name: p.name.clone(),
                        }));
                    }
                    self.names.insert(p.id.clone(), p.name.clone());
                }
                let gone: Vec<String> = self
                    .order
                    .iter()
                    .filter(|id| **id != old_id && **id != new_id && !peers.iter().any(|p| p.id == **id))
                    .cloned()
                    .collect();
                for id in gone {
                    self.names.remove(&id);
                    let _ = self.app.send(SessionEvent::PeerLeft(id));
                }
                self.order.retain(|id| peers.iter().any(|p| p.id == *id));
                let new: Vec<String> =
                    peers.iter().map(|p| p.id.clone()).filter(|id| !self.order.contains(id)).collect();
                self.order.extend(new);
                self.order.push(new_id);
                let mode = if mode == "sfu" { RoomMode::Sfu } else { RoomMode::Mesh };
                if mode == RoomMode::Sfu {
                    // Under a new id the server no longer knows our connection to it.
                    let stale = renamed && self.mode == RoomMode::Sfu;
                    let kept = !stale && self.conns.contains_key(SFU_PEER);
                    if stale && self.conns.contains_key(SFU_PEER) {
                        self.drop_conn(SFU_PEER, Gone::Closed).await;
                    }
                    if let Err(e) = self.switch(mode).await {
                        status!(self.status, "peerlink: cannot start a connection: {e}");
                    }
                    if self.conns.contains_key(SFU_PEER) {
                        self.reopen_sfu_at = None;
                    }
                    // A kept connection not up yet may have lost its offer or answer with the
                    // server (a new one has just offered).
                    if kept && self.conns.get(SFU_PEER).is_some_and(|c| !c.connected) {
                        self.offer(SFU_PEER).await;
                    }
                    return;
                }
                if self.mode == RoomMode::Sfu {
                    // Connections to the others are made below, as a newcomer's.
                    self.mode = RoomMode::Mesh;
                    let _ = self.app.send(SessionEvent::Mode(RoomMode::Mesh));
                    self.retire(vec![SFU_PEER.to_owned()]);
                }
                // Connections still being set up may have lost an offer or answer with the
                // server: negotiate them again.
                let stalled: Vec<String> = self
                    .conns
                    .iter()
                    .filter(|(id, c)| !c.connected && peers.iter().any(|p| p.id == **id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stalled {
                    tracing::debug!(%id, "connection not up after a signaling outage; offering again");
                    self.offer(&id).await;
                }
                for p in peers {
                    if !self.conns.contains_key(&p.id) {
                        status!(self.status, "peerlink: {} ({}) is here; offering", p.name, p.id);
                        if let Err(e) = self.open(Remote { id: p.id, name: p.name }, true).await {
                            status!(self.status, "peerlink: cannot start a connection: {e}");
                        }
                    }
                }
            }
            ClientEvent::PeerJoined(p) => {
                self.names.insert(p.id.clone(), p.name.clone());
                if !self.order.contains(&p.id) {
                    self.order.push(p.id.clone());
                }
                let _ = self
                    .app
                    .send(SessionEvent::PeerJoined(Remote { id: p.id.clone(), name: p.name.clone() }));
                if self.mode == RoomMode::Sfu {
                    status!(self.status, "peerlink: {} ({}) joined", p.name, p.id);
                    return;
                }
                if self.conns.contains_key(&p.id) {
                    // Someone we are connected with, back in signaling after an outage.
                    return;
                }
                status!(self.status, "peerlink: {} ({}) joined", p.name, p.id);
                if let Err(e) = self.open(Remote { id: p.id, name: p.name }, false).await {
                    status!(self.status, "peerlink: cannot start a connection: {e}");
                }
            }
            ClientEvent::PeerLeft(id) => {
                self.order.retain(|o| *o != id);
                let _ = self.app.send(SessionEvent::PeerLeft(id.clone()));
                let Some(conn) = self.conns.get(&id) else { return };
                if conn.connected {
                    // Its signaling is gone; the connection is the judge of whether it is.
                    tracing::debug!(%id, "peer left signaling; keeping the connection while it lasts");
                    return;
                }
                self.drop_conn(&id, Gone::Left).await;
            }
            ClientEvent::Mode(mode) => {
                let mode = if mode == "sfu" { RoomMode::Sfu } else { RoomMode::Mesh };
                if let Err(e) = self.switch(mode).await {
                    status!(self.status, "peerlink: cannot start a connection: {e}");
                }
            }
            ClientEvent::Signal { from, data } => {
                // Each mode signals with its own peers only.
                if (from == SFU_PEER) != (self.mode == RoomMode::Sfu) {
                    tracing::debug!(%from, mode = ?self.mode, "signal from a peer of the other mode ignored");
                    return;
                }
                if !self.conns.contains_key(&from) {
                    // Only an offer starts a connection (from someone who joined while we
                    // were away from signaling); a late candidate or answer of a connection
                    // already dropped does not.
                    let offer = serde_json::from_str::<serde_json::Value>(data.get())
                        .is_ok_and(|d| d["description"]["type"] == "offer");
                    if !offer {
                        tracing::debug!(%from, "signal for no connection ignored");
                        return;
                    }
                    let name = self.names.get(&from).cloned().unwrap_or_else(|| from.clone());
                    let remote = Remote { id: from.clone(), name };
                    if let Err(e) = self.open(remote, false).await {
                        status!(self.status, "peerlink: cannot start a connection: {e}");
                        return;
                    }
                }
                if let Err(e) = self.on_signal(&from, data.get()).await {
                    status!(self.status, "peerlink: negotiation with {from} failed: {e}");
                }
            }
            ClientEvent::Disconnected { reason } => {
                status!(self.status, "peerlink: signaling: {reason}; reconnecting (connections stay up)")
            }
            ClientEvent::Closed { reason } => status!(self.status, "peerlink: signaling: {reason}"),
            ClientEvent::Error { code, message } => tracing::debug!(%code, %message, "signaling error"),
            _ => {}
        }
    }

    /// Whether the signal went to the server (not while it is away).
    async fn send_signal(&self, to: &str, data: serde_json::Value) -> bool {
        match self.signal.signal(to, data).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%to, error = %e, "signal not sent");
                false
            }
        }
    }

    async fn offer(&mut self, id: &str) {
        let Some(conn) = self.conns.get_mut(id) else { return };
        conn.fallback_at = None;
        conn.making_offer = true;
        let handle = conn.handle.clone();
        let offer = handle.create_offer().await;
        let Some(conn) = self.conns.get_mut(id) else { return };
        conn.making_offer = false;
        match offer {
            Ok(offer) => {
                conn.offered = true;
                // Lost with the server: offered again once signaling is back.
                if self.send_signal(id, json!({"description": {"type": "offer", "sdp": offer.sdp}})).await {
                    self.described(id).await;
                }
            }
            Err(e) => status!(self.status, "peerlink: cannot make an offer: {e}"),
        }
    }

    /// Our description went to `id`: the candidates held for it follow.
    async fn described(&mut self, id: &str) {
        let Some(conn) = self.conns.get_mut(id) else { return };
        conn.described = true;
        let held = std::mem::take(&mut conn.held);
        for c in held {
            let _ = self.send_signal(id, json!({ "candidate": c })).await;
        }
    }

    /// A signal from `from` (perfect negotiation: the peer with the greater id is polite and
    /// rolls its own offer back on a collision).
    async fn on_signal(&mut self, from: &str, raw: &str) -> Result<(), peerlink_rtc::RtcError> {
        let data: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
        // The server of a room in SFU mode is impolite.
        let polite = from == SFU_PEER || self.my_id.as_str() > from;
        let Some(conn) = self.conns.get_mut(from) else { return Ok(()) };
        let handle = conn.handle.clone();
        if let Some(d) = data.get("description") {
            let (Some(kind), Some(sdp)) = (d["type"].as_str().and_then(SdpType::parse), d["sdp"].as_str())
            else {
                return Ok(());
            };
            if kind == SdpType::Offer && (conn.making_offer || conn.offered) {
                if !polite {
                    return Ok(());
                }
                handle.rollback().await?;
            }
            let Some(conn) = self.conns.get_mut(from) else { return Ok(()) };
            conn.offered = false;
            if kind == SdpType::Offer {
                conn.fallback_at = None;
            }
            let answer = handle.set_remote_description(Description { kind, sdp: sdp.to_owned() }).await?;
            if let Some(answer) = answer {
                if self.send_signal(from, json!({"description": {"type": "answer", "sdp": answer.sdp}})).await
                {
                    self.described(from).await;
                }
            }
        } else if let Some(c) = data.get("candidate") {
            match c {
                serde_json::Value::Null => handle.add_ice_candidate(""),
                c => {
                    if let Some(line) = c["candidate"].as_str() {
                        // Browsers send "" as an end-of-candidates marker too.
                        handle.add_ice_candidate(line);
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_peer_event(&mut self, id: String, event: Option<RtcEvent>) {
        let Some(event) = event else {
            // The connection's driver ended.
            self.drop_conn(&id, Gone::Closed).await;
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let candidate = match &event {
            RtcEvent::LocalCandidate(c) => Some(json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0})),
            RtcEvent::GatheringComplete => Some(serde_json::Value::Null),
            _ => None,
        };
        if let Some(c) = candidate {
            if conn.described {
                let _ = self.send_signal(&id, json!({ "candidate": c })).await;
            } else {
                conn.held.push(c);
            }
            return;
        }
        let gone = match &event {
            // A track added, or a peer's offer that left ours out: we offer (the other side
            // answers; a collision is settled by perfect negotiation).
            RtcEvent::NegotiationNeeded => {
                if !conn.offered && !conn.making_offer {
                    self.offer(&id).await;
                }
                return;
            }
            RtcEvent::ConnectionState(ConnectionState::Connected) => {
                conn.connected = true;
                self.new_path_up();
                None
            }
            RtcEvent::Closed { reason, during_setup } if reason.is_failure() => {
                Some(Gone::Failed { reason: reason.to_string(), during_setup: *during_setup })
            }
            RtcEvent::Closed { reason, .. } => {
                tracing::debug!(%id, %reason, "connection closed");
                Some(Gone::Closed)
            }
            _ => None,
        };
        let _ = self.app.send(SessionEvent::Rtc { peer: id.clone(), event });
        if let Some(gone) = gone {
            self.drop_conn(&id, gone).await;
        }
    }

    /// The room carries media as `mode` now: the new connections first; the old ones close
    /// once those are up ([`Task::new_path_up`]) or after [`SWITCH_BOUND`].
    async fn switch(&mut self, mode: RoomMode) -> Result<(), JoinError> {
        if mode == self.mode {
            if mode == RoomMode::Sfu && !self.conns.contains_key(SFU_PEER) {
                self.open_sfu().await?;
            }
            return Ok(());
        }
        self.mode = mode;
        let _ = self.app.send(SessionEvent::Mode(mode));
        match mode {
            RoomMode::Sfu => {
                status!(self.status, "peerlink: the room goes through the server now");
                let old: Vec<String> = self.conns.keys().filter(|id| *id != SFU_PEER).cloned().collect();
                // Our server connection still closing from the last switch: the server let
                // it go (after its grace); a new one.
                if self.retiring.iter().any(|r| r == SFU_PEER) {
                    self.drop_conn(SFU_PEER, Gone::Closed).await;
                }
                self.retire(old);
                self.reopen_sfu_at = None;
                if !self.conns.contains_key(SFU_PEER) {
                    self.open_sfu().await?;
                }
            }
            RoomMode::Mesh => {
                status!(self.status, "peerlink: the room is a mesh again");
                self.retire(
                    self.conns.contains_key(SFU_PEER).then(|| SFU_PEER.to_owned()).into_iter().collect(),
                );
                // As newcomers do: each offers to those who joined before it.
                let me = self.order.iter().position(|id| *id == self.my_id).unwrap_or(self.order.len());
                let others: Vec<(usize, String)> =
                    self.order.iter().cloned().enumerate().filter(|(_, id)| *id != self.my_id).collect();
                for (i, id) in others {
                    if self.conns.contains_key(&id) {
                        self.retiring.retain(|r| *r != id);
                        continue;
                    }
                    let name = self.names.get(&id).cloned().unwrap_or_else(|| id.clone());
                    self.open(Remote { id, name }, i < me).await?;
                }
                if self.retiring.is_empty() {
                    self.retire_at = None;
                }
            }
        }
        // The new mode's connections may all be up already (kept through a quick switch back).
        self.new_path_up();
        Ok(())
    }

    async fn open_sfu(&mut self) -> Result<(), JoinError> {
        self.open(Remote { id: SFU_PEER.to_owned(), name: "server".to_owned() }, true).await
    }

    /// `ids` close once the new mode's connections are up.
    fn retire(&mut self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        self.retiring.extend(ids);
        self.retire_at = Some(Instant::now() + SWITCH_BOUND);
    }

    /// A connection came up: when the new mode's are all up, the old ones close.
    fn new_path_up(&mut self) {
        if self.retiring.is_empty() {
            return;
        }
        let up = match self.mode {
            RoomMode::Sfu => self.conns.get(SFU_PEER).is_some_and(|c| c.connected),
            RoomMode::Mesh => self.conns.iter().filter(|(id, _)| *id != SFU_PEER).all(|(_, c)| c.connected),
        };
        if up {
            // A moment for the first frames of the new path; the timer closes them.
            self.retire_at = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    async fn drop_conn(&mut self, id: &str, reason: Gone) {
        let Some(conn) = self.conns.remove(id) else { return };
        self.retiring.retain(|r| r != id);
        if id == SFU_PEER && self.mode == RoomMode::Sfu {
            self.reopen_sfu_at = Some(Instant::now() + SFU_REOPEN);
        }
        tracing::debug!(%id, name = %conn.name, %reason, "connection over");
        // Closing may wait for a shutdown the other side never answers: not in this task.
        tokio::spawn(async move {
            conn.handle.close().await;
            conn.forward.abort();
        });
        let _ = self.app.send(SessionEvent::Gone { peer: id.to_owned(), reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ice_servers_resolve_with_both_families_and_skip_what_the_peer_cannot_use() {
        let servers = [
            IceServer {
                urls: vec!["stun:[::1]:3479".into(), "stun:127.0.0.1".into(), "stun:localhost:3480".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:[::1]:3478?transport=udp".into(),
                    "turn:127.0.0.1:3478?transport=tcp".into(),
                ],
                username: Some("1700000000:alice".into()),
                credential: Some("secret".into()),
            },
            IceServer { urls: vec!["stun:no-such-host.invalid".into()], username: None, credential: None },
        ];
        let config = rtc_config(&servers, &Status(None)).await;
        let stun: Vec<String> = config.stun_servers.iter().map(|a| a.to_string()).collect();
        assert!(stun.contains(&"[::1]:3479".to_owned()), "{stun:?}");
        assert!(stun.contains(&"127.0.0.1:3478".to_owned()), "{stun:?}");
        assert!(stun.iter().any(|a| a.ends_with(":3480")), "{stun:?}");
        let turn: Vec<String> = config.turn_servers.iter().map(|t| t.server.to_string()).collect();
        assert_eq!(turn, ["[::1]:3478"], "TCP is skipped, IPv6 kept");
    }
}
