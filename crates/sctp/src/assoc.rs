//! One SCTP association (RFC 9260, single-homed, over DTLS per RFC 8261), sans-IO: the
//! four-way handshake with an authenticated state cookie (including the simultaneous open
//! WebRTC endpoints do, §5.2.1 and §5.2.4), verification tags, chunk dispatch, delayed
//! SACKs, stream reset (RFC 6525), ABORT and SHUTDOWN. The data path is in `send.rs` and
//! `recv.rs`.

use crate::chunk::{self, ForwardTsn, Init, OutgoingReset, Params, RawChunk, Sack};
use crate::packet::{self, Header, Packet};
use crate::recv::{Message, ReceiveError, Receiver};
use crate::send::{CongestionControl, Reliability, Sender};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use peerlink_proto::{Backoff, BackoffConfig, SeededRng, Transmit};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

mod handshake;
mod heartbeat;
mod reconfig;
mod shutdown;
mod trace;

/// Delayed acknowledgement (§6.2: within 200 ms, never over 500 ms; every second packet at
/// once). 20 ms, as libdatachannel sets usrsctp's: the last packet of an odd-sized flight
/// otherwise waits for the next flight, about an RTT, inflating the sender's RTT samples and
/// stalling a window-limited sender (bench/datachannel-sack.sh: with 200 ms, 90% of DATA
/// packets from libdatachannel on a 40 ms RTT, 1% loss path were SACKed within 39 ms against
/// libdatachannel's own 22-27 ms).
const SACK_DELAY: Duration = Duration::from_millis(20);
/// INIT and COOKIE ECHO attempts before giving up (§16 Max.Init.Retransmits).
const MAX_INIT_ATTEMPTS: u32 = 8;
/// T3 expiries without progress before the peer is considered gone (Association.Max.Retrans).
const MAX_RETRANSMISSIONS: u32 = 10;
const COOKIE_LIFETIME: Duration = Duration::from_secs(60);
/// The Heartbeat Info parameter of HEARTBEAT and HEARTBEAT ACK (RFC 9260 §3.3.5).
const PARAM_HEARTBEAT_INFO: u16 = 1;
/// Error cause "Invalid Stream Identifier" (RFC 9260 §3.3.10.1).
const CAUSE_INVALID_STREAM: u16 = 1;
/// RFC 9260 §3.3.10.12.
const CAUSE_USER_INITIATED_ABORT: u16 = 12;
/// Control chunks a peer can make us queue (ERROR answers) before we stop adding more.
const MAX_CONTROL: usize = 64;
const COOKIE_LEN: usize = 4 * 7 + 2 + 8 + 32;
/// The RTT receive window tuning assumes before any was measured.
const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// Settings of one association.
#[derive(Debug, Clone)]
pub struct SctpConfig {
    /// SCTP ports (`a=sctp-port`; 5000 in practice).
    pub local_port: u16,
    pub remote_port: u16,
    /// Largest packet (it becomes one DTLS record; 1188 leaves room for DTLS, UDP, IPv6).
    pub mtu: usize,
    /// Largest message we accept (`a=max-message-size` we announce).
    pub max_receive_message: usize,
    /// Largest message the peer accepts (its `a=max-message-size`).
    pub max_send_message: usize,
    /// The most bytes of received data we buffer (fragments, messages not yet taken or
    /// held unread): the bound of the auto-tuned receive window, and the a_rwnd of our INIT.
    pub receive_window: usize,
    /// The receive window we advertise at first. It grows, once per round trip, to twice
    /// what the application consumed in one (so to about twice the bandwidth-delay product
    /// of a path the reader keeps up with), never beyond `receive_window`; a reader that
    /// falls behind keeps it small, one that stops reading closes it.
    pub initial_receive_window: usize,
    /// Streams we ask for in each direction.
    pub streams: u16,
    /// How long the association may be idle (nothing in flight) before a HEARTBEAT checks
    /// the peer (RFC 9260 §8.3); None: never. Unanswered heartbeats count like
    /// retransmission timeouts and end the association the same way.
    pub heartbeat_interval: Option<Duration>,
    /// How the sender paces itself to the path (see [`CongestionControl`]).
    pub congestion_control: CongestionControl,
}

