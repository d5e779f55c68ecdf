//! Drives `peerlink_turn::TurnClient` over real UDP against any TURN server (coturn's
//! `turnserver` in the end-to-end tests): allocate, bind a channel to one local peer, create
//! a permission for another, and check that messages go out through the relay and come back
//! (the peers echo). Prints `N passed, M failed`.
//!
//!   cargo run --example turn_probe -- SERVER USER PASSWORD [MESSAGES]

use peerlink_turn::{ClientConfig, ClientEvent, TurnClient};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        anyhow::bail!("usage: turn_probe SERVER USER PASSWORD [MESSAGES]");
    }
    let server: SocketAddr = args[1].parse()?;
    let messages: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(50);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let config = ClientConfig { server, username: args[2].clone(), password: args[3].clone() };
    let mut client = TurnClient::new(config, peerlink_proto::os_random());
    // Two echoing peers: one reached over a channel, one with Send indications.
    let peers: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    for p in &peers {
        p.set_nonblocking(true)?;
    }
    let channel_peer = peers[0].local_addr()?;
    let indication_peer = peers[1].local_addr()?;

    let (mut passed, mut failed) = (0, 0);
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if ok {
            passed += 1
        } else {
            failed += 1
        }
    };

    let start = Instant::now();
    client.allocate(start);
    let (mut buf, mut out, mut received) = (vec![0u8; 65536], Vec::new(), vec![0usize; 2]);
    let mut allocated = None;
    let mut ready = [false, false];
    let mut sent = [0usize; 2];
    let deadline = start + Duration::from_secs(20);
    while Instant::now() < deadline && received.iter().any(|&r| r < messages) {
        let now = Instant::now();
        client.handle_timeout(now);
        out.clear();
        while client.poll_transmit(now, &mut out).is_some() {
            socket.send_to(&out, server)?;
            out.clear();
        }
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Allocated { relayed, .. } => {
                    allocated = Some(relayed);
                    // Both peers share 127.0.0.1: ask for the permission first, so it is
                    // requested (and reported) on its own rather than implied by the channel.
                    client.create_permission(now, indication_peer.ip())?;
                    client.bind_channel(now, channel_peer)?;
                }
                ClientEvent::ChannelBound { .. } => ready[0] = true,
                ClientEvent::PermissionCreated(_) => ready[1] = true,
                ClientEvent::Closed { reason } => anyhow::bail!("allocation closed: {reason}"),
                other => println!("# {other:?}"),
            }
        }
        out.clear();
        while client.poll_transmit(now, &mut out).is_some() {
            socket.send_to(&out, server)?;
            out.clear();
        }
        // Send the next message to each ready peer.
        for (i, peer) in [channel_peer, indication_peer].into_iter().enumerate() {
            if ready[i] && sent[i] < messages && sent[i] <= received[i] + 8 {
                out.clear();
                let _ =
                    client.send_to(peer, format!("message {} to peer {i}", sent[i]).as_bytes(), &mut out)?;
                socket.send_to(&out, server)?;
                sent[i] += 1;
            }
        }
        // Peers echo whatever the relay sends them.
        for p in &peers {
            while let Ok((n, from)) = p.recv_from(&mut buf) {
                p.send_to(&buf[..n], from)?;
            }
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Some((from, range)) = client.handle_receive(Instant::now(), &buf[..n]) {
                let i = if from == channel_peer { 0 } else { 1 };
                let expected = format!("message {} to peer {i}", received[i]);
                if buf[range] == *expected.as_bytes() {
                    received[i] += 1;
                }
            }
        }
    }
    check(allocated.is_some(), format!("allocated relay {allocated:?} on {server}"));
    check(received[0] == messages, format!("{}/{messages} echoed in order over a channel", received[0]));
    check(
        received[1] == messages,
        format!("{}/{messages} echoed in order with Send/Data indications", received[1]),
    );
    client.close(Instant::now());
    out.clear();
    while client.poll_transmit(Instant::now(), &mut out).is_some() {
        socket.send_to(&out, server)?;
        out.clear();
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
