//! Selective forwarding, sans-IO: the decisions of an SFU, apart from its sockets and its
//! peer connections.
//!
//! - [`Forwarder`]: one published track as one subscriber receives it. It rewrites each
//!   packet's sequence number and timestamp so the subscriber sees one continuous stream
//!   whatever happens upstream (the publisher restarts its encoder, a source is switched), and
//!   holds video back until a key frame starts it, so a decoder is never fed a stream it cannot
//!   decode.
//! - [`Room`]: who publishes which track and who receives it: publications come and go, and
//!   each change says which subscriptions to add or remove.
//!
//! The connections themselves (ICE, DTLS, SRTP, SDP) are `peerlink-rtc` peer connections
//! driven by the server; SSRCs, payload types and header extensions are theirs, so a
//! forwarded packet leaves with its subscriber connection's own.

use peerlink_media::{payload_info, Codec};
use peerlink_proto::Serial16;
use peerlink_rtp::RtpPacket;
use std::collections::HashMap;

/// Audio or video, as far as forwarding cares: video waits for key frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// What the forwarder did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with this sequence number and timestamp.
    Forward { seq: u16, timestamp: u32 },
    /// Not sent: the subscriber waits for a key frame (ask the publisher for one).
    WaitKeyframe,
    /// Not sent: it belongs before the point where forwarding (re)started, or is not a
    /// well-formed payload.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    ssrc: u32,
    /// The first source sequence number forwarded since the last (re)start.
    first: Serial16,
    seq_offset: u16,
    ts_offset: u32,
}

/// Rewrites one track's packets for one subscriber.
#[derive(Debug)]
pub struct Forwarder {
    kind: Kind,
    codec: Codec,
    mapping: Option<Mapping>,
    /// The last sequence number and timestamp sent, to continue from at a restart.
    last_out: Option<(Serial16, u32)>,
    forwarded: u64,
    dropped: u64,
}

/// The timestamp step put between two sources (about one frame).
fn frame_step(kind: Kind) -> u32 {
    match kind {
        Kind::Audio => 960,
        Kind::Video => 3000,
    }
}

impl Forwarder {
    pub fn new(kind: Kind, codec: Codec) -> Forwarder {
        Forwarder { kind, codec, mapping: None, last_out: None, forwarded: 0, dropped: 0 }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether video is held back until a key frame (ask the publisher for one).
    pub fn waiting_keyframe(&self) -> bool {
        self.kind == Kind::Video && self.mapping.is_none()
    }

    /// Packets forwarded and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.forwarded, self.dropped)
    }

    /// Starts over on the next key frame (a new source, or a subscriber that lost track):
    /// what follows continues the sequence numbers and timestamps already sent.
    pub fn restart(&mut self) {
        self.mapping = None;
    }

    /// Decides about one packet of the published track.
    pub fn forward(&mut self, packet: &RtpPacket<'_>) -> Verdict {
        let verdict = self.decide(packet);
        match verdict {
            Verdict::Forward { seq, timestamp } => {
                self.forwarded += 1;
                let newer = self.last_out.is_none_or(|(last, _)| Serial16(seq).is_newer_than(last));
                if newer {
                    self.last_out = Some((Serial16(seq), timestamp));
                }
            }
            _ => self.dropped += 1,
        }
        verdict
    }

    fn decide(&mut self, packet: &RtpPacket<'_>) -> Verdict {
        let ssrc = packet.ssrc();
        let seq = packet.sequence_number();
        if let Some(m) = self.mapping.filter(|m| m.ssrc == ssrc) {
            // Older than where forwarding started: the subscriber never saw what led to it.
            if m.first.is_newer_than(seq) {
                return Verdict::Drop;
            }
            return Verdict::Forward {
                seq: seq.0.wrapping_add(m.seq_offset),
                timestamp: packet.timestamp().0.wrapping_add(m.ts_offset),
            };
        }
        // A new source (or the first): video starts on the first packet of a key frame.
        let Ok(info) = payload_info(self.codec, packet.payload()) else { return Verdict::Drop };
        if self.kind == Kind::Video && !(info.frame_start && info.keyframe) {
            self.mapping = None;
            return Verdict::WaitKeyframe;
        }
        let (seq_offset, ts_offset) = match self.last_out {
            // Continue right after what was sent, one frame later.
            Some((last_seq, last_ts)) => (
                last_seq.0.wrapping_add(1).wrapping_sub(seq.0),
                last_ts.wrapping_add(frame_step(self.kind)).wrapping_sub(packet.timestamp().0),
            ),
            None => (0, 0),
        };
        self.mapping = Some(Mapping { ssrc, first: seq, seq_offset, ts_offset });
        Verdict::Forward {
            seq: seq.0.wrapping_add(seq_offset),
            timestamp: packet.timestamp().0.wrapping_add(ts_offset),
        }
    }
}

