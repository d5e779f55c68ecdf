//! ICE (RFC 8445) for Peerlink, sans-IO.
//!
//! - [`candidate`]: candidates in their SDP form (RFC 8839 §5.1, tolerant of what Chromium,
//!   Firefox and Safari write), candidate priorities and foundations (RFC 8445 §5.1.1.3,
//!   §5.1.2) and pair priorities (§6.1.2.3).
//! - [`agent`]: the agent (host, server-reflexive, relayed and peer-reflexive candidates,
//!   checks, nomination, trickle, role conflicts, consent freshness, restart, ICE-lite), driven like every Peerlink machine
//!   (`handle_receive` / `handle_timeout` in, `poll_transmit` / `poll_event` / `poll_timeout`
//!   out) and tested in `peerlink-netsim` behind simulated NATs.
//! - [`mdns`]: resolving browsers' `*.local` host candidates (RFC 6762 query and response).

pub mod agent;
pub mod candidate;
pub mod mdns;

pub use agent::{
    IceAgent, IceConfig, IceEvent, IceFailure, IceState, IceStats, TurnServerConfig, UsageError,
};
pub use peerlink_proto::{Route, Transmit};

pub use candidate::{
    foundation, pair_priority, Candidate, CandidateAddress, CandidateError, CandidateKind, TcpType, Transport,
};
