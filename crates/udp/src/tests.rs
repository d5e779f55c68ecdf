//! Over loopback. Receivers are blocking sockets with a read timeout: a test waits for
//! datagrams, never sleeps.

use super::*;
use std::net::IpAddr;
use std::net::UdpSocket as StdSocket;
use std::time::Duration;

fn sender() -> UdpSocket<StdSocket> {
    UdpSocket::new(StdSocket::bind("127.0.0.1:0").unwrap())
}

fn receiver() -> UdpSocket<StdSocket> {
    let socket = StdSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    UdpSocket::new(socket)
}

fn addr(socket: &UdpSocket<StdSocket>) -> SocketAddr {
    socket.get_ref().local_addr().unwrap()
}

/// Receives until `want` datagrams arrived (or the read timeout passed): each with its
/// source and the segment size it came with.
fn receive(
    socket: &UdpSocket<StdSocket>,
    batch: &mut RecvBatch,
    want: usize,
) -> Vec<(SocketAddr, Vec<u8>, usize)> {
    let mut got = Vec::new();
    while got.len() < want {
        match socket.recv(batch) {
            Ok(_) => {
                for d in batch.iter() {
                    got.extend(d.segments().map(|s| (d.source, s.to_vec(), d.segment)));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    got
}

fn payloads(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect()).collect()
}

#[test]
fn batched_send_and_receive_keep_order_sources_and_contents() {
    let (a, b, c) = (sender(), receiver(), receiver());
    let datagrams = payloads(&[1, 100, 1200, 7, 1500, 3]);
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
        out.push(addr(&c), d);
    }
    assert_eq!(out.len(), 12);
    a.send(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(out.take_dropped(), 0);
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    for r in [&b, &c] {
        let got = receive(r, &mut batch, datagrams.len());
        assert_eq!(got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(), datagrams);
        assert!(got.iter().all(|g| g.0 == addr(&a) && g.2 == g.1.len()));
    }
}

#[test]
fn more_datagrams_than_one_call_takes() {
    let (a, b) = (sender(), receiver());
    let datagrams: Vec<Vec<u8>> = (0..3 * MAX_BATCH + 5).map(|i| vec![i as u8; 10 + i % 3]).collect();
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
    }
    a.send(&mut out).unwrap();
    let mut batch = RecvBatch::new(8, 64);
    let got = receive(&b, &mut batch, datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}

#[test]
fn runs_go_as_one_message_and_arrive_whole_with_receive_offload() {
    let a = sender();
    let mut b = receiver();
    assert!(b.enable_gro(), "the kernel refused UDP_GRO on loopback");
    let datagrams = payloads(&[1200, 1200, 1200, 700, 1200, 1200, 5, 1300, 1300]);
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
    }
    // 1200x3 + 700 | 1200x2 + 5 | 1300x2
    assert_eq!(out.transmits().len(), 3);
    a.send(&mut out).unwrap();
    assert!(a.gso(), "the kernel refused UDP_SEGMENT on loopback");
    let mut batch = RecvBatch::new(4, GRO_SLOT);
    let got = receive(&b, &mut batch, datagrams.len());
    assert_eq!(got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(), datagrams);
    assert!(got.iter().any(|g| g.2 == 1200 && g.1.len() == 700), "a run came up as one");
}

#[test]
fn receive_offload_needs_large_slots() {
    let mut b = receiver();
    assert!(b.enable_gro());
    let err = b.recv(&mut RecvBatch::new(4, 2048)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_run_ends_at_its_limits() {
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:10".parse().unwrap();
    let d = vec![0u8; 1000];
    let mut out = SendBatch::new();
    for _ in 0..MAX_SEGMENTS.min(MAX_GSO_BYTES / 1000) + 1 {
        out.push(to, &d);
    }
    assert_eq!(out.transmits().len(), 2, "a full run takes no more");
    let mut out = SendBatch::new();
    out.push(to, &d);
    out.push(other, &d);
    out.push(other, &[0u8; 1001]);
    out.push(other, &[]);
    out.push(other, &[0u8; 10]);
    out.push(other, &[0u8; 10]);
    out.push(other, &[0u8; 5]);
    out.push(other, &[0u8; 6]);
    // to | other 1000 | 1001 | empty | 10 10 5 | 6
    let runs: Vec<(SocketAddr, usize, usize)> =
        out.transmits().iter().map(|t| (t.to, t.len, t.segment)).collect();
    assert_eq!(
        runs,
        [
            (to, 1000, 1000),
            (other, 1000, 1000),
            (other, 1001, 1001),
            (other, 0, 0),
            (other, 25, 10),
            (other, 6, 6)
        ]
    );
}

#[test]
fn without_offload_a_run_goes_one_datagram_at_a_time() {
    let (a, b) = (sender(), receiver());
    a.disable_gso();
    let datagrams: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1000]).collect();
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
    }
    a.send(&mut out).unwrap();
    let got = receive(&b, &mut RecvBatch::new(MAX_BATCH, 2048), datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}

#[test]
fn a_socket_refusing_offload_falls_back_and_loses_nothing() {
    let (a, b) = (sender(), receiver());
    sys::set_no_check(a.get_ref().as_raw_fd()).unwrap();
    let datagrams = payloads(&[1000, 1000, 1000, 400, 20, 20]);
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
    }
    assert!(a.gso());
    a.send(&mut out).unwrap();
    assert!(!a.gso(), "the refusal turned offload off");
    assert_eq!(out.take_dropped(), 0);
    let got = receive(&b, &mut RecvBatch::new(MAX_BATCH, 2048), datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}

#[test]
fn a_refused_run_of_large_segments_goes_one_by_one_and_offload_stays() {
    // Segments larger than any path's minimum might only be too large for this interface:
    // the refusal costs that run its offload, not the socket's.
    let (a, b) = (sender(), receiver());
    sys::set_no_check(a.get_ref().as_raw_fd()).unwrap();
    let datagrams = payloads(&[1300, 1300, 1300, 1300, 50]);
    let mut out = SendBatch::new();
    for d in &datagrams {
        out.push(addr(&b), d);
    }
    a.send(&mut out).unwrap();
    assert!(a.gso(), "offload stays on for other runs");
    assert_eq!(out.take_dropped(), 0);
    let got = receive(&b, &mut RecvBatch::new(MAX_BATCH, 2048), datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}

#[test]
fn oversized_datagrams_are_dropped_and_counted_not_fatal() {
    let (a, b) = (sender(), receiver());
    let mut out = SendBatch::new();
    out.push(addr(&b), &[1u8; 10]);
    out.push(addr(&b), &vec![2u8; 70_000]);
    out.push(addr(&b), &[3u8; 10]);
    a.send(&mut out).unwrap();
    assert_eq!(out.take_dropped(), 1);
    assert!(out.is_empty());
    let got = receive(&b, &mut RecvBatch::new(MAX_BATCH, 2048), 2);
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), [vec![1u8; 10], vec![3u8; 10]]);
}

#[test]
fn truncated_datagrams_are_marked_and_the_next_ones_intact() {
    let (a, b) = (sender(), receiver());
    let mut out = SendBatch::new();
    out.push(addr(&b), &[7u8; 500]);
    out.push(addr(&b), &[8u8; 50]);
    out.push(addr(&b), &[]);
    a.send(&mut out).unwrap();
    let mut batch = RecvBatch::new(MAX_BATCH, 100);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        b.recv(&mut batch).unwrap();
        seen.extend(batch.iter().map(|d| (d.data.to_vec(), d.truncated)));
    }
    assert_eq!(seen, [(vec![7u8; 100], true), (vec![8u8; 50], false), (vec![], false)]);
}

