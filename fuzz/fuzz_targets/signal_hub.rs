//! The signaling hub: any sequence of connects, text frames (as the fuzzer writes them, or
//! spliced into valid join/signal frames so rooms fill up), disconnects, cluster messages
//! and time steps never panics, and every frame the hub sends is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_signal::cluster::ClusterMessage;
use peerlink_signal::hub::{ConnId, Hub, HubConfig, Output};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut hub =
        Hub::new(HubConfig { max_room_peers: 3, ..HubConfig::default() }, now, 1_800_000_000, [5; 32]);
    if data.first().is_some_and(|b| b & 1 == 1) {
        hub.enable_cluster(now);
    }
    let mut conns: Vec<ConnId> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut rest = data.get(1..).unwrap_or_default();
    while let [op, arg, tail @ ..] = rest {
        let len = usize::from(*arg).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let text = String::from_utf8_lossy(chunk);
        let conn = conns.get(usize::from(*arg) % conns.len().max(1)).copied();
        match op % 8 {
            0 => conns.extend(hub.connect(now, "fuzz.example")),
            1 => {
                if let Some(c) = conn {
                    hub.handle_text(now, c, &text);
                }
            }
            2 => {
                if let Some(c) = conn {
                    let room = if arg & 1 == 0 { "r" } else { "s" };
                    hub.handle_text(now, c, &format!(r#"{{"type":"join","room":"{room}","name":"n{arg}"}}"#));
                }
            }
            3 => {
                if let (Some(c), Some(to)) = (conn, ids.get(usize::from(*arg) % ids.len().max(1))) {
                    let data = serde_json::to_string(&text).unwrap();
                    hub.handle_text(now, c, &format!(r#"{{"type":"signal","to":"{to}","data":{data}}}"#));
                }
            }
            4 => {
                if let Some(c) = conn {
                    hub.disconnect(now, c);
                }
            }
            5 => {
                if let Some(msg) = ClusterMessage::decode(&text) {
                    hub.handle_cluster(now, msg);
                }
            }
            6 => {
                now += Duration::from_millis(u64::from(*arg) * 250);
                hub.handle_timeout(now);
            }
            _ => {
                if let Some(c) = conn {
                    hub.handle_binary(now, c);
                }
            }
        }
        while let Some(out) = hub.poll_output() {
            if let Output::Send { text, .. } = out {
                let value: serde_json::Value = serde_json::from_str(&text).expect("hub frames are JSON");
                if let Some(id) = value.get("id").and_then(|v| v.as_str()) {
                    ids.push(id.to_owned());
                }
                if let Some(id) = value.pointer("/peer/id").and_then(|v| v.as_str()) {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.truncate(64);
    }
});
