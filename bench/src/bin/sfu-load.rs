//! Synthetic load for an SFU room of `peerlink serve --room-mode sfu`, built on Peerlink's own
//! native peer: `--publishers` peers each send VP8-shaped video and Opus-shaped audio to the
//! server over the normal signaling (one connection each, to the reserved peer id "sfu"), and
//! `--subscribers` peers receive what the server forwards, as raw RTP (publishers receive
//! the others' streams too, and count as receivers of them).
//!
//! With `--janus`, the same peers and media go to Janus's VideoRoom plugin instead, through its
//! WebSocket API (`--url ws://HOST:8188`, subprotocol `janus-protocol`; a Janus session and
//! plugin handle per connection, kept alive): the run creates a room (VP8, Opus), each
//! publisher joins and publishes its offer, and once every feed is up (`listparticipants`)
//! each subscriber joins with all feeds (Janus offers, we answer with `start`) and each
//! publisher subscribes to the others' feeds on a second connection, so both servers forward
//! the same streams to the same receivers.
//!
//!   sfu-load --url ws://HOST:PORT/ws --pid SERVER_PID [--janus] [--publishers 2]
//!            [--subscribers 6] [--seconds 15] [--warmup 3] [--video-kbps 800] [--fps 30]
//!            [--keyframe-secs 3] [--layers 1] [--bind IP]
//!
//! A publisher's video is `--layers` simulcast layers (RFC 8853, offered by rid as Chromium
//! does; 1: no simulcast). The top layer is frames of 640x360-like sizes (`--video-kbps` at
//! `--fps`, a key frame 8 times a delta frame every `--keyframe-secs` and whenever the server
//! asks for one, delta frames varying by ±25%); each lower layer has a fifth of the rate of
//! the one above at a quarter of its picture (half the width and height), the same frame
//! rate, and its own key frames (a PLI for a layer makes that layer's next frame a key
//! frame). Every frame is cut into equal packets of at most 1,160 payload bytes behind a VP8
//! payload descriptor (picture id, key frame header), spread over half a frame interval; audio
//! is a 100-byte packet every 20 ms. Every packet carries, after its codec header, a marker:
//! publisher, stream (audio, or the video layer), the stream's own packet number and the
//! instant it was handed to the connection (one clock: everyone is in this process).
//!
//! With layers, the server forwards one layer of each publisher to each receiver (it picks):
//! a receiver's video loss counts the layers it got in the window (a switch within the
//! window counts the layer left as lost from there); the results show what each layer sent
//! and how many packets of each the receivers got.
//!
//! Once every subscriber receives every publisher's two streams, a `--warmup` passes, then a
//! window of `--seconds`: what was sent in it counts. Per subscriber and stream, loss is the
//! share of the window's packet numbers that never arrived (duplicates and retransmissions
//! counted once); delay is from the publisher handing the packet to its connection to the
//! subscriber's event, so it includes the publisher's pacer (video key frames queue there)
//! and both peers' driver tasks as well as the server: audio, sent first by every pacer, is
//! the closest to the server's own forwarding delay. The server's CPU time over the window
//! comes from `/proc/PID` of `--pid` (its threads' schedstat, and utime+stime of its stat).
//! Prints one `key=value` line per result.

use anyhow::{bail, Context};
use clap::Parser;
use peerlink::session::{Session, SessionEvent, SessionOptions};
use peerlink::{PeerEvents, PeerHandle, SFU_PEER};
use peerlink_rtc::{
    supported_codecs, AudioLevel, Codec, ConnectionState, Direction, MediaKind, RtcEvent, TrackConfig,
    TransceiverId,
};
use peerlink_rtp::{RtpPacket, Unwrapper16};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Signaling WebSocket URL of `peerlink serve --room-mode sfu`, or with `--janus` the
    /// WebSocket API of Janus (its `janus-protocol` transport)
    #[arg(long)]
    url: String,
    /// The server is Janus: its VideoRoom plugin, in a room this run creates
    #[arg(long)]
    janus: bool,
    /// The server's process id, for its CPU time
    #[arg(long)]
    pid: u32,
    /// Room name
    #[arg(long, default_value = "sfu-load")]
    room: String,
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    #[arg(long, default_value_t = 6)]
    subscribers: usize,
    /// Length of the measured window
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Time between everyone receiving everything and the window
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Video bit rate of each publisher (payload)
    #[arg(long, default_value_t = 800)]
    video_kbps: u64,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Interval of the periodic key frames
    #[arg(long, default_value_t = 3)]
    keyframe_secs: u64,
    /// Simulcast layers of each publisher's video (1 to 4; 1: no simulcast) [default: 1, 2
    /// with --participants]
    #[arg(long)]
    layers: Option<usize>,
    /// Room mode: this many participants, each publishing video and receiving what the
    /// server forwards (instead of --publishers and --subscribers); needs the server's
    /// --last-n and --thumbnails-above given here too, to check the room is what they say
    #[arg(long, default_value_t = 0)]
    participants: usize,
    /// Room mode: how many of the participants (the first to join) also publish audio; the
    /// others publish none (muted)
    #[arg(long, default_value_t = 3)]
    speakers: usize,
    /// Room mode: the server's --last-n (each participant gets at most this many videos)
    #[arg(long, default_value_t = 9)]
    last_n: usize,
    /// Room mode: the server's --thumbnails-above (more videos than this: all but the most
    /// recent speaker's in the lowest layer)
    #[arg(long, default_value_t = 1)]
    thumbnails_above: usize,
    /// Local address for the peers' sockets (default: every usable one)
    #[arg(long)]
    bind: Option<IpAddr>,
    /// How long everyone may take to connect and receive every stream
    #[arg(long, default_value_t = 30)]
    setup_timeout: u64,
    /// Runtime threads of this process (1 leaves the other core to the server on 2 cores)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The peers' status lines on standard error
    #[arg(long)]
    verbose: bool,
}

impl Args {
    fn layers(&self) -> usize {
        self.layers.unwrap_or(if self.participants > 0 { 2 } else { 1 })
    }

    fn room_mode(&self) -> bool {
        self.participants > 0
    }
}

const MAGIC: &[u8; 4] = b"PLSF";
/// The marker: magic, publisher (u16), stream (u8: 0 audio, 1 + k video layer k), reserved,
/// packet number (u32), send instant in ns since the run's origin (u64).
const MARK_LEN: usize = 20;
const AUDIO: u8 = 0;
const VIDEO: u8 = 1;
/// VP8 payload bytes per packet, descriptor included (what fits 1,200-byte packets with
/// the header extensions).
const MAX_VP8_PAYLOAD: usize = 1160;
const AUDIO_PAYLOAD: usize = 100;

/// What everyone shares: the clock's origin and the measured window (ns since the origin;
/// `u64::MAX` until set).
struct Shared {
    origin: Instant,
    window: Mutex<(u64, u64)>,
    stop: AtomicBool,
    /// Room mode: the speakers' turns are over; the last one holds the floor (set before the
    /// window, so that what each receiver gets is settled in it).
    floor: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn in_window(&self, t: u64) -> bool {
        let (from, to) = *self.window.lock().expect("not poisoned");
        t >= from && t < to
    }
}

/// What a publisher sent in the window on one stream: its first and last packet numbers.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    first: Option<u32>,
    last: u32,
    /// Payload bytes handed to the connection in the window.
    bytes: u64,
    /// Key frames made in the window (periodic or asked for).
    keyframes: u64,
    /// Key frame requests (PLI/FIR) from the server in the window.
    requests: u64,
}

