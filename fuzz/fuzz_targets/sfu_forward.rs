//! The SFU's reading of forwarded packets: the first byte picks the codec and kind, the rest
//! is a run of (1-byte length, RTP packet) fed to a subscriber's forwarder (sequence, clock
//! and VP8 picture id rewriting, key frame detection), to the publication's layer rates,
//! loss and key frame sizes, and to the VP8 key frame size reader. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_media::Codec;
use peerlink_rtp::RtpPacket;
use peerlink_sfu::{starts_keyframe, vp8_key_size, Forwarder, Kind, Layers, Verdict};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let codec = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1][usize::from(pick % 5)];
    let kind = if pick & 0x80 != 0 { Kind::Audio } else { Kind::Video };
    let mut forwarder = Forwarder::new(kind, codec);
    let mut layers = Layers::new(usize::from(pick >> 5 & 3) + 1);
    let t0 = Instant::now();
    let mut n = 0u64;
    while let [len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let bytes = &tail[..take];
        rest = &tail[take..];
        n += 1;
        let now = t0 + Duration::from_millis(n * 7);
        let layer = usize::from(*len & 3);
        if n % 50 == 0 {
            forwarder.restart();
        }
        let Ok(packet) = RtpPacket::parse(bytes) else { continue };
        let payload = packet.payload();
        layers.on_packet(now, layer, bytes.len(), (packet.ssrc(), packet.sequence_number()));
        if starts_keyframe(kind, codec, payload) {
            if let Some(size) = vp8_key_size(payload) {
                assert!(size.0 > 0 && size.1 > 0);
                layers.on_size(layer, size);
            }
        }
        let _ = (layers.lowest(now), layers.best(now), layers.loss(layer));
        assert!((0.0..=1.0).contains(&layers.loss(layer)));
        if let Verdict::Forward { .. } = forwarder.forward(&packet) {
            let mut out = payload.to_vec();
            forwarder.rewrite_payload(&mut out);
            assert_eq!(out.len(), payload.len());
        }
    }
});
