//! Media container files for `peerlink play` and `peerlink record`: readers that turn a file
//! (or a pipe) into timed encoded frames, and a recorder that writes WebM or Matroska.
//!
//! What it implements:
//! - IVF (the VP8/VP9/AV1 test container of libvpx): 32-byte file header (fourcc `VP80`,
//!   `VP90`, `AV01`, width, height, time base) and 12-byte frame headers (size, 64-bit pts);
//!   time = pts × numerator / denominator. Key frames: VP8 from the frame tag's bit 0
//!   (RFC 6386 §9.1), VP9 from the uncompressed header's frame_type (show_existing_frame is
//!   not key), AV1 by our rule that a temporal unit holding a sequence header OBU is a key
//!   frame (encoders repeat the sequence header at every key frame). Empty frames are skipped.
//! - H.264 Annex B byte streams (H.264 Annex B.1): NAL units grouped into access units by
//!   §7.4.1.2.3 (a new access unit at AUD, SPS, PPS, SEI or NAL types 14..=18 after a VCL NAL,
//!   or at a VCL NAL whose first_mb_in_slice is 0 after a VCL NAL); each access unit comes out
//!   in Annex B form with 4-byte start codes and the last SPS/PPS put in front of an IDR that
//!   lacks them. Raw H.264 has no timestamps: frame n is at n / fps
//!   ([`MediaReader::set_frame_rate`], 30 fps by default).
//! - Ogg Opus (RFC 7845): OpusHead (§5.1) gives the channel count and pre-skip, OpusTags is
//!   skipped, then one sample per Opus packet. Times come from the packet durations in the TOC
//!   byte (RFC 6716 §3.1) summed from the first audio packet; like Matroska block times they
//!   count the pre-skip samples (the decoder drops those, [`MediaReader::opus_pre_skip`]), so
//!   packets are evenly spaced from 0. Only the first logical stream is read.
//! - WebM and Matroska: `V_VP8`, `V_VP9`, `V_AV1`, `V_MPEG4/ISO/AVC` and `A_OPUS` tracks from
//!   SimpleBlocks and BlockGroups with any lacing (Xiph, fixed, EBML). H.264 comes out as Annex B with the avcC
//!   SPS/PPS in front of key frames; AV1 key frames get the CodecPrivate sequence header when
//!   the block lacks one. Other tracks are skipped with a warning.
//! - [`Recorder`]: WebM (VP8, VP9, AV1, Opus) or Matroska (as soon as a track is H.264) with
//!   clusters written as they fill, then SeekHead, Info/Duration and Cues at
//!   [`Recorder::finish`].
//!
//! Crates chosen, and why:
//! - `webm-iterable` (with `ebml-iterable`) for WebM/Matroska both ways: a pure-Rust EBML tag
//!   reader that needs only `Read`, so a WebM can come from a pipe; it handles unknown-size
//!   segments and clusters, and its tag writer encodes our elements. Block headers and lacing
//!   (RFC 9559 §10.1, §10.3) are parsed here instead: the crate's block parser indexes short
//!   input without bounds checks, which our fuzz test found. `matroska-demuxer` was the
//!   alternative for reading but needs `Seek` and overflows on some block timestamps in
//!   debug builds.
//! - `ogg` for Ogg pages: its `PageParser` checks the page CRC and its `BasePacketReader`
//!   joins packets across pages; we feed pages ourselves because its `PacketReader` needs
//!   `Seek`.
//! - `h264-reader` to read the picture size from an SPS (exp-Golomb fields, VUI and all).
//! - IVF is own code: the crate named `ivf` only writes, and the format is two fixed headers.
//!   H.264 NAL splitting reuses [`peerlink_media::h264::AnnexB`].
//!
//! The recorder holds the header back until every H.264 track has shown its SPS and PPS, so
//! the avcC in CodecPrivate is built from the real parameter sets (frames queued meanwhile are
//! bounded: see [`Recorder::write`]); AV1 waits for its first sequence header the same way.
//! A file whose process died before `finish` ends in an unknown-size segment and cluster,
//! which players read up to the last whole block.
//!
//! Limits: raw H.264 cannot show truncation (a cut last NAL unit reads as a short frame);
//! the recorder writes PixelWidth/PixelHeight only when the TrackInfo has them or, for H.264,
//! the SPS gives them; OpusHead in the recording has pre-skip 0; WebM elements other than the
//! segment are limited to 256 MiB.
//!
//! Out of scope: seeking in readers, multiple Ogg streams, Matroska content encodings
//! (compression, encryption), audio codecs other than Opus, H.265.
//!
//! ```no_run
//! use peerlink_mediafile::{MediaReader, Recorder};
//! use std::path::Path;
//!
//! let mut reader = MediaReader::open(Path::new("in.ivf"))?;
//! let mut recorder = Recorder::create(Path::new("out.webm"), reader.tracks())?;
//! while let Some(sample) = reader.next_sample()? {
//!     recorder.write(sample.track, sample.time, sample.keyframe, &sample.data)?;
//! }
//! let stats = recorder.finish()?;
//! println!("{:?} frames, {:?}", stats.frames, stats.duration);
//! # Ok::<(), peerlink_mediafile::FileError>(())
//! ```

