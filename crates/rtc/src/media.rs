//! Audio and video: transceivers (RFC 8829 §3.4.1 and §5), their SDP sections, and the RTP
//! path of each: SRTP (keys from DTLS-SRTP), routing of received packets by SSRC, then by
//! the mid header extension (RFC 9143 §15) and payload type, RTX unwrapping (RFC 4588),
//! frame assembly behind a reorder window, keyframe requests, retransmissions from a send
//! history, and RTCP. Simulcast both ways (RFC 8853, RFC 8851): received layers by rid, and
//! layers we offer to send, each with its own SSRC, RTX SSRC and history.

use super::*;
use crate::codecs::{self, CodecParams};
use peerlink_media::{
    Codec, Depacketizer, DepacketizerConfig, Frame, KeyframeRequests, NackConfig, NackGenerator, Pacer,
    Packetizer, PacketizerConfig, Payloads, ReceiveStats, RtxSender, SendHistory, SendStats,
};
use peerlink_rtp::rtcp::{Fir, Nack, Pli, ReceiverReport, RtcpPacket, Sdes, SdesChunk};
use peerlink_rtp::{ExtensionMap, PayloadPatch, RtpHeader, RtpPacket, Serial16, Serial32, SrtpSession};
use std::collections::HashMap;
use std::time::Duration;

/// `audio` or `video`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }

    fn parse(s: &str) -> Option<MediaKind> {
        match s {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// A transceiver's direction (RFC 8829 §5.2.2, `RTCRtpTransceiverDirection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn of(m: &peerlink_sdp::Media) -> Direction {
        for a in &m.attributes {
            match a.name.as_str() {
                "sendrecv" => return Direction::SendRecv,
                "sendonly" => return Direction::SendOnly,
                "recvonly" => return Direction::RecvOnly,
                "inactive" => return Direction::Inactive,
                _ => {}
            }
        }
        Direction::SendRecv
    }

    fn new(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction as the other side sees it.
    pub fn reverse(self) -> Direction {
        Direction::new(self.receives(), self.sends())
    }
}

/// Identifies a transceiver of a [`PeerConnection`] (its index; stable for the connection's
/// life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransceiverId(pub usize);

/// How a transceiver is set up ([`PeerConnection::add_transceiver`]).
#[derive(Debug, Clone)]
pub struct TrackConfig {
    /// The formats we offer or accept, preferred first ([`codecs::supported_codecs`] filtered
    /// by the caller); empty: all we support for the kind.
    pub codecs: Vec<CodecParams>,
    /// The `msid` stream and track ids of what we send.
    pub stream_id: String,
    pub track_id: String,
    /// Deliver received media as raw RTP packets ([`RtcEvent::Rtp`]) instead of frames.
    pub raw: bool,
    /// How long a missing packet may hold back the frames after it before they are given
    /// up on (the jitter buffer's depth in time; retransmissions must come back within it).
    pub max_delay: Duration,
    /// How many sequence numbers a packet may arrive late and still count.
    pub reorder_depth: u16,
    /// Simulcast layers we send (RFC 8853), by RTP stream id (`a=rid`, RFC 8851), lowest
    /// first; empty: no simulcast. Video only; 1 to 16 alphanumeric characters each, at most
    /// [`MAX_SEND_LAYERS`], no two alike. Layer `k` of the write paths is `send_rids[k]`.
    pub send_rids: Vec<String>,
}

/// The most simulcast layers a transceiver sends.
pub const MAX_SEND_LAYERS: usize = 4;

/// Checks a list of send rids ([`TrackConfig::send_rids`]).
fn check_send_rids(kind: MediaKind, rids: &[String]) -> Result<(), RtcError> {
    let bad = |why: String| Err(RtcError::BadSendRids(why));
    if rids.is_empty() {
        return Ok(());
    }
    if kind != MediaKind::Video {
        return bad("simulcast is for video only".to_owned());
    }
    if rids.len() > MAX_SEND_LAYERS {
        return bad(format!("{} layers, at most {MAX_SEND_LAYERS}", rids.len()));
    }
    for (i, rid) in rids.iter().enumerate() {
        // RFC 8851 §10 allows more, but a one-byte header element holds 16 bytes, and
        // browsers send alphanumeric ids.
        if !(1..=16).contains(&rid.len()) || !rid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return bad(format!("rid {rid:?} is not 1 to 16 alphanumeric characters"));
        }
        if rids[..i].contains(rid) {
            return bad(format!("rid {rid:?} appears twice"));
        }
    }
    Ok(())
}

impl TrackConfig {
    pub fn new(kind: MediaKind) -> TrackConfig {
        TrackConfig {
            codecs: Vec::new(),
            stream_id: String::new(),
            track_id: String::new(),
            raw: false,
            max_delay: match kind {
                MediaKind::Audio => Duration::from_millis(150),
                MediaKind::Video => Duration::from_millis(500),
            },
            reorder_depth: match kind {
                MediaKind::Audio => 64,
                MediaKind::Video => 1024,
            },
            send_rids: Vec::new(),
        }
    }
}

/// What an application can see of a transceiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransceiverInfo {
    pub id: TransceiverId,
    pub kind: MediaKind,
    pub mid: Option<String>,
    /// What we asked for.
    pub direction: Direction,
    /// What the last negotiation settled (`None` before one).
    pub current_direction: Option<Direction>,
    /// The negotiated formats, the first being the one we send.
    pub codecs: Vec<CodecParams>,
    /// The remote side's `msid` stream id, when it sends.
    pub remote_stream_id: Option<String>,
    /// The simulcast layers received (`a=rid` ids, in the offer's order); empty without
    /// simulcast. [`RtcEvent::Rtp`]'s `layer` indexes this.
    pub rids: Vec<String>,
    /// The negotiated RTP header extensions: (id, URI).
    pub extensions: Vec<(u8, String)>,
    /// The layers we send (indexes of [`TrackConfig::send_rids`]): those the peer's answer
    /// accepted; `[0]` without simulcast.
    pub sent_layers: Vec<usize>,
}

/// Counters of one transceiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub frames_received: u64,
    pub keyframes_received: u64,
    /// Packets we retransmitted (answering NACKs).
    pub retransmissions_sent: u64,
    /// Retransmitted packets received (RTX unwrapped).
    pub retransmissions_received: u64,
    /// Copies of packets already received (a sender's redundant RTX padding, a repair that
    /// crossed its original) that a raw section did not pass on.
    pub duplicates_dropped: u64,
    pub nacks_received: u64,
    /// Sequence numbers the NACKs received asked for.
    pub nacked_packets: u64,
    /// Packets asked for that had left the send history (too old).
    pub nacked_not_in_history: u64,
    /// Packets asked for again within a round trip of their last retransmission (not
    /// resent: the first one is still on its way).
    pub nacked_too_soon: u64,
    /// Packets asked for that were not resent because retransmissions had taken their share
    /// of the bandwidth estimate.
    pub nacked_over_budget: u64,
    /// Packets sent again because the peer asked for a key frame the source cannot make
    /// ([`PeerConnection::resend_since`]; not in `retransmissions_sent`).
    pub keyframe_resends: u64,
    pub nacks_sent: u64,
    pub plis_received: u64,
    pub plis_sent: u64,
    /// Frames given up on (holes that were never filled).
    pub frames_dropped: u64,
}

/// How many sent packets each sending stream keeps for retransmission at most (about five
/// seconds of video at 1 Mbit/s); none older than [`HISTORY_AGE`] is kept.
const HISTORY: usize = 512;
/// How long a sent packet is kept for retransmission: the memory a stream's history takes
/// follows its rate (an SFU keeps one history per subscriber and forwarded track).
const HISTORY_AGE: Duration = Duration::from_secs(2);
/// The least time between two keyframe requests for a stream.
const PLI_INTERVAL: Duration = Duration::from_millis(300);
/// RTCP report interval (RFC 3550 §6.2 with the minimum WebRTC implementations use).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Remote SSRCs we keep routes for (two per section is the usual; simulcast adds a few).
const MAX_SSRCS: usize = 256;
/// The share of the bandwidth estimate (in %) retransmissions may take, over
/// [`RTX_BUDGET_WINDOW`], when probing is on (the sender follows the estimate). On a path
/// that just got narrower, the receiver asks for much of what its queue dropped; resent all
/// at once ahead of new media, repairs kept the queue full, more was lost and asked for
/// again, and a forwarded layer's new key frame waited behind them (an SFU subscriber froze
/// for seconds: tests/e2e/sfu-ratelimit.sh). What is over budget is not resent; the
/// receiver asks again or gives up on the frame. The bucket holds two full packets at least.
const RTX_SHARE: u64 = 50;
const RTX_BUDGET_WINDOW: Duration = Duration::from_millis(500);
const RTX_BUDGET_MIN_BYTES: f64 = 2.0 * 1300.0;
/// Buffers of sent packets kept for the next ones (one a packet goes out and one comes in).
const SPENT: usize = 4;
/// RTP payload room: 1200-byte packets leave room for TURN, SRTP and IPv6 on a 1280 MTU.
const MAX_RTP_PACKET: usize = 1200;

#[derive(Debug)]
struct SendStream {
    /// The simulcast layer's RTP stream id, when the transceiver sends layers.
    rid: Option<String>,
    /// The peer accepted the layer (always for layer 0): it is sent.
    active: bool,
    ssrc: u32,
    seq: Serial16,
    rtx: RtxSender,
    packetizer: Option<(u8, Packetizer)>,
    /// Sent packets by sequence number, for retransmissions.
    history: SendHistory,
    stats: SendStats,
    /// The RTP timestamp of the last packet sent (padding carries it).
    last_timestamp: u32,
}

impl SendStream {
    /// A stream with SSRCs and first sequence numbers from `block` (random).
    fn new(block: &[u8; 32], rid: Option<String>) -> SendStream {
        let word = |i: usize| u32::from_be_bytes(block[i..i + 4].try_into().expect("4 bytes"));
        SendStream {
            rid,
            active: true,
            ssrc: word(0),
            seq: Serial16(block[16] as u16 | (u16::from(block[17]) << 8)),
            rtx: RtxSender {
                ssrc: word(4),
                payload_type: 0,
                next_seq: Serial16(block[18] as u16 | (u16::from(block[19]) << 8)),
            },
            packetizer: None,
            history: SendHistory::new(HISTORY, HISTORY_AGE),
            stats: SendStats::new(),
            last_timestamp: 0,
        }
    }
}

#[derive(Debug)]
struct RecvStream {
    /// The simulcast layer's RTP stream id (`a=rid`), when the section has layers.
    rid: Option<String>,
    /// The remote's media SSRC (signalled, or learned from the first packet).
    ssrc: Option<u32>,
    rtx_ssrc: Option<u32>,
    /// Depacketizer of the payload type in use.
    depacketizer: Option<(u8, Depacketizer)>,
    /// Since when frames are held back behind a hole.
    stalled_since: Option<Instant>,
    /// RFC 3550 reception statistics (made with the clock rate of the first packet).
    stats: Option<ReceiveStats>,
    nack: NackGenerator,
    /// A keyframe is wanted (a gap, or a first frame that was none).
    want_keyframe: bool,
    got_keyframe: bool,
    keyframes: KeyframeRequests,
    fir_seq: u8,
}

impl RecvStream {
    fn new() -> RecvStream {
        RecvStream {
            rid: None,
            ssrc: None,
            rtx_ssrc: None,
            depacketizer: None,
            stalled_since: None,
            stats: None,
            nack: NackGenerator::new(NackConfig::default()),
            want_keyframe: false,
            got_keyframe: false,
            keyframes: KeyframeRequests::new(PLI_INTERVAL),
            fir_seq: 0,
        }
    }

    /// No timer runs: no stall, no hole asked for, no key frame request held.
    fn is_idle(&self) -> bool {
        self.stalled_since.is_none() && self.nack.missing_count() == 0 && !self.keyframes.is_pending()
    }
}

#[derive(Debug)]
pub(crate) struct Transceiver {
    pub(crate) kind: MediaKind,
    pub(crate) mid: Option<String>,
    pub(crate) direction: Direction,
    pub(crate) current: Option<Direction>,
    config: TrackConfig,
    /// What we offered (to read the answer against).
    offered: Vec<CodecParams>,
    codecs: Vec<CodecParams>,
    extensions: Vec<(u8, String)>,
    ext_map: ExtensionMap,
    remote_stream_id: Option<String>,
    /// The section is rejected (port 0) for good.
    pub(crate) stopped: bool,
    /// `direction` changed since the last description we made.
    direction_changed: bool,
    /// What we send: one stream, or one per simulcast layer (never empty).
    send: Vec<SendStream>,
    /// The peer takes our layers by rid: packets carry the rid extension (RFC 8852).
    send_simulcast: bool,
    /// What we receive: one stream, or one per simulcast layer (never empty).
    recv: Vec<RecvStream>,
    announced: bool,
    stats: MediaStats,
}

