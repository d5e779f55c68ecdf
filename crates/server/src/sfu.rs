//! The SFU beside the signaling hub: one peer connection per participant of a room in SFU
//! mode, with the server as the impolite side of perfect negotiation. A participant offers
//! its tracks; the server answers, then offers it every other participant's tracks (msid
//! stream id = the publisher's peer id) and renegotiates as tracks come and go. Received RTP
//! is forwarded raw: each subscriber's [`Forwarder`] rewrites sequence numbers and timestamps
//! and holds video until a key frame; the subscriber's peer connection re-protects it with
//! its own SSRC, keeps it for NACKs (answered with RTX) and paces it. Subscribers' PLIs and
//! waiting forwarders ask the publisher for key frames (rate limited by its connection).
//!
//! Files are fanned out to every other participant (`peerlink_sfu::files`).
//!
//! Decisions live in `peerlink-sfu` (sans-IO); this module only drives connections.

use peerlink_io::{Peer, PeerConfig, PeerHandle};
use peerlink_rtc::{
    Certificate, ChannelConfig, ChannelEvent, Codec, CodecParams, ConnectionState, Description, Direction,
    MediaKind, RtcConfig, RtcEvent, SdpType, TrackConfig, TransceiverId,
};
use peerlink_rtp::ext::AudioLevel;
use peerlink_rtp::RtpPacket;
use peerlink_sfu::files::{Action, ChannelRef, FileRelays, HIGH_WATER, LOW_WATER};
use peerlink_sfu::{
    starts_keyframe, vp8_key_size, Change, Forwarder, Kind, LayerChoice, LayerDecision, Layers, Room,
    Speakers, TrackKey, Verdict, VideoPolicy, Want,
};
use peerlink_signal::{SfuEvent, SignalService};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod channels;
mod forwarding;
mod negotiation;
mod report;
mod slots;
pub use report::{LayerReport, ParticipantReport, RoomReport, SfuStats, SubscriberReport, TrackReport};
use slots::{Slot, SlotMap};

/// After a switch back to a mesh, media goes on through the SFU until the participant
/// closes its connection to us (once its mesh connections deliver), or at most this long.
const SWITCH_GRACE: Duration = Duration::from_secs(20);
/// A participant that has not offered this long after joining is dropped...
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// ...and so is one that does not answer our offer within this.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// After its path held a subscriber back, it stays under that cap this long before trying
/// better layers again.
const LAYER_HOLD: Duration = Duration::from_secs(8);
/// A held subscriber's connection probes for what its best layers need this often; the hold
/// ends as soon as the estimate covers it, and is renewed while it does not, for at most
/// [`MAX_HOLD`] in a row (then the better layers are tried, in case probes cannot tell).
const PROBE_EVERY: Duration = Duration::from_secs(3);
const MAX_HOLD: Duration = Duration::from_secs(30);
/// How often the subscribers' bandwidth estimates are read for layer choices: a path that
/// suddenly carries less than it is sent loses packets until the next reading.
const LAYER_EVERY: Duration = Duration::from_millis(100);
/// The share of a subscriber's falling estimate (in %) its layers may take right after the
/// estimate shows that the path cannot carry what it is sent. Half: the path's queue must
/// drain, and the first falling reading still lags a path that suddenly carries much less
/// (with 75 %, 2 of 3 runs of tests/e2e/sfu-ratelimit.sh stepped to the middle layer first,
/// and its key frame froze the picture for 550-900 ms).
const DRAIN_SHARE: u64 = 50;
/// How often a publisher is asked for a key frame of a layer whose picture size is unknown
/// (layers are ranked by picture size only when every active one's is known).
const SIZE_ASK_EVERY: Duration = Duration::from_secs(2);
/// The chat channel's label (as in a mesh: docs/signaling.md).
const CHAT_LABEL: &str = "chat";
/// How often a room's active speaker is decided (at most; on its audio packets).
const SPEAKER_EVERY: Duration = Duration::from_millis(100);
/// Chat messages relayed per participant: this many a second, in bursts of `CHAT_BURST`.
const CHAT_RATE: f64 = 10.0;
const CHAT_BURST: f64 = 50.0;
/// Largest chat message relayed.
const CHAT_MAX: usize = 16 * 1024;
/// Bytes of messages a participant's data channel delivers to us before we give credit for
/// more: a file's sender is held to what its slowest receiver takes (peerlink_sfu::files).
const CHANNEL_CREDIT: usize = 1024 * 1024;
/// The label of a file transfer's channel (docs/file-transfer.md).
const FILE_LABEL: &str = "file";
/// Chat waiting to be sent to one participant beyond which its messages are dropped.
const CHAT_BUFFER: usize = 256 * 1024;
/// How long the SFU's connections share one DTLS certificate before a new one is made:
/// generated certificates are valid for 30 days (`peerlink_dtls::cert`), and a connection
/// presents its certificate only in its handshake.
const CERTIFICATE_RENEW: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the SFU runs.
#[derive(Debug, Clone, Default)]
pub struct SfuConfig {
    /// Where its connections gather host candidates (empty: every usable local address).
    pub addresses: Vec<IpAddr>,
    /// Which videos each participant receives, and how good (last-N, thumbnails).
    pub video: VideoPolicy,
}

