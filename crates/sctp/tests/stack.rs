//! Two full stacks, DTLS (`peerlink-dtls`, OpenSSL) + SCTP + data channels, in
//! `peerlink-netsim` under a virtual clock: channels opened both ways and closed, messages of
//! every kind, bulk transfers that must arrive with the same SHA-256 under loss, delay and
//! reordering, unreliable channels, and a thousand channels opened and closed.

use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Role};
use peerlink_netsim::{seed, Datagram, HostId, LinkConfig, Network};
use peerlink_sctp::{
    Association, ChannelConfig, ChannelEvent, CongestionControl, DataChannels, Reliability, SctpConfig,
};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Side {
    dtls: Dtls,
    dc: DataChannels,
    host: HostId,
    addr: SocketAddr,
    events: Vec<ChannelEvent>,
    /// Bytes received per channel, hashed as they come.
    hash: Sha256,
    received: usize,
    per_channel: std::collections::HashMap<u16, usize>,
}

struct World {
    net: Network,
    sides: [Side; 2],
    /// SCTP packets, DTLS datagrams.
    bufs: [Vec<u8>; 2],
    record: Vec<u8>,
}

impl World {
    fn new(n: u64, link: LinkConfig) -> World {
        World::with_config(n, link, [SctpConfig::default(), SctpConfig::default()])
    }

    fn with_config(n: u64, link: LinkConfig, sctp_configs: [SctpConfig; 2]) -> World {
        let start = Instant::now();
        let mut net = Network::new(n, start);
        let addrs: [SocketAddr; 2] =
            ["198.51.100.1:4000".parse().unwrap(), "198.51.100.2:4000".parse().unwrap()];
        let clean = LinkConfig { loss: 0.0, ..link.clone() };
        let hosts = [net.add_host(addrs[0].ip(), None, link), net.add_host(addrs[1].ip(), None, clean)];
        let certs = [Certificate::generate().unwrap(), Certificate::generate().unwrap()];
        let sides = [0, 1].map(|i| {
            let role = if i == 0 { Role::Client } else { Role::Server };
            let config = DtlsConfig::new(role, certs[i].clone(), certs[1 - i].fingerprint().clone());
            let sctp = Association::new(start, sctp_configs[i].clone(), seed(n * 2 + i as u64));
            Side {
                dtls: Dtls::new(start, config).unwrap(),
                dc: DataChannels::new(sctp, role == Role::Client),
                host: hosts[i],
                addr: addrs[i],
                events: Vec::new(),
                hash: Sha256::new(),
                received: 0,
                per_channel: Default::default(),
            }
        });
        World { net, sides, bufs: [Vec::new(), Vec::new()], record: vec![0; 70_000] }
    }

    fn step_side(&mut self, i: usize) {
        let now = self.net.now();
        let to = self.sides[1 - i].addr;
        let side = &mut self.sides[i];
        while let Some(e) = side.dtls.poll_event() {
            match e {
                // Both ends start SCTP once DTLS is up (a simultaneous open).
                DtlsEvent::Connected { .. } => side.dc.association_mut().connect(now),
                other => panic!("dtls: {other:?}"),
            }
        }
        let [plain, out] = &mut self.bufs;
        if side.dtls.is_connected() {
            plain.clear();
            while side.dc.poll_transmit(now, plain).is_some() {
                out.clear();
                let _ = side.dtls.seal(plain, out).unwrap();
                self.net.send(side.host, Datagram { from: side.addr, to, payload: out.clone() });
                plain.clear();
            }
        }
        out.clear();
        while side.dtls.poll_transmit(now, out).is_some() {
            self.net.send(side.host, Datagram { from: side.addr, to, payload: out.clone() });
            out.clear();
        }
        while let Some(e) = side.dc.poll_event() {
            if let ChannelEvent::Message { data, id, .. } = &e {
                *side.per_channel.entry(*id).or_default() += 1;
                side.hash.update(data);
                side.received += data.len();
                // Bulk data is not kept (100 MB); small messages are.
                if data.len() > 64 {
                    continue;
                }
            }
            side.events.push(e);
        }
    }

    fn run(&mut self, limit: Duration, tick: impl FnMut(&mut World), done: impl Fn(&World) -> bool) {
        peerlink_netsim::run_with(self, limit, tick, done);
    }

