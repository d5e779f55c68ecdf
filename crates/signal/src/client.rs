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

use crate::protocol::{IceServer, PeerInfo, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::sync::mpsc;
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
    },
    /// Back in the room after a reconnection, under the same `id` as before: connections to
    /// other peers are still valid and need no new offer. `peers` is who is in the room now
    /// (peers still reconnecting themselves come later as `PeerJoined`, with their old ids);
    /// nobody left just because the signaling connection was lost.
    Rejoined {
        id: String,
        peers: Vec<PeerInfo>,
        ice_servers: Vec<IceServer>,
    },
    PeerJoined(PeerInfo),
    PeerLeft(String),
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
    /// The client stopped for good: closed by the user, or refused in a way retrying
    /// cannot fix (bad room or name, no valid token).
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
/// The server pings every 10 s: this long without any frame means the path is dead.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

impl SignalClient {
    /// Connects to `url` (`ws://host:port/ws`, or `wss://` through TLS, the server checked
    /// against the system's root certificates, or instead those of `SSL_CERT_FILE` or
    /// `SSL_CERT_DIR` when set) and
    /// joins `room` as `name`; retries until [`SignalClient::close`].
    pub fn connect(url: &str, room: &str, name: &str, token: Option<String>) -> SignalClient {
        let (commands, command_rx) = mpsc::channel(256);
        let (event_tx, events) = mpsc::channel(256);
        let (connected_tx, connected) = tokio::sync::watch::channel(false);
        let mut join = serde_json::json!({"type": "join", "room": room, "name": name});
        if let Some(token) = token {
            join["token"] = token.into();
        }
        let task = Task { url: url.to_owned(), join, events: event_tx, connected: connected_tx, id: None };
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

/// Whether a connection failed because the server's TLS certificate was not accepted.
fn certificate_refused(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    let tokio_tungstenite::tungstenite::Error::Io(io) = e else { return false };
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
}

struct Task {
    url: String,
    /// The `join` message, without `id`.
    join: serde_json::Value,
    /// The id of the last session, asked for again on the next join.
    id: Option<String>,
    events: mpsc::Sender<ClientEvent>,
    connected: tokio::sync::watch::Sender<bool>,
}

enum End {
    Lost(String),
    Fatal(String),
    ByUser,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            let reason = format!("{}: the signaling URL must start with ws:// or wss://", self.url);
            let _ = self.events.send(ClientEvent::Closed { reason }).await;
            return;
        }
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
        let mut backoff = BACKOFF_MIN;
        let reason = loop {
            let connect = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async_with_config(self.url.as_str(), None, true),
            );
            let end = match connect.await {
                Ok(Ok((ws, _))) => self.session(ws, &mut commands, &mut backoff).await,
                // A certificate we do not trust will not become trusted by retrying.
                Ok(Err(e)) if certificate_refused(&e) => End::Fatal(format!(
                    "cannot connect to {}: {e} (to trust a private CA instead of the system's \
                     roots, set SSL_CERT_FILE=ca.pem)",
                    self.url
                )),
                Ok(Err(e)) => End::Lost(format!("cannot connect to {}: {e}", self.url)),
                Err(_) => {
                    End::Lost(format!("cannot connect to {}: no answer in {CONNECT_TIMEOUT:?}", self.url))
                }
            };
            self.connected.send_replace(false);
            match end {
                End::ByUser => break "closed".to_owned(),
                End::Fatal(reason) => break reason,
                End::Lost(reason) => {
                    tracing::debug!(%reason, ?backoff, "signaling connection lost; reconnecting");
                    if self.events.send(ClientEvent::Disconnected { reason }).await.is_err() {
                        return;
                    }
                }
            }
            // Commands queued while away are dropped (they named peers of an old session);
            // a Close among them is honoured.
            let sleep = tokio::time::sleep(jitter(backoff));
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
                    let event = match ServerMessage::parse(text.as_str()) {
                        Ok(ServerMessage::Welcome { id, peers, ice_servers, .. }) => {
                            joined = true;
                            *backoff = BACKOFF_MIN;
                            self.connected.send_replace(true);
                            if self.id.as_ref() == Some(&id) {
                                ClientEvent::Rejoined { id, peers, ice_servers }
                            } else {
                                self.id = Some(id.clone());
                                ClientEvent::Joined { id, peers, ice_servers }
                            }
                        }
                        Ok(ServerMessage::PeerJoined { peer }) => ClientEvent::PeerJoined(peer),
                        Ok(ServerMessage::PeerLeft { id }) => ClientEvent::PeerLeft(id),
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
                    if self.events.send(event).await.is_err() {
                        return End::ByUser;
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
    let mut b = [0u8; 1];
    let _ = getrandom::getrandom(&mut b);
    d.mul_f64(0.75 + f64::from(b[0]) / 510.0)
}