mod annexb;
mod bitstream;
mod block;
mod ivf;
mod oggopus;
mod recorder;
mod source;
mod webm;

use std::fmt;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use peerlink_media::Codec;
pub use recorder::{Recorder, RecordingStats};

/// The container formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ivf,
    /// H.264 Annex B byte stream.
    H264,
    /// Ogg Opus.
    Ogg,
    /// WebM and Matroska.
    Webm,
}

impl Format {
    /// From the file name's extension: `.ivf`, `.h264`/`.264`, `.ogg`/`.opus`,
    /// `.webm`/`.mkv`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "264" | "avc" => Some(Format::H264),
            "opus" => Some(Format::Ogg),
            other => Format::parse(other),
        }
    }

    /// From a format name: `ivf`, `h264`, `ogg`, `webm` or `mkv` (any case).
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "ivf" => Some(Format::Ivf),
            "h264" => Some(Format::H264),
            "ogg" => Some(Format::Ogg),
            "webm" | "mkv" => Some(Format::Webm),
            _ => None,
        }
    }
}

/// One track of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    pub codec: Codec,
    /// RTP clock rate: 90000 for video, 48000 for Opus.
    pub clock_rate: u32,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub channels: Option<u8>,
}

impl TrackInfo {
    /// A video track with the RTP video clock.
    pub fn video(codec: Codec, width: Option<u32>, height: Option<u32>) -> TrackInfo {
        TrackInfo { codec, clock_rate: 90_000, width, height, channels: None }
    }

    /// An Opus track with the Opus RTP clock.
    pub fn opus(channels: u8) -> TrackInfo {
        TrackInfo {
            codec: Codec::Opus,
            clock_rate: 48_000,
            width: None,
            height: None,
            channels: Some(channels),
        }
    }
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index into [`MediaReader::tracks`].
    pub track: usize,
    /// Presentation time from the file's start.
    pub time: Duration,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell the format of {} (known: .ivf, .h264, .264, .ogg, .opus, .webm, .mkv)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{name}: the file is empty")]
    Empty { name: String },
    /// The content is not the format the name or the caller said.
    #[error("{name}: not {what} ({reason})")]
    NotFormat { name: String, what: &'static str, reason: String },
    #[error("{name}: truncated {what} at byte {offset}")]
    Truncated { name: String, what: &'static str, offset: u64 },
    #[error("{name}: unsupported codec fourcc {fourcc}")]
    UnsupportedFourcc { name: String, fourcc: String },
    #[error("{name}: {reason} at byte {offset}")]
    Malformed { name: String, reason: String, offset: u64 },
    #[error("{name}: no track with a supported codec (VP8, VP9, AV1, H.264, Opus)")]
    NoUsableTrack { name: String },
    #[error("frame rate {0} is not a positive number")]
    InvalidFrameRate(f64),
    #[error("a recording needs at least one track")]
    NoTracks,
    #[error("track {track} does not exist (the recording has {count})")]
    NoSuchTrack { track: usize, count: usize },
    #[error("track {track}: {reason}")]
    BadFrame { track: usize, reason: String },
}

#[derive(Debug)]
enum Inner {
    Ivf(ivf::IvfReader),
    H264(annexb::AnnexBReader),
    Ogg(oggopus::OggOpusReader),
    Webm(Box<webm::WebmReader>),
}

/// Reads the encoded frames of a media file in file order.
pub struct MediaReader {
    format: Format,
    tracks: Vec<TrackInfo>,
    inner: Inner,
}

impl fmt::Debug for MediaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaReader")
            .field("format", &self.format)
            .field("tracks", &self.tracks)
            .finish_non_exhaustive()
    }
}

