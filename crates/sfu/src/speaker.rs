//! The active speaker of a room, from the audio levels publishers put in their packets
//! (RFC 6464: the level of each packet in -dBov, 127 being silence).
//!
//! Each publisher's loudness is smoothed (fast up, [`ATTACK`]; slowly down, [`RELEASE`]). The speaker
//! changes to another publisher only when that one is above [`SPEAKING`] and, for
//! [`HOLD`], louder than the current speaker by [`MARGIN`] (or the current one went
//! quiet): a cough or a word in someone's talk does not take the floor. When everyone is
//! quiet the last speaker stays the speaker. [`Speakers::recent`] lists publishers by when
//! they last had the floor (the most recent first), what a last-N choice needs.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Loudness (127 - level in -dBov, so 0 is silence) above which a publisher is speaking:
/// louder than -60 dBov (speech is typically -20 to -50 dBov, a quiet room's noise below
/// -60; muted audio is -127).
pub const SPEAKING: f32 = 67.0;
/// How much louder than the current speaker another must be to take the floor (in dB).
pub const MARGIN: f32 = 6.0;
/// How long another must stay ahead before it takes the floor.
pub const HOLD: Duration = Duration::from_millis(500);
/// Time constants of the smoothing of each publisher's loudness: it rises fast and falls
/// slowly, so the gaps between words (or a test tone's beeps) do not make a talker quiet.
pub const ATTACK: Duration = Duration::from_millis(100);
pub const RELEASE: Duration = Duration::from_millis(800);
/// A publisher with no level for this long counts as quiet.
pub const STALE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Loudness {
    smooth: f32,
    last: Instant,
}

/// The speaker detector of one room.
#[derive(Debug)]
pub struct Speakers<P> {
    loudness: HashMap<P, Loudness>,
    current: Option<P>,
    /// Who has been ahead of the current speaker since when.
    challenger: Option<(P, Instant)>,
    /// Publishers by when they last had the floor, the most recent first.
    recent: Vec<P>,
}

impl<P: Clone + Eq + Hash> Default for Speakers<P> {
    fn default() -> Self {
        Speakers { loudness: HashMap::new(), current: None, challenger: None, recent: Vec::new() }
    }
}

