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

mod slots;
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

/// Counters for metrics, and what each room forwards (renewed every second).
#[derive(Debug, Default)]
pub struct SfuStats {
    pub participants: AtomicU64,
    pub forwarded_packets: AtomicU64,
    pub dropped_packets: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub chat_relayed: AtomicU64,
    /// Files whose relay started, and the bytes relayed from their senders and to their
    /// receivers.
    pub files_relayed: AtomicU64,
    pub file_bytes_in: AtomicU64,
    pub file_bytes_out: AtomicU64,
    pub timeouts: AtomicU64,
    pub speaker_changes: AtomicU64,
    pub rooms: std::sync::Mutex<Vec<RoomReport>>,
}

impl SfuStats {
    /// The rooms as of the last second.
    pub fn rooms(&self) -> Vec<RoomReport> {
        self.rooms.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// One SFU room for `/stats` and the per-track metrics.
#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    pub room: String,
    /// Who has the floor.
    pub speaker: Option<String>,
    pub participants: Vec<ParticipantReport>,
    pub tracks: Vec<TrackReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    pub id: String,
    /// The bandwidth estimate toward it (bit/s), once it receives video.
    pub estimate_bps: Option<u64>,
    /// Its path held its layers under this (bit/s per video), for now.
    pub cap_bps: Option<u64>,
}

/// One published track: what arrives of each layer, and who receives which.
#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    pub publisher: String,
    /// Which of the publisher's tracks (its transceiver's number on our connection).
    pub track: usize,
    pub kind: &'static str,
    pub codec: String,
    pub layers: Vec<LayerReport>,
    pub subscribers: Vec<SubscriberReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub bitrate_bps: u64,
    /// The share of its packets lost on the way from the publisher, lately.
    pub loss: f32,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberReport {
    pub id: String,
    /// The layer it receives now.
    pub layer: Option<usize>,
    /// `full`, `thumbnail` or `off` (video outside the last N).
    pub want: &'static str,
    /// Packets forwarded to it.
    pub packets: u64,
}

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

