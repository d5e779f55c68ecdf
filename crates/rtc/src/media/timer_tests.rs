//! The receive-side timers of a connection with many transceivers, against a scan of
//! every transceiver (what `media_poll_timeout` did before it kept the list of those with
//! receive timers).

use super::*;

const MS: Duration = Duration::from_millis(1);
const SSRC_BASE: u32 = 0x5000_0000;

/// A connection past DTLS (SRTP keys set) with `send_only` sending video sections and a
/// receiving one after every `every`-th of them; the receiving ones' ids.
fn connection(now: Instant, send_only: usize, every: usize) -> (PeerConnection, Vec<TransceiverId>) {
    let mut pc = PeerConnection::new(now, RtcConfig::default(), [7; 32]).unwrap();
    pc.media.srtp = Some(fixed_srtp().unwrap());
    let mut receiving = Vec::new();
    for k in 0..send_only {
        add(&mut pc, Direction::SendOnly, k);
        if (k + 1) % every == 0 {
            let id = add(&mut pc, Direction::RecvOnly, k);
            let ssrc = SSRC_BASE + receiving.len() as u32;
            pc.media.transceivers[id.0].recv[0].ssrc = Some(ssrc);
            pc.media.by_ssrc.insert(ssrc, (id.0, 0, false));
            receiving.push(id);
        }
    }
    (pc, receiving)
}

fn add(pc: &mut PeerConnection, direction: Direction, k: usize) -> TransceiverId {
    let id = pc.new_transceiver(MediaKind::Video, direction, TrackConfig::new(MediaKind::Video));
    let t = &mut pc.media.transceivers[id.0];
    t.mid = Some(format!("{k}-{}", id.0));
    t.current = Some(direction);
    t.codecs = codecs::supported_codecs("video");
    assert!(t.codecs[0].has_feedback("nack"));
    id
}

/// Receives packet `seq` of the `n`-th receiving stream (VP8, a whole key frame each).
fn receive(pc: &mut PeerConnection, now: Instant, n: usize, seq: u16) {
    let header = RtpHeader {
        marker: true,
        payload_type: codecs::supported_codecs("video")[0].payload_type,
        sequence_number: Serial16(seq),
        timestamp: Serial32(u32::from(seq) * 3000),
        ssrc: SSRC_BASE + n as u32,
        ..Default::default()
    };
    // VP8 descriptor (S=1, partition 0), then a key frame's first byte (P=0).
    let mut packet = Vec::new();
    header.encode(&[], &[0x10, 0x00, 0x9d, 0x01, 0x2a], 0, &mut packet).unwrap();
    pc.handle_plain(now, false, &packet);
}

/// What `media_poll_timeout` was: every transceiver and layer scanned.
fn scanned(pc: &PeerConnection) -> Option<Instant> {
    pc.media.next_timer(|| pc.media.transceivers.iter())
}

fn rtcp_sent(pc: &mut PeerConnection) -> Vec<RtcpPacket<'static>> {
    let mut out = Vec::new();
    for (rtcp, packet) in std::mem::take(&mut pc.media.outgoing) {
        assert!(rtcp);
        let packet: &'static [u8] = Box::leak(packet.into_boxed_slice());
        out.extend(RtcpPacket::parse_all(packet).map(Result::unwrap));
    }
    out
}

#[test]
fn a_nack_among_many_send_only_sections_goes_out_when_due() {
    let t0 = Instant::now();
    let (mut pc, receiving) = connection(t0, 100, 100);
    let id = receiving[0];
    assert_eq!(pc.media_poll_timeout(), None);
    for seq in 0..5 {
        receive(&mut pc, t0, 0, seq);
    }
    // Nothing missing yet: no receive timer.
    assert_eq!(pc.media_poll_timeout(), None);
    pc.media_timeout(t0);
    assert!(rtcp_sent(&mut pc).is_empty());
    // 5 lost: its NACK is due after the reorder grace (10 ms), a timer armed after the
    // last poll_timeout.
    receive(&mut pc, t0 + MS, 0, 6);
    assert_eq!(pc.media_poll_timeout(), Some(t0 + 11 * MS));
    assert_eq!(pc.media_poll_timeout(), scanned(&pc));
    pc.media_timeout(t0 + 10 * MS);
    assert!(rtcp_sent(&mut pc).is_empty());
    pc.media_timeout(t0 + 11 * MS);
    let sent = rtcp_sent(&mut pc);
    assert!(
        matches!(&sent[..], [RtcpPacket::Nack(n)] if n.media_ssrc == SSRC_BASE && n.lost().eq([Serial16(5)])),
        "{sent:?}"
    );
    assert_eq!(pc.media_stats(id).unwrap().nacks_sent, 1);
    // Asked again a round trip later (100 ms until one is measured).
    assert_eq!(pc.media_poll_timeout(), Some(t0 + 111 * MS));
    assert_eq!(pc.media_poll_timeout(), scanned(&pc));
    // The hole filled: no timer left.
    receive(&mut pc, t0 + 20 * MS, 0, 5);
    pc.media_timeout(t0 + 20 * MS);
    assert_eq!(pc.media_poll_timeout(), None);
    assert!(pc.media.recv_timers.is_empty());
}

