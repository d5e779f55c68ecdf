//! The WebSocket shell around [`Hub`]: one task owns the hub; one task per connection moves
//! frames between its socket and the hub. No locks: everything goes through channels.

use crate::cluster::ClusterMessage;
use crate::hub::{ConnId, Hub, HubConfig, HubStats, Output, SfuEvent, CLOSE_TRY_AGAIN};
use axum::extract::ws::Utf8Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// Frames queued for one connection...
const OUTBOX: usize = 512;
/// ...and their bytes: a client that lets either pile up is too slow (or not reading on
/// purpose) and is dropped rather than holding the server's memory.
const OUTBOX_BYTES: usize = 1 << 20;
/// Pongs (signs of life) forwarded to the hub at most this often per connection.
const PONG_INTERVAL: Duration = Duration::from_secs(1);
/// A write that takes longer than this ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

enum Input {
    Connect { host: String, outbox: Outbox, reply: oneshot::Sender<Option<ConnId>> },
    Text(ConnId, Utf8Bytes),
    TooLarge(ConnId),
    Binary(ConnId),
    Pong(ConnId),
    Disconnect(ConnId),
    Cluster(ClusterMessage),
    Resync,
    Shutdown,
    Stats(oneshot::Sender<HubStats>),
    AttachSfu(mpsc::UnboundedSender<SfuEvent>),
    SfuSignal { peer: String, data: String },
}

/// The hub task's way to one connection.
struct Outbox {
    frames: mpsc::Sender<Frame>,
    /// Bytes of text queued and not yet written; the connection task subtracts.
    queued: Arc<AtomicUsize>,
    /// Notified to end the connection at once, queued frames unsent. (A Notify, not a
    /// oneshot: the connection polls it on every turn of its loop.)
    kill: Arc<tokio::sync::Notify>,
}

