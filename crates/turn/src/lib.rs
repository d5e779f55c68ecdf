//! TURN for Peerlink: the server core of RFC 8656 (with RFC 5766 clients), RFC 6156
//! address families and RFC 6062 TCP allocations, sans-IO.
//!
//! Implemented: Allocate (UDP relays, IPv4 and IPv6, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT
//! with RESERVATION-TOKEN), Refresh (lifetime 0 deletes), CreatePermission, ChannelBind, Send
//! and Data indications, ChannelData over datagrams and streams (padding), the error codes
//! 400/401/403/420/437/438/440/441/442/443/446/447/486/508; long-term credentials (MD5 and SHA-256
//! password algorithms), static users and TURN REST secrets, stateless nonces, a bounded
//! per-IP limit on 401 answers; a peer address policy refusing special-purpose ranges;
//! quotas per user, per server and (optionally) bandwidth per allocation.
//!
//! RFC 6062 TCP allocations (over TCP or TLS control connections): Allocate with
//! REQUESTED-TRANSPORT TCP (a listening relay the I/O layer opens), Connect (permission
//! required, 446 for a second connection to a peer, 447 after a failure or 30 s), peers
//! connecting to the relay (ConnectionAttempt indications; without a permission the
//! connection is closed), ConnectionBind on a new connection of the same user, 30 s for an
//! unbound connection, data connections closed with their allocation; quotas of connections
//! and of unbound connections per allocation. The core decides, the I/O layer pipes the bytes
//! (`poll_tcp_output`, `handle_peer_connected`, `handle_peer_accept`, `bound_connection`,
//! `handle_data_closed`). Nonces of TCP and TLS clients are bound to the address alone, so a
//! data connection can use its control connection's nonce.
//! The per-allocation bandwidth limit covers TCP data connections too (`tcp_allowance`,
//! `spend_tcp`): a byte stream cannot drop what is over, so the I/O layer reads no more than
//! the budget allows and the kernel pushes back on the sender.
//!
//! The client side ([`TurnClient`]): Allocate with the 401/438 credential dance, Refresh,
//! CreatePermission, ChannelBind, Send indications and ChannelData, retransmissions.
//!
//! Driving loop (the `server` crate does this with real sockets):
//!
//! ```text
//! loop {
//!     match event {
//!         client packet  => match server.handle_client(now, tuple, &packet, &mut out, &mut relays) {
//!             ClientAction::Reply => send out to tuple.client; if server.bound_connection(&tuple)
//!                 is Some(id), the connection is now a byte pipe to peer data connection id,
//!             ClientAction::ToPeer { relay, peer, payload } => send packet[payload] from relay to peer,
//!             ClientAction::Nothing => {}
//!         },
//!         peer packet    => if let PeerAction::ToClient(tuple) = server.handle_peer(now, relay, peer, &data, &mut out) {
//!             send out to tuple.client
//!         },
//!         timer          => server.handle_timeout(now, &mut relays),
//!     }
//!     while let Some(work) = server.poll_tcp_output(&mut out) {   // RFC 6062
//!         match work {
//!             TcpOutput::Connect { id, relay, peer } => connect from relay to peer,
//!                 then server.handle_peer_connected(now, id, ok),
//!             TcpOutput::ToClient(tuple) => send out on the control connection,
//!             TcpOutput::Close(id) => close both sides of data connection id,
//!         }
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
    ClientAction, ConnectionId, FiveTuple, PeerAction, PortRequest, QuotaError, Relay, RelayError, RelayId,
    RelayProvider, ServerConfig, TcpOutput, Transport, TurnServer, TurnStats,
};
