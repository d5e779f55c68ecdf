//! IVF, the libvpx test container: a 32-byte file header and a 12-byte header per frame, all
//! little-endian.

use std::time::Duration;

use crate::bitstream::{av1_keyframe, vp8_keyframe, vp9_keyframe};
use crate::source::Source;
use crate::{Codec, FileError, Sample, TrackInfo};

const FILE_HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 12;
// File header fields.
const SIGNATURE: std::ops::Range<usize> = 0..4;
const HEADER_SIZE: std::ops::Range<usize> = 6..8;
const FOURCC: std::ops::Range<usize> = 8..12;
const WIDTH: std::ops::Range<usize> = 12..14;
const HEIGHT: std::ops::Range<usize> = 14..16;
const TIMEBASE_DEN: std::ops::Range<usize> = 16..20;
const TIMEBASE_NUM: std::ops::Range<usize> = 20..24;
/// A frame larger than this is taken for a corrupt length.
const MAX_FRAME: u32 = 64 << 20;

#[derive(Debug)]
pub(crate) struct IvfReader {
    src: Source,
    codec: Codec,
    width: u32,
    height: u32,
    num: u64,
    den: u64,
}

fn le16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[r]);
    u16::from_le_bytes(a)
}

fn le32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[r]);
    u32::from_le_bytes(a)
}

impl IvfReader {
    pub(crate) fn open(mut src: Source) -> Result<IvfReader, FileError> {
        let mut h = [0u8; FILE_HEADER_LEN];
        let n = src.fill(&mut h)?;
        if n == 0 {
            return Err(src.empty());
        }
        if n < 4 || h[SIGNATURE] != *b"DKIF" {
            return Err(src.not_format("an IVF file", "bad signature"));
        }
        if n < FILE_HEADER_LEN {
            return Err(src.truncated("IVF file header", 0));
        }
        let header_len = usize::from(le16(&h, HEADER_SIZE));
        if header_len < FILE_HEADER_LEN {
            return Err(src.malformed(format!("IVF header length {header_len} below 32"), 6));
        }
        // Skip any header extension.
        if src.read_vec(header_len - FILE_HEADER_LEN)?.is_none() {
            return Err(src.truncated("IVF file header", 0));
        }
        let fourcc = &h[FOURCC];
        let codec = match fourcc {
            b"VP80" => Codec::Vp8,
            b"VP90" => Codec::Vp9,
            b"AV01" => Codec::Av1,
            _ => {
                let fourcc =
                    fourcc.iter().map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' }).collect();
                return Err(FileError::UnsupportedFourcc { name: src.name.clone(), fourcc });
            }
        };
        let (den, num) = (le32(&h, TIMEBASE_DEN), le32(&h, TIMEBASE_NUM));
        if den == 0 || num == 0 {
            return Err(src.malformed(format!("IVF time base {num}/{den}"), 16));
        }
        Ok(IvfReader {
            src,
            codec,
            width: u32::from(le16(&h, WIDTH)),
            height: u32::from(le16(&h, HEIGHT)),
            num: u64::from(num),
            den: u64::from(den),
        })
    }

    pub(crate) fn track(&self) -> TrackInfo {
        let known = |v: u32| (v > 0).then_some(v);
        TrackInfo::video(self.codec, known(self.width), known(self.height))
    }

