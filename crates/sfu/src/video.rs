//! Which of the others' videos a subscriber receives, and how good: last-N and thumbnails.
//!
//! Publishers are ranked for each subscriber: those who had the floor most recently first
//! ([`crate::Speakers::recent`]), then the others in the order they joined. The first
//! `last_n` of them are forwarded, the others' video is paused (their audio is not: it is
//! what makes someone the speaker). When a subscriber is shown more than `thumbnails_above`
//! videos, only the most recent speaker's comes in its best layer and the others in their
//! lowest one (tiles in a grid of many are small); when nobody has spoken yet, all are
//! thumbnails.

use std::collections::HashSet;
use std::hash::Hash;

/// How one publisher's video reaches one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The best layer the path carries.
    Full,
    /// The lowest layer.
    Thumbnail,
    /// Not forwarded (outside the last N).
    Off,
}

/// The room's rule: how many videos a subscriber gets and how many of them in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoPolicy {
    /// At most this many videos forwarded to a subscriber (`None`: all).
    pub last_n: Option<usize>,
    /// More videos than this shown to a subscriber make all but the featured one thumbnails.
    pub thumbnails_above: usize,
}

impl Default for VideoPolicy {
    fn default() -> Self {
        VideoPolicy { last_n: None, thumbnails_above: 3 }
    }
}

impl VideoPolicy {
    /// What `subscriber` gets of each video publisher of its room (`publishers` in joining
    /// order; the subscriber itself is skipped), given the room's speakers most recent first.
    pub fn wants<P: Clone + Eq + Hash>(
        &self,
        subscriber: &P,
        publishers: &[P],
        recent: &[P],
    ) -> Vec<(P, Want)> {
        // (By sets: comparing every publisher with every other made a room of 100 compare a
        // million names for each speaker change.)
        let publishing: HashSet<&P> = publishers.iter().collect();
        let spoke: Vec<&P> = recent.iter().filter(|p| *p != subscriber && publishing.contains(p)).collect();
        let spoken: HashSet<&P> = spoke.iter().copied().collect();
        let mut ranked = spoke.clone();
        ranked.extend(publishers.iter().filter(|p| *p != subscriber && !spoken.contains(p)));
        let shown = self.last_n.unwrap_or(usize::MAX).min(ranked.len());
        let thumbnails = shown > self.thumbnails_above;
        // The most recent other speaker, shown in full among thumbnails.
        let featured = |rank: usize| rank == 0 && !spoke.is_empty();
        ranked
            .into_iter()
            .enumerate()
            .map(|(rank, p)| {
                let want = if rank >= shown {
                    Want::Off
                } else if thumbnails && !featured(rank) {
                    Want::Thumbnail
                } else {
                    Want::Full
                };
                (p.clone(), want)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Want::*;

    fn wants(
        policy: VideoPolicy,
        me: &'static str,
        publishers: &[&'static str],
        recent: &[&'static str],
    ) -> Vec<(&'static str, Want)> {
        policy.wants(&me, publishers, recent)
    }

    #[test]
    fn a_small_room_gets_everyone_in_full() {
        let p = VideoPolicy::default();
        assert_eq!(wants(p, "a", &["a", "b", "c", "d"], &[]), vec![("b", Full), ("c", Full), ("d", Full)]);
        assert_eq!(wants(p, "a", &["a", "b", "c", "d"], &["c"]), vec![("c", Full), ("b", Full), ("d", Full)]);
    }

    #[test]
    fn a_large_room_features_the_most_recent_other_speaker() {
        let p = VideoPolicy::default();
        let all = ["a", "b", "c", "d", "e"];
        assert_eq!(
            wants(p, "a", &all, &["d", "a", "b"]),
            vec![("d", Full), ("b", Thumbnail), ("c", Thumbnail), ("e", Thumbnail)]
        );
        // The speaker sees the one before it.
        assert_eq!(
            wants(p, "d", &all, &["d", "a", "b"]),
            vec![("a", Full), ("b", Thumbnail), ("c", Thumbnail), ("e", Thumbnail)]
        );
        // Nobody spoke: a grid of thumbnails.
        assert!(wants(p, "a", &all, &[]).iter().all(|(_, w)| *w == Thumbnail));
    }

    #[test]
    fn last_n_forwards_the_most_recent_speakers_then_the_first_joined() {
        let p = VideoPolicy { last_n: Some(2), thumbnails_above: 3 };
        let all = ["a", "b", "c", "d", "e"];
        assert_eq!(wants(p, "a", &all, &["e"]), vec![("e", Full), ("b", Full), ("c", Off), ("d", Off)]);
        assert_eq!(wants(p, "b", &all, &["c", "e"]), vec![("c", Full), ("e", Full), ("a", Off), ("d", Off)]);
        // Speakers who publish no video (or left) take no place.
        assert_eq!(wants(p, "a", &["a", "b", "c"], &["x", "c"]), vec![("c", Full), ("b", Full)]);
        let p = VideoPolicy { last_n: Some(2), thumbnails_above: 1 };
        assert_eq!(wants(p, "a", &all, &["e"]), vec![("e", Full), ("b", Thumbnail), ("c", Off), ("d", Off)]);
        let p = VideoPolicy { last_n: Some(0), thumbnails_above: 3 };
        assert!(wants(p, "a", &all, &["e"]).iter().all(|(_, w)| *w == Off));
    }

    #[test]
    fn a_subscriber_alone_or_without_publishers_gets_nothing() {
        let p = VideoPolicy::default();
        assert!(wants(p, "a", &["a"], &["a"]).is_empty());
        assert!(wants(p, "a", &[], &["b"]).is_empty());
    }
}
