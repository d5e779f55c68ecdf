//! The RTP fixed header, CSRC list, header extension and padding (RFC 3550 §5.1, §5.3.1) as
//! a checked view over received bytes, and a typed header that writes itself.

use crate::ext::{self, ExtensionError, Extensions};
use peerlink_proto::{Serial16, Serial32};

/// Size of the fixed header (RFC 3550 §5.1).
pub const FIXED_HEADER_LEN: usize = 12;
/// At most 15 CSRCs: the CC field has four bits.
pub const MAX_CSRCS: usize = 15;

// Field offsets in the fixed header (RFC 3550 §5.1).
const SEQUENCE_NUMBER: usize = 2;
const TIMESTAMP: usize = 4;
const SSRC: usize = 8;

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    #[error("{len} bytes is shorter than the rtp fixed header")]
    TooShort { len: usize },
    #[error("version {0} is not 2")]
    BadVersion(u8),
    #[error("{csrcs} csrcs run past the end of a {len}-byte packet")]
    TruncatedCsrcs { csrcs: usize, len: usize },
    #[error("header extension runs past the end of the packet")]
    TruncatedExtension,
    #[error("padding count {count} is zero or larger than the {available} bytes after the header")]
    BadPadding { count: usize, available: usize },
}

/// A checked RTP packet: every offset was validated in [`RtpPacket::parse`], so the
/// accessors never panic.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    /// Fixed header, CSRCs and extension: where the payload starts.
    header_len: usize,
    /// Offset of the extension's 4-byte preamble, if the X bit is set.
    extension: Option<usize>,
    padding_len: usize,
}

impl<'a> RtpPacket<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let (header_len, extension) = header_len(buf)?;
        let mut padding_len = 0;
        if buf[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let available = buf.len() - header_len;
            let count = usize::from(buf[buf.len() - 1]);
            if count == 0 || count > available {
                return Err(RtpError::BadPadding { count, available });
            }
            padding_len = count;
        }
        Ok(RtpPacket { buf, header_len, extension, padding_len })
    }

    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    pub fn sequence_number(&self) -> Serial16 {
        Serial16(u16::from_be_bytes([self.buf[SEQUENCE_NUMBER], self.buf[SEQUENCE_NUMBER + 1]]))
    }

    pub fn timestamp(&self) -> Serial32 {
        Serial32(read_u32(self.buf, TIMESTAMP))
    }

    pub fn ssrc(&self) -> u32 {
        read_u32(self.buf, SSRC)
    }

    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = usize::from(self.buf[0] & 0x0f);
        self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * n].chunks_exact(4).map(|c| read_u32(c, 0))
    }

    /// The 16-bit "defined by profile" field of the extension, if there is one: 0xBEDE for
    /// one-byte elements, 0x100x for two-byte ones (RFC 8285 §4.2, §4.3).
    pub fn extension_profile(&self) -> Option<u16> {
        self.extension.map(|at| u16::from_be_bytes([self.buf[at], self.buf[at + 1]]))
    }

    /// The extension's data after its 4-byte preamble.
    pub fn extension_data(&self) -> Option<&'a [u8]> {
        self.extension.map(|at| &self.buf[at + 4..self.header_len])
    }

    /// The RFC 8285 elements of the extension (none if absent or of another profile).
    pub fn extensions(&self) -> Extensions<'a> {
        match (self.extension_profile(), self.extension_data()) {
            (Some(profile), Some(data)) => Extensions::new(profile, data),
            _ => Extensions::empty(),
        }
    }

    /// Fixed header, CSRCs and extension together.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// The header bytes (what SRTP authenticates and AEAD takes as associated data).
    pub fn header(&self) -> &'a [u8] {
        &self.buf[..self.header_len]
    }

    /// The payload without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.buf.len() - self.padding_len]
    }

    pub fn padding_len(&self) -> usize {
        self.padding_len
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The typed header (extensions stay with the view: see [`RtpPacket::extensions`]).
    pub fn to_header(&self) -> RtpHeader {
        let mut csrcs = Csrcs::default();
        for c in self.csrcs() {
            let _ = csrcs.push(c);
        }
        RtpHeader {
            marker: self.marker(),
            payload_type: self.payload_type(),
            sequence_number: self.sequence_number(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
            csrcs,
        }
    }
}

/// Up to 15 CSRCs held inline (no allocation per packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Csrcs {
    ids: [u32; MAX_CSRCS],
    len: u8,
}

