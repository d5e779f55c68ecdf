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

pub mod files;
pub mod speaker;
pub mod video;
pub use speaker::Speakers;
pub use video::{VideoPolicy, Want};

use peerlink_media::{payload_info, Codec};
use peerlink_proto::{Serial16, Unwrapper16};
use peerlink_rtp::{PayloadPatch, RtpPacket};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A layer that sent nothing for this long is inactive (the sender paused it, or it
/// cannot get through).
const LAYER_IDLE: Duration = Duration::from_millis(1000);
/// A layer's rate is measured over windows this long.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// When picture sizes are unknown, switch up to a better layer only when it carries this much
/// more than the current one.
const SWITCH_UP_FACTOR: f64 = 1.5;

#[derive(Debug, Clone, Copy, Default)]
struct LayerRate {
    last: Option<Instant>,
    window_start: Option<Instant>,
    window_bytes: u64,
    rate_bps: u64,
    seqs: Unwrapper16,
    /// The source the sequence numbers are of (a new one starts them over).
    ssrc: Option<u32>,
    /// The highest sequence number seen (unwrapped), and what it was when the window began.
    highest: Option<u64>,
    window_from: u64,
    window_packets: u64,
    /// The share of packets lost over the last window (from sequence number gaps).
    loss: f32,
    /// Pixels of its last key frame, when the codec says (VP8).
    pixels: Option<u32>,
}

/// What a publication's simulcast layers carry, from the packets that arrive: which are
/// active and at what rate. One layer for a track without simulcast.
#[derive(Debug, Clone)]
pub struct Layers {
    layers: Vec<LayerRate>,
}

impl Layers {
    pub fn new(count: usize) -> Layers {
        Layers { layers: vec![LayerRate::default(); count.clamp(1, 8)] }
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// A packet of `bytes` from source `ssrc` with sequence number `seq` arrived on `layer`
    /// at `now`.
    pub fn on_packet(&mut self, now: Instant, layer: usize, bytes: usize, (ssrc, seq): (u32, Serial16)) {
        let Some(l) = self.layers.get_mut(layer) else { return };
        if l.ssrc != Some(ssrc) {
            // A new source (the publisher restarted its stream): its numbers start over.
            l.ssrc = Some(ssrc);
            l.seqs = Unwrapper16::new();
            l.highest = None;
            l.window_packets = 0;
        }
        l.last = Some(now);
        let start = *l.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            l.rate_bps = (l.window_bytes * 8 * 1000) / (elapsed.as_millis().max(1) as u64);
            l.window_start = Some(now);
            l.window_bytes = 0;
            if let Some(highest) = l.highest {
                let expected = highest - l.window_from;
                if expected > 0 {
                    l.loss = expected.saturating_sub(l.window_packets) as f32 / expected as f32;
                }
                l.window_from = highest;
            }
            l.window_packets = 0;
        }
        l.window_bytes += bytes as u64;
        let n = l.seqs.unwrap(seq);
        match l.highest {
            None => {
                l.window_from = n.saturating_sub(1);
                l.highest = Some(n);
            }
            Some(h) if n > h => l.highest = Some(n),
            Some(_) => {}
        }
        l.window_packets += 1;
    }

    /// The share of `layer`'s packets lost on the way from its publisher, over the last
    /// measured window (0 to 1; repeated packets can hide losses).
    pub fn loss(&self, layer: usize) -> f32 {
        self.layers.get(layer).map_or(0.0, |l| l.loss)
    }

    /// Whether `layer` sent something lately.
    pub fn is_active(&self, now: Instant, layer: usize) -> bool {
        self.layers
            .get(layer)
            .and_then(|l| l.last)
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// The measured rate of `layer` in bit/s.
    pub fn rate(&self, layer: usize) -> u64 {
        self.layers.get(layer).map_or(0, |l| l.rate_bps)
    }

    /// The best picture on offer: [`Layers::best_within`] with no cap.
    pub fn best(&self, now: Instant) -> Option<usize> {
        self.best_within(now, u64::MAX)
    }

    /// A key frame of `layer` is `width` x `height`.
    pub fn on_size(&mut self, layer: usize, (width, height): (u16, u16)) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.pixels = Some(u32::from(width) * u32::from(height));
        }
    }

    /// The active layer with the smallest picture (a thumbnail's): by key frame size when
    /// every active layer's is known, else by rate (a busy encoder can send its middle
    /// layer at a lower rate than its smallest for a while).
    pub fn lowest(&self, now: Instant) -> Option<usize> {
        let active = || (0..self.layers.len()).filter(|&l| self.is_active(now, l));
        if self.sizes_known(now) {
            active().min_by_key(|&l| (self.pixels(l), l))
        } else {
            active().min_by_key(|&l| (self.rate(l), l))
        }
    }

    /// The active layer with the largest picture (by key frame size when every active
    /// layer's is known, else by rate) whose rate is not above `cap_bps`, else the
    /// [`Layers::lowest`] (the least a subscriber's path can get). Not the one that measured
    /// least: a second's rate swings with the key frames asked of a layer, and choosing by
    /// it swapped a subscriber on a narrow path between the two smaller pictures every few
    /// seconds (tests/e2e/sfu-ratelimit.sh), each swap a freeze.
    pub fn best_within(&self, now: Instant, cap_bps: u64) -> Option<usize> {
        let sized = self.sizes_known(now);
        let active = || (0..self.layers.len()).filter(|&l| self.is_active(now, l));
        active()
            .filter(|&l| self.rate(l) <= cap_bps)
            .max_by_key(|&l| if sized { (u64::from(self.pixels(l)), l) } else { (self.rate(l), l) })
            .or_else(|| self.lowest(now))
    }

    /// An active layer whose picture size is not known yet (its first key frame's start was
    /// lost, or came before we listened): until a key frame of it arrives, thumbnails and
    /// best layers are chosen by rate, so ask its publisher for one.
    pub fn unsized_active(&self, now: Instant) -> Option<usize> {
        (0..self.layers.len()).find(|&l| self.is_active(now, l) && self.layers[l].pixels.is_none())
    }

    /// Whether every active layer's picture size is known.
    fn sizes_known(&self, now: Instant) -> bool {
        (0..self.layers.len()).filter(|&l| self.is_active(now, l)).all(|l| self.layers[l].pixels.is_some())
    }

    fn pixels(&self, layer: usize) -> u32 {
        self.layers.get(layer).and_then(|l| l.pixels).unwrap_or(0)
    }

    /// `a` shows a clearly better picture than `b`: larger when sizes are known, else
    /// carrying [`SWITCH_UP_FACTOR`] times the rate.
    fn better(&self, now: Instant, a: usize, b: usize) -> bool {
        if self.sizes_known(now) && self.is_active(now, a) && self.is_active(now, b) {
            self.pixels(a) > self.pixels(b)
        } else {
            self.rate(a) as f64 > self.rate(b) as f64 * SWITCH_UP_FACTOR
        }
    }
}