impl Default for SctpConfig {
    fn default() -> SctpConfig {
        SctpConfig {
            local_port: 5000,
            remote_port: 5000,
            mtu: 1188,
            max_receive_message: 256 * 1024,
            max_send_message: 256 * 1024,
            receive_window: 4 * 1024 * 1024,
            initial_receive_window: 1024 * 1024,
            streams: 65535,
            heartbeat_interval: Some(Duration::from_secs(30)),
            congestion_control: CongestionControl::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SctpState {
    Closed,
    CookieWait,
    CookieEchoed,
    Established,
    ShutdownSent,
    ShutdownAckSent,
    /// Ended (ABORT, SHUTDOWN COMPLETE or failure); final.
    Ended,
}

/// What the association reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SctpEvent {
    Connected,
    /// The peer reset these of its outgoing streams (our incoming ones).
    IncomingStreamsReset(Vec<u16>),
    /// Our reset of these outgoing streams is done.
    OutgoingStreamsReset(Vec<u16>),
    /// Messages sent on these streams before the association was up were dropped: the peer
    /// takes fewer streams (its MIS). Later sends on them fail with `InvalidStream`.
    StreamsRefused(Vec<u16>),
    /// The association ended (`reason` says why).
    Closed {
        reason: SctpCloseReason,
    },
}

/// Why an association ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SctpCloseReason {
    /// The SHUTDOWN exchange finished (RFC 9260 §9.2); `by_peer`: the peer started it.
    #[error("shut down by {}", if *by_peer { "the peer" } else { "us" })]
    ShutDown { by_peer: bool },
    /// Closed before it was established: there was nothing to shut down.
    #[error("closed before it was established")]
    ClosedBeforeEstablished,
    /// We aborted at the application's request (User-Initiated Abort, §3.3.10.12).
    #[error("aborted")]
    LocalAbort,
    /// The peer sent ABORT; `cause`: the code of its first error cause (§3.3.10), if any.
    #[error("the peer aborted{}", cause.map(|c| format!(" (cause {c})")).unwrap_or_default())]
    PeerAborted { cause: Option<u16> },
    /// INIT, COOKIE ECHO, SHUTDOWN or SHUTDOWN ACK went unanswered (§6.3.3, §9.2).
    #[error("no answer to INIT, COOKIE ECHO, SHUTDOWN or SHUTDOWN ACK")]
    NoAnswer,
    /// DATA went unacknowledged Association.Max.Retrans times in a row (§8.1).
    #[error("peer unreachable: too many retransmissions")]
    TooManyRetransmissions,
    /// HEARTBEATs went unanswered Association.Max.Retrans times in a row (§8.3).
    #[error("peer unreachable: heartbeats unanswered")]
    HeartbeatsUnanswered,
    /// The peer broke the protocol; we aborted.
    #[error("protocol violation: {0}")]
    ProtocolViolation(&'static str),
    /// The peer sent more than we accept; we aborted.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("message of {0} bytes is larger than the peer accepts")]
    TooLarge(usize),
    #[error("the association is closed")]
    Closed,
    #[error("an SCTP message cannot be empty")]
    Empty,
    #[error("stream {0} is beyond the streams negotiated with the peer")]
    InvalidStream(u16),
}

/// Counters for tests and stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SctpStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub bad_packets: u64,
    pub retransmitted_chunks: u64,
    pub sacks_sent: u64,
}

/// What we learned from the peer's INIT or INIT ACK (and keep in the cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    tag: u32,
    initial_tsn: u32,
    a_rwnd: u32,
    forward_tsn: bool,
    reconfig: bool,
    /// The peer's OS and MIS from its INIT (or INIT ACK).
    outbound_streams: u16,
    inbound_streams: u16,
}

/// A queued or outstanding outgoing stream reset.
#[derive(Debug, Clone)]
struct ResetRequest {
    streams: Vec<u16>,
    seq: u32,
    sent_at: Option<Instant>,
}

/// The state and what exists in it (RFC 9260 §4): the peer from COOKIE-ECHOED on, the
/// sender and receiver from ESTABLISHED on. An ended association keeps them: what arrived
/// can still be read, and what was left unacknowledged is still counted.
#[derive(Debug)]
enum State {
    Closed,
    CookieWait,
    CookieEchoed { peer: Peer },
    Established(Up),
    ShutdownSent(Up),
    ShutdownAckSent(Up),
    Ended(Option<Up>),
}

