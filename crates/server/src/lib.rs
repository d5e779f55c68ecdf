//! Peerlink's network services: the sockets around the sans-IO protocol crates.
//!
//! Today: a STUN server ([`stun::StunServer`]) answering Binding requests over UDP and TCP
//! on one port (RFC 8489 §6.2.1, §6.2.2), IPv4 and IPv6. UDP runs on one thread per core,
//! each with its own `SO_REUSEPORT` socket and batched `recvmmsg`/`sendmmsg` (`peerlink_udp`);
//! TCP runs on tokio. The protocol logic is `peerlink_stun::binding::respond`, which keeps no state.
//!
//! The browser app ([`web::router`]), embedded from `web/` at build time.
//!
//! A TURN server ([`turn::start`]): a mio event loop thread per relay thread, each owning a
//! sans-IO `peerlink_turn::TurnServer`, its client sockets (UDP, TCP and TLS listeners on
//! `SO_REUSEPORT`) and its relay sockets.
//!
//! `peerlink serve` and `peerlink turn` assembled ([`serve::run`], [`serve::run_turn`]) from
//! one options struct each ([`ServeOptions`], [`TurnOptions`]): the command line (clap) and
//! the TOML config file (serde) in one, the command line laid over the file.

pub mod acme;
pub mod https;
pub mod metrics;
pub mod options;
pub mod serve;
pub mod sfu;
pub mod shutdown;
mod sockets;
pub mod stun;
pub mod tls;
pub mod turn;
pub mod web;

pub use options::{ServeOptions, TurnOptions};
pub use shutdown::Shutdown;
pub use stun::{StunConfig, StunServer, StunStats};
pub use turn::{TurnConfig, TurnHandle};