enum Input {
    Hub(SfuEvent),
    Peer {
        peer: Arc<str>,
        generation: u64,
        event: Option<RtcEvent>,
    },
    /// The grace after a switch to a mesh is over for this participant.
    GraceOver {
        peer: String,
        generation: u64,
    },
    Tick,
    /// Time to read the subscribers' bandwidth estimates and retarget layers.
    LayerTick,
}

/// What a participant publishes on one of its receiving transceivers.
struct Publication {
    codecs: Vec<CodecParams>,
    kind: MediaKind,
    /// Its simulcast layers (one without simulcast).
    layers: Layers,
    /// Who receives it.
    subscribers: Vec<String>,
    /// Those of them it is forwarded to now (not outside their last N): what a packet of it
    /// visits. In a room of 100 with last-N 9, a video packet looked up all 99 subscribers'
    /// subscriptions by name to skip 90 of them, a sixth of the server's CPU.
    forwarded: Vec<Target>,
    /// Its key in the subscribers' maps (kept so that forwarding a packet allocates none).
    key: TrackKey<String>,
    /// The id of the RFC 6464 audio level extension, when negotiated.
    audio_level: Option<u8>,
    /// When a key frame was last asked for a layer whose picture size is unknown.
    size_asked: Option<Instant>,
}

/// A subscriber a publication is forwarded to.
struct Target {
    subscriber: String,
    /// Where its participant and its subscription were last found ([`SlotMap::slot`]):
    /// looked up by name again when they are gone or moved.
    slots: Option<(Slot, Slot)>,
}

impl Target {
    fn new(subscriber: &str) -> Target {
        Target { subscriber: subscriber.to_owned(), slots: None }
    }
}

/// One subscription: the transceiver of ours that sends it, and its rewriting.
struct Subscription {
    transceiver: TransceiverId,
    forwarder: Forwarder,
    layer: LayerChoice,
    /// For video: forwarded or not (last-N), in full or as a thumbnail.
    want: Want,
}

struct Participant {
    room: String,
    generation: u64,
    handle: PeerHandle,
    /// Our description went out: candidates may follow it.
    described: bool,
    held: Vec<Value>,
    /// Our offer waits for its answer.
    offered: bool,
    /// The first negotiation (its offer, our answer) is done: tracks may be added.
    ready: bool,
    /// Tracks changed while an offer was out: offer again after the answer.
    pending: bool,
    published: HashMap<TransceiverId, Publication>,
    subscriptions: SlotMap<TrackKey<String>, Subscription>,
    by_transceiver: HashMap<TransceiverId, TrackKey<String>>,
    joined_at: Instant,
    offered_at: Instant,
    /// The room went back to a mesh: dropped after the grace.
    leaving: bool,
    /// Its chat channel, once it opened one.
    chat: Option<u16>,
    chat_tokens: f64,
    chat_refill: Instant,
    /// Its path was the limit: layers stay under this cap (bit/s per video) until then.
    hold: Option<(Instant, u64)>,
    /// When the current run of holds began (renewed holds end after [`MAX_HOLD`]).
    held_since: Option<Instant>,
    /// The estimates read since the hold was last set (sum, count): a renewed hold's cap
    /// follows their mean, not the last one (an estimate that probes raised rides a
    /// sawtooth over the path's rate, and its peak would let a layer the path cannot
    /// carry back in, to freeze again).
    hold_estimates: (u64, u64),
    /// The last bandwidth probe asked of its connection.
    last_probe: Option<Instant>,
    last_estimate: Option<u64>,
    /// The publishers whose video it was last told it receives (with last-N only).
    forwarding: Option<Vec<String>>,
    /// Sending transceivers of subscriptions that ended while an offer was out: stopped at
    /// the next renegotiation.
    stale: Vec<TransceiverId>,
}