    fn wait(&mut self, limit: Duration, done: impl Fn(&World) -> bool) {
        self.run(limit, |_| {}, done);
    }

    fn has(&self, i: usize, e: &ChannelEvent) -> bool {
        self.sides[i].events.contains(e)
    }
}

impl peerlink_netsim::World for World {
    fn net(&self) -> &Network {
        &self.net
    }

    fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    fn step(&mut self) {
        let now = self.net.now();
        for side in &mut self.sides {
            while let Some(d) = self.net.poll_receive(side.host) {
                side.dtls.handle_receive(now, &d.payload);
                while let Some(n) = side.dtls.read(&mut self.record) {
                    side.dc.handle_receive(now, &self.record[..n]);
                }
            }
            side.dtls.handle_timeout(now);
            side.dc.handle_timeout(now);
        }
        self.step_side(0);
        self.step_side(1);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.sides.iter().flat_map(|s| [s.dtls.poll_timeout(), s.dc.poll_timeout()]).flatten().min()
    }
}

#[test]
fn channels_open_both_ways_carry_every_kind_of_message_and_close() {
    let mut w = World::new(1, LinkConfig::default());
    let now = w.net.now();
    // Created before anything is connected: opens once the association is up.
    let chat = w.sides[0].dc.create(now, ChannelConfig::reliable("chat")).unwrap();
    assert_eq!(chat % 2, 0, "the DTLS client uses even ids");
    w.wait(Duration::from_secs(10), |w| {
        w.has(1, &ChannelEvent::Incoming { id: 0, label: "chat".into(), protocol: String::new() })
    });
    assert!(w.has(0, &ChannelEvent::Open(chat)), "{:?}", w.sides[0].events);
    let now = w.net.now();
    let back = w.sides[1]
        .dc
        .create(now, ChannelConfig { protocol: "json".into(), ..ChannelConfig::reliable("back") })
        .unwrap();
    assert_eq!(back % 2, 1);
    let negotiated = ChannelConfig { negotiated: Some(42), ..ChannelConfig::reliable("agreed") };
    w.sides[0].dc.create(now, negotiated.clone()).unwrap();
    w.sides[1].dc.create(now, negotiated).unwrap();
    for (data, binary) in [(&b"text"[..], false), (b"\x00\x01bin", true), (b"", false), (b"", true)] {
        w.sides[0].dc.send(now, chat, data, binary).unwrap();
        w.sides[1].dc.send(now, 42, data, binary).unwrap();
    }
    w.wait(Duration::from_secs(10), |w| w.sides[1].events.len() >= 5 && w.sides[0].events.len() >= 6);
    let expect = |id: u16| {
        [(&b"text"[..], false), (b"\x00\x01bin", true), (b"", false), (b"", true)]
            .map(|(d, binary)| ChannelEvent::Message { id, data: d.to_vec(), binary })
    };
    for e in expect(chat) {
        assert!(w.has(1, &e), "{e:?} in {:?}", w.sides[1].events);
    }
    for e in expect(42) {
        assert!(w.has(0, &e), "{e:?} in {:?}", w.sides[0].events);
    }
    assert!(w.has(0, &ChannelEvent::Incoming { id: back, label: "back".into(), protocol: "json".into() }));
    // Closing one side closes both; the other channels stay.
    w.sides[0].dc.close(chat);
    w.wait(Duration::from_secs(10), |w| {
        w.has(0, &ChannelEvent::Closed(chat)) && w.has(1, &ChannelEvent::Closed(chat))
    });
    assert!(w.has(0, &ChannelEvent::Closed(chat)) && w.has(1, &ChannelEvent::Closed(chat)));
    assert_eq!(w.sides[0].dc.len(), 2);
    let now = w.net.now();
    assert!(w.sides[0].dc.send(now, chat, b"late", false).is_err());
}

