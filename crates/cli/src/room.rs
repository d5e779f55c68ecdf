//! The native peer in a room of `peerlink serve`: the `peerlink` library's session (the
//! newcomer offers, perfect negotiation, trickle, the offer fallback), joined with the
//! command line's options and its status lines on standard error.

use crate::peer::MeetArgs;
pub use peerlink::session::{Gone, Session as Room, SessionEvent as RoomEvent, SessionOptions};
use peerlink_rtc::{Direction, MediaKind, TrackConfig};
use std::sync::Arc;
use std::time::Duration;

/// How the room reaches the server.
#[derive(Debug, Clone)]
pub struct RoomOptions {
    /// Keep trying to reach a server that refuses connections for this long before the
    /// first join (`None`: forever).
    pub wait: Option<Duration>,
    /// Transceivers every connection gets before its first offer or answer (what we send).
    pub tracks: Vec<(MediaKind, Direction, TrackConfig)>,
    /// What a transceiver made for a peer's audio or video section does (`None`: recvonly).
    pub accept_media: Option<Direction>,
}

/// Joins the room; returns once the server has welcomed us (an error if it refused, or
/// could not be reached).
pub async fn join(args: &MeetArgs, options: RoomOptions) -> anyhow::Result<Room> {
    let name = args.name.clone().unwrap_or_else(|| format!("peerlink-{}", std::process::id()));
    let mut session = SessionOptions::default();
    session.token = args.token.clone();
    session.bind = args.bind.clone();
    session.wait = options.wait;
    session.tracks = options.tracks;
    session.accept_media = options.accept_media;
    session.congestion_control = args.congestion_control.map(Into::into);
    session.status = Some(Arc::new(|line: &str| crate::status!("{line}")));
    Ok(Room::join(&args.server, &args.room, &name, session).await?)
}
