//! DTLS 1.2 (RFC 6347) for Peerlink, sans-IO, over OpenSSL.
//!
//! - [`cert`]: per-peer self-signed ECDSA P-256 certificates and their fingerprints in the
//!   SDP form of RFC 8122.
//! - [`conn`]: one association: client or server, the peer's certificate checked against
//!   the fingerprint from its description during the handshake, AEAD suites first,
//!   extended master secret (OpenSSL's default), use_srtp with the RFC 5764 key export,
//!   close_notify; retransmission on our own timers so it runs under a simulated clock.
//!
//! ```no_run
//! use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Fingerprint, Role};
//! use std::time::Instant;
//!
//! # fn their_fingerprint() -> Fingerprint { unimplemented!() } // from their SDP
//! # fn datagram_from_the_peer() -> Vec<u8> { Vec::new() }
//! # fn send(_datagram: &[u8]) {}
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cert = Certificate::generate()?;
//! let now = Instant::now();
//! let mut dtls = Dtls::new(now, DtlsConfig::new(Role::Client, cert, their_fingerprint()))?;
//! let (mut buf, mut plain) = (Vec::new(), vec![0; 65_536]);
//! loop {
//!     let now = Instant::now();
//!     dtls.handle_receive(now, &datagram_from_the_peer());
//!     while let Some(n) = dtls.read(&mut plain) {
//!         println!("{} bytes of application data", n);
//!     }
//!     if dtls.poll_timeout().is_some_and(|t| t <= now) {
//!         dtls.handle_timeout(now);
//!     }
//!     while let Some(t) = dtls.poll_transmit(now, &mut buf) {
//!         send(t.datagram(&buf));
//!         buf.clear();
//!     }
//!     while let Some(event) = dtls.poll_event() {
//!         if let DtlsEvent::Connected { .. } = event {
//!             dtls.write(b"hello")?;
//!         }
//!     }
//! }
//! # }
//! ```

pub mod cert;
pub mod conn;

pub use cert::{Certificate, Fingerprint, FingerprintError, HashAlgorithm};
pub use conn::{Dtls, DtlsConfig, DtlsError, DtlsEvent, Role, SrtpKeys};
