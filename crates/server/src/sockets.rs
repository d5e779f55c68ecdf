//! Socket set-up shared by the listeners.

use std::net::SocketAddr;

/// A non-blocking TCP listener; on an unspecified IPv6 address it takes IPv4 clients too.
pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    tcp_listener_shared(addr, false)
}

/// Like [`tcp_listener`]; with `reuse_port`, one of several on the same address
/// (`SO_REUSEPORT`: the kernel spreads new connections over them by their 4-tuple hash).
pub(crate) fn tcp_listener_shared(
    addr: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
