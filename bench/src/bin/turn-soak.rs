//! A TURN soak: holds `--allocations` allocations, each with a permission and a channel to
//! one of a few local peers that echo, relays round trips through all of them for a bounded
//! time while refreshing every allocation, permission and channel, and samples the server's
//! resident memory from `/proc`. Then the same again while `--abusers` clients flood the
//! server with unauthenticated Allocates and bad ChannelData. Our own sans-IO TURN client
//! (`peerlink_turn::TurnClient`) drives each allocation. Loopback only; everything is
//! bounded in count and time, and the allocations are deleted at the end.
//!
//! Prints `key=value` lines and one `ok`/`FAIL` line per check; exits 1 when a check fails.

use anyhow::Context;
use clap::Parser;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use peerlink_stun::{Attribute, Class, Message, MessageWriter, Method, TransactionId};
use peerlink_turn::{ClientConfig, ClientEvent, TurnClient};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    about = "Hold many TURN allocations with traffic and refreshes, with and without abusive clients, \
                   and watch the server's memory"
)]
struct Args {
    /// The TURN server (UDP), on loopback
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, default_value = "test")]
    user: String,
    #[arg(long, default_value = "secret")]
    password: String,
    /// The server's process: its resident memory is sampled from /proc/PID/status
    #[arg(long)]
    server_pid: u32,
    /// The server's Prometheus page (http://HOST:PORT/metrics): allocations are counted there
    #[arg(long)]
    metrics: Option<String>,
    #[arg(long, default_value_t = 2000)]
    allocations: usize,
    /// Seconds each phase (clean, then abused) lasts
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Every allocation, its permission and its channel are refreshed this often (seconds)
    #[arg(long, default_value_t = 5.0)]
    refresh_every: f64,
    /// Relayed round trips per second over all allocations
    #[arg(long, default_value_t = 4000)]
    rate: u64,
    /// Round trips in flight at most
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Echoing peers the allocations share
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Abusive clients in the second phase, each on its own loopback address
    #[arg(long, default_value_t = 50)]
    abusers: usize,
    /// Packets per second all abusive clients send together
    #[arg(long, default_value_t = 10_000)]
    abuse_rate: u64,
    /// Resident memory may grow this much (KiB) during a phase and still count as flat: with
    /// the defaults, 2 MiB over 8,000 refreshes and 80,000 round trips catches a leak of 256
    /// bytes per refresh
    #[arg(long, default_value_t = 2048)]
    rss_slack_kib: u64,
}

/// Clients sharing one source address: the server answers at most a burst of 200
/// unauthenticated requests per address at once.
const CLIENTS_PER_IP: usize = 20;
const PAYLOAD: usize = 64;
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const TIMER_INTERVAL: Duration = Duration::from_millis(50);

struct Client {
    turn: TurnClient,
    socket: UdpSocket,
    peer: SocketAddr,
    ready: bool,
    next_seq: u64,
    /// Highest sequence number echoed back (+1): echoes arrive in order or count as lost.
    echoed: u64,
    /// Permission refreshes asked for and not answered yet.
    permission_refreshes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    echoed: u64,
    out_of_order: u64,
    refreshes: u64,
    refreshed: u64,
    permissions: u64,
    failures: u64,
    abuse_sent: u64,
    abuse_answers: u64,
    abuse_successes: u64,
}

