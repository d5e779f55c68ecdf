//! The TURN core driven directly, with a fake relay provider and virtual time.

use peerlink_stun::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, AttributeType, Class, Key, Message,
    MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use peerlink_turn::{
    connection_bind_shard, ChannelData, ClientAction, ConnectionId, Credentials, FiveTuple, PeerAction,
    PortRequest, Relay, RelayError, RelayId, RelayProvider, ServerConfig, SharedRate, TcpOutput, Transport,
    TurnServer,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Default)]
struct FakeRelays {
    next_port: u16,
    open: Vec<Relay>,
    closed: Vec<RelayId>,
    tcp: Vec<RelayId>,
    no_v6: bool,
    no_tcp: bool,
}

impl RelayProvider for FakeRelays {
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(Relay, Option<Relay>), RelayError> {
        if family == AddressFamily::V6 && self.no_v6 {
            return Err(RelayError::FamilyUnsupported);
        }
        let ip = if family == AddressFamily::V4 { "192.0.2.10" } else { "2001:db8::10" };
        if self.next_port == 0 {
            self.next_port = 50000;
        }
        let mut make = |relays: &mut Vec<Relay>| {
            let port = self.next_port;
            self.next_port += 1;
            let relay =
                Relay { id: RelayId(u32::from(port)), addr: SocketAddr::new(ip.parse().unwrap(), port) };
            relays.push(relay);
            relay
        };
        let first = make(&mut self.open);
        let second = (port == PortRequest::EvenWithNext).then(|| make(&mut self.open));
        Ok((first, second))
    }

    fn open_tcp(&mut self, family: AddressFamily) -> Result<Relay, RelayError> {
        if self.no_tcp {
            return Err(RelayError::TransportUnsupported);
        }
        let (relay, _) = self.open(family, PortRequest::Any)?;
        self.tcp.push(relay.id);
        Ok(relay)
    }

    fn close(&mut self, relay: RelayId) {
        self.closed.push(relay);
    }
}

const REALM: &str = "example.org";
const UNIX_START: u64 = 1_800_000_000;

struct World {
    server: TurnServer,
    relays: FakeRelays,
    now: Instant,
    out: Vec<u8>,
    tid: u8,
}

fn world_with(configure: impl FnOnce(&mut ServerConfig)) -> World {
    let mut credentials = Credentials::new();
    credentials.add_user("alice", "alice-pw");
    credentials.add_user("bob", "bob-pw");
    credentials.add_secret(b"rest-secret");
    let mut config = ServerConfig::new(REALM, credentials, [42; 32]);
    configure(&mut config);
    let now = Instant::now();
    World {
        server: TurnServer::new(config, now, UNIX_START),
        relays: FakeRelays::default(),
        now,
        out: Vec::new(),
        tid: 0,
    }
}

fn world() -> World {
    world_with(|_| {})
}

fn udp(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
    }
}

/// Credentials a client uses after its first 401.
#[derive(Clone)]
struct Login {
    username: String,
    password: String,
    nonce: String,
    algorithm: PasswordAlgorithm,
}

impl World {
    fn send(&mut self, tuple: FiveTuple, packet: &[u8]) -> ClientAction {
        self.server.handle_client(self.now, tuple, packet, &mut self.out, &mut self.relays)
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId([self.tid; 12])
    }

    /// Builds a request; with a login it carries USERNAME/REALM/NONCE and integrity.
    fn request(
        &mut self,
        method: Method,
        login: Option<&Login>,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, method, tid);
        for a in attrs {
            w.attribute(a).unwrap();
        }
        if let Some(login) = login {
            w.attribute(&Attribute::Username(&login.username)).unwrap();
            w.attribute(&Attribute::Realm(REALM)).unwrap();
            w.attribute(&Attribute::Nonce(&login.nonce)).unwrap();
            let key = Key::long_term(login.algorithm, &login.username, REALM, &login.password).unwrap();
            if login.algorithm == PasswordAlgorithm::Sha256 {
                static OFFER: [AlgorithmEntry<'static>; 2] = [
                    AlgorithmEntry { algorithm: 2, parameters: &[] },
                    AlgorithmEntry { algorithm: 1, parameters: &[] },
                ];
                w.attribute(&Attribute::PasswordAlgorithm(AlgorithmEntry { algorithm: 2, parameters: &[] }))
                    .unwrap();
                w.attribute(&Attribute::PasswordAlgorithms(AlgorithmList::Values(&OFFER))).unwrap();
                w.message_integrity_sha256(&key).unwrap();
            } else {
                w.message_integrity(&key).unwrap();
            }
        }
        w.fingerprint().unwrap();
        w.finish();
        buf
    }

    /// Sends a request and returns the response (parsed by the caller from `self.out`).
    fn call(
        &mut self,
        tuple: FiveTuple,
        method: Method,
        login: Option<&Login>,
        attrs: &[Attribute<'_>],
    ) -> Vec<u8> {
        let tid = self.next_tid();
        let request = self.request(method, login, tid, attrs);
        assert_eq!(self.send(tuple, &request), ClientAction::Reply, "{method:?} got no reply");
        let response = self.out.clone();
        assert_eq!(Message::parse(&response).unwrap().transaction_id(), tid);
        response
    }

    /// The 401 dance: an unauthenticated Allocate yields the nonce.
    fn login(&mut self, tuple: FiveTuple, username: &str, password: &str) -> Login {
        let response = self.call(tuple, Method::ALLOCATE, None, &[Attribute::RequestedTransport(17)]);
        assert_eq!(error_code(&response), Some(401));
        let m = Message::parse(&response).unwrap();
        assert_eq!(m.get(AttributeType::REALM).unwrap().unwrap(), Attribute::Realm(REALM));
        assert!(m.attribute(AttributeType::PASSWORD_ALGORITHMS).is_some());
        let Some(Ok(Attribute::Nonce(nonce))) = m.get(AttributeType::NONCE) else { panic!("no nonce") };
        Login {
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            algorithm: PasswordAlgorithm::Md5,
        }
    }

    fn allocate(&mut self, tuple: FiveTuple, login: &Login, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let mut all = vec![Attribute::RequestedTransport(17)];
        all.extend_from_slice(attrs);
        self.call(tuple, Method::ALLOCATE, Some(login), &all)
    }
}

fn error_code(response: &[u8]) -> Option<u16> {
    let m = Message::parse(response).unwrap();
    match m.get(AttributeType::ERROR_CODE) {
        Some(Ok(Attribute::ErrorCode(e))) => Some(e.code),
        _ => None,
    }
}

fn relayed(response: &[u8]) -> Vec<SocketAddr> {
    let m = Message::parse(response).unwrap();
    m.attributes()
        .filter(|a| a.typ == AttributeType::XOR_RELAYED_ADDRESS)
        .map(|a| match m.decode(a).unwrap() {
            Attribute::XorRelayedAddress(addr) => addr,
            _ => unreachable!(),
        })
        .collect()
}