impl Transceiver {
    fn info(&self, id: TransceiverId) -> TransceiverInfo {
        TransceiverInfo {
            id,
            kind: self.kind,
            mid: self.mid.clone(),
            direction: self.direction,
            current_direction: self.current,
            codecs: self.codecs.clone(),
            remote_stream_id: self.remote_stream_id.clone(),
            rids: self.recv.iter().filter_map(|r| r.rid.clone()).collect(),
            extensions: self.extensions.clone(),
            sent_layers: self.send.iter().enumerate().filter(|(_, s)| s.active).map(|(k, _)| k).collect(),
        }
    }

    fn our_codecs(&self) -> Vec<CodecParams> {
        if self.config.codecs.is_empty() {
            codecs::supported_codecs(self.kind.as_str())
        } else {
            self.config.codecs.clone()
        }
    }

    fn is_rtx_pt(&self, pt: u8) -> Option<&CodecParams> {
        self.codecs.iter().find(|c| c.rtx == Some(pt))
    }
}

/// Media state of a connection.
#[derive(Debug, Default)]
pub(crate) struct MediaState {
    pub(crate) transceivers: Vec<Transceiver>,
    pub(crate) srtp: Option<SrtpSession>,
    /// Plain RTP and RTCP packets waiting to be protected and sent.
    outgoing: VecDeque<(bool, Vec<u8>)>,
    /// Buffers of packets sent, for the next ones written (at most [`SPENT`]): a steady
    /// stream allocates and frees none.
    spent: Vec<Vec<u8>>,
    /// Remote SSRC → (transceiver, layer, is RTX).
    by_ssrc: HashMap<u32, (usize, usize, bool)>,
    /// Our media SSRCs → the first (transceiver, layer) sending under it (they are random:
    /// two could be the same).
    send_ssrcs: HashMap<u32, (usize, usize)>,
    /// The transceivers, in order, whose receive streams may have a timer running (a stall,
    /// holes to NACK, a held key frame request): those that received a packet or asked for a
    /// key frame since `media_timeout` last found them idle. The timers look at these only:
    /// an SFU's subscriber sends on a hundred sections and receives on few, and the timers
    /// are polled after every packet it is sent.
    ///
    /// This, `by_ssrc` and `send_ssrcs` hold indexes into `transceivers`, and `send_ssrcs`
    /// our send SSRCs: both are only ever appended to (a stopped transceiver keeps its
    /// place) and a send stream keeps its SSRC. A change to either must renew these.
    recv_timers: Vec<usize>,
    /// The ids of the first section's transport-wide sequence and mid extensions (what
    /// packets are stamped with, and routed by), kept as sections settle.
    twcc_ext: Option<u8>,
    mid_ext: Option<u8>,
    cname: String,
    next_report: Option<Instant>,
    /// The SSRC our receiver reports go out under when nothing is sent.
    receiver_ssrc: u32,
    payloads: Payloads,
    plain: Vec<u8>,
    /// Malformed or unroutable media from the network.
    pub(crate) dropped: u64,
    /// Wall clock of `epoch` as NTP (RFC 3550 §4), for sender reports.
    ntp_epoch: Option<(Instant, u64)>,
    /// Transport-wide CC feedback of what we receive (so the sender's bandwidth estimator
    /// works), once a section negotiated transport-cc.
    twcc: Option<peerlink_media::TwccRecorder>,
    /// The next transport-wide sequence number we send (stamped as packets leave the pacer,
    /// so they go out in number order).
    twcc_seq: u16,
    /// The send-side estimate of the path's rate, from the peer's transport-wide feedback.
    bwe: Option<peerlink_media::BandwidthEstimator>,
    /// RTP packets leave through the pacer (RTCP and audio ahead of video).
    pacer: Option<Pacer<Vec<u8>>>,
    /// Bandwidth probes asked for ([`RtcConfig::bandwidth_probing`](crate::RtcConfig)).
    pub(crate) probing: bool,
    /// Padding packets of probe clusters: when each is due, its cluster, the plain packet.
    probes: VecDeque<(Instant, u32, Vec<u8>)>,
    /// The cluster whose padding has started to go out.
    probe_active: Option<u32>,
    /// Bytes of media written in the last second (one entry per instant), to set the pacing
    /// rate.
    sent_window: VecDeque<(Instant, usize)>,
    /// The sum of `sent_window`'s bytes (kept, not summed per packet).
    sent_window_bytes: u64,
    rtt: Option<Duration>,
    /// Bytes retransmissions may still take, and when that was last topped up (see
    /// [`RTX_SHARE`]).
    rtx_budget: Option<(Instant, f64)>,
}

impl MediaState {
    pub(crate) fn new(probing: bool) -> MediaState {
        MediaState { probing, ..MediaState::default() }
    }

    /// Transceiver `i`'s receive streams may have started a timer.
    fn arm_recv(&mut self, i: usize) {
        if let Err(at) = self.recv_timers.binary_search(&i) {
            self.recv_timers.insert(at, i);
        }
    }

    /// The stream sending under `ssrc` (the first, if several do) and whether the peer
    /// takes it; `None`: no stream of ours.
    fn send_stream(&self, ssrc: u32) -> Option<(usize, usize)> {
        let &(i, layer) = self.send_ssrcs.get(&ssrc)?;
        if self.transceivers[i].send[layer].active {
            return Some((i, layer));
        }
        // Not taken: a later stream with the same SSRC may be.
        self.transceivers
            .iter()
            .enumerate()
            .find_map(|(i, t)| t.send.iter().position(|s| s.ssrc == ssrc && s.active).map(|layer| (i, layer)))
    }

    /// The pacer, made at the rate and burst of now if there is none yet.
    fn pacer(&mut self, now: Instant) -> &mut Pacer<Vec<u8>> {
        if self.pacer.is_none() {
            self.pacer = Some(Pacer::new(PACING_FLOOR_BPS));
            self.update_pacer(now);
        }
        self.pacer.as_mut().expect("made above")
    }

    /// Sets the pacer's rate and burst from what was written in the last second, the
    /// bandwidth estimate and the probes going out: after every write, and when feedback
    /// moves the estimate.
    fn update_pacer(&mut self, now: Instant) {
        // Kept while `now - at <= 1 s`, that is `at >= now - 1 s` (one subtraction a call).
        let cutoff = now.checked_sub(Duration::from_secs(1));
        while let Some(&(at, old)) = self.sent_window.front() {
            if cutoff.is_none_or(|c| at >= c) {
                break;
            }
            self.sent_window.pop_front();
            self.sent_window_bytes -= old as u64;
        }
        debug_assert_eq!(
            self.sent_window_bytes,
            self.sent_window.iter().map(|&(_, b)| b as u64).sum::<u64>()
        );
        let Some(pacer) = self.pacer.as_mut() else { return };
        let written = self.sent_window_bytes * 8;
        let rate = written * PACING_FACTOR;
        let bwe = self.bwe.as_ref();
        // Right after the path showed it is full (losses or a growing delay cut the
        // estimate), while less than what was written in the last second fits in it.
        let fell = bwe.is_some_and(|bwe| {
            bwe.last_fall().is_some_and(|at| now.saturating_duration_since(at) < PACE_AFTER_FALL)
                && bwe.target_bitrate() < written
        });
        // With probing the estimate stands for the path (not only for what is sent): the
        // floor comes down to 2.5 x it, so a key frame does not overflow a slow path's queue.
        let (floor, cap) = match bwe.filter(|_| self.probing) {
            Some(bwe) => {
                let target = bwe.target_bitrate();
                // When the path is full (`fell`), its queue is: a burst (the new, lower
                // layer's key frame an SFU switched to) would be dropped there and wait
                // for repair behind the queue again. Sent at the estimate, or at what the
                // path was seen to deliver if less (the estimate lags a path that suddenly
                // carries less), it waits here instead (at most MAX_QUEUE_TIME: the pacer
                // then speeds up). (An acknowledged rate under half the estimate says more
                // about gaps in the feedback than about the path: then the estimate alone.)
                let cap = fell.then(|| {
                    let acked = bwe.acknowledged_bitrate().filter(|&a| a >= target / 2);
                    acked.map_or(target, |a| target.min(a))
                });
                (PACING_FLOOR_BPS.min(target.saturating_mul(5) / 2), cap)
            }
            None => (PACING_FLOOR_BPS, None),
        };
        let rate = rate.max(floor);
        let rate = cap.map_or(rate, |cap| rate.min(cap));
        pacer.set_rate(now, rate);
        // The burst: PACING_BURST, but with probing (the estimate stands for the path) no
        // more than that long at the estimate; the short default while the path is full or a
        // probe cluster goes out (media in its place would leave all at once, and the probe
        // measure nothing). (Without probing the estimate only follows what is sent, from
        // 300 kbit/s up: it says nothing of the path.)
        let burst = if fell || !self.probes.is_empty() {
            peerlink_media::pacer::BURST
        } else {
            let share = bwe
                .filter(|_| self.probing)
                .map_or(1.0, |bwe| (bwe.target_bitrate() as f64 / rate.max(1) as f64).min(1.0));
            // (In whole ms: the rate moves with every packet written, the burst need not.)
            let burst = PACING_BURST.mul_f64(share).max(peerlink_media::pacer::BURST);
            Duration::from_millis(burst.as_millis() as u64)
        };
        if pacer.burst() != burst {
            pacer.set_burst(now, burst);
        }
    }
}

/// One packet to send, before the header extensions are added.
struct Outgoing<'a> {
    payload_type: u8,
    marker: bool,
    seq: Serial16,
    timestamp: u32,
    payload: &'a [u8],
    /// RFC 6464's element, put in when the peer takes the extension (audio only).
    audio_level: Option<AudioLevel>,
    /// Bytes of the payload to change in this packet (a forwarder's rewrite).
    patch: PayloadPatch,
}

/// Pacing: this many times the rate media is written at, and never below the floor (a key
/// frame leaves over a few frame intervals instead of at once).
const PACING_FACTOR: u64 = 3;
const PACING_FLOOR_BPS: u64 = 1_500_000;
/// What may leave at once, in time at the pacing rate: a whole frame of a steady stream (a
/// frame of the SFU's forwarding goes out as it came, not spread, and not one wake-up per
/// packet), a key frame in a few steps. Right after the path showed it is full (below),
/// the pacer's short default instead, so the burst does not overflow the path's queue.
const PACING_BURST: Duration = Duration::from_millis(40);
/// How long after the bandwidth estimate fell for losses or delay what is sent is paced at
/// the estimate (when that is less than what was written in the last second).
const PACE_AFTER_FALL: Duration = Duration::from_secs(1);
/// Padding bytes in a probe packet: the most an RTP packet's padding count can say
/// (RFC 3550 §5.1).
const PROBE_PADDING: u8 = 255;
/// Probe packets waiting at most (a cluster at 10 Mbit/s is about 70).
const MAX_PROBE_PACKETS: usize = 500;

/// The current NTP time from the system clock (32.32 fixed point since 1900).
fn ntp_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000)
}

