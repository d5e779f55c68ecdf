//! The delay-based half of the estimate's input (draft-ietf-rmcat-gcc-02 §5.1–5.4, and the
//! trendline filter libwebrtc uses in place of the draft's Kalman filter): packets are
//! grouped by send time, the one-way delay variation between consecutive groups is
//! accumulated and smoothed, the slope of a least-squares line through the recent smoothed
//! delays says whether queues are building, and an adaptive threshold turns the slope into
//! a signal: overusing, normal or underusing.

use std::collections::VecDeque;

/// Packets sent within this span of the group's first form one group (§5.2: a burst
/// leaves the sender's pacer together, so their spacing at the receiver says nothing).
const GROUP_SPAN_MICROS: i64 = 5_000;
/// A packet arriving this soon after the group's last, sooner than it was sent after it,
/// was queued behind it: same group (a burst; libwebrtc's rule).
const BURST_ARRIVAL_MICROS: i64 = 5_000;
/// A burst never grows past this much arrival time.
const MAX_BURST_MICROS: i64 = 100_000;
/// Delay variation beyond this is a clock jump or garbage: start over.
const RESET_OFFSET_MICROS: i64 = 3_000_000;
/// This many groups in a row arriving before their predecessor: start over.
const REORDER_RESET: u32 = 3;

/// Smoothing of the accumulated delay (libwebrtc's trendline, 0.9).
const SMOOTHING: f64 = 0.9;
/// Samples in the regression window.
const WINDOW: usize = 20;
/// The slope is scaled by this and by the number of samples (up to [`MAX_DELTAS`]) before
/// it is compared with the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
const MAX_DELTAS: u32 = 60;

/// The adaptive threshold (§5.4): grows slowly towards a large trend (`K_UP`), shrinks
/// fast (`K_DOWN`), within bounds, in ms of modified trend.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const INITIAL_THRESHOLD: f64 = 12.5;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;
/// A trend this far past the threshold is a spike (a route change, say), not ignored but
/// not learnt from.
const SPIKE_MARGIN: f64 = 15.0;
/// Over the threshold for this long (in send time, ms), rising, before it is overuse.
const OVERUSE_TIME_MS: f64 = 10.0;

/// What the delay says of the path (§5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BandwidthUsage {
    /// Queues are building: send less.
    Overusing,
    #[default]
    Normal,
    /// Queues are draining: hold the rate until they are empty.
    Underusing,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: i64,
    last_send: i64,
    first_arrival: i64,
    /// The arrival of the group's last packet, in send order.
    last_arrival: i64,
}

/// Groups, trendline and overuse detector over send times (µs, the sender's clock) and
/// arrival times (µs, the receiver's clock).
#[derive(Debug, Clone)]
pub(crate) struct DelayDetector {
    current: Option<Group>,
    previous: Option<Group>,
    reordered_in_a_row: u32,
    /// Arrival of the first group, origin of the regression's x axis.
    first_arrival: Option<i64>,
    accumulated: f64,
    smoothed: f64,
    window: VecDeque<(f64, f64)>,
    deltas: u32,
    previous_trend: f64,
    threshold: f64,
    last_threshold_update: Option<f64>,
    /// Time over the threshold, ms; negative: not over it.
    time_over: f64,
    overuse_count: u32,
    state: BandwidthUsage,
    /// Packets and groups set aside as reordered.
    pub(crate) reordered: u64,
    pub(crate) resets: u64,
}

impl DelayDetector {
    pub(crate) fn new() -> DelayDetector {
        DelayDetector {
            current: None,
            previous: None,
            reordered_in_a_row: 0,
            first_arrival: None,
            accumulated: 0.0,
            smoothed: 0.0,
            window: VecDeque::with_capacity(WINDOW + 1),
            deltas: 0,
            previous_trend: 0.0,
            threshold: INITIAL_THRESHOLD,
            last_threshold_update: None,
            time_over: -1.0,
            overuse_count: 0,
            state: BandwidthUsage::Normal,
            reordered: 0,
            resets: 0,
        }
    }

    pub(crate) fn state(&self) -> BandwidthUsage {
        self.state
    }

    /// A packet reported received, in send order.
    pub(crate) fn on_packet(&mut self, send: i64, arrival: i64) {
        let Some(mut group) = self.current else {
            self.current = Some(Group {
                first_send: send,
                last_send: send,
                first_arrival: arrival,
                last_arrival: arrival,
            });
            return;
        };
        if send < group.first_send {
            // Sent before the group under way: its delay says nothing new.
            self.reordered += 1;
            return;
        }
        let same_group = send.saturating_sub(group.first_send) <= GROUP_SPAN_MICROS || {
            let arrival_delta = arrival.saturating_sub(group.last_arrival);
            let send_delta = send.saturating_sub(group.last_send);
            arrival_delta <= BURST_ARRIVAL_MICROS
                && arrival_delta.saturating_sub(send_delta) < 0
                && arrival.saturating_sub(group.first_arrival) < MAX_BURST_MICROS
        };
        if same_group {
            group.last_send = group.last_send.max(send);
            group.last_arrival = arrival;
            self.current = Some(group);
            return;
        }
        if let Some(previous) = self.previous {
            self.compare(previous, group);
        }
        // `compare` may have started over.
        if self.current.is_some() {
            self.previous = Some(group);
        }
        self.current =
            Some(Group { first_send: send, last_send: send, first_arrival: arrival, last_arrival: arrival });
    }