/// An association that is (or was) up.
#[derive(Debug)]
struct Up {
    peer: Peer,
    sender: Sender,
    receiver: Receiver,
}

impl State {
    fn kind(&self) -> SctpState {
        match self {
            State::Closed => SctpState::Closed,
            State::CookieWait => SctpState::CookieWait,
            State::CookieEchoed { .. } => SctpState::CookieEchoed,
            State::Established(_) => SctpState::Established,
            State::ShutdownSent(_) => SctpState::ShutdownSent,
            State::ShutdownAckSent(_) => SctpState::ShutdownAckSent,
            State::Ended(_) => SctpState::Ended,
        }
    }

    fn up(&self) -> Option<&Up> {
        match self {
            State::Established(up) | State::ShutdownSent(up) | State::ShutdownAckSent(up) => Some(up),
            State::Ended(up) => up.as_ref(),
            _ => None,
        }
    }

    fn up_mut(&mut self) -> Option<&mut Up> {
        match self {
            State::Established(up) | State::ShutdownSent(up) | State::ShutdownAckSent(up) => Some(up),
            State::Ended(up) => up.as_mut(),
            _ => None,
        }
    }

    fn peer(&self) -> Option<Peer> {
        match self {
            State::CookieEchoed { peer } => Some(*peer),
            _ => self.up().map(|up| up.peer),
        }
    }

    fn peer_mut(&mut self) -> Option<&mut Peer> {
        match self {
            State::CookieEchoed { peer } => Some(peer),
            _ => self.up_mut().map(|up| &mut up.peer),
        }
    }

    fn sender(&self) -> Option<&Sender> {
        self.up().map(|up| &up.sender)
    }

    fn sender_mut(&mut self) -> Option<&mut Sender> {
        self.up_mut().map(|up| &mut up.sender)
    }

    fn receiver(&self) -> Option<&Receiver> {
        self.up().map(|up| &up.receiver)
    }

    fn receiver_mut(&mut self) -> Option<&mut Receiver> {
        self.up_mut().map(|up| &mut up.receiver)
    }

    /// The next state of a live association (`None` when it is not live: nothing changes).
    fn advance(&mut self, next: fn(Up) -> State) {
        let live = matches!(self, State::Established(_) | State::ShutdownSent(_) | State::ShutdownAckSent(_));
        if !live {
            return;
        }
        if let State::Established(up) | State::ShutdownSent(up) | State::ShutdownAckSent(up) =
            std::mem::replace(self, State::Closed)
        {
            *self = next(up);
        }
    }

    /// Ended, keeping what the association had.
    fn end(&mut self) {
        let up = match std::mem::replace(self, State::Ended(None)) {
            State::Established(up) | State::ShutdownSent(up) | State::ShutdownAckSent(up) => Some(up),
            State::Ended(up) => up,
            _ => None,
        };
        *self = State::Ended(up);
    }
}

