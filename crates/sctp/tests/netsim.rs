//! Two associations in `peerlink-netsim` (virtual clock, seeded): handshakes, bulk transfer
//! with loss, delay and reordering, unreliable channels, stream reset, abort.

use peerlink_netsim::{pump_wired, seed, HostId, LinkConfig, Network, Route, World};
use peerlink_sctp::{
    chunk, packet, Association, CongestionControl, Message, Reliability, SctpCloseReason, SctpConfig,
    SctpEvent, SctpState,
};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Pair {
    net: Network,
    hosts: [HostId; 2],
    addrs: [SocketAddr; 2],
    sides: [Association; 2],
    received: [Vec<Message>; 2],
    events: [Vec<SctpEvent>; 2],
    /// Whether the application of each side reads its messages.
    reading: [bool; 2],
    buf: Vec<u8>,
}

impl Pair {
    fn new(n: u64, link: LinkConfig) -> Pair {
        Pair::with_configs(n, link, [SctpConfig::default(), SctpConfig::default()])
    }

    fn with_configs(n: u64, link: LinkConfig, configs: [SctpConfig; 2]) -> Pair {
        let start = Instant::now();
        let mut net = Network::new(n, start);
        let addrs: [SocketAddr; 2] =
            ["198.51.100.1:5000".parse().unwrap(), "198.51.100.2:5000".parse().unwrap()];
        // Loss on one side's link only, so `loss` is the loss of each direction of the path;
        // delay and jitter on both.
        let clean = LinkConfig { loss: 0.0, ..link.clone() };
        let hosts = [net.add_host(addrs[0].ip(), None, link), net.add_host(addrs[1].ip(), None, clean)];
        let [c0, c1] = configs;
        let sides = [Association::new(start, c0, seed(n * 2)), Association::new(start, c1, seed(n * 2 + 1))];
        Pair {
            net,
            hosts,
            addrs,
            sides,
            received: [Vec::new(), Vec::new()],
            events: [Vec::new(), Vec::new()],
            reading: [true, true],
            buf: Vec::new(),
        }
    }

    fn connect_both(&mut self) {
        let now = self.net.now();
        self.sides[0].connect(now);
        self.sides[1].connect(now);
        self.run(Duration::from_secs(30), |p| p.sides.iter().all(Association::is_established));
        assert!(self.sides.iter().all(Association::is_established), "{:?}", self.events);
    }

    /// Sends what both sides have and collects their messages and events.
    fn flush(&mut self) {
        World::step(self);
    }

    /// Runs until `done` or `limit` of virtual time; `tick` runs before every step (to
    /// feed data).
    fn run_with(&mut self, limit: Duration, tick: impl FnMut(&mut Pair), done: impl Fn(&Pair) -> bool) {
        peerlink_netsim::run_with(self, limit, tick, done);
    }

    fn run(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) {
        self.run_with(limit, |_| {}, done);
    }
}

impl World for Pair {
    fn net(&self) -> &Network {
        &self.net
    }

    fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    fn step(&mut self) {
        for i in 0..2 {
            let route = Route { local: self.addrs[i], remote: self.addrs[1 - i] };
            let events = &mut self.events[i];
            pump_wired(&mut self.net, self.hosts[i], route, &mut self.sides[i], &mut self.buf, |e| {
                events.push(e)
            });
            if self.reading[i] {
                while let Some(m) = self.sides[i].poll_message() {
                    self.received[i].push(m);
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sides.iter().filter_map(Association::poll_timeout).min()
    }
}

/// The next packet of `a`, in a buffer of its own.
fn next_packet(a: &mut Association, now: Instant) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    a.poll_transmit(now, &mut buf).map(|_| buf)
}

/// Deterministic message contents: message `i` of `len` bytes.
fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i.wrapping_mul(31).wrapping_add(k.wrapping_mul(7)) % 251) as u8).collect()
}

fn lossy(loss: f64) -> LinkConfig {
    // 25 ms each way on each of the two access links: 100 ms RTT; 1% of packets are held
    // back by another 25 ms (reordered).
    LinkConfig { delay: Duration::from_millis(25), loss, reorder: 0.01, ..LinkConfig::default() }
}

#[test]
fn simultaneous_open_and_one_sided_open_both_establish() {
    let mut p = Pair::new(1, LinkConfig::default());
    p.connect_both();
    assert_eq!(p.events[0], [SctpEvent::Connected]);
    assert_eq!(p.events[1], [SctpEvent::Connected]);
    let mut q = Pair::new(2, LinkConfig::default());
    let now = q.net.now();
    q.sides[0].connect(now);
    q.run(Duration::from_secs(5), |p| p.sides.iter().all(Association::is_established));
    assert!(q.sides.iter().all(Association::is_established));
}

#[test]
fn the_handshake_survives_loss() {
    for n in 1..=10 {
        let mut p = Pair::new(100 + n, lossy(0.2));
        p.connect_both();
    }
}