/// What to do with a packet of one layer for one subscriber ([`LayerChoice::on_packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDecision {
    /// It is of the layer being forwarded.
    Forward,
    /// It starts a key frame of the layer switched to: restart the forwarder and forward it.
    Switch,
    /// Another layer's: not for this subscriber.
    Skip,
    /// Of the layer to switch to, but no key frame: ask the publisher for one of that layer.
    WantKeyframe(usize),
}

/// Which simulcast layer one subscriber receives, and switches between them at key frames
/// (a decoder cannot go from one resolution to another between two delta frames).
#[derive(Debug, Clone)]
pub struct LayerChoice {
    current: Option<usize>,
    target: usize,
}

impl LayerChoice {
    pub fn new(target: usize) -> LayerChoice {
        LayerChoice { current: None, target }
    }

    /// The layer forwarded now, if any.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    pub fn target(&self) -> usize {
        self.target
    }

    /// `key_start`: the packet starts a key frame (any audio packet does).
    pub fn on_packet(&mut self, layer: usize, key_start: bool) -> LayerDecision {
        if self.current == Some(layer) && (self.target == layer || !key_start) {
            return LayerDecision::Forward;
        }
        if layer != self.target {
            // The current layer goes on until the target's key frame.
            return if self.current == Some(layer) { LayerDecision::Forward } else { LayerDecision::Skip };
        }
        if key_start {
            self.current = Some(layer);
            LayerDecision::Switch
        } else {
            LayerDecision::WantKeyframe(layer)
        }
    }

    /// Picks the target again from what the layers carry: the best active one, moving up
    /// only for a clearly better one (a larger picture, or by rate when sizes are unknown),
    /// and away from a layer that stopped. The new target when it changed (ask for its key
    /// frame).
    pub fn retarget(&mut self, now: Instant, layers: &Layers) -> Option<usize> {
        self.retarget_within(now, layers, u64::MAX)
    }

    /// Nothing is forwarded for a while (a paused video): what comes after starts over at a
    /// key frame of the target.
    pub fn pause(&mut self) {
        self.current = None;
    }

    /// Targets `layer` (a thumbnail's: [`Layers::lowest`]); the new target when it changed.
    pub fn retarget_to(&mut self, layer: usize) -> Option<usize> {
        (self.target != layer).then(|| {
            self.target = layer;
            layer
        })
    }

    /// [`LayerChoice::retarget`] within what the path to the subscriber carries for this
    /// track (`cap_bps`, from the bandwidth estimate): a layer above it is left at once.
    /// The layer moved to must fit in 85 % of the cap (room for its rate to swing); the one
    /// forwarded stays while it fits in all of it.
    pub fn retarget_within(&mut self, now: Instant, layers: &Layers, cap_bps: u64) -> Option<usize> {
        let best = layers.best_within(now, cap_bps / 100 * FIT_SHARE)?;
        let from = self.current.unwrap_or(self.target);
        let better = layers.better(now, best, from);
        // Above the cap: off to what sends less, or to a smaller picture (which may just
        // have measured more, during a key frame).
        let too_much = layers.rate(from) > cap_bps
            && (layers.rate(best) < layers.rate(from) || layers.better(now, from, best));
        let new =
            if !layers.is_active(now, from) || too_much || (best != from && better) { best } else { from };
        // Far above what the path carries (a path that suddenly carries much less): little
        // of its frames gets through whole, and what is still sent of it fills the queue the
        // new layer's key frame must pass. It stops now (also when the target was already
        // lowered by an earlier, milder cap); the picture freezes either way, for less time
        // so.
        let current_far_above =
            self.current.is_some_and(|c| c != new && layers.rate(c) > cap_bps.saturating_mul(FAR_ABOVE_CAP));
        if current_far_above {
            self.current = None;
        }
        if new == self.target {
            return None;
        }
        self.target = new;
        Some(new)
    }
}

