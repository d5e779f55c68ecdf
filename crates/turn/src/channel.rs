//! ChannelData messages (RFC 8656 §12.4) and framing of a TURN stream (RFC 8656 §12.5:
//! STUN messages and ChannelData back to back; over TCP and TLS, ChannelData is padded to
//! a multiple of four bytes).

use peerlink_stun::framing::{next_frame as next_stun_frame, Frame};

/// Channel numbers clients may bind. RFC 8656 §12 narrowed the range to 0x4000–0x4FFF, but
/// RFC 5766 clients (coturn's among them) still pick from 0x4000–0x7FFF, and every number
/// with the leading bits 01 is unambiguous on the wire, so the old range is accepted.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;
pub const CHANNEL_HEADER_LEN: usize = 4;

/// A checked view of a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub payload: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message from a datagram or a frame; trailing padding is allowed.
    /// `None` when the first two bits are not 01 or the length runs past the end.
    pub fn parse(buf: &'a [u8]) -> Option<ChannelData<'a>> {
        let header = buf.get(..CHANNEL_HEADER_LEN)?;
        if header[0] & 0xC0 != 0x40 {
            return None;
        }
        let channel = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let payload = buf.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len)?;
        Some(ChannelData { channel, payload })
    }

    /// Appends a ChannelData message; `pad` for stream transports.
    pub fn encode(channel: u16, payload: &[u8], pad: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        if pad {
            out.resize(out.len() + (4 - payload.len() % 4) % 4, 0);
        }
    }
}

/// Length of the first STUN message or ChannelData frame at the front of a TURN stream.
pub fn next_stream_frame(buf: &[u8]) -> Frame {
    match buf.first() {
        Some(b) if b & 0xC0 == 0x40 => {
            if buf.len() < CHANNEL_HEADER_LEN {
                return Frame::Incomplete(CHANNEL_HEADER_LEN);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let total = CHANNEL_HEADER_LEN + len + (4 - len % 4) % 4;
            if buf.len() >= total {
                Frame::Complete(total)
            } else {
                Frame::Incomplete(total)
            }
        }
        _ => next_stun_frame(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_padding() {
        for pad in [false, true] {
            let mut out = Vec::new();
            ChannelData::encode(0x4001, b"hello", pad, &mut out);
            assert_eq!(out.len(), if pad { 12 } else { 9 });
            let cd = ChannelData::parse(&out).unwrap();
            assert_eq!((cd.channel, cd.payload), (0x4001, &b"hello"[..]));
        }
    }

    #[test]
    fn rejects_short_and_non_channel_input() {
        assert_eq!(ChannelData::parse(&[]), None);
        assert_eq!(ChannelData::parse(&[0x40, 0x00, 0x00]), None);
        assert_eq!(ChannelData::parse(&[0x40, 0x00, 0x00, 0x05, 1, 2]), None);
        assert_eq!(ChannelData::parse(&[0x00, 0x01, 0x00, 0x00]), None);
        assert_eq!(ChannelData::parse(&[0x80, 0x01, 0x00, 0x00]), None);
    }

    #[test]
    fn frames_mixed_stream() {
        let mut stream = Vec::new();
        ChannelData::encode(0x4000, b"abcde", true, &mut stream);
        let stun_at = stream.len();
        let mut stun = Vec::new();
        peerlink_stun::MessageWriter::new(
            &mut stun,
            peerlink_stun::Class::Indication,
            peerlink_stun::Method::SEND,
            peerlink_stun::TransactionId([0; 12]),
        )
        .finish();
        stream.extend_from_slice(&stun);
        assert_eq!(next_stream_frame(&stream), Frame::Complete(12));
        assert_eq!(next_stream_frame(&stream[stun_at..]), Frame::Complete(20));
        assert_eq!(next_stream_frame(&stream[..3]), Frame::Incomplete(4));
        assert_eq!(next_stream_frame(&stream[..6]), Frame::Incomplete(12));
        assert_eq!(next_stream_frame(b"\xff\xff"), Frame::Invalid);
    }
}
