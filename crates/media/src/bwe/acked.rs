//! The acknowledged bitrate: what the receiver got per unit of its own time, over the last
//! half second of arrivals, from buckets of 25 ms so reordered reports land where they
//! belong.

use std::collections::VecDeque;

const BUCKET_MICROS: i64 = 25_000;
/// The window: 20 buckets, half a second.
const BUCKETS: i64 = 20;
/// No estimate from fewer complete buckets than this (150 ms).
const MIN_BUCKETS: i64 = 6;

#[derive(Debug, Clone, Default)]
pub(crate) struct AckedBitrate {
    /// Bytes per bucket; the last is the newest (`newest`), still filling.
    buckets: VecDeque<u64>,
    newest: Option<i64>,
}

impl AckedBitrate {
    /// A packet of `size` bytes arrived at `arrival` µs (receiver's clock).
    pub(crate) fn on_packet(&mut self, arrival: i64, size: usize) {
        let index = arrival.div_euclid(BUCKET_MICROS);
        let newest = *self.newest.get_or_insert(index);
        if index > newest {
            let gap = index - newest;
            if gap >= BUCKETS {
                // A long silence (or a jump of the receiver's clock): nothing before counts.
                self.buckets.clear();
            } else {
                self.buckets.extend((0..gap).map(|_| 0));
            }
            self.newest = Some(index);
        }
        if self.buckets.is_empty() {
            self.buckets.push_back(0);
        }
        while self.buckets.len() as i64 > BUCKETS + 1 {
            self.buckets.pop_front();
        }
        let age = self.newest.map_or(0, |n| n - index);
        if let Some(len) = usize::try_from(age).ok().filter(|&a| a < self.buckets.len()) {
            let slot = self.buckets.len() - 1 - len;
            self.buckets[slot] = self.buckets[slot].saturating_add(size as u64);
        }
    }

    /// Bit/s over the complete buckets, once there are enough.
    pub(crate) fn rate(&self) -> Option<u64> {
        let complete = self.buckets.len() as i64 - 1;
        if complete < MIN_BUCKETS {
            return None;
        }
        let bytes: u64 = self.buckets.iter().take(complete as usize).sum();
        let micros = (complete * BUCKET_MICROS) as u64;
        Some(bytes.saturating_mul(8_000_000) / micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_the_arrival_rate_over_half_a_second() {
        let mut a = AckedBitrate::default();
        // 1000 bytes every 10 ms: 800 kbit/s.
        for i in 0..100 {
            a.on_packet(i * 10_000, 1000);
            if i == 10 {
                assert_eq!(a.rate(), None);
            }
        }
        assert_eq!(a.rate(), Some(800_000));
        // Half the rate, then a reordered report into an older bucket.
        for i in 100..200 {
            a.on_packet(i * 20_000, 1000);
        }
        assert_eq!(a.rate(), Some(400_000));
        a.on_packet(199 * 20_000 - 100_000, 1000);
        assert_eq!(a.rate(), Some(416_000));
        // Out of the window, or a jump: ignored, or a fresh start.
        a.on_packet(i64::MIN, 1000);
        a.on_packet(i64::MAX, 1000);
        assert_eq!(a.rate(), None);
    }
}
