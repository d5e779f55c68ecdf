//! The sending half: message queue, fragmentation to the path MTU, TSNs and SSNs, the
//! retransmission queue, SACK processing (cumulative and gap acks, miss indications and fast
//! retransmit, RFC 9260 §6.2.1 and §7.2.4), the retransmission timer with RTT estimation
//! (§6.3), congestion control (slow start, congestion avoidance, fast recovery, §7.2), the
//! peer's receive window, and PR-SCTP abandonment with FORWARD TSN (RFC 3758).

use crate::bbr::{Bbr, Delivery, Snapshot};
use crate::chunk::{self, Data, Sack, DATA_HEADER, FLAG_BEGIN, FLAG_END, FLAG_UNORDERED};
use crate::recv::unwrap;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// RFC 9260 §16 RTO.Initial is 1 s; min and max tuned for WebRTC as other stacks do.
pub const RTO_INITIAL: Duration = Duration::from_secs(1);
pub const RTO_MIN: Duration = Duration::from_millis(200);
pub const RTO_MAX: Duration = Duration::from_secs(10);
/// Miss indications that trigger a fast retransmit (§7.2.4); raised when the network is
/// seen reordering (a fast retransmission reported back as a duplicate), up to the max.
const FAST_RETRANSMIT_MISSES: u8 = 3;
const MAX_REORDER_THRESHOLD: u8 = 32;
/// Paced sending may catch up the time it fell behind (a driver's timer wakes late; a busy
/// host runs the driver a time slice later): a quarter of the minimum RTT, within these
/// bounds, so a late wake-up sends what it owes as one burst a queue absorbs.
const PACING_SLACK_MIN: Duration = Duration::from_millis(1);
const PACING_SLACK_MAX: Duration = Duration::from_millis(10);

/// The sender's congestion controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CongestionControl {
    /// RFC 9260 §7.2: slow start, congestion avoidance, halving on loss (Reno-like). Every
    /// loss is read as congestion, so random loss on a long path caps the rate at about
    /// 1.22·MTU/(RTT·√loss).
    Rfc9260,
    /// A model of the path (BBR-style): the bottleneck rate from delivery-rate samples and
    /// the minimum RTT; DATA is paced at the modelled rate and the window is a multiple of
    /// the bandwidth-delay product, so random loss does not shrink it. Losses are found by
    /// time (RACK-style) as well as by miss indications. The default: only the sender
    /// changes, the peer sees ordinary SCTP.
    #[default]
    Bbr,
}

/// How hard a message is tried (RFC 3758; the data channel's maxRetransmits and
/// maxPacketLifeTime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    /// Sent at most 1 + n times.
    MaxRetransmits(u16),
    /// Abandoned this long after it was queued.
    MaxLifetime(Duration),
}

#[derive(Debug)]
struct Queued {
    stream: u16,
    ppid: u32,
    ordered: bool,
    reliability: Reliability,
    data: Bytes,
    /// Bytes of `data` already cut into chunks.
    offset: usize,
    ssn: u16,
    message: u64,
    queued_at: Instant,
}

#[derive(Debug)]
struct InFlight {
    tsn: u64,
    stream: u16,
    ssn: u16,
    ppid: u32,
    flags: u8,
    data: Bytes,
    transmissions: u32,
    last_sent: Instant,
    /// Acknowledged by a gap block (may be reneged; not counted in the flight).
    acked: bool,
    misses: u8,
    /// Waiting to be sent again (not counted in the flight meanwhile).
    retransmit: bool,
    fast_retransmitted: bool,
    abandoned: bool,
    message: u64,
    reliability: Reliability,
    queued_at: Instant,
    /// Delivery state when last sent (rate samples).
    snap: Snapshot,
}

impl InFlight {
    fn counted(&self) -> bool {
        !self.acked && !self.retransmit && !self.abandoned
    }
}

/// What a SACK did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SackOutcome {
    /// Bytes newly acknowledged (cumulatively or by gap blocks).
    pub acked_bytes: usize,
    /// The cumulative ack moved forward.
    pub advanced: bool,
}

#[derive(Debug)]
pub struct Sender {
    mtu: usize,
    next_tsn: u64,
    /// The peer has everything up to and including this TSN.
    cumulative_acked: u64,
    queue: VecDeque<Queued>,
    queued_bytes: HashMap<u16, usize>,
    total_queued: usize,
    in_flight: VecDeque<InFlight>,
    /// Chunks in `in_flight` of partially reliable messages: while there are none, a SACK
    /// need not look for expired ones.
    partial_in_flight: usize,
    /// The last SACK's gap blocks as absolute TSN ranges, sorted and merged; `fresh` and
    /// `spare_gaps` are reused buffers.
    gap_blocks: Vec<(u64, u64)>,
    spare_gaps: Vec<(u64, u64)>,
    fresh: Vec<(u64, u64)>,
    to_retransmit: usize,
    flight_size: usize,
    pub(crate) cwnd: usize,
    pub(crate) ssthresh: usize,
    partial_bytes_acked: usize,
    /// The last attempt to send new data was stopped by cwnd (so the window is in use and
    /// may grow), as opposed to running out of data.
    cwnd_limited: bool,
    peer_rwnd: usize,
    /// The peer's last SACK advertised a zero window: what times out now is a window
    /// probe, not a sign of congestion.
    window_closed: bool,
    srtt: Option<Duration>,
    rttvar: Duration,
    pub(crate) rto: Duration,
    t3: Option<Instant>,
    fast_recovery: Option<u64>,
    /// cwnd and ssthresh before the last fast recovery, to undo it if it was spurious.
    before_recovery: Option<(usize, usize)>,
    /// Recently fast-retransmitted TSNs: one reported back as a duplicate was not lost.
    fast_retransmitted: VecDeque<u64>,
    reorder_threshold: u8,
    pub(crate) spurious_retransmits: u64,
    ssn: HashMap<u16, u16>,
    next_message: u64,
    /// RFC 3758 Advanced.Peer.Ack.Point.
    advanced_ack: u64,
    forward_tsn_supported: bool,
    /// A FORWARD TSN should go out with the next packet.
    pub(crate) forward_tsn_due: bool,
    /// T3 expiries in a row without progress.
    pub(crate) timeouts: u32,
    pub(crate) retransmitted_chunks: u64,
    cc: CongestionControl,
    /// The model-based controller, with `CongestionControl::Bbr`.
    bbr: Option<Bbr>,
    delivery: Delivery,
    /// Pacing: when the next DATA may go, and the same while data waits for it (a timer).
    next_send: Option<Instant>,
    paced_until: Option<Instant>,
    /// When data held back only by pacing was due (cleared when a packet goes, or when the
    /// windows stop it): a packet sent much later than this was held back by the host.
    pacing_due: Option<Instant>,
    /// RACK: when a chunk still within the reordering window would count as lost.
    rack_timer: Option<Instant>,
    /// T3 expired: the first retransmission may go whatever the flight (§6.3.3 E3), since
    /// the chunks a timeout leaves in flight (RFC 8985 §6.3) may fill the collapsed window.
    rto_retransmit: bool,
}

