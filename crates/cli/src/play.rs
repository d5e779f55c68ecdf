//! `peerlink play FILE...`: sends the files' audio and video to every peer in the room, paced
//! by the files' timestamps (a frame goes out when its time has come, never a file in a
//! burst). Codecs are never transcoded: each connection negotiates exactly the file's codec
//! (for H.264, the profile of the stream's first SPS), so a peer that cannot take it gets no
//! track and a warning.
//!
//! The clock starts when the first peer is connected; a peer that connects later joins the
//! stream where it is, from the next video key frame (frames before it would not decode). A
//! key frame asked for by a peer (PLI/FIR) is answered, once per key frame, by sending the
//! last key frame and the frames since again when they are still kept for repair (a peer
//! that lost the start of the stream could not NACK what it never knew of), else by the
//! file's next key frame: a file has no encoder to make one. At the end of the files `play` exits 0, or starts over with
//! `--loop` (timestamps continue, so receivers see one stream).

use crate::peer::MeetArgs;
use crate::room::RoomEvent;
use crate::status;
use anyhow::{bail, Context};
use peerlink_io::PeerHandle;
use peerlink_mediafile::{Format, MediaReader, Sample};
use peerlink_rtc::{
    supported_codecs, Codec, CodecParams, ConnectionState, Direction, MediaKind, RtcEvent, TrackConfig,
    TransceiverId,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// Media files: .ivf (VP8, VP9, AV1), .h264/.264 (Annex B), .ogg/.opus (Opus), .webm/.mkv
    /// (VP8/VP9/AV1 and Opus). At most one video and one audio track in all. `-` reads one
    /// stream from standard input (then --format says what it is)
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Format of standard input (`-`): ivf, h264 or ogg
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Start over at the end of the files (not with standard input)
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Frame rate of raw H.264 (Annex B has no timestamps)
    #[arg(long, value_name = "FPS", default_value_t = 30.0)]
    pub fps: f64,
    #[command(flatten)]
    pub meet: MeetArgs,
}

/// One track we send: where it comes from and its codec.
#[derive(Debug, Clone)]
struct Track {
    kind: MediaKind,
    codec: Codec,
    clock_rate: u32,
    /// Index of the transceiver on every connection (they are added in this order first).
    transceiver: TransceiverId,
}

struct Other {
    name: String,
    handle: PeerHandle,
    connected: bool,
    /// Video waits for a key frame on a connection that just came up.
    waiting_keyframe: bool,
    frames: u64,
    warned: bool,
    /// The RTP timestamp of the last video key frame sent to this peer (play sends one
    /// video track at most), and whether it was sent again (once at most) because the peer
    /// asked for a key frame.
    last_key: Option<(TransceiverId, u32, bool)>,
}

/// At most this many bytes go again when a peer asks for a key frame (the last key frame and
/// the frames since): about 350 ms at the pacer's floor rate, a burst the frames written
/// after it wait behind. More than that, and the file's next key frame will do.
const RESEND_MAX_BYTES: usize = 64 * 1024;

/// The files, opened; samples of all of them merged in time order.
struct Sources {
    readers: Vec<(String, MediaReader)>,
    /// The next sample of each reader (`None` at its end).
    next: Vec<Option<Sample>>,
    /// (reader, track in reader) -> our track index.
    map: HashMap<(usize, usize), usize>,
}

/// A track found in the files: kind, codec, clock rate, H.264 profile-level-id.
type Found = (MediaKind, Codec, u32, Option<String>);

