//! The TURN client's handling of whatever the server (or an attacker spoofing it) sends:
//! never a panic, and any payload range it reports lies inside the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_turn::{ClientConfig, TurnClient};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = ClientConfig {
        server: "192.0.2.1:3478".parse().unwrap(),
        username: "alice".into(),
        password: "pw".into(),
    };
    let mut client = TurnClient::new(config, [7; 32]);
    client.allocate(now);
    let mut out = Vec::new();
    // Records: [len, bytes...]; each is one datagram from "the server".
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        if let Some((_, range)) = client.handle_receive(now, packet) {
            assert!(range.end <= packet.len());
        }
        now += Duration::from_millis(300);
        client.handle_timeout(now);
        out.clear();
        while client.poll_transmit(now, &mut out).is_some() {}
        while client.poll_event().is_some() {}
        if let Some(relayed) = client.relayed_address() {
            let _ = client.bind_channel(now, relayed);
            let _ = client.send_to(relayed, packet, &mut out);
        }
    }
});
