//! Rooms on an in-process signaling server over loopback: two members get a connection to
//! each other and talk on a channel; bad input (a wrong URL, an unreachable server, a full
//! room, a refused token) ends `Room::join` with a typed error in bounded time.

use peerlink::signal::hub::HubConfig;
use peerlink::signal::SignalService;
use peerlink::{
    ChannelConfig, ConnectionEvent, ConnectionState, Gone, JoinError, Message, Room, RoomEvent, RoomOptions,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn serve(config: HubConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = SignalService::start(config, "localhost", None).router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("ws://{addr}/ws")
}

fn options() -> RoomOptions {
    let mut options = RoomOptions::default();
    options.bind = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    options.wait = Some(Duration::from_secs(2));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_connect_and_talk() {
    let url = serve(HubConfig::default()).await;
    let mut ann = Room::join_with(&url, "r", "ann", options()).await.unwrap();
    let mut ben = Room::join_with(&url, "r", "ben", options()).await.unwrap();
    let wait = Duration::from_secs(20);
    let to_ann = tokio::time::timeout(wait, ben.accept()).await.unwrap().unwrap();
    let to_ben = tokio::time::timeout(wait, ann.accept()).await.unwrap().unwrap();
    assert!(to_ann.is_offerer() && !to_ben.is_offerer(), "the newcomer offers");
    to_ben.connected().await.unwrap();
    assert_eq!((to_ann.peer().name.as_str(), to_ben.peer().name.as_str()), ("ann", "ben"));
    assert_eq!(to_ann.peer().id, ann.id());
    let mut out = to_ann.open_channel(ChannelConfig::reliable("chat")).await.unwrap();
    let mut back = tokio::time::timeout(wait, to_ben.accept_channel()).await.unwrap().unwrap();
    out.send_text("hi ann").await.unwrap();
    assert_eq!(back.recv().await, Some(Message::Text("hi ann".into())));
    back.send(b"hi ben").await.unwrap();
    assert_eq!(out.recv().await, Some(Message::Binary(b"hi ben".to_vec())));
    let stats = to_ben.stats().await;
    assert!(stats.connected && stats.selected_pair.is_some() && stats.bytes_received == 6, "{stats:?}");
    ben.close().await;
    assert_eq!(tokio::time::timeout(wait, to_ben.closed()).await.unwrap(), Gone::Closed);
    assert_eq!(back.recv().await, None);
    ann.close().await;
}

/// What `peerlink chat`, `send` and `recv` need of the library: the room's status lines in a
/// sink, members and connections in order, each state change and the selected pair, the
/// bytes not yet acknowledged, and a dropped receiver that does not stall its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_connection_events_status_and_acknowledgements() {
    let url = serve(HubConfig::default()).await;
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut with_status = options();
    let sink = lines.clone();
    with_status.status = Some(Arc::new(move |line: &str| sink.lock().unwrap().push(line.to_owned())));
    let mut ann = Room::join_with(&url, "r", "ann", with_status).await.unwrap();
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("joined room r as ann")), "{lines:?}");
    let mut ben = Room::join_with(&url, "r", "ben", options()).await.unwrap();
    let wait = Duration::from_secs(20);
    // Ben is told ann is here, then gets the connection to her.
    let Some(RoomEvent::Joined(first)) = tokio::time::timeout(wait, ben.next_event()).await.unwrap() else {
        panic!("ann is listed first")
    };
    assert_eq!(first.name, "ann");
    let to_ann = loop {
        match tokio::time::timeout(wait, ben.next_event()).await.unwrap() {
            Some(RoomEvent::Connection(c)) => break c,
            Some(_) => {}
            None => panic!("no connection"),
        }
    };
    let to_ben = tokio::time::timeout(wait, ann.accept()).await.unwrap().unwrap();
    let (mut states, mut pair) = (Vec::new(), None);
    while !states.contains(&ConnectionState::Connected) || pair.is_none() {
        match tokio::time::timeout(wait, to_ann.next_event()).await.unwrap() {
            Some(ConnectionEvent::State(s)) => states.push(s),
            Some(ConnectionEvent::SelectedPair(p)) => pair = Some(p),
            other => panic!("{other:?} before connected"),
        }
    }
    assert_eq!(pair, to_ann.stats().await.selected_pair);
    assert_eq!(to_ann.gone(), None);
    let out = to_ann.open_channel(ChannelConfig::reliable("chat")).await.unwrap();
    // A channel nobody reads: what it gets must not hold the connection's window shut.
    let ignored = to_ann.open_channel(ChannelConfig::reliable("ignored")).await.unwrap();
    let mut chat = None;
    let mut dropped = None;
    while chat.is_none() || dropped.is_none() {
        let c = tokio::time::timeout(wait, to_ben.accept_channel()).await.unwrap().unwrap();
        if c.label() == "chat" {
            chat = Some(c)
        } else {
            dropped = Some(c)
        }
    }
    drop(dropped);
    let mut chat = chat.unwrap();
    // 3 × the receive window on the ignored channel, then a message on the read one.
    let block = vec![7u8; 60_000];
    let flood = async {
        for _ in 0..(3 * (4 << 20)) / block.len() {
            ignored.send(&block).await.unwrap();
        }
        out.send_text("after").await.unwrap();
    };
    tokio::time::timeout(wait, flood).await.expect("a dropped receiver does not close the window");
    let got = tokio::time::timeout(wait, chat.recv()).await.unwrap();
    assert_eq!(got, Some(Message::Text("after".into())));
    let acknowledged = async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while out.unacknowledged().await + ignored.unacknowledged().await > 0 {
            poll.tick().await;
        }
    };
    tokio::time::timeout(wait, acknowledged).await.expect("everything sent is acknowledged");
    ann.close().await;
    assert_eq!(tokio::time::timeout(wait, to_ann.closed()).await.unwrap(), Gone::Closed);
    assert!(to_ann.gone().is_some());
    // The events end once the connection is over and they were read.
    let rest = async { while to_ann.next_event().await.is_some() {} };
    tokio::time::timeout(wait, rest).await.unwrap();
    ben.close().await;
}

/// Joins and expects a typed error within `within`.
async fn refused(url: &str, options: RoomOptions, within: Duration) -> String {
    let started = Instant::now();
    let result = tokio::time::timeout(within, Room::join_with(url, "r", "cat", options)).await;
    let Ok(Err(JoinError::Signaling(reason))) = result else { panic!("{url}: {result:?}") };
    println!("{url}: {reason} after {:?}", started.elapsed());
    reason
}

#[tokio::test]
async fn bad_input_gives_typed_errors_never_a_hang() {
    refused("http://127.0.0.1:1/ws", options(), Duration::from_secs(5)).await;
    refused("not a url", options(), Duration::from_secs(5)).await;
    // Nobody listens: retried until `wait`, then given up.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    refused(&format!("ws://127.0.0.1:{port}/ws"), options(), Duration::from_secs(10)).await;
    let full = serve(HubConfig { max_room_peers: 1, ..HubConfig::default() }).await;
    let _first = Room::join_with(&full, "r", "ann", options()).await.unwrap();
    assert!(refused(&full, options(), Duration::from_secs(10)).await.contains("room-full"));
    let locked = serve(HubConfig { token_secret: Some(b"secret".to_vec()), ..HubConfig::default() }).await;
    let mut with_bad_token = options();
    with_bad_token.token = Some("not.a.jwt".into());
    assert!(refused(&locked, with_bad_token, Duration::from_secs(5)).await.contains("unauthorized"));
}
