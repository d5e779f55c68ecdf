//! Our ICE agent on a real UDP socket, signaled over standard input and output, for interop
//! tests against other ICE implementations (tests/interop/aioice_ice.py) and for the NAT lab
//! (tests/e2e/ice-natlab.sh):
//!
//!   ice_probe controlling|controlled ADDR [--stun HOST:PORT] [--turn HOST:PORT USER PASS]
//!             [--exchange] [--timeout SECS]
//!
//! Gathers (host, then srflx and relay candidates from the servers given), prints one JSON
//! line `{"ufrag","pwd","candidates":[...]}`, reads the peer's line in the same shape and
//! connects (resolving `*.local` candidates by mDNS). Default: waits for one datagram of application data, answers it with
//! "hello from peerlink" and exits 0. `--exchange`: both sides send "hello from ROLE" until
//! each has the other's (for two probes). Status goes to standard error, including
//! `selected pair: <local type> -> <remote type> (<local> -> <remote>)`. Exits 1 on failure
//! or after the timeout (default 20 s).

#[path = "support/mdns_io.rs"]
mod mdns_io;

use peerlink_ice::{
    Candidate, CandidateAddress, IceAgent, IceConfig, IceEvent, IceState, TurnServerConfig, UsageError,
};
use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
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

struct Args {
    controlling: bool,
    bind: String,
    stun: Vec<SocketAddr>,
    turn: Vec<TurnServerConfig>,
    exchange: bool,
    timeout: Duration,
}

