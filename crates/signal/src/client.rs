//! A signaling client for native peers: joins a room, relays `signal`s, and reconnects
//! when the connection drops, then rejoins asking for the peer id it had (granted when
//! nobody holds it: [`ClientEvent::Rejoined`]), so the peers it is connected with recognise
//! it and calls survive a signaling outage or a server restart.
//!
//! ```no_run
//! # async fn demo() {
//! use peerlink_signal::{ClientEvent, SignalClient};
//! let mut client = SignalClient::connect("ws://127.0.0.1:8080/ws", "room", "bot", None);
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         ClientEvent::Joined { peers, .. } => {
//!             for p in peers {
//!                 client.signal(&p.id, serde_json::json!({"hello": 1})).await.ok();
//!             }
//!         }
//!         ClientEvent::Closed { .. } => break,
//!         _ => {}
//!     }
//! }
//! # }
//! ```

mod connect;

use crate::protocol::{IceServer, PeerInfo, ServerMessage};
use connect::{Failure, Target};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What the client tells its user.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// In the room: the first time, or after a reconnection when the server could not give
    /// back the previous id (then `id` is new: the others know us as a newcomer).
    Joined {
        id: String,
        peers: Vec<PeerInfo>,
        ice_servers: Vec<IceServer>,
        /// How the room carries media: `"mesh"` (also from servers that do not say) or
        /// `"sfu"` (signal with the peer `"sfu"` only).
        mode: String,
    },
    /// Back in the room after a reconnection, under the same `id` as before: connections to
    /// other peers are still valid and need no new offer. `peers` is who is in the room now
    /// (peers still reconnecting themselves come later as `PeerJoined`, with their old ids);
    /// nobody left just because the signaling connection was lost.
    Rejoined {
        id: String,
        peers: Vec<PeerInfo>,
        ice_servers: Vec<IceServer>,
        /// The room's mode, as in `Joined`.
        mode: String,
    },
    PeerJoined(PeerInfo),
    PeerLeft(String),
    /// The room's mode (`"mesh"` or `"sfu"`): after `Joined`/`Rejoined` when the server said
    /// it is not a mesh, and at every switch. In `"sfu"`, signal with the peer `"sfu"` only.
    Mode(String),
    Signal {
        from: String,
        data: Box<RawValue>,
    },
    /// An `error` frame that did not end the session (e.g. `unknown-peer`).
    Error {
        code: String,
        message: String,
    },
    /// The connection dropped; the client is trying again.
    Disconnected {
        reason: String,
    },
    /// The client stopped for good: closed by the user; refused in a way retrying cannot
    /// fix (bad room or name, no valid token; before the first join also: a host that does
    /// not resolve, an HTTP error such as 404 instead of a WebSocket, TLS against a plain
    /// server, an untrusted certificate); or the server could not be reached within
    /// [`ClientOptions::give_up_after`] of the start. `reason` is a sentence for a person.
    Closed {
        reason: String,
    },
}

/// Caller mistakes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("not connected to the signaling server")]
    NotConnected,
    #[error("the client was closed")]
    Closed,
}

enum Command {
    Signal(String),
    Close,
}

/// How a [`SignalClient`] behaves; `ClientOptions::default()` is what
/// [`SignalClient::connect`] uses. Set fields on a default value:
///
/// ```
/// # use peerlink_signal::client::ClientOptions;
/// let mut options = ClientOptions::default();
/// options.give_up_after = None; // wait for the server however long it takes
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Until the first successful join, the client stops with [`ClientEvent::Closed`] when
    /// it could not get into the room for this long (connection refused, no answer, room
    /// full...). `None`: keep trying forever. Default 30 s. After a first join, a lost
    /// server is retried forever whatever this says (a restart must not end a call).
    pub give_up_after: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { give_up_after: Some(Duration::from_secs(30)) }
    }
}

/// Handle to a client running on the current tokio runtime.
#[derive(Debug)]
pub struct SignalClient {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ClientEvent>,
    connected: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Signal(_) => "Signal",
            Command::Close => "Close",
        })
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest attempt, even when the time to give up is nearly over.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// The server pings every 10 s: this long without any frame means the path is dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

