//! A sending pacer: packets leave at a target bitrate instead of in the bursts an encoder
//! produces (a key frame is tens of packets at once), so queues along the path stay short.
//!
//! A token bucket: tokens accrue at the rate up to a burst's worth ([`BURST`] unless
//! [`Pacer::set_burst`] says otherwise); a packet leaves when the bucket holds its size (or,
//! for a packet larger than the burst, a full bucket). Over any interval `t` the pacer sends
//! at most `rate × (burst + t)` bytes. The
//! pacer queues handles (`T`), not bytes: the caller keeps the packets (in its send history,
//! say) and sends the one whose handle comes out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much may go out at once after an idle spell, by default.
pub const BURST: Duration = Duration::from_millis(5);
/// The longest a packet should wait: the pacer goes at least as fast as would empty the
/// queue by the time its oldest packet has waited this long (late media is worse than a
/// burst), however low the target rate.
pub const MAX_QUEUE_TIME: Duration = Duration::from_secs(2);

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Tokens are counted in bits × 10⁻⁹, so that rate (bit/s) × elapsed (ns) adds exactly.
fn cost(len: usize) -> i128 {
    len as i128 * 8 * NANOS_PER_SECOND
}

#[derive(Debug, Clone)]
struct Queued<T> {
    len: usize,
    at: Instant,
    id: T,
}

/// Paces packets of one transport.
#[derive(Debug, Clone)]
pub struct Pacer<T> {
    rate_bps: u64,
    /// Negative after a packet larger than what was in the bucket.
    tokens: i128,
    /// The bucket's size at the last refill (it grows with the drain rate).
    cap: i128,
    last: Option<Instant>,
    /// The bucket's size in time at the rate.
    burst: Duration,
    /// Audio and retransmissions: sent before anything in `normal`.
    priority: VecDeque<Queued<T>>,
    normal: VecDeque<Queued<T>>,
    queued_bytes: usize,
}

