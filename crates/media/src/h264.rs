//! H.264 over RTP (RFC 6184), non-interleaved: single NAL unit packets (§5.6), STAP-A
//! (§5.7.1) and FU-A (§5.8). Access units come in and go out in Annex B form (H.264 Annex
//! B.1: NAL units after `00 00 01` or `00 00 00 01` start codes).

use crate::{
    balanced_sizes, check_frame, H264Mode, PacketizeError, PacketizerConfig, PayloadError, PayloadInfo,
    Payloads,
};

/// NAL unit types (H.264 Table 7-1; RFC 6184 Table 1 for 24..=29).
const SLICE: u8 = 1;
const IDR: u8 = 5;
const SEI: u8 = 6;
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

const TYPE: u8 = 0x1f;
/// F and NRI: what an aggregate or fragment header copies from the NAL units it carries.
const F_NRI: u8 = 0xe0;
const NRI: u8 = 0x60;
const F: u8 = 0x80;
// FU header (RFC 6184 §5.8).
const FU_S: u8 = 0x80;
const FU_E: u8 = 0x40;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The NAL units of an Annex B byte stream, without start codes or trailing zero bytes.
#[derive(Debug, Clone)]
pub struct AnnexB<'a> {
    data: &'a [u8],
    /// Where the next NAL unit starts (just after a start code), if any.
    at: Option<usize>,
}

impl<'a> AnnexB<'a> {
    pub fn new(data: &'a [u8]) -> AnnexB<'a> {
        AnnexB { data, at: find_start_code(data, 0).map(|sc| sc + 3) }
    }
}

/// Offset of the next `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(3).position(|w| w == [0, 0, 1]).map(|p| from + p)
}

impl<'a> Iterator for AnnexB<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.at?;
            let end = find_start_code(self.data, start);
            self.at = end.map(|sc| sc + 3);
            let mut nal = &self.data[start..end.unwrap_or(self.data.len())];
            // A four-byte start code (or trailing_zero_8bits, Annex B.1) leaves zeros behind.
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// Cuts Annex B access units into RTP payloads.
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    max_payload: usize,
    mode: H264Mode,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl H264Packetizer {
    pub fn new(config: PacketizerConfig) -> H264Packetizer {
        H264Packetizer {
            max_payload: config.max_payload,
            mode: config.h264_mode,
            sps: Vec::new(),
            pps: Vec::new(),
        }
    }

    /// Replaces `out` with the payloads of one access unit. An IDR access unit without SPS
    /// or PPS gets the last ones seen, so a receiver joining at any key frame can decode it.
    pub fn packetize(&mut self, access_unit: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        out.clear();
        // One byte of FU-A data after the FU indicator and header.
        check_frame(access_unit, self.max_payload, 3)?;
        let (mut has_sps, mut has_pps, mut has_idr) = (false, false, false);
        for nal in AnnexB::new(access_unit) {
            match nal[0] & TYPE {
                SPS => {
                    has_sps = true;
                    self.sps.clear();
                    self.sps.extend_from_slice(nal);
                }
                PPS => {
                    has_pps = true;
                    self.pps.clear();
                    self.pps.extend_from_slice(nal);
                }
                IDR => has_idr = true,
                _ => {}
            }
        }
        let mut nals: Vec<&[u8]> = Vec::new();
        let mut inserted = !has_idr;
        for nal in AnnexB::new(access_unit) {
            if !inserted && matches!(nal[0] & TYPE, SLICE..=IDR) {
                inserted = true;
                for (present, cached) in [(has_sps, &self.sps), (has_pps, &self.pps)] {
                    if !present && !cached.is_empty() {
                        nals.push(cached);
                    }
                }
            }
            nals.push(nal);
        }
        if nals.is_empty() {
            return Err(PacketizeError::NoNalUnits);
        }
        let max = self.max_payload;
        match self.mode {
            H264Mode::SingleNal => {
                // RFC 6184 §6.2: mode 0 has single NAL unit packets only.
                if let Some(big) = nals.iter().find(|n| n.len() > max) {
                    return Err(PacketizeError::NalTooLarge { len: big.len(), max });
                }
                for nal in nals {
                    out.push(&[nal]);
                }
            }
            H264Mode::NonInterleaved => {
                let mut i = 0;
                while i < nals.len() {
                    let nal = nals[i];
                    if nal.len() > max {
                        fragment(nal, max, out);
                        i += 1;
                        continue;
                    }
                    // As many following NAL units as fit one STAP-A (RFC 6184 §5.7.1): a
                    // one-byte header, then a 16-bit size before each.
                    let mut size = 1 + 2 + nal.len();
                    let mut j = i + 1;
                    while j < nals.len() && size + 2 + nals[j].len() <= max {
                        size += 2 + nals[j].len();
                        j += 1;
                    }
                    if j - i == 1 {
                        out.push(&[nal]);
                    } else {
                        aggregate(&nals[i..j], out);
                    }
                    i = j;
                }
            }
        }
        Ok(())
    }
}

