//! RFC 8656 §7.2 EVEN-PORT reservations across relay threads: the Allocate redeeming a
//! RESERVATION-TOKEN comes from another client socket, which the kernel's 4-tuple hash may
//! hand to another thread than the one that reserved the port; it must get the port anyway.

mod support;

use peerlink_server::turn::{self, TurnConfig};
use peerlink_stun::{Attribute, AttributeType, Message, Method};
use peerlink_turn::{Credentials, ServerConfig};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use support::{nonce, relayed, request, REALM};

/// Reservations made and redeemed, each from two fresh client sockets: with two threads,
/// every redemption landing on the reserving thread has one chance in 2^16.
const PAIRS: usize = 16;

/// Allocates from a fresh socket (which stays open, holding the allocation); returns the
/// success response.
fn allocate(server: SocketAddr, attrs: &[Attribute<'_>]) -> (UdpSocket, Vec<u8>) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let attrs: Vec<Attribute<'_>> =
        [Attribute::RequestedTransport(17)].into_iter().chain(attrs.iter().copied()).collect();
    let mut buf = [0u8; 1500];
    client.send_to(&request(1, Method::ALLOCATE, None, &attrs), server).unwrap();
    let n = client.recv(&mut buf).unwrap();
    let nonce = nonce(&buf[..n]);
    client.send_to(&request(2, Method::ALLOCATE, Some(&nonce), &attrs), server).unwrap();
    let n = client.recv(&mut buf).unwrap();
    (client, buf[..n].to_vec())
}

#[test]
fn a_reservation_made_on_one_thread_is_redeemed_on_another() {
    let mut users = Credentials::new();
    users.add_user("alice", "pw");
    let mut core = ServerConfig::new(REALM, users, [9; 32]);
    core.max_allocations_per_user = 2 * PAIRS;
    let server = turn::start(TurnConfig::loopback(core, 2)).unwrap();
    let mut held = Vec::new();
    for _ in 0..PAIRS {
        let (first, response) = allocate(server.local_addr(), &[Attribute::EvenPort(true)]);
        let even = relayed(&response);
        assert_eq!(even.port() % 2, 0, "EVEN-PORT gives an even port");
        let m = Message::parse(&response).unwrap();
        let Some(Ok(Attribute::ReservationToken(token))) = m.get(AttributeType::RESERVATION_TOKEN) else {
            panic!("no reservation token")
        };
        let (second, response) = allocate(server.local_addr(), &[Attribute::ReservationToken(token)]);
        assert_eq!(relayed(&response), SocketAddr::new(even.ip(), even.port() + 1), "the reserved port");
        held.extend([first, second]);
    }
    // Each shard publishes its counters a few times a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let per_shard = loop {
        let per_shard: Vec<u64> = server.shared_stats().per_shard().iter().map(|s| s.allocations).collect();
        if per_shard.iter().sum::<u64>() == 2 * PAIRS as u64 || std::time::Instant::now() > deadline {
            break per_shard;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(per_shard.iter().sum::<u64>(), 2 * PAIRS as u64, "{per_shard:?}");
    assert!(per_shard.iter().all(|&n| n > 0), "allocations on every thread: {per_shard:?}");
    server.stop();
}

#[test]
fn a_lapsed_or_unknown_token_gets_508_on_any_thread() {
    let mut users = Credentials::new();
    users.add_user("alice", "pw");
    let server = turn::start(TurnConfig::loopback(ServerConfig::new(REALM, users, [9; 32]), 2)).unwrap();
    for _ in 0..4 {
        let (_client, response) = allocate(server.local_addr(), &[Attribute::ReservationToken([7; 8])]);
        let m = Message::parse(&response).unwrap();
        let Some(Ok(Attribute::ErrorCode(error))) = m.get(AttributeType::ERROR_CODE) else {
            panic!("not refused")
        };
        assert_eq!(error.code, 508);
    }
    server.stop();
}
