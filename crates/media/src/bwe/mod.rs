//! Send-side bandwidth estimation of the Google Congestion Control kind
//! (draft-ietf-rmcat-gcc-02, with the send-side and trendline refinements libwebrtc made),
//! from transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! The model: every packet the sender puts on the wire has a transport-wide sequence number
//! and a send time; feedback tells when each arrived, or that it did not.
//! - **Delay**: packets are grouped by send time; if groups arrive further apart than they
//!   were sent, a queue is building at the bottleneck. The trendline filter fits a line
//!   through the accumulated delay variation; its slope against an adaptive threshold gives
//!   overuse, normal or underuse ([`BandwidthUsage`]).
//! - **AIMD** on that signal: increase (8 %/s far from the link's known capacity, about a
//!   packet per response time near it), decrease to 0.85 × the acknowledged rate on overuse,
//!   hold while queues drain. Increases stop at 1.5 × the acknowledged rate + 10 kbit/s (the
//!   application-limited region: a sender sending little learns nothing of higher rates).
//! - **Loss**: above 10 % the rate is cut by half the loss, 2–10 % holds, below 2 % allows
//!   8 %/s; the target is the lower of the loss- and delay-based rates. Below 500 kbit/s
//!   the cut threshold rises (10 % × √(500 kbit/s / rate)), or random loss near
//!   10 % walks the rate down to the floor. Packets sent before a cut do not count after
//!   it (one congestion event, one cut).
//! - **Probing**: the estimator asks for clusters of packets at a chosen rate
//!   ([`BandwidthEstimator::poll_probe`]); the rate they arrive at replaces the estimate, so
//!   the start and a recovery take a round trip, not tens of seconds of AIMD. While a
//!   cluster goes out, everything sent is part of it (media first, padding to fill up).
//!   While the sender is application-limited (less than 75 % but more than a third of the
//!   target acknowledged), a probe at twice the target goes every
//!   [`ALR_PROBE_INTERVAL`]: what is sent then cannot show that the path carries more.
//! - **Feedback timeout**: no feedback for [`FEEDBACK_TIMEOUT`] while sending halves the
//!   rate, and again every second it lasts; feedback returning probes back up.
//!
//! Driving it (sans-IO, every call takes the time):
//! ```
//! use peerlink_media::bwe::{BandwidthEstimator, BweConfig};
//! use peerlink_rtp::rtcp::TransportCc;
//! use std::time::{Duration, Instant};
//!
//! let mut bwe = BandwidthEstimator::new(BweConfig::default());
//! let now = Instant::now();
//! let mut seq = 0u16; // the transport-wide sequence number, stamped as packets leave
//! // Before sending: probes to send (padding or media, `cluster.min_packets` or more
//! // packets of `cluster.min_bytes` in all, paced at `cluster.bitrate_bps`).
//! while let Some(cluster) = bwe.poll_probe(now) {
//!     bwe.on_probe_sent(now, seq, 1200, cluster.id);
//!     seq = seq.wrapping_add(1);
//! }
//! bwe.on_packet_sent(now, seq, 1200); // every other packet as it leaves the pacer
//! // An RTCP transport-cc packet came back:
//! let feedback = TransportCc { base_sequence: 0, deltas: vec![Some(80), Some(4)], ..Default::default() };
//! bwe.on_feedback(now + Duration::from_millis(60), &feedback);
//! let _pacing_rate = bwe.target_bitrate();
//! if let Some(at) = bwe.poll_timeout() {
//!     bwe.handle_timeout(at);
//! }
//! ```

mod acked;
mod aimd;
mod delay;
mod loss;
mod probe;

pub use delay::BandwidthUsage;
pub use probe::{ProbeCluster, PROBE_DURATION};

use crate::twcc::TwccSendLog;
use peerlink_rtp::rtcp::TransportCc;
use std::time::{Duration, Instant};

