//! RTP header extensions (RFC 8285): one-byte and two-byte elements, and the typed values of
//! the extensions WebRTC negotiates. Ids are negotiated in SDP (`a=extmap`), so an
//! [`ExtensionMap`] says which id carries which extension.

/// RFC 8285 §4.2: the "defined by profile" value of one-byte elements.
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 §4.3: two-byte elements use 0x100 followed by four "appbits" (sent as zero).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Why extensions cannot be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    #[error("element {id} runs past the end of the extension")]
    Truncated { id: u8 },
    #[error("id {0} cannot be sent (0 and, in one-byte form, 15 are reserved)")]
    BadId(u8),
    #[error("element {id} of {len} bytes is too long for the header extension")]
    TooLong { id: u8, len: usize },
    #[error("an extension of {expected} bytes has {actual}")]
    BadLength { expected: usize, actual: usize },
    #[error("extension text is not utf-8")]
    NotUtf8,
}

/// The elements of a header extension, in order: `(id, data)`.
#[derive(Debug, Clone)]
pub struct Extensions<'a> {
    data: &'a [u8],
    two_byte: bool,
    done: bool,
}

impl<'a> Extensions<'a> {
    /// Elements of an extension with this profile field; other profiles have none we read.
    pub fn new(profile: u16, data: &'a [u8]) -> Extensions<'a> {
        match profile {
            ONE_BYTE_PROFILE => Extensions { data, two_byte: false, done: false },
            p if p & 0xfff0 == TWO_BYTE_PROFILE => Extensions { data, two_byte: true, done: false },
            _ => Extensions::empty(),
        }
    }

    pub fn empty() -> Extensions<'a> {
        Extensions { data: &[], two_byte: false, done: true }
    }

    /// The data of the first element with id `id`.
    pub fn get(&self, id: u8) -> Option<&'a [u8]> {
        self.clone().flatten().find(|&(i, _)| i == id).map(|(_, d)| d)
    }
}

impl<'a> Iterator for Extensions<'a> {
    type Item = Result<(u8, &'a [u8]), ExtensionError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (&first, rest) = self.data.split_first()?;
            // RFC 8285 §4.2, §4.3: a zero byte is padding between or after elements.
            if first == 0 {
                self.data = rest;
                continue;
            }
            let (id, len, rest) = if self.two_byte {
                let Some((&len, rest)) = rest.split_first() else {
                    self.done = true;
                    return Some(Err(ExtensionError::Truncated { id: first }));
                };
                (first, usize::from(len), rest)
            } else {
                let id = first >> 4;
                // RFC 8285 §4.2: id 15 is reserved; processing stops there.
                if id == 15 {
                    self.done = true;
                    return None;
                }
                (id, usize::from(first & 0x0f) + 1, rest)
            };
            if rest.len() < len {
                self.done = true;
                return Some(Err(ExtensionError::Truncated { id }));
            }
            let (value, rest) = rest.split_at(len);
            self.data = rest;
            return Some(Ok((id, value)));
        }
        None
    }
}

/// Appends the extension preamble and elements, padded to 32 bits (RFC 8285 §4).
pub(crate) fn write(elements: &[(u8, &[u8])], out: &mut Vec<u8>) -> Result<(), ExtensionError> {
    let one_byte = elements.iter().all(|&(id, d)| (1..=14).contains(&id) && (1..=16).contains(&d.len()));
    for &(id, data) in elements {
        if id == 0 {
            return Err(ExtensionError::BadId(id));
        }
        if data.len() > 255 {
            return Err(ExtensionError::TooLong { id, len: data.len() });
        }
    }
    let start = out.len();
    let profile = if one_byte { ONE_BYTE_PROFILE } else { TWO_BYTE_PROFILE };
    out.extend_from_slice(&profile.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for &(id, data) in elements {
        if one_byte {
            out.push(id << 4 | (data.len() - 1) as u8);
        } else {
            out.extend_from_slice(&[id, data.len() as u8]);
        }
        out.extend_from_slice(data);
    }
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    // At most 255 elements' worth fits easily; more cannot be expressed in 16 bits.
    let Ok(words) = u16::try_from((out.len() - start - 4) / 4) else {
        let len = out.len() - start;
        out.truncate(start);
        return Err(ExtensionError::TooLong { id: 0, len });
    };
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    Ok(())
}

/// Extension URIs as they appear in `a=extmap` lines.
pub mod uri {
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    pub const TRANSPORT_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    pub const PLAYOUT_DELAY: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
    pub const ABS_CAPTURE_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";
    pub const DEPENDENCY_DESCRIPTOR: &str =
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
}

/// Which negotiated id carries each extension we understand (`None`: not negotiated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionMap {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub repaired_rid: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub transport_cc: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
    pub playout_delay: Option<u8>,
    pub abs_capture_time: Option<u8>,
    pub dependency_descriptor: Option<u8>,
}

