//! The ICE agent's packet handling: datagrams as the fuzzer writes them, and STUN Binding
//! requests and responses built from fuzzer-chosen attributes and correctly signed (so the
//! input gets past integrity checks), interleaved with time steps, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_ice::{IceAgent, IceConfig, TurnServerConfig};
use peerlink_stun::{Attribute, Class, ErrorCode, Key, Message, MessageWriter, Method, TransactionId};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let config = IceConfig {
        controlling: flags & 1 == 1,
        local_ufrag: "fuzz".into(),
        local_pwd: "fuzz-password-22-chars".into(),
        stun_servers: vec!["192.0.2.100:3478".parse().unwrap()],
        // The same server for TURN: packets "from" it reach the TURN client too.
        turn_servers: vec![TurnServerConfig {
            server: "192.0.2.100:3478".parse().unwrap(),
            username: "user".into(),
            password: "pass".into(),
        }],
        lite: flags & 2 == 2,
    };
    let mut agent = IceAgent::new(config, [flags; 32]).unwrap();
    let mut now = Instant::now();
    let here: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    agent.add_host_candidate(now, here);
    agent.set_remote_credentials(now, "peer", "peer-password-22-chars").unwrap();
    let ours = Key::short_term("fuzz-password-22-chars").unwrap();
    let theirs = Key::short_term("peer-password-22-chars").unwrap();
    // Transaction ids of the agent's own requests, so answers can match them.
    let mut sent: Vec<TransactionId> = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let from = if op >> 4 == 0x0f {
            "192.0.2.100:3478".parse().unwrap()
        } else {
            SocketAddr::from(([192, 0, 2, 2 + (op >> 4)], 6000 + u16::from(op & 0x0f)))
        };
        match op % 4 {
            0 => {
                agent.handle_receive(now, from, here, chunk);
                let mut out = chunk.to_vec();
                let _ = agent.send_data(&mut out, 0);
            }
            1 | 2 => {
                // A signed message whose attributes come from the fuzzer.
                let mut buf = Vec::new();
                let class = if op % 4 == 1 { Class::Request } else { Class::SuccessResponse };
                let mut tid = [0u8; 12];
                tid[..chunk.len().min(12)].copy_from_slice(&chunk[..chunk.len().min(12)]);
                let tid = match (class, chunk.first()) {
                    (Class::SuccessResponse, Some(&k)) if !sent.is_empty() => {
                        sent[usize::from(k) % sent.len()]
                    }
                    _ => TransactionId(tid),
                };
                // Some answers are 487 role conflicts.
                let class = if class == Class::SuccessResponse && chunk.get(1).is_some_and(|b| b & 7 == 0) {
                    Class::ErrorResponse
                } else {
                    class
                };
                let mut w = MessageWriter::new(&mut buf, class, Method::BINDING, tid);
                if class == Class::ErrorResponse {
                    let _ = w.attribute(&Attribute::ErrorCode(ErrorCode::ROLE_CONFLICT));
                }
                let _ = w.attribute(&Attribute::Username(if class == Class::Request {
                    "fuzz:peer"
                } else {
                    "x"
                }));
                if chunk.len() >= 16 {
                    let n = u32::from_be_bytes([chunk[12], chunk[13], chunk[14], chunk[15]]);
                    let _ = w.attribute(&Attribute::Priority(n));
                    let _ = w.attribute(&Attribute::IceControlling(u64::from(n)));
                    let _ = w.attribute(&Attribute::XorMappedAddress(from));
                    if n & 1 == 1 {
                        let _ = w.attribute(&Attribute::UseCandidate);
                    }
                }
                let _ = w.message_integrity(if class == Class::Request { &ours } else { &theirs });
                let _ = w.fingerprint();
                w.finish();
                agent.handle_receive(now, from, here, &buf);
            }
            _ => {
                now += Duration::from_millis(u64::from(*len) * 20);
                agent.handle_timeout(now);
            }
        }
        let mut buf = Vec::new();
        while let Some(t) = agent.poll_transmit(now, &mut buf) {
            if let Ok(m) = Message::parse(t.datagram(&buf)) {
                if m.class() == Class::Request {
                    sent.push(m.transaction_id());
                    if sent.len() > 64 {
                        sent.remove(0);
                    }
                }
            }
        }
        while agent.poll_event().is_some() {}
        let _ = agent.poll_timeout();
    }
});
