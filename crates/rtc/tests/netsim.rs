//! Two PeerConnections in `peerlink-netsim`: offer/answer through a simulated signaling
//! channel (descriptions and trickled candidates as text), behind NATs with a STUN server,
//! data channels both ways, restart, rollback. (Interop with peers we did not write is in
//! tests/e2e: aiortc and Chromium.)

use peerlink_netsim::{pump, seed, Datagram, HostId, LinkConfig, NatConfig, Network};
use peerlink_rtc::{
    ChannelConfig, ChannelEvent, CloseReason, ConnectionState, Description, IceFailure, MediaDropped,
    PeerConnection, RtcConfig, RtcEvent, SdpType, SignalingState,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const STUN: &str = "198.51.100.1:3478";

struct Side {
    pc: PeerConnection,
    host: HostId,
    events: Vec<RtcEvent>,
}

struct World {
    net: Network,
    stun: HostId,
    sides: [Side; 2],
    /// Candidates on their way to the other side.
    trickle: [Vec<String>; 2],
    buf: Vec<u8>,
}

impl World {
    fn new(n: u64, nat: bool) -> World {
        World::with_config(n, nat, RtcConfig::default())
    }

    fn with_config(n: u64, nat: bool, config: RtcConfig) -> World {
        let start = Instant::now();
        let mut net = Network::new(n, start);
        let stun = net.add_host("198.51.100.1".parse().unwrap(), None, LinkConfig::default());
        let config = RtcConfig { stun_servers: vec![STUN.parse().unwrap()], ..config };
        let sides = [0, 1].map(|i| {
            let host = if nat {
                let nat = net.add_nat(
                    NatConfig::port_restricted_cone(),
                    format!("203.0.113.{}", i + 1).parse().unwrap(),
                );
                net.add_host(format!("10.0.{}.2", i + 1).parse().unwrap(), Some(nat), LinkConfig::default())
            } else {
                net.add_host(format!("198.51.100.{}", 10 + i).parse().unwrap(), None, LinkConfig::default())
            };
            let mut pc = PeerConnection::new(start, config.clone(), seed(n * 2 + i as u64)).unwrap();
            pc.add_local_address(start, SocketAddr::new(net.host_ip(host), 5000));
            Side { pc, host, events: Vec::new() }
        });
        World { net, stun, sides, trickle: [Vec::new(), Vec::new()], buf: Vec::new() }
    }

    /// Two public hosts with `delay` on each access link, connected, with a reliable
    /// "chat" channel from side 0 open: the world and the channel's id.
    fn with_open_channel(n: u64, delay: Duration) -> (World, u16) {
        let mut w = World::new(n, false);
        for s in &w.sides {
            w.net.set_link(s.host, LinkConfig { delay, ..LinkConfig::default() });
        }
        let now = w.net.now();
        let chat = w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
        w.negotiate(0, 1);
        w.run(Duration::from_secs(20), |w| {
            w.connected() && w.has(0, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Open(_))))
        });
        assert!(w.connected());
        (w, chat)
    }

    fn step(&mut self) {
        let now = self.net.now();
        while let Some(req) = self.net.poll_receive(self.stun) {
            let mut out = Vec::new();
            if peerlink_stun::binding::respond(&req.payload, req.from, &mut out)
                == peerlink_stun::binding::Outcome::Answered
            {
                self.net.send(self.stun, Datagram { from: req.to, to: req.from, payload: out });
            }
        }
        for i in 0..2 {
            let Side { pc, host, events } = &mut self.sides[i];
            let trickle = &mut self.trickle[1 - i];
            pump(&mut self.net, *host, pc, &mut self.buf, |e| {
                if let RtcEvent::LocalCandidate(c) = &e {
                    trickle.push(c.clone());
                }
                events.push(e);
            });
            // Trickled candidates reach the other side once it has a remote description.
            if self.sides[i].pc.signaling_state() != SignalingState::Stable || self.has_remote(i) {
                for c in std::mem::take(&mut self.trickle[i]) {
                    self.sides[i].pc.add_ice_candidate(now, &c).unwrap();
                }
            }
        }
    }

    fn has_remote(&self, i: usize) -> bool {
        self.sides[i].events.iter().any(|e| matches!(e, RtcEvent::IceState(_)))
    }

    /// Runs until `done` (true) or `limit` of virtual time has passed (false).
    fn run(&mut self, limit: Duration, done: impl Fn(&World) -> bool) -> bool {
        peerlink_netsim::run(self, limit, done)
    }

    /// Side `a` offers, side `b` answers (descriptions as text).
    fn negotiate(&mut self, a: usize, b: usize) {
        let now = self.net.now();
        let offer = self.sides[a].pc.create_offer().unwrap();
        self.sides[a].pc.set_local_description(now, Some(offer.clone())).unwrap();
        let offer = Description { kind: SdpType::Offer, sdp: offer.sdp };
        self.sides[b].pc.set_remote_description(now, offer).unwrap();
        let answer = self.sides[b].pc.create_answer().unwrap();
        self.sides[b].pc.set_local_description(now, Some(answer.clone())).unwrap();
        self.sides[a].pc.set_remote_description(now, answer).unwrap();
    }

    fn connected(&self) -> bool {
        self.sides.iter().all(|s| s.pc.connection_state() == ConnectionState::Connected)
    }

    fn has(&self, i: usize, f: impl Fn(&RtcEvent) -> bool) -> bool {
        self.sides[i].events.iter().any(f)
    }
}

#[test]
fn offer_answer_connects_and_a_channel_carries_messages_both_ways() {
    for nat in [false, true] {
        let mut w = World::new(1 + u64::from(nat), nat);
        let now = w.net.now();
        let chat = w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
        w.negotiate(0, 1);
        w.run(Duration::from_secs(20), |w| {
            w.connected() && w.has(1, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Incoming { .. })))
        });
        assert!(w.connected(), "nat {nat}: {:?} / {:?}", w.sides[0].events, w.sides[1].events);
        // The answerer took the DTLS client role, so the offerer's channel has an odd id.
        assert_eq!(chat % 2, 1);
        let now = w.net.now();
        w.sides[0].pc.send(now, chat, b"hello", false).unwrap();
        w.sides[1].pc.send(now, chat, b"hi back", false).unwrap();
        w.run(Duration::from_secs(5), |w| {
            w.has(
                1,
                |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"hello"),
            ) && w.has(
                0,
                |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"hi back"),
            )
        });
        assert!(w.has(
            1,
            |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"hello")
        ));
        assert!(w.has(
            0,
            |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"hi back")
        ));
        if nat {
            let pair = w.sides[0].events.iter().find_map(|e| match e {
                RtcEvent::SelectedPair { local_kind, remote_kind, .. } => Some((*local_kind, *remote_kind)),
                _ => None,
            });
            assert_eq!(pair, Some(("srflx", "srflx")));
        }
    }
}

