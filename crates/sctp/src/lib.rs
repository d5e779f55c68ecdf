//! SCTP as WebRTC uses it, our own implementation, sans-IO.
//!
//! - [`packet`], [`chunk`]: the wire format (RFC 9260 §3, RFC 3758 FORWARD TSN, RFC 6525
//!   RE-CONFIG), checked zero-copy parsing and writers.
//! - [`assoc`]: one association: handshake with a signed cookie (simultaneous open too),
//!   verification tags, SACKs, stream reset, ABORT, SHUTDOWN.
//! - `send` and `recv`: the data path (fragmentation, retransmission, congestion control,
//!   PR-SCTP; reassembly, ordered and unordered delivery).
//! - [`dcep`], [`channels`]: WebRTC data channels (RFC 8831, RFC 8832) on top.
//!
//! ```text
//! let mut sctp = Association::new(now, SctpConfig::default(), seed);
//! sctp.connect(now);                                    // both WebRTC peers do
//! sctp.handle_receive(now, &dtls_record);               // one packet per DTLS record
//! while let Some(t) = sctp.poll_transmit(now, &mut buf) { dtls.seal(&buf, &mut out)?; buf.clear() }
//! while let Some(m) = sctp.poll_message() { ... }       // stream, ppid, data
//! sctp.send(now, stream, ppid, data, ordered, Reliability::Reliable)?;
//! ```

pub mod assoc;
pub mod channels;
pub mod chunk;
pub mod dcep;
pub mod packet;
mod recv;
mod send;

pub use assoc::{Association, SctpCloseReason, SctpConfig, SctpEvent, SctpState, SctpStats, SendError};
pub use channels::{ChannelConfig, ChannelError, ChannelEvent, ChannelState, DataChannels};
pub use recv::{Message, ReceiveError};
pub use send::Reliability;