/// One STAP-A of `nals` (each fits, sizes below 2^16).
fn aggregate(nals: &[&[u8]], out: &mut Payloads) {
    // RFC 6184 §5.7: F is the OR of the aggregated F bits, NRI their maximum.
    let f = nals.iter().fold(0, |f, n| f | n[0] & F);
    let nri = nals.iter().map(|n| n[0] & NRI).max().unwrap_or(0);
    let buf = out.current();
    buf.push(f | nri | STAP_A);
    for nal in nals {
        buf.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        buf.extend_from_slice(nal);
    }
    out.finish();
}

/// FU-A fragments of a NAL unit larger than `max` (RFC 6184 §5.8).
fn fragment(nal: &[u8], max: usize, out: &mut Payloads) {
    let indicator = nal[0] & F_NRI | FU_A;
    let nal_type = nal[0] & TYPE;
    // The NAL unit header is not sent: the FU indicator and header carry it.
    let body = &nal[1..];
    let sizes = balanced_sizes(body.len(), max - 2);
    let n = sizes.len();
    let mut at = 0;
    for (i, size) in sizes.enumerate() {
        let mut header = nal_type;
        if i == 0 {
            header |= FU_S;
        }
        if i + 1 == n {
            header |= FU_E;
        }
        out.push(&[&[indicator, header], &body[at..at + size]]);
        at += size;
    }
}