#[test]
fn a_held_keyframe_request_among_many_send_only_sections_goes_out_when_due() {
    let t0 = Instant::now();
    let (mut pc, receiving) = connection(t0, 100, 50);
    let id = receiving[1];
    receive(&mut pc, t0, 1, 0);
    pc.media_timeout(t0);
    assert_eq!(pc.media_poll_timeout(), None);
    pc.request_keyframe(t0 + MS, id);
    assert!(matches!(&rtcp_sent(&mut pc)[..], [RtcpPacket::Pli(p)] if p.media_ssrc == SSRC_BASE + 1));
    // Within 300 ms of the last: held, and due when the interval ends.
    pc.request_keyframe(t0 + 2 * MS, id);
    assert!(rtcp_sent(&mut pc).is_empty());
    assert_eq!(pc.media_poll_timeout(), Some(t0 + 301 * MS));
    assert_eq!(pc.media_poll_timeout(), scanned(&pc));
    pc.media_timeout(t0 + 300 * MS);
    assert!(rtcp_sent(&mut pc).is_empty());
    pc.media_timeout(t0 + 301 * MS);
    assert!(matches!(&rtcp_sent(&mut pc)[..], [RtcpPacket::Pli(p)] if p.media_ssrc == SSRC_BASE + 1));
    assert_eq!(pc.media_stats(id).unwrap().plis_sent, 2);
    assert_eq!(pc.media_poll_timeout(), None);
}

/// Losses, key frame requests and timeouts at random on a few receiving sections among many
/// sending ones: the next timeout is always what a scan of every section finds, and what
/// goes out is what the generators said was due.
#[test]
fn the_next_timeout_is_what_a_scan_of_every_section_finds() {
    let t0 = Instant::now();
    let (mut pc, receiving) = connection(t0, 60, 7);
    let mut rng = peerlink_proto::SeededRng::new(&[3; 32]);
    let mut seqs = vec![0u16; receiving.len()];
    let mut now = t0;
    let mut fired = 0;
    for _ in 0..3000 {
        let b = rng.next_block();
        now += Duration::from_micros(u64::from(b[0]) * 40);
        let n = usize::from(b[1]) % receiving.len();
        match b[2] % 8 {
            // Mostly in order, sometimes a hole (refilled later by the retransmission).
            0..=3 => {
                seqs[n] = seqs[n].wrapping_add(1 + u16::from(b[3] % 8 == 0));
                receive(&mut pc, now, n, seqs[n]);
            }
            4 => receive(&mut pc, now, n, seqs[n].wrapping_sub(u16::from(b[3] % 4))),
            5 => pc.request_keyframe(now, receiving[n]),
            _ => {
                if let Some(at) = pc.media_poll_timeout() {
                    if at <= now {
                        fired += 1;
                    }
                }
                pc.media_timeout(now);
            }
        }
        assert_eq!(pc.media_poll_timeout(), scanned(&pc));
        pc.media.outgoing.clear();
        // Every transceiver off the list has no receive timer.
        for (i, t) in pc.media.transceivers.iter().enumerate() {
            if !pc.media.recv_timers.contains(&i) {
                assert!(t.recv.iter().all(RecvStream::is_idle), "{i}");
            }
        }
    }
    assert!(fired > 100, "{fired}");
}

