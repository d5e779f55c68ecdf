//! Ogg Opus (RFC 7845): pages framed here from a plain `Read`, checked and joined into
//! packets by the `ogg` crate.

use std::collections::VecDeque;
use std::time::Duration;

use ogg::reading::{BasePacketReader, OggReadError, PageParser};

use crate::bitstream::opus_packet_samples;
use crate::source::Source;
use crate::{FileError, Sample, TrackInfo};

const PAGE_HEADER_LEN: usize = 27;
/// RFC 7845 §5.1: "OpusHead", version, channel count, pre-skip, ... (19 bytes at least).
const OPUS_HEAD_LEN: usize = 19;

#[derive(Debug)]
struct Packet {
    data: Vec<u8>,
    serial: u32,
    last_in_stream: bool,
}

pub(crate) struct OggOpusReader {
    src: Source,
    packets: BasePacketReader,
    queue: VecDeque<Packet>,
    serial: u32,
    channels: u8,
    pre_skip: u16,
    /// 48 kHz samples before the next packet.
    position: u64,
    ended: bool,
}

impl std::fmt::Debug for OggOpusReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusReader")
            .field("src", &self.src)
            .field("serial", &self.serial)
            .field("channels", &self.channels)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl OggOpusReader {
    pub(crate) fn open(src: Source) -> Result<OggOpusReader, FileError> {
        let mut r = OggOpusReader {
            src,
            packets: BasePacketReader::new(),
            queue: VecDeque::new(),
            serial: 0,
            channels: 0,
            pre_skip: 0,
            position: 0,
            ended: false,
        };
        let head = match r.next_packet()? {
            Some(p) => p,
            None if r.src.offset == 0 => return Err(r.src.empty()),
            None => return Err(r.src.truncated("stream (no OpusHead)", r.src.offset)),
        };
        // RFC 7845 §5.1: the first packet is the identification header; major version 0.
        if head.data.len() < OPUS_HEAD_LEN || &head.data[..8] != b"OpusHead" {
            return Err(r.src.not_format("an Ogg Opus file", "first packet is not OpusHead"));
        }
        if head.data[8] & 0xf0 != 0 {
            return Err(r.src.malformed(format!("OpusHead version {}", head.data[8]), 0));
        }
        r.serial = head.serial;
        r.channels = head.data[9];
        r.pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
        if r.channels == 0 {
            return Err(r.src.malformed("OpusHead with 0 channels", 0));
        }
        // RFC 7845 §5.2: the comment header comes next; it has no audio.
        match r.next_stream_packet()? {
            Some(p) if p.data.starts_with(b"OpusTags") => {}
            Some(p) => {
                tracing::warn!(name = %r.src.name, "ogg opus stream without OpusTags");
                r.queue.push_front(p);
            }
            None => {}
        }
        Ok(r)
    }

    pub(crate) fn track(&self) -> TrackInfo {
        TrackInfo::opus(self.channels)
    }

    pub(crate) fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    pub(crate) fn next_sample(&mut self) -> Result<Option<Sample>, FileError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let at = self.src.offset;
            let Some(p) = self.next_stream_packet()? else {
                return Err(self.src.truncated("stream (no end-of-stream page)", at));
            };
            self.ended = p.last_in_stream;
            if p.data.is_empty() {
                continue; // RFC 7845 §3: nothing to decode, no time passes.
            }
            let samples = opus_packet_samples(&p.data)
                .ok_or_else(|| self.src.malformed("invalid Opus packet (bad TOC or frame count)", at))?;
            let time = Duration::from_nanos(self.position.saturating_mul(1_000_000_000) / 48_000);
            self.position += u64::from(samples);
            return Ok(Some(Sample { track: 0, time, keyframe: true, data: p.data }));
        }
    }

    /// The next packet of the Opus stream; packets of other logical streams are dropped.
    fn next_stream_packet(&mut self) -> Result<Option<Packet>, FileError> {
        loop {
            match self.next_packet()? {
                Some(p) if p.serial == self.serial => return Ok(Some(p)),
                Some(p) => tracing::debug!(serial = p.serial, "packet of another ogg stream dropped"),
                None => return Ok(None),
            }
        }
    }

    fn next_packet(&mut self) -> Result<Option<Packet>, FileError> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            if !self.read_page()? {
                return Ok(None);
            }
            while let Some(p) = self.packets.read_packet() {
                let last_in_stream = p.last_in_stream();
                let serial = p.stream_serial();
                self.queue.push_back(Packet { data: p.data, serial, last_in_stream });
            }
        }
    }

    /// Reads one page into the packet reader; `false` at a clean end of the stream.
    fn read_page(&mut self) -> Result<bool, FileError> {
        let at = self.src.offset;
        let mut header = [0u8; PAGE_HEADER_LEN];
        match self.src.fill(&mut header)? {
            0 => return Ok(false),
            n if n >= 4 && header[..4] != *b"OggS" || n < 4 && at == 0 => {
                return Err(if at == 0 {
                    self.src.not_format("an Ogg file", "bad capture pattern")
                } else {
                    self.src.malformed("no Ogg page (bad capture pattern)", at)
                });
            }
            PAGE_HEADER_LEN => {}
            _ => return Err(self.src.truncated("page header", at)),
        }
        let bad = |e: OggReadError| match e {
            OggReadError::HashMismatch(..) => "page checksum mismatch".to_owned(),
            other => format!("bad Ogg page ({other})"),
        };
        let (mut parser, segments) = PageParser::new(header).map_err(|e| self.src.malformed(bad(e), at))?;
        let Some(table) = self.src.read_vec(segments)? else {
            return Err(self.src.truncated("page", at));
        };
        let body_len = parser.parse_segments(table);
        let Some(body) = self.src.read_vec(body_len)? else {
            return Err(self.src.truncated("page", at));
        };
        let page = parser.parse_packet_data(body).map_err(|e| self.src.malformed(bad(e), at))?;
        self.packets.push_page(page).map_err(|e| self.src.malformed(bad(e), at))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Format, MediaReader};

    fn reader(bytes: Vec<u8>) -> Result<MediaReader, FileError> {
        MediaReader::from_reader(Box::new(std::io::Cursor::new(bytes)), Format::Ogg, "t.ogg")
    }

    fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.push(1);
        h.push(channels);
        h.extend_from_slice(&pre_skip.to_le_bytes());
        h.extend_from_slice(&48_000u32.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0]);
        h
    }

    /// An Ogg stream: one page per packet, granules summed from the TOC durations.
    fn ogg(packets: &[Vec<u8>]) -> Vec<u8> {
        use ogg::writing::{PacketWriteEndInfo, PacketWriter};
        let mut out = Vec::new();
        let mut w = PacketWriter::new(&mut out);
        let mut granule = 0;
        for (i, p) in packets.iter().enumerate() {
            granule += opus_packet_samples(p).map_or(0, u64::from);
            let end = if i + 1 == packets.len() {
                PacketWriteEndInfo::EndStream
            } else {
                PacketWriteEndInfo::EndPage
            };
            w.write_packet(p.clone(), 7, end, if i < 2 { 0 } else { granule }).unwrap();
        }
        out
    }

    #[test]
    fn reads_head_and_times_packets_by_toc() {
        let file = ogg(&[
            opus_head(2, 312),
            b"OpusTags\0\0\0\0\0\0\0\0".to_vec(),
            vec![0xfc, 1],
            vec![0xfc, 2],
            vec![0xf8 | 1, 3],
        ]);
        let mut r = reader(file).unwrap();
        assert_eq!(r.tracks()[0].codec, Codec::Opus);
        assert_eq!(r.tracks()[0].channels, Some(2));
        assert_eq!(r.opus_pre_skip(), Some(312));
        let times: Vec<Duration> = std::iter::from_fn(|| r.next_sample().unwrap()).map(|s| s.time).collect();
        assert_eq!(times, [Duration::ZERO, Duration::from_millis(20), Duration::from_millis(40)]);
    }

    #[test]
    fn empty_garbage_and_non_opus_are_errors() {
        assert!(matches!(reader(vec![]), Err(FileError::Empty { .. })));
        assert_eq!(
            reader(b"DKIF".repeat(20)).unwrap_err().to_string(),
            "t.ogg: not an Ogg file (bad capture pattern)"
        );
        let e = reader(ogg(&[b"fLaC and more bytes here".to_vec()])).unwrap_err();
        assert_eq!(e.to_string(), "t.ogg: not an Ogg Opus file (first packet is not OpusHead)");
    }

    #[test]
    fn truncated_page_and_missing_end_are_errors() {
        let file =
            ogg(&[opus_head(1, 0), b"OpusTags\0\0\0\0\0\0\0\0".to_vec(), vec![0xfc, 1], vec![0xfc, 2]]);
        let mut cut = reader(file[..file.len() - 1].to_vec()).unwrap();
        assert!(cut.next_sample().is_ok());
        assert!(matches!(cut.next_sample(), Err(FileError::Truncated { .. })));
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let mut r = reader(flipped).unwrap();
        r.next_sample().unwrap();
        assert!(r.next_sample().unwrap_err().to_string().contains("checksum"));
    }
}
