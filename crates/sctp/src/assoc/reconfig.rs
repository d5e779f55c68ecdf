//! Stream re-configuration (RFC 6525): resetting our outgoing streams, answering the peer's
//! reset and add-streams requests, and their retransmissions.

use super::*;

impl Association {
    /// Resets our outgoing `streams` (RFC 6525), after what is queued on them has been
    /// sent; the peer then resets its side. Closing a data channel does this.
    pub fn reset_streams(&mut self, streams: &[u16]) {
        if self.state() == SctpState::Ended || streams.is_empty() {
            return;
        }
        if self.state.peer().is_some_and(|p| !p.reconfig) {
            // A peer without RE-CONFIG cannot reset streams: the streams are done here.
            self.events.push_back(SctpEvent::OutgoingStreamsReset(streams.to_vec()));
            self.events.push_back(SctpEvent::IncomingStreamsReset(streams.to_vec()));
            return;
        }
        let seq = self.next_reset_seq;
        self.next_reset_seq = self.next_reset_seq.wrapping_add(1);
        self.resets.push_back(ResetRequest { streams: streams.to_vec(), seq, sent_at: None });
    }

    /// Sends the first queued reset request once its streams have nothing left to send.
    pub(super) fn write_reset(&mut self, now: Instant, p: &mut Vec<u8>) {
        let Some(sender) = self.state.sender() else { return };
        let Some(r) = self.resets.front() else { return };
        if r.sent_at.is_some() || r.streams.iter().any(|&s| sender.buffered(s) > 0) {
            return;
        }
        let request = OutgoingReset {
            request_seq: r.seq,
            response_seq: self.peer_reset_seq.unwrap_or(0).wrapping_sub(1),
            last_tsn: sender.last_assigned_tsn(),
            streams: r.streams.clone(),
        };
        if p.len() + 16 + 2 * request.streams.len() + 4 > self.config.mtu {
            return;
        }
        chunk::write_outgoing_reset(p, &request);
        if let Some(r) = self.resets.front_mut() {
            r.sent_at = Some(now);
        }
    }

    /// Answers a re-configuration request of the peer. RFC 6525 §5.2.1: the expected
    /// sequence number is new and `perform` decides the result; the one before it is a
    /// retransmission, answered with the result it had; anything else is a bad sequence
    /// number.
    pub(super) fn answer_request(&mut self, seq: u32, perform: impl FnOnce(&mut Self) -> u32) {
        let expected = self.peer_reset_seq.unwrap_or(0);
        let result = if seq == expected {
            self.peer_reset_seq = Some(expected.wrapping_add(1));
            perform(self)
        } else if seq == expected.wrapping_sub(1) {
            self.last_reset_result
                .filter(|(s, _)| *s == seq)
                .map_or(chunk::RESET_PERFORMED, |(_, result)| result)
        } else {
            chunk::RESET_BAD_SEQUENCE
        };
        self.last_reset_result = Some((seq, result));
        let mut c = Vec::new();
        chunk::write_reconfig_response(&mut c, seq, result);
        self.control.push_back(c);
    }

    pub(super) fn on_reconfig(&mut self, raw: RawChunk<'_>) {
        for (typ, value) in Params::new(raw.value) {
            match typ {
                chunk::PARAM_OUTGOING_RESET => {
                    let Some(request) = OutgoingReset::parse(value) else { continue };
                    if self.state.receiver().is_none() {
                        continue;
                    }
                    let seq = request.request_seq;
                    self.answer_request(seq, |a| {
                        let r = a.state.receiver_mut().expect("checked above");
                        if r.reset(request.last_tsn, request.streams.clone()) {
                            a.events.push_back(SctpEvent::IncomingStreamsReset(request.streams));
                            chunk::RESET_PERFORMED
                        } else {
                            a.deferred_reset_seq = Some(seq);
                            chunk::RESET_IN_PROGRESS
                        }
                    });
                }
                // RFC 6525 §4.5: the peer wants more outgoing streams (usrsctp-based stacks
                // start with few and add them as channels open).
                chunk::PARAM_ADD_OUTGOING_STREAMS if value.len() >= 8 => {
                    let seq = u32::from_be_bytes(value[..4].try_into().expect("4 bytes"));
                    let added = u16::from_be_bytes([value[4], value[5]]);
                    if self.state.peer().is_none() {
                        continue;
                    }
                    self.answer_request(seq, |a| {
                        let mine = a.config.streams;
                        let peer = a.state.peer_mut().expect("checked above");
                        // §5.2.5: more than we take in is denied.
                        match peer.outbound_streams.checked_add(added) {
                            Some(total) if total <= mine => {
                                peer.outbound_streams = total;
                                chunk::RESET_PERFORMED
                            }
                            _ => chunk::RESET_DENIED,
                        }
                    });
                }
                chunk::PARAM_RECONFIG_RESPONSE if value.len() >= 8 => {
                    let seq = u32::from_be_bytes(value[..4].try_into().expect("4 bytes"));
                    let result = u32::from_be_bytes(value[4..8].try_into().expect("4 bytes"));
                    if self.resets.front().is_none_or(|r| r.seq != seq) {
                        continue;
                    }
                    if result == chunk::RESET_IN_PROGRESS {
                        // Asked again after an RTO.
                        continue;
                    }
                    let done = self.resets.pop_front().expect("front exists");
                    // Only "performed" (or "nothing to do") restarts the SSNs; a refusal
                    // leaves them, but the streams are finished with all the same.
                    if matches!(result, chunk::RESET_NOTHING | chunk::RESET_PERFORMED) {
                        if let Some(sender) = self.state.sender_mut() {
                            sender.reset_ssn(&done.streams);
                        }
                    } else {
                        tracing::debug!(result, streams = ?done.streams, "stream reset refused by the peer");
                    }
                    self.events.push_back(SctpEvent::OutgoingStreamsReset(done.streams));
                }
                _ => {}
            }
        }
    }
}
