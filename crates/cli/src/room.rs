//! The native peer in a room of `peerlink serve`, joined with the command line's options and
//! its status lines on standard error: as a `peerlink::Room` for the commands on data
//! channels (chat, send, recv), as the library's lower-layer session for those with media
//! (echo, play, record).

use crate::peer::MeetArgs;
pub use peerlink::session::{Session as Room, SessionEvent as RoomEvent, SessionOptions};
use std::sync::Arc;
use std::time::Duration;

/// The name to join with.
fn name(args: &MeetArgs) -> String {
    args.name.clone().unwrap_or_else(|| format!("peerlink-{}", std::process::id()))
}

/// Where the room's status lines go: standard error.
pub fn status_sink() -> peerlink::StatusFn {
    Arc::new(|line: &str| crate::status!("{line}"))
}

/// Joins the room's session; returns once the server has welcomed us (an error if it
/// refused, or could not be reached).
pub async fn join(args: &MeetArgs, options: SessionOptions) -> anyhow::Result<Room> {
    Ok(Room::join(&args.server, &args.room, &name(args), options).await?)
}

/// Joins the room as a `peerlink::Room` (the commands on data channels: chat, send, recv),
/// with the room's status lines on standard error. `buffer`: bytes each channel queues to
/// send before `send` waits, and holds received and unread before the peer is made to wait.
pub async fn join_room(args: &MeetArgs, buffer: usize) -> anyhow::Result<peerlink::Room> {
    let mut options = peerlink::RoomOptions::default();
    options.token = args.token.clone();
    options.bind = args.bind.clone();
    options.wait = (args.wait > 0).then(|| Duration::from_secs(args.wait));
    options.congestion_control = args.congestion_control.map(Into::into);
    options.status = Some(status_sink());
    options.channels.high_water = buffer;
    options.channels.receive_buffer = buffer;
    // The room gives up on a connection not up within a minute: a channel waits as long.
    options.open_timeout = Duration::from_secs(90);
    Ok(peerlink::Room::join_with(&args.server, &args.room, &name(args), options).await?)
}

/// Prints a connection's status lines: its selected pair (exactly the line DESIGN.md names,
/// the addresses on their own line) and its states.
pub fn print_event(name: &str, event: &peerlink::ConnectionEvent) {
    match event {
        peerlink::ConnectionEvent::SelectedPair(pair) => {
            crate::status!("selected pair: {} -> {}", pair.local_kind, pair.remote_kind);
            crate::status!("peerlink: path {} -> {} ({name})", pair.local, pair.remote);
        }
        peerlink::ConnectionEvent::State(state) => crate::status!("peerlink: connection {state:?} ({name})"),
        _ => {}
    }
}

/// Prints a connection's status lines until it is over, then how it ended.
pub async fn report(conn: peerlink::Connection) {
    let (id, name) = (conn.peer().id.clone(), conn.peer().name.clone());
    while let Some(event) = conn.next_event().await {
        print_event(&name, &event);
    }
    crate::status!("peerlink: {name} ({id}): {}", conn.closed().await);
}
