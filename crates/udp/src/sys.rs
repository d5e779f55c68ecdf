//! The system calls and their control messages: every `unsafe` block of the crate is here.
//!
//! nix's `recvmmsg`/`sendmmsg` are not used: they keep `msg_namelen` and `msg_controllen`
//! from one call to the next (an IPv6 source read after an IPv4 one is cut short, a datagram
//! without control messages leaves no room for the next one's), and they give every message
//! of a `sendmmsg` the same control messages, so runs of different segment sizes could not
//! share a call. Here the headers live on the stack and are rebuilt for every call.
#![allow(unsafe_code)]

use crate::MAX_BATCH;
use std::io;
use std::mem::size_of;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr;

/// Control message space for one datagram: `UDP_GRO`'s segment size (an `int`) and
/// `IP_PKTINFO` or `IPV6_PKTINFO` on receive, `UDP_SEGMENT` on send, with room to spare.
const CONTROL: usize = 128;

/// Control message space, aligned as `cmsghdr` wants.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL]);

const NO_CONTROL: Control = Control([0; CONTROL]);

/// What `recvmmsg` reported about one slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecvMeta {
    pub source: Option<SocketAddr>,
    /// From `IP_PKTINFO`/`IPV6_PKTINFO`, when enabled.
    pub destination: Option<IpAddr>,
    /// Bytes in the slot.
    pub len: usize,
    /// `UDP_GRO`'s segment size; 0 when the kernel gave none (a lone datagram).
    pub segment: usize,
    /// The datagram was longer than the slot.
    pub truncated: bool,
}

/// One message for `sendmmsg`: a datagram, or with `segment` a run of datagrams of that
/// size (the last may be shorter) that the kernel splits (`UDP_SEGMENT`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutMsg<'a> {
    pub to: SocketAddr,
    /// Source address (`IP_PKTINFO` towards IPv4, `IPV6_PKTINFO` towards IPv6 and
    /// IPv4-mapped destinations); `None`: the kernel's choice.
    pub from: Option<IpAddr>,
    pub data: &'a [u8],
    pub segment: Option<u16>,
}

/// A header with every field empty (null pointers, zero lengths), to fill in.
fn empty_header() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is plain C data (integers and raw pointers); all zeros is a valid
    // value: null pointers and empty lengths.
    unsafe { std::mem::zeroed() }
}

const EMPTY_IOV: libc::iovec = libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 };

/// `recvmmsg` into consecutive slots of `slot` bytes cut from `buf`, at most
/// `meta.len()` and [`MAX_BATCH`] of them. `MSG_WAITFORONE`: a blocking socket waits for
/// the first datagram only, then takes what is queued; a non-blocking one never waits.
///
/// The address and control spaces are left uninitialised (the kernel writes them, and only
/// what it reports writing is read): zeroing them, about 8 KiB a call, cost more than the
/// rest of this function when a relay socket holds one datagram.
pub(crate) fn recvmmsg(fd: RawFd, buf: &mut [u8], slot: usize, meta: &mut [RecvMeta]) -> io::Result<usize> {
    let mut hdrs = [empty_header(); MAX_BATCH];
    let mut names = MaybeUninit::<[libc::sockaddr_storage; MAX_BATCH]>::uninit();
    let names = names.as_mut_ptr().cast::<libc::sockaddr_storage>();
    let mut iovs = [EMPTY_IOV; MAX_BATCH];
    let mut controls = MaybeUninit::<[Control; MAX_BATCH]>::uninit();
    let controls = controls.as_mut_ptr().cast::<Control>();
    let slots = buf.chunks_exact_mut(slot.max(1)).take(meta.len().min(MAX_BATCH));
    let mut n = 0;
    for (i, chunk) in slots.enumerate() {
        iovs[i] = libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() };
        let hdr = &mut hdrs[i].msg_hdr;
        // `i` < MAX_BATCH: inside both arrays (pointer arithmetic only, nothing is read).
        hdr.msg_name = names.wrapping_add(i).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = ptr::addr_of_mut!(iovs[i]);
        hdr.msg_iovlen = 1;
        hdr.msg_control = controls.wrapping_add(i).cast();
        hdr.msg_controllen = CONTROL as _;
        n = i + 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `hdrs[..n]` point at memory that outlives the call and is not otherwise
    // borrowed during it: slots of `buf` (borrowed mutably by this function) and this
    // frame's `names`, `iovs` and `controls`, which are not moved after their addresses were
    // taken. Each length given is that of the memory behind it. The kernel only writes to
    // the (uninitialised) address and control spaces.
    let received = unsafe {
        libc::recvmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_WAITFORONE, ptr::null_mut())
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let received = (received as usize).min(n);
    for (i, m) in meta.iter_mut().enumerate().take(received) {
        let hdr = &hdrs[i].msg_hdr;
        let (segment, destination) = control_messages(hdr);
        *m = RecvMeta {
            source: socket_addr(names.wrapping_add(i), hdr.msg_namelen),
            destination,
            len: (hdrs[i].msg_len as usize).min(slot),
            segment,
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
    }
    Ok(received)
}

/// The address the kernel wrote at `name`: its first `len` bytes (the rest may be
/// uninitialised).
fn socket_addr(name: *const libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len_bytes = len as usize;
    if len_bytes > size_of::<libc::sockaddr_storage>() {
        return None;
    }
    // SAFETY: all zeros is a valid (AF_UNSPEC) `sockaddr_storage`. `name` points at a
    // `sockaddr_storage` of which the kernel wrote the first `len` bytes (checked above to
    // fit in it); only those are copied, into the zeroed storage, which is then initialised
    // in full.
    let addr = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        ptr::copy_nonoverlapping(name.cast::<u8>(), ptr::addr_of_mut!(storage).cast::<u8>(), len_bytes);
        socket2::SockAddr::new(storage, len)
    };
    addr.as_socket()
}

