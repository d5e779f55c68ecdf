//! A model-based congestion controller in the manner of BBR (Cardwell et al., "BBR:
//! Congestion-Based Congestion Control", ACM Queue 2016, and the IETF CCWG BBR drafts),
//! written for SCTP's byte-counted windows and sans-IO: it sees one [`RateSample`] per
//! SACK and answers with a congestion window and a pacing rate.
//!
//! The model: the bottleneck bandwidth is the largest delivery rate sampled over the last
//! ten round trips, the propagation delay the smallest RTT seen in five seconds. Their
//! product (the BDP) sizes the window; the pacing rate is a gain times the bandwidth.
//! Startup doubles the rate each round until the bandwidth stops growing (or a round loses
//! much more than random loss would), Drain empties the queue Startup built, ProbeBw cycles
//! its pacing gain around 1 to find more bandwidth and give back queue, ProbeRtt shrinks
//! the flight for a moment every five seconds so flows sharing a bottleneck see its empty
//! delay. A random loss does not shrink the window: only the model does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// 2/ln(2): the smallest gain that doubles the delivery rate each round in Startup.
const HIGH_GAIN: f64 = 2.885;
const CWND_GAIN: f64 = 2.0;
/// The ProbeBw gain cycle: probe up, drain what probing queued, cruise.
const CYCLE: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Rounds the bandwidth filter remembers.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a minimum RTT is trusted before ProbeRtt looks again (five seconds, as BBRv3
/// does: flows sharing a queue see its empty delay, and so each other, more often).
const MIN_RTT_WINDOW: Duration = Duration::from_secs(5);
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
/// Startup is over when three rounds in a row grow the bandwidth by less than this.
const FULL_BW_GROWTH: f64 = 1.25;
const FULL_BW_ROUNDS: u8 = 3;
/// A Startup round losing more than this fraction (and at least `STARTUP_LOSS_EVENTS`
/// chunks) overflowed the queue: the pipe is full.
const STARTUP_LOSS_RATE: f64 = 0.02;
const STARTUP_LOSS_EVENTS: usize = 8;
/// Packets the window holds beyond the model's (gain times BDP): the same number for every
/// flow, whatever its rate. Flows sharing a bottleneck whose windows bind (a standing queue,
/// as two BBR flows' overestimates build) each keep this many packets of their own queued,
/// as TCP Vegas does; at a common queueing delay that is the same rate for each, so they
/// converge to even shares. Without it their shares are neutrally stable: a window
/// proportional to a flow's own delivery rate keeps whatever split Startup left (3 packets
/// were too few against the noise of the max filter: 4-8 of 42 seeds outside 20%). A lone
/// flow is held by its pacing rate, not its window, and queues none of it. On a path whose
/// BDP is smaller it is one BDP (at least [`QUEUE_SHARE_MIN_PACKETS`]), so a slow link shared
/// with media does not get hundreds of milliseconds of queue (24 packets at 300 kbit/s would
/// be 770 ms).
const QUEUE_SHARE_PACKETS: usize = 24;
/// The smallest share of the queue (the 3 packets the window held beyond the model before).
const QUEUE_SHARE_MIN_PACKETS: usize = 3;
/// Windows below this many packets stall SCTP's delayed acknowledgements.
const MIN_CWND_PACKETS: usize = 4;

/// The delivery state a chunk carries from when it was (last) sent (the IETF draft
/// "Delivery Rate Estimation", adapted to chunks).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    app_limited: bool,
}

#[cfg(test)]
impl Snapshot {
    pub fn app_limited(&self) -> bool {
        self.app_limited
    }
}

/// Delivery-rate sampling and the RACK clock (RFC 8985 §6.2): what the sender counts as
/// chunks go out and come back acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Delivery {
    /// Bytes acknowledged since the association began.
    pub delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    /// Samples count as application-limited until `delivered` passes this (0: they do not).
    app_limited_until: u64,
    /// The newest-sent chunk acknowledged by the SACK being processed: its snapshot and
    /// when it was sent.
    newest: Option<(Snapshot, Instant)>,
    acked: usize,
    /// RACK: when the most recently sent acknowledged chunk was sent, and its RTT.
    pub rack_sent: Option<Instant>,
    pub rack_rtt: Duration,
}

