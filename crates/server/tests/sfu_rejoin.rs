//! A publisher that comes back under its peer id while a subscriber's offer from the SFU is
//! still out (issue 18). The subscriber cannot drop the publisher's old track while that
//! offer waits for its answer, and the publisher's new connection publishes a track under
//! the same name (peer id, transceiver 0). The subscriber must end up receiving the new
//! track: a subscription left over from the old connection must not stand in for it.
//!
//! The clients here are raw (a signaling client and a peer connection each, negotiating as
//! `docs/signaling.md` says) so that the subscriber can hold the server's offer, and the
//! publisher's signaling goes through a TCP relay the test closes, as a lost connection.

use peerlink::rtc::{
    ChannelConfig, ConnectionState, Description, Direction, MediaKind, RtcConfig, RtcEvent, SdpType,
    TrackConfig, TransceiverId,
};
use peerlink::signal::hub::{HubConfig, RoomMode};
use peerlink::signal::{ClientEvent, SignalClient};
use peerlink::{Peer, PeerConfig, PeerHandle};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

mod support;

const SFU: &str = "sfu";
/// Every step must be done within this.
const STEP: Duration = Duration::from_secs(20);

/// A TCP relay to `server` whose `close()` ends every relayed connection on both sides: the
/// server sees the client leave, the client sees its connection lost (and rejoins).
struct Relay {
    addr: SocketAddr,
    close: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let close = Arc::new(tokio::sync::Notify::new());
        let notify = close.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let close = notify.clone();
                tokio::spawn(async move {
                    let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = close.notified() => {}
                    }
                });
            }
        });
        Relay { addr, close }
    }
}

/// What a raw client saw.
#[derive(Default, Debug)]
struct Seen {
    /// Its peer id, from each `welcome` in order (a rejoin adds one).
    ids: Vec<String>,
    connected: bool,
    /// Connections it made to the server.
    connections: usize,
    /// The server's offers it holds unanswered.
    held: usize,
    /// Frames received, by the stream id (the publisher's peer id) of their track.
    frames: HashMap<String, u64>,
}

enum Control {
    /// Leave the server's offers unanswered until `Release`.
    Hold,
    /// Answer the held offer (the latest) and answer at once again from now on.
    Release,
}

struct Client {
    seen: Arc<Mutex<Seen>>,
    control: mpsc::UnboundedSender<Control>,
}

impl Client {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    /// Waits until `f` holds of what this client saw, or fails the test with `what`.
    async fn until(&self, what: &str, f: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !self.seen(&f) {
            assert!(tokio::time::Instant::now() < deadline, "not within {STEP:?}: {what}: {:?}", self.seen);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn frames_from(&self, id: &str) -> u64 {
        self.seen(|s| s.frames.get(id).copied().unwrap_or(0))
    }
}

/// Joins room "r" at `ws` and connects to the server: with a send-only audio track that
/// carries a 20 ms frame every 20 ms (`publish`), or with a data channel only. It accepts
/// every track the server offers. When its signaling comes back after a loss, it drops its
/// connection and makes a new one, as a client that lost its state does.
fn client(ws: String, name: &'static str, publish: bool) -> Client {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (control, mut controls) = mpsc::unbounded_channel();
    let state = seen.clone();
    tokio::spawn(async move {
        let mut signal = SignalClient::connect(&ws, "r", name, None);
        let mut peer: Option<(PeerHandle, mpsc::UnboundedReceiver<RtcEvent>)> = None;
        let mut streams: HashMap<TransceiverId, String> = HashMap::new();
        let mut hold = false;
        let mut held: Option<Description> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut timestamp = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    timestamp = timestamp.wrapping_add(960);
                    let sending = publish && state.lock().unwrap().connected;
                    if let (true, Some((handle, _))) = (sending, &peer) {
                        let _ = handle.write_frame(TransceiverId(0), None, timestamp, vec![0xf8, 0xff, 0xfe]).await;
                    }
                }
                c = controls.recv() => match c {
                    Some(Control::Hold) => hold = true,
                    Some(Control::Release) => {
                        hold = false;
                        if let (Some(offer), Some((handle, _))) = (held.take(), &peer) {
                            answer(&signal, handle, offer).await;
                        }
                        state.lock().unwrap().held = 0;
                    }
                    None => break,
                },
                e = signal.next_event() => match e {
                    Some(ClientEvent::Joined { id, .. } | ClientEvent::Rejoined { id, .. }) => {
                        // (A connection from before a loss is not kept: the server dropped it.)
                        if let Some((handle, _)) = peer.take() {
                            handle.close().await;
                        }
                        streams.clear();
                        held = None;
                        {
                            let mut s = state.lock().unwrap();
                            s.ids.push(id);
                            s.connected = false;
                            s.connections += 1;
                            s.held = 0;
                        }
                        let (handle, events) = connect(publish).await;
                        let offer = handle.create_offer().await.unwrap();
                        signal.signal(SFU, json!({"description": {"type": "offer", "sdp": offer.sdp}})).await.unwrap();
                        peer = Some((handle, events));
                    }
                    Some(ClientEvent::Disconnected { .. }) => state.lock().unwrap().connected = false,
                    Some(ClientEvent::Signal { from, data }) if from == SFU => {
                        let data: Value = serde_json::from_str(data.get()).unwrap();
                        let Some((handle, _)) = &peer else { continue };
                        if let Some(d) = data.get("description") {
                            let sdp = d["sdp"].as_str().unwrap().to_owned();
                            if d["type"] == "offer" {
                                let offer = Description { kind: SdpType::Offer, sdp };
                                if hold {
                                    held = Some(offer);
                                    state.lock().unwrap().held += 1;
                                } else {
                                    answer(&signal, handle, offer).await;
                                }
                            } else {
                                handle.set_remote_description(Description { kind: SdpType::Answer, sdp }).await.unwrap();
                            }
                        } else if let Some(line) = data.get("candidate").and_then(|c| c["candidate"].as_str()) {
                            handle.add_ice_candidate(line);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                e = async {
                    match peer.as_mut() {
                        Some((_, events)) => events.recv().await,
                        None => std::future::pending().await,
                    }
                } => match e {
                    Some(RtcEvent::LocalCandidate(c)) => {
                        let c = json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0});
                        let _ = signal.signal(SFU, json!({ "candidate": c })).await;
                    }
                    Some(RtcEvent::ConnectionState(ConnectionState::Connected)) => {
                        state.lock().unwrap().connected = true;
                    }
                    Some(RtcEvent::Track { id, stream_id, .. }) => {
                        streams.insert(id, stream_id.unwrap_or_default());
                    }
                    Some(RtcEvent::Frame { id, .. }) => {
                        let from = streams.get(&id).cloned().unwrap_or_default();
                        *state.lock().unwrap().frames.entry(from).or_default() += 1;
                    }
                    Some(_) => {}
                    None => peer = None,
                },
            }
        }
    });
    Client { seen, control }
}

