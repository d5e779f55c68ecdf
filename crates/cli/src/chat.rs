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

use crate::peer::{sleep_until, stdin_lines, MeetArgs};
use crate::room::RoomEvent;
use crate::status;
use peerlink::session::{RoomMode, SFU_PEER};
use peerlink_io::PeerHandle;
use peerlink_rtc::{ChannelConfig, ChannelEvent, ConnectionState, RtcEvent};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
use tokio::time::Instant;

/// The browser app's limit for one chat message (docs/file-transfer.md).
const MAX_CHAT_CHARS: usize = 4000;
/// A connected peer that has no chat channel after this long gets one from us.
const CHAT_FALLBACK: Duration = Duration::from_millis(1500);
/// At the end of input: how long to wait for what was sent to be acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// ... and then to keep printing what arrives.
const LINGER: Duration = Duration::from_millis(500);

/// One other participant.
struct Other {
    name: String,
    handle: PeerHandle,
    /// Its `chat` channels (ours and its own), the first open one used to send.
    channels: Vec<u16>,
    open: Option<u16>,
    /// When to open a chat channel ourselves if none has come.
    fallback_at: Option<Instant>,
}

pub async fn run(args: MeetArgs) -> anyhow::Result<()> {
    let mut room = crate::room::join(&args, args.room_options()).await?;
    let mut lines = stdin_lines();
    let mut others: HashMap<String, Other> = HashMap::new();
    // Lines typed before any chat channel opened.
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
        let fallback = others.values().filter_map(|o| o.fallback_at).min();
        tokio::select! {
            line = lines.recv(), if stdin_open => match line {
                Some(line) => {
                    let line: String = line.chars().take(MAX_CHAT_CHARS).collect();
                    let open: Vec<(PeerHandle, u16)> = others
                        .iter()
                        .filter(|(peer, _)| (*peer == SFU_PEER) == sfu && (!sfu || !present.is_empty()))
                        .filter_map(|(_, o)| o.open.map(|id| (o.handle.clone(), id)))
                        .collect();
                    if open.is_empty() {
                        pending.push(line.clone());
                    }
                    for (handle, id) in open {
                        if let Err(e) = handle.send(id, line.clone().into_bytes(), false).await {
                            tracing::debug!(error = %e, "chat line not sent");
                        }
                    }
                }
                None => {
                    stdin_open = false;
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                }
            },
            event = room.next() => {
                let Some(event) = event else { break };
                match event {
                    RoomEvent::Connecting { peer, handle, offerer } => {
                        let mut other = Other { name: peer.name, handle, channels: Vec::new(), open: None, fallback_at: None };
                        // The offerer opens the chat channel (the browser app's convention).
                        if offerer {
                            match other.handle.create_data_channel(ChannelConfig::reliable("chat")).await {
                                Ok(id) => other.channels.push(id),
                                Err(e) => status!("peerlink: cannot open a chat channel: {e}"),
                            }
                        }
                        others.insert(peer.id, other);
                    }
                    RoomEvent::Gone { peer, reason } => {
                        if let Some(other) = others.remove(&peer) {
                            status!("peerlink: {} ({peer}): {reason}", other.name);
                        }
                        // (Through the server, the session makes a lost connection again; the
                        // room's emptying ends chat there.)
                        if others.is_empty() && !sfu {
                            if !pending.is_empty() {
                                status!("peerlink: {} line(s) were never sent: nobody else is here", pending.len());
                            }
                            break;
                        }
                    }
                    RoomEvent::Mode(mode) => sfu = mode == RoomMode::Sfu,
                    RoomEvent::PeerJoined(p) => {
                        present.insert(p.id);
                        seen_anyone = true;
                        // Lines that waited for someone to be in the room.
                        if let Some((handle, id)) = others.get(SFU_PEER).filter(|_| sfu).and_then(|o| o.open.map(|id| (o.handle.clone(), id))) {
                            for line in pending.drain(..) {
                                if let Err(e) = handle.send(id, line.into_bytes(), false).await {
                                    tracing::debug!(error = %e, "chat line not sent");
                                }
                            }
                        }
                    }
                    RoomEvent::PeerLeft(id) => {
                        present.remove(&id);
                        if sfu && seen_anyone && present.is_empty() {
                            status!("peerlink: everyone else left the room");
                            break;
                        }
                    }
                    RoomEvent::Rtc { peer, event } => {
                        let Some(other) = others.get_mut(&peer) else { continue };
                        match event {
                            RtcEvent::SelectedPair { local_kind, remote_kind, local, remote } => {
                                // Exactly the line DESIGN.md names; the addresses on their own line.
                                status!("selected pair: {local_kind} -> {remote_kind}");
                                status!("peerlink: path {local} -> {remote} ({})", other.name);
                            }
                            RtcEvent::ConnectionState(state) => {
                                status!("peerlink: connection {state:?} ({})", other.name);
                                if state == ConnectionState::Connected && other.channels.is_empty() {
                                    other.fallback_at.get_or_insert(Instant::now() + CHAT_FALLBACK);
                                }
                            }
                            RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == "chat" => {
                                other.channels.push(id);
                                other.fallback_at = None;
                                other.open.get_or_insert(id);
                            }
                            RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == "file" => {
                                // Chat takes no files: the sender learns it at once
                                // (docs/file-transfer.md), instead of after its answer time.
                                let refusal = r#"{"type":"error","reason":"this peer does not receive files"}"#;
                                if let Err(e) = other.handle.send(id, refusal.as_bytes().to_vec(), false).await {
                                    tracing::debug!(error = %e, "file refusal not sent");
                                }
                            }
                            RtcEvent::Channel(ChannelEvent::Open(id)) if other.channels.contains(&id) => {
                                other.open.get_or_insert(id);
                            }
                            RtcEvent::Channel(ChannelEvent::Message { id, data, binary: false })
                                if other.channels.contains(&id) =>
                            {
                                let mut out = std::io::stdout().lock();
                                let mut line = String::from_utf8_lossy(&data).into_owned();
                                if peer == peerlink::session::SFU_PEER {
                                    // The server relays as {"from": id, "text": ...}.
                                    match serde_json::from_str::<serde_json::Value>(&line) {
                                        Ok(v) if v["text"].is_string() => line = v["text"].as_str().unwrap_or_default().to_owned(),
                                        _ => continue,
                                    }
                                }
                                line.push('\n');
                                out.write_all(line.as_bytes())?;
                                out.flush()?;
                            }
                            RtcEvent::Channel(ChannelEvent::Closed(id)) => {
                                other.channels.retain(|&c| c != id);
                                if other.open == Some(id) {
                                    other.open = other.channels.first().copied();
                                }
                            }
                            _ => {}
                        }
                        // The first channel to open takes what was typed before it.
                        let usable = (peer == SFU_PEER) == sfu && (!sfu || !present.is_empty());
                        if let Some(id) = other.open.filter(|_| usable) {
                            for line in pending.drain(..) {
                                if let Err(e) = other.handle.send(id, line.into_bytes(), false).await {
                                    tracing::debug!(error = %e, "chat line not sent");
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            () = sleep_until(fallback), if fallback.is_some() => {
                let now = Instant::now();
                for other in others.values_mut().filter(|o| o.fallback_at.is_some_and(|t| t <= now)) {
                    other.fallback_at = None;
                    if other.channels.is_empty() {
                        status!("peerlink: no chat channel from {} yet; opening one", other.name);
                        match other.handle.create_data_channel(ChannelConfig::reliable("chat")).await {
                            Ok(id) => other.channels.push(id),
                            // The connection is going away; its end is reported by itself.
                            Err(e) => tracing::debug!(error = %e, "chat channel not opened"),
                        }
                    }
                }
            }
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
                    for other in others.values() {
                        if let Some(id) = other.open {
                            unacknowledged += other.handle.unacknowledged(id).await;
                        }
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
    }
    room.close().await;
    Ok(())
}
