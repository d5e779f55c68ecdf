//! Transport-wide congestion control bookkeeping
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01): the receiver records when each
//! transport-wide sequence number arrived and sends feedback; the sender logs what it sent
//! and matches feedback to it, for a bandwidth estimator to use.

use peerlink_proto::{Serial16, Unwrapper16};
use peerlink_rtp::rtcp::twcc::{DELTA_MICROS, REFERENCE_MILLIS};
use peerlink_rtp::rtcp::TransportCc;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How often feedback is sent while packets arrive (Chromium's default, §3.1 leaves it to
/// the implementation).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
/// Feedback goes out early once this many packets wait for it.
pub const MAX_PENDING: usize = 100;
/// The most statuses in one feedback packet; a longer span is split.
const MAX_STATUSES: u64 = 1000;
const REFERENCE_MICROS: i64 = REFERENCE_MILLIS * 1000;

/// The 24-bit signed wire form of a reference time (§3.1): it wraps.
fn wrap24(v: i64) -> i32 {
    ((v << 40) >> 40) as i32
}

/// How long reported arrivals are kept, so a packet reordered across a feedback can
/// still be reported received (the feedback after it starts again from it, as Chromium's
/// receiver does).
const BACK_WINDOW: Duration = Duration::from_millis(500);
/// The most arrivals kept, whatever their age.
const MAX_HISTORY: usize = 8192;

/// Records arrivals of one transport (all SSRCs sharing the transport-wide sequence) and
/// writes the feedback about them.
#[derive(Debug, Clone)]
pub struct TwccRecorder {
    sender_ssrc: u32,
    media_ssrc: u32,
    /// Arrival times are measured from here (the first packet's arrival).
    epoch: Option<Instant>,
    unwrapper: Unwrapper16,
    /// Arrivals by extended sequence number: those not yet reported, and those reported
    /// within the last [`BACK_WINDOW`].
    arrivals: BTreeMap<u64, Instant>,
    /// Sequence numbers below this were forgotten.
    forgotten_below: u64,
    /// The first sequence number the next feedback reports.
    next_base: Option<u64>,
    feedback_count: u8,
    last_feedback: Option<Instant>,
    late: u64,
}

impl TwccRecorder {
    /// `sender_ssrc`: the SSRC the feedback is sent from.
    pub fn new(sender_ssrc: u32) -> TwccRecorder {
        TwccRecorder {
            sender_ssrc,
            media_ssrc: 0,
            epoch: None,
            unwrapper: Unwrapper16::new(),
            arrivals: BTreeMap::new(),
            forgotten_below: 0,
            next_base: None,
            feedback_count: 0,
            last_feedback: None,
            late: 0,
        }
    }

    /// The media SSRC field of the feedback (Chromium puts one of the media streams' SSRCs
    /// there; receivers ignore it). Zero until set.
    pub fn set_media_ssrc(&mut self, ssrc: u32) {
        self.media_ssrc = ssrc;
    }

    /// Packets that arrived too late to be reported received (their feedback had gone out
    /// and its arrivals were forgotten).
    pub fn late_packets(&self) -> u64 {
        self.late
    }

    /// A packet with the transport-wide sequence number extension arrived.
    pub fn on_packet(&mut self, now: Instant, transport_seq: u16) {
        self.epoch.get_or_insert(now);
        let seq = self.unwrapper.unwrap(Serial16(transport_seq));
        if seq < self.forgotten_below || self.arrivals.contains_key(&seq) {
            // Too late, or a duplicate (which keeps its first arrival).
            self.late += u64::from(seq < self.forgotten_below);
            return;
        }
        self.arrivals.insert(seq, now);
        if self.next_base.is_some_and(|b| seq < b) {
            // Reordered across a feedback: report again from here.
            self.next_base = Some(seq);
        }
        while self.arrivals.len() > MAX_HISTORY {
            if let Some((k, _)) = self.arrivals.pop_first() {
                self.forgotten_below = k + 1;
            }
        }
    }

    fn pending(&self) -> impl Iterator<Item = (&u64, &Instant)> + '_ {
        self.arrivals.range(self.next_base.unwrap_or(0)..)
    }

    /// When feedback is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first = *self.pending().map(|(_, at)| at).min()?;
        if self.pending().nth(MAX_PENDING - 1).is_some() {
            return Some(first);
        }
        Some(self.last_feedback.map_or(first, |at| (at + FEEDBACK_INTERVAL).max(first)))
    }

    /// The next feedback packet, if one is due: every [`FEEDBACK_INTERVAL`] while packets
    /// arrive, sooner when [`MAX_PENDING`] wait. Call again until `None`: a span too long
    /// for one packet goes out in several.
    pub fn poll_feedback(&mut self, now: Instant) -> Option<TransportCc> {
        if self.poll_timeout().is_none_or(|at| at > now) {
            return None;
        }
        let epoch = self.epoch?;
        let (&first, &first_at) = self.pending().next()?;
        let (&last, _) = self.arrivals.last_key_value()?;
        // A long run of losses before what is pending is not worth reporting packet by
        // packet: the sender's log times those out.
        let base = match self.next_base {
            Some(b) if first - b < MAX_STATUSES => b,
            _ => first,
        };
        let micros = |at: Instant| at.saturating_duration_since(epoch).as_micros() as i64;
        let reference = micros(first_at).div_euclid(REFERENCE_MICROS);
        let mut previous = reference * REFERENCE_MICROS;
        let mut deltas = Vec::new();
        let mut end = base;
        while end <= last && end - base < MAX_STATUSES {
            match self.arrivals.get(&end) {
                None => deltas.push(None),
                Some(&at) => {
                    // §3.1.5: deltas in 250 µs, from the previous arrival (the first from
                    // the reference time), rounded; errors do not add up since `previous`
                    // moves by what was sent.
                    let units = (micros(at) - previous + DELTA_MICROS / 2).div_euclid(DELTA_MICROS);
                    // Over 8 s apart: this feedback ends here, the next starts anew.
                    let Ok(delta) = i16::try_from(units) else { break };
                    previous += i64::from(delta) * DELTA_MICROS;
                    deltas.push(Some(delta));
                }
            }
            end += 1;
        }
        self.next_base = Some(end);
        // When it ends early, what is left is due at once (`poll_timeout` is its arrival).
        self.last_feedback = if end <= last { None } else { Some(now) };
        self.forget(now, end);
        let feedback = TransportCc {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: self.media_ssrc,
            base_sequence: base as u16,
            reference_time: wrap24(reference),
            feedback_count: self.feedback_count,
            deltas,
        };
        self.feedback_count = self.feedback_count.wrapping_add(1);
        Some(feedback)
    }

    /// Drops reported arrivals older than [`BACK_WINDOW`].
    fn forget(&mut self, now: Instant, reported_below: u64) {
        let mut forgotten = None;
        self.arrivals.retain(|&seq, &mut at| {
            let keep = seq >= reported_below || now.saturating_duration_since(at) < BACK_WINDOW;
            if !keep {
                forgotten = Some(seq);
            }
            keep
        });
        if let Some(seq) = forgotten {
            self.forgotten_below = self.forgotten_below.max(seq + 1);
        }
    }
}

