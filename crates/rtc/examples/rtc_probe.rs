//! Our PeerConnection on one real UDP socket, signaled over standard input and output, for
//! interop tests against other WebRTC stacks (tests/interop/aiortc_dc.py):
//!
//!   rtc_probe offer|answer ADDR
//!
//! The offerer creates the data channel "chat". Descriptions go as one JSON line each
//! (`{"type","sdp"}`, candidates inside; the offerer prints first). Once the channel is
//! open, each side sends "hello from peerlink" and a 100 kB binary message; the probe exits
//! 0 when it has received a text message and a binary one from the peer (printing
//! `received: TEXT` and `received binary: N bytes sha256 HEX`), or 1 on failure or after
//! 30 s. `selected pair: <local type> -> <remote type>` goes to standard error.

use peerlink_rtc::{ChannelConfig, ChannelEvent, Description, PeerConnection, RtcConfig, RtcEvent, SdpType};
use std::io::BufRead;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtc_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    b
}

fn read_description() -> Result<Description, String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("peer's line: {e}"))?;
    let kind = SdpType::parse(v["type"].as_str().unwrap_or("")).ok_or("peer's line has no type")?;
    Ok(Description { kind, sdp: v["sdp"].as_str().unwrap_or("").to_owned() })
}

fn print_description(d: &Description) {
    println!("{}", serde_json::json!({"type": d.kind.as_str(), "sdp": d.sdp}));
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(role), Some(addr)) = (args.get(1), args.get(2)) else {
        return Err("usage: rtc_probe offer|answer ADDR".into());
    };
    let offerer = match role.as_str() {
        "offer" => true,
        "answer" => false,
        _ => return Err("usage: rtc_probe offer|answer ADDR".into()),
    };
    let socket = UdpSocket::bind(addr.as_str()).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut pc = PeerConnection::new(start, RtcConfig::default(), random32()).map_err(|e| e.to_string())?;
    pc.add_local_address(start, local);
    let deadline = start + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    let binary: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // Candidates go inside the descriptions: wait for gathering (host only: at once).
    let complete = |pc: &mut PeerConnection| {
        let mut done = false;
        while let Some(e) = pc.poll_event() {
            done |= e == RtcEvent::GatheringComplete;
        }
        done
    };
    complete(&mut pc);
    if offerer {
        pc.create_data_channel(start, ChannelConfig::reliable("chat")).map_err(|e| e.to_string())?;
        let offer = pc.create_offer().map_err(|e| e.to_string())?;
        pc.set_local_description(start, Some(offer.clone())).map_err(|e| e.to_string())?;
        print_description(&offer);
        let answer = read_description()?;
        pc.set_remote_description(Instant::now(), answer).map_err(|e| e.to_string())?;
    } else {
        let offer = read_description()?;
        pc.set_remote_description(Instant::now(), offer).map_err(|e| e.to_string())?;
        let answer = pc.create_answer().map_err(|e| e.to_string())?;
        pc.set_local_description(Instant::now(), Some(answer.clone())).map_err(|e| e.to_string())?;
        print_description(&answer);
    }

    let (mut got_text, mut got_binary) = (false, false);
    socket.set_read_timeout(Some(Duration::from_millis(10))).map_err(|e| e.to_string())?;
    loop {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "timed out in state {:?}, sctp {:?}",
                pc.connection_state(),
                pc.sctp_stats()
            ));
        }
        send_all(&mut pc, &socket, now)?;
        while let Some(e) = pc.poll_event() {
            match e {
                RtcEvent::SelectedPair { local_kind, remote_kind, local, remote } => {
                    eprintln!("selected pair: {local_kind} -> {remote_kind} ({local} -> {remote})")
                }
                RtcEvent::ConnectionState(s) => eprintln!("rtc_probe: {s:?}"),
                RtcEvent::Channel(ChannelEvent::Open(id) | ChannelEvent::Incoming { id, .. }) => {
                    eprintln!("rtc_probe: channel {id} ({:?}) open", pc.channel_label(id));
                    pc.send(now, id, b"hello from peerlink", false).map_err(|e| e.to_string())?;
                    pc.send(now, id, &binary, true).map_err(|e| e.to_string())?;
                }
                RtcEvent::Channel(ChannelEvent::Message { data, binary: true, .. }) => {
                    use sha2::Digest;
                    let hash: String =
                        sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
                    println!("received binary: {} bytes sha256 {hash}", data.len());
                    got_binary = true;
                }
                RtcEvent::Channel(ChannelEvent::Message { data, binary: false, .. }) => {
                    println!("received: {}", String::from_utf8_lossy(&data));
                    got_text = true;
                }
                RtcEvent::Channel(ChannelEvent::Ended { reason }) => {
                    return Err(format!("association ended: {reason}"))
                }
                _ => {}
            }
        }
        if got_text && got_binary {
            // Let our own messages and acknowledgements finish.
            let linger = Instant::now() + Duration::from_millis(500);
            while Instant::now() < linger {
                pump(&mut pc, &socket, &mut buf)?;
            }
            return Ok(());
        }
        pump(&mut pc, &socket, &mut buf)?;
    }
}

fn pump(pc: &mut PeerConnection, socket: &UdpSocket, buf: &mut [u8]) -> Result<(), String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    match socket.recv_from(buf) {
        Ok((n, from)) => pc.handle_receive(Instant::now(), from, local, &buf[..n]),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        Err(e) => return Err(format!("receive: {e}")),
    }
    let now = Instant::now();
    pc.handle_timeout(now);
    send_all(pc, socket, now)?;
    Ok(())
}

/// Sends what the connection has (the probe has one socket: every datagram leaves from it).
fn send_all(pc: &mut PeerConnection, socket: &UdpSocket, now: Instant) -> Result<(), String> {
    let mut buf = Vec::new();
    while let Some(t) = pc.poll_transmit(now, &mut buf) {
        let to = t.route.remote;
        socket.send_to(&buf, to).map_err(|e| format!("send to {to}: {e}"))?;
        buf.clear();
    }
    Ok(())
}
