//! VP8 over RTP (RFC 7741): the payload descriptor (§4.2) with a 15-bit PictureID, and the
//! key frame bit of the VP8 payload header (§4.3).

use crate::{
    balanced_sizes, check_frame, PacketizeError, PacketizerConfig, PayloadError, PayloadInfo, Payloads,
    PictureId,
};

// First octet of the payload descriptor (RFC 7741 §4.2).
const X: u8 = 0x80;
const S: u8 = 0x10;
const PID: u8 = 0x07;
// Extension octet.
const I: u8 = 0x80;
const L: u8 = 0x40;
const T: u8 = 0x20;
const K: u8 = 0x10;
// PictureID's first octet: M set means 15 bits.
const M: u8 = 0x80;

/// Descriptor we send: X, I, and a 15-bit PictureID.
const DESCRIPTOR_LEN: usize = 4;

/// Cuts VP8 frames into payloads of near-equal size, each with a descriptor carrying the
/// frame's PictureID.
#[derive(Debug, Clone)]
pub struct Vp8Packetizer {
    max_payload: usize,
    picture_id: PictureId,
}

impl Vp8Packetizer {
    pub fn new(config: PacketizerConfig) -> Vp8Packetizer {
        Vp8Packetizer {
            max_payload: config.max_payload,
            picture_id: PictureId::new(config.initial_picture_id),
        }
    }

    /// The PictureID the next frame gets.
    pub fn picture_id(&self) -> PictureId {
        self.picture_id
    }

    /// Replaces `out` with the payloads of one VP8 frame.
    pub fn packetize(&mut self, frame: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        out.clear();
        check_frame(frame, self.max_payload, DESCRIPTOR_LEN + 1)?;
        let pid = self.picture_id.to_bytes();
        let mut at = 0;
        for size in balanced_sizes(frame.len(), self.max_payload - DESCRIPTOR_LEN) {
            // RFC 7741 §4.2: S is set on the first packet of a partition; with one partition
            // (PID 0) that is the frame's first packet.
            let first = if at == 0 { S } else { 0 };
            out.push(&[&[X | first, I, pid[0], pid[1]], &frame[at..at + size]]);
            at += size;
        }
        self.picture_id.advance();
        Ok(())
    }
}

/// A received payload descriptor, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    pub start_of_partition: bool,
    pub partition_index: u8,
    pub picture_id: Option<u16>,
    /// Bytes the descriptor takes: the VP8 payload follows.
    pub len: usize,
}

impl Vp8Descriptor {
    pub fn parse(payload: &[u8]) -> Result<Vp8Descriptor, PayloadError> {
        let &b0 = payload.first().ok_or(PayloadError::Empty)?;
        let mut at = 1;
        let mut picture_id = None;
        if b0 & X != 0 {
            let &ext = payload.get(at).ok_or(PayloadError::Truncated("vp8 extension octet"))?;
            at += 1;
            if ext & I != 0 {
                let &p0 = payload.get(at).ok_or(PayloadError::Truncated("vp8 picture id"))?;
                if p0 & M != 0 {
                    let &p1 = payload.get(at + 1).ok_or(PayloadError::Truncated("vp8 picture id"))?;
                    picture_id = Some(u16::from_be_bytes([p0 & 0x7f, p1]));
                    at += 2;
                } else {
                    picture_id = Some(u16::from(p0));
                    at += 1;
                }
            }
            if ext & L != 0 {
                at += 1;
            }
            // RFC 7741 §4.2: one octet holds TID, Y and KEYIDX when either T or K is set.
            if ext & (T | K) != 0 {
                at += 1;
            }
        }
        if payload.len() <= at {
            return Err(PayloadError::Truncated("vp8 payload descriptor"));
        }
        Ok(Vp8Descriptor { start_of_partition: b0 & S != 0, partition_index: b0 & PID, picture_id, len: at })
    }
}

/// Checks one received payload. A frame starts where S is set and the partition index is 0
/// (RFC 7741 §4.2); its first VP8 payload header octet has P clear on a key frame (§4.3).
pub fn parse(payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    let d = Vp8Descriptor::parse(payload)?;
    let frame_start = d.start_of_partition && d.partition_index == 0;
    // `parse` left at least one byte after the descriptor.
    let keyframe = frame_start && payload[d.len] & 0x01 == 0;
    Ok(PayloadInfo { frame_start, certain_start: frame_start, keyframe })
}