struct Soak {
    args: Args,
    poll: Poll,
    clients: Vec<Client>,
    peers: Vec<UdpSocket>,
    abusers: Vec<UdpSocket>,
    counts: Counts,
    buf: Vec<u8>,
    out: Vec<u8>,
    rng: u64,
    abusing: bool,
    /// Deleting the allocations: `Closed` is expected.
    closing: bool,
    refresh_cursor: usize,
    send_cursor: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.server.ip().is_loopback(), "the soak runs against loopback only");
    let mut soak = Soak::new(args)?;
    let mut checks = Checks::default();
    let n = soak.clients.len();

    let before = rss_kib(soak.args.server_pid)?;
    let started = Instant::now();
    soak.setup()?;
    let ready = soak.clients.iter().filter(|c| c.ready).count();
    println!("setup_seconds={:.1}", started.elapsed().as_secs_f64());
    checks.check(ready == n, format!("{ready}/{n} allocations with a permission and a channel"));
    if ready < n {
        return checks.finish();
    }
    soak.wait(Duration::from_secs(1))?;
    let held = rss_kib(soak.args.server_pid)?;
    println!("rss_kib_before={before} rss_kib_holding={held}");
    println!("bytes_per_allocation={}", held.saturating_sub(before) * 1024 / n as u64);
    if let Some(count) = soak.allocations_in_metrics()? {
        checks.check(count == n as u64, format!("the server counts {count} allocations"));
    }

    for phase in ["clean", "abused"] {
        soak.abusing = phase == "abused";
        let start = soak.counts;
        let samples = soak.phase()?;
        soak.drain()?;
        let c = soak.counts;
        let (sent, echoed) = (c.sent - start.sent, c.echoed - start.echoed);
        let refreshes = c.refreshes - start.refreshes;
        let (first, max) = (samples[0], samples.iter().copied().max().unwrap_or(0));
        println!(
            "phase={phase} round_trips={sent} echoed={echoed} lost={} out_of_order={} refreshes={refreshes} \
             rss_kib_first={first} rss_kib_max={max} rss_kib_last={}",
            sent - echoed,
            c.out_of_order - start.out_of_order,
            samples.last().copied().unwrap_or(0)
        );
        println!("phase={phase} rss_kib_samples={samples:?}");
        checks.check(sent > 0 && echoed == sent, format!("{phase}: {echoed}/{sent} round trips echoed"));
        checks.check(c.out_of_order == start.out_of_order, format!("{phase}: echoes in order"));
        checks.check(
            c.refreshed - start.refreshed == refreshes && c.permissions - start.permissions == refreshes,
            format!(
                "{phase}: {refreshes} refreshes, {} allocation and {} permission refreshes answered",
                c.refreshed - start.refreshed,
                c.permissions - start.permissions
            ),
        );
        checks.check(c.failures == start.failures, format!("{phase}: nothing refused or closed"));
        checks.check(
            max <= first + soak.args.rss_slack_kib,
            format!(
                "{phase}: memory flat (max {max} KiB, first {first} KiB, slack {} KiB)",
                soak.args.rss_slack_kib
            ),
        );
        if soak.abusing {
            println!(
                "abuse_sent={} abuse_answers={} abuse_successes={}",
                c.abuse_sent, c.abuse_answers, c.abuse_successes
            );
            checks.check(c.abuse_sent > 0, format!("{} abusive packets sent", c.abuse_sent));
            checks.check(c.abuse_successes == 0, "abusive clients got no success answer".into());
        }
        if let Some(count) = soak.allocations_in_metrics()? {
            checks.check(count == n as u64, format!("{phase}: the server counts {count} allocations"));
        }
    }

    soak.close_all()?;
    if let Some(count) = soak.allocations_in_metrics()? {
        checks.check(count == 0, format!("after closing, the server counts {count} allocations"));
    }
    checks.finish()
}

