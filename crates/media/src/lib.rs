//! RTP media for WebRTC, sans-IO: payload formats (packetizers that cut an encoded frame
//! into RTP payloads, and a per-stream depacketizer that puts frames back together behind a
//! bounded reorder buffer), and the RTP stream machinery around them: reception
//! statistics and reports, NACK and RTX, transport-wide congestion control feedback, a
//! pacer and key frame request throttling. No sockets, clocks or threads: sequence
//! numbers, timestamps and `now: Instant` come from the caller, as does the wall-clock NTP
//! time of sender reports.
//!
//! What it implements:
//! - [`opus`]: Opus (RFC 7587 §4.2: one Opus packet per RTP packet).
//! - [`vp8`]: VP8 (RFC 7741 §4.2 payload descriptor, 15-bit PictureID; §4.3 key frames).
//! - [`vp9`]: VP9 (RFC 9628 §4.2): sends flexible mode with a 15-bit picture id, as Chromium
//!   does; receives flexible and non-flexible mode, layer indices and the scalability
//!   structure.
//! - [`h264`]: H.264 (RFC 6184): single NAL unit packets (§5.6), STAP-A (§5.7.1) and FU-A
//!   (§5.8); packetization-mode 0 and 1; Annex B access units in and out; SPS and PPS kept
//!   with every IDR.
//! - [`av1`]: AV1 (the AOM "RTP Payload Format for AV1", §4.4 aggregation header, §4.5 OBU
//!   elements, §5 packetization rules): temporal delimiters, tile lists and padding dropped.
//! - [`Depacketizer`]: frame assembly with a reorder window counted in packets, duplicate and
//!   late packet handling, key frame detection and a `gap_before` flag so a decoder knows to
//!   ask for a key frame.
//! - [`stats`]: [`ReceiveStats`] for report blocks (RFC 3550 §6.4.1; Appendix A.1 sequence
//!   validation with restart on a confirmed jump, A.3 loss, A.8 jitter, LSR/DLSR),
//!   [`SendStats`] for sender reports (RTP time extrapolated to the report's NTP time), and
//!   [`rtt_from_report_block`].
//! - [`nack`]: [`NackGenerator`], which holes to ask for in generic NACKs (RFC 4585
//!   §6.2.1) and when: after a reorder grace, then every round trip, up to a retry limit;
//!   a key frame flag for jumps too large to repair.
//! - [`rtx`]: [`SendHistory`] (sent packets of the last seconds with a resend rate limit),
//!   [`RtxSender`] and [`unwrap_rtx`] (RFC 4588 §4, SSRC-multiplexed RTX as WebRTC uses it).
//! - [`twcc`]: [`TwccRecorder`], transport-wide CC feedback from arrivals
//!   (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), and [`TwccSendLog`], which
//!   matches feedback to what was sent.
//! - [`pacer`]: [`Pacer`], a token bucket with a priority queue and a bound on waiting.
//! - [`bwe`]: [`BandwidthEstimator`], send-side bandwidth estimation from transport-wide
//!   feedback (draft-ietf-rmcat-gcc-02: trendline delay filter, adaptive-threshold overuse
//!   detector, AIMD, loss-based control, probing, application-limited cap, feedback
//!   timeout).
//! - [`keyframe`]: [`KeyframeRequests`], PLI/FIR rate limiting that holds one request.
//!
//! Out of scope: STAP-B, MTAP and FU-B (interleaved mode, RFC 6184 §5.7.2, §5.8), VP9
//! superframe index generation for spatial layers (layer frames of one picture are emitted
//! back to back), Opus multi-frame packing beyond what the encoder gives, FEC (RFC 5109,
//! flexfec), session-multiplexed RTX (RFC 4588 §5; the `apt` mapping is the caller's),
//! RTCP report scheduling (RFC 3550 §6.2; the caller decides when), REMB-based and
//! receive-side bandwidth estimation, playout timing and jitter buffers.
//!
//! The receive side of one video stream, per packet and per timer (the send side mirrors
//! it: [`SendHistory::store`] each packet, answer NACKs with [`SendHistory::get_for_resend`]
//! and [`RtxSender::wrap`], pace with a [`Pacer`]):
//!
//! ```
//! use peerlink_media::{Codec, Depacketizer, DepacketizerConfig, NackConfig, NackGenerator, ReceiveStats};
//! use peerlink_rtp::{rtcp::Nack, RtpHeader, RtpPacket};
//! use std::time::Instant;
//!
//! let mut nack = NackGenerator::new(NackConfig::default());
//! let mut stats = ReceiveStats::new(90_000);
//! let mut depacketizer = Depacketizer::new(Codec::Vp8, DepacketizerConfig::default());
//! # let mut datagram = Vec::new();
//! # RtpHeader { payload_type: 96, marker: true, ..Default::default() }.encode(&[], &[0x10, 0x01], 0, &mut datagram).unwrap();
//! let now = Instant::now();
//! // A media packet after SRTP (RTX packets go through unwrap_rtx first):
//! let packet = RtpPacket::parse(&datagram)?;
//! stats.on_packet(now, packet.sequence_number(), packet.timestamp().0);
//! nack.on_packet(now, packet.sequence_number(), false);
//! depacketizer.handle_packet(&packet);
//! while let Some(frame) = depacketizer.poll_frame() { /* to the decoder */ }
//! // At nack.poll_timeout():
//! if let Some(lost) = nack.poll_nack(now) {
//!     let _nack = Nack { sender_ssrc: 1, media_ssrc: packet.ssrc(), pairs: Nack::pairs_for(lost) };
//! }
//! // When an RR is due: stats.report_block(now, packet.ssrc()).
//! # Ok::<(), peerlink_rtp::RtpError>(())
//! ```
//!
//! ```
//! use peerlink_media::{Codec, Depacketizer, DepacketizerConfig, Packetizer, PacketizerConfig, Payloads};
//! use peerlink_proto::{Serial16, Serial32};
//!
//! let mut packetizer = Packetizer::new(Codec::Vp8, PacketizerConfig { max_payload: 1200, ..Default::default() });
//! let mut depacketizer = Depacketizer::new(Codec::Vp8, DepacketizerConfig::default());
//! let frame = vec![0x11u8; 3000]; // a VP8 inter frame (P bit set)
//! let mut payloads = Payloads::default();
//! packetizer.packetize(&frame, &mut payloads)?;
//! let (mut seq, ts) = (Serial16(100), Serial32(90_000));
//! for (payload, marker) in payloads.iter() {
//!     // Sending: RtpHeader { marker, sequence_number: seq, timestamp: ts, .. }.encode(..)
//!     // Receiving: the same four values from the parsed RtpPacket.
//!     depacketizer.handle_payload(seq, ts, marker, payload);
//!     seq = seq.wrapping_add(1);
//! }
//! let got = depacketizer.poll_frame().expect("complete");
//! assert_eq!((got.data, got.timestamp, got.keyframe, got.gap_before), (frame, ts, false, false));
//! # Ok::<(), peerlink_media::PacketizeError>(())
//! ```

