//! Batched UDP on Linux for Peerlink's servers (`peerlink-server`) and peers
//! (`peerlink-io`): the part of a socket's work worth optimising, kept apart from any
//! runtime.
//!
//! - Receive: one `recvmmsg` takes up to [`MAX_BATCH`] datagrams into a [`RecvBatch`], each
//!   with its source, and with [`UdpSocket::enable_pktinfo`] the address it was sent to
//!   (`IP_PKTINFO`, `IPV6_PKTINFO`). With generic receive offload ([`UdpSocket::enable_gro`],
//!   `UDP_GRO`) each may be a run of equal-sized datagrams from one source
//!   ([`Datagram::segments`] splits it).
//! - Send: a [`SendBatch`] gathers consecutive equal-sized datagrams to one destination into
//!   runs, and one `sendmmsg` sends up to [`MAX_BATCH`] of them, each run as one message
//!   with generic segmentation offload (`UDP_SEGMENT`), and each from its own source address
//!   where one is given ([`SendBatch::push_from`]: `IP_PKTINFO`, `IPV6_PKTINFO`), so that a
//!   socket on a wildcard address answers from the address it was asked on. A kernel or device without it gets
//!   the same datagrams one message each, still batched, on that socket from then on.
//! - Set-up: dual-stack `[::]`, room for bursts, and `SO_REUSEPORT` sharding over cores
//!   ([`bind`], [`bind_reuseport`]).
//!
//! [`UdpSocket`] wraps whatever socket the caller's runtime owns (`std`, `socket2`, `mio`,
//! `tokio`), remembering what the kernel supports for it. Blocking sockets wait for the
//! first datagram of a batch (and for room to send); non-blocking ones return
//! `WouldBlock` like the plain calls do, keeping unsent datagrams for the next try.
//!
//! Out of scope: ECN, systems other than Linux. Every `unsafe` block (the two system calls
//! and their control messages) is in the private `sys` module.
//!
//! Driving loop (an echo server):
//!
//! ```no_run
//! use peerlink_udp::{RecvBatch, SendBatch, UdpSocket};
//!
//! let socket = UdpSocket::new(peerlink_udp::bind("127.0.0.1:3478".parse().unwrap())?);
//! let (mut received, mut replies) = (RecvBatch::new(32, 2048), SendBatch::new());
//! loop {
//!     socket.recv(&mut received)?;
//!     for d in received.iter().filter(|d| !d.truncated) {
//!         for datagram in d.segments() {
//!             replies.push(d.source, datagram);
//!         }
//!     }
//!     socket.send(&mut replies)?;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

mod recv;
mod send;
mod sys;

pub use recv::{Datagram, RecvBatch};
pub use send::SendBatch;

use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Messages per `recvmmsg` or `sendmmsg` call.
pub const MAX_BATCH: usize = 32;
/// The most datagrams one offloaded run carries (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer ones).
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes one offloaded run carries: what fits in one UDP datagram over IPv4 or
/// IPv6, with room to spare.
pub const MAX_GSO_BYTES: usize = 65_000;
/// Receive slots this large never truncate a run coalesced by receive offload.
pub const GRO_SLOT: usize = 65_536;
/// Socket buffer size asked for by [`bind`]: room for bursts (the kernel caps it at
/// `net.core.rmem_max` and `wmem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr`, blocking, with [`SOCKET_BUFFER`] bytes of buffers; on an
/// unspecified IPv6 address it serves IPv4 clients too (as `::ffff:a.b.c.d`).
pub fn bind(addr: SocketAddr) -> io::Result<Socket> {
    bind_with(addr, false)
}

