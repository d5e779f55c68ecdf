//! Transport-wide congestion control feedback (RTPFB, FMT 15;
//! draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), as Chromium sends and expects
//! it: for consecutive transport-wide sequence numbers from a base, whether each packet
//! arrived and, if so, its arrival time relative to the previous one.

use super::{begin, finish, Reader, RtcpError, FMT_TWCC, RTPFB};
use peerlink_proto::Serial16;

/// Received-delta unit: 250 µs (§3.1.5).
pub const DELTA_MICROS: i64 = 250;
/// Reference-time unit: 64 ms (§3.1).
pub const REFERENCE_MILLIS: i64 = 64;

// Packet status symbols (§3.1.1).
const NOT_RECEIVED: u8 = 0;
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

/// The status of one packet: its sequence number and, if it arrived, the delta from the
/// previous arrival (the first from the reference time) in 250 µs units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccPacket {
    pub sequence: Serial16,
    pub delta: Option<i16>,
}

/// A transport-wide feedback packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportCc {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    pub base_sequence: u16,
    /// 24-bit signed, in 64 ms units.
    pub reference_time: i32,
    /// Feedback packet count, to detect lost feedback.
    pub feedback_count: u8,
    /// Statuses for `base_sequence`, `base_sequence + 1`, ... in order.
    pub deltas: Vec<Option<i16>>,
}

