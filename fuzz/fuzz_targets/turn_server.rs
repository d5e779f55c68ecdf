//! The TURN server's packet handling: a sequence of client and peer packets (some of them
//! validly authenticated, so the fuzzer reaches allocations, permissions and channels, and
//! RFC 6062 TCP allocations with Connect, ConnectionBind, accepted peers, connection
//! outcomes and closes) never panics, and every relayed range lies inside the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_stun::{
    AddressFamily, Attribute, Class, Key, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use peerlink_turn::{
    connection_bind_shard, ClientAction, ConnectionId, Credentials, FiveTuple, PeerPolicy, PortRequest,
    Relay, RelayError, RelayId, RelayProvider, ServerConfig, TcpOutput, Transport, TurnServer,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Relays(u16);

impl RelayProvider for Relays {
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(Relay, Option<Relay>), RelayError> {
        let ip = if family == AddressFamily::V4 { "192.0.2.10" } else { "2001:db8::10" };
        self.0 = self.0.wrapping_add(2);
        let relay =
            |p: u16| Relay { id: RelayId(u32::from(p)), addr: SocketAddr::new(ip.parse().unwrap(), p) };
        Ok((relay(self.0), (port == PortRequest::EvenWithNext).then(|| relay(self.0 + 1))))
    }
    fn open_tcp(&mut self, family: AddressFamily) -> Result<Relay, RelayError> {
        self.open(family, PortRequest::Any).map(|(relay, _)| relay)
    }
    fn close(&mut self, _: RelayId) {}
}

/// An authenticated request built from fuzz bytes, so deep states are reachable.
/// `peer` overrides the last octet of the peer address (else the selector byte).
fn signed(
    method: Method,
    nonce: &str,
    tail: &[u8],
    connection: Option<ConnectionId>,
    peer: Option<u8>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, TransactionId([tail.len() as u8; 12]));
    // Bit 1 of the selector asks for a TCP relay (RFC 6062).
    let transport = if tail.first().is_some_and(|s| s & 2 == 2) { 6 } else { 17 };
    let _ = w.attribute(&Attribute::RequestedTransport(transport));
    if let Some((&selector, rest)) = tail.split_first() {
        let peer = SocketAddr::new([203, 0, 113, peer.unwrap_or(selector)].into(), 9);
        let _ = w.attribute(&Attribute::XorPeerAddress(peer));
        let _ = w.attribute(&Attribute::ChannelNumber(0x4000 | u16::from(selector)));
        if selector & 1 == 1 {
            let _ = w.attribute(&Attribute::EvenPort(true));
        }
        if let Some(id) = connection {
            let _ = w.attribute(&Attribute::ConnectionId(id.0));
        }
        let _ = w.attribute(&Attribute::Data(rest));
    }
    let _ = w.attribute(&Attribute::Username("alice"));
    let _ = w.attribute(&Attribute::Realm("r"));
    let _ = w.attribute(&Attribute::Nonce(nonce));
    let key = Key::long_term(PasswordAlgorithm::Md5, "alice", "r", "pw").unwrap();
    let _ = w.message_integrity(&key);
    w.finish();
    buf
}

fn pick(ids: &[ConnectionId], selector: Option<&u8>) -> Option<ConnectionId> {
    let selector = usize::from(*selector?);
    ids.get(selector % ids.len().max(1)).copied()
}

