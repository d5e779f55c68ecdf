//! The loss-based controller (draft-ietf-rmcat-gcc-02 §6): every [`MIN_PACKETS`] reported
//! packets, the loss over the last [`LOSS_WINDOW`] since the last cut decides. Above the decrease threshold
//! the rate is cut by half the loss (at most once per 300 ms + RTT); between it and 2 % the
//! rate holds; below 2 % it grows 8 % a second (from the lowest rate of the last second, so
//! a burst of good reports cannot compound). The result never exceeds the delay-based
//! estimate.
//!
//! The decrease threshold is the draft's 10 % at [`THRESHOLD_REFERENCE_BPS`] and above, and
//! rises as the rate falls (10 % × √(reference / rate)): with the draft's fixed threshold,
//! random loss of about 10 % crosses it in nearly half the windows and nothing ever crosses
//! back under 2 %, so the rate decays to the floor however idle the path (measured: 2 Mbit/s
//! link, 10 % random loss, 43 kbit/s after two minutes). A low rate is unlikely to be what
//! congests a path; libwebrtc's loss-based trials tie their thresholds to the rate for the
//! same reason.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Reported packets between two decisions.
pub(crate) const MIN_PACKETS: u32 = 20;
/// A cut needs loss measured over at least this many packets.
pub(crate) const DECREASE_MIN_PACKETS: u32 = 20;
/// Loss is measured over about this many of the latest reported packets (since the last
/// cut).
pub(crate) const LOSS_WINDOW: u32 = 100;
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
const INCREASE_INTERVAL: Duration = Duration::from_secs(1);
const INCREASE_BELOW: f64 = 0.02;
const DECREASE_ABOVE: f64 = 0.10;
pub(crate) const THRESHOLD_REFERENCE_BPS: f64 = 500_000.0;

/// The loss above which the rate is cut, at `rate` bit/s.
pub(crate) fn decrease_threshold(rate: u64) -> f64 {
    DECREASE_ABOVE * (THRESHOLD_REFERENCE_BPS / (rate.max(1) as f64)).sqrt().max(1.0)
}

#[derive(Debug, Clone)]
pub(crate) struct LossController {
    rate: u64,
    /// (lost, reported) per report, newest last, about [`LOSS_WINDOW`] packets in all.
    window: VecDeque<(u32, u32)>,
    /// Packets reported since the last decision.
    fresh: u32,
    last_decrease: Option<Instant>,
    /// Rates set within the last [`INCREASE_INTERVAL`], oldest first.
    history: VecDeque<(Instant, u64)>,
    /// Loss fraction at the last decision.
    pub(crate) fraction: f64,
}

impl LossController {
    pub(crate) fn new(start: u64) -> LossController {
        LossController {
            rate: start,
            window: VecDeque::new(),
            fresh: 0,
            last_decrease: None,
            history: VecDeque::new(),
            fraction: 0.0,
        }
    }

    pub(crate) fn rate(&self) -> u64 {
        self.rate
    }

    /// Packets reported: `lost` of `total`. A packet first reported lost, then received,
    /// comes as `lost` -1.
    pub(crate) fn on_report(&mut self, lost: i64, total: u32) {
        let mut recovered = u32::try_from(-lost.min(0)).unwrap_or(u32::MAX);
        let lost = u32::try_from(lost.max(0)).unwrap_or(u32::MAX).min(total);
        // Recovered packets were counted lost in earlier reports: take them back there.
        for (l, _) in self.window.iter_mut().rev() {
            let back = recovered.min(*l);
            *l -= back;
            recovered -= back;
        }
        if total > 0 {
            self.window.push_back((lost, total));
        }
        self.fresh = self.fresh.saturating_add(total);
        while self.window.len() > 1
            && self.window.iter().skip(1).map(|(_, t)| u64::from(*t)).sum::<u64>() >= u64::from(LOSS_WINDOW)
        {
            self.window.pop_front();
        }
    }

    /// Whether the fate of a packet sent at `sent` counts: not if it left before the last
    /// cut (one congestion event, one cut: as TCP answers a window's losses once).
    pub(crate) fn counts(&self, sent: Instant) -> bool {
        self.last_decrease.is_none_or(|cut| sent >= cut)
    }

    /// A measured rate (a probe's, a timeout's) replaces the estimate.
    pub(crate) fn set_rate(&mut self, now: Instant, bps: u64) {
        self.rate = bps;
        self.remember(now);
    }

    /// When losses last cut the rate.
    pub(crate) fn last_decrease(&self) -> Option<Instant> {
        self.last_decrease
    }

