//! Path heartbeats (RFC 9260 §8.3): a HEARTBEAT when the association is idle, its answer
//! measuring the RTT, unanswered ones counted towards giving up.

use super::*;

impl Association {
    /// §8.3: a HEARTBEAT when nothing is in flight (T3 watches the peer otherwise), and the
    /// next one an interval plus an RTO later.
    pub(super) fn send_heartbeat(&mut self, now: Instant) {
        let Some(interval) = self.config.heartbeat_interval else { return };
        self.heartbeat_at = Some(now + interval + self.rto());
        if self.state() != SctpState::Established || !self.state.sender().is_some_and(Sender::idle) {
            return;
        }
        let nonce = self.rng.next_u64();
        let mut c = Vec::new();
        chunk::write_chunk(&mut c, chunk::HEARTBEAT, 0, |out| {
            chunk::write_param(out, PARAM_HEARTBEAT_INFO, &nonce.to_be_bytes())
        });
        self.control.push_back(c);
        self.heartbeat = Some((nonce, now));
    }

    pub(super) fn on_heartbeat_ack(&mut self, now: Instant, value: &[u8]) {
        let Some((nonce, sent)) = self.heartbeat else { return };
        let answered =
            Params::new(value).any(|(typ, info)| typ == PARAM_HEARTBEAT_INFO && info == nonce.to_be_bytes());
        if !answered {
            return;
        }
        self.heartbeat = None;
        self.heartbeat_misses = 0;
        if let Some(sender) = self.state.sender_mut() {
            sender.measure(now.saturating_duration_since(sent));
        }
    }
}