impl Delivery {
    /// A chunk goes out now; `idle`: nothing else is in flight.
    pub fn on_send(&mut self, now: Instant, idle: bool) -> Snapshot {
        if idle || self.first_sent_time.is_none() {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        Snapshot {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            app_limited: self.app_limited_until > 0,
        }
    }

    /// A chunk of `len` bytes sent at `sent` was acknowledged for the first time. `retransmitted`
    /// with an RTT under `min_rtt`: the acknowledgement was probably the original's, so it
    /// does not move the RACK clock.
    pub fn on_acked(
        &mut self,
        now: Instant,
        snap: &Snapshot,
        sent: Instant,
        len: usize,
        retransmitted: bool,
        min_rtt: Duration,
    ) {
        self.delivered += len as u64;
        self.delivered_time = Some(now);
        self.acked += len;
        if self.newest.is_none_or(|(s, _)| snap.delivered >= s.delivered) {
            self.newest = Some((*snap, sent));
            self.first_sent_time = Some(sent);
        }
        let rtt = now.saturating_duration_since(sent);
        if (!retransmitted || rtt >= min_rtt) && self.rack_sent.is_none_or(|t| sent >= t) {
            self.rack_sent = Some(sent);
            self.rack_rtt = rtt;
        }
    }

    /// The sender ran out of data with `inflight` bytes out: rate samples until those are
    /// acknowledged say little about the path.
    pub fn mark_app_limited(&mut self, inflight: usize) {
        self.app_limited_until = (self.delivered + inflight as u64).max(1);
    }

    /// The sample of the SACK just processed.
    pub fn take_sample(&mut self, lost: usize, rtt: Option<Duration>) -> RateSample {
        if self.app_limited_until > 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let acked = std::mem::take(&mut self.acked);
        let Some((snap, sent)) = self.newest.take() else {
            return RateSample { lost, rtt, ..RateSample::default() };
        };
        let send_elapsed = sent.saturating_duration_since(snap.first_sent_time.unwrap_or(sent));
        let ack_elapsed = match (self.delivered_time, snap.delivered_time) {
            (Some(now), Some(then)) => now.saturating_duration_since(then),
            _ => Duration::ZERO,
        };
        RateSample {
            delivered: self.delivered - snap.delivered,
            // The slower of the send and the acknowledgement rates (ack compression).
            interval: send_elapsed.max(ack_elapsed),
            app_limited: snap.app_limited,
            prior_delivered: snap.delivered,
            acked,
            lost,
            rtt,
        }
    }
}

/// What one SACK taught about the path.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateSample {
    /// Bytes delivered over `interval` (since the newest acknowledged chunk was sent).
    pub delivered: u64,
    pub interval: Duration,
    /// The sample was taken while the sender had nothing to send: it may understate the path.
    pub app_limited: bool,
    /// `delivered` total when the newest acknowledged chunk was sent (rounds are counted in it).
    pub prior_delivered: u64,
    /// Bytes newly acknowledged and newly found lost by this SACK.
    pub acked: usize,
    pub lost: usize,
    /// An RTT measured on a chunk sent once.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Startup,
    Drain,
    ProbeBw {
        phase: usize,
        since: Instant,
    },
    /// `until`: when the short flight has lasted long enough (set once it is short).
    ProbeRtt {
        until: Option<Instant>,
    },
}

#[derive(Debug)]
pub(crate) struct Bbr {
    mtu: usize,
    mode: Mode,
    /// Windowed max of the delivery rate in bytes/s: (round, rate), rates decreasing.
    bw: VecDeque<(u64, f64)>,
    min_rtt: Option<Duration>,
    min_rtt_at: Option<Instant>,
    round: u64,
    next_round_delivered: u64,
    /// Bytes acknowledged and lost in this round (the Startup loss check).
    round_acked: usize,
    round_lost: usize,
    round_lost_events: usize,
    full_bw: f64,
    full_bw_rounds: u8,
    filled_pipe: bool,
    cwnd: usize,
    /// The window to go back to after ProbeRtt.
    prior_cwnd: usize,
    /// A ceiling on the flight learned from a round that lost much more than random loss
    /// does (a queue overflowed; BBRv2's inflight_hi); raised again by each probe.
    inflight_hi: Option<usize>,
    pacing_rate: f64,
    /// Picks the ProbeBw phase a flow starts in, so flows sharing a bottleneck do not probe
    /// in step (xorshift; not for anything secret).
    random: u64,
}