/// Sends `total` bytes over one reliable ordered channel in messages of mixed sizes,
/// keeping the buffered amount under 1 MB with the low-water event, and compares hashes.
#[test]
fn channel_ids_stay_below_the_streams_the_peer_takes() {
    let small = SctpConfig { streams: 5, ..SctpConfig::default() };
    let mut w = World::with_config(3, LinkConfig::default(), [SctpConfig::default(), small]);
    let now = w.net.now();
    let first = w.sides[0].dc.create(now, ChannelConfig::reliable("a")).unwrap();
    w.wait(Duration::from_secs(10), |w| w.has(0, &ChannelEvent::Open(first)));
    let now = w.net.now();
    // Even ids below 5: 0 is taken, 2 and 4 are left.
    let more: Vec<u16> =
        (0..2).map(|_| w.sides[0].dc.create(now, ChannelConfig::reliable("b")).unwrap()).collect();
    assert_eq!((first, more.as_slice()), (0, [2, 4].as_slice()));
    assert!(matches!(
        w.sides[0].dc.create(now, ChannelConfig::reliable("c")),
        Err(peerlink_sctp::ChannelError::NoIds)
    ));
    let negotiated = ChannelConfig { negotiated: Some(6), ..ChannelConfig::reliable("n") };
    assert!(matches!(
        w.sides[0].dc.create(now, negotiated),
        Err(peerlink_sctp::ChannelError::Send(peerlink_sctp::SendError::InvalidStream(6)))
    ));
    w.wait(Duration::from_secs(10), |w| w.has(0, &ChannelEvent::Open(4)));
}

#[test]
fn a_channel_made_early_on_a_stream_the_peer_does_not_take_is_closed() {
    let small = SctpConfig { streams: 5, ..SctpConfig::default() };
    let mut w = World::with_config(4, LinkConfig::default(), [SctpConfig::default(), small]);
    let now = w.net.now();
    let ids: Vec<u16> =
        (0..4).map(|_| w.sides[0].dc.create(now, ChannelConfig::reliable("early")).unwrap()).collect();
    assert_eq!(ids, [0, 2, 4, 6]);
    w.wait(Duration::from_secs(10), |w| {
        w.has(0, &ChannelEvent::Closed(6)) && w.has(0, &ChannelEvent::Open(4))
    });
    assert!(w.has(0, &ChannelEvent::Closed(6)), "{:?}", w.sides[0].events);
    assert!(!w.has(0, &ChannelEvent::Open(6)));
    for id in [0, 2, 4] {
        assert!(w.has(0, &ChannelEvent::Open(id)), "{:?}", w.sides[0].events);
    }
}

fn bulk(n: u64, link: LinkConfig, total: usize) -> Duration {
    let mut w = World::new(n, link);
    let now = w.net.now();
    let id = w.sides[0].dc.create(now, ChannelConfig::reliable("bulk")).unwrap();
    w.sides[0].dc.set_low_water(id, 512 * 1024);
    w.wait(Duration::from_secs(30), |w| {
        w.sides[1].events.iter().any(|e| matches!(e, ChannelEvent::Incoming { .. }))
    });
    let start = w.net.now();
    let sizes = [65_536, 1_200, 16_384, 262_144, 7, 1_000];
    let mut sent_hash = Sha256::new();
    let (mut sent, mut k) = (0usize, 0usize);
    w.run(
        Duration::from_secs(20_000),
        |w| {
            let now = w.net.now();
            while sent < total && w.sides[0].dc.buffered_amount(id) < 1 << 20 {
                let len = sizes[k % sizes.len()].min(total - sent);
                let data: Vec<u8> =
                    (0..len).map(|j| ((j as u64 * 2654435761) >> 13) as u8 ^ k as u8).collect();
                sent_hash.update(&data);
                w.sides[0].dc.send(now, id, &data, true).unwrap();
                sent += len;
                k += 1;
            }
        },
        |w| w.sides[1].received >= total,
    );
    assert_eq!(w.sides[1].received, total, "seed {n}: {:?}", w.sides[0].dc.association().stats());
    let got = std::mem::take(&mut w.sides[1].hash).finalize();
    assert_eq!(got, sent_hash.finalize(), "seed {n}: contents differ");
    w.net.now() - start
}

fn lossy(loss: f64) -> LinkConfig {
    // 100 ms RTT (25 ms on each of four link crossings), 1% of packets held back 25 ms more.
    LinkConfig { delay: Duration::from_millis(25), loss, reorder: 0.01, ..LinkConfig::default() }
}

#[test]
fn five_megabytes_with_the_same_hash_at_0_2_and_10_percent_loss() {
    for (loss, n) in [(0.0, 10), (0.02, 11), (0.10, 12)] {
        let took = bulk(n, lossy(loss), 5 << 20);
        println!("5 MB over DTLS+SCTP, {:.0}% loss, 100 ms RTT: {took:?} virtual", loss * 100.0);
    }
}