/// No feedback for this long while packets wait for it: the rate is halved.
pub const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Further halvings while the silence lasts.
const TIMEOUT_REPEAT: Duration = Duration::from_secs(1);
/// A packet must have waited this long for feedback before silence counts (an idle sender
/// that starts again is not timed out at once).
const MIN_UNANSWERED: Duration = Duration::from_secs(1);
/// Application-limited (less than 75 % but more than a third of the target acknowledged;
/// an application-limited estimate settles at 1.5 × acknowledged + 10 kbit/s): a probe at
/// twice the target this often, since what is sent cannot show that the path carries more
/// (an SFU forwarding a low layer, waiting for the estimate to allow a higher one).
pub const ALR_PROBE_INTERVAL: Duration = Duration::from_secs(5);
const ALR_SHARE: f64 = 0.75;
/// ...but not when the target is already this many times what is acknowledged.
const ALR_MAX_RATIO: u64 = 3;
/// ...nor this soon after the estimate fell for losses or a growing delay: the path just
/// showed it is full, and a probe at twice the target would fill its queue again (in
/// tests/e2e/sfu-ratelimit.sh one hit the first key frame of the lower layer an SFU had
/// just switched its subscriber to, whose repair then froze the picture for 500 ms).
pub const ALR_QUIET_AFTER_FALL: Duration = Duration::from_secs(2);
/// Packets remembered for matching feedback (several seconds at a few Mbit/s), none sent
/// longer than [`SEND_LOG_AGE`] before the newest: feedback comes every 50-100 ms, so what
/// is older is lost, and an SFU holds one log per subscriber (a log of a fixed count held
/// about 0.9 MB each after 20 s of 4 forwarded publishers).
const SEND_LOG: usize = 10_000;
const SEND_LOG_AGE: Duration = Duration::from_secs(5);

/// Bounds and start of the estimate, bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BweConfig {
    pub start_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
    /// Ask for probes: at 3× and 6× the start rate at once, further while the path keeps
    /// up, back to the earlier rate when feedback returns after a timeout, and at twice the
    /// target every [`ALR_PROBE_INTERVAL`] while the sender is application-limited.
    pub probing: bool,
}

impl Default for BweConfig {
    fn default() -> BweConfig {
        BweConfig { start_bps: 300_000, min_bps: 30_000, max_bps: 10_000_000, probing: true }
    }
}

/// What happened, for stats and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BweStats {
    pub feedbacks: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    /// Statuses of packets not in the send log, or repeated (bad input or reordering).
    pub statuses_ignored: u64,
    /// Packets and groups the delay filter set aside as reordered.
    pub reordered: u64,
    /// Decreases on overuse.
    pub overuses: u64,
    pub timeouts: u64,
    pub probe_results: u64,
}

/// The estimator for one transport (all streams sharing the transport-wide sequence).
#[derive(Debug, Clone)]
pub struct BandwidthEstimator {
    config: BweConfig,
    log: TwccSendLog,
    /// Send times are µs from here (the first packet).
    epoch: Option<Instant>,
    delay: delay::DelayDetector,
    aimd: aimd::AimdRateControl,
    loss: loss::LossController,
    acked: acked::AckedBitrate,
    prober: probe::Prober,
    rtt: Option<Duration>,
    last_feedback: Option<Instant>,
    /// The first packet sent since the last feedback.
    unanswered_since: Option<Instant>,
    last_timeout: Option<Instant>,
    /// The target before a feedback timeout cut it: probed for when feedback returns.
    before_timeout: Option<u64>,
    /// The last probe asked for because the sender was application-limited.
    last_alr_probe: Option<Instant>,
    /// When losses or a growing delay last cut the rate.
    last_fall: Option<Instant>,
    stats: BweStats,
}

impl BandwidthEstimator {
    pub fn new(config: BweConfig) -> BandwidthEstimator {
        let min = config.min_bps.max(1);
        let max = config.max_bps.max(min);
        let start = config.start_bps.clamp(min, max);
        let config = BweConfig { start_bps: start, min_bps: min, max_bps: max, ..config };
        BandwidthEstimator {
            config,
            log: TwccSendLog::with_max_age(SEND_LOG, SEND_LOG_AGE),
            epoch: None,
            delay: delay::DelayDetector::new(),
            aimd: aimd::AimdRateControl::new(start, min, max),
            loss: loss::LossController::new(start),
            acked: acked::AckedBitrate::default(),
            prober: probe::Prober::new(start, max, config.probing),
            rtt: None,
            last_feedback: None,
            unanswered_since: None,
            last_timeout: None,
            before_timeout: None,
            last_alr_probe: None,
            last_fall: None,
            stats: BweStats::default(),
        }
    }

