//! AV1 over RTP (AOM "RTP Payload Format for AV1" v1.0.0): the aggregation header (§4.4),
//! OBU elements with LEB128 lengths (§4.5), and the packetization rules of §5. Temporal
//! units come in and go out in the low-overhead bitstream format (AV1 spec §5.2: every OBU
//! with its size field).

use crate::{check_frame, PacketizeError, PacketizerConfig, PayloadError, PayloadInfo, Payloads};
use std::ops::Range;

// Aggregation header (§4.4).
const Z: u8 = 0x80;
const Y: u8 = 0x40;
const W_SHIFT: u8 = 4;
const N: u8 = 0x08;

// OBU header (AV1 spec §5.3.1).
const FORBIDDEN: u8 = 0x80;
const EXTENSION: u8 = 0x04;
const HAS_SIZE: u8 = 0x02;

// OBU types (AV1 spec §6.2.2).
const SEQUENCE_HEADER: u8 = 1;
const TEMPORAL_DELIMITER: u8 = 2;
const FRAME_HEADER: u8 = 3;
const METADATA: u8 = 5;
const FRAME: u8 = 6;
const TILE_LIST: u8 = 8;
const PADDING: u8 = 15;

/// The temporal delimiter the depacketizer puts at the head of every temporal unit (§5: the
/// sender drops it; AV1 spec §7.5: a temporal unit starts with one).
pub const TEMPORAL_DELIMITER_OBU: [u8; 2] = [TEMPORAL_DELIMITER << 3 | HAS_SIZE, 0];

fn obu_type(header: u8) -> u8 {
    header >> 3 & 0x0f
}

/// Reads an unsigned LEB128 value (AV1 spec §4.10.5: at most 8 bytes, below 2^32).
pub fn read_leb128(buf: &[u8]) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((u32::try_from(value).ok()?, i + 1));
        }
    }
    None
}

pub fn write_leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let b = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn leb128_len(value: usize) -> usize {
    let bits = usize::BITS - value.leading_zeros();
    (bits as usize).div_ceil(7).max(1)
}

/// One OBU of a low-overhead stream: its header byte, extension byte and payload.
struct Obu<'a> {
    header: u8,
    extension: Option<u8>,
    payload: &'a [u8],
}

/// Reads the OBU at the start of `buf` and how many bytes it took; an OBU without a size
/// field runs to the end of `buf`.
fn read_obu(buf: &[u8]) -> Option<(Obu<'_>, usize)> {
    let &header = buf.first()?;
    if header & FORBIDDEN != 0 {
        return None;
    }
    let mut at = 1;
    let extension = if header & EXTENSION != 0 {
        at += 1;
        Some(*buf.get(1)?)
    } else {
        None
    };
    let end = if header & HAS_SIZE != 0 {
        let (size, len) = read_leb128(buf.get(at..)?)?;
        at += len;
        at.checked_add(usize::try_from(size).ok()?)?
    } else {
        buf.len()
    };
    let payload = buf.get(at..end)?;
    Some((Obu { header, extension, payload }, end))
}

/// Cuts temporal units into payloads of OBU elements.
#[derive(Debug, Clone)]
pub struct Av1Packetizer {
    max_payload: usize,
    /// The OBU elements of the temporal unit under way, without size fields.
    scratch: Vec<u8>,
    elements: Vec<Range<usize>>,
}

impl Av1Packetizer {
    pub fn new(config: PacketizerConfig) -> Av1Packetizer {
        Av1Packetizer { max_payload: config.max_payload, scratch: Vec::new(), elements: Vec::new() }
    }

