//! A WebRTC PeerConnection, sans-IO: JSEP offers and answers (RFC 8829) with BUNDLEd
//! sections (rtcp-mux only): one `m=application UDP/DTLS/SCTP webrtc-datachannel` section and
//! audio and video transceivers; ICE (`peerlink-ice`), DTLS (`peerlink-dtls`), SCTP and data
//! channels (`peerlink-sctp`), SRTP with keys from DTLS (`peerlink-rtp`), RTP payload formats
//! (`peerlink-media`), and RFC 7983 demultiplexing of what arrives on the selected pair.
//!
//! A run loop over one std `UdpSocket` (`crates/peerlink/examples/sans_io.rs` runs one):
//!
//! ```no_run
//! use peerlink_rtc::{ChannelConfig, Description, PeerConnection, RtcConfig, RtcEvent};
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//!
//! # fn answer_from_the_peer() -> Description { unimplemented!() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let socket = UdpSocket::bind("127.0.0.1:0")?;
//! let local = socket.local_addr()?;
//! let seed = [7; 32]; // from a CSPRNG
//! let now = Instant::now();
//! let mut pc = PeerConnection::new(now, RtcConfig::default(), seed)?;
//! pc.add_local_address(now, local); // each socket the driver owns
//! pc.create_data_channel(now, ChannelConfig::reliable("chat"))?;
//! let offer = pc.create_offer()?; // to the peer through signaling
//! pc.set_local_description(now, Some(offer))?;
//! pc.set_remote_description(now, answer_from_the_peer())?;
//! let (mut buf, mut datagram) = (Vec::new(), vec![0; 65_536]);
//! loop {
//!     let now = Instant::now();
//!     // Outputs after every batch of inputs: datagrams, then events.
//!     while let Some(t) = pc.poll_transmit(now, &mut buf) {
//!         socket.send_to(t.datagram(&buf), t.route.remote)?;
//!         buf.clear(); // poll_transmit appends: a driver may batch several for one GSO send
//!     }
//!     while let Some(event) = pc.poll_event() {
//!         match event {
//!             RtcEvent::LocalCandidate(line) => { /* trickle it to the peer */ }
//!             RtcEvent::Channel(e) => println!("{e:?}"),
//!             _ => {}
//!         }
//!     }
//!     // Inputs: a datagram, or the timer (waking early is harmless).
//!     let wait = pc.poll_timeout().map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
//!     socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
//!     match socket.recv_from(&mut datagram) {
//!         Ok((n, from)) => pc.handle_receive(Instant::now(), from, local, &datagram[..n]),
//!         Err(_) => pc.handle_timeout(Instant::now()),
//!     }
//! }
//! # }
//! ```

pub use codecs::{h264_profile, supported_codecs, CodecParams, H264Profile};
pub use media::{
    Direction, MediaKind, MediaStats, TrackConfig, TransceiverId, TransceiverInfo, MAX_SEND_LAYERS,
};
pub use peerlink_dtls::{Certificate, DtlsError, Fingerprint};
use peerlink_dtls::{Dtls, DtlsConfig, DtlsEvent, Role};
use peerlink_ice::{Candidate, CandidateAddress, IceAgent, IceConfig, IceEvent, TurnServerConfig};
pub use peerlink_ice::{IceFailure, IceState};
pub use peerlink_media::{Codec, Frame};
use peerlink_proto::SeededRng;
pub use peerlink_proto::{Route, Transmit};
/// RFC 6464's audio level, for [`PeerConnection::write_rtp_layer`].
pub use peerlink_rtp::ext::AudioLevel;
pub use peerlink_rtp::PayloadPatch;
use peerlink_sctp::{Association, DataChannels, SctpConfig};
pub use peerlink_sctp::{
    ChannelConfig, ChannelEvent, ChannelState, CongestionControl, Reliability, SctpCloseReason,
};
use peerlink_sdp::{Attribute, Media, SessionDescription, Setup};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

