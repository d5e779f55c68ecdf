//! RTP payloads of every media format: the first byte picks the codec, the rest is a run of
//! packets (2-byte sequence, 1-byte timestamp step, marker, 1-byte length, payload) fed to a
//! depacketizer with a small window, and each payload to its format's parser and frame
//! assembler. Nothing may panic; the buffer stays within its window.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_media::{
    av1, h264, opus, vp8, vp9, Codec, Depacketizer, DepacketizerConfig, Packetizer, PacketizerConfig,
    Payloads,
};
use peerlink_proto::{Serial16, Serial32};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let codec = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1][usize::from(pick % 5)];
    let mut d = Depacketizer::new(codec, DepacketizerConfig { reorder_depth: u16::from(pick >> 3) + 1 });
    let mut ts = 0u32;
    while let [s0, s1, step, flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        ts = ts.wrapping_add(u32::from(*step) * 100);
        d.handle_payload(Serial16(u16::from_be_bytes([*s0, *s1])), Serial32(ts), flags & 1 != 0, payload);
        while let Some(f) = d.poll_frame() {
            assert!(!f.data.is_empty());
        }
        let _ = match codec {
            Codec::Opus => opus::parse(payload),
            Codec::Vp8 => vp8::parse(payload),
            Codec::Vp9 => vp9::parse(payload),
            Codec::H264 => h264::parse(payload),
            _ => av1::parse(payload),
        };
        let mut out = Vec::new();
        let _ = match codec {
            Codec::Opus => opus::depacketize([payload, payload], &mut out),
            Codec::Vp8 => vp8::depacketize([payload, payload], &mut out),
            Codec::Vp9 => vp9::depacketize([payload, payload], &mut out),
            Codec::H264 => h264::depacketize([payload, payload], &mut out),
            _ => av1::depacketize([payload, payload], &mut out),
        };
    }
    // The same bytes as a frame to send: packetizers refuse or cut, never panic.
    let mut p = Packetizer::new(
        codec,
        PacketizerConfig { max_payload: usize::from(pick % 64) + 1, ..Default::default() },
    );
    let mut out = Payloads::default();
    let _ = p.packetize(data, &mut out);
});
