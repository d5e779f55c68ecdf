//! Resolving a `*.local` name over real sockets with `peerlink_ice::mdns` (blocking; for the
//! probes). The native peer's async driver will do the same on its runtime.

use peerlink_ice::mdns::{parse_response, write_query, MDNS_V4};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A socket in the mDNS group on port 5353 (shared with other responders on this host), or,
/// when 5353 is taken exclusively, an ephemeral one: RFC 6762 §6.7 has responders answer
/// such "legacy unicast" queries directly.
fn socket() -> std::io::Result<UdpSocket> {
    let shared = || -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], 5353)).into())?;
        s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &Ipv4Addr::UNSPECIFIED)?;
        s.set_multicast_loop_v4(true)?;
        Ok(s.into())
    };
    shared().or_else(|_| UdpSocket::bind("0.0.0.0:0"))
}

/// Queries `name` at 0, 1 and 3 s (RFC 6762 §5.2 doubles the interval) until an answer or
/// `timeout`. An empty list: nobody answered.
pub fn resolve(name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let mut query = Vec::new();
    write_query(name, &mut query).map_err(|e| format!("{name}: {e}"))?;
    let socket = socket().map_err(|e| format!("mdns socket: {e}"))?;
    let start = Instant::now();
    let (mut next_query, mut interval) = (start, Duration::from_secs(1));
    let mut buf = [0u8; 9000];
    loop {
        let now = Instant::now();
        if now >= start + timeout {
            return Ok(Vec::new());
        }
        if now >= next_query {
            socket.send_to(&query, MDNS_V4).map_err(|e| format!("mdns query: {e}"))?;
            next_query = now + interval;
            interval *= 2;
        }
        let wait = next_query.min(start + timeout).saturating_duration_since(now);
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => match parse_response(&buf[..n], name) {
                Ok(found) if !found.is_empty() => return Ok(found),
                _ => {} // our own query looped back, others' traffic, junk
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("mdns receive: {e}")),
        }
    }
}
