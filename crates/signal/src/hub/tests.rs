use super::*;
use crate::protocol::ServerMessage;
use crate::token;

const UNIX: u64 = 1_800_000_000;

struct Harness {
    hub: Hub,
    now: Instant,
}

impl Harness {
    fn new(config: HubConfig) -> Harness {
        let now = Instant::now();
        Harness { hub: Hub::new(config, now, UNIX, [9; 32]), now }
    }

    fn connect(&mut self) -> ConnId {
        self.hub.connect(self.now, "example.org").unwrap()
    }

    fn send(&mut self, conn: ConnId, text: &str) {
        self.hub.handle_text(self.now, conn, text);
    }

    fn join(&mut self, conn: ConnId, room: &str, name: &str) -> String {
        self.send(conn, &format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#));
        let out = self.drain();
        match parse(&out, conn).first() {
            Some(ServerMessage::Welcome { id, .. }) => id.clone(),
            other => panic!("no welcome: {other:?}"),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.hub.handle_timeout(self.now);
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.hub.poll_output()).collect()
    }
}

/// The frames sent to `conn`, parsed.
fn parse(out: &[Output], conn: ConnId) -> Vec<ServerMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, text } if *c == conn => Some(ServerMessage::parse(text).unwrap()),
            _ => None,
        })
        .collect()
}

fn error_codes(out: &[Output], conn: ConnId) -> Vec<String> {
    parse(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Error { code, .. } => Some(code),
            _ => None,
        })
        .collect()
}

fn closed(out: &[Output], conn: ConnId) -> Option<u16> {
    out.iter().find_map(|o| match o {
        Output::Close { conn: c, code, .. } if *c == conn => Some(*code),
        _ => None,
    })
}

