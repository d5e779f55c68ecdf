//! Applying descriptions (RFC 8829 §5.5-§5.7): signaling states, rollback, the remote data
//! section's ICE credentials, candidates, fingerprint and setup (which decide the ICE and
//! DTLS roles), trickled candidates, ICE restart.

use super::*;

impl PeerConnection {
    /// Applies our own offer or answer (or rolls back a pending offer with `None`).
    pub fn set_local_description(
        &mut self,
        now: Instant,
        description: Option<Description>,
    ) -> Result<(), RtcError> {
        let Some(d) = description else {
            // Rollback (RFC 8829 §4.1.8.2): back to stable, nothing of the offer applied.
            return match self.signaling {
                SignalingState::HaveLocalOffer => {
                    self.signaling = SignalingState::Stable;
                    self.local = None;
                    self.forget_offered_mids();
                    Ok(())
                }
                SignalingState::HaveRemoteOffer => {
                    self.signaling = SignalingState::Stable;
                    self.remote_sdp = None;
                    Ok(())
                }
                s => Err(RtcError::WrongState("rollback", s)),
            };
        };
        let sd = SessionDescription::parse(&d.sdp).map_err(|e| RtcError::BadDescription(e.to_string()))?;
        let dc = transport_section(&sd)?;
        let setup = sd.setup(dc);
        match (d.kind, self.signaling) {
            (SdpType::Offer, SignalingState::Stable | SignalingState::HaveLocalOffer) => {
                self.signaling = SignalingState::HaveLocalOffer;
                self.offerer = true;
                // The offerer controls ICE (RFC 8445 §6.1.1), unless the peer is lite.
                if self.remote.is_none() {
                    self.ice.set_controlling(true);
                }
            }
            (SdpType::Answer, SignalingState::HaveRemoteOffer) => {
                self.signaling = SignalingState::Stable;
                self.offerer = false;
                // The answerer of the first negotiation is controlled (RFC 8445 §6.1.1); a
                // later offer of the peer (a browser adding its camera) changes nothing: were
                // we to turn controlled then, while the peer stays controlled, nobody would
                // nominate a pair.
                if self.dtls_role.is_none() {
                    self.ice.set_controlling(false);
                }
                // Our answer fixes the DTLS role.
                let role = if setup == Some(Setup::Active) { Role::Client } else { Role::Server };
                self.settle_role(now, role)?;
                self.apply_local_answer(&sd);
                self.set_data_negotiated(now, sd.datachannel().is_some_and(|m| m.port != 0));
            }
            (kind, state) => return Err(RtcError::WrongState(kind.as_str(), state)),
        }
        self.local = Some(d);
        self.check_negotiation_needed();
        self.pump(now);
        Ok(())
    }

    /// Applies the peer's offer or answer.
    pub fn set_remote_description(&mut self, now: Instant, d: Description) -> Result<(), RtcError> {
        if self.signaling == SignalingState::Closed {
            return Err(RtcError::Closed);
        }
        let sd = SessionDescription::parse(&d.sdp).map_err(|e| RtcError::BadDescription(e.to_string()))?;
        let dc = transport_section(&sd)?;
        let creds =
            sd.ice_credentials(dc).ok_or_else(|| RtcError::BadDescription("no ICE credentials".into()))?;
        let fingerprint: Fingerprint = sd
            .fingerprint(dc)
            .ok_or_else(|| RtcError::BadDescription("no fingerprint".into()))?
            .parse()
            .map_err(|e: peerlink_dtls::FingerprintError| RtcError::BadDescription(e.to_string()))?;
        let setup = sd.setup(dc).unwrap_or(Setup::ActPass);
        match (d.kind, self.signaling) {
            (SdpType::Offer, SignalingState::Stable) => {
                self.signaling = SignalingState::HaveRemoteOffer;
                if self.remote.is_none() {
                    self.ice.set_controlling(false);
                }
            }
            (SdpType::Answer, SignalingState::HaveLocalOffer) => {
                self.signaling = SignalingState::Stable;
                // The answer's setup fixes the DTLS role: active there means we serve.
                let role = match setup {
                    Setup::Active => Role::Server,
                    Setup::Passive => Role::Client,
                    _ => {
                        return Err(RtcError::BadDescription(
                            "answer must say a=setup:active or passive".into(),
                        ))
                    }
                };
                self.settle_role(now, role)?;
            }
            (kind, state) => return Err(RtcError::WrongState(kind.as_str(), state)),
        }
        let restart = self.remote.as_ref().is_some_and(|r| r.ufrag != creds.ufrag);
        if restart && d.kind == SdpType::Offer {
            // The peer restarted ICE: we answer with new credentials of our own.
            self.new_credentials(now)?;
        }
        self.ice.set_remote_lite(sd.ice_lite());
        self.ice.set_remote_credentials(now, &creds.ufrag, &creds.pwd)?;
        let max_message_size = sd
            .datachannel()
            .and_then(|m| m.max_message_size())
            .map_or(65_536, |m| m.min(usize::MAX as u64) as usize);
        self.channels.association_mut().set_max_send_message(if max_message_size == 0 {
            usize::MAX
        } else {
            max_message_size
        });
        if let Some(old) = &self.remote {
            if old.fingerprint != fingerprint && self.dtls.is_some() {
                return Err(RtcError::BadDescription("the fingerprint changed during the session".into()));
            }
        }
        self.remote = Some(Remote { ufrag: creds.ufrag, fingerprint, setup });
        for c in dc.candidates() {
            self.add_remote_candidate_line(now, &c);
        }
        if dc.end_of_candidates() {
            self.ice.end_of_remote_candidates(now);
        }
        self.apply_remote_media(&sd, d.kind == SdpType::Answer);
        if d.kind == SdpType::Answer {
            self.set_data_negotiated(now, sd.datachannel().is_some_and(|m| m.port != 0));
        }
        self.remote_sdp = Some(sd);
        self.check_negotiation_needed();
        // A DTLS server can take the ClientHello as soon as it knows the fingerprint.
        self.start_dtls(now);
        self.pump(now);
        Ok(())
    }

