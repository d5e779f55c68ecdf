//! H.264 Annex B byte streams (H.264 Annex B.1), read as access units.

use std::collections::VecDeque;
use std::time::Duration;

use peerlink_media::h264::AnnexB;

use crate::bitstream::{h264_sps_size, nal_type, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SEI, NAL_SPS, START_CODE};
use crate::source::Source;
use crate::{Codec, FileError, Sample, TrackInfo};

const READ_CHUNK: usize = 64 * 1024;
/// A NAL unit larger than this is taken for garbage without start codes.
const MAX_NAL: usize = 32 << 20;

#[derive(Debug)]
pub(crate) struct AnnexBReader {
    src: Source,
    /// Unsplit bytes, starting at a start code.
    buf: Vec<u8>,
    eof: bool,
    nals: VecDeque<Vec<u8>>,
    /// The access unit being gathered and whether it has a VCL NAL unit yet.
    au: Vec<Vec<u8>>,
    au_has_vcl: bool,
    /// The first access unit, read ahead in `open` for the picture size.
    first: Option<Sample>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    size: Option<(u32, u32)>,
    frames: u64,
    fps: f64,
}

fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(3).position(|w| w == [0, 0, 1]).map(|p| from + p)
}

fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// H.264 §7.4.1.2.3: NAL units that may only start an access unit once a VCL NAL unit has
/// been seen (SEI, SPS, PPS, AUD, and types 14..=18).
fn starts_access_unit(nal: &[u8]) -> bool {
    let t = nal_type(nal);
    match t {
        NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14..=18 => true,
        // first_mb_in_slice is ue(v), so 0 is a single 1 bit right after the NAL header.
        1 | 2 | NAL_IDR => nal.get(1).is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

impl AnnexBReader {
    pub(crate) fn open(src: Source) -> Result<AnnexBReader, FileError> {
        let mut r = AnnexBReader {
            src,
            buf: Vec::new(),
            eof: false,
            nals: VecDeque::new(),
            au: Vec::new(),
            au_has_vcl: false,
            first: None,
            sps: None,
            pps: None,
            size: None,
            frames: 0,
            fps: 30.0,
        };
        r.read_more()?;
        if r.buf.is_empty() {
            return Err(r.src.empty());
        }
        let zeros = r.buf.iter().take_while(|&&b| b == 0).count();
        if zeros < 2 || r.buf.get(zeros) != Some(&1) {
            return Err(r.src.not_format("an H.264 Annex B stream", "no start code at the beginning"));
        }
        r.first = r.next_access_unit()?;
        Ok(r)
    }

    pub(crate) fn track(&self) -> TrackInfo {
        TrackInfo::video(Codec::H264, self.size.map(|s| s.0), self.size.map(|s| s.1))
    }

    pub(crate) fn set_frame_rate(&mut self, fps: f64) {
        self.fps = fps;
    }

    pub(crate) fn next_sample(&mut self) -> Result<Option<Sample>, FileError> {
        let sample = match self.first.take() {
            Some(s) => Some(s),
            None => self.next_access_unit()?,
        };
        Ok(sample.map(|mut s| {
            s.time = Duration::from_secs_f64(self.frames as f64 / self.fps);
            self.frames += 1;
            s
        }))
    }

    fn read_more(&mut self) -> Result<(), FileError> {
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = self.src.fill(&mut self.buf[old..])?;
        self.buf.truncate(old + n);
        self.eof = n < READ_CHUNK;
        Ok(())
    }

    /// Moves the complete NAL units of the buffer to `nals`: all before the last start code,
    /// or everything at the end of the stream.
    fn split(&mut self) -> Result<bool, FileError> {
        loop {
            let first = find_start_code(&self.buf, 0);
            let last = self.buf.windows(3).rposition(|w| w == [0, 0, 1]);
            let end = match (first, last) {
                _ if self.eof => self.buf.len(),
                (Some(f), Some(l)) if l > f => l,
                _ => {
                    if self.buf.len() > MAX_NAL {
                        return Err(self.src.malformed("NAL unit over 32 MiB", self.src.offset));
                    }
                    self.read_more()?;
                    continue;
                }
            };
            let at = self.src.offset - self.buf.len() as u64;
            for nal in AnnexB::new(&self.buf[..end]) {
                if nal[0] & 0x80 != 0 {
                    return Err(self.src.malformed("NAL unit with forbidden_zero_bit set", at));
                }
                self.nals.push_back(nal.to_vec());
            }
            self.buf.drain(..end);
            return Ok(!self.nals.is_empty() || !self.buf.is_empty());
        }
    }

    fn next_nal(&mut self) -> Result<Option<Vec<u8>>, FileError> {
        loop {
            if let Some(n) = self.nals.pop_front() {
                return Ok(Some(n));
            }
            if self.eof && self.buf.is_empty() {
                return Ok(None);
            }
            self.split()?;
        }
    }

    fn next_access_unit(&mut self) -> Result<Option<Sample>, FileError> {
        loop {
            let Some(nal) = self.next_nal()? else {
                if !self.au_has_vcl {
                    // Trailing parameter sets or SEI with no picture: nothing to show.
                    self.au.clear();
                    return Ok(None);
                }
                return Ok(Some(self.emit()));
            };
            let t = nal_type(&nal);
            let boundary = self.au_has_vcl && starts_access_unit(&nal);
            let out = boundary.then(|| self.emit());
            match t {
                NAL_SPS => {
                    if self.size.is_none() {
                        self.size = h264_sps_size(&nal);
                    }
                    self.sps = Some(nal.clone());
                }
                NAL_PPS => self.pps = Some(nal.clone()),
                _ => {}
            }
            self.au_has_vcl |= is_vcl(t);
            self.au.push(nal);
            if out.is_some() {
                return Ok(out);
            }
        }
    }

    /// The gathered access unit in Annex B form, parameter sets in front of an IDR.
    fn emit(&mut self) -> Sample {
        let nals = std::mem::take(&mut self.au);
        self.au_has_vcl = false;
        let keyframe = nals.iter().any(|n| nal_type(n) == NAL_IDR);
        let has_sps = nals.iter().any(|n| nal_type(n) == NAL_SPS);
        let mut data = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum::<usize>() + 64);
        if keyframe && !has_sps {
            for set in [&self.sps, &self.pps].into_iter().flatten() {
                data.extend_from_slice(&START_CODE);
                data.extend_from_slice(set);
            }
        }
        for n in &nals {
            data.extend_from_slice(&START_CODE);
            data.extend_from_slice(n);
        }
        // next_sample sets the time: the frame rate may change after open read ahead.
        Sample { track: 0, time: Duration::ZERO, keyframe, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, MediaReader};

    fn reader(bytes: Vec<u8>) -> Result<MediaReader, FileError> {
        MediaReader::from_reader(Box::new(std::io::Cursor::new(bytes)), Format::H264, "t.h264")
    }

    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1e];
    const PPS: [u8; 2] = [0x68, 0xce];

    fn stream(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat()).collect()
    }

    #[test]
    fn groups_nal_units_into_access_units() {
        let idr_a = [0x65, 0x88, 1];
        let idr_b = [0x65, 0x10, 2]; // second slice of the same picture: first_mb_in_slice != 0
        let p = [0x41, 0x9a, 3];
        let idr2 = [0x65, 0x88, 4];
        let mut r = reader(stream(&[&SPS, &PPS, &idr_a, &idr_b, &p, &idr2])).unwrap();
        let a = r.next_sample().unwrap().unwrap();
        assert!(a.keyframe);
        assert_eq!(a.data, stream(&[&SPS, &PPS, &idr_a, &idr_b]));
        let b = r.next_sample().unwrap().unwrap();
        assert_eq!(
            (b.keyframe, b.data.clone(), b.time),
            (false, stream(&[&p]), Duration::from_secs_f64(1.0 / 30.0))
        );
        // The second IDR gets the last SPS/PPS in front.
        let c = r.next_sample().unwrap().unwrap();
        assert_eq!((c.keyframe, c.data), (true, stream(&[&SPS, &PPS, &idr2])));
        assert!(r.next_sample().unwrap().is_none());
    }

    #[test]
    fn frame_rate_sets_the_times() {
        let p = [0x41, 0x9a, 3];
        let mut r = reader(stream(&[&p, &p, &p])).unwrap();
        r.set_frame_rate(25.0).unwrap();
        let times: Vec<Duration> = std::iter::from_fn(|| r.next_sample().unwrap()).map(|s| s.time).collect();
        assert_eq!(times[2], Duration::from_millis(80));
        assert!(r.set_frame_rate(0.0).is_err());
    }

    #[test]
    fn empty_and_garbage_inputs_are_errors() {
        assert!(matches!(reader(vec![]), Err(FileError::Empty { .. })));
        let e = reader(b"DKIF and so on".to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "t.h264: not an H.264 Annex B stream (no start code at the beginning)");
        let e = reader(vec![0, 0, 1, 0xff, 0]).unwrap_err();
        assert!(e.to_string().contains("forbidden_zero_bit"), "{e}");
    }

    #[test]
    fn stream_of_parameter_sets_only_has_no_frames() {
        let mut r = reader(stream(&[&SPS, &PPS])).unwrap();
        assert!(r.next_sample().unwrap().is_none());
    }
}
