//! Two peers in one process with no signaling server: the offer, the answer and the
//! candidates are handed across by hand (an application would carry them over its own
//! channel), then one message goes each way.
//!
//! `cargo run -p peerlink --example own_signaling`

use peerlink::{ChannelConfig, Connection, Message, RoomOptions};
use std::net::{IpAddr, Ipv4Addr};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = RoomOptions::default();
    options.bind = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let (alice, mut alice_candidates) = Connection::start(options.clone()).await?;
    let (bob, mut bob_candidates) = Connection::start(options).await?;

    // Offer and answer.
    let offer = alice.create_offer().await?;
    let answer = bob.set_remote_description(offer).await?.ok_or("no answer")?;
    alice.set_remote_description(answer).await?;
    // Trickled candidates, each to the other side ("" ends them).
    let (a, b) = (alice.clone(), bob.clone());
    tokio::spawn(async move {
        while let Some(c) = alice_candidates.next().await {
            b.add_ice_candidate(&c);
        }
    });
    tokio::spawn(async move {
        while let Some(c) = bob_candidates.next().await {
            a.add_ice_candidate(&c);
        }
    });

    let mut to_bob = alice.open_channel(ChannelConfig::reliable("hello")).await?;
    let mut to_alice = bob.accept_channel().await.ok_or("no channel")?;
    to_bob.send_text("hello, bob").await?;
    if let Some(Message::Text(text)) = to_alice.recv().await {
        println!("bob got: {text}");
    }
    to_alice.send_text("hello, alice").await?;
    if let Some(Message::Text(text)) = to_bob.recv().await {
        println!("alice got: {text}");
    }
    let pair = alice.stats().await.selected_pair.ok_or("no pair")?;
    println!("selected pair: {} -> {}", pair.local_kind, pair.remote_kind);
    alice.close().await;
    println!("bob: {}", bob.closed().await);
    Ok(())
}