fn key_of(login: &Login) -> Key {
    Key::long_term(login.algorithm, &login.username, REALM, &login.password).unwrap()
}

#[test]
fn allocate_after_401_succeeds_and_is_signed() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let response = w.allocate(client, &login, &[Attribute::Lifetime(1200)]);
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", error_code(&response));
    assert!(m.verify_integrity(&key_of(&login)));
    assert!(m.verify_fingerprint());
    assert_eq!(relayed(&response), ["192.0.2.10:50000".parse().unwrap()]);
    assert_eq!(m.get(AttributeType::LIFETIME).unwrap().unwrap(), Attribute::Lifetime(1200));
    assert_eq!(
        m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
        Attribute::XorMappedAddress(client.client)
    );
    assert_eq!(w.server.stats().allocations, 1);
}

#[test]
fn sha256_password_algorithm_is_accepted_and_answered_in_kind() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let mut login = w.login(client, "bob", "bob-pw");
    login.algorithm = PasswordAlgorithm::Sha256;
    let response = w.allocate(client, &login, &[]);
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", error_code(&response));
    assert!(m.verify_integrity_sha256(&key_of(&login)));
}

#[test]
fn wrong_password_unknown_user_and_expired_rest_username_get_401() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let good = w.login(client, "alice", "alice-pw");
    for (user, pass) in [("alice", "nope"), ("mallory", "x"), ("1700000000:carol", "whatever")] {
        let login = Login { username: user.into(), password: pass.into(), ..good.clone() };
        assert_eq!(error_code(&w.allocate(client, &login, &[])), Some(401), "{user}");
    }
    assert_eq!(w.server.stats().auth_failures, 3);
    // A valid REST username: expiry in the future, password from the shared secret.
    let username = format!("{}:carol", UNIX_START + 3600);
    let password = peerlink_turn::rest_password(b"rest-secret", &username);
    let login = Login { username, password, ..good };
    assert_eq!(error_code(&w.allocate(client, &login, &[])), None);
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    w.now += Duration::from_secs(601);
    let response = w.allocate(client, &login, &[]);
    assert_eq!(error_code(&response), Some(438));
    let m = Message::parse(&response).unwrap();
    let Some(Ok(Attribute::Nonce(fresh))) = m.get(AttributeType::NONCE) else { panic!("no nonce") };
    assert_ne!(fresh, login.nonce);
    let login = Login { nonce: fresh.to_owned(), ..login };
    assert_eq!(error_code(&w.allocate(client, &login, &[])), None);
}

#[test]
fn nonce_of_another_client_is_not_accepted() {
    let mut w = world();
    let login = w.login(udp("198.51.100.1:5000"), "alice", "alice-pw");
    assert_eq!(error_code(&w.allocate(udp("198.51.100.2:5000"), &login, &[])), Some(401));
}

#[test]
fn allocation_mismatch_retransmission_and_unsupported_transport() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let tid = w.next_tid();
    let request = w.request(Method::ALLOCATE, Some(&login), tid, &[Attribute::RequestedTransport(17)]);
    w.send(client, &request);
    let first = w.out.clone();
    // The same request again (a retransmission) gets the same relay.
    w.send(client, &request);
    assert_eq!(relayed(&w.out), relayed(&first));
    assert_eq!(w.relays.open.len(), 1);
    // A new Allocate on the same 5-tuple: 437.
    assert_eq!(error_code(&w.allocate(client, &login, &[])), Some(437));
    // Neither TCP nor UDP: 442. TCP over a UDP control connection: 400 (RFC 6062 §5.1).
    let other = udp("198.51.100.1:5001");
    let login = w.login(other, "alice", "alice-pw");
    let response = w.call(other, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(132)]);
    assert_eq!(error_code(&response), Some(442));
    let response = w.call(other, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(6)]);
    assert_eq!(error_code(&response), Some(400));
    let response = w.call(other, Method::ALLOCATE, Some(&login), &[]);
    assert_eq!(error_code(&response), Some(400), "REQUESTED-TRANSPORT is required");
}

#[test]
fn per_user_quota_gives_486() {
    let mut w = world_with(|c| c.max_allocations_per_user = 2);
    for port in 0..2 {
        let client = udp(&format!("198.51.100.1:{}", 6000 + port));
        let login = w.login(client, "alice", "alice-pw");
        assert_eq!(error_code(&w.allocate(client, &login, &[])), None);
    }
    let client = udp("198.51.100.1:6002");
    let login = w.login(client, "alice", "alice-pw");
    assert_eq!(error_code(&w.allocate(client, &login, &[])), Some(486));
    let login = w.login(client, "bob", "bob-pw");
    assert_eq!(error_code(&w.allocate(client, &login, &[])), None, "other users are not affected");
}

