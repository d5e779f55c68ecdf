//! One side of a data-channel throughput run of our stack (DTLS + SCTP + data channels)
//! over real UDP, for bench/datachannel.sh:
//!
//!   dc-bench send|recv [--bind ADDR] [--bytes N] [--message N] [--congestion-control bbr|rfc9260]
//!
//! Prints one JSON line `{"addr","fingerprint"}`, reads the peer's line in the same shape,
//! then the sender (DTLS client) opens a reliable ordered channel and sends `--bytes` in
//! `--message`-sized binary messages; the receiver (DTLS server) answers "done" once it has
//! them all and prints `{"bytes","seconds"}` (first byte to last). Both exit 0 then, or 1
//! after 120 s.

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Fingerprint, Role};
use peerlink_sctp::{Association, ChannelConfig, ChannelEvent, CongestionControl, DataChannels, SctpConfig};
use peerlink_udp::{RecvBatch, SendBatch, GRO_SLOT};
use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// `send` or `recv`.
    role: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    #[arg(long, default_value_t = 100 << 20)]
    bytes: usize,
    #[arg(long, default_value_t = 65536)]
    message: usize,
    /// One datagram per system call: no UDP segmentation or receive offload.
    #[arg(long)]
    no_offload: bool,
    /// The SCTP congestion controller [default: the SCTP crate's].
    #[arg(long, value_name = "NAME")]
    congestion_control: Option<Controller>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Controller {
    Bbr,
    Rfc9260,
}

const RECEIVES_PER_TURN: usize = 32;

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).expect("random");
    b
}