#[test]
fn rtp_and_rtcp_on_the_selected_pair_are_counted_and_dropped() {
    let mut w = World::new(3, false);
    let now = w.net.now();
    w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("x")).unwrap();
    w.negotiate(0, 1);
    assert!(w.run(Duration::from_secs(20), World::connected));
    let (local, remote) = w.sides[1]
        .events
        .iter()
        .find_map(|e| match e {
            RtcEvent::SelectedPair { local, remote, .. } => Some((*local, *remote)),
            _ => None,
        })
        .unwrap();
    let now = w.net.now();
    let pc = &mut w.sides[1].pc;
    // RFC 7983: first byte 128-191; RFC 5761 §4: a second byte of 192-223 is RTCP.
    pc.handle_receive(now, remote, local, &[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xAA]);
    pc.handle_receive(now, remote, local, &[0x81, 201, 0, 1, 0, 0, 0, 1]);
    pc.handle_receive(now, remote, local, &[0x80, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
    assert_eq!(pc.media_dropped(), MediaDropped { rtp: 1, rtcp: 2 });
    assert_eq!(pc.connection_state(), ConnectionState::Connected);
}

#[test]
fn the_answer_to_chromiums_offer_takes_its_audio_and_video_and_keeps_the_order() {
    let mut w = World::new(3, false);
    let chromium = include_str!("../../sdp/testdata/chromium-av-datachannel-offer.sdp");
    let now = w.net.now();
    w.sides[1]
        .pc
        .set_remote_description(now, Description { kind: SdpType::Offer, sdp: chromium.to_owned() })
        .unwrap();
    let answer = w.sides[1].pc.create_answer().unwrap();
    let sd = peerlink_sdp::SessionDescription::parse(&answer.sdp).unwrap();
    let ports: Vec<(String, u16)> = sd.media.iter().map(|m| (m.kind.clone(), m.port)).collect();
    assert_eq!(ports, [("audio".into(), 9), ("video".into(), 9), ("application".into(), 9)]);
    assert_eq!(sd.bundle(), ["0", "1", "2"]);
    let dc = sd.datachannel().unwrap();
    assert_eq!(sd.setup(dc), Some(peerlink_sdp::Setup::Active));
    assert_eq!(dc.mid(), Some("2"));
    // Chromium sends (sendrecv); a transceiver made for its offer receives.
    for m in &sd.media[..2] {
        assert!(m.has("recvonly") && m.has("rtcp-mux"), "{m:?}");
        assert!(m.attributes("extmap").any(|e| e.ends_with("sdes:mid")), "{m:?}");
    }
    let audio = &sd.media[0];
    assert_eq!(audio.formats, ["111"]);
    assert!(audio.attributes("rtpmap").any(|r| r == "111 opus/48000/2"));
    // Video: the offer's order, each with its RTX; red and ulpfec are not taken.
    let video = &sd.media[1];
    let names: Vec<&str> = video.attributes("rtpmap").map(|r| r.split_once(' ').unwrap().1).collect();
    assert!(names[0].starts_with("VP8/90000") && names[1] == "rtx/90000", "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("red") || n.starts_with("ulpfec")), "{names:?}");
    let tracks = w.sides[1].pc.transceivers();
    assert_eq!(tracks.len(), 2);
    assert_eq!(tracks[1].codecs[0].codec, peerlink_rtc::Codec::Vp8);
}

/// A VP8 frame: its payload header byte 0 has P=0 for a key frame.
fn vp8_frame(n: usize, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7 + n * 13) as u8).collect();
    f[0] = if n % 30 == 0 { 0x10 } else { 0x11 };
    f
}

/// Side 0 sends video (VP8) and audio (Opus) to side 1 over links with `loss`; returns the
/// frames side 1 received (by transceiver kind) and side 0's and 1's stats.
fn send_media(n: u64, loss: f64, frames: usize) -> (Vec<(peerlink_rtc::Codec, Vec<u8>, bool)>, World) {
    use peerlink_rtc::{Direction, MediaKind, TrackConfig};
    let mut w = World::new(n, false);
    let now = w.net.now();
    w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("x")).unwrap();
    let video = w.sides[0]
        .pc
        .add_transceiver(MediaKind::Video, Direction::SendOnly, TrackConfig::new(MediaKind::Video))
        .unwrap();
    let audio = w.sides[0]
        .pc
        .add_transceiver(MediaKind::Audio, Direction::SendOnly, TrackConfig::new(MediaKind::Audio))
        .unwrap();
    w.negotiate(0, 1);
    assert!(w.run(Duration::from_secs(20), World::connected));
    assert!(w.has(1, |e| matches!(e, RtcEvent::Track { kind: MediaKind::Video, .. })));
    for s in &w.sides {
        w.net
            .set_link(s.host, LinkConfig { loss, delay: Duration::from_millis(20), ..LinkConfig::default() });
    }
    let mut sent = Vec::new();
    for i in 0..frames {
        let now = w.net.now();
        let frame = vp8_frame(i, 500 + (i * 397) % 6000);
        w.sides[0].pc.write_frame(now, video, (i as u32) * 3000, &frame).unwrap();
        let opus = vec![0x78, i as u8, 1, 2, 3];
        w.sides[0].pc.write_frame(now, audio, (i as u32) * 1600, &opus).unwrap();
        sent.push(frame);
        w.run(Duration::from_millis(33), |_| false);
    }
    w.run(Duration::from_secs(2), |_| false);
    let got = w.sides[1]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Frame { codec, frame, .. } => Some((*codec, frame.data.clone(), frame.gap_before)),
            _ => None,
        })
        .collect();
    (got, w)
}

#[test]
fn video_and_audio_frames_arrive_whole_and_in_order() {
    let (got, w) = send_media(40, 0.0, 60);
    let video: Vec<&Vec<u8>> =
        got.iter().filter(|(c, ..)| *c == peerlink_rtc::Codec::Vp8).map(|(_, d, _)| d).collect();
    let audio = got.iter().filter(|(c, ..)| *c == peerlink_rtc::Codec::Opus).count();
    assert_eq!(video.len(), 60);
    for (i, d) in video.iter().enumerate() {
        assert_eq!(**d, vp8_frame(i, 500 + (i * 397) % 6000), "frame {i}");
    }
    assert_eq!(audio, 60);
    assert!(got.iter().all(|(_, _, gap)| !gap));
    let stats = w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    assert_eq!(stats.nacks_sent, 0);
}

#[test]
fn lost_video_packets_are_asked_for_and_retransmitted_over_rtx() {
    let (got, w) = send_media(41, 0.05, 150);
    let video: Vec<&Vec<u8>> =
        got.iter().filter(|(c, ..)| *c == peerlink_rtc::Codec::Vp8).map(|(_, d, _)| d).collect();
    let sent: Vec<Vec<u8>> = (0..150).map(|i| vp8_frame(i, 500 + (i * 397) % 6000)).collect();
    // Every frame delivered is exactly one that was sent (never a partial one), in order.
    let mut at = 0;
    for d in &video {
        let k = sent[at..].iter().position(|s| s == *d).expect("a frame that was sent");
        at += k + 1;
    }
    let receiver = w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    let sender = w.sides[0].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    assert!(receiver.nacks_sent > 0 && sender.retransmissions_sent > 0, "{receiver:?} {sender:?}");
    assert!(receiver.retransmissions_received > 0, "{receiver:?}");
    eprintln!("{} of 150 frames; {receiver:?} {sender:?}", video.len());
    assert!(video.len() >= 145, "{} of 150 frames; {receiver:?}", video.len());
}

#[test]
fn rollback_returns_to_stable_and_wrong_order_is_refused() {
    let mut w = World::new(4, false);
    let now = w.net.now();
    let offer = w.sides[0].pc.create_offer().unwrap();
    w.sides[0].pc.set_local_description(now, Some(offer)).unwrap();
    assert_eq!(w.sides[0].pc.signaling_state(), SignalingState::HaveLocalOffer);
    assert!(w.sides[0].pc.create_answer().is_err());
    w.sides[0].pc.set_local_description(now, None).unwrap();
    assert_eq!(w.sides[0].pc.signaling_state(), SignalingState::Stable);
    // An answer without an offer, and garbage, are errors that change nothing.
    let answer = Description { kind: SdpType::Answer, sdp: w.sides[1].pc.create_offer().unwrap().sdp };
    assert!(w.sides[0].pc.set_remote_description(now, answer).is_err());
    assert!(w.sides[0]
        .pc
        .set_remote_description(now, Description { kind: SdpType::Offer, sdp: "v=0\n".into() })
        .is_err());
    assert_eq!(w.sides[0].pc.signaling_state(), SignalingState::Stable);
    // After all that, a normal negotiation still works.
    w.negotiate(0, 1);
    w.run(Duration::from_secs(20), World::connected);
    assert!(w.connected());
}

