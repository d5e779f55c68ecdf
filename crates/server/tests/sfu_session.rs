//! The `peerlink` library's session in a room of the in-process signaling service with the
//! SFU beside it (`--room-mode auto --mesh-max 2`): two members meet in a mesh, a third makes
//! the room go through the server, it leaves and the room is a mesh again. At each step every
//! member must have exactly the connections of the mode (a connection per other member, or
//! one to "sfu") and receive every other member's audio, through the server by the stream id
//! of its publisher.

use peerlink::rtc::{ConnectionState, Direction, MediaKind, RtcEvent, TrackConfig, TransceiverId};
use peerlink::session::{RoomMode, Session, SessionEvent, SessionOptions, SFU_PEER};
use peerlink::PeerHandle;
use peerlink_signal::hub::{HubConfig, RoomMode as HubMode};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

/// What a member sees.
#[derive(Default, Debug)]
struct Seen {
    mode: Option<RoomMode>,
    /// Open connections (peer ids), and those connected.
    conns: HashSet<String>,
    connected: HashSet<String>,
    /// Audio frames received per sender: the mesh connection's peer id, or through the
    /// server the stream id of the track.
    frames: HashMap<String, u64>,
}

struct Member {
    id: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

/// Joins and sends a 20 ms Opus frame (not real Opus: forwarded as is) to every connection.
/// The track is sendonly (as `peerlink play`'s: over a mesh each side's goes in a section of
/// its own) or sendrecv (as a browser's: one section both ways).
async fn join(url: &str, name: &str, direction: Direction) -> Member {
    let mut options = SessionOptions::default();
    options.bind = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    options.wait = Some(Duration::from_secs(5));
    options.tracks = vec![(MediaKind::Audio, direction, TrackConfig::new(MediaKind::Audio))];
    options.accept_media = (direction == Direction::SendRecv).then_some(direction);
    let mut session = Session::join(url, "r", name, options).await.unwrap();
    let id = session.id().to_owned();
    let seen = Arc::new(Mutex::new(Seen { mode: Some(RoomMode::Mesh), ..Seen::default() }));
    let state = seen.clone();
    let task = tokio::spawn(async move {
        let mut handles: HashMap<String, PeerHandle> = HashMap::new();
        let mut streams: HashMap<(String, TransceiverId), String> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut timestamp = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    timestamp = timestamp.wrapping_add(960);
                    let connected = state.lock().unwrap().connected.clone();
                    for peer in connected {
                        if let Some(h) = handles.get(&peer) {
                            // (Before a connection's negotiation is done, nothing to write to.)
                            let _ = h.write_frame(TransceiverId(0), None, timestamp, vec![0xf8, 0xff, 0xfe]).await;
                        }
                    }
                }
                e = session.next() => {
                    let Some(e) = e else { break };
                    let mut s = state.lock().unwrap();
                    match e {
                        SessionEvent::Connecting { peer, handle, .. } => {
                            s.conns.insert(peer.id.clone());
                            handles.insert(peer.id, handle);
                        }
                        SessionEvent::Gone { peer, .. } => {
                            s.conns.remove(&peer);
                            s.connected.remove(&peer);
                            handles.remove(&peer);
                        }
                        SessionEvent::Mode(mode) => s.mode = Some(mode),
                        SessionEvent::Rtc { peer, event } => match event {
                            RtcEvent::ConnectionState(ConnectionState::Connected) => {
                                s.connected.insert(peer);
                            }
                            RtcEvent::Track { id, stream_id, .. } => {
                                streams.insert((peer, id), stream_id.unwrap_or_default());
                            }
                            RtcEvent::Frame { id, .. } => {
                                let from = if peer == SFU_PEER {
                                    streams.get(&(peer, id)).cloned().unwrap_or_default()
                                } else {
                                    peer
                                };
                                *s.frames.entry(from).or_default() += 1;
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
        }
    });
    Member { id, seen, task }
}

/// Waits until every member has the connections of `mode` (to each of `ids` but itself, or
/// only to the server) and has received frames, over them, from each of the others.
async fn settles(members: &[&Member], mode: RoomMode, step: &str) {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let before: Vec<HashMap<String, u64>> =
        members.iter().map(|m| m.seen.lock().unwrap().frames.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let s = m.seen.lock().unwrap();
            let others: HashSet<String> = ids.iter().filter(|id| **id != m.id).cloned().collect();
            let want: HashSet<String> = match mode {
                RoomMode::Mesh => others.clone(),
                RoomMode::Sfu => [SFU_PEER.to_owned()].into(),
            };
            if s.mode != Some(mode) || s.conns != want || s.connected != want {
                missing.push(format!(
                    "{}: mode {:?} conns {:?} connected {:?}",
                    m.id, s.mode, s.conns, s.connected
                ));
            }
            for o in &others {
                let now = s.frames.get(o).copied().unwrap_or(0);
                // Frames through this mode's path: more than before the step, by a margin.
                if now < before[i].get(o).copied().unwrap_or(0) + 25 {
                    missing.push(format!("{} <- {o}: {now} frames", m.id));
                }
            }
        }
        if missing.is_empty() {
            println!("{step}: settled");
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{step}: not settled in 30 s: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn through_the_server_and_back(direction: Direction) {
    let hub = HubConfig { room_mode: HubMode::Auto, mesh_max: 2, ..HubConfig::default() };
    let url = format!("ws://{}/ws", support::sfu::serve(hub).await);
    let ann = join(&url, "ann", direction).await;
    let ben = join(&url, "ben", direction).await;
    settles(&[&ann, &ben], RoomMode::Mesh, "two in a mesh").await;
    let cat = join(&url, "cat", direction).await;
    settles(&[&ann, &ben, &cat], RoomMode::Sfu, "three through the server").await;
    cat.task.abort();
    settles(&[&ann, &ben], RoomMode::Mesh, "two in a mesh again").await;
    ann.task.abort();
    ben.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_only_send_go_through_the_server_and_back() {
    through_the_server_and_back(Direction::SendOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_send_and_receive_go_through_the_server_and_back() {
    through_the_server_and_back(Direction::SendRecv).await;
}
