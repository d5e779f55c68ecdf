//! The SFU's file fan-out (peerlink_sfu::files) fed arbitrary events: a sender's messages
//! (headers, chunks, trailers, garbage), receivers' answers, channels opening, draining and
//! closing, participants leaving. Nothing may panic, the sender is answered at most once, and
//! nothing is sent to a participant after it left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_sfu::files::{Action, FileRelays, HIGH_WATER};
use std::time::{Duration, Instant};

const PEERS: [&str; 4] = ["a", "b", "c", "d"];

fuzz_target!(|data: &[u8]| {
    let mut relays = FileRelays::default();
    let mut left: Vec<String> = Vec::new();
    let mut answers = 0;
    let mut rest = data;
    let mut next_channel = 100u16;
    let t0 = Instant::now();
    let mut n = 0u64;
    let check = |actions: Vec<Action>,
                 left: &[String],
                 answers: &mut usize,
                 relays: &mut FileRelays,
                 next: &mut u16| {
        for a in actions {
            match a {
                Action::Send { to, data, .. } => {
                    assert!(!left.contains(&to.0), "sent to {} after it left", to.0);
                    if to == ("a".to_owned(), 1) && data.starts_with(b"{\"") {
                        let text = String::from_utf8_lossy(&data);
                        if text.contains("\"ack\"") || text.contains("\"error\"") {
                            *answers += 1;
                        }
                    }
                }
                Action::OpenOut { to, from } => {
                    *next += 1;
                    relays.opened_out(&from, &to, *next);
                }
                Action::Close(_) | Action::Credit { .. } => {}
            }
        }
    };
    let from = ("a".to_owned(), 1u16);
    let actions = relays.incoming(from.clone(), &["b".into(), "c".into(), "d".into()]);
    check(actions, &left, &mut answers, &mut relays, &mut next_channel);
    while let [op, len, tail @ ..] = rest {
        n += 1;
        let take = usize::from(*len).min(tail.len());
        let bytes = &tail[..take];
        rest = &tail[take..];
        let peer = PEERS[usize::from(op >> 4 & 3)].to_owned();
        let channel = (peer.clone(), 100 + u16::from(op >> 6) + 1);
        let fullest = if op & 8 != 0 { HIGH_WATER } else { 0 };
        let actions = match op & 7 {
            0 => {
                relays.on_sender(t0 + Duration::from_secs(n), &from, bytes.to_vec(), op & 0x40 != 0, fullest)
            }
            1 => relays.on_receiver(&channel, bytes),
            2 => relays.out_open(&channel),
            3 => relays.drained(&channel, fullest),
            4 => relays.closed(&channel),
            5 => {
                left.push(peer.clone());
                relays.left(&peer)
            }
            6 => relays.out_failed(&from, &peer, "gone"),
            // A well-formed header (the first message decides who receives), some naming
            // receivers, so the fuzzer gets past it without guessing JSON.
            7 if op & 8 != 0 => {
                let to: Vec<&str> =
                    PEERS.iter().copied().filter(|p| bytes.contains(&p.as_bytes()[0])).collect();
                let header = if op & 0x40 != 0 {
                    serde_json::json!({"type": "file", "name": "f", "size": take, "to": to})
                } else {
                    serde_json::json!({"type": "file", "name": "f", "size": take})
                };
                relays.on_sender(
                    t0 + Duration::from_secs(n),
                    &from,
                    header.to_string().into_bytes(),
                    false,
                    0,
                )
            }
            _ => {
                let _ = (
                    relays.out_channels(&from),
                    relays.relay_of(&channel),
                    relays.is_in(&from),
                    relays.is_out(&channel),
                );
                Vec::new()
            }
        };
        // (A participant that left and another event about it: the SFU drops those.)
        let actions = actions
            .into_iter()
            .filter(|a| match a {
                Action::OpenOut { to, .. } => !left.contains(to),
                _ => true,
            })
            .collect();
        check(actions, &left, &mut answers, &mut relays, &mut next_channel);
        assert!(answers <= 1, "the sender was answered {answers} times");
    }
});