/// One SCTP association, sans-IO.
///
/// The calling contract:
/// - Inputs: [`Association::handle_receive`] with each SCTP packet (one DTLS record's
///   payload in WebRTC), [`Association::handle_timeout`] once
///   [`Association::poll_timeout`] is due, and the commands ([`Association::connect`],
///   [`Association::send`], [`Association::reset_streams`], [`Association::close`]).
///   Several inputs in a row are fine.
/// - After a batch of inputs, drain [`Association::poll_transmit`] until `None`, then
///   [`Association::poll_event`] and [`Association::poll_message`]. Messages not taken stay
///   in the receive window; [`Association::hold_received`] keeps taken ones there too.
/// - `now` never goes backwards; a timeout handled early (spuriously) is harmless.
/// - Bad packets are dropped and counted ([`Association::stats`]); the end is one
///   [`SctpEvent::Closed`]; caller mistakes return [`SendError`].
pub struct Association {
    config: SctpConfig,
    state: State,
    my_tag: u32,
    my_initial_tsn: u32,
    cookie_key: [u8; 32],
    rng: SeededRng,
    created: Instant,
    /// Messages sent before the association is up.
    early: Vec<(u16, u32, Bytes, bool, Reliability)>,
    /// INIT or COOKIE ECHO being retried: the packet, attempts, when next.
    t1: Option<T1>,
    /// The application asked for the shutdown (not the peer).
    closed_locally: bool,
    /// Chunks to bundle in the next packet.
    control: VecDeque<Vec<u8>>,
    /// Packets to send as they are (INIT ACK, SHUTDOWN COMPLETE, ABORT).
    lone: VecDeque<Vec<u8>>,
    sack_at: Option<Instant>,
    /// When the next HEARTBEAT is due (or the outstanding one counts as unanswered).
    heartbeat_at: Option<Instant>,
    /// The outstanding HEARTBEAT: its nonce and when it was sent.
    heartbeat: Option<(u64, Instant)>,
    heartbeat_misses: u32,
    /// The RTT the handshake measured, for receive window tuning until the sender has its
    /// own measurement.
    handshake_rtt: Option<Duration>,
    resets: VecDeque<ResetRequest>,
    next_reset_seq: u32,
    /// The sequence number we expect the peer's next reset request to carry.
    peer_reset_seq: Option<u32>,
    /// The last incoming reset request answered, and the answer (for its retransmissions).
    last_reset_result: Option<(u32, u32)>,
    /// The request whose stream reset was answered "in progress": its answer becomes
    /// "performed" once the reset is done.
    deferred_reset_seq: Option<u32>,
    events: VecDeque<SctpEvent>,
    stats: SctpStats,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Association {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Association")
            .field("state", &self.state.kind())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The timer of a lone control packet we repeat until answered: T1-init, T1-cookie and the
/// shutdown timer T2 (RFC 9260 §6.3.3, §9.2; they never run at once), doubling from the
/// RTO up to RTO.max.
#[derive(Debug)]
struct T1 {
    packet: Vec<u8>,
    backoff: Backoff,
    /// The first transmission: with one transmission, its answer times the RTT.
    started: Instant,
}

impl T1 {
    /// `packet` was just queued for its first transmission.
    fn start(packet: Vec<u8>, now: Instant, rto: Duration) -> T1 {
        let config = BackoffConfig {
            initial: rto,
            max: crate::send::RTO_MAX,
            transmissions: None,
            last_wait_factor: None,
        };
        let mut backoff = Backoff::new(config);
        let _ = backoff.on_transmit(now);
        T1 { packet, backoff, started: now }
    }

    /// The RTT its answer, arriving `now`, measures (none after a retransmission: Karn).
    fn rtt(&self, now: Instant) -> Option<Duration> {
        (self.backoff.transmissions() == 1).then(|| now.saturating_duration_since(self.started))
    }
}

impl Association {
    /// `seed` (32 bytes from a CSPRNG) keys the verification tag, initial TSN and cookie.
    pub fn new(now: Instant, config: SctpConfig, seed: [u8; 32]) -> Association {
        let mut a = Association {
            config,
            state: State::Closed,
            my_tag: 0,
            my_initial_tsn: 0,
            cookie_key: [0; 32],
            rng: SeededRng::new(&seed),
            created: now,
            early: Vec::new(),
            t1: None,
            closed_locally: false,
            control: VecDeque::new(),
            lone: VecDeque::new(),
            sack_at: None,
            heartbeat_at: None,
            heartbeat: None,
            heartbeat_misses: 0,
            handshake_rtt: None,
            resets: VecDeque::new(),
            next_reset_seq: 0,
            peer_reset_seq: None,
            last_reset_result: None,
            deferred_reset_seq: None,
            events: VecDeque::new(),
            stats: SctpStats::default(),
            scratch: Vec::new(),
        };
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&a.rng.next_u64().to_be_bytes());
        }
        a.cookie_key = key;
        a.my_tag = (a.rng.next_u64() as u32).max(1);
        a.my_initial_tsn = a.rng.next_u64() as u32;
        a.next_reset_seq = a.my_initial_tsn;
        a
    }

    pub fn state(&self) -> SctpState {
        self.state.kind()
    }

    pub fn is_established(&self) -> bool {
        self.state() == SctpState::Established
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.state.sender().and_then(Sender::srtt)
    }

    /// Bytes queued on all streams and not yet sent.
    pub fn stats(&self) -> SctpStats {
        let mut s = self.stats.clone();
        s.retransmitted_chunks = self.state.sender().map_or(0, |x| x.retransmitted_chunks);
        s
    }

    fn header(&self, tag: u32) -> Header {
        Header {
            source_port: self.config.local_port,
            destination_port: self.config.remote_port,
            verification_tag: tag,
        }
    }

