//! A TURN server on a wildcard address answers, and relays data to its client, from the
//! address the client sent to (packet info), not from the one the kernel would pick: a
//! client connected to 127.0.0.2 (any 127/8 address is this host's) hears nothing else.

mod support;

use peerlink_server::turn::{self, TurnConfig};
use peerlink_stun::{Attribute, AttributeType, Class, Message, Method};
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;
use support::{nonce, relayed, request, REALM};

fn start(listen: &str) -> turn::TurnHandle {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, credentials, [5; 32]);
    core.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    let mut config = TurnConfig::loopback(core, 2);
    config.listen = listen.parse().unwrap();
    turn::start(config).unwrap()
}

fn relay_through(listen: &str, asked: &str) {
    let server = start(listen);
    let client = UdpSocket::bind("0.0.0.0:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.connect(SocketAddr::new(asked.parse().unwrap(), server.local_addr().port())).unwrap();
    let mut buf = [0u8; 1500];
    let mut call = |tid: u8, method: Method, nonce: Option<&str>, attrs: &[Attribute<'_>]| {
        client.send(&request(tid, method, nonce, attrs)).unwrap();
        let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{listen}, asked {asked}: no answer: {e}"));
        buf[..n].to_vec()
    };
    let nonce = nonce(&call(1, Method::ALLOCATE, None, &[Attribute::RequestedTransport(17)]));
    let relay = relayed(&call(2, Method::ALLOCATE, Some(&nonce), &[Attribute::RequestedTransport(17)]));
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let response = call(3, Method::CREATE_PERMISSION, Some(&nonce), &[Attribute::XorPeerAddress(peer_addr)]);
    assert_eq!(Message::parse(&response).unwrap().class(), Class::SuccessResponse);

    // Relayed data reaches the client from the address it asked too.
    peer.send_to(b"from the peer", relay).unwrap();
    let n = client.recv(&mut buf).expect("a Data indication from the address asked");
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    let Some(Ok(Attribute::Data(data))) = m.get(AttributeType::DATA) else { panic!("no data") };
    assert_eq!(data, b"from the peer");
    assert_eq!(client.peer_addr().unwrap().ip(), asked.parse::<IpAddr>().unwrap());
    server.stop();
}

#[test]
fn a_wildcard_ipv4_server_answers_and_relays_from_the_address_asked() {
    relay_through("0.0.0.0:0", "127.0.0.2");
}

#[test]
fn a_dual_stack_server_answers_ipv4_clients_from_the_address_asked() {
    relay_through("[::]:0", "127.0.0.3");
}