/// Whether a NAL unit of `nal_type` whose header is followed by `next` begins an access unit:
/// SEI, SPS, PPS and the delimiter come before the first slice (H.264 §7.4.1.2.3), and the
/// first slice has first_mb_in_slice 0, a ue(v) coded as a single 1 bit.
fn begins_access_unit(nal_type: u8, next: Option<u8>) -> bool {
    match nal_type {
        SEI | SPS | PPS | AUD => true,
        SLICE | IDR => next.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// One NAL unit from a payload, as the depacketizer sees it.
enum Unit<'a> {
    Whole(&'a [u8]),
    FuStart { header: u8, data: &'a [u8], end: bool },
    FuRest { data: &'a [u8], end: bool },
}

/// Calls `each` for the NAL units (or fragments) of one payload.
fn units<'a>(payload: &'a [u8], mut each: impl FnMut(Unit<'a>)) -> Result<(), PayloadError> {
    let &b0 = payload.first().ok_or(PayloadError::Empty)?;
    match b0 & TYPE {
        1..=23 => each(Unit::Whole(payload)),
        STAP_A => {
            let mut rest = &payload[1..];
            if rest.is_empty() {
                return Err(PayloadError::Truncated("stap-a without nal units"));
            }
            while !rest.is_empty() {
                let [a, b, tail @ ..] = rest else {
                    return Err(PayloadError::Truncated("stap-a nal unit size"));
                };
                let size = usize::from(u16::from_be_bytes([*a, *b]));
                if size == 0 {
                    return Err(PayloadError::Invalid("stap-a holds an empty nal unit"));
                }
                let nal = tail.get(..size).ok_or(PayloadError::Truncated("stap-a nal unit"))?;
                each(Unit::Whole(nal));
                rest = &tail[size..];
            }
        }
        FU_A => {
            let [_, header, data @ ..] = payload else { return Err(PayloadError::Truncated("fu-a header")) };
            if data.is_empty() {
                return Err(PayloadError::Truncated("fu-a payload"));
            }
            let (start, end) = (header & FU_S != 0, header & FU_E != 0);
            // RFC 6184 §5.8: S and E MUST NOT both be set.
            if start && end {
                return Err(PayloadError::Invalid("fu-a with both start and end set"));
            }
            if start {
                each(Unit::FuStart { header: b0 & F_NRI | header & TYPE, data, end });
            } else {
                each(Unit::FuRest { data, end });
            }
        }
        // Interleaved mode only (RFC 6184 §5.7.2, §5.8), and types 0, 30, 31 are unused.
        _ => return Err(PayloadError::Unsupported("h264 packet type other than single, stap-a, fu-a")),
    }
    Ok(())
}

/// Checks one received payload; a frame starts with the first NAL unit of an access unit,
/// and IDR slices (type 5) make a key frame.
pub fn parse(payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    let mut info = PayloadInfo::default();
    let mut first = true;
    units(payload, |u| {
        let (nal_type, next) = match u {
            Unit::Whole(nal) => (nal[0] & TYPE, nal.get(1).copied()),
            Unit::FuStart { header, data, .. } => (header & TYPE, data.first().copied()),
            Unit::FuRest { .. } => (0, None),
        };
        if first {
            info.frame_start = begins_access_unit(nal_type, next);
            // Only these come first in an access unit whatever else it holds.
            info.certain_start = matches!(nal_type, SPS | AUD);
            first = false;
        }
        info.keyframe |= nal_type == IDR;
    })?;
    Ok(info)
}

/// Appends the access unit carried by `payloads` (in order) to `out` in Annex B form, with
/// STAP-As unpacked and FU-As joined. Fragments out of order make it an error.
pub fn depacketize<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    let mut in_fragment = false;
    let mut bad = None;
    let mut n = 0;
    for p in payloads {
        n += 1;
        units(p, |u| match u {
            Unit::Whole(nal) if !in_fragment => {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(nal);
            }
            Unit::FuStart { header, data, end } if !in_fragment => {
                out.extend_from_slice(&START_CODE);
                out.push(header);
                out.extend_from_slice(data);
                in_fragment = !end;
            }
            Unit::FuRest { data, end } if in_fragment => {
                out.extend_from_slice(data);
                in_fragment = !end;
            }
            _ => bad = Some(PayloadError::Invalid("fu-a fragments out of order")),
        })?;
        if let Some(e) = bad {
            return Err(e);
        }
    }
    if n == 0 {
        return Err(PayloadError::Empty);
    }
    if in_fragment {
        return Err(PayloadError::Invalid("fu-a fragment without end"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    const SPS_NAL: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS_NAL: [u8; 3] = [0x68, 0xce, 0x3c];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter().flat_map(|n| START_CODE.iter().chain(n.iter()).copied()).collect()
    }

    fn packetizer(max_payload: usize, h264_mode: H264Mode) -> H264Packetizer {
        H264Packetizer::new(PacketizerConfig { max_payload, h264_mode, ..Default::default() })
    }

    #[test]
    fn splits_annex_b_with_three_and_four_byte_start_codes() {
        let data = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 3, 0];
        let nals: Vec<_> = AnnexB::new(&data).collect();
        assert_eq!(nals, [&[0x67, 1][..], &[0x68, 2], &[0x65, 3]]);
        assert_eq!(AnnexB::new(&[1, 2, 3]).count(), 0);
        assert_eq!(AnnexB::new(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn small_nal_units_go_into_one_stap_a() {
        let idr = [0x65, 0x88, 1, 2];
        let mut out = Payloads::default();
        packetizer(100, H264Mode::NonInterleaved)
            .packetize(&annex_b(&[&SPS_NAL, &PPS_NAL, &idr]), &mut out)
            .unwrap();
        // RFC 6184 §5.7.1 Figure 7: STAP-A header (NRI the maximum), then size and NAL unit.
        let want = [0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 3, 0x68, 0xce, 0x3c, 0, 4, 0x65, 0x88, 1, 2];
        assert_eq!(out.iter().collect::<Vec<_>>(), [(&want[..], true)]);
    }

    #[test]
    fn large_nal_unit_becomes_fu_a_fragments() {
        let idr: Vec<u8> = [0x65].into_iter().chain(1..=10).collect();
        let mut out = Payloads::default();
        packetizer(6, H264Mode::NonInterleaved).packetize(&annex_b(&[&idr]), &mut out).unwrap();
        // RFC 6184 §5.8: indicator F|NRI|28, header S|E|R|type, the NAL header not sent.
        let v: Vec<_> = out.iter().collect();
        assert_eq!(
            v,
            [
                (&[0x7c, 0x85, 1, 2, 3, 4][..], false),
                (&[0x7c, 0x05, 5, 6, 7][..], false),
                (&[0x7c, 0x45, 8, 9, 10][..], true)
            ]
        );
    }

    #[test]
    fn idr_without_parameter_sets_gets_the_last_ones_seen() {
        let mut p = packetizer(1200, H264Mode::SingleNal);
        let mut out = Payloads::default();
        p.packetize(&annex_b(&[&SPS_NAL, &PPS_NAL, &[0x65, 0x88]]), &mut out).unwrap();
        p.packetize(&annex_b(&[&[0x41, 0x9a]]), &mut out).unwrap();
        out.clear();
        p.packetize(&annex_b(&[&[0x09, 0xf0], &[0x65, 0x88, 7]]), &mut out).unwrap();
        let v: Vec<_> = out.iter().map(|(p, _)| p).collect();
        assert_eq!(v, [&[0x09, 0xf0][..], &SPS_NAL, &PPS_NAL, &[0x65, 0x88, 7]]);
    }

    #[test]
    fn mode_0_refuses_a_nal_unit_larger_than_the_payload() {
        let mut out = Payloads::default();
        let err = packetizer(4, H264Mode::SingleNal)
            .packetize(&annex_b(&[&[0x41, 1], &[0x41, 1, 2, 3, 4]]), &mut out);
        assert_eq!(err, Err(PacketizeError::NalTooLarge { len: 5, max: 4 }));
        assert!(out.is_empty());
        let mut p = packetizer(4, H264Mode::SingleNal);
        assert_eq!(p.packetize(&[9, 9], &mut out), Err(PacketizeError::NoNalUnits));
    }

    #[test]
    fn start_of_access_unit_and_idr_are_recognised() {
        // Single NAL: IDR slice with first_mb_in_slice 0.
        assert_eq!(
            parse(&[0x65, 0x88]),
            Ok(PayloadInfo { frame_start: true, certain_start: false, keyframe: true })
        );
        // A second slice (first_mb_in_slice != 0) does not start one.
        assert_eq!(
            parse(&[0x41, 0x40]),
            Ok(PayloadInfo { frame_start: false, certain_start: false, keyframe: false })
        );
        // STAP-A with SPS first and an IDR inside.
        let stap = [0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 2, 0x65, 0x88];
        assert_eq!(parse(&stap), Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: true }));
        // FU-A start of an IDR, then a middle fragment.
        assert_eq!(
            parse(&[0x7c, 0x85, 0x88]),
            Ok(PayloadInfo { frame_start: true, certain_start: false, keyframe: true })
        );
        assert!(!parse(&[0x7c, 0x05, 0x00]).unwrap().frame_start);
    }

    #[test]
    fn depacketizes_to_annex_b_with_stap_a_unpacked_and_fu_a_joined() {
        let stap = [0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 3, 0x68, 0xce, 0x3c];
        let parts = [&stap[..], &[0x7c, 0x85, 1, 2], &[0x7c, 0x05, 3], &[0x7c, 0x45, 4]];
        let mut out = Vec::new();
        depacketize(parts, &mut out).unwrap();
        assert_eq!(out, annex_b(&[&SPS_NAL, &PPS_NAL, &[0x65, 1, 2, 3, 4]]));
    }

    #[test]
    fn refuses_fragments_out_of_order_and_unsupported_types() {
        let mut out = Vec::new();
        assert!(depacketize([&[0x7c, 0x05, 3][..]], &mut out).is_err());
        assert!(depacketize([&[0x7c, 0x85, 3][..]], &mut out).is_err());
        assert!(depacketize([&[0x7c, 0x85, 3][..], &[0x65, 0x88]], &mut out).is_err());
        assert_eq!(parse(&[0x7c, 0xc5, 3]), Err(PayloadError::Invalid("fu-a with both start and end set")));
        for t in [0u8, 25, 26, 27, 29, 30, 31] {
            assert!(matches!(parse(&[t, 1, 2, 3]), Err(PayloadError::Unsupported(_))), "{t}");
        }
    }

    #[test]
    fn empty_truncated_and_garbage_payloads_never_panic() {
        assert_eq!(parse(&[]), Err(PayloadError::Empty));
        for t in [&[0x78][..], &[0x78, 0], &[0x78, 0, 5, 1], &[0x78, 0, 1, 0x41, 0], &[0x7c], &[0x7c, 0x85]] {
            assert!(matches!(parse(t), Err(PayloadError::Truncated(_))), "{t:?}");
        }
        assert!(parse(&[0x78, 0, 0]).is_err());
        let mut rng = TestRng::new(10);
        for g in rng.garbage(3000, 24) {
            let _ = parse(&g);
            let _ = depacketize([&g[..], &g[..]], &mut Vec::new());
            let mut out = Payloads::default();
            let _ = packetizer(5, H264Mode::NonInterleaved).packetize(&g, &mut out);
        }
    }
}