#[derive(Debug)]
enum Frame {
    Text(Arc<str>),
    Ping,
    Close(u16, &'static str),
}

/// A running signaling service; clone it freely (it is a channel to the hub's task).
#[derive(Debug, Clone)]
pub struct SignalService {
    inputs: mpsc::Sender<Input>,
    /// Frames above this are refused by the WebSocket layer itself (connection closed);
    /// between `max_frame_bytes` and this the hub answers `too-large` and keeps it.
    hard_frame_limit: usize,
    max_frame_bytes: usize,
    default_host: Arc<str>,
    stats: tokio::sync::watch::Receiver<HubStats>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl SignalService {
    /// Starts the hub's task on the current tokio runtime. `default_host` fills `{host}` in
    /// ICE URLs when a request has no usable `Host` header. `cluster` is the way out to
    /// the other nodes (the `redis` module, with that feature), if any.
    pub fn start(
        config: HubConfig,
        default_host: &str,
        cluster: Option<mpsc::UnboundedSender<ClusterMessage>>,
    ) -> SignalService {
        let max_frame_bytes = config.max_frame_bytes;
        // Above what members of rooms in SFU mode may send (the hub checks each frame).
        let hard_frame_limit = (max_frame_bytes * crate::hub::SFU_FRAME_FACTOR).max(128 * 1024);
        let now = Instant::now();
        let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut hub = Hub::new(config, now, unix, peerlink_proto::os_random());
        if cluster.is_some() {
            hub.enable_cluster(now);
        }
        let (inputs, rx) = mpsc::channel(4096);
        let (stats_tx, stats) = tokio::sync::watch::channel(HubStats::default());
        tokio::spawn(run_hub(hub, rx, cluster, stats_tx));
        SignalService { inputs, hard_frame_limit, max_frame_bytes, default_host: default_host.into(), stats }
    }

    /// A message from another node.
    pub async fn handle_cluster(&self, msg: ClusterMessage) {
        let _ = self.inputs.send(Input::Cluster(msg)).await;
    }

    /// The link to the other nodes was down and is back: say hello and announce again.
    pub async fn resync_cluster(&self) {
        let _ = self.inputs.send(Input::Resync).await;
    }

    /// From now on the SFU beside the hub hears of rooms in SFU mode ([`SfuEvent`]); rooms
    /// switch modes only with one attached.
    pub async fn attach_sfu(&self, events: mpsc::UnboundedSender<SfuEvent>) {
        let _ = self.inputs.send(Input::AttachSfu(events)).await;
    }

    /// The SFU signals `data` (JSON) to `peer`.
    pub async fn sfu_signal(&self, peer: String, data: String) {
        let _ = self.inputs.send(Input::SfuSignal { peer, data }).await;
    }

    /// Every connection gets a close frame (1001, going away) and the rooms empty.
    pub async fn shutdown(&self) {
        let _ = self.inputs.send(Input::Shutdown).await;
        // Give the connections' tasks a moment to write their close frames.
        let _ = self.stats().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Counters as of the last second (for metrics scrapes, which cannot wait).
    pub fn stats_now(&self) -> HubStats {
        self.stats.borrow().clone()
    }

    /// Counters now.
    pub async fn stats(&self) -> HubStats {
        let (tx, rx) = oneshot::channel();
        let _ = self.inputs.send(Input::Stats(tx)).await;
        rx.await.unwrap_or_default()
    }

    /// `GET /ws`.
    pub fn router(&self) -> Router {
        Router::new().route("/ws", get(upgrade)).with_state(self.clone())
    }
}

async fn upgrade(State(service): State<SignalService>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_name)
        .map_or_else(|| service.default_host.to_string(), str::to_owned);
    // Small buffers: a signaling peer is idle most of the time (they grow for large frames).
    ws.max_message_size(service.hard_frame_limit)
        .max_frame_size(service.hard_frame_limit)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(service, socket, host))
}

/// The host part of a `Host` header (`example.org:8080` → `example.org`, `[::1]:80` →
/// `[::1]`), if it is plainly a host name or address.
fn host_name(header: &str) -> Option<&str> {
    let host =
        if header.starts_with('[') { &header[..=header.find(']')?] } else { header.split(':').next()? };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(host)
}

async fn connection(service: SignalService, mut socket: WebSocket, host: String) {
    let (tx, mut frames) = mpsc::channel(OUTBOX);
    let kill = Arc::new(tokio::sync::Notify::new());
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox { frames: tx, queued: queued.clone(), kill: kill.clone() };
    let (reply, id) = oneshot::channel();
    if service.inputs.send(Input::Connect { host, outbox, reply }).await.is_err() {
        return;
    }
    let Ok(Some(id)) = id.await else {
        let close = CloseFrame { code: CLOSE_TRY_AGAIN, reason: "server full or shutting down".into() };
        let _ = socket.send(Message::Close(Some(close))).await;
        return;
    };
    let inputs = service.inputs;
    let mut last_pong: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = kill.notified() => break,
            message = socket.recv() => {
                let input = match message {
                    // Checked here, before the frame is queued for the hub.
                    // (Members of rooms in SFU mode may send more; the hub checks each frame.)
                    Some(Ok(Message::Text(text))) if text.len() > service.max_frame_bytes * crate::hub::SFU_FRAME_FACTOR => {
                        Input::TooLarge(id)
                    }
                    Some(Ok(Message::Text(text))) => Input::Text(id, text),
                    Some(Ok(Message::Binary(_))) => Input::Binary(id),
                    Some(Ok(Message::Pong(_))) => {
                        // Unsolicited pongs cost nothing: forwarded once a second at most.
                        if last_pong.is_some_and(|t| t.elapsed() < PONG_INTERVAL) {
                            continue;
                        }
                        last_pong = Some(Instant::now());
                        Input::Pong(id)
                    }
                    // Pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(conn = id.0, error = %e, "websocket error");
                        break;
                    }
                };
                if inputs.send(input).await.is_err() {
                    break;
                }
            }
            frame = frames.recv() => {
                let (message, last) = match frame {
                    Some(Frame::Text(text)) => {
                        queued.fetch_sub(text.len(), Ordering::Relaxed);
                        (Message::Text(text.as_ref().into()), false)
                    }
                    Some(Frame::Ping) => (Message::Ping(Default::default()), false),
                    Some(Frame::Close(code, reason)) => {
                        (Message::Close(Some(CloseFrame { code, reason: reason.into() })), true)
                    }
                    None => break,
                };
                match tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await {
                    Ok(Ok(())) if !last => {}
                    _ => break,
                }
            }
        }
    }
    let _ = inputs.send(Input::Disconnect(id)).await;
}