    /// SCTP runs once both descriptions have a data channel section (and DTLS is up).
    fn set_data_negotiated(&mut self, now: Instant, yes: bool) {
        if yes && !self.data_negotiated {
            self.data_negotiated = true;
            if self.dtls.as_ref().is_some_and(Dtls::is_connected) {
                self.channels.association_mut().connect(now);
            }
        }
    }

    /// A trickled remote candidate (`candidate:...`, with or without `a=`), or the end of
    /// candidates (an empty string, as browsers signal it).
    pub fn add_ice_candidate(&mut self, now: Instant, candidate: &str) -> Result<(), RtcError> {
        let line = candidate.trim().trim_start_matches("a=");
        if line.is_empty() || line == "end-of-candidates" {
            self.ice.end_of_remote_candidates(now);
        } else {
            Candidate::parse(line).map_err(|error| RtcError::Candidate { line: line.to_owned(), error })?;
            self.add_remote_candidate_line(now, line);
        }
        self.pump(now);
        Ok(())
    }

    /// A candidate whose `*.local` name the driver resolved.
    pub fn add_resolved_candidate(&mut self, now: Instant, candidate: &str, address: std::net::IpAddr) {
        if let Ok(mut c) = Candidate::parse(candidate) {
            c.address = CandidateAddress::Ip(address);
            let _ = self.ice.add_remote_candidate(now, c);
            self.pump(now);
        }
    }

    fn add_remote_candidate_line(&mut self, now: Instant, line: &str) {
        let Ok(c) = Candidate::parse(line) else { return };
        if let CandidateAddress::Name(name) = &c.address {
            if c.address.is_mdns() {
                self.events
                    .push_back(RtcEvent::ResolveMdns { name: name.clone(), candidate: line.to_owned() });
            }
            return;
        }
        // TCP candidates and RTCP components are not ours to use; they are skipped.
        let _ = self.ice.add_remote_candidate(now, c);
    }

    /// ICE restart (RFC 8829 §4.1.2): new credentials; the next offer carries them.
    pub fn restart_ice(&mut self, now: Instant) -> Result<(), RtcError> {
        self.new_credentials(now)
    }

    fn new_credentials(&mut self, now: Instant) -> Result<(), RtcError> {
        let (ufrag, pwd) = credentials(&self.rng.next_block());
        self.ice.restart(now, &ufrag, &pwd)?;
        (self.ufrag, self.pwd) = (ufrag, pwd);
        self.candidates.clear();
        self.gathering_done = false;
        self.pump(now);
        Ok(())
    }

    fn settle_role(&mut self, now: Instant, role: Role) -> Result<(), RtcError> {
        match self.dtls_role {
            Some(existing) if existing != role => {
                Err(RtcError::BadDescription("the DTLS role cannot change during the session".into()))
            }
            Some(_) => Ok(()),
            None => {
                self.dtls_role = Some(role);
                self.channels.set_dtls_client(role == Role::Client);
                self.start_dtls(now);
                Ok(())
            }
        }
    }

