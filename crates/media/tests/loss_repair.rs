//! Loss repair end to end in virtual time: a VP8 sender (packetizer, send history, RTX)
//! and a receiver (NACK generator, RTX unwrapping, depacketizer) joined by a lossy,
//! reordering channel with 25 ms one-way delay in each direction; NACKs travel back over
//! the same kind of channel. Every frame that comes out must be byte for byte the frame
//! sent, and nearly all must come out.

use peerlink_media::{
    unwrap_rtx, Codec, Depacketizer, DepacketizerConfig, NackConfig, NackGenerator, Packetizer,
    PacketizerConfig, Payloads, ReceiveStats, RtxSender, SendHistory,
};
use peerlink_proto::{SeededRng, Serial16, Serial32};
use peerlink_rtp::rtcp::Nack;
use peerlink_rtp::{RtcpPacket, RtpHeader, RtpPacket};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const MEDIA_SSRC: u32 = 0x1111_0001;
const RTX_SSRC: u32 = 0x1111_0002;
const RECEIVER_SSRC: u32 = 0x2222_0001;
const VP8_PT: u8 = 96;
const RTX_PT: u8 = 97;
const FRAMES: u32 = 300;
const ONE_WAY: Duration = Duration::from_millis(25);

/// True with probability `permille` / 1000.
fn chance(rng: &mut SeededRng, permille: u32) -> bool {
    rng.next_u32() % 1000 < permille
}

fn seeded(seed: u64) -> SeededRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_be_bytes());
    SeededRng::new(&key)
}

/// One direction of the path: loses `loss_permille`, delays by [`ONE_WAY`], and holds
/// back about 3% of packets by 3 ms more, so later ones overtake them.
struct Channel {
    rng: SeededRng,
    loss_permille: u32,
    in_flight: Vec<(Instant, u64, Vec<u8>)>,
    sent: u64,
}

impl Channel {
    fn new(seed: u64, loss_permille: u32) -> Channel {
        Channel { rng: seeded(seed), loss_permille, in_flight: Vec::new(), sent: 0 }
    }

    fn send(&mut self, now: Instant, datagram: Vec<u8>) {
        self.sent += 1;
        if chance(&mut self.rng, self.loss_permille) {
            return;
        }
        let extra = if chance(&mut self.rng, 30) { 3 * MS } else { Duration::ZERO };
        self.in_flight.push((now + ONE_WAY + extra, self.sent, datagram));
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.iter().map(|d| d.0).min()
    }

    /// Datagrams due by `now`, in arrival order.
    fn deliver(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut due: Vec<_> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|d| (d.0, d.1));
        due.into_iter().map(|d| d.2).collect()
    }
}

/// Frame `i`: a key frame every 100, else 2–8 KB; bytes without structure beyond VP8's P
/// bit (RFC 7741 §4.3: 0 for key frames).
fn frame(rng: &mut SeededRng, i: u32) -> Vec<u8> {
    let key = i % 100 == 0;
    let len = if key { 30_000 } else { 2_000 + (rng.next_u32() % 6_000) as usize };
    let mut f = vec![0u8; len];
    rng.fill(&mut f);
    f[0] = if key { f[0] & !1 } else { f[0] | 1 };
    f
}

#[derive(Debug, Default)]
struct Outcome {
    frames_sent: usize,
    frames_whole: usize,
    nacks_sent: u64,
    requested: u64,
    recovered: u64,
    given_up: u64,
    retransmissions: u64,
    lost_before_repair: i64,
    expected: u64,
}