#[test]
fn refuses_loopback_private_and_mapped_peers_by_default() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    w.allocate(client, &login, &[Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
    for peer in ["127.0.0.1:9", "10.0.0.1:9", "[::ffff:127.0.0.1]:9", "169.254.169.254:80", "[::1]:9"] {
        let peer: SocketAddr = peer.parse().unwrap();
        let response =
            w.call(client, Method::CREATE_PERMISSION, Some(&login), &[Attribute::XorPeerAddress(peer)]);
        assert_eq!(error_code(&response), Some(403), "{peer}");
        let response = w.call(
            client,
            Method::CHANNEL_BIND,
            Some(&login),
            &[Attribute::ChannelNumber(0x4000), Attribute::XorPeerAddress(peer)],
        );
        assert_eq!(error_code(&response), Some(403), "{peer}");
    }
    assert_eq!(w.server.stats().refused_peers, 10);
    let ok = w.call(
        client,
        Method::CREATE_PERMISSION,
        Some(&login),
        &[Attribute::XorPeerAddress("203.0.113.5:9".parse().unwrap())],
    );
    assert_eq!(error_code(&ok), None);
}

#[test]
fn relays_both_ways_with_channels_and_indications() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let relay = relayed(&w.allocate(client, &login, &[]))[0];
    let relay_id = RelayId(u32::from(relay.port()));
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();

    // Before a permission: a Send indication is dropped, peer data too.
    let mut send = Vec::new();
    let mut writer = MessageWriter::new(&mut send, Class::Indication, Method::SEND, TransactionId([9; 12]));
    writer.attribute(&Attribute::XorPeerAddress(peer)).unwrap();
    writer.attribute(&Attribute::Data(b"hello peer")).unwrap();
    writer.finish();
    assert_eq!(w.send(client, &send), ClientAction::Nothing);
    assert_eq!(w.server.handle_peer(w.now, relay_id, peer, b"x", &mut w.out), PeerAction::Nothing);

    let response =
        w.call(client, Method::CREATE_PERMISSION, Some(&login), &[Attribute::XorPeerAddress(peer)]);
    assert_eq!(error_code(&response), None);
    match w.send(client, &send) {
        ClientAction::ToPeer { relay: r, peer: p, payload } => {
            assert_eq!((r, p), (relay_id, peer));
            assert_eq!(&send[payload], b"hello peer");
        }
        other => panic!("{other:?}"),
    }
    // Peer → client without a channel: a Data indication.
    assert_eq!(
        w.server.handle_peer(w.now, relay_id, peer, b"hi client", &mut w.out),
        PeerAction::ToClient(client)
    );
    let m = Message::parse(&w.out).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(m.get(AttributeType::DATA).unwrap().unwrap(), Attribute::Data(b"hi client"));
    assert_eq!(m.get(AttributeType::XOR_PEER_ADDRESS).unwrap().unwrap(), Attribute::XorPeerAddress(peer));

    // Bind a channel: both directions use ChannelData.
    let response = w.call(
        client,
        Method::CHANNEL_BIND,
        Some(&login),
        &[Attribute::ChannelNumber(0x4001), Attribute::XorPeerAddress(peer)],
    );
    assert_eq!(error_code(&response), None);
    let mut data = Vec::new();
    ChannelData::encode(0x4001, b"via channel", false, &mut data);
    match w.send(client, &data) {
        ClientAction::ToPeer { peer: p, payload, .. } => {
            assert_eq!(p, peer);
            assert_eq!(&data[payload], b"via channel");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        w.server.handle_peer(w.now, relay_id, peer, b"back", &mut w.out),
        PeerAction::ToClient(client)
    );
    assert_eq!(ChannelData::parse(&w.out).unwrap(), ChannelData { channel: 0x4001, payload: b"back" });
    // An unbound channel number is dropped; rebinding the channel to another peer is a 400.
    let mut unbound = Vec::new();
    ChannelData::encode(0x4002, b"x", false, &mut unbound);
    assert_eq!(w.send(client, &unbound), ClientAction::Nothing);
    let other_peer: SocketAddr = "203.0.113.6:7000".parse().unwrap();
    let response = w.call(
        client,
        Method::CHANNEL_BIND,
        Some(&login),
        &[Attribute::ChannelNumber(0x4001), Attribute::XorPeerAddress(other_peer)],
    );
    assert_eq!(error_code(&response), Some(400));

    // Permissions lapse after five minutes without refresh.
    w.now += Duration::from_secs(301);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.server.handle_peer(w.now, relay_id, peer, b"late", &mut w.out), PeerAction::Nothing);
    let stats = w.server.stats();
    assert_eq!((stats.packets_to_peers, stats.packets_to_clients), (2, 2));
}

#[test]
fn expired_channel_is_quarantined_for_five_minutes() {
    let mut w = world_with(|c| c.max_lifetime = Duration::from_secs(3600));
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    w.allocate(client, &login, &[Attribute::Lifetime(3600)]);
    let (first, second): (SocketAddr, SocketAddr) =
        ("203.0.113.5:7000".parse().unwrap(), "203.0.113.6:7000".parse().unwrap());
    let bind = |w: &mut World, peer: SocketAddr| {
        let login = w.login(client, "alice", "alice-pw");
        let response = w.call(
            client,
            Method::CHANNEL_BIND,
            Some(&login),
            &[Attribute::ChannelNumber(0x4001), Attribute::XorPeerAddress(peer)],
        );
        error_code(&response)
    };
    assert_eq!(bind(&mut w, first), None);
    assert_eq!(bind(&mut w, second), Some(400), "bound to the first peer");
    w.now += Duration::from_secs(601);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(bind(&mut w, second), Some(400), "expired, but in quarantine");
    w.now += Duration::from_secs(300);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(bind(&mut w, second), None, "free again after the quarantine");
}

#[test]
fn refresh_zero_deletes_and_expiry_closes_relays() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    w.allocate(client, &login, &[]);
    let response = w.call(client, Method::REFRESH, Some(&login), &[Attribute::Lifetime(0)]);
    assert_eq!(
        Message::parse(&response).unwrap().get(AttributeType::LIFETIME).unwrap().unwrap(),
        Attribute::Lifetime(0)
    );
    assert_eq!(w.relays.closed.len(), 1);
    assert_eq!(error_code(&w.call(client, Method::REFRESH, Some(&login), &[])), Some(437));

    // Another allocation simply runs out (default lifetime 600 s).
    let other = udp("198.51.100.1:5001");
    let login = w.login(other, "alice", "alice-pw");
    w.allocate(other, &login, &[]);
    w.now += Duration::from_secs(599);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.relays.closed.len(), 1);
    w.now += Duration::from_secs(2);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.relays.closed.len(), 2);
    assert_eq!(w.server.stats().allocations, 0);
}

#[test]
fn requests_other_than_allocate_need_an_allocation() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let peer = Attribute::XorPeerAddress("203.0.113.5:9".parse().unwrap());
    for (method, attrs) in [
        (Method::REFRESH, vec![]),
        (Method::CREATE_PERMISSION, vec![peer]),
        (Method::CHANNEL_BIND, vec![Attribute::ChannelNumber(0x4000), peer]),
    ] {
        assert_eq!(error_code(&w.call(client, method, Some(&login), &attrs)), Some(437), "{method:?}");
    }
}

#[test]
fn another_user_on_an_allocation_gets_441() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let alice = w.login(client, "alice", "alice-pw");
    w.allocate(client, &alice, &[]);
    let bob = Login { username: "bob".into(), password: "bob-pw".into(), ..alice };
    assert_eq!(error_code(&w.call(client, Method::REFRESH, Some(&bob), &[])), Some(441));
}

#[test]
fn even_port_reservation_is_handed_to_the_token_holder() {
    let mut w = world();
    let first = udp("198.51.100.1:5000");
    let login = w.login(first, "alice", "alice-pw");
    let response = w.allocate(first, &login, &[Attribute::EvenPort(true)]);
    let m = Message::parse(&response).unwrap();
    let Some(Ok(Attribute::ReservationToken(token))) = m.get(AttributeType::RESERVATION_TOKEN) else {
        panic!("no token")
    };
    let second = udp("198.51.100.1:5001");
    let login = w.login(second, "alice", "alice-pw");
    let response = w.allocate(second, &login, &[Attribute::ReservationToken(token)]);
    assert_eq!(relayed(&response), ["192.0.2.10:50001".parse().unwrap()]);
    // A token works once.
    let third = udp("198.51.100.1:5002");
    let login = w.login(third, "alice", "alice-pw");
    assert_eq!(error_code(&w.allocate(third, &login, &[Attribute::ReservationToken(token)])), Some(508));
}

