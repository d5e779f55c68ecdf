//! `--max-bandwidth-per-user` over real sockets: one user's allocations, spread over two
//! relay threads, share one budget (an atomic bucket, no lock on the packet path); what goes
//! over is dropped and counted.

use peerlink_server::turn::{self, TurnConfig};
use peerlink_turn::{ClientConfig, ClientEvent, Credentials, ServerConfig, TurnClient};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const RATE: u64 = 20_000;
const CLIENTS: usize = 16;
const PAYLOAD: usize = 1000;

fn start() -> turn::TurnHandle {
    let mut users = Credentials::new();
    users.add_user("alice", "pw");
    let mut core = ServerConfig::new("example.test", users, [8; 32]);
    core.max_allocations_per_user = CLIENTS;
    core.max_bytes_per_second_per_user = Some(RATE);
    core.policy.allow_loopback = true;
    turn::start(TurnConfig::loopback(core, 2)).unwrap()
}

struct Client {
    turn: TurnClient,
    socket: UdpSocket,
    bound: bool,
}

impl Client {
    fn pump(&mut self) {
        let mut out = Vec::new();
        self.turn.handle_timeout(Instant::now());
        while self.turn.poll_transmit(Instant::now(), &mut out).is_some() {
            self.socket.send_to(&out, self.turn.server()).unwrap();
            out.clear();
        }
        let mut buf = [0u8; 2048];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.turn.handle_receive(Instant::now(), &buf[..n]);
        }
    }
}

#[test]
fn one_users_allocations_on_two_threads_share_its_bandwidth() {
    let server = start();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_nonblocking(true).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let config =
                ClientConfig { server: server.local_addr(), username: "alice".into(), password: "pw".into() };
            let mut turn = TurnClient::new(config, [i as u8 + 1; 32]);
            turn.allocate(Instant::now());
            Client { turn, socket, bound: false }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients.iter().any(|c| !c.bound) {
        assert!(Instant::now() < deadline, "channels not bound in time");
        for client in &mut clients {
            client.pump();
            while let Some(event) = client.turn.poll_event() {
                match event {
                    ClientEvent::Allocated { .. } => {
                        client.turn.bind_channel(Instant::now(), peer_addr).unwrap();
                    }
                    ClientEvent::ChannelBound { .. } => client.bound = true,
                    ClientEvent::Refused { .. } | ClientEvent::Closed { .. } => panic!("{event:?}"),
                    _ => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // Eight times the user's one-second budget, from every allocation at once.
    let started = Instant::now();
    let mut out = Vec::new();
    for _ in 0..10 {
        for client in &mut clients {
            out.clear();
            let _ = client.turn.send_to(peer_addr, &[5; PAYLOAD], &mut out).unwrap();
            client.socket.send_to(&out, server.local_addr()).unwrap();
        }
    }
    let mut received = 0u64;
    let mut buf = [0u8; 2048];
    let quiet_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < quiet_until {
        match peer.recv(&mut buf) {
            Ok(n) => received += n as u64,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // One second's worth at once, then the refill: never more, whichever thread relays.
    let ceiling = RATE as f64 * (1.0 + elapsed);
    assert!(received as f64 <= ceiling, "{received} bytes relayed in {elapsed:.2} s, ceiling {ceiling}");
    assert!(received >= RATE, "the first second's budget is relayed: {received}");

    // Each shard publishes its counters about once a second; they are summed when read.
    let total = (10 * CLIENTS * PAYLOAD) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = server.stats();
        if received + stats.over_user_bandwidth * PAYLOAD as u64 >= total || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(received + stats.over_user_bandwidth * PAYLOAD as u64, total, "relayed or counted: {stats:?}");
    assert_eq!(stats.over_bandwidth + stats.over_capacity, 0);
    let per_shard: Vec<u64> = server.shared_stats().per_shard().iter().map(|s| s.allocations).collect();
    // All 16 on one shard: one chance in 2^15.
    assert!(per_shard.iter().all(|&n| n > 0), "every shard holds allocations: {per_shard:?}");
    server.stop();
}
