//! TURN for Peerlink: the server core of RFC 8656 (with RFC 5766 clients), RFC 6156
//! address families and RFC 6062 TCP allocations, sans-IO.
//!
//! Implemented: Allocate (UDP relays, IPv4 and IPv6, ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT
//! with RESERVATION-TOKEN), Refresh (lifetime 0 deletes), CreatePermission, ChannelBind, Send
//! and Data indications, ChannelData over datagrams and streams (padding), the error codes
//! 400/401/403/420/437/438/440/441/442/443/446/447/486/508; long-term credentials (MD5 and SHA-256
//! password algorithms), static users and TURN REST secrets, stateless nonces, a bounded
//! per-IP limit on 401 answers; a peer address policy refusing special-purpose ranges;
//! quotas per user, per server and (optionally) bandwidth per allocation, per user and for the
//! whole server ([`SharedRate`]: shared by every thread's core without a lock; an Allocate is
//! refused with 486 while the server's capacity is used up).
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
//! Driving loop (the `server` crate does this with real sockets, TCP and TLS too): here one
//! UDP socket for clients and a UDP socket per relay, polled in turn.
//!
//! ```no_run
//! use peerlink_stun::AddressFamily;
//! use peerlink_turn::{
//!     ClientAction, Credentials, FiveTuple, PeerAction, PortRequest, Relay, RelayError,
//!     RelayId, RelayProvider, ServerConfig, TcpOutput, Transport, TurnServer,
//! };
//! use std::collections::HashMap;
//! use std::net::UdpSocket;
//! use std::time::{Instant, SystemTime, UNIX_EPOCH};
//!
//! /// UDP relays on 127.0.0.1. No TCP relays: `open_tcp`'s default refuses them (442).
//! #[derive(Default)]
//! struct Relays {
//!     sockets: HashMap<RelayId, UdpSocket>,
//!     next: u32,
//! }
//!
//! impl RelayProvider for Relays {
//!     fn open(&mut self, family: AddressFamily, port: PortRequest) -> Result<(Relay, Option<Relay>), RelayError> {
//!         if family != AddressFamily::V4 {
//!             return Err(RelayError::FamilyUnsupported); // 440
//!         }
//!         if port != PortRequest::Any {
//!             return Err(RelayError::Exhausted); // this sketch picks no even ports: 508
//!         }
//!         let socket = UdpSocket::bind("127.0.0.1:0").map_err(|_| RelayError::Exhausted)?;
//!         socket.set_nonblocking(true).map_err(|_| RelayError::Exhausted)?;
//!         self.next += 1;
//!         let relay = Relay { id: RelayId(self.next), addr: socket.local_addr().map_err(|_| RelayError::Exhausted)? };
//!         self.sockets.insert(relay.id, socket);
//!         Ok((relay, None))
//!     }
//!
//!     fn close(&mut self, relay: RelayId) {
//!         self.sockets.remove(&relay);
//!     }
//! }
//!
//! # fn main() -> std::io::Result<()> {
//! let mut credentials = Credentials::new();
//! credentials.add_user("alice", "secret");
//! let config = ServerConfig::new("example.test", credentials, [7; 32]); // secret from a CSPRNG
//! let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
//! let mut server = TurnServer::new(config, Instant::now(), unix_now);
//! let mut relays = Relays::default();
//! let listen = UdpSocket::bind("127.0.0.1:3478")?;
//! listen.set_nonblocking(true)?;
//! let (mut packet, mut out) = (vec![0u8; 65536], Vec::new());
//! loop {
//!     let now = Instant::now();
//!     if let Ok((n, client)) = listen.recv_from(&mut packet) {
//!         let tuple = FiveTuple { transport: Transport::Udp, client, server: listen.local_addr()? };
//!         match server.handle_client(now, tuple, &packet[..n], &mut out, &mut relays) {
//!             ClientAction::Reply => {
//!                 listen.send_to(&out, client)?;
//!             }
//!             ClientAction::ToPeer { relay, peer, payload } => {
//!                 if let Some(socket) = relays.sockets.get(&relay) {
//!                     socket.send_to(&packet[payload], peer)?;
//!                 }
//!             }
//!             ClientAction::Nothing => {}
//!         }
//!     }
//!     let ids: Vec<RelayId> = relays.sockets.keys().copied().collect();
//!     for relay in ids {
//!         let Ok((n, peer)) = relays.sockets[&relay].recv_from(&mut packet) else { continue };
//!         if let PeerAction::ToClient(tuple) = server.handle_peer(now, relay, peer, &packet[..n], &mut out) {
//!             listen.send_to(&out, tuple.client)?;
//!         }
//!     }
//!     if server.poll_timeout() <= now {
//!         server.handle_timeout(now, &mut relays);
//!     }
//!     // RFC 6062 work; a driver with TCP relays connects, pipes and closes here.
//!     while let Some(work) = server.poll_tcp_output(&mut out) {
//!         match work {
//!             TcpOutput::Connect { id, .. } => {
//!                 server.handle_peer_connected(now, id, false);
//!             }
//!             TcpOutput::ToClient(_) | TcpOutput::Close(_) => {}
//!         }
//!     }
//!     std::thread::sleep(std::time::Duration::from_millis(1)); // a real driver waits on the sockets
//! }
//! # }
//! ```

pub mod auth;
pub mod channel;
pub mod client;
pub mod policy;
pub mod rate;
pub mod server;

pub use auth::{rest_password, Credentials};
pub use channel::ChannelData;
pub use client::{ClientConfig, ClientError, ClientEvent, TurnClient};
pub use policy::PeerPolicy;
pub use rate::SharedRate;
pub use server::{
    connection_bind_shard, ClientAction, ConnectionId, FiveTuple, PeerAction, PortRequest, QuotaError, Relay,
    RelayError, RelayId, RelayProvider, ServerConfig, TcpOutput, Transport, TurnServer, TurnStats,
};
