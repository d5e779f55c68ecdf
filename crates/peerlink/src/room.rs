//! The high layer: a [`Room`] yields a [`Connection`] per peer; a connection opens and
//! accepts [`DataChannel`]s. A dispatcher task reads the [`Session`]'s events and routes
//! each to its connection and channel.

use crate::channel::{DataChannel, Message, Shared};
use crate::session::{
    Gone, JoinError, Remote, RoomMode, Session, SessionEvent, SessionOptions, StatusFn, Worker,
};
use crate::{ChannelConfig, ChannelId, Error};
use peerlink_io::PeerHandle;
use peerlink_rtc::{ChannelEvent, CongestionControl, ConnectionState, Description, RtcEvent};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// [`Connection::next_event`] keeps at most this many events; older ones are dropped.
const EVENT_QUEUE: usize = 64;

/// How a [`Room`] joins and how its channels buffer. Set fields on `RoomOptions::default()`.
#[derive(Clone)]
#[non_exhaustive]
pub struct RoomOptions {
    /// Room token, when the server requires one (HS256 JWT).
    pub token: Option<String>,
    /// Local addresses to gather host candidates on; empty: every usable address.
    pub bind: Vec<IpAddr>,
    /// How long to keep trying a server that cannot be reached before giving up (`None`:
    /// forever). Default 30 s.
    pub wait: Option<Duration>,
    /// How channels buffer, unless opened with their own.
    pub channels: ChannelOptions,
    /// How long [`Connection::open_channel`] waits for the channel to open. Default 30 s.
    pub open_timeout: Duration,
    /// Where the room's status lines for a person go (joined, who is here, offers,
    /// signaling outages and returns); `None`: `tracing` at info level.
    pub status: Option<StatusFn>,
    /// The data channels' SCTP congestion controller; `None`: the SCTP crate's default.
    pub congestion_control: Option<CongestionControl>,
}

impl std::fmt::Debug for RoomOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomOptions")
            .field("bind", &self.bind)
            .field("wait", &self.wait)
            .field("channels", &self.channels)
            .field("open_timeout", &self.open_timeout)
            .field("status", &self.status.is_some())
            .field("congestion_control", &self.congestion_control)
            .finish_non_exhaustive()
    }
}

impl Default for RoomOptions {
    fn default() -> RoomOptions {
        RoomOptions {
            token: None,
            bind: Vec::new(),
            wait: Some(Duration::from_secs(30)),
            channels: ChannelOptions::default(),
            open_timeout: Duration::from_secs(30),
            status: None,
            congestion_control: None,
        }
    }
}

/// Buffering of a data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelOptions {
    /// `send` waits while more than this many bytes are queued to send. Default 1 MiB.
    pub high_water: usize,
    /// Bytes of received messages a channel holds for the application before the peer is
    /// made to wait (its SCTP window closes). Default 1 MiB. The same for every channel of
    /// a room.
    pub receive_buffer: usize,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions { high_water: 1 << 20, receive_buffer: 1 << 20 }
    }
}

/// What a [`Room`] tells, in order: connections as they come, and who is in the room.
#[derive(Debug)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A connection to another member is being set up (see [`Room::accept`]).
    Connection(Connection),
    /// Someone is in the room: those there when we joined, then each newcomer. In SFU mode
    /// no connection to it follows (its media and chat come through the server's).
    Joined(Remote),
    /// Someone left the room (by id); its connection, if any, may outlive this a little.
    Left(String),
    /// The room carries media this way now: told after joining when it is not a mesh, and
    /// at every switch.
    Mode(RoomMode),
}

/// Members of a signaling room, as [`Connection`]s: `peerlink serve`'s rooms with the
/// browser app's conventions (the newcomer offers, perfect negotiation, trickle ICE, the
/// server's STUN and TURN servers).
#[derive(Debug)]
pub struct Room {
    id: String,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    worker: Worker,
}

impl Room {
    /// Joins `room` on the signaling server at `url` (`ws://HOST:PORT/ws` or `wss://...`)
    /// as `name`, with the default options.
    pub async fn join(url: &str, room: &str, name: &str) -> Result<Room, JoinError> {
        Room::join_with(url, room, name, RoomOptions::default()).await
    }