fn run(seed: u64, loss_permille: u32) -> Outcome {
    let t0 = Instant::now();
    let mut forward = Channel::new(seed, loss_permille);
    let mut backward = Channel::new(seed ^ 0x5555, loss_permille);
    let mut content = seeded(!seed);

    // Sender.
    let mut packetizer = Packetizer::new(Codec::Vp8, PacketizerConfig::default());
    let mut payloads = Payloads::default();
    let mut history = SendHistory::new(1024, Duration::from_secs(2));
    let mut rtx = RtxSender { ssrc: RTX_SSRC, payload_type: RTX_PT, next_seq: Serial16(40_000) };
    let mut seq = Serial16(65_000); // wraps during the run
    let rtt = 2 * ONE_WAY;
    let mut sent_frames: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut retransmissions = 0;

    // Receiver.
    let mut nack = NackGenerator::new(NackConfig::default());
    nack.set_rtt(rtt);
    let mut depacketizer = Depacketizer::new(Codec::Vp8, DepacketizerConfig::default());
    let mut stats = ReceiveStats::new(90_000);
    let mut received: Vec<(Serial32, Vec<u8>)> = Vec::new();

    let frame_interval = Duration::from_micros(33_333);
    let end = t0 + frame_interval * FRAMES + Duration::from_secs(1);
    let mut next_frame = 0u32;
    let mut now = t0;
    let mut original = Vec::new();
    while now <= end {
        // Sender: the frames due.
        while next_frame < FRAMES && t0 + frame_interval * next_frame <= now {
            let f = frame(&mut content, next_frame);
            let ts = next_frame.wrapping_mul(3000).wrapping_add(0xFFFF_0000);
            packetizer.packetize(&f, &mut payloads).unwrap();
            sent_frames.insert(ts, f);
            for (payload, marker) in payloads.iter() {
                let header = RtpHeader {
                    marker,
                    payload_type: VP8_PT,
                    sequence_number: seq,
                    timestamp: Serial32(ts),
                    ssrc: MEDIA_SSRC,
                    ..Default::default()
                };
                let mut packet = Vec::new();
                header.encode(&[], payload, 0, &mut packet).unwrap();
                history.store(now, seq, &packet);
                forward.send(now, packet);
                seq = seq.wrapping_add(1);
            }
            next_frame += 1;
        }
        // Receiver: media and retransmissions.
        for datagram in forward.deliver(now) {
            let packet = RtpPacket::parse(&datagram).unwrap();
            let (packet, is_retransmission) = if packet.ssrc() == RTX_SSRC {
                original.clear();
                unwrap_rtx(&packet, MEDIA_SSRC, VP8_PT, &mut original).unwrap();
                (RtpPacket::parse(&original).unwrap(), true)
            } else {
                stats.on_packet(now, packet.sequence_number(), packet.timestamp().0);
                (packet, false)
            };
            nack.on_packet(now, packet.sequence_number(), is_retransmission);
            depacketizer.handle_packet(&packet);
        }
        while let Some(f) = depacketizer.poll_frame() {
            received.push((f.timestamp, f.data));
        }
        if let Some(lost) = nack.poll_nack(now) {
            let nack =
                Nack { sender_ssrc: RECEIVER_SSRC, media_ssrc: MEDIA_SSRC, pairs: Nack::pairs_for(lost) };
            let mut rtcp = Vec::new();
            nack.encode(&mut rtcp).unwrap();
            backward.send(now, rtcp);
        }
        // Sender: NACKs answered from the history through RTX.
        for datagram in backward.deliver(now) {
            for packet in RtcpPacket::parse_all(&datagram) {
                let Ok(RtcpPacket::Nack(n)) = packet else { panic!("not a nack: {packet:?}") };
                for lost in n.lost() {
                    if let Some(stored) = history.get_for_resend(now, lost, rtt.max(10 * MS)) {
                        let mut packet = Vec::new();
                        rtx.wrap(stored, &mut packet).unwrap();
                        forward.send(now, packet);
                        retransmissions += 1;
                    }
                }
            }
        }
        // The next event.
        let next_frame_at = (next_frame < FRAMES).then(|| t0 + frame_interval * next_frame);
        let next = [next_frame_at, forward.next_delivery(), backward.next_delivery(), nack.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        now = match next {
            Some(at) => at.max(now + Duration::from_micros(1)),
            None => end + MS,
        };
    }

    // Every frame out is a frame sent, whole.
    let mut whole = 0;
    for (ts, data) in &received {
        let sent = sent_frames.get(&ts.0).expect("a frame that was sent");
        assert_eq!(data, sent, "frame {ts:?} differs from what was sent");
        whole += 1;
    }
    // Only a loss at the very start or end can go unrepaired: no packet before or after
    // shows the hole (a real receiver asks for a key frame when the first one is broken).
    let missing: Vec<u32> = (0..FRAMES)
        .filter(|i| !received.iter().any(|(ts, _)| ts.0 == i.wrapping_mul(3000).wrapping_add(0xFFFF_0000)))
        .collect();
    assert!(missing.iter().all(|&i| i == 0 || i == FRAMES - 1), "frames missing: {missing:?}");
    let s = nack.stats();
    Outcome {
        frames_sent: sent_frames.len(),
        frames_whole: whole,
        nacks_sent: s.nacks_sent,
        requested: s.packets_requested,
        recovered: s.recovered,
        given_up: s.given_up,
        retransmissions,
        lost_before_repair: stats.lost(),
        expected: stats.highest_sequence().unwrap() - 65_000 + 1,
    }
}

#[test]
fn five_percent_loss_is_repaired_by_nack_and_rtx() {
    for seed in [1, 2, 3] {
        let o = run(seed, 50);
        println!("seed {seed}: {o:?}");
        assert_eq!(o.frames_sent, FRAMES as usize);
        assert!(o.frames_whole * 100 >= o.frames_sent * 99, "{o:?}");
        assert!(o.nacks_sent > 0 && o.retransmissions > 0 && o.recovered > 0, "{o:?}");
        assert!(o.requested >= o.recovered && o.retransmissions <= o.requested, "{o:?}");
        // The first transmission lost about 5%: the stream statistics see it.
        let loss = o.lost_before_repair as f64 / o.expected as f64;
        assert!((0.03..0.07).contains(&loss), "loss {loss}");
    }
}

#[test]
fn without_loss_no_nack_is_sent() {
    let o = run(9, 0);
    println!("{o:?}");
    assert_eq!(o.frames_whole, FRAMES as usize);
    assert_eq!((o.nacks_sent, o.retransmissions, o.given_up), (0, 0, 0));
}