    /// Renews the rooms' report for `/stats` and the metrics.
    fn report(&self) {
        let now = Instant::now();
        let mut rooms: Vec<RoomReport> = self
            .rooms
            .iter()
            .filter(|(_, room)| !room.is_empty())
            .map(|(name, room)| {
                let mut participants = Vec::new();
                let mut tracks = Vec::new();
                for id in room.participants() {
                    let Some(p) = self.participants.get(id) else { continue };
                    participants.push(ParticipantReport {
                        id: id.clone(),
                        estimate_bps: p.last_estimate,
                        cap_bps: p.hold.filter(|(until, _)| now < *until).map(|(_, cap)| cap),
                    });
                    let mut published: Vec<_> = p.published.iter().collect();
                    published.sort_by_key(|(t, _)| t.0);
                    for (t, publication) in published {
                        let key: TrackKey<String> = (id.clone(), t.0);
                        let subscribers = publication
                            .subscribers
                            .iter()
                            .filter_map(|s| {
                                let sub = self.participants.get(s)?.subscriptions.get(&key)?;
                                Some(SubscriberReport {
                                    id: s.clone(),
                                    layer: sub.layer.current(),
                                    want: match sub.want {
                                        Want::Full => "full",
                                        Want::Thumbnail => "thumbnail",
                                        Want::Off => "off",
                                    },
                                    packets: sub.forwarder.counts().0,
                                })
                            })
                            .collect();
                        tracks.push(TrackReport {
                            publisher: id.clone(),
                            track: t.0,
                            kind: publication.kind.as_str(),
                            codec: publication
                                .codecs
                                .first()
                                .map(|c| format!("{:?}", c.codec))
                                .unwrap_or_default(),
                            layers: (0..publication.layers.len())
                                .map(|l| LayerReport {
                                    bitrate_bps: publication.layers.rate(l),
                                    loss: publication.layers.loss(l),
                                    active: publication.layers.is_active(now, l),
                                })
                                .collect(),
                            subscribers,
                        });
                    }
                }
                RoomReport {
                    room: name.clone(),
                    speaker: self.speakers.get(name).and_then(|(s, _)| s.current().cloned()),
                    participants,
                    tracks,
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        if let Ok(mut shared) = self.stats.rooms.lock() {
            *shared = rooms;
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

    /// Adds and stops `peer`'s sending transceivers to match the room's tracks, and offers.
    async fn reconcile(&mut self, peer: &str) {
        let Some(p) = self.participants.get(peer) else { return };
        if p.leaving {
            return;
        }
        if !p.ready || p.offered {
            if let Some(p) = self.participants.get_mut(peer) {
                p.pending = true;
            }
            return;
        }
        let wanted: Vec<(TrackKey<String>, Kind)> = match self.rooms.get(&p.room) {
            Some(room) => room.tracks().into_iter().filter(|(t, _)| t.0 != peer).collect(),
            None => Vec::new(),
        };
        let mut changed = false;
        // Tracks that ended.
        let gone: Vec<TrackKey<String>> =
            p.subscriptions.keys().filter(|k| !wanted.iter().any(|(w, _)| w == *k)).cloned().collect();
        let handle = p.handle.clone();
        let stale = self.participants.get_mut(peer).map(|p| std::mem::take(&mut p.stale)).unwrap_or_default();
        for transceiver in stale {
            let _ = handle.stop_transceiver(transceiver).await;
            changed = true;
        }
        for key in gone {
            let Some(p) = self.participants.get_mut(peer) else { return };
            if let Some(sub) = p.subscriptions.remove(&key) {
                p.by_transceiver.remove(&sub.transceiver);
                let _ = handle.stop_transceiver(sub.transceiver).await;
                changed = true;
            }
            if let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            {
                publication.subscribers.retain(|s| s != peer);
                publication.forwarded.retain(|t| t.subscriber != peer);
            }
        }
        // Tracks to add.
        for (key, kind) in wanted {
            if self.participants.get(peer).is_none_or(|p| p.subscriptions.contains_key(&key)) {
                continue;
            }
            let Some(publication) =
                self.participants.get(&key.0).and_then(|p| p.published.get(&TransceiverId(key.1)))
            else {
                continue;
            };
            let Some(codec) = publication.codecs.first().map(|c| c.codec) else { continue };
            let media = publication.kind;
            let config = TrackConfig {
                codecs: publication.codecs.clone(),
                stream_id: key.0.clone(),
                track_id: format!("{}-{}", key.0, key.1),
                ..TrackConfig::new(media)
            };
            let transceiver = match handle.add_transceiver(media, Direction::SendOnly, config).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "sfu: cannot add a track");
                    continue;
                }
            };
            if let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            {
                if !publication.subscribers.iter().any(|s| s == peer) {
                    publication.subscribers.push(peer.to_owned());
                }
                // A new subscription is forwarded until the room's plan says otherwise.
                if !publication.forwarded.iter().any(|t| t.subscriber == peer) {
                    publication.forwarded.push(Target::new(peer));
                }
            }
            let Some(p) = self.participants.get_mut(peer) else { return };
            p.by_transceiver.insert(transceiver, key.clone());
            let layer = LayerChoice::new(publication_best(&self.participants, &key));
            let Some(p) = self.participants.get_mut(peer) else { return };
            let forwarder = Forwarder::new(kind, codec);
            p.subscriptions.insert(key, Subscription { transceiver, forwarder, layer, want: Want::Full });
            changed = true;
        }
        if changed {
            self.offer(peer).await;
        }
    }

    /// Decides again which videos each participant of `room` receives, and how good
    /// ([`VideoPolicy`]): a video coming back from outside the last N restarts at a key frame;
    /// with last-N each participant is told whose video it receives when that changes.
    async fn plan_videos(&mut self, room: &str) {
        let Some(order) = self.rooms.get(room).map(|r| r.participants().to_vec()) else { return };
        let publishers: Vec<String> = order
            .iter()
            .filter(|id| {
                self.participants
                    .get(*id)
                    .is_some_and(|p| !p.leaving && p.published.values().any(|t| t.kind == MediaKind::Video))
            })
            .cloned()
            .collect();
        // Each simulcast video's smallest picture now (what a thumbnail resumes on).
        let now = Instant::now();
        let lowest: HashMap<TrackKey<String>, usize> = publishers
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| (id, p)))
            .flat_map(|(id, p)| {
                p.published.iter().filter_map(move |(t, publication)| {
                    Some(((id.clone(), t.0), publication.layers.lowest(now)?))
                })
            })
            .collect();
        let recent: Vec<String> =
            self.speakers.get(room).map(|(s, _)| s.recent().to_vec()).unwrap_or_default();
        let policy = self.config.video;
        let mut asks = Vec::new();
        let mut tell = Vec::new();
        // Subscriptions turned off or back on: (track, subscriber, forwarded).
        let mut turned = Vec::new();
        for id in &order {
            let Some(p) = self.participants.get_mut(id) else { continue };
            if p.leaving {
                continue;
            }
            let ranked = policy.wants(id, &publishers, &recent);
            let wants: HashMap<&String, Want> = ranked.iter().map(|(p, w)| (p, *w)).collect();
            for (key, sub) in p.subscriptions.iter_mut().filter(|(_, s)| s.forwarder.kind() == Kind::Video) {
                let want = wants.get(&key.0).copied().unwrap_or(Want::Full);
                if sub.want != Want::Off && want == Want::Off {
                    sub.layer.pause();
                } else if sub.want == Want::Off && want != Want::Off {
                    // Back: the picture restarts at a key frame of the layer it gets (a
                    // thumbnail's at once; the best one is chosen on the next retarget).
                    if let Some(&low) = lowest.get(key).filter(|_| want == Want::Thumbnail) {
                        sub.layer.retarget_to(low);
                    }
                    sub.forwarder.restart();
                    asks.push((key.clone(), sub.layer.target()));
                }
                if (sub.want == Want::Off) != (want == Want::Off) {
                    turned.push((key.clone(), id.clone(), want != Want::Off));
                }
                sub.want = want;
            }
            if policy.last_n.is_some() && p.ready {
                let shown: Vec<String> =
                    ranked.iter().filter(|(_, w)| *w != Want::Off).map(|(id, _)| id.clone()).collect();
                if p.forwarding.as_ref() != Some(&shown) {
                    p.forwarding = Some(shown.clone());
                    tell.push((id.clone(), shown));
                }
            }
        }
        for (key, subscriber, on) in turned {
            let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            else {
                continue;
            };
            publication.forwarded.retain(|t| t.subscriber != subscriber);
            if on {
                publication.forwarded.push(Target::new(&subscriber));
            }
        }
        for (key, layer) in asks {
            if let Some(publisher) = self.participants.get(&key.0) {
                self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                publisher.handle.request_keyframe_layer(TransceiverId(key.1), layer);
            }
        }
        for (peer, shown) in tell {
            tracing::debug!(%peer, ?shown, "sfu: forwarding video of");
            self.send(&peer, json!({ "forwarding": shown })).await;
        }
    }