    pub(crate) fn next_sample(&mut self) -> Result<Option<Sample>, FileError> {
        loop {
            match self.next_frame()? {
                // An empty frame (a dropped one) has nothing to decode or send.
                Some(s) if s.data.is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    fn next_frame(&mut self) -> Result<Option<Sample>, FileError> {
        let at = self.src.offset;
        let mut h = [0u8; FRAME_HEADER_LEN];
        match self.src.fill(&mut h)? {
            0 => return Ok(None),
            FRAME_HEADER_LEN => {}
            _ => return Err(self.src.truncated("frame header", at)),
        }
        let size = le32(&h, 0..4);
        if size > MAX_FRAME {
            return Err(self.src.malformed(format!("frame size {size}"), at));
        }
        let pts = u64::from_le_bytes(h[4..12].try_into().unwrap_or_default());
        let data = self.src.read_vec(size as usize)?.ok_or_else(|| self.src.truncated("frame", at))?;
        let keyframe = match self.codec {
            Codec::Vp8 => vp8_keyframe(&data),
            Codec::Vp9 => vp9_keyframe(&data),
            _ => av1_keyframe(&data),
        };
        // time = pts × num / den seconds, in u128 so no pts overflows.
        let nanos = u128::from(pts) * u128::from(self.num) * 1_000_000_000 / u128::from(self.den);
        let time = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Ok(Some(Sample { track: 0, time, keyframe, data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, MediaReader};

    fn reader(bytes: Vec<u8>) -> Result<MediaReader, FileError> {
        MediaReader::from_reader(Box::new(std::io::Cursor::new(bytes)), Format::Ivf, "t.ivf")
    }

    fn header(fourcc: &[u8; 4]) -> Vec<u8> {
        let mut h = b"DKIF".to_vec();
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&32u16.to_le_bytes());
        h.extend_from_slice(fourcc);
        h.extend_from_slice(&320u16.to_le_bytes());
        h.extend_from_slice(&240u16.to_le_bytes());
        h.extend_from_slice(&30u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h
    }

    fn frame(pts: u64, data: &[u8]) -> Vec<u8> {
        let mut f = (data.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&pts.to_le_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn reads_frames_with_times_and_keyframes() {
        let mut file = header(b"VP80");
        file.extend(frame(0, &[0x10, 1, 2]));
        file.extend(frame(2, &[]));
        file.extend(frame(3, &[0x11, 1]));
        let mut r = reader(file).unwrap();
        assert_eq!(r.tracks(), [TrackInfo::video(Codec::Vp8, Some(320), Some(240))]);
        let a = r.next_sample().unwrap().unwrap();
        assert!(a.keyframe);
        let b = r.next_sample().unwrap().unwrap();
        assert_eq!((b.time, b.keyframe, b.data), (Duration::from_millis(100), false, vec![0x11, 1]));
        assert!(r.next_sample().unwrap().is_none());
    }

    #[test]
    fn empty_input_says_empty() {
        assert!(matches!(reader(vec![]), Err(FileError::Empty { .. })));
    }

    #[test]
    fn garbage_says_bad_signature() {
        let e = reader(b"RIFF0000WAVEfmt ".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "t.ivf: not an IVF file (bad signature)");
    }

    #[test]
    fn unknown_fourcc_is_named() {
        let e = reader(header(b"H264")).unwrap_err();
        assert_eq!(e.to_string(), "t.ivf: unsupported codec fourcc H264");
    }

    #[test]
    fn truncated_header_and_frame_are_errors() {
        assert!(matches!(reader(header(b"VP90")[..20].to_vec()), Err(FileError::Truncated { .. })));
        let mut file = header(b"VP90");
        file.extend(frame(0, &[0x82, 0x49, 0x83, 0x42]));
        file.truncate(file.len() - 2);
        let mut r = reader(file).unwrap();
        let e = r.next_sample().unwrap_err();
        assert_eq!(e.to_string(), "t.ivf: truncated frame at byte 32");
        let mut file = header(b"VP90");
        file.extend_from_slice(&[1, 0, 0]);
        let e = reader(file).unwrap().next_sample().unwrap_err();
        assert_eq!(e.to_string(), "t.ivf: truncated frame header at byte 32");
    }

    #[test]
    fn huge_frame_size_is_malformed_not_an_allocation() {
        let mut file = header(b"AV01");
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&[0; 8]);
        assert!(matches!(reader(file).unwrap().next_sample(), Err(FileError::Malformed { .. })));
    }
}
