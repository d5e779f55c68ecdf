//! Resolving a browser's `*.local` candidate name with `peerlink_ice::mdns` on tokio.

use peerlink_ice::mdns::{parse_response, write_query, MDNS_V4};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// A socket in the mDNS group on port 5353 (shared with other responders on this host), or an
/// ephemeral one when that is not possible (RFC 6762 §6.7 "legacy unicast").
fn socket() -> std::io::Result<UdpSocket> {
    let shared = || -> std::io::Result<std::net::UdpSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 5353)).into())?;
        s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::UNSPECIFIED)?;
        s.set_multicast_loop_v4(true)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    let std = match shared() {
        Ok(s) => s,
        Err(_) => {
            let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
            s.set_nonblocking(true)?;
            s
        }
    };
    UdpSocket::from_std(std)
}

/// Queries `name` at 0, 1 and 3 s until an answer or `timeout`.
pub async fn resolve(name: &str, timeout: Duration) -> Option<IpAddr> {
    let mut query = Vec::new();
    write_query(name, &mut query).ok()?;
    let socket = socket().ok()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_secs(1);
    let mut buf = vec![0u8; 9000];
    loop {
        socket.send_to(&query, MDNS_V4).await.ok()?;
        let next = (tokio::time::Instant::now() + interval).min(deadline);
        interval *= 2;
        loop {
            match tokio::time::timeout_at(next, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    if let Ok(found) = parse_response(&buf[..n], name) {
                        if let Some(ip) = found.into_iter().find(IpAddr::is_ipv4) {
                            return Some(ip);
                        }
                    }
                }
                Ok(Err(_)) => return None,
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}