/// The segment size (`UDP_GRO`) and destination address (`IP_PKTINFO`, `IPV6_PKTINFO`)
/// among a received datagram's control messages.
fn control_messages(hdr: &libc::msghdr) -> (usize, Option<IpAddr>) {
    let mut segment = 0;
    let mut destination = None;
    // SAFETY: `hdr.msg_control` points at this datagram's control space, alive as long as
    // `hdr` is borrowed, and the kernel set `msg_controllen` to the bytes it wrote there
    // (at most the space given). CMSG_FIRSTHDR and CMSG_NXTHDR stay inside that length and
    // return null at its end; a payload is read (unaligned) only when the message's length
    // covers it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            let header = data as usize - c as usize;
            let len = ((*c).cmsg_len as usize).saturating_sub(header);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) if len >= size_of::<libc::c_int>() => {
                    let size = ptr::read_unaligned(data.cast::<libc::c_int>());
                    segment = usize::try_from(size).unwrap_or(0);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if len >= size_of::<libc::in_pktinfo>() => {
                    let info = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    destination = Some(IpAddr::V4(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes())));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if len >= size_of::<libc::in6_pktinfo>() => {
                    let info = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (segment, destination)
}

// SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on their argument.
const SEGMENT_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
// SAFETY: as above.
const SEGMENT_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<u16>() as u32) } as usize;
// SAFETY: as above.
const PKTINFO_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
// SAFETY: as above.
const PKTINFO_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) } as usize;
// SAFETY: as above.
const PKTINFO6_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
// SAFETY: as above.
const PKTINFO6_LEN: usize = unsafe { libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) } as usize;
const _: () = assert!(SEGMENT_SPACE + PKTINFO_SPACE <= CONTROL);
const _: () = assert!(SEGMENT_SPACE + PKTINFO6_SPACE <= CONTROL);

/// The source address control message for a datagram to `to`: its level, type, length and
/// payload (an `in_pktinfo` or `in6_pktinfo`, as bytes). `None` when `from` cannot be
/// expressed for that destination (an IPv6 source towards IPv4).
fn source_control(
    to: SocketAddr,
    from: IpAddr,
) -> Option<(libc::c_int, libc::c_int, usize, usize, [u8; 20])> {
    let mut payload = [0u8; 20];
    match (to, from) {
        (SocketAddr::V4(_), IpAddr::V4(from)) => {
            // in_pktinfo: ipi_ifindex (int), ipi_spec_dst (the source), ipi_addr (unused).
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(from.octets()) },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: `in_pktinfo` is plain C data of 12 bytes, copied into a 20-byte array.
            unsafe { ptr::write_unaligned(payload.as_mut_ptr().cast::<libc::in_pktinfo>(), info) };
            Some((libc::IPPROTO_IP, libc::IP_PKTINFO, PKTINFO_LEN, PKTINFO_SPACE, payload))
        }
        (SocketAddr::V6(_), from) => {
            // An IPv4 source towards an IPv4-mapped destination goes as a mapped address.
            let addr = match from {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let info =
                libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: addr.octets() }, ipi6_ifindex: 0 };
            // SAFETY: `in6_pktinfo` is plain C data of 20 bytes, copied into a 20-byte array.
            unsafe { ptr::write_unaligned(payload.as_mut_ptr().cast::<libc::in6_pktinfo>(), info) };
            Some((libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, PKTINFO6_LEN, PKTINFO6_SPACE, payload))
        }
        (SocketAddr::V4(_), IpAddr::V6(_)) => None,
    }
}

