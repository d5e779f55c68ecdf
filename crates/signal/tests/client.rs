//! The signaling client against servers it cannot use, over real sockets on loopback: what
//! retrying cannot fix ends the client at once with a sentence that says what is wrong;
//! refusals are retried for a bounded time before the first join, forever after it.

use peerlink_signal::client::ClientOptions;
use peerlink_signal::hub::HubConfig;
use peerlink_signal::{ClientEvent, SignalClient, SignalService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every case here must end well within this.
const WAIT: Duration = Duration::from_secs(10);

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = SignalService::start(HubConfig::default(), "localhost", None);
    let router = service.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The client's events until `Closed` (inclusive), and how long that took.
async fn run_until_closed(mut client: SignalClient) -> (Vec<ClientEvent>, Duration) {
    let started = Instant::now();
    let mut events = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("no Closed within {WAIT:?}; events so far: {events:?}"))
            .expect("Closed comes before the end");
        let closed = matches!(event, ClientEvent::Closed { .. });
        events.push(event);
        if closed {
            return (events, started.elapsed());
        }
    }
}

fn closed_reason(events: &[ClientEvent]) -> &str {
    match events.last() {
        Some(ClientEvent::Closed { reason }) => {
            println!("reason: {reason}");
            reason
        }
        other => panic!("{other:?}"),
    }
}

fn retries(events: &[ClientEvent]) -> usize {
    events.iter().filter(|e| matches!(e, ClientEvent::Disconnected { .. })).count()
}