    async fn offer(&mut self, peer: &str) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        p.pending = false;
        p.offered = true;
        p.offered_at = Instant::now();
        let handle = p.handle.clone();
        match handle.create_offer().await {
            Ok(offer) => {
                let subscriptions = p.subscriptions.len();
                tracing::debug!(%peer, subscriptions, "sfu: offer sent");
                self.send(peer, json!({"description": {"type": "offer", "sdp": offer.sdp}})).await;
                self.described(peer).await;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "sfu: cannot make an offer");
                if let Some(p) = self.participants.get_mut(peer) {
                    p.offered = false;
                }
            }
        }
    }

    async fn send(&self, peer: &str, data: Value) {
        self.signal.sfu_signal(peer.to_owned(), data.to_string()).await;
    }

    async fn described(&mut self, peer: &str) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        p.described = true;
        let held = std::mem::take(&mut p.held);
        for c in held {
            self.send(peer, json!({ "candidate": c })).await;
        }
    }

    async fn on_signal(&mut self, peer: &str, raw: &str) -> anyhow::Result<()> {
        let data: Value = serde_json::from_str(raw)?;
        let offer = data["description"]["type"] == "offer";
        // A member we have no connection with (we dropped it, or it failed) comes back with
        // an offer: a new connection.
        if offer && !self.participants.contains_key(peer) {
            if let Some(room) = self.members.get(peer).cloned() {
                self.join(room, peer.to_owned()).await;
            }
        }
        match self.apply_signal(peer, &data).await {
            // An offer our connection cannot take after it was negotiated is the client's new
            // connection (it lost ours and made another): start over with it.
            Err(e) if offer && self.participants.get(peer).is_some_and(|p| p.ready) => {
                tracing::info!(%peer, error = %e, "sfu: the client started a new connection");
                self.leave(peer, "replaced by the client's new connection").await;
                let Some(room) = self.members.get(peer).cloned() else { return Err(e) };
                self.join(room, peer.to_owned()).await;
                self.apply_signal(peer, &data).await
            }
            other => other,
        }
    }

    async fn apply_signal(&mut self, peer: &str, data: &Value) -> anyhow::Result<()> {
        let Some(p) = self.participants.get_mut(peer) else { return Ok(()) };
        let handle = p.handle.clone();
        if let Some(d) = data.get("description") {
            let (Some(kind), Some(sdp)) = (d["type"].as_str().and_then(SdpType::parse), d["sdp"].as_str())
            else {
                anyhow::bail!("description without a type or sdp");
            };
            // The server is impolite: an offer crossing ours is ignored (the client rolls
            // its own back and answers ours).
            if kind == SdpType::Offer && p.offered {
                return Ok(());
            }
            let answer = match handle.set_remote_description(Description { kind, sdp: sdp.to_owned() }).await
            {
                Ok(answer) => answer,
                Err(e) => {
                    if kind == SdpType::Answer {
                        p.offered = false;
                    }
                    return Err(e.into());
                }
            };
            tracing::debug!(%peer, kind = ?kind, "sfu: description applied");
            match answer {
                Some(answer) => {
                    self.send(peer, json!({"description": {"type": "answer", "sdp": answer.sdp}})).await;
                    self.described(peer).await;
                }
                None => {
                    if let Some(p) = self.participants.get_mut(peer) {
                        p.offered = false;
                    }
                }
            }
            let first =
                self.participants.get_mut(peer).is_some_and(|p| !std::mem::replace(&mut p.ready, true));
            let pending = self.participants.get(peer).is_some_and(|p| p.pending);
            if first || pending {
                self.reconcile(peer).await;
                if let Some(room) = self.participants.get(peer).map(|p| p.room.clone()) {
                    self.plan_videos(&room).await;
                }
            }
            // A newcomer learns who speaks.
            let speaker = self
                .participants
                .get(peer)
                .and_then(|p| self.speakers.get(&p.room))
                .and_then(|(s, _)| s.current().cloned());
            if let Some(speaker) = speaker.filter(|_| first) {
                self.send(peer, json!({ "speaker": speaker })).await;
            }
        } else if let Some(c) = data.get("candidate") {
            match c {
                Value::Null => handle.add_ice_candidate(""),
                c => {
                    if let Some(line) = c["candidate"].as_str() {
                        handle.add_ice_candidate(line);
                    }
                }
            }
        }
        Ok(())
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

    /// The most any receiver's channel of the file relay of `from` has buffered.
    async fn fullest(&self, from: &ChannelRef) -> usize {
        let mut fullest = 0;
        for (peer, channel) in self.files.out_channels(from) {
            if let Some(p) = self.participants.get(&peer) {
                fullest = fullest.max(p.handle.buffered_amount(channel).await);
            }
        }
        fullest
    }

    /// Carries out what the file relays decided.
    async fn file_actions(&mut self, actions: Vec<Action>) {
        let mut todo = std::collections::VecDeque::from(actions);
        while let Some(action) = todo.pop_front() {
            match action {
                Action::OpenOut { to, from } => {
                    let Some(handle) = self.participants.get(&to).map(|p| p.handle.clone()) else {
                        todo.extend(self.files.out_failed(&from, &to, "the receiver left"));
                        continue;
                    };
                    match handle.create_data_channel(ChannelConfig::reliable(FILE_LABEL)).await {
                        Ok(id) => {
                            handle.set_buffered_amount_low_threshold(id, LOW_WATER);
                            self.files.opened_out(&from, &to, id);
                        }
                        Err(e) => {
                            tracing::info!(peer = %to, error = %e, "sfu: cannot open a file channel");
                            todo.extend(self.files.out_failed(&from, &to, "no channel to the receiver"));
                        }
                    }
                }
                Action::Send { to: (peer, channel), data, binary } => {
                    if let Some(p) = self.participants.get(&peer) {
                        if binary {
                            self.stats.file_bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        if let Err(e) = p.handle.send(channel, data, binary).await {
                            // A receiver's channel that cannot take more is gone for its
                            // relay (it fails; the others go on).
                            let channel = (peer, channel);
                            if self.files.is_out(&channel) {
                                tracing::debug!(peer = %channel.0, error = %e, "sfu: a file relay cannot send");
                                todo.push_back(Action::Close(channel.clone()));
                                todo.extend(self.files.closed(&channel));
                            }
                        }
                    }
                }
                Action::Close((peer, channel)) => {
                    if let Some(p) = self.participants.get(&peer) {
                        p.handle.close_channel(channel);
                    }
                }
                Action::Credit { to: (peer, channel), bytes } => {
                    if let Some(p) = self.participants.get(&peer) {
                        p.handle.add_receive_credit(channel, bytes);
                    }
                }
            }
        }
    }

    /// A chat message from `peer` goes to everyone else in its room, with who sent it.
    async fn chat(&mut self, peer: &str, channel: u16, data: Vec<u8>) {
        let now = Instant::now();
        let Some(p) = self.participants.get_mut(peer).filter(|p| p.chat == Some(channel)) else { return };
        if data.len() > CHAT_MAX || !p.take_chat(now) {
            tracing::debug!(%peer, bytes = data.len(), "sfu: chat message dropped (too large or too many)");
            return;
        }
        let Ok(text) = String::from_utf8(data) else { return };
        let room = p.room.clone();
        let message = json!({"from": peer, "text": text}).to_string().into_bytes();
        let to: Vec<(PeerHandle, u16)> = self
            .participants
            .iter()
            .filter(|(id, q)| id.as_str() != peer && q.room == room)
            .filter_map(|(_, q)| q.chat.map(|c| (q.handle.clone(), c)))
            .collect();
        for (handle, channel) in to {
            // A participant that does not take its chat in does not make us hold it.
            if handle.buffered_amount(channel).await > CHAT_BUFFER {
                continue;
            }
            self.stats.chat_relayed.fetch_add(1, Ordering::Relaxed);
            let _ = handle.send(channel, message.clone(), false).await;
        }
    }

    async fn candidate(&mut self, peer: &str, c: Value) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        if p.described {
            self.send(peer, json!({ "candidate": c })).await;
        } else {
            p.held.push(c);
        }
    }

    async fn publish(&mut self, peer: &str, id: TransceiverId, kind: MediaKind) {
        let Some(p) = self.participants.get(peer) else { return };
        let handle = p.handle.clone();
        let info = handle.transceivers().await.into_iter().find(|t| t.id == id);
        let Some((codecs, rids, extensions)) =
            info.map(|t| (t.codecs, t.rids, t.extensions)).filter(|(c, _, _)| !c.is_empty())
        else {
            return;
        };
        let audio_level = extensions
            .iter()
            .find(|(_, uri)| uri == peerlink_rtp::ext::uri::AUDIO_LEVEL)
            .map(|(id, _)| *id)
            .filter(|_| kind == MediaKind::Audio);
        let Some(p) = self.participants.get_mut(peer) else { return };
        if p.published.contains_key(&id) {
            return;
        }
        tracing::info!(%peer, kind = kind.as_str(), codec = ?codecs[0].codec, ?rids, "sfu: track published");
        // Subscriptions to a track of this name from before are of the publisher's previous
        // connection (it came back under its id while their subscriber's offer was out, so
        // they were never removed): they go, and the track is subscribed anew.
        let key: TrackKey<String> = (peer.to_owned(), id.0);
        for (other, q) in self.participants.iter_mut().filter(|(other, _)| *other != peer) {
            if let Some(sub) = q.subscriptions.remove(&key) {
                tracing::debug!(subscriber = %other, publisher = %peer, "sfu: a subscription of a previous connection ends");
                q.by_transceiver.remove(&sub.transceiver);
                q.stale.push(sub.transceiver);
            }
        }
        let Some(p) = self.participants.get_mut(peer) else { return };
        let layers = Layers::new(rids.len());
        p.published.insert(
            id,
            Publication {
                codecs,
                kind,
                layers,
                subscribers: Vec::new(),
                forwarded: Vec::new(),
                key,
                audio_level,
                size_asked: None,
            },
        );
        let room = p.room.clone();
        let changes = match self.rooms.get_mut(&room) {
            Some(room) => room.publish((peer.to_owned(), id.0), kind_of(kind)),
            None => Vec::new(),
        };
        self.apply(changes).await;
        // A new subscriber needs a key frame to start.
        if kind == MediaKind::Video {
            handle.request_keyframe(id);
        }
    }

    /// One received packet goes to every subscriber of its track.
    fn forward(&mut self, peer: &str, id: TransceiverId, layer: usize, packet: Vec<u8>) {
        // One packet for all its subscribers: each connection writes its own copy, with the
        // bytes its forwarder changes.
        let packet = Arc::new(packet);
        let Ok(parsed) = RtpPacket::parse(&packet) else { return };
        let Some(p) = self.participants.get_mut(peer) else { return };
        let Some(publication) = p.published.get_mut(&id) else { return };
        let now = Instant::now();
        publication.layers.on_packet(now, layer, packet.len(), (parsed.ssrc(), parsed.sequence_number()));
        // (Passed on to the subscribers too: only audio publications have the extension.)
        let audio_level = publication
            .audio_level
            .and_then(|ext| parsed.extensions().get(ext))
            .and_then(|data| AudioLevel::decode(data).ok());
        if let Some(level) = audio_level {
            if !self.speakers.contains_key(&p.room) {
                self.speakers.insert(p.room.clone(), (Speakers::new(), now));
            }
            let (speakers, decided) = self.speakers.get_mut(&p.room).expect("inserted");
            speakers.on_level(peer, level.level, now);
            if now.duration_since(*decided) >= SPEAKER_EVERY {
                *decided = now;
                if let Some(speaker) = speakers.decide(now) {
                    self.announce.push((p.room.clone(), speaker));
                }
            }
        }
        let Some(p) = self.participants.get_mut(peer) else { return };
        let Some(publication) = p.published.get_mut(&id) else { return };
        let Some(codec) =
            publication.codecs.iter().find(|c| c.payload_type == parsed.payload_type()).map(|c| c.codec)
        else {
            self.stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let publisher = p.handle.clone();
        // Taken out while they are served (nothing below changes who subscribes), not cloned.
        let mut subscribers = std::mem::take(&mut publication.forwarded);
        let key = std::mem::take(&mut publication.key);
        let kind = kind_of(publication.kind);
        let key_start = starts_keyframe(kind, codec, parsed.payload());
        let mut want_keyframe = None;
        let mut ask_size = None;
        if codec == Codec::Vp8 {
            if key_start {
                if let Some(size) = vp8_key_size(parsed.payload()) {
                    publication.layers.on_size(layer, size);
                }
            }
            if let Some(unknown) = publication.layers.unsized_active(now) {
                if publication.size_asked.is_none_or(|at| now.duration_since(at) >= SIZE_ASK_EVERY) {
                    publication.size_asked = Some(now);
                    tracing::debug!(%peer, layer = unknown, "sfu: key frame asked for a layer of unknown size");
                    ask_size = Some(unknown);
                }
            }
        }
        let (mut forwarded, mut dropped) = (0, 0);
        for target in subscribers.iter_mut() {
            let s = &target.subscriber;
            // By the slots it was found in before, else by name (and its slots kept).
            // (A slot found by `key` keeps that key while its generation lasts.)
            let found = target.slots.filter(|&(ps, ss)| {
                self.participants.at_mut(ps).is_some_and(|(_, p)| p.subscriptions.at_mut(ss).is_some())
            });
            let (ps, ss) = match found {
                Some(slots) => slots,
                None => {
                    let Some(ps) = self.participants.slot(s) else { continue };
                    let Some(ss) = self.participants.at_mut(ps).and_then(|(_, p)| p.subscriptions.slot(&key))
                    else {
                        continue;
                    };
                    target.slots = Some((ps, ss));
                    (ps, ss)
                }
            };
            let Some((_, p)) = self.participants.at_mut(ps) else { continue };
            let handle = &p.handle;
            let Some((_, sub)) = p.subscriptions.at_mut(ss) else { continue };
            if sub.want == Want::Off {
                continue;
            }
            match sub.layer.on_packet(layer, key_start) {
                LayerDecision::Forward => {}
                LayerDecision::Switch => {
                    tracing::debug!(subscriber = %s, publisher = %peer, layer, "sfu: layer switched at its key frame");
                    // The subscriber starts over at this key frame: repairs of the old
                    // layer would only take room from it.
                    sub.forwarder.restart();
                    handle.forget_sent(sub.transceiver);
                }
                LayerDecision::Skip => continue,
                LayerDecision::WantKeyframe(l) => {
                    want_keyframe = Some(l);
                    continue;
                }
            }
            match sub.forwarder.forward(now, &parsed) {
                Verdict::Forward { seq, timestamp } => {
                    if sub.forwarder.counts().0 == 1 {
                        tracing::debug!(subscriber = %s, publisher = %peer, kind = ?kind, "sfu: first packet forwarded");
                    }
                    forwarded += 1;
                    let patch = sub.forwarder.payload_patch(parsed.payload());
                    let shared = Arc::clone(&packet);
                    handle.forward_rtp(sub.transceiver, 0, codec, shared, patch, seq, timestamp, audio_level);
                }
                Verdict::WaitKeyframe => want_keyframe = Some(layer),
                Verdict::Drop => dropped += 1,
            }
        }
        self.stats.forwarded_packets.fetch_add(forwarded, Ordering::Relaxed);
        self.stats.dropped_packets.fetch_add(dropped, Ordering::Relaxed);
        if let Some(publication) = self.participants.get_mut(peer).and_then(|p| p.published.get_mut(&id)) {
            publication.forwarded = subscribers;
            publication.key = key;
        }
        if let Some(layer) = want_keyframe {
            publisher.request_keyframe_layer(id, layer);
        }
        if let Some(layer) = ask_size.filter(|l| want_keyframe != Some(*l)) {
            publisher.request_keyframe_layer(id, layer);
        }
    }

    /// Each subscription of a simulcast track follows the best layer that flows within the
    /// subscriber's share of its bandwidth estimate.
    /// `sample`: read each subscriber's bandwidth estimate (every [`LAYER_EVERY`]);
    /// otherwise only the holds already set apply.
    fn retarget_layers(&mut self, sample: bool) {
        let now = Instant::now();
        // What each subscriber's path carries, where it is the limit. Without probing, an
        // estimate cannot grow much past what is sent (it is application-limited), so it
        // only holds subscribers back when it falls below what they are sent; for a while
        // after, they stay under that cap, then try a better layer again.
        let mut caps: HashMap<String, u64> = HashMap::new();
        let ids: Vec<String> = self.participants.keys().cloned().collect();
        for id in ids {
            let Some(p) = self.participants.get(&id) else { continue };
            if !sample {
                // Whether a hold ends or is renewed is for the next reading to say.
                if let Some((_, cap)) = p.hold {
                    caps.insert(id.clone(), cap);
                }
                continue;
            }
            // Paused videos (outside the last N) take nothing from the path.
            let videos = p
                .subscriptions
                .values()
                .filter(|s| s.forwarder.kind() == Kind::Video && s.want != Want::Off)
                .count() as u64;
            if videos == 0 {
                // Nothing to hold: a hold from before is over (a speaker change must not
                // apply it later).
                if let Some(p) = self.participants.get_mut(&id) {
                    p.end_hold();
                }
                continue;
            }
            let audios =
                p.subscriptions.values().filter(|s| s.forwarder.kind() == Kind::Audio).count() as u64;
            let rates = |pick: &dyn Fn(&Subscription, &Layers) -> Option<usize>| -> u64 {
                p.subscriptions
                    .iter()
                    .filter(|(_, sub)| sub.want != Want::Off)
                    .filter_map(|(key, sub)| {
                        let publication =
                            self.participants.get(&key.0)?.published.get(&TransceiverId(key.1))?;
                        Some(publication.layers.rate(pick(sub, &publication.layers)?))
                    })
                    .sum()
            };
            // What it is sent, and what its best layers would need.
            let sent = rates(&|sub, _| sub.layer.current());
            let best = |sub: &Subscription, l: &Layers| {
                match sub.want {
                    Want::Full => l.best(now),
                    Want::Thumbnail => l.lowest(now),
                    Want::Off => None,
                }
                .or(sub.layer.current())
            };
            let wanted = rates(&best);
            // The most any one video's best layer needs (each video gets an equal share).
            let wanted_video = p
                .subscriptions
                .iter()
                .filter(|(_, sub)| sub.want != Want::Off && sub.forwarder.kind() == Kind::Video)
                .filter_map(|(key, sub)| {
                    let publication = self.participants.get(&key.0)?.published.get(&TransceiverId(key.1))?;
                    Some(publication.layers.rate(best(sub, &publication.layers)?))
                })
                .max()
                .unwrap_or(0);
            let Some(estimate) = p.handle.latest_bandwidth_estimate() else {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.hold = p.hold.filter(|(until, _)| now < *until);
                }
                continue;
            };
            let Some(p) = self.participants.get_mut(&id) else { continue };
            // Held back only by an estimate that falls (a path that cannot carry what it is
            // sent), not by one still climbing from its start.
            let falling = p.last_estimate.is_some_and(|last| estimate < last);
            p.last_estimate = Some(estimate);
            // Audio first (about 40 kbit/s a track), a tenth for headroom, the rest shared.
            let share =
                |bps: u64, percent: u64| (bps * percent / 100).saturating_sub(audios * 40_000) / videos;
            let cap = share(estimate, 90);
            if falling && estimate < sent * 95 / 100 {
                if p.hold.is_none() {
                    // The path is full now: the first probe waits its turn.
                    p.last_probe = Some(now);
                }
                // The path's queue is full of what it could not carry, and the new layer
                // starts with a key frame that must pass it: a layer chosen to fill the
                // path's rate would keep the queue full and its key frame late (a freeze
                // while it waits), so the step down leaves half free until the hold is
                // renewed or ends.
                p.hold = Some((now + LAYER_HOLD, share(estimate, DRAIN_SHARE)));
                p.held_since.get_or_insert(now);
                p.hold_estimates = (0, 0);
            }
            if let Some((until, _)) = p.hold {
                let since = p.held_since.unwrap_or(now);
                p.hold_estimates.0 += estimate;
                p.hold_estimates.1 += 1;
                if cap >= wanted_video {
                    // A probe (or the path) shows room for every video's best layer.
                    p.hold = None;
                } else if now >= until {
                    let (sum, n) = std::mem::take(&mut p.hold_estimates);
                    let cap = share(sum / n.max(1), 90);
                    p.hold =
                        (now.saturating_duration_since(since) < MAX_HOLD).then_some((now + LAYER_HOLD, cap));
                }
                if p.hold.is_some()
                    && p.last_probe.is_none_or(|at| now.saturating_duration_since(at) >= PROBE_EVERY)
                {
                    // Toward what the best layers need, at most twice the estimate at a time
                    // (a probe that comes back at 70 % of its rate or more goes on at twice
                    // its result by itself).
                    p.last_probe = Some(now);
                    let probe = (wanted.saturating_mul(5) / 4).min(estimate.saturating_mul(2));
                    p.handle.request_bandwidth_probe(probe);
                }
            }
            match p.hold {
                Some((until, cap)) if now < until => {
                    caps.insert(id.clone(), cap);
                }
                _ => {
                    p.end_hold();
                }
            }
        }
        let layers: HashMap<TrackKey<String>, Layers> = self
            .participants
            .iter()
            .flat_map(|(id, p)| {
                p.published
                    .iter()
                    .filter(|(_, publication)| publication.layers.len() > 1)
                    .map(move |(t, publication)| ((id.clone(), t.0), publication.layers.clone()))
            })
            .collect();
        if layers.is_empty() {
            return;
        }
        let mut asks = Vec::new();
        for (id, p) in self.participants.iter_mut() {
            let cap = caps.get(id).copied().unwrap_or(u64::MAX);
            // (Videos outside the last N are skipped before their track is looked up.)
            for (key, sub) in p.subscriptions.iter_mut().filter(|(_, s)| s.want != Want::Off) {
                let Some(l) = layers.get(key) else { continue };
                let switched = match sub.want {
                    Want::Off => continue,
                    // The smallest picture, whatever it sends.
                    Want::Thumbnail => l.lowest(now).and_then(|low| sub.layer.retarget_to(low)),
                    Want::Full => sub.layer.retarget_within(now, l, cap),
                };
                if let Some(layer) = switched {
                    if sub.layer.current().is_none() {
                        // Stopped at once (far above the cap): nothing of it is resent.
                        p.handle.forget_sent(sub.transceiver);
                    }
                    let cap = (cap < u64::MAX).then_some(cap);
                    tracing::debug!(subscriber = %id, publisher = %key.0, layer, ?cap, want = ?sub.want, "sfu: layer switch");
                    asks.push((key.clone(), layer));
                }
            }
        }
        for (key, layer) in asks {
            if let Some(publisher) = self.participants.get(&key.0) {
                publisher.handle.request_keyframe_layer(TransceiverId(key.1), layer);
            }
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