/// A published track: `(publisher, its local index)`. The index is whatever the server uses
/// to tell the publisher's tracks apart (a transceiver id).
pub type TrackKey<P> = (P, usize);

#[derive(Debug)]
struct Publication {
    kind: Kind,
}

/// A change the server must make to a subscriber's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<P> {
    /// Add a sending track to `subscriber` for `track` (then renegotiate).
    Subscribe { subscriber: P, track: TrackKey<P>, kind: Kind },
    /// Stop the subscriber's track for `track` (then renegotiate).
    Unsubscribe { subscriber: P, track: TrackKey<P> },
}

/// Who is in a room, what each publishes, and who receives what: every participant receives
/// every track of the others.
#[derive(Debug)]
pub struct Room<P: Clone + Eq + std::hash::Hash + Ord> {
    participants: Vec<P>,
    publications: HashMap<TrackKey<P>, Publication>,
}

impl<P: Clone + Eq + std::hash::Hash + Ord> Default for Room<P> {
    fn default() -> Self {
        Room { participants: Vec::new(), publications: HashMap::new() }
    }
}

impl<P: Clone + Eq + std::hash::Hash + Ord> Room<P> {
    pub fn new() -> Room<P> {
        Room::default()
    }

    pub fn participants(&self) -> &[P] {
        &self.participants
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// The tracks published now, in a stable order.
    pub fn tracks(&self) -> Vec<(TrackKey<P>, Kind)> {
        let mut tracks: Vec<_> = self.publications.iter().map(|(k, p)| (k.clone(), p.kind)).collect();
        tracks.sort_by(|a, b| a.0.cmp(&b.0));
        tracks
    }

    /// A participant arrived: it receives every track published now.
    pub fn join(&mut self, who: P) -> Vec<Change<P>> {
        if self.participants.contains(&who) {
            return Vec::new();
        }
        self.participants.push(who.clone());
        self.tracks()
            .into_iter()
            .filter(|(track, _)| track.0 != who)
            .map(|(track, kind)| Change::Subscribe { subscriber: who.clone(), track, kind })
            .collect()
    }

    /// A participant left: its tracks leave every subscriber.
    pub fn leave(&mut self, who: &P) -> Vec<Change<P>> {
        self.participants.retain(|p| p != who);
        let gone: Vec<TrackKey<P>> = self.publications.keys().filter(|k| &k.0 == who).cloned().collect();
        let mut changes = Vec::new();
        for track in gone {
            changes.extend(self.unpublish(&track));
        }
        changes
    }

    /// A participant publishes a track: everyone else receives it.
    pub fn publish(&mut self, track: TrackKey<P>, kind: Kind) -> Vec<Change<P>> {
        if !self.participants.contains(&track.0) || self.publications.contains_key(&track) {
            return Vec::new();
        }
        self.publications.insert(track.clone(), Publication { kind });
        self.participants
            .iter()
            .filter(|p| **p != track.0)
            .map(|p| Change::Subscribe { subscriber: p.clone(), track: track.clone(), kind })
            .collect()
    }

    /// A track ended: its subscribers drop it.
    pub fn unpublish(&mut self, track: &TrackKey<P>) -> Vec<Change<P>> {
        if self.publications.remove(track).is_none() {
            return Vec::new();
        }
        self.participants
            .iter()
            .filter(|p| **p != track.0)
            .map(|p| Change::Unsubscribe { subscriber: p.clone(), track: track.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_proto::Serial32;
    use peerlink_rtp::RtpHeader;

    fn packet(ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let header = RtpHeader {
            payload_type: 96,
            sequence_number: Serial16(seq),
            timestamp: Serial32(ts),
            ssrc,
            ..Default::default()
        };
        let mut out = Vec::new();
        header.encode(&[], payload, 0, &mut out).unwrap();
        out
    }

    // VP8 payload descriptors (RFC 7741): S=1 partition 0, then the frame's first byte
    // (bit 0 clear: key frame).
    const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
    const VP8_DELTA: &[u8] = &[0x10, 0x01, 0x00];
    const VP8_MIDDLE: &[u8] = &[0x00, 0xaa, 0xbb];

    fn run(f: &mut Forwarder, bytes: &[u8]) -> Verdict {
        f.forward(&RtpPacket::parse(bytes).unwrap())
    }

    #[test]
    fn video_waits_for_a_key_frame_then_is_continuous() {
        let mut f = Forwarder::new(Kind::Video, Codec::Vp8);
        assert_eq!(run(&mut f, &packet(1, 100, 9000, VP8_DELTA)), Verdict::WaitKeyframe);
        assert_eq!(run(&mut f, &packet(1, 101, 9000, VP8_MIDDLE)), Verdict::WaitKeyframe);
        assert!(f.waiting_keyframe());
        assert_eq!(
            run(&mut f, &packet(1, 102, 12000, VP8_KEY)),
            Verdict::Forward { seq: 102, timestamp: 12000 }
        );
        assert!(!f.waiting_keyframe());
        assert_eq!(
            run(&mut f, &packet(1, 103, 12000, VP8_MIDDLE)),
            Verdict::Forward { seq: 103, timestamp: 12000 }
        );
        // Late packets from before the start are not forwarded; retransmissions after it are.
        assert_eq!(run(&mut f, &packet(1, 101, 9000, VP8_MIDDLE)), Verdict::Drop);
        assert_eq!(
            run(&mut f, &packet(1, 103, 12000, VP8_MIDDLE)),
            Verdict::Forward { seq: 103, timestamp: 12000 }
        );
        assert_eq!(f.counts(), (3, 3));
    }

    #[test]
    fn a_new_source_continues_the_sequence_and_the_clock() {
        let mut f = Forwarder::new(Kind::Video, Codec::Vp8);
        assert!(matches!(run(&mut f, &packet(1, 65535, 4_294_967_000, VP8_KEY)), Verdict::Forward { .. }));
        assert_eq!(
            run(&mut f, &packet(1, 0, 4_294_967_000, VP8_MIDDLE)),
            Verdict::Forward { seq: 0, timestamp: 4_294_967_000 }
        );
        // The publisher restarts with another SSRC, other numbers: held until its key frame,
        // which follows the last packet sent, one frame later.
        assert_eq!(run(&mut f, &packet(2, 500, 77, VP8_DELTA)), Verdict::WaitKeyframe);
        assert_eq!(
            run(&mut f, &packet(2, 501, 3077, VP8_KEY)),
            Verdict::Forward { seq: 1, timestamp: 4_294_967_000u32.wrapping_add(3000) }
        );
        assert_eq!(
            run(&mut f, &packet(2, 502, 6077, VP8_DELTA)),
            Verdict::Forward { seq: 2, timestamp: 4_294_967_000u32.wrapping_add(6000) }
        );
    }

    #[test]
    fn audio_starts_at_once_and_restart_keeps_numbers() {
        let mut f = Forwarder::new(Kind::Audio, Codec::Opus);
        assert_eq!(
            run(&mut f, &packet(7, 10, 960, &[0x78, 1, 2])),
            Verdict::Forward { seq: 10, timestamp: 960 }
        );
        f.restart();
        assert_eq!(
            run(&mut f, &packet(7, 11, 1920, &[0x78, 1, 2])),
            Verdict::Forward { seq: 11, timestamp: 1920 }
        );
        f.restart();
        assert_eq!(
            run(&mut f, &packet(8, 4000, 50, &[0x78, 1, 2])),
            Verdict::Forward { seq: 12, timestamp: 1920 + 960 }
        );
    }

    #[test]
    fn garbage_payloads_are_dropped() {
        let mut f = Forwarder::new(Kind::Video, Codec::H264);
        assert_eq!(run(&mut f, &packet(1, 1, 1, &[])), Verdict::Drop);
        assert_eq!(run(&mut f, &packet(1, 2, 1, &[0xff])), Verdict::Drop);
        let mut f = Forwarder::new(Kind::Video, Codec::Av1);
        assert_ne!(run(&mut f, &packet(1, 2, 1, &[0xff, 0xff])), Verdict::Forward { seq: 2, timestamp: 1 });
    }

    #[test]
    fn room_subscribes_everyone_to_everyone_else() {
        let mut room = Room::new();
        assert!(room.join("a").is_empty());
        assert!(room.publish(("a", 0), Kind::Video).is_empty());
        assert_eq!(
            room.join("b"),
            vec![Change::Subscribe { subscriber: "b", track: ("a", 0), kind: Kind::Video }]
        );
        assert_eq!(
            room.publish(("b", 1), Kind::Audio),
            vec![Change::Subscribe { subscriber: "a", track: ("b", 1), kind: Kind::Audio }]
        );
        // Publishing twice, or for someone not in the room, changes nothing.
        assert!(room.publish(("b", 1), Kind::Audio).is_empty());
        assert!(room.publish(("z", 0), Kind::Audio).is_empty());
        room.join("c");
        let mut left = room.leave(&"a");
        left.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            left,
            vec![
                Change::Unsubscribe { subscriber: "b", track: ("a", 0) },
                Change::Unsubscribe { subscriber: "c", track: ("a", 0) },
            ]
        );
        assert_eq!(room.tracks(), vec![(("b", 1), Kind::Audio)]);
        assert_eq!(room.participants(), &["b", "c"]);
    }
}
