//! Matroska Block and SimpleBlock bodies (RFC 9559 §10.1 structure, §10.3 lacing), parsed
//! with bounds checks on every length because they come straight from the file.

#[derive(Debug, PartialEq)]
pub(crate) struct ParsedBlock<'a> {
    pub(crate) track: u64,
    /// Relative to the cluster's timestamp.
    pub(crate) timestamp: i16,
    pub(crate) keyframe: bool,
    pub(crate) frames: Vec<&'a [u8]>,
}

/// An EBML variable-size integer at the start of `data`: (value, length).
fn vint(data: &[u8]) -> Option<(u64, usize)> {
    let first = *data.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut v = u64::from(first & 0xffu8.checked_shr(len as u32).unwrap_or(0));
    for b in data.get(1..len)? {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// RFC 9559 §10.3.3: EBML lacing stores differences as signed vints, biased by half the
/// range of their length.
fn signed_vint(data: &[u8]) -> Option<(i64, usize)> {
    let (v, len) = vint(data)?;
    let bias = (1i64 << (7 * len - 1)) - 1;
    Some((i64::try_from(v).ok()? - bias, len))
}

pub(crate) fn parse(data: &[u8]) -> Result<ParsedBlock<'_>, &'static str> {
    let (track, n) = vint(data).ok_or("bad track number")?;
    let header = data.get(n..n + 3).ok_or("block shorter than its header")?;
    let timestamp = i16::from_be_bytes([header[0], header[1]]);
    let flags = header[2];
    let body = &data[n + 3..];
    let keyframe = flags & 0x80 != 0;
    let frames = match (flags >> 1) & 3 {
        0 => vec![body],
        lacing => laced(body, lacing).ok_or("bad lacing")?,
    };
    Ok(ParsedBlock { track, timestamp, keyframe, frames })
}

fn laced(body: &[u8], lacing: u8) -> Option<Vec<&[u8]>> {
    let count = usize::from(*body.first()?) + 1;
    let mut at = 1;
    let mut sizes = Vec::with_capacity(count);
    match lacing {
        // Xiph: each size is a run of 255s and one byte below 255, summed.
        1 => {
            for _ in 0..count - 1 {
                let mut size = 0usize;
                loop {
                    let b = *body.get(at)?;
                    at += 1;
                    size = size.checked_add(usize::from(b))?;
                    if b != 255 {
                        break;
                    }
                }
                sizes.push(size);
            }
        }
        // Fixed: equal frames.
        2 => {
            let rest = body.len() - 1;
            if rest % count != 0 {
                return None;
            }
            sizes.resize(count - 1, rest / count);
        }
        // EBML: the first size, then differences.
        _ => {
            let (first, n) = vint(body.get(at..)?)?;
            at += n;
            let mut size = usize::try_from(first).ok()?;
            sizes.push(size);
            for _ in 1..count - 1 {
                let (diff, n) = signed_vint(body.get(at..)?)?;
                at += n;
                size = usize::try_from(i64::try_from(size).ok()?.checked_add(diff)?).ok()?;
                sizes.push(size);
            }
            sizes.truncate(count - 1);
        }
    }
    let mut frames = Vec::with_capacity(count);
    for size in sizes {
        let end = at.checked_add(size)?;
        frames.push(body.get(at..end)?);
        at = end;
    }
    frames.push(body.get(at..)?);
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unlaced_block() {
        let b = parse(&[0x81, 0xff, 0xfe, 0x80, 1, 2]).unwrap();
        assert_eq!(b, ParsedBlock { track: 1, timestamp: -2, keyframe: true, frames: vec![&[1u8, 2][..]] });
    }

    #[test]
    fn parses_each_lacing() {
        // Xiph: 3 frames of 300, 2 and 1 bytes.
        let mut xiph = vec![0x82, 0, 0, 0x02, 2, 255, 45, 2];
        xiph.extend(std::iter::repeat_n(7u8, 303));
        let b = parse(&xiph).unwrap();
        assert_eq!(b.track, 2);
        assert_eq!(b.frames.iter().map(|f| f.len()).collect::<Vec<_>>(), [300, 2, 1]);
        // Fixed: 2 frames of 2 bytes.
        let b = parse(&[0x81, 0, 0, 0x04, 1, 1, 2, 3, 4]).unwrap();
        assert_eq!(b.frames, [&[1u8, 2][..], &[3, 4]]);
        // EBML: sizes 3, then 3 - 1 = 2 (0xbe is -1 in a 1-byte signed vint), rest 1.
        let b = parse(&[0x81, 0, 0, 0x06, 2, 0x83, 0xbe, 1, 1, 1, 2, 2, 3]).unwrap();
        assert_eq!(b.frames, [&[1u8, 1, 1][..], &[2, 2], &[3]]);
    }

    #[test]
    fn rejects_short_and_overlong_blocks() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x81, 0]).is_err());
        assert!(parse(&[0x81, 0, 0, 0x02]).is_err()); // laced without a count
        assert!(parse(&[0x81, 0, 0, 0x02, 1, 200, 1]).is_err()); // Xiph size past the end
        assert!(parse(&[0x81, 0, 0, 0x04, 1, 1, 2, 3]).is_err()); // fixed, uneven
        assert!(parse(&[0x81, 0, 0, 0x06, 2, 0x81, 0x80, 1]).is_err()); // EBML size below 0
    }
}
