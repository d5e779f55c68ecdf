//! DTLS 1.2 (RFC 6347) for Peerlink, sans-IO, over OpenSSL.
//!
//! - [`cert`]: per-peer self-signed ECDSA P-256 certificates and their fingerprints in the
//!   SDP form of RFC 8122.
//! - [`conn`]: one association: client or server, the peer's certificate checked against
//!   the fingerprint from its description during the handshake, AEAD suites first,
//!   extended master secret (OpenSSL's default), use_srtp with the RFC 5764 key export,
//!   close_notify; retransmission on our own timers so it runs under a simulated clock.
//!
//! ```text
//! let mut dtls = Dtls::new(now, DtlsConfig::new(Role::Client, cert, their_fingerprint))?;
//! loop {
//!     dtls.handle_receive(now, &datagram);            // DTLS datagrams from the peer
//!     while let Some(n) = dtls.read(&mut buf) { app(&buf[..n]) }
//!     dtls.write(b"...")?;                             // once Connected
//!     dtls.handle_timeout(now);                        // at dtls.poll_timeout()
//!     buf.clear();
//!     while let Some(t) = dtls.poll_transmit(now, &mut buf) { send(t.datagram(&buf)); buf.clear() }
//!     while let Some(e) = dtls.poll_event() { ... }    // Connected, Closed, Failed
//! }
//! ```

pub mod cert;
pub mod conn;

pub use cert::{Certificate, Fingerprint, FingerprintError, HashAlgorithm};
pub use conn::{Dtls, DtlsConfig, DtlsError, DtlsEvent, Role, SrtpKeys};
