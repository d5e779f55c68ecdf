//! CPU per received media packet of the receive path: SRTP unprotect, RTP parse, the
//! depacketizer's reorder window and VP8 frame assembly, frames drained as they complete.
//! `bench/media.sh` runs it beside Pion's (bench/media-ref) on the same packets.
//!
//! Before any timing it makes FRAMES VP8 frames of 640x480-like sizes (a ~30 KB key frame every
//! 60 frames, 3-6 KB inter frames; bytes pseudo-random behind a valid VP8 payload header),
//! packetizes them (1,200-byte payloads), encodes RTP headers (sequence numbers wrap on the
//! way), protects them with AES_CM_128_HMAC_SHA1_80 and swaps a few adjacent packets. Then
//! REPS times, with a fresh receiving SRTP context and depacketizer each (made outside the
//! clock): unprotect → parse → `handle_packet` → `poll_frame` until empty. Asserts every frame
//! came out whole and in order (once, outside the clock) and that each timed pass gives as many
//! frames and bytes as went in, and prints the median of the repetitions:
//! `packets=P frames=F bytes=B packet_ns=X frame_ns=Y`.
//!
//!   recv_bench [--frames N] [--reps R] [--write FILE]
//!
//! `--write` saves the protected packets, key and salt for the reference (format in
//! `write_input`), so both receive identical input.

use peerlink_media::{
    Codec, Depacketizer, DepacketizerConfig, Frame, Packetizer, PacketizerConfig, Payloads,
};
use peerlink_rtp::{RtpHeader, RtpPacket, Serial16, Serial32, SrtpContext, SrtpProfile};
use std::time::Instant;

const SSRC: u32 = 0x1234_5678;
/// Close to the wrap, so the sequence numbers (and the SRTP rollover counter) wrap.
const FIRST_SEQUENCE: u16 = 65_000;
/// 30 frames per second at the 90 kHz video clock.
const TICKS_PER_FRAME: u32 = 3_000;
const KEYFRAME_INTERVAL: usize = 60;
/// One packet in this many is swapped with the next one.
const SWAP_EVERY: usize = 97;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.next() as usize % (high - low + 1)
    }
}

/// A VP8 frame (RFC 6386 §9.1): a 3-byte frame tag whose bit 0 is 0 on a key frame (RFC 7741
/// §4.3), then on key frames the start code and 640x480, then pseudo-random bytes.
fn vp8_frame(rng: &mut Rng, key: bool) -> Vec<u8> {
    let len = if key { rng.between(28_000, 32_000) } else { rng.between(3_000, 6_000) };
    let mut frame: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    frame[0] = (frame[0] & !0x01) | u8::from(!key);
    if key {
        frame[3..10].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
    }
    frame
}

struct Input {
    key: Vec<u8>,
    salt: Vec<u8>,
    frames: Vec<Vec<u8>>,
    packets: Vec<Vec<u8>>,
}

fn prepare(frame_count: usize) -> Result<Input, Box<dyn std::error::Error>> {
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let master: Vec<u8> = (0..30u32).map(|i| (i * 13 + 5) as u8).collect();
    let (key, salt) = (master[..profile.key_len()].to_vec(), master[profile.key_len()..].to_vec());
    let mut tx = SrtpContext::new(profile, &key, &salt)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut packetizer =
        Packetizer::new(Codec::Vp8, PacketizerConfig { max_payload: 1200, ..Default::default() });
    let mut payloads = Payloads::default();
    let (mut frames, mut packets) = (Vec::new(), Vec::new());
    let mut sequence = Serial16(FIRST_SEQUENCE);
    let mut plain = Vec::new();
    for i in 0..frame_count {
        let frame = vp8_frame(&mut rng, i % KEYFRAME_INTERVAL == 0);
        packetizer.packetize(&frame, &mut payloads)?;
        for (payload, marker) in payloads.iter() {
            let header = RtpHeader {
                marker,
                payload_type: 96,
                sequence_number: sequence,
                timestamp: Serial32(i as u32 * TICKS_PER_FRAME),
                ssrc: SSRC,
                ..Default::default()
            };
            plain.clear();
            header.encode(&[], payload, 0, &mut plain)?;
            let mut protected = Vec::new();
            tx.protect_rtp(&plain, &mut protected)?;
            packets.push(protected);
            sequence = sequence.wrapping_add(1);
        }
        frames.push(frame);
    }
    // Light reordering, as on a real path.
    for i in (SWAP_EVERY..packets.len() - 1).step_by(SWAP_EVERY) {
        packets.swap(i, i + 1);
    }
    Ok(Input { key, salt, frames, packets })
}