impl TransportCc {
    pub fn packets(&self) -> impl Iterator<Item = TwccPacket> + '_ {
        let base = Serial16(self.base_sequence);
        self.deltas
            .iter()
            .enumerate()
            .map(move |(i, &delta)| TwccPacket { sequence: base.wrapping_add(i as u16), delta })
    }

    pub fn decode(body: &[u8]) -> Result<TransportCc, RtcpError> {
        let mut r = Reader::new(body, RTPFB);
        let sender_ssrc = r.u32()?;
        let media_ssrc = r.u32()?;
        let base_sequence = r.u16()?;
        let count = usize::from(r.u16()?);
        let reference_time = ((r.u24()? << 8) as i32) >> 8;
        let feedback_count = r.u8()?;
        // Each status takes at least a bit of a chunk; a count beyond what the body could
        // hold is refused before allocating for it.
        if count > (r.remaining() / 2).saturating_mul(0x1fff) {
            return Err(r.malformed());
        }
        let mut symbols = Vec::with_capacity(count);
        while symbols.len() < count {
            let chunk = r.u16()?;
            let left = count - symbols.len();
            if chunk & 0x8000 == 0 {
                // Run-length chunk (§3.1.3): T=0, 2-bit symbol, 13-bit run length.
                let symbol = (chunk >> 13) as u8 & 3;
                let run = usize::from(chunk & 0x1fff).min(left);
                symbols.extend(std::iter::repeat_n(symbol, run));
            } else if chunk & 0x4000 == 0 {
                // Status vector chunk (§3.1.4), S=0: fourteen 1-bit symbols.
                symbols.extend((0..14).rev().map(|i| (chunk >> i) as u8 & 1).take(left));
            } else {
                // S=1: seven 2-bit symbols.
                symbols.extend((0..7).rev().map(|i| (chunk >> (2 * i)) as u8 & 3).take(left));
            }
        }
        let mut deltas = Vec::with_capacity(count);
        for s in symbols {
            deltas.push(match s {
                NOT_RECEIVED => None,
                SMALL_DELTA => Some(i16::from(r.u8()?)),
                LARGE_DELTA => Some(r.u16()? as i16),
                _ => return Err(r.malformed()),
            });
        }
        // What is left is zero padding to 32 bits.
        Ok(TransportCc { sender_ssrc, media_ssrc, base_sequence, reference_time, feedback_count, deltas })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let count = u16::try_from(self.deltas.len()).map_err(|_| RtcpError::Unencodable)?;
        if !(-0x80_0000..0x80_0000).contains(&self.reference_time) {
            return Err(RtcpError::Unencodable);
        }
        let symbols: Vec<u8> = self
            .deltas
            .iter()
            .map(|d| match d {
                None => NOT_RECEIVED,
                Some(0..=255) => SMALL_DELTA,
                Some(_) => LARGE_DELTA,
            })
            .collect();
        let start = begin(out, FMT_TWCC, RTPFB);
        out.extend_from_slice(&self.sender_ssrc.to_be_bytes());
        out.extend_from_slice(&self.media_ssrc.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&(self.reference_time as u32).to_be_bytes()[1..]);
        out.push(self.feedback_count);
        let mut i = 0;
        while i < symbols.len() {
            let rest = &symbols[i..];
            let run = rest.iter().take(0x1fff).take_while(|&&s| s == rest[0]).count();
            let (chunk, used) = if run >= 7 || run == rest.len() {
                (u16::from(rest[0]) << 13 | run as u16, run)
            } else if rest.iter().take(14).all(|&s| s <= SMALL_DELTA) {
                let used = rest.len().min(14);
                let bits =
                    rest[..used].iter().enumerate().fold(0u16, |v, (k, &s)| v | u16::from(s) << (13 - k));
                (0x8000 | bits, used)
            } else {
                let used = rest.len().min(7);
                let bits =
                    rest[..used].iter().enumerate().fold(0u16, |v, (k, &s)| v | u16::from(s) << (12 - 2 * k));
                (0xC000 | bits, used)
            };
            out.extend_from_slice(&chunk.to_be_bytes());
            i += used;
        }
        for d in self.deltas.iter().flatten() {
            match d {
                0..=255 => out.push(*d as u8),
                _ => out.extend_from_slice(&d.to_be_bytes()),
            }
        }
        // RFC 3550 §6.4.1 padding (P bit, count in the last octet), as Chromium pads.
        let pad = (4 - (out.len() - start) % 4) % 4;
        if pad > 0 {
            out.resize(out.len() + pad - 1, 0);
            out.push(pad as u8);
            out[start] |= 0x20;
        }
        finish(out, start)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_round_trip, RtcpPacket, RtcpPackets};
    use super::*;

    fn round_trip(t: TransportCc) -> Vec<u8> {
        assert_round_trip(RtcpPacket::TransportCc(t))
    }

    fn feedback(deltas: Vec<Option<i16>>) -> TransportCc {
        TransportCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence: 65530,
            reference_time: -3,
            feedback_count: 9,
            deltas,
        }
    }

    #[test]
    fn every_chunk_kind_round_trips() {
        // A long run (run-length), small and missing mixed (1-bit vector), large and
        // negative deltas (2-bit vector), and a final short run.
        let mut d = vec![Some(4); 20];
        d.extend([None, Some(1), None, Some(200), None, None, Some(3), Some(0)]);
        d.extend([Some(-5), Some(1000), None, Some(7), Some(300)]);
        d.extend([None; 3]);
        let t = feedback(d);
        let out = round_trip(t.clone());
        assert_eq!(t.packets().nth(6).unwrap().sequence, Serial16(0));
        // The P bit is set when deltas leave the packet off a 32-bit boundary.
        let (h, _) = RtcpPackets::new(&out).next().unwrap().unwrap();
        assert_eq!(h.count, FMT_TWCC);
    }

    #[test]
    fn empty_and_all_lost_feedback_round_trips() {
        round_trip(feedback(vec![]));
        round_trip(feedback(vec![None; 9000]));
        round_trip(feedback(vec![Some(i16::MIN), Some(i16::MAX)]));
    }

    #[test]
    fn a_chromium_style_packet_decodes() {
        // Base 5, 3 statuses, reference 1 (64 ms), count 0; run-length chunk of three small
        // deltas (T=0, S=01, len 3), deltas 4, 8, 12, one byte of zero padding.
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 3, 0, 0, 1, 0, 0x20, 3, 4, 8, 12, 0];
        let t = TransportCc::decode(&body).unwrap();
        assert_eq!(t.base_sequence, 5);
        assert_eq!(t.reference_time, 1);
        assert_eq!(t.deltas, vec![Some(4), Some(8), Some(12)]);
    }

    #[test]
    fn truncated_reserved_and_oversized_input_is_refused() {
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 3, 0, 0, 1, 0, 0x20, 3, 4, 8];
        assert!(TransportCc::decode(&body).is_err());
        // Reserved symbol 11 in a two-bit vector.
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 1, 0, 0, 1, 0, 0xF0, 0];
        assert_eq!(TransportCc::decode(&body), Err(RtcpError::Malformed { packet_type: RTPFB }));
        // 65535 statuses claimed with no chunks to back them.
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0xff, 0xff, 0, 0, 1, 0];
        assert!(TransportCc::decode(&body).is_err());
        assert!(TransportCc::decode(&[]).is_err());
        let mut out = Vec::new();
        let too_far = TransportCc { reference_time: 1 << 23, ..feedback(vec![]) };
        assert_eq!(too_far.encode(&mut out), Err(RtcpError::Unencodable));
    }
}