fn ntp_at(epoch: (Instant, u64), now: Instant) -> u64 {
    let d = now.saturating_duration_since(epoch.0);
    epoch.1 + (d.as_secs() << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

impl PeerConnection {
    /// Adds a transceiver (`addTransceiver`); the next offer carries its section. Returns its id.
    pub fn add_transceiver(
        &mut self,
        kind: MediaKind,
        direction: Direction,
        config: TrackConfig,
    ) -> Result<TransceiverId, RtcError> {
        if self.signaling == SignalingState::Closed {
            return Err(RtcError::Closed);
        }
        check_send_rids(kind, &config.send_rids)?;
        let id = self.new_transceiver(kind, direction, config);
        self.check_negotiation_needed();
        Ok(id)
    }

    /// Whether a negotiation is needed: a transceiver is in no section yet, or its direction
    /// changed since the last one.
    pub fn negotiation_needed(&self) -> bool {
        self.media.transceivers.iter().any(|t| (!t.stopped && t.mid.is_none()) || t.direction_changed)
    }

    /// Emits [`RtcEvent::NegotiationNeeded`] when one is needed and the connection can start
    /// one: stable, after a first negotiation (the first offer carries everything anyway).
    pub(crate) fn check_negotiation_needed(&mut self) {
        if self.signaling == SignalingState::Stable && self.remote.is_some() && self.negotiation_needed() {
            self.events.push_back(RtcEvent::NegotiationNeeded);
        }
    }

    pub(crate) fn new_transceiver(
        &mut self,
        kind: MediaKind,
        direction: Direction,
        config: TrackConfig,
    ) -> TransceiverId {
        let block = self.rng.next_block();
        let word = |i: usize| u32::from_be_bytes(block[i..i + 4].try_into().expect("4 bytes"));
        let mut config = config;
        if config.stream_id.is_empty() {
            config.stream_id = format!("peerlink-{:08x}", word(8));
        }
        if config.track_id.is_empty() {
            config.track_id = format!("{}-{:08x}", kind.as_str(), word(12));
        }
        let t = Transceiver {
            kind,
            mid: None,
            direction,
            current: None,
            config,
            offered: Vec::new(),
            codecs: Vec::new(),
            extensions: Vec::new(),
            ext_map: ExtensionMap::default(),
            remote_stream_id: None,
            stopped: false,
            direction_changed: false,
            send: vec![SendStream::new(&block, None)],
            send_simulcast: false,
            recv: vec![RecvStream::new()],
            announced: false,
            stats: MediaStats::default(),
        };
        if self.media.cname.is_empty() {
            self.media.cname = format!("peerlink{:08x}", word(20));
            self.media.receiver_ssrc = word(24);
        }
        let mut t = t;
        if let Some(first) = t.config.send_rids.first() {
            t.send[0].rid = Some(first.clone());
        }
        for rid in t.config.send_rids.iter().skip(1) {
            let block = self.rng.next_block();
            t.send.push(SendStream::new(&block, Some(rid.clone())));
        }
        let i = self.media.transceivers.len();
        for (layer, s) in t.send.iter().enumerate() {
            self.media.send_ssrcs.entry(s.ssrc).or_insert((i, layer));
        }
        self.media.transceivers.push(t);
        TransceiverId(i)
    }

    /// Changes what a transceiver does (`RTCRtpTransceiver.direction`); takes effect with the
    /// next negotiation.
    pub fn set_direction(&mut self, id: TransceiverId, direction: Direction) -> Result<(), RtcError> {
        let t = self.media.transceivers.get_mut(id.0).ok_or(RtcError::NoTransceiver)?;
        if t.direction != direction {
            t.direction = direction;
            t.direction_changed = true;
            self.check_negotiation_needed();
        }
        Ok(())
    }

    /// Stops a transceiver for good (`RTCRtpTransceiver.stop()`): nothing more is sent or
    /// received on it, and the next negotiation rejects its section (port 0).
    pub fn stop_transceiver(&mut self, id: TransceiverId) -> Result<(), RtcError> {
        let t = self.media.transceivers.get_mut(id.0).ok_or(RtcError::NoTransceiver)?;
        if !t.stopped {
            t.stopped = true;
            t.current = Some(Direction::Inactive);
            // A section in no description yet just never appears; one that was negotiated
            // needs an offer that rejects it.
            if t.mid.is_some() {
                t.direction_changed = true;
                if self.signaling == SignalingState::Stable && self.remote.is_some() {
                    self.events.push_back(RtcEvent::NegotiationNeeded);
                }
            }
        }
        Ok(())
    }

    pub fn transceiver(&self, id: TransceiverId) -> Option<TransceiverInfo> {
        self.media.transceivers.get(id.0).map(|t| t.info(id))
    }

    pub fn transceivers(&self) -> Vec<TransceiverInfo> {
        self.media.transceivers.iter().enumerate().map(|(i, t)| t.info(TransceiverId(i))).collect()
    }

    pub fn media_stats(&self, id: TransceiverId) -> Option<MediaStats> {
        self.media.transceivers.get(id.0).map(|t| t.stats)
    }

    /// Sends one encoded frame (an Opus packet, a VP8/VP9 picture, an H.264 access unit in
    /// Annex B form, an AV1 temporal unit) with its RTP timestamp, in the negotiated format.
    pub fn write_frame(
        &mut self,
        now: Instant,
        id: TransceiverId,
        timestamp: u32,
        frame: &[u8],
    ) -> Result<(), RtcError> {
        self.write_frame_as(now, id, None, timestamp, frame)
    }

    /// [`PeerConnection::write_frame`] in the first negotiated format of `codec` (`None`: the
    /// first negotiated format): to forward frames received in one codec of several.
    pub fn write_frame_as(
        &mut self,
        now: Instant,
        id: TransceiverId,
        codec: Option<Codec>,
        timestamp: u32,
        frame: &[u8],
    ) -> Result<(), RtcError> {
        self.write_frame_layer_as(now, id, 0, codec, timestamp, frame)
    }

    /// [`PeerConnection::write_frame`] on simulcast layer `layer` (an index of
    /// [`TrackConfig::send_rids`]). A layer the peer did not accept gives
    /// [`RtcError::LayerNotSent`] (nothing is sent; the caller may ignore it).
    pub fn write_frame_layer(
        &mut self,
        now: Instant,
        id: TransceiverId,
        layer: usize,
        timestamp: u32,
        frame: &[u8],
    ) -> Result<(), RtcError> {
        self.write_frame_layer_as(now, id, layer, None, timestamp, frame)
    }

    fn write_frame_layer_as(
        &mut self,
        now: Instant,
        id: TransceiverId,
        layer: usize,
        codec: Option<Codec>,
        timestamp: u32,
        frame: &[u8],
    ) -> Result<(), RtcError> {
        if self.signaling == SignalingState::Closed || self.is_over() {
            return Err(RtcError::Closed);
        }
        let m = &mut self.media;
        let t = m.transceivers.get_mut(id.0).ok_or(RtcError::NoTransceiver)?;
        if !t.current.is_some_and(Direction::sends) || t.stopped {
            return Err(RtcError::NotSending);
        }
        if !t.send.get(layer).is_some_and(|s| s.active) {
            return Err(RtcError::LayerNotSent(layer));
        }
        let rid_len = t.send[layer].rid.as_ref().filter(|_| t.send_simulcast).map_or(0, |r| r.len() + 1);
        let codec = match codec {
            None => t.codecs.first(),
            Some(c) => t.codecs.iter().find(|p| p.codec == c),
        }
        .ok_or(RtcError::CodecNotNegotiated)?
        .clone();
        // RFC 8843 §15: a mid travels in a one-byte header element (at most 16 bytes);
        // a longer one is not sent in packets (the peer routes by SSRC then).
        let mid_ext = t.ext_map.mid.zip(t.mid.clone()).filter(|(_, mid)| (1..=16).contains(&mid.len()));
        let s = &mut t.send[layer];
        if s.packetizer.as_ref().is_none_or(|(pt, _)| *pt != codec.payload_type) {
            let overhead = 12 + mid_ext.as_ref().map_or(0, |(_, mid)| 4 + mid.len() + 3) + 3 + rid_len;
            let config = PacketizerConfig {
                max_payload: MAX_RTP_PACKET.saturating_sub(overhead),
                initial_picture_id: s.seq.0 & 0x7fff,
                h264_mode: codec.h264_mode(),
            };
            s.packetizer = Some((codec.payload_type, Packetizer::new(codec.codec, config)));
        }
        let (_, packetizer) = s.packetizer.as_mut().expect("set above");
        packetizer.packetize(frame, &mut m.payloads).map_err(RtcError::Packetize)?;
        let payloads = std::mem::take(&mut m.payloads);
        let mut result = Ok(());
        for (payload, last) in payloads.iter() {
            let seq = self.media.transceivers[id.0].send[layer].seq;
            let out = Outgoing {
                payload_type: codec.payload_type,
                marker: last,
                seq,
                timestamp,
                payload,
                audio_level: None,
                patch: PayloadPatch::default(),
            };
            result = self.send_rtp(now, id, layer, out);
            if result.is_err() {
                break;
            }
            let s = &mut self.media.transceivers[id.0].send[layer];
            s.seq = s.seq.wrapping_add(1);
        }
        self.media.payloads = payloads;
        self.media.transceivers[id.0].stats.frames_sent += 1;
        result
    }

    /// Forwards one RTP packet received on another connection (what an SFU does): its
    /// payload, marker bit and `codec` go out on `id` in the format negotiated for that
    /// codec, with `seq` and `timestamp` as given (the caller keeps them continuous across
    /// the sources it switches between) and our own SSRC and header extensions. Padding is
    /// dropped; the packet is kept for retransmission like any other.
    pub fn write_rtp(
        &mut self,
        now: Instant,
        id: TransceiverId,
        codec: Codec,
        packet: &[u8],
        seq: u16,
        timestamp: u32,
    ) -> Result<(), RtcError> {
        self.write_rtp_layer(now, id, 0, codec, packet, PayloadPatch::default(), seq, timestamp, None)
    }

    /// [`PeerConnection::write_rtp`] on simulcast layer `layer` (an index of
    /// [`TrackConfig::send_rids`]; `seq` is the layer's own), with the audio level (RFC 6464)
    /// the packet is to carry when the peer takes that extension on an audio section: an SFU
    /// passes on what the publisher's packet said, so that receivers (another SFU, a
    /// recorder) can tell who speaks. (The publisher's own header extensions are not copied:
    /// their ids are the publisher's.) `patch` changes bytes of the payload in what is sent
    /// (`packet` itself is left as it is: a forwarder shares one packet among its
    /// subscribers). A layer the peer did not accept gives [`RtcError::LayerNotSent`].
    #[allow(clippy::too_many_arguments)]
    pub fn write_rtp_layer(
        &mut self,
        now: Instant,
        id: TransceiverId,
        layer: usize,
        codec: Codec,
        packet: &[u8],
        patch: PayloadPatch,
        seq: u16,
        timestamp: u32,
        audio_level: Option<AudioLevel>,
    ) -> Result<(), RtcError> {
        if self.signaling == SignalingState::Closed || self.is_over() {
            return Err(RtcError::Closed);
        }
        let p = RtpPacket::parse(packet).map_err(|_| RtcError::BadRtp)?;
        let t = self.media.transceivers.get(id.0).ok_or(RtcError::NoTransceiver)?;
        let payload_type =
            t.codecs.iter().find(|c| c.codec == codec).ok_or(RtcError::CodecNotNegotiated)?.payload_type;
        let out = Outgoing {
            payload_type,
            marker: p.marker(),
            seq: Serial16(seq),
            timestamp,
            payload: p.payload(),
            audio_level,
            patch,
        };
        self.send_rtp(now, id, layer, out)?;
        let t = &mut self.media.transceivers[id.0];
        t.send[layer].seq = Serial16(seq).wrapping_add(1);
        if p.marker() || t.kind == MediaKind::Audio {
            t.stats.frames_sent += 1;
        }
        Ok(())
    }

    /// Puts one packet on the wire through the history and the pacer.
    fn send_rtp(
        &mut self,
        now: Instant,
        id: TransceiverId,
        layer: usize,
        out: Outgoing<'_>,
    ) -> Result<(), RtcError> {
        let m = &mut self.media;
        let t = m.transceivers.get_mut(id.0).ok_or(RtcError::NoTransceiver)?;
        if !t.current.is_some_and(Direction::sends) || t.stopped {
            return Err(RtcError::NotSending);
        }
        if !t.send.get(layer).is_some_and(|s| s.active) {
            return Err(RtcError::LayerNotSent(layer));
        }
        // RFC 8843 §15: a mid travels in a one-byte header element (at most 16 bytes);
        // a longer one is not sent in packets (the peer routes by SSRC then).
        let mid_ext = t.ext_map.mid.zip(t.mid.as_ref()).filter(|(_, mid)| (1..=16).contains(&mid.len()));
        let header = RtpHeader {
            marker: out.marker,
            payload_type: out.payload_type,
            sequence_number: out.seq,
            timestamp: Serial32(out.timestamp),
            ssrc: t.send[layer].ssrc,
            ..Default::default()
        };
        let mut packet = m.spent.pop().unwrap_or_default();
        packet.clear();
        // Exactly: a reused buffer grown the usual way doubles, and waits so in the pacer.
        packet.reserve_exact(out.payload.len() + 32);
        // On the stack: a Vec here was two allocations per packet, a few % of an SFU's CPU.
        // Room for the four elements below (mid, transport-wide number, rid, audio level);
        // one more needs a larger array.
        let mut ext: [(u8, &[u8]); 4] = [(0, &[]); 4];
        let mut count = 0;
        if let Some((id, mid)) = mid_ext {
            ext[count] = (id, mid.as_bytes());
            count += 1;
        }
        if let Some(id) = t.ext_map.transport_cc {
            // Its number is stamped as it leaves the pacer.
            ext[count] = (id, &[0, 0]);
            count += 1;
        }
        // RFC 8853 §5.1 / RFC 8852 §3: each layer's packets name it by rid (no a=ssrc lines
        // are signalled; the receiver learns the SSRC from this). Its RTX copies carry the
        // same element, renamed to the repaired rid (`wrap_for_resend`).
        let rid_ext = t.ext_map.rid.filter(|_| t.send_simulcast).zip(t.send[layer].rid.as_ref());
        if let Some((id, rid)) = rid_ext {
            ext[count] = (id, rid.as_bytes());
            count += 1;
        }
        let level = out.audio_level.filter(|_| t.kind == MediaKind::Audio).map(|l| l.encode());
        if let Some((id, level)) = t.ext_map.audio_level.zip(level.as_ref()) {
            ext[count] = (id, level);
            count += 1;
        }
        header.encode(&ext[..count], out.payload, 0, &mut packet).map_err(|_| RtcError::NotSending)?;
        if !out.patch.is_empty() {
            // (No padding: the payload ends the packet.)
            let at = packet.len() - out.payload.len();
            out.patch.apply(&mut packet[at..]);
        }
        let s = &mut t.send[layer];
        s.history.store(now, out.seq, &packet);
        s.stats.on_packet(now, out.timestamp, out.payload.len());
        s.last_timestamp = out.timestamp;
        t.stats.packets_sent += 1;
        t.stats.bytes_sent += packet.len() as u64;
        let bytes = packet.len();
        // The pacing rate follows what is written (and the bandwidth estimate).
        // Packets written at the same instant (a frame's, an SFU's batch) leave the window
        // together: one entry.
        match m.sent_window.back_mut() {
            Some((at, sum)) if *at == now => *sum += bytes,
            _ => m.sent_window.push_back((now, bytes)),
        }
        m.sent_window_bytes += bytes as u64;
        let audio = t.kind == MediaKind::Audio;
        let pacer = m.pacer(now);
        if audio {
            pacer.enqueue_priority(now, packet.len(), packet);
        } else {
            pacer.enqueue(now, packet.len(), packet);
        }
        m.update_pacer(now);
        m.next_report.get_or_insert(now + Duration::from_millis(200));
        Ok(())
    }

    /// Asks the sender of what `id` receives for a key frame (PLI, RFC 4585 §6.3.1), at most
    /// once per 300 ms.
    pub fn request_keyframe(&mut self, now: Instant, id: TransceiverId) {
        let layers = self.media.transceivers.get(id.0).map_or(0, |t| t.recv.len());
        for layer in 0..layers {
            self.request_keyframe_layer(now, id, layer);
        }
    }

    /// Nothing sent so far on `id` will be retransmitted: a forwarder that switched what it
    /// sends on `id` to another source (a simulcast layer, at its key frame) tells so. The
    /// receiver starts over at that key frame, and repairs of the old source would only
    /// take the path's room from it (on a path that just got narrower, a lot).
    /// What of it still waits in the pacer goes too (there the pacer may hold a good part of
    /// a second of the old source in front of the new key frame). Its media packets become
    /// padding-only packets with the same headers (a receiver sees no gap in the sequence
    /// numbers before the key frame, which it could not have repaired); its retransmissions
    /// are dropped.
    pub fn forget_sent(&mut self, id: TransceiverId) {
        if let Some(t) = self.media.transceivers.get_mut(id.0) {
            for s in &mut t.send {
                s.history.clear();
            }
            let ssrcs: Vec<(u32, u32)> = t.send.iter().map(|s| (s.ssrc, s.rtx.ssrc)).collect();
            if let Some(pacer) = self.media.pacer.as_mut() {
                pacer.edit(|packet, len| {
                    let Some(of) = packet.get(8..12).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                    else {
                        return Some(len);
                    };
                    if ssrcs.iter().any(|&(_, rtx)| rtx == of) {
                        return None;
                    }
                    if !ssrcs.iter().any(|&(ssrc, _)| ssrc == of) {
                        return Some(len);
                    }
                    let Ok(parsed) = RtpPacket::parse(packet) else { return Some(len) };
                    let header = parsed.payload().as_ptr() as usize - packet.as_ptr() as usize;
                    packet.truncate(header);
                    // Padding (RFC 3550 §5.1: the last byte counts the padding), no marker.
                    packet[0] |= 0x20;
                    packet[1] &= 0x7f;
                    packet.push(1);
                    Some(packet.len())
                });
            }
        }
    }

    /// [`PeerConnection::request_keyframe`] for one simulcast layer (an index of
    /// [`TransceiverInfo::rids`]).
    pub fn request_keyframe_layer(&mut self, now: Instant, id: TransceiverId, layer: usize) {
        if let Some(t) = self.media.transceivers.get_mut(id.0).filter(|t| layer < t.recv.len()) {
            t.recv[layer].want_keyframe = true;
            Self::maybe_pli(&mut self.media.outgoing, t, layer, now);
            self.media.arm_recv(id.0);
        }
    }

    /// Asks for a key frame now, or when the rate limit allows (see `media_timeout`).
    fn maybe_pli(outgoing: &mut VecDeque<(bool, Vec<u8>)>, t: &mut Transceiver, layer: usize, now: Instant) {
        let r = &mut t.recv[layer];
        if t.kind != MediaKind::Video || r.ssrc.is_none() || !r.keyframes.request(now) {
            return;
        }
        Self::send_pli(outgoing, t, layer);
    }

    fn send_pli(outgoing: &mut VecDeque<(bool, Vec<u8>)>, t: &mut Transceiver, layer: usize) {
        let sender = t.send[0].ssrc;
        let Some(media_ssrc) = t.recv[layer].ssrc else { return };
        let mut out = Vec::new();
        let pli_ok = t.codecs.iter().any(|c| c.has_feedback("nack pli"));
        let fir_ok = t.codecs.iter().any(|c| c.has_feedback("ccm fir"));
        if pli_ok || !fir_ok {
            let _ = Pli { sender_ssrc: sender, media_ssrc }.encode(&mut out);
        } else {
            let r = &mut t.recv[layer];
            r.fir_seq = r.fir_seq.wrapping_add(1);
            let _ = Fir { sender_ssrc: sender, entries: vec![(media_ssrc, r.fir_seq)] }.encode(&mut out);
        }
        t.stats.plis_sent += 1;
        outgoing.push_back((true, out));
    }

    /// The connection is over: what waits to be sent is dropped (nothing will send it).
    pub(crate) fn drop_media_queues(&mut self) {
        self.media.outgoing.clear();
        self.media.pacer = None;
    }

    /// DTLS is up: SRTP keys for media.
    pub(crate) fn start_srtp(&mut self, now: Instant, keys: Option<peerlink_dtls::SrtpKeys>) {
        self.media.next_report = Some(now + Duration::from_millis(500));
        let (Some(keys), Some(role)) = (keys, self.dtls_role) else { return };
        let k = peerlink_rtp::DtlsSrtpKeys {
            profile: &keys.profile,
            client_key: &keys.client_key,
            client_salt: &keys.client_salt,
            server_key: &keys.server_key,
            server_salt: &keys.server_salt,
        };
        let role = match role {
            Role::Client => peerlink_rtp::DtlsRole::Client,
            Role::Server => peerlink_rtp::DtlsRole::Server,
        };
        match SrtpSession::from_dtls(&k, role, peerlink_rtp::SrtpConfig::default()) {
            Ok(s) => self.media.srtp = Some(s),
            Err(e) => tracing::warn!(%e, "SRTP keys unusable; media will not flow"),
        }
    }

    /// An SRTP or SRTCP datagram from the selected pair.
    pub(crate) fn handle_media(&mut self, now: Instant, data: &[u8]) {
        let Some(srtp) = self.media.srtp.as_mut() else {
            let counter = match peerlink_rtp::is_rtcp(data) {
                true => &mut self.media_dropped.rtcp,
                false => &mut self.media_dropped.rtp,
            };
            *counter += 1;
            return;
        };
        let mut plain = std::mem::take(&mut self.media.plain);
        plain.clear();
        let rtcp = peerlink_rtp::is_rtcp(data);
        let ok = match rtcp {
            true => srtp.unprotect_rtcp(data, &mut plain).is_ok(),
            false => srtp.unprotect_rtp(data, &mut plain).is_ok(),
        };
        if ok {
            self.handle_plain(now, rtcp, &plain);
        } else if rtcp {
            self.media_dropped.rtcp += 1;
        } else {
            self.media_dropped.rtp += 1;
        }
        self.media.plain = plain;
    }

    /// A packet after SRTP: RTCP to the feedback handlers, RTP to its transceiver.
    fn handle_plain(&mut self, now: Instant, rtcp: bool, plain: &[u8]) {
        if rtcp {
            self.handle_rtcp(now, plain);
        } else {
            match RtpPacket::parse(plain) {
                Ok(p) => self.handle_rtp(now, &p),
                Err(_) => self.media.dropped += 1,
            }
        }
    }

    /// For fuzzing the media path past SRTP: fixed SRTP keys (so timers and what we send
    /// run), then `data` as if it had been unprotected.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fuzz_plain_media(&mut self, now: Instant, data: &[u8]) {
        if self.media.srtp.is_none() {
            self.media.srtp = fixed_srtp();
        }
        self.handle_plain(now, peerlink_rtp::is_rtcp(data), data);
    }

    /// Which transceiver a packet belongs to, and whether it is RTX: by SSRC, else by the mid
    /// extension, else by payload type when only one receiving section has it.
    fn route(&mut self, p: &RtpPacket<'_>) -> Option<(usize, usize, bool)> {
        if let Some(r) = self.media.by_ssrc.get(&p.ssrc()) {
            return Some(*r);
        }
        let m = &mut self.media;
        if m.by_ssrc.len() >= MAX_SSRCS {
            // SSRCs are the peer's to pick: a peer inventing them cannot grow the map.
            return None;
        }
        let mid_id = m.mid_ext;
        let mut found = None;
        if let Some(id) = mid_id {
            if let Some(mid) = p.extensions().get(id) {
                // A mid names the section, or nothing we take (then the packet is dropped).
                let mid = std::str::from_utf8(mid).ok()?;
                found =
                    Some(m.transceivers.iter().position(|t| t.mid.as_deref() == Some(mid) && !t.stopped)?);
            }
        }
        if found.is_none() {
            let pt = p.payload_type();
            let mut candidates = m.transceivers.iter().enumerate().filter(|(_, t)| {
                !t.stopped
                    && t.current.is_some_and(Direction::receives)
                    && t.codecs.iter().any(|c| c.payload_type == pt || c.rtx == Some(pt))
            });
            found = candidates.next().map(|(i, _)| i).filter(|_| candidates.next().is_none());
        }
        let i = found?;
        let t = &mut m.transceivers[i];
        let rtx = t.is_rtx_pt(p.payload_type()).is_some();
        // Simulcast: the rid (RTX: the repaired rid) extension names the layer (RFC 8852);
        // a new SSRC without one cannot be placed.
        let layer = if t.recv[0].rid.is_some() {
            let ext = if rtx { t.ext_map.repaired_rid } else { t.ext_map.rid };
            let rid = p.extensions().get(ext?).and_then(|d| std::str::from_utf8(d).ok())?;
            t.recv.iter().position(|r| r.rid.as_deref() == Some(rid))?
        } else {
            0
        };
        let r = &mut t.recv[layer];
        if rtx {
            // One RTX stream per layer: another SSRC claiming to repair it is dropped.
            if r.rtx_ssrc.is_some_and(|s| s != p.ssrc()) {
                return None;
            }
            r.rtx_ssrc = Some(p.ssrc());
        } else {
            // A new SSRC on the layer (the sender restarted its stream): start over.
            if let Some(old) = r.ssrc.filter(|s| *s != p.ssrc()) {
                m.by_ssrc.remove(&old);
                *r = RecvStream { rtx_ssrc: r.rtx_ssrc, rid: r.rid.take(), ..RecvStream::new() };
            }
            r.ssrc = Some(p.ssrc());
        }
        m.by_ssrc.insert(p.ssrc(), (i, layer, rtx));
        Some((i, layer, rtx))
    }

    fn handle_rtp(&mut self, now: Instant, p: &RtpPacket<'_>) {
        let Some((i, layer, rtx)) = self.route(p) else {
            self.media.dropped += 1;
            return;
        };
        let m = &mut self.media;
        m.arm_recv(i);
        let t = &mut m.transceivers[i];
        if !t.current.is_some_and(Direction::receives) {
            m.dropped += 1;
            return;
        }
        if let Some(id) = t.ext_map.transport_cc {
            if let Some(seq) =
                p.extensions().get(id).and_then(|d| peerlink_rtp::ext::TransportSequence::decode(d).ok())
            {
                let recorder =
                    m.twcc.get_or_insert_with(|| peerlink_media::TwccRecorder::new(m.receiver_ssrc));
                recorder.set_media_ssrc(p.ssrc());
                recorder.on_packet(now, seq.0);
            }
        }
        // RTX (RFC 4588 §4): the original sequence number leads the payload.
        let mut restored = Vec::new();
        let packet = if rtx {
            let Some(original) = t.is_rtx_pt(p.payload_type()).map(|c| c.payload_type) else { return };
            let Some(ssrc) = t.recv[layer].ssrc else { return };
            // An RTX packet with no payload is padding (bandwidth probing); other errors are
            // bad input. Either way there is nothing to restore.
            if peerlink_media::unwrap_rtx(p, ssrc, original, &mut restored).is_err() {
                return;
            }
            t.stats.retransmissions_received += 1;
            match RtpPacket::parse(&restored) {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            *p
        };
        t.stats.packets_received += 1;
        t.stats.bytes_received += packet.as_bytes().len() as u64;
        let clock = t
            .codecs
            .iter()
            .find(|c| c.payload_type == packet.payload_type())
            .map_or(90_000, |c| c.clock_rate);
        let nack = t.codecs.iter().any(|c| c.has_feedback("nack"));
        let r = &mut t.recv[layer];
        if !rtx {
            r.stats.get_or_insert_with(|| ReceiveStats::new(clock)).on_packet(
                now,
                packet.sequence_number(),
                packet.timestamp().0,
            );
        }
        let fresh = !nack || r.nack.on_packet(now, packet.sequence_number(), rtx);
        if nack && r.nack.needs_keyframe() {
            r.want_keyframe = true;
        }
        if t.config.raw {
            // A forwarder would send a copy on as it came: libwebrtc fills its padding and
            // probes with RTX copies of packets sent before, which would reach the
            // subscribers of a low layer at several times the layer's rate.
            if !fresh {
                t.stats.duplicates_dropped += 1;
                return;
            }
            let packet = packet.as_bytes().to_vec();
            self.events.push_back(RtcEvent::Rtp { id: TransceiverId(i), layer, packet });
            return;
        }
        // Frames come from one stream: the first layer of a simulcast section.
        if layer != 0 {
            return;
        }
        let pt = packet.payload_type();
        let Some(codec) = t.codecs.iter().find(|c| c.payload_type == pt).map(|c| c.codec) else {
            m.dropped += 1;
            return;
        };
        if t.recv[0].depacketizer.as_ref().is_none_or(|(p, _)| *p != pt) {
            let config = DepacketizerConfig { reorder_depth: t.config.reorder_depth };
            t.recv[0].depacketizer = Some((pt, Depacketizer::new(codec, config)));
        }
        let (_, d) = t.recv[0].depacketizer.as_mut().expect("set above");
        d.handle_packet(&packet);
        Self::drain_frames(&mut self.events, &mut m.outgoing, t, i, now, codec);
    }

    fn drain_frames(
        events: &mut VecDeque<RtcEvent>,
        outgoing: &mut VecDeque<(bool, Vec<u8>)>,
        t: &mut Transceiver,
        i: usize,
        now: Instant,
        codec: Codec,
    ) {
        let Some((_, d)) = t.recv[0].depacketizer.as_mut() else { return };
        let mut emitted = false;
        let mut frames: Vec<Frame> = Vec::new();
        while let Some(f) = d.poll_frame() {
            frames.push(f);
        }
        let hole = d.has_hole();
        let dropped = d.stats().frames_dropped;
        t.stats.frames_dropped = dropped;
        for frame in frames {
            emitted = true;
            let r = &mut t.recv[0];
            if frame.keyframe {
                r.want_keyframe = false;
                r.got_keyframe = true;
                r.keyframes.on_keyframe();
                t.stats.keyframes_received += 1;
            } else if t.kind == MediaKind::Video && (frame.gap_before || !r.got_keyframe) {
                // A decoder cannot use it: a reference was lost, or there was none yet.
                r.want_keyframe = true;
            }
            t.stats.frames_received += 1;
            events.push_back(RtcEvent::Frame { id: TransceiverId(i), codec, frame });
        }
        // The time limit runs from when a hole holds frames back (not while a frame is still
        // arriving), and again after each frame that got past one.
        let r = &mut t.recv[0];
        if !hole || emitted {
            r.stalled_since = None;
        }
        if hole {
            r.stalled_since.get_or_insert(now);
        }
        if r.want_keyframe && r.ssrc.is_some() && t.kind == MediaKind::Video {
            Self::maybe_pli(outgoing, t, 0, now);
        }
    }

    fn handle_rtcp(&mut self, now: Instant, plain: &[u8]) {
        for packet in RtcpPacket::parse_all(plain) {
            let Ok(packet) = packet else {
                self.media.dropped += 1;
                return;
            };
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    self.round_trip(now, &sr.reports);
                    let ssrc = sr.ssrc;
                    if let Some(&(i, layer, false)) = self.media.by_ssrc.get(&ssrc) {
                        let t = &mut self.media.transceivers[i];
                        if let Some(stats) = t.recv[layer].stats.as_mut() {
                            stats.on_sender_report(now, sr.ntp_time);
                        }
                        if layer != 0 {
                            continue;
                        }
                        self.events.push_back(RtcEvent::SenderReport {
                            id: TransceiverId(i),
                            ntp_time: sr.ntp_time,
                            rtp_time: sr.rtp_time,
                        });
                    }
                }
                RtcpPacket::ReceiverReport(ReceiverReport { reports, .. }) => self.round_trip(now, &reports),
                RtcpPacket::Pli(Pli { media_ssrc, .. }) => self.keyframe_asked(media_ssrc),
                RtcpPacket::Fir(fir) => {
                    for (ssrc, _) in fir.entries {
                        self.keyframe_asked(ssrc);
                    }
                }
                RtcpPacket::Nack(nack) => self.retransmit(now, &nack),
                RtcpPacket::TransportCc(feedback) => {
                    if let Some(bwe) = self.media.bwe.as_mut() {
                        bwe.on_feedback(now, &feedback);
                        self.media.update_pacer(now);
                    }
                }
                _ => {}
            }
        }
    }

    /// The round-trip time from report blocks about what we send (RFC 3550 §6.4.1): it
    /// paces NACK retries.
    fn round_trip(&mut self, now: Instant, blocks: &[peerlink_rtp::rtcp::ReportBlock]) {
        let Some(epoch) = self.media.ntp_epoch else { return };
        let mid32 = (ntp_at(epoch, now) >> 16) as u32;
        for b in blocks {
            if !self.media.send_ssrcs.contains_key(&b.ssrc) {
                continue;
            }
            if let Some(rtt) = peerlink_media::rtt_from_report_block(mid32, b) {
                self.media.rtt = Some(rtt);
                for r in self.media.transceivers.iter_mut().flat_map(|t| t.recv.iter_mut()) {
                    r.nack.set_rtt(rtt);
                }
            }
        }
    }

    /// The estimate of the rate the path to the peer carries (bit/s), from its transport-wide
    /// congestion control feedback on what we send; `None` before any was sent.
    pub fn bandwidth_estimate(&self) -> Option<u64> {
        self.media.bwe.as_ref().map(|b| b.target_bitrate())
    }

    /// Asks for a bandwidth probe at `bitrate_bps` (before moving a subscriber up to layers
    /// that need that much): its result replaces the estimate when it comes back, and
    /// further probes follow while the path keeps up. At least the estimator's minimum rate
    /// (30 kbit/s). Nothing happens unless
    /// [`RtcConfig::bandwidth_probing`](crate::RtcConfig) is on and media was sent.
    pub fn request_bandwidth_probe(&mut self, bitrate_bps: u64) {
        if let Some(bwe) = self.media.bwe.as_mut().filter(|_| self.media.probing) {
            bwe.request_probe(bitrate_bps);
        }
    }

    /// The round-trip time measured from the peer's reports, once it has reported on what we
    /// send.
    pub fn media_rtt(&self) -> Option<Duration> {
        self.media.rtt
    }

    fn keyframe_asked(&mut self, media_ssrc: u32) {
        if let Some((i, layer)) = self.media.send_stream(media_ssrc) {
            self.media.transceivers[i].stats.plis_received += 1;
            self.events.push_back(RtcEvent::KeyframeRequest { id: TransceiverId(i), layer });
        }
    }

    /// Answers a NACK from the send history: RTX when negotiated (RFC 4588 §4), else the
    /// packet again.
    fn retransmit(&mut self, now: Instant, nack: &Nack) {
        let m = &mut self.media;
        let Some((i, layer)) = m.send_stream(nack.media_ssrc) else { return };
        m.pacer(now);
        let t = &mut m.transceivers[i];
        let repaired_rid = t.ext_map.rid.zip(t.ext_map.repaired_rid).filter(|_| t.send_simulcast);
        t.stats.nacks_received += 1;
        let min_interval = m.rtt.unwrap_or(Duration::from_millis(10)).max(Duration::from_millis(10));
        for seq in nack.lost() {
            t.stats.nacked_packets += 1;
            if t.send[layer].history.get(seq).is_none() {
                t.stats.nacked_not_in_history += 1;
                continue;
            }
            // Within the budget, when what is sent follows the estimate (probing on, as in
            // the SFU: its layers do; our own frames and `play` do not, and the estimate
            // they get starts low and climbs slowly).
            let budget = m.bwe.as_ref().filter(|_| m.probing).map(|b| {
                let per_sec = (b.target_bitrate() * RTX_SHARE / 100) as f64 / 8.0;
                // Never too small for a full packet.
                let depth = (per_sec * RTX_BUDGET_WINDOW.as_secs_f64()).max(RTX_BUDGET_MIN_BYTES);
                let (at, left) = m.rtx_budget.unwrap_or((now, depth));
                let left = (left + per_sec * now.saturating_duration_since(at).as_secs_f64()).min(depth);
                m.rtx_budget = Some((now, left));
                left
            });
            if budget.is_some_and(|left| left < t.send[layer].history.get(seq).map_or(0, |p| p.len()) as f64)
            {
                t.stats.nacked_over_budget += 1;
                continue;
            }
            let s = &mut t.send[layer];
            let Some(original) = s.history.get_for_resend(now, seq, min_interval) else {
                t.stats.nacked_too_soon += 1;
                continue;
            };
            let len = original.len() as f64;
            if let Some((_, left)) = m.rtx_budget.as_mut().filter(|_| budget.is_some()) {
                *left -= len;
            }
            let Some(packet) = wrap_for_resend(&t.codecs, &mut s.rtx, original, repaired_rid) else {
                continue;
            };
            // Every packet on the wire gets its own transport-wide sequence number (the
            // feedback reports each one), a retransmission too: stamped as it leaves the pacer.
            t.stats.retransmissions_sent += 1;
            // Repairs go ahead of new media (a frame waits for them at the receiver).
            m.pacer.as_mut().expect("made above").enqueue_priority(now, packet.len(), packet);
        }
    }

    /// Sends again, in RTX, what `id` sent from the frame with RTP timestamp `timestamp` on:
    /// that frame's packets and every later one, when all of them are still kept for repair
    /// and they come to at most `max_bytes`. For a source that cannot make a key frame when
    /// asked (a file): a receiver that lost the start of the stream's first key frame never
    /// learnt those sequence numbers, so it cannot NACK them and asks for a key frame instead;
    /// this gives it the last one and the frames since. They queue behind what waits to be
    /// sent, not ahead of it as NACK repairs do: audio and the frames written before go first.
    /// For streams written with [`PeerConnection::write_frame`] (a forwarder's
    /// [`PeerConnection::write_rtp`] has gaps where the frame start cannot be told). Returns
    /// how many packets were queued: 0 when the frame's first packet is no longer kept or was
    /// resent within the last round trip, or the frames since it are over `max_bytes`.
    pub fn resend_since(
        &mut self,
        now: Instant,
        id: TransceiverId,
        timestamp: u32,
        max_bytes: usize,
    ) -> usize {
        if self.signaling == SignalingState::Closed || self.is_over() {
            return 0;
        }
        let m = &mut self.media;
        // (Made first: the loop below holds the transceiver. An unused pacer costs nothing.)
        m.pacer(now);
        let Some(t) = m.transceivers.get_mut(id.0) else { return 0 };
        if !t.current.is_some_and(Direction::sends) || t.stopped {
            return 0;
        }
        let frame = Serial32(timestamp);
        // Back from the newest packet to the frame's first: the one before it is of an older
        // frame, or not kept (the stream's first packet).
        let s = &mut t.send[0];
        let (mut first, mut bytes) = (s.seq, 0);
        loop {
            let prev = first.wrapping_sub(1);
            let Some(packet) = s.history.get(prev) else { break };
            let Ok(ts) = RtpPacket::parse(packet).map(|p| p.timestamp()) else { break };
            if ts != frame && !ts.is_newer_than(frame) {
                break;
            }
            bytes += packet.len();
            if bytes > max_bytes {
                return 0;
            }
            first = prev;
        }
        let starts_frame = s
            .history
            .get(first)
            .and_then(|p| RtpPacket::parse(p).ok())
            .is_some_and(|p| p.timestamp() == frame);
        if !starts_frame {
            return 0; // no packet of that frame
        }
        let min_interval = m.rtt.unwrap_or(Duration::from_millis(10)).max(Duration::from_millis(10));
        let mut queued = 0;
        let mut seq = first;
        let repaired_rid = t.ext_map.rid.zip(t.ext_map.repaired_rid).filter(|_| t.send_simulcast);
        let s = &mut t.send[0];
        while seq != s.seq {
            // The frame's first packet must go (it may have aged out of the history since it
            // was looked at, or just been resent); later ones as they can.
            let Some(original) = s.history.get_for_resend(now, seq, min_interval) else {
                if seq == first {
                    return 0;
                }
                seq = seq.wrapping_add(1);
                continue;
            };
            if let Some(packet) = wrap_for_resend(&t.codecs, &mut s.rtx, original, repaired_rid) {
                t.stats.keyframe_resends += 1;
                queued += 1;
                m.pacer.as_mut().expect("made above").enqueue(now, packet.len(), packet);
            }
            seq = seq.wrapping_add(1);
        }
        queued
    }

    /// Timers of the media path: reports, NACKs, holes that waited too long.
    pub(crate) fn media_timeout(&mut self, now: Instant) {
        if self.media.srtp.is_none() || self.is_over() {
            return;
        }
        let m = &mut self.media;
        // Only sections that may have a receive timer; those found idle leave the list.
        let mut k = 0;
        while let Some(&i) = m.recv_timers.get(k) {
            let t = &mut m.transceivers[i];
            if let Some(since) = t.recv[0].stalled_since {
                if now >= since + t.config.max_delay {
                    if let Some((_, d)) = t.recv[0].depacketizer.as_mut() {
                        d.skip_missing();
                        let codec = d.codec();
                        t.recv[0].stalled_since = None;
                        Self::drain_frames(&mut self.events, &mut m.outgoing, t, i, now, codec);
                    }
                }
            }
            for layer in 0..t.recv.len() {
                nack_due(&mut m.outgoing, t, layer, now);
                if t.recv[layer].keyframes.poll_request(now) {
                    Self::send_pli(&mut m.outgoing, t, layer);
                }
            }
            if t.recv.iter().all(RecvStream::is_idle) {
                m.recv_timers.remove(k);
            } else {
                k += 1;
            }
        }
        if let Some(bwe) = m.bwe.as_mut() {
            bwe.handle_timeout(now);
        }
        if let Some(feedback) = m.twcc.as_mut().and_then(|r| r.poll_feedback(now)) {
            let mut out = Vec::new();
            if RtcpPacket::TransportCc(feedback).encode(&mut out).is_ok() {
                m.outgoing.push_back((true, out));
            }
        }
        if m.next_report.is_some_and(|r| now >= r) {
            m.next_report = Some(now + REPORT_INTERVAL);
            // A stream that stopped sending lets its history go by age too.
            for s in m.transceivers.iter_mut().flat_map(|t| &mut t.send) {
                s.history.expire(now);
            }
            // A connection with data channels only sends no RTCP.
            if m.transceivers.iter().any(|t| t.current.is_some_and(|d| d != Direction::Inactive)) {
                let epoch = *m.ntp_epoch.get_or_insert_with(|| (now, ntp_now()));
                let report = build_report(m, now, ntp_at(epoch, now));
                m.outgoing.push_back((true, report));
            }
        }
    }

    pub(crate) fn media_poll_timeout(&self) -> Option<Instant> {
        self.media.srtp.as_ref()?;
        if self.is_over() {
            return None;
        }
        let m = &self.media;
        m.next_timer(|| m.recv_timers.iter().map(|&i| &m.transceivers[i]))
    }
}

