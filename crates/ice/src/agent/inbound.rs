//! What arrives from the network: connectivity checks from the peer (RFC 8445 §7.3), answers
//! to ours (§7.2.5), answers from STUN servers (§5.1.1.2), and nomination (§8.1.1).

use super::*;

impl IceAgent {
    /// A datagram that arrived on the driver's socket `to` from `from`. `Some(range)` when
    /// `packet[range]` is not ICE's (application data, DTLS, ...): the driver passes it on.
    /// The range is the whole packet unless it came through one of our TURN allocations.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        packet: &[u8],
    ) -> Option<Range<usize>> {
        if let Some(r) = self.relay_for(from, to).filter(|_| !self.is_gather_answer(packet)) {
            let got = self.relays[r].client.handle_receive(now, packet);
            self.drain_relay(now, r);
            let (peer, range) = got?;
            let relayed = self.locals[self.relays[r].local?].base;
            if self.handle_stun(now, peer, relayed, &packet[range.clone()]) {
                return None;
            }
            self.data_from(now, peer, relayed);
            return Some(range);
        }
        if self.handle_stun(now, from, to, packet) {
            return None;
        }
        self.data_from(now, from, to);
        Some(0..packet.len())
    }

    /// An answer from a STUN server we gather from (which may be a TURN server too).
    fn is_gather_answer(&self, packet: &[u8]) -> bool {
        let Ok(message) = Message::parse(packet) else { return false };
        let id = message.transaction_id();
        self.gathers.iter().any(|g| g.transaction.as_ref().is_some_and(|t| t.id == id))
    }

    /// Data on the selected pair shows the path is alive (for "disconnected"; consent
    /// still needs answers to checks).
    fn data_from(&mut self, now: Instant, from: SocketAddr, to: SocketAddr) {
        if self.selected_pair() == Some((to, from)) {
            self.heard(now);
        }
    }

    /// Handles `packet` as STUN for ICE; false when it is not ICE's.
    fn handle_stun(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, packet: &[u8]) -> bool {
        let Ok(message) = Message::parse(packet) else {
            self.stats.not_stun += 1;
            return false;
        };
        if matches!(self.state, IceState::Failed | IceState::Closed) {
            return message.method() == Method::BINDING;
        }
        // A STUN server's answer need not carry FINGERPRINT (RFC 8489 §14.7).
        let id = message.transaction_id();
        if message.class() == Class::SuccessResponse
            && self.gathers.iter().any(|g| g.transaction.as_ref().is_some_and(|t| t.id == id))
        {
            self.handle_response(now, from, to, &message);
            return true;
        }
        if message.method() != Method::BINDING || !message.verify_fingerprint() {
            // STUN but not ICE's (TURN replies go to the TURN client, not here).
            self.stats.not_stun += 1;
            return false;
        }
        match message.class() {
            Class::Request => self.handle_request(now, from, to, &message),
            Class::SuccessResponse | Class::ErrorResponse => self.handle_response(now, from, to, &message),
            Class::Indication => {} // keepalives (RFC 8445 §11)
        }
        true
    }

    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        message: &Message<'_>,
    ) {
        // §7.3: USERNAME must be "our ufrag:their ufrag" and the integrity ours.
        let username = match message.get(AttributeType::USERNAME) {
            Some(Ok(Attribute::Username(u))) => u,
            _ => return self.reply_error(now, from, to, message, ErrorCode::BAD_REQUEST),
        };
        let ours = username.split(':').next() == Some(self.local_creds.ufrag.as_str());
        if !ours || !message.verify_integrity(&self.local_creds.key) {
            self.stats.bad_integrity += 1;
            return self.reply_error(now, from, to, message, ErrorCode::UNAUTHENTICATED);
        }
        self.stats.checks_received += 1;
        if !self.locals.iter().any(|l| l.base == to) {
            return;
        }
        // §7.3.1.1 role conflicts (a lite agent stays controlled; the full peer resolves it).
        let their_controlling = message.get(AttributeType::ICE_CONTROLLING).and_then(Result::ok);
        let their_controlled = message.get(AttributeType::ICE_CONTROLLED).and_then(Result::ok);
        match (self.controlling, their_controlling, their_controlled) {
            _ if self.lite => {}
            (true, Some(Attribute::IceControlling(theirs)), _) => {
                self.stats.role_conflicts += 1;
                if self.tie_breaker >= theirs {
                    return self.reply_error(now, from, to, message, ErrorCode::ROLE_CONFLICT);
                }
                self.switch_role(false);
            }
            (false, _, Some(Attribute::IceControlled(theirs))) => {
                self.stats.role_conflicts += 1;
                if self.tie_breaker >= theirs {
                    self.switch_role(true);
                } else {
                    return self.reply_error(now, from, to, message, ErrorCode::ROLE_CONFLICT);
                }
            }
            _ => {}
        }
        // §7.3: a check carries PRIORITY.
        if !matches!(message.get(AttributeType::PRIORITY), Some(Ok(Attribute::Priority(p))) if p > 0) {
            return self.reply_error(now, from, to, message, ErrorCode::BAD_REQUEST);
        }
        // Answer: XOR-MAPPED-ADDRESS is where it came from.
        self.buf.clear();
        let mut w = MessageWriter::new(
            &mut self.buf,
            Class::SuccessResponse,
            Method::BINDING,
            message.transaction_id(),
        );
        let _ = w.attribute(&Attribute::XorMappedAddress(from));
        let _ = w.message_integrity(&self.local_creds.key);
        let _ = w.fingerprint();
        w.finish();
        self.emit_buf(now, to, from);

        // §7.3.1.3: an unknown source is a peer-reflexive remote candidate.
        let remote = match self.remotes.iter().position(|r| r.addr == from) {
            Some(r) => r,
            None => {
                if self.remotes.len() >= MAX_REMOTE {
                    return;
                }
                let priority = match message.get(AttributeType::PRIORITY) {
                    Some(Ok(Attribute::Priority(p))) if p > 0 => p,
                    _ => return,
                };
                let kind = CandidateKind::PeerReflexive;
                let foundation = foundation(kind, from.ip(), None, &Transport::Udp);
                let candidate = Candidate::udp(kind, foundation, priority, from, None);
                self.remotes.push(Remote { candidate, addr: from });
                self.remotes.len() - 1
            }
        };
        let Some(local) = self
            .locals
            .iter()
            .position(|l| l.base == to && l.candidate.kind != CandidateKind::ServerReflexive)
        else {
            return;
        };
        let Some(pair) = self.add_pair(local, remote) else { return };
        self.start_checking(now);
        if self.controlling && self.selected.is_none() && self.pairs[pair].state == PairState::Succeeded {
            // A pair that succeeded while we were controlled (a role conflict made us
            // controlling since): it is nominated like any other, after the usual wait.
            self.nominate_by.get_or_insert(now + NOMINATION_WAIT);
        }
        if Some(pair) == self.selected {
            self.heard(now);
        }
        let use_candidate = message.attribute(AttributeType::USE_CANDIDATE).is_some();
        if self.lite {
            // §2.5: a lite agent's pairs are valid when checked by the peer; the peer's
            // checks on the selected pair are its consent.
            self.pairs[pair].state = PairState::Succeeded;
            if Some(pair) == self.selected {
                self.last_consent = Some(now);
            }
            if use_candidate {
                self.pairs[pair].nominated_by_peer = true;
                self.select(now, pair);
            }
            return;
        }
        if use_candidate && !self.controlling {
            self.pairs[pair].nominated_by_peer = true;
            if self.pairs[pair].state == PairState::Succeeded {
                self.select(now, pair);
            }
        }
        // §7.3.1.4 triggered check (an in-progress one starts over: the peer's check just
        // showed the path is open now).
        let recheck = self.selected.is_none() || (use_candidate && !self.controlling);
        if recheck && self.pairs[pair].state != PairState::Succeeded {
            self.pairs[pair].state = PairState::Waiting;
            if !self.triggered.contains(&pair) {
                self.triggered.push_back(pair);
            }
            self.pace_now(now);
        }
        self.schedule_pace(now);
    }

    pub(super) fn switch_role(&mut self, controlling: bool) {
        self.controlling = controlling;
        // A nomination belongs to the role: one decided but not yet sent, or in flight, is
        // dropped (its retransmissions go without USE-CANDIDATE). Left in place it blocked
        // every later nomination for good once the agent controlled again.
        self.nominating = None;
        self.prioritize();
    }

    pub(super) fn reply_error(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        message: &Message<'_>,
        error: ErrorCode<'static>,
    ) {
        self.buf.clear();
        let mut w = MessageWriter::new(
            &mut self.buf,
            Class::ErrorResponse,
            Method::BINDING,
            message.transaction_id(),
        );
        let _ = w.attribute(&Attribute::ErrorCode(error));
        // A 487 is authenticated (the request was); a 400/401 cannot be.
        if error.code == 487 {
            let _ = w.message_integrity(&self.local_creds.key);
        }
        let _ = w.fingerprint();
        w.finish();
        self.emit_buf(now, to, from);
    }

    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        message: &Message<'_>,
    ) {
        let id = message.transaction_id();
        if let Some(g) = self.gathers.iter().position(|g| g.transaction.as_ref().is_some_and(|t| t.id == id))
        {
            return self.gathered(now, g, from, message);
        }
        let Some(i) = self.pairs.iter().position(|p| {
            p.transaction.as_ref().is_some_and(|t| t.id == id) || p.cancelled.iter().any(|t| t.id == id)
        }) else {
            if self.earlier_consent.contains(&id) {
                return self.late_consent(now, from, to, message);
            }
            self.stats.unknown_transaction += 1;
            return;
        };
        let Some(remote) = self.remote_creds.clone() else { return };
        if !message.verify_integrity(&remote.key) {
            self.stats.bad_integrity += 1;
            return;
        }
        // §7.2.5.2.1: the response must come back on the same addresses.
        let (local, remote_addr) =
            (self.locals[self.pairs[i].local].base, self.remotes[self.pairs[i].remote].addr);
        if from != remote_addr || to != local {
            self.pairs[i].transaction = None;
            self.pairs[i].state = PairState::Failed;
            return;
        }
        // The current check, or a cancelled one whose answer came after all (the current
        // one is then no longer needed either).
        let transaction = match self.pairs[i].cancelled.iter().position(|t| t.id == id) {
            Some(c) => {
                let old = self.pairs[i].cancelled.remove(c);
                // A nomination in flight stays: its answer selects the pair.
                if !self.pairs[i].transaction.as_ref().is_some_and(|t| t.nominating) {
                    self.pairs[i].transaction = None;
                }
                old
            }
            None => {
                let Some(t) = self.pairs[i].transaction.take() else { return };
                t
            }
        };
        let nominating = transaction.nominating && self.nominating == Some(i);
        if message.class() == Class::ErrorResponse {
            if let Some(Ok(Attribute::ErrorCode(e))) = message.get(AttributeType::ERROR_CODE) {
                if e.code == 487 {
                    // §7.2.5.1: take the role opposite to the one the request claimed (if
                    // not done already) and check again.
                    if self.nominating == Some(i) {
                        self.nominating = None;
                    }
                    self.switch_role(!transaction.as_controlling);
                    self.pairs[i].state = PairState::Waiting;
                    self.triggered.push_back(i);
                    self.schedule_pace(now);
                    return;
                }
            }
            self.pairs[i].state = PairState::Failed;
            if self.nominating == Some(i) {
                self.nominating = None;
                self.maybe_nominate(now, true);
            }
            self.update_failed(now);
            return;
        }
        if Some(i) == self.selected {
            self.last_consent = Some(now);
            self.heard(now);
            return;
        }
        if let Some(Ok(Attribute::XorMappedAddress(seen))) = message.get(AttributeType::XOR_MAPPED_ADDRESS) {
            self.pairs[i].mapped = Some(seen);
        }
        self.pairs[i].state = PairState::Succeeded;
        // §7.2.5.3.3: unfreeze the pairs of the same foundation.
        let foundation = self.pairs[i].foundation.clone();
        for p in &mut self.pairs {
            if p.state == PairState::Frozen && p.foundation == foundation {
                p.state = PairState::Waiting;
            }
        }
        // The request went out with USE-CANDIDATE (we controlled then) and the peer took it.
        let took_nomination = transaction.nominating && transaction.as_controlling;
        if self.controlling {
            if nominating {
                self.nominating = None;
                self.pairs[i].nominated = true;
                self.select(now, i);
            } else {
                if self.nominate_by.is_none() {
                    self.nominate_by = Some(now + NOMINATION_WAIT);
                }
                self.maybe_nominate(now, false);
            }
        } else if self.pairs[i].nominated_by_peer || took_nomination {
            // A nomination of ours answered after a role switch made us controlled: the peer,
            // controlled when it took it, has selected this pair.
            self.select(now, i);
        }
        self.schedule_pace(now);
    }

    /// An answer to an earlier consent check of the selected pair (lost retransmissions can
    /// make it arrive after the next check went out): consent all the same.
    fn late_consent(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, message: &Message<'_>) {
        let Some(remote) = self.remote_creds.clone() else { return };
        let valid = message.class() == Class::SuccessResponse && message.verify_integrity(&remote.key);
        if valid && self.selected_pair() == Some((to, from)) {
            self.earlier_consent.retain(|t| *t != message.transaction_id());
            self.last_consent = Some(now);
            self.heard(now);
        }
    }

    /// Regular nomination (§8.1.1): the controlling side checks its best valid pair again
    /// with USE-CANDIDATE, once no better pair is still being checked (or when `force`d by
    /// the nomination deadline or a failed nomination). One nomination at a time.
    pub(super) fn maybe_nominate(&mut self, now: Instant, force: bool) {
        if !self.controlling || self.selected.is_some() || self.nominating.is_some() {
            return;
        }
        let Some(best) = (0..self.pairs.len())
            .filter(|&p| self.pairs[p].state == PairState::Succeeded)
            .max_by_key(|&p| self.pairs[p].priority)
        else {
            return;
        };
        let better_pending = self.pairs.iter().any(|p| {
            p.priority > self.pairs[best].priority
                && matches!(p.state, PairState::Frozen | PairState::Waiting | PairState::InProgress)
        });
        if better_pending && !force {
            return;
        }
        self.nominating = Some(best);
        self.triggered.retain(|&p| p != best);
        self.triggered.push_front(best);
        self.pace_now(now);
    }

    pub(super) fn gathered(&mut self, now: Instant, g: usize, from: SocketAddr, message: &Message<'_>) {
        if from != self.gathers[g].server {
            return;
        }
        self.gathers[g].transaction = None;
        self.gathers[g].done = true;
        if let Some(Ok(Attribute::XorMappedAddress(mapped))) = message.get(AttributeType::XOR_MAPPED_ADDRESS)
        {
            let (base, server) = (self.gathers[g].base, self.gathers[g].server.ip());
            self.add_server_reflexive(now, base, mapped, server);
        }
        self.check_gathering_complete();
        self.schedule_pace(now);
    }

    /// A server-reflexive candidate `mapped` of `base`, learned from `server`, unless it is
    /// the base itself or already known (§5.1.3).
    pub(super) fn add_server_reflexive(
        &mut self,
        now: Instant,
        base: SocketAddr,
        mapped: SocketAddr,
        server: std::net::IpAddr,
    ) {
        let duplicate =
            self.locals.iter().any(|l| SocketAddr::new(ip_of(&l.candidate), l.candidate.port) == mapped);
        if mapped == base || duplicate {
            return;
        }
        let hosts_before = self.locals.iter().position(|l| l.base == base).unwrap_or(0).min(65535) as u16;
        let kind = CandidateKind::ServerReflexive;
        let candidate = Candidate::udp(
            kind,
            foundation(kind, base.ip(), Some(server), &Transport::Udp),
            Candidate::compute_priority(kind, 65535 - hosts_before, 1),
            mapped,
            Some(base),
        );
        self.add_local(candidate, base, None);
        self.schedule_pace(now);
    }
}
