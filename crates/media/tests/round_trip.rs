//! Frames through packetizer and depacketizer for every codec, with seeded random frame
//! sizes and payload limits: in order they come back byte for byte; through loss and
//! reordering no partial frame ever comes out, a frame after a lost one carries
//! `gap_before`, and every frame whose packets all arrived comes out.

use peerlink_media::av1::write_leb128;
use peerlink_media::{Codec, Depacketizer, DepacketizerConfig, Packetizer, PacketizerConfig, Payloads};
use peerlink_proto::{Serial16, Serial32};
use std::collections::HashMap;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }

    /// Bytes without zeros, so H.264 NAL units hold no start code by accident.
    fn nonzero(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.below(255) + 1) as u8).collect()
    }
}

/// One encoded frame of `codec` and whether it is a key frame; what the depacketizer gives
/// back is the same bytes (H.264 with four-byte start codes, AV1 with a leading TD).
fn frame(codec: Codec, rng: &mut Rng, index: usize) -> (Vec<u8>, bool) {
    let key = index % 30 == 0;
    let cap = if rng.below(8) == 0 { 20_000 } else { 2_000 };
    let mut len = 1 + rng.below(cap) as usize;
    match codec {
        Codec::Opus => {
            len = 1 + rng.below(99) as usize;
            (rng.nonzero(len), true)
        }
        Codec::Vp8 => {
            let mut f = rng.nonzero(len);
            // RFC 7741 §4.3: P, the inverse key frame flag.
            f[0] = if key { f[0] & !1 } else { f[0] | 1 };
            (f, key)
        }
        Codec::Vp9 => {
            let mut f = rng.nonzero(len);
            f[0] = if key { 0x82 } else { 0x86 };
            (f, key)
        }
        Codec::H264 => {
            let mut au = Vec::new();
            let mut nal = |header: u8, first_mb_zero: bool, len: usize, rng: &mut Rng| {
                au.extend([0, 0, 0, 1, header]);
                let mut body = rng.nonzero(len);
                body[0] = if first_mb_zero { body[0] | 0x80 } else { body[0] & 0x7f | 0x01 };
                au.extend(body);
            };
            if key {
                nal(0x67, true, 8, rng);
                nal(0x68, true, 4, rng);
            }
            let slices = 1 + rng.below(3) as usize;
            for s in 0..slices {
                let header = if key { 0x65 } else { 0x41 };
                nal(header, s == 0, 1 + len / slices, rng);
            }
            (au, key)
        }
        Codec::Av1 => {
            let mut tu = vec![0x12, 0];
            if key {
                tu.extend([0x0a, 3, 1, 2, 3]);
            }
            if rng.below(4) == 0 {
                // Metadata with an extension byte (spatial layer 0).
                tu.extend([0x2e, 0x00, 2, 9, 9]);
            }
            tu.push(0x32);
            write_leb128(len, &mut tu);
            tu.extend(rng.nonzero(len));
            (tu, key)
        }
        _ => unreachable!(),
    }
}

const CODECS: [Codec; 5] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

struct Sent {
    data: Vec<u8>,
    key: bool,
    packets: Vec<(Serial16, Serial32, bool, Vec<u8>)>,
}

fn send(codec: Codec, seed: u64, frames: usize) -> Vec<Sent> {
    let mut rng = Rng(seed);
    let max_payload = 100 + rng.below(1100) as usize;
    let config =
        PacketizerConfig { max_payload, initial_picture_id: rng.below(1 << 15) as u16, ..Default::default() };
    let mut p = Packetizer::new(codec, config);
    let mut payloads = Payloads::default();
    let mut seq = Serial16(rng.below(1 << 16) as u16);
    let ts0 = rng.next();
    (0..frames)
        .map(|i| {
            let (data, key) = frame(codec, &mut rng, i);
            p.packetize(&data, &mut payloads).unwrap();
            let ts = Serial32(ts0.wrapping_add(3000 * i as u32));
            let packets = payloads
                .iter()
                .map(|(payload, marker)| {
                    assert!(payload.len() <= max_payload, "{codec:?}");
                    let s = seq;
                    seq = seq.wrapping_add(1);
                    (s, ts, marker, payload.to_vec())
                })
                .collect();
            Sent { data, key, packets }
        })
        .collect()
}

