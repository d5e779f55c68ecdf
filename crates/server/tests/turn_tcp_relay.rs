//! RFC 6062 TCP relays over real loopback sockets: a peer accepted on the relayed address,
//! a client data connection bound to it, bytes both ways intact and in order, back-pressure
//! when the client does not read, and the pipe closing with either side.

use peerlink_server::turn::{self, TurnConfig};
use peerlink_stun::{
    Attribute, AttributeType, Class, Key, Message, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const REALM: &str = "example.test";

fn start() -> turn::TurnHandle {
    start_limited(None)
}

/// With `max_bytes_per_second` per allocation.
fn start_limited(max_bytes_per_second: Option<u64>) -> turn::TurnHandle {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, credentials, [7; 32]);
    core.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    core.max_bytes_per_second = max_bytes_per_second;
    turn::start(TurnConfig::loopback(core, 1)).unwrap()
}

/// A STUN client on one TCP connection with the long-term credential dance done.
struct Stun {
    stream: TcpStream,
    nonce: String,
    tid: u8,
}

impl Stun {
    fn connect(server: SocketAddr, nonce: Option<&str>) -> Stun {
        let stream = TcpStream::connect(server).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut stun = Stun { stream, nonce: nonce.unwrap_or_default().to_owned(), tid: 0 };
        if nonce.is_none() {
            let response = stun.call(Method::ALLOCATE, false, &[Attribute::RequestedTransport(6)]);
            let m = Message::parse(&response).unwrap();
            let Some(Ok(Attribute::Nonce(nonce))) = m.get(AttributeType::NONCE) else { panic!("no nonce") };
            stun.nonce = nonce.to_owned();
        }
        stun
    }

    fn send(&mut self, method: Method, class: Class, signed: bool, attrs: &[Attribute<'_>]) {
        self.tid += 1;
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, class, method, TransactionId([self.tid; 12]));
        for a in attrs {
            w.attribute(a).unwrap();
        }
        if signed {
            w.attribute(&Attribute::Username("alice")).unwrap();
            w.attribute(&Attribute::Realm(REALM)).unwrap();
            w.attribute(&Attribute::Nonce(&self.nonce)).unwrap();
            let key = Key::long_term(PasswordAlgorithm::Md5, "alice", REALM, "pw").unwrap();
            w.message_integrity(&key).unwrap();
        }
        w.finish();
        self.stream.write_all(&buf).unwrap();
    }

    fn receive(&mut self) -> Vec<u8> {
        let mut header = [0u8; 20];
        self.stream.read_exact(&mut header).unwrap();
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut message = header.to_vec();
        message.resize(20 + len, 0);
        self.stream.read_exact(&mut message[20..]).unwrap();
        message
    }

    fn call(&mut self, method: Method, signed: bool, attrs: &[Attribute<'_>]) -> Vec<u8> {
        self.send(method, Class::Request, signed, attrs);
        self.receive()
    }
}

fn ok(response: &[u8]) -> Message<'_> {
    let m = Message::parse(response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.get(AttributeType::ERROR_CODE));
    m
}

/// A TCP allocation with a permission for 127.0.0.1, and a peer connected to its relay.
fn pipe(server: SocketAddr) -> (Stun, TcpStream, TcpStream) {
    let mut control = Stun::connect(server, None);
    let response = control.call(Method::ALLOCATE, true, &[Attribute::RequestedTransport(6)]);
    let Some(Ok(Attribute::XorRelayedAddress(relay))) = ok(&response).get(AttributeType::XOR_RELAYED_ADDRESS)
    else {
        panic!("no relay")
    };
    let peer_ip: SocketAddr = "127.0.0.1:9".parse().unwrap();
    ok(&control.call(Method::CREATE_PERMISSION, true, &[Attribute::XorPeerAddress(peer_ip)]));
    let peer = TcpStream::connect(relay).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let indication = control.receive();
    let m = Message::parse(&indication).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::CONNECTION_ATTEMPT));
    assert_eq!(
        m.get(AttributeType::XOR_PEER_ADDRESS).unwrap().unwrap(),
        Attribute::XorPeerAddress(peer.local_addr().unwrap())
    );
    let Some(Ok(Attribute::ConnectionId(id))) = m.get(AttributeType::CONNECTION_ID) else { panic!("no id") };
    // The peer talks before the bind: those bytes wait for the client.
    (&peer).write_all(b"early ").unwrap();
    let nonce = control.nonce.clone();
    let mut data = Stun::connect(server, Some(&nonce));
    ok(&data.call(Method::CONNECTION_BIND, true, &[Attribute::ConnectionId(id)]));
    (control, peer, data.stream)
}

fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn accepted_peer_is_piped_both_ways_with_back_pressure() {
    let server = start();
    let (_control, peer, mut client) = pipe(server.local_addr());
    let mut early = [0u8; 6];
    client.read_exact(&mut early).unwrap();
    assert_eq!(&early, b"early ");
    client.write_all(b"hello peer").unwrap();
    let mut got = [0u8; 10];
    (&peer).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello peer");

    // The client does not read: the peer can write only what the sockets' buffers and the
    // server's bounded pipe hold, far less than it tries to.
    const TRY: usize = 64 << 20;
    peer.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut written = 0;
    while written < TRY {
        match (&peer).write(&pattern(written, 64 * 1024)) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("peer wrote {written} bytes before blocking");
    assert!(written < TRY / 2, "the server buffered without bound: {written} bytes taken");
    // Now the client reads: everything arrives, in order.
    let mut received = vec![0u8; written];
    client.read_exact(&mut received).unwrap();
    assert!(received == pattern(0, written), "bytes lost or reordered");
    let stats = server.stats();

    // The peer closes: the client data connection ends too.
    drop(peer);
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    assert!(stats.tcp_connections_opened >= 1);
    server.stop();
}

#[test]
fn client_closing_or_deleting_the_allocation_closes_the_peer() {
    let server = start();
    let (_control, peer, client) = pipe(server.local_addr());
    drop(client);
    let mut rest = Vec::new();
    assert!((&peer).read_to_end(&mut rest).is_ok(), "peer sees an end, not a timeout");
    assert_eq!(rest, b"", "nothing was sent");

    // Refresh with LIFETIME 0: the allocation's data connections go with it.
    let (mut control, peer, client) = pipe(server.local_addr());
    ok(&control.call(Method::REFRESH, true, &[Attribute::Lifetime(0)]));
    let mut rest = Vec::new();
    assert!((&peer).read_to_end(&mut rest).is_ok());
    let mut rest = Vec::new();
    assert!((&client).read_to_end(&mut rest).is_ok());
    assert_eq!(rest, b"early ");
    server.stop();
}

#[test]
fn the_bandwidth_limit_slows_a_tcp_relay_without_losing_bytes() {
    // 1 MB/s per allocation; the budget starts full (one second's worth), so 3 MB cannot
    // arrive in less than about 2 s. Only a lower bound is checked: a slow machine can only
    // make it longer.
    let server = start_limited(Some(1_000_000));
    let (_control, peer, mut client) = pipe(server.local_addr());
    let mut early = [0u8; 6];
    client.read_exact(&mut early).unwrap();
    const TOTAL: usize = 3_000_000;
    let writer = std::thread::spawn(move || {
        (&peer).write_all(&pattern(0, TOTAL)).unwrap();
        peer
    });
    let start = std::time::Instant::now();
    let mut received = vec![0u8; TOTAL];
    client.read_exact(&mut received).unwrap();
    let took = start.elapsed();
    let _peer = writer.join().unwrap();
    assert!(received == pattern(0, TOTAL), "bytes lost or reordered");
    assert!(took >= Duration::from_millis(1500), "3 MB through a 1 MB/s limit in {took:?}");
    eprintln!("3 MB through a 1 MB/s limit in {took:?}");
    server.stop();
}

/// Reads from `stream` until `stop`, counting bytes.
fn drain(mut stream: TcpStream, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        total
    })
}

/// Writes to `stream` until `stop`.
fn flood(mut stream: TcpStream, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        stream.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        let buf = vec![0x5au8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match stream.write(&buf) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    })
}

#[test]
fn a_throttled_tcp_relay_shares_its_budget_between_both_directions() {
    // Both directions busy through one allocation's budget: neither may starve the other
    // (the throttled sides are read again in turn).
    let server = start_limited(Some(400_000));
    let (_control, peer, mut client) = pipe(server.local_addr());
    let mut early = [0u8; 6];
    client.read_exact(&mut early).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let to_client = drain(client.try_clone().unwrap(), stop.clone());
    let to_peer = drain(peer.try_clone().unwrap(), stop.clone());
    let w1 = flood(peer, stop.clone());
    let w2 = flood(client, stop.clone());
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let (a, b) = (to_client.join().unwrap(), to_peer.join().unwrap());
    w1.join().unwrap();
    w2.join().unwrap();
    eprintln!("peer -> client {a} bytes, client -> peer {b} bytes in 6 s at 400 kB/s");
    // 6 s at 400 kB/s plus the first second's budget: about 2.8 MB between the two.
    assert!(a.min(b) * 5 >= a + b, "one direction starved: peer->client {a}, client->peer {b}");
    server.stop();
}
