//! The STUN header and a checked view over a whole message (RFC 8489 §5, §14).

use crate::attribute::{Attribute, AttributeError, AttributeType};
use crate::integrity::{Key, FINGERPRINT_XOR};
use hmac::{Hmac, Mac};
use std::fmt;

/// RFC 8489 §5: the fixed value in bytes 4..8 of every message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;
/// Largest message the 16-bit length field allows.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + u16::MAX as usize;

// Field offsets in the header (RFC 8489 §5, Figure 2).
const MESSAGE_TYPE: usize = 0;
const MESSAGE_LENGTH: usize = 2;
const COOKIE: usize = 4;
const TRANSACTION_ID: usize = 8;

/// Message class: the two C bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// A STUN method (12 bits). Known methods are associated constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// RFC 8489.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 (TURN).
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// RFC 6062 (TURN TCP allocations).
    pub const CONNECT: Method = Method(0x00A);
    pub const CONNECTION_BIND: Method = Method(0x00B);
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A method from its 12-bit number; `None` when it does not fit in 12 bits.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0xFFF {
            Some(Method(value))
        } else {
            None
        }
    }

    pub const fn value(self) -> u16 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Method::BINDING => "Binding",
            Method::ALLOCATE => "Allocate",
            Method::REFRESH => "Refresh",
            Method::SEND => "Send",
            Method::DATA => "Data",
            Method::CREATE_PERMISSION => "CreatePermission",
            Method::CHANNEL_BIND => "ChannelBind",
            Method::CONNECT => "Connect",
            Method::CONNECTION_BIND => "ConnectionBind",
            Method::CONNECTION_ATTEMPT => "ConnectionAttempt",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Method({:#05x})", self.0),
        }
    }
}

/// RFC 8489 §5: the method bits M0..M11 are interleaved with the class bits C0, C1.
pub fn message_type(class: Class, method: Method) -> u16 {
    let m = method.0;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_message_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let c = ((t >> 4) & 1) | ((t >> 7) & 2);
    (Class::from_bits(c), Method(m))
}

/// The 96-bit transaction id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why bytes are not a STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{len} bytes is shorter than a stun header")]
    TooShort { len: usize },
    #[error("first two bits are not zero")]
    NotStun,
    #[error("bad magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    #[error("header says {declared} bytes of attributes, {actual} present")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("attribute at offset {offset} runs past the end of the message")]
    AttributeOverrun { offset: usize },
}

/// A checked view of the 20-byte header: enough to identify a transaction even when the
/// rest of the message is broken.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    buf: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks the fixed parts (RFC 8489 §5): leading zero bits and the magic cookie.
    pub fn parse(buf: &'a [u8]) -> Result<Header<'a>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: buf.len() });
        }
        if buf[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        let cookie = u32::from_be_bytes([buf[COOKIE], buf[COOKIE + 1], buf[COOKIE + 2], buf[COOKIE + 3]]);
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadMagicCookie(cookie));
        }
        Ok(Header { buf: &buf[..HEADER_LEN] })
    }

    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.buf[MESSAGE_TYPE], self.buf[MESSAGE_TYPE + 1]])
    }

    pub fn class(&self) -> Class {
        split_message_type(self.message_type()).0
    }

    pub fn method(&self) -> Method {
        split_message_type(self.message_type()).1
    }

    /// The length field: bytes of attributes after the header.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.buf[MESSAGE_LENGTH], self.buf[MESSAGE_LENGTH + 1]])
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0; 12];
        id.copy_from_slice(&self.buf[TRANSACTION_ID..HEADER_LEN]);
        TransactionId(id)
    }
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("class", &self.class())
            .field("method", &self.method())
            .field("length", &self.length())
            .field("transaction_id", &self.transaction_id())
            .finish()
    }
}

/// One attribute as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub typ: AttributeType,
    pub value: &'a [u8],
}

