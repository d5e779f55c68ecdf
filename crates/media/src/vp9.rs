//! VP9 over RTP (RFC 9628): the payload descriptor of §4.2 in flexible mode with a 15-bit
//! picture id (what Chromium sends), and on receive also non-flexible mode, layer indices
//! and the scalability structure (§4.2.1).

use crate::{
    balanced_sizes, check_frame, PacketizeError, PacketizerConfig, PayloadError, PayloadInfo, Payloads,
    PictureId,
};

// First octet of the payload descriptor (RFC 9628 §4.2).
const I: u8 = 0x80;
const P: u8 = 0x40;
const L: u8 = 0x20;
const F: u8 = 0x10;
const B: u8 = 0x08;
const E: u8 = 0x04;
const V: u8 = 0x01 << 1;
// Picture id's first octet: M set means 15 bits.
const M: u8 = 0x80;

/// Descriptor we send on an inter frame: first octet, 15-bit picture id, one P_DIFF.
const MAX_DESCRIPTOR_LEN: usize = 4;

/// Whether a VP9 frame is a key frame, from its uncompressed header (VP9 bitstream spec
/// §6.2: frame_marker, profile, show_existing_frame, frame_type with 0 = KEY_FRAME).
pub fn is_keyframe(frame: &[u8]) -> bool {
    let Some(&b) = frame.first() else { return false };
    if b >> 6 != 0b10 {
        return false;
    }
    let profile = (b >> 5 & 1) | (b >> 4 & 1) << 1;
    // Profile 3 has a reserved zero bit before show_existing_frame.
    let at = if profile == 3 { 5 } else { 4 };
    let show_existing = b >> (7 - at) & 1;
    let frame_type = b >> (6 - at) & 1;
    show_existing == 0 && frame_type == 0
}

/// Cuts VP9 frames into payloads with a flexible-mode descriptor; inter frames name the
/// previous picture as their reference (P_DIFF 1).
#[derive(Debug, Clone)]
pub struct Vp9Packetizer {
    max_payload: usize,
    picture_id: PictureId,
}

impl Vp9Packetizer {
    pub fn new(config: PacketizerConfig) -> Vp9Packetizer {
        Vp9Packetizer {
            max_payload: config.max_payload,
            picture_id: PictureId::new(config.initial_picture_id),
        }
    }

    /// The picture id the next frame gets.
    pub fn picture_id(&self) -> PictureId {
        self.picture_id
    }

    /// Replaces `out` with the payloads of one VP9 frame.
    pub fn packetize(&mut self, frame: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        out.clear();
        check_frame(frame, self.max_payload, MAX_DESCRIPTOR_LEN + 1)?;
        let key = is_keyframe(frame);
        let pid = self.picture_id.to_bytes();
        let sizes = balanced_sizes(frame.len(), self.max_payload - MAX_DESCRIPTOR_LEN);
        let n = sizes.len();
        let mut at = 0;
        for (i, size) in sizes.enumerate() {
            // RFC 9628 §4.2: B on the first packet of a layer frame, E on its last.
            let mut b0 = I | F;
            if i == 0 {
                b0 |= B;
            }
            if i + 1 == n {
                b0 |= E;
            }
            let part = &frame[at..at + size];
            if key {
                out.push(&[&[b0, pid[0], pid[1]], part]);
            } else {
                // RFC 9628 §4.2: with F and P set, at least one reference (P_DIFF) MUST be
                // given; N clear: this is the only one.
                out.push(&[&[b0 | P, pid[0], pid[1], 1 << 1], part]);
            }
            at += size;
        }
        self.picture_id.advance();
        Ok(())
    }
}

/// A received payload descriptor, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Descriptor {
    pub inter_picture: bool,
    pub flexible: bool,
    pub start_of_frame: bool,
    pub end_of_frame: bool,
    pub picture_id: Option<u16>,
    pub spatial_id: Option<u8>,
    pub temporal_id: Option<u8>,
    /// Bytes the descriptor takes: the VP9 payload follows.
    pub len: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self, what: &'static str) -> Result<u8, PayloadError> {
        let &b = self.buf.get(self.at).ok_or(PayloadError::Truncated(what))?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), PayloadError> {
        match self.at.checked_add(n) {
            Some(end) if end <= self.buf.len() => {
                self.at = end;
                Ok(())
            }
            _ => Err(PayloadError::Truncated(what)),
        }
    }
}

