//! Writes WebM/Matroska as frames arrive: clusters go to disk as they fill and only the
//! cluster being written is patched afterwards, so memory stays bounded however long the
//! recording runs. Element encoding is `webm-iterable`'s tag writer; the layout and the
//! patching are ours.
//!
//! Layout: EBML header, Segment (size patched at finish), a Void reserved for the SeekHead,
//! Info (Duration patched at finish), Tracks, Clusters, Cues.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peerlink_media::h264::AnnexB;
use webm_iterable::matroska_spec::{Master, MatroskaSpec};
use webm_iterable::{WebmWriter, WriteOptions};

use crate::bitstream::{
    av1_obus, av1_sequence_header, av1c, h264_sps_size, nal_type, Avcc, NAL_IDR, NAL_PPS, NAL_SPS,
    OBU_TEMPORAL_DELIMITER,
};
use crate::{Codec, FileError, TrackInfo};

const SEGMENT_ID: [u8; 4] = [0x18, 0x53, 0x80, 0x67];
const CLUSTER_ID: [u8; 4] = [0x1f, 0x43, 0xb6, 0x75];
const INFO_ID: [u8; 4] = [0x15, 0x49, 0xa9, 0x66];
const TRACKS_ID: [u8; 4] = [0x16, 0x54, 0xae, 0x6b];
const CUES_ID: [u8; 4] = [0x1c, 0x53, 0xbb, 0x6b];
const VOID_ID: u8 = 0xec;
/// An 8-byte EBML size with every value bit set: unknown size (RFC 8794 §6.2).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
/// Room kept after the segment header for the SeekHead written at finish.
const SEEKHEAD_ROOM: usize = 128;
/// A cluster is closed after this long even without a video key frame.
const CLUSTER_SPAN_MS: u64 = 5_000;
/// Frames held while waiting for H.264 or AV1 parameter sets; the oldest go beyond this.
const MAX_PENDING_BYTES: usize = 64 << 20;
/// Matroska's recommended SeekPreRoll for Opus: 80 ms.
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingStats {
    /// Frames written per track (frames dropped while waiting for parameter sets excluded).
    pub frames: Vec<u64>,
    pub duration: Duration,
    /// File size.
    pub bytes: u64,
}

#[derive(Debug)]
struct TrackState {
    info: TrackInfo,
    codec_private: Option<Vec<u8>>,
    frames: u64,
    last_time: Option<Duration>,
    /// Gap between the last two frames, the guess for the last frame's duration.
    last_step: Duration,
}

impl TrackState {
    fn is_video(&self) -> bool {
        self.info.codec != Codec::Opus
    }

    /// Whether CodecPrivate must come from the stream before the header can be written.
    fn waits_for_private(&self) -> bool {
        matches!(self.info.codec, Codec::H264 | Codec::Av1) && self.codec_private.is_none()
    }
}

#[derive(Debug)]
struct Cluster {
    /// Absolute offset of the cluster's 8-byte size field.
    size_at: u64,
    time_ms: u64,
}

#[derive(Debug)]
struct Pending {
    track: usize,
    time: Duration,
    keyframe: bool,
    data: Vec<u8>,
}

/// Writes a WebM (VP8, VP9, AV1, Opus) or Matroska (H.264) recording.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
    /// Absolute write position.
    pos: u64,
    doc_type: &'static str,
    tracks: Vec<TrackState>,
    header: Option<Header>,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    cluster: Option<Cluster>,
    /// (time ms, track number, cluster offset in the segment).
    cues: Vec<(u64, u64, u64)>,
}

/// Where the header's patchable parts are.
#[derive(Debug)]
struct Header {
    segment_size_at: u64,
    segment_data: u64,
    seekhead_at: u64,
    duration_at: u64,
    info_at: u64,
    tracks_at: u64,
}

/// Where an element sits: the tag writer checks the hierarchy, so an element is written
/// inside unknown-size parents whose headers are then cut off.
#[derive(Debug, Clone, Copy)]
enum Parent {
    Top,
    Segment,
    Cluster,
}

