//! Connection setup time of our peer: two `peerlink_io::Peer`s in one process on loopback,
//! from `create_offer` to the data channel being open on both sides, descriptions and
//! candidates handed across in memory (the signaling server's part is not timed). Prints
//! one JSON line with every round's milliseconds and the median. Host candidates are in the
//! descriptions (gathered before the offer), so no trickle is needed on loopback.
//!
//! ```text
//! peer-setup [ROUNDS]
//! ```

use peerlink_io::{Peer, PeerConfig};
use peerlink_rtc::{ChannelConfig, ChannelEvent, RtcEvent};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

async fn until_open(peer: &mut Peer, incoming: bool) -> anyhow::Result<()> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), peer.next_event())
            .await?
            .ok_or_else(|| anyhow::anyhow!("peer gone"))?;
        match e {
            RtcEvent::Channel(ChannelEvent::Incoming { .. }) if incoming => return Ok(()),
            RtcEvent::Channel(ChannelEvent::Open(_)) if !incoming => return Ok(()),
            _ => {}
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    let config = PeerConfig { addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], ..PeerConfig::default() };
    let mut ms = Vec::new();
    for _ in 0..rounds {
        let mut a = Peer::start(config.clone()).await?;
        let mut b = Peer::start(config.clone()).await?;
        let start = Instant::now();
        a.create_data_channel(ChannelConfig::reliable("bench")).await?;
        let offer = a.create_offer().await?;
        let answer = b.set_remote_description(offer).await?.ok_or_else(|| anyhow::anyhow!("no answer"))?;
        a.set_remote_description(answer).await?;
        let (ra, rb) = tokio::join!(until_open(&mut a, false), until_open(&mut b, true));
        ra?;
        rb?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        a.close().await;
        b.close().await;
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!("{}", serde_json::json!({"rounds": ms, "median_ms": median}));
    Ok(())
}