impl Vp9Descriptor {
    pub fn parse(payload: &[u8]) -> Result<Vp9Descriptor, PayloadError> {
        let mut r = Reader { buf: payload, at: 0 };
        let b0 = payload.first().copied().ok_or(PayloadError::Empty)?;
        r.at = 1;
        let (flexible, inter) = (b0 & F != 0, b0 & P != 0);
        let mut picture_id = None;
        if b0 & I != 0 {
            let p0 = r.byte("vp9 picture id")?;
            picture_id = Some(if p0 & M != 0 {
                u16::from_be_bytes([p0 & 0x7f, r.byte("vp9 picture id")?])
            } else {
                u16::from(p0)
            });
        }
        let (mut spatial_id, mut temporal_id) = (None, None);
        if b0 & L != 0 {
            let l = r.byte("vp9 layer indices")?;
            temporal_id = Some(l >> 5);
            spatial_id = Some(l >> 1 & 0x07);
            // RFC 9628 §4.2: TL0PICIDX follows the layer indices in non-flexible mode.
            if !flexible {
                r.byte("vp9 tl0picidx")?;
            }
        }
        if flexible && inter {
            // RFC 9628 §4.2: up to three P_DIFF octets, N set on all but the last.
            let mut n = 0;
            loop {
                let d = r.byte("vp9 reference index")?;
                n += 1;
                if d & 0x01 == 0 {
                    break;
                }
                if n == 3 {
                    return Err(PayloadError::Invalid("vp9 has more than three reference indices"));
                }
            }
        }
        if b0 & V != 0 {
            // RFC 9628 §4.2.1: N_S|Y|G, then sizes and the picture group.
            let ss = r.byte("vp9 scalability structure")?;
            let layers = usize::from(ss >> 5) + 1;
            if ss & 0x10 != 0 {
                r.skip(4 * layers, "vp9 spatial layer sizes")?;
            }
            if ss & 0x08 != 0 {
                let groups = r.byte("vp9 picture group")?;
                for _ in 0..groups {
                    let g = r.byte("vp9 picture group")?;
                    r.skip(usize::from(g >> 2 & 0x03), "vp9 picture group references")?;
                }
            }
        }
        if r.at >= payload.len() {
            return Err(PayloadError::Truncated("vp9 payload descriptor"));
        }
        Ok(Vp9Descriptor {
            inter_picture: inter,
            flexible,
            start_of_frame: b0 & B != 0,
            end_of_frame: b0 & E != 0,
            picture_id,
            spatial_id,
            temporal_id,
            len: r.at,
        })
    }

    /// The first packet of a picture: B set on its lowest spatial layer.
    fn starts_picture(&self) -> bool {
        self.start_of_frame && self.spatial_id.unwrap_or(0) == 0
    }
}

/// Checks one received payload. A picture starts with B set on spatial layer 0; it is a key
/// frame when that packet has P clear (RFC 9628 §4.2: P "MUST be set to zero" only on
/// pictures that predict from no earlier one).
pub fn parse(payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    let d = Vp9Descriptor::parse(payload)?;
    let frame_start = d.starts_picture();
    Ok(PayloadInfo { frame_start, certain_start: frame_start, keyframe: frame_start && !d.inter_picture })
}

