//! Just enough of each codec's bitstream to find key frames, picture sizes and the parameter
//! sets a container needs. Every function takes untrusted bytes and never panics.

use peerlink_media::h264::AnnexB;

/// H.264 NAL unit types (H.264 Table 7-1).
pub(crate) const NAL_IDR: u8 = 5;
pub(crate) const NAL_SEI: u8 = 6;
pub(crate) const NAL_SPS: u8 = 7;
pub(crate) const NAL_PPS: u8 = 8;
pub(crate) const NAL_AUD: u8 = 9;

pub(crate) const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub(crate) fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// RFC 6386 §9.1: the frame tag's bit 0 is 0 for a key frame.
pub(crate) fn vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// MSB-first bit reader over a byte slice; reading past the end yields `None`.
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
}

/// VP9 bitstream spec §6.2 (uncompressed_header): frame_marker, profile, show_existing_frame,
/// frame_type (0 = KEY_FRAME). For a superframe the first frame decides, which is where an
/// encoder puts the key frame.
pub(crate) fn vp9_keyframe(frame: &[u8]) -> bool {
    fn parse(r: &mut Bits<'_>) -> Option<bool> {
        if r.bits(2)? != 2 {
            return Some(false);
        }
        let low = r.bit()?;
        let high = r.bit()?;
        if (high << 1 | low) == 3 {
            r.bit()?; // reserved_zero
        }
        if r.bit()? == 1 {
            return Some(false); // show_existing_frame
        }
        Some(r.bit()? == 0)
    }
    parse(&mut Bits::new(frame)).unwrap_or(false)
}

/// AV1 OBU types (AV1 spec §6.2.2).
pub(crate) const OBU_SEQUENCE_HEADER: u8 = 1;
pub(crate) const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// The OBUs of a low-overhead bitstream (AV1 spec §5.2) as (type, whole OBU bytes). Stops at
/// the first malformed OBU.
pub(crate) fn av1_obus(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let header = *data.first()?;
        let obu_type = (header >> 3) & 0x0f;
        let has_ext = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut at = 1 + usize::from(has_ext);
        let size = if has_size {
            let (v, n) = leb128(data.get(at..)?)?;
            at += n;
            usize::try_from(v).ok()?
        } else {
            data.len().checked_sub(at)?
        };
        let end = at.checked_add(size)?;
        let obu = data.get(..end)?;
        data = &data[end..];
        Some((obu_type, obu))
    })
}

/// AV1 spec §4.10.5.
pub(crate) fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Our rule for AV1 key frames: a temporal unit that carries a sequence header. Encoders
/// repeat the sequence header with every key frame so a decoder can start there; deciding
/// from the frame header would need the sequence header's fields and most of §5.9.
pub(crate) fn av1_keyframe(tu: &[u8]) -> bool {
    av1_obus(tu).any(|(t, _)| t == OBU_SEQUENCE_HEADER)
}

/// The sequence header OBU of a temporal unit, if it has one.
pub(crate) fn av1_sequence_header(tu: &[u8]) -> Option<&[u8]> {
    av1_obus(tu).find(|(t, _)| *t == OBU_SEQUENCE_HEADER).map(|(_, o)| o)
}

/// AV1-ISOBMFF §2.3 AV1CodecConfigurationRecord for a sequence header OBU. seq_profile,
/// seq_level_idx_0 and seq_tier_0 come from the header; the colour fields claim 8-bit 4:2:0
/// (decoders read the real values from the configOBUs that follow).
pub(crate) fn av1c(seq_header_obu: &[u8]) -> Vec<u8> {
    let payload_at = seq_header_obu
        .first()
        .map(|h| {
            let mut at = 1 + usize::from(h & 0x04 != 0);
            if h & 0x02 != 0 {
                at += seq_header_obu.get(at..).and_then(leb128).map_or(0, |(_, n)| n);
            }
            at
        })
        .unwrap_or(0);
    let (profile, level, tier) =
        av1_seq_fields(seq_header_obu.get(payload_at..).unwrap_or(&[])).unwrap_or((0, 0, 0));
    let mut out = vec![0x81, (profile << 5) | (level & 0x1f), (tier << 7) | 0b0000_1100, 0];
    out.extend_from_slice(seq_header_obu);
    out
}

/// AV1 spec §5.5.1: seq_profile, seq_level_idx[0], seq_tier[0].
fn av1_seq_fields(p: &[u8]) -> Option<(u8, u8, u8)> {
    let mut r = Bits::new(p);
    let profile = r.bits(3)? as u8;
    let _still = r.bit()?;
    let reduced = r.bit()?;
    if reduced == 1 {
        return Some((profile, r.bits(5)? as u8, 0));
    }
    let mut decoder_model_info = false;
    let mut buffer_delay_len = 0;
    if r.bit()? == 1 {
        // timing_info()
        r.bits(32)?;
        r.bits(32)?;
        if r.bit()? == 1 {
            // uvlc num_ticks_per_picture_minus_1
            let mut zeros = 0;
            while r.bit()? == 0 {
                zeros += 1;
                if zeros >= 32 {
                    return None;
                }
            }
            r.bits(zeros)?;
        }
        decoder_model_info = r.bit()? == 1;
        if decoder_model_info {
            buffer_delay_len = r.bits(5)? + 1;
            r.bits(32)?;
            r.bits(5)?;
            r.bits(5)?;
        }
    }
    let _initial_display_delay_present = r.bit()?;
    let _op_count_minus_1 = r.bits(5)?;
    let _idc = r.bits(12)?;
    let level = r.bits(5)? as u8;
    let tier = if level > 7 { r.bit()? as u8 } else { 0 };
    let _ = (decoder_model_info, buffer_delay_len);
    Some((profile, level, tier))
}

