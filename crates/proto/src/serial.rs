//! Serial numbers that wrap (RFC 1982): SCTP TSNs and SSNs (RFC 9260 §1.6), RTP sequence
//! numbers and timestamps (RFC 3550 §5.1), and their unwrapping to 64 bits (RFC 3711
//! §3.3.1's rollover counter is the upper bits of an unwrapped sequence number).

use std::cmp::Ordering;

macro_rules! serial {
    ($name:ident, $unwrapper:ident, $int:ty, $signed:ty, $bits:expr) => {
        #[doc = concat!("A ", stringify!($bits), "-bit serial number: `a < b` when `b` is at most half")]
        /// the number space ahead of `a`, wrapping around. Exactly half apart compares as
        /// neither (RFC 1982 §3.2 leaves it undefined), so this is `PartialOrd` only.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $int);

        impl $name {
            #[must_use]
            pub fn wrapping_add(self, n: $int) -> $name {
                $name(self.0.wrapping_add(n))
            }

            #[must_use]
            pub fn wrapping_sub(self, n: $int) -> $name {
                $name(self.0.wrapping_sub(n))
            }

            /// `self - other` as a signed distance: positive when `self` is newer.
            pub fn distance(self, other: $name) -> $signed {
                self.0.wrapping_sub(other.0) as $signed
            }

            /// Whether `self` comes after `other` (RFC 1982 §3.2).
            pub fn is_newer_than(self, other: $name) -> bool {
                self.partial_cmp(&other) == Some(Ordering::Greater)
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &$name) -> Option<Ordering> {
                let d = self.0.wrapping_sub(other.0);
                if d == 0 {
                    Some(Ordering::Equal)
                } else if d == 1 << ($bits - 1) {
                    None
                } else if d < 1 << ($bits - 1) {
                    Some(Ordering::Greater)
                } else {
                    Some(Ordering::Less)
                }
            }
        }

        impl From<$int> for $name {
            fn from(n: $int) -> $name {
                $name(n)
            }
        }

        #[doc = concat!("Extends ", stringify!($name), "s to 64 bits, each to the value nearest the")]
        /// highest seen so far (reordered and repeated values land on their own cycle).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $unwrapper {
            highest: Option<u64>,
        }

        impl $unwrapper {
            pub const fn new() -> $unwrapper {
                $unwrapper { highest: None }
            }

            /// Starts from a known 64-bit value (SCTP: the peer's initial TSN minus one).
            pub const fn starting_at(value: u64) -> $unwrapper {
                $unwrapper { highest: Some(value) }
            }

            /// The 64-bit value of `n`, without remembering it.
            pub fn peek(&self, n: $name) -> u64 {
                match self.highest {
                    None => u64::from(n.0),
                    Some(h) => unwrap_near(h, u64::from(n.0), $bits),
                }
            }

            /// The 64-bit value of `n`; moves the reference forward when `n` is newer.
            pub fn unwrap(&mut self, n: $name) -> u64 {
                let v = self.peek(n);
                if self.highest.is_none_or(|h| v > h) {
                    self.highest = Some(v);
                }
                v
            }

            /// The highest value seen.
            pub fn highest(&self) -> Option<u64> {
                self.highest
            }
        }
    };
}

serial!(Serial16, Unwrapper16, u16, i16, 16);
serial!(Serial32, Unwrapper32, u32, i32, 32);

/// The value with low bits `low` (of `bits` bits) nearest `reference`; never below zero.
/// Exactly half a cycle away either way, the reference's own cycle wins (RFC 3711
/// Appendix A keeps the ROC then, as libsrtp does).
pub fn unwrap_near(reference: u64, low: u64, bits: u32) -> u64 {
    let cycle = 1u64 << bits;
    let base = reference & !(cycle - 1);
    // `min_by_key` keeps the first of equals: the reference's cycle comes first.
    [Some(base), base.checked_sub(cycle), base.checked_add(cycle)]
        .into_iter()
        .flatten()
        .map(|b| b + low)
        .min_by_key(|&c| c.abs_diff(reference))
        .unwrap_or(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_wraps() {
        assert!(Serial16(1) > Serial16(0));
        assert!(Serial16(0) > Serial16(u16::MAX));
        assert!(Serial16(0x7fff) > Serial16(0));
        assert_eq!(Serial16(0x8000).partial_cmp(&Serial16(0)), None);
        assert!(Serial32(5).is_newer_than(Serial32(u32::MAX - 5)));
        assert!(!Serial32(u32::MAX - 5).is_newer_than(Serial32(5)));
        assert_eq!(Serial32(5).distance(Serial32(u32::MAX - 5)), 11);
        assert_eq!(Serial16(3).wrapping_sub(5), Serial16(u16::MAX - 1));
    }

    #[test]
    fn unwrapping_follows_rollover_and_reordering() {
        let mut u = Unwrapper16::new();
        assert_eq!(u.unwrap(Serial16(65_534)), 65_534);
        assert_eq!(u.unwrap(Serial16(1)), 65_537);
        // A late packet from before the wrap stays on its cycle.
        assert_eq!(u.unwrap(Serial16(65_535)), 65_535);
        assert_eq!(u.highest(), Some(65_537));
        assert_eq!(u.unwrap(Serial16(2)), 65_538);
    }

    #[test]
    fn unwrapping_never_goes_below_zero() {
        let mut u = Unwrapper32::starting_at(3);
        assert_eq!(u.unwrap(Serial32(u32::MAX)), u64::from(u32::MAX));
        let mut v = Unwrapper32::starting_at(0);
        assert_eq!(v.unwrap(Serial32(u32::MAX - 1)), u64::from(u32::MAX - 1));
    }

    #[test]
    fn half_a_cycle_away_stays_in_the_references_cycle() {
        // RFC 3711 Appendix A: s_l = 100 with ROC 1, SEQ = 32868: SEQ - s_l == 32768, v = ROC.
        assert_eq!(unwrap_near(65_536 + 100, 32_868, 16), 65_536 + 32_868);
        // s_l = 40000 with ROC 1, SEQ = 7232: s_l - 32768 == SEQ, v = ROC.
        assert_eq!(unwrap_near(65_536 + 40_000, 7_232, 16), 65_536 + 7_232);
        // One past half: the neighbouring cycle.
        assert_eq!(unwrap_near(65_536 + 100, 32_869, 16), 32_869);
        assert_eq!(unwrap_near(65_536 + 40_000, 7_231, 16), 2 * 65_536 + 7_231);
    }

    #[test]
    fn unwrap_near_picks_the_nearest() {
        assert_eq!(unwrap_near(1 << 32, 5, 32), (1 << 32) + 5);
        assert_eq!(unwrap_near((1 << 32) + 5, u64::from(u32::MAX), 32), u64::from(u32::MAX));
        assert_eq!(unwrap_near(u64::from(u32::MAX), 2, 32), (1 << 32) + 2);
    }
}