#[test]
fn address_families_440_and_443() {
    let mut w = world();
    w.relays.no_v6 = true;
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let response = w.allocate(client, &login, &[Attribute::RequestedAddressFamily(AddressFamily::V6)]);
    assert_eq!(error_code(&response), Some(440));
    // Dual allocation without IPv6: IPv4 relay plus ADDRESS-ERROR-CODE 440.
    let response = w.allocate(client, &login, &[Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
    let m = Message::parse(&response).unwrap();
    assert!(matches!(m.get(AttributeType::ADDRESS_ERROR_CODE), Some(Ok(Attribute::AddressErrorCode { .. }))));
    assert_eq!(relayed(&response).len(), 1);
    let v6_peer: SocketAddr = "[2001:db8::5]:9".parse().unwrap();
    let response =
        w.call(client, Method::CREATE_PERMISSION, Some(&login), &[Attribute::XorPeerAddress(v6_peer)]);
    assert_eq!(error_code(&response), Some(443));
}

#[test]
fn junk_and_unknown_attributes() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    assert_eq!(w.send(client, &[]), ClientAction::Nothing);
    assert_eq!(w.send(client, &[0xFF; 40]), ClientAction::Nothing);
    assert_eq!(w.send(client, &[0x40, 0x00, 0x00, 0x10]), ClientAction::Nothing);
    let response = w.call(
        client,
        Method::ALLOCATE,
        None,
        &[Attribute::Unknown { typ: AttributeType(0x0077), value: b"?" }],
    );
    assert_eq!(error_code(&response), Some(420));
    // Binding requests are answered on the TURN port too.
    let response = w.call(client, Method::BINDING, None, &[]);
    assert_eq!(Message::parse(&response).unwrap().class(), Class::SuccessResponse);
    assert!(w.server.stats().dropped >= 3);
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_ip() {
    let mut w = world_with(|c| c.unauthenticated_per_second = 1);
    let client = udp("198.51.100.1:5000");
    let mut answered = 0;
    for _ in 0..50 {
        let tid = w.next_tid();
        let request = w.request(Method::ALLOCATE, None, tid, &[Attribute::RequestedTransport(17)]);
        if w.send(client, &request) == ClientAction::Reply {
            answered += 1;
        }
    }
    assert_eq!(answered, 10, "burst of ten, then silence");
    assert_eq!(w.server.stats().unauthenticated_throttled, 40);
}

#[test]
fn stale_nonces_and_tcp_clients_are_never_throttled() {
    let mut w = world_with(|c| c.unauthenticated_per_second = 1);
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    // Exhaust the UDP 401 budget for this IP.
    for _ in 0..20 {
        let tid = w.next_tid();
        let request = w.request(Method::ALLOCATE, None, tid, &[Attribute::RequestedTransport(17)]);
        w.send(client, &request);
    }
    // A stale nonce still gets its 438: the valid MAC proves we served this client.
    w.now += Duration::from_secs(601);
    let response = w.allocate(client, &login, &[]);
    assert_eq!(error_code(&response), Some(438));
    // TCP sources cannot be spoofed, so their 401s are not limited.
    let tcp = FiveTuple { transport: Transport::Tcp, ..client };
    for _ in 0..30 {
        let response = w.call(tcp, Method::ALLOCATE, None, &[Attribute::RequestedTransport(17)]);
        assert_eq!(error_code(&response), Some(401));
    }
}

#[test]
fn password_algorithms_without_a_choice_is_a_bad_request() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    static OFFER: [AlgorithmEntry<'static>; 1] = [AlgorithmEntry { algorithm: 1, parameters: &[] }];
    let response =
        w.allocate(client, &login, &[Attribute::PasswordAlgorithms(AlgorithmList::Values(&OFFER))]);
    assert_eq!(error_code(&response), Some(400));
}

#[test]
fn coturn_legacy_additional_address_family_number_is_understood() {
    let mut w = world();
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let response = w.allocate(
        client,
        &login,
        &[Attribute::Unknown { typ: AttributeType(0x8032), value: &[2, 0, 0, 0] }],
    );
    let relays = relayed(&response);
    assert_eq!(relays.len(), 2, "{:?}", error_code(&response));
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
}

#[test]
fn bandwidth_limit_drops_what_goes_over_and_refills() {
    let mut w = world_with(|c| c.max_bytes_per_second = Some(1000));
    let client = udp("198.51.100.1:5000");
    let login = w.login(client, "alice", "alice-pw");
    let relay = relayed(&w.allocate(client, &login, &[]))[0];
    let relay_id = RelayId(u32::from(relay.port()));
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    let response = w.call(
        client,
        Method::CHANNEL_BIND,
        Some(&login),
        &[Attribute::ChannelNumber(0x4000), Attribute::XorPeerAddress(peer)],
    );
    assert_eq!(error_code(&response), None);
    let mut data = Vec::new();
    ChannelData::encode(0x4000, &[7; 400], false, &mut data);
    let relayed: Vec<bool> =
        (0..4).map(|_| matches!(w.send(client, &data), ClientAction::ToPeer { .. })).collect();
    assert_eq!(relayed, [true, true, false, false], "1000 bytes of budget hold two 400-byte packets");
    // The peer's direction shares the budget.
    assert_eq!(w.server.handle_peer(w.now, relay_id, peer, &[1; 300], &mut w.out), PeerAction::Nothing);
    w.now += Duration::from_millis(500);
    assert!(matches!(w.send(client, &data), ClientAction::ToPeer { .. }), "half a second refills 500 bytes");
    assert_eq!(w.server.stats().over_bandwidth, 3);
}

/// An allocation of `user` on `client` with channel 0x4000 bound to 203.0.113.5:7000; the
/// ChannelData of a 400-byte payload on it.
fn allocation_with_channel(w: &mut World, client: FiveTuple, user: &str) -> Vec<u8> {
    let login = w.login(client, user, &format!("{user}-pw"));
    assert_eq!(error_code(&w.allocate(client, &login, &[])), None);
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    let attributes = [Attribute::ChannelNumber(0x4000), Attribute::XorPeerAddress(peer)];
    assert_eq!(error_code(&w.call(client, Method::CHANNEL_BIND, Some(&login), &attributes)), None);
    let mut data = Vec::new();
    ChannelData::encode(0x4000, &[7; 400], false, &mut data);
    data
}

fn relays(w: &mut World, client: FiveTuple, data: &[u8]) -> bool {
    matches!(w.send(client, data), ClientAction::ToPeer { .. })
}

#[test]
fn per_user_bandwidth_is_shared_by_the_users_allocations() {
    let mut w = world_with(|c| c.max_bytes_per_second_per_user = Some(1000));
    let (first, second, other) =
        (udp("198.51.100.1:5000"), udp("198.51.100.1:5001"), udp("198.51.100.2:5000"));
    let data = allocation_with_channel(&mut w, first, "alice");
    allocation_with_channel(&mut w, second, "alice");
    allocation_with_channel(&mut w, other, "bob");
    assert!(relays(&mut w, first, &data));
    assert!(relays(&mut w, second, &data));
    assert!(!relays(&mut w, first, &data), "alice's 1000 bytes are spent over both allocations");
    assert!(!relays(&mut w, second, &data));
    assert!(relays(&mut w, other, &data), "bob has his own");
    assert_eq!(w.server.stats().over_user_bandwidth, 2);
    assert_eq!(w.server.stats().over_bandwidth, 0);
    w.now += Duration::from_millis(400);
    assert!(relays(&mut w, second, &data), "400 ms refill 400 bytes");
}

#[test]
fn capacity_is_shared_by_cores_and_refuses_new_allocations_with_486_when_used_up() {
    let now = Instant::now();
    let capacity = std::sync::Arc::new(SharedRate::new(850, now));
    let mut cores: Vec<World> = (0..2)
        .map(|_| {
            let mut w = world_with(|c| c.capacity = Some(capacity.clone()));
            w.now = now;
            w
        })
        .collect();
    let client = udp("198.51.100.1:5000");
    let data = allocation_with_channel(&mut cores[0], client, "alice");
    let other = udp("198.51.100.2:5000");
    let other_data = allocation_with_channel(&mut cores[1], other, "bob");
    assert!(relays(&mut cores[0], client, &data));
    assert!(relays(&mut cores[1], other, &other_data));
    assert!(!relays(&mut cores[0], client, &data), "the other core spent the rest");
    assert_eq!(cores[0].server.stats().over_capacity, 1);
    // Less than a tenth of a second's worth left: no new allocation on either core.
    let late = udp("198.51.100.3:5000");
    let login = cores[1].login(late, "bob", "bob-pw");
    assert_eq!(error_code(&cores[1].allocate(late, &login, &[])), Some(486));
    assert_eq!(cores[1].server.stats().capacity_refusals, 1);
    for core in &mut cores {
        core.now += Duration::from_millis(500);
    }
    assert_eq!(error_code(&cores[1].allocate(late, &login, &[])), None, "capacity came back");
    assert!(relays(&mut cores[0], client, &data));
}

#[test]
fn a_packet_refused_by_the_capacity_is_not_charged_to_its_user() {
    let now = Instant::now();
    let capacity = std::sync::Arc::new(SharedRate::new(400, now));
    let mut w = world_with(|c| {
        c.capacity = Some(capacity.clone());
        c.max_bytes_per_second_per_user = Some(1000);
    });
    w.now = now;
    let client = udp("198.51.100.1:5000");
    let data = allocation_with_channel(&mut w, client, "alice");
    assert!(relays(&mut w, client, &data), "400 bytes: the whole capacity, 40% of alice's");
    for _ in 0..4 {
        assert!(!relays(&mut w, client, &data));
    }
    // Had the refused packets been charged to alice, her 1000 bytes would have run out on
    // the third and the last ones would count as over her limit.
    let stats = w.server.stats();
    assert_eq!((stats.over_capacity, stats.over_user_bandwidth), (4, 0));
}

// RFC 6062 TCP allocations.

fn tcp(client: &str) -> FiveTuple {
    FiveTuple { transport: Transport::Tcp, ..udp(client) }
}

const PEER: &str = "203.0.113.5:7000";

impl World {
    /// A TCP allocation on `control`, with a permission for PEER's address.
    fn tcp_allocation(&mut self, control: FiveTuple, user: &str, password: &str) -> (Login, RelayId) {
        let login = self.login(control, user, password);
        let response =
            self.call(control, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(6)]);
        assert_eq!(error_code(&response), None);
        let relay = RelayId(u32::from(relayed(&response)[0].port()));
        assert_eq!(self.relays.tcp, [relay], "the relay is a tcp one");
        let peer = Attribute::XorPeerAddress(PEER.parse().unwrap());
        assert_eq!(error_code(&self.call(control, Method::CREATE_PERMISSION, Some(&login), &[peer])), None);
        (login, relay)
    }

    /// Sends a Connect; no answer comes at once.
    fn connect(&mut self, control: FiveTuple, login: &Login, peer: &str) -> TransactionId {
        let tid = self.next_tid();
        let request = self.request(
            Method::CONNECT,
            Some(login),
            tid,
            &[Attribute::XorPeerAddress(peer.parse().unwrap())],
        );
        assert_eq!(self.send(control, &request), ClientAction::Nothing);
        tid
    }

    fn outputs(&mut self) -> Vec<(TcpOutput, Vec<u8>)> {
        let mut all = Vec::new();
        while let Some(output) = self.server.poll_tcp_output(&mut self.out) {
            all.push((output, self.out.clone()));
        }
        all
    }

    fn connection_bind(
        &mut self,
        data: FiveTuple,
        login: &Login,
        id: ConnectionId,
    ) -> (ClientAction, Vec<u8>) {
        let tid = self.next_tid();
        let request =
            self.request(Method::CONNECTION_BIND, Some(login), tid, &[Attribute::ConnectionId(id.0)]);
        let action = self.send(data, &request);
        (action, self.out.clone())
    }
}

impl World {
    /// A ConnectionBind that succeeds and turns `data` into a pipe.
    fn bind_ok(&mut self, data: FiveTuple, login: &Login, id: ConnectionId) {
        let (action, answer) = self.connection_bind(data, login, id);
        assert_eq!(action, ClientAction::Reply);
        assert_eq!(error_code(&answer), None);
        assert_eq!(self.server.bound_connection(&data), Some(id));
    }
}

fn connection_id(message: &[u8]) -> ConnectionId {
    match Message::parse(message).unwrap().get(AttributeType::CONNECTION_ID) {
        Some(Ok(Attribute::ConnectionId(id))) => ConnectionId(id),
        other => panic!("no CONNECTION-ID: {other:?}"),
    }
}

#[test]
fn tcp_allocation_needs_a_stream_control_connection_and_no_udp_only_attributes() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let login = w.login(control, "alice", "alice-pw");
    for extra in [Attribute::EvenPort(false), Attribute::DontFragment, Attribute::ReservationToken([1; 8])] {
        let response =
            w.call(control, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(6), extra]);
        assert_eq!(error_code(&response), Some(400), "{extra:?}");
    }
    assert!(w.relays.open.is_empty());
    let response = w.call(control, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(6)]);
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", error_code(&response));
    assert!(m.verify_integrity(&key_of(&login)));
    assert_eq!(w.relays.tcp.len(), 1);
    // Channels and Send indications have no place on a TCP allocation.
    let peer: SocketAddr = PEER.parse().unwrap();
    let response = w.call(
        control,
        Method::CHANNEL_BIND,
        Some(&login),
        &[Attribute::ChannelNumber(0x4000), Attribute::XorPeerAddress(peer)],
    );
    assert_eq!(error_code(&response), Some(400));
    assert_eq!(
        error_code(&w.call(
            control,
            Method::CREATE_PERMISSION,
            Some(&login),
            &[Attribute::XorPeerAddress(peer)]
        )),
        None
    );
    let mut send = Vec::new();
    let mut writer = MessageWriter::new(&mut send, Class::Indication, Method::SEND, TransactionId([9; 12]));
    writer.attribute(&Attribute::XorPeerAddress(peer)).unwrap();
    writer.attribute(&Attribute::Data(b"hello")).unwrap();
    writer.finish();
    assert_eq!(w.send(control, &send), ClientAction::Nothing);
    // Connect on a UDP allocation is a 400.
    let udp_client = udp("198.51.100.1:5001");
    let udp_login = w.login(udp_client, "alice", "alice-pw");
    w.allocate(udp_client, &udp_login, &[]);
    let response = w.call(udp_client, Method::CONNECT, Some(&udp_login), &[Attribute::XorPeerAddress(peer)]);
    assert_eq!(error_code(&response), Some(400));
    // A relay provider without TCP relays: 442.
    w.relays.no_tcp = true;
    let other = tcp("198.51.100.1:5002");
    let login = w.login(other, "alice", "alice-pw");
    let response = w.call(other, Method::ALLOCATE, Some(&login), &[Attribute::RequestedTransport(6)]);
    assert_eq!(error_code(&response), Some(442));
}