#[test]
fn ice_restart_renegotiates_and_the_channel_keeps_working() {
    let mut w = World::new(5, true);
    let now = w.net.now();
    let chat = w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
    w.negotiate(0, 1);
    w.run(Duration::from_secs(20), World::connected);
    assert!(w.connected());
    let now = w.net.now();
    w.sides[0].pc.restart_ice(now).unwrap();
    w.negotiate(0, 1);
    let selections = |w: &World, i: usize| {
        w.sides[i].events.iter().filter(|e| matches!(e, RtcEvent::SelectedPair { .. })).count()
    };
    w.run(Duration::from_secs(20), |w| selections(w, 0) >= 2 && selections(w, 1) >= 2);
    assert!(selections(&w, 0) >= 2, "{:?}", w.sides[0].events);
    let now = w.net.now();
    w.sides[0].pc.send(now, chat, b"after restart", false).unwrap();
    w.run(Duration::from_secs(5), |w| {
        w.has(1, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { .. })))
    });
    assert!(w.has(
        1,
        |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"after restart")
    ));
}

#[test]
fn a_renegotiation_offered_by_the_other_side_keeps_the_dtls_role() {
    let mut w = World::new(6, false);
    let now = w.net.now();
    let chat = w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
    w.negotiate(0, 1);
    w.run(Duration::from_secs(20), World::connected);
    assert!(w.connected());
    // Side 0 offered and became the DTLS server; now side 1 offers (as a browser adding
    // media does) and side 0 must answer passive, not active.
    w.negotiate(1, 0);
    let now = w.net.now();
    w.sides[0].pc.send(now, chat, b"still here", false).unwrap();
    w.run(Duration::from_secs(5), |w| {
        w.has(1, |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { .. })))
    });
    assert!(w.connected());
    assert!(w.has(
        1,
        |e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { data, .. }) if data == b"still here")
    ));
}

#[test]
fn a_renegotiation_during_setup_keeps_the_ice_roles() {
    // As a browser with a camera does: it answers our data-only offer and at once offers to
    // add its audio and video, before ICE has nominated a pair. The offerer of a later
    // negotiation does not take over ICE control (RFC 8445 §6.1.1 decides the roles once, at
    // the first offer): were both sides controlled, nobody would nominate and no pair would
    // ever be selected on our side.
    for n in 0..4 {
        let mut w = World::new(40 + n, false);
        let now = w.net.now();
        w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
        w.negotiate(0, 1);
        w.negotiate(1, 0);
        assert!(w.sides[0].pc.is_ice_controlling(), "the first offerer stays controlling");
        assert!(!w.sides[1].pc.is_ice_controlling(), "the first answerer stays controlled");
        w.run(Duration::from_secs(20), World::connected);
        assert!(w.connected(), "seed {n}: {:?}", w.sides[0].events);
    }
}

#[test]
fn a_close_delivers_what_was_sent_and_the_peer_sees_it_end() {
    // 20 ms each way on both links: 80 ms round trips.
    let (mut w, chat) = World::with_open_channel(50, Duration::from_millis(20));
    // A burst larger than the first congestion window, then close at once: all of it arrives
    // (before: the close aborted and the tail was lost).
    let now = w.net.now();
    for i in 0..40u32 {
        w.sides[0].pc.send(now, chat, &[i as u8; 1000], true).unwrap();
    }
    w.sides[0].pc.close(now);
    assert_eq!(w.sides[0].pc.connection_state(), ConnectionState::Connected, "closing takes a shutdown");
    let closed = |w: &World, i: usize| w.sides[i].pc.connection_state() == ConnectionState::Closed;
    w.run(Duration::from_secs(10), |w| closed(w, 0) && closed(w, 1));
    let got = w.sides[1]
        .events
        .iter()
        .filter(|e| matches!(e, RtcEvent::Channel(ChannelEvent::Message { binary: true, .. })))
        .count();
    assert_eq!(got, 40, "every message sent before the close arrives");
    assert!(closed(&w, 0), "the closing side is closed");
    assert!(
        closed(&w, 1),
        "the other side sees the close: {:?}",
        w.sides[1].events.iter().rev().take(5).collect::<Vec<_>>()
    );
    assert!(
        w.sides[1].events.iter().any(|e| matches!(e, RtcEvent::Channel(ChannelEvent::Ended { .. }))),
        "its data channels end"
    );
    // Well within the abort deadline: a shutdown, not a timeout.
    assert!(w.net.now() - now < peerlink_rtc::CLOSE_DEADLINE, "took {:?}", w.net.now() - now);
}

impl peerlink_netsim::World for World {
    fn net(&self) -> &Network {
        &self.net
    }

    fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    fn step(&mut self) {
        World::step(self);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sides.iter().filter_map(|s| s.pc.poll_timeout()).min()
    }
}