/// Big-endian: 16-byte key, 14-byte salt, u32 frame count and each frame's length as a u32
/// (the reference checks what it assembles against them), u32 packet count, then each packet
/// as a u16 length and its bytes. Frame i has RTP timestamp i * 3000.
fn write_input(input: &Input, path: &str) -> std::io::Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(&input.key);
    out.extend_from_slice(&input.salt);
    out.extend_from_slice(&(input.frames.len() as u32).to_be_bytes());
    for f in &input.frames {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(&(input.packets.len() as u32).to_be_bytes());
    for p in &input.packets {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    std::fs::write(path, out)
}

/// One pass of the receive path over every packet, each frame handed to `on_frame`.
fn receive(
    rx: &mut SrtpContext,
    depacketizer: &mut Depacketizer,
    packets: &[Vec<u8>],
    mut on_frame: impl FnMut(Frame),
) {
    let mut plain = Vec::with_capacity(1500);
    for protected in packets {
        plain.clear();
        if rx.unprotect_rtp(protected, &mut plain).is_err() {
            continue;
        }
        let Ok(packet) = RtpPacket::parse(&plain) else { continue };
        depacketizer.handle_packet(&packet);
        while let Some(frame) = depacketizer.poll_frame() {
            on_frame(frame);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut frame_count, mut reps, mut write) = (600usize, 15usize, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--frames" => frame_count = value()?.parse()?,
            "--reps" => reps = value()?.parse()?,
            "--write" => write = Some(value()?),
            _ => return Err("usage: recv_bench [--frames N] [--reps R] [--write FILE]".into()),
        }
    }
    if frame_count == 0 || reps == 0 {
        return Err("--frames and --reps must be at least 1".into());
    }
    let input = prepare(frame_count)?;
    if let Some(path) = &write {
        write_input(&input, path)?;
    }
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let receiver = || -> Result<_, Box<dyn std::error::Error>> {
        Ok((
            SrtpContext::new(profile, &input.key, &input.salt)?,
            Depacketizer::new(Codec::Vp8, DepacketizerConfig::default()),
        ))
    };

    // Outside the clock: every frame comes out whole, in order, and nothing else.
    let (mut rx, mut depacketizer) = receiver()?;
    let mut got = Vec::with_capacity(frame_count);
    receive(&mut rx, &mut depacketizer, &input.packets, |f| got.push(f));
    assert_eq!(got.len(), input.frames.len(), "frames out != frames in");
    for (i, (frame, sent)) in got.iter().zip(&input.frames).enumerate() {
        assert!(
            frame.data == *sent && frame.timestamp == Serial32(i as u32 * TICKS_PER_FRAME),
            "frame {i} differs"
        );
        assert!(!frame.gap_before && frame.keyframe == (i % KEYFRAME_INTERVAL == 0), "frame {i} flags");
    }
    let sent_bytes: usize = input.frames.iter().map(Vec::len).sum();

    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (mut rx, mut depacketizer) = receiver()?;
        let (mut frames, mut bytes) = (0usize, 0usize);
        let t0 = Instant::now();
        receive(&mut rx, &mut depacketizer, &input.packets, |f| {
            frames += 1;
            bytes += f.data.len();
        });
        times.push(t0.elapsed().as_nanos() as f64);
        assert_eq!((frames, bytes), (input.frames.len(), sent_bytes), "frames out != frames in");
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "packets={} frames={} bytes={} packet_ns={:.1} frame_ns={:.1}",
        input.packets.len(),
        input.frames.len(),
        sent_bytes,
        median / input.packets.len() as f64,
        median / input.frames.len() as f64
    );
    Ok(())
}