/// Sends `total` bytes as messages of the given sizes (cycled) on stream 1, keeping at most
/// 1 MB buffered, and checks every message arrives intact and in order.
fn bulk(n: u64, link: LinkConfig, total: usize, sizes: &[usize]) -> Duration {
    bulk_with(n, link, total, sizes, SctpConfig::default())
}

/// [`bulk`] with both sides on `config`.
fn bulk_with(n: u64, link: LinkConfig, total: usize, sizes: &[usize], config: SctpConfig) -> Duration {
    let mut p = Pair::with_configs(n, link, [config.clone(), config]);
    p.connect_both();
    let start = p.net.now();
    let (sent_bytes, count) = (Cell::new(0usize), Cell::new(0usize));
    let sizes = sizes.to_vec();
    p.run_with(
        Duration::from_secs(600),
        |p| {
            let now = p.net.now();
            while sent_bytes.get() < total && p.sides[0].buffered_amount(1) < 1 << 20 {
                let index = count.get();
                let len = sizes[index % sizes.len()].min(total - sent_bytes.get());
                p.sides[0].send(now, 1, 53, message(index, len), true, Reliability::Reliable).unwrap();
                sent_bytes.set(sent_bytes.get() + len);
                count.set(index + 1);
            }
        },
        |p| p.received[1].len() == count.get() && sent_bytes.get() == total,
    );
    let expected_count = count.get();
    assert_eq!(p.received[1].len(), expected_count, "seed {n}: {:?}", p.sides[0].stats());
    for (i, m) in p.received[1].iter().enumerate() {
        assert_eq!(m.stream, 1);
        assert!(m.data == message(i, m.data.len()), "message {i} differs");
    }
    assert_eq!(p.received[1].iter().map(|m| m.data.len()).sum::<usize>(), total);
    p.net.now() - start
}

#[test]
fn ten_megabytes_arrive_intact_with_and_without_loss() {
    let sizes = [1, 1000, 1200, 16 * 1024, 64 * 1024, 256 * 1024, 3];
    for (loss, n) in [(0.0, 10), (0.02, 11), (0.10, 12)] {
        let took = bulk(n, lossy(loss), 10 << 20, &sizes);
        println!("10 MB with {:.0}% loss, 100 ms RTT: {took:?} of virtual time", loss * 100.0);
    }
}

#[test]
fn ten_megabytes_arrive_intact_with_the_bbr_controller() {
    // Loss, reordering (1% held back 25 ms) and a rate limit with a short queue: RACK's
    // time-based loss detection, pacing and the model must still deliver every byte in order.
    let sizes = [1, 1000, 1200, 16 * 1024, 64 * 1024, 256 * 1024, 3];
    let config = SctpConfig { congestion_control: CongestionControl::Bbr, ..SctpConfig::default() };
    for (loss, n) in [(0.0, 13), (0.02, 14), (0.10, 15)] {
        let link = LinkConfig { rate_bps: 20_000_000, queue: Duration::from_millis(30), ..lossy(loss) };
        let took = bulk_with(n, link, 10 << 20, &sizes, config.clone());
        println!(
            "BBR: 10 MB with {:.0}% loss, 100 ms RTT, 20 Mbit/s: {took:?} of virtual time",
            loss * 100.0
        );
    }
}

#[test]
fn unreliable_unordered_messages_never_stall_the_stream() {
    for cc in [CongestionControl::Rfc9260, CongestionControl::Bbr] {
        unreliable_unordered(cc);
    }
}

fn unreliable_unordered(cc: CongestionControl) {
    let config = SctpConfig { congestion_control: cc, ..SctpConfig::default() };
    let mut p = Pair::with_configs(20, lossy(0.10), [config.clone(), config]);
    p.connect_both();
    let now = p.net.now();
    for i in 0..500 {
        p.sides[0].send(now, 3, 53, message(i, 800), false, Reliability::MaxRetransmits(0)).unwrap();
    }
    // A reliable message after them on another stream still arrives.
    p.sides[0].send(now, 5, 51, b"after".to_vec(), true, Reliability::Reliable).unwrap();
    p.run(Duration::from_secs(60), |p| p.received[1].iter().any(|m| m.stream == 5));
    let lossy_count = p.received[1].iter().filter(|m| m.stream == 3).count();
    assert!(p.received[1].iter().any(|m| m.data == b"after"));
    assert!(lossy_count < 500 && lossy_count > 300, "{lossy_count} of 500 arrived");
    for m in p.received[1].iter().filter(|m| m.stream == 3) {
        assert!(m.unordered);
    }
    println!("{cc:?}: unreliable: {lossy_count} of 500 arrived with 10% loss");
}

