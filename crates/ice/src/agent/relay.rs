//! Relayed candidates (RFC 8445 §5.1.1.2 with RFC 8656): one TURN allocation per TURN server
//! and address family, made from the first host candidate of that family. Checks, answers
//! and data on relayed pairs go through it; the permission for a peer is installed when the
//! first packet goes to it, and a channel is bound once a relayed pair is selected.

use super::*;

impl IceAgent {
    /// Allocates on every TURN server of `base`'s family not yet used by that family.
    pub(super) fn start_relays(&mut self, now: Instant, base: SocketAddr) {
        let servers: Vec<TurnServerConfig> =
            self.turn_servers.iter().filter(|s| s.server.is_ipv4() == base.is_ipv4()).cloned().collect();
        for config in servers {
            let taken = self.relays.iter().any(|r| r.client.server() == config.server);
            if taken {
                continue;
            }
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&self.rng.next_u64().to_be_bytes());
            }
            let mut client = TurnClient::new(config, seed);
            client.allocate(now);
            self.relays.push(RelaySlot { base, client, done: false, local: None });
            self.drain_relay(now, self.relays.len() - 1);
        }
    }

    /// Moves a TURN client's datagrams to the transmit queue and acts on its events.
    pub(super) fn drain_relay(&mut self, now: Instant, r: usize) {
        let mut buf = Vec::new();
        while self.relays[r].client.poll_transmit(now, &mut buf).is_some() {
            let route = Route { local: self.relays[r].base, remote: self.relays[r].client.server() };
            self.transmits.push_back(Queued { route, payload: std::mem::take(&mut buf) });
        }
        while let Some(event) = self.relays[r].client.poll_event() {
            match event {
                ClientEvent::Allocated { relayed, mapped, .. } => {
                    self.relays[r].done = true;
                    if self.relays[r].local.is_none() {
                        self.add_relayed(now, r, relayed, mapped);
                    }
                }
                ClientEvent::Closed { .. } => {
                    self.relays[r].done = true;
                    // Pairs through it cannot work any more; a selected one fails by
                    // consent.
                    if let Some(local) = self.relays[r].local {
                        for (p, pair) in self.pairs.iter_mut().enumerate() {
                            if pair.local == local && Some(p) != self.selected {
                                pair.transaction = None;
                                pair.state = PairState::Failed;
                            }
                        }
                        self.update_failed(now);
                    }
                }
                _ => {}
            }
        }
        self.check_gathering_complete();
    }

    fn add_relayed(&mut self, now: Instant, r: usize, relayed: SocketAddr, mapped: Option<SocketAddr>) {
        let (base, server) = (self.relays[r].base, self.relays[r].client.server().ip());
        // The allocation's XOR-MAPPED-ADDRESS is a server-reflexive candidate too (browsers
        // gather it from their TURN servers the same way).
        if let Some(mapped) = mapped {
            self.add_server_reflexive(now, base, mapped, server);
        }
        let earlier = self.relays.iter().take(r).filter(|s| s.local.is_some()).count();
        let kind = CandidateKind::Relayed;
        let candidate = Candidate::udp(
            kind,
            foundation(kind, base.ip(), Some(server), &Transport::Udp),
            Candidate::compute_priority(kind, 65535 - earlier.min(65535) as u16, 1),
            relayed,
            mapped,
        );
        self.relays[r].local = Some(self.locals.len());
        self.add_local(candidate, relayed, Some(r));
        self.schedule_pace(now);
    }

    /// Sends `payload` to `peer` from relay `r` (installing the permission first if needed).
    pub(super) fn send_relayed(&mut self, now: Instant, r: usize, peer: SocketAddr, payload: &[u8]) {
        let mut out = Vec::new();
        let slot = &mut self.relays[r];
        let mut sent = slot.client.send_to(peer, payload, &mut out);
        if let Err(ClientError::NoPermission(ip)) = sent {
            // CreatePermission goes first on the same path; the server usually has the
            // permission by the time this packet arrives, and checks are retransmitted.
            if slot.client.create_permission(now, ip).is_ok() {
                self.drain_relay(now, r);
                sent = self.relays[r].client.send_to(peer, payload, &mut out);
            }
        }
        if sent.is_ok() {
            let route = Route { local: self.relays[r].base, remote: self.relays[r].client.server() };
            self.transmits.push_back(Queued { route, payload: out });
        }
    }

    /// Data on a selected relayed pair goes as ChannelData (4 bytes of overhead instead of
    /// a Send indication's 36).
    pub(super) fn bind_relay_channel(&mut self, now: Instant, pair: usize) {
        let Some(r) = self.locals[self.pairs[pair].local].relay else { return };
        let peer = self.remotes[self.pairs[pair].remote].addr;
        if self.relays[r].client.bind_channel(now, peer).is_ok() {
            self.drain_relay(now, r);
        }
    }

    /// Which TURN allocation (if any) a datagram from `from` arriving on the driver's socket
    /// `to` belongs to.
    pub(super) fn relay_for(&self, from: SocketAddr, to: SocketAddr) -> Option<usize> {
        self.relays.iter().position(|r| r.base == to && r.client.server() == from)
    }
}