/// Appends the VP8 frame carried by `payloads` (in order) to `out`.
pub fn depacketize<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    let mut first_pid = None;
    let mut n = 0;
    for (i, p) in payloads.into_iter().enumerate() {
        let d = Vp8Descriptor::parse(p)?;
        if i == 0 {
            if !(d.start_of_partition && d.partition_index == 0) {
                return Err(PayloadError::Invalid("vp8 frame does not start with S set in partition 0"));
            }
            first_pid = d.picture_id;
        } else if d.picture_id.is_some() && first_pid.is_some() && d.picture_id != first_pid {
            return Err(PayloadError::Invalid("vp8 picture id changes within a frame"));
        }
        out.extend_from_slice(&p[d.len..]);
        n += 1;
    }
    if n == 0 {
        return Err(PayloadError::Empty);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    #[test]
    fn descriptor_carries_s_on_the_first_packet_and_a_15_bit_picture_id() {
        let config = PacketizerConfig { max_payload: 10, initial_picture_id: 0x7fff, ..Default::default() };
        let mut p = Vp8Packetizer::new(config);
        let mut out = Payloads::default();
        p.packetize(&[1, 2, 3, 4, 5, 6, 7, 8], &mut out).unwrap();
        let v: Vec<_> = out.iter().collect();
        assert_eq!(
            v,
            [
                (&[0x90, 0x80, 0xff, 0xff, 1, 2, 3, 4][..], false),
                (&[0x80, 0x80, 0xff, 0xff, 5, 6, 7, 8][..], true)
            ]
        );
        // Wraps to 0 within 15 bits.
        assert_eq!(p.picture_id(), PictureId::new(0));
        p.packetize(&[1], &mut out).unwrap();
        assert_eq!(out.get(0), Some(&[0x90, 0x80, 0x80, 0x00, 1][..]));
    }

    #[test]
    fn parses_every_optional_field_of_rfc7741_section_4_2() {
        // X, S, PID 0; I L T K; 7-bit PictureID 0x12; TL0PICIDX; TID/Y/KEYIDX; payload with P=0.
        let pkt = [0x90, 0xf0, 0x12, 0x05, 0x40, 0x00, 0xaa];
        let d = Vp8Descriptor::parse(&pkt).unwrap();
        assert_eq!(
            d,
            Vp8Descriptor { start_of_partition: true, partition_index: 0, picture_id: Some(0x12), len: 5 }
        );
        assert_eq!(parse(&pkt), Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: true }));
        // Only K set still takes the TID/Y/KEYIDX octet.
        assert_eq!(Vp8Descriptor::parse(&[0x80, 0x10, 0x00, 0x01]).unwrap().len, 3);
        // No extension at all: one octet.
        assert_eq!(
            parse(&[0x10, 0x01]),
            Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: false })
        );
    }

    #[test]
    fn a_later_partition_or_continuation_does_not_start_a_frame() {
        assert!(!parse(&[0x11, 0x00]).unwrap().frame_start);
        assert!(!parse(&[0x00, 0x00]).unwrap().frame_start);
    }

    #[test]
    fn empty_truncated_and_garbage_payloads_never_panic() {
        assert_eq!(parse(&[]), Err(PayloadError::Empty));
        for truncated in [&[0x90][..], &[0x90, 0x80], &[0x90, 0x80, 0x80], &[0x90, 0x80, 0x80, 0x01], &[0x10]]
        {
            assert!(matches!(parse(truncated), Err(PayloadError::Truncated(_))), "{truncated:?}");
        }
        for g in TestRng::new(8).garbage(2000, 16) {
            let _ = parse(&g);
            let _ = depacketize([&g[..], &g[..]], &mut Vec::new());
        }
    }

    #[test]
    fn depacketize_refuses_a_changing_picture_id() {
        let a = [0x90, 0x80, 0x80, 0x01, 9];
        let b = [0x80, 0x80, 0x80, 0x02, 9];
        assert!(depacketize([&a[..], &b[..]], &mut Vec::new()).is_err());
        let mut out = Vec::new();
        depacketize([&a[..], &[0x80, 0x80, 0x80, 0x01, 8][..]], &mut out).unwrap();
        assert_eq!(out, [9, 8]);
    }
}