fn open_all(args: &PlayArgs) -> anyhow::Result<(Sources, Vec<Found>)> {
    let mut readers = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let mut reader = if name == "-" {
            let Some(format) = args.format.as_deref() else {
                bail!("standard input (-) needs --format ivf, h264 or ogg");
            };
            let format = Format::parse(format)
                .with_context(|| format!("--format {format}: not one of ivf, h264, ogg"))?;
            MediaReader::from_reader(Box::new(std::io::stdin()), format, "standard input")
                .context("standard input")?
        } else {
            MediaReader::open(path).with_context(|| name.clone())?
        };
        if reader.format() == Format::H264 {
            reader.set_frame_rate(args.fps).with_context(|| format!("{name}: --fps"))?;
        }
        readers.push((name, reader));
    }
    let mut tracks: Vec<Found> = Vec::new();
    let mut map = HashMap::new();
    let mut next = Vec::new();
    for (r, (name, reader)) in readers.iter_mut().enumerate() {
        for (t, info) in reader.tracks().to_vec().iter().enumerate() {
            let kind = if info.codec == Codec::Opus { MediaKind::Audio } else { MediaKind::Video };
            if tracks.iter().any(|(k, ..)| *k == kind) {
                status!(
                    "peerlink: {name}: a second {} track is skipped (one of each is sent)",
                    kind.as_str()
                );
                continue;
            }
            map.insert((r, t), tracks.len());
            tracks.push((kind, info.codec, info.clock_rate, None));
        }
        let first = reader.next_sample().with_context(|| name.clone())?;
        // H.264: the profile of the stream's first SPS decides what is negotiated.
        if let Some(s) = &first {
            if let Some(&i) = map.get(&(r, s.track)) {
                if tracks[i].1 == Codec::H264 {
                    tracks[i].3 = h264_profile_level_id(&s.data);
                }
            }
        }
        next.push(first);
    }
    if tracks.is_empty() {
        bail!(
            "no audio or video track in {}",
            args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok((Sources { readers, next, map }, tracks))
}

/// `profile-level-id` from the first SPS of an Annex B access unit: its profile_idc,
/// constraint flags and level_idc, as RFC 6184 §8.1 spells them.
fn h264_profile_level_id(au: &[u8]) -> Option<String> {
    peerlink_media::h264::AnnexB::new(au)
        .find(|nal| nal.first().is_some_and(|b| b & 0x1f == 7) && nal.len() >= 4)
        .map(|sps| format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

/// The formats a track offers or accepts: the file's codec only.
fn codecs_for(codec: Codec, profile_level_id: Option<&str>) -> Vec<CodecParams> {
    let kind = if codec == Codec::Opus { "audio" } else { "video" };
    let mut list: Vec<CodecParams> =
        supported_codecs(kind).into_iter().filter(|c| c.codec == codec).collect();
    if codec == Codec::H264 {
        list.retain(|c| c.fmtp_param("packetization-mode") == Some("1"));
        if let (Some(first), Some(id)) = (list.first().cloned(), profile_level_id) {
            list = vec![CodecParams {
                fmtp: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={id}"),
                ..first
            }];
        }
    }
    list
}

impl Sources {
    /// The earliest pending sample and our track for it; `Ok(None)` when all are done.
    fn pop(&mut self) -> anyhow::Result<Option<(usize, Sample)>> {
        loop {
            let Some(r) = (0..self.next.len())
                .filter(|&r| self.next[r].is_some())
                .min_by_key(|&r| self.next[r].as_ref().map(|s| s.time))
            else {
                return Ok(None);
            };
            let sample = self.next[r].take().expect("filtered");
            let (name, reader) = &mut self.readers[r];
            self.next[r] = reader.next_sample().with_context(|| name.clone())?;
            if let Some(&track) = self.map.get(&(r, sample.track)) {
                return Ok(Some((track, sample)));
            }
        }
    }
}

/// A sample on its way from the reader thread: our track, its time from the start of the
/// first pass (passes of --loop follow each other), the sample.
type Timed = (usize, Duration, Sample);

/// Reads the files on a thread of their own and hands their samples over in time order
/// (a bounded queue: reading keeps a few frames ahead); with --loop, opens them again at
/// the end, the next pass starting a frame interval after the last sample.
fn spawn_reader(mut sources: Sources, args: PlayArgs) -> tokio::sync::mpsc::Receiver<anyhow::Result<Timed>> {
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    std::thread::spawn(move || {
        let mut offset = Duration::ZERO;
        let mut last = Duration::ZERO;
        let mut in_pass = 0u64;
        loop {
            let next = match sources.pop() {
                Ok(Some((track, sample))) => {
                    last = sample.time;
                    in_pass += 1;
                    Ok((track, offset + sample.time, sample))
                }
                // (A pass without a sample would start over forever.)
                Ok(None) if args.repeat && in_pass > 0 => {
                    offset += last + Duration::from_millis(33);
                    last = Duration::ZERO;
                    in_pass = 0;
                    match open_all(&args) {
                        Ok((fresh, _)) => {
                            sources = fresh;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(None) => return,
                Err(e) => Err(e),
            };
            let failed = next.is_err();
            if tx.blocking_send(next).is_err() || failed {
                return;
            }
        }
    });
    rx
}

pub async fn run(args: PlayArgs) -> anyhow::Result<()> {
    if args.repeat && args.files.iter().any(|p| p.as_os_str() == "-") {
        bail!("--loop cannot start standard input over");
    }
    let (sources, found) = open_all(&args)?;
    let tracks: Vec<Track> = found
        .iter()
        .enumerate()
        .map(|(i, (kind, codec, clock_rate, _))| Track {
            kind: *kind,
            codec: *codec,
            clock_rate: *clock_rate,
            transceiver: TransceiverId(i),
        })
        .collect();
    for ((kind, codec, _, profile), _) in found.iter().zip(&tracks) {
        let p = profile.as_deref().map(|p| format!(" (profile-level-id {p})")).unwrap_or_default();
        status!("peerlink: sending {} {codec:?}{p}", kind.as_str());
    }
    let mut options = args.meet.room_options();
    options.tracks = found
        .iter()
        .map(|(kind, codec, _, profile)| {
            let config =
                TrackConfig { codecs: codecs_for(*codec, profile.as_deref()), ..TrackConfig::new(*kind) };
            (*kind, Direction::SendOnly, config)
        })
        .collect();
    let mut room = crate::room::join(&args.meet, options).await?;
    let mut others: HashMap<String, Other> = HashMap::new();
    let shutdown = crate::media::interrupted();
    tokio::pin!(shutdown);
    // The clock: the instant of time 0 of the current pass, and the RTP offset of the pass.
    let mut start: Option<Instant> = None;
    // Reading blocks (a pipe from a live source may stall): on a thread of its own.
    let mut samples = spawn_reader(sources, args.clone());
    let mut pending: Option<(usize, Duration, Sample)> = None;
    let mut reading = true;
    let mut sent = 0u64;
    loop {
        if !reading && pending.is_none() {
            break;
        }
        let due = match (&start, &pending) {
            (Some(s), Some((_, time, _))) => Some(*s + *time),
            _ => None,
        };
        tokio::select! {
            next = samples.recv(), if start.is_some() && pending.is_none() && reading => match next {
                Some(Ok(s)) => pending = Some(s),
                Some(Err(e)) => return Err(e),
                None => reading = false,
            },
            () = &mut shutdown => {
                status!("peerlink: interrupted; leaving");
                break;
            }
            () = crate::peer::sleep_until(due), if due.is_some() => {
                let (track, time, sample) = pending.take().expect("due");
                let t = &tracks[track];
                // Rounded to the nearest tick in integers: a float product truncated now and
                // then gives a packet 959 ticks after the last instead of 960, which a
                // receiver's jitter buffer takes for a gap.
                let nanos = time.as_nanos();
                let timestamp = ((nanos * u128::from(t.clock_rate) + 500_000_000) / 1_000_000_000) as u64 as u32;
                for o in others.values_mut().filter(|o| o.connected) {
                    if t.kind == MediaKind::Video && o.waiting_keyframe {
                        if !sample.keyframe {
                            continue;
                        }
                        o.waiting_keyframe = false;
                    }
                    match o.handle.write_frame(t.transceiver, Some(t.codec), timestamp, sample.data.clone()).await {
                        Ok(()) => {
                            o.frames += 1;
                            if t.kind == MediaKind::Video && sample.keyframe {
                                o.last_key = Some((t.transceiver, timestamp, false));
                            }
                        }
                        Err(e) => {
                            if !o.warned {
                                o.warned = true;
                                status!("peerlink: {} does not take our {:?} {}: {e}", o.name, t.codec, t.kind.as_str());
                            }
                        }
                    }
                }
                sent += 1;
            }
            event = room.next() => {
                let Some(event) = event else { break };
                match event {
                    RoomEvent::Connecting { peer, handle, .. } => {
                        others.insert(peer.id, Other { name: peer.name, handle, connected: false, waiting_keyframe: true, frames: 0, warned: false, last_key: None });
                    }
                    RoomEvent::Gone { peer, reason } => {
                        if let Some(o) = others.remove(&peer) {
                            status!("peerlink: {} ({peer}): {reason}; it got {} frames", o.name, o.frames);
                        }
                    }
                    RoomEvent::Rtc { peer, event } => {
                        let Some(o) = others.get_mut(&peer) else { continue };
                        match event {
                            RtcEvent::SelectedPair { local_kind, remote_kind, .. } => {
                                status!("selected pair: {local_kind} -> {remote_kind}");
                            }
                            RtcEvent::ConnectionState(ConnectionState::Connected) => {
                                status!("peerlink: connected to {}; sending", o.name);
                                o.connected = true;
                                o.waiting_keyframe = tracks.iter().any(|t| t.kind == MediaKind::Video);
                                // The files' time 0 is when the first peer is up.
                                start.get_or_insert_with(Instant::now);
                            }
                            RtcEvent::KeyframeRequest { id, .. } => {
                                // A file has no encoder to make one. A peer that lost the
                                // start of the last key frame (before the first packet it
                                // got, so it could not NACK it) gets that key frame and the
                                // frames since again, once; else the file's next one will do.
                                let mut resent = 0;
                                if let Some((track, ts, done @ false)) = o.last_key.as_mut() {
                                    if *track == id {
                                        resent = o.handle.resend_since(id, *ts, RESEND_MAX_BYTES).await;
                                        *done = resent > 0;
                                    }
                                }
                                if resent > 0 {
                                    tracing::debug!(peer = %o.name, packets = resent, "key frame asked for: the last one sent again");
                                } else {
                                    tracing::debug!(peer = %o.name, "key frame asked for: the file's next one will do");
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // What was sent last leaves (and its repairs) before the connections close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    status!("peerlink: sent {sent} frames");
    for o in others.values().filter(|o| o.connected) {
        for t in &tracks {
            crate::media::print_stats(&o.name, &o.handle, t.transceiver, t.kind.as_str()).await;
        }
    }
    room.close().await;
    Ok(())
}