/// A set of packet numbers, one bit each: the HashSets they were kept in before took a good
/// part of the generator's CPU (each received packet inserted into two of them).
#[derive(Debug, Default)]
struct Numbers {
    bits: Vec<u64>,
    len: usize,
    /// Numbers too large for the bits (none from our own publishers).
    far: HashSet<u64>,
}

impl Numbers {
    /// Numbers below this are kept as bits (2 MB of them at most).
    const BITS: u64 = 1 << 24;

    /// False if it was there already.
    fn insert(&mut self, n: u64) -> bool {
        if n >= Self::BITS {
            let new = self.far.insert(n);
            self.len += usize::from(new);
            return new;
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        self.len += usize::from(new);
        new
    }

    fn len(&self) -> usize {
        self.len
    }

    /// In ascending order (the far ones in no order, after the others).
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let bits = self.bits.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u64).filter(move |b| word & (1 << b) != 0).map(move |b| w as u64 * 64 + b)
        });
        bits.chain(self.far.iter().copied())
    }

    /// How many lie in `lo..=hi`.
    fn count_in(&self, lo: u64, hi: u64) -> u64 {
        self.iter().filter(|n| (lo..=hi).contains(n)).count() as u64
    }
}

/// What a subscriber received of one stream (publisher, stream).
#[derive(Debug, Default)]
struct Received {
    numbers: Numbers,
    duplicates: u64,
}

/// What a subscriber received of one forwarded SSRC: its sequence numbers (unwrapped) of
/// packets sent in the window.
#[derive(Debug, Default)]
struct BySsrc {
    unwrap: Unwrapper16,
    seqs: Numbers,
}

#[derive(Debug, Default)]
struct SubscriberStats {
    streams: HashMap<(u16, u8), Received>,
    ssrcs: HashMap<u32, BySsrc>,
    /// Streams seen at all (for the start).
    seen: HashSet<(u16, u8)>,
    /// Delays in µs of first arrivals sent in the window, per stream kind.
    delays: [Vec<u32>; 2],
    packets_in_window: u64,
    bytes_in_window: u64,
    unmarked: u64,
    /// Video packets in the window per simulcast layer (first arrivals).
    layer_packets: [u64; MAX_LAYERS],
}

const MAX_LAYERS: usize = peerlink_rtc::MAX_SEND_LAYERS;

