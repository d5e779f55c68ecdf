//! Encoding messages into the caller's buffer.

use crate::attribute::{padded, Attribute, AttributeType};
use crate::integrity::{Key, FINGERPRINT_XOR};
use crate::message::{message_type, Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN};
use hmac::{Hmac, Mac};

/// A caller mistake while building a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    #[error("message would exceed {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    #[error("attribute value of {0} bytes does not fit the 16-bit length field")]
    ValueTooLong(usize),
    #[error("nothing may follow FINGERPRINT")]
    AfterFingerprint,
}

/// Appends one message to a caller-owned `Vec<u8>`; with enough capacity it never allocates.
///
/// ```
/// use peerlink_stun::{Attribute, Class, Message, MessageWriter, Method, TransactionId};
/// let mut buf = Vec::with_capacity(64);
/// let tid = TransactionId([1; 12]);
/// let mut w = MessageWriter::new(&mut buf, Class::SuccessResponse, Method::BINDING, tid);
/// w.attribute(&Attribute::XorMappedAddress("192.0.2.1:32853".parse().unwrap())).unwrap();
/// w.fingerprint().unwrap();
/// let len = w.finish();
/// assert_eq!(len, buf.len());
/// let m = Message::parse(&buf).unwrap();
/// assert!(m.verify_fingerprint());
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    tid: TransactionId,
    sealed: bool,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `buf` (which is not cleared, so several messages can
    /// be queued back to back for a stream).
    pub fn new(buf: &'b mut Vec<u8>, class: Class, method: Method, tid: TransactionId) -> MessageWriter<'b> {
        let start = buf.len();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageWriter { buf, start, tid, sealed: false }
    }

    /// Appends an attribute. MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
    /// are written as given; use the dedicated methods to compute them.
    pub fn attribute(&mut self, attribute: &Attribute<'_>) -> Result<(), UsageError> {
        let len = attribute.value_len();
        let at = self.reserve(attribute.typ(), len)?;
        attribute.write_value(self.buf, &self.tid);
        debug_assert_eq!(self.buf.len() - at, len);
        self.pad();
        Ok(())
    }

    /// RFC 8489 §14.5: HMAC-SHA1 over the message so far, with the length field already
    /// counting this attribute.
    pub fn message_integrity(&mut self, key: &Key) -> Result<(), UsageError> {
        self.reserve(AttributeType::MESSAGE_INTEGRITY, 20)?;
        let mut mac =
            <Hmac<sha1::Sha1> as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        mac.update(&self.buf[self.start..self.buf.len() - 4]);
        let tag = mac.finalize().into_bytes();
        self.buf.extend_from_slice(&tag);
        Ok(())
    }

    /// RFC 8489 §14.6: HMAC-SHA256, full 32 bytes.
    pub fn message_integrity_sha256(&mut self, key: &Key) -> Result<(), UsageError> {
        self.reserve(AttributeType::MESSAGE_INTEGRITY_SHA256, 32)?;
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
        mac.update(&self.buf[self.start..self.buf.len() - 4]);
        let tag = mac.finalize().into_bytes();
        self.buf.extend_from_slice(&tag);
        Ok(())
    }

    /// RFC 8489 §14.7: CRC-32 XOR 0x5354554e; must be the last attribute.
    pub fn fingerprint(&mut self) -> Result<(), UsageError> {
        self.reserve(AttributeType::FINGERPRINT, 4)?;
        let crc = crc32fast::hash(&self.buf[self.start..self.buf.len() - 4]) ^ FINGERPRINT_XOR;
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self.sealed = true;
        Ok(())
    }

    /// Ends the message; returns its length in bytes.
    pub fn finish(self) -> usize {
        self.buf.len() - self.start
    }

    /// Writes the attribute header and grows the length field to cover the padded value.
    fn reserve(&mut self, typ: AttributeType, len: usize) -> Result<usize, UsageError> {
        if self.sealed {
            return Err(UsageError::AfterFingerprint);
        }
        let value_len = u16::try_from(len).map_err(|_| UsageError::ValueTooLong(len))?;
        let total = self.buf.len() - self.start + 4 + padded(len);
        if total > MAX_MESSAGE_LEN {
            return Err(UsageError::TooLong);
        }
        let length = ((total - HEADER_LEN) as u16).to_be_bytes();
        self.buf[self.start + 2..self.start + 4].copy_from_slice(&length);
        self.buf.extend_from_slice(&typ.0.to_be_bytes());
        self.buf.extend_from_slice(&value_len.to_be_bytes());
        Ok(self.buf.len())
    }

    fn pad(&mut self) {
        let len = self.buf.len() - self.start;
        self.buf.resize(self.start + padded(len), 0);
    }
}