    /// Replaces `out` with the payloads of one temporal unit (low-overhead format).
    pub fn packetize(&mut self, temporal_unit: &[u8], out: &mut Payloads) -> Result<(), PacketizeError> {
        out.clear();
        // The aggregation header, a one-byte length and one byte of element.
        check_frame(temporal_unit, self.max_payload, 3)?;
        self.scratch.clear();
        self.elements.clear();
        let mut sequence_header = false;
        let mut at = 0;
        while at < temporal_unit.len() {
            let (obu, used) = read_obu(&temporal_unit[at..]).ok_or(PacketizeError::BadObu { offset: at })?;
            at += used;
            match obu_type(obu.header) {
                // §5: temporal delimiters SHOULD and tile lists MUST be removed; padding
                // MAY be.
                TEMPORAL_DELIMITER | TILE_LIST | PADDING => continue,
                SEQUENCE_HEADER => sequence_header = true,
                _ => {}
            }
            let start = self.scratch.len();
            // §4.5: the size field SHOULD be left out; the element length replaces it.
            self.scratch.push(obu.header & !HAS_SIZE);
            self.scratch.extend(obu.extension);
            self.scratch.extend_from_slice(obu.payload);
            self.elements.push(start..self.scratch.len());
        }
        if self.elements.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        let cap = self.max_payload - 1;
        let (mut element, mut offset) = (0, 0);
        let mut first = true;
        while element < self.elements.len() {
            let z = offset > 0;
            let buf = out.current();
            let header_at = buf.len();
            buf.push(0);
            let mut count = 0;
            let mut last_prefix = None;
            let mut y = false;
            while element < self.elements.len() {
                let range = &self.elements[element];
                let rest = &self.scratch[range.start + offset..range.end];
                let room = cap - (buf.len() - header_at - 1);
                let (take, continues) = if leb128_len(rest.len()) + rest.len() <= room {
                    (rest.len(), false)
                } else {
                    let mut take = room.saturating_sub(leb128_len(room));
                    while take > 0 && leb128_len(take) + take > room {
                        take -= 1;
                    }
                    (take, true)
                };
                if take == 0 {
                    break;
                }
                last_prefix = Some((buf.len(), leb128_len(take)));
                write_leb128(take, buf);
                buf.extend_from_slice(&rest[..take]);
                count += 1;
                if continues {
                    offset += take;
                    y = true;
                    break;
                }
                element += 1;
                offset = 0;
            }
            // §4.4: with W of 1..=3 the last element goes without its length.
            let mut w = 0;
            if count <= 3 {
                if let Some((at, len)) = last_prefix {
                    buf.drain(at..at + len);
                    w = count;
                }
            }
            // §4.4: N on the first packet of a coded video sequence.
            let n = first && sequence_header;
            buf[header_at] =
                if z { Z } else { 0 } | if y { Y } else { 0 } | (w as u8) << W_SHIFT | if n { N } else { 0 };
            out.finish();
            first = false;
        }
        Ok(())
    }
}

/// Calls `each` with the OBU elements of one payload and returns its aggregation header.
fn elements<'a>(payload: &'a [u8], mut each: impl FnMut(&'a [u8])) -> Result<u8, PayloadError> {
    let (&header, mut rest) = payload.split_first().ok_or(PayloadError::Empty)?;
    let w = usize::from(header >> W_SHIFT & 0x03);
    if rest.is_empty() {
        return Err(PayloadError::Truncated("av1 payload without obu elements"));
    }
    let mut count = 0;
    while !rest.is_empty() {
        count += 1;
        let element = if w != 0 && count == w {
            std::mem::take(&mut rest)
        } else {
            let (size, len) = read_leb128(rest).ok_or(PayloadError::Invalid("av1 element length"))?;
            let size = usize::try_from(size).map_err(|_| PayloadError::Invalid("av1 element length"))?;
            let element = rest
                .get(len..)
                .and_then(|r| r.get(..size))
                .ok_or(PayloadError::Truncated("av1 obu element"))?;
            rest = &rest[len + size..];
            element
        };
        if element.is_empty() {
            return Err(PayloadError::Invalid("av1 obu element is empty"));
        }
        each(element);
    }
    if w != 0 && count != w {
        return Err(PayloadError::Invalid("av1 element count differs from w"));
    }
    Ok(header)
}

