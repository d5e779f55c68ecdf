//! Throttling of key frame requests (PLI, RFC 4585 §6.3.1; FIR, RFC 5104 §4.3.1): a
//! decoder that keeps failing asks on every frame, but a sender answering each request
//! with a key frame would flood the path. One request per interval goes out; one asked
//! for in between is held and sent when the interval ends, unless a key frame came first.

use std::time::{Duration, Instant};

/// Rate-limited key frame requests for one received stream.
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequests {
    pub fn new(min_interval: Duration) -> KeyframeRequests {
        KeyframeRequests { min_interval, last_sent: None, pending: false }
    }

    fn allowed_at(&self) -> Option<Instant> {
        self.last_sent.map(|at| at + self.min_interval)
    }

    /// A key frame is wanted: whether to send a PLI now. If not, the request is held for
    /// [`KeyframeRequests::poll_request`].
    pub fn request(&mut self, now: Instant) -> bool {
        if self.allowed_at().is_some_and(|at| now < at) {
            self.pending = true;
            return false;
        }
        self.last_sent = Some(now);
        self.pending = false;
        true
    }

    /// Whether a held request is due now (then it counts as sent).
    pub fn poll_request(&mut self, now: Instant) -> bool {
        self.pending && self.request(now)
    }

    /// When a held request is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending {
            self.allowed_at()
        } else {
            None
        }
    }

    /// A key frame arrived: a held request is no longer needed.
    pub fn on_keyframe(&mut self) {
        self.pending = false;
    }

    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn requests_are_rate_limited_and_a_held_one_is_released() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(300 * MS);
        assert!(k.request(t0));
        assert!(!k.request(t0 + 10 * MS));
        assert!(!k.request(t0 + 20 * MS));
        assert_eq!(k.poll_timeout(), Some(t0 + 300 * MS));
        assert!(!k.poll_request(t0 + 299 * MS));
        assert!(k.poll_request(t0 + 300 * MS));
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.poll_request(t0 + 900 * MS));
        assert!(k.request(t0 + 900 * MS));
    }

    #[test]
    fn a_key_frame_cancels_a_held_request() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::new(300 * MS);
        assert!(k.request(t0));
        assert!(!k.request(t0 + MS));
        assert!(k.is_pending());
        k.on_keyframe();
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.poll_request(t0 + 400 * MS));
    }
}