/// Nanoseconds per `poll_timeout`, per `media_timeout` with nothing due, and per forwarded
/// packet (write, send, next timeout) on a subscriber with `n` sending sections and one
/// receiving one: `cargo test --release -p peerlink-rtc timer_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn timer_cost() {
    let t0 = Instant::now();
    for n in [1, 10, 100, 300] {
        let (mut pc, _) = connection(t0, n, n);
        for seq in 0..5 {
            receive(&mut pc, t0, 0, seq);
        }
        let rounds = 200_000;
        let start = Instant::now();
        let mut x = 0;
        for _ in 0..rounds {
            x += std::hint::black_box(&pc).poll_timeout().is_some() as u32;
        }
        let poll = start.elapsed().as_nanos() as f64 / f64::from(rounds);
        let now = t0 + MS;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(&mut pc).media_timeout(now);
        }
        let timeout = start.elapsed().as_nanos() as f64 / f64::from(rounds);
        let payload = {
            let mut p = Vec::new();
            RtpHeader { marker: true, payload_type: 96, ..Default::default() }
                .encode(&[], &[0x10, 0, 0, 0, 0, 0, 0, 0], 0, &mut p)
                .unwrap();
            p
        };
        let mut buf = Vec::new();
        let rounds = 50_000u32;
        let start = Instant::now();
        for k in 0..rounds {
            let id = TransceiverId((k as usize * 7) % n);
            let id = if pc.media.transceivers[id.0].current == Some(Direction::SendOnly) {
                id
            } else {
                TransceiverId(0)
            };
            let now = t0 + Duration::from_micros(u64::from(k) * 20);
            pc.write_rtp(now, id, Codec::Vp8, &payload, k as u16, k * 90).unwrap();
            buf.clear();
            while pc.media_transmit(now, &mut buf) {
                buf.clear();
            }
            x += pc.poll_timeout().is_some() as u32;
        }
        let forward = start.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!(
            "{n:4} send-only + 1 receiving: poll_timeout {poll:7.1} ns, media_timeout (nothing due) {timeout:7.1} ns, forwarded packet {forward:7.1} ns ({x})"
        );
    }
}

/// What forwarding costs a connection in an SFU's pattern: 100 subscribers' connections of
/// 12 video sections each (transport-wide numbers on, so the bandwidth estimator logs every
/// packet), one 1.1 kB packet written and sent at a time round-robin, 50,000 a second in
/// all, so that each connection's histories, pacer and logs are cold when it sends. Prints
/// ns per forwarded packet:
/// `cargo test --release -p peerlink-rtc --lib sfu_send_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn sfu_send_cost() {
    const CONNECTIONS: usize = 100;
    const SECTIONS: usize = 12;
    const STEP: Duration = Duration::from_micros(20);
    let t0 = Instant::now();
    let mut pcs: Vec<PeerConnection> = (0..CONNECTIONS)
        .map(|_| {
            let (mut pc, _) = connection(t0, SECTIONS, SECTIONS + 1);
            for t in &mut pc.media.transceivers {
                t.ext_map.transport_cc = Some(3);
            }
            pc.media.twcc_ext = Some(3);
            pc
        })
        .collect();
    let mut payload = Vec::new();
    RtpHeader { marker: false, payload_type: 96, ..Default::default() }
        .encode(&[], &[0x10; 1100], 0, &mut payload)
        .unwrap();
    let mut buf = Vec::new();
    let mut k = 0u32;
    let mut run = |pcs: &mut Vec<PeerConnection>, packets: u32| {
        let start = Instant::now();
        for _ in 0..packets {
            let c = k as usize % CONNECTIONS;
            let section = (k as usize / CONNECTIONS) % SECTIONS;
            let seq = (k as usize / (CONNECTIONS * SECTIONS)) as u16;
            let now = t0 + STEP * k;
            let pc = &mut pcs[c];
            pc.write_rtp(now, TransceiverId(section), Codec::Vp8, &payload, seq, u32::from(seq) * 3000)
                .unwrap();
            buf.clear();
            while pc.media_transmit(now, &mut buf) {
                buf.clear();
            }
            k += 1;
        }
        start.elapsed().as_nanos() as f64 / f64::from(packets)
    };
    // 6 s: histories hold their 2 s, the estimators' logs their 5 s.
    run(&mut pcs, 300_000);
    let mut ns: Vec<f64> = (0..7).map(|_| run(&mut pcs, 50_000)).collect();
    ns.sort_by(f64::total_cmp);
    let sent: u64 = pcs.iter().flat_map(|pc| &pc.media.transceivers).map(|t| t.stats.packets_sent).sum();
    println!(
        "sfu send: median {:.1} ns (min {:.1}, max {:.1}) per forwarded packet; {sent} sent",
        ns[3], ns[0], ns[6]
    );
}