/// An SRTP session with fixed keys, for fuzzing and tests of what runs past DTLS.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fixed_srtp() -> Option<SrtpSession> {
    let (key, salt) = ([7u8; 16], [9u8; 14]);
    let keys = peerlink_rtp::DtlsSrtpKeys {
        profile: "SRTP_AES128_CM_SHA1_80",
        client_key: &key,
        client_salt: &salt,
        server_key: &key,
        server_salt: &salt,
    };
    SrtpSession::from_dtls(&keys, peerlink_rtp::DtlsRole::Client, peerlink_rtp::SrtpConfig::default()).ok()
}

impl MediaState {
    /// The earliest timer: of the receive streams of the transceivers `receiving` yields
    /// (stalls, NACKs, held key frame requests), and of the connection's media (reports,
    /// feedback, pacer, estimator, probes).
    pub(crate) fn next_timer<'a, I: Iterator<Item = &'a Transceiver>>(
        &'a self,
        receiving: impl Fn() -> I,
    ) -> Option<Instant> {
        let stalls = receiving().filter_map(|t| t.recv[0].stalled_since.map(|s| s + t.config.max_delay));
        let layers = || receiving().flat_map(|t| t.recv.iter());
        let nacks = layers().filter_map(|r| r.nack.poll_timeout());
        let plis = layers().filter_map(|r| r.keyframes.poll_timeout());
        let twcc = self.twcc.as_ref().and_then(|r| r.poll_timeout());
        let pacer = self.pacer.as_ref().and_then(Pacer::poll_timeout);
        let bwe = self.bwe.as_ref().and_then(|b| b.poll_timeout());
        let probe = self.probes.front().map(|(at, _, _)| *at);
        stalls
            .chain(nacks)
            .chain(plis)
            .chain(self.next_report)
            .chain(twcc)
            .chain(pacer)
            .chain(bwe)
            .chain(probe)
            .min()
    }
}

