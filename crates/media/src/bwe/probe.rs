//! Probing: short bursts (clusters) sent at a chosen rate; the rate they arrive at says how
//! much the path carries, faster than AIMD's 8 % a second finds out. At the start two
//! clusters go at 3× and 6× the start rate; while a probe comes back at 70 % or more of
//! what it was sent at, the next goes at twice the result (exponential probing, as in
//! libwebrtc's probe controller), up to the configured maximum.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A probe is this long at its rate, and at least five packets
/// ([`ProbeCluster::min_packets`]) and 10 kB.
pub const PROBE_DURATION: Duration = Duration::from_millis(15);
pub const MIN_PACKETS: u32 = 5;
/// A probe is at least this many bytes (eight full-size packets). A bottleneck's token
/// bucket lets a burst through at once (one MTU at least): a smaller cluster, as five
/// padding packets of 300 bytes are, arrived nearly as fast as it was sent through a
/// 300 kbit/s link, and probing went on doubling to 2.4 times the link's rate
/// (tests/e2e/sfu-ratelimit.sh). The more bytes past the burst, the less it counts: with
/// 10 kB, a 1500-byte burst reads about 12 % fast.
pub const MIN_PROBE_BYTES: usize = 10_000;
/// A result needs this share of the cluster's packets and bytes reported received.
const MIN_RECEIVED_SHARE: f64 = 0.8;
/// Received faster than this multiple of the send rate: the measurement is broken (the
/// packets were bunched on the way).
const MAX_VALID_RATIO: f64 = 2.0;
/// Received below 90 % of the send rate: the path is the limit; take a bit less than what
/// arrived, so the next queue starts empty.
const LIMITED_RATIO: f64 = 0.9;
const TARGET_UTILIZATION: f64 = 0.95;
/// A result at or above this share of the cluster's rate: probe higher.
const FURTHER_PROBE_SHARE: f64 = 0.7;
/// Clusters tracked at once (older ones are forgotten).
const MAX_CLUSTERS: usize = 8;
/// A cluster is ignored after this long in send time (µs): a second of send or arrival.
const MAX_INTERVAL_MICROS: i64 = 1_000_000;

/// A burst the caller should send now: `min_packets` packets and `min_bytes` bytes or more,
/// spaced evenly at `bitrate_bps`, each reported with
/// [`BandwidthEstimator::on_probe_sent`](super::BandwidthEstimator::on_probe_sent). Media,
/// retransmissions and padding all do; what the pacer sends meanwhile should be part of the
/// cluster (sent on top of it, other packets make the path look slower than it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCluster {
    pub id: u32,
    pub bitrate_bps: u64,
    pub min_packets: u32,
    pub min_bytes: usize,
}

impl ProbeCluster {
    fn new(id: u32, bitrate_bps: u64) -> ProbeCluster {
        let min_bytes =
            ((bitrate_bps as f64 * PROBE_DURATION.as_secs_f64() / 8.0) as usize).max(MIN_PROBE_BYTES);
        ProbeCluster { id, bitrate_bps, min_packets: MIN_PACKETS, min_bytes }
    }
}

/// What was sent and received of one cluster (times in µs).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    bitrate_bps: u64,
    sent_packets: u32,
    first_send: Option<i64>,
    last_send: i64,
    last_send_size: usize,
    sent_bytes: usize,
    received_packets: u32,
    first_arrival: Option<i64>,
    first_arrival_size: usize,
    last_arrival: i64,
    received_bytes: usize,
    done: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Prober {
    next_id: u32,
    max_bps: u64,
    pending: VecDeque<ProbeCluster>,
    tallies: BTreeMap<u32, Tally>,
    /// The rate of the cluster whose result decides whether to go further.
    exponential: Option<u64>,
}

impl Prober {
    pub(crate) fn new(start: u64, max: u64, initial: bool) -> Prober {
        let mut p = Prober {
            next_id: 1,
            max_bps: max,
            pending: VecDeque::new(),
            tallies: BTreeMap::new(),
            exponential: None,
        };
        if initial {
            p.request(start.saturating_mul(3));
            p.request(start.saturating_mul(6));
        }
        p
    }

    /// Queues a cluster at `bitrate_bps` (capped at the maximum).
    pub(crate) fn request(&mut self, bitrate_bps: u64) -> u32 {
        let bitrate_bps = bitrate_bps.clamp(1, self.max_bps);
        let cluster = ProbeCluster::new(self.next_id, bitrate_bps);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.tallies.insert(cluster.id, Tally { bitrate_bps, ..Tally::default() });
        while self.tallies.len() > MAX_CLUSTERS {
            self.tallies.pop_first();
        }
        self.exponential = Some(self.exponential.unwrap_or(0).max(bitrate_bps));
        self.pending.push_back(cluster);
        cluster.id
    }

