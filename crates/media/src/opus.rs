//! Opus over RTP (RFC 7587): one Opus packet per RTP packet, nothing added.

use crate::{check_frame, PacketizeError, PacketizerConfig, PayloadError, PayloadInfo, Payloads};

/// Puts each Opus packet (one encoder output) in one RTP payload.
#[derive(Debug, Clone)]
pub struct OpusPacketizer {
    max_payload: usize,
}

impl OpusPacketizer {
    pub fn new(config: PacketizerConfig) -> OpusPacketizer {
        OpusPacketizer { max_payload: config.max_payload }
    }

    /// Replaces `out` with the payload of one Opus packet.
    pub fn packetize(&mut self, frame: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        out.clear();
        check_frame(frame, self.max_payload, 1)?;
        // RFC 7587 §4.2: an RTP packet carries exactly one Opus packet; Opus has no
        // fragmentation of its own.
        if frame.len() > self.max_payload {
            return Err(PacketizeError::FrameTooLarge { len: frame.len(), max: self.max_payload });
        }
        out.push(&[frame]);
        Ok(())
    }
}

/// Checks one received payload: any non-empty payload is a whole Opus packet (RFC 7587 §4.2),
/// which the decoder can always take on its own.
pub fn parse(payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: true })
}

/// Appends the frame carried by `payloads` (one, for Opus) to `out`.
pub fn depacketize<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    let mut n = 0;
    for p in payloads {
        parse(p)?;
        out.extend_from_slice(p);
        n += 1;
    }
    match n {
        1 => Ok(()),
        0 => Err(PayloadError::Empty),
        _ => Err(PayloadError::Invalid("an opus frame spans one rtp packet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    #[test]
    fn one_opus_packet_is_one_payload_with_the_marker() {
        let mut p = OpusPacketizer::new(PacketizerConfig::default());
        let mut out = Payloads::default();
        p.packetize(&[0xfc, 1, 2, 3], &mut out).unwrap();
        assert_eq!(out.iter().collect::<Vec<_>>(), [(&[0xfc, 1, 2, 3][..], true)]);
    }

    #[test]
    fn refuses_empty_and_oversized_frames() {
        let mut p = OpusPacketizer::new(PacketizerConfig { max_payload: 10, ..Default::default() });
        let mut out = Payloads::default();
        assert_eq!(p.packetize(&[], &mut out), Err(PacketizeError::EmptyFrame));
        assert_eq!(p.packetize(&[0; 11], &mut out), Err(PacketizeError::FrameTooLarge { len: 11, max: 10 }));
        assert!(out.is_empty());
    }

    #[test]
    fn empty_payload_is_malformed_and_any_other_is_a_frame() {
        assert_eq!(parse(&[]), Err(PayloadError::Empty));
        for g in TestRng::new(7).garbage(200, 64).iter().filter(|g| !g.is_empty()) {
            assert!(parse(g).unwrap().frame_start);
            let mut out = Vec::new();
            depacketize([&g[..]], &mut out).unwrap();
            assert_eq!(&out, g);
        }
        assert!(depacketize([&b"a"[..], b"b"], &mut Vec::new()).is_err());
    }
}
