//! The signaling service over real WebSockets on loopback: protocol abuse is answered with
//! error frames, sustained abuse is closed with 1008, and everyone else keeps being served;
//! the Rust client signals and reconnects.

use futures_util::{SinkExt, StreamExt};
use peerlink_signal::hub::HubConfig;
use peerlink_signal::{ClientEvent, ServerMessage, SignalClient, SignalService};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// Panics anywhere in this test binary, including the server's spawned tasks (whose panics
/// would otherwise pass unnoticed).
static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default(info);
        }));
    });
}

fn assert_no_panics() {
    assert_eq!(PANICS.load(std::sync::atomic::Ordering::SeqCst), 0, "a task panicked");
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    config: HubConfig,
) -> (SignalService, tokio::task::JoinHandle<()>) {
    count_panics();
    let service = SignalService::start(config, "localhost", None);
    let router = service.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (service, task)
}

async fn serve(config: HubConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_on(listener, config).await;
    addr
}

async fn open(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.unwrap().0
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// The next text frame, parsed; panics on close or timeout.
async fn next(ws: &mut Ws) -> ServerMessage {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return ServerMessage::parse(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn expect_error(ws: &mut Ws, expected: &str) {
    match next(ws).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, expected),
        other => panic!("expected error {expected}, got {other:?}"),
    }
}

/// Reads until the close frame; returns its code.
async fn closed_with(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

async fn join(ws: &mut Ws, room: &str, name: &str) -> String {
    send(ws, &format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#)).await;
    loop {
        match next(ws).await {
            ServerMessage::Welcome { id, .. } => return id,
            ServerMessage::PeerJoined { .. } => continue,
            other => panic!("expected welcome, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn abuse_gets_error_frames_and_the_server_keeps_serving_others() {
    let addr = serve(HubConfig::default()).await;
    let (mut alice, mut bob, mut mallory) = (open(addr).await, open(addr).await, open(addr).await);
    let alice_id = join(&mut alice, "r", "alice").await;
    let bob_id = join(&mut bob, "r", "bob").await;
    assert!(matches!(next(&mut alice).await, ServerMessage::PeerJoined { peer } if peer.id == bob_id));
    // Carol stays connected: unknown-peer below must come from room isolation.
    let mut carol = open(addr).await;
    let carol_room = join(&mut carol, "other", "carol").await;

    // Before join.
    send(&mut mallory, &format!(r#"{{"type":"signal","to":"{alice_id}","data":1}}"#)).await;
    expect_error(&mut mallory, "not-joined").await;
    // Malformed JSON, an unknown type, a binary frame, a bad room, a bad name.
    send(&mut mallory, r#"{"type":"join","room":"#).await;
    expect_error(&mut mallory, "bad-request").await;
    send(&mut mallory, r#"{"type":"shout"}"#).await;
    expect_error(&mut mallory, "unknown-type").await;
    mallory.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    expect_error(&mut mallory, "bad-request").await;
    send(&mut mallory, r#"{"type":"join","room":"../etc","name":"m"}"#).await;
    expect_error(&mut mallory, "bad-room").await;
    send(&mut mallory, r#"{"type":"join","room":"x","name":"<b>\n</b>"}"#).await;
    expect_error(&mut mallory, "bad-name").await;
    // A frame above the 64 KiB limit (but one the WebSocket layer still reads).
    let huge = format!(r#"{{"type":"signal","to":"{alice_id}","data":"{}"}}"#, "A".repeat(100_000));
    send(&mut mallory, &huge).await;
    expect_error(&mut mallory, "too-large").await;
    // Joined, but signaling a peer of another room, or nobody.
    join(&mut mallory, "x", "mallory").await;
    send(&mut mallory, &format!(r#"{{"type":"signal","to":"{carol_room}","data":1}}"#)).await;
    expect_error(&mut mallory, "unknown-peer").await;
    send(&mut mallory, r#"{"type":"signal","to":"nobody","data":1}"#).await;
    expect_error(&mut mallory, "unknown-peer").await;

    // Still connected after all that; continued garbage ends it.
    for _ in 0..50 {
        if mallory.send(Message::text("garbage")).await.is_err() {
            break;
        }
    }
    assert_eq!(closed_with(&mut mallory).await, Some(CloseCode::Policy));

    // Alice and bob never noticed.
    let offer = r#"{"description":{"type":"offer","sdp":"v=0\r\n"}}"#;
    send(&mut bob, &format!(r#"{{"type":"signal","to":"{alice_id}","data":{offer}}}"#)).await;
    match next(&mut alice).await {
        ServerMessage::Signal { from, data } => {
            assert_eq!(from, bob_id);
            assert_eq!(data.get(), offer);
        }
        other => panic!("{other:?}"),
    }
    assert_no_panics();
}

#[tokio::test]
async fn a_flood_is_throttled_then_closed_while_others_are_served() {
    let addr = serve(HubConfig::default()).await;
    let (mut alice, mut bob, mut flooder) = (open(addr).await, open(addr).await, open(addr).await);
    let alice_id = join(&mut alice, "r", "alice").await;
    join(&mut bob, "r", "bob").await;
    let mut sink = open(addr).await;
    let sink_id = join(&mut sink, "f", "sink").await;
    join(&mut flooder, "f", "flooder").await;
    // Valid messages, just far too many of them.
    let message = format!(r#"{{"type":"signal","to":"{sink_id}","data":0}}"#);
    let flood = tokio::spawn(async move {
        for _ in 0..5_000 {
            if flooder.send(Message::text(message.clone())).await.is_err() {
                break;
            }
        }
        let mut rate_limited = 0;
        let code = loop {
            match tokio::time::timeout(WAIT, flooder.next()).await.expect("closed in time") {
                Some(Ok(Message::Text(t))) if t.as_str().contains("rate-limited") => rate_limited += 1,
                Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        (rate_limited, code)
    });
    send(&mut bob, &format!(r#"{{"type":"signal","to":"{alice_id}","data":"hi"}}"#)).await;
    assert!(matches!(
        next(&mut alice).await,
        ServerMessage::PeerJoined { .. } | ServerMessage::Signal { .. }
    ));
    let (rate_limited, code) = flood.await.unwrap();
    assert_eq!(rate_limited, 1, "one rate-limited error per throttled stretch");
    assert_eq!(code, Some(CloseCode::Policy));
    // The server's task for the flooder ends cleanly, though frames kept coming after the close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_no_panics();
}

#[tokio::test]
async fn frames_beyond_the_hard_limit_close_only_that_connection() {
    let addr = serve(HubConfig::default()).await;
    let (mut alice, mut big) = (open(addr).await, open(addr).await);
    join(&mut alice, "r", "alice").await;
    let _ = big.send(Message::text("x".repeat(2 << 20))).await;
    assert_ne!(closed_with(&mut big).await, Some(CloseCode::Normal));
    send(&mut alice, r#"{"type":"leave"}"#).await;
    join(&mut alice, "r", "alice").await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_the_sender_is_told() {
    let config = HubConfig { messages_per_second: 10_000.0, message_burst: 10_000.0, ..HubConfig::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (service, _server) = serve_on(listener, config).await;
    let (mut sender, mut sloth) = (open(addr).await, open(addr).await);
    join(&mut sender, "r", "sender").await;
    let sloth_id = join(&mut sloth, "r", "sloth").await;
    assert!(matches!(next(&mut sender).await, ServerMessage::PeerJoined { .. }));
    // 32 MB at the sloth, which reads nothing: more than the socket buffers and the 1 MiB
    // outbox budget together hold.
    let blob = "z".repeat(60_000);
    let frame = format!(r#"{{"type":"signal","to":"{sloth_id}","data":"{blob}"}}"#);
    let writer = tokio::spawn(async move {
        for _ in 0..550 {
            if sender.send(Message::text(frame.clone())).await.is_err() {
                break;
            }
        }
        sender
    });
    let mut sender = writer.await.unwrap();
    loop {
        match next(&mut sender).await {
            ServerMessage::PeerLeft { id } => break assert_eq!(id, sloth_id),
            ServerMessage::Error { code, .. } => assert_eq!(code, "unknown-peer", "only after the drop"),
            other => panic!("{other:?}"),
        }
    }
    // Dropped for its backlog, not by a write timing out.
    assert_eq!(service.stats().await.dropped_slow, 1);
    drop(sloth);
    assert_no_panics();
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_refuses_newcomers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (service, _server) = serve_on(listener, HubConfig::default()).await;
    let (mut a, mut b) = (open(addr).await, open(addr).await);
    join(&mut a, "r", "a").await;
    join(&mut b, "r", "b").await;
    assert!(matches!(next(&mut a).await, ServerMessage::PeerJoined { .. }));
    service.shutdown().await;
    // The close frame is the first thing each hears: no `peer-left` for the other, whose
    // peer-to-peer connection is not affected by the server going away.
    for ws in [&mut a, &mut b] {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away)),
            other => panic!("expected the close frame first, got {other:?}"),
        }
    }
    let mut late = open(addr).await;
    assert_eq!(closed_with(&mut late).await, Some(CloseCode::Again));
}

#[tokio::test]
async fn a_full_server_answers_1013() {
    let addr = serve(HubConfig { max_connections: 1, ..HubConfig::default() }).await;
    let mut first = open(addr).await;
    join(&mut first, "r", "a").await;
    let mut second = open(addr).await;
    assert_eq!(closed_with(&mut second).await, Some(CloseCode::Again));
}

#[tokio::test]
async fn a_full_room_says_so() {
    let addr = serve(HubConfig { max_room_peers: 2, ..HubConfig::default() }).await;
    let (mut a, mut b, mut c) = (open(addr).await, open(addr).await, open(addr).await);
    join(&mut a, "r", "a").await;
    join(&mut b, "r", "b").await;
    send(&mut c, r#"{"type":"join","room":"r","name":"c"}"#).await;
    expect_error(&mut c, "room-full").await;
}

async fn next_event(client: &mut SignalClient) -> ClientEvent {
    tokio::time::timeout(WAIT, client.next_event()).await.expect("an event in time").expect("client running")
}

#[tokio::test]
async fn clients_signal_each_other_and_reconnect_after_a_server_restart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (service, server) = serve_on(listener, HubConfig::default()).await;
    let url = format!("ws://{addr}/ws");
    let mut alice = SignalClient::connect(&url, "room", "alice", None);
    let ClientEvent::Joined { id: alice_id, peers, .. } = next_event(&mut alice).await else { panic!() };
    assert!(peers.is_empty());
    let mut bob = SignalClient::connect(&url, "room", "bob", None);
    let ClientEvent::Joined { peers, .. } = next_event(&mut bob).await else { panic!() };
    assert_eq!(peers[0].id, alice_id);
    bob.signal(&alice_id, serde_json::json!({"candidate": null})).await.unwrap();
    let bob_id = match next_event(&mut alice).await {
        ClientEvent::PeerJoined(p) => p.id,
        other => panic!("{other:?}"),
    };
    match next_event(&mut alice).await {
        ClientEvent::Signal { from, data } => {
            assert_eq!(from, bob_id);
            assert_eq!(data.get(), r#"{"candidate":null}"#);
        }
        other => panic!("{other:?}"),
    }

    // The server goes away (close frames, listener gone), then comes back on the same port.
    service.shutdown().await;
    server.abort();
    let _ = server.await;
    assert!(matches!(next_event(&mut alice).await, ClientEvent::Disconnected { .. }));
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    serve_on(listener, HubConfig::default()).await;
    // Both come back under their old ids, and each hears of the other under the id it knew:
    // nobody was told anyone left.
    tokio::join!(back(&mut alice, &alice_id, &bob_id), back(&mut bob, &bob_id, &alice_id));
    bob.signal(&alice_id, serde_json::json!({"after": "restart"})).await.unwrap();
    assert!(matches!(next_event(&mut alice).await, ClientEvent::Signal { from, .. } if from == bob_id));
    tokio::time::timeout(WAIT, alice.close()).await.expect("closed in time");
    assert!(alice.next_event().await.is_none(), "nothing after close");
}

/// Waits until `client` is back in the room under `me` and has seen `other` there.
async fn back(client: &mut SignalClient, me: &str, other: &str) {
    let mut rejoined = false;
    let mut saw_other = false;
    while !(rejoined && saw_other) {
        match next_event(client).await {
            ClientEvent::Rejoined { id, peers, .. } => {
                assert_eq!(id, me, "the same id again");
                saw_other |= peers.iter().any(|p| p.id == other);
                rejoined = true;
            }
            ClientEvent::PeerJoined(p) => {
                assert_eq!(p.id, other);
                saw_other = true;
            }
            ClientEvent::Disconnected { .. } => {}
            event => panic!("{event:?}"),
        }
    }
}

#[tokio::test]
async fn a_refused_join_stops_the_client() {
    let addr = serve(HubConfig { token_secret: Some(b"s".to_vec()), ..HubConfig::default() }).await;
    let mut client = SignalClient::connect(&format!("ws://{addr}/ws"), "room", "x", None);
    match next_event(&mut client).await {
        ClientEvent::Closed { reason } => assert!(reason.contains("unauthorized"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let token = peerlink_signal::token::issue(b"s", "room", None);
    let mut client = SignalClient::connect(&format!("ws://{addr}/ws"), "room", "x", Some(token));
    assert!(matches!(next_event(&mut client).await, ClientEvent::Joined { .. }));
}
