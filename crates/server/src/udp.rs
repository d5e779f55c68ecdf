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
