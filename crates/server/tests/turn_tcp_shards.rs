//! TCP and TLS clients over relay threads: each thread has its own `SO_REUSEPORT` TCP and
//! TLS listeners, so allocations made over TCP and TLS land on every thread; and an RFC 6062
//! client data connection, which the kernel may hand to another thread than its control
//! connection's, is handed over to the thread holding the allocation, so its ConnectionBind
//! works and its bytes flow both ways.

mod support;

use peerlink_server::turn::{self, TurnConfig, TurnHandle};
use peerlink_stun::{Attribute, AttributeType, Class, Message, Method};
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{nonce, relayed, request, REALM};

/// Connections (or pipes) per transport: with two threads, all of them landing on one thread
/// (or every ConnectionBind on its allocation's thread) has one chance in 2^14.
const COUNT: usize = 15;

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    Tls,
}

/// A STUN client on one TCP or TLS connection, signing as alice once it has a nonce.
struct Client {
    stream: Box<dyn ReadWrite>,
    nonce: Option<String>,
    tid: u8,
}

impl Client {
    fn open(over: Over, server: &TurnHandle) -> Client {
        let addr = match over {
            Over::Tcp => server.local_addr(),
            Over::Tls => server.tls_addr().unwrap(),
        };
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let stream: Box<dyn ReadWrite> = match over {
            Over::Tcp => Box::new(stream),
            Over::Tls => {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(support::tls_client(), name).unwrap();
                Box::new(rustls::StreamOwned::new(conn, stream))
            }
        };
        Client { stream, nonce: None, tid: 0 }
    }

    fn receive(&mut self) -> Vec<u8> {
        let mut message = vec![0u8; 20];
        self.stream.read_exact(&mut message).unwrap();
        let len = usize::from(u16::from_be_bytes([message[2], message[3]]));
        message.resize(20 + len, 0);
        self.stream.read_exact(&mut message[20..]).unwrap();
        message
    }

    /// A request signed with the nonce of the first 401 (asked for when there is none yet).
    fn call(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Vec<u8> {
        if self.nonce.is_none() {
            self.tid += 1;
            self.stream.write_all(&request(self.tid, method, None, attrs)).unwrap();
            self.nonce = Some(nonce(&self.receive()));
        }
        self.tid += 1;
        self.stream.write_all(&request(self.tid, method, self.nonce.as_deref(), attrs)).unwrap();
        self.receive()
    }
}

fn ok(response: &[u8]) -> Message<'_> {
    let m = Message::parse(response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.get(AttributeType::ERROR_CODE));
    m
}

fn start() -> TurnHandle {
    let mut users = Credentials::new();
    users.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, users, [3; 32]);
    core.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    core.max_allocations_per_user = 4 * COUNT;
    let mut config = TurnConfig::loopback(core, 2);
    config.max_tcp_connections = 1024;
    let tls =
        peerlink_server::tls::load(&support::data("self-signed.pem"), &support::data("self-signed.key"))
            .unwrap();
    config.tls = Some(("127.0.0.1:0".parse().unwrap(), tls));
    turn::start(config).unwrap()
}

/// Each thread's allocations once they add up to `total` (threads publish their counters a
/// few times a second).
fn allocations_per_thread(server: &TurnHandle, total: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let per_thread: Vec<u64> = server.shared_stats().per_shard().iter().map(|s| s.allocations).collect();
        if per_thread.iter().sum::<u64>() == total || Instant::now() > deadline {
            return per_thread;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tcp_and_tls_allocations_land_on_every_thread() {
    let server = start();
    let mut held = Vec::new();
    let mut before = vec![0, 0];
    for over in [Over::Tcp, Over::Tls] {
        for _ in 0..COUNT {
            let mut client = Client::open(over, &server);
            relayed(&client.call(Method::ALLOCATE, &[Attribute::RequestedTransport(17)]));
            held.push(client);
        }
        let now = allocations_per_thread(&server, held.len() as u64);
        assert_eq!(now.iter().sum::<u64>(), held.len() as u64, "{over:?}: {now:?}");
        let added: Vec<u64> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
        assert!(added.iter().all(|&n| n > 0), "{over:?} allocations on every thread: {added:?}");
        before = now;
    }
    server.stop();
}

/// A TCP allocation over `over` with a peer connected to its relay, bound by a new data
/// connection; checks the bytes both ways and returns what must stay open.
fn pipe(over: Over, server: &TurnHandle, n: usize) -> (Client, TcpStream, Client) {
    let mut control = Client::open(over, server);
    let relay = relayed(&control.call(Method::ALLOCATE, &[Attribute::RequestedTransport(6)]));
    let peer_ip: SocketAddr = "127.0.0.1:9".parse().unwrap();
    ok(&control.call(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(peer_ip)]));
    let mut peer = TcpStream::connect(relay).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let indication = control.receive();
    let m = Message::parse(&indication).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::CONNECTION_ATTEMPT));
    let Some(Ok(Attribute::ConnectionId(id))) = m.get(AttributeType::CONNECTION_ID) else { panic!("no id") };
    // The peer talks before the bind: those bytes wait for the client, on whichever thread.
    peer.write_all(format!("early {n:02}").as_bytes()).unwrap();
    let mut data = Client::open(over, server);
    // A TCP nonce serves every connection from the client's address.
    data.nonce = control.nonce.clone();
    ok(&data.call(Method::CONNECTION_BIND, &[Attribute::ConnectionId(id)]));
    let mut early = [0u8; 8];
    data.stream.read_exact(&mut early).unwrap();
    assert_eq!(early, *format!("early {n:02}").as_bytes(), "{over:?} pipe {n}");
    data.stream.write_all(format!("hello {n:02}").as_bytes()).unwrap();
    data.stream.flush().unwrap();
    let mut hello = [0u8; 8];
    peer.read_exact(&mut hello).unwrap();
    assert_eq!(hello, *format!("hello {n:02}").as_bytes(), "{over:?} pipe {n}");
    (control, peer, data)
}

#[test]
fn connection_bind_reaches_the_thread_of_its_allocation() {
    let server = start();
    for over in [Over::Tcp, Over::Tls] {
        let handoffs = server.tcp_handoffs();
        let pipes: Vec<_> = (0..COUNT).map(|n| pipe(over, &server, n)).collect();
        let handed = server.tcp_handoffs() - handoffs;
        assert!(handed > 0, "{over:?}: no ConnectionBind crossed threads in {COUNT}");
        eprintln!("{over:?}: {handed} of {COUNT} data connections handed to another thread");
        // The pipes still work once all are open (no bytes left on the wrong thread).
        for (n, (_control, mut peer, mut data)) in pipes.into_iter().enumerate() {
            peer.write_all(b"later").unwrap();
            let mut later = [0u8; 5];
            data.stream.read_exact(&mut later).unwrap();
            assert_eq!(&later, b"later", "{over:?} pipe {n}");
        }
    }
    server.stop();
}
