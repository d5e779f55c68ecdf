//! Feedback messages (RFC 4585 §6): generic NACK, PLI, FIR (RFC 5104 §4.3.1) and REMB
//! (draft-alvestrand-rmcat-remb-03 §2.2). Each has the common feedback header: the sender's
//! SSRC and the media source's SSRC (RFC 4585 §6.1).

use super::{begin, finish, Reader, RtcpError, FMT_AFB, FMT_FIR, FMT_NACK, FMT_PLI, PSFB, RTPFB};
use peerlink_proto::Serial16;

/// One NACK entry: a lost packet id and a bitmask of the 16 after it (RFC 4585 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackPair {
    pub pid: u16,
    pub blp: u16,
}

/// Generic NACK (RTPFB, FMT 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nack {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    pub pairs: Vec<NackPair>,
}

impl Nack {
    pub fn decode(body: &[u8]) -> Result<Nack, RtcpError> {
        let mut r = Reader::new(body, RTPFB);
        let (sender_ssrc, media_ssrc) = (r.u32()?, r.u32()?);
        let mut pairs = Vec::with_capacity(r.remaining() / 4);
        while r.remaining() >= 4 {
            pairs.push(NackPair { pid: r.u16()?, blp: r.u16()? });
        }
        // RFC 4585 §6.2.1: at least one FCI entry.
        if pairs.is_empty() {
            return Err(r.malformed());
        }
        Ok(Nack { sender_ssrc, media_ssrc, pairs })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, FMT_NACK, RTPFB);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&self.media_ssrc.to_be_bytes());
        for p in &self.pairs {
            out.extend_from_slice(&p.pid.to_be_bytes());
            out.extend_from_slice(&p.blp.to_be_bytes());
        }
        finish(out, start)
    }

    /// The lost sequence numbers, in the order the pairs list them.
    pub fn lost(&self) -> impl Iterator<Item = Serial16> + '_ {
        self.pairs.iter().flat_map(|p| {
            std::iter::once(Serial16(p.pid)).chain(
                (0..16)
                    .filter(move |i| p.blp & (1 << i) != 0)
                    .map(move |i| Serial16(p.pid).wrapping_add(i + 1)),
            )
        })
    }

    /// Pairs covering `lost` (in ascending serial order): each pair takes its PID and any of
    /// the next 16 that are also lost.
    pub fn pairs_for(lost: impl IntoIterator<Item = Serial16>) -> Vec<NackPair> {
        let mut pairs: Vec<NackPair> = Vec::new();
        for seq in lost {
            if let Some(last) = pairs.last_mut() {
                let d = seq.distance(Serial16(last.pid));
                if (1..=16).contains(&d) {
                    last.blp |= 1 << (d - 1);
                    continue;
                }
                if d == 0 {
                    continue;
                }
            }
            pairs.push(NackPair { pid: seq.0, blp: 0 });
        }
        pairs
    }
}

/// Picture loss indication (PSFB, FMT 1): no FCI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pli {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
}

impl Pli {
    pub fn decode(body: &[u8]) -> Result<Pli, RtcpError> {
        let mut r = Reader::new(body, PSFB);
        Ok(Pli { sender_ssrc: r.u32()?, media_ssrc: r.u32()? })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, FMT_PLI, PSFB);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&self.media_ssrc.to_be_bytes());
        finish(out, start)
    }
}

/// Full intra request (PSFB, FMT 4; RFC 5104 §4.3.1): one `(ssrc, command sequence number)`
/// entry per media sender asked. The media SSRC field of the header is unused (zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fir {
    pub sender_ssrc: u32,
    pub entries: Vec<(u32, u8)>,
}

impl Fir {
    pub fn decode(body: &[u8]) -> Result<Fir, RtcpError> {
        let mut r = Reader::new(body, PSFB);
        let sender_ssrc = r.u32()?;
        let _unused = r.u32()?;
        let mut entries = Vec::with_capacity(r.remaining() / 8);
        while r.remaining() >= 8 {
            let ssrc = r.u32()?;
            let seq = r.u8()?;
            r.bytes(3)?;
            entries.push((ssrc, seq));
        }
        if entries.is_empty() {
            return Err(r.malformed());
        }
        Ok(Fir { sender_ssrc, entries })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, FMT_FIR, PSFB);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for &(ssrc, seq) in &self.entries {
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&[seq, 0, 0, 0]);
        }
        finish(out, start)
    }
}

