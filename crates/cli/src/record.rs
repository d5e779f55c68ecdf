//! `peerlink record --out DIR`: records every other participant's audio and video into one
//! file per participant: WebM (VP8, VP9, AV1 with Opus), Matroska when the video is H.264.
//!
//! A recording starts when every track the participant announced has delivered a frame (or
//! 2 s after its first frame, with the tracks seen by then); frames before that are held, so
//! nothing from the start is lost. Video is written from its first key frame. Times in the
//! file come from the RTP timestamps; the tracks are put on one time line by the sender's
//! RTCP sender reports (its wall clock) when each track has had one by the start, else by
//! when each track's first frame arrived. After a gap, video waits for the next key frame
//! (asked for), so the file never holds a frame that refers to a lost one.
//!
//! The files are finalised (sizes, duration, cues: seekable) when the participant leaves,
//! after `--duration`, on SIGINT/SIGTERM, or when the room empties; a file is never
//! overwritten (a name in use gets `-1`, `-2`, ...).
//!
//! In a room through the server (SFU mode) the one connection to the server carries
//! everyone's tracks; each track's stream id names its publisher, and each publisher gets
//! its own file as in a mesh. A switch of mode starts new files (the tracks come over new
//! connections, with new clocks).

use crate::peer::MeetArgs;
use crate::room::RoomEvent;
use crate::status;
use anyhow::Context;
use peerlink::session::SFU_PEER;
use peerlink_mediafile::{Recorder, TrackInfo};
use peerlink_rtc::{Codec, Direction, MediaKind, RtcEvent, TrackConfig, TransceiverId};
use peerlink_rtp::Unwrapper32;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Folder for the recordings (made if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Stop after this many seconds (default: until interrupted or the room empties)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    #[command(flatten)]
    pub meet: MeetArgs,
}

/// How long frames are held, at most, before a recording starts with the tracks seen.
const START_WAIT: Duration = Duration::from_secs(2);

/// One track of a participant, as the recording sees it.
struct Track {
    codec: Codec,
    kind: MediaKind,
    /// Index in the file.
    index: Option<usize>,
    unwrap: Unwrapper32,
    /// First frame: when it came and its unwrapped RTP timestamp.
    first: Option<(Instant, u64)>,
    /// Where time 0 of the file is on this track's RTP clock (unwrapped, may be negative).
    origin: Option<i64>,
    waiting_keyframe: bool,
    last: Duration,
}

struct Held {
    id: TransceiverId,
    keyframe: bool,
    gap: bool,
    timestamp: u32,
    data: Vec<u8>,
}

struct Participant {
    name: String,
    handle: peerlink_io::PeerHandle,
    tracks: HashMap<TransceiverId, Track>,
    /// Announced tracks (by `Track` events).
    announced: Vec<TransceiverId>,
    held: Vec<Held>,
    /// The last sender report of each track: (NTP time, RTP timestamp).
    reports: HashMap<TransceiverId, (u64, u32)>,
    first_frame: Option<Instant>,
    recorder: Option<(PathBuf, Recorder)>,
    frames: u64,
}

fn clock(codec: Codec) -> u32 {
    if codec == Codec::Opus {
        48_000
    } else {
        90_000
    }
}

/// A name for the participant's file that is not in use.
fn file_name(dir: &Path, room: &str, name: &str, video: Option<Codec>) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(64)
        .collect();
    let ext = if video == Some(Codec::H264) { "mkv" } else { "webm" };
    let base = format!("{room}-{safe}");
    (0..)
        .map(
            |n| {
                if n == 0 {
                    dir.join(format!("{base}.{ext}"))
                } else {
                    dir.join(format!("{base}-{n}.{ext}"))
                }
            },
        )
        .find(|p| !p.exists())
        .expect("a free name")
}

