//! Peerlink signaling: peers meet in rooms and exchange session descriptions and ICE
//! candidates as JSON text frames over WebSocket (the protocol of DESIGN.md).
//!
//! - [`hub::Hub`]: the rooms, sans-IO, one owner; limits (frame size, per-connection token
//!   bucket, room size, validation), abuse handling (error frames, then close 1008),
//!   keepalive, TURN REST credentials in `welcome.iceServers`, optional HS256 room tokens
//!   (RFC 7519), and cluster membership for nodes sharing rooms.
//! - `service::SignalService` (feature `service`): the thin shell: one tokio task owns the
//!   hub, one task per WebSocket (axum) moves frames; the `redis` module (feature `redis`)
//!   links nodes through Redis pub/sub.
//! - `client::SignalClient` (feature `client`): a Rust client that reconnects and rejoins.
//!
//! Cargo features, so a user of the hub or of the client alone compiles nothing else:
//!
//! | feature | adds | dependencies it brings |
//! |---|---|---|
//! | (none, the default) | [`hub`], [`protocol`], [`cluster`], [`token`] | serde, JWT, HMAC |
//! | `service` | `service::SignalService`, the axum WebSocket shell | axum, tokio |
//! | `client` | `client::SignalClient` | tokio-tungstenite, rustls, tokio |
//! | `redis` | `redis::start`: nodes sharing rooms (implies `service`) | redis |
//!
//! Out of scope: persistence (rooms live as long as their peers), any media or data.
//!
//! Driving the hub:
//! ```
//! use peerlink_signal::hub::{Hub, HubConfig, Output};
//! use std::time::Instant;
//! let now = Instant::now();
//! let mut hub = Hub::new(HubConfig::default(), now, 1_800_000_000, [7; 32]);
//! let conn = hub.connect(now, "localhost").unwrap();
//! hub.handle_text(now, conn, r#"{"type":"join","room":"r","name":"alice"}"#);
//! while let Some(out) = hub.poll_output() {
//!     if let Output::Send { text, .. } = out {
//!         assert!(text.starts_with(r#"{"type":"welcome""#));
//!     }
//! }
//! ```

#[cfg(feature = "client")]
pub mod client;
pub mod cluster;
pub mod hub;
pub mod protocol;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "service")]
pub mod service;
pub mod token;

#[cfg(feature = "client")]
pub use client::{ClientEvent, ClientOptions, SignalClient};
pub use hub::{Hub, HubConfig, IceConfig, RoomMode, SfuEvent, SFU_PEER};
pub use protocol::{IceServer, PeerInfo, ServerMessage};
#[cfg(feature = "service")]
pub use service::SignalService;