/// Receiver estimated maximum bitrate (PSFB, FMT 15, identifier "REMB").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remb {
    pub sender_ssrc: u32,
    /// Bits per second (sent as an 18-bit mantissa and 6-bit exponent, rounded down).
    pub bitrate: u64,
    pub ssrcs: Vec<u32>,
}

const REMB_ID: &[u8; 4] = b"REMB";

impl Remb {
    /// Whether an application-layer feedback body carries a REMB.
    pub fn is_remb(body: &[u8]) -> bool {
        body.get(8..12) == Some(REMB_ID)
    }

    pub fn decode(body: &[u8]) -> Result<Remb, RtcpError> {
        let mut r = Reader::new(body, PSFB);
        let sender_ssrc = r.u32()?;
        let _media = r.u32()?;
        if &r.array::<4>()? != REMB_ID {
            return Err(r.malformed());
        }
        let count = r.u8()?;
        let v = r.u24()?;
        let (exp, mantissa) = (v >> 18, u64::from(v & 0x3_ffff));
        // Exponents past 46 overflow 64 bits with a full mantissa: saturate.
        let bitrate = mantissa.checked_shl(exp).filter(|b| b >> exp == mantissa).unwrap_or(u64::MAX);
        let ssrcs = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        Ok(Remb { sender_ssrc, bitrate, ssrcs })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let count = u8::try_from(self.ssrcs.len()).map_err(|_| RtcpError::Unencodable)?;
        let mut exp = 0u32;
        while self.bitrate >> exp >= 1 << 18 {
            exp += 1;
        }
        let start = begin(out, FMT_AFB, PSFB);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(REMB_ID);
        out.push(count);
        let v = exp << 18 | (self.bitrate >> exp) as u32;
        out.extend_from_slice(&v.to_be_bytes()[1..]);
        self.ssrcs.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
        finish(out, start)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_round_trip, RtcpPacket};
    use super::*;

    #[test]
    fn nack_pairs_cover_lost_packets_across_the_wrap() {
        let lost = [65534, 65535, 0, 5, 15, 40].map(Serial16);
        let pairs = Nack::pairs_for(lost);
        let expected = [(65534, 0b0100_0011), (15, 0), (40, 0)].map(|(pid, blp)| NackPair { pid, blp });
        assert_eq!(pairs, expected);
        let nack = Nack { sender_ssrc: 1, media_ssrc: 2, pairs };
        assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
        assert_round_trip(RtcpPacket::Nack(nack));
    }

    #[test]
    fn a_nack_without_entries_is_malformed() {
        assert_eq!(Nack::decode(&[0; 8]), Err(RtcpError::Malformed { packet_type: RTPFB }));
        assert!(Nack::decode(&[0; 7]).is_err());
        assert!(Fir::decode(&[0; 8]).is_err());
        assert!(Pli::decode(&[0; 4]).is_err());
    }

    #[test]
    fn pli_and_fir_assert_round_trip() {
        let out = assert_round_trip(RtcpPacket::Pli(Pli { sender_ssrc: 1, media_ssrc: 2 }));
        assert_eq!(out, [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_round_trip(RtcpPacket::Fir(Fir { sender_ssrc: 1, entries: vec![(2, 7), (3, 255)] }));
    }

    #[test]
    fn remb_round_trips_and_rounds_down_to_its_mantissa() {
        assert_round_trip(RtcpPacket::Remb(Remb {
            sender_ssrc: 1,
            bitrate: 1_000_000 & !0x3,
            ssrcs: vec![5, 6],
        }));
        let mut out = Vec::new();
        Remb { sender_ssrc: 1, bitrate: (1 << 40) + 12345, ssrcs: vec![] }.encode(&mut out).unwrap();
        let p = RtcpPacket::parse_all(&out).next().unwrap().unwrap();
        let RtcpPacket::Remb(r) = p else { panic!() };
        assert_eq!(r.bitrate, 1 << 40);
        // Exponent 63 with a full mantissa saturates instead of overflowing.
        let body = [0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0, 0xff, 0xff, 0xff];
        assert_eq!(Remb::decode(&body).unwrap().bitrate, u64::MAX);
    }
}