/// Checks one received payload. A temporal unit starts with a packet whose first element
/// is no continuation (Z clear) and begins with a sequence header, frame header, frame or
/// metadata OBU of spatial layer 0; N or a sequence header marks a key frame.
pub fn parse(payload: &[u8]) -> Result<PayloadInfo, PayloadError> {
    let mut first = None;
    let mut sequence_header = false;
    let header = elements(payload, |e| {
        first.get_or_insert(e);
        sequence_header |= obu_type(e[0]) == SEQUENCE_HEADER;
    })?;
    let continuation = header & Z != 0;
    if continuation {
        // Only the first element may be a fragment's continuation.
        sequence_header = false;
    }
    let frame_start = !continuation
        && first.is_some_and(|e| {
            let spatial_layer_0 = e[0] & EXTENSION == 0 || e.get(1).is_some_and(|x| x >> 3 & 0x03 == 0);
            matches!(obu_type(e[0]), SEQUENCE_HEADER | TEMPORAL_DELIMITER | FRAME_HEADER | METADATA | FRAME)
                && spatial_layer_0
        });
    let certain_start =
        frame_start && first.is_some_and(|e| matches!(obu_type(e[0]), SEQUENCE_HEADER | TEMPORAL_DELIMITER));
    Ok(PayloadInfo {
        frame_start,
        certain_start,
        keyframe: frame_start && (header & N != 0 || sequence_header),
    })
}

/// Writes one whole OBU element as an OBU with its size field.
fn write_obu(element: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let (obu, _) = read_obu(element).ok_or(PayloadError::Invalid("av1 obu header"))?;
    if matches!(obu_type(obu.header), TEMPORAL_DELIMITER | TILE_LIST) {
        return Ok(());
    }
    out.push(obu.header | HAS_SIZE);
    out.extend(obu.extension);
    write_leb128(obu.payload.len(), out);
    out.extend_from_slice(obu.payload);
    Ok(())
}

