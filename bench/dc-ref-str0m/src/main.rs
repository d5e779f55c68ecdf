//! A data-channel benchmark peer on str0m, speaking the line protocol of bench/dc_run.py: the
//! sender prints its SDP offer (its one host candidate inside) as one JSON line and reads the
//! answer; the receiver reads the offer and prints the answer. The sender sends BYTES in
//! MESSAGE-sized binary messages on a reliable ordered channel "bench", keeping at most 4 MiB
//! buffered; the receiver answers "done" when it has them all and prints {"bytes","seconds"}
//! (first byte to last). Both exit 0 then, or 1 after 120 s.
//!
//!   dc-ref-str0m send|recv BYTES MESSAGE [--bind IP] [--max-buffered BYTES]
//!
//! One nonblocking UDP socket with 4 MiB buffers (as dc-bench has), every datagram fed to
//! `Rtc::handle_input` and `poll_output` drained to its timeout after each input and each
//! write, as str0m requires; `poll(2)` waits when the socket is empty.

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io::{BufRead, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// The most the sender keeps buffered, as the other peers.
const MAX_BUFFERED: usize = 4 << 20;
/// str0m counts a message as buffered until the peer acknowledges it, and refuses a write that
/// would take its total past `set_sctp_max_buffered_amount` (128 KiB by default). Its SCTP
/// (sctp-proto) walks every unacknowledged chunk each time it is asked for packets, after
/// every SACK, so on a fast path it is quickest with little in flight: by default it may hold
/// one message and this much more (str0m may still count a fragment of the last one as
/// buffered: with no slack it stalled at a 1300-byte MTU). bench/README.md has the
/// measurements; `--max-buffered` sets it.
const SLACK: usize = 8 << 10;
const LINGER: Duration = Duration::from_millis(300);
const TIME_LIMIT: Duration = Duration::from_secs(120);

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    sender: bool,
    total: usize,
    payload: Vec<u8>,
    channel: Option<ChannelId>,
    sent: usize,
    received: usize,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The sender has its "done".
    finished: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("dc-ref-str0m: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: dc-ref-str0m send|recv BYTES MESSAGE [--bind IP] [--max-buffered BYTES]";
    let (role, total, message) = match &args[..] {
        [role, total, message, ..] => (role.as_str(), total.parse()?, message.parse::<usize>()?),
        _ => bail!(usage),
    };
    let sender = match role {
        "send" => true,
        "recv" => false,
        _ => bail!(usage),
    };
    let mut bind: IpAddr = "127.0.0.1".parse()?;
    let mut max_buffered = message + SLACK;
    for option in args[3..].chunks(2) {
        match option {
            [flag, ip] if flag == "--bind" => bind = ip.parse()?,
            [flag, n] if flag == "--max-buffered" => max_buffered = n.parse()?,
            _ => bail!(usage),
        }
    }

    let start = Instant::now();
    let socket = UdpSocket::bind((bind, 0)).context("bind")?;
    socket.set_nonblocking(true)?;
    // As dc-bench: 4 MiB socket buffers (the kernel caps them at net.core.[rw]mem_max).
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    let local = socket.local_addr()?;

    let mut rtc = Rtc::builder().set_sctp_max_buffered_amount(max_buffered).build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp")?)
        .ok_or_else(|| anyhow!("host candidate refused"))?;

    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if sender {
        let mut change = rtc.sdp_api();
        change.add_channel("bench".into());
        let (offer, pending) = change.apply().ok_or_else(|| anyhow!("no offer"))?;
        println!("{}", serde_json::to_string(&offer)?);
        stdin.read_line(&mut line)?;
        let answer: SdpAnswer = serde_json::from_str(&line).context("the answer line")?;
        rtc.sdp_api().accept_answer(pending, answer)?;
    } else {
        stdin.read_line(&mut line)?;
        let offer: SdpOffer = serde_json::from_str(&line).context("the offer line")?;
        let answer = rtc.sdp_api().accept_offer(offer)?;
        println!("{}", serde_json::to_string(&answer)?);
    }

    let mut peer = Peer {
        rtc,
        socket,
        local,
        sender,
        total,
        payload: vec![0x5a; message],
        channel: None,
        sent: 0,
        received: 0,
        first: None,
        last: None,
        finished: false,
    };
    peer.drive(start + TIME_LIMIT)
}

impl Peer {
    fn drive(&mut self, deadline: Instant) -> Result<()> {
        let mut buf = vec![0u8; 2048];
        let mut timeout = self.drain()?;
        loop {
            self.pump(&mut timeout)?;
            let now = Instant::now();
            if self.finished {
                eprintln!("dc-ref-str0m: sender done after {} bytes", self.sent);
                return Ok(());
            }
            if let Some(last) = self.last {
                // Linger so "done" (and a retransmission of it, if needed) gets out.
                if now >= last + LINGER {
                    let seconds = (last - self.first.unwrap_or(last)).as_secs_f64();
                    println!("{}", serde_json::json!({"bytes": self.received, "seconds": seconds}));
                    return Ok(());
                }
            }
            if now > deadline {
                bail!("timed out: sent {}, received {}", self.sent, self.received);
            }
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    // Anything that is not STUN, DTLS, RTP or RTCP is not for us.
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let receive = Receive { proto: Protocol::Udp, source, destination: self.local, contents };
                    self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                    timeout = self.drain()?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if now >= timeout {
                        self.rtc.handle_input(Input::Timeout(now))?;
                        timeout = self.drain()?;
                        continue;
                    }
                    let mut wake = timeout.min(deadline);
                    if let Some(last) = self.last {
                        wake = wake.min(last + LINGER);
                    }
                    wait(&self.socket, PollFlags::POLLIN, wake.saturating_duration_since(now));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The sender writes while the channel has less than 4 MiB buffered and str0m takes the
    /// message, one message per mutation (str0m wants `poll_output` drained after each).
    fn pump(&mut self, timeout: &mut Instant) -> Result<()> {
        let Some(id) = self.channel.filter(|_| self.sender) else { return Ok(()) };
        while self.sent < self.total {
            let mut channel = self.rtc.channel(id).ok_or_else(|| anyhow!("channel gone"))?;
            if channel.buffered_amount() >= MAX_BUFFERED {
                break;
            }
            let n = self.payload.len().min(self.total - self.sent);
            if !channel.write(true, &self.payload[..n])? {
                break;
            }
            self.sent += n;
            *timeout = self.drain()?;
        }
        Ok(())
    }

    /// `poll_output` until it gives the next timeout: datagrams go out, events are handled.
    fn drain(&mut self) -> Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => loop {
                    match self.socket.send_to(&t.contents, t.destination) {
                        Ok(_) => break,
                        // The kernel's buffer is full: wait until it drains.
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            wait(&self.socket, PollFlags::POLLOUT, Duration::from_millis(5))
                        }
                        Err(e) => return Err(e.into()),
                    }
                },
                Output::Event(e) => self.handle_event(e)?,
            }
        }
    }

    fn handle_event(&mut self, e: Event) -> Result<()> {
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => bail!("ice disconnected"),
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelClose(_) => bail!("channel closed"),
            Event::ChannelData(d) if self.sender => self.finished |= !d.binary && d.data == b"done",
            Event::ChannelData(d) => {
                let now = Instant::now();
                self.first.get_or_insert(now);
                self.received += d.data.len();
                if self.received >= self.total && self.last.is_none() {
                    self.last = Some(now);
                    let mut channel = self.rtc.channel(d.id).ok_or_else(|| anyhow!("channel gone"))?;
                    if !channel.write(false, b"done")? {
                        bail!("\"done\" not accepted");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn wait(socket: &UdpSocket, events: PollFlags, timeout: Duration) {
    let mut fds = [PollFd::new(socket.as_fd(), events)];
    // Round up: a zero timeout would spin until the deadline.
    let ms = timeout.as_micros().div_ceil(1000).min(1000) as u16;
    let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
}
