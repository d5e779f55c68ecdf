//! Extended reports (RFC 3611): the two blocks a receiver-only endpoint needs for a round-trip
//! time, the Receiver Reference Time report (§4.4) and the DLRR answer to it (§4.5). Other
//! blocks pass through as bytes.

use super::{begin, finish, Reader, RtcpError, XR};

/// RFC 3611 §4.4.
pub const BT_RRTR: u8 = 4;
/// RFC 3611 §4.5.
pub const BT_DLRR: u8 = 5;

/// One DLRR sub-block: for the receiver `ssrc`, the middle 32 bits of its last RRTR (LRR)
/// and the delay since we got it in 1/65536 s (DLRR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dlrr {
    pub ssrc: u32,
    pub last_rr: u32,
    pub delay_since_last_rr: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XrBlock {
    /// A receiver's NTP timestamp (§4.4).
    Rrtr { ntp_time: u64 },
    /// §4.5.
    Dlrr(Vec<Dlrr>),
    /// Any other block type, with its type-specific byte and contents.
    Other { block_type: u8, type_specific: u8, data: Vec<u8> },
}

/// An XR packet: the sender's SSRC and its report blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xr {
    pub ssrc: u32,
    pub blocks: Vec<XrBlock>,
}

impl Xr {
    pub fn decode(body: &[u8]) -> Result<Xr, RtcpError> {
        let mut r = Reader::new(body, XR);
        let ssrc = r.u32()?;
        let mut blocks = Vec::new();
        while r.remaining() > 0 {
            // RFC 3611 §3: BT, type-specific, block length in 32-bit words after this header.
            let block_type = r.u8()?;
            let type_specific = r.u8()?;
            let words = usize::from(r.u16()?);
            let mut b = Reader::new(r.bytes(4 * words)?, XR);
            blocks.push(match block_type {
                BT_RRTR => {
                    if words != 2 {
                        return Err(r.malformed());
                    }
                    XrBlock::Rrtr { ntp_time: b.u64()? }
                }
                BT_DLRR => {
                    if words % 3 != 0 {
                        return Err(r.malformed());
                    }
                    let subs = (0..words / 3)
                        .map(|_| {
                            Ok(Dlrr { ssrc: b.u32()?, last_rr: b.u32()?, delay_since_last_rr: b.u32()? })
                        })
                        .collect::<Result<Vec<_>, RtcpError>>()?;
                    XrBlock::Dlrr(subs)
                }
                _ => XrBlock::Other { block_type, type_specific, data: b.rest().to_vec() },
            });
        }
        Ok(Xr { ssrc, blocks })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, 0, XR);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for block in &self.blocks {
            let (bt, ts, words) = match block {
                XrBlock::Rrtr { .. } => (BT_RRTR, 0, 2),
                XrBlock::Dlrr(subs) => (BT_DLRR, 0, 3 * subs.len()),
                XrBlock::Other { block_type, type_specific, data } if data.len() % 4 == 0 => {
                    (*block_type, *type_specific, data.len() / 4)
                }
                XrBlock::Other { .. } => (0, 0, usize::MAX),
            };
            let Ok(words) = u16::try_from(words) else {
                out.truncate(start);
                return Err(RtcpError::Unencodable);
            };
            out.extend_from_slice(&[bt, ts]);
            out.extend_from_slice(&words.to_be_bytes());
            match block {
                XrBlock::Rrtr { ntp_time } => out.extend_from_slice(&ntp_time.to_be_bytes()),
                XrBlock::Dlrr(subs) => {
                    for s in subs {
                        out.extend_from_slice(&s.ssrc.to_be_bytes());
                        out.extend_from_slice(&s.last_rr.to_be_bytes());
                        out.extend_from_slice(&s.delay_since_last_rr.to_be_bytes());
                    }
                }
                XrBlock::Other { data, .. } => out.extend_from_slice(data),
            }
        }
        finish(out, start)
    }
}

/// RFC 3611 §4.5: the round-trip time a receiver learns from a DLRR answering its RRTR,
/// all in 1/65536 s: arrival (middle 32 bits of NTP) minus LRR minus DLRR. `None` when the
/// DLRR answers no RRTR (LRR zero) or the result is negative.
pub fn round_trip_time(arrival_ntp_middle: u32, sub: &Dlrr) -> Option<u32> {
    if sub.last_rr == 0 {
        return None;
    }
    let rtt = arrival_ntp_middle.wrapping_sub(sub.last_rr).wrapping_sub(sub.delay_since_last_rr);
    (rtt < 1 << 31).then_some(rtt)
}

#[cfg(test)]
mod tests {
    use super::super::{assert_round_trip, RtcpPacket};
    use super::*;

    #[test]
    fn rrtr_dlrr_and_unknown_blocks_round_trip() {
        let xr = Xr {
            ssrc: 7,
            blocks: vec![
                XrBlock::Rrtr { ntp_time: 0x0102_0304_0506_0708 },
                XrBlock::Dlrr(vec![
                    Dlrr { ssrc: 1, last_rr: 2, delay_since_last_rr: 3 },
                    Dlrr { ssrc: 4, last_rr: 5, delay_since_last_rr: 6 },
                ]),
                XrBlock::Other { block_type: 42, type_specific: 1, data: vec![9; 8] },
            ],
        };
        assert_round_trip(RtcpPacket::Xr(xr));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(Xr::decode(&[0, 0, 0, 1, BT_RRTR, 0, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(Xr::decode(&[0, 0, 0, 1, BT_DLRR, 0, 0, 1, 0, 0, 0, 0]).is_err());
        assert!(Xr::decode(&[0, 0, 0, 1, 9, 0, 0, 5]).is_err());
        assert!(Xr::decode(&[]).is_err());
    }

    #[test]
    fn round_trip_time_follows_rfc_3611() {
        let sub = Dlrr { ssrc: 1, last_rr: 0x1000_0000, delay_since_last_rr: 0x8000 };
        assert_eq!(round_trip_time(0x1001_0000, &sub), Some(0x8000)); // 0.5 s
        assert_eq!(round_trip_time(0x1000_0000, &sub), None);
        assert_eq!(round_trip_time(5, &Dlrr { last_rr: 0, ..sub }), None);
    }
}