impl SignalClient {
    /// Connects to `url` (`ws://host:port/ws`, or `wss://` through TLS, the server checked
    /// against the system's root certificates, or instead those of `SSL_CERT_FILE` or
    /// `SSL_CERT_DIR` when set; a self-signed certificate in `SSL_CERT_FILE` is trusted as
    /// the server's own) and joins `room` as `name`, with the default [`ClientOptions`]:
    /// gives up if the server cannot be reached for 30 s at first; after a first join,
    /// retries until [`SignalClient::close`].
    pub fn connect(url: &str, room: &str, name: &str, token: Option<String>) -> SignalClient {
        SignalClient::connect_with(url, room, name, token, ClientOptions::default())
    }

    /// [`SignalClient::connect`] with options.
    pub fn connect_with(
        url: &str,
        room: &str,
        name: &str,
        token: Option<String>,
        options: ClientOptions,
    ) -> SignalClient {
        let (commands, command_rx) = mpsc::channel(256);
        let (event_tx, events) = mpsc::channel(256);
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let mut join = serde_json::json!({"type": "join", "room": room, "name": name});
        if let Some(token) = token {
            join["token"] = token.into();
        }
        let task = Task {
            url: url.to_owned(),
            join,
            events: event_tx,
            connected: connected_tx,
            id: None,
            resume: None,
            options,
        };
        tokio::spawn(task.run(command_rx));
        SignalClient { commands, events, connected }
    }

    /// Sends `data` to a peer of the room, as `{"type":"signal","to":..,"data":..}`.
    pub async fn signal(&self, to: &str, data: serde_json::Value) -> Result<(), ClientError> {
        if !*self.connected.borrow() {
            return Err(ClientError::NotConnected);
        }
        let text = serde_json::json!({"type": "signal", "to": to, "data": data}).to_string();
        self.commands.send(Command::Signal(text)).await.map_err(|_| ClientError::Closed)
    }

    /// The next event; `None` after `Closed`.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Sends what is queued, leaves the room, closes the connection, and returns once that
    /// is done (events still pending are dropped).
    pub async fn close(&mut self) {
        let _ = self.commands.send(Command::Close).await;
        while let Some(event) = self.events.recv().await {
            if let ClientEvent::Closed { .. } = event {
                break;
            }
        }
    }
}

struct Task {
    url: String,
    /// The `join` message, without `id`.
    join: serde_json::Value,
    /// The id of the last session, asked for again on the next join...
    id: Option<String>,
    /// ...with its resume token, for a server that still holds the old connection.
    resume: Option<String>,
    events: mpsc::Sender<ClientEvent>,
    connected: tokio::sync::watch::Sender<bool>,
    options: ClientOptions,
}