async fn run_hub(
    mut hub: Hub,
    mut inputs: mpsc::Receiver<Input>,
    cluster: Option<mpsc::UnboundedSender<ClusterMessage>>,
    stats: tokio::sync::watch::Sender<HubStats>,
) {
    let mut outboxes: HashMap<ConnId, Outbox> = HashMap::new();
    let mut sfu: Option<mpsc::UnboundedSender<SfuEvent>> = None;
    loop {
        let deadline = tokio::time::Instant::from_std(hub.poll_timeout());
        let input = tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => Some(input),
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let now = Instant::now();
        match input {
            None => {
                hub.handle_timeout(now);
                stats.send_replace(hub.stats());
            }
            Some(Input::Shutdown) => hub.close_all(now),
            Some(Input::Connect { host, outbox, reply }) => {
                let id = hub.connect(now, &host);
                if let Some(id) = id {
                    outboxes.insert(id, outbox);
                }
                let _ = reply.send(id);
            }
            Some(Input::Text(id, text)) => hub.handle_text(now, id, text.as_str()),
            Some(Input::TooLarge(id)) => hub.handle_oversized(now, id),
            Some(Input::Binary(id)) => hub.handle_binary(now, id),
            Some(Input::Pong(id)) => hub.handle_pong(now, id),
            Some(Input::Disconnect(id)) => {
                outboxes.remove(&id);
                hub.disconnect(now, id);
            }
            Some(Input::Cluster(msg)) => hub.handle_cluster(now, msg),
            Some(Input::Resync) => hub.resync_cluster(now),
            Some(Input::Stats(reply)) => {
                let _ = reply.send(hub.stats());
            }
            Some(Input::AttachSfu(events)) => {
                hub.enable_sfu();
                sfu = Some(events);
            }
            Some(Input::SfuSignal { peer, data }) => hub.sfu_signal(&peer, &data),
        }
        while let Some(out) = hub.poll_output() {
            let (id, frame) = match out {
                Output::Send { conn, text } => (conn, Frame::Text(text)),
                Output::Ping { conn } => (conn, Frame::Ping),
                Output::Close { conn, code, reason } => {
                    if let Some(outbox) = outboxes.remove(&conn) {
                        let _ = outbox.frames.try_send(Frame::Close(code, reason));
                    }
                    continue;
                }
                Output::Publish(msg) => {
                    if let Some(cluster) = &cluster {
                        let _ = cluster.send(msg);
                    }
                    continue;
                }
                Output::Sfu(event) => {
                    if let Some(sfu) = &sfu {
                        let _ = sfu.send(event);
                    }
                    continue;
                }
            };
            let Some(outbox) = outboxes.get_mut(&id) else { continue };
            let bytes = match &frame {
                Frame::Text(text) => text.len(),
                _ => 0,
            };
            let over = outbox.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > OUTBOX_BYTES;
            if over || outbox.frames.try_send(frame).is_err() {
                tracing::info!(conn = id.0, "dropping a client that does not read its messages");
                // A stored permit: the task ends even if it is not waiting right now.
                outbox.kill.notify_one();
                outboxes.remove(&id);
                hub.drop_slow(now, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_host_names() {
        assert_eq!(host_name("example.org:8080"), Some("example.org"));
        assert_eq!(host_name("example.org"), Some("example.org"));
        assert_eq!(host_name("[::1]:8080"), Some("[::1]"));
        assert_eq!(host_name("127.0.0.1:1"), Some("127.0.0.1"));
        assert_eq!(host_name(""), None);
        assert_eq!(host_name("[::1"), None);
        assert_eq!(host_name("evil.org/x?y"), None);
        assert_eq!(host_name("a b"), None);
    }
}
