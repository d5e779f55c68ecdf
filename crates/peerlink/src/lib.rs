//! WebRTC peers in Rust: join a room of a `peerlink serve` signaling server (or run your own
//! signaling), get a [`Connection`] per peer, and talk through [`DataChannel`]s whose
//! handles carry backpressure end to end: [`ChannelSender::send`] waits while too much is
//! queued, and a [`ChannelReceiver`] that is not read stops taking messages, so the peer's
//! SCTP window closes instead of this process buffering without bound.
//!
//! A chat program: every line of standard input goes to every peer, every message comes out.
//!
//! ```no_run
//! use peerlink::{ChannelConfig, Message, Room};
//! use tokio::io::AsyncBufReadExt;
//!
//! # async fn chat() -> Result<(), Box<dyn std::error::Error>> {
//! let mut room = Room::join("ws://127.0.0.1:8080/ws", "lobby", "alice").await?;
//! while let Some(conn) = room.accept().await {
//!     tokio::spawn(async move {
//!         let channel = if conn.is_offerer() {
//!             conn.open_channel(ChannelConfig::reliable("chat")).await.ok()
//!         } else {
//!             conn.accept_channel().await
//!         };
//!         let Some(channel) = channel else { return };
//!         let (tx, mut rx) = channel.split();
//!         tokio::spawn(async move {
//!             let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
//!             while let Ok(Some(line)) = lines.next_line().await {
//!                 if tx.send_text(&line).await.is_err() { break }
//!             }
//!         });
//!         while let Some(Message::Text(text)) = rx.recv().await {
//!             println!("{}: {text}", conn.peer().name);
//!         }
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! Layers, from the top:
//! - [`Room`] → [`Connection`] → [`DataChannel`]: what most programs need.
//! - [`Connection::start`]: a connection without a room, for your own signaling (offer,
//!   answer and candidates passed by hand).
//! - [`session`]: the room's negotiation with raw events ([`session::SessionEvent`]) and the
//!   driver's [`PeerHandle`] (media tracks, as `peerlink play`/`record` use them).
//! - [`rtc::PeerConnection`]: the sans-IO connection itself, for programs that own their
//!   sockets and clock.

#![deny(missing_docs)]

mod channel;
mod room;
pub mod session;

/// The user's guide (docs/library.md), whose examples compile as doctests.
#[doc = include_str!("../../../docs/library.md")]
pub mod guide {}

pub use channel::{ChannelId, ChannelReceiver, ChannelSender, DataChannel, Message};
pub use peerlink_io::{Peer, PeerConfig, PeerEvents, PeerHandle};
pub use peerlink_rtc::{ChannelConfig, CloseReason, Description, Reliability, RtcError, SdpType};
pub use peerlink_rtc::{CongestionControl, ConnectionState};
pub use room::{
    Candidates, ChannelOptions, Connection, ConnectionEvent, Room, RoomEvent, RoomOptions, SelectedPair,
    Stats,
};
pub use session::{Gone, JoinError, Remote, RoomMode, StatusFn, SFU_PEER};

/// The sans-IO PeerConnection and everything it speaks (re-exported from `peerlink-rtc`).
pub use peerlink_rtc as rtc;
/// The signaling protocol and client (re-exported from `peerlink-signal`).
pub use peerlink_signal as signal;

/// What can go wrong on a connection or channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection refused the request (a bad description, a channel id taken...).
    #[error(transparent)]
    Rtc(#[from] RtcError),
    /// The connection is over.
    #[error("the connection is closed: {0}")]
    Closed(Gone),
    /// The data channel is closed.
    #[error("the data channel is closed")]
    ChannelClosed,
    /// Waited too long for something.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A connection could not be started (no local socket).
    #[error("starting a connection: {0}")]
    Start(String),
}