impl Participant {
    /// Its layers are no longer held back, and the next hold starts a new run.
    fn end_hold(&mut self) {
        self.hold = None;
        self.held_since = None;
        self.hold_estimates = (0, 0);
    }

    /// Takes one chat message from the participant's budget.
    fn take_chat(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.chat_refill).as_secs_f64();
        self.chat_refill = now;
        self.chat_tokens = (self.chat_tokens + elapsed * CHAT_RATE).min(CHAT_BURST);
        if self.chat_tokens >= 1.0 {
            self.chat_tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The DTLS certificate every connection of the SFU presents, as a browser's connections may
/// share one. Making a key pair and signing a certificate for each participant would stall
/// forwarding to everyone on the SFU's task at each join. Each connection still checks its
/// peer against the fingerprint from its own description, and its SRTP keys come from its
/// own handshake.
#[derive(Default)]
struct Identity {
    current: Option<(Certificate, Instant)>,
}

impl Identity {
    /// The certificate for a new connection: the current one, or a new one after
    /// [`CERTIFICATE_RENEW`]. `None` when none can be made (the connection makes its own).
    fn certificate(&mut self, now: Instant) -> Option<Certificate> {
        if let Some((certificate, made)) = &self.current {
            if now.saturating_duration_since(*made) < CERTIFICATE_RENEW {
                return Some(certificate.clone());
            }
        }
        match Certificate::generate() {
            Ok(certificate) => {
                tracing::debug!(fingerprint = %certificate.fingerprint(), "sfu: new certificate");
                self.current = Some((certificate.clone(), now));
                Some(certificate)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sfu: cannot make a certificate");
                // The last one is still valid for a while.
                self.current.as_ref().map(|(certificate, _)| certificate.clone())
            }
        }
    }
}

/// Starts the SFU and attaches it to the signaling service.
pub async fn start(signal: SignalService, config: SfuConfig) -> Arc<SfuStats> {
    let (hub_tx, mut hub_rx) = mpsc::unbounded_channel();
    signal.attach_sfu(hub_tx).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(event) = hub_rx.recv().await {
            if forward.send(Input::Hub(event)).is_err() {
                break;
            }
        }
    });
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            if ticks.send(Input::Tick).is_err() {
                break;
            }
        }
    });
    let ticks = tx.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(LAYER_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if ticks.send(Input::LayerTick).is_err() {
                break;
            }
        }
    });
    let stats = Arc::new(SfuStats::default());
    // Made now rather than at the first join.
    let mut identity = Identity::default();
    identity.certificate(Instant::now());
    let sfu = Sfu {
        signal,
        config,
        inputs: tx,
        rooms: HashMap::new(),
        participants: SlotMap::default(),
        members: HashMap::new(),
        next_generation: 1,
        stats: stats.clone(),
        speakers: HashMap::new(),
        announce: Vec::new(),
        files: FileRelays::default(),
        layers_read: None,
        identity,
    };
    tokio::spawn(sfu.run(rx));
    stats
}

struct Sfu {
    signal: SignalService,
    config: SfuConfig,
    inputs: mpsc::UnboundedSender<Input>,
    rooms: HashMap<String, Room<String>>,
    participants: SlotMap<String, Participant>,
    /// Who the hub says is in an SFU room (peer → room), connected to us or not.
    members: HashMap<String, String>,
    next_generation: u64,
    stats: Arc<SfuStats>,
    /// Each room's active speaker, and when it was last decided.
    speakers: HashMap<String, (Speakers<String>, Instant)>,
    /// Speaker changes to tell rooms about: (room, speaker).
    announce: Vec<(String, String)>,
    /// Files being fanned out.
    files: FileRelays,
    /// When the estimates were last read for layer choices (ticks that queued up behind a
    /// slow pass are let go).
    layers_read: Option<Instant>,
    identity: Identity,
}

/// The layer a new subscriber of `key` starts on: the best one flowing now.
fn publication_best(participants: &SlotMap<String, Participant>, key: &TrackKey<String>) -> usize {
    participants
        .get(&key.0)
        .and_then(|p| p.published.get(&TransceiverId(key.1)))
        .and_then(|publication| publication.layers.best(Instant::now()))
        .unwrap_or(0)
}

fn kind_of(kind: MediaKind) -> Kind {
    match kind {
        MediaKind::Audio => Kind::Audio,
        MediaKind::Video => Kind::Video,
    }
}

