//! `peerlink chat`: lines of standard input go out as text messages on a `chat` data channel
//! to every other participant of the room (lines typed before any channel opens wait for the
//! first ones); text messages received are printed, one per line. Status goes to standard
//! error, including `selected pair: <local> -> <remote>` for each connection. Chat ends when
//! standard input ends (once what it sent was acknowledged, printing what arrives
//! meanwhile), or when the last other peer has gone.
//!
//! In a room through the server (SFU mode) the one `chat` channel goes to the server, which
//! relays each line to everyone there (`{"from", "text"}` in, printed as the text); lines
//! wait while nobody else is in the room, as they do for a channel in a mesh.
//!
//! Written on the `peerlink` library: a task per connection, a task per chat channel.

use crate::peer::{sleep_until, stdin_lines, MeetArgs};
use crate::status;
use peerlink::{
    ChannelConfig, ChannelId, ChannelSender, Connection, ConnectionEvent, ConnectionState, DataChannel, Gone,
    Message, RoomEvent, RoomMode, SFU_PEER,
};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::time::Instant;

/// The browser app's limit for one chat message (docs/file-transfer.md).
const MAX_CHAT_CHARS: usize = 4000;
/// A connected peer that has no chat channel after this long gets one from us.
const CHAT_FALLBACK: Duration = Duration::from_millis(1500);
/// At the end of input: how long to wait for what was sent to be acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// ... and then to keep printing what arrives.
const LINGER: Duration = Duration::from_millis(500);

/// What the tasks of connection number `.0` tell the main loop.
enum Update {
    /// A chat channel is open: lines may go there.
    Open(u64, ChannelSender),
    Closed(u64, ChannelId),
    Gone(u64, Gone),
    /// Standard output cannot be written: chat ends with an error (exit 1).
    Output(std::io::Error),
}

/// One other participant: its id, name and open chat channels (the first used to send).
struct Other {
    peer: String,
    name: String,
    open: Vec<ChannelSender>,
}

pub async fn run(args: MeetArgs) -> anyhow::Result<()> {
    let mut room = crate::room::join_room(&args, 1 << 20).await?;
    let mut lines = stdin_lines();
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let mut others: HashMap<u64, Other> = HashMap::new();
    let mut count = 0;
    // Lines not sent yet: none of the room's mode's chat channels is open.
    let mut pending: Vec<String> = Vec::new();
    // Who else is in the room: a line through the server waits until someone is.
    let mut present: HashSet<String> = HashSet::new();
    let mut seen_anyone = false;
    // Lines go over the connections of the room's mode only (during a switch both are up).
    let mut sfu = false;
    let mut stdin_open = true;
    // At the end of input: until when to wait for acknowledgements, then to linger.
    let mut drain_until: Option<Instant> = None;
    let mut linger_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            line = lines.recv(), if stdin_open => match line {
                Some(line) => pending.push(line.chars().take(MAX_CHAT_CHARS).collect()),
                None => {
                    stdin_open = false;
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                }
            },
            event = room.next_event() => match event {
                None => break,
                Some(RoomEvent::Connection(conn)) => {
                    count += 1;
                    let (peer, name) = (conn.peer().id.clone(), conn.peer().name.clone());
                    others.insert(count, Other { peer, name, open: Vec::new() });
                    tokio::spawn(connection(conn, count, updates_tx.clone()));
                }
                Some(RoomEvent::Mode(mode)) => sfu = mode == RoomMode::Sfu,
                Some(RoomEvent::Joined(p)) => {
                    present.insert(p.id);
                    seen_anyone = true;
                }
                Some(RoomEvent::Left(id)) => {
                    present.remove(&id);
                    if sfu && seen_anyone && present.is_empty() {
                        status!("peerlink: everyone else left the room");
                        break;
                    }
                }
                Some(_) => {}
            },
            Some(update) = updates.recv() => match update {
                Update::Open(n, sender) => others.get_mut(&n).into_iter().for_each(|o| o.open.push(sender.clone())),
                Update::Closed(n, id) => others.get_mut(&n).into_iter().for_each(|o| o.open.retain(|s| s.id() != id)),
                Update::Output(e) => {
                    room.close().await;
                    return Err(anyhow::Error::new(e).context("cannot write to standard output"));
                }
                Update::Gone(n, reason) => {
                    if let Some(other) = others.remove(&n) {
                        status!("peerlink: {} ({}): {reason}", other.name, other.peer);
                    }
                    // (Through the server, the room makes a lost connection again; the
                    // room's emptying ends chat there.)
                    if others.is_empty() && !sfu {
                        if !pending.is_empty() {
                            status!("peerlink: {} line(s) were never sent: nobody else is here", pending.len());
                        }
                        break;
                    }
                }
            },
            _ = tick.tick(), if drain_until.is_some() || linger_until.is_some() => {
                let now = Instant::now();
                if linger_until.is_some_and(|t| now >= t) {
                    break;
                }
                if !pending.is_empty() {
                    // Lines still waiting for a channel keep us here until someone comes and
                    // a channel opens (or the connection fails, which ends chat).
                    drain_until = Some(now + DRAIN_LIMIT);
                } else if let Some(until) = drain_until {
                    let mut unacknowledged = 0;
                    for sender in others.values().flat_map(|o| o.open.first()) {
                        unacknowledged += sender.unacknowledged().await;
                    }
                    if unacknowledged == 0 || now >= until {
                        if unacknowledged > 0 {
                            status!("peerlink: {unacknowledged} bytes not acknowledged by the other peers after {DRAIN_LIMIT:?}");
                        }
                        drain_until = None;
                        linger_until = Some(now + LINGER);
                    }
                }
            }
        }
        // Lines go to the first open chat channel of each peer of the room's mode (through
        // the server: once someone else is there); they wait while there is none.
        let usable = |o: &&Other| (o.peer == SFU_PEER) == sfu && (!sfu || !present.is_empty());
        let open: Vec<ChannelSender> =
            others.values().filter(usable).filter_map(|o| o.open.first().cloned()).collect();
        if !open.is_empty() {
            for line in pending.drain(..) {
                for sender in &open {
                    if let Err(e) = sender.send_text(&line).await {
                        tracing::debug!(error = %e, "chat line not sent");
                    }
                }
            }
        }
    }
    room.close().await;
    Ok(())
}

