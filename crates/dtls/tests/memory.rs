//! Two associations wired together in memory under a virtual clock: handshake, data,
//! fingerprints, SRTP keys, close, and loss that only our own retransmission timers can
//! repair (no wall-clock time passes).

use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsError, DtlsEvent, Role};
use std::time::{Duration, Instant};

/// Decides, from the sending side, its datagram count and the datagram, whether it is lost.
type DropRule = Box<dyn FnMut(usize, usize, &[u8]) -> bool>;

struct Pair {
    sides: [Dtls; 2],
    now: Instant,
    events: [Vec<DtlsEvent>; 2],
    received: [Vec<Vec<u8>>; 2],
    /// Datagrams sent so far by each side (the drop rule sees the running count).
    sent: [usize; 2],
    drop: DropRule,
}

fn certs() -> (Certificate, Certificate) {
    (Certificate::generate().unwrap(), Certificate::generate().unwrap())
}

impl Pair {
    fn new(srtp: bool, drop: impl FnMut(usize, usize, &[u8]) -> bool + 'static) -> Pair {
        Pair::with_mtu(srtp, 1200, drop)
    }

    fn with_mtu(srtp: bool, mtu: u32, drop: impl FnMut(usize, usize, &[u8]) -> bool + 'static) -> Pair {
        let (a, b) = certs();
        let now = Instant::now();
        let mut client = DtlsConfig::new(Role::Client, a.clone(), b.fingerprint().clone());
        let mut server = DtlsConfig::new(Role::Server, b, a.fingerprint().clone());
        client.srtp = srtp;
        server.srtp = srtp;
        client.mtu = mtu;
        server.mtu = mtu;
        Pair::with(now, client, server, drop)
    }

    fn with(
        now: Instant,
        client: DtlsConfig,
        server: DtlsConfig,
        drop: impl FnMut(usize, usize, &[u8]) -> bool + 'static,
    ) -> Pair {
        let sides = [Dtls::new(now, client).unwrap(), Dtls::new(now, server).unwrap()];
        Pair {
            sides,
            now,
            events: [Vec::new(), Vec::new()],
            received: [Vec::new(), Vec::new()],
            sent: [0, 0],
            drop: Box::new(drop),
        }
    }