    /// A whole packet with verification tag `tag` holding one chunk of type `typ`.
    fn chunk_packet(&self, tag: u32, typ: u8, value: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        packet::begin(&mut p, &self.header(tag));
        chunk::write_simple(&mut p, typ, 0, value);
        packet::finish(&mut p);
        p
    }

    /// Queues a message. Before the association is up it waits; after it ends it is refused.
    pub fn send(
        &mut self,
        now: Instant,
        stream: u16,
        ppid: u32,
        data: impl Into<Bytes>,
        ordered: bool,
        reliability: Reliability,
    ) -> Result<(), SendError> {
        let data = data.into();
        // §3.3.1: a DATA chunk must carry user data (channels send empty messages as one
        // byte with their own PPID).
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        if data.len() > self.config.max_send_message {
            return Err(SendError::TooLarge(data.len()));
        }
        let outbound = self.outbound_stream_count();
        match &mut self.state {
            State::Ended(_) | State::ShutdownSent(_) | State::ShutdownAckSent(_) => Err(SendError::Closed),
            State::Established(_) if stream >= outbound => Err(SendError::InvalidStream(stream)),
            State::Established(up) => {
                up.sender.enqueue(now, stream, ppid, data, ordered, reliability);
                Ok(())
            }
            State::Closed | State::CookieWait | State::CookieEchoed { .. } => {
                self.early.push((stream, ppid, data, ordered, reliability));
                Ok(())
            }
        }
    }

    /// Streams we may send on: what we asked for, capped by what the peer takes (its MIS);
    /// before the peer is known, what we asked for.
    pub fn outbound_stream_count(&self) -> u16 {
        self.config.streams.min(self.state.peer().map_or(u16::MAX, |p| p.inbound_streams))
    }

    /// Streams the peer may send on: what it asked for (its OS), capped by our MIS.
    pub fn inbound_stream_count(&self) -> u16 {
        self.config.streams.min(self.state.peer().map_or(u16::MAX, |p| p.outbound_streams))
    }

    /// The largest message the peer accepts (its `a=max-message-size`).
    pub fn set_max_send_message(&mut self, bytes: usize) {
        self.config.max_send_message = bytes;
    }

    /// Bytes of `stream` queued and not yet sent.
    pub fn buffered_amount(&self, stream: u16) -> usize {
        match self.state.sender() {
            Some(s) => s.buffered(stream),
            None => self.early.iter().filter(|e| e.0 == stream).map(|e| e.2.len()).sum(),
        }
    }

    /// Messages queued on `stream` with one of `ppids` and not yet started go unordered
    /// from now on. A data channel sends ordered until the peer acknowledged its opening
    /// (RFC 8832 §6.6); what is still queued then need not queue behind every hole of a
    /// lossy path.
    pub fn unorder_queued(&mut self, stream: u16, ppids: &[u32]) {
        if let Some(sender) = self.state.sender_mut() {
            sender.unorder_queued(stream, ppids);
        }
    }

    /// Bytes of `stream` queued or sent and not yet acknowledged by the peer (what a sender
    /// uses to report delivery, where `buffered_amount` tells what is still to be sent).
    pub fn unacknowledged(&self, stream: u16) -> usize {
        match self.state.sender() {
            Some(s) => s.unacknowledged(stream),
            None => self.buffered_amount(stream),
        }
    }

    #[must_use]
    pub fn poll_message(&mut self) -> Option<Message> {
        self.state.receiver_mut()?.poll_message()
    }

    /// `bytes` of messages taken with [`Association::poll_message`] are still held by the
    /// application, unread: they count against the receive window as if never taken, so a
    /// reader that does not keep up closes the peer's window. `held: false` releases them
    /// (and announces the reopened window when it had closed).
    pub fn hold_received(&mut self, bytes: usize, held: bool) {
        if let Some(r) = self.state.receiver_mut() {
            r.hold(bytes, held);
        }
    }

    /// The receive window we would advertise now.
    pub fn receive_window(&self) -> Option<u32> {
        self.state.receiver().map(Receiver::a_rwnd)
    }

    /// The auto-tuned window the advertised one is what is left of (see
    /// [`SctpConfig::initial_receive_window`]).
    pub fn receive_window_size(&self) -> Option<usize> {
        self.state.receiver().map(Receiver::window)
    }

