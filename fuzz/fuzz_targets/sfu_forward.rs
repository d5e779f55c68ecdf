//! The SFU's reading of forwarded packets: the first byte picks the codec and kind, the rest
//! is a run of (1-byte length, RTP packet) fed to a subscriber's forwarder (sequence, clock
//! and VP8 picture id rewriting, key frame detection), to the publication's layer rates,
//! loss and key frame sizes, to the VP8 key frame size reader, and to a subscriber's layer
//! choice (switches at key frames, retargets by rate, size and cap, pauses), which decides what
//! reaches the forwarder as the server does. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_media::Codec;
use peerlink_rtp::RtpPacket;
use peerlink_sfu::{
    starts_keyframe, vp8_key_size, Forwarder, Kind, LayerChoice, LayerDecision, Layers, Verdict,
};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let codec = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1][usize::from(pick % 5)];
    let kind = if pick & 0x80 != 0 { Kind::Audio } else { Kind::Video };
    let mut forwarder = Forwarder::new(kind, codec);
    let mut layers = Layers::new(usize::from(pick >> 5 & 3) + 1);
    let mut choice = LayerChoice::new(usize::from(pick >> 3 & 3));
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
        let key_start = starts_keyframe(kind, codec, payload);
        if key_start {
            if let Some(size) = vp8_key_size(payload) {
                assert!(size.0 > 0 && size.1 > 0);
                layers.on_size(layer, size);
            }
        }
        let _ = (layers.lowest(now), layers.best(now), layers.loss(layer), layers.unsized_active(now));
        assert!((0.0..=1.0).contains(&layers.loss(layer)));
        // The server's retargets, driven by the input: by rate and size, to the thumbnail, a
        // cap from the path's estimate, a pause (last-N).
        match (n % 13, bytes.first().copied().unwrap_or(0) & 7) {
            (0, 0) => choice.pause(),
            (0, 1) => {
                let _ = layers.lowest(now).map(|low| choice.retarget_to(low));
            }
            (0, 2) => {
                let _ = choice.retarget_within(now, &layers, u64::from(*len) * 1000);
            }
            (0, _) => {
                let _ = choice.retarget(now, &layers);
            }
            _ => {}
        }
        match choice.on_packet(layer, key_start) {
            LayerDecision::Forward => {}
            LayerDecision::Switch => forwarder.restart(),
            LayerDecision::Skip => continue,
            LayerDecision::WantKeyframe(l) => {
                assert!(l < 8);
                continue;
            }
        }
        if let Verdict::Forward { .. } = forwarder.forward(now, &packet) {
            let mut out = payload.to_vec();
            forwarder.rewrite_payload(&mut out);
            assert_eq!(out.len(), payload.len());
        }
    }
});