fn main() -> Result<()> {
    let args = Args::parse();
    // RUST_LOG=peerlink_sctp::bbr=trace: the congestion model's state each round, on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let sender = match args.role.as_str() {
        "send" => true,
        "recv" => false,
        other => bail!("role must be send or recv, not {other}"),
    };
    // Bursts of a large congestion window outrun the default 208 KiB receive buffer: `bind`
    // asks for 4 MiB (the kernel caps it at net.core.rmem_max), as the native peer's driver does.
    let socket: UdpSocket = peerlink_udp::bind(args.bind).context("bind")?.into();
    socket.set_nonblocking(true)?;
    let mut socket = peerlink_udp::UdpSocket::new(socket);
    let gro = !args.no_offload && socket.enable_gro();
    if args.no_offload {
        socket.disable_gso();
    }
    // One receive (a datagram, or with receive offload a run of them) per system call, and
    // a bounded number per turn: a batch of several runs per call held back the SACKs long
    // enough to cost 40% of the throughput (237 against 410 MB/s, same run).
    let mut received_batch = RecvBatch::new(1, GRO_SLOT);
    let mut batch = SendBatch::new();
    let mut plain = Vec::new();
    let cert = Certificate::generate()?;
    println!(
        "{}",
        serde_json::json!({"addr": socket.get_ref().local_addr()?.to_string(), "fingerprint": cert.fingerprint().to_string()})
    );
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let peer: serde_json::Value = serde_json::from_str(&line).context("peer's line")?;
    let peer_addr: SocketAddr = peer["addr"].as_str().ok_or(anyhow!("addr"))?.parse()?;
    let fingerprint: Fingerprint =
        peer["fingerprint"].as_str().ok_or(anyhow!("fingerprint"))?.parse().map_err(|e| anyhow!("{e}"))?;

    let start = Instant::now();
    let role = if sender { Role::Client } else { Role::Server };
    let mut dtls = Dtls::new(start, DtlsConfig::new(role, cert, fingerprint))?;
    let mut config = SctpConfig::default();
    match args.congestion_control {
        Some(Controller::Bbr) => config.congestion_control = CongestionControl::Bbr,
        Some(Controller::Rfc9260) => config.congestion_control = CongestionControl::Rfc9260,
        None => {}
    }
    let sctp = Association::new(start, config, random32());
    let mut dc = DataChannels::new(sctp, sender);
    let channel = if sender { Some(dc.create(start, ChannelConfig::reliable("bench"))?) } else { None };
    let payload = vec![0x5Au8; args.message];
    let (mut sent, mut received) = (0usize, 0usize);
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut done_at: Option<Instant> = None;
    let (mut datagrams_in, mut records_in, mut datagrams_out) = (0u64, 0u64, 0u64);
    let mut record = vec![0u8; 65536];
    let deadline = start + Duration::from_secs(120);
    loop {
        let now = Instant::now();
        if now > deadline {
            bail!("timed out: sent {sent}, received {received}");
        }
        // Everything that arrived.
        let mut got_any = false;
        // A bounded number of receives per turn, so acknowledgements keep flowing while a
        // large window of data arrives.
        for _ in 0..RECEIVES_PER_TURN {
            match socket.recv(&mut received_batch) {
                Ok(_) => {
                    for d in received_batch.iter().filter(|d| d.source == peer_addr && !d.truncated) {
                        got_any = true;
                        for datagram in d.segments() {
                            datagrams_in += 1;
                            dtls.handle_receive(now, datagram);
                            while let Some(m) = dtls.read(&mut record) {
                                records_in += 1;
                                dc.handle_receive(now, &record[..m]);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        dtls.handle_timeout(now);
        dc.handle_timeout(now);
        while let Some(e) = dtls.poll_event() {
            match e {
                DtlsEvent::Connected { .. } => dc.association_mut().connect(now),
                DtlsEvent::Failed(e) => bail!("dtls: {e}"),
                DtlsEvent::Closed => bail!("dtls closed"),
                _ => {}
            }
        }
        while let Some(e) = dc.poll_event() {
            match e {
                ChannelEvent::Message { id, data, .. } => {
                    if sender {
                        if data == b"done" {
                            eprintln!(
                                "dc-bench: sender done after {sent} bytes, {:?}, dtls retransmissions {}, GRO {gro}, GSO {}, datagrams in {datagrams_in} out {datagrams_out}, records in {records_in}",
                                dc.association().stats(),
                                dtls.retransmissions(),
                                !args.no_offload && socket.gso()
                            );
                            return Ok(());
                        }
                    } else {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        received += data.len();
                        if received >= args.bytes && last.is_none() {
                            last = Some(now);
                            dc.send(now, id, b"done", false)?;
                            done_at = Some(now);
                        }
                    }
                }
                ChannelEvent::Ended { reason } => bail!("association ended: {reason}"),
                _ => {}
            }
        }
        if let (Some(id), true) =
            (channel, dc.state(channel.unwrap_or(0)) == peerlink_sctp::ChannelState::Open)
        {
            while sent < args.bytes && dc.buffered_amount(id) < 4 << 20 {
                let n = args.message.min(args.bytes - sent);
                dc.send(now, id, &payload[..n], true)?;
                sent += n;
            }
        }
        // DTLS writes each datagram straight into the send batch: no copy on the way out.
        let mut queued = |batch: &mut SendBatch, len: usize| -> anyhow::Result<()> {
            datagrams_out += 1;
            batch.commit(peer_addr, len);
            if args.no_offload {
                send(&socket, batch)?;
            }
            Ok(())
        };
        while let Some(t) = dtls.poll_transmit(now, batch.buffer()) {
            queued(&mut batch, t.len)?;
        }
        if dtls.is_connected() {
            plain.clear();
            while dc.poll_transmit(now, &mut plain).is_some() {
                let t = dtls.seal(&plain, batch.buffer())?;
                queued(&mut batch, t.len)?;
                plain.clear();
            }
        }
        send(&socket, &mut batch)?;
        if let Some(at) = done_at {
            // Linger a little so "done" (and its retransmission, if needed) gets out.
            if now > at + Duration::from_millis(300) {
                let seconds = last.zip(first).map_or(0.0, |(l, f)| (l - f).as_secs_f64());
                eprintln!(
                    "dc-bench: receiver done, {:?}, dtls retransmissions {}, GRO {gro}, datagrams in {datagrams_in} out {datagrams_out}, records in {records_in}",
                    dc.association().stats(),
                    dtls.retransmissions()
                );
                println!("{}", serde_json::json!({"bytes": received, "seconds": seconds}));
                return Ok(());
            }
        }
        if !got_any {
            let next = [dtls.poll_timeout(), dc.poll_timeout()].into_iter().flatten().min();
            let wait_for =
                next.map_or(Duration::from_millis(10), |t| t.saturating_duration_since(Instant::now()));
            wait(socket.get_ref(), nix::poll::PollFlags::POLLIN, wait_for.min(Duration::from_millis(10)));
        }
    }
}

/// Sends what waits, waiting while the kernel's buffer is full.
fn send(socket: &peerlink_udp::UdpSocket<UdpSocket>, batch: &mut SendBatch) -> Result<()> {
    loop {
        match socket.send(batch) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait(socket.get_ref(), nix::poll::PollFlags::POLLOUT, Duration::from_millis(5))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn wait(socket: &UdpSocket, events: nix::poll::PollFlags, timeout: Duration) {
    let mut fds = [nix::poll::PollFd::new(socket.as_fd(), events)];
    // Rounded up: cut to whole milliseconds toward zero, a paced sender's next packet a
    // fraction of a millisecond away made poll return at once, and the loop spun the CPU.
    let ms = timeout.as_micros().div_ceil(1000).min(1000) as u16;
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}
