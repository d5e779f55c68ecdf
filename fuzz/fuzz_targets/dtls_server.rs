//! Datagrams from anyone reach a DTLS server before the handshake and after it: whatever
//! they hold, nothing panics and a forged peer never gets connected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_dtls::{Certificate, Dtls, DtlsConfig, DtlsEvent, Role};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn certs() -> &'static (Certificate, Certificate) {
    static CERTS: OnceLock<(Certificate, Certificate)> = OnceLock::new();
    CERTS.get_or_init(|| (Certificate::generate().unwrap(), Certificate::generate().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let (ours, theirs) = certs();
    let mut now = Instant::now();
    let config = DtlsConfig::new(Role::Server, ours.clone(), theirs.fingerprint().clone());
    let mut dtls = Dtls::new(now, config).unwrap();
    let mut rest = data;
    let mut buf = vec![0u8; 2048];
    // Each datagram is a length byte and that many bytes (a high bit advances the clock).
    while let [len, tail @ ..] = rest {
        let n = usize::from(len & 0x7f).min(tail.len()) * 8;
        let n = n.min(tail.len());
        let (datagram, tail) = tail.split_at(n);
        rest = tail;
        dtls.handle_receive(now, datagram);
        while dtls.read(&mut buf).is_some() {}
        if len & 0x80 != 0 {
            now += Duration::from_millis(700);
            dtls.handle_timeout(now);
        }
        let mut buf = Vec::new();
        while dtls.poll_transmit(now, &mut buf).is_some() {}
        while let Some(event) = dtls.poll_event() {
            // Nobody holding `theirs`' key took part: the fingerprint check stops everyone.
            assert!(!matches!(event, DtlsEvent::Connected { .. }));
        }
    }
});