enum End {
    Lost(String),
    Fatal(String),
    ByUser,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // A trust file that cannot be read fails every attempt the same way: say so now.
        if self.url.starts_with("wss://") {
            if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
                if let Err(e) = std::fs::read(&path) {
                    let reason = format!("SSL_CERT_FILE={}: {e}", path.to_string_lossy());
                    let _ = self.events.send(ClientEvent::Closed { reason }).await;
                    return;
                }
            }
        }
        let target = match Target::new(&self.url) {
            Ok(target) => target,
            Err(reason) => {
                let _ = self.events.send(ClientEvent::Closed { reason }).await;
                return;
            }
        };
        let give_up_at = self.options.give_up_after.map(|d| Instant::now() + d);
        let mut backoff = BACKOFF_MIN;
        let reason = loop {
            // Before the first join, no attempt outlives the time left.
            let first_contact = self.id.is_none();
            let timeout = match give_up_at {
                Some(at) if first_contact => {
                    CONNECT_TIMEOUT.min(at.saturating_duration_since(Instant::now()).max(MIN_ATTEMPT))
                }
                _ => CONNECT_TIMEOUT,
            };
            let end = match target.open(timeout).await {
                Ok(ws) => self.session(ws, &mut commands, &mut backoff).await,
                // After a first join every failure may be a server being replaced: retry.
                Err(Failure::Fatal(reason)) if first_contact => End::Fatal(reason),
                Err(Failure::Fatal(reason) | Failure::Retry(reason)) => End::Lost(reason),
            };
            self.connected.send_replace(false);
            let reason = match end {
                End::ByUser => break "closed".to_owned(),
                End::Fatal(reason) => break reason,
                End::Lost(reason) => reason,
            };
            let delay = jitter(backoff);
            // Still never in the room: give up once the time allowed for that is over.
            if let (None, Some(at)) = (&self.id, give_up_at) {
                let now = Instant::now();
                if now >= at {
                    let waited = self.options.give_up_after.unwrap_or_default().as_secs_f32();
                    let waited = format!("{waited:.1}");
                    break format!("{reason}; gave up after trying for {} s", waited.trim_end_matches(".0"));
                }
            }
            tracing::debug!(%reason, ?backoff, "signaling connection lost; reconnecting");
            if self.events.send(ClientEvent::Disconnected { reason }).await.is_err() {
                return;
            }
            let wake = match (&self.id, give_up_at) {
                (None, Some(at)) => (Instant::now() + delay).min(at),
                _ => Instant::now() + delay,
            };
            // Commands queued while away are dropped (they named peers of an old session);
            // a Close among them is honoured.
            let sleep = tokio::time::sleep_until(wake);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = commands.recv() => match command {
                        Some(Command::Signal(_)) => {}
                        Some(Command::Close) | None => {
                            let _ = self.events.send(ClientEvent::Closed { reason: "closed".into() }).await;
                            return;
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        let _ = self.events.send(ClientEvent::Closed { reason }).await;
    }

    async fn session<S>(
        &mut self,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
        commands: &mut mpsc::Receiver<Command>,
        backoff: &mut Duration,
    ) -> End
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut join = self.join.clone();
        if let Some(id) = &self.id {
            join["id"] = id.clone().into();
            if let Some(resume) = &self.resume {
                join["resume"] = resume.clone().into();
            }
        }
        if let Err(e) = ws.send(Message::text(join.to_string())).await {
            return End::Lost(e.to_string());
        }
        let mut joined = false;
        loop {
            tokio::select! {
                message = tokio::time::timeout(SILENCE_TIMEOUT, ws.next()) => {
                    let Ok(message) = message else {
                        return End::Lost(format!("nothing from the server in {SILENCE_TIMEOUT:?}"));
                    };
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            let reason = frame.map_or_else(|| "closed by the server".to_owned(), |f| {
                                format!("closed by the server: {} {}", u16::from(f.code), f.reason)
                            });
                            return End::Lost(reason);
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        None => return End::Lost("connection closed".to_owned()),
                    };
                    let mut then = None;
                    let event = match ServerMessage::parse(text.as_str()) {
                        Ok(ServerMessage::Welcome { id, peers, ice_servers, resume, mode, .. }) => {
                            let mode = mode.unwrap_or_else(|| "mesh".to_owned());
                            then = (mode != "mesh").then(|| ClientEvent::Mode(mode.clone()));
                            self.resume = resume;
                            joined = true;
                            *backoff = BACKOFF_MIN;
                            self.connected.send_replace(true);
                            if self.id.as_ref() == Some(&id) {
                                ClientEvent::Rejoined { id, peers, ice_servers, mode }
                            } else {
                                self.id = Some(id.clone());
                                ClientEvent::Joined { id, peers, ice_servers, mode }
                            }
                        }
                        Ok(ServerMessage::PeerJoined { peer }) => ClientEvent::PeerJoined(peer),
                        Ok(ServerMessage::PeerLeft { id }) => ClientEvent::PeerLeft(id),
                        Ok(ServerMessage::Mode { mode }) => ClientEvent::Mode(mode),
                        Ok(ServerMessage::Signal { from, data }) => ClientEvent::Signal { from, data },
                        Ok(ServerMessage::Error { code, message }) => {
                            if !joined {
                                match code.as_str() {
                                    "bad-room" | "bad-name" | "unauthorized" => {
                                        return End::Fatal(format!("join refused: {code}: {message}"))
                                    }
                                    "room-full" | "server-full" => {
                                        return End::Lost(format!("join refused: {code}: {message}"))
                                    }
                                    _ => {}
                                }
                            }
                            ClientEvent::Error { code, message }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a frame this client does not understand");
                            continue;
                        }
                    };
                    for event in std::iter::once(event).chain(then) {
                        if self.events.send(event).await.is_err() {
                            return End::ByUser;
                        }
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Signal(text)) => {
                        if let Err(e) = ws.send(Message::text(text)).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = ws.send(Message::text(r#"{"type":"leave"}"#)).await;
                        let _ = ws.close(None).await;
                        return End::ByUser;
                    }
                }
            }
        }
    }
}

/// ±25 % so clients dropped together do not come back together.
fn jitter(d: Duration) -> Duration {
    let [b] = peerlink_proto::os_random::<1>();
    d.mul_f64(0.75 + f64::from(b) / 510.0)
}
