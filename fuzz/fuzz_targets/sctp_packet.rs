//! SCTP packets: raw bytes through the packet and chunk decoders, then fuzzer-written chunk
//! bodies with a valid header and checksum (so they get past the CRC and the verification
//! tag) into an established association with data channels, interleaved with time. Nothing
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_sctp::chunk::{self, Chunks, Data, ForwardTsn, Init, OutgoingReset, Params, Sack};
use peerlink_sctp::packet::{self, Packet};
use peerlink_sctp::{Association, ChannelConfig, DataChannels, SctpConfig};
use std::time::{Duration, Instant};

fn decode_all(data: &[u8]) {
    let Ok(p) = Packet::parse(data) else { return };
    for raw in p.chunks().flatten() {
        let _ = Data::parse(raw);
        if let Ok(init) = Init::parse(raw) {
            let _ = init.forward_tsn();
            let _ = init.params().count();
        }
        if let Ok(sack) = Sack::parse(raw) {
            let _ = sack.gaps().count() + sack.duplicates().count();
        }
        if let Ok(f) = ForwardTsn::parse(raw) {
            let _ = f.streams().count();
        }
        for (_, value) in Params::new(raw.value) {
            let _ = OutgoingReset::parse(value);
        }
    }
    let _ = Chunks::new(data).count();
}

fuzz_target!(|data: &[u8]| {
    decode_all(data);
    // Two associations with data channels, connected in memory.
    let mut now = Instant::now();
    let mut a = DataChannels::new(Association::new(now, SctpConfig::default(), [1; 32]), true);
    let mut b = DataChannels::new(Association::new(now, SctpConfig::default(), [2; 32]), false);
    a.association_mut().connect(now);
    b.association_mut().connect(now);
    let _ = a.create(now, ChannelConfig::reliable("fuzz"));
    let mut header = None;
    for _ in 0..10 {
        while let Some(((), p)) = peerlink_proto::poll_datagram(&mut a, now) {
            if a.association().is_established() && header.is_none() {
                header = Some(p[..packet::HEADER].to_vec());
            }
            b.handle_receive(now, &p);
        }
        while let Some(((), p)) = peerlink_proto::poll_datagram(&mut b, now) {
            a.handle_receive(now, &p);
        }
    }
    // `a`'s header carries `b`'s verification tag: fuzzed bodies reach `b` as from `a`.
    let Some(header) = header else { return };
    for body in data.split(|&x| x == 0xFE).take(32) {
        let mut p = header.clone();
        p.extend_from_slice(body);
        packet::finish(&mut p);
        b.handle_receive(now, &p);
        let mut out = Vec::new();
        while b.poll_transmit(now, &mut out).is_some() {}
        while b.poll_event().is_some() {}
        now += Duration::from_millis(u64::from(body.first().copied().unwrap_or(0)) * 10);
        b.handle_timeout(now);
        let _ = chunk::data_size(body.len());
    }
});
