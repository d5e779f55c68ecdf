//! Which packets to ask for again (generic NACK, RFC 4585 §6.2.1, §3.5): holes in the
//! sequence numbers of a received stream, asked for after a short reorder grace and again
//! every round trip until they arrive, are asked too often, or fall too far behind.

use peerlink_proto::{Serial16, Unwrapper16};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Settings of a [`NackGenerator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackConfig {
    /// A hole further than this behind the newest packet is given up; a jump ahead by more
    /// than this is not repaired at all (a key frame is asked for instead).
    pub max_age_packets: u16,
    /// How many times one packet is asked for.
    pub max_retries: u8,
    /// How long a hole may stay before the first NACK: reordering usually fills it sooner.
    pub initial_delay: Duration,
    /// The shortest time between two NACKs of one packet, whatever the round-trip time.
    pub min_retry_interval: Duration,
}

impl Default for NackConfig {
    fn default() -> NackConfig {
        NackConfig {
            max_age_packets: 1000,
            max_retries: 10,
            initial_delay: Duration::from_millis(10),
            min_retry_interval: Duration::from_millis(20),
        }
    }
}

/// What a [`NackGenerator`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Lists returned by [`NackGenerator::poll_nack`] (each one NACK packet).
    pub nacks_sent: u64,
    /// Sequence numbers asked for, each retry counted again.
    pub packets_requested: u64,
    /// Packets asked for that arrived afterwards.
    pub recovered: u64,
    /// Packets no longer asked for: too many retries, too old, or skipped by a jump.
    pub given_up: u64,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    last_sent: Option<Instant>,
    retries: u8,
}

/// Round-trip time assumed until [`NackGenerator::set_rtt`] is called.
const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// How many of the latest sequence numbers are remembered as received, to tell copies.
const SEEN: usize = 512;

/// NACK scheduling for one received stream (one SSRC; packets repaired through RTX are
/// fed in with their original sequence number).
#[derive(Debug, Clone)]
pub struct NackGenerator {
    config: NackConfig,
    unwrapper: Unwrapper16,
    missing: BTreeMap<u64, Missing>,
    rtt: Duration,
    keyframe_needed: bool,
    stats: NackStats,
    /// Received packets by slot (`ext % SEEN`): the unwrapped number + 1 of the last one
    /// that took the slot (0: none). Empty until the first packet.
    seen: Vec<u64>,
}

impl NackGenerator {
    pub fn new(config: NackConfig) -> NackGenerator {
        NackGenerator {
            config: NackConfig { max_age_packets: config.max_age_packets.max(1), ..config },
            unwrapper: Unwrapper16::new(),
            missing: BTreeMap::new(),
            rtt: DEFAULT_RTT,
            seen: Vec::new(),
            keyframe_needed: false,
            stats: NackStats::default(),
        }
    }

    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// The current round-trip time (from RTCP reports); retries wait this long, at least
    /// the configured floor.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// The holes being asked for.
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }

    /// Marks `ext` received; whether it was not already (among the last [`SEEN`]).
    fn mark_seen(&mut self, ext: u64) -> bool {
        if self.seen.is_empty() {
            self.seen = vec![0; SEEN];
        }
        let slot = &mut self.seen[(ext % SEEN as u64) as usize];
        let new = *slot != ext + 1;
        *slot = ext + 1;
        new
    }

    /// A packet arrived: `is_retransmission` when it came through RTX. Returns whether it
    /// is new, `false` for a copy of one of the last 512 received (a sender's redundant
    /// RTX padding, a retransmission that crossed the original). Anything else is new:
    /// ahead, a hole filled, late, reordered, or from after a jump either way.
    pub fn on_packet(&mut self, now: Instant, seq: Serial16, is_retransmission: bool) -> bool {
        let Some(highest) = self.unwrapper.highest() else {
            let ext = self.unwrapper.unwrap(seq);
            return self.mark_seen(ext);
        };
        let ext = self.unwrapper.peek(seq);
        let new = self.mark_seen(ext);
        if ext <= highest {
            if let Some(m) = self.missing.remove(&ext) {
                if is_retransmission || m.retries > 0 {
                    self.stats.recovered += 1;
                }
            }
            return new;
        }
        self.unwrapper.unwrap(seq);
        let gap = ext - highest - 1;
        if gap > u64::from(self.config.max_age_packets) {
            // Too many to repair in time: start over from here with a key frame.
            self.stats.given_up += self.missing.len() as u64 + gap;
            self.missing.clear();
            self.keyframe_needed = true;
            return true;
        }
        for hole in highest + 1..ext {
            self.missing.insert(hole, Missing { since: now, last_sent: None, retries: 0 });
        }
        self.forget_old(ext);
        true
    }

    /// Drops holes more than `max_age_packets` behind `highest`.
    fn forget_old(&mut self, highest: u64) {
        let oldest = highest.saturating_sub(u64::from(self.config.max_age_packets));
        while let Some(entry) = self.missing.first_entry() {
            if *entry.key() >= oldest {
                break;
            }
            entry.remove();
            self.stats.given_up += 1;
        }
    }

    /// Whether a key frame should be asked for since the last call (a jump too large to
    /// repair); clears the flag. Feed it to [`crate::KeyframeRequests::request`].
    pub fn needs_keyframe(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_needed)
    }

    fn retry_interval(&self) -> Duration {
        self.rtt.max(self.config.min_retry_interval)
    }

    fn due(&self, m: &Missing) -> Instant {
        match m.last_sent {
            None => m.since + self.config.initial_delay,
            Some(at) => at + self.retry_interval(),
        }
    }

    /// The sequence numbers to NACK now, in ascending order (for
    /// [`peerlink_rtp::rtcp::Nack::pairs_for`]); `None` when nothing is due.
    pub fn poll_nack(&mut self, now: Instant) -> Option<Vec<Serial16>> {
        let max_retries = self.config.max_retries;
        let mut due = Vec::new();
        let mut given_up = 0;
        let interval = self.retry_interval();
        let initial = self.config.initial_delay;
        self.missing.retain(|&seq, m| {
            let at = match m.last_sent {
                None => m.since + initial,
                Some(sent) => sent + interval,
            };
            if at > now {
                return true;
            }
            if m.retries >= max_retries {
                given_up += 1;
                return false;
            }
            m.retries += 1;
            m.last_sent = Some(now);
            due.push(Serial16(seq as u16));
            true
        });
        self.stats.given_up += given_up;
        if due.is_empty() {
            return None;
        }
        self.stats.nacks_sent += 1;
        self.stats.packets_requested += due.len() as u64;
        Some(due)
    }

    /// When [`NackGenerator::poll_nack`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.values().map(|m| self.due(m)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn generator() -> NackGenerator {
        NackGenerator::new(NackConfig {
            max_age_packets: 100,
            max_retries: 3,
            initial_delay: 10 * MS,
            min_retry_interval: 20 * MS,
        })
    }

    fn feed(g: &mut NackGenerator, now: Instant, seqs: impl IntoIterator<Item = u16>) {
        for s in seqs {
            g.on_packet(now, Serial16(s), false);
        }
    }

    #[test]
    fn only_copies_are_not_new_whatever_the_order() {
        let t = Instant::now();
        // Reordered at the start: the earlier number after the later.
        let mut g = generator();
        assert!(g.on_packet(t, Serial16(101), false));
        assert!(g.on_packet(t, Serial16(100), false));
        assert!(!g.on_packet(t, Serial16(100), true));
        // A stray far ahead (a jump past the holes kept): the stream's own packets after it
        // are new, not taken for copies.
        assert!(g.on_packet(t, Serial16(30_000), false));
        for seq in 102..110u16 {
            assert!(g.on_packet(t, Serial16(seq), false), "{seq}");
        }
        // A sender that starts its numbers over, far back.
        let mut g = generator();
        for seq in 5_000..5_010u16 {
            assert!(g.on_packet(t, Serial16(seq), false));
        }
        for seq in 10..20u16 {
            assert!(g.on_packet(t, Serial16(seq), false), "{seq}");
        }
        assert!(!g.on_packet(t, Serial16(15), true));
        // A repair arriving after its hole was given up on is still new.
        let mut g = generator();
        assert!(g.on_packet(t, Serial16(1), false));
        assert!(g.on_packet(t, Serial16(3), false));
        let mut at = t;
        while g.missing_count() > 0 {
            at += 100 * MS;
            g.poll_nack(at);
        }
        assert!(g.on_packet(at, Serial16(2), true));
    }

    #[test]
    fn copies_of_received_packets_are_not_new_but_holes_filled_late_are() {
        let mut g = generator();
        let t = Instant::now();
        assert!(g.on_packet(t, Serial16(65_534), false));
        assert!(g.on_packet(t, Serial16(65_535), false));
        // 0 and 1 missing (across the wrap), 2 arrives.
        assert!(g.on_packet(t, Serial16(2), false));
        // A redundant copy of something received, by RTX or not: not new.
        assert!(!g.on_packet(t, Serial16(65_535), true));
        assert!(!g.on_packet(t, Serial16(2), false));
        // The holes, late or repaired: new once, copies after that.
        assert!(g.on_packet(t, Serial16(1), false));
        assert!(g.on_packet(t, Serial16(0), true));
        assert!(!g.on_packet(t, Serial16(0), true));
        assert!(!g.on_packet(t, Serial16(1), true));
        assert!(g.on_packet(t, Serial16(3), false));
        assert_eq!(g.missing_count(), 0);
    }

    #[test]
    fn a_lost_packet_is_asked_for_after_the_grace() {
        let t0 = Instant::now();
        let mut g = generator();
        feed(&mut g, t0, [1, 2, 4, 5]);
        assert_eq!(g.poll_nack(t0 + 9 * MS), None);
        assert_eq!(g.poll_timeout(), Some(t0 + 10 * MS));
        assert_eq!(g.poll_nack(t0 + 10 * MS), Some(vec![Serial16(3)]));
        // Retransmitted: recovered, nothing more to ask.
        g.on_packet(t0 + 40 * MS, Serial16(3), true);
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.poll_nack(t0 + 500 * MS), None);
        let s = g.stats();
        assert_eq!((s.nacks_sent, s.packets_requested, s.recovered, s.given_up), (1, 1, 1, 0));
    }

    #[test]
    fn reordering_within_the_grace_sends_no_nack() {
        let t0 = Instant::now();
        let mut g = generator();
        feed(&mut g, t0, [10, 13, 11]);
        feed(&mut g, t0 + 5 * MS, [12, 14]);
        assert_eq!(g.poll_nack(t0 + 100 * MS), None);
        assert_eq!(g.stats(), NackStats::default());
        // Duplicates and old packets change nothing.
        feed(&mut g, t0 + 6 * MS, [12, 3]);
        assert_eq!(g.missing_count(), 0);
    }

    #[test]
    fn holes_across_the_wrap_are_asked_for() {
        let t0 = Instant::now();
        let mut g = generator();
        feed(&mut g, t0, [65_533, 65_534, 1, 2]);
        let want = vec![Serial16(65_535), Serial16(0)];
        assert_eq!(g.poll_nack(t0 + 10 * MS), Some(want));
        g.on_packet(t0, Serial16(0), true);
        assert_eq!(g.missing_count(), 1);
    }

    #[test]
    fn a_huge_jump_clears_and_asks_for_a_key_frame() {
        let t0 = Instant::now();
        let mut g = generator();
        feed(&mut g, t0, [1, 3]);
        assert!(!g.needs_keyframe());
        feed(&mut g, t0, [3 + 102]);
        assert!(g.needs_keyframe());
        assert!(!g.needs_keyframe(), "the flag is taken once");
        assert_eq!(g.missing_count(), 0);
        assert_eq!(g.stats().given_up, 1 + 101);
        // Counting goes on from the new place.
        feed(&mut g, t0, [107]);
        assert_eq!(g.poll_nack(t0 + 10 * MS), Some(vec![Serial16(106)]));
        // A jump of exactly max_age is still repaired.
        feed(&mut g, t0 + 10 * MS, [208]);
        assert!(!g.needs_keyframe());
        assert_eq!(g.missing_count(), 100);
    }

    #[test]
    fn retries_follow_the_rtt_and_then_give_up() {
        let t0 = Instant::now();
        let mut g = generator();
        g.set_rtt(50 * MS);
        feed(&mut g, t0, [1, 3]);
        let mut sent = Vec::new();
        let mut now = t0;
        while let Some(at) = g.poll_timeout() {
            now = at;
            if g.poll_nack(now).is_some() {
                sent.push(now - t0);
            }
        }
        assert_eq!(sent, vec![10 * MS, 60 * MS, 110 * MS]);
        assert_eq!(now - t0, 160 * MS);
        let s = g.stats();
        assert_eq!((s.nacks_sent, s.packets_requested, s.recovered, s.given_up), (3, 3, 0, 1));
        // A short RTT is floored.
        let mut g = generator();
        g.set_rtt(MS);
        feed(&mut g, t0, [1, 3]);
        assert!(g.poll_nack(t0 + 10 * MS).is_some());
        assert_eq!(g.poll_timeout(), Some(t0 + 30 * MS));
    }

    #[test]
    fn holes_too_far_behind_are_given_up() {
        let t0 = Instant::now();
        let mut g = generator();
        feed(&mut g, t0, [1, 3]);
        feed(&mut g, t0, 4..=102);
        assert_eq!(g.missing_count(), 1);
        feed(&mut g, t0, [103]);
        assert_eq!(g.missing_count(), 0);
        assert_eq!(g.stats().given_up, 1);
    }

    #[test]
    fn random_sequence_numbers_stay_bounded() {
        let t0 = Instant::now();
        let mut g = generator();
        let mut rng = crate::TestRng::new(3);
        for i in 0..20_000u32 {
            let now = t0 + MS * (i / 10);
            g.on_packet(now, Serial16(rng.next() as u16), rng.below(2) == 0);
            assert!(g.missing_count() <= 100);
            if let Some(list) = g.poll_nack(now) {
                assert!(list.len() <= 100);
            }
        }
    }
}