#[test]
fn newcomer_gets_the_room_and_the_room_hears_of_the_newcomer() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b) = (h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    h.send(b, r#"{"type":"join","room":"r","name":"bob"}"#);
    let out = h.drain();
    let Some(ServerMessage::Welcome { id: bob, room, peers, .. }) = parse(&out, b).into_iter().next() else {
        panic!("{out:?}")
    };
    assert_eq!(room, "r");
    assert_eq!(peers, [PeerInfo { id: alice.clone(), name: "alice".into() }]);
    assert_ne!(bob, alice);
    match &parse(&out, a)[..] {
        [ServerMessage::PeerJoined { peer }] => assert_eq!((&peer.id, peer.name.as_str()), (&bob, "bob")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn welcome_hands_out_turn_credentials_the_turn_server_accepts() {
    let config = HubConfig {
        ice: IceConfig {
            stun_urls: vec!["stun:{host}:3478".into()],
            turn_urls: vec!["turn:{host}:3478?transport=udp".into(), "turn:{host}:3478?transport=tcp".into()],
            turn_secret: Some(b"shared".to_vec()),
            credential_ttl: Duration::from_secs(86400),
        },
        ..HubConfig::default()
    };
    let mut h = Harness::new(config);
    let a = h.connect();
    h.send(a, r#"{"type":"join","room":"r","name":"alice"}"#);
    let out = h.drain();
    let Some(ServerMessage::Welcome { id, ice_servers, .. }) = parse(&out, a).into_iter().next() else {
        panic!()
    };
    assert_eq!(ice_servers[0].urls, ["stun:example.org:3478"]);
    assert_eq!(ice_servers[1].urls[1], "turn:example.org:3478?transport=tcp");
    let username = ice_servers[1].username.clone().unwrap();
    assert_eq!(username, format!("{}:{id}", UNIX + 86400));
    let credential = ice_servers[1].credential.clone().unwrap();
    assert_eq!(credential, peerlink_turn::auth::rest_password(b"shared", &username));
    // The TURN server's own check: a REST user valid now, with that password.
    let mut creds = peerlink_turn::Credentials::new();
    creds.add_secret(b"shared");
    let md5 = peerlink_stun::PasswordAlgorithm::Md5;
    assert_eq!(creds.keys(&username, "peerlink", md5, UNIX).map(|k| k.len()).ok(), Some(1));
    assert!(creds.keys(&username, "peerlink", md5, UNIX + 86401).is_err(), "valid for a day only");
}

#[test]
fn signal_reaches_only_a_peer_of_the_same_room() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    let _alice = h.join(a, "r", "alice");
    let bob = h.join(b, "r", "bob");
    let carol = h.join(c, "other", "carol");
    h.drain();
    h.send(
        a,
        &format!(
            r#"{{"type":"signal","to":"{bob}","data":{{"description":{{"type":"offer","sdp":"v=0"}}}}}}"#
        ),
    );
    let out = h.drain();
    let [Output::Send { conn, text }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(*conn, b);
    assert!(text.ends_with(r#""data":{"description":{"type":"offer","sdp":"v=0"}}}"#), "{text}");
    for to in [carol.as_str(), "nobody", &_alice] {
        h.send(a, &format!(r#"{{"type":"signal","to":"{to}","data":1}}"#));
        assert_eq!(error_codes(&h.drain(), a), ["unknown-peer"], "to {to}");
    }
    assert_eq!(h.hub.stats().signals_relayed, 1);
}

#[test]
fn refuses_out_of_order_and_invalid_joins_without_closing() {
    let mut h = Harness::new(HubConfig::default());
    let a = h.connect();
    h.send(a, r#"{"type":"signal","to":"x","data":1}"#);
    h.send(a, r#"{"type":"leave"}"#);
    h.send(a, r#"{"type":"join","room":"bad room","name":"a"}"#);
    h.send(a, r#"{"type":"join","room":"r","name":"\u0007"}"#);
    h.send(a, r#"{"type":"nope"}"#);
    let out = h.drain();
    assert_eq!(error_codes(&out, a), ["not-joined", "not-joined", "bad-room", "bad-name", "unknown-type"]);
    assert_eq!(closed(&out, a), None);
    h.join(a, "r", "alice");
    h.send(a, r#"{"type":"join","room":"r2","name":"alice"}"#);
    assert_eq!(error_codes(&h.drain(), a), ["already-joined"]);
}

#[test]
fn leave_tells_the_room_and_allows_a_new_join() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b) = (h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    h.join(b, "r", "bob");
    h.drain();
    h.send(a, r#"{"type":"leave"}"#);
    let out = h.drain();
    assert!(matches!(&parse(&out, b)[..], [ServerMessage::PeerLeft { id }] if *id == alice));
    let again = h.join(a, "r2", "alice");
    assert_ne!(again, alice);
    assert_eq!(h.hub.stats().rooms, 2);
}

#[test]
fn shutdown_closes_everyone_with_1001_and_tells_nobody_anyone_left() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.join(a, "r", "alice");
    h.join(b, "r", "bob");
    h.join(c, "r", "carol");
    h.drain();
    h.hub.close_all(h.now);
    let out = h.drain();
    for conn in [a, b, c] {
        assert_eq!(closed(&out, conn), Some(CLOSE_GOING_AWAY));
        assert!(parse(&out, conn).is_empty(), "{out:?}");
    }
    assert_eq!(h.hub.stats().rooms, 0);
    assert!(h.hub.connect(h.now, "x").is_none(), "no newcomers while closing");
}

/// Joins with `{"id": requested}`; returns the id granted.
fn rejoin(h: &mut Harness, conn: ConnId, name: &str, requested: &str) -> (String, Vec<Output>) {
    h.send(conn, &format!(r#"{{"type":"join","room":"r","name":"{name}","id":"{requested}"}}"#));
    let out = h.drain();
    match parse(&out, conn).first() {
        Some(ServerMessage::Welcome { id, .. }) => (id.clone(), out),
        other => panic!("no welcome: {other:?}"),
    }
}

#[test]
fn a_peer_back_after_a_restart_gets_its_id_again_and_the_room_recognises_it() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b) = (h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    let bob = h.join(b, "r", "bob");
    h.drain();
    // The server restarts: a new hub with another key, empty rooms.
    let mut h = Harness { hub: Hub::new(HubConfig::default(), h.now, UNIX, [42; 32]), now: h.now };
    let (b2, a2) = (h.connect(), h.connect());
    let (id, _) = rejoin(&mut h, b2, "bob", &bob);
    assert_eq!(id, bob);
    let (id, out) = rejoin(&mut h, a2, "alice", &alice);
    assert_eq!(id, alice);
    // Bob hears of alice under the id he has a connection with.
    assert!(matches!(&parse(&out, b2)[..], [ServerMessage::PeerJoined { peer }] if peer.id == alice));
    // Signals flow under the old ids.
    h.send(b2, &format!(r#"{{"type":"signal","to":"{alice}","data":1}}"#));
    assert!(matches!(&parse(&h.drain(), a2)[..], [ServerMessage::Signal { from, .. }] if *from == bob));
}

#[test]
fn a_present_or_malformed_id_cannot_be_claimed() {
    let mut h = Harness::new(HubConfig { max_room_peers: 10, ..HubConfig::default() });
    let (a, b) = (h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    h.drain();
    // Alice is here: mallory asking for her id gets a fresh one, and alice keeps hers.
    let (id, out) = rejoin(&mut h, b, "mallory", &alice);
    assert_ne!(id, alice);
    assert!(matches!(&parse(&out, a)[..], [ServerMessage::PeerJoined { peer }] if peer.id == id));
    // Ids in another room count as present too.
    let c = h.connect();
    h.send(c, &format!(r#"{{"type":"join","room":"other","name":"m","id":"{alice}"}}"#));
    let Some(ServerMessage::Welcome { id, .. }) = parse(&h.drain(), c).into_iter().next() else { panic!() };
    assert_ne!(id, alice);
    for bad in ["sfu", "ABCDEF0123456789", "0123", "0123456789abcdef0", "../../0123456789"] {
        let d = h.connect();
        let (id, _) = rejoin(&mut h, d, "x", bad);
        assert_ne!(id, bad);
        assert!(protocol::valid_peer_id(&id), "{id}");
    }
    // Once alice is gone, her id is free again (she is back after losing her connection).
    h.hub.disconnect(h.now, a);
    h.drain();
    let a2 = h.connect();
    assert_eq!(rejoin(&mut h, a2, "alice", &alice).0, alice);
}

#[test]
fn a_peer_whose_old_connection_lingers_takes_its_place_back_with_its_resume_token() {
    let mut h = Harness::new(HubConfig { max_room_peers: 2, ..HubConfig::default() });
    let (a, b) = (h.connect(), h.connect());
    h.send(a, r#"{"type":"join","room":"r","name":"alice"}"#);
    let out = h.drain();
    let Some(ServerMessage::Welcome { id: alice, resume: Some(token), .. }) =
        parse(&out, a).into_iter().next()
    else {
        panic!("{out:?}")
    };
    assert_eq!(token.len(), 32);
    h.join(b, "r", "bob");
    h.drain();
    // Alice's connection died without a close; the server still holds it. Without the token,
    // or with another's, or for another room, her id stays hers and the newcomer gets another.
    let m = h.connect();
    let wrong = format!("{}0", &token[..31]);
    for (room, resume) in [("r", wrong.as_str()), ("r", ""), ("other", token.as_str())] {
        h.send(
            m,
            &format!(r#"{{"type":"join","room":"{room}","name":"m","id":"{alice}","resume":"{resume}"}}"#),
        );
        let out = h.drain();
        match parse(&out, m).first() {
            Some(ServerMessage::Welcome { id, .. }) => {
                assert_ne!(*id, alice);
                h.send(m, r#"{"type":"leave"}"#);
                h.drain();
            }
            Some(ServerMessage::Error { code, .. }) => assert_eq!(code, "room-full"),
            other => panic!("{other:?}"),
        }
        assert_eq!(closed(&out, a), None);
    }
    // With her token she is back, although the room is full: the old connection is closed,
    // and bob hears she joined under the id he knows, never that she left.
    let a2 = h.connect();
    h.send(a2, &format!(r#"{{"type":"join","room":"r","name":"alice","id":"{alice}","resume":"{token}"}}"#));
    let out = h.drain();
    assert!(
        matches!(parse(&out, a2).first(), Some(ServerMessage::Welcome { id, .. }) if *id == alice),
        "{out:?}"
    );
    assert_eq!(closed(&out, a), Some(CLOSE_REPLACED));
    assert!(
        matches!(&parse(&out, b)[..], [ServerMessage::PeerJoined { peer }] if peer.id == alice),
        "{out:?}"
    );
    h.send(b, &format!(r#"{{"type":"signal","to":"{alice}","data":1}}"#));
    assert!(matches!(&parse(&h.drain(), a2)[..], [ServerMessage::Signal { .. }]));
    // The old socket's end, reported later, changes nothing.
    h.hub.disconnect(h.now, a);
    assert!(parse(&h.drain(), b).is_empty());
    assert_eq!(h.hub.stats().joined, 2);
}

#[test]
fn a_full_room_refuses_the_next_peer() {
    let mut h = Harness::new(HubConfig { max_room_peers: 2, ..HubConfig::default() });
    let conns: Vec<_> = (0..3).map(|_| h.connect()).collect();
    h.join(conns[0], "r", "a");
    h.join(conns[1], "r", "b");
    h.send(conns[2], r#"{"type":"join","room":"r","name":"c"}"#);
    assert_eq!(error_codes(&h.drain(), conns[2]), ["room-full"]);
    h.join(conns[2], "elsewhere", "c");
}

#[test]
fn oversized_frames_are_refused_and_the_connection_kept() {
    let mut h = Harness::new(HubConfig { max_frame_bytes: 1000, ..HubConfig::default() });
    let a = h.connect();
    let alice = h.join(a, "r", "alice");
    let big = format!(r#"{{"type":"signal","to":"{alice}","data":"{}"}}"#, "x".repeat(1000));
    h.send(a, &big);
    let out = h.drain();
    assert_eq!(error_codes(&out, a), ["too-large"]);
    assert_eq!(closed(&out, a), None);
}

#[test]
fn continued_abuse_closes_with_1008_and_others_are_served() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    h.join(b, "r", "bob");
    let carol = h.join(c, "r", "carol");
    h.drain();
    let mut errors = 0;
    for _ in 0..100 {
        h.send(a, "{not json");
        let out = h.drain();
        errors += error_codes(&out, a).len();
        if let Some(code) = closed(&out, a) {
            assert_eq!(code, CLOSE_POLICY);
            break;
        }
    }
    assert!((5..=10).contains(&errors), "{errors} error frames before the close");
    assert_eq!(h.hub.stats().closed_for_abuse, 1);
    // Frames from a closed connection are ignored.
    h.send(a, "{");
    assert!(h.drain().is_empty());
    // The others still talk.
    h.send(b, &format!(r#"{{"type":"signal","to":"{carol}","data":{{}}}}"#));
    assert_eq!(parse(&h.drain(), c).len(), 1);
}

#[test]
fn a_few_mistakes_spread_over_time_are_forgiven() {
    let mut h = Harness::new(HubConfig::default());
    let a = h.connect();
    for _ in 0..60 {
        h.send(a, "oops");
        h.advance(Duration::from_secs(3));
    }
    let out = h.drain();
    assert_eq!(closed(&out, a), None);
}

#[test]
fn floods_are_throttled_with_one_error_then_closed() {
    let mut h =
        Harness::new(HubConfig { messages_per_second: 10.0, message_burst: 20.0, ..HubConfig::default() });
    let a = h.connect();
    let alice = h.join(a, "r", "alice");
    let b = h.connect();
    let bob = h.join(b, "r", "bob");
    h.drain();
    let msg = format!(r#"{{"type":"signal","to":"{bob}","data":0}}"#);
    let mut delivered = 0;
    let mut rate_errors = 0;
    let mut close = None;
    for _ in 0..1000 {
        h.send(a, &msg);
        let out = h.drain();
        delivered += parse(&out, b).iter().filter(|m| matches!(m, ServerMessage::Signal { .. })).count();
        rate_errors += error_codes(&out, a).iter().filter(|c| *c == "rate-limited").count();
        if let Some(code) = closed(&out, a) {
            close = Some(code);
            break;
        }
    }
    assert_eq!(delivered, 19, "the burst (less the join) goes through");
    assert_eq!(rate_errors, 1);
    assert_eq!(close, Some(CLOSE_POLICY));
    let out = h.drain();
    assert!(out.is_empty(), "{out:?}");
    let _ = alice;
}

#[test]
fn a_paced_sender_is_never_throttled() {
    let mut h =
        Harness::new(HubConfig { messages_per_second: 10.0, message_burst: 20.0, ..HubConfig::default() });
    let (a, b) = (h.connect(), h.connect());
    h.join(a, "r", "alice");
    let bob = h.join(b, "r", "bob");
    h.drain();
    for _ in 0..500 {
        h.send(a, &format!(r#"{{"type":"signal","to":"{bob}","data":0}}"#));
        h.now += Duration::from_millis(100);
    }
    let out = h.drain();
    assert_eq!(parse(&out, b).len(), 500);
    assert!(error_codes(&out, a).is_empty());
}

#[test]
fn binary_frames_get_bad_request() {
    let mut h = Harness::new(HubConfig::default());
    let a = h.connect();
    h.hub.handle_binary(h.now, a);
    assert_eq!(error_codes(&h.drain(), a), ["bad-request"]);
}

#[test]
fn tokens_gate_joins_when_configured() {
    let secret = b"token-secret".to_vec();
    let mut h = Harness::new(HubConfig { token_secret: Some(secret.clone()), ..HubConfig::default() });
    let a = h.connect();
    h.send(a, r#"{"type":"join","room":"r","name":"a"}"#);
    let other_room = token::issue(&secret, "r2", Some(UNIX + 60));
    h.send(a, &format!(r#"{{"type":"join","room":"r","name":"a","token":"{other_room}"}}"#));
    let expired = token::issue(&secret, "r", Some(UNIX - 3600));
    h.send(a, &format!(r#"{{"type":"join","room":"r","name":"a","token":"{expired}"}}"#));
    assert_eq!(error_codes(&h.drain(), a), ["unauthorized", "unauthorized", "unauthorized"]);
    let good = token::issue(&secret, "r", Some(UNIX + 60));
    h.send(a, &format!(r#"{{"type":"join","room":"r","name":"a","token":"{good}"}}"#));
    assert!(matches!(parse(&h.drain(), a).first(), Some(ServerMessage::Welcome { .. })));
}

#[test]
fn keepalive_pings_and_drops_a_dead_connection_within_30_seconds() {
    let mut h = Harness::new(HubConfig::default());
    let (a, b) = (h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    h.join(b, "r", "bob");
    h.drain();
    let mut pings = 0;
    let mut left_at = None;
    for second in 1..=40 {
        h.advance(Duration::from_secs(1));
        // Bob answers every ping; alice is gone without a word.
        for out in h.drain() {
            match out {
                Output::Ping { conn } if conn == b => {
                    pings += 1;
                    h.hub.handle_pong(h.now, b);
                }
                Output::Send { conn, text } if conn == b && text.contains("peer-left") => {
                    assert!(text.contains(&alice));
                    left_at = Some(second);
                }
                _ => {}
            }
        }
    }
    let left_at = left_at.expect("alice never left");
    assert!(left_at <= 30, "left after {left_at} s");
    assert!(pings >= 3, "{pings} pings");
    assert_eq!(h.hub.stats().connections, 1);
    assert!(h.hub.poll_timeout() > h.now);
}

#[test]
fn a_full_server_refuses_connections() {
    let mut h = Harness::new(HubConfig { max_connections: 1, ..HubConfig::default() });
    let a = h.connect();
    assert!(h.hub.connect(h.now, "x").is_none());
    h.hub.disconnect(h.now, a);
    assert!(h.hub.connect(h.now, "x").is_some());
}

/// Two hubs whose `Publish` outputs are delivered to each other, like Redis would.
struct Cluster {
    hubs: [Hub; 2],
    now: Instant,
}

impl Cluster {
    fn new() -> Cluster {
        let now = Instant::now();
        let mut hubs = [
            Hub::new(HubConfig::default(), now, UNIX, [1; 32]),
            Hub::new(HubConfig::default(), now, UNIX, [2; 32]),
        ];
        for hub in &mut hubs {
            hub.enable_cluster(now);
        }
        Cluster { hubs, now }
    }

    /// A connection to node `i` that joins room `r` as `name`.
    fn join(&mut self, i: usize, name: &str) -> ConnId {
        let conn = self.hubs[i].connect(self.now, "h").unwrap();
        self.hubs[i].handle_text(self.now, conn, &format!(r#"{{"type":"join","room":"r","name":"{name}"}}"#));
        conn
    }

    /// Delivers publications until quiet; returns each hub's other outputs.
    fn run(&mut self) -> [Vec<Output>; 2] {
        let mut local: [Vec<Output>; 2] = [Vec::new(), Vec::new()];
        loop {
            let mut moved = false;
            for (i, local) in local.iter_mut().enumerate() {
                while let Some(out) = self.hubs[i].poll_output() {
                    match out {
                        Output::Publish(msg) => {
                            // Through the wire format, as Redis carries it.
                            let msg = ClusterMessage::decode(&msg.encode()).unwrap();
                            self.hubs[1 - i].handle_cluster(self.now, msg);
                            moved = true;
                        }
                        other => local.push(other),
                    }
                }
            }
            if !moved {
                return local;
            }
        }
    }
}

#[test]
fn peers_on_two_nodes_share_a_room_and_signal_each_other() {
    let mut c = Cluster::new();
    c.run();
    let a = c.hubs[0].connect(c.now, "h").unwrap();
    c.hubs[0].handle_text(c.now, a, r#"{"type":"join","room":"r","name":"alice"}"#);
    let out = c.run();
    let Some(ServerMessage::Welcome { id: alice, .. }) = parse(&out[0], a).into_iter().next() else {
        panic!()
    };
    let b = c.hubs[1].connect(c.now, "h").unwrap();
    c.hubs[1].handle_text(c.now, b, r#"{"type":"join","room":"r","name":"bob"}"#);
    let out = c.run();
    let Some(ServerMessage::Welcome { id: bob, peers, .. }) = parse(&out[1], b).into_iter().next() else {
        panic!()
    };
    assert_eq!(peers, [PeerInfo { id: alice.clone(), name: "alice".into() }]);
    assert!(matches!(&parse(&out[0], a)[..], [ServerMessage::PeerJoined { peer }] if peer.id == bob));
    // Bob (newcomer) offers to alice across the nodes; alice answers.
    c.hubs[1].handle_text(c.now, b, &format!(r#"{{"type":"signal","to":"{alice}","data":{{"o":1}}}}"#));
    let out = c.run();
    assert!(
        matches!(&parse(&out[0], a)[..], [ServerMessage::Signal { from, data }] if *from == bob && data.get() == r#"{"o":1}"#)
    );
    c.hubs[0].handle_text(c.now, a, &format!(r#"{{"type":"signal","to":"{bob}","data":{{"a":2}}}}"#));
    let out = c.run();
    assert!(matches!(&parse(&out[1], b)[..], [ServerMessage::Signal { from, .. }] if *from == alice));
    // Alice's socket closes: bob hears it.
    c.hubs[0].disconnect(c.now, a);
    let out = c.run();
    assert!(matches!(&parse(&out[1], b)[..], [ServerMessage::PeerLeft { id }] if *id == alice));
}

#[test]
fn a_node_that_starts_late_learns_the_rooms() {
    let now = Instant::now();
    let mut c = Cluster::new();
    // Node 0 has alice before node 1 exists: node 1 is created afresh and says hello.
    let a = c.hubs[0].connect(now, "h").unwrap();
    c.hubs[0].handle_text(now, a, r#"{"type":"join","room":"r","name":"alice"}"#);
    // Node 0's `joined` went out before node 1 existed: nobody heard it.
    while c.hubs[0].poll_output().is_some() {}
    c.hubs[1] = Hub::new(HubConfig::default(), now, UNIX, [3; 32]);
    c.hubs[1].enable_cluster(now);
    c.run();
    let b = c.hubs[1].connect(now, "h").unwrap();
    c.hubs[1].handle_text(now, b, r#"{"type":"join","room":"r","name":"bob"}"#);
    let out = c.run();
    let Some(ServerMessage::Welcome { peers, .. }) = parse(&out[1], b).into_iter().next() else { panic!() };
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].name, "alice");
}

#[test]
fn a_silent_node_s_peers_leave_their_rooms() {
    let mut c = Cluster::new();
    c.join(0, "alice");
    let b = c.join(1, "bob");
    c.run();
    // Node 0 dies: only node 1's clock moves on, and bob keeps answering pings.
    let mut left = false;
    for _ in 0..30 {
        c.now += Duration::from_secs(1);
        c.hubs[1].handle_timeout(c.now);
        c.hubs[1].handle_pong(c.now, b);
        while let Some(out) = c.hubs[1].poll_output() {
            if let Output::Send { conn, text } = out {
                left |= conn == b && text.contains("peer-left");
            }
        }
    }
    assert!(left);
    assert_eq!(c.hubs[1].stats().remote_peers, 0);
}

#[test]
fn cluster_messages_from_strangers_cannot_reach_local_peers() {
    let mut c = Cluster::new();
    let b = c.hubs[1].connect(c.now, "h").unwrap();
    c.hubs[1].handle_text(c.now, b, r#"{"type":"join","room":"r","name":"bob"}"#);
    let out = c.run();
    let Some(ServerMessage::Welcome { id: bob, .. }) = parse(&out[1], b).into_iter().next() else { panic!() };
    let node = c.hubs[1].node().to_owned();
    let forged = ClusterMessage::Signal {
        node: "intruder".into(),
        to_node: node,
        from: "ghost".into(),
        to: bob,
        data: "1".into(),
    };
    c.hubs[1].handle_cluster(c.now, forged);
    assert!(c.run()[1].is_empty());
}

#[test]
fn an_announcement_repairs_a_lost_leave() {
    let mut c = Cluster::new();
    let a = c.join(0, "alice");
    let b = c.join(1, "bob");
    c.run();
    // Alice leaves while the link is down: her `left` is lost.
    c.hubs[0].disconnect(c.now, a);
    while c.hubs[0].poll_output().is_some() {}
    assert_eq!(c.hubs[1].stats().remote_peers, 1, "node 1 still believes in alice");
    // The link is back: node 0 resyncs, and its announcement no longer lists alice.
    c.hubs[0].resync_cluster(c.now);
    let out = c.run();
    assert!(matches!(&parse(&out[1], b)[..], [ServerMessage::PeerLeft { .. }]), "{:?}", out[1]);
    assert_eq!(c.hubs[1].stats().remote_peers, 0);
}

#[test]
fn remote_peers_with_implausible_names_or_ids_are_ignored() {
    let mut c = Cluster::new();
    let node = "n".to_owned();
    for (id, name) in [("x y", "ok"), ("", "ok"), ("abc", "bad\u{202E}"), ("abc", "")] {
        let peer = RemotePeer { room: "r".into(), id: id.into(), name: name.into() };
        c.hubs[0].handle_cluster(c.now, ClusterMessage::Joined { node: node.clone(), peer });
    }
    assert_eq!(c.hubs[0].stats().remote_peers, 0);
}

#[test]
fn a_node_shutting_down_makes_no_one_leave_and_its_peers_rejoin_elsewhere_with_their_ids() {
    let mut c = Cluster::new();
    let a = c.join(0, "alice");
    let b = c.join(1, "bob");
    let out = c.run();
    let Some(ServerMessage::Welcome { id: alice, .. }) = parse(&out[0], a).into_iter().next() else {
        panic!()
    };
    assert_eq!(c.hubs[1].stats().remote_peers, 1);
    // Node 0 stops gracefully: bob hears nothing, and node 1 forgets alice quietly.
    c.hubs[0].close_all(c.now);
    let out = c.run();
    assert_eq!(closed(&out[0], a), Some(CLOSE_GOING_AWAY));
    assert!(parse(&out[1], b).is_empty(), "{:?}", out[1]);
    assert_eq!(c.hubs[1].stats().remote_peers, 0);
    // No late peer-left either, when node 0's heartbeats stop.
    for _ in 0..30 {
        c.now += Duration::from_secs(1);
        c.hubs[1].handle_timeout(c.now);
        c.hubs[1].handle_pong(c.now, b);
        while let Some(out) = c.hubs[1].poll_output() {
            assert!(!matches!(&out, Output::Send { text, .. } if text.contains("peer-left")), "{out:?}");
        }
    }
    // Alice comes back through node 1 and keeps her id; bob recognises her.
    let a2 = c.hubs[1].connect(c.now, "h").unwrap();
    let join = format!(r#"{{"type":"join","room":"r","name":"alice","id":"{alice}"}}"#);
    c.hubs[1].handle_text(c.now, a2, &join);
    let out = c.run();
    assert!(matches!(parse(&out[1], a2).first(), Some(ServerMessage::Welcome { id, .. }) if *id == alice));
    assert!(matches!(&parse(&out[1], b)[..], [ServerMessage::PeerJoined { peer }] if peer.id == alice));
}

#[test]
fn an_id_held_on_another_node_cannot_be_claimed() {
    let mut c = Cluster::new();
    let a = c.join(0, "alice");
    let out = c.run();
    let Some(ServerMessage::Welcome { id: alice, .. }) = parse(&out[0], a).into_iter().next() else {
        panic!()
    };
    let m = c.hubs[1].connect(c.now, "h").unwrap();
    c.hubs[1].handle_text(c.now, m, &format!(r#"{{"type":"join","room":"r","name":"m","id":"{alice}"}}"#));
    let out = c.run();
    assert!(matches!(parse(&out[1], m).first(), Some(ServerMessage::Welcome { id, .. }) if *id != alice));
}

fn sfu_events(out: &[Output]) -> Vec<SfuEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Sfu(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn modes(out: &[Output], conn: ConnId) -> Vec<String> {
    parse(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMessage::Mode { mode } => Some(mode),
            ServerMessage::Welcome { mode, .. } => mode.map(|m| format!("welcome {m}")),
            _ => None,
        })
        .collect()
}

#[test]
fn auto_rooms_switch_to_the_sfu_above_mesh_max_and_back() {
    let config = HubConfig { room_mode: RoomMode::Auto, mesh_max: 2, ..HubConfig::default() };
    let mut h = Harness::new(config);
    h.hub.enable_sfu();
    let (a, b, c) = (h.connect(), h.connect(), h.connect());
    let alice = h.join(a, "r", "alice");
    h.send(b, r#"{"type":"join","room":"r","name":"bob"}"#);
    let out = h.drain();
    assert_eq!(modes(&out, b), vec!["welcome mesh"]);
    assert!(sfu_events(&out).is_empty());
    // Signals to "sfu" in a mesh room are refused, without closing anything.
    h.send(a, r#"{"type":"signal","to":"sfu","data":{}}"#);
    assert_eq!(error_codes(&h.drain(), a), vec!["unknown-peer"]);
    // The third peer: the room switches; the others hear it before they hear of carol.
    h.send(c, r#"{"type":"join","room":"r","name":"carol"}"#);
    let out = h.drain();
    assert_eq!(modes(&out, c), vec!["welcome sfu"]);
    let to_a = parse(&out, a);
    assert!(matches!(&to_a[0], ServerMessage::Mode { mode } if mode == "sfu"), "{to_a:?}");
    assert!(matches!(&to_a[1], ServerMessage::PeerJoined { .. }), "{to_a:?}");
    let events = sfu_events(&out);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| matches!(e, SfuEvent::Join { room, .. } if room == "r")));
    // Signals to "sfu" go to the SFU, with who sent them; the SFU's come back from "sfu".
    h.send(a, r#"{"type":"signal","to":"sfu","data":{"candidate":null}}"#);
    let out = h.drain();
    assert_eq!(
        sfu_events(&out),
        vec![SfuEvent::Signal {
            room: "r".into(),
            peer: alice.clone(),
            data: r#"{"candidate":null}"#.into()
        }]
    );
    h.hub.sfu_signal(&alice, r#"{"x":1}"#);
    let out = h.drain();
    assert!(matches!(parse(&out, a).as_slice(), [ServerMessage::Signal { from, .. }] if from == "sfu"));
    // An answer with a section per track of a big room is larger than a mesh frame may be.
    let big = format!(r#"{{"type":"signal","to":"sfu","data":{{"x":"{}"}}}}"#, "a".repeat(100_000));
    assert!(big.len() > HubConfig::default().max_frame_bytes);
    h.send(a, &big);
    let out = h.drain();
    assert!(error_codes(&out, a).is_empty(), "{:?}", error_codes(&out, a));
    assert_eq!(sfu_events(&out).len(), 1);
    // One leaves: back to a mesh; the SFU lets everyone go.
    h.send(c, r#"{"type":"leave"}"#);
    let out = h.drain();
    assert_eq!(modes(&out, a), vec!["mesh"]);
    let events = sfu_events(&out);
    assert_eq!(events.len(), 3, "{events:?}");
    // Carol left; the other two stay with the SFU a moment while the mesh connects.
    assert!(events.iter().any(|e| matches!(e, SfuEvent::Leave { switched: false, .. })));
    assert_eq!(events.iter().filter(|e| matches!(e, SfuEvent::Leave { switched: true, .. })).count(), 2);
    // The SFU's late signals are dropped in a mesh room.
    h.hub.sfu_signal(&alice, r#"{"x":1}"#);
    assert!(parse(&h.drain(), a).is_empty());
    // In a mesh the limit is the mesh's again.
    h.send(a, &big.replace(r#""to":"sfu""#, r#""to":"0123456789abcdef""#));
    assert_eq!(error_codes(&h.drain(), a), vec!["too-large"]);
}

#[test]
fn without_an_sfu_rooms_stay_meshes() {
    let config = HubConfig { room_mode: RoomMode::Sfu, ..HubConfig::default() };
    let mut h = Harness::new(config);
    let a = h.connect();
    h.send(a, r#"{"type":"join","room":"r","name":"alice"}"#);
    let out = h.drain();
    assert_eq!(modes(&out, a), vec!["welcome mesh"]);
    assert!(sfu_events(&out).is_empty());
    assert_eq!("auto".parse::<RoomMode>(), Ok(RoomMode::Auto));
    assert!("full".parse::<RoomMode>().is_err());
}