    /// Delivers everything in flight (through the drop rule) until nothing moves.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 20_000];
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..2 {
                while let Some(d) = next_datagram(&mut self.sides[i]) {
                    moved = true;
                    let n = self.sent[i];
                    self.sent[i] += 1;
                    if !(self.drop)(i, n, &d) {
                        self.sides[1 - i].handle_receive(self.now, &d);
                    }
                }
                while let Some(n) = self.sides[i].read(&mut buf) {
                    self.received[i].push(buf[..n].to_vec());
                }
                while let Some(e) = self.sides[i].poll_event() {
                    self.events[i].push(e);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("datagrams kept moving");
    }

    fn run(&mut self, for_: Duration) {
        let end = self.now + for_;
        self.pump();
        while let Some(at) = self.sides.iter().filter_map(Dtls::poll_timeout).min().filter(|&at| at <= end) {
            self.now = at.max(self.now);
            for side in &mut self.sides {
                side.handle_timeout(self.now);
            }
            self.pump();
        }
        self.now = end;
    }

    fn connected(&self) -> bool {
        self.sides.iter().all(Dtls::is_connected)
    }
}

#[test]
fn handshake_then_data_both_ways() {
    let mut p = Pair::new(false, |_, _, _| false);
    p.run(Duration::from_secs(1));
    assert!(p.connected(), "{:?}", p.events);
    assert_eq!(p.events[0], [DtlsEvent::Connected { srtp: None }]);
    assert_eq!(p.events[1], [DtlsEvent::Connected { srtp: None }]);
    p.sides[0].write(b"from the client").unwrap();
    p.sides[1].write(&[7u8; 1100]).unwrap();
    p.pump();
    assert_eq!(p.received[1], [b"from the client".to_vec()]);
    assert_eq!(p.received[0], [vec![7u8; 1100]]);
    assert_eq!(p.sides[0].retransmissions() + p.sides[1].retransmissions(), 0);
}

#[test]
fn a_large_burst_of_writes_is_sent_whole() {
    // SCTP hands DTLS a whole congestion window between two polls: thousands of records.
    let mut p = Pair::new(false, |_, _, _| false);
    p.run(Duration::from_secs(1));
    assert!(p.connected(), "{:?}", p.events);
    let n = 5000u32;
    for i in 0..n {
        p.sides[0].write(&i.to_be_bytes()).unwrap();
    }
    let datagrams: Vec<Vec<u8>> = std::iter::from_fn(|| next_datagram(&mut p.sides[0])).collect();
    assert_eq!(datagrams.len(), n as usize);
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for d in datagrams {
        p.sides[1].handle_receive(p.now, &d);
        while let Some(m) = p.sides[1].read(&mut buf) {
            got.push(u32::from_be_bytes(buf[..m].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

#[test]
fn srtp_keys_are_the_same_on_both_sides() {
    let mut p = Pair::new(true, |_, _, _| false);
    p.run(Duration::from_secs(1));
    let keys: Vec<_> = p
        .events
        .iter()
        .map(|e| match &e[0] {
            DtlsEvent::Connected { srtp: Some(k) } => k.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0].profile, "SRTP_AEAD_AES_128_GCM");
    assert_eq!((keys[0].client_key.len(), keys[0].client_salt.len()), (16, 12));
    assert_ne!(keys[0].client_key, keys[0].server_key);
}

#[test]
fn a_wrong_fingerprint_fails_the_handshake_in_either_role() {
    for liar in [Role::Client, Role::Server] {
        let (a, b) = certs();
        let stranger = Certificate::generate().unwrap();
        let now = Instant::now();
        // The side that checks finds a certificate other than the one it was told about.
        let (client_expects, server_expects) = match liar {
            Role::Server => (stranger.fingerprint().clone(), a.fingerprint().clone()),
            Role::Client => (b.fingerprint().clone(), stranger.fingerprint().clone()),
        };
        let client = DtlsConfig::new(Role::Client, a, client_expects);
        let server = DtlsConfig::new(Role::Server, b, server_expects);
        let mut p = Pair::with(now, client, server, |_, _, _| false);
        p.run(Duration::from_secs(40));
        let checker = if liar == Role::Server { 0 } else { 1 };
        assert_eq!(p.events[checker], [DtlsEvent::Failed(DtlsError::FingerprintMismatch)], "{liar:?}");
        // The other side hears the alert (or times out) and fails too; nobody connects.
        assert!(matches!(p.events[1 - checker][..], [.., DtlsEvent::Failed(_)]), "{:?}", p.events);
        assert!(!p.events.iter().flatten().any(|e| matches!(e, DtlsEvent::Connected { .. })));
        assert!(p.sides[0].write(b"x").is_err());
    }
}

#[test]
fn every_single_lost_datagram_is_repaired_by_our_timers() {
    // With a 300-byte MTU the handshake messages are fragmented over many datagrams (so
    // reassembly is tested too). Drop the n-th datagram of one side, for every n the
    // handshake has: only a retransmission (ours, under the virtual clock) can finish it.
    let mut whole = Pair::with_mtu(false, 300, |_, _, _| false);
    whole.run(Duration::from_secs(1));
    assert!(whole.connected());
    let counts = whole.sent;
    assert!(counts[0] >= 3 && counts[1] >= 4, "fragmented: {counts:?}");
    for (side, &count) in counts.iter().enumerate() {
        for n in 0..count {
            let mut p = Pair::with_mtu(false, 300, move |i, k, _| i == side && k == n);
            p.run(Duration::from_secs(20));
            assert!(p.connected(), "side {side} datagram {n}: {:?}", p.events);
            p.sides[0].write(b"ping").unwrap();
            p.pump();
            assert_eq!(p.received[1], [b"ping".to_vec()], "side {side} datagram {n}");
        }
    }
}

#[test]
fn twenty_percent_random_loss_still_connects() {
    for seed in 1..=20u64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut p = Pair::new(true, move |_, _, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 100 < 20
        });
        p.run(Duration::from_secs(29));
        assert!(p.connected(), "seed {seed}: {:?}", p.events);
    }
}

#[test]
fn nobody_answering_ends_in_a_handshake_timeout_with_backoff() {
    let mut p = Pair::new(false, |i, _, _| i == 0);
    p.run(Duration::from_secs(40));
    assert_eq!(p.events[0], [DtlsEvent::Failed(DtlsError::HandshakeTimeout(Duration::from_secs(30)))]);
    // At 0.5, 1.5, 3.5, 7.5, 15.5 and 23.5 s (doubling up to 8 s): six, not one per 500 ms.
    assert_eq!(p.sides[0].retransmissions(), 6);
}

#[test]
fn close_notify_reaches_the_peer() {
    let mut p = Pair::new(false, |_, _, _| false);
    p.run(Duration::from_secs(1));
    p.sides[0].close();
    p.pump();
    assert_eq!(p.events[1].last(), Some(&DtlsEvent::Closed));
    assert!(p.sides[0].write(b"late").is_err());
}

#[test]
fn garbage_is_ignored_and_the_handshake_still_works() {
    let mut p = Pair::new(false, |_, _, _| false);
    let junk: [&[u8]; 6] = [b"", b"\x16", b"\x16\xfe\xfd", &[0x16; 13], &[0x17; 200], &[0xff; 1500]];
    for j in junk {
        p.sides[1].handle_receive(p.now, j);
        p.sides[0].handle_receive(p.now, j);
    }
    p.run(Duration::from_secs(5));
    assert!(p.connected(), "{:?}", p.events);
    for j in junk {
        p.sides[1].handle_receive(p.now, j);
    }
    p.pump();
    p.sides[0].write(b"still fine").unwrap();
    p.pump();
    assert_eq!(p.received[1].last().map(Vec::as_slice), Some(&b"still fine"[..]));
}

/// The next datagram `dtls` sends.
fn next_datagram(dtls: &mut peerlink_dtls::Dtls) -> Option<Vec<u8>> {
    peerlink_proto::poll_datagram(dtls, std::time::Instant::now()).map(|((), d)| d)
}
