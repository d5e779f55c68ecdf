//! The STUN server over real loopback sockets: UDP and TCP, IPv4 and IPv6.

use peerlink_server::{StunConfig, StunServer};
use peerlink_stun::{
    Attribute, AttributeType, Class, ErrorCode, Message, MessageWriter, Method, TransactionId,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn binding_request(tid: u8, extra: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TransactionId([tid; 12]));
    extra(&mut w);
    w.finish();
    buf
}

fn mapped(response: &[u8]) -> SocketAddr {
    let m = Message::parse(response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    match m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap() {
        Attribute::XorMappedAddress(a) => a,
        other => panic!("unexpected {other:?}"),
    }
}

async fn start(listen: &str) -> StunServer {
    let mut config = StunConfig::new(listen.parse().unwrap());
    config.udp_workers = 2;
    StunServer::start(config).await.unwrap()
}

fn udp_exchange(server: SocketAddr, client: &UdpSocket, request: &[u8]) -> Option<Vec<u8>> {
    client.send_to(request, server).unwrap();
    let mut buf = [0u8; 1500];
    match client.recv_from(&mut buf) {
        Ok((n, from)) => {
            assert_eq!(from, server);
            Some(buf[..n].to_vec())
        }
        Err(_) => None,
    }
}

fn client_socket(bind: &str) -> UdpSocket {
    let client = UdpSocket::bind(bind).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_binding_over_ipv4_and_ipv6() {
    for (listen, bind) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
        let server = start(listen).await;
        let client = client_socket(bind);
        let response =
            udp_exchange(server.local_addr(), &client, &binding_request(1, |w| w.fingerprint().unwrap()));
        let response = response.expect("an answer");
        assert_eq!(mapped(&response), client.local_addr().unwrap());
        assert!(Message::parse(&response).unwrap().verify_fingerprint());
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_socket_reports_ipv4_clients_as_ipv4() {
    let mut config = StunConfig::new("[::]:0".parse().unwrap());
    config.udp_workers = 1;
    let server = StunServer::start(config).await.unwrap();
    let client = client_socket("127.0.0.1:0");
    let target = SocketAddr::new("127.0.0.1".parse().unwrap(), server.local_addr().port());
    client.send_to(&binding_request(2, |_| {}), target).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = client.recv_from(&mut buf).expect("an answer");
    assert_eq!(mapped(&buf[..n]), client.local_addr().unwrap());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_errors_and_silence() {
    let server = start("127.0.0.1:0").await;
    let addr = server.local_addr();
    let client = client_socket("127.0.0.1:0");

    let unknown = binding_request(3, |w| {
        w.attribute(&Attribute::Unknown { typ: AttributeType(0x0042), value: b"?" }).unwrap()
    });
    let response = udp_exchange(addr, &client, &unknown).expect("420");
    let m = Message::parse(&response).unwrap();
    assert_eq!(m.class(), Class::ErrorResponse);
    assert!(matches!(
        m.get(AttributeType::ERROR_CODE),
        Some(Ok(Attribute::ErrorCode(ErrorCode { code: 420, .. })))
    ));

    let mut malformed = binding_request(4, |w| w.attribute(&Attribute::Software("abcd")).unwrap());
    malformed[23] = 0x30; // SOFTWARE length runs past the end
    let response = udp_exchange(addr, &client, &malformed).expect("400");
    let m = Message::parse(&response).unwrap();
    assert!(matches!(
        m.get(AttributeType::ERROR_CODE),
        Some(Ok(Attribute::ErrorCode(ErrorCode { code: 400, .. })))
    ));

    // Junk and indications: no answer at all.
    assert!(udp_exchange(addr, &client, b"hello").is_none());
    let mut indication = Vec::new();
    MessageWriter::new(&mut indication, Class::Indication, Method::BINDING, TransactionId([5; 12])).finish();
    assert!(udp_exchange(addr, &client, &indication).is_none());
    assert!(udp_exchange(addr, &client, &[]).is_none());

    // Still serving afterwards.
    assert!(udp_exchange(addr, &client, &binding_request(6, |_| {})).is_some());
    let stats = server.stats().clone();
    assert_eq!(stats.answered.load(Ordering::Relaxed), 1);
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 2);
    assert_eq!(stats.ignored.load(Ordering::Relaxed), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_go_to_their_own_senders() {
    // Two clients send bursts of distinct transaction ids mixed with junk; each must get
    // back exactly its own ids, each once, with its own reflexive address.
    let server = start("127.0.0.1:0").await;
    let addr = server.local_addr();
    let clients = [client_socket("127.0.0.1:0"), client_socket("127.0.0.1:0")];
    for round in 0..50u8 {
        for (c, client) in clients.iter().enumerate() {
            client.send_to(&binding_request(round * 2 + c as u8, |_| {}), addr).unwrap();
            client.send_to(b"junk between requests", addr).unwrap();
        }
    }
    for (c, client) in clients.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = client.recv_from(&mut buf) {
            assert_eq!(mapped(&buf[..n]), client.local_addr().unwrap());
            let tid = Message::parse(&buf[..n]).unwrap().transaction_id().0[0];
            assert_eq!(usize::from(tid % 2), c, "client {c} got another client's answer");
            assert!(seen.insert(tid), "answer {tid} arrived twice");
            if seen.len() == 50 {
                break;
            }
        }
        assert_eq!(seen.len(), 50, "client {c} got {} of 50 answers", seen.len());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_slow_drip_is_closed_after_the_idle_time() {
    let mut config = StunConfig::new("127.0.0.1:0".parse().unwrap());
    config.udp_workers = 1;
    config.tcp_idle_timeout = Duration::from_millis(600);
    let server = StunServer::start(config).await.unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = binding_request(30, |w| w.attribute(&Attribute::Software("drip")).unwrap());
    // A byte every 200 ms never completes a message within 600 ms.
    let mut closed = false;
    for byte in &request {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "connection still open after the whole message was dripped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_flood_of_garbage_and_keeps_answering() {
    let server = start("127.0.0.1:0").await;
    let addr = server.local_addr();
    let client = client_socket("127.0.0.1:0");
    // Deterministic pseudo-random junk, some of it with a valid STUN header in front.
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let header = binding_request(7, |_| {});
    for i in 0..5000 {
        let len = (next() % 600) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && junk.len() >= 20 {
            junk[..20].copy_from_slice(&header);
            let attr_len = ((junk.len() - 20) & !3) as u16;
            junk[2..4].copy_from_slice(&attr_len.to_be_bytes());
            junk.truncate(20 + usize::from(attr_len));
        }
        client.send_to(&junk, addr).unwrap();
    }
    // Drain whatever was answered, then check the server still works.
    let mut buf = [0u8; 1500];
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while client.recv_from(&mut buf).is_ok() {}
    client.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let response = udp_exchange(addr, &client, &binding_request(8, |_| {})).expect("still answering");
    assert_eq!(mapped(&response), client.local_addr().unwrap());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_several_messages_per_connection_and_split_reads() {
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let server = start(listen).await;
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        // Two requests in one write.
        let mut both = binding_request(10, |_| {});
        both.extend(binding_request(11, |w| w.fingerprint().unwrap()));
        stream.write_all(&both).await.unwrap();
        for tid in [10, 11] {
            let response = read_message(&mut stream).await;
            let m = Message::parse(&response).unwrap();
            assert_eq!(m.transaction_id(), TransactionId([tid; 12]));
            assert_eq!(mapped(&response), local);
        }
        // One request dribbled a byte at a time.
        let request = binding_request(12, |w| w.attribute(&Attribute::Software("split")).unwrap());
        for byte in &request {
            stream.write_all(std::slice::from_ref(byte)).await.unwrap();
            stream.flush().await.unwrap();
        }
        let response = read_message(&mut stream).await;
        assert_eq!(Message::parse(&response).unwrap().transaction_id(), TransactionId([12; 12]));
        // Junk closes the connection.
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        server.stop().await;
    }
}

async fn read_message(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header)).await.unwrap().unwrap();
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut message = header.to_vec();
    message.resize(20 + len, 0);
    stream.read_exact(&mut message[20..]).await.unwrap();
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connection_limit_refuses_extra_connections() {
    let mut config = StunConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_tcp_connections = 1;
    config.udp_workers = 1;
    let server = StunServer::start(config).await.unwrap();
    let mut first = TcpStream::connect(server.local_addr()).await.unwrap();
    first.write_all(&binding_request(20, |_| {})).await.unwrap();
    read_message(&mut first).await;
    let mut second = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "second connection is closed at once");
    assert_eq!(server.stats().tcp_refused.load(Ordering::Relaxed), 1);
    server.stop().await;
}

/// On a wildcard address the answer leaves from the address the request was sent to: a
/// client connected to 127.0.0.2 (any 127/8 address is this host's) only hears that one,
/// while the kernel, left to itself, answers from 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_server_answers_from_the_address_asked() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let server = start(listen).await;
        for asked in ["127.0.0.2", "127.0.0.3"] {
            let client = client_socket("0.0.0.0:0");
            client.connect(SocketAddr::new(asked.parse().unwrap(), server.local_addr().port())).unwrap();
            client.send(&binding_request(1, |_| {})).unwrap();
            let mut buf = [0u8; 1500];
            let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{listen}, asked {asked}: {e}"));
            assert_eq!(mapped(&buf[..n]), client.local_addr().unwrap());
        }
        server.stop().await;
    }
}
