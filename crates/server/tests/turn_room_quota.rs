//! The allocation quota fits what `serve` hands out: every browser of a full mesh room,
//! relay-only, gets a relayed candidate for each of its peer connections, each TURN URL
//! (UDP, TCP and TLS) and each of two local addresses, and those of an ICE restart, with the
//! credential the signaling hub minted for it; the quota still
//! bounds one credential, and counts each credential apart. UDP allocations spread over the
//! relay's shards, which share one quota.

mod support;

use peerlink_server::options::ServeOptions;
use peerlink_server::serve::{allocations_per_credential, hub_config};
use peerlink_server::turn::{self, TurnConfig};
use peerlink_signal::{Hub, IceConfig, ServerMessage};
use peerlink_stun::{
    Attribute, AttributeType, Class, Key, Message, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use peerlink_turn::{Credentials, ServerConfig};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REALM: &str = "example.test";
const SECRET: &[u8] = b"room secret";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Url {
    Udp,
    Tcp,
    Tls,
}

/// A client transport to the TURN server, kept open as long as its allocation is wanted.
enum Link {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Link {
    fn open(url: Url, server: SocketAddr, tls_server: SocketAddr) -> Link {
        Link::open_from(LOOPBACK, url, server, tls_server)
    }

    /// From the local address `from` (a browser's, on 127/8).
    fn open_from(from: IpAddr, url: Url, server: SocketAddr, tls_server: SocketAddr) -> Link {
        let timeout = Some(Duration::from_secs(10));
        let connect = |to: SocketAddr| -> TcpStream {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
            socket.connect(&to.into()).unwrap();
            socket.into()
        };
        match url {
            Url::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
                socket.set_read_timeout(timeout).unwrap();
                Link::Udp(socket, server)
            }
            Url::Tcp => {
                let stream = connect(server);
                stream.set_read_timeout(timeout).unwrap();
                Link::Tcp(stream)
            }
            Url::Tls => {
                let stream = connect(tls_server);
                stream.set_read_timeout(timeout).unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(support::tls_client(), name).unwrap();
                Link::Tls(Box::new(rustls::StreamOwned::new(conn, stream)))
            }
        }
    }

    fn call(&mut self, request: &[u8]) -> Vec<u8> {
        match self {
            Link::Udp(socket, server) => {
                socket.send_to(request, *server).unwrap();
                let mut buf = vec![0u8; 1500];
                let n = socket.recv(&mut buf).unwrap();
                buf.truncate(n);
                buf
            }
            Link::Tcp(stream) => stream_call(stream, request),
            Link::Tls(stream) => stream_call(stream.as_mut(), request),
        }
    }
}

fn stream_call(stream: &mut impl ReadWrite, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).unwrap();
    stream.flush().unwrap();
    let mut message = vec![0u8; 20];
    stream.read_exact(&mut message).unwrap();
    let len = usize::from(u16::from_be_bytes([message[2], message[3]]));
    message.resize(20 + len, 0);
    stream.read_exact(&mut message[20..]).unwrap();
    message
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn request(tid: u8, attrs: &[Attribute<'_>], auth: Option<(&str, &str, &str)>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, TransactionId([tid; 12]));
    for a in attrs {
        w.attribute(a).unwrap();
    }
    if let Some((username, password, nonce)) = auth {
        w.attribute(&Attribute::Username(username)).unwrap();
        w.attribute(&Attribute::Realm(REALM)).unwrap();
        w.attribute(&Attribute::Nonce(nonce)).unwrap();
        let key = Key::long_term(PasswordAlgorithm::Md5, username, REALM, password).unwrap();
        w.message_integrity(&key).unwrap();
    }
    w.finish();
    buf
}

/// Allocates as a browser does for one TURN URL: a first request for the nonce, then the
/// signed one. The relayed address, or the error code.
fn allocate(link: &mut Link, url: Url, username: &str, password: &str) -> Result<SocketAddr, u16> {
    // Browsers ask for UDP relays over every transport (RFC 8656 §3.1).
    let transport = [Attribute::RequestedTransport(17)];
    let challenge = link.call(&request(1, &transport, None));
    let m = Message::parse(&challenge).unwrap();
    let Some(Ok(Attribute::Nonce(nonce))) = m.get(AttributeType::NONCE) else { panic!("{url:?}: no nonce") };
    let response = link.call(&request(2, &transport, Some((username, password, nonce))));
    let m = Message::parse(&response).unwrap();
    match (m.class(), m.get(AttributeType::XOR_RELAYED_ADDRESS), m.get(AttributeType::ERROR_CODE)) {
        (Class::SuccessResponse, Some(Ok(Attribute::XorRelayedAddress(relay))), _) => Ok(relay),
        (_, _, Some(Ok(Attribute::ErrorCode(e)))) => Err(e.code),
        other => panic!("{url:?}: unexpected answer {other:?}"),
    }
}

/// The TURN credentials the hub gives each of `peers` joining one room.
fn room_credentials(mut hub: peerlink_signal::HubConfig, peers: usize, unix: u64) -> Vec<(String, String)> {
    hub.ice = IceConfig {
        stun_urls: vec![],
        turn_urls: vec![
            "turn:{host}:3478?transport=udp".into(),
            "turn:{host}:3478?transport=tcp".into(),
            "turns:{host}:5349?transport=tcp".into(),
        ],
        turn_secret: Some(SECRET.to_vec()),
        credential_ttl: Duration::from_secs(3600),
    };
    let now = Instant::now();
    let mut hub = Hub::new(hub, now, unix, [3; 32]);
    (0..peers)
        .map(|i| {
            let conn = hub.connect(now, "localhost").unwrap();
            hub.handle_text(now, conn, &format!(r#"{{"type":"join","room":"full","name":"p{i}"}}"#));
            let welcome = std::iter::from_fn(|| hub.poll_output())
                .find_map(|out| match out {
                    peerlink_signal::hub::Output::Send { conn: c, text } if c == conn => {
                        match ServerMessage::parse(&text).unwrap() {
                            ServerMessage::Welcome { ice_servers, .. } => Some(ice_servers),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("peer {i} was not welcomed"));
            let turn = welcome.iter().find(|s| s.urls.iter().any(|u| u.starts_with("turn"))).unwrap();
            assert_eq!(turn.urls.len(), 3);
            (turn.username.clone().unwrap(), turn.credential.clone().unwrap())
        })
        .collect()
}

/// What the `peer`-th browser allocates for one connection: each TURN URL from each of its
/// `addresses` local addresses (on 127/8, its own).
fn gathering(peer: usize, urls: &[Url], addresses: usize) -> Vec<(IpAddr, Url)> {
    let address = |a: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 1 + peer as u8, 1 + a as u8));
    (0..addresses).flat_map(|a| urls.iter().map(move |&url| (address(a), url))).collect()
}

#[test]
fn every_browser_of_a_full_mesh_room_gets_all_its_relay_candidates() {
    let options = ServeOptions { room_mode: Some("mesh".into()), ..ServeOptions::default() };
    let hub = hub_config(&options).unwrap();
    let peers = hub.max_room_peers;
    assert_eq!(peers, 6, "a full mesh room");
    let urls = [Url::Udp, Url::Tcp, Url::Tls];
    let quota = allocations_per_credential(&hub, urls.len());
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let credentials = room_credentials(hub, peers, unix);

    let mut secrets = Credentials::new();
    secrets.add_secret(SECRET);
    let mut core = ServerConfig::new(REALM, secrets, [5; 32]);
    core.max_allocations_per_user = quota;
    let tls =
        peerlink_server::tls::load(&support::data("self-signed.pem"), &support::data("self-signed.key"))
            .unwrap();
    let server = turn::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_ips: vec!["127.0.0.1".parse().unwrap()],
        relay_ports: 49152..=65535,
        advertised: Vec::new(),
        max_tcp_connections: 1024,
        core,
        tls: Some(("127.0.0.1:0".parse().unwrap(), tls)),
        // Two shards: UDP, TCP and TLS spread over both, one quota.
        threads: 2,
    })
    .unwrap();
    let (addr, tls_addr) = (server.local_addr(), server.tls_addr().unwrap());

    // Relay-only: each browser opens a connection to each of the other five, and each
    // connection gathers one relayed candidate per TURN URL and local address (say IPv4 and
    // IPv6; here two on 127/8 per browser, as each browser has addresses of its own).
    let addresses = peerlink_server::serve::BROWSER_ADDRESSES;
    let mut links = Vec::new();
    let mut relays = std::collections::HashSet::new();
    for (peer, (username, password)) in credentials.iter().enumerate() {
        for connection in 0..peers - 1 {
            for (from, url) in gathering(peer, &urls, addresses) {
                let mut link = Link::open_from(from, url, addr, tls_addr);
                match allocate(&mut link, url, username, password) {
                    Ok(relay) => assert!(relays.insert(relay), "relay {relay} handed out twice"),
                    Err(code) => panic!("peer {peer}, connection {connection}, {url:?}: refused with {code}"),
                }
                links.push(link);
            }
        }
    }
    assert_eq!(relays.len(), peers * (peers - 1) * urls.len() * addresses);

    // Each browser may then restart ICE on a connection (or open the server's while the room
    // switches), gathering anew before the old allocations go...
    let held = (peers - 1) * urls.len() * addresses;
    for (peer, (username, password)) in credentials.iter().enumerate() {
        for (from, url) in gathering(peer, &urls, addresses) {
            let mut link = Link::open_from(from, url, addr, tls_addr);
            if let Err(code) = allocate(&mut link, url, username, password) {
                panic!("peer {peer}, an ICE restart's {url:?} allocation: refused with {code}");
            }
            links.push(link);
        }
    }

    // ...and the quota still bounds one credential...
    let (username, password) = &credentials[0];
    for _ in held + urls.len() * addresses..quota {
        let mut link = Link::open(Url::Udp, addr, tls_addr);
        allocate(&mut link, Url::Udp, username, password).expect("within the quota");
        links.push(link);
    }
    let mut link = Link::open(Url::Tcp, addr, tls_addr);
    assert_eq!(allocate(&mut link, Url::Tcp, username, password), Err(486), "over the quota");
    // ...and no other: the next browser's credential still allocates.
    let (username, password) = &credentials[1];
    let mut link = Link::open(Url::Udp, addr, tls_addr);
    assert!(allocate(&mut link, Url::Udp, username, password).is_ok());
    drop(links);
    server.stop();
}

#[test]
fn the_derived_quota_follows_the_rooms_and_urls_handed_out() {
    let quota = |mode: &str, urls| {
        let options = ServeOptions { room_mode: Some(mode.into()), ..ServeOptions::default() };
        allocations_per_credential(&hub_config(&options).unwrap(), urls)
    };
    // Twice what a browser with two addresses asks for. Mesh of 6: five connections per browser.
    assert_eq!(quota("mesh", 3), 2 * 2 * 5 * 3);
    assert_eq!(quota("mesh", 2), 2 * 2 * 5 * 2);
    // Auto: a mesh of up to 4, plus the SFU connection while the room switches.
    assert_eq!(quota("auto", 3), 2 * 2 * (3 + 1) * 3);
    // SFU: one connection to the server, and its successor while it is replaced.
    assert_eq!(quota("sfu", 2), 2 * 2 * 2 * 2);
    assert_eq!(peerlink_server::serve::TURN_ALLOCATIONS_PER_USER, quota("mesh", 3));
}

/// A server with the static user alice and `threads` shards.
fn start_static(threads: usize, quota: usize) -> turn::TurnHandle {
    let mut users = Credentials::new();
    users.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, users, [6; 32]);
    core.max_allocations_per_user = quota;
    turn::start(TurnConfig::loopback(core, threads)).unwrap()
}

#[test]
fn udp_allocations_spread_over_the_shards_and_share_one_quota() {
    let quota = 32;
    let server = start_static(2, quota);
    let addr = server.local_addr();
    // Each client from its own port: the kernel's 4-tuple hash spreads them over the shards'
    // sockets (all 32 on one of two shards: one chance in 2^31).
    let mut links = Vec::new();
    for i in 0..quota {
        let mut link = Link::open(Url::Udp, addr, addr);
        assert!(allocate(&mut link, Url::Udp, "alice", "pw").is_ok(), "client {i} refused");
        links.push(link);
    }
    // Each shard holds about half, below the quota on its own: only the shared count refuses.
    for _ in 0..8 {
        let mut link = Link::open(Url::Udp, addr, addr);
        assert_eq!(allocate(&mut link, Url::Udp, "alice", "pw"), Err(486));
    }
    // Each shard publishes its counters about once a second; they are summed when read.
    let deadline = Instant::now() + Duration::from_secs(10);
    let per_shard = loop {
        let per_shard: Vec<u64> = server.shared_stats().per_shard().iter().map(|s| s.allocations).collect();
        if per_shard.iter().sum::<u64>() == quota as u64 {
            break per_shard;
        }
        assert!(Instant::now() < deadline, "the shards never showed {quota} allocations: {per_shard:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(per_shard.len(), 2);
    assert!(per_shard.iter().all(|&n| n > 0), "every shard holds allocations: {per_shard:?}");
    assert_eq!(server.stats().allocations, quota as u64);
    assert_eq!(server.stats().quota_refusals, 8);
    drop(links);
    server.stop();
}