/// How long a graceful close waits for SCTP's shutdown before it aborts.
pub const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// What we announce and accept as `a=max-message-size` (RFC 8841).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

#[derive(Debug, Clone, Default)]
pub struct RtcConfig {
    pub stun_servers: Vec<SocketAddr>,
    pub turn_servers: Vec<TurnServerConfig>,
    /// Our certificate; a fresh one when `None`.
    pub certificate: Option<Certificate>,
    /// What a transceiver made for a remote offer's audio or video section does (when no
    /// transceiver of ours was waiting for one): `None` is recvonly, as a browser's.
    pub accept_media: Option<media::Direction>,
    /// Transceivers made for remote offers deliver raw RTP ([`RtcEvent::Rtp`]) rather than frames.
    pub accept_raw: bool,
    /// Bytes of messages each data channel delivers before the application gives credit
    /// for more ([`PeerConnection::add_receive_credit`]); `None`: no limit. With a limit, a
    /// reader that falls behind closes the peer's SCTP window instead of growing memory.
    pub channel_receive_credit: Option<usize>,
    /// The data channels' SCTP congestion controller (the default: the SCTP crate's).
    pub congestion_control: Option<CongestionControl>,
    /// Probe the path for bandwidth with padding on a video section's RTX stream when the
    /// estimator asks (at the start, after a feedback timeout, and every 5 s while what is
    /// acknowledged is under 75 % but over a third of the estimate), so it can rise above what
    /// is sent: what an SFU needs before it forwards a higher layer. Needs RTX and
    /// transport-cc negotiated; off by default.
    pub bandwidth_probing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpType {
    Offer,
    Answer,
}

impl SdpType {
    pub fn as_str(self) -> &'static str {
        match self {
            SdpType::Offer => "offer",
            SdpType::Answer => "answer",
        }
    }

    pub fn parse(s: &str) -> Option<SdpType> {
        match s {
            "offer" => Some(SdpType::Offer),
            "answer" => Some(SdpType::Answer),
            _ => None,
        }
    }
}

/// An offer or answer, as `RTCSessionDescription` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub kind: SdpType,
    pub sdp: String,
}

/// JSEP signaling states (RFC 8829 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalingState {
    Stable,
    HaveLocalOffer,
    HaveRemoteOffer,
    Closed,
}

/// `RTCPeerConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RtcEvent {
    /// A local candidate for the peer (`candidate:...`; trickle it).
    LocalCandidate(String),
    /// All local candidates were announced.
    GatheringComplete,
    /// A remote candidate names a host (`*.local`): resolve it (mDNS) and give the address
    /// back with [`PeerConnection::add_resolved_candidate`].
    ResolveMdns {
        name: String,
        candidate: String,
    },
    IceState(IceState),
    ConnectionState(ConnectionState),
    /// `selected pair: <local type> -> <remote type>` (and addresses).
    SelectedPair {
        local: SocketAddr,
        remote: SocketAddr,
        local_kind: &'static str,
        remote_kind: &'static str,
    },
    Channel(ChannelEvent),
    /// Something changed that needs an offer (`negotiationneeded`): a transceiver was added
    /// or its direction changed.
    NegotiationNeeded,
    /// A transceiver receives media now (after a negotiation): `ontrack`. `stream_id` is the
    /// sender's `msid` stream id.
    Track {
        id: media::TransceiverId,
        kind: media::MediaKind,
        mid: String,
        stream_id: Option<String>,
    },
    /// A whole received frame. `frame.gap_before`: frames were lost before it (a keyframe
    /// was asked for).
    Frame {
        id: media::TransceiverId,
        codec: Codec,
        frame: Frame,
    },
    /// A received RTP packet (after SRTP and RTX unwrapping), for transceivers set to `raw`.
    /// `layer`: its simulcast layer (an index of [`media::TransceiverInfo::rids`]; 0 without
    /// simulcast).
    Rtp {
        id: media::TransceiverId,
        layer: usize,
        packet: Vec<u8>,
    },
    /// The peer asks for a key frame of what we send on `id` (PLI or FIR). `layer`: the
    /// simulcast layer it is for (an index of [`media::TrackConfig::send_rids`]; 0 without
    /// simulcast).
    KeyframeRequest {
        id: media::TransceiverId,
        layer: usize,
    },
    /// A sender report of what `id` receives: the sender's wall clock (NTP) at an RTP
    /// timestamp, to put its streams on one time line.
    SenderReport {
        id: media::TransceiverId,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// The connection is over, and why: the one terminal event, just before
    /// `ConnectionState(Closed)` (a close by either side) or `ConnectionState(Failed)`.
    /// `during_setup`: it had never been connected (so nothing was interrupted).
    Closed {
        reason: CloseReason,
        during_setup: bool,
    },
}