pub mod av1;
pub mod bwe;
mod depacketizer;
pub mod h264;
pub mod keyframe;
pub mod nack;
pub mod opus;
pub mod pacer;
pub mod rtx;
pub mod stats;
pub mod twcc;
pub mod vp8;
pub mod vp9;

pub use bwe::{BandwidthEstimator, BweConfig};
pub use depacketizer::{payload_info, Depacketizer, DepacketizerConfig, DepacketizerStats, Frame};
pub use keyframe::KeyframeRequests;
pub use nack::{NackConfig, NackGenerator, NackStats};
pub use pacer::Pacer;
pub use rtx::{unwrap_rtx, RtxError, RtxSender, SendHistory};
pub use stats::{rtt_from_report_block, ReceiveStats, SendStats};
pub use twcc::{TwccPacketResult, TwccRecorder, TwccSendLog};

/// The payload formats this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
}

/// Why a frame could not be packetized (a caller mistake: the frame or the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketizeError {
    #[error("the frame is empty")]
    EmptyFrame,
    #[error("max payload {max} is below the {min} bytes this format needs")]
    MaxPayloadTooSmall { max: usize, min: usize },
    #[error("a {len}-byte frame does not fit one {max}-byte payload")]
    FrameTooLarge { len: usize, max: usize },
    #[error("a {len}-byte nal unit does not fit one {max}-byte payload in packetization-mode 0")]
    NalTooLarge { len: usize, max: usize },
    #[error("the access unit holds no nal unit after an annex b start code")]
    NoNalUnits,
    #[error("obu at byte {offset} is malformed")]
    BadObu { offset: usize },
}