impl<P: Clone + Eq + Hash> Speakers<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A packet of `publisher`'s audio with RFC 6464 `level` (-dBov, 0..=127) at `now`.
    pub fn on_level<Q>(&mut self, publisher: &Q, level: u8, now: Instant)
    where
        P: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = P> + ?Sized,
    {
        let loud = f32::from(127 - level.min(127));
        match self.loudness.get_mut(publisher) {
            Some(l) => {
                let dt = now.saturating_duration_since(l.last).as_secs_f32();
                let tau = if loud > l.smooth { ATTACK } else { RELEASE };
                let a = 1.0 - (-dt / tau.as_secs_f32()).exp();
                l.smooth += (loud - l.smooth) * a;
                l.last = now;
            }
            None => {
                // A first packet counts for little: one loud packet is not speech.
                let smooth = loud * 0.1;
                self.loudness.insert(publisher.to_owned(), Loudness { smooth, last: now });
            }
        }
    }

    /// The smoothed loudness of `publisher` at `now` (0 when stale or unknown).
    fn loudness(&self, publisher: &P, now: Instant) -> f32 {
        self.loudness
            .get(publisher)
            .filter(|l| now.saturating_duration_since(l.last) < STALE)
            .map_or(0.0, |l| l.smooth)
    }

    /// Decides who has the floor at `now`; `Some` when that changed.
    pub fn decide(&mut self, now: Instant) -> Option<P> {
        let loudest = self
            .loudness
            .keys()
            .map(|p| (p, self.loudness(p, now)))
            .filter(|(_, l)| *l >= SPEAKING)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, l)| (p.clone(), l));
        // (Nobody above the threshold for a moment: a challenger keeps its time.)
        let (candidate, loud) = loudest?;
        if self.current.as_ref() == Some(&candidate) {
            self.challenger = None;
            return None;
        }
        let current = self.current.as_ref().map_or(0.0, |c| self.loudness(c, now));
        let ahead = current < SPEAKING || loud >= current + MARGIN;
        if !ahead {
            self.challenger = None;
            return None;
        }
        let since = match &self.challenger {
            Some((p, since)) if *p == candidate => *since,
            _ => {
                self.challenger = Some((candidate.clone(), now));
                now
            }
        };
        // The first speaker of a room needs no hold: nobody has the floor to keep.
        if self.current.is_some() && now.saturating_duration_since(since) < HOLD {
            return None;
        }
        self.challenger = None;
        self.current = Some(candidate.clone());
        self.recent.retain(|p| *p != candidate);
        self.recent.insert(0, candidate.clone());
        Some(candidate)
    }

    /// Who has the floor.
    pub fn current(&self) -> Option<&P> {
        self.current.as_ref()
    }

    /// Publishers by when they last had the floor, the most recent first.
    pub fn recent(&self) -> &[P] {
        &self.recent
    }

    /// `publisher` is gone (left, or stopped its audio).
    pub fn remove(&mut self, publisher: &P) {
        self.loudness.remove(publisher);
        self.recent.retain(|p| p != publisher);
        if self.current.as_ref() == Some(publisher) {
            self.current = None;
        }
        if self.challenger.as_ref().is_some_and(|(p, _)| p == publisher) {
            self.challenger = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms packets of each (publisher, level) for `ms`; returns the changes seen.
    fn talk(
        s: &mut Speakers<&'static str>,
        t: &mut Instant,
        ms: u64,
        who: &[(&'static str, u8)],
    ) -> Vec<&'static str> {
        let mut changes = Vec::new();
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for (p, level) in who {
                s.on_level(p, *level, *t);
            }
            changes.extend(s.decide(*t));
        }
        changes
    }

    #[test]
    fn the_loud_one_takes_the_floor_and_keeps_it_through_silence() {
        let mut s = Speakers::new();
        let mut t = Instant::now();
        assert!(talk(&mut s, &mut t, 1000, &[("ann", 127), ("ben", 127)]).is_empty(), "silence: nobody");
        assert!(talk(&mut s, &mut t, 2000, &[("ann", 65), ("ben", 127)]).is_empty(), "room noise: nobody");
        assert_eq!(talk(&mut s, &mut t, 1000, &[("ann", 30), ("ben", 127)]), vec!["ann"]);
        assert!(talk(&mut s, &mut t, 2000, &[("ann", 127), ("ben", 127)]).is_empty());
        assert_eq!(s.current(), Some(&"ann"), "the last speaker stays while all are quiet");
        assert_eq!(talk(&mut s, &mut t, 1500, &[("ann", 127), ("ben", 35)]), vec!["ben"]);
        assert_eq!(s.recent(), &["ben", "ann"]);
    }

    #[test]
    fn a_short_sound_does_not_take_the_floor() {
        let mut s = Speakers::new();
        let mut t = Instant::now();
        talk(&mut s, &mut t, 1000, &[("ann", 30), ("ben", 127)]);
        // Ben coughs for 200 ms while Ann talks on.
        assert!(talk(&mut s, &mut t, 200, &[("ann", 30), ("ben", 10)]).is_empty());
        assert!(talk(&mut s, &mut t, 1000, &[("ann", 30), ("ben", 127)]).is_empty());
        // Ben talks a little louder than Ann, not by the margin: Ann keeps the floor.
        assert!(talk(&mut s, &mut t, 2000, &[("ann", 30), ("ben", 27)]).is_empty());
        assert_eq!(s.current(), Some(&"ann"));
        // Clearly louder for long enough: Ben's.
        assert_eq!(talk(&mut s, &mut t, 2000, &[("ann", 30), ("ben", 15)]), vec!["ben"]);
    }

    #[test]
    fn a_speaker_who_leaves_gives_the_floor_up() {
        let mut s = Speakers::new();
        let mut t = Instant::now();
        talk(&mut s, &mut t, 1000, &[("ann", 30), ("ben", 40)]);
        assert_eq!(s.current(), Some(&"ann"));
        s.remove(&"ann");
        assert_eq!(s.current(), None);
        assert_eq!(talk(&mut s, &mut t, 200, &[("ben", 40)]), vec!["ben"]);
        // A publisher that stops sending levels is quiet after STALE.
        talk(&mut s, &mut t, 1500, &[("cat", 20)]);
        assert_eq!(s.current(), Some(&"cat"));
    }

    #[test]
    fn levels_out_of_range_are_silence_not_a_panic() {
        let mut s = Speakers::new();
        let t = Instant::now();
        for level in [0u8, 127, 128, 255] {
            s.on_level(&"x", level, t);
        }
        s.on_level(&"x", 0, t - Duration::from_secs(5));
        let _ = s.decide(t);
    }
}
