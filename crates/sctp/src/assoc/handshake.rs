//! The four-way handshake (RFC 9260 §5.1): INIT and INIT ACK, the state cookie, COOKIE ECHO
//! and COOKIE ACK, simultaneous opens (§5.2.4 case D), and setting up the association.

use super::*;

impl Association {
    /// Starts the handshake (both WebRTC endpoints do; simultaneous opens resolve).
    pub fn connect(&mut self, now: Instant) {
        if self.state() != SctpState::Closed {
            return;
        }
        let p = self.init_packet(chunk::INIT, 0, None);
        self.state = State::CookieWait;
        self.lone.push_back(p.clone());
        self.t1 = Some(T1::start(p, now, crate::send::RTO_INITIAL));
    }

    /// Our INIT (tag 0) or INIT ACK (the peer's tag, with the state cookie): the same tag,
    /// initial TSN, window and streams either way, as a simultaneous open needs.
    pub(super) fn init_packet(&self, typ: u8, tag: u32, cookie: Option<&[u8]>) -> Vec<u8> {
        let params = self.init_params(cookie);
        let init = Init {
            tag: self.my_tag,
            a_rwnd: self.config.receive_window as u32,
            outbound_streams: self.config.streams,
            inbound_streams: self.config.streams,
            initial_tsn: self.my_initial_tsn,
            params: &params,
        };
        let mut p = Vec::new();
        packet::begin(&mut p, &self.header(tag));
        chunk::write_init(&mut p, typ, &init);
        packet::finish(&mut p);
        p
    }

    /// Supported extensions and Forward-TSN-Supported, plus a state cookie for INIT ACK.
    pub(super) fn init_params(&self, cookie: Option<&[u8]>) -> Vec<u8> {
        let mut params = Vec::new();
        if let Some(cookie) = cookie {
            chunk::write_param(&mut params, chunk::PARAM_STATE_COOKIE, cookie);
        }
        chunk::write_param(
            &mut params,
            chunk::PARAM_SUPPORTED_EXTENSIONS,
            &[chunk::RECONFIG, chunk::FORWARD_TSN],
        );
        chunk::write_param(&mut params, chunk::PARAM_FORWARD_TSN_SUPPORTED, &[]);
        params
    }

    pub(super) fn peer_from(init: &Init<'_>) -> Peer {
        Peer {
            tag: init.tag,
            initial_tsn: init.initial_tsn,
            a_rwnd: init.a_rwnd,
            forward_tsn: init.forward_tsn(),
            reconfig: init.supports_chunk(chunk::RECONFIG),
            outbound_streams: init.outbound_streams,
            inbound_streams: init.inbound_streams,
        }
    }

    pub(super) fn on_init(&mut self, now: Instant, raw: RawChunk<'_>) {
        let Ok(init) = Init::parse(raw) else { return };
        if matches!(
            self.state(),
            SctpState::Established | SctpState::ShutdownSent | SctpState::ShutdownAckSent
        ) {
            // A restart (§5.2.2) is not supported: the peer gets nothing and gives up.
            return;
        }
        let peer = Self::peer_from(&init);
        let cookie = self.make_cookie(now, &peer);
        let p = self.init_packet(chunk::INIT_ACK, peer.tag, Some(&cookie));
        self.lone.push_back(p);
    }

    pub(super) fn on_init_ack(&mut self, now: Instant, raw: RawChunk<'_>) {
        if self.state() != SctpState::CookieWait {
            return;
        }
        let Ok(init) = Init::parse(raw) else { return };
        let Some(cookie) = init.param(chunk::PARAM_STATE_COOKIE) else { return };
        let p = self.chunk_packet(init.tag, chunk::COOKIE_ECHO, cookie);
        self.state = State::CookieEchoed { peer: Self::peer_from(&init) };
        self.lone.push_back(p.clone());
        self.t1 = Some(T1::start(p, now, crate::send::RTO_INITIAL));
    }