    /// After each feedback: decides if enough was reported; caps at `delay_based`. A cut
    /// goes no lower than `acked` (what the receiver got over the last half second) cut by
    /// the same factor.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        rtt: Duration,
        delay_based: u64,
        acked: Option<u64>,
        min: u64,
    ) {
        if self.fresh >= MIN_PACKETS {
            self.fresh = 0;
            let (lost, total) = self
                .window
                .iter()
                .fold((0u64, 0u64), |(l, t), (dl, dt)| (l + u64::from(*dl), t + u64::from(*dt)));
            let fraction = lost as f64 / total.max(1) as f64;
            self.fraction = fraction;
            if fraction <= INCREASE_BELOW {
                let lowest = self.history.iter().map(|(_, r)| *r).min().unwrap_or(self.rate);
                self.rate = self.rate.max(((lowest as f64 * 1.08) as u64).saturating_add(1000));
            } else if fraction > decrease_threshold(self.rate) && total >= u64::from(DECREASE_MIN_PACKETS) {
                let due = self
                    .last_decrease
                    .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_INTERVAL + rtt);
                if due {
                    self.last_decrease = Some(now);
                    // What arrived is what the path carried while it dropped the rest: the
                    // loss answers the excess, not the part that got through. Without this
                    // bound a queue still overflowing from what was sent before a sender
                    // slowed down (an SFU switching down a layer) is answered cut after cut
                    // down to the floor, far below what the path delivers.
                    let factor = 1.0 - fraction / 2.0;
                    let floor = acked.map_or(0, |a| (a as f64 * factor) as u64);
                    self.rate = ((self.rate as f64 * factor) as u64).max(floor.min(self.rate));
                    // These losses are answered: counted again, one congestion event
                    // would cut the rate once per decision until they leave the window
                    // (and the packets still in flight are not counted: `counts`).
                    self.window.clear();
                }
            }
        }
        self.rate = self.rate.min(delay_based).max(min);
        self.remember(now);
    }

    fn remember(&mut self, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > INCREASE_INTERVAL)
        {
            self.history.pop_front();
        }
        self.history.push_back((now, self.rate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn high_loss_backs_off_moderate_holds_low_increases() {
        let t0 = Instant::now();
        let rtt = 100 * MS;
        let mut c = LossController::new(1_000_000);
        c.on_report(4, 20);
        c.update(t0, rtt, 10_000_000, None, 10_000);
        assert_eq!(c.rate(), 900_000, "20 % loss: -10 %");
        // Again before 300 ms + RTT: no second cut.
        c.on_report(4, 20);
        c.update(t0 + 200 * MS, rtt, 10_000_000, None, 10_000);
        assert_eq!(c.rate(), 900_000);
        // 5 % since the cut (the losses it answered are forgotten): hold.
        c.on_report(0, 60);
        c.update(t0 + 500 * MS, rtt, 10_000_000, None, 10_000);
        assert_eq!((c.rate(), c.fraction), (900_000, 0.05));
        c.on_report(0, 100);
        c.update(t0 + 2000 * MS, rtt, 10_000_000, None, 10_000);
        assert_eq!(c.rate(), 973_000, "no loss: +8 % of the last second's lowest");
        // Capped by the delay-based estimate, floored at the minimum.
        c.update(t0 + 2100 * MS, rtt, 500_000, None, 10_000);
        assert_eq!(c.rate(), 500_000);
    }

    #[test]
    fn too_few_packets_wait_and_recovered_losses_count_back() {
        let t0 = Instant::now();
        let mut c = LossController::new(1_000_000);
        c.on_report(10, 10);
        c.update(t0, MS, 10_000_000, None, 0);
        assert_eq!(c.rate(), 1_000_000);
        c.on_report(-9, 10);
        c.update(t0, MS, 10_000_000, None, 0);
        assert_eq!(c.fraction, 0.05);
        c.on_report(-100, 0);
        c.on_report(0, u32::MAX);
        c.update(t0, MS, 10_000_000, None, 0);
        assert_eq!(c.fraction, 0.0);
    }

    #[test]
    fn losses_of_packets_sent_before_a_cut_do_not_count() {
        let t0 = Instant::now();
        let mut c = LossController::new(1_000_000);
        assert!(c.counts(t0));
        c.on_report(10, 20);
        c.update(t0 + 100 * MS, MS, 10_000_000, None, 0);
        assert_eq!(c.rate(), 750_000);
        assert!(!c.counts(t0 + 99 * MS));
        assert!(c.counts(t0 + 100 * MS));
    }

    #[test]
    fn a_cut_stops_at_the_acknowledged_rate_cut_by_the_same_factor() {
        let t0 = Instant::now();
        // 50 % loss: the rate is cut by a quarter, to no less than 3/4 of what arrived, and
        // a cut never raises it (below that already, it holds: the loss answers what was
        // sent above the estimate).
        for (rate, acked, want) in [
            (1_000_000, Some(900_000), 750_000),
            (300_000, Some(360_000), 270_000),
            (300_000, Some(400_000), 300_000),
            (1_000_000, None, 750_000),
        ] {
            let mut c = LossController::new(rate);
            c.on_report(10, 20);
            c.update(t0, MS, 10_000_000, acked, 0);
            assert_eq!(c.rate(), want, "rate {rate}, acked {acked:?}");
        }
    }

    #[test]
    fn the_threshold_rises_as_the_rate_falls() {
        assert_eq!(decrease_threshold(2_000_000), 0.10);
        assert_eq!(decrease_threshold(500_000), 0.10);
        assert!((decrease_threshold(125_000) - 0.20).abs() < 1e-9);
        assert!(decrease_threshold(0).is_finite());
        // 15 % loss cuts at 400 kbit/s, not at 100.
        let t0 = Instant::now();
        for (rate, want) in [(400_000, 370_000), (100_000, 100_000)] {
            let mut c = LossController::new(rate);
            c.on_report(15, 100);
            c.update(t0, MS, 10_000_000, None, 0);
            assert_eq!(c.rate(), want);
        }
    }
}