/// `sendmmsg` of up to [`MAX_BATCH`] messages; returns how many the kernel took (an error
/// only when it took none: the error is the first message's).
pub(crate) fn sendmmsg(fd: RawFd, msgs: &[OutMsg<'_>]) -> io::Result<usize> {
    let mut hdrs = [empty_header(); MAX_BATCH];
    // Written below for the messages sent, and only for them.
    let mut names = MaybeUninit::<[libc::sockaddr_storage; MAX_BATCH]>::uninit();
    let names = names.as_mut_ptr().cast::<libc::sockaddr_storage>();
    let mut iovs = [EMPTY_IOV; MAX_BATCH];
    // Zeroed below for the messages that carry control messages, and only for them.
    let mut controls = MaybeUninit::<[Control; MAX_BATCH]>::uninit();
    let controls = controls.as_mut_ptr().cast::<Control>();
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    for (i, m) in msgs[..n].iter().enumerate() {
        let to = socket2::SockAddr::from(m.to);
        let namelen = to.len();
        // SAFETY: `i` < MAX_BATCH: a `sockaddr_storage` of the array, written in full.
        let name = unsafe {
            let name = names.add(i);
            name.write(to.as_storage());
            name
        };
        // The kernel only reads what `iov_base` points at when sending.
        iovs[i] = libc::iovec { iov_base: m.data.as_ptr().cast_mut().cast(), iov_len: m.data.len() };
        let hdr = &mut hdrs[i].msg_hdr;
        hdr.msg_name = name.cast();
        hdr.msg_namelen = namelen;
        hdr.msg_iov = ptr::addr_of_mut!(iovs[i]);
        hdr.msg_iovlen = 1;
        let source = m.from.and_then(|from| source_control(m.to, from));
        let space = m.segment.map_or(0, |_| SEGMENT_SPACE) + source.map_or(0, |s| s.3);
        if space == 0 {
            continue;
        }
        // SAFETY: `i` < MAX_BATCH: a `Control` of the array, written (zeroed) before use.
        let control = unsafe {
            let control = controls.add(i);
            control.write(NO_CONTROL);
            &mut *control
        };
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: `msg_control` points at this message's control space (CONTROL bytes,
        // aligned for `cmsghdr`, zeroed), and `msg_controllen` is the sum of the spaces of
        // the messages written (at most CONTROL, checked at compile time). CMSG_FIRSTHDR
        // returns its start; CMSG_NXTHDR, after the first header's length is set, the next
        // aligned header inside `msg_controllen` (not null: the space was counted for it).
        // Each payload fits the space counted for its header.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            if let Some(segment) = m.segment {
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = SEGMENT_LEN as _;
                ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), segment);
                if source.is_some() {
                    c = libc::CMSG_NXTHDR(hdr, c);
                }
            }
            if let Some((level, typ, len, _, payload)) = source.filter(|_| !c.is_null()) {
                (*c).cmsg_level = level;
                (*c).cmsg_type = typ;
                (*c).cmsg_len = len as _;
                let size = len - (libc::CMSG_DATA(c) as usize - c as usize);
                ptr::copy_nonoverlapping(payload.as_ptr(), libc::CMSG_DATA(c), size.min(payload.len()));
            }
        }
    }
    // SAFETY: `hdrs[..n]` point at memory alive until the call returns: the callers'
    // datagrams (borrowed by `msgs`) and this frame's `names`, `iovs` and `controls`, not
    // moved after their addresses were taken; each length is that of the memory behind it.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// `SO_NO_CHECK`: datagrams without UDP checksums, which segmentation offload refuses
/// (`EINVAL`); how the tests meet a socket without offload on any kernel.
#[cfg(test)]
pub(crate) fn set_no_check(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live `c_int` and its size is given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            ptr::addr_of!(on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
