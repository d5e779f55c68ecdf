//! Sender and receiver reports, source descriptions, BYE and APP (RFC 3550 §6.4–§6.7).

use super::{begin, finish, Reader, RtcpError, APP, BYE, RR, SDES, SR};

/// One reception report block (RFC 3550 §6.4.1), 24 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost: 24 bits, signed (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles in the upper 16 bits).
    pub highest_sequence: u32,
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from this source (LSR).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    pub const LEN: usize = 24;

    fn decode(r: &mut Reader<'_>) -> Result<ReportBlock, RtcpError> {
        let ssrc = r.u32()?;
        let fraction_lost = r.u8()?;
        let lost = r.u24()?;
        // Sign-extend the 24-bit field.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Ok(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost,
            highest_sequence: r.u32()?,
            jitter: r.u32()?,
            last_sr: r.u32()?,
            delay_since_last_sr: r.u32()?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.push(self.fraction_lost);
        // RFC 3550 Appendix A.3: clamp to the 24-bit signed range rather than wrap.
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32;
        out.extend_from_slice(&lost.to_be_bytes()[1..]);
        out.extend_from_slice(&self.highest_sequence.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

fn decode_blocks(count: u8, r: &mut Reader<'_>) -> Result<Vec<ReportBlock>, RtcpError> {
    (0..count).map(|_| ReportBlock::decode(r)).collect()
}

fn report_count(reports: &[ReportBlock]) -> Result<u8, RtcpError> {
    // RFC 3550 §6.4: at most 31 blocks in one report; more go in further RRs.
    u8::try_from(reports.len()).ok().filter(|&n| n <= 31).ok_or(RtcpError::Unencodable)
}

/// Sender report (RFC 3550 §6.4.1). Profile-specific extensions after the blocks are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    /// 64-bit NTP timestamp of the report.
    pub ntp_time: u64,
    /// The same instant on the RTP clock.
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
    pub reports: Vec<ReportBlock>,
}

impl SenderReport {
    pub fn decode(count: u8, body: &[u8]) -> Result<SenderReport, RtcpError> {
        let mut r = Reader::new(body, SR);
        Ok(SenderReport {
            ssrc: r.u32()?,
            ntp_time: r.u64()?,
            rtp_time: r.u32()?,
            packet_count: r.u32()?,
            octet_count: r.u32()?,
            reports: decode_blocks(count, &mut r)?,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, report_count(&self.reports)?, SR);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.ntp_time.to_be_bytes());
        out.extend_from_slice(&self.rtp_time.to_be_bytes());
        out.extend_from_slice(&self.packet_count.to_be_bytes());
        out.extend_from_slice(&self.octet_count.to_be_bytes());
        self.reports.iter().for_each(|b| b.encode(out));
        finish(out, start)
    }
}

/// Receiver report (RFC 3550 §6.4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
}

impl ReceiverReport {
    pub fn decode(count: u8, body: &[u8]) -> Result<ReceiverReport, RtcpError> {
        let mut r = Reader::new(body, RR);
        Ok(ReceiverReport { ssrc: r.u32()?, reports: decode_blocks(count, &mut r)? })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let start = begin(out, report_count(&self.reports)?, RR);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        self.reports.iter().for_each(|b| b.encode(out));
        finish(out, start)
    }
}

/// Source description (RFC 3550 §6.5): chunks of items for each source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sdes<'a> {
    pub chunks: Vec<SdesChunk<'a>>,
}

/// The items of one source: `(type, text)`; type 1 is CNAME (§6.5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    pub items: Vec<(u8, &'a [u8])>,
}

/// RFC 3550 §6.5.1.
pub const SDES_CNAME: u8 = 1;

impl<'a> Sdes<'a> {
    pub fn decode(count: u8, body: &'a [u8]) -> Result<Sdes<'a>, RtcpError> {
        let mut r = Reader::new(body, SDES);
        let mut chunks = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let chunk_start = r.remaining();
            let ssrc = r.u32()?;
            let mut items = Vec::new();
            loop {
                // RFC 3550 §6.5: a null octet ends the list, then padding to 32 bits.
                let kind = r.u8()?;
                if kind == 0 {
                    let used = chunk_start - r.remaining();
                    r.bytes((4 - used % 4) % 4)?;
                    break;
                }
                let len = r.u8()?;
                items.push((kind, r.bytes(usize::from(len))?));
            }
            chunks.push(SdesChunk { ssrc, items });
        }
        Ok(Sdes { chunks })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let count =
            u8::try_from(self.chunks.len()).ok().filter(|&n| n <= 31).ok_or(RtcpError::Unencodable)?;
        let start = begin(out, count, SDES);
        for chunk in &self.chunks {
            let chunk_start = out.len();
            out.extend_from_slice(&chunk.ssrc.to_be_bytes());
            for &(kind, text) in &chunk.items {
                let Ok(len) = u8::try_from(text.len()) else {
                    out.truncate(start);
                    return Err(RtcpError::Unencodable);
                };
                out.extend_from_slice(&[kind, len]);
                out.extend_from_slice(text);
            }
            // At least one null octet, then up to the next 32-bit boundary.
            out.push(0);
            while (out.len() - chunk_start) % 4 != 0 {
                out.push(0);
            }
        }
        finish(out, start)
    }
}

