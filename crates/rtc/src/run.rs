//! Driving the connection: datagrams in (ICE first, then RFC 7983 demultiplexing to DTLS),
//! timers, datagrams out (SCTP packets sealed by DTLS and sent on ICE's selected pair), and
//! the events of every layer turned into ours.

use super::*;

impl PeerConnection {
    /// A datagram that arrived on the driver's socket `to` from `from`.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, datagram: &[u8]) {
        if let Some(range) = self.ice.handle_receive(now, from, to, datagram) {
            let data = &datagram[range];
            // RFC 7983: 20-63 is DTLS; 0-3 STUN went to ICE; 128-191 is RTP or RTCP, told
            // apart by RFC 5761 §4; anything else is dropped.
            if peerlink_rtp::is_rtp_or_rtcp(data) {
                self.handle_media(now, data);
            } else if matches!(data.first(), Some(20..=63)) {
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
        self.media_timeout(now);
        self.pump(now);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ice.poll_timeout(),
            self.dtls.as_ref().and_then(Dtls::poll_timeout),
            self.channels.poll_timeout(),
            self.media_poll_timeout(),
            self.closing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Appends the next datagram to send to `buf` (which it does not clear: a driver can
    /// batch several for one GSO send) and says where it goes. SCTP packets are sealed by
    /// DTLS straight into `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some(t) = self.queued_transmit(buf).or_else(|| self.layer_transmit(now, buf)) {
            return Some(t);
        }
        // Events of what was sent (buffered amount low), and what they set off (a close
        // queues its last datagrams).
        self.pump(now);
        self.queued_transmit(buf).or_else(|| self.layer_transmit(now, buf))
    }

    fn queued_transmit(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        let q = self.queued.pop_front()?;
        buf.extend_from_slice(&q.payload);
        Some(Transmit { route: q.route, len: q.payload.len() })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<RtcEvent> {
        self.events.pop_front()
    }

    /// The next datagram of ICE, DTLS (handshake, alerts) or SCTP (sealed here), in that order.
    fn layer_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        if let Some(t) = self.ice.poll_transmit(now, buf) {
            return Some(t);
        }
        loop {
            let start = buf.len();
            let dtls = self.dtls.as_mut()?;
            if dtls.poll_transmit(now, buf).is_none() {
                if !dtls.is_connected() {
                    return None;
                }
                // Media first: it is late when it waits; SCTP has its own window.
                if !self.is_over() && self.media_transmit(now, buf) {
                    if let Some(t) = self.ice.send_data(buf, start) {
                        return Some(t);
                    }
                    continue;
                }
                let dtls = self.dtls.as_mut()?;
                self.plain.clear();
                let _ = self.channels.poll_transmit(now, &mut self.plain)?;
                // A failure is an event of DTLS, which `pump` turns into ours.
                let _ = dtls.seal(&self.plain, buf).ok()?;
            }
            if let Some(t) = self.ice.send_data(buf, start) {
                return Some(t);
            }
            // Our DTLS answers a peer whose ICE already has a path while ours has none: a
            // sign of stuck nomination (the peer sees its packets go unanswered).
            tracing::debug!(
                controlling = self.ice.is_controlling(),
                "DTLS datagram dropped: no ICE pair selected yet"
            );
        }
    }

    /// Moves what every layer has to send to the queue: the close does, before it stops ICE.
    pub(crate) fn flush(&mut self, now: Instant) {
        let mut buf = Vec::new();
        while let Some(t) = self.layer_transmit(now, &mut buf) {
            self.queued.push_back(Queued { route: t.route, payload: std::mem::take(&mut buf) });
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
        let mut dtls_failed = None;
        let mut srtp_keys = None;
        if let Some(dtls) = &mut self.dtls {
            while let Some(e) = dtls.poll_event() {
                match e {
                    // Both ends start SCTP (a simultaneous open, as browsers do).
                    DtlsEvent::Connected { srtp } => {
                        srtp_keys = Some(srtp);
                        if self.data_negotiated {
                            self.channels.association_mut().connect(now);
                        }
                    }
                    DtlsEvent::Closed => {
                        self.closed_by_peer = true;
                        self.ending.get_or_insert(CloseReason::RemoteClosed);
                    }
                    DtlsEvent::Failed(e) => dtls_failed = Some(e),
                    _ => {}
                }
            }
        }
        if let Some(keys) = srtp_keys {
            self.start_srtp(now, keys);
        }
        if let Some(e) = dtls_failed {
            self.fail(CloseReason::Dtls(e));
        }
        let mut sctp_ended = None;
        while let Some(e) = self.channels.poll_event() {
            if let ChannelEvent::Ended { reason } = &e {
                sctp_ended = Some(reason.clone());
            }
            self.events.push_back(RtcEvent::Channel(e));
        }
        if self.closed_by_peer && !self.is_over() {
            // The peer's close_notify: nothing more will come; stop ICE and SCTP too.
            self.finish_close(now);
            return;
        }
        if let Some(reason) = sctp_ended.filter(|_| !self.is_over()) {
            // The association is all a connection carries (no media yet): its end, by a
            // shutdown either side started or otherwise, is the connection's.
            let reason = match reason {
                SctpCloseReason::ShutDown { by_peer: true } => CloseReason::RemoteClosed,
                SctpCloseReason::ShutDown { by_peer: false } => CloseReason::LocalClose,
                // A User-Initiated Abort (RFC 9260 §3.3.10.12), or an ABORT with no cause: the
                // peer's application closed (a browser's `close()` aborts with cause 12,
                // aiortc's with none). Aborts for errors carry their cause.
                SctpCloseReason::PeerAborted { cause: Some(12) | None } => CloseReason::RemoteClosed,
                other => CloseReason::Sctp(other),
            };
            self.ending.get_or_insert(reason);
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
            _ if self.closed_by_peer => ConnectionState::Closed,
            IceState::Disconnected => ConnectionState::Disconnected,
            IceState::Connected if dtls_up => ConnectionState::Connected,
            IceState::New if self.dtls.is_none() => ConnectionState::New,
            _ => ConnectionState::Connecting,
        };
        self.set_state(state);
    }
}

impl peerlink_proto::Machine for PeerConnection {
    type Route = Route;
    type Event = RtcEvent;

    fn handle_receive(&mut self, now: Instant, route: Route, datagram: &[u8]) {
        PeerConnection::handle_receive(self, now, route.remote, route.local, datagram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        PeerConnection::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        PeerConnection::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<RtcEvent> {
        PeerConnection::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        PeerConnection::poll_timeout(self)
    }
}
