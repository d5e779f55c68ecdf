//! TURN for Peerlink: the server core of RFC 8656 (with RFC 5766 clients) and RFC 6156
//! address families, sans-IO.
//!
//! Implemented: Allocate (UDP relays, IPv4 and IPv6, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT
//! with RESERVATION-TOKEN), Refresh (lifetime 0 deletes), CreatePermission, ChannelBind, Send
//! and Data indications, ChannelData over datagrams and streams (padding), the error codes
//! 400/401/403/420/437/438/440/441/442/443/486/508; long-term credentials (MD5 and SHA-256
//! password algorithms), static users and TURN REST secrets, stateless nonces, a bounded
//! per-IP limit on 401 answers; a peer address policy refusing special-purpose ranges;
//! quotas per user, per server and (optionally) bandwidth per allocation.
//!
//! The client side ([`TurnClient`]): Allocate with the 401/438 credential dance, Refresh,
//! CreatePermission, ChannelBind, Send indications and ChannelData, retransmissions.
//!
//! Not yet: RFC 6062 TCP allocations.
//!
//! Driving loop (the `server` crate does this with real sockets):
//!
//! ```text
//! loop {
//!     match event {
//!         client packet  => match server.handle_client(now, tuple, &packet, &mut out, &mut relays) {
//!             ClientAction::Reply => send out to tuple.client,
//!             ClientAction::ToPeer { relay, peer, payload } => send packet[payload] from relay to peer,
//!             ClientAction::Nothing => {}
//!         },
//!         peer packet    => if let PeerAction::ToClient(tuple) = server.handle_peer(now, relay, peer, &data, &mut out) {
//!             send out to tuple.client
//!         },
//!         timer          => server.handle_timeout(now, &mut relays),
//!     }
//! }
//! ```

pub mod auth;
pub mod channel;
pub mod client;
pub mod policy;
pub mod server;

pub use auth::{rest_password, Credentials};
pub use channel::ChannelData;
pub use client::{ClientConfig, ClientError, ClientEvent, TurnClient};
pub use policy::PeerPolicy;
pub use server::{
    ClientAction, FiveTuple, PeerAction, PortRequest, Relay, RelayError, RelayId, RelayProvider,
    ServerConfig, Transport, TurnServer, TurnStats,
};
