//! Batched UDP receive/answer loops: one blocking thread per `SO_REUSEPORT` socket.

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Datagrams taken per `recvmmsg` call.
pub const BATCH: usize = 32;
/// Larger datagrams are truncated, and a truncated STUN message fails its length check.
const DATAGRAM: usize = 2048;
/// How often a blocked receive wakes to look at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Binds `count` UDP sockets to one address with `SO_REUSEPORT`, so the kernel spreads
/// clients over them. A port of 0 is resolved by the first socket and reused.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // One socket on [::] serves IPv4 clients too, as ::ffff:a.b.c.d.
            socket.set_only_v6(false)?;
        }
        // Room for bursts; the kernel caps this at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        socket.bind(&addr.into())?;
        if addr.port() == 0 {
            addr = socket.local_addr()?.as_socket().unwrap_or(addr);
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// What a handler decided for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Send the bytes the handler wrote into its output buffer back to the source.
    Send,
    Drop,
}

/// Receives batches until `stop()` is true; `handle(packet, source, out)` writes a reply
/// into `out`. Allocates only when it starts.
pub fn serve(
    socket: &Socket,
    stop: impl Fn() -> bool,
    mut handle: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> Reply,
    mut on_send_error: impl FnMut(std::io::Error),
) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; DATAGRAM]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(256)).collect();
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    // (source, length, truncated)
    let mut received: [(Option<SockaddrStorage>, usize, bool); BATCH] = [(None, 0, false); BATCH];
    let mut destinations: [Option<SockaddrStorage>; BATCH] = [None; BATCH];

    while !stop() {
        let count = {
            let mut chunks = bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(chunks.next().map(|b| &mut b[..]).unwrap_or_default())]
            });
            // MSG_WAITFORONE: block for the first datagram, then take whatever else is queued.
            match recvmmsg(fd, &mut recv_headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(results) => {
                    let mut count = 0;
                    for (slot, msg) in received.iter_mut().zip(results) {
                        *slot = (msg.address, msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
                        count += 1;
                    }
                    count
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "recvmmsg failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        };

        let mut replies = 0;
        for (i, &(address, len, truncated)) in received[..count].iter().enumerate() {
            let Some(address) = address else { continue };
            let Some(source) = to_std(&address) else { continue };
            // A datagram cut to fit the buffer is handed on as empty, so it is ignored.
            let packet = if truncated { &bufs[i][..0] } else { &bufs[i][..len.min(DATAGRAM)] };
            let out = &mut outs[replies];
            out.clear();
            if let Reply::Send = handle(packet, source, out) {
                destinations[replies] = Some(address);
                replies += 1;
            }
        }
        send_all(fd, &mut send_headers, &outs[..replies], &destinations[..replies], &mut on_send_error);
    }
}

fn send_all(
    fd: i32,
    headers: &mut MultiHeaders<SockaddrStorage>,
    outs: &[Vec<u8>],
    destinations: &[Option<SockaddrStorage>],
    on_error: &mut impl FnMut(std::io::Error),
) {
    let mut sent = 0;
    while sent < outs.len() {
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(outs.get(sent + i).map(|v| &v[..]).unwrap_or_default())]);
        let pending = outs.len() - sent;
        let result =
            sendmmsg(fd, headers, iovs[..pending].iter(), &destinations[sent..], [], MsgFlags::empty());
        match result {
            Ok(results) => {
                let n = results.count();
                // A zero count would loop forever; treat it as one failed datagram.
                sent += n.max(1);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                // The first pending datagram failed (e.g. an unreachable destination): skip it.
                on_error(std::io::Error::from(e));
                sent += 1;
            }
        }
    }
}

