//! Batched UDP on Linux: UDP generic segmentation offload (`UDP_SEGMENT`) sends a run of
//! equal-sized datagrams to one address with one `sendmsg`, and generic receive offload
//! (`UDP_GRO`) hands back a run of them with one `recvmsg`. A full congestion window of
//! data-channel packets then costs a few system calls instead of one per packet each way.
//! Both are optional: a kernel or device without them gets one datagram per call.
//!
//! These work on any non-blocking socket (`std`, `tokio` or `mio`): they return
//! `WouldBlock` like the plain calls do.

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

/// The most segments one `sendmsg` may carry (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer ones).
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes one batch carries: what fits in one IPv4 UDP datagram, with room to spare.
pub const MAX_BATCH: usize = 65_000;
/// A receive buffer this large never truncates a coalesced run.
pub const RECV_BUFFER: usize = 65_536;

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`). Returns whether it agreed.
pub fn enable_gro(socket: &impl AsFd) -> bool {
    setsockopt(socket, sockopt::UdpGroSegment, &true).is_ok()
}

/// Receives one datagram, or a coalesced run of datagrams of `segment` bytes each (the last
/// may be shorter): returns `(bytes, from, segment)`; `segment == bytes` for a lone one.
pub fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    let mut cmsg = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let n = msg.bytes;
    let mut segment = n;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                if size > 0 {
                    segment = (size as usize).min(n.max(1));
                }
            }
        }
    }
    let from =
        msg.address.as_ref().and_then(to_socket_addr).ok_or_else(|| io::Error::other("no source address"))?;
    Ok((n, from, segment.max(1)))
}

/// Splits what [`recv`] returned into its datagrams.
pub fn segments(data: &[u8], segment: usize) -> std::slice::Chunks<'_, u8> {
    data.chunks(segment.max(1))
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Datagrams to send, gathered into runs that one `sendmsg` with `UDP_SEGMENT` can carry:
/// one destination, equal sizes, only the last one shorter.
#[derive(Debug)]
pub struct Batcher {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run.
    closed: bool,
    /// The kernel takes `UDP_SEGMENT` (until a send says otherwise).
    gso: bool,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher::new()
    }
}

impl Batcher {
    pub fn new() -> Batcher {
        Batcher {
            buf: Vec::with_capacity(MAX_BATCH),
            to: None,
            segment: 0,
            count: 0,
            closed: false,
            gso: true,
        }
    }

    /// Whether a send may still carry more than one datagram.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Allows or forbids runs of more than one datagram (for a socket known to refuse
    /// segmentation offload), from the next run on.
    pub fn set_gso(&mut self, on: bool) {
        self.gso = on;
    }

    /// Adds a datagram to the run. Returns false, taking nothing, when it does not belong
    /// to it: send the run first ([`Batcher::send`]), then push again.
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.count == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(datagram);
            (self.to, self.segment, self.count, self.closed) = (Some(to), datagram.len(), 1, false);
            return true;
        }
        let fits = self.gso
            && !self.closed
            && self.to == Some(to)
            && !datagram.is_empty()
            && datagram.len() <= self.segment
            && self.count < MAX_SEGMENTS
            && self.buf.len() + datagram.len() <= MAX_BATCH;
        if !fits {
            return false;
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        self.closed = datagram.len() < self.segment;
        true
    }

    /// Sends the run on `socket`: returns the datagrams sent (0 when there was none). On
    /// `WouldBlock` the run stays, to be sent again once the socket is writable. A kernel
    /// or device that refuses segmentation offload gets the run one datagram at a time,
    /// and every later run too.
    pub fn send(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        let Some(to) = self.to else { return Ok(0) };
        let addr = SockaddrStorage::from(to);
        let fd = socket.as_fd().as_raw_fd();
        if self.count > 1 && self.gso {
            let segment = self.segment as u16;
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            match sendmsg(fd, &[IoSlice::new(&self.buf)], &cmsg, MsgFlags::empty(), Some(&addr)) {
                Ok(_) => {
                    let n = self.count;
                    self.count = 0;
                    return Ok(n);
                }
                // No offload here (EIO: the device cannot checksum; EINVAL, ENOPROTOOPT:
                // the kernel does not know the option): fall back for good.
                Err(
                    e @ (nix::Error::EIO
                    | nix::Error::EINVAL
                    | nix::Error::ENOPROTOOPT
                    | nix::Error::EOPNOTSUPP),
                ) => {
                    tracing::debug!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                    self.gso = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // One at a time; what went out leaves the run, so a `WouldBlock` midway resumes
        // where it stopped.
        let mut sent = 0;
        while self.count > 0 {
            let len = self.segment.min(self.buf.len());
            sendmsg(fd, &[IoSlice::new(&self.buf[..len])], &[], MsgFlags::empty(), Some(&addr))?;
            self.buf.drain(..len);
            self.count -= 1;
            sent += 1;
        }
        Ok(sent)
    }

    /// Drops the run waiting.
    pub fn clear(&mut self) {
        self.count = 0;
        self.buf.clear();
    }

    /// The destination of the run waiting, if any.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.to.filter(|_| self.count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Everything that arrives at `b`, split into datagrams, within a second.
    fn drain(b: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < want && std::time::Instant::now() < deadline {
            match recv(b, &mut buf) {
                Ok((n, _, segment)) => got.extend(segments(&buf[..n], segment).map(<[u8]>::to_vec)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn runs_keep_every_datagram_and_its_boundaries() {
        let (a, b) = pair();
        assert!(enable_gro(&b));
        let to = b.local_addr().unwrap();
        let sizes = [1200, 1200, 1200, 700, 1200, 1200, 5, 1300, 1300];
        let datagrams: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect()).collect();
        let mut batch = Batcher::new();
        let mut sends = 0;
        for d in &datagrams {
            if !batch.push(to, d) {
                batch.send(&a).unwrap();
                sends += 1;
                assert!(batch.push(to, d));
            }
        }
        batch.send(&a).unwrap();
        sends += 1;
        // 1200x3 + 700 | 1200x2 + 5 | 1300x2, each with one sendmsg: loopback takes it.
        assert_eq!(sends, 3);
        assert!(batch.gso(), "the kernel refused UDP_SEGMENT on loopback");
        assert_eq!(drain(&b, datagrams.len()), datagrams);
    }

    #[test]
    fn a_run_ends_at_its_limits() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:10".parse().unwrap();
        let mut batch = Batcher::new();
        let d = vec![0u8; 1000];
        for _ in 0..MAX_SEGMENTS.min(MAX_BATCH / 1000) {
            assert!(batch.push(to, &d));
        }
        assert!(!batch.push(to, &d), "a full run takes no more");
        let mut batch = Batcher::new();
        assert!(batch.push(to, &d));
        assert!(!batch.push(other, &d), "another destination");
        assert!(!batch.push(to, &[0u8; 1001]), "a longer datagram");
        assert!(!batch.push(to, &[]), "an empty datagram");
        assert!(batch.push(to, &[0u8; 10]));
        assert!(!batch.push(to, &[0u8; 10]), "nothing after a shorter one");
    }

    #[test]
    fn without_gro_the_kernel_splits_a_run() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut batch = Batcher::new();
        let datagrams: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
        for d in &datagrams {
            assert!(batch.push(to, d));
        }
        assert_eq!(batch.send(&a).unwrap(), 10);
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while got.len() < 10 && std::time::Instant::now() < deadline {
            match recv(&b, &mut buf) {
                Ok((n, _, segment)) => {
                    assert_eq!(segment, n, "one datagram per receive");
                    got.push(buf[..n].to_vec());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, datagrams);
    }
}