impl PeerConnection {
    /// Turns the probe clusters the estimator asks for into padding packets on the RTX
    /// stream of a video section that sends (RFC 4588 §4 allows an RTX packet without an
    /// original: receivers take it as padding), spaced at the cluster's rate. With no such
    /// section, or probing off, clusters are let go.
    fn schedule_probes(&mut self, now: Instant) {
        let m = &mut self.media;
        let Some(bwe) = m.bwe.as_mut() else { return };
        while let Some(cluster) = bwe.poll_probe(now) {
            if !m.probing || m.probes.len() >= MAX_PROBE_PACKETS {
                bwe.cancel_probe(cluster.id);
                continue;
            }
            let Some(t) = m.transceivers.iter_mut().find(|t| {
                t.kind == MediaKind::Video
                    && !t.stopped
                    && t.current.is_some_and(Direction::sends)
                    && t.ext_map.transport_cc.is_some()
                    && t.codecs.iter().any(|c| c.rtx.is_some())
                    && t.send.iter().any(|s| s.active)
            }) else {
                bwe.cancel_probe(cluster.id);
                continue;
            };
            // The first layer the peer takes (with simulcast, layer 0 may not be one).
            let l = t.send.iter().position(|s| s.active).unwrap_or(0);
            let Some(rtx_pt) = t.codecs.iter().find_map(|c| c.rtx) else {
                bwe.cancel_probe(cluster.id);
                continue;
            };
            let mid_ext = t.ext_map.mid.zip(t.mid.as_ref()).filter(|(_, mid)| (1..=16).contains(&mid.len()));
            let mut ext: Vec<(u8, &[u8])> = mid_ext.iter().map(|(id, mid)| (*id, mid.as_bytes())).collect();
            if let Some(id) = t.ext_map.transport_cc {
                ext.push((id, &[0, 0]));
            }
            // A simulcast receiver places an RTX SSRC by its repaired rid (RFC 8852 §3.2):
            // without it the padding would be dropped unrecorded, and counted lost here.
            let repaired = t.ext_map.repaired_rid.filter(|_| t.send_simulcast).zip(t.send[l].rid.clone());
            if let Some((id, rid)) = repaired.as_ref() {
                let id = *id;
                ext.push((id, rid.as_bytes()));
            }
            let mut first = true;
            let mut size = 0;
            let count = (cluster.min_packets as usize).max(1);
            let mut i = 0;
            loop {
                let header = RtpHeader {
                    payload_type: rtx_pt,
                    sequence_number: t.send[l].rtx.next_seq,
                    timestamp: Serial32(t.send[l].last_timestamp),
                    ssrc: t.send[l].rtx.ssrc,
                    ..Default::default()
                };
                let mut packet = Vec::with_capacity(usize::from(PROBE_PADDING) + 40);
                if header.encode(&ext, &[], PROBE_PADDING, &mut packet).is_err() {
                    break;
                }
                t.send[l].rtx.next_seq = t.send[l].rtx.next_seq.wrapping_add(1);
                if first {
                    first = false;
                    // SRTP adds its tag; the count follows from the packet's size.
                    size = packet.len() + 10;
                }
                let gap = Duration::from_nanos(
                    ((size as u64 * 8).saturating_mul(1_000_000_000) / cluster.bitrate_bps.max(1)).max(1),
                );
                let start = m.probes.back().map_or(now, |(at, _, _)| *at + gap).max(now);
                m.probes.push_back((start, cluster.id, packet));
                i += 1;
                if (i >= count && i * size >= cluster.min_bytes) || m.probes.len() >= MAX_PROBE_PACKETS {
                    break;
                }
            }
        }
        // While a cluster goes out, media takes its padding's place in short bursts only.
        if !m.probes.is_empty() && m.pacer.as_ref().is_some_and(|p| p.burst() != peerlink_media::pacer::BURST)
        {
            m.update_pacer(now);
        }
    }