    /// Bytes of received data buffered (including messages held unread): the memory the
    /// receive window accounts for, never more than [`SctpConfig::receive_window`].
    pub fn receive_buffered(&self) -> usize {
        self.state.receiver().map_or(0, Receiver::buffered)
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<SctpEvent> {
        self.events.pop_front()
    }

    fn rto(&self) -> Duration {
        self.state.sender().map_or(crate::send::RTO_INITIAL, |s| s.rto)
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state() == SctpState::Ended {
            return None;
        }
        let reset = self.resets.front().and_then(|r| r.sent_at).map(|t| t + self.rto());
        [
            self.t1.as_ref().and_then(|t| t.backoff.deadline()),
            self.sack_at,
            self.heartbeat_at,
            self.state.sender().and_then(Sender::poll_timeout),
            reset,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state() == SctpState::Ended {
            return;
        }
        if let Some(t1) = self.t1.as_mut().filter(|t| t.backoff.is_due(now)) {
            // T1 gives up after Max.Init.Retransmits, T2 (the shutdown timers) after
            // Association.Max.Retrans (RFC 9260 §9.2, §16).
            let limit = match self.state.kind() {
                SctpState::ShutdownSent | SctpState::ShutdownAckSent => MAX_RETRANSMISSIONS,
                _ => MAX_INIT_ATTEMPTS,
            };
            if t1.backoff.transmissions() >= limit {
                return self.end(SctpCloseReason::NoAnswer);
            }
            let _ = t1.backoff.on_transmit(now);
            self.lone.push_back(t1.packet.clone());
        }
        if self.sack_at.is_some_and(|t| now >= t) {
            self.sack_at = None;
            if let Some(r) = self.state.receiver_mut() {
                r.sack_now = true;
            }
        }
        if let Some(sender) = self.state.sender_mut() {
            sender.on_timeout(now);
            if sender.timeouts > MAX_RETRANSMISSIONS {
                return self.abort_with(SctpCloseReason::TooManyRetransmissions);
            }
        }
        if self.heartbeat_at.is_some_and(|t| now >= t) {
            if self.heartbeat.take().is_some() {
                self.heartbeat_misses += 1;
                if self.heartbeat_misses > MAX_RETRANSMISSIONS {
                    return self.abort_with(SctpCloseReason::HeartbeatsUnanswered);
                }
            }
            self.send_heartbeat(now);
        }
        let rto = self.rto();
        if let Some(r) = self.resets.front_mut() {
            if r.sent_at.is_some_and(|t| now >= t + rto) {
                r.sent_at = None; // sent again by poll_transmit
            }
        }
    }

    /// Appends the next packet to send to `buf`, if any (call until `None`). A packet is
    /// built in place when `buf` is empty (what a driver that seals each packet in its own
    /// record passes), and copied in otherwise.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        if let Some(p) = self.lone.pop_front() {
            self.stats.packets_sent += 1;
            trace::packet("out", &p);
            buf.extend_from_slice(&p);
            return Some(Transmit { route: (), len: p.len() });
        }
        if buf.is_empty() {
            let len = self.build_packet(now, buf)?;
            return Some(Transmit { route: (), len });
        }
        let mut p = std::mem::take(&mut self.scratch);
        let built = self.build_packet(now, &mut p);
        buf.extend_from_slice(&p);
        self.scratch = p;
        built.map(|len| Transmit { route: (), len })
    }

    /// Writes the next packet of chunks into `p` (cleared first; chunk padding counts from
    /// its start) and returns its length; `None` leaves `p` empty.
    fn build_packet(&mut self, now: Instant, p: &mut Vec<u8>) -> Option<usize> {
        p.clear();
        let peer = self.state.peer()?;
        // After the peer's SHUTDOWN (ShutdownAckSent) what we still have outstanding goes
        // out before our SHUTDOWN ACK.
        if !matches!(
            self.state(),
            SctpState::Established
                | SctpState::ShutdownSent
                | SctpState::ShutdownAckSent
                | SctpState::CookieEchoed
        ) {
            return None;
        }
        packet::begin(p, &self.header(peer.tag));
        while let Some(c) = self.control.front() {
            if p.len() + c.len() > self.config.mtu && p.len() > packet::HEADER {
                break;
            }
            let c = self.control.pop_front().expect("front exists");
            p.extend_from_slice(&c);
        }
        if let Some(r) = self.state.receiver_mut() {
            if r.sack_now {
                r.write_sack(p);
                self.sack_at = None;
                self.stats.sacks_sent += 1;
            }
        }
        if let Some(sender) = self.state.sender_mut() {
            if sender.forward_tsn_due {
                sender.write_forward_tsn(p);
            }
        }
        self.write_reset(now, p);
        if self.state() != SctpState::CookieEchoed {
            if let Some(sender) = self.state.sender_mut() {
                sender.fill(now, p);
            }
        }
        if p.len() == packet::HEADER {
            p.clear();
            return None;
        }
        packet::finish(p);
        self.stats.packets_sent += 1;
        trace::packet("out", p);
        Some(p.len())
    }