/// Goodbye (RFC 3550 §6.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bye<'a> {
    pub ssrcs: Vec<u32>,
    pub reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    pub fn decode(count: u8, body: &'a [u8]) -> Result<Bye<'a>, RtcpError> {
        let mut r = Reader::new(body, BYE);
        let ssrcs = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        let reason = match r.remaining() {
            0 => None,
            _ => {
                let len = r.u8()?;
                Some(r.bytes(usize::from(len))?)
            }
        };
        Ok(Bye { ssrcs, reason })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        let count = u8::try_from(self.ssrcs.len()).ok().filter(|&n| n <= 31).ok_or(RtcpError::Unencodable)?;
        let reason_len = self.reason.map(|r| u8::try_from(r.len())).transpose();
        let Ok(reason_len) = reason_len else { return Err(RtcpError::Unencodable) };
        let start = begin(out, count, BYE);
        self.ssrcs.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
        if let (Some(reason), Some(len)) = (self.reason, reason_len) {
            out.push(len);
            out.extend_from_slice(reason);
        }
        finish(out, start)
    }
}

/// Application-defined packet (RFC 3550 §6.7), passed through as bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App<'a> {
    pub subtype: u8,
    pub ssrc: u32,
    pub name: [u8; 4],
    pub data: &'a [u8],
}

impl<'a> App<'a> {
    pub fn decode(subtype: u8, body: &'a [u8]) -> Result<App<'a>, RtcpError> {
        let mut r = Reader::new(body, APP);
        Ok(App { subtype, ssrc: r.u32()?, name: r.array()?, data: r.rest() })
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        // RFC 3550 §6.7: the data is a multiple of 32 bits; anything else cannot be framed.
        if self.data.len() % 4 != 0 {
            return Err(RtcpError::Unencodable);
        }
        let start = begin(out, self.subtype, APP);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(self.data);
        finish(out, start)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{assert_round_trip, RtcpPacket, RtcpPackets};
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_sequence: 0x0001_0005,
            jitter: 77,
            last_sr: 0xAABB_CCDD,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn reports_round_trip_with_negative_loss() {
        assert_round_trip(RtcpPacket::SenderReport(SenderReport {
            ssrc: 1,
            ntp_time: 0x0102_0304_0506_0708,
            rtp_time: 9,
            packet_count: 10,
            octet_count: 11,
            reports: vec![block(2), block(3)],
        }));
        assert_round_trip(RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 4, reports: vec![block(5)] }));
    }

    #[test]
    fn a_cumulative_loss_beyond_24_bits_is_clamped() {
        let mut out = Vec::new();
        let b = ReportBlock { cumulative_lost: 1 << 30, ..block(1) };
        ReceiverReport { ssrc: 4, reports: vec![b] }.encode(&mut out).unwrap();
        let (_, body) = RtcpPackets::new(&out).next().unwrap().unwrap();
        assert_eq!(ReceiverReport::decode(1, body).unwrap().reports[0].cumulative_lost, 0x7f_ffff);
    }

    #[test]
    fn sdes_bye_and_app_assert_round_trip() {
        assert_round_trip(RtcpPacket::Sdes(Sdes {
            chunks: vec![
                SdesChunk { ssrc: 1, items: vec![(SDES_CNAME, b"abcd"), (6, b"tool")] },
                SdesChunk { ssrc: 2, items: vec![(SDES_CNAME, b"xy")] },
                SdesChunk { ssrc: 3, items: vec![] },
            ],
        }));
        assert_round_trip(RtcpPacket::Bye(Bye { ssrcs: vec![1, 2], reason: Some(b"bye now") }));
        assert_round_trip(RtcpPacket::Bye(Bye { ssrcs: vec![], reason: None }));
        assert_round_trip(RtcpPacket::App(App { subtype: 3, ssrc: 9, name: *b"TEST", data: &[1, 2, 3, 4] }));
    }

    #[test]
    fn report_counts_beyond_the_body_are_truncated() {
        assert_eq!(ReceiverReport::decode(1, &[0, 0, 0, 1]), Err(RtcpError::Truncated { packet_type: RR }));
        assert!(SenderReport::decode(0, &[0; 23]).is_err());
        assert!(Sdes::decode(1, &[0, 0, 0, 1, 1, 5, b'a']).is_err());
        assert!(Bye::decode(2, &[0, 0, 0, 1]).is_err());
        assert!(App::decode(0, &[0; 7]).is_err());
        assert!(SenderReport::decode(0, &[]).is_err());
    }

    #[test]
    fn unencodable_values_are_refused() {
        let mut out = Vec::new();
        let many = ReceiverReport { ssrc: 1, reports: vec![block(1); 32] };
        assert_eq!(many.encode(&mut out), Err(RtcpError::Unencodable));
        let app = App { subtype: 0, ssrc: 0, name: *b"ABCD", data: &[1] };
        assert_eq!(app.encode(&mut out), Err(RtcpError::Unencodable));
        assert!(out.is_empty());
    }
}
