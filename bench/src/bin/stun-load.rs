//! A STUN Binding load generator: closed loop (saturation) or open loop (fixed rate).
//!
//! Every answer is checked: its transaction id must be one we sent and its
//! XOR-MAPPED-ADDRESS must be our own address. Prints one `key=value` line.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use peerlink_stun::{Attribute, AttributeType, Class, Message, MessageWriter, Method, TransactionId};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Load a STUN server with Binding requests and report answered requests per second \
                   and (with --server-pid) the server's CPU time")]
struct Args {
    /// Server address
    #[arg(long)]
    server: SocketAddr,
    /// Label printed with the results
    #[arg(long, default_value = "server")]
    name: String,
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Seconds of load
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Client sockets (each its own thread, source port and server-side worker)
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Closed loop: requests in flight per client
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Open loop: total requests per second over all clients
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Process whose CPU time (user + system) is measured over the run
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Keep `window` requests in flight per client: measures saturation throughput.
    Closed,
    /// Send at `rate` regardless of answers: measures loss below saturation.
    Open,
}

/// A request unanswered this long counts as lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    wrong: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counters = Arc::new(Counters::default());
    let cpu_before = args.server_pid.map(peerlink_bench::process_cpu).transpose()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let threads: Vec<_> = (0..args.clients)
        .map(|i| {
            let counters = counters.clone();
            let socket = UdpSocket::bind(if args.server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" })?;
            socket.connect(args.server)?;
            let (mode, window, rate) = (args.mode, args.window, args.rate / args.clients as u64);
            Ok(std::thread::spawn(move || match mode {
                Mode::Closed => closed_loop(&socket, i as u32, window, deadline, &counters),
                Mode::Open => open_loop(socket, i as u32, rate.max(1), deadline, &counters),
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    // Load time, without the final wait for stragglers.
    let elapsed = Duration::from_secs_f64(args.duration).min(start.elapsed());
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(peerlink_bench::process_cpu(pid)? - before),
        _ => None,
    };
    let sent = counters.sent.load(Ordering::Relaxed);
    let answered = counters.answered.load(Ordering::Relaxed);
    let wrong = counters.wrong.load(Ordering::Relaxed);
    let rate = answered as f64 / elapsed.as_secs_f64();
    let mut line = format!(
        "name={} mode={:?} sent={sent} answered={answered} lost={} wrong={wrong} answered_per_s={rate:.0}",
        args.name,
        args.mode,
        sent.saturating_sub(answered + wrong),
    );
    if let Some(cpu) = cpu {
        let per_cpu = if cpu.is_zero() { f64::INFINITY } else { answered as f64 / cpu.as_secs_f64() };
        line += &format!(" server_cpu_s={:.2} answered_per_cpu_s={per_cpu:.0}", cpu.as_secs_f64());
    }
    println!("{line}");
    Ok(())
}

/// Transaction id: client number, then a sequence number.
fn request(buf: &mut Vec<u8>, client: u32, seq: u64) {
    buf.clear();
    let mut tid = [0; 12];
    tid[..4].copy_from_slice(&client.to_be_bytes());
    tid[4..].copy_from_slice(&seq.to_be_bytes());
    let mut w = MessageWriter::new(buf, Class::Request, Method::BINDING, TransactionId(tid));
    w.fingerprint().expect("fits");
    w.finish();
}

/// Checks an answer; returns its sequence number when it is a correct answer to us.
fn check(answer: &[u8], client: u32, local: SocketAddr) -> Option<u64> {
    let m = Message::parse(answer).ok()?;
    let tid = m.transaction_id().0;
    if m.class() != Class::SuccessResponse || tid[..4] != client.to_be_bytes() {
        return None;
    }
    match m.get(AttributeType::XOR_MAPPED_ADDRESS)? {
        Ok(Attribute::XorMappedAddress(a)) if a == local => {}
        _ => return None,
    }
    Some(u64::from_be_bytes(tid[4..].try_into().ok()?))
}

fn closed_loop(
    socket: &UdpSocket,
    client: u32,
    window: usize,
    deadline: Instant,
    c: &Counters,
) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut out = Vec::with_capacity(64);
    let mut buf = [0u8; 1500];
    // Slot `seq % window` holds the request in flight: (seq, sent at).
    let mut slots: Vec<(u64, Instant)> = Vec::with_capacity(window);
    let mut send = |slot: &mut (u64, Instant), seq: &mut u64| -> anyhow::Result<()> {
        // Keep the slot index stable: the next sequence number with the same residue.
        *seq += window as u64;
        request(&mut out, client, *seq);
        socket.send(&out).context("send")?;
        c.sent.fetch_add(1, Ordering::Relaxed);
        *slot = (*seq, Instant::now());
        Ok(())
    };
    for i in 0..window {
        let mut slot = (0, Instant::now());
        let mut s = i as u64;
        send(&mut slot, &mut s)?;
        slots.push(slot);
    }
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => match check(&buf[..n], client, local) {
                Some(answered) => {
                    let index = (answered % window as u64) as usize;
                    if slots[index].0 == answered {
                        c.answered.fetch_add(1, Ordering::Relaxed);
                        let mut s = answered;
                        send(&mut slots[index], &mut s)?;
                    }
                }
                None => {
                    c.wrong.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("recv"),
        }
        // Requests unanswered for too long are lost; replace them.
        let now = Instant::now();
        for slot in slots.iter_mut() {
            if now.duration_since(slot.1) > LOSS_TIMEOUT {
                let mut s = slot.0;
                send(slot, &mut s)?;
            }
        }
    }
    drain(socket, client, local, &mut buf, c, |seq| slots.iter().any(|s| s.0 == seq))
}

/// Counts answers still arriving after the load stopped.
fn drain(
    socket: &UdpSocket,
    client: u32,
    local: SocketAddr,
    buf: &mut [u8],
    c: &Counters,
    mut expected: impl FnMut(u64) -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + LOSS_TIMEOUT;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    while Instant::now() < until {
        if let Ok(n) = socket.recv(buf) {
            match check(&buf[..n], client, local) {
                Some(seq) if expected(seq) => c.answered.fetch_add(1, Ordering::Relaxed),
                _ => c.wrong.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    Ok(())
}

fn open_loop(
    socket: UdpSocket,
    client: u32,
    rate: u64,
    deadline: Instant,
    c: &Counters,
) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    let receiver = socket.try_clone()?;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let rx = scope.spawn(|| -> anyhow::Result<()> {
            receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut buf = [0u8; 1500];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = receiver.recv(&mut buf) {
                    match check(&buf[..n], client, local) {
                        Some(_) => c.answered.fetch_add(1, Ordering::Relaxed),
                        None => c.wrong.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
            drain(&receiver, client, local, &mut buf, c, |_| true)
        });
        let start = Instant::now();
        let mut out = Vec::with_capacity(64);
        let mut seq = 0u64;
        while Instant::now() < deadline {
            // Send what is due by now, then nap a millisecond.
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while seq < due {
                request(&mut out, client, seq);
                socket.send(&out).context("send")?;
                c.sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        done.store(true, Ordering::Relaxed);
        rx.join().map_err(|_| anyhow::anyhow!("receiver panicked"))?
    })
}