/// The other side's `Closed` events (the connection's terminal event).
fn closes(w: &World, i: usize) -> Vec<(CloseReason, bool)> {
    w.sides[i]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Closed { reason, during_setup } => Some((reason.clone(), *during_setup)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_graceful_close_is_seen_by_the_other_side_as_remote_closed_within_a_round_trip() {
    // 20 ms on each access link: 40 ms one way, 80 ms round trips.
    let (mut w, _) = World::with_open_channel(51, Duration::from_millis(20));
    // Let the set-up's last packets settle, then close one side.
    w.run(Duration::from_secs(1), |_| false);
    let closed_at = w.net.now();
    w.sides[0].pc.close(closed_at);
    assert!(
        w.run(Duration::from_secs(10), |w| !closes(w, 1).is_empty()),
        "the other side never saw the close"
    );
    let seen = w.net.now() - closed_at;
    // SHUTDOWN reaches it after one way; one round trip (SHUTDOWN ACK out, SHUTDOWN
    // COMPLETE and close_notify back) later the connection is over.
    let (one_way, rtt) = (Duration::from_millis(40), Duration::from_millis(80));
    assert!(seen >= rtt && seen <= one_way + rtt + Duration::from_millis(5), "seen after {seen:?}");
    assert_eq!(closes(&w, 1), [(CloseReason::RemoteClosed, false)]);
    // The terminal event comes just before the state.
    let events = &w.sides[1].events;
    let at = events.iter().position(|e| matches!(e, RtcEvent::Closed { .. })).unwrap();
    assert_eq!(events.get(at + 1), Some(&RtcEvent::ConnectionState(ConnectionState::Closed)), "{events:?}");
    w.run(Duration::from_secs(1), |w| !closes(w, 0).is_empty());
    assert_eq!(closes(&w, 0), [(CloseReason::LocalClose, false)]);
    // Exactly one terminal event each, however long it runs on.
    w.run(Duration::from_secs(5), |_| false);
    assert_eq!(closes(&w, 0).len() + closes(&w, 1).len(), 2);
}

#[test]
fn a_path_that_goes_dark_fails_with_consent_lost() {
    let mut w = World::new(52, false);
    let now = w.net.now();
    w.sides[0].pc.create_data_channel(now, ChannelConfig::reliable("chat")).unwrap();
    w.negotiate(0, 1);
    w.run(Duration::from_secs(20), |w| w.connected());
    assert!(w.connected());
    for s in &w.sides {
        w.net.set_link(s.host, LinkConfig { up: false, ..LinkConfig::default() });
    }
    w.run(Duration::from_secs(60), |w| !closes(w, 0).is_empty() && !closes(w, 1).is_empty());
    for i in 0..2 {
        let closes = closes(&w, i);
        assert_eq!(closes.len(), 1, "{closes:?}");
        let (reason, during_setup) = &closes[0];
        assert!(matches!(reason, CloseReason::Ice(IceFailure::ConsentLost(_))), "{reason}");
        assert!(!during_setup);
        assert_eq!(w.sides[i].pc.connection_state(), ConnectionState::Failed);
        assert!(reason.to_string().starts_with("ICE: consent lost"), "{reason}");
    }
}

#[test]
fn a_close_under_way_stays_a_close_when_the_path_then_fails() {
    let (mut w, _) = World::with_open_channel(53, LinkConfig::default().delay);
    // The path goes dark; just before consent runs out (30 s), side 0 closes. Its SHUTDOWN
    // gets no answer, and ICE fails before the close's own deadline.
    for s in &w.sides {
        w.net.set_link(s.host, LinkConfig { up: false, ..LinkConfig::default() });
    }
    w.run(Duration::from_millis(28_500), |_| false);
    assert!(closes(&w, 0).is_empty(), "{:?}", closes(&w, 0));
    let now = w.net.now();
    w.sides[0].pc.close(now);
    w.run(Duration::from_secs(10), |w| !closes(w, 0).is_empty());
    assert_eq!(closes(&w, 0), [(CloseReason::LocalClose, false)]);
    assert_eq!(w.sides[0].pc.connection_state(), ConnectionState::Closed);
}

/// Side 0 with a video track to send, negotiated with side 1 and connected.
fn video_sender(n: u64) -> (World, peerlink_rtc::TransceiverId) {
    video_sender_with(n, RtcConfig::default())
}

fn video_sender_with(n: u64, config: RtcConfig) -> (World, peerlink_rtc::TransceiverId) {
    sender_with(n, config, peerlink_rtc::MediaKind::Video)
}

/// Side 0 sends one track of `kind` to side 1, connected.
fn sender_with(
    n: u64,
    config: RtcConfig,
    kind: peerlink_rtc::MediaKind,
) -> (World, peerlink_rtc::TransceiverId) {
    use peerlink_rtc::{Direction, TrackConfig};
    let mut w = World::with_config(n, false, config);
    let id = w.sides[0].pc.add_transceiver(kind, Direction::SendOnly, TrackConfig::new(kind)).unwrap();
    w.negotiate(0, 1);
    assert!(w.run(Duration::from_secs(20), World::connected));
    (w, id)
}

#[test]
fn a_key_frame_and_the_frames_since_go_again_when_all_are_kept() {
    let (mut w, video) = video_sender(43);
    // Frame 0 a key frame, then deltas; frames of 2000 bytes are 2 packets each.
    for i in 0..10u32 {
        let now = w.net.now();
        w.sides[0].pc.write_frame(now, video, i * 3000, &vp8_frame(i as usize, 2000)).unwrap();
        w.run(Duration::from_millis(33), |_| false);
    }
    let resent = |w: &World| w.sides[0].pc.media_stats(video).unwrap().keyframe_resends;
    let received = |w: &World| w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    let now = w.net.now();
    let pc = &mut w.sides[0].pc;
    // Not a frame's timestamp, more bytes since than allowed, a frame not sent yet: nothing.
    assert_eq!(pc.resend_since(now, video, 5 * 3000 + 1, 100_000), 0);
    assert_eq!(pc.resend_since(now, video, 5 * 3000, 9_000), 0);
    assert_eq!(pc.resend_since(now, video, 20 * 3000, 100_000), 0);
    assert_eq!(resent(&w), 0);
    // Frames 5 to 9: 10 packets.
    assert_eq!(w.sides[0].pc.resend_since(now, video, 5 * 3000, 11_000), 10);
    assert_eq!(resent(&w), 10);
    // Within a round trip nothing goes twice: frame 5 again is refused whole; frames 3 and
    // 4 still go.
    assert_eq!(w.sides[0].pc.resend_since(now, video, 5 * 3000, 100_000), 0);
    assert_eq!(w.sides[0].pc.resend_since(now, video, 3 * 3000, 100_000), 4);
    w.run(Duration::from_millis(500), |_| false);
    let r = received(&w);
    assert_eq!(r.retransmissions_received, 14, "{r:?}");
    assert_eq!(w.sides[0].pc.media_stats(video).unwrap().retransmissions_sent, 0);
    // Every frame arrived once.
    let frames = w.sides[1].events.iter().filter(|e| matches!(e, RtcEvent::Frame { .. })).count();
    assert_eq!(frames, 10);
    // From the first packet ever sent on (the key frame has none before it).
    let now = w.net.now();
    assert_eq!(w.sides[0].pc.resend_since(now, video, 0, 100_000), 20);
    // Once out of the history (2 s), or forgotten, nothing.
    w.run(Duration::from_millis(2100), |_| false);
    let now = w.net.now();
    w.sides[0].pc.write_frame(now, video, 80 * 3000, &vp8_frame(30, 2000)).unwrap();
    assert_eq!(w.sides[0].pc.resend_since(now, video, 5 * 3000, 100_000), 0);
    assert_eq!(w.sides[0].pc.resend_since(now, video, 80 * 3000, 100_000), 2);
    w.sides[0].pc.forget_sent(video);
    let now = now + Duration::from_millis(300);
    assert_eq!(w.sides[0].pc.resend_since(now, video, 80 * 3000, 100_000), 0);
}

#[test]
fn what_waits_in_the_pacer_goes_when_the_sender_forgets_what_it_sent() {
    let (mut w, video) = video_sender(44);
    let start = w.net.now();
    let pc = &mut w.sides[0].pc;
    // 51 packets, paced over about 320 ms; what may leave at once leaves.
    pc.write_frame(start, video, 0, &vp8_frame(0, 60_000)).unwrap();
    let mut buf = Vec::new();
    while pc.poll_transmit(start, &mut buf).is_some() {
        buf.clear();
    }
    // An SFU switched this track to another source: the rest of the frame is not sent.
    pc.forget_sent(video);
    let mut now = start;
    let mut large = 0;
    while let Some(next) = pc.poll_timeout().filter(|&t| t - start < Duration::from_millis(500)) {
        now = next.max(now);
        pc.handle_timeout(now);
        while pc.poll_transmit(now, &mut buf).is_some() {
            large += usize::from(buf.len() > 1000);
            buf.clear();
        }
    }
    assert_eq!(large, 0, "packets of the forgotten frame still left the pacer");
    // The new source's first frame leaves at once (at the pacer's next turn).
    let now = start + Duration::from_millis(500);
    pc.handle_timeout(now);
    pc.write_frame(now, video, 3000, &vp8_frame(0, 1100)).unwrap();
    let mut first = 0;
    let mut at = now;
    while let Some(next) = pc.poll_timeout().filter(|&t| t - now < Duration::from_millis(5)) {
        at = next.max(at);
        pc.handle_timeout(at);
        while pc.poll_transmit(at, &mut buf).is_some() {
            first += usize::from(buf.len() > 1000);
            buf.clear();
        }
    }
    assert_eq!(first, 1, "the new frame within 5 ms");
}

#[test]
fn a_receiver_takes_the_new_source_at_once_after_the_sender_forgot_the_old() {
    let (mut w, video) = video_sender(45);
    let now = w.net.now();
    // A large key frame, paced out over about 320 ms; 100 ms of it go.
    w.sides[0].pc.write_frame(now, video, 0, &vp8_frame(0, 60_000)).unwrap();
    w.run(Duration::from_millis(100), |_| false);
    // The source changes (an SFU's layer switch): the rest of the old frame is not sent, and
    // the new source starts with a key frame.
    w.sides[0].pc.forget_sent(video);
    let switched = w.net.now();
    w.sides[0].pc.write_frame(switched, video, 90_000, &vp8_frame(30, 1100)).unwrap();
    let got = |w: &World| {
        w.sides[1].events.iter().any(
            |e| matches!(e, RtcEvent::Frame { frame, .. } if frame.keyframe && frame.timestamp.0 == 90_000),
        )
    };
    assert!(w.run(Duration::from_secs(2), got), "the new key frame never came out");
    // Not held back by a hole in the sequence numbers until it expires (500 ms).
    let took = w.net.now() - switched;
    assert!(took < Duration::from_millis(200), "the new key frame came out {took:?} after the switch");
}

#[test]
fn a_steady_streams_frame_leaves_whole() {
    let (mut w, video) = video_sender(43);
    let host = w.sides[0].host;
    let mut buf = Vec::new();
    let mut whole = Vec::new();
    // 3,300-byte frames (3 packets) at 30 fps: about 800 kbit/s, paced at 3 times that;
    // the receiver's feedback flows (the world runs between frames).
    for n in 1..=90u32 {
        w.run(Duration::from_millis(33), |_| false);
        let now = w.net.now();
        let pc = &mut w.sides[0].pc;
        pc.write_frame(now, video, n * 3000, &vp8_frame(n as usize, 3_300)).unwrap();
        let mut at_once = 0;
        while let Some(t) = pc.poll_transmit(now, &mut buf) {
            at_once += 1;
            let payload = std::mem::take(&mut buf);
            w.net.send(host, Datagram { from: t.route.local, to: t.route.remote, payload });
        }
        whole.push(at_once >= 3);
    }
    // Past the first seconds every frame leaves as it was written, not one timer wake-up
    // per packet (a 5 ms burst at 2.4 Mbit/s holds 1,500 bytes: one packet).
    assert!(whole[60..].iter().all(|&w| w), "frames that left whole: {whole:?}");
}

#[test]
fn a_large_key_frame_leaves_paced_not_in_one_burst() {
    let (mut w, video) = video_sender(42);
    let start = w.net.now();
    let pc = &mut w.sides[0].pc;
    pc.write_frame(start, video, 0, &vp8_frame(0, 60_000)).unwrap();
    // What may leave at once, then the rest as the pacer's timer allows.
    let mut buf = Vec::new();
    let mut at_once = 0;
    while pc.poll_transmit(start, &mut buf).is_some() {
        at_once += 1;
        buf.clear();
    }
    let mut now = start;
    let mut sent = at_once;
    let mut last = start;
    while sent < 51 {
        let Some(next) = pc.poll_timeout() else { break };
        now = next.max(now);
        pc.handle_timeout(now);
        while pc.poll_transmit(now, &mut buf).is_some() {
            sent += 1;
            last = now;
            buf.clear();
        }
        assert!(now - start < Duration::from_secs(2), "{sent} sent by {:?}", now - start);
    }
    // 60 KB is 51 packets; at the 1.5 Mbit/s floor they take about 320 ms.
    // At most 40 ms at that rate (7,500 bytes) at once.
    assert!(at_once <= 6, "{at_once} packets left at once");
    let spread = last - start;
    assert!(spread >= Duration::from_millis(250) && spread <= Duration::from_millis(500), "{spread:?}");
}

#[test]
fn a_track_added_to_a_running_connection_is_negotiated_and_flows_then_stops() {
    use peerlink_rtc::{Direction, MediaKind, TrackConfig};
    let (mut w, _chat) = World::with_open_channel(43, Duration::from_millis(10));
    let now = w.net.now();
    let video = w.sides[1]
        .pc
        .add_transceiver(MediaKind::Video, Direction::SendOnly, TrackConfig::new(MediaKind::Video))
        .unwrap();
    // Stable after a first negotiation: the answerer side asks for an offer of its own.
    w.run(Duration::from_millis(1), |_| false);
    assert!(w.has(1, |e| matches!(e, RtcEvent::NegotiationNeeded)));
    assert!(w.sides[1].pc.write_frame(now, video, 0, &vp8_frame(0, 900)).is_err(), "not negotiated yet");
    w.negotiate(1, 0);
    w.run(Duration::from_millis(1), |_| false);
    assert!(w.has(0, |e| matches!(e, RtcEvent::Track { kind: MediaKind::Video, .. })));
    for i in 0..10 {
        let now = w.net.now();
        w.sides[1].pc.write_frame(now, video, i * 6000, &vp8_frame(i as usize, 2500)).unwrap();
        w.run(Duration::from_millis(66), |_| false);
    }
    w.run(Duration::from_millis(500), |_| false);
    let frames = |w: &World| w.sides[0].events.iter().filter(|e| matches!(e, RtcEvent::Frame { .. })).count();
    assert_eq!(frames(&w), 10);
    assert!(w.connected());
    // Stopped: the next offer rejects its section, and nothing more is sent.
    w.sides[1].pc.stop_transceiver(video).unwrap();
    w.negotiate(1, 0);
    let remote = w.sides[0].pc.transceivers();
    assert!(remote.iter().all(|t| t.current_direction == Some(Direction::Inactive)), "{remote:?}");
    assert!(w.sides[1].pc.write_frame(w.net.now(), video, 99_000, &vp8_frame(1, 900)).is_err());
    assert!(w.connected());
}

#[test]
fn after_a_rolled_back_offer_the_peers_offer_takes_our_tracks_by_kind() {
    use peerlink_rtc::{Direction, MediaKind, TrackConfig};
    let mut w = World::new(44, false);
    let now = w.net.now();
    // Ours: audio then video (mids 1 and 2 in our offer); the peer's: video then audio.
    let audio = w.sides[0]
        .pc
        .add_transceiver(MediaKind::Audio, Direction::SendOnly, TrackConfig::new(MediaKind::Audio))
        .unwrap();
    let video = w.sides[0]
        .pc
        .add_transceiver(MediaKind::Video, Direction::SendOnly, TrackConfig::new(MediaKind::Video))
        .unwrap();
    for kind in [MediaKind::Video, MediaKind::Audio] {
        w.sides[1].pc.add_transceiver(kind, Direction::RecvOnly, TrackConfig::new(kind)).unwrap();
    }
    let ours = w.sides[0].pc.create_offer().unwrap();
    w.sides[0].pc.set_local_description(now, Some(ours)).unwrap();
    // Glare: the peer's offer wins; ours is rolled back.
    let theirs = w.sides[1].pc.create_offer().unwrap();
    w.sides[1].pc.set_local_description(now, Some(theirs.clone())).unwrap();
    w.sides[0].pc.set_local_description(now, None).unwrap();
    w.sides[0].pc.set_remote_description(now, theirs).unwrap();
    let answer = w.sides[0].pc.create_answer().unwrap();
    w.sides[0].pc.set_local_description(now, Some(answer.clone())).unwrap();
    w.sides[1].pc.set_remote_description(now, answer).unwrap();
    assert!(w.run(Duration::from_secs(20), World::connected));
    let ours = w.sides[0].pc.transceivers();
    for t in &ours[..2] {
        assert_eq!(t.current_direction, Some(Direction::SendOnly), "{ours:?}");
    }
    for i in 0..5u32 {
        let now = w.net.now();
        w.sides[0].pc.write_frame(now, video, i * 6000, &vp8_frame(i as usize, 1500)).unwrap();
        w.sides[0].pc.write_frame(now, audio, i * 960, &[0x78, 1, 2]).unwrap();
        w.run(Duration::from_millis(66), |_| false);
    }
    w.run(Duration::from_millis(300), |_| false);
    let got: Vec<peerlink_rtc::Codec> = w.sides[1]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Frame { codec, .. } => Some(*codec),
            _ => None,
        })
        .collect();
    assert_eq!(got.iter().filter(|c| **c == peerlink_rtc::Codec::Vp8).count(), 5, "{got:?}");
    assert_eq!(got.iter().filter(|c| **c == peerlink_rtc::Codec::Opus).count(), 5, "{got:?}");
}