    /// [`Room::join`] with options.
    pub async fn join_with(
        url: &str,
        room: &str,
        name: &str,
        options: RoomOptions,
    ) -> Result<Room, JoinError> {
        let session_options = SessionOptions {
            token: options.token.clone(),
            bind: options.bind.clone(),
            wait: options.wait,
            accept_media: Some(peerlink_rtc::Direction::Inactive),
            channel_receive_credit: Some(options.channels.receive_buffer),
            congestion_control: options.congestion_control,
            status: options.status.clone(),
            ..SessionOptions::default()
        };
        let session = Session::join(url, room, name, session_options).await?;
        let id = session.id().to_owned();
        let (tx, events) = mpsc::unbounded_channel();
        let worker = Worker::spawn(|stopped| dispatch(session, tx, options, stopped));
        Ok(Room { id, events, worker })
    }

    /// Our id in the room.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next connection to another member (as members arrive, or are here when we
    /// join); `None` once signaling ended for good. Cancel-safe. The room's other events
    /// are skipped: use [`Room::next_event`] instead to see them too.
    pub async fn accept(&mut self) -> Option<Connection> {
        loop {
            if let RoomEvent::Connection(connection) = self.events.recv().await? {
                return Some(connection);
            }
        }
    }

    /// The next connection, membership change or mode of the room; `None` once signaling
    /// ended for good and no connection is left. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<RoomEvent> {
        self.events.recv().await
    }

    /// Closes every connection gracefully and leaves the room.
    pub async fn close(self) {
        self.worker.stop().await;
    }
}

/// Statistics of a connection, as `getStats` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The ICE candidate pair in use, once there is one.
    pub selected_pair: Option<SelectedPair>,
    /// Whether the connection is up.
    pub connected: bool,
    /// Data channels open now.
    pub channels: usize,
    /// Bytes of messages received on data channels.
    pub bytes_received: u64,
    /// Bytes of messages sent on data channels (handed to the connection).
    pub bytes_sent: u64,
    /// SCTP's smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// SCTP packets sent and received, and DATA chunks sent again.
    pub packets_sent: u64,
    /// See `packets_sent`.
    pub packets_received: u64,
    /// See `packets_sent`.
    pub retransmitted_chunks: u64,
}

/// The ICE candidate pair a connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    /// Our address.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
    /// host, srflx, prflx or relay.
    pub local_kind: &'static str,
    /// host, srflx, prflx or relay.
    pub remote_kind: &'static str,
}

/// What happened to a [`Connection`] (see [`Connection::next_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Its state changed (as `RTCPeerConnection.connectionState`).
    State(ConnectionState),
    /// ICE chose the candidate pair it uses (again when the path changes).
    SelectedPair(SelectedPair),
}

/// A connection to another member of the room.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    peer: Remote,
    offerer: bool,
    handle: PeerHandle,
    options: RoomOptions,
    state: Mutex<State>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<DataChannel>>,
    closed: watch::Receiver<Option<Gone>>,
    /// Bytes of messages sent, counted by the channels.
    sent: Arc<std::sync::atomic::AtomicU64>,
    /// Woken when the connection state changes.
    state_changed: tokio::sync::Notify,
    /// Woken when an event is queued, and when the connection is over.
    event_queued: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<u16, (mpsc::UnboundedSender<Message>, Arc<Shared>)>,
    /// Channels of ours that opened before `open_channel` came for them.
    opened: HashMap<u16, DataChannel>,
    /// `open_channel` calls waiting for their channel to open.
    waiting: HashMap<u16, oneshot::Sender<DataChannel>>,
    stats: Stats,
    /// For [`Connection::next_event`], at most [`EVENT_QUEUE`].
    events: VecDeque<ConnectionEvent>,
}

/// Our local ICE candidates for the peer, for a connection with its own signaling
/// ([`Connection::start`]).
#[derive(Debug)]
pub struct Candidates(mpsc::UnboundedReceiver<String>);

impl Candidates {
    /// The next candidate line (`candidate:...`); `""` once all were found (the end of
    /// candidates, for the peer's `addIceCandidate`); `None` when the connection is gone.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<String> {
        self.0.recv().await
    }
}