    /// Cluster `id` will not be sent: no result will come, and no further probe from it.
    pub(crate) fn cancel(&mut self, id: u32) {
        if let Some(t) = self.tallies.remove(&id) {
            if self.exponential == Some(t.bitrate_bps) {
                self.exponential = None;
            }
        }
        self.pending.retain(|c| c.id != id);
    }

    /// Nothing waits to be sent.
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn poll(&mut self) -> Option<ProbeCluster> {
        self.pending.pop_front()
    }

    pub(crate) fn on_sent(&mut self, id: u32, send: i64, size: usize) {
        let Some(t) = self.tallies.get_mut(&id) else { return };
        t.sent_packets = t.sent_packets.saturating_add(1);
        t.sent_bytes = t.sent_bytes.saturating_add(size);
        let first = *t.first_send.get_or_insert(send);
        if send >= t.last_send || t.sent_packets == 1 {
            t.last_send = send.max(first);
            t.last_send_size = size;
        }
    }

    /// A packet of cluster `id` reported received; a result when the cluster has one.
    pub(crate) fn on_received(&mut self, id: u32, arrival: i64, size: usize) -> Option<u64> {
        let t = self.tallies.get_mut(&id)?;
        t.received_packets = t.received_packets.saturating_add(1);
        t.received_bytes = t.received_bytes.saturating_add(size);
        if t.first_arrival.is_none_or(|f| arrival < f) {
            t.first_arrival = Some(arrival);
            t.first_arrival_size = size;
        }
        t.last_arrival = if t.received_packets == 1 { arrival } else { t.last_arrival.max(arrival) };
        if t.done {
            return None;
        }
        let min_bytes = ProbeCluster::new(id, t.bitrate_bps).min_bytes;
        let enough = f64::from(t.received_packets) >= MIN_RECEIVED_SHARE * f64::from(MIN_PACKETS)
            && t.received_bytes as f64 >= MIN_RECEIVED_SHARE * min_bytes as f64
            && t.received_packets >= t.sent_packets.min(MIN_PACKETS);
        if !enough {
            return None;
        }
        let send_interval = t.last_send.saturating_sub(t.first_send?);
        let arrival_interval = t.last_arrival.saturating_sub(t.first_arrival?);
        if !(1..=MAX_INTERVAL_MICROS).contains(&send_interval)
            || !(1..=MAX_INTERVAL_MICROS).contains(&arrival_interval)
        {
            return None;
        }
        // The last packet sent and the first received say nothing of the rate.
        let send_bps = t.sent_bytes.saturating_sub(t.last_send_size) as f64 * 8e6 / send_interval as f64;
        let receive_bps =
            t.received_bytes.saturating_sub(t.first_arrival_size) as f64 * 8e6 / arrival_interval as f64;
        if receive_bps / send_bps.max(1.0) > MAX_VALID_RATIO {
            return None;
        }
        t.done = true;
        let result = if receive_bps < LIMITED_RATIO * send_bps {
            TARGET_UTILIZATION * receive_bps
        } else {
            send_bps.min(receive_bps)
        };
        let result = result as u64;
        // Exponential probing: go on while the path keeps up.
        if self.exponential == Some(t.bitrate_bps) {
            self.exponential = None;
            if result as f64 >= FURTHER_PROBE_SHARE * t.bitrate_bps as f64 && t.bitrate_bps < self.max_bps {
                self.request(result.saturating_mul(2));
            }
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `cluster` and delivers it through a `link_bps` bottleneck; the last result.
    fn probe(p: &mut Prober, cluster: ProbeCluster, link_bps: u64) -> Option<u64> {
        let size = 1000;
        let count = (cluster.min_bytes / size).max(cluster.min_packets as usize) as i64;
        let gap = (size as u64 * 8_000_000 / cluster.bitrate_bps) as i64;
        let serialise = (size as u64 * 8_000_000 / link_bps) as i64;
        let mut free = 0;
        let mut result = None;
        for i in 0..count {
            p.on_sent(cluster.id, i * gap, size);
            free = free.max(i * gap) + serialise;
        }
        free = 0;
        for i in 0..count {
            free = free.max(i * gap) + serialise;
            result = p.on_received(cluster.id, 20_000 + free, size).or(result);
        }
        result
    }

    #[test]
    fn initial_probes_measure_the_bottleneck_and_stop_there() {
        let mut p = Prober::new(300_000, 10_000_000, true);
        let (a, b) = (p.poll().unwrap(), p.poll().unwrap());
        assert_eq!((a.bitrate_bps, b.bitrate_bps, a.min_packets), (900_000, 1_800_000, 5));
        assert_eq!(a.min_bytes, MIN_PROBE_BYTES);
        assert_eq!(b.min_bytes, MIN_PROBE_BYTES);
        p.request(8_000_000);
        assert_eq!(p.poll().map(|c| c.min_bytes), Some(15_000));
        let ra = probe(&mut p, a, 500_000).unwrap();
        let rb = probe(&mut p, b, 500_000).unwrap();
        assert!((450_000..=500_000).contains(&ra), "{ra}");
        assert!((450_000..=500_000).contains(&rb), "{rb}");
        assert!(p.poll().is_none(), "no further probe below 70 %");
    }

    /// Sends `cluster` in `size`-byte packets through a token bucket of `link_bps` that
    /// holds `burst` bytes (full at the start, as on an idle path); every result.
    fn probe_bucket(
        p: &mut Prober,
        cluster: ProbeCluster,
        link_bps: u64,
        size: usize,
        burst: f64,
    ) -> Vec<u64> {
        let count = cluster.min_bytes.div_ceil(size).max(cluster.min_packets as usize) as i64;
        let gap = (size as u64 * 8_000_000 / cluster.bitrate_bps) as i64;
        let per_micro = link_bps as f64 / 8e6;
        let (mut tokens, mut at, mut results) = (burst, 0i64, Vec::new());
        for i in 0..count {
            let send = i * gap;
            p.on_sent(cluster.id, send, size);
            // Leaves when the bucket holds the packet's bytes, in order.
            let start = send.max(at);
            tokens = (tokens + (start - at) as f64 * per_micro).min(burst);
            let wait = ((size as f64 - tokens) / per_micro).max(0.0).ceil() as i64;
            at = start + wait;
            tokens = (tokens + wait as f64 * per_micro).min(burst) - size as f64;
            results.extend(p.on_received(cluster.id, 20_000 + at, size));
        }
        results
    }

    #[test]
    fn small_packets_through_a_bucket_with_a_burst_do_not_read_fast() {
        // 317-byte padding probes (255 bytes of padding) into a 300 kbit/s link whose
        // bucket lets one 1500-byte packet's worth through at once.
        let mut p = Prober::new(300_000, 10_000_000, false);
        let mut highest = 0;
        let mut rate = 500_000;
        for _ in 0..4 {
            p.request(rate);
            let cluster = p.poll().expect("asked for");
            let results = probe_bucket(&mut p, cluster, 300_000, 317, 1500.0);
            let Some(&r) = results.first() else { break };
            highest = highest.max(r);
            // What the estimator would do: further only at 70 % of the rate or more.
            if (r as f64) < FURTHER_PROBE_SHARE * rate as f64 {
                break;
            }
            rate = r * 2;
        }
        assert!(highest <= 300_000 * 6 / 5, "{highest}");
        assert!(highest >= 300_000 * 3 / 4, "{highest}");
    }

    #[test]
    fn probing_goes_on_while_the_path_keeps_up() {
        let mut p = Prober::new(300_000, 3_000_000, true);
        let (a, b) = (p.poll().unwrap(), p.poll().unwrap());
        probe(&mut p, a, 50_000_000);
        let rb = probe(&mut p, b, 50_000_000).unwrap();
        let c = p.poll().expect("a further probe");
        assert_eq!(c.bitrate_bps, (2 * rb).min(3_000_000));
        assert_eq!(probe(&mut p, c, 50_000_000).map(|r| r / 100_000), Some(30));
        assert!(p.poll().is_none(), "at the maximum");
    }

    #[test]
    fn unknown_and_broken_clusters_give_nothing() {
        let mut p = Prober::new(300_000, 10_000_000, false);
        assert!(p.poll().is_none());
        assert_eq!(p.on_received(7, 0, 100), None);
        let id = p.request(1_000_000);
        for _ in 0..10 {
            p.on_sent(id, 0, 1000);
            assert_eq!(p.on_received(id, 5, 1000), None, "no interval");
        }
        for id in 0..20 {
            p.request(id * 1000);
        }
        assert!(p.tallies.len() <= MAX_CLUSTERS);
    }
}