#[test]
fn forwarded_rtp_keeps_its_numbers_and_is_repaired_over_rtx() {
    // What an SFU does: packets made by another sender (its SSRC, payload type 120) go out
    // with our SSRC and the negotiated payload type, the sequence numbers and timestamps
    // the caller gives, and are retransmitted from our history when lost.
    use peerlink_proto::{Serial16, Serial32};
    use peerlink_rtp::RtpHeader;
    let (mut w, video) = video_sender(61);
    for s in &w.sides {
        w.net.set_link(
            s.host,
            LinkConfig { loss: 0.1, delay: Duration::from_millis(20), ..LinkConfig::default() },
        );
    }
    let mut sent = Vec::new();
    for i in 0..80u16 {
        let frame = vp8_frame(i as usize, 300 + usize::from(i) * 5);
        let mut payload = vec![0x10];
        payload.extend_from_slice(&frame);
        let header = RtpHeader {
            marker: true,
            payload_type: 120,
            sequence_number: Serial16(7 + i),
            timestamp: Serial32(90 * u32::from(i)),
            ssrc: 0xdead_beef,
            ..Default::default()
        };
        let mut packet = Vec::new();
        header.encode(&[], &payload, 0, &mut packet).unwrap();
        let now = w.net.now();
        let seq = 65_500u16.wrapping_add(i);
        w.sides[0]
            .pc
            .write_rtp(now, video, peerlink_rtc::Codec::Vp8, &packet, seq, 3000 * u32::from(i))
            .unwrap();
        sent.push(frame);
        w.run(Duration::from_millis(33), |_| false);
    }
    assert!(w.sides[0].pc.write_rtp(w.net.now(), video, peerlink_rtc::Codec::Vp8, &[1, 2, 3], 0, 0).is_err());
    w.run(Duration::from_secs(2), |_| false);
    let got: Vec<(Vec<u8>, u32)> = w.sides[1]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Frame { frame, .. } => Some((frame.data.clone(), frame.timestamp.0)),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), sent.len(), "every forwarded frame arrives, lost packets repaired");
    for (i, (data, ts)) in got.iter().enumerate() {
        assert_eq!(*data, sent[i], "frame {i}");
        assert_eq!(*ts, 3000 * i as u32, "frame {i} keeps the timestamp given");
    }
    let stats = w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    assert!(stats.retransmissions_received > 0, "{stats:?}");
}

