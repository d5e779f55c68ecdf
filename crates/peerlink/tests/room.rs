//! Rooms on an in-process signaling server over loopback: two members get a connection to
//! each other and talk on a channel; bad input (a wrong URL, an unreachable server, a full
//! room, a refused token) ends `Room::join` with a typed error in bounded time.

use peerlink::signal::hub::HubConfig;
use peerlink::signal::SignalService;
use peerlink::{ChannelConfig, Gone, JoinError, Message, Room, RoomOptions};
use std::net::{IpAddr, Ipv4Addr};
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
