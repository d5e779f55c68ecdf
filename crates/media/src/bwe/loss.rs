//! The loss-based controller (draft-ietf-rmcat-gcc-02 §6): over at least
//! [`MIN_PACKETS`] reported packets, loss above 10 % cuts the rate by half the loss (at most
//! once per 300 ms + RTT), 2–10 % holds it, and below 2 % it grows 8 % a second (from the
//! lowest rate of the last second, so a burst of good reports cannot compound). The result
//! never exceeds the delay-based estimate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Fewer reported packets than this say too little about loss.
pub(crate) const MIN_PACKETS: u32 = 20;
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
const INCREASE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct LossController {
    rate: u64,
    lost: u32,
    total: u32,
    last_decrease: Option<Instant>,
    /// Rates set within the last [`INCREASE_INTERVAL`], oldest first.
    history: VecDeque<(Instant, u64)>,
    /// Loss fraction of the last complete window.
    pub(crate) fraction: f64,
}

impl LossController {
    pub(crate) fn new(start: u64) -> LossController {
        LossController {
            rate: start,
            lost: 0,
            total: 0,
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
        self.lost = (i64::from(self.lost) + lost).clamp(0, i64::from(u32::MAX)) as u32;
        self.total = self.total.saturating_add(total);
    }

    /// A measured rate (a probe's, a timeout's) replaces the estimate.
    pub(crate) fn set_rate(&mut self, now: Instant, bps: u64) {
        self.rate = bps;
        self.remember(now);
    }

    /// After each feedback: applies the window if it is full; caps at `delay_based`.
    pub(crate) fn update(&mut self, now: Instant, rtt: Duration, delay_based: u64, min: u64) {
        if self.total >= MIN_PACKETS {
            let fraction = f64::from(self.lost.min(self.total)) / f64::from(self.total);
            self.fraction = fraction;
            self.lost = 0;
            self.total = 0;
            if fraction <= 0.02 {
                let lowest = self.history.iter().map(|(_, r)| *r).min().unwrap_or(self.rate);
                self.rate = self.rate.max((lowest as f64 * 1.08) as u64 + 1000);
            } else if fraction > 0.10 {
                let due = self
                    .last_decrease
                    .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_INTERVAL + rtt);
                if due {
                    self.last_decrease = Some(now);
                    self.rate = (self.rate as f64 * (1.0 - fraction / 2.0)) as u64;
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
        c.update(t0, rtt, 10_000_000, 10_000);
        assert_eq!(c.rate(), 900_000, "20 % loss: -10 %");
        // Again before 300 ms + RTT: no second cut.
        c.on_report(4, 20);
        c.update(t0 + 200 * MS, rtt, 10_000_000, 10_000);
        assert_eq!(c.rate(), 900_000);
        c.on_report(1, 20);
        c.update(t0 + 500 * MS, rtt, 10_000_000, 10_000);
        assert_eq!(c.rate(), 900_000, "5 %: hold");
        c.on_report(0, 40);
        c.update(t0 + 2000 * MS, rtt, 10_000_000, 10_000);
        assert_eq!(c.rate(), 973_000, "no loss: +8 % of the last second's lowest");
        // Capped by the delay-based estimate, floored at the minimum.
        c.update(t0 + 2100 * MS, rtt, 500_000, 10_000);
        assert_eq!(c.rate(), 500_000);
    }

    #[test]
    fn too_few_packets_wait_and_recovered_losses_count_back() {
        let t0 = Instant::now();
        let mut c = LossController::new(1_000_000);
        c.on_report(10, 10);
        c.update(t0, MS, 10_000_000, 0);
        assert_eq!(c.rate(), 1_000_000);
        c.on_report(-9, 10);
        c.update(t0, MS, 10_000_000, 0);
        assert_eq!(c.fraction, 0.05);
        c.on_report(-100, 0);
        c.on_report(0, u32::MAX);
        c.update(t0, MS, 10_000_000, 0);
        assert_eq!(c.fraction, 0.0);
    }
}