/// The full size the issue asks for; heavy, so run in release by scripts/test.sh.
#[test]
#[ignore]
fn hundred_megabytes_with_the_same_hash_at_0_2_and_10_percent_loss() {
    for (loss, n) in [(0.0, 20), (0.02, 21), (0.10, 22)] {
        let took = bulk(n, lossy(loss), 100 << 20);
        println!("100 MB over DTLS+SCTP, {:.0}% loss, 100 ms RTT: {took:?} virtual", loss * 100.0);
    }
}

#[test]
fn unreliable_channels_lose_what_they_may_and_never_stall() {
    for cc in [CongestionControl::Bbr, CongestionControl::Rfc9260] {
        unreliable_channels(cc);
    }
}

fn unreliable_channels(cc: CongestionControl) {
    let config = SctpConfig { congestion_control: cc, ..SctpConfig::default() };
    let mut w = World::with_config(30, lossy(0.10), [config.clone(), config]);
    let now = w.net.now();
    let lossy_id = w.sides[0]
        .dc
        .create(
            now,
            ChannelConfig {
                ordered: false,
                reliability: Reliability::MaxRetransmits(0),
                ..ChannelConfig::reliable("u")
            },
        )
        .unwrap();
    let timed = w.sides[0]
        .dc
        .create(
            now,
            ChannelConfig {
                reliability: Reliability::MaxLifetime(Duration::from_millis(100)),
                ..ChannelConfig::reliable("t")
            },
        )
        .unwrap();
    let sure = w.sides[0].dc.create(now, ChannelConfig::reliable("r")).unwrap();
    w.wait(Duration::from_secs(30), |w| {
        w.sides[1].events.iter().filter(|e| matches!(e, ChannelEvent::Incoming { .. })).count() == 3
    });
    // Until the DCEP ACK arrives the opener sends ordered (RFC 8832 §6.6): were it lost, the
    // unordered channel's first messages would go ordered and wait at the receiver behind
    // each abandoned one for its FORWARD TSN, a round trip apiece (delayed, not lost). The
    // peer's ACKs acknowledged, the opener has them.
    w.wait(Duration::from_secs(30), |w| {
        [lossy_id, timed, sure].iter().all(|&id| w.sides[1].dc.unacknowledged(id) == 0)
    });
    assert!([lossy_id, timed, sure].iter().all(|&id| w.sides[1].dc.unacknowledged(id) == 0));
    let now = w.net.now();
    // About one message per packet, so 10% loss loses about 30 of each.
    for i in 0..300u32 {
        let mut m = vec![0u8; 1000];
        m[..4].copy_from_slice(&i.to_be_bytes());
        w.sides[0].dc.send(now, lossy_id, &m, true).unwrap();
        w.sides[0].dc.send(now, timed, &m, true).unwrap();
    }
    w.sides[0].dc.send(now, sure, b"done", false).unwrap();
    let fin = ChannelEvent::Message { id: sure, data: b"done".to_vec(), binary: false };
    w.wait(Duration::from_secs(120), |w| w.has(1, &fin));
    assert!(w.has(1, &fin));
    let count = |id: u16| w.sides[1].per_channel.get(&id).copied().unwrap_or(0);
    let (u, t) = (count(lossy_id), count(timed));
    assert!(u < 300 && u > 200, "unreliable: {u} of 300");
    // Queued at once behind a small initial window, most outlive their 100 ms before they
    // are sent and are dropped unsent; what is sent may still be lost.
    assert!((1..300).contains(&t), "timed: {t} of 300");
    println!("{cc:?}, 10% loss: unreliable channel got {u} of 300, 100 ms lifetime channel {t} of 300");
}