/// Binds `count` UDP sockets (at least one) to one address with `SO_REUSEPORT`, so the
/// kernel spreads clients over them, one per thread; otherwise as [`bind`]. A port of 0 is
/// resolved by the first socket and reused.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = bind_with(addr, true)?;
        if addr.port() == 0 {
            addr = socket.local_addr()?.as_socket().unwrap_or(addr);
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

fn bind_with(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A UDP socket `S` of any runtime, with batched receive and send and what the kernel
/// supports for it. `Sync`: one task may receive while another sends.
#[derive(Debug)]
pub struct UdpSocket<S> {
    io: S,
    /// Runs of datagrams go as one message (`UDP_SEGMENT`), until a send says otherwise.
    gso: AtomicBool,
    gro: bool,
}

impl<S: AsFd> UdpSocket<S> {
    /// Wraps `io`. Segmentation offload is used where the kernel knows the option; receive
    /// offload and packet info are off until enabled.
    pub fn new(io: S) -> UdpSocket<S> {
        let gso = getsockopt(&io, sockopt::UdpGsoSegment).is_ok();
        UdpSocket { io, gso: AtomicBool::new(gso), gro: false }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The socket, to register it with an event loop.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    /// Asks the kernel to coalesce received datagrams (`UDP_GRO`); returns whether it agreed.
    /// Receives then need slots of [`GRO_SLOT`] bytes.
    pub fn enable_gro(&mut self) -> bool {
        self.gro = setsockopt(&self.io, sockopt::UdpGroSegment, &true).is_ok();
        self.gro
    }

    /// Reports each datagram's destination address ([`Datagram::destination`]). On an IPv6
    /// socket, IPv4 datagrams (dual-stack) are covered where the kernel allows it.
    pub fn enable_pktinfo(&mut self) -> io::Result<()> {
        let v6 = setsockopt(&self.io, sockopt::Ipv6RecvPacketInfo, &true);
        let v4 = setsockopt(&self.io, sockopt::Ipv4PacketInfo, &true);
        v4.or(v6).map_err(io::Error::from)
    }

    /// Whether runs of datagrams still go as one message.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Sends runs one datagram per message from now on (a path known to refuse offload).
    pub fn disable_gso(&self) {
        self.gso.store(false, Ordering::Relaxed);
    }

    /// Takes what is queued, up to the batch's slots (on a blocking socket, waiting for the
    /// first datagram). Returns how many slots were filled; read them with
    /// [`RecvBatch::iter`]. A count below [`RecvBatch::slots`] means the queue was drained
    /// at that moment.
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        if self.gro && batch.slot_size() < GRO_SLOT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive offload needs slots of GRO_SLOT bytes",
            ));
        }
        let fd = self.io.as_fd().as_raw_fd();
        loop {
            let (buf, slot, meta) = batch.fill();
            match sys::recvmmsg(fd, buf, slot, meta) {
                Ok(count) => {
                    batch.set_len(count);
                    return Ok(count);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends what `batch` holds. On `WouldBlock` (a full non-blocking socket) what is left
    /// stays queued for the next call. A datagram the kernel refuses is dropped and counted
    /// ([`SendBatch::take_dropped`]); the others still go.
    pub fn send(&self, batch: &mut SendBatch) -> io::Result<()> {
        let fd = self.io.as_fd().as_raw_fd();
        loop {
            let mut msgs = [NO_MSG; MAX_BATCH];
            // Per message: where the cursor goes once it is out, and how many datagrams it holds.
            let mut ends = [(0usize, 0usize, 0usize); MAX_BATCH];
            let gso = self.gso();
            let (mut next, mut offset) = (batch.next, batch.offset);
            let mut n = 0;
            while n < MAX_BATCH {
                let Some(t) = batch.transmits().get(next) else { break };
                let rest = t.len - offset;
                let (len, segment, datagrams) = if gso && !t.split && offset == 0 && t.datagrams() > 1 {
                    (rest, u16::try_from(t.segment).ok(), t.datagrams())
                } else {
                    (if t.segment == 0 { rest } else { rest.min(t.segment) }, None, 1)
                };
                msgs[n] =
                    sys::OutMsg { to: t.to, from: t.from, data: batch.bytes(t.start + offset, len), segment };
                (next, offset) = if offset + len >= t.len { (next + 1, 0) } else { (next, offset + len) };
                ends[n] = (next, offset, datagrams);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            match sys::sendmmsg(fd, &msgs[..n]) {
                Ok(sent) => {
                    // Zero would loop forever; it does not happen, but count it as a refusal.
                    let Some(&(next, offset, _)) = ends.get(sent.max(1) - 1) else { return Ok(()) };
                    let datagrams = ends[..sent.min(n)].iter().map(|e| e.2).sum();
                    let dropped = if sent == 0 { ends[0].2 } else { 0 };
                    batch.advance(next, offset, datagrams, dropped);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) if msgs[0].segment.is_some() && refuses_offload(&e) => {
                    let segment = msgs[0].segment.map_or(0, usize::from);
                    if e.raw_os_error() == Some(libc::EINVAL) && segment > ANY_PATH_SEGMENT {
                        // Maybe only too large for this interface's MTU: this run goes one
                        // datagram at a time, later ones still try.
                        batch.split_next();
                    } else {
                        tracing::debug!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                        self.disable_gso();
                    }
                }
                Err(e) => {
                    tracing::debug!(to = %msgs[0].to, error = %e, "udp send failed; datagram dropped");
                    let (next, offset, datagrams) = ends[0];
                    batch.advance(next, offset, 0, datagrams);
                }
            }
        }
    }
}

const NO_MSG: sys::OutMsg<'static> = sys::OutMsg {
    to: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
    from: None,
    data: &[],
    segment: None,
};

/// UDP payload that fits an IPv6 path of the minimum MTU (1280 bytes): a run of segments
/// this small refused with `EINVAL` means the kernel or socket refuses offload itself.
const ANY_PATH_SEGMENT: usize = 1280 - 40 - 8;

/// No offload here (EIO: the device cannot checksum; EINVAL, ENOPROTOOPT, EOPNOTSUPP: the
/// kernel or socket does not take the option, or the segments exceed the MTU).
fn refuses_offload(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP))
}

#[cfg(test)]
mod tests;
