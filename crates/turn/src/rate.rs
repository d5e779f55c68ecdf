//! Bandwidth shared by several owners (the allocations of one user, or of the whole server,
//! across the relay's threads) without a lock: a token bucket kept as one atomic instant,
//! the generic cell rate algorithm. Spending moves the instant at which the bucket would be
//! full again forward by the time the bytes take at the rate; what would push it more than
//! one second ahead of now is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far ahead of now the bucket may run: one second's worth of bytes.
const BURST: Duration = Duration::from_secs(1);
/// The bucket counts as full (the capacity reached) when less than this is left.
const NEARLY_EMPTY: Duration = Duration::from_millis(100);

/// Bytes per second shared by every holder of an `Arc<SharedRate>`.
#[derive(Debug)]
pub struct SharedRate {
    bytes_per_second: u64,
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the bucket is full again.
    full_at: AtomicU64,
}

impl SharedRate {
    /// A bucket of `bytes_per_second` (at least 1), full at `now`.
    pub fn new(bytes_per_second: u64, now: Instant) -> SharedRate {
        SharedRate { bytes_per_second: bytes_per_second.max(1), epoch: now, full_at: AtomicU64::new(0) }
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos().min(u128::from(u64::MAX)) as u64
    }

    fn cost(&self, bytes: u64) -> u64 {
        (u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_second)).min(u128::from(u64::MAX))
            as u64
    }

    /// Takes `bytes` from the bucket; false (and nothing taken) when it does not hold them.
    pub fn spend(&self, now: Instant, bytes: usize) -> bool {
        let now = self.nanos(now);
        let cost = self.cost(bytes as u64);
        let limit = now.saturating_add(BURST.as_nanos() as u64);
        let mut current = self.full_at.load(Ordering::Relaxed);
        loop {
            let next = current.max(now).saturating_add(cost);
            if next > limit {
                return false;
            }
            match self.full_at.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back `bytes` taken by [`SharedRate::spend`] for a packet a later limit refused.
    pub fn refund(&self, bytes: usize) {
        let cost = self.cost(bytes as u64);
        let _ = self
            .full_at
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| Some(current.saturating_sub(cost)));
    }

    /// Takes `bytes` that were already relayed (a byte stream cannot give them back), as
    /// far as the bucket goes: it is left empty rather than in debt beyond one second.
    pub fn take(&self, now: Instant, bytes: usize) {
        let now = self.nanos(now);
        let cost = self.cost(bytes as u64);
        let limit = now.saturating_add(BURST.as_nanos() as u64);
        let _ = self.full_at.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
            Some(current.max(now).saturating_add(cost).min(limit.max(current)))
        });
    }

    /// The bytes the bucket holds at `now`.
    pub fn available(&self, now: Instant) -> u64 {
        let now = self.nanos(now);
        let ahead = self.full_at.load(Ordering::Relaxed).saturating_sub(now);
        let left = (BURST.as_nanos() as u64).saturating_sub(ahead);
        (u128::from(left) * u128::from(self.bytes_per_second) / 1_000_000_000) as u64
    }

    /// Whether less than a tenth of a second's worth is left: the traffic runs at the rate.
    pub fn exhausted(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        let ahead = self.full_at.load(Ordering::Relaxed).saturating_sub(now);
        ahead + NEARLY_EMPTY.as_nanos() as u64 > BURST.as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_one_second_and_refills_at_the_rate() {
        let now = Instant::now();
        let rate = SharedRate::new(1000, now);
        assert!(rate.spend(now, 600));
        assert!(rate.spend(now, 400));
        assert!(!rate.spend(now, 1), "one second's worth is spent");
        assert!(rate.exhausted(now));
        let later = now + Duration::from_millis(500);
        assert_eq!(rate.available(later), 500);
        assert!(!rate.exhausted(later));
        assert!(!rate.spend(later, 501));
        assert!(rate.spend(later, 500));
        // A long idle time does not store more than one second.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(rate.available(much_later), 1000);
        assert!(!rate.spend(much_later, 1001));
    }

    #[test]
    fn a_refund_makes_room_for_what_was_given_back() {
        let now = Instant::now();
        let rate = SharedRate::new(1000, now);
        assert!(rate.spend(now, 600));
        assert!(rate.spend(now, 400));
        rate.refund(400);
        assert_eq!(rate.available(now), 400);
        assert!(rate.spend(now, 400));
        assert!(!rate.spend(now, 1));
        // A refund never leaves more than a full bucket.
        rate.refund(5000);
        assert_eq!(rate.available(now), 1000);
    }

    #[test]
    fn threads_sharing_it_never_spend_more_than_it_holds() {
        let now = Instant::now();
        let rate = std::sync::Arc::new(SharedRate::new(100_000, now));
        let spent: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let rate = rate.clone();
                    s.spawn(move || (0..10_000).filter(|_| rate.spend(now, 100)).count() as u64 * 100)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(spent, 100_000);
    }
}