impl Sender {
    pub fn new(initial_tsn: u32, mtu: usize, peer_rwnd: u32, forward_tsn_supported: bool) -> Sender {
        let start = u64::from(initial_tsn) + (1 << 32);
        Sender {
            mtu,
            next_tsn: start,
            cumulative_acked: start - 1,
            queue: VecDeque::new(),
            queued_bytes: HashMap::new(),
            total_queued: 0,
            in_flight: VecDeque::new(),
            partial_in_flight: 0,
            gap_blocks: Vec::new(),
            spare_gaps: Vec::new(),
            fresh: Vec::new(),
            to_retransmit: 0,
            flight_size: 0,
            // §7.2.1: min(4 MTU, max(2 MTU, 4380)).
            cwnd: (4 * mtu).min((2 * mtu).max(4380)),
            ssthresh: peer_rwnd as usize,
            partial_bytes_acked: 0,
            cwnd_limited: false,
            peer_rwnd: peer_rwnd as usize,
            window_closed: false,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: RTO_INITIAL,
            t3: None,
            fast_recovery: None,
            before_recovery: None,
            fast_retransmitted: VecDeque::new(),
            reorder_threshold: FAST_RETRANSMIT_MISSES,
            spurious_retransmits: 0,
            ssn: HashMap::new(),
            next_message: 0,
            advanced_ack: start - 1,
            forward_tsn_supported,
            forward_tsn_due: false,
            timeouts: 0,
            retransmitted_chunks: 0,
            cc: CongestionControl::default(),
            bbr: None,
            delivery: Delivery::default(),
            next_send: None,
            paced_until: None,
            pacing_due: None,
            rack_timer: None,
            rto_retransmit: false,
        }
    }

    /// Queues a message. Its SSN is taken when its first fragment goes out, so a message
    /// dropped unsent (its lifetime over) leaves no hole in the stream.
    pub fn enqueue(
        &mut self,
        now: Instant,
        stream: u16,
        ppid: u32,
        data: Bytes,
        ordered: bool,
        reliability: Reliability,
    ) {
        *self.queued_bytes.entry(stream).or_default() += data.len();
        self.total_queued += data.len();
        self.next_message += 1;
        self.queue.push_back(Queued {
            stream,
            ppid,
            ordered,
            reliability,
            data,
            offset: 0,
            ssn: 0,
            message: self.next_message,
            queued_at: now,
        });
    }

    /// Messages queued on `stream` with one of `ppids` whose first fragment has not gone
    /// out yet are sent unordered (their SSN is taken only when that fragment goes).
    pub fn unorder_queued(&mut self, stream: u16, ppids: &[u32]) {
        for q in self.queue.iter_mut().filter(|q| q.stream == stream && q.offset == 0) {
            if ppids.contains(&q.ppid) {
                q.ordered = false;
            }
        }
    }

    /// Bytes queued on `stream` and not yet handed to the network.
    pub fn buffered(&self, stream: u16) -> usize {
        self.queued_bytes.get(&stream).copied().unwrap_or(0)
    }

    /// Bytes of `stream` the peer has not acknowledged yet: queued, and sent but not
    /// covered by its cumulative acknowledgement (abandoned chunks left out).
    pub fn unacknowledged(&self, stream: u16) -> usize {
        let flying: usize =
            self.in_flight.iter().filter(|c| c.stream == stream && !c.abandoned).map(|c| c.data.len()).sum();
        self.buffered(stream) + flying
    }

