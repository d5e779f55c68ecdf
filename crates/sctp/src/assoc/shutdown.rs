//! The end of an association: the graceful SHUTDOWN exchange (RFC 9260 §9.2) and ABORT
//! (§9.1), each with the reason the application is told.

use super::*;

impl Association {
    /// Ends the association at once with an ABORT (User-Initiated Abort cause, §3.3.10.12).
    pub fn abort(&mut self) {
        self.abort_with(SctpCloseReason::LocalAbort);
    }

    /// Sends ABORT, its User-Initiated Abort cause saying why, and ends.
    pub(super) fn abort_with(&mut self, reason: SctpCloseReason) {
        if self.state() == SctpState::Ended {
            return;
        }
        if let Some(peer) = self.state.peer() {
            let mut cause = Vec::new();
            chunk::write_param(&mut cause, CAUSE_USER_INITIATED_ABORT, reason.to_string().as_bytes());
            let p = self.chunk_packet(peer.tag, chunk::ABORT, &cause);
            self.lone.push_back(p);
        }
        self.end(reason);
    }

    /// Graceful close (§9.2): SHUTDOWN once everything sent is acknowledged.
    pub fn close(&mut self, now: Instant) {
        match self.state() {
            SctpState::Established => {
                self.state.advance(State::ShutdownSent);
                self.closed_locally = true;
                self.maybe_shutdown(now);
            }
            SctpState::Ended | SctpState::ShutdownSent | SctpState::ShutdownAckSent => {}
            _ => self.end(SctpCloseReason::ClosedBeforeEstablished),
        }
    }

    pub(super) fn maybe_shutdown(&mut self, now: Instant) {
        if self.state() != SctpState::ShutdownSent || !self.state.sender().is_some_and(Sender::idle) {
            return;
        }
        let Some(peer) = self.state.peer() else { return };
        let cumulative = self.state.receiver().map_or(0, Receiver::cumulative_tsn);
        let p = self.chunk_packet(peer.tag, chunk::SHUTDOWN, &cumulative.to_be_bytes());
        self.lone.push_back(p.clone());
        self.t1 = Some(T1::start(p, now, self.rto()));
    }

    pub(super) fn shut_down(&self) -> SctpCloseReason {
        SctpCloseReason::ShutDown { by_peer: !self.closed_locally }
    }

    pub(super) fn end(&mut self, reason: SctpCloseReason) {
        if self.state() == SctpState::Ended {
            return;
        }
        self.state.end();
        self.t1 = None;
        self.sack_at = None;
        self.events.push_back(SctpEvent::Closed { reason });
    }

    /// §9.2: no new data from here on; SHUTDOWN ACK once everything we sent is
    /// acknowledged, again on T2 (the T1 slot) and whenever SHUTDOWN is repeated, until
    /// SHUTDOWN COMPLETE.
    pub(super) fn on_shutdown(&mut self, now: Instant) {
        match self.state() {
            SctpState::Established | SctpState::ShutdownSent => {
                self.state.advance(State::ShutdownAckSent);
                // Our own SHUTDOWN's timer (simultaneous shutdown) gives way to T2.
                self.t1 = None;
                self.maybe_shutdown_ack(now);
            }
            // The peer did not get our SHUTDOWN ACK: send it again now.
            SctpState::ShutdownAckSent => match &self.t1 {
                Some(t) => self.lone.push_back(t.packet.clone()),
                None => self.maybe_shutdown_ack(now),
            },
            _ => {}
        }
    }

    /// Sends SHUTDOWN ACK (and starts T2) once nothing we sent is outstanding.
    pub(super) fn maybe_shutdown_ack(&mut self, now: Instant) {
        if self.state() != SctpState::ShutdownAckSent
            || self.t1.is_some()
            || !self.state.sender().is_none_or(Sender::idle)
        {
            return;
        }
        let Some(peer) = self.state.peer() else { return };
        let p = self.chunk_packet(peer.tag, chunk::SHUTDOWN_ACK, &[]);
        self.lone.push_back(p.clone());
        self.t1 = Some(T1::start(p, now, self.rto()));
    }

    /// After the end: a SHUTDOWN ACK repeated by the peer means our SHUTDOWN COMPLETE was
    /// lost; answer it again (RFC 9260 §8.4 item 5, §9.2), or the peer retries until it
    /// gives up and reports a failure.
    pub(super) fn answer_after_end(&mut self, packet: &[u8]) {
        let Some(peer) = self.state.peer() else { return };
        let Ok(parsed) = Packet::parse(packet) else { return };
        if parsed.header.verification_tag != self.my_tag {
            return;
        }
        let shutdown_ack = parsed.chunks().any(|c| c.is_ok_and(|c| c.typ == chunk::SHUTDOWN_ACK));
        if shutdown_ack && self.lone.len() < MAX_CONTROL {
            let p = self.chunk_packet(peer.tag, chunk::SHUTDOWN_COMPLETE, &[]);
            self.lone.push_back(p);
        }
    }

    pub(super) fn on_shutdown_ack(&mut self) {
        let Some(peer) = self.state.peer() else { return };
        let p = self.chunk_packet(peer.tag, chunk::SHUTDOWN_COMPLETE, &[]);
        self.lone.push_back(p);
        self.end(self.shut_down());
    }
}