    /// A packet from the peer (the payload of one DTLS record).
    pub fn handle_receive(&mut self, now: Instant, packet: &[u8]) {
        trace::packet("in", packet);
        if self.state() == SctpState::Ended {
            self.answer_after_end(packet);
            return;
        }
        let Ok(parsed) = Packet::parse(packet) else {
            self.stats.bad_packets += 1;
            return;
        };
        if parsed.header.destination_port != self.config.local_port {
            self.stats.bad_packets += 1;
            return;
        }
        self.stats.packets_received += 1;
        let tag = parsed.header.verification_tag;
        let mut had_data = false;
        for raw in parsed.chunks() {
            let Ok(raw) = raw else {
                self.stats.bad_packets += 1;
                break;
            };
            if !self.tag_ok(tag, &raw) {
                self.stats.bad_packets += 1;
                return;
            }
            match raw.typ {
                chunk::DATA => {
                    had_data = true;
                    if !self.on_data(raw) {
                        return;
                    }
                }
                chunk::INIT => return self.on_init(now, raw),
                chunk::INIT_ACK => self.on_init_ack(now, raw),
                chunk::SACK => {
                    if let (Ok(sack), Some(sender)) = (Sack::parse(raw), self.state.sender_mut()) {
                        sender.on_sack(now, &sack);
                        self.maybe_shutdown(now);
                        self.maybe_shutdown_ack(now);
                    }
                }
                chunk::HEARTBEAT => {
                    let mut c = Vec::new();
                    chunk::write_simple(&mut c, chunk::HEARTBEAT_ACK, 0, raw.value);
                    self.control.push_back(c);
                }
                chunk::HEARTBEAT_ACK => self.on_heartbeat_ack(now, raw.value),
                chunk::ERROR => {}
                chunk::ABORT => {
                    let cause = raw.value.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    return self.end(SctpCloseReason::PeerAborted { cause });
                }
                chunk::SHUTDOWN => {
                    // §9.2: its Cumulative TSN Ack acknowledges our data like a SACK would.
                    if let (Some(value), Some(sender)) = (raw.value.get(..4), self.state.sender_mut()) {
                        sender.on_cumulative_ack(now, u32::from_be_bytes(value.try_into().expect("4 bytes")));
                    }
                    self.on_shutdown(now);
                }
                chunk::SHUTDOWN_ACK => self.on_shutdown_ack(),
                chunk::SHUTDOWN_COMPLETE => return self.end(self.shut_down()),
                chunk::COOKIE_ECHO => self.on_cookie_echo(now, tag, raw),
                chunk::COOKIE_ACK => {
                    if let State::CookieEchoed { peer } = self.state {
                        self.handshake_rtt = self.t1.take().and_then(|t| t.rtt(now));
                        self.establish(now, peer);
                    }
                }
                chunk::FORWARD_TSN => {
                    if let (Ok(f), Some(r)) = (ForwardTsn::parse(raw), self.state.receiver_mut()) {
                        r.forward_tsn(f.new_cumulative_tsn, f.streams());
                    }
                }
                chunk::RECONFIG => self.on_reconfig(raw),
                other => {
                    // §3.2: the two high bits say what to do with an unknown chunk.
                    if other & 0x40 != 0 {
                        let mut cause = Vec::new();
                        let mut unknown = Vec::new();
                        chunk::write_chunk(&mut unknown, raw.typ, raw.flags, |o| {
                            o.extend_from_slice(raw.value)
                        });
                        chunk::write_param(&mut cause, 6, &unknown);
                        let mut c = Vec::new();
                        chunk::write_simple(&mut c, chunk::ERROR, 0, &cause);
                        self.control.push_back(c);
                    }
                    if other & 0x80 == 0 {
                        break;
                    }
                }
            }
        }
        if let Some(r) = self.state.receiver_mut() {
            for streams in r.take_performed_resets() {
                if let (Some((seq, _)), Some(deferred)) = (self.last_reset_result, self.deferred_reset_seq) {
                    if seq == deferred {
                        self.last_reset_result = Some((seq, chunk::RESET_PERFORMED));
                    }
                }
                self.events.push_back(SctpEvent::IncomingStreamsReset(streams));
            }
        }
        if had_data && self.state() == SctpState::ShutdownSent && self.t1.is_some() {
            // §9.2: each packet with DATA in SHUTDOWN-SENT is answered with SHUTDOWN (its
            // cumulative TSN acknowledges it) and restarts T2: the peer is still sending.
            self.t1 = None;
            self.maybe_shutdown(now);
        }
        if had_data {
            let Some(peer) = self.state.peer() else { return };
            let header = self.header(peer.tag);
            let rtt =
                self.state.sender().and_then(Sender::srtt).or(self.handshake_rtt).unwrap_or(DEFAULT_RTT);
            if let Some(r) = self.state.receiver_mut() {
                r.tune(now, rtt);
                r.unacked_packets += 1;
                // A COOKIE ACK waiting in `control` goes first (§5.1): the SACK then rides
                // with it in `poll_transmit`.
                if (r.unacked_packets >= 2 || r.sack_now) && self.control.is_empty() {
                    // Every second packet (or at once for a gap or duplicate, §6.7), and
                    // right away: a driver that hands us a batch of datagrams still gets
                    // one SACK per two packets out, which is what the sender's congestion
                    // window grows by.
                    let mut p = Vec::with_capacity(64);
                    packet::begin(&mut p, &header);
                    r.write_sack(&mut p);
                    packet::finish(&mut p);
                    self.lone.push_back(p);
                    self.sack_at = None;
                    self.stats.sacks_sent += 1;
                } else if r.unacked_packets >= 2 {
                    r.sack_now = true;
                } else if self.sack_at.is_none() {
                    self.sack_at = Some(now + SACK_DELAY);
                }
            }
        }
    }

