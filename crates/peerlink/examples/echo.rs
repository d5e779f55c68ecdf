//! An echo peer: joins a room and sends every data channel message back on the channel it
//! came on (text as text, binary as binary, in order), for every peer, until interrupted.
//!
//! `cargo run -p peerlink --example echo -- ws://127.0.0.1:8080/ws ROOM [NAME]`

use peerlink::{ChannelConfig, Connection, DataChannel, Message, Room};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (url, room) = (args.next().ok_or("no URL")?, args.next().ok_or("no room")?);
    let name = args.next().unwrap_or_else(|| "echo".to_owned());
    let mut room = Room::join(&url, &room, &name).await?;
    eprintln!("joined as {}", room.id());
    loop {
        tokio::select! {
            conn = room.accept() => match conn {
                Some(conn) => { tokio::spawn(serve(conn)); }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    room.close().await;
    Ok(())
}

/// Echoes every channel of one connection; as the offerer it opens one too.
async fn serve(conn: Connection) {
    if conn.is_offerer() {
        if let Ok(channel) = conn.open_channel(ChannelConfig::reliable("chat")).await {
            tokio::spawn(echo(channel));
        }
    }
    while let Some(channel) = conn.accept_channel().await {
        tokio::spawn(echo(channel));
    }
    eprintln!("{}: {}", conn.peer().name, conn.closed().await);
}

async fn echo(mut channel: DataChannel) {
    while let Some(message) = channel.recv().await {
        let sent = match &message {
            Message::Text(text) => channel.send_text(text).await,
            Message::Binary(data) => channel.send(data).await,
        };
        if sent.is_err() {
            break;
        }
    }
}