/// A checked view of a whole STUN message.
///
/// The constructor validates the header and walks every attribute once, so accessors never
/// fail on structure. Following RFC 8489 §14.5–§14.7, attributes after MESSAGE-INTEGRITY are
/// ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, after MESSAGE-INTEGRITY-SHA256
/// only FINGERPRINT counts, and nothing after FINGERPRINT counts.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses a message that must fill `buf` exactly (one UDP datagram, or one frame cut
    /// from a stream with [`crate::framing`]).
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let header = Header::parse(buf)?;
        let length = header.length();
        if length % 4 != 0 {
            return Err(DecodeError::UnalignedLength(length));
        }
        let declared = usize::from(length);
        let actual = buf.len() - HEADER_LEN;
        if declared != actual {
            return Err(DecodeError::LengthMismatch { declared, actual });
        }
        let mut message = Message { buf, integrity: None, integrity_sha256: None, fingerprint: None };
        for item in (Walk { buf, pos: HEADER_LEN }) {
            let (offset, attribute) = item?;
            match attribute.typ {
                AttributeType::MESSAGE_INTEGRITY
                    if message.integrity.is_none() && message.integrity_sha256.is_none() =>
                {
                    message.integrity = Some(offset)
                }
                AttributeType::MESSAGE_INTEGRITY_SHA256 if message.integrity_sha256.is_none() => {
                    message.integrity_sha256 = Some(offset)
                }
                AttributeType::FINGERPRINT => {
                    message.fingerprint = Some(offset);
                    break;
                }
                _ => {}
            }
        }
        Ok(message)
    }

    pub fn header(&self) -> Header<'a> {
        Header { buf: &self.buf[..HEADER_LEN] }
    }

    pub fn class(&self) -> Class {
        self.header().class()
    }

    pub fn method(&self) -> Method {
        self.header().method()
    }

    pub fn transaction_id(&self) -> TransactionId {
        self.header().transaction_id()
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The attributes that count, in wire order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            walk: Walk { buf: self.buf, pos: HEADER_LEN },
            seen_integrity: false,
            seen_integrity_sha256: false,
            done: false,
        }
    }

    /// The first attribute of a type.
    pub fn attribute(&self, typ: AttributeType) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }

    /// Decodes an attribute's value into its typed form.
    pub fn decode(&self, raw: RawAttribute<'a>) -> Result<Attribute<'a>, AttributeError> {
        Attribute::decode(raw.typ, raw.value, &self.transaction_id())
    }

    /// Finds and decodes the first attribute of a type.
    pub fn get(&self, typ: AttributeType) -> Option<Result<Attribute<'a>, AttributeError>> {
        self.attribute(typ).map(|raw| self.decode(raw))
    }

    /// Comprehension-required attribute types (0x0000–0x7FFF) this codec does not know: a
    /// server answers a request carrying any with 420 (RFC 8489 §6.3.1).
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = AttributeType> + 'a {
        self.attributes().map(|a| a.typ).filter(|t| t.is_comprehension_required() && !t.is_known())
    }

    /// Fills `out` with the distinct unknown comprehension-required types (at most
    /// `out.len()`, the rest dropped) and returns them, for UNKNOWN-ATTRIBUTES.
    pub fn collect_unknown_comprehension_required<'o>(
        &self,
        out: &'o mut [AttributeType],
    ) -> &'o [AttributeType] {
        let mut count = 0;
        for typ in self.unknown_comprehension_required() {
            if count < out.len() && !out[..count].contains(&typ) {
                out[count] = typ;
                count += 1;
            }
        }
        &out[..count]
    }

    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XORed with 0x5354554e.
    /// `false` when there is no FINGERPRINT or it does not match.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(value) = self.fingerprint.and_then(|at| self.value_at(at, 4)) else { return false };
        let at = self.fingerprint.unwrap_or_default();
        let expected = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        let mut crc = crc32fast::Hasher::new();
        self.feed_up_to(at, 8, |chunk| crc.update(chunk));
        crc.finalize() ^ FINGERPRINT_XOR == expected
    }

    /// RFC 8489 §14.5: HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, with the length
    /// field covering MESSAGE-INTEGRITY itself. Constant-time comparison.
    pub fn verify_integrity(&self, key: &Key) -> bool {
        let Some(at) = self.integrity else { return false };
        let Some(tag) = self.value_at(at, 20) else { return false };
        let mut mac =
            <Hmac<sha1::Sha1> as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        self.feed_up_to(at, 24, |chunk| mac.update(chunk));
        mac.verify_slice(tag).is_ok()
    }

    /// RFC 8489 §14.6: HMAC-SHA256, possibly truncated to 16..=32 bytes (leftmost kept).
    pub fn verify_integrity_sha256(&self, key: &Key) -> bool {
        let Some(at) = self.integrity_sha256 else { return false };
        let len = usize::from(u16::from_be_bytes([self.buf[at + 2], self.buf[at + 3]]));
        if !(16..=32).contains(&len) || len % 4 != 0 {
            return false;
        }
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        self.feed_up_to(at, 4 + len, |chunk| mac.update(chunk));
        mac.verify_truncated_left(&self.buf[at + 4..at + 4 + len]).is_ok()
    }

    /// The value of the attribute at `at` if its length field says exactly `len`.
    fn value_at(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        let declared = usize::from(u16::from_be_bytes([*self.buf.get(at + 2)?, *self.buf.get(at + 3)?]));
        if declared != len {
            return None;
        }
        self.buf.get(at + 4..at + 4 + len)
    }

    /// Feeds the header and the attributes before `at` to `sink`, with the length field set
    /// as though the message ended `attribute_len` bytes after `at`.
    fn feed_up_to(&self, at: usize, attribute_len: usize, mut sink: impl FnMut(&[u8])) {
        // `at + attribute_len` lies inside the message, whose length fits in u16.
        let length = (at + attribute_len - HEADER_LEN) as u16;
        sink(&self.buf[..MESSAGE_LENGTH]);
        sink(&length.to_be_bytes());
        sink(&self.buf[COOKIE..at]);
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("class", &self.class())
            .field("method", &self.method())
            .field("transaction_id", &self.transaction_id())
            .field("attributes", &self.attributes().map(|a| a.typ).collect::<Vec<_>>())
            .finish()
    }
}

