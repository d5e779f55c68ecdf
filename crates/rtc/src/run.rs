//! Driving the connection: datagrams in (ICE first, then RFC 7983 demultiplexing to DTLS),
//! timers, datagrams out (SCTP packets sealed by DTLS and sent on ICE's selected pair), and
//! the events of every layer turned into ours.

use super::*;

impl PeerConnection {
    /// A datagram that arrived on the driver's socket `to` from `from`.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        if let Some(range) = self.ice.handle_receive(now, from, to, datagram) {
            let data = &datagram[range];
            // RFC 7983: 20-63 is DTLS; 0-3 STUN went to ICE; RTP/RTCP (128-191) has no
            // taker yet; anything else is dropped.
            if matches!(data.first(), Some(20..=63)) {
                self.start_dtls(now);
                if let Some(dtls) = &mut self.dtls {
                    dtls.handle_receive(now, data);
                    while let Some(n) = dtls.read(&mut self.record) {
                        self.channels.handle_receive(now, &self.record[..n]);
                    }
                }
            }
        }
        self.pump(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closing.is_some_and(|deadline| now >= deadline) {
            tracing::debug!("SCTP shutdown not done in time; aborting");
            self.finish_close(now);
            return;
        }
        self.ice.handle_timeout(now);
        if let Some(dtls) = &mut self.dtls {
            dtls.handle_timeout(now);
        }
        self.channels.handle_timeout(now);
        self.pump(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ice.poll_timeout(),
            self.dtls.as_ref().and_then(Dtls::poll_timeout),
            self.channels.poll_timeout(),
            self.closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.transmits.is_empty() {
            self.flush(now);
            self.pump(now);
        }
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RtcEvent> {
        self.events.pop_front()
    }

    /// Moves what every layer has to send onto `transmits`.
    pub(crate) fn flush(&mut self, now: Instant) {
        while let Some(t) = self.ice.poll_transmit() {
            self.transmits.push_back(Transmit { from: t.from, to: t.to, payload: t.payload });
        }
        let Some(dtls) = &mut self.dtls else { return };
        if dtls.is_connected() {
            while let Some(p) = self.channels.poll_transmit(now) {
                if dtls.write(&p).is_err() {
                    break;
                }
            }
        }
        while let Some(d) = dtls.poll_transmit() {
            if let Some((from, to)) = self.ice.send_data(&d, &mut self.out) {
                self.transmits.push_back(Transmit { from, to, payload: std::mem::take(&mut self.out) });
            } else {
                // Our DTLS answers a peer whose ICE already has a path while ours has none:
                // a sign of stuck nomination (the peer sees its packets go unanswered).
                tracing::debug!(
                    bytes = d.len(),
                    controlling = self.ice.is_controlling(),
                    "DTLS datagram dropped: no ICE pair selected yet"
                );
            }
        }
        while let Some(t) = self.ice.poll_transmit() {
            self.transmits.push_back(Transmit { from: t.from, to: t.to, payload: t.payload });
        }
    }

    /// Turns the layers' events into ours and moves the layers along (DTLS starts when ICE
    /// has a path, SCTP when DTLS is up).
    pub(crate) fn pump(&mut self, now: Instant) {
        while let Some(e) = self.ice.poll_event() {
            match e {
                IceEvent::LocalCandidate(c) => {
                    let line = c.to_string();
                    self.candidates.push(line.clone());
                    self.events.push_back(RtcEvent::LocalCandidate(line));
                }
                IceEvent::GatheringComplete => {
                    self.gathering_done = true;
                    self.events.push_back(RtcEvent::GatheringComplete);
                }
                IceEvent::State(s) => {
                    self.ice_state = s;
                    self.events.push_back(RtcEvent::IceState(s));
                }
                IceEvent::SelectedPair { local, remote, local_kind, remote_kind } => {
                    self.events.push_back(RtcEvent::SelectedPair {
                        local,
                        remote,
                        local_kind: local_kind.as_str(),
                        remote_kind: remote_kind.as_str(),
                    });
                    self.start_dtls(now);
                }
                // Events of a newer agent than this code knows.
                _ => {}
            }
        }
        if let Some(dtls) = &mut self.dtls {
            while let Some(e) = dtls.poll_event() {
                match e {
                    // Both ends start SCTP (a simultaneous open, as browsers do).
                    DtlsEvent::Connected { .. } => self.channels.association_mut().connect(now),
                    DtlsEvent::Closed => self.closed_by_peer = true,
                    DtlsEvent::Failed(e) => self.dtls_failed = Some(e.to_string()),
                    _ => {}
                }
            }
        }
        if let Some(reason) = self.dtls_failed.take() {
            self.fail(&format!("DTLS: {reason}"));
        }
        while let Some(e) = self.channels.poll_event() {
            self.events.push_back(RtcEvent::Channel(e));
        }
        if self.closing.is_some() && self.channels.association().state() == peerlink_sctp::SctpState::Ended {
            // The shutdown is complete (or the peer aborted): the rest of the close.
            self.finish_close(now);
            return;
        }
        self.update_state();
    }

    fn update_state(&mut self) {
        if matches!(self.state, ConnectionState::Closed | ConnectionState::Failed) {
            return;
        }
        let dtls_up = self.dtls.as_ref().is_some_and(Dtls::is_connected);
        let state = match self.ice_state {
            IceState::Failed => ConnectionState::Failed,
            IceState::Closed => ConnectionState::Closed,
            IceState::Disconnected => ConnectionState::Disconnected,
            _ if self.closed_by_peer => ConnectionState::Closed,
            IceState::Connected if dtls_up => ConnectionState::Connected,
            IceState::New if self.dtls.is_none() => ConnectionState::New,
            _ => ConnectionState::Connecting,
        };
        self.set_state(state);
    }
}