impl MediaReader {
    /// Opens a file; the format comes from the extension and is then checked against the
    /// content.
    pub fn open(path: &Path) -> Result<MediaReader, FileError> {
        let format =
            Format::from_path(path).ok_or_else(|| FileError::UnknownFormat { path: path.to_owned() })?;
        let file =
            std::fs::File::open(path).map_err(|source| FileError::Io { path: path.to_owned(), source })?;
        MediaReader::from_reader(Box::new(BufReader::new(file)), format, &path.display().to_string())
    }

    /// Reads from a stream that need not seek (stdin). `name` appears in error messages.
    /// Every format works from a pipe.
    pub fn from_reader(
        r: Box<dyn Read + Send>,
        format: Format,
        name: &str,
    ) -> Result<MediaReader, FileError> {
        let src = source::Source::new(r, name);
        let (tracks, inner) = match format {
            Format::Ivf => {
                let r = ivf::IvfReader::open(src)?;
                (vec![r.track()], Inner::Ivf(r))
            }
            Format::H264 => {
                let r = annexb::AnnexBReader::open(src)?;
                (vec![r.track()], Inner::H264(r))
            }
            Format::Ogg => {
                let r = oggopus::OggOpusReader::open(src)?;
                (vec![r.track()], Inner::Ogg(r))
            }
            Format::Webm => {
                let r = webm::WebmReader::open(src)?;
                (r.tracks(), Inner::Webm(Box::new(r)))
            }
        };
        Ok(MediaReader { format, tracks, inner })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The next frame of any track; `Ok(None)` at a clean end, `Err` for a truncated or
    /// malformed file.
    pub fn next_sample(&mut self) -> Result<Option<Sample>, FileError> {
        match &mut self.inner {
            Inner::Ivf(r) => r.next_sample(),
            Inner::H264(r) => r.next_sample(),
            Inner::Ogg(r) => r.next_sample(),
            Inner::Webm(r) => r.next_sample(),
        }
    }

    /// Frame rate for raw H.264, which carries no timestamps (30 by default). Other formats
    /// ignore it.
    pub fn set_frame_rate(&mut self, fps: f64) -> Result<(), FileError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(FileError::InvalidFrameRate(fps));
        }
        if let Inner::H264(r) = &mut self.inner {
            r.set_frame_rate(fps);
        }
        Ok(())
    }

    /// The Opus pre-skip of an Ogg Opus file (RFC 7845 §5.1), in 48 kHz samples.
    pub fn opus_pre_skip(&self) -> Option<u16> {
        match &self.inner {
            Inner::Ogg(r) => Some(r.pre_skip()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_comes_from_extension_or_name() {
        let f = |p: &str| Format::from_path(Path::new(p));
        assert_eq!(
            [
                f("a.ivf"),
                f("a.H264"),
                f("a.264"),
                f("a.ogg"),
                f("a.opus"),
                f("a.webm"),
                f("a.mkv"),
                f("a.mp4"),
                f("a")
            ],
            [
                Some(Format::Ivf),
                Some(Format::H264),
                Some(Format::H264),
                Some(Format::Ogg),
                Some(Format::Ogg),
                Some(Format::Webm),
                Some(Format::Webm),
                None,
                None
            ]
        );
        assert_eq!(Format::parse("mkv"), Some(Format::Webm));
        assert_eq!(Format::parse("opus"), None);
    }

    #[test]
    fn open_names_the_path_in_errors() {
        let e = MediaReader::open(Path::new("/nonexistent/clip.ivf")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/clip.ivf: "), "{e}");
        let e = MediaReader::open(Path::new("clip.mp4")).unwrap_err();
        assert!(matches!(e, FileError::UnknownFormat { .. }), "{e}");
    }
}