#[tokio::test]
async fn a_404_on_the_upgrade_ends_the_client_at_once_and_names_the_path() {
    // A web server with nothing at the path: answers every request with 404.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let body = "not found";
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    let client = SignalClient::connect(&format!("ws://{addr}/signal"), "r", "x", None);
    let (events, took) = run_until_closed(client).await;
    let reason = closed_reason(&events);
    assert_eq!(retries(&events), 0, "{events:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(reason.contains("no signaling endpoint at ws://"), "{reason}");
    assert!(reason.contains("404") && reason.contains("/ws"), "{reason}");
}

#[tokio::test]
async fn an_unresolvable_host_ends_the_client_at_once() {
    // RFC 6761: .invalid never resolves (and the client does not even ask a resolver).
    let client = SignalClient::connect("ws://signaling.example.invalid:8080/ws", "r", "x", None);
    let (events, took) = run_until_closed(client).await;
    let reason = closed_reason(&events);
    assert_eq!(retries(&events), 0, "{events:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(reason.contains("signaling.example.invalid") && reason.contains("no such host"), "{reason}");
}

#[tokio::test]
async fn wss_to_a_plain_server_ends_the_client_at_once() {
    let addr = serve().await;
    let client = SignalClient::connect(&format!("wss://{addr}/ws"), "r", "x", None);
    let (events, took) = run_until_closed(client).await;
    let reason = closed_reason(&events);
    assert_eq!(retries(&events), 0, "{events:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(reason.contains("TLS") && reason.contains("ws://"), "{reason}");
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_given_up_in_bounded_time() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut options = ClientOptions::default();
    options.give_up_after = Some(Duration::from_millis(1500));
    let client = SignalClient::connect_with(&format!("ws://127.0.0.1:{port}/ws"), "r", "x", None, options);
    let (events, took) = run_until_closed(client).await;
    let reason = closed_reason(&events);
    assert!(retries(&events) >= 2, "retried a few times first: {events:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(4), "{took:?}");
    assert!(reason.contains("refused") && reason.contains("gave up"), "{reason}");
}

#[tokio::test]
async fn without_a_time_limit_the_client_waits_for_a_server_that_starts_late() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut options = ClientOptions::default();
    options.give_up_after = None;
    let mut client = SignalClient::connect_with(&format!("ws://{addr}/ws"), "r", "x", None, options);
    // Refused for a while...
    for _ in 0..3 {
        match tokio::time::timeout(WAIT, client.next_event()).await.unwrap().unwrap() {
            ClientEvent::Disconnected { reason } => assert!(reason.contains("refused"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    // ...then the server is there.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let service = SignalService::start(HubConfig::default(), "localhost", None);
    let router = service.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    loop {
        match tokio::time::timeout(Duration::from_secs(20), client.next_event()).await.unwrap().unwrap() {
            ClientEvent::Joined { .. } => break,
            ClientEvent::Disconnected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn after_a_first_join_a_lost_server_is_retried_beyond_the_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = SignalService::start(HubConfig::default(), "localhost", None);
    let router = service.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let mut options = ClientOptions::default();
    options.give_up_after = Some(Duration::from_millis(500));
    let mut client = SignalClient::connect_with(&format!("ws://{addr}/ws"), "r", "x", None, options);
    let first = match tokio::time::timeout(WAIT, client.next_event()).await.unwrap().unwrap() {
        ClientEvent::Joined { id, .. } => id,
        other => panic!("{other:?}"),
    };
    service.shutdown().await;
    server.abort();
    // Gone for three times the limit: the client keeps trying.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(100), client.next_event()).await {
            match event.unwrap() {
                ClientEvent::Disconnected { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let service = SignalService::start(HubConfig::default(), "localhost", None);
    let router = service.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    loop {
        match tokio::time::timeout(Duration::from_secs(20), client.next_event()).await.unwrap().unwrap() {
            ClientEvent::Rejoined { id, .. } => break assert_eq!(id, first),
            ClientEvent::Disconnected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_url_that_is_not_websocket_ends_the_client() {
    let client = SignalClient::connect("http://127.0.0.1:1/ws", "r", "x", None);
    let (events, _) = run_until_closed(client).await;
    assert!(closed_reason(&events).contains("ws:// or wss://"), "{events:?}");
}

/// A TCP relay between clients and `server`; `cut()` closes the clients' side of every
/// relayed connection and keeps the server's side open and silent, as a path that died
/// without a close looks to the server.
struct Relay {
    addr: SocketAddr,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(tokio::sync::Notify::new());
        let graveyard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let notify = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (cut, graveyard) = (notify.clone(), graveyard.clone());
                tokio::spawn(async move {
                    let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cut.notified() => graveyard.lock().unwrap().push(upstream),
                    }
                });
            }
        });
        Relay { addr, cut }
    }
}

#[tokio::test]
async fn a_client_whose_old_connection_lingers_on_the_server_comes_back_under_its_id() {
    let server = serve().await;
    let relay = Relay::start(server).await;
    let mut alice = SignalClient::connect(&format!("ws://{}/ws", relay.addr), "r", "alice", None);
    let alice_id = match tokio::time::timeout(WAIT, alice.next_event()).await.unwrap().unwrap() {
        ClientEvent::Joined { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let mut bob = SignalClient::connect(&format!("ws://{server}/ws"), "r", "bob", None);
    assert!(matches!(
        tokio::time::timeout(WAIT, bob.next_event()).await.unwrap().unwrap(),
        ClientEvent::Joined { .. }
    ));
    assert!(matches!(
        tokio::time::timeout(WAIT, alice.next_event()).await.unwrap().unwrap(),
        ClientEvent::PeerJoined(_)
    ));
    // Alice's path dies; the server still holds her connection (it would time out in 25 s).
    relay.cut.notify_waiters();
    loop {
        match tokio::time::timeout(WAIT, alice.next_event()).await.unwrap().unwrap() {
            ClientEvent::Rejoined { id, .. } => break assert_eq!(id, alice_id),
            ClientEvent::Disconnected { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Bob hears she joined under the id he knows, never that she left.
    match tokio::time::timeout(WAIT, bob.next_event()).await.unwrap().unwrap() {
        ClientEvent::PeerJoined(p) => assert_eq!(p.id, alice_id),
        other => panic!("{other:?}"),
    }
}