#[test]
fn a_thousand_channels_open_and_close_without_leaking() {
    let mut w = World::new(40, LinkConfig::default());
    for round in 0..1000u32 {
        let now = w.net.now();
        let opener = (round % 2) as usize;
        let id = w.sides[opener].dc.create(now, ChannelConfig::reliable(&format!("c{round}"))).unwrap();
        w.sides[opener].dc.send(now, id, &round.to_be_bytes(), true).unwrap();
        let msg = ChannelEvent::Message { id, data: round.to_be_bytes().to_vec(), binary: true };
        w.wait(Duration::from_secs(10), |w| w.has(1 - opener, &msg));
        assert!(w.has(1 - opener, &msg), "round {round}");
        // Either side closes.
        let closer = (round as usize / 2) % 2;
        w.sides[closer].dc.close(id);
        w.wait(Duration::from_secs(10), |w| {
            w.sides.iter().all(|s| s.dc.state(id) == peerlink_sctp::ChannelState::Closed)
        });
        assert!(w.sides.iter().all(|s| s.dc.is_empty()), "round {round}: channels left open");
        for s in &mut w.sides {
            s.events.clear();
        }
    }
}

/// A receiver that stops granting receive credit holds at most its window: the peer's
/// window closes and it keeps the rest queued, the association stays up through minutes of
/// zero-window probes, and once credit comes back everything arrives, in order, intact.
#[test]
fn a_channel_out_of_receive_credit_closes_the_window_until_it_is_read() {
    for cc in [CongestionControl::Bbr, CongestionControl::Rfc9260] {
        out_of_receive_credit(cc);
    }
}

fn out_of_receive_credit(cc: CongestionControl) {
    const WINDOW: usize = 256 * 1024;
    const CREDIT: usize = 64 * 1024;
    const MESSAGE: usize = 16 * 1024;
    let total = 8 << 20;
    let sender = SctpConfig { congestion_control: cc, ..SctpConfig::default() };
    let small = SctpConfig { receive_window: WINDOW, ..sender.clone() };
    let mut w = World::with_config(40, lossy(0.0), [sender, small]);
    w.sides[1].dc.set_initial_receive_credit(Some(CREDIT));
    let now = w.net.now();
    let id = w.sides[0].dc.create(now, ChannelConfig::reliable("bulk")).unwrap();
    w.wait(Duration::from_secs(30), |w| {
        w.sides[1].events.iter().any(|e| matches!(e, ChannelEvent::Incoming { .. }))
    });
    let now = w.net.now();
    let mut sent_hash = Sha256::new();
    for k in 0..total / MESSAGE {
        let data: Vec<u8> = (0..MESSAGE).map(|j| ((j as u64 * 2654435761) >> 13) as u8 ^ k as u8).collect();
        sent_hash.update(&data);
        w.sides[0].dc.send(now, id, &data, true).unwrap();
    }
    // Nobody reads for two minutes.
    let resent = |w: &World| w.sides[0].dc.association().stats().retransmitted_chunks;
    w.wait(Duration::from_secs(5), |_| false);
    let before = resent(&w);
    w.wait(Duration::from_secs(115), |_| false);
    // RFC 9260 §6.1 A: a closed window sees one chunk at a time (the window probe), on T3's
    // backoff, however the sender's loss detection judged the rest of its flight.
    let probes = resent(&w) - before;
    assert!(probes <= 30, "{probes} chunks resent against a closed window in 115 s");
    let (received, held) = (w.sides[1].received, w.sides[1].dc.held_bytes(id));
    assert!(received <= CREDIT + MESSAGE, "delivered {received} past the credit");
    assert!(held <= WINDOW, "held {held}, more than the window");
    assert_eq!(w.sides[1].dc.association().receive_window(), Some(0), "the window is closed");
    assert!(w.sides[0].dc.buffered_amount(id) >= total - CREDIT - WINDOW - 2 * MESSAGE);
    assert!(w.sides[0].dc.association().is_established());
    // The reader catches up: whatever was delivered is read, and comes back as credit.
    let mut granted = 0;
    let resumed = w.net.now();
    w.run(
        Duration::from_secs(600),
        |w| {
            let read = w.sides[1].received;
            if read > granted {
                w.sides[1].dc.add_receive_credit(id, read - granted);
                granted = read;
            }
        },
        |w| w.sides[1].received >= total,
    );
    assert_eq!(w.sides[1].received, total);
    assert_eq!(std::mem::take(&mut w.sides[1].hash).finalize(), sent_hash.finalize());
    // The reopened window is announced at once, not found by a probe after RTO.Max.
    let took = w.net.now() - resumed;
    println!("{cc:?}: 8 MiB through a 256 KiB window after a 2 min stall: {took:?} virtual, {probes} probes");
    assert!(took < Duration::from_secs(15), "{took:?}");
}
