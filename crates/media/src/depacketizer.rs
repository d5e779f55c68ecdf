//! Frame assembly behind a reorder window: packets in, whole frames out, in order.
//!
//! A frame is the run of consecutive sequence numbers from a packet its format marks as a
//! frame start (and whose predecessor, if present, has another timestamp) to the packet with
//! the marker bit (RFC 3550 §5.1), all with one timestamp. Frames go out in sequence order;
//! a frame after a hole waits until the hole is filled or falls out of the window, and then
//! carries `gap_before`.

use crate::{av1, h264, opus, vp8, vp9, Codec, PayloadError, PayloadInfo};
use peerlink_proto::{Serial16, Serial32, Unwrapper16};
use peerlink_rtp::RtpPacket;
use std::collections::{BTreeMap, VecDeque};

/// Settings of a [`Depacketizer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepacketizerConfig {
    /// How many sequence numbers behind the newest a packet may arrive and still count. A
    /// frame of more packets than this can never be assembled.
    pub reorder_depth: u16,
}

impl Default for DepacketizerConfig {
    fn default() -> DepacketizerConfig {
        DepacketizerConfig { reorder_depth: 512 }
    }
}

/// One complete frame (an Opus packet, a video picture, an H.264 access unit in Annex B
/// form, an AV1 temporal unit in low-overhead form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub timestamp: Serial32,
    pub keyframe: bool,
    /// Frames were lost or dropped since the last one emitted: a video decoder should ask
    /// for a key frame (PLI, RFC 4585 §6.3.1) unless this one is one.
    pub gap_before: bool,
    pub first_sequence: Serial16,
    pub last_sequence: Serial16,
    pub data: Vec<u8>,
}

/// What the depacketizer dropped and why (bad network input is counted, never returned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    pub packets: u64,
    pub frames: u64,
    pub keyframes: u64,
    /// Payloads that are not of the codec's format.
    pub malformed_packets: u64,
    /// Frames whose packets were all there but did not fit together (FU-A, AV1 Z/Y).
    pub malformed_frames: u64,
    pub duplicate_packets: u64,
    /// Packets older than the window or than the last frame emitted.
    pub late_packets: u64,
    /// Payloads empty after RTP padding (bandwidth probes).
    pub padding_packets: u64,
    /// Frames given up: incomplete when they left the window, or skipped over.
    pub frames_dropped: u64,
}

#[derive(Debug)]
enum Slot {
    Padding,
    Malformed,
    Media { timestamp: Serial32, marker: bool, info: PayloadInfo, payload: Vec<u8> },
}

enum FrameEnd {
    /// All packets up to the marker at this sequence number are here.
    Complete(u64),
    /// This sequence number is missing.
    Waiting(u64),
    /// A packet of another timestamp, padding or a malformed payload before the marker.
    Broken,
}

/// Reassembles frames of one RTP stream (one SSRC) of one codec.
#[derive(Debug)]
pub struct Depacketizer {
    codec: Codec,
    depth: u64,
    unwrapper: Unwrapper16,
    slots: BTreeMap<u64, Slot>,
    /// The last sequence number consumed (emitted or given up); `None` before the first frame.
    consumed: Option<u64>,
    /// The last packet known to end a frame (a marker packet or padding).
    last_end: Option<u64>,
    gap_pending: bool,
    last_dropped: Option<Serial32>,
    frames: VecDeque<Frame>,
    stats: DepacketizerStats,
}

/// What one payload of `codec` says about the frame it carries (start, key frame), after
/// checking it is well formed.
pub fn payload_info(codec: Codec, payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    match codec {
        Codec::Opus => opus::parse(payload),
        Codec::Vp8 => vp8::parse(payload),
        Codec::Vp9 => vp9::parse(payload),
        Codec::H264 => h264::parse(payload),
        Codec::Av1 => av1::parse(payload),
    }
}