async fn connect(publish: bool) -> (PeerHandle, mpsc::UnboundedReceiver<RtcEvent>) {
    let config = PeerConfig {
        rtc: RtcConfig { accept_media: Some(Direction::RecvOnly), ..RtcConfig::default() },
        addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    let (handle, mut events) = Peer::start(config).await.unwrap().split();
    if publish {
        let id = handle
            .add_transceiver(MediaKind::Audio, Direction::SendOnly, TrackConfig::new(MediaKind::Audio))
            .await
            .unwrap();
        assert_eq!(id, TransceiverId(0));
    } else {
        handle.create_data_channel(ChannelConfig::reliable("x")).await.unwrap();
    }
    // The events in a channel of our own, so that the select above can drop its future.
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    (handle, rx)
}

async fn answer(signal: &SignalClient, handle: &PeerHandle, offer: Description) {
    let answer = handle.set_remote_description(offer).await.unwrap().expect("an answer to an offer");
    signal.signal(SFU, json!({"description": {"type": "answer", "sdp": answer.sdp}})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_back_under_its_id_while_an_offer_is_out_reaches_the_subscriber() {
    let server = support::sfu::serve(HubConfig { room_mode: RoomMode::Sfu, ..HubConfig::default() }).await;
    let relay = Relay::start(server).await;
    let sub = client(format!("ws://{server}/ws"), "sub", false);
    sub.until("the subscriber connects", |s| s.connected).await;
    let publisher = client(format!("ws://{}/ws", relay.addr), "pub", true);
    publisher.until("the publisher connects", |s| s.connected).await;
    let pub_id = publisher.seen(|s| s.ids[0].clone());
    sub.until("the subscriber receives the publisher", |s| s.frames.get(&pub_id).is_some_and(|n| *n >= 10))
        .await;

    // A second publisher makes the server offer the subscriber its track: held, unanswered.
    sub.control.send(Control::Hold).unwrap();
    let other = client(format!("ws://{server}/ws"), "other", true);
    other.until("the other publisher connects", |s| s.connected).await;
    sub.until("the server offers the subscriber the other's track", |s| s.held > 0).await;

    // The publisher's signaling is lost: the server drops it and its connection, and it
    // comes back under the same id with a new connection and a new track 0.
    relay.close.notify_waiters();
    publisher.until("the publisher rejoins and connects again", |s| s.connections == 2 && s.connected).await;
    assert_eq!(
        publisher.seen(|s| s.ids.clone()),
        vec![pub_id.clone(), pub_id.clone()],
        "rejoined under its id"
    );
    // Its new track is published while the subscriber's offer is still out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sub.seen(|s| s.held > 0));

    let before = sub.frames_from(&pub_id);
    let other_id = other.seen(|s| s.ids[0].clone());
    sub.control.send(Control::Release).unwrap();
    sub.until("the subscriber receives the publisher's new track", |s| {
        s.frames.get(&pub_id).is_some_and(|n| *n >= before + 25)
    })
    .await;
    sub.until("the subscriber receives the other publisher", |s| {
        s.frames.get(&other_id).is_some_and(|n| *n >= 25)
    })
    .await;
}