impl ExtensionMap {
    /// Records `id` for `uri` (from `a=extmap:<id> <uri>`); `false` for a URI we do not know.
    pub fn insert(&mut self, id: u8, uri: &str) -> bool {
        let slot = match uri {
            uri::MID => &mut self.mid,
            uri::RID => &mut self.rid,
            uri::REPAIRED_RID => &mut self.repaired_rid,
            uri::ABS_SEND_TIME => &mut self.abs_send_time,
            uri::TRANSPORT_CC => &mut self.transport_cc,
            uri::AUDIO_LEVEL => &mut self.audio_level,
            uri::VIDEO_ORIENTATION => &mut self.video_orientation,
            uri::PLAYOUT_DELAY => &mut self.playout_delay,
            uri::ABS_CAPTURE_TIME => &mut self.abs_capture_time,
            uri::DEPENDENCY_DESCRIPTOR => &mut self.dependency_descriptor,
            _ => return false,
        };
        *slot = Some(id);
        true
    }

    /// Reads every extension of `map` from `elements`. A malformed element is left out
    /// (its field stays `None`) rather than failing the packet: the payload is still good.
    pub fn read<'a>(&self, elements: Extensions<'a>) -> HeaderExtensions<'a> {
        let mut h = HeaderExtensions::default();
        for (id, data) in elements.flatten() {
            let is = |slot: Option<u8>| slot == Some(id);
            if is(self.mid) {
                h.mid = text(data).ok();
            } else if is(self.rid) {
                h.rid = text(data).ok();
            } else if is(self.repaired_rid) {
                h.repaired_rid = text(data).ok();
            } else if is(self.abs_send_time) {
                h.abs_send_time = AbsSendTime::decode(data).ok();
            } else if is(self.transport_cc) {
                h.transport_cc = TransportSequence::decode(data).ok();
            } else if is(self.audio_level) {
                h.audio_level = AudioLevel::decode(data).ok();
            } else if is(self.video_orientation) {
                h.video_orientation = VideoOrientation::decode(data).ok();
            } else if is(self.playout_delay) {
                h.playout_delay = PlayoutDelay::decode(data).ok();
            } else if is(self.abs_capture_time) {
                h.abs_capture_time = AbsCaptureTime::decode(data).ok();
            } else if is(self.dependency_descriptor) {
                h.dependency_descriptor = Some(data);
            }
        }
        h
    }
}

/// The WebRTC header extensions of one packet, typed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderExtensions<'a> {
    /// RFC 9143 §15 (BUNDLE media identification).
    pub mid: Option<&'a str>,
    /// RFC 8852 §3.1 (RtpStreamId).
    pub rid: Option<&'a str>,
    /// RFC 8852 §3.2 (RepairedRtpStreamId).
    pub repaired_rid: Option<&'a str>,
    pub abs_send_time: Option<AbsSendTime>,
    pub transport_cc: Option<TransportSequence>,
    pub audio_level: Option<AudioLevel>,
    pub video_orientation: Option<VideoOrientation>,
    pub playout_delay: Option<PlayoutDelay>,
    pub abs_capture_time: Option<AbsCaptureTime>,
    /// The AV1 dependency descriptor, passed through untouched.
    pub dependency_descriptor: Option<&'a [u8]>,
}

/// mid, rid and repaired-rid carry text (RFC 8852 §3: alphanumerics; we take any UTF-8).
pub fn text(data: &[u8]) -> Result<&str, ExtensionError> {
    std::str::from_utf8(data).map_err(|_| ExtensionError::NotUtf8)
}

fn exact<const N: usize>(data: &[u8]) -> Result<[u8; N], ExtensionError> {
    data.try_into().map_err(|_| ExtensionError::BadLength { expected: N, actual: data.len() })
}

/// abs-send-time: 24 bits, seconds in 6.18 fixed point, wrapping every 64 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsSendTime(pub u32);

impl AbsSendTime {
    pub fn decode(data: &[u8]) -> Result<AbsSendTime, ExtensionError> {
        let [a, b, c] = exact::<3>(data)?;
        Ok(AbsSendTime(u32::from_be_bytes([0, a, b, c])))
    }

    pub fn encode(&self) -> [u8; 3] {
        let [_, a, b, c] = (self.0 & 0x00ff_ffff).to_be_bytes();
        [a, b, c]
    }

    /// From a time in microseconds (of any epoch): the low 24 bits of 6.18 seconds.
    pub fn from_micros(micros: u64) -> AbsSendTime {
        AbsSendTime(((micros << 18) / 1_000_000) as u32 & 0x00ff_ffff)
    }
}

/// Transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportSequence(pub u16);

impl TransportSequence {
    pub fn decode(data: &[u8]) -> Result<TransportSequence, ExtensionError> {
        Ok(TransportSequence(u16::from_be_bytes(exact::<2>(data)?)))
    }

    pub fn encode(&self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

/// RFC 6464 §3: voice activity flag and level in -dBov (0 loudest, 127 silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    pub voice: bool,
    pub level: u8,
}

impl AudioLevel {
    pub fn decode(data: &[u8]) -> Result<AudioLevel, ExtensionError> {
        // RFC 6464 §3: one byte; the two-byte form may pad it, so only the first counts.
        let &b = data.first().ok_or(ExtensionError::BadLength { expected: 1, actual: 0 })?;
        Ok(AudioLevel { voice: b & 0x80 != 0, level: b & 0x7f })
    }

    pub fn encode(&self) -> [u8; 1] {
        [u8::from(self.voice) << 7 | (self.level & 0x7f)]
    }
}

/// 3GPP TS 26.114 §7.4.5 coordination of video orientation: camera, flip, rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoOrientation {
    /// Back-facing camera.
    pub back_camera: bool,
    /// Horizontally flipped.
    pub flip: bool,
    /// Clockwise rotation in multiples of 90 degrees (0..=3).
    pub rotation: u8,
}

impl VideoOrientation {
    pub fn decode(data: &[u8]) -> Result<VideoOrientation, ExtensionError> {
        let &b = data.first().ok_or(ExtensionError::BadLength { expected: 1, actual: 0 })?;
        Ok(VideoOrientation { back_camera: b & 0x08 != 0, flip: b & 0x04 != 0, rotation: b & 0x03 })
    }

    pub fn encode(&self) -> [u8; 1] {
        [u8::from(self.back_camera) << 3 | u8::from(self.flip) << 2 | (self.rotation & 3)]
    }
}

/// playout-delay: minimum and maximum in 10 ms units, 12 bits each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutDelay {
    pub min: u16,
    pub max: u16,
}

impl PlayoutDelay {
    pub fn decode(data: &[u8]) -> Result<PlayoutDelay, ExtensionError> {
        let [a, b, c] = exact::<3>(data)?;
        Ok(PlayoutDelay {
            min: u16::from(a) << 4 | u16::from(b >> 4),
            max: u16::from(b & 0x0f) << 8 | u16::from(c),
        })
    }

    pub fn encode(&self) -> [u8; 3] {
        let (min, max) = (self.min & 0x0fff, self.max & 0x0fff);
        [(min >> 4) as u8, ((min & 0x0f) << 4 | max >> 8) as u8, max as u8]
    }
}

/// abs-capture-time: a 64-bit NTP timestamp of capture, optionally with the sender's
/// estimate of the capturer's clock offset (signed Q32.32 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsCaptureTime {
    pub ntp_time: u64,
    pub clock_offset: Option<i64>,
}

impl AbsCaptureTime {
    pub fn decode(data: &[u8]) -> Result<AbsCaptureTime, ExtensionError> {
        let word = |at: usize| data.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        match data.len() {
            8 | 16 => Ok(AbsCaptureTime {
                ntp_time: word(0).unwrap_or_default(),
                clock_offset: word(8).map(|o| o as i64),
            }),
            n => Err(ExtensionError::BadLength { expected: 16, actual: n }),
        }
    }