/// Appends the temporal unit carried by `payloads` (in order) to `out` in low-overhead form,
/// starting with a temporal delimiter. A broken Z/Y chain makes it an error.
pub fn depacketize<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    out.extend_from_slice(&TEMPORAL_DELIMITER_OBU);
    // The element being joined across packets, when the last one ended with Y.
    let mut open: Option<Vec<u8>> = None;
    let mut n = 0;
    for p in payloads {
        let &header = p.first().ok_or(PayloadError::Empty)?;
        // §4.4: Z says the first element continues the previous packet's last (Y).
        if (header & Z != 0) != open.is_some() {
            return Err(PayloadError::Invalid("av1 z and y do not match"));
        }
        let mut count = 0;
        let mut result = Ok(());
        let total = {
            let mut total = 0;
            elements(p, |_| total += 1)?;
            total
        };
        elements(p, |e| {
            count += 1;
            let last_open = header & Y != 0 && count == total;
            let joined = if count == 1 { open.take() } else { None };
            let r = match (joined, last_open) {
                (Some(mut buf), true) => {
                    buf.extend_from_slice(e);
                    open = Some(buf);
                    Ok(())
                }
                (Some(mut buf), false) => {
                    buf.extend_from_slice(e);
                    write_obu(&buf, out)
                }
                (None, true) => {
                    open = Some(e.to_vec());
                    Ok(())
                }
                (None, false) => write_obu(e, out),
            };
            if result.is_ok() {
                result = r;
            }
        })?;
        result?;
        n += 1;
    }
    if n == 0 {
        return Err(PayloadError::Empty);
    }
    if open.is_some() {
        return Err(PayloadError::Invalid("av1 temporal unit ends inside an obu"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;

    #[test]
    fn leb128_round_trips_and_refuses_overlong_values() {
        for v in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 21, u32::MAX as usize] {
            let mut buf = Vec::new();
            write_leb128(v, &mut buf);
            assert_eq!(buf.len(), leb128_len(v));
            assert_eq!(read_leb128(&buf), Some((v as u32, buf.len())));
        }
        assert_eq!(read_leb128(&[0x80, 0x80]), None);
        assert_eq!(read_leb128(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None);
        assert_eq!(read_leb128(&[0x80; 9]), None);
    }

    /// A temporal unit: TD, sequence header, frame (each with a size field).
    fn temporal_unit(frame_len: usize) -> Vec<u8> {
        let mut tu = TEMPORAL_DELIMITER_OBU.to_vec();
        tu.extend([SEQUENCE_HEADER << 3 | HAS_SIZE, 2, 0xaa, 0xbb]);
        tu.push(FRAME << 3 | HAS_SIZE);
        write_leb128(frame_len, &mut tu);
        tu.extend((0..frame_len).map(|i| i as u8));
        tu
    }

    #[test]
    fn drops_temporal_delimiter_and_size_fields_and_sets_n_on_a_new_sequence() {
        let mut p = Av1Packetizer::new(PacketizerConfig::default());
        let mut out = Payloads::default();
        p.packetize(&temporal_unit(3), &mut out).unwrap();
        // §4.4: N, W=2; the first element with its length, the last without; no size fields.
        let want = [0x28, 3, 0x08, 0xaa, 0xbb, 0x30, 0, 1, 2];
        assert_eq!(out.iter().collect::<Vec<_>>(), [(&want[..], true)]);
        assert_eq!(parse(&want), Ok(PayloadInfo { frame_start: true, certain_start: true, keyframe: true }));
    }

    #[test]
    fn fragments_large_obus_with_y_and_z() {
        let mut p = Av1Packetizer::new(PacketizerConfig { max_payload: 10, ..Default::default() });
        let mut out = Payloads::default();
        p.packetize(&temporal_unit(20), &mut out).unwrap();
        let v: Vec<_> = out.iter().map(|(p, _)| p.to_vec()).collect();
        assert!(v.iter().all(|p| p.len() <= 10));
        assert_eq!(v[0][0] & (Z | Y | N), Y | N);
        assert!(v[1..].iter().all(|p| p[0] & Z != 0));
        assert_eq!(v.last().unwrap()[0] & Y, 0);
        let mut tu = Vec::new();
        depacketize(v.iter().map(|p| &p[..]), &mut tu).unwrap();
        assert_eq!(tu, temporal_unit(20));
    }

    #[test]
    fn depacketizes_w_zero_elements_and_obus_that_kept_their_size_field() {
        // W=0: every element has a length; the second OBU has an extension and a size field.
        let pkt = [0x00, 2, 0x30, 7, 5, 0x36, 0x00, 1, 9, 0xee];
        let mut tu = Vec::new();
        depacketize([&pkt[..]], &mut tu).unwrap();
        assert_eq!(tu, [0x12, 0, 0x32, 1, 7, 0x36, 0x00, 1, 9]);
    }

    #[test]
    fn refuses_a_broken_z_y_chain() {
        let mut tu = Vec::new();
        assert!(depacketize([&[0x80 | 0x10, 1][..]], &mut tu).is_err());
        assert!(depacketize([&[0x50, 0x30, 1][..]], &mut tu).is_err());
        assert!(depacketize([&[0x50, 0x30, 1][..], &[0x10, 0x30, 1]], &mut tu).is_err());
        tu.clear();
        depacketize([&[0x50, 0x30, 1][..], &[0x90, 2]], &mut tu).unwrap();
        assert_eq!(tu, [0x12, 0, 0x32, 2, 1, 2]);
    }

    #[test]
    fn continuation_and_upper_spatial_layers_do_not_start_a_temporal_unit() {
        assert!(!parse(&[0x90, 0x30, 1]).unwrap().frame_start);
        // Frame OBU with extension, spatial_id 1.
        assert!(!parse(&[0x10, 0x34, 0x08, 1]).unwrap().frame_start);
        assert!(parse(&[0x10, 0x34, 0x00, 1]).unwrap().frame_start);
        // A tile group alone continues a frame.
        assert!(!parse(&[0x10, 0x20, 1]).unwrap().frame_start);
    }

    #[test]
    fn empty_truncated_and_garbage_payloads_never_panic() {
        assert_eq!(parse(&[]), Err(PayloadError::Empty));
        assert!(matches!(parse(&[0x00]), Err(PayloadError::Truncated(_))));
        assert!(matches!(parse(&[0x00, 5, 1]), Err(PayloadError::Truncated(_))));
        assert!(parse(&[0x00, 0x80]).is_err());
        assert!(parse(&[0x30, 1, 1]).is_err(), "w=3 with one element");
        assert!(parse(&[0x00, 0]).is_err(), "empty element");
        let mut rng = TestRng::new(11);
        for g in rng.garbage(3000, 24) {
            let _ = parse(&g);
            let _ = depacketize([&g[..], &g[..]], &mut Vec::new());
            let _ = Av1Packetizer::new(PacketizerConfig { max_payload: 4, ..Default::default() })
                .packetize(&g, &mut Payloads::default());
        }
    }
}