/// Why a connection ended ([`RtcEvent::Closed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`PeerConnection::close`] was called.
    #[error("closed by this side")]
    LocalClose,
    /// The other side closed the connection (SCTP shutdown, DTLS close_notify).
    #[error("the other side closed the connection")]
    RemoteClosed,
    /// No path, or the path stopped answering.
    #[error("ICE: {0}")]
    Ice(#[from] IceFailure),
    #[error("DTLS: {0}")]
    Dtls(#[from] DtlsError),
    /// The association ended some other way than a shutdown: an abort (with the peer's
    /// cause), a peer that stopped answering, a protocol violation.
    #[error("SCTP: {0}")]
    Sctp(#[from] SctpCloseReason),
}

impl CloseReason {
    /// Whether the connection failed (rather than being closed by one of its ends).
    pub fn is_failure(&self) -> bool {
        !matches!(self, CloseReason::LocalClose | CloseReason::RemoteClosed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcError {
    #[error("bad session description: {0}")]
    BadDescription(String),
    #[error("{0} is not allowed in signaling state {1:?}")]
    WrongState(&'static str, SignalingState),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("ICE: {0}")]
    Ice(#[from] peerlink_ice::UsageError),
    #[error("bad candidate {line:?}: {error}")]
    Candidate {
        line: String,
        #[source]
        error: peerlink_ice::CandidateError,
    },
    #[error("data channel: {0}")]
    Channel(#[from] peerlink_sctp::ChannelError),
    #[error("the connection is closed")]
    Closed,
    #[error("no such transceiver")]
    NoTransceiver,
    #[error("the transceiver does not send (not negotiated, or not in a sending direction)")]
    NotSending,
    #[error("the codec was not negotiated for this transceiver")]
    CodecNotNegotiated,
    #[error("frame: {0}")]
    Packetize(peerlink_media::PacketizeError),
    #[error("not an RTP packet")]
    BadRtp,
    /// [`media::TrackConfig::send_rids`] is not a usable list of simulcast layers.
    #[error("bad simulcast send layers: {0}")]
    BadSendRids(String),
    /// A write to a simulcast layer that is not sent: never configured, or not accepted by
    /// the peer's answer. Nothing was sent; a caller writing every layer may ignore it.
    #[error("simulcast layer {0} is not sent (not configured, or not accepted by the peer)")]
    LayerNotSent(usize),
}

/// A section of our descriptions, in the order the first negotiation fixed.
#[derive(Debug, Clone)]
enum Section {
    Data,
    Media(usize),
    /// A remote offer's section we do not take part in (kept, rejected, in its place).
    Rejected(Media),
}

/// A datagram kept for [`PeerConnection::poll_transmit`] (only on the close, which stops
/// ICE right after sealing its last records).
#[derive(Debug, Clone)]
struct Queued {
    route: Route,
    payload: Vec<u8>,
}

/// What we learned from the remote description.
#[derive(Debug, Clone)]
struct Remote {
    ufrag: String,
    fingerprint: Fingerprint,
    setup: Setup,
}

/// A WebRTC connection, sans-IO: it owns no socket, thread or clock.
///
/// The calling contract (see the crate docs for a loop):
/// - Inputs: [`PeerConnection::handle_receive`] for each datagram that arrived on a socket
///   given with [`PeerConnection::add_local_address`], [`PeerConnection::handle_timeout`]
///   once [`PeerConnection::poll_timeout`] is due, and the commands (descriptions,
///   candidates, channels, media). Several inputs in a row are fine.
/// - After a batch of inputs, drain [`PeerConnection::poll_transmit`] until `None` (send
///   each datagram from `t.route.local` to `t.route.remote`), then
///   [`PeerConnection::poll_event`] until `None`, then sleep until `poll_timeout()` or the
///   next datagram, whichever comes first.
/// - `now` never goes backwards (an [`Instant`] of a monotonic clock). A timeout handled
///   early, or twice, is harmless; one handled late delays retransmissions by as much.
/// - Bad input from the network is dropped and counted, never an error; the connection's
///   end is one [`RtcEvent::Closed`]; caller mistakes return [`RtcError`].
pub struct PeerConnection {
    certificate: Certificate,
    ice: IceAgent,
    ufrag: String,
    pwd: String,
    dtls: Option<Dtls>,
    dtls_role: Option<Role>,
    channels: DataChannels,
    remote: Option<Remote>,
    remote_sdp: Option<SessionDescription>,
    signaling: SignalingState,
    /// The description set locally and the one before it (for rollback).
    local: Option<Description>,
    /// Whether we made the offer of the current negotiation.
    offerer: bool,
    mid: String,
    session_id: u64,
    session_version: u64,
    /// Local candidates so far, for descriptions made after they were found.
    candidates: Vec<String>,
    gathering_done: bool,
    ice_state: IceState,
    state: ConnectionState,
    closed_by_peer: bool,
    /// Why the connection is ending, once something decided it (the first cause wins).
    ending: Option<CloseReason>,
    /// Whether the connection was ever connected.
    was_connected: bool,
    /// A graceful close is under way; it aborts at this instant.
    closing: Option<Instant>,
    events: VecDeque<RtcEvent>,
    queued: VecDeque<Queued>,
    /// Material for the credentials of ICE restarts.
    rng: SeededRng,
    record: Vec<u8>,
    /// The SCTP packet being sealed.
    plain: Vec<u8>,
    /// RTP and RTCP datagrams that arrived with no media negotiated to take them.
    media_dropped: MediaDropped,
    media: media::MediaState,
    accept_direction: media::Direction,
    accept_raw: bool,
    order: Vec<Section>,
    /// Both descriptions have a data channel section: SCTP runs.
    data_negotiated: bool,
}

/// Datagrams of RTP and RTCP (RFC 7983 §7: first byte 128-191) that were dropped: media is
/// not negotiated yet, so nothing takes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaDropped {
    pub rtp: u64,
    pub rtcp: u64,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("signaling", &self.signaling)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// ICE credentials from `seed` material: 8 and 24 characters of ice-char (RFC 8839 §5.4).
fn credentials(material: &[u8; 32]) -> (String, String) {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text: String = material.iter().map(|b| CHARS[usize::from(b % 64)] as char).collect();
    (text[..8].to_owned(), text[8..32].to_owned())
}

impl PeerConnection {
    /// `seed`: 32 bytes from a CSPRNG (ICE credentials, tie-breaker, SCTP tags and cookies
    /// derive from it).
    pub fn new(now: Instant, config: RtcConfig, seed: [u8; 32]) -> Result<PeerConnection, RtcError> {
        let certificate = match &config.certificate {
            Some(c) => c.clone(),
            None => Certificate::generate().map_err(|e| RtcError::Certificate(e.to_string()))?,
        };
        let mut rng = SeededRng::new(&seed);
        let (ufrag, pwd) = credentials(&rng.next_block());
        let ice_config = IceConfig {
            stun_servers: config.stun_servers.clone(),
            turn_servers: config.turn_servers.clone(),
            ..IceConfig::new(true, &ufrag, &pwd)
        };
        let ice = IceAgent::new(ice_config, rng.next_block())?;
        let defaults = SctpConfig::default();
        let sctp_config = SctpConfig {
            max_receive_message: MAX_MESSAGE_SIZE,
            congestion_control: config.congestion_control.unwrap_or(defaults.congestion_control),
            ..defaults
        };
        let association = Association::new(now, sctp_config, rng.next_block());
        let session = rng.next_block();
        // Parity of in-band stream ids is set for the role we expect (see
        // `create_data_channel`) and fixed when negotiation settles it.
        let mut channels = DataChannels::new(association, false);
        channels.set_initial_receive_credit(config.channel_receive_credit);
        Ok(PeerConnection {
            certificate,
            ice,
            ufrag,
            pwd,
            dtls: None,
            dtls_role: None,
            channels,
            remote: None,
            remote_sdp: None,
            signaling: SignalingState::Stable,
            local: None,
            offerer: false,
            mid: "0".to_owned(),
            session_id: u64::from_be_bytes(session[..8].try_into().expect("8 bytes")) >> 2,
            session_version: 1,
            candidates: Vec::new(),
            gathering_done: false,
            ice_state: IceState::New,
            state: ConnectionState::New,
            closed_by_peer: false,
            ending: None,
            was_connected: false,
            closing: None,
            events: VecDeque::new(),
            queued: VecDeque::new(),
            rng: SeededRng::with_counter(&seed, 10),
            record: vec![0u8; 70_000],
            plain: Vec::new(),
            media_dropped: MediaDropped::default(),
            media: media::MediaState::new(config.bandwidth_probing),
            accept_direction: config.accept_media.unwrap_or(media::Direction::RecvOnly),
            accept_raw: config.accept_raw,
            order: Vec::new(),
            data_negotiated: false,
        })
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        self.certificate.fingerprint()
    }

    /// RTP and RTCP datagrams dropped for want of negotiated media.
    pub fn media_dropped(&self) -> MediaDropped {
        self.media_dropped
    }

    /// SCTP counters and state, for diagnostics.
    pub fn sctp_stats(&self) -> (peerlink_sctp::SctpState, peerlink_sctp::SctpStats) {
        (self.channels.association().state(), self.channels.association().stats())
    }

    /// The SCTP association's smoothed round-trip time, once measured.
    pub fn sctp_rtt(&self) -> Option<std::time::Duration> {
        self.channels.association().rtt()
    }

    pub fn signaling_state(&self) -> SignalingState {
        self.signaling
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.state
    }

    /// Whether our ICE agent is the controlling one (it nominates the pair).
    pub fn is_ice_controlling(&self) -> bool {
        self.ice.is_controlling()
    }

    /// A socket the driver owns (a host candidate, and the base of reflexive and relayed
    /// ones).
    pub fn add_local_address(&mut self, now: Instant, addr: SocketAddr) {
        self.ice.add_host_candidate(now, addr);
        self.pump(now);
    }

    /// Creates a data channel and returns its stream id. The id's parity follows the DTLS
    /// role (client: even, RFC 8832 §6). Before negotiation settles the role, the role we
    /// will most likely get is assumed: an offerer becomes the DTLS server (browsers, aiortc
    /// and we answer `a=setup:active`), an answerer the client. Negotiated channels carry
    /// their own id.
    pub fn create_data_channel(&mut self, now: Instant, config: ChannelConfig) -> Result<u16, RtcError> {
        if self.signaling == SignalingState::Closed {
            return Err(RtcError::Closed);
        }
        if self.dtls_role.is_none() {
            self.channels.set_dtls_client(self.signaling == SignalingState::HaveRemoteOffer);
        }
        Ok(self.channels.create(now, config)?)
    }

    pub fn send(&mut self, now: Instant, channel: u16, data: &[u8], binary: bool) -> Result<(), RtcError> {
        Ok(self.channels.send(now, channel, data, binary)?)
    }

    pub fn buffered_amount(&self, channel: u16) -> usize {
        self.channels.buffered_amount(channel)
    }

    /// Bytes of `channel` the peer has not acknowledged yet (queued or in flight).
    pub fn unacknowledged(&self, channel: u16) -> usize {
        self.channels.unacknowledged(channel)
    }

    pub fn set_buffered_amount_low_threshold(&mut self, channel: u16, bytes: usize) {
        self.channels.set_low_water(channel, bytes);
    }

    pub fn close_channel(&mut self, channel: u16) {
        self.channels.close(channel);
    }

    /// The application consumed `bytes` of `channel`'s messages: as many more may come
    /// (see [`RtcConfig::channel_receive_credit`]). Held messages are delivered at once,
    /// and a closed window is reopened with a window update.
    pub fn add_receive_credit(&mut self, now: Instant, channel: u16, bytes: usize) {
        self.channels.add_receive_credit(channel, bytes);
        self.pump(now);
    }

    pub fn channel_label(&self, channel: u16) -> Option<&str> {
        self.channels.label(channel)
    }

    /// An offer with one data channel section (RFC 8829 §5.2.1).
    pub fn create_offer(&mut self) -> Result<Description, RtcError> {
        if !matches!(self.signaling, SignalingState::Stable | SignalingState::HaveLocalOffer) {
            return Err(RtcError::WrongState("create_offer", self.signaling));
        }
        let sd = self.description(Setup::ActPass, None);
        Ok(Description { kind: SdpType::Offer, sdp: sd.to_string() })
    }

    /// The answer to the remote offer (RFC 8829 §5.3.1): we take the DTLS client role
    /// (`a=setup:active`) when the offer allows it, as browsers do. Audio and video sections
    /// are accepted with the formats we share (see [`supported_codecs`]); sections of other kinds, or
    /// with no format in common, are rejected (port 0).
    pub fn create_answer(&mut self) -> Result<Description, RtcError> {
        if self.signaling != SignalingState::HaveRemoteOffer {
            return Err(RtcError::WrongState("create_answer", self.signaling));
        }
        // A renegotiation keeps the DTLS role the first negotiation settled (RFC 8842 §5.3).
        let setup = match (self.dtls_role, self.remote.as_ref().map(|r| r.setup)) {
            (Some(Role::Client), _) => Setup::Active,
            (Some(Role::Server), _) => Setup::Passive,
            (None, Some(Setup::Active)) => Setup::Passive,
            (None, _) => Setup::Active,
        };
        let remote = self.remote_sdp.clone();
        let sd = self.description(setup, remote.as_ref());
        Ok(Description { kind: SdpType::Answer, sdp: sd.to_string() })
    }

    fn description(&mut self, setup: Setup, offer: Option<&SessionDescription>) -> SessionDescription {
        self.session_version += 1;
        let mut sd = SessionDescription {
            origin: format!("- {} {} IN IP4 127.0.0.1", self.session_id, self.session_version),
            session_name: "-".to_owned(),
            timing: "0 0".to_owned(),
            connection: None,
            lines: Vec::new(),
            attributes: Vec::new(),
            media: Vec::new(),
        };
        match offer {
            None => {
                if self.order.is_empty() {
                    self.order.push(Section::Data);
                }
                // Transceivers not in a section yet get one at the end, with a new mid.
                for i in 0..self.media.transceivers.len() {
                    if self.media.transceivers[i].mid.is_none() && !self.media.transceivers[i].stopped {
                        let mid = self.free_mid();
                        self.media.transceivers[i].mid = Some(mid);
                        self.order.push(Section::Media(i));
                    }
                }
                for section in self.order.clone() {
                    sd.media.push(match section {
                        Section::Data => self.data_section(setup),
                        Section::Media(i) => self.media_section(i, None, setup),
                        Section::Rejected(m) => m,
                    });
                }
            }
            Some(offer) => {
                // One answer section per offered one, in order.
                let mut order = Vec::new();
                for m in &offer.media {
                    let transceiver = m.mid().and_then(|mid| {
                        self.media.transceivers.iter().position(|t| t.mid.as_deref() == Some(mid))
                    });
                    if m.is_datachannel() && m.port != 0 && !order.iter().any(|s| matches!(s, Section::Data))
                    {
                        let mut d = self.data_section(setup);
                        if let Some(mid) = m.mid() {
                            self.mid = mid.to_owned();
                            d.set("mid", Some(mid));
                        }
                        sd.media.push(d);
                        order.push(Section::Data);
                    } else if let Some(i) = transceiver.filter(|_| m.port != 0) {
                        sd.media.push(self.media_section(i, Some(m), setup));
                        order.push(Section::Media(i));
                    } else {
                        let mut rejected = Media {
                            kind: m.kind.clone(),
                            port: 0,
                            proto: m.proto.clone(),
                            formats: m.formats.clone(),
                            connection: Some("IN IP4 0.0.0.0".to_owned()),
                            lines: Vec::new(),
                            attributes: Vec::new(),
                        };
                        if let Some(mid) = m.mid() {
                            rejected.set("mid", Some(mid));
                        }
                        if let Some(i) = transceiver {
                            self.media.transceivers[i].stopped = true;
                        }
                        sd.media.push(rejected.clone());
                        order.push(Section::Rejected(rejected));
                    }
                }
                self.order = order;
            }
        }
        // Candidates go in the first bundled section (the BUNDLE tag's transport).
        if let Some(first) = sd.media.iter_mut().find(|m| m.port != 0) {
            for c in &self.candidates {
                first
                    .attributes
                    .push(Attribute::new("candidate", Some(c.strip_prefix("candidate:").unwrap_or(c))));
            }
            if self.gathering_done {
                first.attributes.push(Attribute::new("end-of-candidates", None));
            }
        }
        let bundle: Vec<&str> = sd.media.iter().filter(|m| m.port != 0).filter_map(|m| m.mid()).collect();
        if !bundle.is_empty() {
            sd.attributes.push(Attribute::new("group", Some(&format!("BUNDLE {}", bundle.join(" ")))));
        }
        sd.attributes.push(Attribute::new("msid-semantic", Some(" WMS")));
        sd
    }

    /// A mid no section uses yet.
    fn free_mid(&self) -> String {
        let used = |mid: &str| {
            self.mid == mid || self.media.transceivers.iter().any(|t| t.mid.as_deref() == Some(mid))
        };
        let n = (0..).find(|n: &usize| !used(&n.to_string())).expect("a free number");
        n.to_string()
    }

    /// ICE and DTLS attributes every bundled section repeats (RFC 8843 §7.1.3 lets them be
    /// identical).
    pub(crate) fn transport_attributes(&self, m: &mut Media, setup: Setup) {
        m.attributes.push(Attribute::new("ice-ufrag", Some(&self.ufrag)));
        m.attributes.push(Attribute::new("ice-pwd", Some(&self.pwd)));
        m.attributes.push(Attribute::new("ice-options", Some("trickle")));
        m.attributes.push(Attribute::new("fingerprint", Some(&self.certificate.fingerprint().to_string())));
        m.attributes.push(Attribute::new("setup", Some(setup.as_str())));
    }

    fn data_section(&self, setup: Setup) -> Media {
        let mut m = Media {
            kind: "application".to_owned(),
            port: 9,
            proto: "UDP/DTLS/SCTP".to_owned(),
            formats: vec!["webrtc-datachannel".to_owned()],
            connection: Some("IN IP4 0.0.0.0".to_owned()),
            lines: Vec::new(),
            attributes: Vec::new(),
        };
        self.transport_attributes(&mut m, setup);
        m.attributes.push(Attribute::new("mid", Some(&self.mid)));
        m.attributes.push(Attribute::new("sctp-port", Some("5000")));
        m.attributes.push(Attribute::new("max-message-size", Some(&MAX_MESSAGE_SIZE.to_string())));
        m
    }
}

mod codecs;
mod media;
mod negotiate;
mod run;
