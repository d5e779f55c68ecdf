//! Standard input lines to everyone in a room, their messages to standard output.
//! `cargo run -p peerlink --example chat -- ws://127.0.0.1:8080/ws ROOM NAME`
use peerlink::{ChannelConfig, Message, Room};
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (url, room, name) =
        (a.first().ok_or("no URL")?, a.get(1).ok_or("no room")?, a.get(2).ok_or("no name")?);
    let mut room = Room::join(url, room, name).await?;
    let (lines, _) = broadcast::channel::<String>(64);
    let input = lines.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            let _ = input.send(line);
        }
    });
    while let Some(conn) = room.accept().await {
        let mut lines = lines.subscribe();
        tokio::spawn(async move {
            let channel = match conn.is_offerer() {
                true => conn.open_channel(ChannelConfig::reliable("chat")).await.ok(),
                false => conn.accept_channel().await,
            };
            let Some((tx, mut rx)) = channel.map(|c| c.split()) else { return };
            tokio::spawn(async move {
                while let Ok(line) = lines.recv().await {
                    let _ = tx.send_text(&line).await;
                }
            });
            while let Some(Message::Text(text)) = rx.recv().await {
                println!("{}: {text}", conn.peer().name);
            }
        });
    }
    Ok(())
}
