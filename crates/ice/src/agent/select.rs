//! The selected pair: taking a nomination (RFC 8445 §8.1.1, §7.3.1.5) or our own, what
//! stops when a pair is selected (§8.1.2), and how it is reported.

use super::*;

impl IceAgent {
    /// Pair `i` carries data from now on (or, controlled, if it beats the selected one).
    pub(super) fn select(&mut self, now: Instant, i: usize) {
        match self.selected {
            // §8.1.1: the controlled agent uses the highest-priority nominated pair, so a
            // better nomination that comes later (or an aggressive nominator's) wins.
            Some(current) if !self.controlling && self.pairs[i].priority > self.pairs[current].priority => {}
            Some(_) => return,
            None => {}
        }
        self.selected = Some(i);
        self.previous = None;
        self.last_consent = Some(now);
        self.last_heard = Some(now);
        // A lite agent sends no consent checks (RFC 7675 §4: the full peer does).
        self.next_consent = (!self.lite).then_some(now + CONSENT_INTERVAL);
        self.report_selected(i);
        // Other checks stop (§8.1.2): pairs not yet checked are retired, checks in flight
        // are cancelled (their answers still count); consent keeps the chosen pair. A
        // controlled agent keeps checking the better pairs the peer nominated: it switches
        // to one once it is valid (§8.1.1), and a controlling peer that moves on to a better
        // pair (libwebrtc does) is followed.
        let (controlled, priority) = (!self.controlling, self.pairs[i].priority);
        let pending = |pair: &Pair| controlled && pair.nominated_by_peer && pair.priority > priority;
        for (p, pair) in self.pairs.iter_mut().enumerate() {
            if p == i || pending(pair) {
                continue;
            }
            if let Some(t) = pair.transaction.take() {
                pair.cancelled.push(t);
                if pair.cancelled.len() > 3 {
                    pair.cancelled.remove(0);
                }
            }
            if matches!(pair.state, PairState::Frozen | PairState::Waiting | PairState::InProgress) {
                pair.state = PairState::Failed;
            }
        }
        let pairs = &self.pairs;
        self.triggered.retain(|&p| pending(&pairs[p]));
        if self.triggered.is_empty() {
            self.next_pace = None;
        }
        self.bind_relay_channel(now, i);
        self.set_state(IceState::Connected);
    }

    /// The `SelectedPair` event: the pair's addresses and its candidates' kinds.
    pub(super) fn report_selected(&mut self, i: usize) {
        let (l, r) = (&self.locals[self.pairs[i].local], &self.remotes[self.pairs[i].remote]);
        self.events.push_back(IceEvent::SelectedPair {
            local: l.base,
            remote: r.addr,
            local_kind: self.valid_local_kind(i),
            remote_kind: r.candidate.kind,
        });
    }

    /// The kind of the valid pair's local candidate (§7.2.5.3.2): the one the peer saw our
    /// check come from, which behind a NAT is the server-reflexive candidate of the base
    /// the check left from, or peer-reflexive if no candidate has that address.
    fn valid_local_kind(&self, i: usize) -> CandidateKind {
        let local = &self.locals[self.pairs[i].local];
        match self.pairs[i].mapped {
            Some(seen) if local.relay.is_none() && seen != local.base => self
                .locals
                .iter()
                .find(|l| {
                    l.base == local.base && SocketAddr::new(ip_of(&l.candidate), l.candidate.port) == seen
                })
                .map_or(CandidateKind::PeerReflexive, |l| l.candidate.kind),
            _ => local.candidate.kind,
        }
    }

    /// RFC 8445 §8.1.1: a controlled agent nominated more than one pair uses the valid one of
    /// highest priority. Priorities can change after the nomination (a peer-reflexive
    /// candidate signaled with its real type), so this is asked again then.
    pub(super) fn follow_nomination(&mut self, now: Instant) {
        if self.controlling {
            return;
        }
        let best = (0..self.pairs.len())
            .filter(|&p| self.pairs[p].nominated_by_peer && self.pairs[p].state == PairState::Succeeded)
            .max_by_key(|&p| self.pairs[p].priority);
        if let Some(best) = best.filter(|&b| Some(b) != self.selected) {
            self.select(now, best);
        }
    }
}