impl Csrcs {
    /// Adds one; `false` (and nothing added) when 15 are already there.
    pub fn push(&mut self, csrc: u32) -> bool {
        let Some(slot) = self.ids.get_mut(usize::from(self.len)) else { return false };
        *slot = csrc;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..usize::from(self.len)]
    }
}

/// The typed RTP header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: Serial16,
    pub timestamp: Serial32,
    pub ssrc: u32,
    pub csrcs: Csrcs,
}

impl RtpHeader {
    /// Appends the header with `extensions` (id, data) and then `payload`, padded with
    /// `padding` bytes (0: none; RFC 3550 §5.1 counts the count octet itself) to `out`.
    /// Returns the packet's length. The extension form is chosen per RFC 8285 §4: one-byte
    /// elements when every id is 1..=14 and every element 1..=16 bytes, else two-byte.
    pub fn encode(
        &self,
        extensions: &[(u8, &[u8])],
        payload: &[u8],
        padding: u8,
        out: &mut Vec<u8>,
    ) -> Result<usize, ExtensionError> {
        let start = out.len();
        let csrcs = self.csrcs.as_slice();
        let x = if extensions.is_empty() { 0 } else { 0x10 };
        let p = if padding > 0 { 0x20 } else { 0 };
        out.push(0x80 | p | x | csrcs.len() as u8);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence_number.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for c in csrcs {
            out.extend_from_slice(&c.to_be_bytes());
        }
        if !extensions.is_empty() {
            if let Err(e) = ext::write(extensions, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        out.extend_from_slice(payload);
        if padding > 0 {
            out.resize(out.len() + usize::from(padding) - 1, 0);
            out.push(padding);
        }
        Ok(out.len() - start)
    }
}

/// The length of the header (fixed part, CSRCs, extension) and the offset of the extension
/// preamble, checked against the buffer; padding is not looked at (under SRTP it is
/// encrypted).
pub fn header_len(buf: &[u8]) -> Result<(usize, Option<usize>), RtpError> {
    if buf.len() < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort { len: buf.len() });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let csrcs = usize::from(buf[0] & 0x0f);
    let header_len = FIXED_HEADER_LEN + 4 * csrcs;
    if buf.len() < header_len {
        return Err(RtpError::TruncatedCsrcs { csrcs, len: buf.len() });
    }
    if buf[0] & 0x10 == 0 {
        return Ok((header_len, None));
    }
    // RFC 3550 §5.3.1: 16-bit profile field, 16-bit length in 32-bit words.
    let pre = buf.get(header_len..header_len + 4).ok_or(RtpError::TruncatedExtension)?;
    let end = header_len + 4 + 4 * usize::from(u16::from_be_bytes([pre[2], pre[3]]));
    if buf.len() < end {
        return Err(RtpError::TruncatedExtension);
    }
    Ok((end, Some(header_len)))
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// RFC 5761 §4 with RFC 7983 §7: of datagrams whose first byte is 128..=191, RTCP has a
/// second byte (marker bit and payload type together) of 192..=223; everything else is RTP.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// RFC 7983 §7: a first byte of 128..=191 is RTP or RTCP.
pub fn is_rtp_or_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(128..=191))
}

/// Bytes of an RTP payload replaced as a packet is written: a forwarder's rewrite of a
/// codec's payload descriptor (VP8's picture id and TL0PICIDX) for one receiver, made on
/// that receiver's copy only, so that one received packet can be shared by all receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadPatch {
    bytes: [(u16, u8); PayloadPatch::MAX],
    len: u8,
}

impl PayloadPatch {
    /// At most this many bytes (a 15-bit picture id and a TL0PICIDX).
    pub const MAX: usize = 3;

