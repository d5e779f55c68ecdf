//! Cutting STUN messages out of a byte stream (RFC 8489 §6.2.2: over TCP and TLS, messages
//! follow each other with no extra framing; the header's length field delimits them).

use crate::message::{HEADER_LEN, MAGIC_COOKIE};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes is at the front.
    Complete(usize),
    /// More bytes are needed; at least this many in total.
    Incomplete(usize),
    /// The stream does not carry STUN here; the connection should be closed.
    Invalid,
}

/// Looks at the front of `buf` and tells how long the first message is.
pub fn next_frame(buf: &[u8]) -> Frame {
    if buf.is_empty() {
        return Frame::Incomplete(HEADER_LEN);
    }
    if buf[0] & 0xC0 != 0 {
        return Frame::Invalid;
    }
    if buf.len() < 4 {
        return Frame::Incomplete(HEADER_LEN);
    }
    let length = u16::from_be_bytes([buf[2], buf[3]]);
    if length % 4 != 0 {
        return Frame::Invalid;
    }
    if buf.len() >= 8 && buf[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return Frame::Invalid;
    }
    let total = HEADER_LEN + usize::from(length);
    if buf.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Incomplete(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attr_len: u16) -> Vec<u8> {
        let mut m = vec![0, 1];
        m.extend_from_slice(&attr_len.to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[0; 12]);
        m.resize(HEADER_LEN + usize::from(attr_len), 0);
        m
    }

    #[test]
    fn finds_back_to_back_messages_and_split_reads() {
        let mut stream = message(8);
        stream.extend(message(0));
        assert_eq!(next_frame(&stream), Frame::Complete(28));
        assert_eq!(next_frame(&stream[28..]), Frame::Complete(20));
        for cut in 0..28 {
            assert!(matches!(next_frame(&stream[..cut]), Frame::Incomplete(_)), "cut at {cut}");
        }
        assert_eq!(next_frame(&stream[..10]), Frame::Incomplete(28));
    }

    #[test]
    fn rejects_non_stun_streams() {
        assert_eq!(next_frame(b"GET / HTTP/1.1\r\n"), Frame::Invalid);
        assert_eq!(next_frame(&[0, 1, 0, 3]), Frame::Invalid);
        let mut bad_cookie = message(0);
        bad_cookie[5] = 0;
        assert_eq!(next_frame(&bad_cookie), Frame::Invalid);
    }
}