/// 200 messages of 3000 bytes that live 150 ms, then a reliable one, all ordered on stream
/// 7; runs until the reliable one arrives (or 60 s).
fn limited_messages_then_a_reliable_one(p: &mut Pair) {
    let now = p.net.now();
    for i in 0..200 {
        let life = Reliability::MaxLifetime(Duration::from_millis(150));
        p.sides[0].send(now, 7, 53, message(i, 3000), true, life).unwrap();
    }
    p.sides[0].send(now, 7, 51, b"last, reliable".to_vec(), true, Reliability::Reliable).unwrap();
    p.run(Duration::from_secs(60), |p| p.received[1].iter().any(|m| m.data == b"last, reliable"));
}

#[test]
fn limited_lifetime_messages_are_abandoned_and_the_rest_flows() {
    let mut p = Pair::new(21, lossy(0.2));
    p.connect_both();
    limited_messages_then_a_reliable_one(&mut p);
    assert!(p.received[1].iter().any(|m| m.data == b"last, reliable"));
    // Ordered: whatever arrived of stream 7 came in order.
    let ids: Vec<usize> = p.received[1]
        .iter()
        .filter(|m| m.data.len() == 3000)
        .map(|m| (0..200).find(|&i| message(i, 3000) == m.data).expect("a sent message"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn stream_reset_goes_both_ways_and_the_stream_starts_over() {
    let mut p = Pair::new(30, LinkConfig::default());
    p.connect_both();
    let now = p.net.now();
    p.sides[0].send(now, 9, 51, b"before".to_vec(), true, Reliability::Reliable).unwrap();
    p.sides[0].reset_streams(&[9]);
    p.run(Duration::from_secs(5), |p| p.events[0].contains(&SctpEvent::OutgoingStreamsReset(vec![9])));
    assert!(p.events[1].contains(&SctpEvent::IncomingStreamsReset(vec![9])), "{:?}", p.events);
    assert!(p.events[0].contains(&SctpEvent::OutgoingStreamsReset(vec![9])), "{:?}", p.events);
    // Data sent before the reset arrived; the stream is usable again from SSN 0.
    let now = p.net.now();
    p.sides[0].send(now, 9, 51, b"after".to_vec(), true, Reliability::Reliable).unwrap();
    p.run(Duration::from_secs(5), |p| p.received[1].len() == 2);
    let got: Vec<&[u8]> = p.received[1].iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(got, [&b"before"[..], b"after"]);
}

#[test]
fn abort_ends_both_sides() {
    let mut p = Pair::new(40, LinkConfig::default());
    p.connect_both();
    p.sides[0].abort();
    p.run(Duration::from_secs(2), |p| p.sides[1].state() == SctpState::Ended);
    assert_eq!(p.sides[1].state(), SctpState::Ended);
    assert_eq!(p.events[0].last(), Some(&SctpEvent::Closed { reason: SctpCloseReason::LocalAbort }));
    // The peer learns the cause: User-Initiated Abort (RFC 9260 §3.3.10.12).
    let peer_aborted = SctpCloseReason::PeerAborted { cause: Some(12) };
    assert_eq!(p.events[1].last(), Some(&SctpEvent::Closed { reason: peer_aborted }));
    assert!(p.sides[0].send(p.net.now(), 1, 51, b"x".to_vec(), true, Reliability::Reliable).is_err());
}

#[test]
fn graceful_shutdown_after_data() {
    let mut p = Pair::new(41, lossy(0.05));
    p.connect_both();
    let now = p.net.now();
    p.sides[0].send(now, 1, 53, message(1, 100_000), true, Reliability::Reliable).unwrap();
    p.sides[0].close(now);
    p.run(Duration::from_secs(30), |p| p.sides.iter().all(|s| s.state() == SctpState::Ended));
    assert_eq!(p.received[1].len(), 1);
    assert!(p.sides.iter().all(|s| s.state() == SctpState::Ended), "{:?}", p.events);
}

#[test]
fn a_silent_peer_ends_the_association() {
    let mut p = Pair::new(42, LinkConfig::default());
    p.connect_both();
    let now = p.net.now();
    let host = p.hosts[1];
    p.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    p.sides[0].send(now, 1, 53, vec![1; 1000], true, Reliability::Reliable).unwrap();
    p.run(Duration::from_secs(300), |p| p.sides[0].state() == SctpState::Ended);
    assert_eq!(p.sides[0].state(), SctpState::Ended);
}

/// A connected pair whose side 1 asks for 4 streams each way.
fn connected_to_a_four_stream_peer(n: u64) -> Pair {
    let mut p = Pair::new(n, LinkConfig::default());
    let config = SctpConfig { streams: 4, ..SctpConfig::default() };
    p.sides[1] = Association::new(p.net.now(), config, seed(n * 2 + 1));
    p.connect_both();
    p
}

#[test]
fn streams_beyond_the_negotiated_count_are_refused_both_ways() {
    let mut p = connected_to_a_four_stream_peer(42);
    assert_eq!((p.sides[0].outbound_stream_count(), p.sides[0].inbound_stream_count()), (4, 4));
    let now = p.net.now();
    assert_eq!(
        p.sides[0].send(now, 4, 53, b"x".to_vec(), true, Reliability::Reliable),
        Err(peerlink_sctp::SendError::InvalidStream(4))
    );
    // A peer that ignores the count: a DATA chunk for stream 3 rewritten to stream 10.
    p.sides[0].send(now, 3, 53, b"lost".to_vec(), false, Reliability::Reliable).unwrap();
    let mut packet = next_packet(&mut p.sides[0], now).expect("the DATA packet");
    assert_eq!(packet[12], peerlink_sctp::chunk::DATA);
    packet[20..22].copy_from_slice(&10u16.to_be_bytes());
    packet[8..12].fill(0);
    peerlink_sctp::packet::finish(&mut packet);
    p.sides[1].handle_receive(now, &packet);
    assert!(p.sides[1].poll_message().is_none(), "a message on stream 10 was delivered");
    // The answer names the stream in an ERROR chunk.
    let answer = next_packet(&mut p.sides[1], now).expect("an answer");
    let parsed = peerlink_sctp::packet::Packet::parse(&answer).unwrap();
    let chunks: Vec<_> = parsed.chunks().map(Result::unwrap).collect();
    let error = chunks.iter().find(|c| c.typ == peerlink_sctp::chunk::ERROR).expect("an ERROR chunk");
    assert_eq!(error.value, [0, 1, 0, 8, 0, 10, 0, 0]);
    p.sides[0].handle_receive(now, &answer);
    // Its TSN was acknowledged: the sender retransmits nothing, and the stream that exists
    // still works.
    p.sides[0].send(now, 3, 53, b"after".to_vec(), true, Reliability::Reliable).unwrap();
    p.run(Duration::from_secs(5), |p| !p.received[1].is_empty());
    p.run(Duration::from_secs(5), |_| false);
    assert_eq!(p.received[1].iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(), [b"after".as_slice()]);
    assert_eq!(p.sides[0].stats().retransmitted_chunks, 0);
    assert_eq!(p.sides[1].stats().packets_received, p.sides[0].stats().packets_sent);
}

/// A RE-CONFIG packet from side 1 to side 0 asking for `added` more outgoing streams.
fn add_streams_request(header: peerlink_sctp::packet::Header, seq: u32, added: u16) -> Vec<u8> {
    use peerlink_sctp::chunk::{write_chunk, write_param, PARAM_ADD_OUTGOING_STREAMS, RECONFIG};
    let mut value = seq.to_be_bytes().to_vec();
    value.extend_from_slice(&added.to_be_bytes());
    value.extend_from_slice(&[0, 0]);
    let mut packet = Vec::new();
    peerlink_sctp::packet::begin(&mut packet, &header);
    write_chunk(&mut packet, RECONFIG, 0, |out| write_param(out, PARAM_ADD_OUTGOING_STREAMS, &value));
    peerlink_sctp::packet::finish(&mut packet);
    packet
}

/// The (sequence, result) of every RE-CONFIG response in what side 0 sends now.
fn reconfig_results(p: &mut Pair) -> Vec<(u32, u32)> {
    let now = p.net.now();
    let mut results = Vec::new();
    while let Some(packet) = next_packet(&mut p.sides[0], now) {
        let parsed = peerlink_sctp::packet::Packet::parse(&packet).unwrap();
        for c in parsed.chunks().map(Result::unwrap).filter(|c| c.typ == peerlink_sctp::chunk::RECONFIG) {
            let v = &c.value[4..];
            results.push((
                u32::from_be_bytes(v[..4].try_into().unwrap()),
                u32::from_be_bytes(v[4..8].try_into().unwrap()),
            ));
        }
    }
    results
}

#[test]
fn a_peer_may_add_outgoing_streams_up_to_what_we_take() {
    let mut p = connected_to_a_four_stream_peer(43);
    assert_eq!(p.sides[0].inbound_stream_count(), 4);
    // Side 1's first DATA carries its initial TSN, where its request numbers start, and
    // side 0's verification tag.
    let now = p.net.now();
    p.sides[1].send(now, 1, 53, b"x".to_vec(), true, Reliability::Reliable).unwrap();
    let data = next_packet(&mut p.sides[1], now).unwrap();
    let header = peerlink_sctp::packet::Packet::parse(&data).unwrap().header;
    let first_tsn = u32::from_be_bytes(data[16..20].try_into().unwrap());
    p.sides[0].handle_receive(now, &data);
    reconfig_results(&mut p);
    p.sides[0].handle_receive(now, &add_streams_request(header, first_tsn, 6));
    assert_eq!(reconfig_results(&mut p), [(first_tsn, 1)], "performed");
    assert_eq!(p.sides[0].inbound_stream_count(), 10);
    // A retransmission gets the same answer and adds nothing.
    p.sides[0].handle_receive(now, &add_streams_request(header, first_tsn, 6));
    assert_eq!(reconfig_results(&mut p), [(first_tsn, 1)]);
    assert_eq!(p.sides[0].inbound_stream_count(), 10);
    // Past the 65535 streams we take: denied.
    p.sides[0].handle_receive(now, &add_streams_request(header, first_tsn + 1, 65530));
    assert_eq!(reconfig_results(&mut p), [(first_tsn + 1, 2)], "denied");
    assert_eq!(p.sides[0].inbound_stream_count(), 10);
}

#[test]
fn the_side_told_to_shut_down_first_delivers_what_it_still_has() {
    for n in 44..48 {
        let mut p = Pair::new(n, lossy(0.1));
        p.connect_both();
        let now = p.net.now();
        p.sides[1].send(now, 1, 53, message(2, 200_000), true, Reliability::Reliable).unwrap();
        p.sides[0].close(now);
        p.run(Duration::from_secs(120), |p| p.sides.iter().all(|s| s.state() == SctpState::Ended));
        assert!(p.sides.iter().all(|s| s.state() == SctpState::Ended), "seed {n}: {:?}", p.events);
        assert_eq!(p.received[0].len(), 1, "seed {n}: the message sent before SHUTDOWN arrived was lost");
        assert_eq!(p.received[0][0].data, message(2, 200_000));
        for (events, by_peer) in p.events.iter().zip([false, true]) {
            let reason = SctpCloseReason::ShutDown { by_peer };
            assert_eq!(
                events.last(),
                Some(&SctpEvent::Closed { reason }),
                "seed {n}, side closed by peer {by_peer}: {events:?}"
            );
        }
    }
}

#[test]
fn a_repeated_shutdown_ack_after_the_end_is_answered_again() {
    // Our SHUTDOWN COMPLETE was lost: the peer repeats its SHUTDOWN ACK, and must get
    // another one, or it retries until it reports that we stopped answering.
    let mut p = Pair::new(48, LinkConfig::default());
    p.connect_both();
    let now = p.net.now();
    p.sides[1].send(now, 1, 53, b"x".to_vec(), true, Reliability::Reliable).unwrap();
    let data = next_packet(&mut p.sides[1], now).unwrap();
    let header = packet::Packet::parse(&data).unwrap().header;
    p.sides[0].handle_receive(now, &data);
    p.sides[0].close(now);
    p.run(Duration::from_secs(5), |p| p.sides.iter().all(|s| s.state() == SctpState::Ended));
    assert!(p.sides.iter().all(|s| s.state() == SctpState::Ended));
    let mut ack = Vec::new();
    packet::begin(&mut ack, &header);
    chunk::write_simple(&mut ack, chunk::SHUTDOWN_ACK, 0, &[]);
    packet::finish(&mut ack);
    let now = p.net.now();
    p.sides[0].handle_receive(now, &ack);
    let answer = next_packet(&mut p.sides[0], now).expect("an answer");
    let parsed = packet::Packet::parse(&answer).unwrap();
    let types: Vec<u8> = parsed.chunks().map(|c| c.unwrap().typ).collect();
    assert_eq!(types, [chunk::SHUTDOWN_COMPLETE]);
    // Garbage, or a SHUTDOWN ACK under another tag, gets nothing.
    p.sides[0].handle_receive(now, &[]);
    p.sides[0].handle_receive(now, &ack[..7]);
    ack[4..8].copy_from_slice(&(header.verification_tag ^ 1).to_be_bytes());
    packet::finish(&mut ack);
    p.sides[0].handle_receive(now, &ack);
    assert!(next_packet(&mut p.sides[0], now).is_none());
}

#[test]
fn heartbeats_keep_an_idle_association_and_find_a_silent_peer() {
    // A live peer answers: after ten idle minutes both sides are still up. Each side sent
    // about one HEARTBEAT per 30 s and an RTO (19) and answered the other's (19).
    let mut p = Pair::new(48, LinkConfig::default());
    p.connect_both();
    let sent = p.sides[0].stats().packets_sent;
    p.run(Duration::from_secs(600), |_| false);
    assert!(p.sides.iter().all(Association::is_established), "{:?}", p.events);
    let heartbeats = p.sides[0].stats().packets_sent - sent;
    assert!((30..=45).contains(&heartbeats), "{heartbeats} packets in ten idle minutes");
    // A peer gone silent while idle: found after 11 unanswered heartbeats.
    let host = p.hosts[1];
    p.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    let gone = p.net.now();
    p.run(Duration::from_secs(900), |p| p.sides[0].state() == SctpState::Ended);
    assert_eq!(p.sides[0].state(), SctpState::Ended);
    let after = p.net.now() - gone;
    assert!(after > Duration::from_secs(300) && after < Duration::from_secs(420), "ended after {after:?}");
    assert!(
        matches!(
            p.events[0].last(),
            Some(SctpEvent::Closed { reason: SctpCloseReason::HeartbeatsUnanswered })
        ),
        "{:?}",
        p.events[0]
    );
}

#[test]
fn without_heartbeats_an_idle_association_never_notices() {
    let mut p = Pair::new(49, LinkConfig::default());
    let config = SctpConfig { heartbeat_interval: None, ..SctpConfig::default() };
    p.sides[0] = Association::new(p.net.now(), config, seed(49 * 2));
    p.connect_both();
    let host = p.hosts[1];
    p.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    p.run(Duration::from_secs(900), |p| p.sides[0].state() == SctpState::Ended);
    assert!(p.sides[0].is_established());
}

// Edge cases found in review: a receiver that stops reading (zero window), SHUTDOWN while
// the other side still sends, an abandoned message whose sent fragments all arrived, a
// retransmitted re-configuration request, messages sent before the peer's stream count was
// known.

fn rtt_100ms() -> LinkConfig {
    LinkConfig { delay: Duration::from_millis(25), ..LinkConfig::default() }
}

fn closed(events: &[SctpEvent]) -> Option<&SctpCloseReason> {
    events.iter().find_map(|e| match e {
        SctpEvent::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn a_receiver_that_stops_reading_for_two_minutes_keeps_its_association() {
    // At zero window with nothing missing, the receiver drops the next TSN
    // (RFC 9260 §6.2 says it must). The sender's zero window probe then goes unanswered
    // (only SACKs with a_rwnd 0 come back) and T3 expires; had every expiry counted (the
    // count resets only when the cumulative ack moves), the sender would abort after 11
    // with "peer unreachable". RFC 9260 §6.1: "If the sender continues to receive SACKs from the
    // peer while doing zero window probing, the unacknowledged window probes SHOULD NOT
    // increment the error counter".
    let small = SctpConfig { receive_window: 64 * 1024, ..SctpConfig::default() };
    let mut p = Pair::with_configs(7, rtt_100ms(), [SctpConfig::default(), small]);
    p.connect_both();
    let now = p.net.now();
    for i in 0..32 {
        p.sides[0].send(now, 1, 53, message(i, 16 * 1024), true, Reliability::Reliable).unwrap();
    }
    p.reading[1] = false;
    p.run(Duration::from_secs(120), |p| closed(&p.events[0]).is_some());
    assert_eq!(closed(&p.events[0]), None, "the sender gave up while the receiver only paused");
    p.reading[1] = true;
    p.run(Duration::from_secs(120), |p| p.received[1].len() == 32);
    assert_eq!(p.received[1].len(), 32);
}

#[test]
fn shutdown_acknowledges_data_through_its_cumulative_tsn() {
    // RFC 9260 §9.2: the receiver of SHUTDOWN verifies "by checking the Cumulative TSN Ack
    // field of the chunk, that all its outstanding DATA chunks have been received by the
    // SHUTDOWN sender". A SHUTDOWN sender acknowledges our last DATA with the SHUTDOWN
    // alone (usrsctp and Linux add a SACK only for gaps or duplicates): SHUTDOWN ACK is due
    // at once, not after T3 expires and a retransmission draws a duplicate report.
    let mut p = Pair::with_configs(8, rtt_100ms(), [SctpConfig::default(), SctpConfig::default()]);
    p.connect_both();
    let now = p.net.now();
    p.sides[0].send(now, 1, 53, b"last words".to_vec(), true, Reliability::Reliable).unwrap();
    let data = next_packet(&mut p.sides[0], now).expect("the DATA packet");
    p.sides[1].handle_receive(now, &data);
    // Side 1 delays its SACK; it closes at once: its SHUTDOWN carries the cumulative ack.
    while next_packet(&mut p.sides[1], now).is_some() {}
    p.sides[1].close(now);
    let shutdown = next_packet(&mut p.sides[1], now).expect("SHUTDOWN");
    assert_eq!(shutdown[12], chunk::SHUTDOWN);
    p.sides[0].handle_receive(now, &shutdown);
    let mut answers = Vec::new();
    while let Some(a) = next_packet(&mut p.sides[0], now) {
        answers.push(a);
    }
    let types: Vec<u8> = answers
        .iter()
        .flat_map(|a| packet::Packet::parse(a).unwrap().chunks().map(|c| c.unwrap().typ).collect::<Vec<_>>())
        .collect();
    assert!(types.contains(&chunk::SHUTDOWN_ACK), "no SHUTDOWN ACK at once; sent chunk types {types:?}");
}

#[test]
fn a_lone_data_packet_is_acknowledged_within_20_ms() {
    // §6.2 lets a receiver hold a SACK for one packet up to 500 ms. A window-limited sender
    // (libdatachannel's, on a lossy path) often ends a flight with an odd packet: its SACK
    // then waited for our delayed-ack timer or the next flight (an RTT later) and the sender's
    // window with it. libdatachannel sets usrsctp's timer to 20 ms; ours is no later.
    let mut p = Pair::new(9, rtt_100ms());
    p.connect_both();
    p.run(Duration::from_secs(1), |_| false);
    let now = p.net.now();
    p.sides[0].send(now, 1, 53, b"alone".to_vec(), true, Reliability::Reliable).unwrap();
    let data = next_packet(&mut p.sides[0], now).expect("the DATA packet");
    assert_eq!(data[12], chunk::DATA);
    p.sides[1].handle_receive(now, &data);
    assert!(next_packet(&mut p.sides[1], now).is_none(), "one packet is acknowledged after a delay");
    let due = p.sides[1].poll_timeout().expect("a delayed-ack timer");
    assert!(due - now <= Duration::from_millis(20), "the SACK is due {:?} after the DATA", due - now);
    p.sides[1].handle_timeout(due);
    let sack = next_packet(&mut p.sides[1], due).expect("the SACK");
    assert_eq!(sack[12], chunk::SACK);
}

#[test]
fn an_abandoned_message_whose_sent_fragments_all_arrived_does_not_block_its_stream() {
    // A message abandoned
    // after some of its fragments went out and before the rest did needs a TSN for its end.
    // When every sent fragment reached the receiver, the SACK acknowledges them all, so the
    // advanced ack point is not past the cumulative ack and no FORWARD TSN goes out (and
    // one that did would be out of date, RFC 3758 §3.6, ignored before its stream/SSN
    // list). The receiver keeps the BEGIN fragment, never skips its SSN, and every later
    // message on the stream waits behind it. Seen with seed 30: SSN 2's first fragment
    // (TSN n) arrives, the message is abandoned, SACK cum=n, SSN 3 waits forever. usrsctp
    // and dcsctp give the abandoned end a TSN of its own for this reason.
    for n in 30..36 {
        let mut p = Pair::new(n, rtt_100ms());
        p.connect_both();
        limited_messages_then_a_reliable_one(&mut p);
        assert!(
            p.received[1].iter().any(|m| m.data == b"last, reliable"),
            "seed {n}: stream 7 stalled after {} messages",
            p.received[1].len()
        );
    }
}

#[test]
fn the_shutdown_sender_waits_as_long_as_data_keeps_coming() {
    // RFC 9260 §9.2: "While in the SHUTDOWN-SENT state, the SHUTDOWN sender MUST
    // immediately respond to each received packet containing one or more DATA chunks with
    // a SHUTDOWN chunk and restart the T2-shutdown timer." The other side first sends
    // everything it still has; a T2 left running with its back-off would give up after
    // about half a minute and end the association mid-way, losing the rest.
    let mut p = Pair::with_configs(
        9,
        LinkConfig { delay: Duration::from_millis(50), loss: 0.05, ..LinkConfig::default() },
        [SctpConfig::default(), SctpConfig::default()],
    );
    p.connect_both();
    let now = p.net.now();
    for i in 0..64 {
        p.sides[1].send(now, 1, 53, message(i, 256 * 1024), true, Reliability::Reliable).unwrap();
    }
    p.sides[0].close(now);
    p.run(Duration::from_secs(600), |p| p.sides.iter().all(|s| s.state() == SctpState::Ended));
    let shut_down = SctpCloseReason::ShutDown { by_peer: false };
    assert_eq!(closed(&p.events[0]), Some(&shut_down), "after {} of 64 messages", p.received[0].len());
    assert_eq!(p.received[0].len(), 64);
}

/// One packet from side 1 to side 0 with `header`, holding what `write` puts in it.
fn craft(header: packet::Header, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut p = Vec::new();
    packet::begin(&mut p, &header);
    write(&mut p);
    packet::finish(&mut p);
    p
}

#[test]
fn a_retransmitted_add_streams_request_gets_the_answer_it_had() {
    // A deferred stream reset completing must not change the remembered answer of a later
    // request: a retransmission of a denied Add Outgoing Streams (RFC 6525 §5.2.1: answered
    // with the result it had) must not say "performed", or the peer believes it has
    // streams we discard with ERRORs.
    let small = SctpConfig { streams: 4, ..SctpConfig::default() };
    let mut p = Pair::with_configs(10, LinkConfig::default(), [SctpConfig::default(), small]);
    p.connect_both();
    let now = p.net.now();
    p.sides[1].send(now, 1, 53, b"x".to_vec(), true, Reliability::Reliable).unwrap();
    let data = next_packet(&mut p.sides[1], now).unwrap();
    let header = packet::Packet::parse(&data).unwrap().header;
    let first_tsn = u32::from_be_bytes(data[16..20].try_into().unwrap());
    p.sides[0].handle_receive(now, &data);
    reconfig_results(&mut p);
    // Reset of stream 1 after TSN first+1 (not here yet): in progress.
    let reset = chunk::OutgoingReset {
        request_seq: first_tsn,
        response_seq: 0,
        last_tsn: first_tsn + 1,
        streams: vec![1],
    };
    p.sides[0].handle_receive(now, &craft(header, |o| chunk::write_outgoing_reset(o, &reset)));
    assert_eq!(reconfig_results(&mut p), [(first_tsn, chunk::RESET_IN_PROGRESS)]);
    // 65,533 more streams than the 65,535 we take: denied.
    let add = |seq: u32| {
        craft(header, |o| {
            let mut value = seq.to_be_bytes().to_vec();
            value.extend_from_slice(&65_533u16.to_be_bytes());
            value.extend_from_slice(&[0, 0]);
            chunk::write_chunk(o, chunk::RECONFIG, 0, |out| {
                chunk::write_param(out, chunk::PARAM_ADD_OUTGOING_STREAMS, &value)
            });
        })
    };
    p.sides[0].handle_receive(now, &add(first_tsn + 1));
    assert_eq!(reconfig_results(&mut p), [(first_tsn + 1, chunk::RESET_DENIED)]);
    // TSN first+1 arrives: the deferred reset is performed.
    let d = chunk::Data {
        flags: chunk::FLAG_BEGIN | chunk::FLAG_END,
        tsn: first_tsn + 1,
        stream: 1,
        ssn: 1,
        ppid: 53,
        payload: b"y",
    };
    p.sides[0].handle_receive(now, &craft(header, |o| chunk::write_data(o, &d)));
    reconfig_results(&mut p);
    // The denied request again.
    p.sides[0].handle_receive(now, &add(first_tsn + 1));
    assert_eq!(
        reconfig_results(&mut p),
        [(first_tsn + 1, chunk::RESET_DENIED)],
        "a denied request is now reported performed"
    );
}

#[test]
fn a_message_accepted_before_the_handshake_is_not_dropped_silently() {
    // `send` before the association is up accepts any stream (the peer's count is not
    // known yet); what is beyond the peer's MIS is dropped at `establish`, and the caller,
    // told Ok, must hear of it (DataChannels closes such a channel: see stack.rs).
    let small = SctpConfig { streams: 4, ..SctpConfig::default() };
    let mut p = Pair::with_configs(11, LinkConfig::default(), [SctpConfig::default(), small]);
    let now = p.net.now();
    assert_eq!(p.sides[0].send(now, 6, 53, b"early".to_vec(), true, Reliability::Reliable), Ok(()));
    p.connect_both();
    p.run(Duration::from_secs(5), |_| false);
    let told = p.received[1].iter().any(|m| m.data == b"early")
        || p.events[0].iter().any(|e| !matches!(e, SctpEvent::Connected));
    assert!(told, "the message was dropped and nobody was told: {:?}", p.events[0]);
}

#[test]
fn a_shutdown_nobody_answers_is_sent_association_max_retrans_times() {
    let mut p = Pair::new(50, LinkConfig::default());
    p.connect_both();
    let host = p.hosts[1];
    p.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    let sent = p.sides[0].stats().packets_sent;
    let now = p.net.now();
    p.sides[0].close(now);
    p.run(Duration::from_secs(900), |p| p.sides[0].state() == SctpState::Ended);
    assert_eq!(p.sides[0].state(), SctpState::Ended);
    // T2 (RFC 9260 §9.2) gives up after Association.Max.Retrans (10), not after T1's 8.
    assert_eq!(p.sides[0].stats().packets_sent - sent, 10);
}

#[test]
fn unacknowledged_counts_what_the_peer_has_not_acknowledged() {
    // 25 ms each way: data sent is in flight (no longer buffered) for a while before its SACK.
    let mut p = Pair::new(77, LinkConfig { delay: Duration::from_millis(25), ..LinkConfig::default() });
    p.connect_both();
    let now = p.net.now();
    for i in 0..20 {
        p.sides[0].send(now, 1, 53, message(i, 1000), true, Reliability::Reliable).unwrap();
    }
    p.sides[0].send(now, 3, 53, message(99, 500), true, Reliability::Reliable).unwrap();
    assert_eq!(p.sides[0].unacknowledged(1), 20_000);
    assert_eq!(p.sides[0].unacknowledged(3), 500);
    // Part of it handed to the network (the congestion window allows a few packets): less
    // buffered, all of it still unacknowledged.
    p.flush();
    assert!(p.sides[0].buffered_amount(1) < 20_000);
    assert_eq!(p.sides[0].unacknowledged(1), 20_000);
    p.run(Duration::from_secs(5), |p| p.sides[0].unacknowledged(1) + p.sides[0].unacknowledged(3) == 0);
    assert_eq!(p.received[1].len(), 21);
    assert_eq!(p.sides[0].unacknowledged(1), 0);
    assert_eq!(p.sides[0].unacknowledged(3), 0);
}
