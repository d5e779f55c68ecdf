//! Two connections in one process over loopback, signaled by hand: channels open and are
//! accepted, messages of both kinds arrive in order, a receiver that stops reading holds the
//! sender back with bounded memory, and a close is graceful and seen by both sides.

use peerlink::{ChannelConfig, Connection, Gone, Message, RoomOptions};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn options() -> RoomOptions {
    let mut options = RoomOptions::default();
    options.bind = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    options
}

/// Two connected connections: `a` offered, `b` answered; candidates go across as found.
async fn pair(a_options: RoomOptions, b_options: RoomOptions) -> (Connection, Connection) {
    let (a, mut a_candidates) = Connection::start(a_options).await.unwrap();
    let (b, mut b_candidates) = Connection::start(b_options).await.unwrap();
    let offer = a.create_offer().await.unwrap();
    let answer = b.set_remote_description(offer).await.unwrap().expect("an offer is answered");
    assert!(a.set_remote_description(answer).await.unwrap().is_none());
    let (a2, b2) = (a.clone(), b.clone());
    tokio::spawn(async move {
        while let Some(c) = a_candidates.next().await {
            b2.add_ice_candidate(&c);
        }
    });
    tokio::spawn(async move {
        while let Some(c) = b_candidates.next().await {
            a2.add_ice_candidate(&c);
        }
    });
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_open_carry_both_kinds_in_order_and_close_gracefully() {
    let (a, b) = pair(options(), options()).await;
    let mut config = ChannelConfig::reliable("chat");
    config.protocol = "json".to_owned();
    let mut ours = a.open_channel(config).await.unwrap();
    let mut theirs =
        tokio::time::timeout(Duration::from_secs(10), b.accept_channel()).await.unwrap().unwrap();
    assert_eq!((ours.label(), theirs.label(), theirs.protocol()), ("chat", "chat", "json"));
    assert_eq!(ours.id(), theirs.id());
    for i in 0..100u32 {
        if i % 2 == 0 {
            ours.send_text(&format!("text {i}")).await.unwrap();
        } else {
            ours.send(&i.to_be_bytes()).await.unwrap();
        }
    }
    ours.send_text("").await.unwrap();
    for i in 0..100u32 {
        let expected = if i % 2 == 0 {
            Message::Text(format!("text {i}"))
        } else {
            Message::Binary(i.to_be_bytes().to_vec())
        };
        assert_eq!(theirs.recv().await, Some(expected));
    }
    assert_eq!(theirs.recv().await, Some(Message::Text(String::new())));
    theirs.send_text("back").await.unwrap();
    assert_eq!(ours.recv().await, Some(Message::Text("back".to_owned())));
    let stats = a.stats().await;
    assert!(stats.connected && stats.channels == 1, "{stats:?}");
    assert!(stats.bytes_sent > 200 && stats.packets_sent > 0 && stats.rtt.is_some(), "{stats:?}");
    assert_eq!(stats.selected_pair.as_ref().map(|p| p.local_kind), Some("host"));
    // What is sent just before the close is delivered: the close waits for it.
    ours.send(&[7; 100_000]).await.unwrap();
    a.close().await;
    assert_eq!(theirs.recv().await, Some(Message::Binary(vec![7; 100_000])));
    assert_eq!(a.closed().await, Gone::Closed);
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), b.closed()).await.unwrap(), Gone::Closed);
    assert_eq!(theirs.recv().await, None);
    assert!(ours.send_text("late").await.is_err());
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// The bound: the sender's high-water mark, what SCTP keeps in flight (the receiver's 4 MiB
/// window) and the receiver's window and channel buffer, twice over for allocator slack,
/// plus the sockets' and drivers' fixed costs.
const MEMORY_BOUND: usize = 48 << 20;

/// The test: a receiver that does not read for 10 s while the other side tries to
/// send 1 GB. The sender is held back once the windows are full, the whole process (both
/// sides) grows by less than `MEMORY_BOUND`, and once the receiver reads, the messages come
/// in order. `PEERLINK_PAUSE_SECS` shortens the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_closes_the_senders_window_with_bounded_memory() {
    const MESSAGE: usize = 64 * 1024;
    const TOTAL: usize = 1 << 30;
    let pause = std::env::var("PEERLINK_PAUSE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    // PEERLINK_RECEIVE_BUFFER=1099511627776 shows what happens without the bound.
    let mut receiver = options();
    if let Some(bytes) = std::env::var("PEERLINK_RECEIVE_BUFFER").ok().and_then(|s| s.parse().ok()) {
        receiver.channels.receive_buffer = bytes;
    }
    let (a, b) = pair(options(), receiver).await;
    let ours = a.open_channel(ChannelConfig::reliable("bulk")).await.unwrap();
    let mut theirs =
        tokio::time::timeout(Duration::from_secs(10), b.accept_channel()).await.unwrap().unwrap();
    let before = rss();
    let (tx, _rx) = ours.split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let sender = tokio::spawn(async move {
        let mut message = vec![0u8; MESSAGE];
        for seq in 0..(TOTAL / MESSAGE) as u64 {
            message[..8].copy_from_slice(&seq.to_be_bytes());
            if tx.send(&message).await.is_err() {
                return;
            }
            counter.fetch_add(MESSAGE, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let start = Instant::now();
    let mut peak = before;
    while start.elapsed() < Duration::from_secs(pause) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss());
    }
    let held = sent.load(std::sync::atomic::Ordering::SeqCst);
    let grew = peak.saturating_sub(before);
    println!(
        "receiver not reading for {pause} s: sender got {} KiB through send() of {} MiB tried; \
         process RSS {} MiB before, peak {} MiB (+{} KiB, bound {} MiB)",
        held >> 10,
        TOTAL >> 20,
        before >> 20,
        peak >> 20,
        grew >> 10,
        MEMORY_BOUND >> 20
    );
    assert!(held < 16 << 20, "the sender was not held back: {held} bytes accepted");
    assert!(grew < MEMORY_BOUND, "the process grew by {grew} bytes");
    // The receiver reads again: everything comes, in order, and the sender moves on.
    let resume = 64 << 20;
    for seq in 0..((held + resume) / MESSAGE) as u64 {
        let m = tokio::time::timeout(Duration::from_secs(30), theirs.recv()).await.unwrap().unwrap();
        let Message::Binary(data) = m else { panic!("a text message") };
        assert_eq!((data.len(), u64::from_be_bytes(data[..8].try_into().unwrap())), (MESSAGE, seq));
    }
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst) >= held + resume - (16 << 20));
    sender.abort();
    a.close().await;
}