const USAGE: &str = "usage: ice_probe controlling|controlled ADDR [--stun HOST:PORT] \
                     [--turn HOST:PORT USER PASS] [--exchange] [--timeout SECS]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let role = args.next().ok_or(USAGE)?;
    let controlling = match role.as_str() {
        "controlling" => true,
        "controlled" => false,
        _ => return Err(USAGE.into()),
    };
    let bind = args.next().ok_or(USAGE)?;
    let addr = |s: Option<String>| -> Result<SocketAddr, String> {
        let s = s.ok_or(USAGE)?;
        s.parse().map_err(|e| format!("{s}: {e}"))
    };
    let mut parsed = Args {
        controlling,
        bind,
        stun: Vec::new(),
        turn: Vec::new(),
        exchange: false,
        timeout: Duration::from_secs(20),
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--stun" => parsed.stun.push(addr(args.next())?),
            "--turn" => {
                let server = addr(args.next())?;
                let (username, password) = (args.next().ok_or(USAGE)?, args.next().ok_or(USAGE)?);
                parsed.turn.push(TurnServerConfig { server, username, password });
            }
            "--exchange" => parsed.exchange = true,
            "--timeout" => {
                let secs: u64 = args.next().ok_or(USAGE)?.parse().map_err(|_| USAGE)?;
                parsed.timeout = Duration::from_secs(secs);
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let socket = UdpSocket::bind(args.bind.as_str()).map_err(|e| format!("bind {}: {e}", args.bind))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let role = if args.controlling { "controlling" } else { "controlled" };
    let config = IceConfig {
        stun_servers: args.stun.clone(),
        turn_servers: args.turn.clone(),
        ..IceConfig::new(args.controlling, &hex(&random::<4>()), &hex(&random::<16>()))
    };
    let (ufrag, pwd) = (config.local_ufrag.clone(), config.local_pwd.clone());
    let mut agent = IceAgent::new(config, random::<32>()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let deadline = start + args.timeout;
    agent.add_host_candidate(start, local);
    let mut buf = vec![0u8; 2048];

    // Gathering (without trickle: the line goes out once everything is known).
    let mut candidates = Vec::new();
    let mut gathered = false;
    while !gathered {
        pump(&mut agent, &socket)?;
        while let Some(event) = agent.poll_event() {
            match event {
                IceEvent::LocalCandidate(c) => {
                    eprintln!("ice_probe: local candidate {c}");
                    candidates.push(c.to_string());
                }
                IceEvent::GatheringComplete => gathered = true,
                _ => {}
            }
        }
        if !gathered {
            if Instant::now() >= deadline {
                return Err("gathering timed out".into());
            }
            receive(&mut agent, &socket, local, &mut buf, |_| {})?;
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
            Ok(candidate) => match agent.add_remote_candidate(now, candidate.clone()) {
                Ok(()) => {}
                Err(UsageError::Unresolved) => resolve_and_add(&mut agent, candidate),
                Err(e) => eprintln!("ice_probe: skipping remote candidate {c}: {e}"),
            },
            Err(e) => eprintln!("ice_probe: unparsable remote candidate {c}: {e}"),
        }
    }
    agent.end_of_remote_candidates(now);

    let ours = format!("hello from {role}");
    let mut received: Option<Vec<u8>> = None;
    let mut answered = false;
    // --exchange: keep sending until the peer's message arrived, then a little longer so
    // that ours surely arrived too.
    let mut next_send = Instant::now();
    let mut stop_at: Option<Instant> = None;
    let mut out = Vec::new();
    loop {
        pump(&mut agent, &socket)?;
        while let Some(event) = agent.poll_event() {
            match event {
                IceEvent::SelectedPair { local, remote, local_kind, remote_kind } => eprintln!(
                    "selected pair: {} -> {} ({local} -> {remote})",
                    local_kind.as_str(),
                    remote_kind.as_str()
                ),
                IceEvent::State(IceState::Failed) => return Err("ICE failed".into()),
                IceEvent::State(state) => eprintln!("ice_probe: {state:?}"),
                _ => {}
            }
        }
        let now = Instant::now();
        if answered || stop_at.is_some_and(|t| now >= t) {
            return Ok(());
        }
        if now >= deadline {
            return Err(format!("timed out in state {:?}", agent.state()));
        }
        if args.exchange && agent.selected_pair().is_some() && now >= next_send {
            next_send = now + Duration::from_millis(100);
            out.clear();
            out.extend_from_slice(ours.as_bytes());
            if let Some(t) = agent.send_data(&mut out, 0) {
                debug_assert_eq!(t.route.local, local);
                let to = t.route.remote;
                socket.send_to(&out, to).map_err(|e| format!("send to {to}: {e}"))?;
            }
        }
        receive(&mut agent, &socket, local, &mut buf, |data| {
            if received.is_none() {
                println!("received: {}", String::from_utf8_lossy(data));
                received = Some(data.to_vec());
            }
        })?;
        if received.is_some() {
            if args.exchange {
                stop_at.get_or_insert(Instant::now() + Duration::from_secs(1));
            } else if let Some(t) = {
                out.clear();
                out.extend_from_slice(b"hello from peerlink");
                agent.send_data(&mut out, 0)
            } {
                socket.send_to(&out, t.route.remote).map_err(|e| e.to_string())?;
                answered = true;
            }
        }
    }
}

/// A browser's `*.local` host candidate: resolved by mDNS, or dropped when nobody answers
/// (the other candidates may still work).
fn resolve_and_add(agent: &mut IceAgent, mut candidate: Candidate) {
    let CandidateAddress::Name(name) = &candidate.address else { return };
    match mdns_io::resolve(name, Duration::from_secs(3)) {
        Ok(found) if !found.is_empty() => {
            eprintln!("ice_probe: {name} is {}", found[0]);
            candidate.address = CandidateAddress::Ip(found[0]);
            if let Err(e) = agent.add_remote_candidate(Instant::now(), candidate) {
                eprintln!("ice_probe: skipping resolved candidate: {e}");
            }
        }
        Ok(_) => eprintln!("ice_probe: dropping {name}: no mDNS answer"),
        Err(e) => eprintln!("ice_probe: dropping {name}: {e}"),
    }
}

/// Sends what the agent has queued (the probe has one socket, so `from` is always it).
fn pump(agent: &mut IceAgent, socket: &UdpSocket) -> Result<(), String> {
    let mut buf = Vec::new();
    while let Some(t) = agent.poll_transmit(Instant::now(), &mut buf) {
        let to = t.route.remote;
        socket.send_to(&buf, to).map_err(|e| format!("send to {to}: {e}"))?;
        buf.clear();
    }
    Ok(())
}

/// Waits (up to the agent's next timer, at most 50 ms) for one datagram, hands application
/// data to `data`, and runs the agent's timers.
fn receive(
    agent: &mut IceAgent,
    socket: &UdpSocket,
    local: SocketAddr,
    buf: &mut [u8],
    mut data: impl FnMut(&[u8]),
) -> Result<(), String> {
    let now = Instant::now();
    let wait = agent.poll_timeout().map_or(Duration::from_millis(50), |t| t.saturating_duration_since(now));
    socket
        .set_read_timeout(Some(wait.clamp(Duration::from_millis(1), Duration::from_millis(50))))
        .map_err(|e| e.to_string())?;
    match socket.recv_from(buf) {
        Ok((n, from)) => {
            if let Some(range) = agent.handle_receive(Instant::now(), from, local, &buf[..n]) {
                data(&buf[range]);
            }
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        Err(e) => return Err(format!("receive: {e}")),
    }
    agent.handle_timeout(Instant::now());
    Ok(())
}