/// What became of one sent packet, from feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccPacketResult {
    pub sequence: Serial16,
    pub sent: Instant,
    pub size: usize,
    /// Arrival on the receiver's clock in microseconds, origin arbitrary (only differences
    /// mean anything; quantized to 250 µs); `None`: reported not received.
    pub arrival_micros: Option<i64>,
    /// What earlier feedback said of this packet: `None` the first time it is reported,
    /// `Some(true)` received, `Some(false)` lost (a packet reordered across feedback is
    /// reported again, and garbage feedback may repeat anything).
    pub earlier: Option<bool>,
    /// The probe cluster the packet was sent in ([`TwccSendLog::on_sent_probe`]).
    pub probe_cluster: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    size: u32,
    probe_cluster: Option<u32>,
    /// What feedback said so far: received or lost.
    reported: Option<bool>,
    /// A packet went out with this number (a number skipped is held as a placeholder).
    logged: bool,
}

/// The sender's log of packets sent with transport-wide sequence numbers.
///
/// The numbers are the sender's own, handed out one after the other: the log is a ring
/// indexed by the number (32 bytes a packet), not a map. It holds at most `capacity`
/// packets and none sent more than `max_age` before the newest: an SFU keeps one log per
/// subscriber, and a log of a fixed count filled over tens of seconds at a few hundred
/// packets per second (a map of 10,000 packets took about 0.9 MB per subscriber).
#[derive(Debug, Clone)]
pub struct TwccSendLog {
    capacity: usize,
    max_age: Duration,
    unwrapper: Unwrapper16,
    /// The unwrapped number of `sent[0]`.
    first: u64,
    sent: VecDeque<Sent>,
    /// Packets logged (placeholders not counted).
    logged: usize,
    /// The last reference time seen, extended beyond 24 bits.
    reference: Option<i64>,
}

