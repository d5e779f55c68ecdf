//! WebM and Matroska reading through `webm-iterable`, from a plain `Read`.

use std::collections::{HashMap, VecDeque};
use std::io::{Cursor, Read};
use std::time::Duration;

use webm_iterable::errors::TagIteratorError;
use webm_iterable::matroska_spec::{Master, MatroskaSpec};
use webm_iterable::WebmIterator;

use crate::bitstream::{
    av1_obus, av1_sequence_header, avcc_to_annexb, h264_keyframe_annexb, nal_type, opus_packet_samples, Avcc,
    NAL_SPS, OBU_SEQUENCE_HEADER, START_CODE,
};
use crate::block::{self, ParsedBlock};
use crate::source::Source;
use crate::{Codec, FileError, Sample, TrackInfo};

const EBML_ID: [u8; 4] = [0x1a, 0x45, 0xdf, 0xa3];
const SEGMENT_ID: [u8; 4] = [0x18, 0x53, 0x80, 0x67];
/// Larger EBML headers are not headers.
const MAX_EBML_HEADER: u64 = 4096;
/// No element other than the segment may be larger. It bounds what a corrupt size makes the
/// tag reader allocate; clusters are not read whole, so long clusters are fine.
const MAX_ELEMENT: usize = 256 << 20;

type Tags = WebmIterator<std::io::Chain<Cursor<Vec<u8>>, Source>>;

#[derive(Debug)]
struct Track {
    index: usize,
    codec: Codec,
    avcc: Option<Avcc>,
    /// AV1 sequence header from CodecPrivate's configOBUs.
    av1_sequence_header: Option<Vec<u8>>,
}

pub(crate) struct WebmReader {
    name: String,
    tags: Tags,
    /// Where the segment's data ends, if its size is known.
    segment_end: Option<u64>,
    timestamp_scale: u64,
    cluster_time: u64,
    infos: Vec<TrackInfo>,
    tracks: HashMap<u64, Track>,
    queue: VecDeque<Sample>,
    done: bool,
}

impl std::fmt::Debug for WebmReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebmReader")
            .field("name", &self.name)
            .field("tracks", &self.tracks)
            .field("cluster_time", &self.cluster_time)
            .finish_non_exhaustive()
    }
}

/// An EBML variable-size integer (RFC 8794 §4): (value, length, all value bits set).
fn read_vint(src: &mut Source, out: &mut Vec<u8>) -> Result<Option<(u64, usize, bool)>, FileError> {
    let mut first = [0u8];
    if src.fill(&mut first)? == 0 {
        return Ok(None);
    }
    let len = first[0].leading_zeros() as usize + 1;
    if len > 8 {
        return Err(src.malformed("invalid EBML size", src.offset - 1));
    }
    let mut rest = [0u8; 7];
    if src.fill(&mut rest[..len - 1])? < len - 1 {
        return Ok(None);
    }
    out.push(first[0]);
    out.extend_from_slice(&rest[..len - 1]);
    let mask = 0xffu8.checked_shr(len as u32).unwrap_or(0);
    let mut v = u64::from(first[0] & mask);
    let mut all_ones = first[0] & mask == mask;
    for b in &rest[..len - 1] {
        v = (v << 8) | u64::from(*b);
        all_ones &= *b == 0xff;
    }
    Ok(Some((v, len, all_ones)))
}

fn child<'a>(children: &'a [MatroskaSpec], pick: impl Fn(&'a MatroskaSpec) -> Option<u64>) -> Option<u64> {
    children.iter().find_map(pick)
}

fn master_children(tag: &MatroskaSpec) -> &[MatroskaSpec] {
    match tag {
        MatroskaSpec::Video(Master::Full(c)) | MatroskaSpec::Audio(Master::Full(c)) => c,
        _ => &[],
    }
}