/// Whether an Annex B access unit holds an IDR slice.
pub(crate) fn h264_keyframe_annexb(au: &[u8]) -> bool {
    AnnexB::new(au).any(|n| nal_type(n) == NAL_IDR)
}

/// Picture size from an SPS NAL unit (with its header byte), via `h264-reader`.
pub(crate) fn h264_sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::BitReader;
    let rbsp = h264_reader::rbsp::decode_nal(sps).ok()?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).ok()?;
    sps.pixel_dimensions().ok()
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1): the length size and the
/// parameter sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Avcc {
    pub(crate) length_size: usize,
    pub(crate) sps: Vec<Vec<u8>>,
    pub(crate) pps: Vec<Vec<u8>>,
}

impl Avcc {
    pub(crate) fn parse(data: &[u8]) -> Option<Avcc> {
        if data.len() < 7 || data[0] != 1 {
            return None;
        }
        let length_size = usize::from(data[4] & 3) + 1;
        let mut at = 5;
        let sets = |count: usize, at: &mut usize| -> Option<Vec<Vec<u8>>> {
            let mut out = Vec::new();
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([*data.get(*at)?, *data.get(*at + 1)?]));
                let set = data.get(*at + 2..*at + 2 + len)?;
                out.push(set.to_vec());
                *at += 2 + len;
            }
            Some(out)
        };
        let n_sps = usize::from(data[at] & 0x1f);
        at += 1;
        let sps = sets(n_sps, &mut at)?;
        let n_pps = usize::from(*data.get(at)?);
        at += 1;
        let pps = sets(n_pps, &mut at)?;
        Some(Avcc { length_size, sps, pps })
    }

    /// Builds a record with 4-byte lengths; `None` if a set is too long for its 16-bit length.
    pub(crate) fn encode(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
        if sps.len() < 4 || pps.is_empty() {
            return None;
        }
        let mut out = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        out.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
        out.extend_from_slice(sps);
        out.push(1);
        out.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
        out.extend_from_slice(pps);
        Some(out)
    }
}

/// Length-prefixed NAL units to Annex B with 4-byte start codes; `None` if a length runs past
/// the end.
pub(crate) fn avcc_to_annexb(data: &[u8], length_size: usize, out: &mut Vec<u8>) -> Option<()> {
    let mut at = 0;
    while at < data.len() {
        let len_bytes = data.get(at..at.checked_add(length_size)?)?;
        let len = len_bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        at += length_size;
        let nal = data.get(at..at.checked_add(len)?)?;
        at += len;
        if !nal.is_empty() {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
    }
    Some(())
}

/// RFC 6716 §3.1: the duration of an Opus packet in 48 kHz samples from its TOC byte and,
/// for code 3, the frame count byte. `None` for an empty or malformed packet.
pub(crate) fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: SILK 10/20/40/60 ms, Hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    // §3.2.5: a packet holds at most 120 ms.
    let samples = frame * frames;
    (frames > 0 && samples <= 5760).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(opus_packet_samples(&[0xfc]), Some(960)); // CELT FB 20 ms, one frame
        assert_eq!(opus_packet_samples(&[0x78 | 1]), Some(1920)); // Hybrid 20 ms, two frames
        assert_eq!(opus_packet_samples(&[0x18 | 3, 2]), Some(2 * 2880)); // SILK 60 ms x2
        assert_eq!(opus_packet_samples(&[0x18 | 3, 3]), None); // 180 ms is over the limit
        assert_eq!(opus_packet_samples(&[0x18 | 3, 0]), None);
        assert_eq!(opus_packet_samples(&[]), None);
    }

    #[test]
    fn vp9_keyframe_reads_frame_type() {
        // frame_marker=2, profile 0, show_existing=0, frame_type=0
        assert!(vp9_keyframe(&[0b1000_0000]));
        assert!(!vp9_keyframe(&[0b1000_0100]));
        assert!(!vp9_keyframe(&[0b1000_1000])); // show_existing_frame
        assert!(!vp9_keyframe(&[]));
    }

    #[test]
    fn avcc_round_trips() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let rec = Avcc::encode(&sps, &pps).unwrap();
        let parsed = Avcc::parse(&rec).unwrap();
        assert_eq!((parsed.length_size, parsed.sps, parsed.pps), (4, vec![sps.to_vec()], vec![pps.to_vec()]));
        assert!(Avcc::parse(&rec[..rec.len() - 1]).is_none());
    }

    #[test]
    fn avcc_to_annexb_rejects_overlong_length() {
        let mut out = Vec::new();
        assert!(avcc_to_annexb(&[0, 0, 0, 2, 0x65, 1], 4, &mut out).is_some());
        assert_eq!(out, [0, 0, 0, 1, 0x65, 1]);
        assert!(avcc_to_annexb(&[0, 0, 0, 9, 0x65], 4, &mut out).is_none());
    }

    #[test]
    fn av1_obus_stop_at_garbage() {
        // temporal delimiter with size 0, then a sequence header claiming 5 bytes with 1.
        let tu = [0x12, 0x00, 0x0a, 0x05, 0x00];
        let types: Vec<u8> = av1_obus(&tu).map(|(t, _)| t).collect();
        assert_eq!(types, [OBU_TEMPORAL_DELIMITER]);
        assert!(!av1_keyframe(&tu));
    }
}
