//! The TURN server's packet handling: a sequence of client and peer packets (some of them
//! validly authenticated, so the fuzzer reaches allocations, permissions and channels)
//! never panics, and every relayed range lies inside the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_stun::{
    AddressFamily, Attribute, Class, Key, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use peerlink_turn::{
    ClientAction, Credentials, FiveTuple, PeerPolicy, PortRequest, Relay, RelayError, RelayId, RelayProvider,
    ServerConfig, Transport, TurnServer,
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
    fn close(&mut self, _: RelayId) {}
}

/// An authenticated request built from fuzz bytes, so deep states are reachable.
fn signed(method: Method, nonce: &str, tail: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, TransactionId([tail.len() as u8; 12]));
    let _ = w.attribute(&Attribute::RequestedTransport(17));
    if let Some((&selector, rest)) = tail.split_first() {
        let peer = SocketAddr::new([203, 0, 113, selector].into(), 9);
        let _ = w.attribute(&Attribute::XorPeerAddress(peer));
        let _ = w.attribute(&Attribute::ChannelNumber(0x4000 | u16::from(selector)));
        if selector & 1 == 1 {
            let _ = w.attribute(&Attribute::EvenPort(true));
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

fuzz_target!(|data: &[u8]| {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "pw");
    let mut config = ServerConfig::new("r", credentials, [1; 32]);
    config.policy = PeerPolicy { allow_loopback: true, ..Default::default() };
    let mut now = Instant::now();
    let mut server = TurnServer::new(config, now, 1_800_000_000);
    let mut relays = Relays(50000);
    let mut out = Vec::new();
    let client = FiveTuple {
        transport: Transport::Udp,
        client: "198.51.100.1:5000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
    };
    // Learn a nonce first.
    let mut probe = Vec::new();
    MessageWriter::new(&mut probe, Class::Request, Method::ALLOCATE, TransactionId([0; 12])).finish();
    server.handle_client(now, client, &probe, &mut out, &mut relays);
    let nonce = peerlink_stun::Message::parse(&out)
        .ok()
        .and_then(|m| match m.get(peerlink_stun::AttributeType::NONCE) {
            Some(Ok(Attribute::Nonce(n))) => Some(n.to_owned()),
            _ => None,
        })
        .unwrap_or_default();
    // Records: [kind, len, bytes...].
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        match kind % 6 {
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
                let packet = signed(method, &nonce, chunk);
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
            _ => server.handle_client_closed(&client, &mut relays),
        }
    }
});