    /// Nothing queued, nothing unacknowledged.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty()
    }

    /// `seed` tells this association's controller apart from others (random phases).
    pub fn set_congestion_control(&mut self, cc: CongestionControl, seed: u64) {
        self.cc = cc;
        self.bbr = (cc == CongestionControl::Bbr).then(|| Bbr::new(self.mtu, self.cwnd, seed));
    }

    /// The last TSN handed out (for a stream reset request).
    pub fn last_assigned_tsn(&self) -> u32 {
        (self.next_tsn - 1) as u32
    }

    /// After an outgoing reset the stream's SSNs start again at 0 (RFC 6525 §5.1.4).
    pub fn reset_ssn(&mut self, streams: &[u16]) {
        for s in streams {
            self.ssn.remove(s);
        }
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.t3, self.paced_until, self.rack_timer].into_iter().flatten().min()
    }

    fn restart_t3(&mut self, now: Instant) {
        self.t3 = Some(now + self.rto);
    }

    /// Writes DATA chunks into `packet` up to `mtu`: retransmissions first, then new data as
    /// the congestion and receive windows allow. Returns true if it wrote any.
    pub fn fill(&mut self, now: Instant, packet: &mut Vec<u8>) -> bool {
        self.paced_until = None;
        if let (Some(_), Some(at)) = (&self.bbr, self.next_send.filter(|&t| t > now)) {
            if self.to_retransmit > 0 || !self.queue.is_empty() {
                self.paced_until = Some(at);
                self.pacing_due = Some(at);
            }
            return false;
        }
        let slack = self.pacing_slack();
        // The host ran the sender later than the pacer can make up: the flight sent around
        // the stall went out below the pacing rate for want of CPU, not of path. Its samples
        // must not pull the model (and so the pacing rate, and so what the next late
        // wake-up sends) down.
        if self.pacing_due.take().is_some_and(|due| now > due + slack) {
            self.delivery.mark_app_limited(self.flight_size);
        }
        let before = packet.len();
        let mut wrote = false;
        if self.to_retransmit > 0 {
            wrote |= self.fill_retransmissions(now, packet);
        }
        while let Some(q) = self.queue.front_mut() {
            let room = self.mtu.saturating_sub(packet.len() + DATA_HEADER) & !3;
            if room < 4 {
                break;
            }
            let left = q.data.len() - q.offset;
            // Do not start a small fragment at the end of a packet when a fresh one holds more.
            if left > room && room < self.mtu / 4 {
                break;
            }
            let take = left.min(room);
            // Windows (§6.1): nothing new while the flight fills cwnd or the peer's window
            // (one chunk may always go when nothing is in flight: the zero window probe).
            if self.flight_size > 0 && (self.flight_size + take > self.cwnd || take > self.peer_rwnd) {
                self.cwnd_limited = self.flight_size + take > self.cwnd;
                break;
            }
            // PR-SCTP: a message past its lifetime before it was sent at all is dropped.
            if q.offset == 0 {
                if let Reliability::MaxLifetime(life) = q.reliability {
                    if now.saturating_duration_since(q.queued_at) > life {
                        let q = self.queue.pop_front().expect("front exists");
                        self.unqueue(q.stream, q.data.len());
                        continue;
                    }
                }
            }
            let mut flags = if q.ordered { 0 } else { FLAG_UNORDERED };
            if q.offset == 0 {
                flags |= FLAG_BEGIN;
                if q.ordered {
                    let next = self.ssn.entry(q.stream).or_insert(0);
                    q.ssn = *next;
                    *next = next.wrapping_add(1);
                }
            }
            if q.offset + take == q.data.len() {
                flags |= FLAG_END;
            }
            let data = q.data.slice(q.offset..q.offset + take);
            q.offset += take;
            let chunk = InFlight {
                tsn: self.next_tsn,
                stream: q.stream,
                ssn: q.ssn,
                ppid: q.ppid,
                flags,
                data,
                transmissions: 1,
                last_sent: now,
                acked: false,
                misses: 0,
                retransmit: false,
                fast_retransmitted: false,
                abandoned: false,
                message: q.message,
                reliability: q.reliability,
                queued_at: q.queued_at,
                snap: self.delivery.on_send(now, self.flight_size == 0),
            };
            let (stream, done) = (q.stream, q.offset == q.data.len());
            if done {
                self.queue.pop_front();
            }
            self.unqueue(stream, take);
            self.next_tsn += 1;
            write(packet, &chunk);
            self.flight_size += take;
            self.peer_rwnd = self.peer_rwnd.saturating_sub(take);
            if chunk.reliability != Reliability::Reliable {
                self.partial_in_flight += 1;
            }
            self.in_flight.push_back(chunk);
            wrote = true;
        }
        if self.queue.is_empty() {
            self.cwnd_limited = false;
            if self.to_retransmit == 0 && self.flight_size < self.cwnd {
                self.delivery.mark_app_limited(self.flight_size);
            }
        }
        if wrote && self.t3.is_none() {
            self.restart_t3(now);
        }
        if let (true, Some(bbr)) = (wrote, &self.bbr) {
            // The next packet goes when this one has left at the pacing rate.
            let sent = Duration::from_secs_f64((packet.len() - before) as f64 / bbr.pacing_rate().max(1.0));
            let floor = now.checked_sub(slack).unwrap_or(now);
            self.next_send = Some(self.next_send.map_or(now, |t| t.max(floor)) + sent);
        }
        wrote
    }

    /// How much lost sending time the pacer makes up at once.
    fn pacing_slack(&self) -> Duration {
        let rtt = self.bbr.as_ref().and_then(Bbr::min_rtt).unwrap_or(Duration::ZERO);
        (rtt / 4).clamp(PACING_SLACK_MIN, PACING_SLACK_MAX)
    }

    fn unqueue(&mut self, stream: u16, bytes: usize) {
        if let Some(b) = self.queued_bytes.get_mut(&stream) {
            *b -= bytes.min(*b);
            if *b == 0 {
                self.queued_bytes.remove(&stream);
            }
        }
        self.total_queued -= bytes.min(self.total_queued);
    }

    fn fill_retransmissions(&mut self, now: Instant, packet: &mut Vec<u8>) -> bool {
        if self.to_retransmit == 0 {
            // What a timeout marked was acknowledged after all (a late SACK) or abandoned.
            self.rto_retransmit = false;
        }
        let mut wrote = false;
        let fast = self.fast_recovery.is_some();
        for i in 0..self.in_flight.len() {
            if self.to_retransmit == 0 {
                break;
            }
            if !self.in_flight[i].retransmit {
                continue;
            }
            // Without PR-SCTP on the peer's side every message is reliable.
            if self.forward_tsn_supported && self.expired(i, now) {
                self.abandon_message(self.in_flight[i].message);
                continue;
            }
            let c = &self.in_flight[i];
            if packet.len() + chunk::data_size(c.data.len()) > self.mtu {
                break;
            }
            // The first retransmission of a fast retransmit ignores cwnd (§7.2.4 step 3), as
            // does the first after a timeout.
            let exempt = (fast || self.rto_retransmit) && !wrote;
            if !exempt && self.flight_size > 0 && self.flight_size + c.data.len() > self.cwnd {
                break;
            }
            // §6.1 A holds for retransmissions too: with the peer's window closed only one
            // chunk is out (the window probe), whatever declared the rest lost. Else a
            // receiver that stopped reading gets the whole flight again on every T3 or RACK
            // timer, and drops it. The chunk that fills the hole below what the peer holds is
            // the exception: a receiver takes it at zero window (§6.2); so is the first after
            // a timeout, the window probe (the chunks a timeout leaves in flight would hold it
            // back until the next, backed-off, timeout).
            let fills_hole =
                c.tsn == self.cumulative_acked + 1 && (!self.gap_blocks.is_empty() || self.rto_retransmit);
            if self.flight_size > 0 && c.data.len() > self.peer_rwnd && !fills_hole {
                break;
            }
            let len = c.data.len();
            self.peer_rwnd = self.peer_rwnd.saturating_sub(len);
            let c = &mut self.in_flight[i];
            c.retransmit = false;
            c.transmissions += 1;
            c.last_sent = now;
            c.misses = 0;
            c.snap = self.delivery.on_send(now, self.flight_size == 0);
            self.to_retransmit -= 1;
            self.flight_size += c.data.len();
            self.retransmitted_chunks += 1;
            write(packet, c);
            wrote = true;
            self.rto_retransmit = false;
        }
        if wrote {
            self.restart_t3(now);
        }
        wrote
    }

    /// Whether chunk `i` is past what its reliability allows.
    fn expired(&self, i: usize, now: Instant) -> bool {
        let c = &self.in_flight[i];
        match c.reliability {
            Reliability::Reliable => false,
            Reliability::MaxRetransmits(n) => c.transmissions > u32::from(n),
            Reliability::MaxLifetime(life) => now.saturating_duration_since(c.queued_at) > life,
        }
    }

    /// Abandons every chunk of `message` (in flight and still queued) (RFC 3758 §3.5).
    fn abandon_message(&mut self, message: u64) {
        for c in self.in_flight.iter_mut().filter(|c| c.message == message && !c.abandoned) {
            if c.retransmit {
                self.to_retransmit -= 1;
            } else if !c.acked {
                self.flight_size -= c.data.len().min(self.flight_size);
            }
            c.abandoned = true;
            c.retransmit = false;
        }
        if let Some(pos) = self.queue.iter().position(|q| q.message == message) {
            let q = self.queue.remove(pos).expect("position is valid");
            self.unqueue(q.stream, q.data.len() - q.offset);
            // The receiver learns the end of this message never comes from FORWARD TSN. When
            // part of it was sent, every sent fragment may already be acknowledged, leaving
            // nothing for a FORWARD TSN to cover and the receiver waiting for the rest (an
            // ordered stream then stalls for good): the missing end gets a TSN of its own,
            // abandoned before it is ever sent, which the FORWARD TSN then skips with the
            // message's SSN.
            if q.offset > 0 {
                let flags = FLAG_END | if q.ordered { 0 } else { FLAG_UNORDERED };
                if q.reliability != Reliability::Reliable {
                    self.partial_in_flight += 1;
                }
                self.in_flight.push_back(InFlight {
                    tsn: self.next_tsn,
                    stream: q.stream,
                    ssn: q.ssn,
                    ppid: q.ppid,
                    flags,
                    data: Bytes::new(),
                    transmissions: 0,
                    last_sent: q.queued_at,
                    acked: false,
                    misses: 0,
                    retransmit: false,
                    fast_retransmitted: false,
                    abandoned: true,
                    message,
                    reliability: q.reliability,
                    queued_at: q.queued_at,
                    snap: Snapshot::default(),
                });
                self.next_tsn += 1;
            }
        }
        self.advance_ack_point();
    }

    fn advance_ack_point(&mut self) {
        let mut point = self.advanced_ack.max(self.cumulative_acked);
        for c in &self.in_flight {
            // Only abandoned chunks are skipped (RFC 3758 C2): one that arrived must still
            // be delivered, and the receiver drops what a FORWARD TSN covers.
            if c.tsn == point + 1 && c.abandoned {
                point = c.tsn;
            } else if c.tsn > point {
                break;
            }
        }
        if point > self.advanced_ack {
            self.advanced_ack = point;
        }
        if self.advanced_ack > self.cumulative_acked && self.forward_tsn_supported {
            self.forward_tsn_due = true;
        }
    }

    /// Writes a FORWARD TSN up to the advanced ack point, naming the last skipped SSN of
    /// each ordered stream.
    pub fn write_forward_tsn(&mut self, packet: &mut Vec<u8>) {
        self.forward_tsn_due = false;
        if self.advanced_ack <= self.cumulative_acked {
            return;
        }
        let mut streams: Vec<(u16, u16)> = Vec::new();
        for c in self.in_flight.iter().take_while(|c| c.tsn <= self.advanced_ack) {
            if c.abandoned && c.flags & FLAG_UNORDERED == 0 {
                match streams.iter_mut().find(|(s, _)| *s == c.stream) {
                    Some(entry) => entry.1 = c.ssn,
                    None => streams.push((c.stream, c.ssn)),
                }
            }
        }
        chunk::write_forward_tsn(packet, self.advanced_ack as u32, &streams);
    }

    /// A cumulative acknowledgement without a SACK (the one a SHUTDOWN carries): a SACK with
    /// no gap blocks and the window we last knew.
    pub fn on_cumulative_ack(&mut self, now: Instant, cumulative_tsn: u32) {
        let window = (self.peer_rwnd + self.flight_size).min(u32::MAX as usize) as u32;
        let mut bytes = Vec::with_capacity(16);
        chunk::write_sack(&mut bytes, cumulative_tsn, window, &[], &[]);
        if let Some(Ok(raw)) = chunk::Chunks::new(&bytes).next() {
            if let Ok(sack) = Sack::parse(raw) {
                self.on_sack(now, &sack);
            }
        }
    }

    /// A SACK from the peer.
    pub fn on_sack(&mut self, now: Instant, sack: &Sack<'_>) -> SackOutcome {
        let mut outcome = SackOutcome::default();
        let cumulative = unwrap(self.cumulative_acked, sack.cumulative_tsn);
        if cumulative < self.cumulative_acked || cumulative >= self.next_tsn {
            // Old or impossible: ignore (§6.2.1 D i).
            return outcome;
        }
        let flight_before = self.flight_size;
        let mut rtt: Option<Duration> = None;
        let min_rtt = self.min_rtt().unwrap_or(Duration::ZERO);
        // Cumulative ack: drop everything up to it.
        while self.in_flight.front().is_some_and(|c| c.tsn <= cumulative) {
            let c = self.in_flight.pop_front().expect("front exists");
            if c.reliability != Reliability::Reliable {
                self.partial_in_flight -= 1;
            }
            if c.counted() {
                self.flight_size -= c.data.len().min(self.flight_size);
            }
            if c.retransmit {
                self.to_retransmit -= 1;
            }
            if !c.acked && !c.abandoned {
                first_ack(&mut self.delivery, &mut outcome, &mut rtt, &c, now, min_rtt);
            }
        }
        if cumulative > self.cumulative_acked {
            outcome.advanced = true;
            self.cumulative_acked = cumulative;
            self.timeouts = 0;
        }
        // Gap blocks: mark newly acked; the highest newly acked TSN drives miss indications.
        // Only the TSNs the previous SACK's blocks did not cover are visited.
        let mut highest_newly_acked: Option<u64> = None;
        let front = self.in_flight.front().map(|c| c.tsn);
        self.new_gap_ranges(cumulative, sack);
        // §6.2.1 D tells an out-of-order SACK only by a cumulative TSN that went back; one
        // with the same cumulative TSN that no longer reports what the last one gap-acked
        // is older still (our receiver never reneges). Its window is out of date: taken, it
        // lets the flight overrun the peer's buffer.
        let stale = !outcome.advanced && !covers(&self.gap_blocks, &self.spare_gaps);
        if stale {
            std::mem::swap(&mut self.gap_blocks, &mut self.spare_gaps);
        }
        for i in 0..self.fresh.len() {
            let (first, last) = self.fresh[i];
            let Some(front) = front else { break };
            for tsn in first.max(front)..=last {
                let Some(c) = self.in_flight.get_mut((tsn - front) as usize) else { break };
                if c.acked {
                    continue;
                }
                if c.retransmit {
                    c.retransmit = false;
                    self.to_retransmit -= 1;
                } else if !c.abandoned {
                    self.flight_size -= c.data.len().min(self.flight_size);
                }
                c.acked = true;
                if !c.abandoned {
                    first_ack(&mut self.delivery, &mut outcome, &mut rtt, c, now, min_rtt);
                }
                highest_newly_acked = Some(tsn);
            }
        }
        if let Some(rtt) = rtt {
            self.measure(rtt);
        }
        self.detect_spurious(sack);
        let flight_marked = self.flight_size;
        if let Some(highest) = highest_newly_acked {
            self.miss_indications(highest);
        }
        if self.bbr.is_some() {
            self.rack_losses(now);
        }
        // What goes missing while the peer's window is (nearly) closed was most likely
        // dropped by the receiver for want of buffer: not a sign of the path's congestion.
        let lost = if self.window_closed || (sack.a_rwnd as usize) < self.mtu {
            0
        } else {
            flight_marked - self.flight_size
        };
        // The peer's window is what it advertised less what is still in flight (§6.2.1).
        let window = (sack.a_rwnd as usize).saturating_sub(self.flight_size);
        self.peer_rwnd = if stale { window.min(self.peer_rwnd) } else { window };
        // §6.1 A: while the peer answers with a closed window, our window probes going
        // unacknowledged do not count against it.
        if !stale {
            self.window_closed = sack.a_rwnd == 0;
        }
        if sack.a_rwnd == 0 {
            self.timeouts = 0;
        }
        match &mut self.bbr {
            Some(bbr) => {
                let sample = self.delivery.take_sample(lost, rtt);
                bbr.on_ack(now, &sample, self.delivery.delivered, self.flight_size);
                self.cwnd = bbr.cwnd();
            }
            None => self.congestion_on_ack(outcome, flight_before),
        }
        if self.fast_recovery.is_some_and(|exit| self.cumulative_acked >= exit) {
            self.fast_recovery = None;
        }
        // T3 (§6.3.2): restart when the cumulative ack moved and data is outstanding; stop
        // when nothing is.
        // PR-SCTP (RFC 3758 §3.5 C1-C3).
        if self.advanced_ack < self.cumulative_acked {
            self.advanced_ack = self.cumulative_acked;
        }
        self.abandon_expired(now);
        self.advance_ack_point();
        // A FORWARD TSN not yet acknowledged keeps the timer too (§3.5 C4).
        let waiting = self.to_retransmit > 0
            || self.advanced_ack > self.cumulative_acked
            || self.in_flight.iter().any(|c| !c.acked && !c.abandoned);
        if !waiting {
            self.t3 = None;
        } else if outcome.advanced || self.t3.is_none() {
            self.restart_t3(now);
        }
        outcome
    }

    /// Puts in `fresh` the TSN ranges the SACK's gap blocks cover that the previous SACK's
    /// did not, and keeps this SACK's blocks (absolute, sorted, merged) for the next one.
    /// Each SACK repeats every block, so without this a long run of loss would be walked
    /// again on every SACK.
    fn new_gap_ranges(&mut self, cumulative: u64, sack: &Sack<'_>) {
        let mut blocks = std::mem::take(&mut self.spare_gaps);
        blocks.clear();
        blocks.extend(
            sack.gaps()
                .filter(|&(start, end)| start != 0 && start <= end)
                .map(|(start, end)| (cumulative + u64::from(start), cumulative + u64::from(end)))
                // Nothing past what was sent can be acknowledged (a peer saying otherwise
                // would otherwise hide the real acknowledgement later).
                .filter(|&(start, _)| start < self.next_tsn)
                .map(|(start, end)| (start, end.min(self.next_tsn - 1))),
        );
        blocks.sort_unstable();
        let mut merged = 0;
        for i in 0..blocks.len() {
            if merged > 0 && blocks[i].0 <= blocks[merged - 1].1 + 1 {
                blocks[merged - 1].1 = blocks[merged - 1].1.max(blocks[i].1);
            } else {
                blocks[merged] = blocks[i];
                merged += 1;
            }
        }
        blocks.truncate(merged);
        self.fresh.clear();
        let previous = &self.gap_blocks;
        let mut j = 0;
        for &(start, end) in &blocks {
            let mut from = start;
            while from <= end {
                while j < previous.len() && previous[j].1 < from {
                    j += 1;
                }
                match previous.get(j) {
                    Some(&(p_start, p_end)) if p_start <= from => from = p_end + 1,
                    Some(&(p_start, _)) if p_start <= end => {
                        self.fresh.push((from, p_start - 1));
                        from = p_start;
                    }
                    _ => {
                        self.fresh.push((from, end));
                        break;
                    }
                }
            }
        }
        self.spare_gaps = std::mem::replace(&mut self.gap_blocks, blocks);
    }

    fn abandon_expired(&mut self, now: Instant) {
        if !self.forward_tsn_supported || self.partial_in_flight == 0 {
            return;
        }
        let expired: Vec<u64> = (0..self.in_flight.len())
            .filter(|&i| {
                // Retransmit limits count only for chunks that need a retransmission; a
                // lifetime ends whether or not the chunk is still on its way.
                let c = &self.in_flight[i];
                let candidate = match c.reliability {
                    Reliability::Reliable => false,
                    Reliability::MaxRetransmits(_) => c.retransmit,
                    Reliability::MaxLifetime(_) => !c.acked,
                };
                candidate && !c.abandoned && self.expired(i, now)
            })
            .map(|i| self.in_flight[i].message)
            .collect();
        for message in expired {
            self.abandon_message(message);
        }
    }

    fn miss_indications(&mut self, highest: u64) {
        let mut new_loss = false;
        for c in self.in_flight.iter_mut().take_while(|c| c.tsn < highest) {
            if c.acked || c.abandoned || c.retransmit || c.fast_retransmitted {
                continue;
            }
            c.misses = c.misses.saturating_add(1);
            if c.misses >= self.reorder_threshold {
                c.retransmit = true;
                c.fast_retransmitted = true;
                self.to_retransmit += 1;
                self.flight_size -= c.data.len().min(self.flight_size);
                self.fast_retransmitted.push_back(c.tsn);
                if self.fast_retransmitted.len() > 64 {
                    self.fast_retransmitted.pop_front();
                }
                new_loss = true;
            }
        }
        if new_loss && self.fast_recovery.is_none() && self.bbr.is_none() {
            // §7.2.3 / §7.2.4: halve once per window, and stay in fast recovery until
            // everything outstanding now is acknowledged.
            self.before_recovery = Some((self.cwnd, self.ssthresh));
            self.ssthresh = (self.cwnd / 2).max(4 * self.mtu);
            self.cwnd = self.ssthresh;
            self.partial_bytes_acked = 0;
            self.fast_recovery = self.in_flight.back().map(|c| c.tsn);
        }
    }

    /// A duplicate reported for a chunk we fast-retransmitted: the original was only late
    /// (reordering, not loss). Undo the window reduction and ask for more evidence next time
    /// (as TCP does with D-SACK, RFC 3708 / RFC 4015 in spirit).
    fn detect_spurious(&mut self, sack: &Sack<'_>) {
        if self.fast_retransmitted.is_empty() {
            return;
        }
        for dup in sack.duplicates() {
            let tsn = unwrap(self.cumulative_acked, dup);
            let Some(pos) = self.fast_retransmitted.iter().position(|&t| t == tsn) else { continue };
            self.fast_retransmitted.remove(pos);
            self.spurious_retransmits += 1;
            self.reorder_threshold = (self.reorder_threshold + 2).min(MAX_REORDER_THRESHOLD);
            if let Some((cwnd, ssthresh)) = self.before_recovery.take() {
                self.cwnd = self.cwnd.max(cwnd);
                self.ssthresh = self.ssthresh.max(ssthresh);
                self.fast_recovery = None;
            }
        }
    }

    fn congestion_on_ack(&mut self, outcome: SackOutcome, flight_before: usize) {
        if !outcome.advanced || self.fast_recovery.is_some() || outcome.acked_bytes == 0 {
            return;
        }
        // Grow only when the window was in use (§7.2.1, §7.2.2): full at this SACK, or the
        // last send stopped at cwnd (SACKs that arrive together each count).
        let full = self.cwnd_limited || flight_before + self.mtu >= self.cwnd;
        if self.cwnd <= self.ssthresh {
            if full {
                self.cwnd += outcome.acked_bytes.min(self.mtu);
            }
        } else {
            self.partial_bytes_acked += outcome.acked_bytes;
            if self.partial_bytes_acked >= self.cwnd && full {
                self.partial_bytes_acked -= self.cwnd;
                self.cwnd += self.mtu;
            }
        }
    }

    /// §6.3.1 RTO from an RTT measurement.
    pub(crate) fn measure(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1))).clamp(RTO_MIN, RTO_MAX);
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smallest RTT the controller knows (the smoothed one without a model).
    fn min_rtt(&self) -> Option<Duration> {
        self.bbr.as_ref().and_then(Bbr::min_rtt).or(self.srtt)
    }

    /// RACK (RFC 8985 §6.2): a chunk is lost once a chunk sent after it was acknowledged
    /// and it has been out longer than that chunk's RTT plus a reordering window (a quarter
    /// of the minimum RTT, widened by each spurious retransmission, at most the smoothed
    /// RTT). Works for retransmissions too, so a lost retransmission need not wait for T3.
    /// Chunks not yet past the window set the RACK timer.
    fn rack_losses(&mut self, now: Instant) {
        self.rack_timer = None;
        let Some(rack_sent) = self.delivery.rack_sent else { return };
        let Some(wait) = self.rack_wait() else { return };
        let mut next: Option<Instant> = None;
        for c in self.in_flight.iter_mut() {
            if c.acked || c.abandoned || c.retransmit || c.transmissions == 0 || c.last_sent >= rack_sent {
                continue;
            }
            let deadline = c.last_sent + wait;
            if now < deadline {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            c.retransmit = true;
            c.fast_retransmitted = true;
            self.to_retransmit += 1;
            self.flight_size -= c.data.len().min(self.flight_size);
            self.fast_retransmitted.push_back(c.tsn);
            if self.fast_retransmitted.len() > 64 {
                self.fast_retransmitted.pop_front();
            }
        }
        self.rack_timer = next;
    }

    /// RACK: how long after it was sent an unacknowledged chunk counts as lost (the RTT of
    /// the newest-sent chunk acknowledged plus the reordering window), once that is known.
    fn rack_wait(&self) -> Option<Duration> {
        self.delivery.rack_sent?;
        let (min_rtt, srtt) = (self.min_rtt()?, self.srtt?);
        let widen = u32::from(self.reorder_threshold.saturating_sub(FAST_RETRANSMIT_MISSES - 1));
        let reorder_window = (min_rtt / 4 * widen).min(srtt);
        Some(self.delivery.rack_rtt + reorder_window)
    }

    /// T3 expired (§6.3.3): back off, collapse the window, resend what is outstanding.
    ///
    /// With RACK (the model-based controller) only what the timeout shows lost is marked
    /// (RFC 8985 §6.3): the first outstanding chunk and those out longer than the RACK wait.
    /// A chunk sent since may still arrive; marked, it would be sent twice, and a partially
    /// reliable one out of retransmissions (maxRetransmits 0) abandoned although it was
    /// never lost: the receiver then drops it when the FORWARD TSN overtakes it. What stays
    /// in flight is caught later by RACK or by the next (backed-off) timeout.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.paced_until.is_some_and(|t| t <= now) {
            self.paced_until = None;
        }
        if self.rack_timer.is_some_and(|t| t <= now) {
            self.rack_losses(now);
        }
        if self.t3.is_none_or(|t| now < t) {
            return;
        }
        self.t3 = None;
        self.timeouts += 1;
        self.rto = (self.rto * 2).min(RTO_MAX);
        // A lost window probe says nothing about the path (RFC 9260 §6.1 A treats probes
        // apart): the congestion window survives a receiver that stopped reading.
        if !self.window_closed {
            self.ssthresh = (self.cwnd / 2).max(4 * self.mtu);
            self.cwnd = self.mtu;
            if let Some(bbr) = &mut self.bbr {
                bbr.on_timeout();
                self.cwnd = bbr.cwnd();
            }
        }
        self.rack_timer = None;
        self.before_recovery = None;
        self.fast_retransmitted.clear();
        self.partial_bytes_acked = 0;
        self.fast_recovery = None;
        let wait = if self.bbr.is_some() { self.rack_wait() } else { None };
        let first = self.in_flight.iter().position(|c| !c.acked && !c.abandoned);
        let mut flight = 0;
        for (i, c) in self.in_flight.iter_mut().enumerate() {
            if !c.acked && !c.abandoned && !c.retransmit {
                let lost = match wait {
                    None => true,
                    Some(wait) => Some(i) == first || c.last_sent + wait <= now,
                };
                if lost {
                    c.retransmit = true;
                    self.to_retransmit += 1;
                } else {
                    flight += c.data.len();
                }
            }
            c.fast_retransmitted = false;
        }
        self.flight_size = flight;
        self.abandon_expired(now);
        self.rto_retransmit = self.to_retransmit > 0;
        if self.forward_tsn_supported && self.advanced_ack > self.cumulative_acked {
            self.forward_tsn_due = true;
        }
        if self.to_retransmit > 0 || self.forward_tsn_due || self.flight_size > 0 {
            self.restart_t3(now);
        }
    }
}