impl Connection {
    /// A connection outside any room, for an application that runs its own signaling: make
    /// the offer ([`Connection::create_offer`]) or answer ([`Connection::set_remote_description`]),
    /// and pass what [`Candidates`] yields to the peer's [`Connection::add_ice_candidate`].
    pub async fn start(options: RoomOptions) -> Result<(Connection, Candidates), Error> {
        let rtc = peerlink_rtc::RtcConfig {
            accept_media: Some(peerlink_rtc::Direction::Inactive),
            channel_receive_credit: Some(options.channels.receive_buffer),
            ..peerlink_rtc::RtcConfig::default()
        };
        let peer = peerlink_io::Peer::start(peerlink_io::PeerConfig { rtc, addresses: options.bind.clone() })
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        let (handle, mut events) = peer.split();
        let remote = Remote { id: String::new(), name: String::new() };
        let (route, connection) = Route::new(remote, false, handle, options);
        let (tx, candidates) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                match event {
                    RtcEvent::LocalCandidate(c) => {
                        let _ = tx.send(c);
                    }
                    RtcEvent::GatheringComplete => {
                        let _ = tx.send(String::new());
                    }
                    RtcEvent::Closed { reason, during_setup } => {
                        let gone = if reason.is_failure() {
                            Gone::Failed { reason: reason.to_string(), during_setup }
                        } else {
                            Gone::Closed
                        };
                        return route.end(gone);
                    }
                    other => route.on_event(other),
                }
            }
            route.end(Gone::Closed);
        });
        Ok((connection, Candidates(candidates)))
    }

    /// Makes an offer (and applies it locally): its SDP goes to the peer.
    pub async fn create_offer(&self) -> Result<Description, Error> {
        Ok(self.inner.handle.create_offer().await?)
    }

    /// Applies the peer's offer or answer; an offer is answered (the answer, already
    /// applied locally, goes back to the peer).
    pub async fn set_remote_description(
        &self,
        description: Description,
    ) -> Result<Option<Description>, Error> {
        Ok(self.inner.handle.set_remote_description(description).await?)
    }

    /// A candidate line from the peer; `""` for its end of candidates.
    pub fn add_ice_candidate(&self, candidate: &str) {
        self.inner.handle.add_ice_candidate(candidate);
    }

    /// The other member.
    pub fn peer(&self) -> &Remote {
        &self.inner.peer
    }

    /// Whether we made the first offer (the browser app's convention: the offerer opens the
    /// first channel).
    pub fn is_offerer(&self) -> bool {
        self.inner.offerer
    }

    /// The lower layer's handle (media, raw channel commands).
    pub fn handle(&self) -> &PeerHandle {
        &self.inner.handle
    }

    /// Opens a data channel and waits until it is open (at most
    /// [`RoomOptions::open_timeout`]).
    pub async fn open_channel(&self, config: ChannelConfig) -> Result<DataChannel, Error> {
        let (label, protocol) = (config.label.clone(), config.protocol.clone());
        let id = self.inner.handle.create_data_channel(config).await?;
        let rx = {
            let mut state = self.inner.state.lock().expect("not poisoned");
            if let Some(channel) = state.opened.remove(&id) {
                return Ok(channel.named(label, protocol));
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.insert(id, tx);
            rx
        };
        let mut closed = self.inner.closed.clone();
        tokio::select! {
            channel = rx => channel.map(|c| c.named(label, protocol)).map_err(|_| Error::ChannelClosed),
            _ = closed.wait_for(Option::is_some) => Err(Error::Closed(self.closed_reason())),
            () = tokio::time::sleep(self.inner.options.open_timeout) => Err(Error::Timeout("the data channel to open")),
        }
    }

    /// The next channel the peer opened; `None` once the connection is closed.
    pub async fn accept_channel(&self) -> Option<DataChannel> {
        self.inner.incoming.lock().await.recv().await
    }

    /// Closes the connection gracefully and waits until it is closed: what was sent is
    /// delivered first (at most a few seconds when the peer does not answer).
    pub async fn close(&self) {
        self.inner.handle.close().await;
    }

    /// The next change of the connection's state or selected candidate pair, in order;
    /// `None` once the connection is over and every event was read. Cancel-safe. At most
    /// the last 64 events are kept for a reader that does not keep up.
    pub async fn next_event(&self) -> Option<ConnectionEvent> {
        loop {
            let queued = self.inner.event_queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            if let Some(event) = self.inner.state.lock().expect("not poisoned").events.pop_front() {
                return Some(event);
            }
            if self.inner.closed.borrow().is_some() {
                return None;
            }
            queued.await;
        }
    }

    /// Waits until the connection is over, and says why.
    pub async fn closed(&self) -> Gone {
        let mut closed = self.inner.closed.clone();
        let reason = closed.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(Some(reason)) => reason,
            _ => Gone::Closed,
        }
    }

    /// Why the connection is over, if it is (without waiting).
    pub fn gone(&self) -> Option<Gone> {
        self.inner.closed.borrow().clone()
    }

    fn closed_reason(&self) -> Gone {
        self.inner.closed.borrow().clone().unwrap_or(Gone::Closed)
    }

    /// Waits until the connection is up (at most [`RoomOptions::open_timeout`]).
    pub async fn connected(&self) -> Result<(), Error> {
        let mut closed = self.inner.closed.clone();
        let up = async {
            loop {
                let changed = self.inner.state_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.inner.state.lock().expect("not poisoned").stats.connected {
                    return;
                }
                changed.await;
            }
        };
        tokio::select! {
            () = up => Ok(()),
            _ = closed.wait_for(Option::is_some) => Err(Error::Closed(self.closed_reason())),
            () = tokio::time::sleep(self.inner.options.open_timeout) => Err(Error::Timeout("the connection")),
        }
    }

    /// The connection's statistics now.
    pub async fn stats(&self) -> Stats {
        let transport = self.inner.handle.transport_stats().await;
        let mut stats = self.inner.state.lock().expect("not poisoned").stats.clone();
        stats.bytes_sent = self.inner.sent.load(std::sync::atomic::Ordering::Relaxed);
        stats.rtt = transport.rtt;
        stats.packets_sent = transport.packets_sent;
        stats.packets_received = transport.packets_received;
        stats.retransmitted_chunks = transport.retransmitted_chunks;
        stats
    }
}

