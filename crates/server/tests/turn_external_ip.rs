//! `--external-ip PUBLIC/PRIVATE` (1:1 NAT, as on cloud VMs): a relay is opened on the private
//! address, and its client is told the public one in XOR-RELAYED-ADDRESS, with the same port;
//! data still flows through the private socket. UDP and RFC 6062 TCP relays alike.

mod support;

use peerlink_server::turn::{self, TurnConfig};
use peerlink_stun::{Attribute, Class, Message, MessageWriter, Method, TransactionId};
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use support::{nonce, relayed, request, REALM};

/// TEST-NET-3: never a real host, only what the server claims.
const PUBLIC: &str = "203.0.113.7";

fn start() -> turn::TurnHandle {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, credentials, [7; 32]);
    core.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    let private: IpAddr = "127.0.0.1".parse().unwrap();
    turn::start(TurnConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        relay_ips: vec![private],
        relay_ports: 49152..=65535,
        advertised: vec![(private, PUBLIC.parse().unwrap())],
        threads: 1,
        max_tcp_connections: 64,
        core,
        tls: None,
    })
    .unwrap()
}

#[test]
fn a_udp_relay_opens_on_the_private_address_and_announces_the_public_one() {
    let server = start();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    let mut call = |tid: u8, method: Method, nonce: Option<&str>, attrs: &[Attribute<'_>]| {
        client.send_to(&request(tid, method, nonce, attrs), server.local_addr()).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        buf[..n].to_vec()
    };
    let n = nonce(&call(1, Method::ALLOCATE, None, &[Attribute::RequestedTransport(17)]));
    let relay = relayed(&call(2, Method::ALLOCATE, Some(&n), &[Attribute::RequestedTransport(17)]));
    assert_eq!(relay.ip(), PUBLIC.parse::<IpAddr>().unwrap(), "XOR-RELAYED-ADDRESS is the public address");

    // The relay socket itself is on the private address, same port: a peer there hears from it.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let response = call(3, Method::CREATE_PERMISSION, Some(&n), &[Attribute::XorPeerAddress(peer_addr)]);
    assert_eq!(Message::parse(&response).unwrap().class(), Class::SuccessResponse);
    let mut send = Vec::new();
    let mut w = MessageWriter::new(&mut send, Class::Indication, Method::SEND, TransactionId([4; 12]));
    w.attribute(&Attribute::XorPeerAddress(peer_addr)).unwrap();
    w.attribute(&Attribute::Data(b"through the private side")).unwrap();
    w.finish();
    client.send_to(&send, server.local_addr()).unwrap();
    let (len, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"through the private side");
    assert_eq!(from, SocketAddr::new("127.0.0.1".parse().unwrap(), relay.port()));
    server.stop();
}

#[test]
fn a_tcp_relay_listens_on_the_private_address_and_announces_the_public_one() {
    let server = start();
    let mut control = TcpStream::connect(server.local_addr()).unwrap();
    control.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut call = |tid: u8, method: Method, nonce: Option<&str>, attrs: &[Attribute<'_>]| {
        control.write_all(&request(tid, method, nonce, attrs)).unwrap();
        let mut header = [0u8; 20];
        control.read_exact(&mut header).unwrap();
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut message = header.to_vec();
        message.resize(20 + len, 0);
        control.read_exact(&mut message[20..]).unwrap();
        message
    };
    let n = nonce(&call(1, Method::ALLOCATE, None, &[Attribute::RequestedTransport(6)]));
    let relay = relayed(&call(2, Method::ALLOCATE, Some(&n), &[Attribute::RequestedTransport(6)]));
    assert_eq!(relay.ip(), PUBLIC.parse::<IpAddr>().unwrap());
    // Listening on the private address with the announced port.
    assert!(TcpListener::bind(("127.0.0.1", relay.port())).is_err(), "the relay holds the private port");
    let response = call(
        3,
        Method::CREATE_PERMISSION,
        Some(&n),
        &[Attribute::XorPeerAddress("127.0.0.1:9".parse().unwrap())],
    );
    assert_eq!(Message::parse(&response).unwrap().class(), Class::SuccessResponse);
    let _peer = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
    let mut header = [0u8; 20];
    control.read_exact(&mut header).unwrap();
    assert_eq!(u16::from_be_bytes([header[0], header[1]]) & 0x0110, 0x0010, "an indication");
    server.stop();
}