#[test]
fn connect_needs_a_permission_and_answers_with_a_connection_id() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    // No permission for this peer: 403, and nothing for the I/O layer.
    let response = w.call(
        control,
        Method::CONNECT,
        Some(&login),
        &[Attribute::XorPeerAddress("203.0.113.9:80".parse().unwrap())],
    );
    assert_eq!(error_code(&response), Some(403));
    let response = w.call(control, Method::CONNECT, Some(&login), &[]);
    assert_eq!(error_code(&response), Some(400), "XOR-PEER-ADDRESS is required");
    assert!(w.outputs().is_empty());

    let tid = w.connect(control, &login, PEER);
    let outputs = w.outputs();
    let [(TcpOutput::Connect { id, relay: r, peer }, _)] = outputs[..] else { panic!("{outputs:?}") };
    assert_eq!((r, peer), (relay, PEER.parse().unwrap()));
    // A second Connect to the same peer while the first is in progress: 446.
    let response =
        w.call(control, Method::CONNECT, Some(&login), &[Attribute::XorPeerAddress(PEER.parse().unwrap())]);
    assert_eq!(error_code(&response), Some(446));

    assert!(w.server.handle_peer_connected(w.now, id, true));
    let outputs = w.outputs();
    let [(TcpOutput::ToClient(to), ref answer)] = outputs[..] else { panic!("{outputs:?}") };
    assert_eq!(to, control);
    let m = Message::parse(answer).unwrap();
    assert_eq!((m.class(), m.method(), m.transaction_id()), (Class::SuccessResponse, Method::CONNECT, tid));
    assert!(m.verify_integrity(&key_of(&login)));
    assert_eq!(connection_id(answer), id);
    // Still one per peer once it is open.
    let response =
        w.call(control, Method::CONNECT, Some(&login), &[Attribute::XorPeerAddress(PEER.parse().unwrap())]);
    assert_eq!(error_code(&response), Some(446));
    let stats = w.server.stats();
    assert_eq!((stats.tcp_connections, stats.tcp_connections_opened), (1, 1));
}