/// One connection's end of the dispatcher.
struct Route {
    inner: Arc<Inner>,
    incoming: mpsc::UnboundedSender<DataChannel>,
    closed: watch::Sender<Option<Gone>>,
}

impl Route {
    fn new(peer: Remote, offerer: bool, handle: PeerHandle, options: RoomOptions) -> (Route, Connection) {
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(None);
        let inner = Arc::new(Inner {
            peer,
            offerer,
            handle,
            options,
            state: Mutex::new(State::default()),
            incoming: tokio::sync::Mutex::new(incoming),
            closed,
            sent: Default::default(),
            state_changed: tokio::sync::Notify::new(),
            event_queued: tokio::sync::Notify::new(),
        });
        let route = Route { inner: inner.clone(), incoming: incoming_tx, closed: closed_tx };
        (route, Connection { inner })
    }

    fn channel(&self, id: u16, label: String, protocol: String) -> DataChannel {
        let options = self.inner.options.channels;
        let (channel, tx, shared) = DataChannel::new(
            label,
            protocol,
            Shared {
                id: ChannelId(id),
                handle: self.inner.handle.clone(),
                low: tokio::sync::Notify::new(),
                closed: Default::default(),
                high_water: options.high_water,
                receive_buffer: options.receive_buffer,
                sent: self.inner.sent.clone(),
            },
        );
        let mut state = self.inner.state.lock().expect("not poisoned");
        state.channels.insert(id, (tx, shared));
        state.stats.channels = state.channels.len();
        channel
    }

