//! RTCP (RFC 3550 §6): compound and reduced-size (RFC 5506) packets, each packet a typed value
//! with `decode` from its checked body and `encode` onto a caller's buffer.
//!
//! - [`report`]: SR, RR (§6.4), SDES (§6.5), BYE (§6.6), APP (§6.7, passed through);
//! - [`feedback`]: generic NACK (RFC 4585 §6.2.1), PLI (§6.3.1), FIR (RFC 5104 §4.3.1),
//!   REMB (draft-alvestrand-rmcat-remb-03);
//! - [`twcc`]: transport-wide congestion control feedback
//!   (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1);
//! - [`xr`]: extended reports with RRTR and DLRR blocks (RFC 3611 §4.4, §4.5) for the
//!   receiver's round-trip time.

pub mod feedback;
pub mod report;
pub mod twcc;
pub mod xr;

pub use feedback::{Fir, Nack, NackPair, Pli, Remb};
pub use report::{App, Bye, ReceiverReport, ReportBlock, Sdes, SdesChunk, SenderReport};
pub use twcc::{TransportCc, TwccPacket};
pub use xr::{Dlrr, Xr, XrBlock};

/// Size of the common header (RFC 3550 §6.4.1).
pub const HEADER_LEN: usize = 4;

// Packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611 §5).
pub const SR: u8 = 200;
pub const RR: u8 = 201;
pub const SDES: u8 = 202;
pub const BYE: u8 = 203;
pub const APP: u8 = 204;
pub const RTPFB: u8 = 205;
pub const PSFB: u8 = 206;
pub const XR: u8 = 207;

// Feedback message types (FMT).
/// RFC 4585 §6.2.1.
pub const FMT_NACK: u8 = 1;
/// draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1.
pub const FMT_TWCC: u8 = 15;
/// RFC 4585 §6.3.1.
pub const FMT_PLI: u8 = 1;
/// RFC 5104 §4.3.1.
pub const FMT_FIR: u8 = 4;
/// RFC 4585 §6.4: application layer feedback (REMB lives here).
pub const FMT_AFB: u8 = 15;

/// Why bytes are not RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    #[error("{len} bytes is shorter than an rtcp header")]
    TooShort { len: usize },
    #[error("version {0} is not 2")]
    BadVersion(u8),
    #[error("packet of {declared} bytes runs past the {available} left in the datagram")]
    LengthMismatch { declared: usize, available: usize },
    #[error("padding count {count} is zero or larger than the {available}-byte body")]
    BadPadding { count: usize, available: usize },
    #[error("packet type {packet_type} body is truncated")]
    Truncated { packet_type: u8 },
    #[error("packet type {packet_type} has a malformed body")]
    Malformed { packet_type: u8 },
    #[error("value does not fit its field")]
    Unencodable,
}

/// The common header of one RTCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpHeader {
    pub padding: bool,
    /// Reception report count, source count, FMT or APP subtype (5 bits).
    pub count: u8,
    pub packet_type: u8,
    /// The length field: 32-bit words minus one (RFC 3550 §6.4.1).
    pub length: u16,
}

impl RtcpHeader {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(0x80 | u8::from(self.padding) << 5 | (self.count & 0x1f));
        out.push(self.packet_type);
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// The packets of a compound or reduced-size RTCP datagram, in order, each as its header
/// and body (padding removed). Stops after the first error.
#[derive(Debug, Clone)]
pub struct RtcpPackets<'a> {
    rest: &'a [u8],
}

impl<'a> RtcpPackets<'a> {
    pub fn new(datagram: &'a [u8]) -> RtcpPackets<'a> {
        RtcpPackets { rest: datagram }
    }
}

impl<'a> Iterator for RtcpPackets<'a> {
    type Item = Result<(RtcpHeader, &'a [u8]), RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = split_packet(self.rest);
        self.rest = match r {
            Ok((_, _, rest)) => rest,
            Err(_) => &[],
        };
        Some(r.map(|(h, body, _)| (h, body)))
    }
}

fn split_packet(buf: &[u8]) -> Result<(RtcpHeader, &[u8], &[u8]), RtcpError> {
    if buf.len() < HEADER_LEN {
        return Err(RtcpError::TooShort { len: buf.len() });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtcpError::BadVersion(version));
    }
    let length = u16::from_be_bytes([buf[2], buf[3]]);
    let total = (usize::from(length) + 1) * 4;
    if total > buf.len() {
        return Err(RtcpError::LengthMismatch { declared: total, available: buf.len() });
    }
    let header =
        RtcpHeader { padding: buf[0] & 0x20 != 0, count: buf[0] & 0x1f, packet_type: buf[1], length };
    let (packet, rest) = buf.split_at(total);
    let mut body = &packet[HEADER_LEN..];
    if header.padding {
        // RFC 3550 §6.4.1: the last octet counts the padding. RFC 3550 allows it only in the
        // last packet of a compound; senders (Chromium's transport-cc) pad any packet.
        let count = usize::from(packet[total - 1]);
        if count == 0 || count > body.len() {
            return Err(RtcpError::BadPadding { count, available: body.len() });
        }
        body = &body[..body.len() - count];
    }
    Ok((header, body, rest))
}

