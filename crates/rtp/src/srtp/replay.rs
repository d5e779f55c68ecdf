//! The replay list (RFC 3711 §3.3.2): the highest 64-bit index authenticated so far and a
//! sliding bitmap of which of the `width` indices below it were seen. Checked before the
//! packet is authenticated, updated only after.

use peerlink_proto::serial::unwrap_near;

/// Default width: RFC 3711 §3.3.2 asks for at least 64; video bursts reorder by hundreds.
pub const DEFAULT_WINDOW: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i % width` of these words is index `i`, for `highest - width < i <= highest`.
    bits: Box<[u64]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    Fresh,
    Seen,
    TooOld,
}

impl ReplayWindow {
    /// `width` is rounded up to a multiple of 64 (at least 64).
    pub(crate) fn new(width: usize) -> ReplayWindow {
        ReplayWindow { highest: None, bits: vec![0; width.div_ceil(64).max(1)].into_boxed_slice() }
    }

    fn width(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    /// RFC 3711 §3.3.1: the index of a packet with sequence number `seq` is the one of the
    /// three candidate rollover counters (ROC-1, ROC, ROC+1) nearest the highest index seen.
    /// A stream's first packet starts at ROC 0.
    pub(crate) fn estimate(&self, seq: u16) -> u64 {
        match self.highest {
            None => u64::from(seq),
            Some(h) => unwrap_near(h, u64::from(seq), 16),
        }
    }

    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }

    pub(crate) fn check(&self, index: u64) -> Replay {
        let Some(h) = self.highest else { return Replay::Fresh };
        if index > h {
            return Replay::Fresh;
        }
        if h - index >= self.width() {
            return Replay::TooOld;
        }
        if self.get(index) {
            Replay::Seen
        } else {
            Replay::Fresh
        }
    }

    /// Records an authenticated index (one that [`ReplayWindow::check`] called fresh).
    pub(crate) fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => {}
            Some(h) if index - h < self.width() => {
                // Slide: the slots between the old and new highest become unseen.
                for i in h + 1..index {
                    self.set(i, false);
                }
                self.highest = Some(index);
            }
            _ => {
                self.bits.fill(0);
                self.highest = Some(index);
            }
        }
        self.set(index, true);
    }

    fn get(&self, index: u64) -> bool {
        let slot = index % self.width();
        self.bits[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set(&mut self, index: u64, seen: bool) {
        let slot = index % self.width();
        let word = &mut self.bits[(slot / 64) as usize];
        if seen {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_repeated_and_old_indices_are_told_apart() {
        let mut w = ReplayWindow::new(DEFAULT_WINDOW);
        assert_eq!(w.check(5000), Replay::Fresh);
        w.accept(5000);
        assert_eq!(w.check(5000), Replay::Seen);
        // Reordered within the window: fresh once, then seen.
        assert_eq!(w.check(4000), Replay::Fresh);
        w.accept(4000);
        assert_eq!(w.check(4000), Replay::Seen);
        assert_eq!(w.check(5000 - 1024), Replay::TooOld);
        assert_eq!(w.check(5000 - 1023), Replay::Fresh);
        // Moving forward clears the slots it passes over.
        w.accept(5000 + 1000);
        assert_eq!(w.check(4000), Replay::TooOld);
        assert_eq!(w.check(5000), Replay::Seen);
        assert_eq!(w.check(5500), Replay::Fresh);
        // A jump beyond the width starts over.
        w.accept(1_000_000);
        assert_eq!(w.check(999_999), Replay::Fresh);
        assert_eq!(w.check(1_000_000), Replay::Seen);
    }

    #[test]
    fn the_window_matches_a_reference_set() {
        let mut w = ReplayWindow::new(128);
        let mut seen = std::collections::BTreeSet::new();
        let mut x = 12345u64;
        let mut top = 200u64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            top += (x >> 60) % 3;
            let i = top.saturating_sub((x >> 33) % 160);
            let expected = match seen.last() {
                Some(&h) if i + 128 <= h => Replay::TooOld,
                _ if seen.contains(&i) => Replay::Seen,
                _ => Replay::Fresh,
            };
            assert_eq!(w.check(i), expected, "index {i}");
            if expected == Replay::Fresh {
                w.accept(i);
                seen.insert(i);
            }
        }
    }

    #[test]
    fn the_index_follows_the_sequence_across_a_wrap() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.estimate(65_530), 65_530);
        w.accept(65_530);
        assert_eq!(w.estimate(3), 65_539);
        w.accept(65_539);
        assert_eq!(w.estimate(65_535), 65_535);
        assert_eq!(w.highest(), Some(65_539));
    }
}