#[test]
fn connection_bind_takes_only_a_pending_id_of_the_same_user_on_a_new_connection() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, _) = w.tcp_allocation(control, "alice", "alice-pw");
    w.connect(control, &login, PEER);
    let [(TcpOutput::Connect { id, .. }, _)] = w.outputs()[..] else { panic!() };

    let data = tcp("198.51.100.1:5001");
    let data_login = w.login(data, "alice", "alice-pw");
    // Still connecting: not bindable yet.
    let (action, answer) = w.connection_bind(data, &data_login, id);
    assert_eq!((action, error_code(&answer)), (ClientAction::Reply, Some(400)));
    assert!(w.server.handle_peer_connected(w.now, id, true));
    w.outputs();
    // An unknown id, and a message without one: 400.
    let (_, answer) = w.connection_bind(data, &data_login, ConnectionId(id.0 ^ 1));
    assert_eq!(error_code(&answer), Some(400));
    let answer = w.call(data, Method::CONNECTION_BIND, Some(&data_login), &[]);
    assert_eq!(error_code(&answer), Some(400));
    // Another user's request, over UDP, or on the control connection itself: 400.
    let bob = tcp("198.51.100.2:5000");
    let bob_login = w.login(bob, "bob", "bob-pw");
    assert_eq!(error_code(&w.connection_bind(bob, &bob_login, id).1), Some(400));
    let over_udp = udp("198.51.100.1:5002");
    let udp_login = w.login(over_udp, "alice", "alice-pw");
    assert_eq!(error_code(&w.connection_bind(over_udp, &udp_login, id).1), Some(400));
    assert_eq!(error_code(&w.connection_bind(control, &login, id).1), Some(400));
    // Unauthenticated: 401, not a bind.
    let mut bare = Vec::new();
    let mut writer =
        MessageWriter::new(&mut bare, Class::Request, Method::CONNECTION_BIND, TransactionId([7; 12]));
    writer.attribute(&Attribute::ConnectionId(id.0)).unwrap();
    writer.finish();
    w.send(data, &bare);
    assert_eq!(error_code(&w.out), Some(401));

    let (action, answer) = w.connection_bind(data, &data_login, id);
    assert_eq!((action, w.server.bound_connection(&data)), (ClientAction::Reply, Some(id)));
    let m = Message::parse(&answer).unwrap();
    assert_eq!((m.class(), m.method()), (Class::SuccessResponse, Method::CONNECTION_BIND));
    assert!(m.verify_integrity(&key_of(&data_login)));
    // Bound once only.
    let other = tcp("198.51.100.1:5003");
    let other_login = w.login(other, "alice", "alice-pw");
    assert_eq!(error_code(&w.connection_bind(other, &other_login, id).1), Some(400));
    // Bound connections do not time out; they live as long as the allocation.
    w.now += Duration::from_secs(120);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert!(w.outputs().is_empty());
    assert_eq!(w.server.stats().tcp_connections, 1);
    // Either side closing ends it for the core.
    w.server.handle_data_closed(id);
    assert_eq!(w.server.bound_connection(&data), None);
    assert_eq!(w.server.stats().tcp_connections, 0);
}