    /// Writes 8 or 16 bytes into `out`; returns how many.
    pub fn encode(&self, out: &mut [u8; 16]) -> usize {
        out[..8].copy_from_slice(&self.ntp_time.to_be_bytes());
        match self.clock_offset {
            Some(o) => {
                out[8..].copy_from_slice(&o.to_be_bytes());
                16
            }
            None => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_elements_are_read_with_padding_between() {
        // RFC 8285 §4.2 example shape: id 1 len 1, padding, id 2 len 2, id 3 len 4.
        let data = [0x10, 0xAA, 0, 0, 0x21, 0xBB, 0xCC, 0x33, 1, 2, 3, 4, 0, 0];
        let e: Vec<_> = Extensions::new(ONE_BYTE_PROFILE, &data).map(|x| x.unwrap()).collect();
        assert_eq!(e, vec![(1, &[0xAA][..]), (2, &[0xBB, 0xCC][..]), (3, &[1, 2, 3, 4][..])]);
    }

    #[test]
    fn id_15_stops_one_byte_processing() {
        let data = [0x10, 0xAA, 0xF0, 0x20, 0xBB];
        assert_eq!(Extensions::new(ONE_BYTE_PROFILE, &data).count(), 1);
    }

    #[test]
    fn two_byte_elements_allow_empty_and_long_values() {
        let long = [7u8; 200];
        let mut out = Vec::new();
        write(&[(1, &[]), (200, &long)], &mut out).unwrap();
        assert_eq!(u16::from_be_bytes([out[0], out[1]]), TWO_BYTE_PROFILE);
        assert_eq!(out.len() % 4, 0);
        let e: Vec<_> = Extensions::new(0x1000, &out[4..]).map(|x| x.unwrap()).collect();
        assert_eq!(e, vec![(1, &[][..]), (200, &long[..])]);
    }

    #[test]
    fn writing_refuses_what_cannot_be_sent() {
        let mut out = Vec::new();
        assert_eq!(write(&[(0, b"x")], &mut out), Err(ExtensionError::BadId(0)));
        let big = [0u8; 256];
        assert_eq!(write(&[(1, &big)], &mut out), Err(ExtensionError::TooLong { id: 1, len: 256 }));
    }

    #[test]
    fn truncated_elements_end_the_iteration_with_an_error() {
        let e: Vec<_> = Extensions::new(ONE_BYTE_PROFILE, &[0x13, 1, 2]).collect();
        assert_eq!(e, vec![Err(ExtensionError::Truncated { id: 1 })]);
        let e: Vec<_> = Extensions::new(0x1000, &[5]).collect();
        assert_eq!(e, vec![Err(ExtensionError::Truncated { id: 5 })]);
        assert_eq!(Extensions::new(0x1234, &[0x10, 1]).count(), 0);
        assert_eq!(Extensions::new(ONE_BYTE_PROFILE, &[]).count(), 0);
    }

    #[test]
    fn typed_extensions_round_trip() {
        let t = AbsSendTime(0x12_3456);
        assert_eq!(AbsSendTime::decode(&t.encode()), Ok(t));
        assert_eq!(AbsSendTime::from_micros(1_500_000).0, 3 << 17); // 1.5 s in 6.18
        let s = TransportSequence(0xBEEF);
        assert_eq!(TransportSequence::decode(&s.encode()), Ok(s));
        let a = AudioLevel { voice: true, level: 42 };
        assert_eq!(AudioLevel::decode(&a.encode()), Ok(a));
        let v = VideoOrientation { back_camera: true, flip: false, rotation: 3 };
        assert_eq!(VideoOrientation::decode(&v.encode()), Ok(v));
        let d = PlayoutDelay { min: 0xABC, max: 0x123 };
        assert_eq!(d.encode(), [0xAB, 0xC1, 0x23]);
        assert_eq!(PlayoutDelay::decode(&d.encode()), Ok(d));
        let mut buf = [0; 16];
        for c in [
            AbsCaptureTime { ntp_time: 1 << 40, clock_offset: Some(-5) },
            AbsCaptureTime { ntp_time: 9, clock_offset: None },
        ] {
            let n = c.encode(&mut buf);
            assert_eq!(AbsCaptureTime::decode(&buf[..n]), Ok(c));
        }
    }

    #[test]
    fn typed_extensions_refuse_wrong_lengths() {
        assert!(AbsSendTime::decode(&[1, 2]).is_err());
        assert!(TransportSequence::decode(&[]).is_err());
        assert!(AudioLevel::decode(&[]).is_err());
        assert!(VideoOrientation::decode(&[]).is_err());
        assert!(PlayoutDelay::decode(&[1, 2, 3, 4]).is_err());
        assert!(AbsCaptureTime::decode(&[0; 9]).is_err());
        assert_eq!(text(&[0xff]), Err(ExtensionError::NotUtf8));
    }

    #[test]
    fn the_map_reads_negotiated_extensions_of_a_packet() {
        let mut map = ExtensionMap::default();
        assert!(map.insert(1, uri::MID));
        assert!(map.insert(2, uri::RID));
        assert!(map.insert(3, uri::TRANSPORT_CC));
        assert!(map.insert(4, uri::DEPENDENCY_DESCRIPTOR));
        assert!(map.insert(5, uri::AUDIO_LEVEL));
        assert!(!map.insert(6, "urn:example:unknown"));
        let mut out = Vec::new();
        let dd = [0x80, 0x01, 0x02];
        write(&[(1, b"0"), (2, b"hi"), (3, &[0, 7]), (4, &dd), (5, &[0x85]), (9, b"?")], &mut out).unwrap();
        let h = map.read(Extensions::new(ONE_BYTE_PROFILE, &out[4..]));
        assert_eq!(h.mid, Some("0"));
        assert_eq!(h.rid, Some("hi"));
        assert_eq!(h.transport_cc, Some(TransportSequence(7)));
        assert_eq!(h.dependency_descriptor, Some(&dd[..]));
        assert_eq!(h.audio_level, Some(AudioLevel { voice: true, level: 5 }));
        assert_eq!(h.abs_send_time, None);
    }
}
