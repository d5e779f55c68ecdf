//! The TURN client against the TURN server core, in memory under virtual time.

use peerlink_stun::AddressFamily;
use peerlink_turn::{
    ClientAction, ClientConfig, ClientEvent, Credentials, FiveTuple, PeerAction, PeerPolicy, PortRequest,
    Relay, RelayError, RelayId, RelayProvider, ServerConfig, Transport, TurnClient, TurnServer,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Relays(u16);

impl RelayProvider for Relays {
    fn open(&mut self, _: AddressFamily, _: PortRequest) -> Result<(Relay, Option<Relay>), RelayError> {
        self.0 += 1;
        Ok((
            Relay {
                id: RelayId(u32::from(self.0)),
                addr: SocketAddr::new("192.0.2.10".parse().unwrap(), self.0),
            },
            None,
        ))
    }
    fn close(&mut self, _: RelayId) {}
}

struct Net {
    server: TurnServer,
    relays: Relays,
    client: TurnClient,
    tuple: FiveTuple,
    now: Instant,
    /// Client datagrams to drop (by their order of transmission).
    drop_next: usize,
    /// What reached peers: (peer, payload).
    at_peers: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<ClientEvent>,
}

fn net(password: &str) -> Net {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut config = ServerConfig::new("example.org", credentials, [3; 32]);
    config.policy = PeerPolicy::default();
    let now = Instant::now();
    let tuple = FiveTuple {
        transport: Transport::Udp,
        client: "198.51.100.1:5000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
    };
    let client = TurnClient::new(
        ClientConfig { server: tuple.server, username: "alice".into(), password: password.into() },
        [0x5A; 32],
    );
    Net {
        server: TurnServer::new(config, now, 1_800_000_000),
        relays: Relays(50000),
        client,
        tuple,
        now,
        drop_next: 0,
        at_peers: Vec::new(),
        events: Vec::new(),
    }
}

impl Net {
    /// Delivers datagrams both ways until nothing moves.
    fn pump(&mut self) {
        let (mut datagram, mut out) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            datagram.clear();
            if self.client.poll_transmit(self.now, &mut datagram).is_none() {
                break;
            }
            if self.drop_next > 0 {
                self.drop_next -= 1;
                continue;
            }
            self.deliver_to_server(&datagram, &mut out);
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    fn deliver_to_server(&mut self, datagram: &[u8], out: &mut Vec<u8>) {
        match self.server.handle_client(self.now, self.tuple, datagram, out, &mut self.relays) {
            ClientAction::Reply => {
                let reply = out.clone();
                assert!(self.client.handle_receive(self.now, &reply).is_none());
            }
            ClientAction::ToPeer { peer, payload, .. } => {
                self.at_peers.push((peer, datagram[payload].to_vec()))
            }
            ClientAction::Nothing => {}
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.client.poll_timeout().filter(|&at| at <= until) {
            self.now = at.max(self.now);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now, &mut self.relays);
            self.pump();
        }
        self.now = until;
        self.server.handle_timeout(self.now, &mut self.relays);
        self.client.handle_timeout(self.now);
        self.pump();
    }

    fn relayed(&self) -> SocketAddr {
        self.client.relayed_address().expect("allocated")
    }
}

const PEER: &str = "203.0.113.9:4000";

/// An allocation with a channel bound to [`PEER`].
fn with_channel() -> (Net, SocketAddr) {
    let mut n = net("pw");
    n.client.allocate(n.now);
    n.pump();
    let peer: SocketAddr = PEER.parse().unwrap();
    n.client.bind_channel(n.now, peer).unwrap();
    n.pump();
    (n, peer)
}

#[test]
fn allocates_binds_a_channel_and_relays_both_ways() {
    let mut n = net("pw");
    n.client.allocate(n.now);
    n.pump();
    assert!(matches!(n.events[0], ClientEvent::Allocated { .. }), "{:?}", n.events);
    let peer: SocketAddr = PEER.parse().unwrap();

    // Before the channel is confirmed data goes as a Send indication; after, as ChannelData.
    let channel = n.client.bind_channel(n.now, peer).unwrap();
    let mut out = Vec::new();
    let _ = n.client.send_to(peer, b"early", &mut out).unwrap();
    assert_eq!(out[0] & 0xC0, 0, "a STUN Send indication");
    n.pump();
    assert!(n.events.contains(&ClientEvent::ChannelBound { peer, channel }));
    // Appended after what is already there: the caller's buffer is not cleared.
    let before = out.len();
    let t = n.client.send_to(peer, b"via channel", &mut out).unwrap();
    assert_eq!(t.len, out.len() - before);
    out.drain(..before);
    assert_eq!(out[0] & 0xC0, 0x40, "ChannelData");
    let mut scratch = Vec::new();
    n.deliver_to_server(&out.clone(), &mut scratch);
    assert_eq!(n.at_peers, [(peer, b"via channel".to_vec())]);

    // Peer → client.
    let relay = RelayId(u32::from(n.relayed().port()));
    assert!(matches!(
        n.server.handle_peer(n.now, relay, peer, b"hello back", &mut scratch),
        PeerAction::ToClient(_)
    ));
    let (from, range) = n.client.handle_receive(n.now, &scratch).unwrap();
    assert_eq!((from, &scratch[range]), (peer, &b"hello back"[..]));
}

#[test]
fn send_indications_after_a_permission() {
    let mut n = net("pw");
    n.client.allocate(n.now);
    n.pump();
    let peer: SocketAddr = PEER.parse().unwrap();
    let mut out = Vec::new();
    assert!(n.client.send_to(peer, b"x", &mut out).is_err(), "no permission yet");
    n.client.create_permission(n.now, peer.ip()).unwrap();
    n.pump();
    assert!(n.events.contains(&ClientEvent::PermissionCreated(peer.ip())));
    let _ = n.client.send_to(peer, b"indicated", &mut out).unwrap();
    let mut scratch = Vec::new();
    n.deliver_to_server(&out.clone(), &mut scratch);
    assert_eq!(n.at_peers, [(peer, b"indicated".to_vec())]);
    // Peer data without a channel comes back as a Data indication.
    let relay = RelayId(u32::from(n.relayed().port()));
    n.server.handle_peer(n.now, relay, peer, b"data ind", &mut scratch);
    let (from, range) = n.client.handle_receive(n.now, &scratch).unwrap();
    assert_eq!((from, &scratch[range]), (peer, &b"data ind"[..]));
}

#[test]
fn retransmits_lost_requests() {
    let mut n = net("pw");
    n.drop_next = 2; // the first Allocate and its first retransmission
    n.client.allocate(n.now);
    n.pump();
    assert!(n.events.is_empty());
    n.advance(Duration::from_secs(2));
    assert!(matches!(n.events[0], ClientEvent::Allocated { .. }), "{:?}", n.events);
}

#[test]
fn keeps_the_allocation_permissions_and_channels_alive_across_nonce_expiry() {
    let (mut n, peer) = with_channel();
    // An hour: refreshes every ~9 minutes, nonces go stale every 10 (438, then retry).
    for _ in 0..60 {
        n.advance(Duration::from_secs(60));
    }
    assert!(
        !n.events.iter().any(|e| matches!(e, ClientEvent::Closed { .. } | ClientEvent::Refused { .. })),
        "{:?}",
        n.events
    );
    assert_eq!(n.server.stats().allocations, 1);
    let mut out = Vec::new();
    let _ = n.client.send_to(peer, b"still here", &mut out).unwrap();
    let mut scratch = Vec::new();
    n.deliver_to_server(&out.clone(), &mut scratch);
    assert_eq!(n.at_peers.last().unwrap(), &(peer, b"still here".to_vec()));
}

#[test]
fn wrong_password_closes_with_the_refusal() {
    let mut n = net("wrong");
    n.client.allocate(n.now);
    n.pump();
    assert!(
        n.events.iter().any(|e| matches!(e, ClientEvent::Closed { reason } if reason.contains("401"))),
        "{:?}",
        n.events
    );
    assert_eq!(n.server.stats().allocations, 0);
}

#[test]
fn close_deletes_the_allocation_and_silence_times_out() {
    let mut n = net("pw");
    n.client.allocate(n.now);
    n.pump();
    n.client.close(n.now);
    n.pump();
    assert!(matches!(n.events.last(), Some(ClientEvent::Closed { .. })));
    assert_eq!(n.server.stats().allocations, 0);

    let mut silent = net("pw");
    silent.drop_next = usize::MAX;
    silent.client.allocate(silent.now);
    silent.advance(Duration::from_secs(60));
    assert!(
        matches!(silent.events.last(), Some(ClientEvent::Closed { reason }) if reason.contains("did not answer"))
    );
}

#[test]
fn refresh_renews_the_allocation_permissions_and_channels_at_once() {
    let (mut n, peer) = with_channel();
    n.events.clear();
    // Two minutes in: nothing is due yet, so every request here comes from `refresh`.
    n.advance(Duration::from_secs(120));
    assert!(n.events.is_empty(), "{:?}", n.events);
    n.client.refresh(n.now);
    let mut requests = Vec::new();
    let mut datagram = Vec::new();
    while n.client.poll_transmit(n.now, &mut datagram).is_some() {
        requests.push(peerlink_stun::Message::parse(&datagram).unwrap().method());
        let mut out = Vec::new();
        n.deliver_to_server(&datagram.clone(), &mut out);
        datagram.clear();
    }
    use peerlink_stun::Method;
    assert_eq!(requests.len(), 3, "{requests:?}");
    for method in [Method::REFRESH, Method::CREATE_PERMISSION, Method::CHANNEL_BIND] {
        assert!(requests.contains(&method), "{requests:?}");
    }
    while let Some(event) = n.client.poll_event() {
        n.events.push(event);
    }
    assert!(n.events.iter().any(|e| matches!(e, ClientEvent::Refreshed { .. })), "{:?}", n.events);
    assert!(n.events.contains(&ClientEvent::PermissionCreated(peer.ip())), "{:?}", n.events);
    assert!(!n.events.iter().any(|e| matches!(e, ClientEvent::Refused { .. } | ClientEvent::Closed { .. })));
}