    /// §5.3: the delay variation between two complete groups.
    fn compare(&mut self, previous: Group, group: Group) {
        let send_delta = group.last_send.saturating_sub(previous.last_send);
        let arrival_delta = group.last_arrival.saturating_sub(previous.last_arrival);
        if arrival_delta.saturating_sub(send_delta).unsigned_abs() > RESET_OFFSET_MICROS as u64 {
            self.reset();
            return;
        }
        if arrival_delta < 0 {
            self.reordered += 1;
            self.reordered_in_a_row += 1;
            if self.reordered_in_a_row >= REORDER_RESET {
                self.reset();
            }
            return;
        }
        self.reordered_in_a_row = 0;
        self.update_trend(
            (arrival_delta - send_delta) as f64 / 1000.0,
            send_delta as f64 / 1000.0,
            group.last_arrival,
        );
    }

    /// Forgets the groups and the filter (not the threshold: the path is the same).
    fn reset(&mut self) {
        self.resets += 1;
        let threshold = self.threshold;
        *self = DelayDetector { reordered: self.reordered, resets: self.resets, ..DelayDetector::new() };
        self.threshold = threshold;
    }

    fn update_trend(&mut self, delay_variation_ms: f64, send_delta_ms: f64, arrival: i64) {
        let origin = *self.first_arrival.get_or_insert(arrival);
        let x = arrival.saturating_sub(origin) as f64 / 1000.0;
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated += delay_variation_ms;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        self.window.push_back((x, self.smoothed));
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
        let trend = if self.window.len() == WINDOW {
            slope(&self.window).unwrap_or(self.previous_trend)
        } else {
            0.0
        };
        self.detect(trend, send_delta_ms, x);
    }

    /// §5.4: compares the modified trend with the adaptive threshold.
    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.state = BandwidthUsage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(MAX_DELTAS)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            self.time_over =
                if self.time_over < 0.0 { send_delta_ms / 2.0 } else { self.time_over + send_delta_ms };
            self.overuse_count += 1;
            if self.time_over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.previous_trend {
                self.time_over = 0.0;
                self.overuse_count = 0;
                self.state = BandwidthUsage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over = -1.0;
            self.overuse_count = 0;
            self.state = BandwidthUsage::Underusing;
        } else {
            self.time_over = -1.0;
            self.overuse_count = 0;
            self.state = BandwidthUsage::Normal;
        }
        self.previous_trend = trend;
        self.update_threshold(modified, now_ms);
    }

    fn update_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update.get_or_insert(now_ms);
        self.last_threshold_update = Some(now_ms);
        if modified.abs() > self.threshold + SPIKE_MARGIN {
            return;
        }
        let k = if modified.abs() < self.threshold { K_DOWN } else { K_UP };
        let dt = (now_ms - last).clamp(0.0, 100.0);
        self.threshold =
            (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(MIN_THRESHOLD, MAX_THRESHOLD);
    }
}

/// The least-squares slope of `points`; `None` when the x values are all the same.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points
        .iter()
        .fold((0.0, 0.0), |(num, den), (x, y)| (num + (x - mx) * (y - my), den + (x - mx) * (x - mx)));
    (den > 0.0).then(|| num / den).filter(|s| s.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets sent every `gap` µs whose queueing delay grows by `growth` µs each.
    fn run(d: &mut DelayDetector, from: i64, count: i64, gap: i64, growth: i64) -> Vec<BandwidthUsage> {
        (from..from + count)
            .map(|i| {
                d.on_packet(i * gap, 50_000 + i * gap + (i - from) * growth);
                d.state()
            })
            .collect()
    }

    #[test]
    fn a_steady_path_is_normal_and_a_growing_queue_is_overuse() {
        let mut d = DelayDetector::new();
        let steady = run(&mut d, 0, 500, 10_000, 0);
        assert!(steady.iter().all(|s| *s == BandwidthUsage::Normal));
        // Each packet waits 1 ms longer than the one before.
        let growing = run(&mut d, 500, 100, 10_000, 1_000);
        assert!(growing.contains(&BandwidthUsage::Overusing), "threshold {}", d.threshold);
    }

    #[test]
    fn a_draining_queue_is_underuse() {
        let mut d = DelayDetector::new();
        run(&mut d, 0, 200, 10_000, 0);
        let mut states = Vec::new();
        for i in 200..300 {
            d.on_packet(i * 10_000, 50_000 + 300_000 + i * 10_000 - (i - 200) * 3_000);
            states.push(d.state());
        }
        assert!(states.contains(&BandwidthUsage::Underusing));
    }

    #[test]
    fn packets_within_five_ms_are_one_group() {
        let mut d = DelayDetector::new();
        for i in 0..5 {
            d.on_packet(i * 1_000, 10_000 + i * 1_000);
        }
        assert!(d.previous.is_none());
        d.on_packet(6_000, 16_000);
        assert_eq!(d.previous.map(|g| g.last_send), Some(4_000));
    }

    #[test]
    fn the_threshold_adapts_within_its_bounds() {
        let mut d = DelayDetector::new();
        for k in 0..2000 {
            d.update_threshold(if k % 2 == 0 { 30.0 } else { 20.0 }, f64::from(k) * 10.0);
        }
        assert!(d.threshold > 19.0 && d.threshold <= 30.0, "{}", d.threshold);
        for k in 2000..4000 {
            d.update_threshold(0.0, f64::from(k) * 10.0);
        }
        assert_eq!(d.threshold, MIN_THRESHOLD);
    }

    #[test]
    fn a_clock_jump_starts_over() {
        let mut d = DelayDetector::new();
        run(&mut d, 0, 50, 10_000, 0);
        d.on_packet(500_000, i64::MAX / 2);
        d.on_packet(510_000, i64::MAX / 2 + 10_000);
        assert_eq!(d.resets, 1);
        assert_eq!(d.state(), BandwidthUsage::Normal);
    }
}