impl Soak {
    fn new(args: Args) -> anyhow::Result<Soak> {
        let poll = Poll::new()?;
        let mut clients = Vec::with_capacity(args.allocations);
        let mut peers = Vec::with_capacity(args.peers);
        for i in 0..args.peers.max(1) {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse()?)?;
            poll.registry().register(&mut socket, Token(args.allocations + i), Interest::READABLE)?;
            peers.push(socket);
        }
        let mut rng = u64::from_le_bytes(peerlink_proto::os_random()) | 1;
        for i in 0..args.allocations {
            let k = i / CLIENTS_PER_IP;
            let ip = Ipv4Addr::new(127, 1, (k / 250) as u8, (k % 250 + 1) as u8);
            let mut socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .with_context(|| format!("binding a client on {ip}"))?;
            poll.registry().register(&mut socket, Token(i), Interest::READABLE)?;
            let config = ClientConfig {
                server: args.server,
                username: args.user.clone(),
                password: args.password.clone(),
            };
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&xorshift(&mut rng).to_le_bytes());
            }
            clients.push(Client {
                turn: TurnClient::new(config, seed),
                socket,
                peer: peers[i % peers.len()].local_addr()?,
                ready: false,
                next_seq: 0,
                echoed: 0,
                permission_refreshes: 0,
            });
        }
        let first_abuser = args.allocations + peers.len();
        let mut abusers = Vec::with_capacity(args.abusers);
        for i in 0..args.abusers {
            let ip = Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8);
            let mut socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
            poll.registry().register(&mut socket, Token(first_abuser + i), Interest::READABLE)?;
            abusers.push(socket);
        }
        Ok(Soak {
            args,
            poll,
            clients,
            peers,
            abusers,
            counts: Counts::default(),
            buf: vec![0; 65_536],
            out: Vec::new(),
            rng,
            abusing: false,
            closing: false,
            refresh_cursor: 0,
            send_cursor: 0,
        })
    }

    /// Allocates everything, then a permission and a channel on each.
    fn setup(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for i in 0..self.clients.len() {
            self.clients[i].turn.allocate(now);
            self.flush(i)?;
        }
        let deadline = now + SETUP_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        let mut next_timers = now;
        while Instant::now() < deadline && self.clients.iter().any(|c| !c.ready) {
            self.turn(&mut events, &mut next_timers)?;
        }
        Ok(())
    }

    /// One turn of the loop: sockets, events, timers.
    fn turn(&mut self, events: &mut Events, next_timers: &mut Instant) -> anyhow::Result<()> {
        self.poll.poll(events, Some(Duration::from_millis(2)))?;
        let tokens: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for token in tokens {
            self.readable(token)?;
        }
        let now = Instant::now();
        if now >= *next_timers {
            *next_timers = now + TIMER_INTERVAL;
            for i in 0..self.clients.len() {
                if self.clients[i].turn.poll_timeout().is_some_and(|at| at <= now) {
                    self.clients[i].turn.handle_timeout(now);
                    self.flush(i)?;
                }
            }
        }
        Ok(())
    }

    fn readable(&mut self, token: usize) -> anyhow::Result<()> {
        let n = self.clients.len();
        if token < n {
            loop {
                let len = match self.clients[token].socket.recv(&mut self.buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                let client = &mut self.clients[token];
                if let Some((_, range)) = client.turn.handle_receive(Instant::now(), &self.buf[..len]) {
                    let payload = &self.buf[range];
                    let seq = payload.get(8..16).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    let index = payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                    match (index, seq) {
                        (Some(index), Some(seq)) if index == token as u64 && seq == client.echoed => {
                            client.echoed += 1;
                            self.counts.echoed += 1;
                        }
                        _ => self.counts.out_of_order += 1,
                    }
                }
                self.events(token)?;
            }
        } else if token < n + self.peers.len() {
            let peer = &self.peers[token - n];
            loop {
                match peer.recv_from(&mut self.buf) {
                    Ok((len, from)) => {
                        let _ = peer.send_to(&self.buf[..len], from);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        } else if let Some(abuser) = self.abusers.get(token - n - self.peers.len()) {
            loop {
                match abuser.recv(&mut self.buf) {
                    Ok(len) => {
                        self.counts.abuse_answers += 1;
                        if Message::parse(&self.buf[..len]).is_ok_and(|m| m.class() == Class::SuccessResponse)
                        {
                            self.counts.abuse_successes += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    fn events(&mut self, i: usize) -> anyhow::Result<()> {
        let now = Instant::now();
        while let Some(event) = self.clients[i].turn.poll_event() {
            let client = &mut self.clients[i];
            match event {
                ClientEvent::Allocated { .. } => {
                    let peer = client.peer;
                    client.turn.create_permission(now, peer.ip())?;
                    client.turn.bind_channel(now, peer)?;
                }
                ClientEvent::ChannelBound { .. } => client.ready = true,
                ClientEvent::PermissionCreated(_) if client.permission_refreshes > 0 => {
                    client.permission_refreshes -= 1;
                    self.counts.permissions += 1;
                }
                ClientEvent::Refreshed { .. } => self.counts.refreshed += 1,
                ClientEvent::Refused { .. } | ClientEvent::Closed { .. } => {
                    self.counts.failures += 1;
                    if self.counts.failures <= 5 && !self.closing {
                        eprintln!("client {i}: {event:?}");
                    }
                }
                _ => {}
            }
        }
        self.flush(i)
    }

    /// Sends what the client has for the server.
    fn flush(&mut self, i: usize) -> anyhow::Result<()> {
        let client = &mut self.clients[i];
        loop {
            self.out.clear();
            if client.turn.poll_transmit(Instant::now(), &mut self.out).is_none() {
                return Ok(());
            }
            client.socket.send_to(&self.out, self.args.server)?;
        }
    }

    /// Traffic, refreshes (and abuse) for `--seconds`; returns the RSS samples (KiB), one a
    /// second, the first taken at the start.
    fn phase(&mut self) -> anyhow::Result<Vec<u64>> {
        let start = Instant::now();
        let length = Duration::from_secs_f64(self.args.seconds);
        let mut samples = vec![rss_kib(self.args.server_pid)?];
        let mut next_sample = start + Duration::from_secs(1);
        let mut events = Events::with_capacity(1024);
        let mut next_timers = start;
        let (sent0, refreshes0, abuse0) = (self.counts.sent, self.counts.refreshes, self.counts.abuse_sent);
        let n = self.clients.len() as f64;
        while start.elapsed() < length {
            self.turn(&mut events, &mut next_timers)?;
            let now = Instant::now();
            let elapsed = now.duration_since(start).as_secs_f64();
            let due = (elapsed * n / self.args.refresh_every) as u64;
            while self.counts.refreshes - refreshes0 < due {
                let i = self.refresh_cursor % self.clients.len();
                self.refresh_cursor += 1;
                self.counts.refreshes += 1;
                self.clients[i].permission_refreshes += 1;
                self.clients[i].turn.refresh(now);
                self.flush(i)?;
            }
            let due = (elapsed * self.args.rate as f64) as u64;
            while self.counts.sent - sent0 < due && self.in_flight() < self.args.window as u64 {
                self.send_round_trip()?;
            }
            if self.abusing {
                let due = (elapsed * self.args.abuse_rate as f64) as u64;
                while self.counts.abuse_sent - abuse0 < due {
                    self.abuse()?;
                }
            }
            if now >= next_sample {
                next_sample += Duration::from_secs(1);
                samples.push(rss_kib(self.args.server_pid)?);
            }
        }
        Ok(samples)
    }

    fn in_flight(&self) -> u64 {
        self.counts.sent - self.counts.echoed - self.counts.out_of_order
    }

    fn send_round_trip(&mut self) -> anyhow::Result<()> {
        let i = self.send_cursor % self.clients.len();
        self.send_cursor += 1;
        let client = &mut self.clients[i];
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
        payload[8..16].copy_from_slice(&client.next_seq.to_le_bytes());
        self.out.clear();
        let _ = client.turn.send_to(client.peer, &payload, &mut self.out)?;
        client.socket.send_to(&self.out, self.args.server)?;
        client.next_seq += 1;
        self.counts.sent += 1;
        Ok(())
    }

    /// One abusive packet: an unauthenticated Allocate (a new transaction each time),
    /// ChannelData on a channel never bound, ChannelData whose length lies, or garbage.
    fn abuse(&mut self) -> anyhow::Result<()> {
        let r = xorshift(&mut self.rng);
        let abuser = &self.abusers[(r >> 8) as usize % self.abusers.len()];
        self.out.clear();
        match r % 4 {
            0 => {
                let mut tid = [0u8; 12];
                tid[..8].copy_from_slice(&xorshift(&mut self.rng).to_le_bytes());
                let mut w =
                    MessageWriter::new(&mut self.out, Class::Request, Method::ALLOCATE, TransactionId(tid));
                let _ = w.attribute(&Attribute::RequestedTransport(17));
                w.finish();
            }
            1 => {
                self.out.extend_from_slice(&[0x40, (r >> 16) as u8, 0, 32]);
                self.out.extend_from_slice(&[0xAB; 32]);
            }
            2 => self.out.extend_from_slice(&[0x4F, 0xFF, 0xFF, 0xFF, 1, 2, 3]),
            _ => self.out.extend_from_slice(&r.to_le_bytes()),
        }
        let _ = abuser.send_to(&self.out, self.args.server);
        self.counts.abuse_sent += 1;
        Ok(())
    }

    /// Waits for the round trips in flight and the refreshes' answers.
    fn drain(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        let mut next_timers = Instant::now();
        while Instant::now() < deadline
            && (self.in_flight() > 0
                || self.counts.refreshed < self.counts.refreshes
                || self.counts.permissions < self.counts.refreshes)
        {
            self.turn(&mut events, &mut next_timers)?;
        }
        Ok(())
    }

    /// Serves the sockets for `time` without sending anything new.
    fn wait(&mut self, time: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + time;
        let mut events = Events::with_capacity(1024);
        let mut next_timers = Instant::now();
        while Instant::now() < deadline {
            self.turn(&mut events, &mut next_timers)?;
        }
        Ok(())
    }

    /// Deletes every allocation (Refresh with lifetime 0) and waits for the answers.
    fn close_all(&mut self) -> anyhow::Result<()> {
        self.closing = true;
        let now = Instant::now();
        for i in 0..self.clients.len() {
            self.clients[i].turn.close(now);
            self.flush(i)?;
        }
        let failures = self.counts.failures;
        let deadline = now + DRAIN_TIMEOUT;
        let mut events = Events::with_capacity(1024);
        let mut next_timers = now;
        // Each close ends with one `Closed` event, counted among the failures here.
        while Instant::now() < deadline && self.counts.failures - failures < self.clients.len() as u64 {
            self.turn(&mut events, &mut next_timers)?;
        }
        Ok(())
    }

    /// The server's allocation gauge, once its counters have been published (about a second).
    fn allocations_in_metrics(&mut self) -> anyhow::Result<Option<u64>> {
        let Some(url) = self.args.metrics.clone() else { return Ok(None) };
        self.wait(Duration::from_millis(1500))?;
        let rest = url.strip_prefix("http://").context("metrics URL must start with http://")?;
        let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
        let host: SocketAddr = host.parse().context("metrics host must be IP:PORT")?;
        anyhow::ensure!(host.ip().is_loopback(), "metrics on loopback only");
        let mut stream = std::net::TcpStream::connect_timeout(&host, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix("peerlink_turn_allocations "))
            .context("no peerlink_turn_allocations in the metrics")?;
        Ok(Some(value.trim().parse()?))
    }
}

/// Resident memory of a process (KiB), from `/proc/PID/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[derive(Default)]
struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: String) {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed > 0 {
            std::process::exit(1);
        }
        Ok(())
    }
}