/// A layer sending more than this many times a subscriber's cap stops at once when the
/// subscriber switches down, rather than at the new layer's key frame.
const FAR_ABOVE_CAP: u64 = 2;
/// The share of a subscriber's cap (in %) a layer must fit in to be switched to. A layer's
/// rate swings by more than a tenth from second to second (key frames, the encoder's
/// aim); one chosen right at the cap went over it and back, and a subscriber on a
/// narrow path swapped between two layers every second or two, a freeze each time
/// (tests/e2e/sfu-ratelimit.sh).
const FIT_SHARE: u64 = 85;

/// Whether `payload` of `codec` starts a key frame (what a subscriber can start from).
pub fn starts_keyframe(kind: Kind, codec: Codec, payload: &[u8]) -> bool {
    kind == Kind::Audio || payload_info(codec, payload).is_ok_and(|i| i.frame_start && i.keyframe)
}

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
    /// The first source sequence number forwarded since the last (re)start, unwrapped by
    /// `unwrap` (so a stream any length later is never taken for one from before it).
    first: u64,
    unwrap: Unwrapper16,
    seq_offset: u16,
    ts_offset: u32,
    /// VP8 picture id and TL0PICIDX offsets (RFC 7741 §4.2), so a switch of source keeps
    /// them continuous for the receiver's decoder.
    picture_offset: u16,
    tl0_offset: u8,
}

/// Where a VP8 payload descriptor keeps its picture id (offset, 15 bits or 7) and
/// TL0PICIDX (offset), when it has them.
fn vp8_fields(payload: &[u8]) -> (Option<(usize, bool)>, Option<usize>) {
    let Some(&first) = payload.first() else { return (None, None) };
    if first & 0x80 == 0 {
        return (None, None);
    }
    let Some(&x) = payload.get(1) else { return (None, None) };
    let mut at = 2;
    let mut picture = None;
    if x & 0x80 != 0 {
        let Some(&b) = payload.get(at) else { return (None, None) };
        let long = b & 0x80 != 0;
        if long && payload.len() < at + 2 {
            return (None, None);
        }
        picture = Some((at, long));
        at += if long { 2 } else { 1 };
    }
    let tl0 = (x & 0x40 != 0 && at < payload.len()).then_some(at);
    (picture, tl0)
}