    /// When losses or a growing delay last cut the estimate (the path showed it was full).
    pub fn last_fall(&self) -> Option<Instant> {
        self.last_fall
    }

    /// The rate to send at (pace at, encode for), bit/s.
    pub fn target_bitrate(&self) -> u64 {
        self.loss.rate().min(self.aimd.rate()).clamp(self.config.min_bps, self.config.max_bps)
    }

    /// The delay-based estimate alone.
    pub fn delay_based_bitrate(&self) -> u64 {
        self.aimd.rate()
    }

    /// What the receiver got over the last half second, once known.
    pub fn acknowledged_bitrate(&self) -> Option<u64> {
        self.acked.rate()
    }

    /// The delay detector's latest verdict.
    pub fn usage(&self) -> BandwidthUsage {
        self.delay.state()
    }

    /// Loss over the last complete window of reports.
    pub fn loss_fraction(&self) -> f64 {
        self.loss.fraction
    }

    /// Round trip as feedback measures it (it includes the receiver's feedback interval).
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    pub fn stats(&self) -> BweStats {
        BweStats { reordered: self.delay.reordered, ..self.stats }
    }

    /// A packet with transport-wide sequence number `seq` and `size` bytes (what goes in
    /// the UDP payload) left the pacer.
    pub fn on_packet_sent(&mut self, now: Instant, seq: u16, size: usize) {
        self.sent(now, seq, size, None);
    }

    /// A packet of probe cluster `cluster` ([`BandwidthEstimator::poll_probe`]) was sent.
    pub fn on_probe_sent(&mut self, now: Instant, seq: u16, size: usize, cluster: u32) {
        self.sent(now, seq, size, Some(cluster));
    }

    fn sent(&mut self, now: Instant, seq: u16, size: usize, cluster: Option<u32>) {
        let epoch = *self.epoch.get_or_insert(now);
        self.log.on_sent_probe(now, seq, size, cluster);
        self.unanswered_since.get_or_insert(now);
        if let Some(id) = cluster {
            self.prober.on_sent(id, micros(epoch, now), size);
        }
    }

    /// The next probe cluster the caller should send, if one is wanted. Call after each
    /// input, until `None`.
    pub fn poll_probe(&mut self, _now: Instant) -> Option<ProbeCluster> {
        self.prober.poll()
    }

    /// Asks for a probe at `bitrate_bps` (before switching up a layer, say; at least the
    /// configured minimum); it comes out of [`BandwidthEstimator::poll_probe`]. Returns its
    /// cluster id.
    pub fn request_probe(&mut self, bitrate_bps: u64) -> u32 {
        self.prober.request(bitrate_bps.max(self.config.min_bps))
    }

    /// A cluster from [`BandwidthEstimator::poll_probe`] will not be sent (nothing to send
    /// it on): forgotten, so it holds nothing back.
    pub fn cancel_probe(&mut self, cluster: u32) {
        self.prober.cancel(cluster);
    }

