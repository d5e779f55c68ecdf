//! `peerlink chat`: lines of standard input go out as text messages on a `chat` data channel
//! (lines typed before it opens wait); text messages from the other peer are printed, one
//! per line. Status goes to standard error, including `selected pair: <local> -> <remote>`.

use crate::peer::{sleep_until, MeetArgs, Session};
use peerlink_rtc::{ChannelConfig, ChannelEvent, ConnectionState, RtcEvent};
use std::io::Write;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The browser app's limit for one chat message (docs/file-transfer.md).
const MAX_CHAT_CHARS: usize = 4000;
/// A connected peer that has no chat channel after this long opens one itself.
const CHAT_FALLBACK: Duration = Duration::from_millis(1500);

pub async fn run(args: MeetArgs) -> anyhow::Result<()> {
    let mut session = Session::meet(&args).await?;
    // The offerer opens the chat channel (the browser app's convention).
    let mut channels: Vec<u16> = Vec::new();
    let mut open: Option<u16> = None;
    if session.offered {
        channels.push(session.peer.create_data_channel(ChannelConfig::reliable("chat")).await?);
    }
    let mut pending: Vec<String> = Vec::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut connected_at: Option<tokio::time::Instant> = None;
    loop {
        let fallback = connected_at.filter(|_| channels.is_empty()).map(|t| t + CHAT_FALLBACK);
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(line) => {
                    let line: String = line.chars().take(MAX_CHAT_CHARS).collect();
                    match open {
                        Some(id) => session.peer.send(id, line.into_bytes(), false).await?,
                        None => pending.push(line),
                    }
                }
                None => {
                    stdin_open = false;
                    if open.is_some() && pending.is_empty() {
                        // Give the last messages time to leave, then go.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            },
            event = session.next() => {
                let Some(event) = event? else { break };
                match event {
                    RtcEvent::SelectedPair { local_kind, remote_kind, local, remote } => {
                        // Exactly the line DESIGN.md names; the addresses on their own line.
                        eprintln!("selected pair: {local_kind} -> {remote_kind}");
                        eprintln!("peerlink: path {local} -> {remote}");
                    }
                    RtcEvent::ConnectionState(state) => {
                        eprintln!("peerlink: connection {state:?}");
                        match state {
                            ConnectionState::Connected => { connected_at.get_or_insert(tokio::time::Instant::now()); }
                            ConnectionState::Failed => anyhow::bail!("the connection failed"),
                            ConnectionState::Closed => break,
                            _ => {}
                        }
                    }
                    RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == "chat" => {
                        channels.push(id);
                        open.get_or_insert(id);
                    }
                    RtcEvent::Channel(ChannelEvent::Open(id)) if channels.contains(&id) => {
                        open.get_or_insert(id);
                    }
                    RtcEvent::Channel(ChannelEvent::Message { id, data, binary: false }) if channels.contains(&id) => {
                        let text = String::from_utf8_lossy(&data);
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{text}")?;
                        out.flush()?;
                    }
                    RtcEvent::Channel(ChannelEvent::Closed(id)) => {
                        channels.retain(|&c| c != id);
                        if open == Some(id) {
                            open = channels.first().copied();
                        }
                    }
                    RtcEvent::Channel(ChannelEvent::Ended { reason }) => {
                        eprintln!("peerlink: data channels ended: {reason}");
                        break;
                    }
                    _ => {}
                }
                if let Some(id) = open {
                    for line in pending.drain(..) {
                        session.peer.send(id, line.into_bytes(), false).await?;
                    }
                    if !stdin_open {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
            () = sleep_until(fallback), if fallback.is_some() => {
                eprintln!("peerlink: no chat channel yet; opening one");
                channels.push(session.peer.create_data_channel(ChannelConfig::reliable("chat")).await?);
            }
        }
    }
    session.close().await;
    Ok(())
}