impl Participant {
    fn new(name: String, handle: peerlink_io::PeerHandle) -> Participant {
        Participant {
            name,
            handle,
            tracks: HashMap::new(),
            announced: Vec::new(),
            held: Vec::new(),
            reports: HashMap::new(),
            first_frame: None,
            recorder: None,
            frames: 0,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        let all = !self.announced.is_empty() && self.announced.iter().all(|id| self.tracks.contains_key(id));
        all || self.first_frame.is_some_and(|f| now >= f + START_WAIT)
    }

    /// Opens the file with the tracks seen, fixes each track's origin, and writes what was held.
    fn start(&mut self, dir: &Path, room: &str) -> anyhow::Result<()> {
        let mut ids: Vec<TransceiverId> = self.tracks.keys().copied().collect();
        ids.sort();
        // Video first, then audio.
        ids.sort_by_key(|id| self.tracks[id].kind == MediaKind::Audio);
        let mut infos = Vec::new();
        for id in &ids {
            let t = self.tracks.get_mut(id).expect("listed");
            t.index = Some(infos.len());
            infos.push(match t.kind {
                MediaKind::Audio => TrackInfo::opus(2),
                MediaKind::Video => TrackInfo::video(t.codec, None, None),
            });
        }
        let video =
            ids.iter().map(|id| &self.tracks[id]).find(|t| t.kind == MediaKind::Video).map(|t| t.codec);
        // Time 0: the earliest first frame, on the sender's wall clock when every track has a
        // sender report, else on ours.
        let mut by_sr = ids.iter().all(|id| self.reports.contains_key(id));
        let reports = &self.reports;
        let wall = |id: &TransceiverId, t: &Track| -> Option<f64> {
            let (_, rtp) = t.first?;
            let (ntp, sr_rtp) = *reports.get(id)?;
            let sr_secs = (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0;
            // The RTP distance from the report, taken within ±2^31 ticks.
            let delta = i64::from((rtp as u32).wrapping_sub(sr_rtp) as i32);
            Some(sr_secs + delta as f64 / f64::from(clock(t.codec)))
        };
        let firsts = |by_sr: bool| -> Vec<(TransceiverId, f64)> {
            ids.iter()
                .filter_map(|id| {
                    let t = &self.tracks[id];
                    let secs = if by_sr {
                        wall(id, t)?
                    } else {
                        let (at, _) = t.first?;
                        at.duration_since(self.first_frame?).as_secs_f64()
                    };
                    Some((*id, secs))
                })
                .collect()
        };
        let mut starts = firsts(by_sr);
        let spread = |v: &[(TransceiverId, f64)]| {
            v.iter().map(|(_, s)| *s).fold(f64::NEG_INFINITY, f64::max)
                - v.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min)
        };
        if by_sr && spread(&starts) > 5.0 {
            // Clocks that disagree (a sender's reports from different clocks): arrival it is.
            by_sr = false;
            starts = firsts(false);
        }
        let zero = starts.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
        for (id, secs) in starts {
            let t = self.tracks.get_mut(&id).expect("listed");
            let (_, rtp) = t.first.expect("has a first frame");
            t.origin = Some(rtp as i64 - ((secs - zero) * f64::from(clock(t.codec))) as i64);
        }
        let path = file_name(dir, room, &self.name, video);
        let recorder = Recorder::create(&path, &infos).with_context(|| path.display().to_string())?;
        status!(
            "peerlink: recording {} into {} ({} by {})",
            self.name,
            path.display(),
            ids.iter().map(|id| format!("{:?}", self.tracks[id].codec)).collect::<Vec<_>>().join(" + "),
            if by_sr { "sender reports" } else { "arrival" }
        );
        self.recorder = Some((path, recorder));
        for h in std::mem::take(&mut self.held) {
            self.write(h);
        }
        Ok(())
    }

    fn write(&mut self, h: Held) {
        let Some((path, recorder)) = self.recorder.as_mut() else {
            self.held.push(h);
            return;
        };
        let Some(t) = self.tracks.get_mut(&h.id) else { return };
        let (Some(index), Some(origin)) = (t.index, t.origin) else { return };
        if t.kind == MediaKind::Video {
            if h.gap && !h.keyframe {
                t.waiting_keyframe = true;
                self.handle.request_keyframe(h.id);
            }
            if t.waiting_keyframe {
                if !h.keyframe {
                    return;
                }
                t.waiting_keyframe = false;
            }
        }
        let rtp = t.unwrap.unwrap(peerlink_rtp::Serial32(h.timestamp)) as i64;
        let ticks = (rtp - origin).max(0) as f64;
        let time = Duration::from_secs_f64(ticks / f64::from(clock(t.codec))).max(t.last);
        t.last = time;
        if let Err(e) = recorder.write(index, time, h.keyframe, &h.data) {
            status!("peerlink: {}: {e}", path.display());
        } else {
            self.frames += 1;
        }
    }

    fn finish(&mut self) {
        if let Some((path, recorder)) = self.recorder.take() {
            match recorder.finish() {
                Ok(stats) => status!("peerlink: recorded {} into {}: {stats:?}", self.name, path.display()),
                Err(e) => status!("peerlink: {}: not finalised: {e}", path.display()),
            }
        } else if !self.held.is_empty() || !self.tracks.is_empty() {
            status!("peerlink: {}: nothing recorded (no complete start)", self.name);
        }
    }
}

pub async fn run(args: RecordArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    let probe = args.out.join(format!(".peerlink-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("--out {} is not writable", args.out.display()))?;
    let _ = std::fs::remove_file(&probe);
    let mut options = args.meet.room_options();
    options.accept_media = Some(Direction::RecvOnly);
    // Our offers ask for audio and video; a peer's offer is answered recvonly.
    options.tracks = vec![
        (MediaKind::Audio, Direction::RecvOnly, TrackConfig::new(MediaKind::Audio)),
        (MediaKind::Video, Direction::RecvOnly, TrackConfig::new(MediaKind::Video)),
    ];
    let mut room = crate::room::join(&args.meet, options).await?;
    // Keyed by peer id over a mesh, by "<stream id>@sfu" through the server.
    let mut people: HashMap<String, Participant> = HashMap::new();
    let mut seen_anyone = false;
    // Who is in the room (from signaling), and their names.
    let mut present: HashSet<String> = HashSet::new();
    let mut names: HashMap<String, String> = HashMap::new();
    // The server's connection: which participant each of its transceivers carries.
    let mut sfu_streams: HashMap<TransceiverId, String> = HashMap::new();
    let mut sfu_handle: Option<peerlink_io::PeerHandle> = None;
    let shutdown = crate::media::interrupted();
    tokio::pin!(shutdown);
    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut shutdown => {
                status!("peerlink: interrupted; finishing the recordings");
                break;
            }
            () = crate::peer::sleep_until(deadline), if deadline.is_some() => {
                status!("peerlink: --duration reached; finishing the recordings");
                break;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for p in people.values_mut().filter(|p| p.recorder.is_none() && p.ready(now)) {
                    if let Err(e) = p.start(&args.out, &args.meet.room) {
                        status!("peerlink: cannot record {}: {e:#}", p.name);
                        p.held.clear();
                        p.tracks.clear();
                    }
                }
            }
            event = room.next() => {
                let Some(event) = event else { break };
                match event {
                    RoomEvent::Connecting { peer, handle, .. } if peer.id == SFU_PEER => {
                        sfu_handle = Some(handle);
                        sfu_streams.clear();
                    }
                    RoomEvent::Connecting { peer, handle, .. } => {
                        seen_anyone = true;
                        people.insert(peer.id, Participant::new(peer.name, handle));
                    }
                    RoomEvent::PeerJoined(peer) => {
                        present.insert(peer.id.clone());
                        names.insert(peer.id, peer.name);
                    }
                    RoomEvent::Gone { peer, reason } => {
                        let gone: Vec<String> = if peer == SFU_PEER {
                            sfu_handle = None;
                            sfu_streams.clear();
                            people.keys().filter(|k| k.ends_with("@sfu")).cloned().collect()
                        } else {
                            vec![peer.clone()]
                        };
                        for key in gone {
                            if let Some(mut p) = people.remove(&key) {
                                status!("peerlink: {} ({peer}): {reason}", p.name);
                                p.finish();
                            }
                        }
                        if seen_anyone && people.is_empty() && present.is_empty() {
                            status!("peerlink: the room is empty; done");
                            break;
                        }
                    }
                    RoomEvent::PeerLeft(id) => {
                        present.remove(&id);
                        if let Some(mut p) = people.remove(&format!("{id}@sfu")) {
                            status!("peerlink: {} ({id}) left", p.name);
                            p.finish();
                        }
                        if seen_anyone && people.is_empty() && present.is_empty() {
                            status!("peerlink: the room is empty; done");
                            break;
                        }
                    }
                    RoomEvent::Rtc { peer, event } => {
                        let key = if peer != SFU_PEER {
                            peer
                        } else {
                            match &event {
                                RtcEvent::Track { id, stream_id, .. } => {
                                    let Some(handle) = sfu_handle.clone() else { continue };
                                    // A track of someone no longer in the room (its leaving
                                    // came through signaling first) starts no file.
                                    let Some(publisher) = stream_id.clone().filter(|s| present.contains(s)) else { continue };
                                    let key = format!("{publisher}@sfu");
                                    sfu_streams.insert(*id, key.clone());
                                    seen_anyone = true;
                                    let name = names.get(&publisher).cloned().unwrap_or(publisher);
                                    people.entry(key.clone()).or_insert_with(|| Participant::new(name, handle));
                                    key
                                }
                                RtcEvent::Frame { id, .. } | RtcEvent::SenderReport { id, .. } => {
                                    let Some(key) = sfu_streams.get(id) else { continue };
                                    key.clone()
                                }
                                RtcEvent::SelectedPair { local_kind, remote_kind, .. } => {
                                    status!("selected pair: {local_kind} -> {remote_kind}");
                                    continue;
                                }
                                _ => continue,
                            }
                        };
                        let Some(p) = people.get_mut(&key) else { continue };
                        match event {
                            RtcEvent::SelectedPair { local_kind, remote_kind, .. } => {
                                status!("selected pair: {local_kind} -> {remote_kind}");
                            }
                            RtcEvent::Track { id, kind, .. } => {
                                status!("peerlink: {} sends {}", p.name, kind.as_str());
                                if !p.announced.contains(&id) {
                                    p.announced.push(id);
                                }
                                if kind == MediaKind::Video {
                                    p.handle.request_keyframe(id);
                                }
                            }
                            // RFC 3550 §6.4.1: a sender without a wall clock sends NTP time 0.
                            RtcEvent::SenderReport { id, ntp_time, rtp_time } if ntp_time != 0 => {
                                p.reports.insert(id, (ntp_time, rtp_time));
                            }
                            RtcEvent::Frame { id, codec, frame } => {
                                let now = Instant::now();
                                p.first_frame.get_or_insert(now);
                                if !p.tracks.contains_key(&id) {
                                    if p.recorder.is_some() {
                                        // A track that came after the file was started.
                                        continue;
                                    }
                                    let kind = if codec == Codec::Opus { MediaKind::Audio } else { MediaKind::Video };
                                    if kind == MediaKind::Video && !frame.keyframe {
                                        // Video starts at a key frame.
                                        p.handle.request_keyframe(id);
                                        continue;
                                    }
                                    let mut unwrap = Unwrapper32::new();
                                    let rtp = unwrap.unwrap(frame.timestamp);
                                    p.tracks.insert(id, Track {
                                        codec,
                                        kind,
                                        index: None,
                                        unwrap,
                                        first: Some((now, rtp)),
                                        origin: None,
                                        waiting_keyframe: kind == MediaKind::Video,
                                        last: Duration::ZERO,
                                    });
                                }
                                let Some(t) = p.tracks.get(&id) else { continue };
                                if t.codec != codec {
                                    tracing::debug!(?codec, "frame in another codec than the track's first; skipped");
                                    continue;
                                }
                                p.write(Held { id, keyframe: frame.keyframe, gap: frame.gap_before, timestamp: frame.timestamp.0, data: frame.data });
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for p in people.values() {
        for id in &p.announced {
            let kind = p.tracks.get(id).map_or("track", |t| t.kind.as_str());
            crate::media::print_stats(&p.name, &p.handle, *id, kind).await;
        }
    }
    for p in people.values_mut() {
        if p.recorder.is_none() && p.first_frame.is_some() {
            if let Err(e) = p.start(&args.out, &args.meet.room) {
                status!("peerlink: cannot record {}: {e:#}", p.name);
            }
        }
        p.finish();
    }
    room.close().await;
    Ok(())
}
