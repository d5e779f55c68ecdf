//! After a large burst of records, what follows (close_notify) is still sent: nothing past
//! the handshake is dropped from the transmit queue.

use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Role};
use std::time::{Duration, Instant};

#[test]
fn close_notify_after_a_large_burst_of_writes_is_sent() {
    let (a, b) = (Certificate::generate().unwrap(), Certificate::generate().unwrap());
    let mut now = Instant::now();
    let client = DtlsConfig::new(Role::Client, a.clone(), b.fingerprint().clone());
    let server = DtlsConfig::new(Role::Server, b, a.fingerprint().clone());
    let mut sides = [Dtls::new(now, client).unwrap(), Dtls::new(now, server).unwrap()];
    for _ in 0..50 {
        for i in 0..2 {
            while let Some(d) = next_datagram(&mut sides[i]) {
                sides[1 - i].handle_receive(now, &d);
            }
        }
        now += Duration::from_millis(10);
        for s in &mut sides {
            s.handle_timeout(now);
        }
    }
    assert!(sides.iter().all(Dtls::is_connected));
    // SCTP hands over a window of 2,000 records between two polls, then the application
    // closes.
    for i in 0..2000u32 {
        sides[0].write(&i.to_be_bytes()).unwrap();
    }
    sides[0].close();
    let out: Vec<Vec<u8>> = std::iter::from_fn(|| next_datagram(&mut sides[0])).collect();
    // close_notify is an alert record (content type 21) after the 2,000 data records.
    assert_eq!(out.len(), 2001, "the close_notify was dropped");
    let mut buf = [0u8; 64];
    for d in &out {
        sides[1].handle_receive(now, d);
        while sides[1].read(&mut buf).is_some() {}
    }
    let events: Vec<DtlsEvent> = std::iter::from_fn(|| sides[1].poll_event()).collect();
    assert!(events.contains(&DtlsEvent::Closed), "{events:?}");
}

/// The next datagram `dtls` sends.
fn next_datagram(dtls: &mut peerlink_dtls::Dtls) -> Option<Vec<u8>> {
    peerlink_proto::poll_datagram(dtls, std::time::Instant::now()).map(|((), d)| d)
}