    /// Cookie: our tag and TSN, the peer's, its window and extensions, when it was made
    /// (ms since this association was created), and an HMAC-SHA256 over all of it.
    pub(super) fn make_cookie(&self, now: Instant, peer: &Peer) -> Vec<u8> {
        let mut c = Vec::with_capacity(COOKIE_LEN);
        for v in [self.my_tag, self.my_initial_tsn, peer.tag, peer.initial_tsn, peer.a_rwnd] {
            c.extend_from_slice(&v.to_be_bytes());
        }
        c.extend_from_slice(&peer.outbound_streams.to_be_bytes());
        c.extend_from_slice(&peer.inbound_streams.to_be_bytes());
        c.extend_from_slice(&[0; 4]);
        c.push(u8::from(peer.forward_tsn));
        c.push(u8::from(peer.reconfig));
        let made = now.saturating_duration_since(self.created).as_millis() as u64;
        c.extend_from_slice(&made.to_be_bytes());
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.cookie_key).expect("any key length");
        mac.update(&c);
        c.extend_from_slice(&mac.finalize().into_bytes());
        c
    }

    /// The cookie's tag and peer, and its age (the RTT from our INIT ACK to its COOKIE ECHO,
    /// to the millisecond).
    pub(super) fn check_cookie(&self, now: Instant, c: &[u8]) -> Option<(u32, Peer, Duration)> {
        if c.len() != COOKIE_LEN {
            return None;
        }
        let (body, tag) = c.split_at(COOKIE_LEN - 32);
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.cookie_key).expect("any key length");
        mac.update(body);
        mac.verify_slice(tag).ok()?;
        let u = |i: usize| u32::from_be_bytes(body[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let made = u64::from_be_bytes(body[30..38].try_into().expect("8 bytes"));
        let age = (now.saturating_duration_since(self.created).as_millis() as u64).saturating_sub(made);
        if Duration::from_millis(age) > COOKIE_LIFETIME || u(0) != self.my_tag || u(1) != self.my_initial_tsn
        {
            return None;
        }
        let peer = Peer {
            tag: u(2),
            initial_tsn: u(3),
            a_rwnd: u(4),
            forward_tsn: body[28] == 1,
            reconfig: body[29] == 1,
            outbound_streams: u16::from_be_bytes([body[20], body[21]]),
            inbound_streams: u16::from_be_bytes([body[22], body[23]]),
        };
        Some((u(0), peer, Duration::from_millis(age)))
    }

    pub(super) fn on_cookie_echo(&mut self, now: Instant, tag: u32, raw: RawChunk<'_>) {
        let Some((my_tag, peer, age)) = self.check_cookie(now, raw.value) else { return };
        if tag != my_tag {
            return;
        }
        match self.state() {
            SctpState::Established => {}
            SctpState::Ended | SctpState::ShutdownSent | SctpState::ShutdownAckSent => return,
            // Closed (passive open), COOKIE-WAIT or COOKIE-ECHOED (simultaneous open, §5.2.4
            // case D: the tags match): the association is up.
            _ => {
                if self.state.peer().is_some_and(|p| p.tag != peer.tag) {
                    return;
                }
                self.t1 = None;
                self.handshake_rtt = Some(age);
                self.establish(now, peer);
            }
        }
        let mut c = Vec::new();
        chunk::write_simple(&mut c, chunk::COOKIE_ACK, 0, &[]);
        self.control.push_front(c);
    }

    /// Up, with `peer` as its INIT or INIT ACK (or our cookie) described it.
    pub(super) fn establish(&mut self, now: Instant, peer: Peer) {
        if self.state() == SctpState::Established {
            return;
        }
        let mut sender = Sender::new(self.my_initial_tsn, self.config.mtu, peer.a_rwnd, peer.forward_tsn);
        sender.set_congestion_control(self.config.congestion_control, self.rng.next_u64());
        // Messages sent before the peer said how many streams it takes: any beyond them
        // cannot be delivered (the peer would discard them with an error).
        let outbound = self.config.streams.min(peer.inbound_streams);
        let mut refused: Vec<u16> = Vec::new();
        for (stream, ppid, data, ordered, reliability) in self.early.drain(..) {
            if stream >= outbound {
                tracing::debug!(stream, outbound, "message on a stream the peer does not take dropped");
                if !refused.contains(&stream) {
                    refused.push(stream);
                }
                continue;
            }
            sender.enqueue(now, stream, ppid, data, ordered, reliability);
        }
        if !refused.is_empty() {
            self.events.push_back(SctpEvent::StreamsRefused(refused));
        }
        let receiver = Receiver::new(
            peer.initial_tsn,
            self.config.initial_receive_window,
            self.config.receive_window,
            self.config.max_receive_message,
        );
        self.state = State::Established(Up { peer, sender, receiver });
        self.peer_reset_seq = Some(peer.initial_tsn);
        self.heartbeat_at = self.config.heartbeat_interval.map(|i| now + i);
        self.events.push_back(SctpEvent::Connected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(side: &mut Association, now: Instant, to_b: bool, wire: &mut Vec<(Instant, bool, Vec<u8>)>) {
        let mut buf = Vec::new();
        while side.poll_transmit(now, &mut buf).is_some() {
            wire.push((now + Duration::from_millis(50), to_b, std::mem::take(&mut buf)));
        }
    }

    #[test]
    fn the_handshake_times_the_rtt_on_both_sides() {
        // 50 ms each way: the active side times COOKIE ECHO -> COOKIE ACK, the passive one
        // its cookie's age (INIT ACK -> COOKIE ECHO); receive window tuning starts from it.
        let t0 = Instant::now();
        let mut a = Association::new(t0, SctpConfig::default(), [1; 32]);
        let mut b = Association::new(t0, SctpConfig::default(), [2; 32]);
        a.connect(t0);
        let (mut now, mut wire) = (t0, Vec::new());
        for _ in 0..20 {
            flush(&mut a, now, true, &mut wire);
            flush(&mut b, now, false, &mut wire);
            wire.sort_by_key(|w| w.0);
            if wire.is_empty() {
                break;
            }
            let (at, to_b, packet) = wire.remove(0);
            now = at;
            if to_b {
                b.handle_receive(now, &packet);
            } else {
                a.handle_receive(now, &packet);
            }
        }
        assert!(a.is_established() && b.is_established());
        assert_eq!(a.handshake_rtt, Some(Duration::from_millis(100)));
        assert_eq!(b.handshake_rtt, Some(Duration::from_millis(100)));
    }
}
