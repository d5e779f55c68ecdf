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
//! ```no_run
//! use peerlink_sctp::{Association, Reliability, SctpConfig};
//! use std::time::Instant;
//!
//! # fn record_from_dtls() -> Vec<u8> { Vec::new() }
//! # fn seal_and_send(_packet: &[u8]) {}
//! # fn main() -> Result<(), peerlink_sctp::SendError> {
//! let now = Instant::now();
//! let mut sctp = Association::new(now, SctpConfig::default(), [7; 32]); // seed from a CSPRNG
//! sctp.connect(now); // both WebRTC peers do
//! let mut buf = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     sctp.handle_receive(now, &record_from_dtls()); // one packet per DTLS record
//!     if sctp.poll_timeout().is_some_and(|t| t <= now) {
//!         sctp.handle_timeout(now);
//!     }
//!     while sctp.poll_transmit(now, &mut buf).is_some() {
//!         seal_and_send(&buf);
//!         buf.clear();
//!     }
//!     while let Some(m) = sctp.poll_message() {
//!         println!("stream {} ppid {}: {} bytes", m.stream, m.ppid, m.data.len());
//!     }
//!     if sctp.is_established() {
//!         sctp.send(now, 0, 51, b"hello".to_vec(), true, Reliability::Reliable)?;
//!     }
//! }
//! # }
//! ```

pub mod assoc;
mod bbr;
pub mod channels;
pub mod chunk;
pub mod dcep;
pub mod packet;
mod recv;
mod send;

pub use assoc::{Association, SctpCloseReason, SctpConfig, SctpEvent, SctpState, SctpStats, SendError};
pub use channels::{ChannelConfig, ChannelError, ChannelEvent, ChannelState, DataChannels};
pub use recv::{Message, ReceiveError};
pub use send::{CongestionControl, Reliability};