fn encode(tag: &MatroskaSpec, parent: Parent) -> Vec<u8> {
    let parents = match parent {
        Parent::Top => &[][..],
        Parent::Segment => &[MatroskaSpec::Segment(Master::Start)][..],
        Parent::Cluster => &[MatroskaSpec::Segment(Master::Start), MatroskaSpec::Cluster(Master::Start)][..],
    };
    let write = |tag: Option<&MatroskaSpec>| {
        let mut w = WebmWriter::new(Vec::new());
        for p in parents {
            w.write_advanced(p, WriteOptions::is_unknown_sized_element())?;
        }
        if let Some(tag) = tag {
            w.write(tag)?;
        }
        w.into_inner()
    };
    // Only a spec mismatch makes writing to a Vec fail, and the callers rule that out.
    match (write(None), write(Some(tag))) {
        (Ok(prefix), Ok(all)) => all.get(prefix.len()..).map(<[u8]>::to_vec).unwrap_or_default(),
        (a, b) => {
            debug_assert!(false, "encoding {tag:?}: {a:?} {b:?}");
            Vec::new()
        }
    }
}

fn void(total: usize) -> Vec<u8> {
    // 1-byte id, 1-byte size: up to 128 bytes in all.
    let mut v = vec![0u8; total];
    v[0] = VOID_ID;
    v[1] = 0x80 | (total - 2) as u8;
    v
}

fn size8(size: u64) -> [u8; 8] {
    let mut b = size.to_be_bytes();
    b[0] = 0x01;
    b
}

/// OpusHead for CodecPrivate (RFC 7845 §5.1), pre-skip 0: the frames come already encoded.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.extend_from_slice(&[1, channels, 0, 0]);
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0]);
    h
}

impl Recorder {
    /// Creates `path`, which must not exist yet.
    pub fn create(path: &Path, tracks: &[TrackInfo]) -> Result<Recorder, FileError> {
        if tracks.is_empty() {
            return Err(FileError::NoTracks);
        }
        for (i, t) in tracks.iter().enumerate() {
            if t.codec == Codec::Opus && !matches!(t.channels.unwrap_or(2), 1 | 2) {
                return Err(FileError::BadFrame {
                    track: i,
                    reason: "opus with more than 2 channels".into(),
                });
            }
        }
        let file =
            File::create_new(path).map_err(|source| FileError::Io { path: path.to_owned(), source })?;
        let doc_type = if tracks.iter().any(|t| t.codec == Codec::H264) { "matroska" } else { "webm" };
        let tracks = tracks
            .iter()
            .map(|info| TrackState {
                info: info.clone(),
                codec_private: (info.codec == Codec::Opus).then(|| opus_head(info.channels.unwrap_or(2))),
                frames: 0,
                last_time: None,
                last_step: Duration::ZERO,
            })
            .collect();
        let mut r = Recorder {
            path: path.to_owned(),
            out: BufWriter::new(file),
            pos: 0,
            doc_type,
            tracks,
            header: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            cluster: None,
            cues: Vec::new(),
        };
        if !r.tracks.iter().any(TrackState::waits_for_private) {
            r.write_header()?;
        }
        Ok(r)
    }