/// Why a received payload is not of its format (bad input from the network: the
/// [`Depacketizer`] drops it and counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    #[error("the payload is empty")]
    Empty,
    #[error("the payload ends inside its {0}")]
    Truncated(&'static str),
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// H.264 packetization mode (RFC 6184 §6.2, §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum H264Mode {
    /// Mode 0: single NAL unit packets only; a NAL unit larger than the payload is an error.
    SingleNal,
    /// Mode 1: single NAL units, STAP-A and FU-A (what browsers negotiate).
    #[default]
    NonInterleaved,
}

/// Settings shared by the packetizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketizerConfig {
    /// The most bytes of RTP payload per packet (MTU minus IP, UDP, SRTP and RTP headers).
    pub max_payload: usize,
    /// First VP8/VP9 picture id (15 bits; the caller picks it, randomly if it likes).
    pub initial_picture_id: u16,
    pub h264_mode: H264Mode,
}

impl Default for PacketizerConfig {
    fn default() -> PacketizerConfig {
        PacketizerConfig { max_payload: 1200, initial_picture_id: 0, h264_mode: H264Mode::NonInterleaved }
    }
}

/// The RTP payloads of one frame, in one buffer the caller keeps and reuses: a steady stream
/// of frames allocates nothing. The last payload carries the marker bit.
#[derive(Debug, Default, Clone)]
pub struct Payloads {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Payloads {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th payload.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.buf[start..end])
    }

    /// Each payload with its marker bit (set on the last one: RFC 3550 §5.1, and each
    /// format's RFC says the marker ends a frame or access unit).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], bool)> + '_ {
        (0..self.len()).filter_map(move |i| Some((self.get(i)?, i + 1 == self.len())))
    }

    /// The payload being written.
    pub(crate) fn current(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Ends the payload under way.
    pub(crate) fn finish(&mut self) {
        self.ends.push(self.buf.len());
    }

    pub(crate) fn push(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.finish();
    }
}

/// A packetizer for one of the [`Codec`]s.
#[derive(Debug, Clone)]
pub enum Packetizer {
    Opus(opus::OpusPacketizer),
    Vp8(vp8::Vp8Packetizer),
    Vp9(vp9::Vp9Packetizer),
    H264(h264::H264Packetizer),
    Av1(av1::Av1Packetizer),
}

impl Packetizer {
    pub fn new(codec: Codec, config: PacketizerConfig) -> Packetizer {
        match codec {
            Codec::Opus => Packetizer::Opus(opus::OpusPacketizer::new(config)),
            Codec::Vp8 => Packetizer::Vp8(vp8::Vp8Packetizer::new(config)),
            Codec::Vp9 => Packetizer::Vp9(vp9::Vp9Packetizer::new(config)),
            Codec::H264 => Packetizer::H264(h264::H264Packetizer::new(config)),
            Codec::Av1 => Packetizer::Av1(av1::Av1Packetizer::new(config)),
        }
    }

