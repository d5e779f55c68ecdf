//! A client whose server answers every flight 0.6-1.5 s late, under a virtual clock, with
//! the server doing cookie exchange (a HelloVerifyRequest first, as werift does). With a
//! real slow peer OpenSSL's own wall-clock timer runs out before each answer. OpenSSL reads
//! only the real clock, so to reproduce that the client's `openssl_timer` test setting
//! makes it 20 ms and the test lets 8 ms of real time pass before each late delivery
//! (OpenSSL counts a timer with less than 15 ms left as run out; this is the only real
//! waiting here, everything else is virtual time). What must hold, with that
//! setting and with the default one: the handshake finishes, the client never sends a
//! ClientHello without a cookie once it has the server's cookie (OpenSSL's stale
//! retransmission is not sent), and a repeated HelloVerifyRequest gets no answer.

use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Role};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Handshake message type of the first epoch-0 handshake record, if any.
fn handshake_type(datagram: &[u8]) -> Option<u8> {
    (datagram.len() > 13 && datagram[0] == 22 && datagram[3..5] == [0, 0]).then(|| datagram[13])
}

/// The cookie of a ClientHello datagram (record 13 + handshake header 12 + version 2 +
/// random 32, then session id and cookie, each with a one-byte length).
fn client_hello_cookie(datagram: &[u8]) -> Option<&[u8]> {
    if handshake_type(datagram) != Some(1) {
        return None;
    }
    let at = 13 + 12 + 2 + 32;
    let session_id = usize::from(*datagram.get(at)?);
    let cookie_at = at + 1 + session_id;
    let cookie = usize::from(*datagram.get(cookie_at)?);
    datagram.get(cookie_at + 1..cookie_at + 1 + cookie)
}

const OPENSSL_TIMER: Duration = Duration::from_millis(20);
const OPENSSL_WAIT: Duration = Duration::from_millis(8);

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct Run {
    connected: [bool; 2],
    /// Every datagram the client sent, with when.
    client_sent: Vec<(Instant, Vec<u8>)>,
    /// When the client first received a HelloVerifyRequest.
    cookie_at: Option<Instant>,
    /// Datagrams the client sent within 1 ms of receiving a repeated HelloVerifyRequest
    /// (with nothing else arriving then).
    answers_to_repeated_hvr: usize,
}