    fn io(&self, source: std::io::Error) -> FileError {
        FileError::Io { path: self.path.clone(), source }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        self.out.write_all(bytes).map_err(|e| self.io(e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Overwrites bytes already written, then returns to the end.
    fn patch(&mut self, at: u64, bytes: &[u8]) -> Result<(), FileError> {
        let r = (|| {
            self.out.seek(SeekFrom::Start(at))?;
            self.out.write_all(bytes)?;
            self.out.seek(SeekFrom::Start(self.pos))?;
            self.out.flush()
        })();
        r.map_err(|e| self.io(e))
    }

    /// Adds a frame. `time` counts from the start of the recording; a time earlier than the
    /// track's previous one is raised to it. H.264 comes in Annex B form and is stored
    /// length-prefixed; until every H.264 and AV1 track has shown its parameter sets, frames
    /// are held in memory (at most 64 MiB, oldest dropped) and H.264/AV1 frames that come
    /// before their parameter sets are dropped, as no decoder could use them.
    pub fn write(
        &mut self,
        track: usize,
        time: Duration,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), FileError> {
        let count = self.tracks.len();
        let state = self.tracks.get_mut(track).ok_or(FileError::NoSuchTrack { track, count })?;
        if data.is_empty() {
            return Err(FileError::BadFrame { track, reason: "empty frame".into() });
        }
        let time = state.last_time.map_or(time, |last| time.max(last));
        let (data, keyframe) = match state.info.codec {
            Codec::H264 => {
                let mut avcc = Vec::with_capacity(data.len() + 16);
                let (mut sps, mut pps, mut idr) = (None, None, false);
                for nal in AnnexB::new(data) {
                    match nal_type(nal) {
                        NAL_SPS => sps = Some(nal),
                        NAL_PPS => pps = Some(nal),
                        NAL_IDR => idr = true,
                        _ => {}
                    }
                    let len = u32::try_from(nal.len())
                        .map_err(|_| FileError::BadFrame { track, reason: "NAL unit over 4 GiB".into() })?;
                    avcc.extend_from_slice(&len.to_be_bytes());
                    avcc.extend_from_slice(nal);
                }
                if avcc.is_empty() {
                    return Err(FileError::BadFrame {
                        track,
                        reason: "no NAL unit after an Annex B start code".into(),
                    });
                }
                if let (None, Some(sps), Some(pps)) = (&state.codec_private, sps, pps) {
                    state.codec_private = Avcc::encode(sps, pps);
                    if state.info.width.is_none() {
                        if let Some((w, h)) = h264_sps_size(sps) {
                            (state.info.width, state.info.height) = (Some(w), Some(h));
                        }
                    }
                }
                (avcc, keyframe || idr)
            }
            Codec::Av1 => {
                if state.codec_private.is_none() {
                    state.codec_private = av1_sequence_header(data).map(av1c);
                }
                // Matroska's AV1 mapping: blocks hold temporal units without the delimiter.
                let tu: Vec<u8> = av1_obus(data)
                    .filter(|(t, _)| *t != OBU_TEMPORAL_DELIMITER)
                    .flat_map(|(_, o)| o.iter().copied())
                    .collect();
                (if tu.is_empty() { data.to_vec() } else { tu }, keyframe)
            }
            _ => (data.to_vec(), keyframe),
        };
        if state.waits_for_private() {
            tracing::debug!(track, "frame before the parameter sets dropped");
            return Ok(());
        }
        if let Some(last) = state.last_time {
            state.last_step = time - last;
        }
        state.last_time = Some(time);
        if self.header.is_none() {
            self.pending_bytes += data.len();
            self.pending.push_back(Pending { track, time, keyframe, data });
            while self.pending_bytes > MAX_PENDING_BYTES {
                let Some(old) = self.pending.pop_front() else { break };
                self.pending_bytes -= old.data.len();
                tracing::warn!(track = old.track, "frame dropped while waiting for parameter sets");
            }
            if !self.tracks.iter().any(TrackState::waits_for_private) {
                self.write_header()?;
                self.flush_pending()?;
            }
            return Ok(());
        }
        self.write_block(track, time, keyframe, &data)
    }

    fn flush_pending(&mut self) -> Result<(), FileError> {
        while let Some(p) = self.pending.pop_front() {
            self.write_block(p.track, p.time, p.keyframe, &p.data)?;
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), FileError> {
        let ebml = MatroskaSpec::Ebml(Master::Full(vec![
            MatroskaSpec::EbmlVersion(1),
            MatroskaSpec::EbmlReadVersion(1),
            MatroskaSpec::EbmlMaxIdLength(4),
            MatroskaSpec::EbmlMaxSizeLength(8),
            MatroskaSpec::DocType(self.doc_type.to_owned()),
            MatroskaSpec::DocTypeVersion(4),
            MatroskaSpec::DocTypeReadVersion(2),
        ]));
        self.put(&encode(&ebml, Parent::Top))?;
        self.put(&SEGMENT_ID)?;
        let segment_size_at = self.pos;
        self.put(&UNKNOWN_SIZE)?;
        let segment_data = self.pos;
        let seekhead_at = self.pos;
        self.put(&void(SEEKHEAD_ROOM))?;
        let info_at = self.pos - segment_data;
        // Duration last, so its 8-byte float ends the element.
        let info = encode(
            &MatroskaSpec::Info(Master::Full(vec![
                MatroskaSpec::TimestampScale(1_000_000),
                MatroskaSpec::MuxingApp("peerlink".into()),
                MatroskaSpec::WritingApp("peerlink".into()),
                MatroskaSpec::Duration(0.0),
            ])),
            Parent::Segment,
        );
        self.put(&info)?;
        let duration_at = self.pos - 8;
        let tracks_at = self.pos - segment_data;
        let entries = self.tracks.iter().enumerate().map(|(i, t)| self.track_entry(i, t)).collect();
        self.put(&encode(&MatroskaSpec::Tracks(Master::Full(entries)), Parent::Segment))?;
        self.out.flush().map_err(|e| self.io(e))?;
        self.header =
            Some(Header { segment_size_at, segment_data, seekhead_at, duration_at, info_at, tracks_at });
        Ok(())
    }

    fn track_entry(&self, i: usize, t: &TrackState) -> MatroskaSpec {
        let number = i as u64 + 1;
        let codec_id = match t.info.codec {
            Codec::Vp8 => "V_VP8",
            Codec::Vp9 => "V_VP9",
            Codec::Av1 => "V_AV1",
            Codec::H264 => "V_MPEG4/ISO/AVC",
            _ => "A_OPUS",
        };
        let mut fields = vec![
            MatroskaSpec::TrackNumber(number),
            MatroskaSpec::TrackUID(number),
            MatroskaSpec::TrackType(if t.is_video() { 1 } else { 2 }),
            MatroskaSpec::FlagLacing(0),
            MatroskaSpec::CodecID(codec_id.into()),
        ];
        if let Some(p) = &t.codec_private {
            fields.push(MatroskaSpec::CodecPrivate(p.clone()));
        }
        if t.is_video() {
            let mut video = Vec::new();
            if let (Some(w), Some(h)) = (t.info.width, t.info.height) {
                video.push(MatroskaSpec::PixelWidth(u64::from(w)));
                video.push(MatroskaSpec::PixelHeight(u64::from(h)));
            }
            fields.push(MatroskaSpec::Video(Master::Full(video)));
        } else {
            fields.push(MatroskaSpec::SeekPreRoll(OPUS_SEEK_PRE_ROLL_NS));
            fields.push(MatroskaSpec::Audio(Master::Full(vec![
                MatroskaSpec::SamplingFrequency(48_000.0),
                MatroskaSpec::Channels(u64::from(t.info.channels.unwrap_or(2))),
            ])));
        }
        MatroskaSpec::TrackEntry(Master::Full(fields))
    }

    fn close_cluster(&mut self) -> Result<(), FileError> {
        if let Some(c) = self.cluster.take() {
            let size = self.pos - (c.size_at + 8);
            self.patch(c.size_at, &size8(size))?;
        }
        Ok(())
    }

    fn write_block(
        &mut self,
        track: usize,
        time: Duration,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), FileError> {
        let Some(segment_data) = self.header.as_ref().map(|h| h.segment_data) else {
            return Ok(());
        };
        let time_ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        let is_video = self.tracks[track].is_video();
        let has_video = self.tracks.iter().any(TrackState::is_video);
        let new_cluster = match &self.cluster {
            None => true,
            Some(c) => {
                let rel = i128::from(time_ms) - i128::from(c.time_ms);
                (keyframe && is_video) || rel >= CLUSTER_SPAN_MS as i128 || rel < i128::from(i16::MIN)
            }
        };
        if new_cluster {
            self.close_cluster()?;
            let cluster_at = self.pos - segment_data;
            self.put(&CLUSTER_ID)?;
            let size_at = self.pos;
            self.put(&UNKNOWN_SIZE)?;
            self.put(&encode(&MatroskaSpec::Timestamp(time_ms), Parent::Cluster))?;
            self.cluster = Some(Cluster { size_at, time_ms });
            // Matroska §22 (Cues): seek points at key frames of video, or of audio when
            // there is no video.
            if keyframe && (is_video || !has_video) {
                self.cues.push((time_ms, track as u64 + 1, cluster_at));
            }
        }
        let cluster_ms = self.cluster.as_ref().map_or(0, |c| c.time_ms);
        let rel = i16::try_from(i128::from(time_ms) - i128::from(cluster_ms)).unwrap_or(i16::MAX);
        // Matroska §10.2 SimpleBlock: track number as a vint, relative timestamp, flags.
        let number = track as u64 + 1;
        let mut block = Vec::with_capacity(data.len() + 8);
        if number < 0x7f {
            block.push(0x80 | number as u8);
        } else {
            block.extend_from_slice(&[0x40 | (number >> 8) as u8, number as u8]);
        }
        block.extend_from_slice(&rel.to_be_bytes());
        block.push(if keyframe { 0x80 } else { 0 });
        block.extend_from_slice(data);
        self.put(&encode(&MatroskaSpec::SimpleBlock(block), Parent::Cluster))?;
        self.tracks[track].frames += 1;
        Ok(())
    }

    /// Writes what only the end knows: the last cluster's size, Cues, SeekHead, Duration and
    /// the segment size.
    pub fn finish(mut self) -> Result<RecordingStats, FileError> {
        if self.header.is_none() {
            tracing::warn!(path = %self.path.display(), "recording ends before the parameter sets of every track came");
            self.write_header()?;
            self.flush_pending()?;
        }
        self.close_cluster()?;
        let Some(h) = self.header.take() else { return Err(FileError::NoTracks) };
        let cues_at = self.pos - h.segment_data;
        let points = self
            .cues
            .iter()
            .map(|&(time, track, pos)| {
                MatroskaSpec::CuePoint(Master::Full(vec![
                    MatroskaSpec::CueTime(time),
                    MatroskaSpec::CueTrackPositions(Master::Full(vec![
                        MatroskaSpec::CueTrack(track),
                        MatroskaSpec::CueClusterPosition(pos),
                    ])),
                ]))
            })
            .collect::<Vec<_>>();
        let mut seeks = vec![(INFO_ID, h.info_at), (TRACKS_ID, h.tracks_at)];
        if !points.is_empty() {
            self.put(&encode(&MatroskaSpec::Cues(Master::Full(points)), Parent::Segment))?;
            seeks.push((CUES_ID, cues_at));
        }
        let seekhead = encode(
            &MatroskaSpec::SeekHead(Master::Full(
                seeks
                    .into_iter()
                    .map(|(id, pos)| {
                        MatroskaSpec::Seek(Master::Full(vec![
                            MatroskaSpec::SeekID(id.to_vec()),
                            MatroskaSpec::SeekPosition(pos),
                        ]))
                    })
                    .collect(),
            )),
            Parent::Segment,
        );
        let mut room = seekhead;
        room.extend_from_slice(&void(SEEKHEAD_ROOM - room.len()));
        self.patch(h.seekhead_at, &room)?;
        let duration =
            self.tracks.iter().filter_map(|t| Some(t.last_time? + t.last_step)).max().unwrap_or_default();
        let duration_ms = duration.as_secs_f64() * 1000.0;
        self.patch(h.duration_at, &duration_ms.to_be_bytes())?;
        self.patch(h.segment_size_at, &size8(self.pos - h.segment_data))?;
        self.out.flush().map_err(|e| self.io(e))?;
        Ok(RecordingStats {
            frames: self.tracks.iter().map(|t| t.frames).collect(),
            duration,
            bytes: self.pos,
        })
    }
}