    /// Creates the DTLS association once the role and the peer's fingerprint are known.
    /// A client starts its handshake when ICE has a path (see `run.rs`).
    pub(crate) fn start_dtls(&mut self, now: Instant) {
        if self.dtls.is_some() {
            return;
        }
        let (Some(role), Some(remote)) = (self.dtls_role, &self.remote) else { return };
        if role == Role::Client && self.ice.selected_pair().is_none() {
            return;
        }
        // use_srtp is offered even with data channels only: browsers and aiortc do, and
        // aiortc fails a handshake without it.
        let config = DtlsConfig {
            srtp: true,
            ..DtlsConfig::new(role, self.certificate.clone(), remote.fingerprint.clone())
        };
        match Dtls::new(now, config) {
            Ok(dtls) => self.dtls = Some(dtls),
            Err(e) => self.fail(CloseReason::Dtls(e)),
        }
    }

    /// Closes everything (`RTCPeerConnection.close()`). With data channels up the close is
    /// graceful: SCTP delivers what is queued and shuts down (RFC 9260 §9.2), then DTLS sends
    /// close_notify; if the shutdown has not finished within `CLOSE_DEADLINE`, SCTP aborts.
    /// The connection is `Closed` once that is done; keep driving it until then.
    pub fn close(&mut self, now: Instant) {
        if self.signaling == SignalingState::Closed {
            return;
        }
        self.signaling = SignalingState::Closed;
        self.ending.get_or_insert(CloseReason::LocalClose);
        let sctp_up = self.data_negotiated
            && self.channels.association().state() == peerlink_sctp::SctpState::Established;
        if sctp_up && self.dtls.as_ref().is_some_and(Dtls::is_connected) {
            self.closing = Some(now + CLOSE_DEADLINE);
            self.channels.association_mut().close(now);
            self.pump(now);
            return;
        }
        self.finish_close(now);
    }

    /// The end of a close: SCTP aborted if still up, DTLS close_notify, ICE stopped.
    pub(crate) fn finish_close(&mut self, now: Instant) {
        self.closing = None;
        self.drop_media_queues();
        self.channels.association_mut().abort();
        self.flush(now);
        if let Some(dtls) = &mut self.dtls {
            dtls.close();
        }
        self.flush(now);
        self.ice.close(now);
        let failed = self.ending.get_or_insert(CloseReason::LocalClose).is_failure();
        self.set_state(if failed { ConnectionState::Failed } else { ConnectionState::Closed });
        self.pump(now);
    }

    pub(crate) fn fail(&mut self, reason: CloseReason) {
        if self.is_over() {
            return;
        }
        tracing::debug!(%reason, "peer connection failed");
        self.drop_media_queues();
        self.ending.get_or_insert(reason);
        self.set_state(ConnectionState::Failed);
    }

    /// Closed or failed: nothing more will happen.
    pub(crate) fn is_over(&self) -> bool {
        matches!(self.state, ConnectionState::Closed | ConnectionState::Failed)
    }

    pub(crate) fn set_state(&mut self, state: ConnectionState) {
        if self.is_over() || self.state == state {
            return;
        }
        let mut state = state;
        if matches!(state, ConnectionState::Closed | ConnectionState::Failed) {
            let reason = self.ending.get_or_insert_with(|| match self.ice.failure() {
                Some(failure) => CloseReason::Ice(failure),
                // ICE closes only when we close.
                None if state == ConnectionState::Closed => CloseReason::LocalClose,
                None => CloseReason::Ice(IceFailure::AllPairsFailed),
            });
            // The first cause decides, and the final state agrees with it: a path that fails
            // while a close (ours or the peer's) is under way does not turn it into a failure.
            state = if reason.is_failure() { ConnectionState::Failed } else { ConnectionState::Closed };
            let event = RtcEvent::Closed { reason: reason.clone(), during_setup: !self.was_connected };
            self.events.push_back(event);
        }
        self.was_connected |= state == ConnectionState::Connected;
        self.state = state;
        self.events.push_back(RtcEvent::ConnectionState(state));
    }
}

/// The section whose ICE and DTLS attributes hold for the BUNDLE group: the first one not
/// rejected (all bundled sections carry the same).
fn transport_section(sd: &SessionDescription) -> Result<&Media, RtcError> {
    let tag = sd.bundle().first().copied();
    tag.and_then(|mid| sd.media.iter().find(|m| m.mid() == Some(mid) && m.port != 0))
        .or_else(|| sd.media.iter().find(|m| m.port != 0))
        .ok_or_else(|| RtcError::BadDescription("no section that is not rejected".into()))
}