    /// The next media datagram, protected and appended to `buf`.
    pub(crate) fn media_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> bool {
        if self.media.srtp.is_some() {
            self.schedule_probes(now);
        }
        let m = &mut self.media;
        let Some(srtp) = m.srtp.as_mut() else {
            m.outgoing.clear();
            m.pacer = None;
            m.probes.clear();
            return false;
        };
        let twcc_id = m.twcc_ext;
        loop {
            let (rtcp, packet) = match m.outgoing.pop_front() {
                Some(next) => next,
                None => {
                    let due = m.probes.front().is_some_and(|(at, _, _)| *at <= now);
                    let probe = if due { m.probes.pop_front() } else { None };
                    let (mut packet, cluster) = match probe {
                        Some((_, cluster, packet)) => {
                            m.probe_active = Some(cluster);
                            (packet, Some(cluster))
                        }
                        None => {
                            let Some(packet) = m.pacer.as_mut().and_then(|p| p.poll(now)) else { break };
                            // Media sent while a cluster goes out is part of it, in place of
                            // as much of its padding: on top of it, the path got the cluster's
                            // rate plus the media's, and a 10 kB probe at twice a narrow
                            // path's estimate overflowed its queue (media lost, a freeze).
                            let of = |probes: &VecDeque<(Instant, u32, Vec<u8>)>, c: u32| {
                                probes.front().is_some_and(|(_, f, _)| *f == c)
                            };
                            let cluster = m.probe_active.filter(|&c| of(&m.probes, c));
                            if let Some(c) = cluster {
                                let mut owed = packet.len();
                                while owed > 0 && of(&m.probes, c) {
                                    let (_, _, padding) = m.probes.pop_front().expect("front checked");
                                    owed = owed.saturating_sub(padding.len());
                                }
                            }
                            (packet, cluster)
                        }
                    };
                    // The transport-wide number, in the order packets leave (RFC 8888's
                    // predecessor, draft-holmer-rmcat-transport-wide-cc-extensions-01).
                    if let Some(id) = twcc_id {
                        let seq = m.twcc_seq;
                        if restamp_extension(&mut packet, id, &seq.to_be_bytes()) {
                            m.twcc_seq = seq.wrapping_add(1);
                            let probing = m.probing;
                            let bwe = m.bwe.get_or_insert_with(|| {
                                let config = peerlink_media::BweConfig { probing, ..Default::default() };
                                peerlink_media::BandwidthEstimator::new(config)
                            });
                            // SRTP adds its 10-byte tag; UDP/IP headers are not counted.
                            match cluster {
                                Some(c) => bwe.on_probe_sent(now, seq, packet.len() + 10, c),
                                None => bwe.on_packet_sent(now, seq, packet.len() + 10),
                            }
                        }
                    }
                    (false, packet)
                }
            };
            let r = if rtcp { srtp.protect_rtcp(&packet, buf) } else { srtp.protect_rtp(&packet, buf) };
            if m.spent.len() < SPENT {
                m.spent.push(packet);
            }
            match r {
                Ok(_) => return true,
                Err(e) => tracing::debug!(%e, "media packet not protected"),
            }
        }
        false
    }
}

/// Overwrites the value of header extension element `id` in an RTP packet with `value` (of
/// the same length); whether it was there.
fn restamp_extension(packet: &mut [u8], id: u8, value: &[u8]) -> bool {
    let Ok(p) = RtpPacket::parse(packet) else { return false };
    let Some(data) = p.extensions().get(id).filter(|d| d.len() == value.len()) else { return false };
    // The element's place in the packet, from where its bytes lie in the packet's.
    let at = data.as_ptr() as usize - packet.as_ptr() as usize;
    packet[at..at + value.len()].copy_from_slice(value);
    true
}

