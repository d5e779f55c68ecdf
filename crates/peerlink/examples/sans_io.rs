//! The sans-IO `PeerConnection` driven by hand: two connections in one thread, each with a
//! std `UdpSocket`, one run loop (transmit, events, receive, timers), the offer, answer and
//! candidates passed directly, one message each way. No runtime, no threads.
//!
//! `cargo run -p peerlink --example sans_io`

use peerlink::rtc::{ChannelConfig, ChannelEvent, PeerConnection, RtcConfig, RtcEvent};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

struct Side {
    pc: PeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
}

fn side(now: Instant, seed: u8) -> Result<Side, Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let local = socket.local_addr()?;
    // The seed comes from a CSPRNG in real programs.
    let mut pc = PeerConnection::new(now, RtcConfig::default(), [seed; 32])?;
    pc.add_local_address(now, local);
    Ok(Side { pc, socket, local })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut sides = [side(start, 1)?, side(start, 2)?];
    let chat = sides[0].pc.create_data_channel(start, ChannelConfig::reliable("chat"))?;
    let offer = sides[0].pc.create_offer()?;
    sides[0].pc.set_local_description(start, Some(offer.clone()))?;
    sides[1].pc.set_remote_description(start, offer)?;
    let answer = sides[1].pc.create_answer()?;
    sides[1].pc.set_local_description(start, Some(answer.clone()))?;
    sides[0].pc.set_remote_description(start, answer)?;

    let (mut buf, mut datagram) = (Vec::new(), vec![0u8; 65_536]);
    let mut done = false;
    while !done && start.elapsed() < Duration::from_secs(10) {
        let now = Instant::now();
        for i in 0..2 {
            // Outputs: datagrams, then events (candidates go straight to the other side).
            while let Some(t) = sides[i].pc.poll_transmit(now, &mut buf) {
                sides[i].socket.send_to(t.datagram(&buf), t.route.remote)?;
                buf.clear();
            }
            while let Some(event) = sides[i].pc.poll_event() {
                match event {
                    RtcEvent::LocalCandidate(c) => sides[1 - i].pc.add_ice_candidate(now, &c)?,
                    RtcEvent::GatheringComplete => sides[1 - i].pc.add_ice_candidate(now, "")?,
                    RtcEvent::Channel(ChannelEvent::Open(id)) if i == 0 => {
                        sides[0].pc.send(now, id, b"ping", false)?;
                    }
                    RtcEvent::Channel(ChannelEvent::Message { id, data, .. }) => {
                        println!("side {i} got {:?} on channel {id}", String::from_utf8_lossy(&data));
                        if i == 1 {
                            sides[1].pc.send(now, id, b"pong", false)?;
                        } else {
                            done = id == chat;
                        }
                    }
                    _ => {}
                }
            }
            // Inputs: what arrived, then the timer when it is due.
            while let Ok((n, from)) = sides[i].socket.recv_from(&mut datagram) {
                let local = sides[i].local;
                sides[i].pc.handle_receive(now, from, local, &datagram[..n]);
            }
            if sides[i].pc.poll_timeout().is_some_and(|at| at <= now) {
                sides[i].pc.handle_timeout(now);
            }
        }
        // A real loop waits on its socket until poll_timeout(); two sockets in one thread
        // simply nap.
        std::thread::sleep(Duration::from_millis(1));
    }
    if !done {
        return Err("no answer within 10 s".into());
    }
    Ok(())
}