impl WebmReader {
    pub(crate) fn open(mut src: Source) -> Result<WebmReader, FileError> {
        // The EBML header and the segment header are read here so the segment's size can be
        // kept for truncation checks and hidden from the tag reader (it would refuse a large
        // segment along with large elements).
        let mut prefix = Vec::new();
        let mut id = [0u8; 4];
        match src.fill(&mut id)? {
            0 => return Err(src.empty()),
            4 if id == EBML_ID => {}
            _ => return Err(src.not_format("a WebM/Matroska file", "bad EBML signature")),
        }
        prefix.extend_from_slice(&id);
        let Some((header_len, _, _)) = read_vint(&mut src, &mut prefix)? else {
            return Err(src.truncated("EBML header", 0));
        };
        if header_len > MAX_EBML_HEADER {
            return Err(src.malformed(format!("EBML header of {header_len} bytes"), 4));
        }
        let Some(header) = src.read_vec(header_len as usize)? else {
            return Err(src.truncated("EBML header", 0));
        };
        prefix.extend_from_slice(&header);
        let at = src.offset;
        match src.fill(&mut id)? {
            4 if id == SEGMENT_ID => {}
            n if n < 4 => return Err(src.truncated("segment header", at)),
            _ => return Err(src.malformed("no Segment after the EBML header", at)),
        }
        prefix.extend_from_slice(&id);
        let mut size = Vec::new();
        let Some((segment_len, len, unknown)) = read_vint(&mut src, &mut size)? else {
            return Err(src.truncated("segment header", at));
        };
        // The same length, all value bits set: "unknown size" (RFC 8794 §6.2).
        prefix.push(0xff >> (len - 1));
        prefix.extend(std::iter::repeat_n(0xff, len - 1));
        let segment_end = (!unknown).then(|| src.offset.saturating_add(segment_len));
        let name = src.name.clone();
        let mut tags = WebmIterator::new(
            Cursor::new(prefix).chain(src),
            &[
                MatroskaSpec::Ebml(Master::Start),
                MatroskaSpec::Info(Master::Start),
                MatroskaSpec::Tracks(Master::Start),
                MatroskaSpec::BlockGroup(Master::Start),
            ],
        );
        tags.set_max_allowable_tag_size(Some(MAX_ELEMENT));
        let mut r = WebmReader {
            name,
            tags,
            segment_end,
            timestamp_scale: 1_000_000,
            cluster_time: 0,
            infos: Vec::new(),
            tracks: HashMap::new(),
            queue: VecDeque::new(),
            done: false,
        };
        r.read_header()?;
        Ok(r)
    }

    pub(crate) fn tracks(&self) -> Vec<TrackInfo> {
        self.infos.clone()
    }

    fn offset(&self) -> u64 {
        self.tags.get_ref().get_ref().1.offset
    }

    fn malformed(&self, reason: impl Into<String>) -> FileError {
        FileError::Malformed { name: self.name.clone(), reason: reason.into(), offset: self.offset() }
    }

    fn tag_error(&self, e: TagIteratorError) -> FileError {
        match e {
            TagIteratorError::UnexpectedEOF { tag_start, .. } => {
                FileError::Truncated { name: self.name.clone(), what: "element", offset: tag_start as u64 }
            }
            TagIteratorError::ReadError { source } => {
                FileError::Io { path: std::path::PathBuf::from(&self.name), source }
            }
            other => self.malformed(format!("corrupt Matroska data ({other})")),
        }
    }

    fn next_tag(&mut self) -> Result<Option<MatroskaSpec>, FileError> {
        match self.tags.next() {
            Some(Ok(tag)) => Ok(Some(tag)),
            Some(Err(e)) => Err(self.tag_error(e)),
            None => {
                if let Some(end) = self.segment_end {
                    let at = self.offset();
                    if at < end {
                        return Err(FileError::Truncated {
                            name: self.name.clone(),
                            what: "segment",
                            offset: at,
                        });
                    }
                }
                Ok(None)
            }
        }
    }

    /// Reads up to the Tracks element.
    fn read_header(&mut self) -> Result<(), FileError> {
        loop {
            match self.next_tag()? {
                None => return Err(self.malformed("no Tracks element")),
                Some(MatroskaSpec::Ebml(Master::Full(children))) => {
                    let doc_type = children.iter().find_map(|c| match c {
                        MatroskaSpec::DocType(s) => Some(s.as_str()),
                        _ => None,
                    });
                    if !matches!(doc_type, Some("webm" | "matroska") | None) {
                        return Err(FileError::NotFormat {
                            name: self.name.clone(),
                            what: "a WebM/Matroska file",
                            reason: format!("doc type {:?}", doc_type.unwrap_or_default()),
                        });
                    }
                }
                Some(MatroskaSpec::Info(Master::Full(children))) => self.handle_info(&children),
                Some(MatroskaSpec::Tracks(Master::Full(children))) => {
                    self.handle_tracks(&children);
                    if self.tracks.is_empty() {
                        return Err(FileError::NoUsableTrack { name: self.name.clone() });
                    }
                    return Ok(());
                }
                Some(MatroskaSpec::Cluster(_)) => return Err(self.malformed("a Cluster before the Tracks")),
                Some(_) => {}
            }
        }
    }