/// Gives header extension element `from` of an RTP packet the id `to` (same length, so
/// nothing moves); whether it was there.
fn rename_extension(packet: &mut [u8], from: u8, to: u8) -> bool {
    let Ok(p) = RtpPacket::parse(packet) else { return false };
    let two_byte = p.extension_profile().is_some_and(|x| x & 0xfff0 == 0x1000);
    let Some(data) = p.extensions().get(from) else { return false };
    let at = data.as_ptr() as usize - packet.as_ptr() as usize;
    // RFC 8285 §4.2: the id is the high nibble of the byte before the data; §4.3: the
    // whole byte two before it.
    if two_byte {
        match at.checked_sub(2) {
            Some(i) => packet[i] = to,
            None => return false,
        }
    } else {
        match at.checked_sub(1) {
            Some(i) if to < 15 => packet[i] = (to << 4) | (packet[i] & 0x0f),
            _ => return false,
        }
    }
    true
}

/// `original` (a packet from the send history) as it goes out again: in RTX when the
/// codec has it negotiated (RFC 4588 §4), else as it was.
/// `repaired_rid`: the (rid, repaired rid) extension ids of a simulcast sender, whose RTX
/// copies name their layer by repaired rid (RFC 8852 §3.2) rather than rid.
fn wrap_for_resend(
    codecs: &[CodecParams],
    rtx: &mut RtxSender,
    original: &[u8],
    repaired_rid: Option<(u8, u8)>,
) -> Option<Vec<u8>> {
    let pt = RtpPacket::parse(original).ok()?.payload_type();
    match codecs.iter().find(|c| c.payload_type == pt).and_then(|c| c.rtx) {
        Some(rtx_pt) => {
            rtx.payload_type = rtx_pt;
            let mut out = Vec::with_capacity(original.len() + 2);
            rtx.wrap(original, &mut out).ok()?;
            if let Some((rid, repaired)) = repaired_rid {
                rename_extension(&mut out, rid, repaired);
            }
            Some(out)
        }
        None => Some(original.to_vec()),
    }
}

/// A NACK for what the generator says is due (RFC 4585 §6.2.1).
fn nack_due(outgoing: &mut VecDeque<(bool, Vec<u8>)>, t: &mut Transceiver, layer: usize, now: Instant) {
    let sender = t.send[0].ssrc;
    let r = &mut t.recv[layer];
    let Some(media_ssrc) = r.ssrc else { return };
    let Some(due) = r.nack.poll_nack(now) else { return };
    let nack = Nack { sender_ssrc: sender, media_ssrc, pairs: Nack::pairs_for(due) };
    let mut out = Vec::new();
    if nack.encode(&mut out).is_ok() {
        t.stats.nacks_sent += 1;
        outgoing.push_back((true, out));
    }
}

/// One compound RTCP packet (RFC 3550 §6.1): an SR per sending stream (the first carrying
/// the report blocks) or an RR, then SDES with our CNAME.
fn build_report(m: &mut MediaState, now: Instant, ntp: u64) -> Vec<u8> {
    let mut blocks = Vec::new();
    for r in m.transceivers.iter_mut().flat_map(|t| t.recv.iter_mut()) {
        if let (Some(ssrc), Some(stats)) = (r.ssrc, r.stats.as_mut()) {
            blocks.push(stats.report_block(now, ssrc));
        }
    }
    blocks.truncate(31);
    let mut out = Vec::new();
    let mut reported = Vec::new();
    // One SR per layer sent (each has its own SSRC and RTP clock position); not for a layer
    // a renegotiation stopped.
    let sending = m.transceivers.iter().flat_map(|t| t.send.iter().map(move |s| (t, s)));
    for (t, s) in sending.filter(|(_, s)| s.stats.packet_count() > 0 && s.active) {
        let clock = t.codecs.first().map_or(90_000, |c| c.clock_rate);
        let mut sr = s.stats.sender_report(now, ntp, s.ssrc, clock);
        if reported.is_empty() {
            sr.reports = std::mem::take(&mut blocks);
        }
        reported.push(s.ssrc);
        let _ = sr.encode(&mut out);
    }
    if reported.is_empty() {
        let _ = ReceiverReport { ssrc: m.receiver_ssrc, reports: blocks }.encode(&mut out);
        reported.push(m.receiver_ssrc);
    }
    // Every SSRC reported gets its CNAME (RFC 3550 §6.5.1): simulcast layers signal none in
    // the SDP.
    let cname = m.cname.as_bytes();
    reported.truncate(31);
    let chunks = reported.into_iter().map(|ssrc| SdesChunk { ssrc, items: vec![(1, cname)] }).collect();
    let _ = Sdes { chunks }.encode(&mut out);
    out
}

#[cfg(test)]
mod timer_tests;

// ---- SDP ----

/// `a=ssrc`, `a=ssrc-group:FID` and `a=msid` of a remote section.
fn remote_sources(m: &peerlink_sdp::Media) -> (Option<u32>, Option<u32>, Option<String>) {
    let mut primary = None;
    let mut rtx = None;
    for g in m.attributes("ssrc-group") {
        let mut parts = g.split_whitespace();
        if parts.next() == Some("FID") {
            primary = parts.next().and_then(|s| s.parse().ok());
            rtx = parts.next().and_then(|s| s.parse().ok());
        }
    }
    if primary.is_none() {
        primary = m.attributes("ssrc").find_map(|v| v.split_whitespace().next()?.parse().ok());
    }
    let stream = m
        .attribute("msid")
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .or_else(|| {
            m.attributes("ssrc").find_map(|v| {
                let rest = v.split_once(' ')?.1;
                rest.strip_prefix("msid:").and_then(|s| s.split_whitespace().next()).map(str::to_owned)
            })
        })
        .filter(|s| s != "-");
    (primary, rtx, stream)
}

/// Whether `extensions` name both the rid and the repaired-rid header extensions, which
/// sending simulcast layers needs.
fn has_rid_extensions(extensions: &[(u8, String)]) -> bool {
    let has = |uri: &str| extensions.iter().any(|(_, u)| u == uri);
    has(peerlink_rtp::ext::uri::RID) && has(peerlink_rtp::ext::uri::REPAIRED_RID)
}

/// The simulcast layers a remote section sends (RFC 8853): the first alternative of each
/// stream of `a=simulcast:send`, when an `a=rid:<id> send` line declares it; paused (`~`)
/// streams included. Empty without simulcast; at most 8 layers.
fn remote_send_rids(m: &peerlink_sdp::Media) -> Vec<String> {
    remote_rids(m, "send")
}

/// The layers of ours a remote answer takes (its `a=simulcast:recv`, RFC 8853 §5.3), as
/// [`remote_send_rids`] reads a sender's.
fn remote_recv_rids(m: &peerlink_sdp::Media) -> Vec<String> {
    remote_rids(m, "recv")
}

fn remote_rids(m: &peerlink_sdp::Media, dir: &str) -> Vec<String> {
    let declared: Vec<&str> = m
        .attributes("rid")
        .filter_map(|v| {
            let mut parts = v.split_whitespace();
            let id = parts.next()?;
            (parts.next() == Some(dir)).then_some(id)
        })
        .collect();
    let Some(list) = m.attribute("simulcast").and_then(|v| {
        let mut parts = v.split_whitespace();
        // `send <list>` (a `recv <list>` may follow or lead).
        loop {
            match (parts.next()?, parts.next()?) {
                (d, list) if d == dir => break Some(list),
                _ => continue,
            }
        }
    }) else {
        return Vec::new();
    };
    let mut rids: Vec<String> = Vec::new();
    for stream in list.split(';') {
        let Some(first) = stream.split(',').next() else { continue };
        let id = first.trim_start_matches('~');
        if declared.contains(&id) && !rids.iter().any(|r| r == id) && rids.len() < 8 {
            rids.push(id.to_owned());
        }
    }
    rids
}

impl PeerConnection {
    /// The section of a transceiver in our offer or answer. `offer`: the remote offer's
    /// section being answered.
    pub(crate) fn media_section(
        &mut self,
        i: usize,
        offer: Option<&peerlink_sdp::Media>,
        setup: Setup,
    ) -> Media {
        // The numbers the rest of the BUNDLE group uses (for a new section of ours).
        let others = self.media.transceivers.iter().enumerate().filter(|(j, _)| *j != i);
        let taken: Vec<CodecParams> = others
            .clone()
            .flat_map(|(_, o)| if o.codecs.is_empty() { o.offered.clone() } else { o.codecs.clone() })
            .collect();
        let taken_ext: Vec<(u8, String)> = others.flat_map(|(_, o)| o.extensions.clone()).collect();
        let t = &mut self.media.transceivers[i];
        t.direction_changed = false;
        let (formats, extensions, direction) = match offer {
            None => {
                let negotiated = t.current.is_some() && !t.codecs.is_empty();
                let has_ext = !t.extensions.is_empty();
                let codecs =
                    if negotiated { t.codecs.clone() } else { codecs::renumber(t.our_codecs(), &taken) };
                let ext: Vec<(u8, String)> = if has_ext {
                    t.extensions.clone()
                } else {
                    let ours = codecs::supported_extensions(t.kind.as_str())
                        .into_iter()
                        .map(|(i, u)| (i, u.to_owned()));
                    codecs::renumber_extensions(ours.collect(), &taken_ext)
                };
                t.offered = codecs.clone();
                (codecs, ext, t.direction)
            }
            Some(o) => {
                let formats = codecs::answer_formats(&codecs::remote_formats(o), &t.our_codecs());
                let ext = codecs::answer_extensions(&codecs::remote_extensions(o), t.kind.as_str());
                let direction = Direction::new(
                    t.direction.sends() && Direction::of(o).receives(),
                    t.direction.receives() && Direction::of(o).sends(),
                );
                // The answer settles the section (applied when it is set; see
                // `apply_answer_sections`).
                t.codecs = formats.clone();
                t.extensions = ext.clone();
                (formats, ext, direction)
            }
        };
        let rejected = t.stopped || formats.is_empty();
        let mut m = Media {
            kind: t.kind.as_str().to_owned(),
            port: if rejected { 0 } else { 9 },
            proto: "UDP/TLS/RTP/SAVPF".to_owned(),
            formats: Vec::new(),
            connection: Some("IN IP4 0.0.0.0".to_owned()),
            lines: Vec::new(),
            attributes: Vec::new(),
        };
        for c in &formats {
            m.formats.push(c.payload_type.to_string());
            if let Some(r) = c.rtx {
                m.formats.push(r.to_string());
            }
        }
        if m.formats.is_empty() {
            // A rejected section keeps the offer's formats (RFC 3264 §6: at least one).
            m.formats = offer.map(|o| o.formats.clone()).unwrap_or_else(|| vec!["0".to_owned()]);
        }
        let mid = t.mid.clone().unwrap_or_default();
        let a =
            |m: &mut Media, name: &str, value: Option<&str>| m.attributes.push(Attribute::new(name, value));
        if rejected {
            a(&mut m, "mid", Some(&mid));
            a(&mut m, "inactive", None);
            return m;
        }
        a(&mut m, "rtcp", Some("9 IN IP4 0.0.0.0"));
        self.transport_attributes(&mut m, setup);
        a(&mut m, "mid", Some(&mid));
        for (id, uri) in &extensions {
            a(&mut m, "extmap", Some(&format!("{id} {uri}")));
        }
        a(&mut m, direction.as_str(), None);
        let t = &self.media.transceivers[i];
        if direction.sends() {
            a(&mut m, "msid", Some(&format!("{} {}", t.config.stream_id, t.config.track_id)));
        }
        a(&mut m, "rtcp-mux", None);
        a(&mut m, "rtcp-rsize", None);
        // The simulcast layers we take (from an offer that sends them; our later offers keep
        // them, or the sender would fall back to one layer).
        let rids: Vec<String> = t.recv.iter().filter_map(|r| r.rid.clone()).collect();
        let rids = if direction.receives() { rids } else { Vec::new() };
        // The layers we send (RFC 8853 §5.1); in an answer, those of them the offer's
        // `a=simulcast:recv` takes (§5.3: a peer's re-offer keeps what it took from ours).
        // Layers need both the rid and the repaired-rid extension (RFC 8851 §4: a repair
        // stream names its layer by the latter); a re-offer after an answer that dropped them
        // offers one stream, with its SSRCs, again.
        let mut send_rids: Vec<String> = t.send.iter().filter_map(|s| s.rid.clone()).collect();
        if !has_rid_extensions(&extensions) {
            send_rids.clear();
        }
        if let Some(o) = offer {
            let taken = remote_recv_rids(o);
            send_rids.retain(|r| taken.contains(r));
        }
        let send_rids = if direction.sends() { send_rids } else { Vec::new() };
        for rid in &send_rids {
            a(&mut m, "rid", Some(&format!("{rid} send")));
        }
        for rid in &rids {
            a(&mut m, "rid", Some(&format!("{rid} recv")));
        }
        let simulcast = match (send_rids.is_empty(), rids.is_empty()) {
            (true, true) => None,
            (false, true) => Some(format!("send {}", send_rids.join(";"))),
            (true, false) => Some(format!("recv {}", rids.join(";"))),
            (false, false) => Some(format!("send {} recv {}", send_rids.join(";"), rids.join(";"))),
        };
        if let Some(v) = simulcast {
            a(&mut m, "simulcast", Some(&v));
        }
        for c in &formats {
            let pt = c.payload_type;
            let map = match c.channels {
                0 => format!("{pt} {}/{}", c.encoding_name(), c.clock_rate),
                n => format!("{pt} {}/{}/{n}", c.encoding_name(), c.clock_rate),
            };
            a(&mut m, "rtpmap", Some(&map));
            for fb in &c.feedback {
                a(&mut m, "rtcp-fb", Some(&format!("{pt} {fb}")));
            }
            if !c.fmtp.is_empty() {
                a(&mut m, "fmtp", Some(&format!("{pt} {}", c.fmtp)));
            }
            if let Some(r) = c.rtx {
                a(&mut m, "rtpmap", Some(&format!("{r} rtx/{}", c.clock_rate)));
                a(&mut m, "fmtp", Some(&format!("{r} apt={pt}")));
            }
        }
        // With simulcast no SSRC is signalled (as browsers do): the receiver learns each
        // layer's from its rid extension (RFC 8853 §5.1).
        if direction.sends() && send_rids.is_empty() {
            let (ssrc, rtx) = (t.send[0].ssrc, t.send[0].rtx.ssrc);
            let has_rtx = formats.iter().any(|c| c.rtx.is_some());
            if has_rtx {
                a(&mut m, "ssrc-group", Some(&format!("FID {ssrc} {rtx}")));
            }
            let cname = self.media.cname.clone();
            let msid = format!("{} {}", t.config.stream_id, t.config.track_id);
            a(&mut m, "ssrc", Some(&format!("{ssrc} cname:{cname}")));
            a(&mut m, "ssrc", Some(&format!("{ssrc} msid:{msid}")));
            if has_rtx {
                a(&mut m, "ssrc", Some(&format!("{rtx} cname:{cname}")));
                a(&mut m, "ssrc", Some(&format!("{rtx} msid:{msid}")));
            }
        }
        m
    }