fuzz_target!(|data: &[u8]| {
    // The I/O layer peeks at the frames of TCP connections without an allocation for the
    // shard a ConnectionBind names: never a panic, always one of the shards.
    assert!(connection_bind_shard(data, 3).is_none_or(|shard| shard < 3));
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut config = ServerConfig::new("r", credentials, [1; 32]);
    config.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    // One shard of three: CONNECTION-IDs name it.
    config.shard = (1, 3);
    let mut now = Instant::now();
    let mut server = TurnServer::new(config, now, 1_800_000_000);
    let mut relays = Relays(50000);
    let mut out = Vec::new();
    let client = FiveTuple {
        transport: Transport::Udp,
        client: "198.51.100.1:5000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
    };
    // TCP control and data connections of the same client address (TCP nonces are per
    // address, so the UDP client's nonce is not valid on them: learn one).
    let tcp_clients: Vec<FiveTuple> = (0..4)
        .map(|i| FiveTuple {
            transport: Transport::Tcp,
            client: SocketAddr::new(client.client.ip(), 6000 + i),
            ..client
        })
        .collect();
    // Connection ids the core handed out, so requests and I/O reports can name real ones.
    let mut ids: Vec<ConnectionId> = Vec::new();
    // Learn nonces first.
    let mut probe = Vec::new();
    MessageWriter::new(&mut probe, Class::Request, Method::ALLOCATE, TransactionId([0; 12])).finish();
    let learn = |server: &mut TurnServer, tuple: FiveTuple, out: &mut Vec<u8>, relays: &mut Relays| {
        server.handle_client(now, tuple, &probe, out, relays);
        peerlink_stun::Message::parse(out)
            .ok()
            .and_then(|m| match m.get(peerlink_stun::AttributeType::NONCE) {
                Some(Ok(Attribute::Nonce(n))) => Some(n.to_owned()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let nonce = learn(&mut server, client, &mut out, &mut relays);
    let tcp_nonce = learn(&mut server, tcp_clients[0], &mut out, &mut relays);
    // Records: [kind, len, bytes...].
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        match kind % 11 {
            0 => {
                if let ClientAction::ToPeer { payload, .. } =
                    server.handle_client(now, client, chunk, &mut out, &mut relays)
                {
                    assert!(payload.end <= chunk.len());
                }
            }
            1 => {
                let methods =
                    [Method::ALLOCATE, Method::REFRESH, Method::CREATE_PERMISSION, Method::CHANNEL_BIND];
                let method = methods[usize::from(chunk.first().copied().unwrap_or(0)) % methods.len()];
                let packet = signed(method, &nonce, chunk, None, None);
                server.handle_client(now, client, &packet, &mut out, &mut relays);
            }
            2 => {
                let peer = SocketAddr::new([203, 0, 113, chunk.first().copied().unwrap_or(0)].into(), 9);
                let relay = RelayId(50000 + u32::from(chunk.get(1).copied().unwrap_or(0)));
                server.handle_peer(now, relay, peer, chunk, &mut out);
            }
            3 => {
                now += Duration::from_secs(u64::from(chunk.first().copied().unwrap_or(1)) * 10);
                server.handle_timeout(now, &mut relays);
            }
            4 => {
                let tcp = FiveTuple { transport: Transport::Tcp, ..client };
                server.handle_client(now, tcp, chunk, &mut out, &mut relays);
            }
            5 => server.handle_client_closed(&client, &mut relays),
            6 => {
                // An authenticated request on one of the TCP connections, RFC 6062 included.
                let selector = usize::from(chunk.first().copied().unwrap_or(0));
                let methods = [
                    Method::ALLOCATE,
                    Method::REFRESH,
                    Method::CREATE_PERMISSION,
                    Method::CHANNEL_BIND,
                    Method::CONNECT,
                    Method::CONNECTION_BIND,
                ];
                let method = methods[selector % methods.len()];
                let tuple = tcp_clients[(selector / 8) % tcp_clients.len()];
                let connection = pick(&ids, chunk.get(1));
                let packet = signed(method, &tcp_nonce, chunk, connection, chunk.get(2).copied());
                server.handle_client(now, tuple, &packet, &mut out, &mut relays);
                if let Some(id) = server.bound_connection(&tuple) {
                    assert!(connection == Some(id) || ids.contains(&id));
                }
            }
            7 => {
                let peer = SocketAddr::new([203, 0, 113, chunk.first().copied().unwrap_or(0)].into(), 9);
                let relay = RelayId(50000 + u32::from(chunk.get(1).copied().unwrap_or(0)));
                if let Some(id) = server.handle_peer_accept(now, relay, peer) {
                    ids.push(id);
                }
            }
            8 => {
                if let Some(id) = pick(&ids, chunk.first()) {
                    server.handle_peer_connected(now, id, chunk.get(1).is_some_and(|b| b & 1 == 1));
                }
            }
            9 => {
                if let Some(id) = pick(&ids, chunk.first()) {
                    server.handle_data_closed(id);
                }
            }
            _ => {
                let tuple = tcp_clients[usize::from(chunk.first().copied().unwrap_or(0)) % tcp_clients.len()];
                server.handle_client_closed(&tuple, &mut relays);
            }
        }
        // What the I/O layer would drain after each input.
        while let Some(output) = server.poll_tcp_output(&mut out) {
            match output {
                TcpOutput::Connect { id, .. } => ids.push(id),
                TcpOutput::ToClient(_) => assert!(peerlink_stun::Message::parse(&out).is_ok()),
                TcpOutput::Close(_) => {}
            }
        }
        ids.truncate(64);
    }
    // Five client tuples, each with at most one allocation of at most 64 connections.
    assert!(server.stats().tcp_connections <= 5 * 64);
});