impl Bbr {
    /// `seed`: any value that differs between associations.
    pub fn new(mtu: usize, initial_cwnd: usize, seed: u64) -> Bbr {
        Bbr {
            mtu,
            mode: Mode::Startup,
            bw: VecDeque::new(),
            min_rtt: None,
            min_rtt_at: None,
            round: 0,
            next_round_delivered: 0,
            round_acked: 0,
            round_lost: 0,
            round_lost_events: 0,
            full_bw: 0.0,
            full_bw_rounds: 0,
            filled_pipe: false,
            cwnd: initial_cwnd,
            prior_cwnd: initial_cwnd,
            inflight_hi: None,
            // Until an RTT is known: the initial window per millisecond.
            pacing_rate: HIGH_GAIN * initial_cwnd as f64 * 1000.0,
            random: seed | 1,
        }
    }

    /// A ProbeBw phase to start in: any but the draining one (the queue is gone already).
    fn random_phase(&mut self) -> usize {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        match (self.random % (CYCLE.len() as u64 - 1)) as usize {
            0 => 0,
            p => p + 1,
        }
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd
    }

    /// Bytes per second.
    pub fn pacing_rate(&self) -> f64 {
        self.pacing_rate
    }

    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The modelled bottleneck bandwidth in bytes per second (0 before any sample).
    pub fn bandwidth(&self) -> f64 {
        self.bw.front().map_or(0.0, |&(_, b)| b)
    }

    fn min_cwnd(&self) -> usize {
        MIN_CWND_PACKETS * self.mtu
    }

    /// What the window holds beyond the model's, in bytes: [`QUEUE_SHARE_PACKETS`], or one BDP
    /// on a path whose BDP is smaller.
    fn queue_share(&self) -> usize {
        let bdp_packets = self.bdp(1.0).map_or(0, |b| b / self.mtu.max(1));
        bdp_packets.clamp(QUEUE_SHARE_MIN_PACKETS, QUEUE_SHARE_PACKETS) * self.mtu
    }