impl TwccSendLog {
    /// Remembers the last `capacity` packets sent, however old.
    pub fn new(capacity: usize) -> TwccSendLog {
        TwccSendLog::with_max_age(capacity, Duration::MAX)
    }

    /// Remembers the last `capacity` packets sent, none sent more than `max_age` before
    /// the newest (feedback on older ones is ignored).
    pub fn with_max_age(capacity: usize, max_age: Duration) -> TwccSendLog {
        TwccSendLog {
            capacity: capacity.max(1),
            max_age,
            unwrapper: Unwrapper16::new(),
            first: 0,
            sent: VecDeque::new(),
            logged: 0,
            reference: None,
        }
    }

    /// A packet with this transport-wide sequence number and `size` bytes went out.
    pub fn on_sent(&mut self, now: Instant, transport_seq: u16, size: usize) {
        self.on_sent_probe(now, transport_seq, size, None);
    }

    /// [`TwccSendLog::on_sent`] for a packet of a probe cluster, whose results carry it.
    pub fn on_sent_probe(&mut self, now: Instant, transport_seq: u16, size: usize, cluster: Option<u32>) {
        let seq = self.unwrapper.unwrap(Serial16(transport_seq));
        let entry = Sent {
            at: now,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            probe_cluster: cluster,
            reported: None,
            logged: true,
        };
        let end = self.first + self.sent.len() as u64;
        if self.sent.is_empty() || seq >= end.saturating_add(self.capacity as u64) {
            // The first packet, or one so far ahead that nothing logged stays in reach.
            self.sent.clear();
            self.logged = 0;
            self.first = seq;
        } else if seq < self.first {
            // Older than everything held: it would be let go at once.
            return;
        } else if seq < end {
            // Logged again (or a placeholder filled): the later send counts.
            let i = (seq - self.first) as usize;
            let old = std::mem::replace(&mut self.sent[i], entry);
            self.logged += usize::from(!old.logged);
            self.expire(now);
            return;
        }
        // Numbers skipped are placeholders, so that the ring stays indexed by number.
        let placeholder = Sent { logged: false, ..entry };
        while self.first + (self.sent.len() as u64) < seq {
            self.sent.push_back(placeholder);
        }
        self.sent.push_back(entry);
        self.logged += 1;
        while self.sent.len() > self.capacity {
            self.pop_front();
        }
        self.expire(now);
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.sent.pop_front() {
            self.first += 1;
            self.logged -= usize::from(old.logged);
        }
    }

    /// Lets go of packets sent more than `max_age` before `now`.
    fn expire(&mut self, now: Instant) {
        // `at < now - max_age` is `now - at > max_age`, with one subtraction a call, not one
        // a packet (nothing is that old when `now - max_age` is before any instant).
        let cutoff = now.checked_sub(self.max_age);
        while self.sent.front().is_some_and(|s| !s.logged || cutoff.is_some_and(|c| s.at < c)) {
            self.pop_front();
        }
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.logged
    }

    /// Memory the log takes (its ring's capacity), bytes.
    pub fn bytes(&self) -> usize {
        self.sent.capacity() * std::mem::size_of::<Sent>()
    }

    pub fn is_empty(&self) -> bool {
        self.logged == 0
    }

