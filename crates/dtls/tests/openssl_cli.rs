//! Our DTLS against OpenSSL's own command-line peer (`openssl s_server` / `s_client` with
//! `-dtls1_2`) over real UDP on loopback, in both roles: the handshake completes, the
//! fingerprint of the tool's certificate is checked, and a line goes each way. A wrong
//! expected fingerprint fails with `FingerprintMismatch`.

use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsError, DtlsEvent, Fingerprint, Role};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the tool and removes its files when the test ends, however it ends.
struct Tool {
    child: Child,
    files: Vec<PathBuf>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `openssl ARGS -cert C -key K -quiet` with the certificate `cert`.
fn tool(args: &[String], cert: &Certificate, tag: &str) -> Tool {
    let dir = std::env::temp_dir();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("peerlink-dtls-{}-{tag}-{n}", std::process::id());
    let (c, k) = (dir.join(format!("{id}-cert.pem")), dir.join(format!("{id}-key.pem")));
    std::fs::write(&c, cert.certificate_pem().unwrap()).unwrap();
    std::fs::write(&k, cert.private_key_pem().unwrap()).unwrap();
    let child = Command::new("openssl")
        .args(args)
        .args(["-cert", c.to_str().unwrap(), "-key", k.to_str().unwrap(), "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl tool (scripts/install-test-deps.sh installs it)");
    Tool { child, files: vec![c, k] }
}

/// Drives `dtls` over `socket` with `peer` until connected and `line` came back, or it
/// failed, or 20 s passed. Returns the events and what was read.
fn drive(
    dtls: &mut Dtls,
    socket: &UdpSocket,
    peer: &mut Option<SocketAddr>,
    tool: &mut Tool,
    lose_final_flight: bool,
) -> (Vec<DtlsEvent>, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    // When asked, everything from the peer is lost for 300 ms once we have sent our
    // ChangeCipherSpec: that is the server's last flight.
    let mut losing: Option<Instant> = None;
    let (mut events, mut got) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 4096];
    let mut said_hello = false;
    socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    while Instant::now() < deadline {
        while let Some(d) = next_datagram(dtls) {
            if lose_final_flight && losing.is_none() && has_change_cipher_spec(&d) {
                losing = Some(Instant::now());
            }
            if let Some(to) = *peer {
                socket.send_to(&d, to).unwrap();
            }
        }
        while let Some(e) = dtls.poll_event() {
            let done = matches!(e, DtlsEvent::Failed(_));
            events.push(e);
            if done {
                return (events, got);
            }
        }
        if dtls.is_connected() && !said_hello {
            said_hello = true;
            dtls.write(b"hello from peerlink\n").unwrap();
            // The tool sends what it reads on standard input.
            tool.child.stdin.as_mut().unwrap().write_all(b"hello from openssl\n").unwrap();
            tool.child.stdin.as_mut().unwrap().flush().unwrap();
        }
        if got.ends_with(b"\n") {
            return (events, got);
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                peer.get_or_insert(from);
                if losing.is_some_and(|t| t.elapsed() < Duration::from_millis(300)) {
                    continue;
                }
                dtls.handle_receive(Instant::now(), &buf[..n]);
                while let Some(n) = dtls.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("receive: {e}"),
        }
        dtls.handle_timeout(Instant::now());
    }
    (events, got)
}

/// Ends the association with close_notify and returns what the tool printed (it exits on
/// close_notify; it is killed after 3 s otherwise).
fn finish(dtls: &mut Dtls, socket: &UdpSocket, peer: Option<SocketAddr>, tool: &mut Tool) -> String {
    dtls.close();
    while let Some(d) = next_datagram(dtls) {
        if let Some(to) = peer {
            let _ = socket.send_to(&d, to);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && matches!(tool.child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = tool.child.kill();
    let mut out = String::new();
    let _ = tool.child.stdout.take().unwrap().read_to_string(&mut out);
    out
}

/// Whether a datagram holds a ChangeCipherSpec record (type 20).
fn has_change_cipher_spec(datagram: &[u8]) -> bool {
    let mut at = 0;
    while datagram.len() >= at + 13 {
        if datagram[at] == 20 {
            return true;
        }
        at += 13 + usize::from(u16::from_be_bytes([datagram[at + 11], datagram[at + 12]]));
    }
    false
}

fn client_against_s_server(
    expected: impl FnOnce(&Certificate) -> Fingerprint,
    lose_final_flight: bool,
) -> (Vec<DtlsEvent>, Vec<u8>, String) {
    let (ours, theirs) = (Certificate::generate().unwrap(), Certificate::generate().unwrap());
    let port = free_udp_port();
    let args: Vec<String> = ["s_server", "-dtls1_2", "-accept", &format!("127.0.0.1:{port}"), "-verify", "1"]
        .map(String::from)
        .to_vec();
    let mut server = tool(&args, &theirs, "server");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut dtls = Dtls::new(Instant::now(), DtlsConfig::new(Role::Client, ours, expected(&theirs))).unwrap();
    // Until s_server listens our ClientHello is lost; our retransmissions cover that.
    let mut peer = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    let (events, got) = drive(&mut dtls, &socket, &mut peer, &mut server, lose_final_flight);
    let printed = finish(&mut dtls, &socket, peer, &mut server);
    (events, got, printed)
}

#[test]
fn our_client_with_openssl_s_server() {
    let (events, got, printed) = client_against_s_server(|theirs| theirs.fingerprint().clone(), false);
    assert!(matches!(events.first(), Some(DtlsEvent::Connected { .. })), "{events:?}");
    assert_eq!(got, b"hello from openssl\n");
    assert!(printed.contains("hello from peerlink"), "s_server printed {printed:?}");
}

#[test]
fn our_client_refuses_s_server_with_another_certificate() {
    let stranger = Certificate::generate().unwrap();
    let (events, got, _) = client_against_s_server(|_| stranger.fingerprint().clone(), false);
    assert_eq!(events, [DtlsEvent::Failed(DtlsError::FingerprintMismatch)]);
    assert!(got.is_empty());
}

#[test]
fn our_server_with_openssl_s_client() {
    let (ours, theirs) = (Certificate::generate().unwrap(), Certificate::generate().unwrap());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let config = DtlsConfig::new(Role::Server, ours, theirs.fingerprint().clone());
    let mut dtls = Dtls::new(Instant::now(), config).unwrap();
    let args: Vec<String> =
        ["s_client", "-dtls1_2", "-connect", &addr.to_string()].map(String::from).to_vec();
    let mut client = tool(&args, &theirs, "client");
    let mut peer = None;
    let (events, got) = drive(&mut dtls, &socket, &mut peer, &mut client, false);
    assert!(matches!(events.first(), Some(DtlsEvent::Connected { .. })), "{events:?}");
    assert_eq!(got, b"hello from openssl\n");
    let printed = finish(&mut dtls, &socket, peer, &mut client);
    assert!(printed.contains("hello from peerlink"), "s_client printed {printed:?}");
}

#[test]
fn our_client_recovers_when_the_servers_last_flight_is_lost() {
    // OpenSSL's server drops our copy of the Finished as a replay; only a retransmission
    // with fresh record numbers (OpenSSL's own, on the wall clock) makes it repeat its flight.
    let (events, got, printed) = client_against_s_server(|theirs| theirs.fingerprint().clone(), true);
    assert!(matches!(events.first(), Some(DtlsEvent::Connected { .. })), "{events:?}");
    assert_eq!(got, b"hello from openssl\n");
    assert!(printed.contains("hello from peerlink"), "s_server printed {printed:?}");
}

/// The next datagram `dtls` sends.
fn next_datagram(dtls: &mut peerlink_dtls::Dtls) -> Option<Vec<u8>> {
    peerlink_proto::poll_datagram(dtls, std::time::Instant::now()).map(|((), d)| d)
}