    /// §8.5 verification tag rules.
    fn tag_ok(&self, tag: u32, raw: &RawChunk<'_>) -> bool {
        let t_bit = raw.flags & 1 != 0;
        match raw.typ {
            chunk::INIT => tag == 0,
            chunk::ABORT | chunk::SHUTDOWN_COMPLETE if t_bit => {
                self.state.peer().is_some_and(|p| p.tag == tag)
            }
            // Checked against the cookie's own tag.
            chunk::COOKIE_ECHO => true,
            _ => tag == self.my_tag,
        }
    }

    fn on_data(&mut self, raw: RawChunk<'_>) -> bool {
        let inbound = self.inbound_stream_count();
        let Some(r) = self.state.receiver_mut() else { return true };
        let Ok(d) = chunk::Data::parse(raw) else {
            self.abort_with(SctpCloseReason::ProtocolViolation("DATA chunk without user data"));
            return false;
        };
        if d.stream >= inbound {
            // §6.5: acknowledge it, discard it, and say why in an ERROR chunk.
            r.discard(d.tsn);
            let mut cause = [0u8; 8];
            cause[..2].copy_from_slice(&CAUSE_INVALID_STREAM.to_be_bytes());
            cause[2..4].copy_from_slice(&8u16.to_be_bytes());
            cause[4..6].copy_from_slice(&d.stream.to_be_bytes());
            let mut c = Vec::new();
            chunk::write_simple(&mut c, chunk::ERROR, 0, &cause);
            if self.control.len() < MAX_CONTROL {
                self.control.push_back(c);
            }
            return true;
        }
        if let Err(e) = r.data(d.tsn, d.stream, d.ssn, d.ppid, d.flags, d.payload) {
            self.abort_with(e.into());
            return false;
        }
        true
    }
}

impl peerlink_proto::Machine for Association {
    type Route = ();
    type Event = SctpEvent;

    fn handle_receive(&mut self, now: Instant, (): (), packet: &[u8]) {
        Association::handle_receive(self, now, packet);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Association::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        Association::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<SctpEvent> {
        Association::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Association::poll_timeout(self)
    }
}