/// How a datagram of RTCP packets is put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// RFC 3550 §6.1: starts with an SR or RR.
    Compound,
    /// RFC 5506 §3.4: anything else (feedback without a report, for instance).
    ReducedSize,
}

/// Checks that a datagram holds whole, well-framed RTCP packets (RFC 3550 Appendix A.2:
/// the lengths add up to the datagram) and says which shape it has.
pub fn validate(datagram: &[u8]) -> Result<Shape, RtcpError> {
    let mut first = None;
    for p in RtcpPackets::new(datagram) {
        let (h, _) = p?;
        first.get_or_insert(h.packet_type);
    }
    match first {
        None => Err(RtcpError::TooShort { len: 0 }),
        Some(SR | RR) => Ok(Shape::Compound),
        Some(_) => Ok(Shape::ReducedSize),
    }
}

/// One RTCP packet, typed. Unknown packet types and feedback formats come through as
/// [`RtcpPacket::Other`] with their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    Sdes(Sdes<'a>),
    Bye(Bye<'a>),
    App(App<'a>),
    Nack(Nack),
    Pli(Pli),
    Fir(Fir),
    Remb(Remb),
    TransportCc(TransportCc),
    Xr(Xr),
    Other { header: RtcpHeader, body: &'a [u8] },
}

impl<'a> RtcpPacket<'a> {
    /// Every packet of a datagram, typed; stops after the first error.
    pub fn parse_all(datagram: &'a [u8]) -> impl Iterator<Item = Result<RtcpPacket<'a>, RtcpError>> + 'a {
        RtcpPackets::new(datagram).map(|p| p.and_then(|(h, body)| RtcpPacket::decode(h, body)))
    }

    pub fn decode(header: RtcpHeader, body: &'a [u8]) -> Result<RtcpPacket<'a>, RtcpError> {
        let count = header.count;
        Ok(match (header.packet_type, count) {
            (SR, _) => RtcpPacket::SenderReport(SenderReport::decode(count, body)?),
            (RR, _) => RtcpPacket::ReceiverReport(ReceiverReport::decode(count, body)?),
            (SDES, _) => RtcpPacket::Sdes(Sdes::decode(count, body)?),
            (BYE, _) => RtcpPacket::Bye(Bye::decode(count, body)?),
            (APP, _) => RtcpPacket::App(App::decode(count, body)?),
            (RTPFB, FMT_NACK) => RtcpPacket::Nack(Nack::decode(body)?),
            (RTPFB, FMT_TWCC) => RtcpPacket::TransportCc(TransportCc::decode(body)?),
            (PSFB, FMT_PLI) => RtcpPacket::Pli(Pli::decode(body)?),
            (PSFB, FMT_FIR) => RtcpPacket::Fir(Fir::decode(body)?),
            (PSFB, FMT_AFB) if Remb::is_remb(body) => RtcpPacket::Remb(Remb::decode(body)?),
            (XR, _) => RtcpPacket::Xr(Xr::decode(body)?),
            _ => RtcpPacket::Other { header, body },
        })
    }

    /// Appends the packet to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RtcpError> {
        match self {
            RtcpPacket::SenderReport(p) => p.encode(out),
            RtcpPacket::ReceiverReport(p) => p.encode(out),
            RtcpPacket::Sdes(p) => p.encode(out),
            RtcpPacket::Bye(p) => p.encode(out),
            RtcpPacket::App(p) => p.encode(out),
            RtcpPacket::Nack(p) => p.encode(out),
            RtcpPacket::Pli(p) => p.encode(out),
            RtcpPacket::Fir(p) => p.encode(out),
            RtcpPacket::Remb(p) => p.encode(out),
            RtcpPacket::TransportCc(p) => p.encode(out),
            RtcpPacket::Xr(p) => p.encode(out),
            RtcpPacket::Other { header, body } => {
                let start = begin(out, header.count, header.packet_type);
                out.extend_from_slice(body);
                finish(out, start)
            }
        }
    }
}

/// Starts a packet: a header whose length [`finish`] fills in. Returns where it starts.
pub(crate) fn begin(out: &mut Vec<u8>, count: u8, packet_type: u8) -> usize {
    let start = out.len();
    RtcpHeader { padding: false, count, packet_type, length: 0 }.write(out);
    start
}

/// Pads the packet begun at `start` to 32 bits with zeros and writes its length.
pub(crate) fn finish(out: &mut Vec<u8>, start: usize) -> Result<(), RtcpError> {
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    let Ok(words) = u16::try_from((out.len() - start) / 4 - 1) else {
        out.truncate(start);
        return Err(RtcpError::Unencodable);
    };
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    Ok(())
}

/// Checked big-endian reads from a packet body; running out is `Truncated`.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    packet_type: u8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], packet_type: u8) -> Reader<'a> {
        Reader { buf, packet_type }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], RtcpError> {
        if self.buf.len() < n {
            return Err(RtcpError::Truncated { packet_type: self.packet_type });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RtcpError> {
        let b = self.bytes(N)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RtcpError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, RtcpError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u24(&mut self) -> Result<u32, RtcpError> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, RtcpError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, RtcpError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn malformed(&self) -> RtcpError {
        RtcpError::Malformed { packet_type: self.packet_type }
    }
}

/// Encodes `p`, checks it decodes to itself, and that no truncation of it panics.
#[cfg(test)]
pub(crate) fn assert_round_trip(p: RtcpPacket<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(&mut out).unwrap();
    assert_eq!(out.len() % 4, 0);
    let back: Vec<_> = RtcpPacket::parse_all(&out).map(|x| x.unwrap()).collect();
    assert_eq!(back, vec![p]);
    for n in 0..out.len() {
        let _: Vec<_> = RtcpPacket::parse_all(&out[..n]).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compound() -> Vec<u8> {
        let mut out = Vec::new();
        ReceiverReport { ssrc: 1, reports: vec![] }.encode(&mut out).unwrap();
        Pli { sender_ssrc: 1, media_ssrc: 2 }.encode(&mut out).unwrap();
        Bye { ssrcs: vec![1], reason: Some(b"done") }.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn a_compound_packet_is_iterated_and_typed() {
        let out = compound();
        assert_eq!(validate(&out), Ok(Shape::Compound));
        let packets: Vec<_> = RtcpPacket::parse_all(&out).map(|p| p.unwrap()).collect();
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[1], RtcpPacket::Pli(Pli { sender_ssrc: 1, media_ssrc: 2 }));
        let mut again = Vec::new();
        for p in &packets {
            p.encode(&mut again).unwrap();
        }
        assert_eq!(again, out);
    }

    #[test]
    fn a_reduced_size_packet_is_accepted() {
        let mut out = Vec::new();
        Pli { sender_ssrc: 1, media_ssrc: 2 }.encode(&mut out).unwrap();
        assert_eq!(validate(&out), Ok(Shape::ReducedSize));
    }

    #[test]
    fn unknown_types_pass_through() {
        let raw = [0x85, 210, 0, 1, 1, 2, 3, 4];
        let p: Vec<_> = RtcpPacket::parse_all(&raw).collect();
        let Ok(RtcpPacket::Other { header, body }) = p[0] else { panic!("{p:?}") };
        assert_eq!((header.count, header.packet_type, body), (5, 210, &[1, 2, 3, 4][..]));
        let mut out = Vec::new();
        p[0].as_ref().unwrap().encode(&mut out).unwrap();
        assert_eq!(out, raw);
    }

    #[test]
    fn padding_is_removed_from_the_body() {
        let raw = [0xA0, 201, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4];
        let (h, body) = RtcpPackets::new(&raw).next().unwrap().unwrap();
        assert!(h.padding);
        assert_eq!(body, &[0, 0, 0, 9]);
        let bad = [0xA0, 201, 0, 1, 0, 0, 0, 5];
        assert!(matches!(RtcpPackets::new(&bad).next(), Some(Err(RtcpError::BadPadding { .. }))));
    }

    #[test]
    fn empty_truncated_and_garbage_datagrams_are_refused() {
        assert!(validate(&[]).is_err());
        assert_eq!(RtcpPackets::new(&[]).count(), 0);
        let out = compound();
        for n in 1..out.len() {
            // A prefix that ends between packets is shorter but whole; any other fails.
            let all: Vec<_> = RtcpPacket::parse_all(&out[..n]).collect();
            let failed = all.iter().any(Result::is_err) || validate(&out[..n]).is_err();
            assert_eq!(failed, n != 8 && n != 20, "{n}");
        }
        assert_eq!(validate(&[0x40, 200, 0, 0]), Err(RtcpError::BadVersion(1)));
        for mut buf in crate::garbage(99, 5000, 80) {
            if let Some(b) = buf.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            if let Some(b) = buf.get_mut(1) {
                *b = 200 + *b % 8;
            }
            for p in RtcpPacket::parse_all(&buf).flatten() {
                let mut out = Vec::new();
                let _ = p.encode(&mut out);
            }
        }
    }
}
