//! The delay-based rate controller (draft-ietf-rmcat-gcc-02 §5.5, with libwebrtc's
//! refinements): a state machine driven by the overuse signal. Normal → increase,
//! multiplicatively (8 %/s) while far from the link's known capacity and additively (about
//! a packet per response time) near it; overuse → decrease to 0.85 × the acknowledged rate;
//! underuse → hold while the queues drain. Increases never take the rate past 1.5 × what
//! was acknowledged (the application-limited region: a sender that sends little learns
//! nothing about rates far above it).

use super::delay::BandwidthUsage;
use std::time::{Duration, Instant};

/// Decrease factor on overuse (§5.5: 0.85).
const BETA: f64 = 0.85;
/// Multiplicative increase per second (§5.5: 1.08).
const ETA: f64 = 1.08;
const MIN_INCREASE_BPS: f64 = 1_000.0;
const MIN_ADDITIVE_BPS_PER_SECOND: f64 = 4_000.0;
/// Increases stop at this multiple of the acknowledged rate, plus [`ALR_HEADROOM_BPS`].
const ALR_FACTOR: f64 = 1.5;
const ALR_HEADROOM_BPS: f64 = 10_000.0;
const PACKET_BITS: f64 = 1200.0 * 8.0;
const FRAME_RATE: f64 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// What the rate was when overuse was seen (§5.5's "average max bitrate"): a mean and a
/// normalised variance of the acknowledged rate at decreases, in kbit/s.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate: Option<f64>,
    variance: f64,
}

impl LinkCapacity {
    fn deviation(&self) -> f64 {
        self.estimate.map_or(0.0, |e| (self.variance * e).sqrt())
    }

    fn upper(&self) -> Option<f64> {
        self.estimate.map(|e| e + 3.0 * self.deviation())
    }

    fn lower(&self) -> Option<f64> {
        self.estimate.map(|e| e - 3.0 * self.deviation())
    }

    fn on_overuse(&mut self, kbps: f64) {
        let alpha = 0.05;
        let e = match self.estimate {
            None => kbps,
            Some(e) => (1.0 - alpha) * e + alpha * kbps,
        };
        // libwebrtc's normalisation: the variance relative to the estimate.
        let norm = e.max(1.0);
        self.variance = ((1.0 - alpha) * self.variance + alpha * (e - kbps).powi(2) / norm).clamp(0.4, 2.5);
        self.estimate = Some(e);
    }
}

/// The AIMD controller; rates in bit/s.
#[derive(Debug, Clone)]
pub(crate) struct AimdRateControl {
    rate: f64,
    min: f64,
    max: f64,
    state: State,
    capacity: LinkCapacity,
    last_change: Option<Instant>,
    pub(crate) rtt: Duration,
}

impl AimdRateControl {
    pub(crate) fn new(start: u64, min: u64, max: u64) -> AimdRateControl {
        AimdRateControl {
            rate: start as f64,
            min: min as f64,
            max: max as f64,
            state: State::Hold,
            capacity: LinkCapacity { estimate: None, variance: 0.4 },
            last_change: None,
            rtt: Duration::from_millis(200),
        }
    }

    pub(crate) fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Overuse again: a decrease is due once a round trip has passed since the last change
    /// (the previous one has had time to show), or at once if what arrives is below half the
    /// estimate.
    pub(crate) fn time_to_reduce_further(&self, now: Instant, acked: u64) -> bool {
        let interval = self.rtt.clamp(Duration::from_millis(10), Duration::from_millis(200));
        self.last_change.is_none_or(|at| now.saturating_duration_since(at) >= interval)
            || (acked as f64) < 0.5 * self.rate
    }

    /// A measured rate (a probe's, a feedback timeout's) replaces the estimate.
    pub(crate) fn set_rate(&mut self, now: Instant, bps: u64) {
        self.rate = (bps as f64).clamp(self.min, self.max);
        self.last_change = Some(now);
    }