/// Whether the sorted, merged ranges `outer` cover every range of `inner`.
fn covers(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    let mut j = 0;
    inner.iter().all(|&(start, end)| {
        while j < outer.len() && outer[j].1 < start {
            j += 1;
        }
        outer.get(j).is_some_and(|&(s, e)| s <= start && end <= e)
    })
}

/// A chunk is acknowledged for the first time (cumulatively or by a gap block): count it,
/// take its RTT when it was sent once (Karn), and feed the rate sampler.
fn first_ack(
    delivery: &mut Delivery,
    outcome: &mut SackOutcome,
    rtt: &mut Option<Duration>,
    c: &InFlight,
    now: Instant,
    min_rtt: Duration,
) {
    outcome.acked_bytes += c.data.len();
    if c.transmissions == 1 {
        *rtt = Some(now.saturating_duration_since(c.last_sent));
    }
    if c.transmissions > 0 {
        delivery.on_acked(now, &c.snap, c.last_sent, c.data.len(), c.transmissions > 1, min_rtt);
    }
}

fn write(packet: &mut Vec<u8>, c: &InFlight) {
    chunk::write_data(
        packet,
        &Data {
            flags: c.flags,
            tsn: c.tsn as u32,
            stream: c.stream,
            ssn: c.ssn,
            ppid: c.ppid,
            payload: &c.data,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{write_sack, Chunks};

    fn fresh_after(sender: &mut Sender, cumulative: u64, gaps: &[(u16, u16)]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        write_sack(&mut out, cumulative as u32, 1 << 20, gaps, &[]);
        let raw = Chunks::new(&out).next().unwrap().unwrap();
        let sack = Sack::parse(raw).unwrap();
        sender.new_gap_ranges(cumulative, &sack);
        sender.fresh.clone()
    }

    #[test]
    fn a_sack_visits_only_what_the_last_one_did_not_cover() {
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        let c = 1000;
        assert_eq!(fresh_after(&mut s, c, &[(2, 5), (8, 9)]), [(1002, 1005), (1008, 1009)]);
        // The same blocks again: nothing new.
        assert!(fresh_after(&mut s, c, &[(2, 5), (8, 9)]).is_empty());
        // Blocks that grew at both ends and a new one in between; unsorted and overlapping
        // as a peer may send them.
        assert_eq!(
            fresh_after(&mut s, c, &[(8, 12), (1, 6), (7, 7), (3, 4), (20, 20)]),
            [(1001, 1001), (1006, 1007), (1010, 1012), (1020, 1020)]
        );
        // Invalid blocks (start 0, start after end) are ignored.
        assert!(fresh_after(&mut s, c, &[(0, 3), (9, 8), (1, 12)]).is_empty());
        // The cumulative point moved: offsets are relative to it. 1020 counts as new again
        // because the last SACK did not report it.
        assert_eq!(fresh_after(&mut s, 1010, &[(1, 2), (10, 10)]), [(1020, 1020)]);
    }
}

/// A gap block past what was sent.
#[cfg(test)]
mod edge_cases {
    use super::*;
    use crate::chunk::{write_sack, Chunks};

    fn sack(sender: &mut Sender, now: Instant, cumulative: u32, gaps: &[(u16, u16)]) {
        let mut out = Vec::new();
        write_sack(&mut out, cumulative, 1 << 20, gaps, &[]);
        let raw = Chunks::new(&out).next().unwrap().unwrap();
        sender.on_sack(now, &Sack::parse(raw).unwrap());
    }

    #[test]
    fn a_gap_block_past_what_was_sent_does_not_hide_later_acks() {
        // A peer reports a gap block over TSNs we have not sent yet (buggy or hostile).
        // `new_gap_ranges` keeps it as "already covered", so when those TSNs are sent and
        // then truly gap-acked, they are never marked: every later SACK repeats the block
        // and the previous one already "covered" it. They stay in the flight and are
        // retransmitted at T3 although the peer has them.
        let now = Instant::now();
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        let mut packet = Vec::new();
        s.enqueue(now, 0, 53, Bytes::from(vec![0u8; 100]), true, Reliability::Reliable);
        assert!(s.fill(now, &mut packet)); // TSN 0
        sack(&mut s, now, u32::MAX, &[(2, 5)]); // TSNs 1..=4, none sent
        for _ in 0..4 {
            s.enqueue(now, 0, 53, Bytes::from(vec![0u8; 100]), true, Reliability::Reliable);
        }
        packet.clear();
        assert!(s.fill(now, &mut packet)); // TSNs 1..=4
        assert_eq!(s.in_flight.len(), 5);
        // TSN 0 is missing at the peer; 1 and 2 arrived. Twice, as a real peer would repeat.
        sack(&mut s, now, u32::MAX, &[(2, 3)]);
        sack(&mut s, now, u32::MAX, &[(2, 3)]);
        assert!(s.in_flight[1].acked && s.in_flight[2].acked, "TSNs 1 and 2 were gap-acked but not marked");
    }
}

/// The peer's window: out-of-order SACKs and a closed window.
#[cfg(test)]
mod window {
    use super::*;
    use crate::chunk::{write_sack, Chunks};

    fn sack(sender: &mut Sender, now: Instant, cumulative: u32, gaps: &[(u16, u16)], a_rwnd: u32) {
        let mut out = Vec::new();
        write_sack(&mut out, cumulative, a_rwnd, gaps, &[]);
        let raw = Chunks::new(&out).next().unwrap().unwrap();
        sender.on_sack(now, &Sack::parse(raw).unwrap());
    }

    /// A sender with `n` chunks of 1000 bytes in flight, TSNs 0..n.
    fn sending(cc: CongestionControl, now: Instant, n: usize) -> Sender {
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        s.set_congestion_control(cc, 1);
        s.cwnd = 1 << 20;
        for _ in 0..n {
            s.enqueue(now, 0, 53, Bytes::from(vec![0u8; 1000]), true, Reliability::Reliable);
        }
        let mut packet = Vec::new();
        // A millisecond apart: pacing lets each packet go.
        for k in 0..n as u32 {
            s.fill(now + Duration::from_millis(u64::from(k)), &mut packet);
            packet.clear();
        }
        assert_eq!(s.in_flight.len(), n);
        s
    }

    #[test]
    fn a_sack_older_than_the_last_does_not_reopen_the_window() {
        let now = Instant::now();
        for cc in [CongestionControl::Rfc9260, CongestionControl::Bbr] {
            let mut s = sending(cc, now, 10);
            let now = now + Duration::from_millis(40);
            // The newer SACK: TSNs 2..=5 arrived and the window is nearly gone.
            sack(&mut s, now, u32::MAX, &[(3, 6)], 6000);
            assert_eq!(s.peer_rwnd, 0, "{cc:?}: flight {} {:?}", s.flight_size, s.gap_blocks);
            // An older one overtaken on the way (it knows only of TSNs 2..=3 and a wide window).
            sack(&mut s, now, u32::MAX, &[(3, 4)], 1 << 20);
            assert_eq!(s.peer_rwnd, 0, "{cc:?}: a stale SACK reopened the window");
            let base = 1 << 32;
            assert_eq!(s.gap_blocks, [(base + 2, base + 5)], "{cc:?}");
            // The same blocks again (a window update) still count.
            sack(&mut s, now, u32::MAX, &[(3, 6)], 16_000);
            assert_eq!(s.peer_rwnd, 10_000, "{cc:?}");
        }
    }

    #[test]
    fn a_closed_window_gets_one_chunk_after_a_timeout() {
        let now = Instant::now();
        for cc in [CongestionControl::Rfc9260, CongestionControl::Bbr] {
            let mut s = sending(cc, now, 10);
            // The receiver kept TSN 0 and dropped the rest for want of room.
            sack(&mut s, now, 0, &[], 0);
            let later = now + Duration::from_secs(2);
            s.on_timeout(later);
            let mut packet = Vec::new();
            let mut chunks = 0;
            while s.fill(later + Duration::from_secs(1), &mut packet) {
                chunks += Chunks::new(&packet).count();
                packet.clear();
            }
            assert_eq!(chunks, 1, "{cc:?}: the window probe only");
        }
    }

    #[test]
    fn queued_messages_can_turn_unordered_before_they_are_sent() {
        let now = Instant::now();
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        for ppid in [50, 53, 53] {
            s.enqueue(now, 0, ppid, Bytes::from(vec![0u8; 100]), true, Reliability::Reliable);
        }
        s.enqueue(now, 2, 53, Bytes::from(vec![0u8; 100]), true, Reliability::Reliable);
        s.unorder_queued(0, &[53]);
        let mut packet = Vec::new();
        assert!(s.fill(now, &mut packet));
        let unordered: Vec<bool> = s.in_flight.iter().map(|c| c.flags & FLAG_UNORDERED != 0).collect();
        assert_eq!(unordered, [false, true, true, false]);
    }
}

/// Pacing on a host that runs the sender late.
#[cfg(test)]
mod pacing {
    use super::*;

    /// A BBR sender with a large message queued and a wide window, its first packet out at
    /// `now` and the next held back by pacing.
    fn paced(now: Instant) -> Sender {
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        s.set_congestion_control(CongestionControl::Bbr, 1);
        s.cwnd = 1 << 20;
        s.enqueue(now, 0, 53, Bytes::from(vec![0u8; 1 << 20]), true, Reliability::Reliable);
        let mut packet = Vec::new();
        assert!(s.fill(now, &mut packet));
        packet.clear();
        assert!(!s.fill(now, &mut packet), "the second packet waits for the pacer");
        s
    }

    #[test]
    fn a_sender_run_much_later_than_its_pacer_asked_marks_its_samples_app_limited() {
        let now = Instant::now();
        let mut s = paced(now);
        let mut packet = Vec::new();
        // Run 50 ms late (the slack is 1 ms before an RTT is known): what goes out now
        // goes out below the pacing rate for want of CPU.
        assert!(s.fill(now + Duration::from_millis(50), &mut packet));
        assert!(s.in_flight.back().is_some_and(|c| c.snap.app_limited()));
    }

    #[test]
    fn a_sender_run_on_time_does_not_mark_its_samples() {
        let now = Instant::now();
        let mut s = paced(now);
        let mut packet = Vec::new();
        let due = s.poll_timeout().expect("the pacing timer");
        assert!(s.fill(due, &mut packet));
        assert!(s.in_flight.back().is_some_and(|c| !c.snap.app_limited()));
    }
}

/// What a retransmission timeout marks lost.
#[cfg(test)]
mod timeout {
    use super::*;
    use crate::chunk::{write_sack, Chunks};

    fn sack(sender: &mut Sender, now: Instant, cumulative: u64, gaps: &[(u16, u16)]) {
        let mut out = Vec::new();
        write_sack(&mut out, cumulative as u32, 1 << 20, gaps, &[]);
        let raw = Chunks::new(&out).next().unwrap().unwrap();
        sender.on_sack(now, &Sack::parse(raw).unwrap());
    }

    fn send(s: &mut Sender, now: Instant, reliability: Reliability) {
        s.enqueue(now, 0, 53, Bytes::from(vec![0u8; 1000]), false, reliability);
        let mut packet = Vec::new();
        assert!(s.fill(now, &mut packet), "pacing or the window held the chunk back");
    }

    /// A BBR sender with one RTT sample of 100 ms (RTO 300 ms) and a wide window; its first
    /// TSN, and when the sample was taken.
    fn after_an_rtt_sample() -> (Sender, u64, Instant) {
        let t0 = Instant::now();
        let mut s = Sender::new(0, 1200, 1 << 20, true);
        s.set_congestion_control(CongestionControl::Bbr, 1);
        let base = s.next_tsn;
        send(&mut s, t0, Reliability::Reliable);
        let t1 = t0 + Duration::from_millis(100);
        sack(&mut s, t1, base, &[]);
        s.cwnd = 1 << 20;
        (s, base, t1)
    }

    #[test]
    fn a_timeout_abandons_the_overdue_unreliable_chunk_not_the_ones_just_sent() {
        let (mut s, base, t1) = after_an_rtt_sample();
        // TSN 1 (maxRetransmits 0) is lost; TSNs 2..=5 go 250 ms later, still on their way
        // when T3 for TSN 1 expires.
        let unreliable = Reliability::MaxRetransmits(0);
        send(&mut s, t1, unreliable);
        for k in 0..4 {
            send(&mut s, t1 + Duration::from_millis(250 + k), unreliable);
        }
        let t3 = s.poll_timeout().expect("T3 runs");
        assert_eq!(t3, t1 + Duration::from_millis(300));
        s.on_timeout(t3);
        let abandoned: Vec<u64> = s.in_flight.iter().filter(|c| c.abandoned).map(|c| c.tsn - base).collect();
        assert_eq!(abandoned, [1], "only the chunk the timeout shows lost is abandoned");
        assert_eq!(s.advanced_ack, base + 1);
        assert!(s.forward_tsn_due);
        assert_eq!(s.flight_size, 4000, "the rest stays in flight");
        assert!(s.poll_timeout().is_some(), "and T3 watches it");
        // They arrive: the peer acknowledges them (after the FORWARD TSN for TSN 1).
        sack(&mut s, t3 + Duration::from_millis(60), base + 5, &[]);
        assert!(s.idle() && s.flight_size == 0 && s.retransmitted_chunks == 0);
    }

    /// After [`after_an_rtt_sample`], a reliable chunk that is lost and `recent` more sent
    /// 250 ms later, 5 ms apart; then T3 expires. The sender, its first TSN, and the instant.
    fn timed_out_with_recent_chunks(recent: u64) -> (Sender, u64, Instant) {
        let (mut s, base, t1) = after_an_rtt_sample();
        send(&mut s, t1, Reliability::Reliable);
        for k in 0..recent {
            send(&mut s, t1 + Duration::from_millis(250 + 5 * k), Reliability::Reliable);
        }
        let t3 = s.poll_timeout().expect("T3 runs");
        s.on_timeout(t3);
        (s, base, t3)
    }

    #[test]
    fn a_timeout_retransmits_the_first_reliable_chunk_past_a_full_flight() {
        let (mut s, base, t3) = timed_out_with_recent_chunks(8);
        assert!(s.flight_size > s.cwnd, "the chunks left in flight fill the collapsed window");
        let mut packet = Vec::new();
        assert!(s.fill(t3, &mut packet), "the overdue chunk goes at once");
        assert_eq!(s.retransmitted_chunks, 1);
        let retransmitted: Vec<u64> =
            s.in_flight.iter().filter(|c| c.transmissions > 1).map(|c| c.tsn - base).collect();
        assert_eq!(retransmitted, [1]);
    }

    #[test]
    fn a_timeout_retransmits_the_first_chunk_into_a_closed_window() {
        let (mut s, base, t3) = timed_out_with_recent_chunks(4);
        // The peer's window is closed (it stopped reading); chunks stay in flight.
        s.peer_rwnd = 0;
        let mut packet = Vec::new();
        assert!(s.fill(t3, &mut packet), "the first outstanding chunk goes as the window probe");
        let retransmitted: Vec<u64> =
            s.in_flight.iter().filter(|c| c.transmissions > 1).map(|c| c.tsn - base).collect();
        assert_eq!(retransmitted, [1]);
    }
}