impl Sfu {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        while let Some(input) = inputs.recv().await {
            match input {
                Input::Hub(SfuEvent::Join { room, peer }) => {
                    self.members.insert(peer.clone(), room.clone());
                    self.join(room, peer).await
                }
                Input::Hub(SfuEvent::Leave { peer, switched: false, .. }) => {
                    self.members.remove(&peer);
                    self.leave(&peer, "left the room").await
                }
                Input::Hub(SfuEvent::Leave { peer, switched: true, .. }) => {
                    self.members.remove(&peer);
                    self.grace(&peer)
                }
                Input::GraceOver { peer, generation } => {
                    if self.participants.get(&peer).is_some_and(|p| p.leaving && p.generation == generation) {
                        self.leave(&peer, "the room is a mesh again").await;
                    }
                }
                Input::Tick => self.tick().await,
                Input::LayerTick => {
                    let now = Instant::now();
                    if self.layers_read.is_none_or(|at| now.saturating_duration_since(at) >= LAYER_EVERY / 2)
                    {
                        self.layers_read = Some(now);
                        self.retarget_layers(true);
                    }
                }
                Input::Hub(SfuEvent::Signal { peer, data, .. }) => {
                    if let Err(e) = self.on_signal(&peer, &data).await {
                        tracing::info!(%peer, error = %e, "sfu: signal refused");
                    }
                }
                Input::Peer { peer, generation, event } => {
                    let current = self.participants.get(&*peer).is_some_and(|p| p.generation == generation);
                    if current {
                        self.on_event(&peer, event).await;
                    }
                }
            }
            self.stats.participants.store(self.participants.len() as u64, Ordering::Relaxed);
        }
    }

    /// The room went back to a mesh: `peer`'s media goes on for [`SWITCH_GRACE`].
    fn grace(&mut self, peer: &str) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        p.leaving = true;
        let (inputs, peer, generation) = (self.inputs.clone(), peer.to_owned(), p.generation);
        tokio::spawn(async move {
            tokio::time::sleep(SWITCH_GRACE).await;
            let _ = inputs.send(Input::GraceOver { peer, generation });
        });
    }

    /// Participants that never offer, or never answer ours, are dropped; layers are chosen
    /// again.
    async fn tick(&mut self) {
        let now = Instant::now();
        let late = self.files.tick(now);
        self.file_actions(late).await;
        // Receivers that held their file's sender back too long are dropped from it.
        for from in self.files.held_too_long(now) {
            for (peer, channel) in self.files.out_channels(&from) {
                let Some(handle) = self.participants.get(&peer).map(|p| p.handle.clone()) else { continue };
                if handle.buffered_amount(channel).await >= HIGH_WATER {
                    tracing::info!(sender = %from.0, receiver = %peer, "sfu: file receiver too slow; dropped from the transfer");
                    let actions = self.files.drop_slow(&(peer, channel));
                    self.file_actions(actions).await;
                }
            }
        }
        self.report();
        let now = Instant::now();
        let stale: Vec<(String, &'static str)> = self
            .participants
            .iter()
            .filter_map(|(id, p)| {
                if !p.ready && now.saturating_duration_since(p.joined_at) > OFFER_TIMEOUT {
                    Some((id.clone(), "it never offered"))
                } else if p.offered && now.saturating_duration_since(p.offered_at) > ANSWER_TIMEOUT {
                    Some((id.clone(), "it never answered our offer"))
                } else {
                    None
                }
            })
            .collect();
        for (peer, why) in stale {
            self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            self.leave(&peer, why).await;
        }
    }

    async fn join(&mut self, room: String, peer: String) {
        match self.participants.get(&peer) {
            // Back in SFU mode during the grace: a new connection (the client makes one).
            Some(p) if p.leaving => self.leave(&peer, "the room switched again").await,
            Some(_) => return,
            None => {}
        }
        let config = PeerConfig {
            rtc: RtcConfig {
                accept_media: Some(Direction::RecvOnly),
                accept_raw: true,
                channel_receive_credit: Some(CHANNEL_CREDIT),
                // Padding probes let the estimate toward a subscriber rise above the low
                // layers it is sent, so higher layers come back when its path allows.
                bandwidth_probing: true,
                certificate: self.identity.certificate(Instant::now()),
                ..RtcConfig::default()
            },
            addresses: self.config.addresses.clone(),
        };
        let starting = Instant::now();
        let started = match Peer::start(config).await {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "sfu: cannot start a connection");
                return;
            }
        };
        let (handle, mut events) = started.split();
        let generation = self.next_generation;
        self.next_generation += 1;
        let inputs = self.inputs.clone();
        let tag: Arc<str> = peer.as_str().into();
        tokio::spawn(async move {
            loop {
                let event = events.next().await;
                let end = event.is_none();
                if inputs.send(Input::Peer { peer: tag.clone(), generation, event }).is_err() || end {
                    break;
                }
            }
        });
        tracing::info!(%room, %peer, start = ?starting.elapsed(), "sfu: participant joins");
        self.participants.insert(
            peer.clone(),
            Participant {
                room: room.clone(),
                generation,
                handle,
                described: false,
                held: Vec::new(),
                offered: false,
                ready: false,
                pending: false,
                published: HashMap::new(),
                subscriptions: SlotMap::default(),
                by_transceiver: HashMap::new(),
                joined_at: Instant::now(),
                offered_at: Instant::now(),
                leaving: false,
                chat: None,
                chat_tokens: CHAT_BURST,
                chat_refill: Instant::now(),
                hold: None,
                held_since: None,
                hold_estimates: (0, 0),
                last_probe: None,
                last_estimate: None,
                forwarding: None,
                stale: Vec::new(),
            },
        );
        // Its subscriptions are made once its own offer was answered (see `reconcile`).
        let _ = self.rooms.entry(room).or_default().join(peer);
    }

    async fn leave(&mut self, peer: &str, why: &str) {
        let Some(p) = self.participants.remove(peer) else { return };
        tracing::info!(room = %p.room, %peer, why, "sfu: participant leaves");
        let actions = self.files.left(peer);
        self.file_actions(actions).await;
        let handle = p.handle.clone();
        tokio::spawn(async move { handle.close().await });
        for other in self.participants.values_mut() {
            for publication in other.published.values_mut() {
                publication.subscribers.retain(|s| s != peer);
                publication.forwarded.retain(|t| t.subscriber != peer);
            }
        }
        let changes = match self.rooms.get_mut(&p.room) {
            Some(room) => {
                let changes = room.leave(&peer.to_owned());
                if room.is_empty() {
                    self.rooms.remove(&p.room);
                    self.speakers.remove(&p.room);
                }
                changes
            }
            None => Vec::new(),
        };
        if let Some((speakers, _)) = self.speakers.get_mut(&p.room) {
            speakers.remove(&peer.to_owned());
        }
        self.apply(changes).await;
    }

    /// Tells each room whose active speaker changed: `{"speaker": id}` from "sfu" to every
    /// participant (docs/signaling.md).
    async fn announce_speakers(&mut self) {
        for (room, speaker) in std::mem::take(&mut self.announce) {
            tracing::debug!(%room, %speaker, "sfu: active speaker");
            self.stats.speaker_changes.fetch_add(1, Ordering::Relaxed);
            let to: Vec<String> = self
                .participants
                .iter()
                .filter(|(_, p)| p.room == room && !p.leaving)
                .map(|(id, _)| id.clone())
                .collect();
            for peer in to {
                self.send(&peer, json!({ "speaker": speaker })).await;
            }
            self.plan_videos(&room).await;
            self.retarget_layers(false);
        }
    }

    /// Makes each changed subscriber's connection carry what the room says.
    async fn apply(&mut self, changes: Vec<Change<String>>) {
        let mut touched: Vec<String> = Vec::new();
        for change in changes {
            let subscriber = match change {
                Change::Subscribe { subscriber, .. } | Change::Unsubscribe { subscriber, .. } => subscriber,
            };
            if !touched.contains(&subscriber) {
                touched.push(subscriber);
            }
        }
        let mut rooms: Vec<String> = Vec::new();
        for peer in touched {
            self.reconcile(&peer).await;
            if let Some(room) = self.participants.get(&peer).map(|p| p.room.clone()) {
                if !rooms.contains(&room) {
                    rooms.push(room);
                }
            }
        }
        for room in rooms {
            self.plan_videos(&room).await;
        }
    }

    async fn on_event(&mut self, peer: &str, event: Option<RtcEvent>) {
        let Some(event) = event else {
            self.leave(peer, "its connection ended").await;
            return;
        };
        match event {
            RtcEvent::LocalCandidate(c) => {
                self.candidate(peer, json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0})).await
            }
            RtcEvent::GatheringComplete => self.candidate(peer, Value::Null).await,
            RtcEvent::Rtp { id, layer, packet } => {
                self.forward(peer, id, layer, packet);
                self.announce_speakers().await;
            }
            RtcEvent::KeyframeRequest { id, .. } => {
                let Some(key) = self.participants.get(peer).and_then(|p| p.by_transceiver.get(&id)).cloned()
                else {
                    return;
                };
                let Some(sub) = self.participants.get(peer).and_then(|p| p.subscriptions.get(&key)) else {
                    return;
                };
                if sub.want == Want::Off {
                    return;
                }
                let layer = sub.layer.current();
                if let Some(publisher) = self.participants.get(&key.0) {
                    self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    // Of the layer this subscriber receives.
                    match layer {
                        Some(layer) => publisher.handle.request_keyframe_layer(TransceiverId(key.1), layer),
                        None => publisher.handle.request_keyframe(TransceiverId(key.1)),
                    }
                }
            }
            RtcEvent::Track { id, kind, .. } => self.publish(peer, id, kind).await,
            RtcEvent::NegotiationNeeded
                if self.participants.get(peer).is_some_and(|p| p.ready && !p.offered) =>
            {
                self.offer(peer).await;
            }
            RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == CHAT_LABEL => {
                if let Some(p) = self.participants.get_mut(peer) {
                    p.chat = Some(id);
                }
            }
            RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == FILE_LABEL => {
                let Some(room) = self.participants.get(peer).map(|p| p.room.clone()) else { return };
                let mut others: Vec<String> = self
                    .participants
                    .iter()
                    .filter(|(id, q)| id.as_str() != peer && q.room == room && !q.leaving && q.ready)
                    .map(|(id, _)| id.clone())
                    .collect();
                others.sort();
                tracing::info!(%peer, receivers = others.len(), "sfu: file relay starts");
                self.stats.files_relayed.fetch_add(1, Ordering::Relaxed);
                let actions = self.files.incoming((peer.to_owned(), id), &others);
                self.file_actions(actions).await;
            }
            RtcEvent::Channel(ChannelEvent::Open(id)) => {
                let actions = self.files.out_open(&(peer.to_owned(), id));
                self.file_actions(actions).await;
            }
            RtcEvent::Channel(ChannelEvent::BufferedAmountLow(id)) => {
                let channel = (peer.to_owned(), id);
                if let Some(from) = self.files.relay_of(&channel) {
                    let fullest = self.fullest(&from).await;
                    let actions = self.files.drained(&channel, fullest);
                    self.file_actions(actions).await;
                }
            }
            RtcEvent::Channel(ChannelEvent::Closed(id)) => {
                if let Some(p) = self.participants.get_mut(peer).filter(|p| p.chat == Some(id)) {
                    p.chat = None;
                }
                let actions = self.files.closed(&(peer.to_owned(), id));
                self.file_actions(actions).await;
            }
            RtcEvent::Channel(ChannelEvent::Message { id, data, binary }) => {
                let channel = (peer.to_owned(), id);
                if self.files.is_in(&channel) {
                    self.stats.file_bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    let fullest = self.fullest(&channel).await;
                    let actions = self.files.on_sender(Instant::now(), &channel, data, binary, fullest);
                    self.file_actions(actions).await;
                    return;
                }
                // Everything else is read at once: its credit goes straight back.
                // (SCTP counts an empty message as one byte.)
                if let Some(p) = self.participants.get(peer) {
                    p.handle.add_receive_credit(id, data.len().max(1));
                }
                if self.files.is_out(&channel) {
                    let actions = self.files.on_receiver(&channel, &data);
                    self.file_actions(actions).await;
                } else if !binary {
                    self.chat(peer, id, data).await
                }
            }
            RtcEvent::ConnectionState(ConnectionState::Connected) => {
                tracing::info!(%peer, "sfu: participant connected");
            }
            RtcEvent::Closed { reason, .. } => {
                self.leave(peer, &format!("its connection closed: {reason}")).await;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_one_certificate_until_it_is_renewed() {
        let mut identity = Identity::default();
        let start = Instant::now();
        let first = identity.certificate(start).expect("a certificate");
        let later = identity.certificate(start + CERTIFICATE_RENEW / 2).expect("a certificate");
        assert_eq!(first.fingerprint(), later.fingerprint());
        let renewed = identity.certificate(start + CERTIFICATE_RENEW).expect("a certificate");
        assert_ne!(first.fingerprint(), renewed.fingerprint());
        let after =
            identity.certificate(start + CERTIFICATE_RENEW + Duration::from_secs(1)).expect("a certificate");
        assert_eq!(renewed.fingerprint(), after.fingerprint());
    }
}