    /// One feedback's worth of signal, with the acknowledged rate if known.
    pub(crate) fn update(&mut self, now: Instant, usage: BandwidthUsage, acked: Option<u64>) {
        self.state = match (usage, self.state) {
            (BandwidthUsage::Normal, State::Hold) => State::Increase,
            (BandwidthUsage::Normal, s) => s,
            (BandwidthUsage::Overusing, _) => State::Decrease,
            (BandwidthUsage::Underusing, _) => State::Hold,
        };
        let acked = acked.map(|a| a as f64);
        let mut new = self.rate;
        match self.state {
            State::Hold => {}
            State::Increase => {
                if let (Some(a), Some(upper)) = (acked, self.capacity.upper()) {
                    // Well above what was seen at overuse: the link changed.
                    if a / 1000.0 > upper {
                        self.capacity.estimate = None;
                    }
                }
                let elapsed =
                    self.last_change.map(|at| now.saturating_duration_since(at)).unwrap_or_default();
                new += if self.capacity.estimate.is_some() {
                    self.additive_per_second() * elapsed.as_secs_f64()
                } else {
                    let alpha = ETA.powf(elapsed.min(Duration::from_secs(1)).as_secs_f64());
                    (self.rate * (alpha - 1.0)).max(MIN_INCREASE_BPS)
                };
                self.last_change = Some(now);
            }
            State::Decrease => {
                let basis = acked.unwrap_or(self.rate);
                let mut decreased = BETA * basis;
                if decreased > self.rate {
                    if let Some(e) = self.capacity.estimate {
                        decreased = BETA * e * 1000.0;
                    }
                }
                new = new.min(decreased);
                if let (Some(a), Some(lower)) = (acked, self.capacity.lower()) {
                    if a / 1000.0 < lower {
                        self.capacity.estimate = None;
                    }
                }
                self.capacity.on_overuse(basis / 1000.0);
                self.state = State::Hold;
                self.last_change = Some(now);
            }
        }
        // The application-limited region: no increase past what the acknowledged rate
        // supports.
        if let Some(a) = acked {
            let limit = ALR_FACTOR * a + ALR_HEADROOM_BPS;
            if new > self.rate && new > limit {
                new = self.rate.max(limit);
            }
        }
        self.rate = new.clamp(self.min, self.max);
    }

    /// About one packet per response time (§5.5: the additive increase near convergence).
    fn additive_per_second(&self) -> f64 {
        let response = (self.rtt + Duration::from_millis(100)).as_secs_f64();
        let frame_bits = self.rate / FRAME_RATE;
        let packets = (frame_bits / PACKET_BITS).ceil().max(1.0);
        (frame_bits / packets / response).max(MIN_ADDITIVE_BPS_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn increases_eight_percent_a_second_far_from_capacity() {
        let t0 = Instant::now();
        let mut c = AimdRateControl::new(300_000, 10_000, 10_000_000);
        c.update(t0, BandwidthUsage::Normal, None);
        for i in 1..=10 {
            c.update(t0 + 100 * MS * i, BandwidthUsage::Normal, None);
        }
        let rate = c.rate() as f64;
        assert!((rate / (300_000.0 * 1.08) - 1.0).abs() < 0.02, "{rate}");
    }

    #[test]
    fn overuse_drops_to_085_of_acked_then_increases_additively() {
        let t0 = Instant::now();
        let mut c = AimdRateControl::new(600_000, 10_000, 10_000_000);
        c.update(t0, BandwidthUsage::Overusing, Some(500_000));
        assert_eq!(c.rate(), 425_000);
        c.update(t0 + MS * 100, BandwidthUsage::Normal, Some(500_000));
        let before = c.rate();
        c.update(t0 + MS * 1100, BandwidthUsage::Normal, Some(500_000));
        let step = c.rate() - before;
        // 425 kbit/s: 14.2 kbit frames in 2 packets over 300 ms: ~24 kbit/s per second.
        assert!((20_000..30_000).contains(&step), "{step}");
    }

    #[test]
    fn underuse_holds_and_increases_stop_past_the_acked_rate() {
        let t0 = Instant::now();
        let mut c = AimdRateControl::new(300_000, 10_000, 10_000_000);
        c.update(t0, BandwidthUsage::Underusing, Some(100_000));
        c.update(t0 + MS * 500, BandwidthUsage::Underusing, Some(100_000));
        assert_eq!(c.rate(), 300_000);
        for i in 1..100 {
            c.update(t0 + MS * (500 + 100 * i), BandwidthUsage::Normal, Some(100_000));
        }
        assert_eq!(c.rate(), 300_000, "never increased past 1.5 x acked + 10 kbit/s");
        c.set_rate(t0, 1);
        assert_eq!(c.rate(), 10_000);
    }
}