#[test]
fn a_blocking_receive_times_out_with_would_block() {
    let b = UdpSocket::new(StdSocket::bind("127.0.0.1:0").unwrap());
    b.get_ref().set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let err = b.recv(&mut RecvBatch::new(4, 64)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn a_non_blocking_socket_sends_a_long_queue() {
    let a = sender();
    a.get_ref().set_nonblocking(true).unwrap();
    let b = receiver();
    let mut out = SendBatch::new();
    for i in 0..1000u32 {
        out.push(addr(&b), &i.to_be_bytes().repeat(300));
    }
    // Loopback delivers as it sends (dropping what the receiver has no room for), so the
    // sender's buffer does not fill: everything goes in one call.
    a.send(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(out.take_dropped(), 0);
}

#[test]
fn sources_of_both_families_come_whole_through_one_batch() {
    let Ok(v6) = StdSocket::bind("[::1]:0") else { return };
    v6.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let v6 = UdpSocket::new(v6);
    let v4 = receiver();
    let (from4, from6) = (sender(), UdpSocket::new(StdSocket::bind("[::1]:0").unwrap()));
    let mut batch = RecvBatch::new(4, 64);
    for _ in 0..2 {
        let mut out = SendBatch::new();
        out.push(addr(&v4), b"four");
        from4.send(&mut out).unwrap();
        assert_eq!(receive(&v4, &mut batch, 1)[0].0, addr(&from4));
        out.push(addr(&v6), b"six");
        from6.send(&mut out).unwrap();
        assert_eq!(receive(&v6, &mut batch, 1)[0].0, addr(&from6));
    }
}

#[test]
fn packet_info_reports_the_destination() {
    let a = sender();
    let mut b = receiver();
    b.enable_pktinfo().unwrap();
    let mut out = SendBatch::new();
    out.push(addr(&b), b"hello");
    a.send(&mut out).unwrap();
    let mut batch = RecvBatch::new(4, 64);
    b.recv(&mut batch).unwrap();
    let d = batch.iter().next().unwrap();
    assert_eq!(d.destination, Some(IpAddr::from([127, 0, 0, 1])));
}

/// A server socket on the wildcard `bind`, a client connected to `asked` (one of this host's
/// addresses, not the one the kernel would pick to answer from): the client hears only what
/// comes from `asked`. The server answers `count` equal datagrams (a run, with offload)
/// from the address each request came to.
fn answer_from_the_address_asked(bind: &str, asked: &str, count: usize) -> Vec<Vec<u8>> {
    let mut server = UdpSocket::new(crate::bind(bind.parse().unwrap()).unwrap());
    server.get_ref().set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    server.enable_pktinfo().unwrap();
    let port = server.get_ref().local_addr().unwrap().as_socket().unwrap().port();
    let asked: IpAddr = asked.parse().unwrap();
    let client = StdSocket::bind(SocketAddr::new(
        if asked.is_ipv4() { [0, 0, 0, 0].into() } else { IpAddr::from([0u16; 8]) },
        0,
    ))
    .unwrap();
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    client.connect(SocketAddr::new(asked, port)).unwrap();
    client.send(b"which address?").unwrap();
    let mut batch = RecvBatch::new(4, 64);
    server.recv(&mut batch).unwrap();
    let d = batch.iter().next().unwrap();
    let to = d.destination.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    assert_eq!(to, Some(asked), "packet info names the address asked");
    let mut out = SendBatch::new();
    for i in 0..count {
        out.push_from(d.source, d.destination, &[i as u8; 100]);
    }
    server.send(&mut out).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = client.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn a_wildcard_socket_answers_from_the_address_it_was_asked_on() {
    let got = answer_from_the_address_asked("0.0.0.0:0", "127.0.0.2", 1);
    assert_eq!(got, [vec![0u8; 100]], "the connected client heard the answer");
}

#[test]
fn a_run_of_answers_keeps_its_source_address_with_offload() {
    let got = answer_from_the_address_asked("0.0.0.0:0", "127.0.0.3", 5);
    assert_eq!(got, (0..5u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
}

#[test]
fn a_dual_stack_socket_answers_ipv4_clients_from_the_address_asked() {
    let got = answer_from_the_address_asked("[::]:0", "127.0.0.2", 2);
    assert_eq!(got.len(), 2);
}

#[test]
fn a_dual_stack_socket_answers_ipv6_clients_from_the_address_asked() {
    if StdSocket::bind("[::1]:0").is_err() {
        return; // no IPv6 loopback here
    }
    let got = answer_from_the_address_asked("[::]:0", "::1", 2);
    assert_eq!(got.len(), 2);
}

#[test]
fn without_a_source_the_kernel_answers_from_its_own_choice() {
    // What the tests above rule out: a plain send from a wildcard socket leaves from the
    // address the kernel picks (127.0.0.1 on loopback), which a client connected to
    // 127.0.0.2 does not hear.
    let server = UdpSocket::new(crate::bind("0.0.0.0:0".parse().unwrap()).unwrap());
    let port = server.get_ref().local_addr().unwrap().as_socket().unwrap().port();
    let client = StdSocket::bind("0.0.0.0:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    client.connect(SocketAddr::new([127, 0, 0, 2].into(), port)).unwrap();
    let mut out = SendBatch::new();
    out.push(client.local_addr().unwrap(), b"unheard");
    server.send(&mut out).unwrap();
    assert!(client.recv(&mut [0u8; 64]).is_err());
}

#[test]
fn datagrams_from_different_sources_never_share_a_run() {
    let mut out = SendBatch::new();
    let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
    out.push_from(to, Some([127, 0, 0, 2].into()), &[1; 100]);
    out.push_from(to, Some([127, 0, 0, 3].into()), &[2; 100]);
    out.push_from(to, Some([127, 0, 0, 3].into()), &[3; 100]);
    assert_eq!(out.transmits().len(), 2);
}

#[test]
fn bind_reuseport_shares_one_port() {
    let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let ports: Vec<u16> =
        sockets.iter().map(|s| s.local_addr().unwrap().as_socket().unwrap().port()).collect();
    assert_eq!(ports.len(), 3);
    assert!(ports.iter().all(|&p| p == ports[0] && p != 0));
}

#[test]
fn datagrams_written_into_the_buffer_and_committed_go_like_pushed_ones() {
    let (a, b) = (sender(), receiver());
    let datagrams = payloads(&[1200, 1200, 700, 40]);
    let (mut written, mut pushed) = (SendBatch::new(), SendBatch::new());
    for d in &datagrams {
        written.buffer().extend_from_slice(d);
        written.commit(addr(&b), d.len());
        pushed.push(addr(&b), d);
    }
    // The same runs either way: 1200x2 + 700 | 40.
    let shape = |s: &SendBatch| s.transmits().iter().map(|t| (t.start, t.len, t.segment)).collect::<Vec<_>>();
    assert_eq!(shape(&written), shape(&pushed));
    assert_eq!(written.len(), 4);
    a.send(&mut written).unwrap();
    assert!(written.is_empty() && written.buffer().is_empty());
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    let got = receive(&b, &mut batch, datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}

#[test]
fn bytes_left_uncommitted_between_two_datagrams_are_never_sent() {
    let (a, b) = (sender(), receiver());
    let datagrams = payloads(&[300, 300]);
    let mut out = SendBatch::new();
    out.push(addr(&b), &datagrams[0]);
    // A producer that appended and then gave up (a datagram it could not finish).
    out.buffer().extend_from_slice(b"left behind");
    out.buffer().extend_from_slice(&datagrams[1]);
    out.commit(addr(&b), datagrams[1].len());
    assert_eq!(out.len(), 2);
    a.send(&mut out).unwrap();
    let mut batch = RecvBatch::new(MAX_BATCH, 2048);
    let got = receive(&b, &mut batch, datagrams.len());
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), datagrams);
}