#[test]
fn failed_or_timed_out_connect_is_447() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, _) = w.tcp_allocation(control, "alice", "alice-pw");
    let tid = w.connect(control, &login, PEER);
    let [(TcpOutput::Connect { id, .. }, _)] = w.outputs()[..] else { panic!() };
    assert!(!w.server.handle_peer_connected(w.now, id, false));
    let outputs = w.outputs();
    let [(TcpOutput::ToClient(to), ref answer)] = outputs[..] else { panic!("{outputs:?}") };
    assert_eq!((to, error_code(answer)), (control, Some(447)));
    assert_eq!(Message::parse(answer).unwrap().transaction_id(), tid);

    // The peer never answers: 447 after 30 s, and the I/O layer drops the attempt.
    let tid = w.connect(control, &login, PEER);
    let [(TcpOutput::Connect { id, .. }, _)] = w.outputs()[..] else { panic!() };
    w.now += Duration::from_secs(29);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert!(w.outputs().is_empty(), "not before 30 s");
    w.now += Duration::from_secs(2);
    w.server.handle_timeout(w.now, &mut w.relays);
    let outputs = w.outputs();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert_eq!(outputs[0].0, TcpOutput::Close(id));
    assert_eq!(outputs[1].0, TcpOutput::ToClient(control));
    assert_eq!(error_code(&outputs[1].1), Some(447));
    assert_eq!(Message::parse(&outputs[1].1).unwrap().transaction_id(), tid);
    // A late success is refused.
    assert!(!w.server.handle_peer_connected(w.now, id, true));
    assert_eq!(w.server.stats().tcp_connect_failures, 2);
    assert_eq!(w.server.stats().tcp_connections, 0);
}

#[test]
fn inbound_peer_needs_a_permission_gets_a_connection_attempt_and_30_seconds() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    assert_eq!(w.server.handle_peer_accept(w.now, relay, "203.0.113.9:4000".parse().unwrap()), None);
    assert!(w.outputs().is_empty(), "no ConnectionAttempt without a permission");
    assert_eq!(w.server.handle_peer_accept(w.now, RelayId(1), PEER.parse().unwrap()), None, "unknown relay");

    let peer: SocketAddr = "203.0.113.5:4000".parse().unwrap();
    let id = w.server.handle_peer_accept(w.now, relay, peer).expect("permitted");
    let outputs = w.outputs();
    let [(TcpOutput::ToClient(to), ref indication)] = outputs[..] else { panic!("{outputs:?}") };
    assert_eq!(to, control);
    let m = Message::parse(indication).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::CONNECTION_ATTEMPT));
    assert_eq!(m.get(AttributeType::XOR_PEER_ADDRESS).unwrap().unwrap(), Attribute::XorPeerAddress(peer));
    assert_eq!(connection_id(indication), id);

    // Bound in time: a pipe.
    let data = tcp("198.51.100.1:5001");
    let data_login = w.login(data, "alice", "alice-pw");
    w.bind_ok(data, &data_login, id);

    // Another one that is never bound: closed after 30 s, unbindable after.
    let late = w.server.handle_peer_accept(w.now, relay, "203.0.113.5:4001".parse().unwrap()).unwrap();
    assert_ne!(late, id);
    w.outputs();
    w.now += Duration::from_secs(31);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.outputs().iter().map(|(o, _)| *o).collect::<Vec<_>>(), [TcpOutput::Close(late)]);
    let data = tcp("198.51.100.1:5002");
    let data_login = w.login(data, "alice", "alice-pw");
    assert_eq!(error_code(&w.connection_bind(data, &data_login, late).1), Some(400));
    let _ = login;
}

#[test]
fn data_connections_close_with_their_allocation() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    let inbound = w.server.handle_peer_accept(w.now, relay, "203.0.113.5:4000".parse().unwrap()).unwrap();
    w.connect(control, &login, PEER);
    let outputs = w.outputs();
    let Some(TcpOutput::Connect { id: outbound, .. }) =
        outputs.iter().map(|(o, _)| *o).find(|o| matches!(o, TcpOutput::Connect { .. }))
    else {
        panic!("{outputs:?}")
    };
    let response = w.call(control, Method::REFRESH, Some(&login), &[Attribute::Lifetime(0)]);
    assert_eq!(error_code(&response), None);
    let mut closed: Vec<TcpOutput> = w.outputs().into_iter().map(|(o, _)| o).collect();
    closed.sort_by_key(|o| match o {
        TcpOutput::Close(id) => id.0,
        _ => 0,
    });
    let mut expected = vec![TcpOutput::Close(inbound), TcpOutput::Close(outbound)];
    expected.sort_by_key(|o| match o {
        TcpOutput::Close(id) => id.0,
        _ => 0,
    });
    assert_eq!(closed, expected);
    assert!(w.relays.closed.contains(&relay));
    assert_eq!(w.server.stats().tcp_connections, 0);

    // The control connection going away does the same.
    let control = tcp("198.51.100.1:6000");
    w.relays.tcp.clear();
    let (_, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    let id = w.server.handle_peer_accept(w.now, relay, "203.0.113.5:4000".parse().unwrap()).unwrap();
    w.outputs();
    w.server.handle_client_closed(&control, &mut w.relays);
    assert_eq!(w.outputs().iter().map(|(o, _)| *o).collect::<Vec<_>>(), [TcpOutput::Close(id)]);
    // Data from a peer on a TCP relay is never relayed as datagrams.
    assert_eq!(
        w.server.handle_peer(w.now, relay, PEER.parse().unwrap(), b"x", &mut w.out),
        PeerAction::Nothing
    );
}

