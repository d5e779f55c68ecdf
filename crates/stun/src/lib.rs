//! STUN messages for Peerlink: RFC 8489 with the attributes of TURN (RFC 8656, RFC 6062,
//! RFC 6156) and ICE (RFC 8445). No I/O.
//!
//! - [`Message`] is a checked zero-copy view (header and attribute walk validated once);
//!   [`Attribute`] is the typed value of one attribute.
//! - [`MessageWriter`] encodes into a caller-owned `Vec<u8>` and computes
//!   MESSAGE-INTEGRITY (§14.5), MESSAGE-INTEGRITY-SHA256 (§14.6) and FINGERPRINT (§14.7).
//! - [`Key`] covers short-term and long-term credentials (§9.1, §9.2) with MD5 and SHA-256
//!   password algorithms; strings are prepared with OpaqueString (RFC 8265 §4.2).
//! - [`binding::respond`] is a stateless Binding server (§6.3); [`framing`] cuts messages
//!   out of a TCP stream (§6.2.2).
//!
//! Out of scope here: transactions and retransmission (the ICE and TURN clients own
//! them), DNS discovery (§8), and the legacy RFC 3489 message format (no magic cookie),
//! which is treated as "not STUN".
//!
//! A round trip allocates nothing once the output buffer has capacity:
//!
//! ```
//! use peerlink_stun::{binding, Attribute, AttributeType, Class, Message, MessageWriter, Method, TransactionId};
//! let (mut request, mut response) = (Vec::with_capacity(64), Vec::with_capacity(64));
//! MessageWriter::new(&mut request, Class::Request, Method::BINDING, TransactionId([7; 12])).finish();
//! let client = "198.51.100.2:5000".parse().unwrap();
//! assert_eq!(binding::respond(&request, client, &mut response), binding::Outcome::Answered);
//! let answer = Message::parse(&response).unwrap();
//! let mapped = answer.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap();
//! assert_eq!(mapped, Attribute::XorMappedAddress(client));
//! ```

pub mod attribute;
pub mod binding;
pub mod framing;
pub mod integrity;
pub mod message;
pub mod writer;

pub use attribute::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, AttributeError, AttributeType, ErrorCode,
    TypeList,
};
pub use integrity::{opaque_string, userhash, Key, PasswordAlgorithm, PrepError};
pub use message::{
    Class, DecodeError, Header, Message, Method, RawAttribute, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};
pub use writer::{MessageWriter, UsageError};