/// TLV walk over attributes; yields each attribute with its offset.
#[derive(Clone)]
struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Walk<'a> {
    type Item = Result<(usize, RawAttribute<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let rest = self.buf.get(start..)?;
        if rest.is_empty() {
            return None;
        }
        let overrun = Err(DecodeError::AttributeOverrun { offset: start });
        if rest.len() < 4 {
            self.pos = self.buf.len();
            return Some(overrun);
        }
        let typ = AttributeType(u16::from_be_bytes([rest[0], rest[1]]));
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = (len + 3) & !3;
        let Some(value) = rest.get(4..4 + len) else {
            self.pos = self.buf.len();
            return Some(overrun);
        };
        if rest.len() < 4 + padded {
            self.pos = self.buf.len();
            return Some(overrun);
        }
        self.pos = start + 4 + padded;
        Some(Ok((start, RawAttribute { typ, value })))
    }
}

/// Iterator over the attributes of a [`Message`] that count.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    walk: Walk<'a>,
    seen_integrity: bool,
    seen_integrity_sha256: bool,
    done: bool,
}

impl fmt::Debug for Walk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Walk(at {})", self.pos)
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        while !self.done {
            // The walk was validated when the message was parsed.
            let (_, attribute) = self.walk.next()?.ok()?;
            match attribute.typ {
                AttributeType::FINGERPRINT => {
                    self.done = true;
                    return Some(attribute);
                }
                AttributeType::MESSAGE_INTEGRITY_SHA256 if !self.seen_integrity_sha256 => {
                    self.seen_integrity_sha256 = true;
                    return Some(attribute);
                }
                AttributeType::MESSAGE_INTEGRITY if !self.seen_integrity && !self.seen_integrity_sha256 => {
                    self.seen_integrity = true;
                    return Some(attribute);
                }
                _ if self.seen_integrity || self.seen_integrity_sha256 => continue,
                _ => return Some(attribute),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_interleaves_class_and_method_bits() {
        assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
        assert_eq!(message_type(Class::Indication, Method::BINDING), 0x0011);
        assert_eq!(message_type(Class::SuccessResponse, Method::BINDING), 0x0101);
        assert_eq!(message_type(Class::ErrorResponse, Method::BINDING), 0x0111);
        assert_eq!(message_type(Class::Request, Method::ALLOCATE), 0x0003);
        assert_eq!(message_type(Class::Indication, Method::SEND), 0x0016);
        assert_eq!(message_type(Class::Indication, Method::DATA), 0x0017);
        for m in [0u16, 1, 0x7F, 0x80, 0xABC, 0xFFF] {
            for c in [Class::Request, Class::Indication, Class::SuccessResponse, Class::ErrorResponse] {
                let t = message_type(c, Method(m));
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (c, Method(m)));
            }
        }
    }

    #[test]
    fn rejects_empty_and_short_input() {
        assert_eq!(Message::parse(&[]).unwrap_err(), DecodeError::TooShort { len: 0 });
        assert_eq!(Message::parse(&[0; 19]).unwrap_err(), DecodeError::TooShort { len: 19 });
    }

    fn header(length: u16) -> Vec<u8> {
        let mut buf = vec![0, 1];
        buf.extend_from_slice(&length.to_be_bytes());
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&[7; 12]);
        buf
    }

    #[test]
    fn rejects_bad_leading_bits_cookie_and_lengths() {
        let mut buf = header(0);
        buf[0] = 0x80;
        assert_eq!(Message::parse(&buf).unwrap_err(), DecodeError::NotStun);
        let mut buf = header(0);
        buf[4] = 0;
        assert!(matches!(Message::parse(&buf).unwrap_err(), DecodeError::BadMagicCookie(_)));
        assert_eq!(Message::parse(&header(2)).unwrap_err(), DecodeError::UnalignedLength(2));
        assert_eq!(
            Message::parse(&header(4)).unwrap_err(),
            DecodeError::LengthMismatch { declared: 4, actual: 0 }
        );
        let mut long = header(0);
        long.extend_from_slice(&[0; 4]);
        assert_eq!(
            Message::parse(&long).unwrap_err(),
            DecodeError::LengthMismatch { declared: 0, actual: 4 }
        );
    }

    #[test]
    fn rejects_attribute_running_past_the_end() {
        let mut buf = header(8);
        buf.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, b'a', b'b', b'c', b'd']);
        assert_eq!(Message::parse(&buf).unwrap_err(), DecodeError::AttributeOverrun { offset: 20 });
        // A value that fits but whose padding does not.
        let mut buf = header(8);
        buf.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, b'a', b'b', b'c', b'd']);
        assert!(Message::parse(&buf).is_ok());
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_rejected_without_panic() {
        let mut buf = header(12);
        buf.extend_from_slice(&[0x80, 0x22, 0x00, 0x03, b'a', b'b', b'c', 0, 0x00, 0x25, 0, 0]);
        assert!(Message::parse(&buf).is_ok());
        for cut in 0..buf.len() {
            assert!(Message::parse(&buf[..cut]).is_err(), "prefix of {cut} bytes");
        }
    }

    #[test]
    fn fingerprint_and_integrity_of_wrong_length_do_not_verify() {
        // Found by fuzzing: a FINGERPRINT with a zero-length value, an integrity of 4 bytes.
        for attr in [[0x80, 0x28, 0x00, 0x00], [0x00, 0x08, 0x00, 0x00]] {
            let mut buf = header(4);
            buf.extend_from_slice(&attr);
            let m = Message::parse(&buf).unwrap();
            assert!(!m.verify_fingerprint());
            assert!(!m.verify_integrity(&Key::from_bytes(b"k")));
        }
        let mut buf = header(8);
        buf.extend_from_slice(&[0x00, 0x08, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(!Message::parse(&buf).unwrap().verify_integrity(&Key::from_bytes(b"k")));
    }

    #[test]
    fn ignores_attributes_after_integrity_and_fingerprint() {
        let mut buf = header(0);
        let attrs: &[u8] = &[
            0x00, 0x06, 0x00, 0x01, b'u', 0, 0, 0, // USERNAME
            0x00, 0x08, 0x00, 0x14, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // MI
            0x00, 0x14, 0x00, 0x01, b'r', 0, 0, 0, // REALM: ignored
            0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0, // FINGERPRINT
            0x00, 0x15, 0x00, 0x01, b'n', 0, 0, 0, // NONCE: ignored
        ];
        buf.extend_from_slice(attrs);
        let len = (attrs.len() as u16).to_be_bytes();
        buf[2..4].copy_from_slice(&len);
        let message = Message::parse(&buf).unwrap();
        let types: Vec<_> = message.attributes().map(|a| a.typ).collect();
        assert_eq!(
            types,
            [AttributeType::USERNAME, AttributeType::MESSAGE_INTEGRITY, AttributeType::FINGERPRINT]
        );
        assert!(message.attribute(AttributeType::REALM).is_none());
        assert!(message.attribute(AttributeType::NONCE).is_none());
    }
}
