//! Retransmission timers that double: STUN transactions (RFC 8489 §6.2.1), DTLS flights
//! (RFC 6347 §4.2.4.1), SCTP's T1-init, T1-cookie and T2-shutdown (RFC 9260 §6.3.3, §9.2).
//! One type, parameters per use.

use std::time::{Duration, Instant};

/// How a [`Backoff`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The wait after the first transmission.
    pub initial: Duration,
    /// The wait never grows past this.
    pub max: Duration,
    /// Transmissions in all before giving up; `None`: the caller has its own deadline.
    pub transmissions: Option<u32>,
    /// After the last transmission, wait `initial` times this before giving up
    /// (RFC 8489's Rm); `None`: the doubled wait, as after any other transmission.
    pub last_wait_factor: Option<u32>,
}

impl BackoffConfig {
    /// RFC 8489 §6.2.1 over UDP: RTO 500 ms doubling, Rc = 7 transmissions, then Rm = 16
    /// RTOs of waiting (39.5 s in all).
    pub const STUN: BackoffConfig = BackoffConfig {
        initial: Duration::from_millis(500),
        max: Duration::MAX,
        transmissions: Some(7),
        last_wait_factor: Some(16),
    };
}

/// One timer: call [`Backoff::on_transmit`] each time the message goes out; it says when
/// to send it again (or, after the last one, when to give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    wait: Duration,
    sent: u32,
    next: Option<Instant>,
}

impl Backoff {
    pub const fn new(config: BackoffConfig) -> Backoff {
        Backoff { config, wait: config.initial, sent: 0, next: None }
    }

    /// The message went out at `now`: returns when the timer fires.
    pub fn on_transmit(&mut self, now: Instant) -> Instant {
        self.sent += 1;
        let wait = match self.config.last_wait_factor {
            Some(factor) if self.is_exhausted() => self.config.initial.saturating_mul(factor),
            _ => self.wait,
        };
        self.wait = self.wait.saturating_mul(2).min(self.config.max);
        // A wait past what an Instant can hold is "never" in practice: a year.
        let at =
            now.checked_add(wait).or_else(|| now.checked_add(Duration::from_secs(31_536_000))).unwrap_or(now);
        self.next = Some(at);
        at
    }

    /// When the timer fires, if it runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// The timer fired at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next.is_some_and(|t| now >= t)
    }

    /// Every transmission was made: when the timer fires now, give up.
    pub fn is_exhausted(&self) -> bool {
        self.config.transmissions.is_some_and(|n| self.sent >= n)
    }

    /// Transmissions so far.
    pub fn transmissions(&self) -> u32 {
        self.sent
    }

    /// The next wait (before doubling caps apply to the one after).
    pub fn current_wait(&self) -> Duration {
        self.wait
    }

    /// Stops the timer and starts the doubling over (an answer came).
    pub fn reset(&mut self) {
        *self = Backoff::new(self.config);
    }

    /// Restarts with a different first wait (SCTP: the RTO measured so far).
    pub fn restart_with(&mut self, initial: Duration) {
        *self = Backoff::new(BackoffConfig { initial, ..self.config });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(config: BackoffConfig, n: usize) -> Vec<u64> {
        let start = Instant::now();
        let mut b = Backoff::new(config);
        let mut now = start;
        (0..n)
            .map(|_| {
                now = b.on_transmit(now);
                (now - start).as_millis() as u64
            })
            .collect()
    }

    #[test]
    fn stun_follows_rfc_8489_6_2_1() {
        // Requests at 0, 500, 1500, 3500, 7500, 15500, 31500 ms; failure at 39500 ms.
        assert_eq!(offsets(BackoffConfig::STUN, 7), [500, 1500, 3500, 7500, 15500, 31500, 39500]);
        let mut b = Backoff::new(BackoffConfig::STUN);
        let now = Instant::now();
        for _ in 0..6 {
            let _ = b.on_transmit(now);
            assert!(!b.is_exhausted());
        }
        let _ = b.on_transmit(now);
        assert!(b.is_exhausted());
    }

    #[test]
    fn the_wait_is_capped() {
        let config = BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(3),
            transmissions: None,
            last_wait_factor: None,
        };
        assert_eq!(offsets(config, 6), [500, 1500, 3500, 6500, 9500, 12500]);
    }

    #[test]
    fn reset_starts_over_and_stops_the_timer() {
        let mut b = Backoff::new(BackoffConfig::STUN);
        let now = Instant::now();
        let _ = b.on_transmit(now);
        let _ = b.on_transmit(now);
        b.reset();
        assert_eq!(b.deadline(), None);
        assert_eq!(b.on_transmit(now), now + Duration::from_millis(500));
    }
}