fn to_std(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Non-blocking batched receive for event loops: up to [`BATCH`] datagrams per
/// `recvmmsg` call into buffers owned here.
pub struct RecvBatch {
    datagram: usize,
    bufs: Vec<u8>,
    /// One header set per address family: nix's `recvmmsg` does not reset `msg_namelen`,
    /// so headers last filled by an IPv4 socket (16-byte names) would cut an IPv6 source
    /// address short on the next call. Index 0 for IPv4 sockets, 1 for IPv6.
    headers: [MultiHeaders<SockaddrStorage>; 2],
    /// (source, length, truncated) of each datagram of the last call.
    meta: [(Option<SocketAddr>, usize, bool); BATCH],
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("datagram", &self.datagram).finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Buffers of `datagram` bytes each; larger datagrams are reported as truncated.
    pub fn new(datagram: usize) -> RecvBatch {
        RecvBatch {
            datagram,
            bufs: vec![0; datagram * BATCH],
            headers: [MultiHeaders::preallocate(BATCH, None), MultiHeaders::preallocate(BATCH, None)],
            meta: [(None, 0, false); BATCH],
        }
    }

    /// Takes what is queued on `fd` (at most [`BATCH`]) without blocking. `WouldBlock`
    /// when nothing is. A count below [`BATCH`] means the queue was drained at that moment;
    /// on Linux every later datagram raises a new edge-triggered readiness event.
    pub fn recv(&mut self, fd: i32, ipv6_socket: bool) -> std::io::Result<usize> {
        let mut chunks = self.bufs.chunks_mut(self.datagram);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let headers = &mut self.headers[usize::from(ipv6_socket)];
        let results = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map_err(std::io::Error::from)?;
        let mut count = 0;
        for (slot, msg) in self.meta.iter_mut().zip(results) {
            let source = msg.address.as_ref().and_then(to_std);
            *slot = (source, msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
            count += 1;
        }
        Ok(count)
    }

    /// Datagram `i` of the last call with its source; `None` if it was truncated.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let (source, len, truncated) = *self.meta.get(i)?;
        if truncated {
            return None;
        }
        let start = i * self.datagram;
        Some((source?, self.bufs.get(start..start + len.min(self.datagram))?))
    }
}

/// Datagrams queued for one socket and sent together with `sendmmsg`. The buffers are
/// reused, so a steady stream allocates nothing.
pub struct SendBatch {
    data: Vec<u8>,
    /// (destination, start, length) into `data`.
    queued: Vec<(SockaddrStorage, usize, usize)>,
    headers: MultiHeaders<SockaddrStorage>,
    destinations: [Option<SockaddrStorage>; BATCH],
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("queued", &self.queued.len()).finish_non_exhaustive()
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            data: Vec::with_capacity(BATCH * 1500),
            queued: Vec::with_capacity(BATCH),
            headers: MultiHeaders::preallocate(BATCH, None),
            destinations: [None; BATCH],
        }
    }

    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(datagram);
        self.queued.push((SockaddrStorage::from(to), start, datagram.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Sends everything queued on `fd`, [`BATCH`] per call; returns how many datagrams could
    /// not be sent (they are dropped, as UDP may).
    pub fn flush(&mut self, fd: i32) -> usize {
        let mut failed = 0;
        let mut sent = 0;
        while sent < self.queued.len() {
            let chunk = &self.queued[sent..self.queued.len().min(sent + BATCH)];
            for (slot, (to, _, _)) in self.destinations.iter_mut().zip(chunk) {
                *slot = Some(*to);
            }
            let data = &self.data;
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(
                    chunk.get(i).map(|&(_, start, len)| &data[start..start + len]).unwrap_or_default(),
                )]
            });
            let result = sendmmsg(
                fd,
                &mut self.headers,
                iovs[..chunk.len()].iter(),
                &self.destinations[..chunk.len()],
                [],
                MsgFlags::MSG_DONTWAIT,
            );
            match result {
                Ok(results) => sent += results.count().max(1),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // The first datagram failed (full buffer, unreachable): drop it, go on.
                    failed += 1;
                    sent += 1;
                }
            }
        }
        self.queued.clear();
        self.data.clear();
        failed
    }
}