    /// Sets the payload's byte at `at` to `byte`; false (and no change) when the patch is
    /// full or `at` is beyond any RTP payload.
    #[must_use]
    pub fn set(&mut self, at: usize, byte: u8) -> bool {
        let Ok(at) = u16::try_from(at) else { return false };
        if usize::from(self.len) == Self::MAX {
            return false;
        }
        self.bytes[usize::from(self.len)] = (at, byte);
        self.len += 1;
        true
    }

    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the bytes into `payload`; those beyond its end are left out.
    pub fn apply(&self, payload: &mut [u8]) {
        for &(at, byte) in &self.bytes[..usize::from(self.len)] {
            if let Some(b) = payload.get_mut(usize::from(at)) {
                *b = byte;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        let mut csrcs = Csrcs::default();
        assert!(csrcs.push(0x0102_0304));
        assert!(csrcs.push(0x0506_0708));
        RtpHeader {
            marker: true,
            payload_type: 111,
            sequence_number: Serial16(0xfffe),
            timestamp: Serial32(0xdead_beef),
            ssrc: 0x1234_5678,
            csrcs,
        }
    }

    #[test]
    fn a_header_with_csrcs_extensions_and_padding_round_trips() {
        let h = header();
        let mut out = vec![0xAA]; // appends after what is there
        let n = h.encode(&[(1, b"a"), (3, &[1, 2, 3])], b"payload", 4, &mut out).unwrap();
        assert_eq!(n, out.len() - 1);
        let p = RtpPacket::parse(&out[1..]).unwrap();
        assert_eq!(p.to_header(), h);
        assert_eq!(p.payload(), b"payload");
        assert_eq!(p.padding_len(), 4);
        assert_eq!(p.extension_profile(), Some(0xBEDE));
        let e: Vec<_> = p.extensions().map(|e| e.unwrap()).collect();
        assert_eq!(e, vec![(1, &b"a"[..]), (3, &[1, 2, 3][..])]);
    }

    #[test]
    fn a_minimal_packet_parses() {
        let mut out = Vec::new();
        RtpHeader::default().encode(&[], &[], 0, &mut out).unwrap();
        let p = RtpPacket::parse(&out).unwrap();
        assert_eq!(p.header_len(), 12);
        assert!(p.payload().is_empty());
        assert_eq!(p.extensions().count(), 0);
        assert_eq!(p.csrcs().count(), 0);
    }

    #[test]
    fn empty_truncated_and_garbage_input_is_refused() {
        assert_eq!(RtpPacket::parse(&[]).unwrap_err(), RtpError::TooShort { len: 0 });
        let mut out = Vec::new();
        header().encode(&[(1, b"abc")], b"xyz", 2, &mut out).unwrap();
        // Every truncation is an error or a shorter valid packet, never a panic.
        for n in 0..out.len() {
            let _ = RtpPacket::parse(&out[..n]);
        }
        assert!(RtpPacket::parse(&out[..12]).is_err()); // CSRCs missing
        assert_eq!(RtpPacket::parse(&[0x40; 20]).unwrap_err(), RtpError::BadVersion(1));
        // Padding count zero, or more than the packet holds.
        let mut p = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(RtpPacket::parse(&p), Err(RtpError::BadPadding { count: 0, .. })));
        *p.last_mut().unwrap() = 3;
        assert!(matches!(RtpPacket::parse(&p), Err(RtpError::BadPadding { count: 3, .. })));
        // Extension length beyond the end.
        let x = [0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0, 9];
        assert_eq!(RtpPacket::parse(&x).unwrap_err(), RtpError::TruncatedExtension);
        for buf in crate::garbage(7, 2000, 64) {
            if let Ok(p) = RtpPacket::parse(&buf) {
                let _ = (p.payload(), p.csrcs().count(), p.extensions().count(), p.to_header());
            }
        }
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_the_second_byte() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x81, 205]));
        assert!(!is_rtcp(&[0x80, 111]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert!(!is_rtcp(&[0x80]));
        assert!(is_rtp_or_rtcp(&[128]) && is_rtp_or_rtcp(&[191]));
        assert!(!is_rtp_or_rtcp(&[192]) && !is_rtp_or_rtcp(&[20]) && !is_rtp_or_rtcp(&[]));
    }

    #[test]
    fn a_payload_patch_sets_its_bytes_and_no_more() {
        let mut patch = PayloadPatch::default();
        assert!(patch.is_empty());
        assert!(patch.set(2, 0xaa) && patch.set(3, 0xbb) && patch.set(9, 0xcc));
        assert!(!patch.set(4, 0xdd), "a fourth byte does not fit");
        assert!(!PayloadPatch::default().set(70_000, 1), "beyond any payload");
        let mut payload = [0u8; 8];
        patch.apply(&mut payload);
        assert_eq!(payload, [0, 0, 0xaa, 0xbb, 0, 0, 0, 0], "the byte at 9 is beyond the end: left out");
        patch.apply(&mut []);
    }
}