/// The picture size (width, height) a VP8 key frame's first packet announces (RFC 6386
/// §9.1, after the RFC 7741 payload descriptor); `None` for any other payload.
pub fn vp8_key_size(payload: &[u8]) -> Option<(u16, u16)> {
    let first = *payload.first()?;
    // The start of partition 0.
    if first & 0x10 == 0 || first & 0x0f != 0 {
        return None;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            at += if *payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    let frame = payload.get(at..at + 10)?;
    // A key frame (P bit clear) with its start code.
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

fn read_picture(payload: &[u8], (at, long): (usize, bool)) -> u16 {
    if long {
        (u16::from(payload[at] & 0x7f) << 8) | u16::from(payload[at + 1])
    } else {
        u16::from(payload[at] & 0x7f)
    }
}

fn write_picture(patch: &mut PayloadPatch, (at, long): (usize, bool), id: u16) {
    let set = if long {
        patch.set(at, 0x80 | ((id >> 8) as u8 & 0x7f)) && patch.set(at + 1, id as u8)
    } else {
        patch.set(at, id as u8 & 0x7f)
    };
    debug_assert!(set, "the picture id is the first thing patched");
}

/// Rewrites one track's packets for one subscriber.
#[derive(Debug)]
pub struct Forwarder {
    kind: Kind,
    codec: Codec,
    mapping: Option<Mapping>,
    /// The last sequence number and timestamp sent, to continue from at a restart, and when.
    last_out: Option<(Serial16, u32)>,
    last_out_at: Option<Instant>,
    /// The last VP8 picture id and TL0PICIDX sent.
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
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

/// RTP clock rate of `kind` as WebRTC sends it (Opus 48 kHz, video 90 kHz).
fn clock_rate(kind: Kind) -> u64 {
    match kind {
        Kind::Audio => 48_000,
        Kind::Video => 90_000,
    }
}

/// Longest pause carried into the timestamps (about 6 hours of a 90 kHz clock; more would
/// look like a backwards step to a receiver comparing 32-bit timestamps).
const MAX_PAUSE_TICKS: u64 = 1 << 31;

/// How far the next source's timestamps start after the last one sent: the wall-clock time
/// that passed since then (a video paused for a minute resumes a minute later, so the
/// receiver's jitter buffer does not try to play it out fast), and at least one frame.
fn resume_step(kind: Kind, paused: Duration) -> u32 {
    let ticks = (paused.as_micros() as u64).saturating_mul(clock_rate(kind)) / 1_000_000;
    u32::try_from(ticks.min(MAX_PAUSE_TICKS - 1)).unwrap_or(u32::MAX).max(frame_step(kind))
}

impl Forwarder {
    pub fn new(kind: Kind, codec: Codec) -> Forwarder {
        Forwarder {
            kind,
            codec,
            mapping: None,
            last_out: None,
            last_out_at: None,
            last_picture: None,
            last_tl0: None,
            forwarded: 0,
            dropped: 0,
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn kind(&self) -> Kind {
        self.kind
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

    /// Rewrites the payload of a packet [`Forwarder::forward`] just let through, in place: for
    /// VP8, its picture id and TL0PICIDX continue what this subscriber received before.
    pub fn rewrite_payload(&mut self, payload: &mut [u8]) {
        self.payload_patch(payload).apply(payload);
    }

    /// [`Forwarder::rewrite_payload`] as the bytes to change, for a packet shared by all
    /// subscribers: each subscriber's copy is changed as it is written.
    pub fn payload_patch(&mut self, payload: &[u8]) -> PayloadPatch {
        let mut patch = PayloadPatch::default();
        let Some(m) = self.mapping else { return patch };
        if self.codec != Codec::Vp8 {
            return patch;
        }
        let (picture, tl0) = vp8_fields(payload);
        if let Some(at) = picture {
            let mask = if at.1 { 0x7fff } else { 0x7f };
            let id = read_picture(payload, at).wrapping_add(m.picture_offset) & mask;
            write_picture(&mut patch, at, id);
            self.last_picture = Some(id);
        }
        if let Some(at) = tl0 {
            let tl0 = payload[at].wrapping_add(m.tl0_offset);
            let set = patch.set(at, tl0);
            debug_assert!(set, "a VP8 descriptor changes at most 3 bytes");
            self.last_tl0 = Some(tl0);
        }
        patch
    }

    /// Decides about one packet of the published track, received at `now`.
    pub fn forward(&mut self, now: Instant, packet: &RtpPacket<'_>) -> Verdict {
        let verdict = self.decide(now, packet);
        match verdict {
            Verdict::Forward { seq, timestamp } => {
                self.forwarded += 1;
                let newer = self.last_out.is_none_or(|(last, _)| Serial16(seq).is_newer_than(last));
                if newer {
                    self.last_out = Some((Serial16(seq), timestamp));
                    self.last_out_at = Some(now);
                }
            }
            _ => self.dropped += 1,
        }
        verdict
    }

    fn decide(&mut self, now: Instant, packet: &RtpPacket<'_>) -> Verdict {
        let ssrc = packet.ssrc();
        let seq = packet.sequence_number();
        if let Some(m) = self.mapping.as_mut().filter(|m| m.ssrc == ssrc) {
            // Older than where forwarding started: the subscriber never saw what led to it.
            if m.unwrap.unwrap(seq) < m.first {
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
            // Continue right after what was sent, as much later as the pause lasted.
            Some((last_seq, last_ts)) => {
                let paused = self.last_out_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                (
                    last_seq.0.wrapping_add(1).wrapping_sub(seq.0),
                    last_ts.wrapping_add(resume_step(self.kind, paused)).wrapping_sub(packet.timestamp().0),
                )
            }
            None => (0, 0),
        };
        let (mut picture_offset, mut tl0_offset) = (0, 0);
        if self.codec == Codec::Vp8 {
            let payload = packet.payload();
            let (picture, tl0) = vp8_fields(payload);
            if let (Some(at), Some(last)) = (picture, self.last_picture) {
                picture_offset = last.wrapping_add(1).wrapping_sub(read_picture(payload, at));
            }
            if let (Some(at), Some(last)) = (tl0, self.last_tl0) {
                tl0_offset = last.wrapping_add(1).wrapping_sub(payload[at]);
            }
        }
        // Far from zero, so packets from before the start unwrap below it.
        let mut unwrap = Unwrapper16::starting_at((1 << 32) | u64::from(seq.0));
        let first = unwrap.unwrap(seq);
        self.mapping =
            Some(Mapping { ssrc, first, unwrap, seq_offset, ts_offset, picture_offset, tl0_offset });
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

    /// One instant for tests where no time passes.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn run(f: &mut Forwarder, bytes: &[u8]) -> Verdict {
        f.forward(t0(), &RtpPacket::parse(bytes).unwrap())
    }

    fn run_at(f: &mut Forwarder, ms: u64, bytes: &[u8]) -> Verdict {
        f.forward(t0() + Duration::from_millis(ms), &RtpPacket::parse(bytes).unwrap())
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
    fn a_long_stream_keeps_flowing_past_half_the_sequence_space() {
        // 200,000 packets (three wraps of the 16-bit numbers) from one source: every one is
        // forwarded, and one from before the start still is not.
        let mut f = Forwarder::new(Kind::Video, Codec::Vp8);
        assert!(matches!(run(&mut f, &packet(1, 500, 0, VP8_KEY)), Verdict::Forward { seq: 500, .. }));
        for i in 1..200_000u32 {
            let seq = 500u16.wrapping_add(i as u16);
            let v = run(&mut f, &packet(1, seq, i * 90, VP8_MIDDLE));
            assert_eq!(v, Verdict::Forward { seq, timestamp: i * 90 }, "packet {i}");
        }
        let mut g = Forwarder::new(Kind::Video, Codec::Vp8);
        run(&mut g, &packet(1, 0, 0, VP8_KEY));
        assert_eq!(run(&mut g, &packet(1, 65_535, 0, VP8_MIDDLE)), Verdict::Drop);
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
    fn a_source_resumed_after_a_pause_starts_as_much_later_as_the_pause_lasted() {
        // Video forwarded at 0 ms, paused (last-N, a layer gone), resumed 5 s later: the key
        // frame that resumes it is stamped 5 s (450,000 ticks of 90 kHz) after the last one
        // sent, so the receiver plays it at once rather than as a frame step late.
        let mut f = Forwarder::new(Kind::Video, Codec::Vp8);
        assert!(matches!(run_at(&mut f, 0, &packet(1, 10, 1000, VP8_KEY)), Verdict::Forward { .. }));
        assert!(matches!(run_at(&mut f, 40, &packet(1, 11, 4600, VP8_DELTA)), Verdict::Forward { .. }));
        f.restart();
        assert_eq!(
            run_at(&mut f, 5040, &packet(1, 200, 777_000, VP8_KEY)),
            Verdict::Forward { seq: 12, timestamp: 4600 + 450_000 }
        );
        // A switch within a frame time still moves one frame on (3000 ticks at least).
        f.restart();
        assert_eq!(
            run_at(&mut f, 5041, &packet(3, 9, 5, VP8_KEY)),
            Verdict::Forward { seq: 13, timestamp: 4600 + 450_000 + 3000 }
        );
        // Audio counts its 48 kHz clock: 2 s muted by a pause is 96,000 ticks.
        let mut a = Forwarder::new(Kind::Audio, Codec::Opus);
        assert!(matches!(run_at(&mut a, 0, &packet(7, 1, 960, &[0x78, 1])), Verdict::Forward { .. }));
        a.restart();
        assert_eq!(
            run_at(&mut a, 2000, &packet(8, 50, 3, &[0x78, 1])),
            Verdict::Forward { seq: 2, timestamp: 960 + 96_000 }
        );
        // A pause of days is capped below half the 32-bit clock (never a step backwards).
        assert!(resume_step(Kind::Video, Duration::from_secs(86_400 * 3)) < 1 << 31);
        // Time that went backwards (a caller's clock) counts as no pause.
        assert_eq!(resume_step(Kind::Video, Duration::ZERO), 3000);
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_switch_of_source() {
        // X=1, S=1; I=1 L=1; 15-bit picture id; TL0PICIDX; then the frame (key frame).
        let payload = |picture: u16, tl0: u8, key: bool| {
            vec![
                0x90,
                0xc0,
                0x80 | (picture >> 8) as u8,
                picture as u8,
                tl0,
                if key { 0x00 } else { 0x01 },
                7,
            ]
        };
        let fields = |p: &[u8]| (read_picture(p, (2, true)), p[4]);
        let mut f = Forwarder::new(Kind::Video, Codec::Vp8);
        let mut sent = Vec::new();
        for (ssrc, seq, picture, tl0, key) in [
            (1, 10, 32_766, 250, true),
            (1, 11, 32_767, 251, false),
            (2, 900, 5, 17, true),
            (2, 901, 6, 17, false),
        ] {
            let bytes = packet(ssrc, seq, 0, &payload(picture, tl0, key));
            let p = RtpPacket::parse(&bytes).unwrap();
            assert!(matches!(f.forward(t0(), &p), Verdict::Forward { .. }), "{seq}");
            let mut out = p.payload().to_vec();
            f.rewrite_payload(&mut out);
            sent.push(fields(&out));
        }
        // The second source continues the first's numbers (wrapping at 15 bits).
        assert_eq!(sent, vec![(32_766, 250), (32_767, 251), (0, 252), (1, 252)]);
        // Descriptors without the fields, or cut short, are left alone.
        for mut short in [vec![0x10, 1], vec![0x90], vec![0x90, 0x80, 0x81]] {
            let before = short.clone();
            f.rewrite_payload(&mut short);
            assert_eq!(short, before);
        }
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
    fn vp8_key_frame_sizes_are_read_past_the_descriptor() {
        // Key frame 640x480 (horizontal scale bits set, ignored), 15-bit picture id, TL0PICIDX.
        let frame = [0x50, 0x2d, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0xe0, 0x01];
        let mut long = vec![0x90, 0xc0, 0x81, 0x23, 0x05];
        long.extend_from_slice(&frame);
        assert_eq!(vp8_key_size(&long), Some((640, 480)));
        let mut short = vec![0x10];
        short.extend_from_slice(&frame);
        assert_eq!(vp8_key_size(&short), Some((640, 480)));
        // A delta frame, a later partition, truncated, empty, garbage: none.
        let mut delta = short.clone();
        delta[1] |= 0x01;
        assert_eq!(vp8_key_size(&delta), None);
        let mut later = short.clone();
        later[0] = 0x00;
        assert_eq!(vp8_key_size(&later), None);
        for n in 0..long.len() {
            assert_eq!(vp8_key_size(&long[..n]), None);
        }
        assert_eq!(vp8_key_size(&[]), None);
        assert_eq!(vp8_key_size(&[0xff; 40]), None);
    }

    /// `count` layers fed for a second from `t0`: a packet of each `(layer, bytes)` every 50 ms.
    fn fed(count: usize, streams: &[(usize, usize)], t0: Instant) -> Layers {
        let mut layers = Layers::new(count);
        for i in 0..20u64 {
            for &(layer, bytes) in streams {
                layers.on_packet(
                    t0 + Duration::from_millis(i * 50),
                    layer,
                    bytes,
                    (1, Serial16::from(i as u16)),
                );
            }
        }
        layers
    }

    #[test]
    fn a_layer_is_moved_to_with_room_to_spare_and_left_only_above_the_cap() {
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(1000);
        let mut layers = fed(2, &[(0, 300), (1, 900)], t0);
        layers.on_size(0, (320, 180));
        layers.on_size(1, (640, 360));
        let upper = layers.rate(1);
        assert!(upper > 0 && layers.rate(0) < upper * 85 / 100, "{layers:?}");
        let mut choice = LayerChoice::new(0);
        assert_eq!(choice.on_packet(0, true), LayerDecision::Switch);
        // Layer 1 fits the cap, but not with room for its swings: no move up.
        assert_eq!(choice.retarget_within(at, &layers, upper + 1), None);
        assert_eq!(choice.retarget_within(at, &layers, upper * 100 / FIT_SHARE - 100), None);
        // With that room, up.
        assert_eq!(choice.retarget_within(at, &layers, upper * 100 / FIT_SHARE + 100), Some(1));
        assert_eq!(choice.on_packet(1, true), LayerDecision::Switch);
        // Being forwarded, it stays while the cap holds all of it...
        assert_eq!(choice.retarget_within(at, &layers, upper + 1), None);
        assert_eq!(choice.retarget_within(at, &layers, upper), None);
        // ...and is left as soon as it does not.
        assert_eq!(choice.retarget_within(at, &layers, upper - 1), Some(0));
    }

    #[test]
    fn thumbnails_are_the_smallest_picture_even_when_it_sends_more() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut layers = fed(2, &[(0, 900), (1, 600)], t0);
        // By rate alone, layer 1 is the smaller and layer 0 the better.
        assert_eq!(layers.lowest(ms(1000)), Some(1));
        assert_eq!(layers.best(ms(1000)), Some(0));
        layers.on_size(0, (160, 120));
        layers.on_size(1, (320, 240));
        assert_eq!(layers.lowest(ms(1000)), Some(0));
        assert_eq!(layers.best(ms(1000)), Some(1));
        // A subscriber on the thumbnail moves up to the larger picture though it sends less.
        let mut choice = LayerChoice::new(0);
        assert_eq!(choice.retarget(ms(1000), &layers), Some(1));
        // When nothing fits the path, the smallest picture, though it sends more (its rate
        // swings with the key frames asked of it): a subscriber stays on it, or moves to it.
        let mut choice = LayerChoice::new(0);
        assert_eq!(choice.retarget_within(ms(1000), &layers, layers.rate(1) - 1), None);
        assert_eq!(choice.target(), 0);
        let mut choice = LayerChoice::new(1);
        assert_eq!(choice.on_packet(1, true), LayerDecision::Switch);
        assert_eq!(choice.retarget_within(ms(1000), &layers, layers.rate(1) - 1), Some(0));
        assert_eq!(choice.retarget_within(ms(1000), &layers, 0), None);
        // Sizes unknown: by rate, as before.
        let by_rate = fed(2, &[(0, 900), (1, 600)], t0);
        let mut choice = LayerChoice::new(0);
        assert_eq!(choice.retarget_within(ms(1000), &by_rate, by_rate.rate(1) - 1), Some(1));
    }

    #[test]
    fn layers_without_a_known_size_are_named_until_their_key_frame() {
        let t0 = Instant::now();
        let mut layers = fed(3, &[(0, 100), (1, 200), (2, 400)], t0);
        let now = t0 + Duration::from_millis(1000);
        assert_eq!(layers.unsized_active(now), Some(0));
        layers.on_size(0, (160, 90));
        layers.on_size(2, (640, 360));
        assert_eq!(layers.unsized_active(now), Some(1));
        layers.on_size(1, (320, 180));
        assert_eq!(layers.unsized_active(now), None);
        // An idle layer is not asked about.
        let mut quiet = fed(2, &[(0, 100)], t0);
        quiet.on_size(0, (160, 90));
        assert_eq!(quiet.unsized_active(now), None);
    }

    #[test]
    fn layer_loss_comes_from_sequence_gaps_per_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut layers = Layers::new(1);
        // 40 packets a second across the wrap of the sequence space; every 10th one lost.
        let mut at = 0;
        for i in 0..200u64 {
            let seq = Serial16::from((65_500 + i) as u16);
            if i % 10 != 3 {
                layers.on_packet(ms(at), 0, 1000, (1, seq));
            }
            at += 25;
        }
        let loss = layers.loss(0);
        assert!((0.08..=0.12).contains(&loss), "loss {loss}");
        // Nothing lost in the next windows: it falls back to 0.
        for i in 200..300u64 {
            layers.on_packet(ms(at), 0, 1000, (1, Serial16::from((65_500 + i) as u16)));
            at += 25;
        }
        assert_eq!(layers.loss(0), 0.0);
        assert_eq!(layers.loss(5), 0.0);
        // The publisher restarts its stream: a new source whose numbers jump; no loss.
        for i in 0..100u64 {
            layers.on_packet(ms(at), 0, 1000, (2, Serial16::from((20_000 + i) as u16)));
            at += 25;
        }
        assert_eq!(layers.loss(0), 0.0);
    }

    #[test]
    fn layers_switch_at_key_frames_to_the_best_active_one() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Layer 0 small, layer 2 large, layer 1 silent.
        let mut layers = fed(3, &[(0, 200), (2, 1200)], t0);
        assert_eq!(layers.best(ms(1000)), Some(2));
        assert!(!layers.is_active(ms(1000), 1));
        let mut c = LayerChoice::new(0);
        assert_eq!(c.on_packet(0, false), LayerDecision::WantKeyframe(0));
        assert_eq!(c.on_packet(2, true), LayerDecision::Skip);
        assert_eq!(c.on_packet(0, true), LayerDecision::Switch);
        assert_eq!(c.on_packet(0, false), LayerDecision::Forward);
        // Layer 2 is clearly better: the target moves; layer 0 goes on until 2's key frame.
        assert_eq!(c.retarget(ms(1000), &layers), Some(2));
        assert_eq!(c.retarget(ms(1000), &layers), None);
        assert_eq!(c.on_packet(2, false), LayerDecision::WantKeyframe(2));
        assert_eq!(c.on_packet(0, false), LayerDecision::Forward);
        assert_eq!(c.on_packet(2, true), LayerDecision::Switch);
        assert_eq!(c.on_packet(0, false), LayerDecision::Skip);
        assert_eq!(c.current(), Some(2));
        // Layer 2 stops (the path or the sender cannot carry it): down to layer 0.
        for i in 20..50u64 {
            layers.on_packet(ms(i * 50), 0, 200, (1, Serial16::from(i as u16)));
        }
        assert_eq!(c.retarget(ms(2500), &layers), Some(0));
        assert_eq!(c.on_packet(0, true), LayerDecision::Switch);
        // Within a cap: the best layer that fits, else the smallest; leaving a layer above
        // the cap at once.
        for i in 50..70u64 {
            layers.on_packet(ms(i * 50), 0, 200, (1, Serial16::from(i as u16)));
            layers.on_packet(ms(i * 50), 2, 1200, (1, Serial16::from(i as u16)));
        }
        let (low, high) = (layers.rate(0), layers.rate(2));
        assert!(low < high, "{low} {high}");
        assert_eq!(layers.best_within(ms(3500), high), Some(2));
        assert_eq!(layers.best_within(ms(3500), high - 1), Some(0));
        assert_eq!(layers.best_within(ms(3500), 0), Some(0));
        assert_eq!(c.retarget_within(ms(3500), &layers, u64::MAX), Some(2));
        assert_eq!(c.on_packet(2, true), LayerDecision::Switch);
        assert_eq!(c.retarget_within(ms(3500), &layers, low + 1), Some(0));
        // That cap is less than half what layer 2 sends: it stops at once, and layer 0
        // starts at its key frame.
        assert_eq!(c.on_packet(2, false), LayerDecision::Skip);
        assert_eq!(c.on_packet(0, false), LayerDecision::WantKeyframe(0));
        assert_eq!(c.on_packet(0, true), LayerDecision::Switch);
        // Just under what layer 2 sends: it goes on until layer 0's key frame.
        assert_eq!(c.retarget_within(ms(3500), &layers, u64::MAX), Some(2));
        assert_eq!(c.on_packet(2, true), LayerDecision::Switch);
        assert_eq!(c.retarget_within(ms(3500), &layers, high - 1), Some(0));
        assert_eq!(c.on_packet(2, false), LayerDecision::Forward);
        // The next reading finds the path far smaller: the target stays, layer 2 stops.
        assert_eq!(c.retarget_within(ms(3500), &layers, low + 1), None);
        assert_eq!(c.on_packet(2, false), LayerDecision::Skip);
        assert_eq!(c.on_packet(0, true), LayerDecision::Switch);
        assert!(starts_keyframe(Kind::Audio, Codec::Opus, &[]));
        assert!(starts_keyframe(Kind::Video, Codec::Vp8, VP8_KEY));
        assert!(!starts_keyframe(Kind::Video, Codec::Vp8, VP8_DELTA));
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