#[test]
fn every_codec_round_trips_in_order() {
    for codec in CODECS {
        for seed in 1..4 {
            let sent = send(codec, seed * 7919, 120);
            let mut d = Depacketizer::new(codec, DepacketizerConfig::default());
            let mut got = Vec::new();
            for s in &sent {
                for (seq, ts, m, p) in &s.packets {
                    d.handle_payload(*seq, *ts, *m, p);
                }
                got.extend(std::iter::from_fn(|| d.poll_frame()));
            }
            assert_eq!(got.len(), sent.len(), "{codec:?} seed {seed}: {:?}", d.stats());
            for (i, (f, s)) in got.iter().zip(&sent).enumerate() {
                assert_eq!(f.data, s.data, "{codec:?} seed {seed} frame {i}");
                assert_eq!(f.keyframe, s.key, "{codec:?} frame {i}");
                assert!(!f.gap_before);
            }
            let stats = d.stats();
            assert_eq!((stats.malformed_packets, stats.malformed_frames, stats.frames_dropped), (0, 0, 0));
        }
    }
}

#[test]
fn loss_and_reordering_never_yield_a_partial_frame() {
    for codec in CODECS {
        // Deeper than the largest frame (200 packets), shallower than the stream.
        let (depth, frames) = if codec == Codec::Opus { (16, 400) } else { (256, 300) };
        for seed in 1..4 {
            let sent = send(codec, seed * 104_729, frames);
            let mut rng = Rng(seed * 31);
            let wire: Vec<_> = sent.iter().flat_map(|s| s.packets.iter().cloned()).collect();
            let total = wire.len();
            // Each packet moves by fewer than 8 places (less than the window), then 3% are
            // lost and 1% duplicated.
            let mut keyed: Vec<_> =
                wire.into_iter().enumerate().map(|(i, p)| (i + rng.below(8) as usize, p)).collect();
            keyed.sort_by_key(|(k, _)| *k);
            let wire: Vec<_> = keyed.into_iter().map(|(_, p)| p).collect();
            let mut delivered = Vec::new();
            for p in wire {
                match rng.below(100) {
                    0..=2 => {}
                    3 => {
                        delivered.push(p.clone());
                        delivered.push(p);
                    }
                    _ => delivered.push(p),
                }
            }
            let arrived: std::collections::HashSet<u16> = delivered.iter().map(|p| p.0 .0).collect();
            let by_ts: HashMap<u32, usize> =
                sent.iter().enumerate().map(|(i, s)| (s.packets[0].1 .0, i)).collect();

            let mut d = Depacketizer::new(codec, DepacketizerConfig { reorder_depth: depth });
            let mut got = Vec::new();
            for (seq, ts, m, p) in &delivered {
                d.handle_payload(*seq, *ts, *m, p);
                got.extend(std::iter::from_fn(|| d.poll_frame()));
            }
            let mut last: Option<usize> = None;
            for f in &got {
                let i = by_ts[&f.timestamp.0];
                assert_eq!(f.data, sent[i].data, "{codec:?} seed {seed} frame {i} partial");
                assert!(last.is_none_or(|l| i > l), "{codec:?}: out of order");
                if last.is_some_and(|l| i > l + 1) {
                    assert!(f.gap_before, "{codec:?} seed {seed}: frame {i} after a lost one");
                }
                last = Some(i);
            }
            // Frames whose packets all arrived come out (but the tail, still in the window).
            let emitted: std::collections::HashSet<usize> =
                got.iter().map(|f| by_ts[&f.timestamp.0]).collect();
            // Before the first frame nothing is known about what came earlier: a frame that
            // came complete before an earlier one counts as the stream's start.
            let first = got.first().map_or(0, |f| by_ts[&f.timestamp.0]);
            let mut seen = 0;
            for (i, s) in sent.iter().enumerate() {
                seen += s.packets.len();
                // H.264 slices and AV1 frame OBUs do not say for sure that they begin a frame:
                // the previous frame's last packet must have arrived to tell.
                let weak = matches!(codec, Codec::H264 | Codec::Av1) && !s.key;
                let boundary_known = i == 0 || arrived.contains(&sent[i - 1].packets.last().unwrap().0 .0);
                if i > first
                    && (!weak || boundary_known)
                    && seen + usize::from(depth) + 8 < total
                    && s.packets.iter().all(|p| arrived.contains(&p.0 .0))
                {
                    assert!(
                        emitted.contains(&i),
                        "{codec:?} seed {seed}: whole frame {i} not emitted: {:?}",
                        d.stats()
                    );
                }
            }
            assert!(got.iter().any(|f| f.gap_before), "{codec:?} seed {seed}: no loss exercised");
            assert!(got.len() < sent.len() && got.len() > sent.len() / 2, "{codec:?}: {} frames", got.len());
        }
    }
}