    /// The packets `feedback` speaks of that are in the log, in its order. Feedback is
    /// input from the network: anything it says of packets not sent is ignored.
    pub fn on_feedback(&mut self, feedback: &TransportCc) -> Vec<TwccPacketResult> {
        // The 24-bit reference time wraps; take the value nearest the last one.
        let wire = i64::from(feedback.reference_time);
        let reference = match self.reference {
            None => wire,
            Some(last) => {
                let cycle = 1i64 << 24;
                let k = last.saturating_sub(wire).saturating_add(cycle / 2).div_euclid(cycle);
                wire.saturating_add(k.saturating_mul(cycle))
            }
        };
        self.reference = Some(reference);
        // Saturating: a long run of garbage reference times must not overflow.
        let mut arrival = reference.saturating_mul(REFERENCE_MICROS);
        let mut out = Vec::new();
        for p in feedback.packets() {
            let status = p.delta.map(|d| {
                arrival = arrival.saturating_add(i64::from(d) * DELTA_MICROS);
                arrival
            });
            let seq = self.unwrapper.peek(p.sequence);
            let held = seq.checked_sub(self.first).and_then(|i| usize::try_from(i).ok());
            if let Some(s) = held.and_then(|i| self.sent.get_mut(i)).filter(|s| s.logged) {
                let earlier = s.reported;
                // Once received, always received.
                s.reported = Some(earlier == Some(true) || status.is_some());
                out.push(TwccPacketResult {
                    sequence: p.sequence,
                    sent: s.at,
                    size: s.size as usize,
                    arrival_micros: status,
                    earlier,
                    probe_cluster: s.probe_cluster,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_rtp::RtcpPacket;

    const MS: Duration = Duration::from_millis(1);

    /// Encodes and parses back, as the sender would receive it.
    fn over_the_wire(fb: &TransportCc) -> TransportCc {
        let mut buf = Vec::new();
        fb.encode(&mut buf).unwrap();
        let parsed = RtcpPacket::parse_all(&buf).next();
        match parsed {
            Some(Ok(RtcpPacket::TransportCc(t))) => t,
            other => panic!("not transport-cc: {other:?}"),
        }
    }

    /// Sends `seqs` at `sent`, delivers `arrivals` (seq, arrival) and checks the results.
    fn check(start_seq: u16, count: u16, arrivals: &[(u16, Duration)]) {
        let t0 = Instant::now();
        let mut log = TwccSendLog::new(1000);
        let mut rec = TwccRecorder::new(5);
        for i in 0..count {
            log.on_sent(t0 + MS * u32::from(i), start_seq.wrapping_add(i), 1000 + usize::from(i));
        }
        let first_arrival = t0 + arrivals[0].1;
        let mut now = t0;
        let mut results = Vec::new();
        for &(seq, at) in arrivals {
            now = t0 + at;
            rec.on_packet(now, seq);
            while let Some(fb) = rec.poll_feedback(now) {
                results.extend(log.on_feedback(&over_the_wire(&fb)));
            }
        }
        while let Some(at) = rec.poll_timeout() {
            now = now.max(at);
            let fb = rec.poll_feedback(now).expect("due");
            results.extend(log.on_feedback(&over_the_wire(&fb)));
        }
        // A packet reordered across feedback is reported again: the last word counts.
        let mut last = std::collections::HashMap::new();
        for r in &results {
            assert_eq!(r.size, 1000 + usize::from(r.sequence.0.wrapping_sub(start_seq)));
            last.insert(r.sequence.0, r.arrival_micros);
        }
        // Each arrival comes back within rounding, relative to the first.
        let origin = last[&arrivals[0].0].unwrap();
        for &(seq, at) in arrivals {
            let want = (t0 + at - first_arrival).as_micros() as i64;
            let got = last[&seq].expect("received") - origin;
            assert!((got - want).abs() <= 250, "seq {seq}: {got} vs {want}");
        }
        // Every packet sent is reported; those that did not arrive as lost.
        let lost = last.values().filter(|a| a.is_none()).count();
        assert_eq!(last.len() - lost, arrivals.len());
        assert_eq!(last.len(), usize::from(count));
    }

    #[test]
    fn arrivals_round_trip_through_encoded_feedback() {
        let arrivals: Vec<_> = (0..300u16)
            .filter(|i| i % 7 != 3)
            .map(|i| (i, MS * 20 + Duration::from_micros(u64::from(i) * 1337)))
            .collect();
        check(0, 300, &arrivals);
    }

    #[test]
    fn reordering_losses_and_the_wrap_are_reported() {
        let base = 65_530u16;
        let mut arrivals = Vec::new();
        for i in 0..40u16 {
            if i == 4 || i == 9 || i == 10 {
                continue; // lost
            }
            // Pairs swapped: negative deltas on the wire.
            let slot = if i % 2 == 0 { i + 1 } else { i - 1 };
            arrivals.push((base.wrapping_add(i), MS * 100 + MS * u32::from(slot) * 3));
        }
        arrivals.sort_by_key(|a| a.1);
        check(base, 40, &arrivals);
    }

    #[test]
    fn far_apart_arrivals_split_the_feedback() {
        check(7, 3, &[(7, MS), (8, MS * 10_001), (9, MS * 10_002)]);
        // 10 s between two packets does not fit a 16-bit delta: two feedbacks at once.
        let t0 = Instant::now();
        let mut rec = TwccRecorder::new(1);
        rec.on_packet(t0, 7);
        rec.on_packet(t0 + 10_000 * MS, 8);
        let now = t0 + 10_000 * MS;
        let a = rec.poll_feedback(now).unwrap();
        let b = rec.poll_feedback(now).unwrap();
        assert_eq!((a.base_sequence, a.deltas.len(), b.base_sequence, b.deltas.len()), (7, 1, 8, 1));
        assert!(rec.poll_feedback(now).is_none());
    }

    #[test]
    fn a_packet_reordered_across_feedback_is_reported_again() {
        let t0 = Instant::now();
        let mut rec = TwccRecorder::new(1);
        rec.on_packet(t0, 1);
        rec.on_packet(t0, 3);
        let fb = rec.poll_feedback(t0).unwrap();
        assert_eq!(fb.deltas[1], None);
        rec.on_packet(t0 + MS, 2);
        rec.on_packet(t0 + MS, 4);
        let fb = rec.poll_feedback(t0 + 50 * MS).unwrap();
        assert_eq!(fb.base_sequence, 2);
        assert!(fb.deltas.iter().all(Option::is_some));
        assert_eq!(fb.deltas.len(), 3);
        // Once forgotten, a late packet is only counted.
        rec.on_packet(t0 + 600 * MS, 5);
        rec.poll_feedback(t0 + 600 * MS).unwrap();
        rec.on_packet(t0 + 601 * MS, 0);
        assert_eq!(rec.late_packets(), 1);
        assert_eq!(rec.poll_timeout(), None);
    }

    #[test]
    fn feedback_is_paced_and_counted() {
        let t0 = Instant::now();
        let mut rec = TwccRecorder::new(1);
        rec.set_media_ssrc(2);
        assert_eq!(rec.poll_timeout(), None);
        rec.on_packet(t0, 10);
        let fb = rec.poll_feedback(t0).unwrap();
        assert_eq!((fb.sender_ssrc, fb.media_ssrc, fb.base_sequence, fb.feedback_count), (1, 2, 10, 0));
        assert_eq!(fb.deltas.len(), 1);
        rec.on_packet(t0 + MS, 12);
        assert_eq!(rec.poll_timeout(), Some(t0 + 50 * MS));
        assert!(rec.poll_feedback(t0 + 49 * MS).is_none());
        // 100 waiting: feedback right away.
        for s in 13..112 {
            rec.on_packet(t0 + 2 * MS, s);
        }
        let fb = rec.poll_feedback(t0 + 2 * MS).unwrap();
        assert_eq!((fb.base_sequence, fb.feedback_count, fb.deltas.len()), (11, 1, 101));
        assert_eq!(fb.deltas[0], None);
        assert_eq!(rec.poll_timeout(), None);
    }

    #[test]
    fn a_long_loss_run_is_skipped_not_reported() {
        let t0 = Instant::now();
        let mut rec = TwccRecorder::new(1);
        rec.on_packet(t0, 0);
        rec.poll_feedback(t0).unwrap();
        rec.on_packet(t0 + MS, 5000);
        let fb = rec.poll_feedback(t0 + 50 * MS).unwrap();
        assert_eq!((fb.base_sequence, fb.deltas.len()), (5000, 1));
    }

    #[test]
    fn garbage_feedback_never_panics_the_send_log() {
        let t0 = Instant::now();
        let mut log = TwccSendLog::new(100);
        for s in 0..100 {
            log.on_sent(t0, s, 10);
        }
        let mut rng = crate::TestRng::new(11);
        for body in rng.garbage(3000, 80) {
            if let Ok(fb) = TransportCc::decode(&body) {
                for r in log.on_feedback(&fb) {
                    assert!(r.sequence.0 < 100);
                }
            }
        }
        assert!(TransportCc::decode(&[]).is_err());
        assert_eq!(log.len(), 100);
    }

    #[test]
    fn the_send_log_holds_max_age_of_a_steady_stream_not_its_capacity() {
        // 560 packets a second (four forwarded videos and their audio) for 30 s: the log
        // holds the last 5 s, in a ring of 32 bytes a packet, and still matches feedback.
        let t0 = Instant::now();
        let mut log = TwccSendLog::with_max_age(10_000, Duration::from_secs(5));
        let us = |i: u32| Duration::from_micros(u64::from(i) * 1_000_000 / 560);
        for i in 0..(560 * 30u32) {
            log.on_sent(t0 + us(i), i as u16, 1200);
        }
        assert!((2800..=2801).contains(&log.len()), "{} held", log.len());
        assert!(log.bytes() <= 4096 * 32, "{} bytes", log.bytes());
        assert_eq!(std::mem::size_of::<Sent>(), 32);
        let last = 560 * 30 - 1;
        let now = t0 + us(last) + 20 * MS;
        // A packet sent 0.5 s ago is matched, one sent 5.36 s ago was let go.
        let received = |seq: u32, log: &mut TwccSendLog| {
            let mut rec = TwccRecorder::new(1);
            rec.on_packet(now, seq as u16);
            let fb = rec.poll_feedback(now + 50 * MS).expect("due");
            log.on_feedback(&over_the_wire(&fb)).iter().map(|r| r.sequence.0).collect::<Vec<u16>>()
        };
        assert_eq!(received(last - 280, &mut log), vec![(last - 280) as u16]);
        assert_eq!(received(last - 3000, &mut log), Vec::<u16>::new());
    }

    #[test]
    fn the_send_log_keeps_a_packet_max_age_old_and_lets_one_nanosecond_older_go() {
        const NS: Duration = Duration::from_nanos(1);
        let age = 100 * MS;
        let t0 = Instant::now();
        let mut log = TwccSendLog::with_max_age(100, age);
        log.on_sent(t0, 1, 10);
        log.on_sent(t0 + age, 2, 10);
        assert_eq!(log.len(), 2);
        log.on_sent(t0 + age + NS, 3, 10);
        assert_eq!(log.len(), 2);
        // What is left is 2 and 3: feedback on 1 is ignored.
        let fb = TransportCc { base_sequence: 1, deltas: vec![Some(4); 3], ..Default::default() };
        let seqs: Vec<u16> = log.on_feedback(&fb).iter().map(|r| r.sequence.0).collect();
        assert_eq!(seqs, [2, 3]);
        // Without a max age nothing goes by age.
        let mut log = TwccSendLog::new(100);
        log.on_sent(t0, 1, 10);
        log.on_sent(t0 + Duration::from_secs(3600), 2, 10);
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn the_send_log_keeps_numbers_skipped_repeated_or_far_ahead_apart() {
        let t0 = Instant::now();
        let mut log = TwccSendLog::new(100);
        log.on_sent(t0, 65_534, 10);
        log.on_sent(t0, 1, 11); // 65535 and 0 skipped, across the wrap
        log.on_sent(t0, 1, 12); // sent again: the later one counts
        assert_eq!(log.len(), 2);
        let mut rec = TwccRecorder::new(1);
        for seq in [65_534u16, 65_535, 0, 1] {
            rec.on_packet(t0, seq);
        }
        let fb = rec.poll_feedback(t0 + 50 * MS).expect("due");
        let got: Vec<(u16, usize)> =
            log.on_feedback(&over_the_wire(&fb)).iter().map(|r| (r.sequence.0, r.size)).collect();
        assert_eq!(got, vec![(65_534, 10), (1, 12)]);
        // Far ahead: what was held is out of reach and goes.
        log.on_sent(t0, 5000, 13);
        assert_eq!(log.len(), 1);
        // Older than everything held: nothing to keep it for.
        log.on_sent(t0, 4000, 14);
        assert_eq!(log.len(), 1);
    }
}