    fn on_event(&self, event: RtcEvent) {
        match event {
            RtcEvent::Channel(ChannelEvent::Incoming { id, label, protocol }) => {
                let channel = self.channel(id, label, protocol);
                let _ = self.incoming.send(channel);
            }
            RtcEvent::Channel(ChannelEvent::Open(id)) => {
                let channel = self.channel(id, String::new(), String::new());
                let mut state = self.inner.state.lock().expect("not poisoned");
                match state.waiting.remove(&id) {
                    Some(waiting) => {
                        let _ = waiting.send(channel);
                    }
                    None => {
                        state.opened.insert(id, channel);
                    }
                }
            }
            RtcEvent::Channel(ChannelEvent::Message { id, data, binary }) => {
                let mut state = self.inner.state.lock().expect("not poisoned");
                state.stats.bytes_received += data.len() as u64;
                if let Some((tx, _)) = state.channels.get(&id) {
                    let size = data.len().max(1);
                    if tx.send(Message::new(data, binary)).is_err() {
                        // Nobody reads this channel: what it gets is dropped, and must not
                        // hold the connection's receive window shut.
                        self.inner.handle.add_receive_credit(id, size);
                    }
                }
            }
            RtcEvent::Channel(ChannelEvent::BufferedAmountLow(id)) => {
                let state = self.inner.state.lock().expect("not poisoned");
                if let Some((_, shared)) = state.channels.get(&id) {
                    shared.low.notify_waiters();
                }
            }
            RtcEvent::Channel(ChannelEvent::Closed(id)) => {
                let mut state = self.inner.state.lock().expect("not poisoned");
                if let Some((_, shared)) = state.channels.remove(&id) {
                    shared.set_closed();
                }
                state.opened.remove(&id);
                state.waiting.remove(&id);
                state.stats.channels = state.channels.len();
            }
            RtcEvent::SelectedPair { local, remote, local_kind, remote_kind } => {
                let pair = SelectedPair { local, remote, local_kind, remote_kind };
                let mut state = self.inner.state.lock().expect("not poisoned");
                state.stats.selected_pair = Some(pair.clone());
                self.queue(&mut state, ConnectionEvent::SelectedPair(pair));
            }
            RtcEvent::ConnectionState(connection) => {
                let mut state = self.inner.state.lock().expect("not poisoned");
                state.stats.connected = connection == ConnectionState::Connected;
                self.queue(&mut state, ConnectionEvent::State(connection));
                self.inner.state_changed.notify_waiters();
            }
            _ => {}
        }
    }

    fn queue(&self, state: &mut State, event: ConnectionEvent) {
        if state.events.len() >= EVENT_QUEUE {
            state.events.pop_front();
        }
        state.events.push_back(event);
        self.inner.event_queued.notify_waiters();
    }

    fn end(&self, reason: Gone) {
        // The reason first: a reader whose channel ends can tell why.
        self.closed.send_replace(Some(reason));
        let mut state = self.inner.state.lock().expect("not poisoned");
        for (_, (_, shared)) in state.channels.drain() {
            shared.set_closed();
        }
        state.opened.clear();
        state.waiting.clear();
        state.stats.connected = false;
        state.stats.channels = 0;
        drop(state);
        self.inner.event_queued.notify_waiters();
    }
}

async fn dispatch(
    mut session: Session,
    events: mpsc::UnboundedSender<RoomEvent>,
    options: RoomOptions,
    mut stop: oneshot::Receiver<()>,
) {
    let mut routes: HashMap<String, Route> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            e = session.next() => e,
        };
        let Some(event) = event else { break };
        match event {
            SessionEvent::Connecting { peer, handle, offerer } => {
                let id = peer.id.clone();
                let (route, connection) = Route::new(peer, offerer, handle, options.clone());
                if let Some(old) = routes.insert(id, route) {
                    old.end(Gone::Closed);
                }
                let _ = events.send(RoomEvent::Connection(connection));
            }
            SessionEvent::Rtc { peer, event } => {
                if let Some(route) = routes.get(&peer) {
                    route.on_event(event);
                }
            }
            SessionEvent::Gone { peer, reason } => {
                if let Some(route) = routes.remove(&peer) {
                    route.end(reason);
                }
            }
            SessionEvent::PeerJoined(remote) => {
                let _ = events.send(RoomEvent::Joined(remote));
            }
            SessionEvent::PeerLeft(id) => {
                let _ = events.send(RoomEvent::Left(id));
            }
            SessionEvent::Mode(mode) => {
                let _ = events.send(RoomEvent::Mode(mode));
            }
        }
    }
    session.close().await;
    for (_, route) in routes.drain() {
        route.end(Gone::Closed);
    }
}
