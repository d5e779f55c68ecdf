//! Load generator for a signaling server speaking Peerlink's protocol (DESIGN.md): how many
//! WebSocket peers it holds, what each costs in memory, and how fast it relays `signal`s.
//!
//!   signal-load --url ws://127.0.0.1:8080/ws --pid SERVER_PID [--idle 5000] [--pairs 200]
//!               [--in-flight 4] [--seconds 10]
//!
//! Phase 1 opens `--idle` connections, each joined to a room of two, and reads the server's
//! resident memory (VmRSS of `--pid`) before and after: bytes per connection. Phase 2 keeps
//! them open and runs `--pairs` more pairs that bounce signals (each side keeps
//! `--in-flight` messages outstanding): messages relayed per second, one-way latency
//! percentiles (sender and receiver share this process's clock) and messages per CPU-second
//! of the server (`--pid`). Prints one `key=value` line per result.

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Parser)]
struct Args {
    /// Signaling WebSocket URL
    #[arg(long)]
    url: String,
    /// The server's process id, for its memory and CPU time
    #[arg(long)]
    pid: u32,
    /// Idle connections held during the whole run
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Pairs bouncing signals in phase 2
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Messages each side keeps outstanding
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Length of phase 2
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One runtime thread: the load generator must not starve the server of the second core.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

/// VmRSS in bytes and CPU time in seconds of a process: the sum over its threads of the
/// scheduler's nanosecond accounting (`/proc/PID/task/*/schedstat`), finer than clock ticks.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("server process")?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Ok((rss_kb * 1024, ns as f64 / 1e9))
}

async fn connect(url: &str) -> anyhow::Result<Ws> {
    Ok(tokio_tungstenite::connect_async_with_config(url, None, true).await?.0)
}

/// Reads frames until `pred` accepts one (answering nothing: the library pongs by itself).
async fn wait_for(ws: &mut Ws, what: &str) -> anyhow::Result<serde_json::Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .with_context(|| format!("no {what} in 30 s"))?;
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                if v["type"] == what {
                    return Ok(v);
                }
                if v["type"] == "error" {
                    bail!("server error while waiting for {what}: {v}");
                }
            }
            Some(Ok(_)) => {}
            other => bail!("connection ended while waiting for {what}: {other:?}"),
        }
    }
}

/// Two connections joined to one fresh room; returns them with their peer ids.
async fn pair(url: &str, room: &str) -> anyhow::Result<((Ws, String), (Ws, String))> {
    let mut a = connect(url).await?;
    a.send(Message::text(format!(r#"{{"type":"join","room":"{room}","name":"a"}}"#))).await?;
    let a_id = wait_for(&mut a, "welcome").await?["id"].as_str().context("id")?.to_owned();
    let mut b = connect(url).await?;
    b.send(Message::text(format!(r#"{{"type":"join","room":"{room}","name":"b"}}"#))).await?;
    let b_id = wait_for(&mut b, "welcome").await?["id"].as_str().context("id")?.to_owned();
    wait_for(&mut a, "peer-joined").await?;
    Ok(((a, a_id), (b, b_id)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (rss_before, _) = process_usage(args.pid)?;
    let start = Instant::now();
    // Each idle peer is read from the start, so the server's keepalive pings get pongs.
    let mut idle = Vec::with_capacity(args.idle);
    for i in 0..args.idle / 2 {
        let ((a, _), (b, _)) = pair(&args.url, &format!("idle-{i}")).await?;
        for mut ws in [a, b] {
            idle.push(tokio::spawn(async move { while ws.next().await.is_some() {} }));
        }
    }
    let open_seconds = start.elapsed().as_secs_f64();
    // Let the server settle (allocator, lazily grown buffers) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_idle, _) = process_usage(args.pid)?;
    let held = idle.iter().filter(|task| !task.is_finished()).count();
    println!("idle_connections={held}");
    println!("idle_open_seconds={open_seconds:.2}");
    println!("rss_before_mb={:.1}", rss_before as f64 / 1e6);
    println!("rss_idle_mb={:.1}", rss_idle as f64 / 1e6);
    println!("bytes_per_connection={:.0}", (rss_idle.saturating_sub(rss_before)) as f64 / held.max(1) as f64);

    let mut pairs = Vec::new();
    for i in 0..args.pairs {
        pairs.push(pair(&args.url, &format!("chat-{i}")).await?);
    }
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (_, cpu_before) = process_usage(args.pid)?;
    let mut tasks = Vec::new();
    for ((a, a_id), (b, b_id)) in pairs {
        tasks.push(tokio::spawn(bounce(a, b_id, args.in_flight, epoch, stop.clone())));
        tasks.push(tokio::spawn(bounce(b, a_id, args.in_flight, epoch, stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = epoch.elapsed().as_secs_f64();
    let (rss_chat, cpu_after) = process_usage(args.pid)?;
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await? {
            Ok(l) => latencies.extend(l),
            Err(e) => {
                errors += 1;
                eprintln!("signal-load: a chatting peer failed: {e:#}");
            }
        }
    }
    let still_idle = idle.iter().filter(|task| !task.is_finished()).count();
    println!("idle_connections_at_end={still_idle}");
    for task in idle {
        task.abort();
    }
    latencies.sort_unstable();
    let n = latencies.len();
    let pct =
        |p: f64| latencies.get(((n as f64 * p) as usize).min(n.saturating_sub(1))).copied().unwrap_or(0);
    let cpu = cpu_after - cpu_before;
    println!("chat_pairs={}", args.pairs);
    println!("chat_messages={n}");
    println!("chat_messages_per_second={:.0}", n as f64 / elapsed);
    println!("latency_p50_us={}", pct(0.50));
    println!("latency_p99_us={}", pct(0.99));
    println!("server_cpu_seconds={cpu:.2}");
    println!("messages_per_cpu_second={:.0}", n as f64 / cpu.max(0.01));
    println!("rss_chatting_mb={:.1}", rss_chat as f64 / 1e6);
    println!("failed_peers={errors}");
    if errors > 0 {
        bail!("{errors} chatting peers failed");
    }
    Ok(())
}

/// Keeps `in_flight` signals to `to` outstanding: sends that many, then one more for each
/// signal received. Each carries its send time; returns one-way latencies in µs.
async fn bounce(
    ws: Ws,
    to: String,
    in_flight: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<u32>> {
    let (mut tx, mut rx) = ws.split();
    let frame = |to: &str| {
        let t = epoch.elapsed().as_micros();
        Message::text(format!(r#"{{"type":"signal","to":"{to}","data":{{"t":{t}}}}}"#))
    };
    for _ in 0..in_flight {
        tx.send(frame(&to)).await?;
    }
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(200), rx.next()).await;
        let Ok(next) = next else { continue };
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str())?;
                if v["type"] == "error" {
                    bail!("server error: {v}");
                }
                if let Some(sent) = v["data"]["t"].as_u64() {
                    let now = epoch.elapsed().as_micros() as u64;
                    latencies.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                    tx.send(frame(&to)).await?;
                }
            }
            Some(Ok(_)) => {}
            other => bail!("connection ended: {other:?}"),
        }
    }
    Ok(latencies)
}