    fn handle_info(&mut self, children: &[MatroskaSpec]) {
        if let Some(scale) = child(children, |c| match c {
            MatroskaSpec::TimestampScale(v) => Some(*v),
            _ => None,
        }) {
            self.timestamp_scale = scale.clamp(1, 1_000_000_000);
        }
    }

    fn handle_tracks(&mut self, children: &[MatroskaSpec]) {
        for entry in children {
            let MatroskaSpec::TrackEntry(Master::Full(fields)) = entry else { continue };
            let number = child(fields, |c| match c {
                MatroskaSpec::TrackNumber(v) => Some(*v),
                _ => None,
            });
            let codec_id = fields.iter().find_map(|c| match c {
                MatroskaSpec::CodecID(s) => Some(s.as_str()),
                _ => None,
            });
            let private = fields.iter().find_map(|c| match c {
                MatroskaSpec::CodecPrivate(b) => Some(b.as_slice()),
                _ => None,
            });
            let video = fields
                .iter()
                .find(|c| matches!(c, MatroskaSpec::Video(_)))
                .map(master_children)
                .unwrap_or(&[]);
            let audio = fields
                .iter()
                .find(|c| matches!(c, MatroskaSpec::Audio(_)))
                .map(master_children)
                .unwrap_or(&[]);
            let dim = |want: fn(&MatroskaSpec) -> Option<u64>| {
                child(video, want).and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
            };
            let width = dim(|c| match c {
                MatroskaSpec::PixelWidth(v) => Some(*v),
                _ => None,
            });
            let height = dim(|c| match c {
                MatroskaSpec::PixelHeight(v) => Some(*v),
                _ => None,
            });
            let Some(number) = number else { continue };
            if self.tracks.contains_key(&number) {
                tracing::warn!(name = %self.name, number, "duplicate track number skipped");
                continue;
            }
            let codec = match codec_id.unwrap_or("") {
                "V_VP8" => Codec::Vp8,
                "V_VP9" => Codec::Vp9,
                "V_AV1" => Codec::Av1,
                "V_MPEG4/ISO/AVC" => Codec::H264,
                "A_OPUS" => Codec::Opus,
                other => {
                    tracing::warn!(name = %self.name, number, codec = other, "track with an unsupported codec skipped");
                    continue;
                }
            };
            let mut track = Track { index: self.infos.len(), codec, avcc: None, av1_sequence_header: None };
            let info = match codec {
                Codec::Opus => {
                    let channels = child(audio, |c| match c {
                        MatroskaSpec::Channels(v) => Some(*v),
                        _ => None,
                    });
                    TrackInfo::opus(channels.and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
                }
                Codec::H264 => {
                    let Some(avcc) = private.and_then(Avcc::parse) else {
                        tracing::warn!(name = %self.name, number, "H.264 track without a valid avcC skipped");
                        continue;
                    };
                    track.avcc = Some(avcc);
                    TrackInfo::video(codec, width, height)
                }
                _ => {
                    // AV1 CodecPrivate: 4-byte av1C, then configOBUs.
                    if codec == Codec::Av1 {
                        track.av1_sequence_header = private
                            .and_then(|p| p.get(4..))
                            .and_then(av1_sequence_header)
                            .map(<[u8]>::to_vec);
                    }
                    TrackInfo::video(codec, width, height)
                }
            };
            self.infos.push(info);
            self.tracks.insert(number, track);
        }
    }

    pub(crate) fn next_sample(&mut self) -> Result<Option<Sample>, FileError> {
        loop {
            if let Some(s) = self.queue.pop_front() {
                return Ok(Some(s));
            }
            if self.done {
                return Ok(None);
            }
            let Some(tag) = self.next_tag()? else {
                self.done = true;
                continue;
            };
            match tag {
                MatroskaSpec::Timestamp(t) => self.cluster_time = t,
                MatroskaSpec::Info(Master::Full(children)) => self.handle_info(&children),
                MatroskaSpec::SimpleBlock(ref data) => {
                    let block =
                        block::parse(data).map_err(|e| self.malformed(format!("bad SimpleBlock ({e})")))?;
                    self.handle_block(&block, block.keyframe)?;
                }
                MatroskaSpec::BlockGroup(Master::Full(children)) => {
                    // RFC 9559 §10.2: a Block without ReferenceBlock is a key frame.
                    let keyframe = !children.iter().any(|c| matches!(c, MatroskaSpec::ReferenceBlock(_)));
                    let Some(data) = children.iter().find_map(|c| match c {
                        MatroskaSpec::Block(d) => Some(d),
                        _ => None,
                    }) else {
                        continue;
                    };
                    let block = block::parse(data).map_err(|e| self.malformed(format!("bad Block ({e})")))?;
                    self.handle_block(&block, keyframe)?;
                }
                _ => {}
            }
        }
    }

    fn handle_block(&mut self, block: &ParsedBlock<'_>, flagged_key: bool) -> Result<(), FileError> {
        let (number, relative, frames) = (block.track, block.timestamp, &block.frames);
        let Some(track) = self.tracks.get(&number) else {
            return Ok(()); // a skipped track
        };
        let ticks = i128::from(self.cluster_time) + i128::from(relative);
        let nanos = (ticks.max(0) * i128::from(self.timestamp_scale)).min(i128::from(u64::MAX));
        let mut time = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let mut out = Vec::with_capacity(frames.len());
        for frame in frames {
            let (data, keyframe) = match track.codec {
                Codec::H264 => {
                    let avcc =
                        track.avcc.as_ref().ok_or_else(|| self.malformed("H.264 track without avcC"))?;
                    let mut au = Vec::with_capacity(frame.len() + 64);
                    avcc_to_annexb(frame, avcc.length_size, &mut au)
                        .ok_or_else(|| self.malformed("AVC NAL unit length past the end of its frame"))?;
                    let key = flagged_key || h264_keyframe_annexb(&au);
                    let has_sps = peerlink_media::h264::AnnexB::new(&au).any(|n| nal_type(n) == NAL_SPS);
                    if key && !has_sps {
                        let mut with_sets = Vec::with_capacity(au.len() + 64);
                        for set in avcc.sps.iter().chain(&avcc.pps) {
                            with_sets.extend_from_slice(&START_CODE);
                            with_sets.extend_from_slice(set);
                        }
                        with_sets.extend_from_slice(&au);
                        au = with_sets;
                    }
                    (au, key)
                }
                Codec::Av1 => {
                    let key = flagged_key;
                    let has_seq = av1_obus(frame).any(|(t, _)| t == OBU_SEQUENCE_HEADER);
                    match (&track.av1_sequence_header, key && !has_seq) {
                        (Some(seq), true) => ([seq.as_slice(), frame].concat(), key),
                        _ => (frame.to_vec(), key),
                    }
                }
                Codec::Opus => (frame.to_vec(), true),
                _ => (frame.to_vec(), flagged_key),
            };
            if data.is_empty() {
                continue;
            }
            let step = if track.codec == Codec::Opus { opus_packet_samples(&data).unwrap_or(0) } else { 0 };
            out.push(Sample { track: track.index, time, keyframe, data });
            // Laced Opus frames share the block time; each one starts where the last ended.
            time += Duration::from_nanos(u64::from(step) * 1_000_000_000 / 48_000);
        }
        self.queue.extend(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, MediaReader};

    fn reader(bytes: Vec<u8>) -> Result<MediaReader, FileError> {
        MediaReader::from_reader(Box::new(Cursor::new(bytes)), Format::Webm, "t.webm")
    }

    #[test]
    fn empty_and_garbage_are_errors() {
        assert!(matches!(reader(vec![]), Err(FileError::Empty { .. })));
        assert_eq!(
            reader(b"OggS0000".to_vec()).unwrap_err().to_string(),
            "t.webm: not a WebM/Matroska file (bad EBML signature)"
        );
        assert!(matches!(reader(EBML_ID.to_vec()), Err(FileError::Truncated { .. })));
        // A header that claims more than the file has.
        assert!(matches!(reader([&EBML_ID[..], &[0x90, 0x42]].concat()), Err(FileError::Truncated { .. })));
    }

    #[test]
    fn vint_reads_lengths_and_unknown_sizes() {
        let mut src = Source::new(Box::new(Cursor::new(vec![0x40, 0x02, 0xff, 0x00])), "v");
        let mut out = Vec::new();
        assert_eq!(read_vint(&mut src, &mut out).unwrap(), Some((2, 2, false)));
        assert_eq!(read_vint(&mut src, &mut out).unwrap(), Some((0x7f, 1, true)));
        assert!(read_vint(&mut src, &mut out).is_err());
    }
}