#[test]
fn the_bandwidth_estimate_follows_a_bottleneck_from_the_peers_feedback() {
    // Side 0 writes video as an encoder would, at the rate the estimate allows (up to
    // 2 Mbit/s), into a 600 kbit/s link (1 s queue): the estimate from side 1's transport-wide
    // feedback settles near the link's rate; on an open link it grows well past it.
    let estimate = |rate_bps: u64| {
        let (mut w, video) = video_sender(71);
        for s in &w.sides {
            let link = LinkConfig {
                delay: Duration::from_millis(25),
                rate_bps,
                queue: Duration::from_secs(1),
                ..LinkConfig::default()
            };
            w.net.set_link(s.host, link);
        }
        for i in 0..600u32 {
            let now = w.net.now();
            let rate = w.sides[0].pc.bandwidth_estimate().unwrap_or(300_000).min(2_000_000);
            let size = (rate / 8 / 30) as usize;
            let _ = w.sides[0].pc.write_frame(now, video, i * 3000, &vp8_frame(i as usize, size.max(200)));
            w.run(Duration::from_millis(33), |_| false);
        }
        w.sides[0].pc.bandwidth_estimate().expect("an estimate once media was sent")
    };
    let limited = estimate(600_000);
    let open = estimate(0);
    eprintln!("estimate behind 600 kbit/s: {limited} bit/s; on an open link: {open} bit/s");
    assert!((300_000..=750_000).contains(&limited), "{limited}");
    assert!(open > 1_000_000, "{open}");
}

#[test]
fn padding_probes_raise_the_estimate_above_what_an_application_limited_sender_sends() {
    // Side 0 writes 150 kbit/s of video (an SFU forwarding a low layer) on a 3 Mbit/s
    // path. Without probes the estimate stays near what is sent (it learns nothing of
    // higher rates); with `bandwidth_probing` it sends padding on its RTX stream and the
    // estimate rises toward the path's rate. The receiver takes the padding silently: every
    // frame still arrives and none is counted a retransmission.
    let run = |probing: bool| {
        let config = RtcConfig { bandwidth_probing: probing, ..RtcConfig::default() };
        let (mut w, video) = video_sender_with(72, config);
        for s in &w.sides {
            let link = LinkConfig {
                delay: Duration::from_millis(20),
                rate_bps: 3_000_000,
                queue: Duration::from_millis(200),
                ..LinkConfig::default()
            };
            w.net.set_link(s.host, link);
        }
        let frames = 450u32;
        for i in 0..frames {
            let now = w.net.now();
            w.sides[0].pc.write_frame(now, video, i * 3000, &vp8_frame(i as usize, 625)).unwrap();
            w.run(Duration::from_millis(33), |_| false);
        }
        w.run(Duration::from_secs(1), |_| false);
        let got = w.sides[1].events.iter().filter(|e| matches!(e, RtcEvent::Frame { .. })).count();
        let stats = w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
        let estimate = w.sides[0].pc.bandwidth_estimate().unwrap();
        eprintln!("probing {probing}: estimate {estimate} bit/s, {got} of {frames} frames, {stats:?}");
        assert_eq!(got, frames as usize, "every frame arrives");
        assert_eq!(stats.retransmissions_received, 0, "padding is not a retransmission");
        estimate
    };
    let quiet = run(false);
    let probed = run(true);
    assert!(quiet < 500_000, "without probes: {quiet}");
    assert!(probed > 1_500_000 && probed <= 3_000_000, "with probes: {probed}");
}