impl<T> Pacer<T> {
    /// `rate_bps`: the target rate in bits per second (at least 1).
    pub fn new(rate_bps: u64) -> Pacer<T> {
        Pacer {
            rate_bps: rate_bps.max(1),
            tokens: 0,
            cap: 0,
            last: None,
            burst: BURST,
            priority: VecDeque::new(),
            normal: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// A new target rate (from the bandwidth estimate), from now on (a new pacer starts
    /// with a full bucket at it).
    pub fn set_rate(&mut self, now: Instant, rate_bps: u64) {
        if self.last.is_none() {
            self.rate_bps = rate_bps.max(1);
            return;
        }
        self.refill(now);
        self.rate_bps = rate_bps.max(1);
        self.cap = self.capacity(now);
        self.tokens = self.tokens.min(self.cap);
    }

    /// How much may go out at once, in time at the rate (from 1 ms to [`MAX_QUEUE_TIME`]),
    /// from now on: a longer burst fills up at the rate (a new pacer starts full), a shorter
    /// one applies at once.
    pub fn set_burst(&mut self, now: Instant, burst: Duration) {
        self.burst = burst.clamp(Duration::from_millis(1), MAX_QUEUE_TIME);
        if self.last.is_none() {
            return;
        }
        self.refill(now);
        self.cap = self.capacity(now);
        self.tokens = self.tokens.min(self.cap);
    }

    pub fn burst(&self) -> Duration {
        self.burst
    }

    pub fn rate(&self) -> u64 {
        self.rate_bps
    }

    /// Queues a packet of `packet_len` bytes behind the others.
    pub fn enqueue(&mut self, now: Instant, packet_len: usize, id: T) {
        self.refill(now);
        self.queued_bytes += packet_len;
        self.normal.push_back(Queued { len: packet_len, at: now, id });
    }

    /// Queues a packet ahead of every [`Pacer::enqueue`]d one (audio, retransmissions).
    pub fn enqueue_priority(&mut self, now: Instant, packet_len: usize, id: T) {
        self.refill(now);
        self.queued_bytes += packet_len;
        self.priority.push_back(Queued { len: packet_len, at: now, id });
    }

    /// Goes over the waiting packets (what was queued for a source the sender has
    /// stopped): `edit` may change one in place and return its new length, or return `None`
    /// to drop it.
    pub fn edit(&mut self, mut edit: impl FnMut(&mut T, usize) -> Option<usize>) {
        let mut queued = 0;
        for queue in [&mut self.priority, &mut self.normal] {
            queue.retain_mut(|q| match edit(&mut q.id, q.len) {
                Some(len) => {
                    q.len = len;
                    queued += len;
                    true
                }
                None => false,
            });
        }
        self.queued_bytes = queued;
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.priority.len() + self.normal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The rate at `at`: the target, or what empties the queue before its oldest packet
    /// has waited [`MAX_QUEUE_TIME`].
    fn effective_rate(&self, at: Instant) -> i128 {
        let oldest = [self.priority.front(), self.normal.front()].into_iter().flatten().map(|q| q.at).min();
        let drain = oldest.map_or(0, |oldest| {
            let left = MAX_QUEUE_TIME
                .saturating_sub(at.saturating_duration_since(oldest))
                .max(self.burst.min(BURST));
            cost(self.queued_bytes) / left.as_nanos() as i128
        });
        i128::from(self.rate_bps).max(drain)
    }

    fn capacity(&self, at: Instant) -> i128 {
        self.effective_rate(at) * self.burst.as_nanos() as i128
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last else {
            // Nothing sent yet: a full bucket.
            self.last = Some(now);
            self.cap = self.capacity(now);
            self.tokens = self.cap;
            return;
        };
        if now <= last {
            return;
        }
        // The rate as it was at `last` holds until now, as `poll_timeout` assumed.
        let elapsed = (now - last).as_nanos() as i128;
        self.cap = self.capacity(last);
        self.tokens = (self.tokens + elapsed * self.effective_rate(last)).min(self.cap);
        self.last = Some(now);
    }

    /// Tokens the next packet needs from a bucket of size `cap`.
    fn needed(&self, cap: i128) -> Option<i128> {
        let head = self.priority.front().or(self.normal.front())?;
        Some(cost(head.len).min(cap))
    }

    /// The next packet to send now, if the rate allows one.
    pub fn poll(&mut self, now: Instant) -> Option<T> {
        self.refill(now);
        if self.tokens < self.needed(self.cap)? {
            return None;
        }
        let q = self.priority.pop_front().or_else(|| self.normal.pop_front())?;
        self.tokens -= cost(q.len);
        self.queued_bytes -= q.len;
        Some(q.id)
    }

    /// When [`Pacer::poll`] will release the next packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last = self.last?;
        // The next refill fills a bucket of the size and at the rate as of `last`.
        let missing = (self.needed(self.capacity(last))? - self.tokens).max(0);
        let rate = self.effective_rate(last);
        // Ceiling division (both positive).
        let nanos = (missing + rate - 1) / rate;
        Some(last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs the pacer in virtual time until empty: (release time, id).
    fn drain<T>(p: &mut Pacer<T>, mut now: Instant) -> Vec<(Instant, T)> {
        let mut out = Vec::new();
        while let Some(at) = p.poll_timeout() {
            now = now.max(at);
            let id = p.poll(now).expect("due at its timeout");
            out.push((now, id));
        }
        out
    }

    #[test]
    fn a_key_frame_is_spread_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(2_000_000);
        for i in 0..50 {
            p.enqueue(t0, 1200, i);
        }
        assert_eq!((p.len(), p.queued_bytes()), (50, 60_000));
        let sent = drain(&mut p, t0);
        assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>());
        // 60 KB at 250 KB/s is 240 ms; the first burst's worth leaves at once.
        let span = sent[49].0 - t0;
        assert!(span >= 230 * MS && span <= 240 * MS, "{span:?}");
        // At most burst + rate × 5 ms (2,500 bytes) in any 5 ms window.
        for (i, &(start, _)) in sent.iter().enumerate() {
            let bytes: usize = sent[i..].iter().take_while(|s| s.0 < start + 5 * MS).map(|_| 1200).sum();
            assert!(bytes <= 2500, "{bytes} bytes in 5 ms from {:?}", start - t0);
        }
        assert!(p.is_empty() && p.queued_bytes() == 0);
    }

    #[test]
    fn priority_packets_go_first_and_idle_allows_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000);
        p.enqueue(t0, 100, "video");
        p.enqueue(t0, 100, "video2");
        p.enqueue_priority(t0, 100, "audio");
        assert_eq!(p.poll(t0), Some("audio"));
        assert_eq!(p.poll(t0), Some("video"));
        assert_eq!(p.poll(t0), Some("video2"));
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.poll_timeout(), None);
        // After a second idle: 5 ms worth (625 bytes) at once, no more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..4 {
            p.enqueue(t1, 200, "x");
        }
        assert_eq!(drain(&mut p, t1).iter().filter(|s| s.0 == t1).count(), 3);
    }

    #[test]
    fn a_packet_larger_than_the_burst_waits_for_a_full_bucket() {
        let t0 = Instant::now();
        // 5 ms at 100 kbit/s is 62.5 bytes.
        let mut p = Pacer::new(100_000);
        p.enqueue(t0, 1000, 1);
        p.enqueue(t0, 1000, 2);
        let sent = drain(&mut p, t0);
        assert_eq!(sent[0].0, t0);
        // The first one's debt is paid and the bucket full again after 80 ms.
        assert_eq!(sent[1].0 - t0, 80 * MS);
    }

    #[test]
    fn a_long_queue_drains_within_the_bound() {
        let t0 = Instant::now();
        // 1 MB at 100 kbit/s would take 80 s.
        let mut p = Pacer::new(100_000);
        for i in 0..1000 {
            p.enqueue(t0, 1000, i);
        }
        let sent = drain(&mut p, t0);
        let span = sent.last().unwrap().0 - t0;
        assert!(span <= MAX_QUEUE_TIME + 100 * MS, "{span:?}");
    }

    #[test]
    fn packets_larger_than_the_burst_drain_within_the_bound_too() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000);
        for i in 0..30 {
            p.enqueue(t0 + MS * i, 1200, i);
        }
        let sent = drain(&mut p, t0 + 30 * MS);
        assert_eq!(sent.len(), 30);
        assert!(sent.iter().all(|s| s.0 - t0 <= MAX_QUEUE_TIME + 30 * MS));
    }

    #[test]
    fn edit_drops_and_changes_what_it_is_told_and_the_rest_goes_in_order() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000);
        for i in 0..6u32 {
            p.enqueue(t0, 1000, i);
        }
        p.enqueue_priority(t0, 100, 100);
        // Odd ones dropped, 4 made 40 bytes long (and renamed 40).
        p.edit(|id, len| match *id {
            4 => {
                *id = 40;
                Some(40)
            }
            i if i % 2 == 1 => None,
            _ => Some(len),
        });
        assert_eq!((p.len(), p.queued_bytes()), (4, 2140));
        let sent: Vec<u32> = drain(&mut p, t0).into_iter().map(|(_, id)| id).collect();
        assert_eq!(sent, [100, 0, 2, 40]);
        assert_eq!(p.queued_bytes(), 0);
    }

    #[test]
    fn a_longer_burst_lets_a_whole_frame_out_at_once_but_no_more() {
        let t0 = Instant::now();
        // A 3,600-byte frame at 3 Mbit/s: 5 ms is 1,875 bytes, 40 ms 15,000.
        let frame = |p: &mut Pacer<u32>, at| (0..3).for_each(|i| p.enqueue(at, 1200, i));
        let mut short = Pacer::new(3_000_000);
        frame(&mut short, t0);
        assert!(drain(&mut short, t0).iter().filter(|s| s.0 == t0).count() < 3);
        let mut long = Pacer::new(3_000_000);
        long.set_burst(t0, 40 * MS);
        assert_eq!(long.burst(), 40 * MS);
        frame(&mut long, t0);
        assert!(drain(&mut long, t0).iter().all(|s| s.0 == t0));
        // A key frame of 30 packets: the burst's worth at once, the rest at the rate.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..30 {
            long.enqueue(t1, 1200, i);
        }
        let sent = drain(&mut long, t1);
        let at_once = sent.iter().filter(|s| s.0 == t1).count();
        assert_eq!(at_once, 12, "15,000 bytes' worth");
        // The other 18 x 1,200 bytes at 375 kB/s, less the 600 bytes left: 56 ms.
        let span = sent[29].0 - t1;
        assert!(span >= 55 * MS && span <= 57 * MS, "{span:?}");
        // A shorter burst applies at once to what the bucket holds: 5 ms' worth (1,875 bytes).
        let t2 = t1 + Duration::from_secs(1);
        for i in 0..30 {
            long.enqueue(t2, 1200, i);
        }
        long.set_burst(t2, 5 * MS);
        assert_eq!(drain(&mut long, t2).iter().filter(|s| s.0 == t2).count(), 1);
    }

    #[test]
    fn a_rate_change_applies_from_now() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000);
        for i in 0..20 {
            p.enqueue(t0, 1250, i);
        }
        p.set_rate(t0, 10_000_000);
        assert_eq!(p.rate(), 10_000_000);
        // 25 KB at 10 Mbit/s: 20 ms.
        let span = drain(&mut p, t0).last().unwrap().0 - t0;
        assert!(span <= 20 * MS, "{span:?}");
    }
}