#[test]
fn connections_per_allocation_are_bounded() {
    let mut w = world_with(|c| {
        c.max_tcp_connections_per_allocation = 3;
        c.max_pending_tcp_connections_per_allocation = 2;
    });
    let control = tcp("198.51.100.1:5000");
    let (login, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    let peer = |port: u16| SocketAddr::new("203.0.113.5".parse().unwrap(), port);
    let first = w.server.handle_peer_accept(w.now, relay, peer(1)).unwrap();
    w.server.handle_peer_accept(w.now, relay, peer(2)).unwrap();
    assert_eq!(w.server.handle_peer_accept(w.now, relay, peer(3)), None, "two pending at most");
    let response =
        w.call(control, Method::CONNECT, Some(&login), &[Attribute::XorPeerAddress(PEER.parse().unwrap())]);
    assert_eq!(error_code(&response), Some(508));
    // Binding one frees a pending slot, up to three connections in all.
    let data = tcp("198.51.100.1:5001");
    let data_login = w.login(data, "alice", "alice-pw");
    w.bind_ok(data, &data_login, first);
    w.server.handle_peer_accept(w.now, relay, peer(3)).unwrap();
    assert_eq!(w.server.handle_peer_accept(w.now, relay, peer(4)), None, "three in all");
    // A closed one frees its slot.
    w.server.handle_data_closed(first);
    w.server.handle_data_closed(first);
    assert!(w.server.handle_peer_accept(w.now, relay, peer(4)).is_none(), "still two pending");
    w.outputs();
    assert_eq!(w.server.stats().tcp_connections, 2);
}

#[test]
fn a_tcp_nonce_serves_every_tcp_connection_of_that_address_only() {
    let mut w = world();
    let control = tcp("198.51.100.1:5000");
    let (login, relay) = w.tcp_allocation(control, "alice", "alice-pw");
    let id = w.server.handle_peer_accept(w.now, relay, "203.0.113.5:4000".parse().unwrap()).unwrap();
    // A UDP nonce is for its port, a TCP nonce for no UDP client, nor another address.
    assert_eq!(error_code(&w.connection_bind(udp("198.51.100.1:5000"), &login, id).1), Some(401));
    assert_eq!(error_code(&w.connection_bind(tcp("198.51.100.2:5001"), &login, id).1), Some(401));
    let udp_client = udp("198.51.100.1:6000");
    let udp_login = w.login(udp_client, "alice", "alice-pw");
    assert_eq!(error_code(&w.allocate(udp("198.51.100.1:6001"), &udp_login, &[])), Some(401));
    // RFC 6062 §4.3: the data connection uses the control connection's nonce.
    w.bind_ok(tcp("198.51.100.1:5001"), &login, id);
}

#[test]
fn allocations_that_relay_nothing_are_counted_when_they_go() {
    let mut w = world_with(|c| c.max_allocations_per_user = 3);
    let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
    // One never asks for a permission; one sends on a channel it never bound; one relays.
    let idle = udp("198.51.100.1:5000");
    let login = w.login(idle, "alice", "alice-pw");
    w.allocate(idle, &login, &[]);
    let unbound = udp("198.51.100.1:5001");
    let login = w.login(unbound, "alice", "alice-pw");
    w.allocate(unbound, &login, &[]);
    let mut data = Vec::new();
    ChannelData::encode(0x4000, &[7; 100], false, &mut data);
    assert_eq!(w.send(unbound, &data), ClientAction::Nothing);
    let busy = udp("198.51.100.1:5002");
    let login = w.login(busy, "alice", "alice-pw");
    w.allocate(busy, &login, &[]);
    let bind = [Attribute::ChannelNumber(0x4000), Attribute::XorPeerAddress(peer)];
    assert_eq!(error_code(&w.call(busy, Method::CHANNEL_BIND, Some(&login), &bind)), None);
    assert!(matches!(w.send(busy, &data), ClientAction::ToPeer { .. }));
    // The quota is reached: refused, and counted.
    let fourth = udp("198.51.100.1:5003");
    let login = w.login(fourth, "alice", "alice-pw");
    assert_eq!(error_code(&w.allocate(fourth, &login, &[])), Some(486));
    assert_eq!(w.server.stats().quota_refusals, 1);
    assert_eq!(w.server.stats().silent_allocations, 0, "none has gone yet");
    w.now += Duration::from_secs(601);
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.server.stats().allocations, 0);
    assert_eq!(w.server.stats().silent_allocations, 2, "the idle one and the unbound one");
}

#[test]
fn connection_ids_name_the_shard_that_issued_them_and_binds_say_which() {
    let mut seen = std::collections::HashSet::new();
    for shard in 0..3u32 {
        let mut w = world_with(|c| c.shard = (shard, 3));
        let control = tcp("198.51.100.1:5000");
        let (login, _) = w.tcp_allocation(control, "alice", "alice-pw");
        for port in 0..8u16 {
            w.connect(control, &login, &format!("203.0.113.5:{}", 7000 + port));
            let [(TcpOutput::Connect { id, .. }, _)] = w.outputs()[..] else { panic!() };
            assert_eq!(id.0 % 3, shard, "{id:?} from shard {shard}");
            assert!(seen.insert(id.0), "shards issue different ids: {id:?} twice");
            assert!(w.server.handle_peer_connected(w.now, id, true));
            w.outputs();
            let data = tcp(&format!("198.51.100.1:{}", 6000 + port));
            let data_login = w.login(data, "alice", "alice-pw");
            let tid = w.next_tid();
            let request =
                w.request(Method::CONNECTION_BIND, Some(&data_login), tid, &[Attribute::ConnectionId(id.0)]);
            assert_eq!(connection_bind_shard(&request, 3), Some(shard));
            assert_eq!(connection_bind_shard(&request, 1), Some(0));
            // The shard that issued it binds it.
            w.bind_ok(data, &data_login, id);
        }
    }
    // Other messages, a bind without an id, empty, truncated and garbage input: no shard.
    let mut w = world();
    let tid = w.next_tid();
    let allocate = w.request(Method::ALLOCATE, None, tid, &[Attribute::RequestedTransport(6)]);
    assert_eq!(connection_bind_shard(&allocate, 2), None);
    let bare = w.request(Method::CONNECTION_BIND, None, tid, &[]);
    assert_eq!(connection_bind_shard(&bare, 2), None);
    let bind = w.request(Method::CONNECTION_BIND, None, tid, &[Attribute::ConnectionId(5)]);
    assert_eq!(connection_bind_shard(&bind, 2), Some(1));
    assert_eq!(connection_bind_shard(&bind, 0), Some(0), "zero shards count as one");
    assert_eq!(connection_bind_shard(&[], 2), None);
    assert_eq!(connection_bind_shard(&bind[..bind.len() - 1], 2), None);
    assert_eq!(connection_bind_shard(&bind[..20], 2), None);
    assert_eq!(connection_bind_shard(&[0xff; 64], 2), None);
}

#[test]
fn a_tcp_budget_that_ran_out_comes_back_in_pieces_of_ten_milliseconds() {
    // The I/O layer reads a pipe side no more than the allowance: handing the budget out
    // as it trickles back would have it read a few bytes per turn of its loop.
    let mut w = world_with(|c| c.max_bytes_per_second = Some(100_000));
    let control = tcp("198.51.100.1:5000");
    let (login, _) = w.tcp_allocation(control, "alice", "alice-pw");
    w.connect(control, &login, PEER);
    let [(TcpOutput::Connect { id, .. }, _)] = w.outputs()[..] else { panic!() };
    assert!(w.server.handle_peer_connected(w.now, id, true));
    w.outputs();
    assert_eq!(w.server.tcp_allowance(w.now, id), Some(100_000), "the budget starts full");
    w.server.spend_tcp(w.now, id, 100_000);
    assert_eq!(w.server.tcp_allowance(w.now, id), Some(0));
    w.now += Duration::from_millis(5);
    assert_eq!(w.server.tcp_allowance(w.now, id), Some(0), "500 bytes are less than 10 ms of the rate");
    w.now += Duration::from_millis(5);
    assert_eq!(w.server.tcp_allowance(w.now, id), Some(1000));
}