/// Runs one handshake; the server's datagrams reach the client `delay` (drawn per flight
/// from 0.6-1.5 s) late, the client's reach the server after 20 ms. `duplicate_hvr` makes
/// the network deliver the server's HelloVerifyRequest twice, 300 ms apart.
fn run(seed: u64, openssl_timer: Option<Duration>, duplicate_hvr: bool) -> Run {
    let (a, b) = (Certificate::generate().unwrap(), Certificate::generate().unwrap());
    let start = Instant::now();
    let mut client = DtlsConfig::new(Role::Client, a.clone(), b.fingerprint().clone());
    client.openssl_timer = openssl_timer;
    let mut server = DtlsConfig::new(Role::Server, b, a.fingerprint().clone());
    server.cookie_exchange = true;
    let mut sides = [Dtls::new(start, client).unwrap(), Dtls::new(start, server).unwrap()];
    let mut rng = SplitMix(seed);
    // (arrival, sequence) -> (to side, datagram)
    let mut wire: BTreeMap<(Instant, u64), (usize, Vec<u8>)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut run =
        Run { connected: [false; 2], client_sent: Vec::new(), cookie_at: None, answers_to_repeated_hvr: 0 };
    let mut now = start;
    let mut flight_delay = Duration::ZERO;
    let mut server_busy_until = start;
    let mut hvr_seen = 0;
    let end = start + Duration::from_secs(60);
    while now < end && !run.connected.iter().all(|&c| c) {
        #[allow(clippy::needless_range_loop)] // `side` also picks the direction
        for side in 0..2 {
            while let Some(d) = next_datagram(&mut sides[side]) {
                let delay = if side == 0 {
                    run.client_sent.push((now, d.clone()));
                    Duration::from_millis(20)
                } else {
                    // One delay per flight: datagrams within 1 ms of each other share it.
                    if now > server_busy_until {
                        flight_delay = Duration::from_millis(600 + rng.next() % 900);
                    }
                    server_busy_until = now + Duration::from_millis(1);
                    flight_delay
                };
                if side == 1 && duplicate_hvr && handshake_type(&d) == Some(3) {
                    seq += 1;
                    wire.insert((now + delay + Duration::from_millis(300), seq), (0, d.clone()));
                }
                seq += 1;
                wire.insert((now + delay, seq), (1 - side, d));
            }
            while let Some(e) = sides[side].poll_event() {
                match e {
                    DtlsEvent::Connected { .. } => run.connected[side] = true,
                    other => panic!("side {side}: {other:?}"),
                }
            }
        }
        let next_wire = wire.keys().next().map(|k| k.0);
        let next_timer = sides.iter().filter_map(Dtls::poll_timeout).min();
        let Some(at) = [next_wire, next_timer].into_iter().flatten().min() else { break };
        now = at.max(now);
        while let Some(entry) = wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to, d) = entry.remove();
            if to == 0 && openssl_timer.is_some() {
                // OpenSSL's timer runs out before the late answer.
                std::thread::sleep(OPENSSL_WAIT);
            }
            if to == 0 && handshake_type(&d) == Some(3) {
                hvr_seen += 1;
                run.cookie_at.get_or_insert(now);
                if hvr_seen > 1 {
                    while let Some(out) = next_datagram(&mut sides[0]) {
                        run.client_sent.push((now, out.clone()));
                        seq += 1;
                        wire.insert((now + Duration::from_millis(20), seq), (1, out));
                    }
                    sides[0].handle_receive(now, &d);
                    while let Some(out) = next_datagram(&mut sides[0]) {
                        run.answers_to_repeated_hvr += 1;
                        run.client_sent.push((now, out.clone()));
                        seq += 1;
                        wire.insert((now + Duration::from_millis(20), seq), (1, out));
                    }
                    continue;
                }
            }
            sides[to].handle_receive(now, &d);
        }
        for side in &mut sides {
            side.handle_timeout(now);
        }
    }
    run
}

fn check(run: &Run, what: &str) {
    assert!(run.connected.iter().all(|&c| c), "{what}: the handshake did not finish: {:?}", run.connected);
    let cookie_at = run.cookie_at.expect("the server sent a HelloVerifyRequest");
    let stale: Vec<_> = run
        .client_sent
        .iter()
        .filter(|(at, d)| *at >= cookie_at && client_hello_cookie(d).is_some_and(<[u8]>::is_empty))
        .collect();
    assert!(
        stale.is_empty(),
        "{what}: {} ClientHello(s) without the cookie sent after it arrived",
        stale.len()
    );
}

#[test]
fn a_peer_answering_each_flight_late_gets_no_stale_flight() {
    for seed in 0..8 {
        // OpenSSL's own timer expired before every answer (a real peer this slow).
        let run1 = run(seed, Some(OPENSSL_TIMER), false);
        check(&run1, &format!("seed {seed}, OpenSSL's timer run out"));
        // Production setting: OpenSSL's timer never runs out by itself.
        let run2 = run(seed, None, false);
        check(&run2, &format!("seed {seed}, default"));
    }
}

#[test]
fn a_repeated_hello_verify_request_is_not_answered() {
    for timer in [Some(OPENSSL_TIMER), None] {
        let run = run(7, timer, true);
        check(&run, &format!("{timer:?}"));
        assert_eq!(
            run.answers_to_repeated_hvr, 0,
            "{timer:?}: the client answered a repeated HelloVerifyRequest"
        );
    }
}

/// The next datagram `dtls` sends.
fn next_datagram(dtls: &mut peerlink_dtls::Dtls) -> Option<Vec<u8>> {
    peerlink_proto::poll_datagram(dtls, std::time::Instant::now()).map(|((), d)| d)
}
