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
//!
//! Simulcast: each `--layer` file is the same video encoded smaller, sent as a layer of its
//! own (RFC 8853, by rid) on the one video track, the video among the files on top. Their
//! frames go out by their timestamps, so frames of one instant carry one RTP timestamp on
//! every layer; an SFU forwards each receiver the layer it picks. A peer that takes no
//! simulcast (a browser in a mesh) gets the top layer alone.

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
    /// A lower simulcast layer: the video among FILE encoded smaller (one video track, same
    /// codec and frame rate, frames at the same times). Repeat for up to 3, lowest first; the
    /// video among FILE is the top layer. Each layer goes out by rid on the one video track,
    /// and an SFU forwards each receiver the one it picks
    #[arg(long = "layer", value_name = "FILE")]
    pub layers: Vec<PathBuf>,
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

/// The rids of our video's layers, lowest first: `l0`, `l1`, ... (none for one layer).
fn layer_rids(layers: usize) -> Vec<String> {
    if layers <= 1 {
        return Vec::new();
    }
    (0..layers).map(|k| format!("l{k}")).collect()
}

struct Other {
    name: String,
    handle: PeerHandle,
    connected: bool,
    /// Video waits for a key frame on a connection that just came up, on each of our layers.
    waiting_keyframe: Vec<bool>,
    /// Our video layer k goes out as the connection's layer `take[k]` (none: not sent). A
    /// peer that takes no simulcast gets the top layer as its one stream.
    take: Vec<Option<usize>>,
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
    /// (reader, track in reader) -> our track index and video layer (0 for audio).
    map: HashMap<(usize, usize), (usize, usize)>,
}

/// A track found in the files: kind, codec, clock rate, H.264 profile-level-id.
type Found = (MediaKind, Codec, u32, Option<String>);

/// What the checks of `--layer` know of a file with video.
#[derive(Debug, Clone)]
struct VideoFile {
    name: String,
    /// The codec of its (first) video track; `None`: no video.
    codec: Option<Codec>,
    videos: usize,
    audio: bool,
    /// The time between its first two video frames.
    interval: Option<Duration>,
    size: Option<(u32, u32)>,
}

impl VideoFile {
    /// Reads what the checks need (the tracks, the first two video frames) from `path`.
    fn probe(path: &std::path::Path, fps: f64) -> anyhow::Result<VideoFile> {
        let name = path.display().to_string();
        // (The error names the file and says why, once.)
        let mut reader = MediaReader::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        if reader.format() == Format::H264 {
            reader.set_frame_rate(fps).with_context(|| format!("{name}: --fps"))?;
        }
        let tracks = reader.tracks().to_vec();
        let video = tracks.iter().position(|t| t.codec != Codec::Opus);
        let mut times = Vec::new();
        while let (Some(v), true) = (video, times.len() < 2) {
            match reader.next_sample().with_context(|| name.clone())? {
                Some(s) if s.track == v => times.push(s.time),
                Some(_) => {}
                None => break,
            }
        }
        Ok(VideoFile {
            codec: video.map(|v| tracks[v].codec),
            videos: tracks.iter().filter(|t| t.codec != Codec::Opus).count(),
            audio: tracks.iter().any(|t| t.codec == Codec::Opus),
            interval: (times.len() == 2).then(|| times[1].saturating_sub(times[0])),
            size: video.and_then(|v| Some((tracks[v].width?, tracks[v].height?))),
            name,
        })
    }
}