#[test]
fn forwarded_audio_carries_the_level_and_the_payload_patch_it_is_given() {
    use peerlink_proto::{Serial16, Serial32};
    use peerlink_rtc::{AudioLevel, MediaKind};
    use peerlink_rtp::RtpHeader;
    let config = RtcConfig { accept_raw: true, ..RtcConfig::default() };
    let (mut w, audio) = sender_with(62, config, MediaKind::Audio);
    // The receiver's id for RFC 6464's element, from its own answer.
    let id = w.sides[1].pc.transceivers()[0]
        .extensions
        .iter()
        .find(|(_, uri)| uri == peerlink_rtp::ext::uri::AUDIO_LEVEL)
        .map(|(id, _)| *id)
        .expect("the audio level extension negotiated");
    let levels =
        [Some(AudioLevel { voice: true, level: 30 }), None, Some(AudioLevel { voice: false, level: 127 })];
    for (i, level) in levels.iter().enumerate() {
        let header = RtpHeader {
            marker: true,
            payload_type: 111,
            sequence_number: Serial16(i as u16),
            timestamp: Serial32(960 * i as u32),
            ssrc: 0xdead_beef,
            ..Default::default()
        };
        let mut packet = Vec::new();
        header.encode(&[], &[0xfc, 1, 2, 3], 0, &mut packet).unwrap();
        let sent = packet.clone();
        // The second packet's payload gets two bytes changed (as a forwarder's VP8 rewrite).
        let mut patch = peerlink_rtc::PayloadPatch::default();
        if i == 1 {
            assert!(patch.set(1, 0x77) && patch.set(3, 0x99));
        }
        let now = w.net.now();
        w.sides[0]
            .pc
            .write_rtp_layer(
                now,
                audio,
                0,
                peerlink_rtc::Codec::Opus,
                &packet,
                patch,
                i as u16,
                960 * i as u32,
                *level,
            )
            .unwrap();
        assert_eq!(packet, sent, "the packet given is left as it was");
        w.run(Duration::from_millis(20), |_| false);
    }
    w.run(Duration::from_millis(200), |_| false);
    let got: Vec<(Option<AudioLevel>, Vec<u8>)> = w.sides[1]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Rtp { packet, .. } => {
                let p = peerlink_rtp::RtpPacket::parse(packet).unwrap();
                Some((p.extensions().get(id).map(|d| AudioLevel::decode(d).unwrap()), p.payload().to_vec()))
            }
            _ => None,
        })
        .collect();
    let got_levels: Vec<Option<AudioLevel>> = got.iter().map(|(l, _)| *l).collect();
    assert_eq!(got_levels, levels, "the levels as given, none where none was");
    let payloads: Vec<&[u8]> = got.iter().map(|(_, p)| &p[..]).collect();
    assert_eq!(payloads, [&[0xfc, 1, 2, 3][..], &[0xfc, 0x77, 2, 0x99], &[0xfc, 1, 2, 3]], "patched once");
}

// ---- Simulcast we send (RFC 8853, RFC 8851) ----

/// A sender of two simulcast layers ("lo", "hi") and a raw receiver; `edit` may change the
/// offer as side 1 sees it and the answer as side 0 sees it (a receiver that takes fewer
/// layers).
fn simulcast_sender(
    n: u64,
    edit_offer: impl Fn(&str) -> String,
    edit_answer: impl Fn(&str) -> String,
) -> (World, peerlink_rtc::TransceiverId) {
    use peerlink_rtc::{Direction, MediaKind, TrackConfig};
    let mut w = World::with_config(n, false, RtcConfig { accept_raw: true, ..RtcConfig::default() });
    let config =
        TrackConfig { send_rids: vec!["lo".into(), "hi".into()], ..TrackConfig::new(MediaKind::Video) };
    let video = w.sides[0].pc.add_transceiver(MediaKind::Video, Direction::SendOnly, config).unwrap();
    let now = w.net.now();
    let offer = w.sides[0].pc.create_offer().unwrap();
    w.sides[0].pc.set_local_description(now, Some(offer.clone())).unwrap();
    let offer = Description { kind: SdpType::Offer, sdp: edit_offer(&offer.sdp) };
    w.sides[1].pc.set_remote_description(now, offer).unwrap();
    let answer = w.sides[1].pc.create_answer().unwrap();
    w.sides[1].pc.set_local_description(now, Some(answer.clone())).unwrap();
    let answer = Description { kind: SdpType::Answer, sdp: edit_answer(&answer.sdp) };
    w.sides[0].pc.set_remote_description(now, answer).unwrap();
    assert!(w.run(Duration::from_secs(20), World::connected));
    (w, video)
}

/// Side 1's raw packets: (layer, sequence number, payload).
fn raw_received(w: &World) -> Vec<(usize, u16, Vec<u8>)> {
    w.sides[1]
        .events
        .iter()
        .filter_map(|e| match e {
            RtcEvent::Rtp { layer, packet, .. } => {
                let p = peerlink_rtp::RtpPacket::parse(packet).unwrap();
                Some((*layer, p.sequence_number().0, p.payload().to_vec()))
            }
            _ => None,
        })
        .collect()
}

/// One-packet frames: layer `k`'s frame `i` is recognisable by its bytes.
fn layer_frame(k: usize, i: usize) -> Vec<u8> {
    let mut f = vp8_frame(i, 200 + 300 * k);
    f[1] = k as u8;
    f
}

#[test]
fn a_simulcast_offer_declares_its_layers_and_the_rid_extensions_without_ssrcs() {
    use peerlink_rtc::{Direction, MediaKind, TrackConfig};
    let mut pc = PeerConnection::new(Instant::now(), RtcConfig::default(), seed(70)).unwrap();
    let config =
        TrackConfig { send_rids: vec!["q".into(), "f".into()], ..TrackConfig::new(MediaKind::Video) };
    pc.add_transceiver(MediaKind::Video, Direction::SendOnly, config).unwrap();
    let sdp = pc.create_offer().unwrap().sdp;
    let lines: Vec<&str> = sdp.lines().collect();
    for want in [
        "a=rid:q send",
        "a=rid:f send",
        "a=simulcast:send q;f",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ] {
        assert!(lines.contains(&want), "{want} missing from\n{sdp}");
    }
    assert!(!lines.iter().any(|l| l.starts_with("a=ssrc")), "no SSRC is signalled:\n{sdp}");
    // Without simulcast the SSRCs are signalled as before, and no rid.
    let mut pc = PeerConnection::new(Instant::now(), RtcConfig::default(), seed(71)).unwrap();
    pc.add_transceiver(MediaKind::Video, Direction::SendOnly, TrackConfig::new(MediaKind::Video)).unwrap();
    let sdp = pc.create_offer().unwrap().sdp;
    assert!(sdp.contains("a=ssrc-group:FID ") && !sdp.contains("a=rid:") && !sdp.contains("a=simulcast"));
}

#[test]
fn bad_simulcast_send_rid_lists_are_refused() {
    use peerlink_rtc::{Direction, MediaKind, RtcError, TrackConfig};
    let mut pc = PeerConnection::new(Instant::now(), RtcConfig::default(), seed(72)).unwrap();
    let bad: [(&[&str], MediaKind); 6] = [
        (&["a", "a"], MediaKind::Video),
        (&["", "b"], MediaKind::Video),
        (&["a-b"], MediaKind::Video),
        (&["abcdefghijklmnopq"], MediaKind::Video),
        (&["a", "b", "c", "d", "e"], MediaKind::Video),
        (&["a", "b"], MediaKind::Audio),
    ];
    for (rids, kind) in bad {
        let config =
            TrackConfig { send_rids: rids.iter().map(|r| r.to_string()).collect(), ..TrackConfig::new(kind) };
        let r = pc.add_transceiver(kind, Direction::SendOnly, config);
        assert!(matches!(r, Err(RtcError::BadSendRids(_))), "{rids:?} {kind:?}: {r:?}");
    }
    assert!(pc.transceivers().is_empty(), "nothing was added");
    let good = ["a", "b", "c", "abcdefghijklmnop"];
    let config = TrackConfig {
        send_rids: good.iter().map(|r| r.to_string()).collect(),
        ..TrackConfig::new(MediaKind::Video)
    };
    pc.add_transceiver(MediaKind::Video, Direction::SendOnly, config).unwrap();
}

