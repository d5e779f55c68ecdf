//! A scripted signaling peer for end-to-end tests, built on [`SignalClient`]:
//!
//!   signal_probe URL ROOM NAME PEERS [LEFT]
//!
//! Joins ROOM, signals every peer it learns of, and succeeds once it has seen PEERS other
//! peers and received a signal from each; with LEFT it then stays until LEFT peers have left.
//! Prints progress lines on stdout; exits 1 after 30 s without success.

use peerlink_signal::{ClientEvent, SignalClient};
use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(room), Some(name), Some(peers)) =
        (args.get(1), args.get(2), args.get(3), args.get(4))
    else {
        eprintln!("usage: signal_probe URL ROOM NAME PEERS [LEFT]");
        return ExitCode::from(2);
    };
    let want: usize = peers.parse().expect("PEERS is a number");
    let want_left: usize = args.get(5).map_or(0, |n| n.parse().expect("LEFT is a number"));
    match tokio::time::timeout(Duration::from_secs(30), run(url, room, name, want, want_left)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            println!("{name}: FAIL {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("{name}: FAIL timed out");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, room: &str, name: &str, want: usize, want_left: usize) -> Result<(), String> {
    let mut client = SignalClient::connect(url, room, name, None);
    let mut known = BTreeSet::new();
    let mut heard = BTreeSet::new();
    let mut left = 0;
    let mut done = false;
    while let Some(event) = client.next_event().await {
        let mut new = Vec::new();
        match event {
            ClientEvent::Joined { id, peers, .. } => {
                println!("{name}: joined as {id} with {} peers", peers.len());
                new.extend(peers.into_iter().map(|p| p.id));
            }
            ClientEvent::PeerJoined(p) => new.push(p.id),
            ClientEvent::PeerLeft(id) if known.contains(&id) => {
                left += 1;
                println!("{name}: left {left}");
            }
            ClientEvent::Signal { from, data } if !heard.contains(&from) => {
                println!("{name}: signal from {from}: {}", data.get());
                heard.insert(from);
            }
            ClientEvent::Error { code, message } => return Err(format!("error {code}: {message}")),
            ClientEvent::Disconnected { reason } => return Err(format!("disconnected: {reason}")),
            ClientEvent::Closed { reason } => return Err(format!("closed: {reason}")),
            _ => {}
        }
        for id in new {
            if known.insert(id.clone()) {
                client.signal(&id, serde_json::json!({ "hello": name })).await.map_err(|e| e.to_string())?;
            }
        }
        if !done && known.len() >= want && heard.len() >= want {
            done = true;
            println!("{name}: saw {} peers, signals from {}", known.len(), heard.len());
        }
        if done && left >= want_left {
            client.close().await;
            return Ok(());
        }
    }
    Err("client ended".into())
}