    /// Finds or makes the transceiver for a remote offer's section (RFC 8829 §5.10: a
    /// transceiver of the same kind not yet in any section, and whose direction fits the
    /// offer's, is taken before a new one is made, recvonly as a browser's would be).
    pub(crate) fn transceiver_for_offer(&mut self, m: &peerlink_sdp::Media) -> Option<usize> {
        let kind = MediaKind::parse(&m.kind)?;
        let mid = m.mid()?.to_owned();
        if let Some(i) = self.media.transceivers.iter().position(|t| t.mid.as_deref() == Some(mid.as_str())) {
            let t = &mut self.media.transceivers[i];
            if t.kind == kind {
                return Some(i);
            }
            if t.current.is_some() {
                // A negotiated section cannot change its kind (RFC 8829 §5.10): refused.
                return None;
            }
            // A mid of an offer of ours that was never answered: it is the peer's now.
            t.mid = None;
            self.order.retain(|s| !matches!(s, Section::Media(j) if *j == i));
        }
        if m.port == 0 {
            // A rejected section takes no transceiver of ours.
            return None;
        }
        // Only a transceiver that can use the section: ours sendonly for a sendonly offer would
        // be answered inactive, and both sides would wait to send forever (two senders of
        // files in a mesh); it waits for our own offer instead.
        let offered = Direction::of(m);
        // (An inactive section is useful to none: our track would sit on it unsent.)
        let useful = |d: Direction| (offered.sends() && d.receives()) || (offered.receives() && d.sends());
        let free = self
            .media
            .transceivers
            .iter()
            .position(|t| t.mid.is_none() && t.kind == kind && !t.stopped && useful(t.direction));
        let i = match free {
            Some(i) => i,
            None => {
                let direction = self.accept_direction;
                let config = TrackConfig { raw: self.accept_raw, ..TrackConfig::new(kind) };
                self.new_transceiver(kind, direction, config).0
            }
        };
        self.media.transceivers[i].mid = Some(mid);
        Some(i)
    }

    /// A rollback of our offer: transceivers that got a mid from it and were never
    /// negotiated lose it again (the peer's offer may use those mids for other sections).
    pub(crate) fn forget_offered_mids(&mut self) {
        for t in &mut self.media.transceivers {
            if t.current.is_none() {
                t.mid = None;
                t.offered.clear();
            }
        }
        let transceivers = &self.media.transceivers;
        self.order.retain(|s| !matches!(s, Section::Media(i) if transceivers[*i].mid.is_none()));
        if !self.data_negotiated && self.order.iter().all(|s| matches!(s, Section::Data)) {
            self.order.clear();
        }
    }

    /// What a remote description (offer or answer) says about each media section: its
    /// direction, SSRCs and stream id; for an answer, also the codecs and extensions.
    pub(crate) fn apply_remote_media(&mut self, sd: &SessionDescription, answer: bool) {
        for m in &sd.media {
            if m.is_datachannel() {
                continue;
            }
            let Some(mid) = m.mid() else { continue };
            let i = if answer {
                self.media.transceivers.iter().position(|t| t.mid.as_deref() == Some(mid))
            } else {
                self.transceiver_for_offer(m)
            };
            let Some(i) = i else { continue };
            let t = &mut self.media.transceivers[i];
            if m.port == 0 {
                t.stopped = true;
                t.current = Some(Direction::Inactive);
                continue;
            }
            let remote_direction = Direction::of(m);
            let (ssrc, rtx, stream) = remote_sources(m);
            if remote_direction.sends() {
                t.remote_stream_id = stream;
                // Simulcast layers (RFC 8853), taken when we receive; a change of layers
                // starts every stream of the section over.
                let rids = if t.direction.receives() { remote_send_rids(m) } else { Vec::new() };
                let current: Vec<String> = t.recv.iter().filter_map(|r| r.rid.clone()).collect();
                if rids != current {
                    self.media.by_ssrc.retain(|_, (j, _, _)| *j != i);
                    t.recv = if rids.is_empty() {
                        vec![RecvStream::new()]
                    } else {
                        rids.into_iter()
                            .map(|rid| RecvStream { rid: Some(rid), ..RecvStream::new() })
                            .collect()
                    };
                }
                let r = &mut t.recv[0];
                if let Some(s) = ssrc.filter(|_| r.rid.is_none()) {
                    if r.ssrc != Some(s) {
                        // A new sender on the section: its stream starts over (the old one's
                        // sequence numbers say nothing about the new one's).
                        if let Some(old) = r.ssrc {
                            self.media.by_ssrc.remove(&old);
                            *r = RecvStream { rtx_ssrc: r.rtx_ssrc, ..RecvStream::new() };
                        }
                        r.ssrc = Some(s);
                        self.media.by_ssrc.insert(s, (i, 0, false));
                    }
                }
                if let Some(x) = rtx.filter(|_| r.rid.is_none()) {
                    if let Some(old) = r.rtx_ssrc.filter(|o| *o != x) {
                        self.media.by_ssrc.remove(&old);
                    }
                    r.rtx_ssrc = Some(x);
                    self.media.by_ssrc.insert(x, (i, 0, true));
                }
            }
            if answer {
                t.codecs = codecs::accepted_formats(&codecs::remote_formats(m), &t.offered);
                t.extensions = codecs::remote_extensions(m)
                    .into_iter()
                    .filter(|(_, u)| {
                        codecs::supported_extensions(t.kind.as_str()).iter().any(|(_, o)| o == u)
                    })
                    .collect();
                // The layers the answer takes (RFC 8853 §5.3): only those are sent; without
                // simulcast (or without the rid extension to name them) the first alone.
                let accepted = remote_recv_rids(m);
                t.send_simulcast =
                    t.send[0].rid.is_some() && has_rid_extensions(&t.extensions) && !accepted.is_empty();
                for (k, s) in t.send.iter_mut().enumerate() {
                    s.active = if t.send_simulcast {
                        s.rid.as_ref().is_some_and(|r| accepted.contains(r))
                    } else {
                        k == 0
                    };
                }
                t.current = Some(if t.codecs.is_empty() {
                    Direction::Inactive
                } else {
                    Direction::new(
                        t.direction.sends() && remote_direction.receives(),
                        t.direction.receives() && remote_direction.sends(),
                    )
                });
                self.settle_transceiver(i);
            }
        }
    }

    /// Our answer was set: what it says for each section holds now.
    pub(crate) fn apply_local_answer(&mut self, sd: &SessionDescription) {
        for m in &sd.media {
            let Some(mid) = m.mid() else { continue };
            let Some(i) = self.media.transceivers.iter().position(|t| t.mid.as_deref() == Some(mid)) else {
                continue;
            };
            let t = &mut self.media.transceivers[i];
            t.current = Some(if m.port == 0 { Direction::Inactive } else { Direction::of(m) });
            if m.port == 0 {
                t.stopped = true;
            }
            // The layers our answer sends (see `media_section`); none: the first alone.
            let sent = remote_send_rids(m);
            t.send_simulcast = !sent.is_empty();
            for (k, s) in t.send.iter_mut().enumerate() {
                s.active = match t.send_simulcast {
                    true => s.rid.as_ref().is_some_and(|r| sent.contains(r)),
                    false => k == 0,
                };
            }
            self.settle_transceiver(i);
        }
    }

    fn settle_transceiver(&mut self, i: usize) {
        let t = &mut self.media.transceivers[i];
        t.ext_map = ExtensionMap::default();
        for (id, uri) in &t.extensions {
            t.ext_map.insert(*id, uri);
        }
        let m = &mut self.media;
        m.twcc_ext = m.transceivers.iter().find_map(|t| t.ext_map.transport_cc);
        m.mid_ext = m.transceivers.iter().find_map(|t| t.ext_map.mid);
        let t = &mut m.transceivers[i];
        if t.current.is_some_and(Direction::receives) && !t.announced {
            t.announced = true;
            self.events.push_back(RtcEvent::Track {
                id: TransceiverId(i),
                kind: t.kind,
                mid: t.mid.clone().unwrap_or_default(),
                stream_id: t.remote_stream_id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::remote_send_rids;
    use peerlink_sdp::SessionDescription;

    fn video(lines: &str) -> SessionDescription {
        let sdp = format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n{lines}"
        );
        SessionDescription::parse(&sdp).unwrap()
    }

    #[test]
    fn simulcast_layers_are_the_declared_send_rids_in_order() {
        let sd = video("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;~f\r\n");
        assert_eq!(remote_send_rids(&sd.media[0]), ["q", "h", "f"]);
        // Alternatives: the first of each stream; undeclared or receive-only rids are left out.
        let sd = video("a=rid:a send\r\na=rid:b send\r\na=rid:c recv\r\na=simulcast:recv c send a,b;x;c\r\n");
        assert_eq!(remote_send_rids(&sd.media[0]), ["a"]);
        for lines in
            ["", "a=rid:q send\r\n", "a=simulcast:send q;h\r\n", "a=simulcast:send\r\n", "a=simulcast:x\r\n"]
        {
            assert!(remote_send_rids(&video(lines).media[0]).is_empty(), "{lines:?}");
        }
        let many: String = (0..20).map(|i| format!("a=rid:r{i} send\r\n")).collect();
        let list: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        let sd = video(&format!("{many}a=simulcast:send {}\r\n", list.join(";")));
        assert_eq!(remote_send_rids(&sd.media[0]).len(), 8);
    }

    /// The pacing rate follows the bytes written in the last second: an entry exactly a
    /// second old still counts, one a nanosecond older does not.
    #[test]
    fn the_pacing_window_is_one_second_inclusive() {
        use super::MediaState;
        use std::time::{Duration, Instant};
        let mut m = MediaState::new(false);
        let t0 = Instant::now();
        for (at, bytes) in [(t0, 100), (t0 + Duration::from_millis(500), 50)] {
            m.sent_window.push_back((at, bytes));
            m.sent_window_bytes += bytes as u64;
        }
        m.update_pacer(t0 + Duration::from_secs(1));
        assert_eq!((m.sent_window.len(), m.sent_window_bytes), (2, 150));
        m.update_pacer(t0 + Duration::from_secs(1) + Duration::from_nanos(1));
        assert_eq!((m.sent_window.len(), m.sent_window_bytes), (1, 50));
        m.update_pacer(t0 + Duration::from_millis(1500) + Duration::from_nanos(1));
        assert_eq!((m.sent_window.len(), m.sent_window_bytes), (0, 0));
    }
}