    /// The bandwidth-delay product times `gain`, in bytes (None before the model exists).
    fn bdp(&self, gain: f64) -> Option<usize> {
        let (bw, rtt) = (self.bandwidth(), self.min_rtt?);
        (bw > 0.0).then_some((gain * bw * rtt.as_secs_f64()) as usize)
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => HIGH_GAIN,
            Mode::Drain => 1.0 / HIGH_GAIN,
            Mode::ProbeBw { phase, .. } => CYCLE[phase],
            Mode::ProbeRtt { .. } => 1.0,
        }
    }

    fn cwnd_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup | Mode::Drain => HIGH_GAIN,
            _ => CWND_GAIN,
        }
    }

    /// A SACK arrived; `delivered` is the total acknowledged so far, `inflight` what is still
    /// in flight after it.
    pub fn on_ack(&mut self, now: Instant, rs: &RateSample, delivered: u64, inflight: usize) {
        self.round_acked += rs.acked;
        self.round_lost += rs.lost;
        if rs.lost > 0 {
            self.round_lost_events += rs.lost.div_ceil(self.mtu);
        }
        let round_start = rs.acked > 0 && rs.prior_delivered >= self.next_round_delivered;
        if round_start {
            self.next_round_delivered = delivered;
            self.round += 1;
        }
        self.update_bandwidth(rs);
        self.update_min_rtt(now, rs);
        if round_start {
            self.check_full_pipe(rs);
            self.bound_inflight(inflight);
            tracing::trace!(
                round = self.round,
                mode = ?self.mode,
                btlbw = self.bandwidth() as u64,
                min_rtt = ?self.min_rtt,
                pacing_rate = self.pacing_rate as u64,
                cwnd = self.cwnd,
                inflight,
                sample_rate = (rs.delivered as f64 / rs.interval.as_secs_f64().max(1e-9)) as u64,
                sample_app_limited = rs.app_limited,
                round_acked = self.round_acked,
                round_lost = self.round_lost,
                "bbr round"
            );
            self.round_acked = 0;
            self.round_lost = 0;
            self.round_lost_events = 0;
        }
        self.advance_mode(now, inflight);
        self.set_pacing_rate();
        self.set_cwnd(rs.acked);
    }

    fn update_bandwidth(&mut self, rs: &RateSample) {
        if rs.interval.is_zero() || rs.delivered == 0 {
            return;
        }
        // An interval shorter than the path's RTT is acknowledgement compression, not rate.
        if self.min_rtt.is_some_and(|m| rs.interval < m) {
            return;
        }
        let rate = rs.delivered as f64 / rs.interval.as_secs_f64();
        if rs.app_limited && rate < self.bandwidth() {
            return;
        }
        while self.bw.back().is_some_and(|&(_, b)| b <= rate) {
            self.bw.pop_back();
        }
        self.bw.push_back((self.round, rate));
        while self.bw.front().is_some_and(|&(r, _)| r + BW_WINDOW_ROUNDS <= self.round) {
            self.bw.pop_front();
        }
    }

    fn update_min_rtt(&mut self, now: Instant, rs: &RateSample) {
        let expired = self.min_rtt_at.is_some_and(|at| now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if let Some(rtt) = rs.rtt {
            if self.min_rtt.is_none_or(|m| rtt <= m) || expired {
                self.min_rtt = Some(rtt);
                self.min_rtt_at = Some(now);
            }
        }
        if expired && !matches!(self.mode, Mode::ProbeRtt { .. }) && self.filled_pipe {
            self.mode = Mode::ProbeRtt { until: None };
            self.prior_cwnd = self.cwnd;
        }
    }

    /// The round just ended lost more than random loss would: a queue overflowed.
    fn round_overflowed(&self) -> bool {
        self.round_lost_events >= STARTUP_LOSS_EVENTS
            && self.round_lost as f64 > STARTUP_LOSS_RATE * (self.round_acked + self.round_lost) as f64
    }

    /// After a round that overflowed a queue, the flight stays below 70% of what it was (at
    /// least one BDP); a probing round that overflows nothing lifts the ceiling by a quarter.
    fn bound_inflight(&mut self, inflight: usize) {
        if !self.filled_pipe {
            return;
        }
        if self.round_overflowed() {
            let floor = self.bdp(1.0).unwrap_or(0).max(self.min_cwnd());
            let bound = (inflight.max(self.cwnd) * 7 / 10).max(floor);
            self.inflight_hi = Some(self.inflight_hi.map_or(bound, |hi| hi.min(bound).max(floor)));
        } else if let (Mode::ProbeBw { phase: 0, .. }, Some(hi)) = (self.mode, self.inflight_hi) {
            self.inflight_hi = Some(hi + hi / 4);
        }
    }

    fn check_full_pipe(&mut self, rs: &RateSample) {
        if self.filled_pipe || rs.app_limited {
            return;
        }
        if self.round_overflowed() {
            self.filled_pipe = true;
            return;
        }
        if self.bandwidth() >= self.full_bw * FULL_BW_GROWTH {
            self.full_bw = self.bandwidth();
            self.full_bw_rounds = 0;
            return;
        }
        self.full_bw_rounds += 1;
        self.filled_pipe = self.full_bw_rounds >= FULL_BW_ROUNDS;
    }

    fn advance_mode(&mut self, now: Instant, inflight: usize) {
        match self.mode {
            Mode::Startup if self.filled_pipe => self.mode = Mode::Drain,
            Mode::Drain if self.bdp(1.0).is_some_and(|bdp| inflight <= bdp) => {
                self.mode = Mode::ProbeBw { phase: self.random_phase(), since: now };
            }
            Mode::ProbeBw { phase, since } => {
                let rtt = self.min_rtt.unwrap_or(Duration::from_millis(100));
                let in_phase = now.saturating_duration_since(since);
                let elapsed = in_phase > rtt;
                let bdp = self.bdp(1.0).unwrap_or(0);
                let next = match CYCLE[phase] {
                    // Probing lasts a round and until the extra flight is out (at most two).
                    g if g > 1.0 => elapsed && (inflight >= self.bdp(g).unwrap_or(0) || in_phase > 2 * rtt),
                    // Draining ends early once the queue is gone.
                    g if g < 1.0 => elapsed || inflight <= bdp,
                    _ => elapsed,
                };
                if next {
                    self.mode = Mode::ProbeBw { phase: (phase + 1) % CYCLE.len(), since: now };
                }
            }
            Mode::ProbeRtt { until: None } if inflight <= self.min_cwnd() => {
                self.mode = Mode::ProbeRtt { until: Some(now + PROBE_RTT_DURATION) };
            }
            Mode::ProbeRtt { until: Some(until) } if now >= until => {
                self.min_rtt_at = Some(now);
                self.cwnd = self.cwnd.max(self.prior_cwnd);
                self.mode = Mode::ProbeBw { phase: self.random_phase(), since: now };
            }
            _ => {}
        }
    }

    fn set_pacing_rate(&mut self) {
        let bw = self.bandwidth();
        if bw <= 0.0 {
            return;
        }
        let rate = self.pacing_gain() * bw;
        // Until the pipe is full the rate only grows (a slow sample must not stall Startup).
        if self.filled_pipe || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    fn set_cwnd(&mut self, acked: usize) {
        if let Mode::ProbeRtt { .. } = self.mode {
            self.cwnd = self.min_cwnd();
            return;
        }
        let target = self.bdp(self.cwnd_gain()).map(|b| b + self.queue_share());
        match target {
            Some(target) if self.filled_pipe => self.cwnd = (self.cwnd + acked).min(target),
            Some(target) if self.cwnd >= target => {}
            _ => self.cwnd += acked,
        }
        if let Some(hi) = self.inflight_hi {
            self.cwnd = self.cwnd.min(hi);
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
    }

    /// A retransmission timeout: the flight is presumed lost; start again from a small
    /// window, the model kept.
    pub fn on_timeout(&mut self) {
        self.prior_cwnd = self.prior_cwnd.max(self.cwnd);
        self.cwnd = self.min_cwnd();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: usize = 1200;

    /// The clock and the bytes delivered so far, carried from one `feed` to the next.
    struct Path {
        now: Instant,
        delivered: u64,
    }

    fn path() -> Path {
        Path { now: Instant::now(), delivered: 0 }
    }

    /// Feeds `rounds` rounds of acknowledgements of a path delivering `rate` bytes/s with
    /// `rtt`, 20 SACKs a round, the first of each reporting `lost_per_round` bytes lost.
    fn feed(bbr: &mut Bbr, path: &mut Path, rounds: u64, rate: f64, rtt: Duration, lost_per_round: usize) {
        let Path { now, delivered } = path;
        let per_round = 20;
        for _ in 0..rounds {
            let round_bytes = (rate * rtt.as_secs_f64()) as u64;
            for k in 0..per_round {
                *now += rtt / per_round as u32;
                let acked = (round_bytes / per_round) as usize;
                *delivered += acked as u64;
                let rs = RateSample {
                    delivered: round_bytes,
                    interval: rtt,
                    app_limited: false,
                    prior_delivered: delivered.saturating_sub(round_bytes),
                    acked,
                    lost: if k == 0 { lost_per_round } else { 0 },
                    rtt: Some(rtt),
                };
                bbr.on_ack(*now, &rs, *delivered, round_bytes as usize);
            }
        }
    }

    #[test]
    fn the_model_settles_on_the_path_and_ignores_random_loss() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        let rate = 6_000_000.0;
        // One chunk in a hundred lost every round: not a full pipe by itself.
        feed(&mut bbr, &mut path(), 40, rate, rtt, 3 * MTU);
        assert!(bbr.filled_pipe);
        assert!((bbr.bandwidth() - rate).abs() < rate * 0.01, "{}", bbr.bandwidth());
        assert_eq!(bbr.min_rtt(), Some(rtt));
        let bdp = rate * rtt.as_secs_f64();
        let cwnd = bbr.cwnd() as f64;
        // Twice the BDP and the queue share (24 packets: 0.12 BDP here).
        assert!(cwnd > 1.9 * bdp && cwnd < 2.2 * bdp, "cwnd {cwnd} for a BDP of {bdp}");
        let gain = bbr.pacing_rate() / rate;
        assert!((0.74..=1.26).contains(&gain), "pacing gain {gain}");
    }

    #[test]
    fn on_a_slow_path_the_queue_share_is_one_bdp() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        // 1 Mbit/s: a BDP of 5,000 bytes, about 4 packets.
        let rate = 125_000.0;
        feed(&mut bbr, &mut path(), 60, rate, rtt, 0);
        assert!(bbr.filled_pipe);
        let bdp = rate * rtt.as_secs_f64();
        let cwnd = bbr.cwnd() as f64;
        // 24 packets on top would be 28,800 bytes (230 ms of queue at this rate).
        assert!(cwnd >= 2.0 * bdp && cwnd <= 3.2 * bdp, "cwnd {cwnd} for a BDP of {bdp}");
    }

    #[test]
    fn a_round_that_overflows_a_queue_caps_the_flight_until_probing_lifts_it() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        let mut at = path();
        feed(&mut bbr, &mut at, 20, 6_000_000.0, rtt, 0);
        let before = bbr.cwnd();
        assert!(bbr.inflight_hi.is_none());
        // One round losing 10%: the flight stays below 70% of the window it had (a
        // quarter more if the round after it probed).
        feed(&mut bbr, &mut at, 1, 6_000_000.0, rtt, 20 * MTU);
        feed(&mut bbr, &mut at, 1, 6_000_000.0, rtt, 0);
        let hi = bbr.inflight_hi.expect("a ceiling");
        assert!(hi <= before * 7 / 10 * 5 / 4 + MTU, "{hi} of {before}");
        assert!(bbr.cwnd() <= hi);
        // Clean rounds with probing raise it back above the window it had.
        feed(&mut bbr, &mut at, 80, 6_000_000.0, rtt, 0);
        assert!(bbr.inflight_hi.is_some_and(|h| h >= before), "{:?}", bbr.inflight_hi);
        assert!(bbr.cwnd() >= before * 9 / 10, "{} of {before}", bbr.cwnd());
    }

    #[test]
    fn heavy_loss_in_startup_fills_the_pipe() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        // A round of 240 kB losing 20 chunks (10%): the queue overflowed.
        feed(&mut bbr, &mut path(), 3, 6_000_000.0, rtt, 20 * MTU);
        assert!(bbr.filled_pipe);
        assert_ne!(bbr.mode, Mode::Startup);
    }

    #[test]
    fn probe_rtt_shrinks_the_window_when_the_min_rtt_is_old_then_restores_it() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        let mut at = path();
        feed(&mut bbr, &mut at, 20, 6_000_000.0, rtt, 0);
        let before = bbr.cwnd();
        // RTT samples above the minimum for longer than the window.
        let mut now = at.now;
        let mut saw_probe = false;
        for _ in 0..300 {
            let rs = RateSample { rtt: Some(rtt * 2), acked: MTU, ..RateSample::default() };
            now += rtt;
            bbr.on_ack(now, &rs, 0, 0);
            saw_probe |= bbr.cwnd() == 4 * MTU;
        }
        assert!(saw_probe, "never entered ProbeRtt");
        assert!(bbr.cwnd() >= before.min(bbr.prior_cwnd), "window not restored: {}", bbr.cwnd());
        assert!(!matches!(bbr.mode, Mode::ProbeRtt { .. }));
    }

    #[test]
    fn app_limited_samples_do_not_lower_the_estimate() {
        let mut bbr = Bbr::new(MTU, 4 * MTU, 7);
        let rtt = Duration::from_millis(40);
        feed(&mut bbr, &mut path(), 5, 6_000_000.0, rtt, 0);
        let bw = bbr.bandwidth();
        let rs = RateSample {
            delivered: 1000,
            interval: rtt,
            app_limited: true,
            acked: 1000,
            rtt: Some(rtt),
            ..RateSample::default()
        };
        bbr.on_ack(Instant::now() + Duration::from_secs(1), &rs, 0, 0);
        assert_eq!(bbr.bandwidth(), bw);
    }
}