    /// Transport-wide feedback arrived (input from the network: anything it says of
    /// packets not sent, repeated or out of order, is ignored or set aside).
    pub fn on_feedback(&mut self, now: Instant, feedback: &TransportCc) {
        let Some(epoch) = self.epoch else {
            self.stats.statuses_ignored += feedback.deltas.len() as u64;
            return;
        };
        self.stats.feedbacks += 1;
        let results = self.log.on_feedback(feedback);
        self.stats.statuses_ignored += (feedback.deltas.len() - results.len()) as u64;
        let (mut lost, mut total) = (0i64, 0u32);
        let mut probe_result = None;
        let mut newest_sent = None;
        for r in &results {
            // Loss among packets sent before the last loss cut was answered by it.
            // Probe packets are left out: small, bursty and above the path's rate by design,
            // their losses would cut the rate the probe was to raise.
            let counts = self.loss.counts(r.sent) && r.probe_cluster.is_none();
            let Some(arrival) = r.arrival_micros else {
                if r.earlier.is_none() {
                    lost += i64::from(counts);
                    total += u32::from(counts);
                    self.stats.packets_lost += 1;
                } else {
                    self.stats.statuses_ignored += 1;
                }
                continue;
            };
            match r.earlier {
                Some(true) => {
                    self.stats.statuses_ignored += 1;
                    continue;
                }
                // Reported lost, then received: reordered across feedback.
                Some(false) => {
                    lost -= i64::from(counts);
                    self.stats.packets_lost = self.stats.packets_lost.saturating_sub(1);
                }
                None => {
                    total += u32::from(counts);
                    self.delay.on_packet(micros(epoch, r.sent), arrival);
                }
            }
            self.stats.packets_received += 1;
            self.acked.on_packet(arrival, r.size);
            newest_sent = newest_sent.max(Some(r.sent));
            if let Some(id) = r.probe_cluster {
                if let Some(bps) = self.prober.on_received(id, arrival, r.size) {
                    probe_result = Some(probe_result.unwrap_or(0).max(bps));
                }
            }
        }
        if let Some(sent) = newest_sent {
            let sample = now.saturating_duration_since(sent);
            let rtt = self.rtt.map_or(sample, |r| (r * 7 + sample) / 8);
            self.rtt = Some(rtt);
            self.aimd.rtt = rtt;
        }
        self.loss.on_report(lost, total);
        self.update(now, probe_result);
        self.last_feedback = Some(now);
        self.unanswered_since = None;
        self.last_timeout = None;
        if let Some(before) = self.before_timeout.take() {
            if self.config.probing && before > self.target_bitrate() {
                self.prober.request(before);
            }
        }
        self.probe_if_application_limited(now);
    }

    fn probe_if_application_limited(&mut self, now: Instant) {
        let target = self.target_bitrate();
        // Not when the estimate already allows several times what is sent: nothing to learn.
        let limited = self.acked.rate().is_some_and(|a| {
            (a as f64) < ALR_SHARE * target as f64 && a.saturating_mul(ALR_MAX_RATIO) > target
        });
        let due =
            self.last_alr_probe.is_none_or(|at| now.saturating_duration_since(at) >= ALR_PROBE_INTERVAL);
        let settled = self.delay.state() != BandwidthUsage::Overusing
            && self.last_fall.is_none_or(|at| now.saturating_duration_since(at) >= ALR_QUIET_AFTER_FALL);
        if self.config.probing
            && limited
            && due
            && settled
            && target < self.config.max_bps
            && self.prober.idle()
        {
            self.last_alr_probe = Some(now);
            self.prober.request(target.saturating_mul(2));
        }
    }

    fn update(&mut self, now: Instant, probe_result: Option<u64>) {
        let acked = self.acked.rate();
        let usage = self.delay.state();
        if usage == BandwidthUsage::Overusing {
            if let Some(a) = acked.filter(|&a| self.aimd.time_to_reduce_further(now, a)) {
                self.aimd.update(now, usage, Some(a));
                self.stats.overuses += 1;
                self.last_fall = Some(now);
            }
        } else if let Some(bps) = probe_result {
            self.stats.probe_results += 1;
            self.aimd.set_rate(now, bps);
            self.loss.set_rate(now, self.aimd.rate());
        } else {
            self.aimd.update(now, usage, acked);
        }
        let rtt = self.rtt.unwrap_or(Duration::from_millis(200));
        let cut = self.loss.last_decrease();
        self.loss.update(now, rtt, self.aimd.rate(), acked, self.config.min_bps);
        if self.loss.last_decrease() != cut {
            self.last_fall = Some(now);
        }
    }

    /// When [`BandwidthEstimator::handle_timeout`] is next due: the feedback timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let unanswered = self.unanswered_since?;
        let silent_since = self.last_feedback.unwrap_or(unanswered);
        let mut at = (silent_since + FEEDBACK_TIMEOUT).max(unanswered + MIN_UNANSWERED);
        if let Some(last) = self.last_timeout {
            at = at.max(last + TIMEOUT_REPEAT);
        }
        Some(at)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        self.stats.timeouts += 1;
        self.last_timeout = Some(now);
        let target = self.target_bitrate();
        self.before_timeout.get_or_insert(target);
        let cut = (target / 2).max(self.config.min_bps);
        self.aimd.set_rate(now, cut);
        self.loss.set_rate(now, cut);
    }
}

fn micros(epoch: Instant, at: Instant) -> i64 {
    i64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