/// Appends the VP9 picture carried by `payloads` (in order; the layer frames of a picture
/// back to back) to `out`.
pub fn depacketize<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    let mut first_pid = None;
    let mut in_layer_frame = false;
    let mut n = 0;
    for p in payloads {
        let d = Vp9Descriptor::parse(p)?;
        if n == 0 {
            if !d.starts_picture() {
                return Err(PayloadError::Invalid("vp9 picture does not start with B set"));
            }
            first_pid = d.picture_id;
        } else if d.picture_id.is_some() && first_pid.is_some() && d.picture_id != first_pid {
            return Err(PayloadError::Invalid("vp9 picture id changes within a picture"));
        }
        // B and E bracket each layer frame (RFC 9628 §4.2).
        if d.start_of_frame == in_layer_frame {
            return Err(PayloadError::Invalid("vp9 layer frame boundaries out of order"));
        }
        in_layer_frame = !d.end_of_frame;
        out.extend_from_slice(&p[d.len..]);
        n += 1;
    }
    match (n, in_layer_frame) {
        (0, _) => Err(PayloadError::Empty),
        (_, true) => Err(PayloadError::Invalid("vp9 picture ends without E")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    #[test]
    fn reads_the_key_frame_bit_of_the_uncompressed_header() {
        // frame_marker 10, profile 0, show_existing 0, frame_type 0.
        assert!(is_keyframe(&[0x82, 0x49, 0x83]));
        // frame_type 1.
        assert!(!is_keyframe(&[0x86]));
        // show_existing_frame.
        assert!(!is_keyframe(&[0x88]));
        // Profile 3: reserved bit, then show_existing 0, frame_type 0.
        assert!(is_keyframe(&[0xb0]));
        assert!(!is_keyframe(&[0xb1 | 0x02]));
        assert!(!is_keyframe(&[]) && !is_keyframe(&[0x00]));
    }

    #[test]
    fn sends_flexible_mode_with_p_diff_on_inter_frames_only() {
        let config = PacketizerConfig { max_payload: 7, initial_picture_id: 0x1234, ..Default::default() };
        let mut p = Vp9Packetizer::new(config);
        let mut out = Payloads::default();
        p.packetize(&[0x82, 1, 2, 3, 4, 5], &mut out).unwrap();
        let v: Vec<_> = out.iter().collect();
        assert_eq!(
            v,
            [(&[0x98, 0x92, 0x34, 0x82, 1, 2][..], false), (&[0x94, 0x92, 0x34, 3, 4, 5][..], true)]
        );
        p.packetize(&[0x86, 1], &mut out).unwrap();
        assert_eq!(out.get(0), Some(&[0xdc, 0x92, 0x35, 0x02, 0x86, 1][..]));
    }

    #[test]
    fn parses_non_flexible_mode_with_layers_and_scalability_structure() {
        // I L B E V (non-flexible), 7-bit pid 5, TID 1 SID 0, TL0PICIDX, SS: N_S=1 Y G,
        // two sizes, N_G=1 with one reference, then the payload.
        let pkt = [
            0xae, 0x05, 0x20, 0x09, 0x38, 0x01, 0x40, 0x00, 0xf0, 0x02, 0x80, 0x01, 0xe0, 0x01, 0x24, 0x01,
            0xaa,
        ];
        let d = Vp9Descriptor::parse(&pkt).unwrap();
        assert_eq!(d.picture_id, Some(5));
        assert_eq!((d.temporal_id, d.spatial_id, d.flexible), (Some(1), Some(0), false));
        assert_eq!(d.len, pkt.len() - 1);
        assert_eq!(parse(&pkt), Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: true }));
        // Spatial layer 1 with B does not start the picture.
        assert!(!parse(&[0xa8, 0x05, 0x22, 0x00, 0xaa]).unwrap().frame_start);
    }

    #[test]
    fn refuses_more_than_three_reference_indices() {
        assert!(Vp9Descriptor::parse(&[0xd8, 0x80, 0x01, 0x03, 0x03, 0x03, 0x02, 0]).is_err());
        assert!(Vp9Descriptor::parse(&[0xd8, 0x80, 0x01, 0x03, 0x03, 0x02, 0]).is_ok());
    }

    #[test]
    fn empty_truncated_and_garbage_payloads_never_panic() {
        assert_eq!(parse(&[]), Err(PayloadError::Empty));
        for t in [
            &[0x80][..],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x01],
            &[0x52],
            &[0x02, 0x10],
            &[0x02, 0x08, 0x01, 0x0c],
        ] {
            assert!(matches!(parse(t), Err(PayloadError::Truncated(_))), "{t:?}");
        }
        for g in TestRng::new(9).garbage(2000, 24) {
            let _ = parse(&g);
            let _ = depacketize([&g[..], &g[..]], &mut Vec::new());
        }
    }

    #[test]
    fn depacketize_needs_b_first_and_e_last() {
        let mut out = Vec::new();
        assert!(depacketize([&[0x90, 0x80, 0x01, 7][..]], &mut out).is_err());
        assert!(depacketize([&[0x98, 0x80, 0x01, 7][..]], &mut out).is_err());
        out.clear();
        depacketize([&[0x98, 0x80, 0x01, 7][..], &[0x94, 0x80, 0x01, 8]], &mut out).unwrap();
        assert_eq!(out, [7, 8]);
    }
}
