//! Our ICE agent on a real UDP socket, signaled over standard input and output, for interop
//! tests against other ICE implementations (tests/interop/aioice_ice.py):
//!
//!   ice_probe controlling|controlled ADDR
//!
//! Prints one JSON line `{"ufrag","pwd","candidates":[...]}`, reads the peer's line in the
//! same shape, connects, then waits for one datagram of application data, answers it with
//! "hello from peerlink" and exits 0. Status (the selected pair) goes to standard error.
//! Exits 1 on failure or after 20 s.

use peerlink_ice::{Candidate, IceAgent, IceConfig, IceEvent, IceState};
use std::io::BufRead;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ice_probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(role), Some(addr)) = (args.get(1), args.get(2)) else {
        return Err("usage: ice_probe controlling|controlled ADDR".into());
    };
    let socket = UdpSocket::bind(addr.as_str()).map_err(|e| format!("bind {addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let config = IceConfig::new(role == "controlling", &hex(&random::<4>()), &hex(&random::<16>()));
    let (ufrag, pwd) = (config.local_ufrag.clone(), config.local_pwd.clone());
    let mut agent = IceAgent::new(config, random::<32>()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    agent.add_host_candidate(start, local);
    let mut candidates = Vec::new();
    while let Some(event) = agent.poll_event() {
        if let IceEvent::LocalCandidate(c) = event {
            candidates.push(c.to_string());
        }
    }
    println!("{}", serde_json::json!({"ufrag": ufrag, "pwd": pwd, "candidates": candidates}));

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    let remote: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("peer's line: {e}"))?;
    let now = Instant::now();
    let (ru, rp) = (remote["ufrag"].as_str().unwrap_or(""), remote["pwd"].as_str().unwrap_or(""));
    agent.set_remote_credentials(now, ru, rp).map_err(|e| e.to_string())?;
    for c in remote["candidates"].as_array().into_iter().flatten().filter_map(|c| c.as_str()) {
        match Candidate::parse(c) {
            Ok(candidate) => match agent.add_remote_candidate(now, candidate) {
                Ok(()) => {}
                Err(e) => eprintln!("ice_probe: skipping remote candidate {c}: {e}"),
            },
            Err(e) => eprintln!("ice_probe: unparsable remote candidate {c}: {e}"),
        }
    }
    agent.end_of_remote_candidates(now);

    let deadline = start + Duration::from_secs(20);
    let mut buf = vec![0u8; 2048];
    let mut answered = false;
    loop {
        while let Some(t) = agent.poll_transmit() {
            socket.send_to(&t.payload, t.to).map_err(|e| format!("send to {}: {e}", t.to))?;
        }
        while let Some(event) = agent.poll_event() {
            match event {
                IceEvent::SelectedPair { local_kind, remote_kind, .. } => {
                    eprintln!("selected pair: {} -> {}", local_kind.as_str(), remote_kind.as_str())
                }
                IceEvent::State(IceState::Failed) => return Err("ICE failed".into()),
                IceEvent::State(state) => eprintln!("ice_probe: {state:?}"),
                _ => {}
            }
        }
        if answered {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("timed out in state {:?}", agent.state()));
        }
        let wait =
            agent.poll_timeout().map_or(Duration::from_millis(50), |t| t.saturating_duration_since(now));
        socket
            .set_read_timeout(Some(wait.clamp(Duration::from_millis(1), Duration::from_millis(50))))
            .map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let now = Instant::now();
                if let Some(range) = agent.handle_receive(now, from, local, &buf[..n]) {
                    println!("received: {}", String::from_utf8_lossy(&buf[range]));
                    let mut out = Vec::new();
                    let Some((_, to)) = agent.send_data(b"hello from peerlink", &mut out) else { continue };
                    socket.send_to(&out, to).map_err(|e| e.to_string())?;
                    answered = true;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        agent.handle_timeout(Instant::now());
    }
}
