//! The vocabulary every Peerlink protocol machine shares (the sans-IO contract):
//!
//! - [`Transmit`] and the one output convention: `poll_transmit(now, &mut buf)` appends the
//!   next datagram to the caller's buffer and says where it goes and how long it is, so a
//!   steady stream of packets allocates nothing and a driver can batch datagrams (GSO) in
//!   one buffer without copying them;
//! - [`Machine`]: the five calls a driver makes (`handle_receive`, `handle_timeout`,
//!   `poll_transmit`, `poll_event`, `poll_timeout`), implemented by every machine so one
//!   test driver (`peerlink-netsim`) runs them all;
//! - [`rng`]: the seeded deterministic source the machines draw from, and the OS source
//!   that seeds it;
//! - [`backoff`]: the retransmission timer of STUN transactions (RFC 8489 §6.2.1), DTLS
//!   flights (RFC 6347 §4.2.4.1) and SCTP's T1 (RFC 9260 §6.3.3);
//! - [`retry_after`]: the HTTP `Retry-After` field (RFC 9110 §10.2.3), which servers use to
//!   say when to try again (an ACME CA that rate-limits);
//! - [`serial`]: wrap-aware 16- and 32-bit serial numbers (RFC 1982) and their unwrapping to
//!   64 bits (SCTP TSNs and SSNs, RTP sequence numbers and timestamps).
//!
//! No I/O, no clocks: `now` always comes in as an argument.
//!
//! ```
//! use peerlink_proto::{Machine, Route, Transmit};
//! # fn drive<M: Machine<Route = Route>>(m: &mut M, now: std::time::Instant) {
//! let mut buf = Vec::with_capacity(64 * 1024);
//! while let Some(t) = m.poll_transmit(now, &mut buf) {
//!     let datagram = &buf[buf.len() - t.len..];
//!     // send `datagram` from t.route.local to t.route.remote (or keep appending: a GSO batch)
//!     # let _ = datagram;
//!     buf.clear();
//! }
//! # }
//! ```

pub mod backoff;
pub mod retry_after;
pub mod rng;
pub mod serial;

pub use backoff::{Backoff, BackoffConfig};
pub use retry_after::parse_retry_after;
pub use rng::{os_random, SeededRng};
pub use serial::{Serial16, Serial32, Unwrapper16, Unwrapper32};

use std::net::SocketAddr;
use std::time::Instant;

/// The path of a datagram as a host sees it: its own socket address and the other end's
/// (where a datagram goes from and to, or arrived on and came from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// One datagram a machine appended to the caller's buffer: its last `len` bytes, to be sent
/// on `route`. Machines that sit on a socket (ICE, the TURN client, the PeerConnection) use
/// [`Route`]; machines layered inside another (SCTP inside DTLS, DTLS on ICE's selected pair)
/// have no addresses of their own and use `()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Transmit<R = Route> {
    pub route: R,
    pub len: usize,
}

impl<R> Transmit<R> {
    /// The datagram inside the buffer it was appended to.
    pub fn datagram<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[buf.len() - self.len..]
    }
}

/// A sans-IO protocol machine, driven by the caller's clock and sockets.
///
/// Several inputs in a row are legal; the driver drains the outputs after each batch.
/// Bad input from the network is dropped and counted, never a panic or an error.
pub trait Machine {
    /// How datagrams are addressed: [`Route`] on a socket, `()` inside another layer.
    type Route;
    /// What the machine tells its application.
    type Event;

    /// A datagram from the network.
    fn handle_receive(&mut self, now: Instant, route: Self::Route, datagram: &[u8]);
    /// Timers: call at (or after) [`Machine::poll_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// Appends the next datagram to `buf` (without clearing it) and says how long it is.
    #[must_use]
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<Self::Route>>;
    /// The next event for the application.
    #[must_use]
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When [`Machine::handle_timeout`] is next due; `None`: no timer runs.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The next datagram of `machine` in a buffer of its own: for tests and cold paths (a
/// driver's data path passes one buffer to [`Machine::poll_transmit`] instead).
#[must_use]
pub fn poll_datagram<M: Machine>(machine: &mut M, now: Instant) -> Option<(M::Route, Vec<u8>)> {
    let mut buf = Vec::new();
    machine.poll_transmit(now, &mut buf).map(|t| (t.route, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transmit_names_the_tail_of_the_buffer() {
        let buf = b"earlier datagram|new one".to_vec();
        let t = Transmit { route: (), len: 7 };
        assert_eq!(t.datagram(&buf), b"new one");
    }
}