/// One connection: its status lines, its chat channels (the offerer opens one, the other
/// side after [`CHAT_FALLBACK`] if none came), files refused; then its end.
async fn connection(conn: Connection, n: u64, updates: UnboundedSender<Update>) {
    let name = conn.peer().name.clone();
    let open = |conn: Connection, quiet: bool, updates: UnboundedSender<Update>| async move {
        match conn.open_channel(ChannelConfig::reliable("chat")).await {
            Ok(channel) => read(channel, conn.peer().id == SFU_PEER, n, updates).await,
            Err(e) if quiet => tracing::debug!(error = %e, "chat channel not opened"),
            Err(e) => status!("peerlink: cannot open a chat channel: {e}"),
        }
    };
    // The offerer opens the chat channel (the browser app's convention).
    let mut has_chat = conn.is_offerer();
    if has_chat {
        tokio::spawn(open(conn.clone(), false, updates.clone()));
    }
    let mut fallback_at = None;
    loop {
        tokio::select! {
            event = conn.next_event() => {
                let Some(event) = event else { break };
                crate::room::print_event(&name, &event);
                if event == ConnectionEvent::State(ConnectionState::Connected) && !has_chat {
                    fallback_at.get_or_insert(Instant::now() + CHAT_FALLBACK);
                }
            }
            channel = conn.accept_channel() => match channel {
                None => break,
                Some(channel) if channel.label() == "chat" => {
                    has_chat = true;
                    fallback_at = None;
                    tokio::spawn(read(channel, conn.peer().id == SFU_PEER, n, updates.clone()));
                }
                Some(channel) if channel.label() == "file" => {
                    // Chat takes no files: the sender learns it at once
                    // (docs/file-transfer.md), instead of after its answer time.
                    let refusal = r#"{"type":"error","reason":"this peer does not receive files"}"#;
                    if let Err(e) = channel.send_text(refusal).await {
                        tracing::debug!(error = %e, "file refusal not sent");
                    }
                }
                Some(_) => {}
            },
            () = sleep_until(fallback_at), if fallback_at.is_some() => {
                fallback_at = None;
                if !has_chat {
                    has_chat = true;
                    status!("peerlink: no chat channel from {name} yet; opening one");
                    tokio::spawn(open(conn.clone(), true, updates.clone()));
                }
            }
        }
    }
    let _ = updates.send(Update::Gone(n, conn.closed().await));
}

/// Prints a chat channel's text messages until it closes (the server's relayed lines are
/// `{"from", "text"}`).
async fn read(channel: DataChannel, from_sfu: bool, n: u64, updates: UnboundedSender<Update>) {
    let (sender, mut receiver) = channel.split();
    let id = sender.id();
    let _ = updates.send(Update::Open(n, sender));
    while let Some(message) = receiver.recv().await {
        let Message::Text(mut line) = message else { continue };
        if from_sfu {
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v["text"].is_string() => line = v["text"].as_str().unwrap_or_default().to_owned(),
                _ => continue,
            }
        }
        line.push('\n');
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            let _ = updates.send(Update::Output(e));
            break;
        }
    }
    let _ = updates.send(Update::Closed(n, id));
}
