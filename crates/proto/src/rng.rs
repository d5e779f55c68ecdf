//! Randomness for the machines: a seeded deterministic source (so a test run is the same
//! run for the same seed) that is still a PRF, and the operating system's source that
//! seeds it in production.

use hmac::{Hmac, Mac};

/// HMAC-SHA256(seed, counter): a PRF in counter mode. Values the machines send in clear
/// (ICE tie-breakers, STUN transaction ids, SCTP verification tags) tell nothing about the
/// others without the seed, and the same seed always gives the same sequence.
#[derive(Clone)]
pub struct SeededRng {
    mac: Hmac<sha2::Sha256>,
    counter: u64,
}

impl std::fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is a secret.
        f.debug_struct("SeededRng").field("counter", &self.counter).finish_non_exhaustive()
    }
}

impl SeededRng {
    pub fn new(seed: &[u8; 32]) -> SeededRng {
        SeededRng {
            mac: <Hmac<sha2::Sha256> as Mac>::new_from_slice(seed).expect("any key length"),
            counter: 0,
        }
    }

    /// A source that starts after `skip` draws of `seed`'s sequence: distinct sequences
    /// from one seed for separate uses.
    pub fn with_counter(seed: &[u8; 32], skip: u64) -> SeededRng {
        SeededRng { counter: skip, ..SeededRng::new(seed) }
    }

    /// The next 32 bytes.
    pub fn next_block(&mut self) -> [u8; 32] {
        self.counter += 1;
        let mut mac = self.mac.clone();
        mac.update(&self.counter.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn next_u64(&mut self) -> u64 {
        let b = self.next_block();
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Fills `out` (any length) from successive blocks.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let b = self.next_block();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// `N` bytes from the operating system's CSPRNG. Panics only when the OS has no random
/// source at all, which no supported platform lacks.
pub fn os_random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the operating system provides randomness");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_others_differ() {
        let (mut a, mut b) = (SeededRng::new(&[7; 32]), SeededRng::new(&[7; 32]));
        let mut c = SeededRng::new(&[8; 32]);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert!(xs.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn skipping_lands_on_the_same_draw() {
        let mut a = SeededRng::new(&[1; 32]);
        let _ = a.next_block();
        let mut b = SeededRng::with_counter(&[1; 32], 1);
        assert_eq!(a.next_block(), b.next_block());
    }

    #[test]
    fn fill_covers_lengths_that_are_not_whole_blocks() {
        let mut out = [0u8; 45];
        SeededRng::new(&[3; 32]).fill(&mut out);
        let mut r = SeededRng::new(&[3; 32]);
        let (x, y) = (r.next_block(), r.next_block());
        assert_eq!(&out[..32], &x);
        assert_eq!(&out[32..], &y[..13]);
    }

    #[test]
    fn os_random_is_not_constant() {
        assert_ne!(os_random::<16>(), os_random::<16>());
    }
}