/// Checks the `--layer` files against the top layer (the video among the files): one video
/// track alone each, the top's codec and frame rate, lowest first, at most
/// [`peerlink_rtc::MAX_SEND_LAYERS`] layers in all.
fn check_layers(top: &VideoFile, layers: &[VideoFile]) -> anyhow::Result<()> {
    let max = peerlink_rtc::MAX_SEND_LAYERS;
    if layers.len() + 1 > max {
        bail!(
            "{} --layer files and the top layer make {} layers, at most {max}",
            layers.len(),
            layers.len() + 1
        );
    }
    let Some(codec) = top.codec else {
        bail!("--layer needs a video among the files (the top layer)");
    };
    for l in layers {
        let name = &l.name;
        match l.codec {
            None => bail!("--layer {name}: no video in it"),
            Some(c) if c != codec => {
                bail!("--layer {name}: {c:?}, but the top layer ({}) is {codec:?}", top.name)
            }
            Some(_) => {}
        }
        if l.audio || l.videos > 1 {
            bail!("--layer {name}: a layer is one video track alone, this file has more (audio goes among the files)");
        }
        if let (Some(a), Some(b)) = (l.interval, top.interval) {
            // A millisecond: the IVF and WebM time bases round.
            if a.abs_diff(b) > Duration::from_millis(1) {
                bail!(
                    "--layer {name}: a frame every {:.1} ms, the top layer ({}) one every {:.1} ms: layers need \
                     the same frame rate",
                    a.as_secs_f64() * 1000.0,
                    top.name,
                    b.as_secs_f64() * 1000.0
                );
            }
        }
    }
    // Lowest first: each no larger than the one above it.
    let all: Vec<&VideoFile> = layers.iter().chain(std::iter::once(top)).collect();
    for pair in all.windows(2) {
        if let (Some((w0, h0)), Some((w1, h1))) = (pair[0].size, pair[1].size) {
            if w0 > w1 || h0 > h1 {
                bail!(
                    "--layer: the layers go lowest first, but {} ({w0}x{h0}) is larger than {} ({w1}x{h1}) above it",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
    }
    Ok(())
}

/// Opens the files and the `--layer` files (checked against the video among the files).
fn open_all(args: &PlayArgs) -> anyhow::Result<(Sources, Vec<Found>)> {
    if !args.layers.is_empty() {
        if args.files.iter().chain(&args.layers).any(|p| p.as_os_str() == "-") {
            bail!("--layer cannot go with standard input: the layers are files read in step");
        }
        let probed =
            args.files.iter().map(|p| VideoFile::probe(p, args.fps)).collect::<anyhow::Result<Vec<_>>>()?;
        let Some(top) = probed.into_iter().find(|f| f.codec.is_some()) else {
            bail!("--layer needs a video among the files (the top layer)");
        };
        let layers = args
            .layers
            .iter()
            .map(|p| VideoFile::probe(p, args.fps).context("--layer"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        check_layers(&top, &layers)?;
    }
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
            // The top layer comes after the `--layer` files.
            let layer = if kind == MediaKind::Video { args.layers.len() } else { 0 };
            map.insert((r, t), (tracks.len(), layer));
            tracks.push((kind, info.codec, info.clock_rate, None));
        }
        let first = reader.next_sample().with_context(|| name.clone())?;
        // H.264: the profile of the stream's first SPS decides what is negotiated.
        if let Some(s) = &first {
            if let Some(&(i, _)) = map.get(&(r, s.track)) {
                if tracks[i].1 == Codec::H264 {
                    tracks[i].3 = h264_profile_level_id(&s.data);
                }
            }
        }
        next.push(first);
    }
    // The layers below the top, checked above: one video track each.
    if let Some(video) = tracks.iter().position(|(k, ..)| *k == MediaKind::Video) {
        for (k, path) in args.layers.iter().enumerate() {
            let name = path.display().to_string();
            let mut reader = MediaReader::open(path).with_context(|| name.clone())?;
            if reader.format() == Format::H264 {
                reader.set_frame_rate(args.fps).with_context(|| format!("{name}: --fps"))?;
            }
            let r = readers.len();
            map.insert((r, 0), (video, k));
            next.push(reader.next_sample().with_context(|| name.clone())?);
            readers.push((name, reader));
        }
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

/// Which of the connection's layers each of our `layers` video layers goes out as, given the
/// layers its answer took (`sent`, [`peerlink_rtc::TransceiverInfo::sent_layers`]): each its
/// own when it took more than one; else the top alone, as its one stream (a peer without
/// simulcast; better the best picture than the smallest).
fn take_layers(layers: usize, sent: &[usize]) -> Vec<Option<usize>> {
    if sent.len() > 1 {
        (0..layers).map(|k| sent.contains(&k).then_some(k)).collect()
    } else {
        let mut take = vec![None; layers];
        take[layers - 1] = sent.first().copied();
        take
    }
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
    /// The earliest pending sample, our track and layer for it; `Ok(None)` when all are done.
    fn pop(&mut self) -> anyhow::Result<Option<(usize, usize, Sample)>> {
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
            if let Some(&(track, layer)) = self.map.get(&(r, sample.track)) {
                return Ok(Some((track, layer, sample)));
            }
        }
    }
}

/// A sample on its way from the reader thread: our track, its video layer, its time from the
/// start of the first pass (passes of --loop follow each other), the sample.
type Timed = (usize, usize, Duration, Sample);

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
                Ok(Some((track, layer, sample))) => {
                    last = sample.time;
                    in_pass += 1;
                    Ok((track, layer, offset + sample.time, sample))
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
    let layers = args.layers.len() + 1;
    if layers > 1 {
        status!(
            "peerlink: sending the video in {layers} simulcast layers, rids {}",
            layer_rids(layers).join(", ")
        );
    }
    let mut options = args.meet.room_options();
    options.tracks = found
        .iter()
        .map(|(kind, codec, _, profile)| {
            let send_rids = if *kind == MediaKind::Video { layer_rids(layers) } else { Vec::new() };
            let config = TrackConfig {
                codecs: codecs_for(*codec, profile.as_deref()),
                send_rids,
                ..TrackConfig::new(*kind)
            };
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
    let mut pending: Option<Timed> = None;
    let mut reading = true;
    let mut sent = 0u64;
    loop {
        if !reading && pending.is_none() {
            break;
        }
        let due = match (&start, &pending) {
            (Some(s), Some((_, _, time, _))) => Some(*s + *time),
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
                let (track, layer, time, sample) = pending.take().expect("due");
                let t = &tracks[track];
                // Rounded to the nearest tick in integers: a float product truncated now and
                // then gives a packet 959 ticks after the last instead of 960, which a
                // receiver's jitter buffer takes for a gap.
                let nanos = time.as_nanos();
                let timestamp = ((nanos * u128::from(t.clock_rate) + 500_000_000) / 1_000_000_000) as u64 as u32;
                for o in others.values_mut().filter(|o| o.connected) {
                    // The connection's layer for ours (audio: 0).
                    let mut out = 0;
                    if t.kind == MediaKind::Video {
                        let Some(Some(k)) = o.take.get(layer) else { continue };
                        out = *k;
                        if o.waiting_keyframe[layer] {
                            if !sample.keyframe {
                                continue;
                            }
                            o.waiting_keyframe[layer] = false;
                        }
                    }
                    let written = if layers > 1 && t.kind == MediaKind::Video {
                        o.handle.write_frame_layer(t.transceiver, out, timestamp, sample.data.clone()).await
                    } else {
                        o.handle.write_frame(t.transceiver, Some(t.codec), timestamp, sample.data.clone()).await
                    };
                    match written {
                        Ok(()) => {
                            // (Frames, not layer frames: the top layer's count for video.)
                            if t.kind != MediaKind::Video || layer + 1 == layers {
                                o.frames += 1;
                            }
                            // (Sent again on request: the connection's layer 0 alone.)
                            if t.kind == MediaKind::Video && sample.keyframe && out == 0 {
                                o.last_key = Some((t.transceiver, timestamp, false));
                            }
                        }
                        // A layer the peer did not take (checked at connection).
                        Err(peerlink_rtc::RtcError::LayerNotSent(_)) => {}
                        Err(e) => {
                            if !o.warned {
                                o.warned = true;
                                status!("peerlink: {} does not take our {:?} {}: {e}", o.name, t.codec, t.kind.as_str());
                            }
                        }
                    }
                }
                if t.kind != MediaKind::Video || layer + 1 == layers {
                    sent += 1;
                }
            }
            event = room.next() => {
                let Some(event) = event else { break };
                match event {
                    RoomEvent::Connecting { peer, handle, .. } => {
                        others.insert(peer.id, Other { name: peer.name, handle, connected: false, waiting_keyframe: vec![true; layers], take: Vec::new(), frames: 0, warned: false, last_key: None });
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
                                o.waiting_keyframe = vec![true; layers];
                                o.take = match tracks.iter().find(|t| t.kind == MediaKind::Video) {
                                    Some(video) if layers > 1 => {
                                        let info = o.handle.transceivers().await;
                                        let sent = info
                                            .iter()
                                            .find(|i| i.id == video.transceiver)
                                            .map(|i| i.sent_layers.clone())
                                            .unwrap_or_default();
                                        status!("peerlink: {} takes video layers {sent:?} of {layers}", o.name);
                                        take_layers(layers, &sent)
                                    }
                                    _ => vec![Some(0)],
                                };
                                // The files' time 0 is when the first peer is up.
                                start.get_or_insert_with(Instant::now);
                            }
                            RtcEvent::KeyframeRequest { id, layer } => {
                                // A file has no encoder to make one. A peer that lost the
                                // start of the last key frame (before the first packet it
                                // got, so it could not NACK it) gets that key frame and the
                                // frames since again, once; else the file's next one will do.
                                let mut resent = 0;
                                if let Some((track, ts, done @ false)) = o.last_key.as_mut() {
                                    if *track == id && layer == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        play: PlayArgs,
    }

    fn parse(args: &[&str]) -> Result<PlayArgs, clap::Error> {
        let mut all = vec!["play", "--server", "ws://127.0.0.1:1/ws", "--room", "r"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.play)
    }

    fn video(name: &str, codec: Codec, fps: u64, size: (u32, u32)) -> VideoFile {
        VideoFile {
            name: name.to_owned(),
            codec: Some(codec),
            videos: 1,
            audio: false,
            interval: Some(Duration::from_micros(1_000_000 / fps)),
            size: Some(size),
        }
    }

    fn error(top: &VideoFile, layers: &[VideoFile]) -> String {
        format!("{:#}", check_layers(top, layers).expect_err("refused"))
    }

    #[test]
    fn each_layer_option_takes_one_file_and_the_rest_are_files() {
        let a = parse(&["--layer", "low.ivf", "--layer", "mid.ivf", "high.ivf", "audio.ogg"]).unwrap();
        assert_eq!(a.layers, [PathBuf::from("low.ivf"), PathBuf::from("mid.ivf")]);
        assert_eq!(a.files, [PathBuf::from("high.ivf"), PathBuf::from("audio.ogg")]);
        assert!(parse(&["high.ivf"]).unwrap().layers.is_empty());
        assert!(parse(&["high.ivf", "--layer"]).is_err(), "--layer without a file");
    }

    #[test]
    fn layers_of_the_top_codec_rate_and_smaller_sizes_pass() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let layers =
            [video("low.ivf", Codec::Vp8, 15, (160, 90)), video("mid.ivf", Codec::Vp8, 15, (320, 180))];
        check_layers(&top, &layers).unwrap();
        check_layers(&top, &layers[..1]).unwrap();
    }

    #[test]
    fn refuses_more_layers_than_a_transceiver_sends() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let layers: Vec<VideoFile> = (0..peerlink_rtc::MAX_SEND_LAYERS)
            .map(|k| video(&format!("l{k}.ivf"), Codec::Vp8, 15, (160, 90)))
            .collect();
        assert!(error(&top, &layers).contains("at most 4"), "{}", error(&top, &layers));
        check_layers(&top, &layers[1..]).unwrap();
    }

    #[test]
    fn refuses_a_layer_of_another_codec() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let e = error(&top, &[video("low.ivf", Codec::Vp9, 15, (320, 180))]);
        assert!(e.contains("low.ivf") && e.contains("Vp9") && e.contains("Vp8"), "{e}");
    }

    #[test]
    fn refuses_a_layer_of_another_frame_rate() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let e = error(&top, &[video("low.ivf", Codec::Vp8, 30, (320, 180))]);
        assert!(e.contains("low.ivf") && e.contains("same frame rate"), "{e}");
    }

    #[test]
    fn refuses_a_layer_with_audio_or_without_video() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let with_audio = VideoFile { audio: true, ..video("low.webm", Codec::Vp8, 15, (320, 180)) };
        let e = error(&top, &[with_audio]);
        assert!(e.contains("low.webm") && e.contains("one video track alone"), "{e}");
        let audio_only =
            VideoFile { codec: None, videos: 0, audio: true, interval: None, size: None, ..top.clone() };
        let e = error(&top, &[VideoFile { name: "a.ogg".into(), ..audio_only.clone() }]);
        assert!(e.contains("a.ogg") && e.contains("no video"), "{e}");
        let e = error(&audio_only, &[video("low.ivf", Codec::Vp8, 15, (320, 180))]);
        assert!(e.contains("needs a video"), "{e}");
    }

    #[test]
    fn refuses_layers_out_of_order() {
        let top = video("high.ivf", Codec::Vp8, 15, (640, 360));
        let layers =
            [video("mid.ivf", Codec::Vp8, 15, (320, 180)), video("low.ivf", Codec::Vp8, 15, (160, 90))];
        let e = error(&top, &layers);
        assert!(e.contains("lowest first") && e.contains("mid.ivf (320x180)"), "{e}");
        let e = error(&video("small.ivf", Codec::Vp8, 15, (160, 90)), &layers[..1]);
        assert!(e.contains("small.ivf"), "{e}");
    }

    #[test]
    fn an_unreadable_layer_file_is_named() {
        let missing = std::env::temp_dir().join(format!("peerlink-no-such-layer-{}.ivf", std::process::id()));
        let e = format!("{:#}", VideoFile::probe(&missing, 30.0).expect_err("missing"));
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[test]
    fn a_peer_without_simulcast_gets_the_top_layer() {
        assert_eq!(layer_rids(1), Vec::<String>::new());
        assert_eq!(layer_rids(3), ["l0", "l1", "l2"]);
        assert_eq!(take_layers(2, &[0, 1]), [Some(0), Some(1)]);
        assert_eq!(take_layers(3, &[0, 2]), [Some(0), None, Some(2)]);
        assert_eq!(take_layers(2, &[0]), [None, Some(0)]);
        assert_eq!(take_layers(2, &[]), [None, None]);
        assert_eq!(take_layers(1, &[0]), [Some(0)]);
    }
}