#[test]
fn each_simulcast_layer_arrives_as_its_layer_and_losses_are_repaired_per_layer() {
    let (mut w, video) = simulcast_sender(73, str::to_owned, str::to_owned);
    assert_eq!(w.sides[0].pc.transceiver(video).unwrap().sent_layers, [0, 1]);
    assert_eq!(w.sides[1].pc.transceivers()[0].rids, ["lo", "hi"]);
    const FRAMES: usize = 120;
    for i in 0..FRAMES {
        if i == 5 {
            // Losses once each layer's first packets are in (what comes before the first
            // cannot be asked for).
            for s in &w.sides {
                let link =
                    LinkConfig { loss: 0.05, delay: Duration::from_millis(20), ..LinkConfig::default() };
                w.net.set_link(s.host, link);
            }
        }
        let now = w.net.now();
        for k in 0..2 {
            w.sides[0].pc.write_frame_layer(now, video, k, (i as u32) * 3000, &layer_frame(k, i)).unwrap();
        }
        w.run(Duration::from_millis(33), |_| false);
    }
    w.run(Duration::from_secs(2), |_| false);
    let got = raw_received(&w);
    for k in 0..2 {
        let mut frames: Vec<(u16, Vec<u8>)> =
            got.iter().filter(|(l, ..)| *l == k).map(|(_, s, p)| (*s, p[1..].to_vec())).collect();
        // Every packet (one per frame) of the layer, once: the raw receiver passes no copy on.
        assert_eq!(frames.len(), FRAMES, "layer {k}");
        frames.sort_by_key(|(s, _)| *s);
        frames.dedup_by_key(|(s, _)| *s);
        assert_eq!(frames.len(), FRAMES, "layer {k}: a sequence number twice");
        // The VP8 payload descriptor leads; the frame written to the layer follows.
        let datas: Vec<&Vec<u8>> = frames.iter().map(|(_, d)| d).collect();
        for i in 0..FRAMES {
            let want = layer_frame(k, i);
            assert!(datas.iter().any(|d| d.ends_with(&want)), "layer {k} frame {i}");
        }
    }
    let receiver = w.sides[1].pc.media_stats(peerlink_rtc::TransceiverId(0)).unwrap();
    let sender = w.sides[0].pc.media_stats(video).unwrap();
    // Repairs came over RTX, placed by their repaired rid (the receiver knows no SSRC).
    assert!(receiver.nacks_sent > 0 && sender.retransmissions_sent > 0, "{receiver:?} {sender:?}");
    assert!(receiver.retransmissions_received > 0, "{receiver:?}");
}

#[test]
fn a_keyframe_request_for_one_layer_names_that_layer() {
    let (mut w, video) = simulcast_sender(74, str::to_owned, str::to_owned);
    for i in 0..5 {
        let now = w.net.now();
        for k in 0..2 {
            w.sides[0].pc.write_frame_layer(now, video, k, (i as u32) * 3000, &layer_frame(k, i)).unwrap();
        }
        w.run(Duration::from_millis(33), |_| false);
    }
    let requests = |w: &World| -> Vec<usize> {
        w.sides[0]
            .events
            .iter()
            .filter_map(|e| match e {
                RtcEvent::KeyframeRequest { id, layer } if *id == video => Some(*layer),
                _ => None,
            })
            .collect()
    };
    assert!(requests(&w).is_empty());
    let now = w.net.now();
    w.sides[1].pc.request_keyframe_layer(now, peerlink_rtc::TransceiverId(0), 1);
    w.run(Duration::from_millis(200), |_| false);
    assert_eq!(requests(&w), [1]);
    let now = w.net.now();
    w.sides[1].pc.request_keyframe_layer(now, peerlink_rtc::TransceiverId(0), 0);
    w.run(Duration::from_millis(200), |_| false);
    assert_eq!(requests(&w), [1, 0]);
}

fn without_simulcast(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=rid:") && !l.starts_with("a=simulcast:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn a_peer_without_simulcast_gets_the_first_layer_only() {
    let (mut w, video) = simulcast_sender(75, without_simulcast, without_simulcast);
    assert_eq!(w.sides[0].pc.transceiver(video).unwrap().sent_layers, [0]);
    only_one_layer_flows(&mut w, video, 0);
}

/// Writes 10 frames to each of the two layers: the one `sent` goes out (side 1 gets each frame
/// as that layer), the other is refused with `LayerNotSent`.
fn only_one_layer_flows(w: &mut World, video: peerlink_rtc::TransceiverId, sent: usize) {
    let refused = 1 - sent;
    for i in 0..10 {
        let now = w.net.now();
        let r =
            w.sides[0].pc.write_frame_layer(now, video, refused, (i as u32) * 3000, &layer_frame(refused, i));
        assert_eq!(r, Err(peerlink_rtc::RtcError::LayerNotSent(refused)));
        w.sides[0].pc.write_frame_layer(now, video, sent, (i as u32) * 3000, &layer_frame(sent, i)).unwrap();
        w.run(Duration::from_millis(33), |_| false);
    }
    w.run(Duration::from_millis(500), |_| false);
    let got = raw_received(w);
    assert_eq!(got.len(), 10);
    assert!(got.iter().enumerate().all(|(i, (l, _, p))| *l == sent && p.ends_with(&layer_frame(sent, i))));
}

#[test]
fn a_peer_that_takes_some_layers_gets_those_only() {
    // The answer takes "hi" alone.
    let take_hi = |sdp: &str| {
        let sdp = without_simulcast(sdp);
        let video = sdp.find("m=video").unwrap();
        let mid = &sdp[video..].lines().find(|l| l.starts_with("a=mid:")).unwrap().to_owned();
        sdp.split("\r\n")
            .flat_map(|l| match l == mid {
                true => vec![l, "a=rid:hi recv", "a=simulcast:recv hi"],
                false => vec![l],
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let (mut w, video) = simulcast_sender(76, str::to_owned, take_hi);
    assert_eq!(w.sides[0].pc.transceiver(video).unwrap().sent_layers, [1]);
    // Side 1 declared both layers (its own state), so "hi" is its layer 1.
    only_one_layer_flows(&mut w, video, 1);
}

#[test]
fn layers_need_the_repaired_rid_extension_too() {
    // An answer that keeps simulcast and the rid extension but drops the repaired rid's:
    // repairs could not name their layer (RFC 8851 §4), so one stream is sent, and our
    // re-offer signals it with its SSRCs again.
    let drop_repaired = |sdp: &str| {
        sdp.split("\r\n").filter(|l| !l.contains("repaired-rtp-stream-id")).collect::<Vec<_>>().join("\r\n")
    };
    let (mut w, video) = simulcast_sender(78, str::to_owned, drop_repaired);
    assert_eq!(w.sides[0].pc.transceiver(video).unwrap().sent_layers, [0]);
    let sdp = w.sides[0].pc.create_offer().unwrap().sdp;
    assert!(
        sdp.contains("a=ssrc-group:FID ") && !sdp.contains("a=rid:") && !sdp.contains("a=simulcast"),
        "{sdp}"
    );
}

#[test]
fn a_re_offer_from_the_receiver_keeps_the_layers_it_takes() {
    // An SFU re-offers to a publisher when others join: its offer says which layers it
    // receives (`a=simulcast:recv`), and our answer keeps sending those, by rid.
    let (mut w, video) = simulcast_sender(77, str::to_owned, str::to_owned);
    w.negotiate(1, 0);
    assert_eq!(w.sides[0].pc.transceiver(video).unwrap().sent_layers, [0, 1]);
    assert_eq!(w.sides[1].pc.transceivers()[0].rids, ["lo", "hi"]);
    for i in 0..10 {
        let now = w.net.now();
        for k in 0..2 {
            w.sides[0].pc.write_frame_layer(now, video, k, (i as u32) * 3000, &layer_frame(k, i)).unwrap();
        }
        w.run(Duration::from_millis(33), |_| false);
    }
    w.run(Duration::from_millis(500), |_| false);
    let got = raw_received(&w);
    for k in 0..2 {
        let of: Vec<&Vec<u8>> = got.iter().filter(|(l, ..)| *l == k).map(|(.., p)| p).collect();
        assert_eq!(of.len(), 10, "layer {k}");
        assert!(of.iter().enumerate().all(|(i, p)| p.ends_with(&layer_frame(k, i))), "layer {k}");
    }
}