fn depacketize<'a>(
    codec: Codec,
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    match codec {
        Codec::Opus => opus::depacketize(payloads, out),
        Codec::Vp8 => vp8::depacketize(payloads, out),
        Codec::Vp9 => vp9::depacketize(payloads, out),
        Codec::H264 => h264::depacketize(payloads, out),
        Codec::Av1 => av1::depacketize(payloads, out),
    }
}

impl Depacketizer {
    pub fn new(codec: Codec, config: DepacketizerConfig) -> Depacketizer {
        Depacketizer {
            codec,
            depth: u64::from(config.reorder_depth.max(1)),
            unwrapper: Unwrapper16::new(),
            slots: BTreeMap::new(),
            consumed: None,
            last_end: None,
            gap_pending: false,
            last_dropped: None,
            frames: VecDeque::new(),
            stats: DepacketizerStats::default(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    /// A received RTP packet of this stream (after SRTP).
    pub fn handle_packet(&mut self, packet: &RtpPacket<'_>) {
        self.handle_payload(packet.sequence_number(), packet.timestamp(), packet.marker(), packet.payload());
    }

    /// A received payload with the header fields that matter for assembly.
    pub fn handle_payload(&mut self, sequence: Serial16, timestamp: Serial32, marker: bool, payload: &[u8]) {
        self.stats.packets += 1;
        let seq = self.unwrapper.unwrap(sequence);
        let newest = self.unwrapper.highest().unwrap_or(seq);
        if self.consumed.is_some_and(|c| seq <= c) || self.expired(seq, newest) {
            self.stats.late_packets += 1;
            return;
        }
        if self.slots.contains_key(&seq) {
            self.stats.duplicate_packets += 1;
            return;
        }
        let slot = if payload.is_empty() {
            self.stats.padding_packets += 1;
            Slot::Padding
        } else {
            match payload_info(self.codec, payload) {
                // An audio packet is a whole frame: the marker bit means a talkspurt's start
                // there (RFC 3551 §4.1), and senders such as Chromium leave it clear.
                Ok(info) => Slot::Media {
                    timestamp,
                    marker: marker || self.codec == Codec::Opus,
                    info,
                    payload: payload.to_vec(),
                },
                Err(_) => {
                    self.stats.malformed_packets += 1;
                    Slot::Malformed
                }
            }
        };
        self.slots.insert(seq, slot);
        self.advance(newest, newest);
        if self.evict(newest) {
            self.advance(newest, newest);
        }
    }

    /// Whether packets are held back (waiting for a missing one, or for the rest of a frame).
    pub fn has_pending(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Whether a packet is missing before the newest one received (frames after it wait):
    /// the condition the caller's time limit ([`Depacketizer::skip_missing`]) is for. A frame
    /// still arriving at the head of the stream is no hole.
    pub fn has_hole(&self) -> bool {
        let Some(newest) = self.unwrapper.highest() else { return false };
        let start = match (self.consumed, self.slots.first_key_value()) {
            (Some(c), _) => c + 1,
            (None, Some((&first, _))) => first,
            (None, None) => return false,
        };
        newest >= start && (newest - start + 1) as usize != self.slots.range(start..=newest).count()
    }

    /// Gives up on every packet missing before the newest one received, as if it had left
    /// the reorder window: the frames after the holes go out (with `gap_before`). A frame
    /// still arriving at the head of the stream is kept. The time-based half of the jitter
    /// buffer: the caller decides how long a hole may hold frames back.
    pub fn skip_missing(&mut self) {
        let Some(newest) = self.unwrapper.highest() else { return };
        self.advance(newest, newest + self.depth);
    }

    /// The next complete frame, oldest first.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    fn expired(&self, seq: u64, horizon: u64) -> bool {
        seq + self.depth <= horizon
    }

    /// A frame starts at `seq`: its format says so, and the packet before it, when here,
    /// belongs to another frame; when the format's signal is ambiguous, the packet before
    /// must be known to end another frame.
    fn is_start(&self, seq: u64) -> bool {
        let Some(Slot::Media { timestamp, info, .. }) = self.slots.get(&seq) else { return false };
        let before = seq.checked_sub(1);
        let previous = before.and_then(|p| self.slots.get(&p));
        let same_frame_before = previous
            .is_some_and(|s| matches!(s, Slot::Media { timestamp: t, marker: false, .. } if t == timestamp));
        let other_frame_before = before.is_some() && before == self.last_end
            || previous.is_some_and(|s| match s {
                Slot::Padding => true,
                Slot::Malformed => false,
                Slot::Media { timestamp: t, marker, .. } => *marker || t != timestamp,
            })
            // The very first packet of the stream.
            || (self.consumed.is_none() && self.slots.first_key_value().is_some_and(|(&k, _)| k == seq));
        info.frame_start && !same_frame_before && (info.certain_start || other_frame_before)
    }

    fn is_keyframe(&self, seq: u64) -> bool {
        matches!(self.slots.get(&seq), Some(Slot::Media { info, .. }) if info.keyframe)
    }

    fn frame_end(&self, start: u64) -> FrameEnd {
        let Some(Slot::Media { timestamp: ts, .. }) = self.slots.get(&start) else { return FrameEnd::Broken };
        let mut seq = start;
        loop {
            match self.slots.get(&seq) {
                None => return FrameEnd::Waiting(seq),
                Some(Slot::Media { timestamp, marker, .. }) if timestamp == ts => {
                    if *marker {
                        return FrameEnd::Complete(seq);
                    }
                    seq += 1;
                }
                Some(_) => return FrameEnd::Broken,
            }
        }
    }

    /// Emits every frame that can go out now, in order: packets up to `newest` are looked
    /// at, and those `depth` behind `horizon` (normally `newest`) have expired.
    fn advance(&mut self, newest: u64, horizon: u64) {
        'frames: loop {
            let mut seq = match (self.consumed, self.slots.first_key_value()) {
                (Some(c), _) => c + 1,
                (None, Some((&first, _))) => first,
                (None, None) => return,
            };
            // Media between the last frame and this one that will never be part of a frame.
            let mut skipped = false;
            // Before the first frame, media that is no frame start may be the tail of one
            // whose start is still on its way: only a key frame may jump over it.
            let mut unsure = false;
            while seq <= newest {
                let dead = match self.slots.get(&seq) {
                    None if self.expired(seq, horizon) => true,
                    None => return,
                    Some(Slot::Padding) => false,
                    Some(Slot::Malformed) => true,
                    Some(Slot::Media { .. }) if !self.is_start(seq) => true,
                    Some(Slot::Media { .. }) => match self.frame_end(seq) {
                        FrameEnd::Complete(end) => {
                            if unsure && !self.is_keyframe(seq) {
                                return;
                            }
                            self.emit(seq, end, skipped);
                            continue 'frames;
                        }
                        FrameEnd::Waiting(missing) if !self.expired(missing, horizon) => return,
                        FrameEnd::Waiting(_) | FrameEnd::Broken => true,
                    },
                };
                skipped |= dead;
                // Once a frame went out, what lies behind the scan is given up for good.
                if self.consumed.is_some() {
                    self.gap_pending |= dead;
                    self.consume(seq);
                } else {
                    unsure |= dead && !self.expired(seq, horizon);
                }
                seq += 1;
            }
            return;
        }
    }

    /// Gives up everything up to and including `seq`.
    fn consume(&mut self, seq: u64) {
        while let Some(entry) = self.slots.first_entry() {
            let key = *entry.key();
            if key > seq {
                break;
            }
            let slot = entry.remove();
            // A frame boundary stays known after its packet is gone.
            if matches!(slot, Slot::Padding | Slot::Media { marker: true, .. }) {
                self.last_end = Some(key);
            }
            self.count_dropped(&slot);
        }
        if self.consumed.is_none_or(|c| c < seq) {
            self.consumed = Some(seq);
        }
    }

    fn count_dropped(&mut self, slot: &Slot) {
        match slot {
            Slot::Padding => {}
            Slot::Malformed => self.gap_pending = true,
            Slot::Media { timestamp, .. } => {
                self.gap_pending = true;
                if self.last_dropped != Some(*timestamp) {
                    self.last_dropped = Some(*timestamp);
                    self.stats.frames_dropped += 1;
                }
            }
        }
    }

    fn emit(&mut self, start: u64, end: u64, skipped: bool) {
        if let Some(before) = start.checked_sub(1) {
            self.consume(before);
        }
        let gap_before = self.gap_pending || skipped;
        let mut data = Vec::new();
        let payloads = self.slots.range(start..=end).filter_map(|(_, s)| match s {
            Slot::Media { payload, .. } => Some(&payload[..]),
            _ => None,
        });
        let result = depacketize(self.codec, payloads, &mut data);
        self.last_end = Some(end);
        let timestamp = match self.slots.get(&start) {
            Some(Slot::Media { timestamp, .. }) => *timestamp,
            _ => Serial32(0),
        };
        // H.264: an IDR slice may sit in any packet of the access unit.
        let keyframe = self
            .slots
            .range(start..=end)
            .any(|(_, s)| matches!(s, Slot::Media { info, .. } if info.keyframe));
        match result {
            Ok(()) => {
                // The packets are consumed without counting them as dropped.
                self.slots = self.slots.split_off(&(end + 1));
                self.consumed = Some(end);
                self.gap_pending = false;
                self.stats.frames += 1;
                self.stats.keyframes += u64::from(keyframe);
                self.frames.push_back(Frame {
                    timestamp,
                    keyframe,
                    gap_before,
                    first_sequence: Serial16(start as u16),
                    last_sequence: Serial16(end as u16),
                    data,
                });
            }
            Err(_) => {
                self.stats.malformed_frames += 1;
                self.consume(end);
            }
        }
    }

    /// Drops what fell out of the window; whether anything did.
    fn evict(&mut self, newest: u64) -> bool {
        let Some((&first, _)) = self.slots.first_key_value() else { return false };
        if !self.expired(first, newest) {
            return false;
        }
        self.consume(newest - self.depth);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    /// VP8 payloads: descriptor with S on the first, then `len` bytes (P bit from `key`).
    fn vp8_frame(key: bool, packets: usize) -> Vec<Vec<u8>> {
        (0..packets)
            .map(|i| {
                let s = if i == 0 { 0x10 } else { 0 };
                vec![s, if key { 0x00 } else { 0x01 }, i as u8]
            })
            .collect()
    }

    /// Feeds frames of `sizes` packets from sequence `seq0`; returns (seq, ts, marker, payload).
    fn stream(seq0: u16, frames: &[(bool, usize)]) -> Vec<(Serial16, Serial32, bool, Vec<u8>)> {
        let mut seq = Serial16(seq0);
        let mut out = Vec::new();
        for (f, &(key, n)) in frames.iter().enumerate() {
            let payloads = vp8_frame(key, n);
            for (i, p) in payloads.into_iter().enumerate() {
                out.push((seq, Serial32(3000 * f as u32), i + 1 == n, p));
                seq = seq.wrapping_add(1);
            }
        }
        out
    }

    fn feed(d: &mut Depacketizer, packets: &[(Serial16, Serial32, bool, Vec<u8>)]) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (s, t, m, p) in packets {
            d.handle_payload(*s, *t, *m, p);
            frames.extend(std::iter::from_fn(|| d.poll_frame()));
        }
        frames
    }

    fn vp8(depth: u16) -> Depacketizer {
        Depacketizer::new(Codec::Vp8, DepacketizerConfig { reorder_depth: depth })
    }

    #[test]
    fn in_order_frames_come_out_whole_with_key_frame_flags() {
        let mut d = vp8(64);
        let frames = feed(&mut d, &stream(65_533, &[(true, 3), (false, 2), (false, 1)]));
        assert_eq!(frames.len(), 3);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(frames[0].data, [0x00, 0, 0x00, 1, 0x00, 2]);
        assert_eq!((frames[0].first_sequence, frames[0].last_sequence), (Serial16(65_533), Serial16(65_535)));
        assert_eq!(frames[2].timestamp, Serial32(6000));
        assert!(frames.iter().all(|f| !f.gap_before));
        assert_eq!(d.stats().frames, 3);
    }

    #[test]
    fn opus_packets_without_the_marker_bit_are_frames_each() {
        // Chromium sets the marker only at a talkspurt's start.
        let mut d = Depacketizer::new(Codec::Opus, DepacketizerConfig { reorder_depth: 16 });
        let packets: Vec<_> = (0..5u16)
            .map(|i| (Serial16(i), Serial32(u32::from(i) * 960), i == 0, vec![0x78, i as u8]))
            .collect();
        let frames = feed(&mut d, &packets);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[4].data, [0x78, 4]);
    }

    #[test]
    fn skip_missing_lets_the_frames_after_a_hole_out_and_keeps_a_frame_arriving() {
        let mut packets = stream(100, &[(true, 2), (false, 2), (false, 2), (false, 3)]);
        packets.remove(2); // the first of the second frame
        packets.pop(); // the third frame's end is still on its way
        let mut d = vp8(512);
        let frames = feed(&mut d, &packets[..packets.len()]);
        assert_eq!(frames.len(), 1, "the hole holds the rest back");
        assert!(d.has_hole());
        d.skip_missing();
        let later: Vec<Frame> = std::iter::from_fn(|| d.poll_frame()).collect();
        assert_eq!(later.len(), 1, "{later:?}");
        assert!(later[0].gap_before && later[0].timestamp == Serial32(6000));
        assert!(d.has_pending(), "the frame still arriving is kept");
        assert!(!d.has_hole(), "a frame still arriving is no hole");
    }

    #[test]
    fn reordered_packets_within_the_window_are_put_back_in_order() {
        let mut packets = stream(10, &[(true, 3), (false, 3), (false, 3)]);
        packets.swap(1, 4);
        packets.swap(0, 7);
        let mut d = vp8(16);
        let frames = feed(&mut d, &packets);
        assert_eq!(frames.iter().map(|f| f.timestamp.0).collect::<Vec<_>>(), [0, 3000, 6000]);
        assert!(frames.iter().all(|f| !f.gap_before));
    }

    #[test]
    fn a_lost_middle_packet_drops_its_frame_and_flags_the_next() {
        let mut packets = stream(100, &[(true, 3), (false, 3), (false, 2), (false, 2), (false, 2)]);
        packets.remove(4); // the middle of the second frame
        let mut d = vp8(4);
        let frames = feed(&mut d, &packets);
        let ts: Vec<_> = frames.iter().map(|f| (f.timestamp.0, f.gap_before)).collect();
        assert_eq!(ts, [(0, false), (6000, true), (9000, false), (12000, false)]);
        assert_eq!(d.stats().frames_dropped, 1);
    }

    #[test]
    fn a_lost_first_packet_never_lets_a_partial_frame_out() {
        let mut packets = stream(0, &[(true, 2), (false, 3), (false, 1), (false, 1), (false, 1), (false, 1)]);
        packets.remove(2);
        let mut d = vp8(3);
        let frames = feed(&mut d, &packets);
        assert!(frames.iter().all(|f| f.timestamp.0 != 3000));
        assert!(frames.iter().find(|f| f.timestamp.0 == 6000).unwrap().gap_before);
    }

    #[test]
    fn duplicates_are_ignored_and_late_packets_counted() {
        let packets = stream(7, &[(true, 2), (false, 2)]);
        let mut d = vp8(8);
        let mut all = packets.clone();
        all.insert(1, packets[0].clone());
        all.push(packets[1].clone());
        let frames = feed(&mut d, &all);
        assert_eq!(frames.len(), 2);
        assert_eq!(d.stats().duplicate_packets, 1);
        assert_eq!(d.stats().late_packets, 1);
    }

    #[test]
    fn padding_between_frames_is_no_gap() {
        let mut packets = stream(0, &[(true, 1), (false, 1)]);
        packets[1].0 = Serial16(3);
        packets.insert(1, (Serial16(1), Serial32(0), false, vec![]));
        packets.insert(2, (Serial16(2), Serial32(0), false, vec![]));
        let mut d = vp8(8);
        let frames = feed(&mut d, &packets);
        assert_eq!(frames.len(), 2);
        assert!(!frames[1].gap_before);
        assert_eq!(d.stats().padding_packets, 2);
    }

    #[test]
    fn malformed_payloads_are_counted_and_break_their_frame() {
        let mut packets = stream(0, &[(true, 2), (false, 2), (false, 1), (false, 1), (false, 1)]);
        packets[3].3 = vec![0x80]; // X set, extension missing
        let mut d = vp8(2);
        let frames = feed(&mut d, &packets);
        assert_eq!(
            frames.iter().map(|f| (f.timestamp.0, f.gap_before)).collect::<Vec<_>>(),
            [(0, false), (6000, true), (9000, false), (12000, false)]
        );
        assert_eq!(d.stats().malformed_packets, 1);
    }

    #[test]
    fn frames_longer_than_the_window_are_dropped() {
        let mut d = vp8(4);
        let frames = feed(&mut d, &stream(0, &[(true, 6), (false, 1), (false, 1)]));
        assert_eq!(
            frames.iter().map(|f| (f.timestamp.0, f.gap_before)).collect::<Vec<_>>(),
            [(3000, true), (6000, false)]
        );
        assert!(d.slots.len() <= 4);
    }

    #[test]
    fn h264_access_unit_missing_its_first_packet_is_never_emitted() {
        let mut d = Depacketizer::new(Codec::H264, DepacketizerConfig { reorder_depth: 2 });
        let p = |seq: u16, ts: u32, marker: bool, payload: &[u8]| {
            (Serial16(seq), Serial32(ts), marker, payload.to_vec())
        };
        let packets = [
            p(0, 0, true, &[0x65, 0x88, 1]),
            // Lost: seq 1, the STAP-A with SPS and PPS of the next key frame.
            p(2, 3000, true, &[0x65, 0x88, 2]),
            p(3, 6000, true, &[0x41, 0x9a, 3]),
            p(4, 9000, true, &[0x41, 0x9a, 4]),
            p(5, 12000, true, &[0x41, 0x9a, 5]),
        ];
        let frames = feed(&mut d, &packets);
        let got: Vec<_> = frames.iter().map(|f| (f.timestamp.0, f.gap_before, f.keyframe)).collect();
        assert_eq!(got, [(0, false, true), (6000, true, false), (9000, false, false), (12000, false, false)]);
        assert_eq!(frames[1].data, [0, 0, 0, 1, 0x41, 0x9a, 3]);
    }

    #[test]
    fn garbage_and_random_sequence_numbers_never_panic_and_stay_bounded() {
        let mut rng = TestRng::new(12);
        for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
            let mut d = Depacketizer::new(codec, DepacketizerConfig { reorder_depth: 32 });
            for g in rng.garbage(3000, 20) {
                let seq = Serial16(rng.below(80) as u16);
                let ts = Serial32(rng.below(4) * 3000);
                d.handle_payload(seq, ts, rng.below(3) == 0, &g);
                while d.poll_frame().is_some() {}
                assert!(d.slots.len() <= 33);
            }
            assert_eq!(d.stats().packets, 3000);
        }
    }
}
