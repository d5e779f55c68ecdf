//! The bandwidth estimator fed from arbitrary bytes: a run of records, each a 1-byte kind
//! and a time step, then either packets sent (sequence, size, maybe a probe cluster) or an
//! RTCP datagram whose transport-cc packets go to `on_feedback` (garbage, repeated,
//! out-of-order and unknown sequence numbers included). Nothing may panic; the target
//! stays within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_media::bwe::{BandwidthEstimator, BweConfig};
use peerlink_rtp::RtcpPacket;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let config = BweConfig { min_bps: 10_000, max_bps: 5_000_000, ..BweConfig::default() };
    let mut bwe = BandwidthEstimator::new(config);
    let mut now = Instant::now();
    let mut rest = data;
    while let [kind, step, s0, s1, len, tail @ ..] = rest {
        now += Duration::from_millis(u64::from(*step) * 4);
        let seq = u16::from_be_bytes([*s0, *s1]);
        let n = usize::from(*len).min(tail.len());
        rest = &tail[n..];
        match kind % 4 {
            0 => {
                for i in 0..u16::from(*len % 32) {
                    bwe.on_packet_sent(now, seq.wrapping_add(i), 1200);
                }
            }
            1 => {
                while let Some(c) = bwe.poll_probe(now) {
                    for i in 0..c.min_packets as u16 {
                        bwe.on_probe_sent(now, seq.wrapping_add(i), usize::from(*len) * 8, c.id);
                    }
                }
            }
            _ => {
                for packet in RtcpPacket::parse_all(&tail[..n]).flatten() {
                    if let RtcpPacket::TransportCc(fb) = packet {
                        bwe.on_feedback(now, &fb);
                        bwe.on_feedback(now, &fb);
                    }
                }
            }
        }
        if let Some(at) = bwe.poll_timeout() {
            bwe.handle_timeout(at.max(now));
        }
        let rate = bwe.target_bitrate();
        assert!((10_000..=5_000_000).contains(&rate), "{rate}");
    }
});