    /// Replaces `out` with the payloads of `frame` (one encoded frame or access unit).
    pub fn packetize(&mut self, frame: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        match self {
            Packetizer::Opus(p) => p.packetize(frame, out),
            Packetizer::Vp8(p) => p.packetize(frame, out),
            Packetizer::Vp9(p) => p.packetize(frame, out),
            Packetizer::H264(p) => p.packetize(frame, out),
            Packetizer::Av1(p) => p.packetize(frame, out),
        }
    }
}

/// What the depacketizer needs to know about one received payload, found by each format's
/// `parse` (which also validates the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadInfo {
    /// The payload may begin a frame, by the format's own signal.
    pub frame_start: bool,
    /// The signal is unambiguous (VP8's S with partition 0, VP9's B, an H.264 SPS or
    /// delimiter, an AV1 sequence header). Otherwise (an H.264 slice, an AV1 frame OBU) the
    /// packet before must be known to end another frame, or a lost first packet would let
    /// the rest pass for a whole frame.
    pub certain_start: bool,
    /// The frame is a key frame (meaningful on the frame's first payload).
    pub keyframe: bool,
}

/// The checks every packetizer starts with: a frame to send, and room in a payload for at
/// least `min` bytes (its headers and one byte of frame).
pub(crate) fn check_frame(frame: &[u8], max_payload: usize, min: usize) -> Result<(), PacketizeError> {
    if frame.is_empty() {
        // An empty payload would look like RTP padding to the receiver.
        return Err(PacketizeError::EmptyFrame);
    }
    if max_payload < min {
        return Err(PacketizeError::MaxPayloadTooSmall { max: max_payload, min });
    }
    Ok(())
}

/// A 15-bit VP8/VP9 picture id (RFC 7741 §4.2, RFC 9628 §4.2), wrapping within its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PictureId(u16);

impl PictureId {
    pub fn new(value: u16) -> PictureId {
        PictureId(value & 0x7fff)
    }

    pub fn value(self) -> u16 {
        self.0
    }

    /// The two-octet form with M set (15 bits).
    pub(crate) fn to_bytes(self) -> [u8; 2] {
        let [hi, lo] = self.0.to_be_bytes();
        [0x80 | hi, lo]
    }

    pub(crate) fn advance(&mut self) {
        *self = PictureId::new(self.0.wrapping_add(1));
    }
}

/// Splits `len` bytes into `n` near-equal pieces (the first ones one byte larger), so a frame
/// never ends in a tiny last packet.
pub(crate) fn balanced_sizes(len: usize, cap: usize) -> impl ExactSizeIterator<Item = usize> {
    let n = len.div_ceil(cap.max(1)).max(1);
    let (base, extra) = (len / n, len % n);
    (0..n).map(move |i| base + usize::from(i < extra))
}

/// Deterministic pseudo-random bytes for garbage-input and round-trip tests.
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn new(seed: u64) -> TestRng {
        TestRng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next(&mut self) -> u32 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    pub(crate) fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `count` buffers of up to `max_len` random bytes.
    pub(crate) fn garbage(&mut self, count: usize, max_len: u32) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| {
                let len = self.below(max_len + 1) as usize;
                self.bytes(len)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_sizes_cover_the_frame_within_the_cap() {
        for (len, cap) in [(1, 10), (10, 10), (11, 10), (1000, 7), (0, 5)] {
            let sizes: Vec<usize> = balanced_sizes(len, cap).collect();
            assert_eq!(sizes.iter().sum::<usize>(), len);
            assert!(sizes.iter().all(|&s| s <= cap));
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn payloads_mark_only_the_last() {
        let mut p = Payloads::default();
        p.push(&[b"ab"]);
        p.push(&[b"c", b"d"]);
        let v: Vec<_> = p.iter().collect();
        assert_eq!(v, [(&b"ab"[..], false), (&b"cd"[..], true)]);
        assert_eq!(p.get(2), None);
        p.clear();
        assert!(p.is_empty());
    }
}