/// The rids of `layers` simulcast layers, lowest first (none for one layer).
fn layer_rids(layers: usize) -> Vec<String> {
    if layers <= 1 {
        return Vec::new();
    }
    (0..layers).map(|k| format!("l{k}")).collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.room_mode() {
        if args.janus {
            bail!(
                "--participants needs `peerlink serve`: Janus's VideoRoom has no last-N or thumbnail policy"
            );
        }
        if args.participants < 2 || args.participants > 1000 || args.speakers > args.participants {
            bail!("--participants is 2 to 1000, --speakers at most that");
        }
    } else if args.publishers == 0 || args.subscribers == 0 || args.publishers > 1000 {
        bail!("need at least one publisher (at most 1000) and one subscriber");
    }
    if args.fps == 0 {
        bail!("need a frame rate");
    }
    if !(1..=peerlink_rtc::MAX_SEND_LAYERS).contains(&args.layers()) {
        bail!("--layers is 1 to {}", peerlink_rtc::MAX_SEND_LAYERS);
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    runtime.block_on(run(args))
}

fn options(args: &Args, tracks: Vec<(MediaKind, Direction, TrackConfig)>) -> SessionOptions {
    let mut o = SessionOptions::default();
    o.bind = args.bind.into_iter().collect();
    o.tracks = tracks;
    o.accept_raw = true;
    o.accept_media = Some(Direction::RecvOnly);
    let verbose = args.verbose;
    o.status = Some(Arc::new(move |line: &str| {
        if verbose {
            eprintln!("{line}");
        }
    }));
    o
}

async fn run(args: Args) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        window: Mutex::new((u64::MAX, u64::MAX)),
        stop: AtomicBool::new(false),
        floor: AtomicBool::new(false),
    });
    let server = if args.janus { "janus" } else { "peerlink" };
    let codecs = |kind: &str, codec: Codec| {
        supported_codecs(kind).into_iter().filter(|c| c.codec == codec).collect::<Vec<_>>()
    };
    let tracks = vec![
        (
            MediaKind::Audio,
            Direction::SendOnly,
            TrackConfig { codecs: codecs("audio", Codec::Opus), ..TrackConfig::new(MediaKind::Audio) },
        ),
        (
            MediaKind::Video,
            Direction::SendOnly,
            TrackConfig {
                codecs: codecs("video", Codec::Vp8),
                send_rids: layer_rids(args.layers()),
                ..TrackConfig::new(MediaKind::Video)
            },
        ),
    ];
    let mut subs = Vec::new();
    let mut pubs_spawned = Vec::new();
    // Janus's own sessions (its room's, and every peer's keep-alive) end with these.
    let mut janus_tasks = Vec::new();
    if args.janus {
        // The room, then the publishers (a subscriber names the feeds it wants, so they
        // come first), each also subscribing to the others' feeds on a second connection,
        // as a VideoRoom participant does (`peerlink serve` sends them the others' streams).
        let room = u64::from(std::process::id());
        let mut control = janus::Janus::attach(&args.url).await?;
        let mut pubs = Vec::new();
        control
            .message(
                serde_json::json!({
                    "request": "create", "room": room, "publishers": args.publishers,
                    "videocodec": "vp8", "audiocodec": "opus", "bitrate": 0, "fir_freq": 0,
                    "notify_joining": false,
                }),
                None,
            )
            .await
            .context("creating the VideoRoom room")?;
        for i in 0..args.publishers {
            let (link, task) = janus::publisher(&args, room, i as u64, tracks.clone())
                .await
                .with_context(|| format!("publisher {i} joining Janus"))?;
            janus_tasks.push(task);
            let stats = Arc::new(Mutex::new(SubscriberStats::default()));
            let shape = Shape::new(&args, i as u16);
            pubs.push((stats, link, shape));
        }
        // Janus offers a feed to subscribers once its publisher's connection is up.
        pubs_spawned = pubs
            .into_iter()
            .map(|(stats, link, shape)| {
                (stats.clone(), tokio::spawn(publish(link, shared.clone(), shape, stats)))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(args.setup_timeout);
        loop {
            let (list, _) = control
                .message(serde_json::json!({ "request": "listparticipants", "room": room }), None)
                .await?;
            let up = list["participants"]
                .as_array()
                .map_or(0, |l| l.iter().filter(|p| p["publisher"] == true).count());
            if up == args.publishers {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "after {} s only {up} of {} publishers' connections to Janus are up",
                    args.setup_timeout,
                    args.publishers
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        janus_tasks.push(control.keep_alive());
        let feeds = |except: Option<usize>| {
            (0..args.publishers)
                .filter(|&p| Some(p) != except)
                .map(|p| janus::feed(p as u64))
                .collect::<Vec<_>>()
        };
        for (i, (stats, _)) in pubs_spawned.iter().enumerate() {
            let others = feeds(Some(i));
            if others.is_empty() {
                continue;
            }
            let (link, task) = janus::subscriber(&args, room, &others)
                .await
                .with_context(|| format!("publisher {i} subscribing on Janus"))?;
            janus_tasks.push(task);
            subs.push((None, tokio::spawn(subscribe(link, shared.clone(), stats.clone()))));
        }
        for i in 0..args.subscribers {
            let (link, task) = janus::subscriber(&args, room, &feeds(None))
                .await
                .with_context(|| format!("subscriber {i} joining Janus"))?;
            janus_tasks.push(task);
            let stats = Arc::new(Mutex::new(SubscriberStats::default()));
            subs.push((Some(stats.clone()), tokio::spawn(subscribe(link, shared.clone(), stats))));
        }
    } else if args.room_mode() {
        // Each participant publishes video, the first `--speakers` audio too, and receives
        // what the server forwards it.
        for i in 0..args.participants {
            let speaks = i < args.speakers;
            let tracks = if speaks { tracks.clone() } else { tracks[1..].to_vec() };
            let session = Session::join(&args.url, &args.room, &format!("p-{i}"), options(&args, tracks))
                .await
                .with_context(|| format!("participant {i} joining"))?;
            let stats = Arc::new(Mutex::new(SubscriberStats::default()));
            let mut shape = Shape::new(&args, i as u16);
            shape.audio = speaks;
            shape.turn = speaks.then_some((i, args.speakers));
            pubs_spawned.push((
                stats.clone(),
                tokio::spawn(publish(Link::Session(session), shared.clone(), shape, stats)),
            ));
        }
    } else {
        // Subscribers first, so every publication finds them in the room.
        for i in 0..args.subscribers {
            let session =
                Session::join(&args.url, &args.room, &format!("sub-{i}"), options(&args, Vec::new()))
                    .await
                    .with_context(|| format!("subscriber {i} joining"))?;
            let stats = Arc::new(Mutex::new(SubscriberStats::default()));
            subs.push((
                Some(stats.clone()),
                tokio::spawn(subscribe(Link::Session(session), shared.clone(), stats)),
            ));
        }
        for i in 0..args.publishers {
            let session =
                Session::join(&args.url, &args.room, &format!("pub-{i}"), options(&args, tracks.clone()))
                    .await
                    .with_context(|| format!("publisher {i} joining"))?;
            let stats = Arc::new(Mutex::new(SubscriberStats::default()));
            let shape = Shape::new(&args, i as u16);
            pubs_spawned.push((
                stats.clone(),
                tokio::spawn(publish(Link::Session(session), shared.clone(), shape, stats)),
            ));
        }
    }

    // Everyone receives everything, then the warm-up.
    let deadline = Instant::now() + Duration::from_secs(args.setup_timeout);
    let want = args.publishers * 2;
    loop {
        let ready = if args.room_mode() {
            // Each participant receives the streams the room gives it (or more, for a while).
            let room = Room::of(&args);
            pubs_spawned
                .iter()
                .enumerate()
                .filter(|(i, (s, _))| s.lock().expect("not poisoned").seen.len() >= room.streams(*i))
                .count()
        } else {
            subs.iter()
                .filter_map(|(s, _)| s.as_ref())
                .filter(|s| s.lock().expect("not poisoned").seen.len() >= want)
                .count()
        };
        let receivers = if args.room_mode() { args.participants } else { args.subscribers };
        if ready == receivers {
            break;
        }
        if Instant::now() > deadline {
            shared.stop.store(true, Ordering::Relaxed);
            bail!(
                "after {} s only {ready} of {receivers} receivers receive all the streams they should",
                args.setup_timeout,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let setup = shared.origin.elapsed();
    // (For a profiler to attach in time: the window starts after the warm-up.)
    eprintln!("note: set up in {:.1} s; the window starts in {} s", setup.as_secs_f64(), args.warmup);
    // (In a room the speakers take turns until 1.5 s before the window.)
    let settle = Duration::from_millis(1500).min(Duration::from_secs(args.warmup));
    tokio::time::sleep(Duration::from_secs(args.warmup) - settle).await;
    shared.floor.store(true, Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    let cpu_before = peerlink_bench::process_cpu(args.pid).context("server CPU time")?;
    let own_before = peerlink_bench::process_cpu(std::process::id()).context("own CPU time")?;
    let split_before = peerlink_bench::process_cpu_split(args.pid).context("server CPU time")?;
    let from = shared.now_ns();
    *shared.window.lock().expect("not poisoned") = (from, from + args.seconds * 1_000_000_000);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu_after = peerlink_bench::process_cpu(args.pid).context("server CPU time")?;
    let own_after = peerlink_bench::process_cpu(std::process::id()).context("own CPU time")?;
    let split_after = peerlink_bench::process_cpu_split(args.pid).context("server CPU time")?;
    let elapsed = Duration::from_nanos(shared.now_ns() - from);
    // What is on its way arrives (a retransmission included), then everyone stops.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut sent: HashMap<(u16, u8), Sent> = HashMap::new();
    // Publishers receive the others' streams too: the server forwards those as well.
    let mut receivers: Vec<(Option<u16>, Arc<Mutex<SubscriberStats>>)> = Vec::new();
    for (i, (stats, task)) in pubs_spawned.into_iter().enumerate() {
        sent.extend(task.await.context("publisher task")??);
        receivers.push((Some(i as u16), stats));
    }
    receivers.extend(subs.iter().filter_map(|(stats, _)| stats.clone().map(|s| (None, s))));
    for (_, task) in &subs {
        task.abort();
    }
    for task in &janus_tasks {
        task.abort();
    }

    // Results.
    let windows: HashMap<(u16, u8), (u32, u32)> =
        sent.iter().filter_map(|(k, s)| s.first.map(|f| (*k, (f, s.last)))).collect();
    let mut expected = 0u64;
    let mut got = 0u64;
    let mut duplicates = 0u64;
    let mut ssrc_expected = 0u64;
    let mut ssrc_got = 0u64;
    let mut delays: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut unmarked = 0u64;
    for (own, stats) in &receivers {
        let s = stats.lock().expect("not poisoned");
        for (key, sent) in &sent {
            let Some(first) = sent.first.filter(|_| Some(key.0) != *own) else { continue };
            // Of a publisher's video layers, those the receiver got in the window count (the
            // top one if none).
            if key.1 >= VIDEO && (args.layers() > 1 || args.room_mode()) {
                let got_layer = |l: u8| {
                    s.streams.get(&(key.0, l)).is_some_and(|r| {
                        let w = windows.get(&(key.0, l));
                        w.is_some_and(|&(a, b)| r.numbers.count_in(a.into(), b.into()) > 0)
                    })
                };
                let any = (0..args.layers() as u8).any(|k| got_layer(VIDEO + k));
                let top = key.1 == VIDEO + args.layers() as u8 - 1;
                // In a room, a video outside the receiver's last N is not forwarded to it (the
                // room's check below counts the videos each receiver got).
                let fallback = !any && top && !args.room_mode();
                if !got_layer(key.1) && !fallback {
                    continue;
                }
            }
            let n = u64::from(sent.last - first) + 1;
            expected += n;
            if let Some(r) = s.streams.get(key) {
                got += r.numbers.count_in(first.into(), sent.last.into());
                duplicates += r.duplicates;
            }
        }
        for b in s.ssrcs.values() {
            if let (Some(lo), Some(hi)) = (b.seqs.iter().min(), b.seqs.iter().max()) {
                ssrc_expected += hi - lo + 1;
                ssrc_got += b.seqs.len() as u64;
            }
        }
        for (all, these) in delays.iter_mut().zip(&s.delays) {
            all.extend_from_slice(these);
        }
        packets += s.packets_in_window;
        bytes += s.bytes_in_window;
        unmarked += s.unmarked;
    }
    let secs = elapsed.as_secs_f64();
    let cpu = cpu_after.saturating_sub(cpu_before).as_secs_f64();
    let user = split_after.0.saturating_sub(split_before.0).as_secs_f64();
    let system = split_after.1.saturating_sub(split_before.1).as_secs_f64();
    let cpu_stat = user + system;
    let loss = |exp: u64, got: u64| {
        if exp == 0 {
            0.0
        } else {
            100.0 * (exp.saturating_sub(got)) as f64 / exp as f64
        }
    };
    println!("server={server}");
    if args.room_mode() {
        println!(
            "participants={} (each publishes video and receives; the first {} publish audio)",
            args.participants, args.speakers
        );
    } else {
        println!("publishers={}", args.publishers);
        println!("subscribers={}", args.subscribers);
    }
    let shape = Shape::new(&args, 0);
    let rates: Vec<String> = shape.layers.iter().map(|l| format!("{}", l.kbps)).collect();
    println!(
        "streams_per_publisher=2 (VP8 at {} fps, {} layer(s) of {} kbit/s; Opus-shaped 50 packets/s)",
        args.fps,
        args.layers(),
        rates.join("+")
    );
    println!("setup_seconds={:.2}", setup.as_secs_f64());
    println!("window_seconds={secs:.2}");
    println!(
        "sent_packets={}",
        sent.values().filter_map(|s| s.first.map(|f| u64::from(s.last - f) + 1)).sum::<u64>()
    );
    for (k, l) in shape.layers.iter().enumerate() {
        let of_layer = || sent.iter().filter(|(key, _)| key.1 == VIDEO + k as u8).map(|(_, s)| s);
        let n: u64 = of_layer().filter_map(|s| s.first.map(|f| u64::from(s.last - f) + 1)).sum();
        let kbps = of_layer().map(|s| s.bytes).sum::<u64>() as f64 * 8.0 / secs / 1000.0;
        let keys: u64 = of_layer().map(|s| s.keyframes).sum();
        let requests: u64 = of_layer().map(|s| s.requests).sum();
        println!(
            "sent_video_layer{k} packets={n} kbit_per_second_all_publishers={kbps:.0} keyframes={keys} \
             keyframe_requests={requests} (nominal {} kbit/s, {}x{} each)",
            l.kbps, l.width, l.height
        );
    }
    // Which layer of each publisher each receiver got most of in the window.
    let mut main_layer = [0u64; MAX_LAYERS];
    let mut received_layer = [0u64; MAX_LAYERS];
    for (own, stats) in &receivers {
        let s = stats.lock().expect("not poisoned");
        for (k, n) in s.layer_packets.iter().enumerate() {
            received_layer[k] += n;
        }
        let publishers = if args.room_mode() { args.participants } else { args.publishers };
        for p in (0..publishers as u16).filter(|p| Some(*p) != *own) {
            let count = |k: usize| s.streams.get(&(p, VIDEO + k as u8)).map_or(0, |r| r.numbers.len());
            if let Some(k) = (0..args.layers()).filter(|&k| count(k) > 0).max_by_key(|&k| count(k)) {
                main_layer[k] += 1;
            }
        }
    }
    for k in 0..args.layers() {
        println!(
            "received_video_layer{k} packets={} receiver_publisher_pairs_mostly_on_it={}",
            received_layer[k], main_layer[k]
        );
    }
    let room_errors = if args.room_mode() { room_report(&args, &receivers) } else { Vec::new() };
    println!("forwarded_packets={packets}");
    println!("forwarded_packets_per_second={:.0}", packets as f64 / secs);
    println!("forwarded_mbit_per_second={:.2}", bytes as f64 * 8.0 / secs / 1e6);
    println!("server_cpu_seconds={cpu:.3}");
    println!("server_cpu_share={:.3}", cpu / secs);
    println!("forwarded_packets_per_cpu_second={:.0}", if cpu > 0.0 { packets as f64 / cpu } else { 0.0 });
    // The server also takes in every publisher's layers, forwarded or not.
    let ingested: u64 = sent.values().filter_map(|s| s.first.map(|f| u64::from(s.last - f) + 1)).sum();
    println!(
        "server_packets_in_and_out_per_cpu_second={:.0} (in: {ingested} sent by the publishers)",
        if cpu > 0.0 { (packets + ingested) as f64 / cpu } else { 0.0 }
    );
    let own = own_after.saturating_sub(own_before).as_secs_f64();
    println!("generator_cpu_seconds={own:.3}");
    println!("generator_cpu_share={:.3} (threads={})", own / secs, args.threads.max(1));
    println!("server_cpu_seconds_stat={cpu_stat:.2}");
    println!(
        "forwarded_packets_per_cpu_second_stat={:.0}",
        if cpu_stat > 0.0 { packets as f64 / cpu_stat } else { 0.0 }
    );
    // The kernel's part (system over user+system): what the sockets' system calls cost, which
    // no change to the server's own code removes.
    println!("server_kernel_share={:.2}", if cpu_stat > 0.0 { system / cpu_stat } else { 0.0 });
    // The most a server making the same system calls could forward per CPU-second.
    println!(
        "forwarded_packets_per_kernel_cpu_second={:.0}",
        if system > 0.0 { packets as f64 / system } else { 0.0 }
    );
    println!("loss_percent={:.3}", loss(expected, got));
    println!("loss_percent_by_ssrc_seq={:.3}", loss(ssrc_expected, ssrc_got));
    println!("duplicates={duplicates}");
    println!("unmarked_packets={unmarked}");
    let mut all: Vec<u32> = delays.iter().flatten().copied().collect();
    for (name, d) in [("all", &mut all), ("audio", &mut delays[0].clone()), ("video", &mut delays[1].clone())]
    {
        d.sort_unstable();
        let pct = |p: f64| d.get(((d.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
        println!(
            "delay_{name}_us p50={} p99={} max={} n={}",
            pct(0.50),
            pct(0.99),
            d.last().copied().unwrap_or(0),
            d.len()
        );
    }
    if packets == 0 {
        bail!("no packet was forwarded in the window");
    }
    if !room_errors.is_empty() {
        bail!("the room is not what was asked:\n  {}", room_errors.join("\n  "));
    }
    Ok(())
}

/// Prints what each participant of a room received in the window (videos, on which layer,
/// audio streams) against what the room should give it ([`Room`]); returns what differs.
fn room_report(args: &Args, receivers: &[(Option<u16>, Arc<Mutex<SubscriberStats>>)]) -> Vec<String> {
    let room = Room::of(args);
    let top = args.layers() - 1;
    let mut errors = Vec::new();
    // Value -> receivers with that value, per measure.
    let mut videos = std::collections::BTreeMap::<usize, usize>::new();
    let mut fulls = std::collections::BTreeMap::<usize, usize>::new();
    let mut lows = std::collections::BTreeMap::<usize, usize>::new();
    let mut audios = std::collections::BTreeMap::<usize, usize>::new();
    let mut as_asked = 0;
    for (own, stats) in receivers {
        let Some(i) = own.map(usize::from) else { continue };
        let s = stats.lock().expect("not poisoned");
        let count = |p: u16, stream: u8| s.streams.get(&(p, stream)).map_or(0, |r| r.numbers.len());
        let (mut video, mut full, mut low, mut audio) = (0, 0, 0, 0);
        for p in (0..args.participants as u16).filter(|&p| usize::from(p) != i) {
            if count(p, AUDIO) > 0 {
                audio += 1;
            }
            // The layer it got most of.
            let main = (0..args.layers())
                .filter(|&k| count(p, VIDEO + k as u8) > 0)
                .max_by_key(|&k| count(p, VIDEO + k as u8));
            if let Some(k) = main {
                video += 1;
                if k == top {
                    full += 1;
                }
                if k == 0 {
                    low += 1;
                }
            }
        }
        *videos.entry(video).or_default() += 1;
        *fulls.entry(full).or_default() += 1;
        *lows.entry(low).or_default() += 1;
        *audios.entry(audio).or_default() += 1;
        let want_full = room.full(i);
        // With one layer, top and lowest are the same: only the count of videos tells.
        let layers_ok = args.layers() == 1 || (full == want_full && low == room.shown - want_full);
        if video == room.shown && layers_ok && audio == room.audio(i) {
            as_asked += 1;
        } else if errors.len() < 5 {
            errors.push(format!(
                "participant {i} got {video} videos ({full} in the top layer, {low} in the lowest) and {audio} \
                 audio streams; it should get {} ({want_full} in the top layer) and {}",
                room.shown,
                room.audio(i)
            ));
        }
    }
    let hist = |m: &std::collections::BTreeMap<usize, usize>| {
        m.iter().map(|(v, n)| format!("{v}x{n}")).collect::<Vec<_>>().join(",")
    };
    println!(
        "room_expected videos_per_receiver={} top_layer_per_receiver={} audio_per_receiver={} \
         (last_n={} thumbnails_above={} speakers={})",
        room.shown,
        room.full(args.participants - 1),
        room.audio(args.participants - 1),
        args.last_n,
        args.thumbnails_above,
        args.speakers
    );
    println!(
        "room_received (value x receivers) videos_per_receiver={} top_layer_per_receiver={} \
         lowest_layer_per_receiver={} audio_per_receiver={}",
        hist(&videos),
        hist(&fulls),
        hist(&lows),
        hist(&audios)
    );
    println!("room_receivers_as_asked={as_asked} of {}", args.participants);
    if as_asked < args.participants {
        errors.push(format!(
            "{} of {} participants got another room",
            args.participants - as_asked,
            args.participants
        ));
        if room.shown > room.thumbnails_above && fulls.keys().all(|&f| f == 0) && args.speakers > 0 {
            errors.push(
                "no video came in the top layer: the server knows no speaker (speakers are found from \
                 the RFC 6464 audio levels the speakers' audio carries)"
                    .to_owned(),
            );
        }
    }
    errors
}

/// What each participant of a room (`--participants`) should receive by the server's policy
/// (crates/sfu/src/video.rs): the video of `shown` others, `full` of them in the top layer
/// and the others in the lowest, and the audio of every speaker but itself.
struct Room {
    speakers: usize,
    shown: usize,
    thumbnails_above: usize,
}

impl Room {
    fn of(args: &Args) -> Room {
        Room {
            speakers: args.speakers,
            shown: args.last_n.min(args.participants.saturating_sub(1)),
            thumbnails_above: args.thumbnails_above,
        }
    }

    /// Audio streams participant `i` receives: every speaker's but its own.
    fn audio(&self, i: usize) -> usize {
        self.speakers - usize::from(i < self.speakers)
    }

    /// Videos participant `i` receives in the top layer: all it is shown when they are few;
    /// else only the most recent other speaker's (none when no other speaks).
    fn full(&self, i: usize) -> usize {
        if self.shown <= self.thumbnails_above {
            self.shown
        } else {
            usize::from(self.audio(i) > 0)
        }
    }

    fn streams(&self, i: usize) -> usize {
        self.shown + self.audio(i)
    }
}

/// How a publisher's media looks: sizes and times of its frames.
struct Shape {
    publisher: u16,
    frame_interval: Duration,
    /// Per simulcast layer, lowest first.
    layers: Vec<LayerShape>,
    frames_per_key: u64,
    fps: u64,
    rng: u64,
    /// Whether it publishes audio (a transceiver before the video's).
    audio: bool,
    /// In a room, speakers take turns (this one's turn of how many): its audio carries a
    /// voice level (RFC 6464) in its turns and silence between them (outside a room no
    /// level), so that the server
    /// sees each speaker in turn as the most recent (as in a conversation); the last one
    /// keeps speaking once `Shared::floor` is set.
    turn: Option<(usize, usize)>,
}

/// How long a speaker's turn lasts: long enough for the server to move the floor within it
/// (it holds a speaker 500 ms at least, a level takes about 100 ms to rise, and it decides
/// every 100 ms).
const TURN: Duration = Duration::from_millis(1200);

struct LayerShape {
    delta_bytes: usize,
    key_bytes: usize,
    /// The key frame header's picture size.
    width: u16,
    height: u16,
    kbps: u64,
}

impl Shape {
    fn new(args: &Args, publisher: u16) -> Shape {
        let frames_per_key = (args.keyframe_secs * u64::from(args.fps)).max(1);
        let layers = (0..args.layers())
            .map(|k| {
                // Each layer below the top: a fifth of the rate, a quarter of the picture.
                let down = (args.layers() - 1 - k) as u32;
                let kbps = args.video_kbps / 5u64.pow(down);
                let per_key_period = kbps * 1000 / 8 * args.keyframe_secs.max(1);
                // One key frame (8 deltas' worth) and the deltas share the period's bytes.
                let delta = (per_key_period / (frames_per_key - 1 + 8)).max(200) as usize;
                LayerShape {
                    delta_bytes: delta,
                    key_bytes: delta * 8,
                    width: 640 >> down,
                    height: 360 >> down,
                    kbps,
                }
            })
            .collect();
        Shape {
            publisher,
            frame_interval: Duration::from_secs(1) / args.fps,
            layers,
            frames_per_key,
            fps: u64::from(args.fps),
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(publisher),
            audio: true,
            turn: None,
        }
    }

    /// Size of layer `k`'s next delta frame: ±25% around the mean.
    fn delta(&mut self, k: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mean = self.layers[k].delta_bytes;
        let spread = (mean / 2).max(1);
        mean - spread / 2 + (self.rng % spread as u64) as usize
    }
}

/// One outgoing stream: its RTP sequence number and packet counter, and what the window saw.
struct Stream {
    seq: u16,
    number: u32,
    sent: Sent,
}

impl Stream {
    fn new(start: u16) -> Stream {
        Stream { seq: start, number: 0, sent: Sent::default() }
    }
}

fn mark(out: &mut Vec<u8>, publisher: u16, stream: u8, number: u32, at: u64) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&publisher.to_be_bytes());
    out.push(stream);
    out.push(0);
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&at.to_be_bytes());
}

/// An RTP packet the connection re-headers (it keeps payload, marker, sequence number and
/// timestamp): a fixed header with no SSRC of ours.
fn rtp(marker: bool, seq: u16, timestamp: u32, payload_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload_len);
    p.push(0x80);
    p.push(if marker { 0x80 | 96 } else { 96 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p
}

/// Fills `p` with bytes up to `len` (a pattern, not zeros: nothing on the way compresses).
fn fill(p: &mut Vec<u8>, len: usize) {
    let mut b = p.len() as u8;
    while p.len() < len {
        p.push(b);
        b = b.wrapping_mul(31).wrapping_add(7);
    }
}

async fn publish(
    mut link: Link,
    shared: Arc<Shared>,
    mut shape: Shape,
    stats: Arc<Mutex<SubscriberStats>>,
) -> anyhow::Result<HashMap<(u16, u8), Sent>> {
    const AUDIO_ID: TransceiverId = TransceiverId(0);
    let video_id = TransceiverId(usize::from(shape.audio));
    let mut handle = None;
    let mut connected = false;
    let layers = shape.layers.len();
    let mut audio = Stream::new(1000 + shape.publisher);
    let mut video: Vec<Stream> =
        (0..layers).map(|k| Stream::new(20000 + shape.publisher + 1000 * k as u16)).collect();
    // The layers the server took (its answer); all until known.
    let mut sending: Vec<usize> = (0..layers).collect();
    let mut frame = 0u64;
    let mut picture_id = vec![0u16; layers];
    let mut force_key = vec![false; layers];
    let mut last_key: Vec<Option<Instant>> = vec![None; layers];
    // The due times of the next audio packet, the next video frame, and the packets of the
    // current frame still to go (due time, packet).
    let mut next_audio = Instant::now();
    let mut next_frame = Instant::now();
    let mut queue: std::collections::VecDeque<(Instant, Vec<u8>, usize, usize)> = Default::default();
    let started = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let due = if connected {
            let q = queue.front().map(|(t, ..)| *t);
            Some([Some(next_audio), Some(next_frame), q].into_iter().flatten().min().expect("some"))
        } else {
            None
        };
        tokio::select! {
            event = link.next() => {
                let Some(event) = event else { bail!("publisher {}: the session ended", shape.publisher) };
                match event {
                    LinkEvent::Handle(h) => handle = Some(h),
                    LinkEvent::Rtc(event) => match event {
                        RtcEvent::ConnectionState(ConnectionState::Connected) => {
                            connected = true;
                            next_audio = Instant::now();
                            next_frame = Instant::now();
                            force_key.fill(true);
                            if let Some(h) = handle.as_ref() {
                                let info = h.transceivers().await;
                                if let Some(t) = info.iter().find(|t| t.id == video_id) {
                                    sending = t.sent_layers.clone();
                                }
                                // A server that takes fewer layers would get a lighter load
                                // than the other one it is compared with: no numbers then.
                                if sending.len() < layers {
                                    bail!(
                                        "publisher {}: the server takes video layers {sending:?} of {layers}, \
                                         so the loads would differ (LAYERS=1 sends one)",
                                        shape.publisher
                                    );
                                }
                            }
                        }
                        RtcEvent::ConnectionState(ConnectionState::Failed | ConnectionState::Closed) => {
                            bail!("publisher {}: the connection to the server is over", shape.publisher);
                        }
                        RtcEvent::KeyframeRequest { layer, .. } => {
                            if let Some(f) = force_key.get_mut(layer) {
                                *f = true;
                            }
                            if let Some(v) = video.get_mut(layer).filter(|_| shared.in_window(shared.now_ns())) {
                                v.sent.requests += 1;
                            }
                        }
                        RtcEvent::Rtp { packet, .. } => on_rtp(&shared, &stats, &packet),
                        _ => {}
                    },
                    LinkEvent::Gone(reason) => {
                        bail!("publisher {}: the server's connection: {reason}", shape.publisher);
                    }
                    LinkEvent::Other => {}
                }
            }
            () = sleep_until(due) => {
                let Some(h) = handle.as_ref() else { continue };
                let now = Instant::now();
                if now >= next_audio && !shape.audio {
                    next_audio += Duration::from_millis(20);
                } else if now >= next_audio {
                    let t = shared.now_ns();
                    let ts = (now - started).as_micros() as u64 * 48 / 1000;
                    let mut p = rtp(true, audio.seq, (ts / 960 * 960) as u32, AUDIO_PAYLOAD);
                    p.push(0xfc);
                    mark(&mut p, shape.publisher, AUDIO, audio.number, t);
                    fill(&mut p, 12 + AUDIO_PAYLOAD);
                    note(&shared, &mut audio.sent, audio.number, t, p.len() - 12);
                    // A speaker's level (RFC 6464: -30 dBov, voice; the server finds speakers by
                    // it), in its turns only if it has turns (silence, 127, between them).
                    // (Publishers outside a room send no level: the server then features no
                    // one, as before levels were sent, and every subscriber of more videos
                    // than --thumbnails-above gets thumbnails.) Turns count from the run's
                    // start, not the participant's, so that they follow each other.
                    let level = shape.turn.map(|(k, of)| {
                        let speaking = if shared.floor.load(Ordering::Relaxed) {
                            k + 1 == of
                        } else {
                            (shared.origin.elapsed().as_millis() / TURN.as_millis()) as usize % of.max(1) == k
                        };
                        if speaking {
                            AudioLevel { voice: true, level: 30 }
                        } else {
                            AudioLevel { voice: false, level: 127 }
                        }
                    });
                    h.write_rtp_layer(AUDIO_ID, 0, Codec::Opus, p, audio.seq, (ts / 960 * 960) as u32, level);
                    audio.seq = audio.seq.wrapping_add(1);
                    audio.number += 1;
                    next_audio += Duration::from_millis(20);
                }
                for &k in sending.iter().filter(|_| now >= next_frame) {
                    let periodic = frame % shape.frames_per_key == 0;
                    // A requested key frame, at most every 300 ms (as encoders throttle).
                    let requested =
                        force_key[k] && last_key[k].is_none_or(|at| now - at >= Duration::from_millis(300));
                    let key = periodic || requested;
                    if key {
                        force_key[k] = false;
                        last_key[k] = Some(now);
                        if shared.in_window(shared.now_ns()) {
                            video[k].sent.keyframes += 1;
                        }
                    }
                    let size = if key { shape.layers[k].key_bytes } else { shape.delta(k) };
                    let timestamp = (frame * 90_000 / shape.fps) as u32;
                    // Equal packets (as libwebrtc cuts them), each with a 4-byte descriptor.
                    let room = MAX_VP8_PAYLOAD - 4;
                    let count = size.div_ceil(room).max(1);
                    let each = size.div_ceil(count);
                    let spread = shape.frame_interval / 2 / count as u32;
                    for i in 0..count {
                        let len = if i + 1 == count { size - each * (count - 1) } else { each };
                        let mut p = rtp(i + 1 == count, 0, timestamp, len + 4);
                        // RFC 7741 §4.2: X, S on the first packet, PID 0; I with a 15-bit
                        // picture id.
                        p.push(if i == 0 { 0x90 } else { 0x80 });
                        p.push(0x80);
                        p.extend_from_slice(&(0x8000 | picture_id[k]).to_be_bytes());
                        if i == 0 {
                            // RFC 6386 §9.1: the frame tag (show_frame, P=0 for a key frame),
                            // then a key frame's start code and the layer's picture size.
                            if key {
                                let (w, h) = (shape.layers[k].width, shape.layers[k].height);
                                p.extend_from_slice(&[0x10, 0, 0, 0x9d, 0x01, 0x2a]);
                                p.extend_from_slice(&w.to_le_bytes());
                                p.extend_from_slice(&h.to_le_bytes());
                            } else {
                                p.extend_from_slice(&[0x11, 0, 0]);
                            }
                        }
                        let target = 12 + 4 + len.max(p.len() - 12 - 4 + MARK_LEN);
                        queue.push_back((next_frame + spread * i as u32, p, target, k));
                    }
                    picture_id[k] = (picture_id[k] + 1) & 0x7fff;
                }
                if now >= next_frame {
                    frame += 1;
                    next_frame += shape.frame_interval;
                }
                // (Packets of the layers sorted by due time: a stable sort keeps each
                // layer's in order.)
                queue.make_contiguous().sort_by_key(|(t, ..)| *t);
                while queue.front().is_some_and(|(t, ..)| *t <= now) {
                    let (_, mut p, target, k) = queue.pop_front().expect("checked");
                    let t = shared.now_ns();
                    let v = &mut video[k];
                    mark(&mut p, shape.publisher, VIDEO + k as u8, v.number, t);
                    fill(&mut p, target);
                    p[2..4].copy_from_slice(&v.seq.to_be_bytes());
                    let ts = u32::from_be_bytes(p[4..8].try_into().expect("4 bytes"));
                    note(&shared, &mut v.sent, v.number, t, p.len() - 12);
                    if layers == 1 {
                        h.write_rtp(video_id, Codec::Vp8, p, v.seq, ts);
                    } else {
                        h.write_rtp_layer(video_id, k, Codec::Vp8, p, v.seq, ts, None);
                    }
                    v.seq = v.seq.wrapping_add(1);
                    v.number += 1;
                }
                // A late wake-up does not send a burst to catch up.
                let now = Instant::now();
                if next_audio + Duration::from_millis(100) < now {
                    next_audio = now;
                }
                if next_frame + Duration::from_millis(300) < now {
                    next_frame = now;
                }
            }
        }
    }
    link.close().await;
    let mut sent = HashMap::new();
    if shape.audio {
        sent.insert((shape.publisher, AUDIO), audio.sent);
    }
    for (k, v) in video.iter().enumerate() {
        sent.insert((shape.publisher, VIDEO + k as u8), v.sent);
    }
    Ok(sent)
}

fn note(shared: &Shared, sent: &mut Sent, number: u32, t: u64, bytes: usize) {
    if shared.in_window(t) {
        sent.first.get_or_insert(number);
        sent.last = number;
        sent.bytes += bytes as u64;
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn subscribe(mut link: Link, shared: Arc<Shared>, stats: Arc<Mutex<SubscriberStats>>) {
    while let Some(event) = link.next().await {
        if let LinkEvent::Rtc(RtcEvent::Rtp { packet, .. }) = event {
            on_rtp(&shared, &stats, &packet);
        }
    }
}

/// Counts one forwarded packet.
fn on_rtp(shared: &Shared, stats: &Mutex<SubscriberStats>, packet: &[u8]) {
    let arrived = shared.now_ns();
    let Ok(p) = RtpPacket::parse(packet) else { return };
    let payload = p.payload();
    // The marker is right after the codec's header: within the first bytes.
    let head = &payload[..payload.len().min(40)];
    let mut s = stats.lock().expect("not poisoned");
    let Some(at) = head.windows(4).position(|w| w == MAGIC) else {
        s.unmarked += 1;
        return;
    };
    let Some(m) = payload.get(at..at + MARK_LEN) else {
        s.unmarked += 1;
        return;
    };
    let publisher = u16::from_be_bytes([m[4], m[5]]);
    let stream = m[6];
    let number = u32::from_be_bytes(m[8..12].try_into().expect("4 bytes"));
    let sent_at = u64::from_be_bytes(m[12..20].try_into().expect("8 bytes"));
    // Any layer of a publisher's video will do for the start.
    s.seen.insert((publisher, stream.min(VIDEO)));
    if !shared.in_window(sent_at) || usize::from(stream) > usize::from(VIDEO) + MAX_LAYERS - 1 {
        return;
    }
    let r = s.streams.entry((publisher, stream)).or_default();
    if !r.numbers.insert(number.into()) {
        r.duplicates += 1;
        return;
    }
    let by = s.ssrcs.entry(p.ssrc()).or_default();
    let seq = by.unwrap.unwrap(p.sequence_number());
    by.seqs.insert(seq);
    s.packets_in_window += 1;
    s.bytes_in_window += packet.len() as u64;
    if stream >= VIDEO {
        s.layer_packets[usize::from(stream - VIDEO)] += 1;
    }
    let delay = arrived.saturating_sub(sent_at) / 1000;
    s.delays[usize::from(stream.min(VIDEO))].push(delay.min(u64::from(u32::MAX)) as u32);
}

/// One peer's connection to the server under test: through `peerlink serve`'s signaling (the
/// session's connection to the reserved peer "sfu"), or set up through Janus's API; the media
/// goes through the same native peer either way.
enum Link {
    Session(Session),
    Janus { handle: PeerHandle, given: bool, events: PeerEvents },
}

/// What a [`Link`] tells its peer task.
enum LinkEvent {
    /// Commands to the connection to the server.
    Handle(PeerHandle),
    Rtc(RtcEvent),
    Gone(String),
    Other,
}

impl Link {
    async fn next(&mut self) -> Option<LinkEvent> {
        match self {
            Link::Session(session) => Some(match session.next().await? {
                SessionEvent::Connecting { peer, handle, .. } if peer.id == SFU_PEER => {
                    LinkEvent::Handle(handle)
                }
                SessionEvent::Rtc { peer, event } if peer == SFU_PEER => LinkEvent::Rtc(event),
                SessionEvent::Gone { peer, reason } if peer == SFU_PEER => {
                    LinkEvent::Gone(reason.to_string())
                }
                _ => LinkEvent::Other,
            }),
            Link::Janus { handle, given, events } => {
                if !*given {
                    *given = true;
                    return Some(LinkEvent::Handle(handle.clone()));
                }
                Some(
                    events
                        .next()
                        .await
                        .map_or_else(|| LinkEvent::Gone("the peer stopped".to_owned()), LinkEvent::Rtc),
                )
            }
        }
    }

    async fn close(self) {
        match self {
            Link::Session(session) => session.close().await,
            Link::Janus { handle, .. } => handle.close().await,
        }
    }
}

/// Janus's VideoRoom plugin through its WebSocket API (subprotocol `janus-protocol`): one
/// socket, Janus session and plugin handle per peer connection.
mod janus {
    use super::{Args, Link};
    use anyhow::{bail, Context};
    use futures_util::{SinkExt, StreamExt};
    use peerlink::rtc::{Description, Direction, MediaKind, RtcConfig, SdpType, TrackConfig};
    use peerlink::{Peer, PeerConfig};
    use serde_json::{json, Value};
    use std::time::Duration;
    use tokio::net::TcpStream;
    use tokio::task::JoinHandle;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// How long Janus may take to answer a request.
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
    /// Janus drops a session after 60 s without a request (its default `session_timeout`).
    const KEEPALIVE: Duration = Duration::from_secs(20);

    /// The feed id of publisher `i`.
    pub fn feed(i: u64) -> u64 {
        1000 + i
    }

    pub struct Janus {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        session: u64,
        handle: u64,
        transactions: u64,
    }

    impl Janus {
        /// A new Janus session with a handle of the VideoRoom plugin.
        pub async fn attach(url: &str) -> anyhow::Result<Janus> {
            let mut request = url.into_client_request()?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("janus-protocol"));
            let (ws, _) = tokio_tungstenite::connect_async(request)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            let mut janus = Janus { ws, session: 0, handle: 0, transactions: 0 };
            let created = janus.call(json!({ "janus": "create" })).await?;
            janus.session = id(&created)?;
            let attached =
                janus.call(json!({ "janus": "attach", "plugin": "janus.plugin.videoroom" })).await?;
            janus.handle = id(&attached)?;
            Ok(janus)
        }

        async fn send(&mut self, mut request: Value) -> anyhow::Result<String> {
            self.transactions += 1;
            let transaction = format!("t{}", self.transactions);
            request["transaction"] = json!(transaction);
            if self.session != 0 {
                request["session_id"] = json!(self.session);
            }
            if self.handle != 0 {
                request["handle_id"] = json!(self.handle);
            }
            self.ws.send(Message::text(request.to_string())).await?;
            Ok(transaction)
        }

        async fn receive(&mut self) -> anyhow::Result<Value> {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(text.as_str())?),
                    Some(Ok(Message::Close(_))) | None => bail!("Janus closed the WebSocket"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }

        /// A request and its answer: Janus's `success`, or the plugin's `event` after the
        /// `ack` of an asynchronous request.
        async fn call(&mut self, request: Value) -> anyhow::Result<Value> {
            let transaction = self.send(request).await?;
            let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
            loop {
                let answer = tokio::time::timeout_at(deadline, self.receive())
                    .await
                    .with_context(|| format!("no answer from Janus within {ANSWER_TIMEOUT:?}"))??;
                if answer["transaction"].as_str() != Some(transaction.as_str()) {
                    continue;
                }
                match answer["janus"].as_str() {
                    Some("ack") => continue,
                    Some("error") => bail!("Janus: {}", answer["error"]),
                    _ => {}
                }
                let data = &answer["plugindata"]["data"];
                if let Some(e) = data.get("error") {
                    bail!("VideoRoom: {e} (code {})", data["error_code"]);
                }
                return Ok(answer);
            }
        }

        /// A VideoRoom request, with a description: the answer's plugin data and description.
        pub async fn message(
            &mut self,
            body: Value,
            jsep: Option<&Description>,
        ) -> anyhow::Result<(Value, Option<Description>)> {
            self.message_with(body, jsep, None).await
        }

        /// [`Janus::message`] with the order of the description's simulcast rids (Janus takes
        /// `hml`, highest first, unless told `lmh`).
        async fn message_with(
            &mut self,
            body: Value,
            jsep: Option<&Description>,
            rid_order: Option<&str>,
        ) -> anyhow::Result<(Value, Option<Description>)> {
            let mut request = json!({ "janus": "message", "body": body });
            if let Some(d) = jsep {
                request["jsep"] = json!({ "type": d.kind.as_str(), "sdp": d.sdp });
                if let Some(order) = rid_order {
                    request["jsep"]["rid_order"] = json!(order);
                }
            }
            let answer = self.call(request).await?;
            let jsep =
                answer["jsep"]["type"].as_str().and_then(SdpType::parse).zip(answer["jsep"]["sdp"].as_str());
            let jsep = jsep.map(|(kind, sdp)| Description { kind, sdp: sdp.to_owned() });
            Ok((answer["plugindata"]["data"].clone(), jsep))
        }

        /// Our candidates are all in the description we sent: none follow.
        async fn candidates_done(&mut self) -> anyhow::Result<()> {
            self.send(json!({ "janus": "trickle", "candidate": { "completed": true } })).await.map(drop)
        }

        /// Keeps the session alive, reading and dropping what Janus sends, until aborted.
        pub fn keep_alive(mut self) -> JoinHandle<()> {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEEPALIVE);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if self.send(json!({ "janus": "keepalive" })).await.is_err() {
                                return;
                            }
                        }
                        received = self.receive() => if received.is_err() { return },
                    }
                }
            })
        }
    }

    fn id(answer: &Value) -> anyhow::Result<u64> {
        answer["data"]["id"].as_u64().with_context(|| format!("no id in Janus's answer {answer}"))
    }

    async fn peer(args: &Args, tracks: Vec<(MediaKind, Direction, TrackConfig)>) -> anyhow::Result<Link> {
        // As `SessionOptions` of the other server's peers: raw RTP, recvonly for offered media.
        let rtc =
            RtcConfig { accept_media: Some(Direction::RecvOnly), accept_raw: true, ..RtcConfig::default() };
        let peer = Peer::start(PeerConfig { rtc, addresses: args.bind.into_iter().collect() }).await?;
        let (handle, events) = peer.split();
        for (kind, direction, config) in tracks {
            handle.add_transceiver(kind, direction, config).await?;
        }
        Ok(Link::Janus { handle, given: false, events })
    }

    /// Publisher `i` in `room`: joins, and publishes our offer.
    pub async fn publisher(
        args: &Args,
        room: u64,
        i: u64,
        tracks: Vec<(MediaKind, Direction, TrackConfig)>,
    ) -> anyhow::Result<(Link, JoinHandle<()>)> {
        let link = peer(args, tracks).await?;
        let Link::Janus { handle, .. } = &link else { unreachable!("a Janus link") };
        let mut janus = Janus::attach(&args.url).await?;
        let join = json!({ "request": "join", "ptype": "publisher", "room": room, "id": feed(i), "display": format!("pub-{i}") });
        janus.message(join, None).await.context("join as publisher")?;
        let offer = handle.create_offer().await?;
        // Our simulcast rids are lowest first.
        let order = (args.layers() > 1).then_some("lmh");
        let (_, answer) = janus
            .message_with(json!({ "request": "publish" }), Some(&offer), order)
            .await
            .context("publish")?;
        let answer = answer.context("no answer to the publisher's offer")?;
        if args.layers() > 1 && !answer.sdp.contains("a=simulcast:recv") {
            eprintln!("note: Janus's answer to publisher {i} takes no simulcast: one layer is sent");
        }
        handle.set_remote_description(answer).await?;
        janus.candidates_done().await?;
        Ok((link, janus.keep_alive()))
    }

    /// A subscriber to `feeds` in `room`: Janus offers, we answer with `start`.
    pub async fn subscriber(args: &Args, room: u64, feeds: &[u64]) -> anyhow::Result<(Link, JoinHandle<()>)> {
        let link = peer(args, Vec::new()).await?;
        let Link::Janus { handle, .. } = &link else { unreachable!("a Janus link") };
        let mut janus = Janus::attach(&args.url).await?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({ "feed": f })).collect();
        let join = json!({ "request": "join", "ptype": "subscriber", "room": room, "streams": streams });
        let (_, offer) = janus.message(join, None).await.context("join as subscriber")?;
        let offer = offer.context("Janus sent no offer")?;
        // The video sections' mids, to choose their simulcast layer.
        let mut video_mids = Vec::new();
        let mut in_video = false;
        for line in offer.sdp.lines() {
            if let Some(kind) = line.strip_prefix("m=") {
                in_video = kind.starts_with("video");
            } else if let Some(mid) = line.strip_prefix("a=mid:").filter(|_| in_video) {
                video_mids.push(mid.to_owned());
            }
        }
        let answer = handle.set_remote_description(offer).await?.context("no answer to Janus's offer")?;
        janus.message(json!({ "request": "start" }), Some(&answer)).await.context("start")?;
        if args.layers() > 1 {
            // The top layer, as `peerlink serve` gives a receiver with room for it.
            let top = args.layers() - 1;
            let streams: Vec<Value> =
                video_mids.iter().map(|mid| json!({ "mid": mid, "substream": top })).collect();
            janus
                .message(json!({ "request": "configure", "streams": streams }), None)
                .await
                .context("configure substream")?;
        }
        janus.candidates_done().await?;
        Ok((link, janus.keep_alive()))
    }
}

#[cfg(test)]
mod tests {
    use super::Numbers;

    #[test]
    fn numbers_count_each_once_in_order_and_in_ranges() {
        let mut n = Numbers::default();
        for x in [5u64, 3, 64, 5, 200, 1 << 30, 1 << 30] {
            n.insert(x);
        }
        assert_eq!(n.len(), 5, "duplicates counted once");
        assert!(!n.insert(64) && n.insert(65));
        assert_eq!(n.iter().collect::<Vec<_>>(), [3, 5, 64, 65, 200, 1 << 30]);
        assert_eq!(n.count_in(4, 64), 2);
        assert_eq!(n.count_in(201, 1 << 31), 1, "the far one too");
        assert_eq!(Numbers::default().iter().min(), None);
    }
}
