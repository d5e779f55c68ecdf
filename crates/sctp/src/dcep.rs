//! The Data Channel Establishment Protocol (RFC 8832): DATA_CHANNEL_OPEN and
//! DATA_CHANNEL_ACK, and the payload protocol identifiers of WebRTC data channels
//! (RFC 8831 §8).

use crate::send::Reliability;
use std::time::Duration;

pub const PPID_DCEP: u32 = 50;
pub const PPID_STRING: u32 = 51;
pub const PPID_BINARY: u32 = 53;
pub const PPID_STRING_EMPTY: u32 = 56;
pub const PPID_BINARY_EMPTY: u32 = 57;
/// Deprecated partial-message PPIDs some old peers still send; treated as whole messages.
pub const PPID_STRING_PARTIAL: u32 = 52;
pub const PPID_BINARY_PARTIAL: u32 = 54;

const OPEN: u8 = 0x03;
const ACK: u8 = 0x02;

/// What a DATA_CHANNEL_OPEN asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub ordered: bool,
    pub reliability: Reliability,
    pub priority: u16,
    pub label: String,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcepMessage {
    Open(Open),
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DcepError {
    #[error("empty DCEP message")]
    Empty,
    #[error("unknown DCEP message type {0}")]
    UnknownType(u8),
    #[error("DATA_CHANNEL_OPEN is truncated or its lengths do not add up")]
    Truncated,
    #[error("unknown channel type {0:#x}")]
    UnknownChannelType(u8),
}

impl DcepMessage {
    pub fn parse(b: &[u8]) -> Result<DcepMessage, DcepError> {
        match b.first() {
            None => Err(DcepError::Empty),
            Some(&ACK) => Ok(DcepMessage::Ack),
            Some(&OPEN) => {
                if b.len() < 12 {
                    return Err(DcepError::Truncated);
                }
                let channel_type = b[1];
                let priority = u16::from_be_bytes([b[2], b[3]]);
                let parameter = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                let label_len = usize::from(u16::from_be_bytes([b[8], b[9]]));
                let protocol_len = usize::from(u16::from_be_bytes([b[10], b[11]]));
                let label = b.get(12..12 + label_len).ok_or(DcepError::Truncated)?;
                let protocol =
                    b.get(12 + label_len..12 + label_len + protocol_len).ok_or(DcepError::Truncated)?;
                let reliability = match channel_type & 0x7f {
                    0x00 => Reliability::Reliable,
                    0x01 => Reliability::MaxRetransmits(parameter.min(u32::from(u16::MAX)) as u16),
                    0x02 => Reliability::MaxLifetime(Duration::from_millis(u64::from(parameter))),
                    _ => return Err(DcepError::UnknownChannelType(channel_type)),
                };
                Ok(DcepMessage::Open(Open {
                    ordered: channel_type & 0x80 == 0,
                    reliability,
                    priority,
                    // Labels are UTF-8 by spec; anything else is kept, lossily.
                    label: String::from_utf8_lossy(label).into_owned(),
                    protocol: String::from_utf8_lossy(protocol).into_owned(),
                }))
            }
            Some(&other) => Err(DcepError::UnknownType(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            DcepMessage::Ack => vec![ACK],
            DcepMessage::Open(o) => {
                let (kind, parameter) = match o.reliability {
                    Reliability::Reliable => (0x00, 0),
                    Reliability::MaxRetransmits(n) => (0x01, u32::from(n)),
                    Reliability::MaxLifetime(d) => (0x02, d.as_millis().min(u128::from(u32::MAX)) as u32),
                };
                let kind = if o.ordered { kind } else { kind | 0x80 };
                let (label, protocol) = (o.label.as_bytes(), o.protocol.as_bytes());
                let mut b = Vec::with_capacity(12 + label.len() + protocol.len());
                b.push(OPEN);
                b.push(kind);
                b.extend_from_slice(&o.priority.to_be_bytes());
                b.extend_from_slice(&parameter.to_be_bytes());
                b.extend_from_slice(&(label.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
                b.extend_from_slice(&(protocol.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
                b.extend_from_slice(&label[..label.len().min(usize::from(u16::MAX))]);
                b.extend_from_slice(&protocol[..protocol.len().min(usize::from(u16::MAX))]);
                b
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips_for_every_channel_type() {
        for ordered in [true, false] {
            for reliability in [
                Reliability::Reliable,
                Reliability::MaxRetransmits(3),
                Reliability::MaxLifetime(Duration::from_millis(1500)),
            ] {
                let m = DcepMessage::Open(Open {
                    ordered,
                    reliability,
                    priority: 256,
                    label: "chat ✓".into(),
                    protocol: "".into(),
                });
                assert_eq!(DcepMessage::parse(&m.encode()), Ok(m));
            }
        }
        assert_eq!(DcepMessage::parse(&[ACK]), Ok(DcepMessage::Ack));
    }

    #[test]
    fn a_browser_open_parses() {
        // Chromium's OPEN for `createDataChannel("chat")`: reliable ordered, priority 256.
        let bytes = [3, 0, 1, 0, 0, 0, 0, 0, 0, 4, 0, 0, b'c', b'h', b'a', b't'];
        let DcepMessage::Open(o) = DcepMessage::parse(&bytes).unwrap() else { panic!() };
        assert_eq!(
            (o.label.as_str(), o.ordered, o.reliability, o.priority),
            ("chat", true, Reliability::Reliable, 256)
        );
    }

    #[test]
    fn empty_truncated_and_garbage_are_errors() {
        assert_eq!(DcepMessage::parse(&[]), Err(DcepError::Empty));
        assert_eq!(DcepMessage::parse(&[9]), Err(DcepError::UnknownType(9)));
        let good = DcepMessage::Open(Open {
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 0,
            label: "label".into(),
            protocol: "proto".into(),
        })
        .encode();
        for n in 1..good.len() {
            assert!(DcepMessage::parse(&good[..n]).is_err(), "cut at {n}");
        }
        let mut bad_type = good.clone();
        bad_type[1] = 0x05;
        assert_eq!(DcepMessage::parse(&bad_type), Err(DcepError::UnknownChannelType(5)));
    }
}
