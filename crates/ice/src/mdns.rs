//! Multicast DNS (RFC 6762) just far enough to resolve the `*.local` host candidates browsers
//! send instead of their addresses (draft-ietf-mmusic-mdns-ice-candidates): a one-question
//! query for A and AAAA, and the addresses in a response. Sans-IO; the driver sends the query
//! to 224.0.0.251:5353 (or `[ff02::fb]:5353`) from a socket in the group and hands every
//! datagram that comes back to [`parse_response`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where queries go (RFC 6762 §3).
pub const MDNS_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)), 5353);
pub const MDNS_V6: SocketAddr =
    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb)), 5353);

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// The cache-flush bit of a record's class (RFC 6762 §10.2).
const CLASS_MASK: u16 = 0x7fff;
/// Compression pointers followed before a name is refused (loops, deep chains).
const MAX_JUMPS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    #[error("not a .local name of valid DNS labels")]
    BadName,
    #[error("truncated or malformed DNS message")]
    Malformed,
    #[error("not a response")]
    NotResponse,
}

/// True for a name an ICE candidate may carry instead of an address: `<label>.local`.
pub fn is_mdns_name(name: &str) -> bool {
    labels(name).is_some()
}

fn labels(name: &str) -> Option<Vec<&str>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let valid = labels.len() >= 2
        && labels.last().is_some_and(|l| l.eq_ignore_ascii_case("local"))
        && labels.iter().all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic()));
    valid.then_some(labels)
}

/// Writes a query for `name`'s A and AAAA records into `out` (id 0, multicast answers,
/// RFC 6762 §18).
pub fn write_query(name: &str, out: &mut Vec<u8>) -> Result<(), MdnsError> {
    let labels = labels(name).ok_or(MdnsError::BadName)?;
    out.clear();
    // Header: id 0, flags 0 (standard query), two questions.
    out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
    let name_at = out.len();
    for label in &labels {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&TYPE_A.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    // The second question points at the first one's name.
    out.extend_from_slice(&(0xC000 | name_at as u16).to_be_bytes());
    out.extend_from_slice(&TYPE_AAAA.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(())
}

/// The addresses a response gives for `name` (answers and additional records, A and AAAA,
/// in order). Anything else in it is skipped; a malformed message is an error.
pub fn parse_response(packet: &[u8], name: &str) -> Result<Vec<IpAddr>, MdnsError> {
    let wanted = labels(name).ok_or(MdnsError::BadName)?;
    let header = packet.get(..12).ok_or(MdnsError::Malformed)?;
    if header[2] & 0x80 == 0 {
        return Err(MdnsError::NotResponse);
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (questions, records) = (count(4), count(6) + count(8) + count(10));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(packet, at)?;
        at = at.checked_add(4).filter(|&a| a <= packet.len()).ok_or(MdnsError::Malformed)?;
    }
    let mut found = Vec::new();
    for _ in 0..records {
        let (owner, next) = read_name(packet, at)?;
        let fixed = packet.get(next..next + 10).ok_or(MdnsError::Malformed)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]) & CLASS_MASK;
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = packet.get(next + 10..next + 10 + length).ok_or(MdnsError::Malformed)?;
        at = next + 10 + length;
        let same = owner.len() == wanted.len()
            && owner.iter().zip(&wanted).all(|(a, b)| a.eq_ignore_ascii_case(b.as_bytes()));
        if !same || class != CLASS_IN {
            continue;
        }
        match (kind, data.len()) {
            (TYPE_A, 4) => found.push(IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes"))),
            (TYPE_AAAA, 16) => found.push(IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes"))),
            _ => {}
        }
    }
    Ok(found)
}

fn skip_name(packet: &[u8], at: usize) -> Result<usize, MdnsError> {
    read_name(packet, at).map(|(_, next)| next)
}

/// The labels of the (possibly compressed) name at `at`, and where the record goes on.
fn read_name(packet: &[u8], mut at: usize) -> Result<(Vec<&[u8]>, usize), MdnsError> {
    let mut labels = Vec::new();
    let mut resume = None;
    let mut jumps = 0;
    let mut total = 0;
    loop {
        let len = *packet.get(at).ok_or(MdnsError::Malformed)?;
        match len {
            0 => return Ok((labels, resume.unwrap_or(at + 1))),
            1..=63 => {
                let label = packet.get(at + 1..at + 1 + usize::from(len)).ok_or(MdnsError::Malformed)?;
                total += label.len() + 1;
                if total > 255 {
                    return Err(MdnsError::Malformed);
                }
                labels.push(label);
                at += 1 + usize::from(len);
            }
            0xC0..=0xFF => {
                let low = *packet.get(at + 1).ok_or(MdnsError::Malformed)?;
                jumps += 1;
                if jumps > MAX_JUMPS {
                    return Err(MdnsError::Malformed);
                }
                resume.get_or_insert(at + 2);
                at = usize::from(u16::from_be_bytes([len & 0x3F, low]));
            }
            _ => return Err(MdnsError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as a responder writes it: the question echoed, an A answer with the
    /// cache-flush bit, then an AAAA record whose name is a pointer to the answer's.
    fn response(name: &str) -> Vec<u8> {
        let mut query = Vec::new();
        write_query(name, &mut query).unwrap();
        let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        let name_at = p.len();
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&[0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4, 203, 0, 113, 10]);
        p.extend_from_slice(&(0xC000 | name_at as u16).to_be_bytes());
        p.extend_from_slice(&[0, 28, 0x80, 1, 0, 0, 0, 120, 0, 16]);
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p
    }

    const NAME: &str = "0c2dd5a4-1234-4cde-9abc-0123456789ab.local";

    #[test]
    fn a_query_asks_for_a_and_aaaa_of_the_name() {
        let mut out = Vec::new();
        write_query(NAME, &mut out).unwrap();
        assert_eq!(&out[..12], &[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
        let (labels, next) = read_name(&out, 12).unwrap();
        assert_eq!(labels, [&NAME.as_bytes()[..36], b"local"]);
        assert_eq!(&out[next..next + 4], &[0, 1, 0, 1]);
        let (again, next) = read_name(&out, next + 4).unwrap();
        assert_eq!(again, labels);
        assert_eq!(&out[next..], &[0, 28, 0, 1]);
    }

    #[test]
    fn a_response_gives_its_addresses_for_that_name_only() {
        let p = response(NAME);
        let expected: Vec<IpAddr> = vec!["203.0.113.10".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(parse_response(&p, NAME).unwrap(), expected);
        assert_eq!(parse_response(&p, &NAME.to_uppercase().replace("LOCAL", "local")).unwrap(), expected);
        assert!(parse_response(&p, "other.local").unwrap().is_empty());
    }

    #[test]
    fn names_must_be_local() {
        for bad in ["", "local", "example.com", ".local", "a..local", "bad name.local"] {
            assert!(!is_mdns_name(bad), "{bad:?}");
            assert_eq!(write_query(bad, &mut Vec::new()), Err(MdnsError::BadName));
        }
        assert!(is_mdns_name("host.local") && is_mdns_name("host.local."));
    }

    #[test]
    fn empty_truncated_and_garbage_input_are_errors_not_panics() {
        assert_eq!(parse_response(&[], NAME), Err(MdnsError::Malformed));
        let p = response(NAME);
        for n in 0..p.len() {
            // Every cut is an error (or, past the first record, fewer addresses).
            match parse_response(&p[..n], NAME) {
                Err(_) => {}
                Ok(found) => assert!(found.len() < 2, "cut at {n}: {found:?}"),
            }
        }
        let mut query = Vec::new();
        write_query(NAME, &mut query).unwrap();
        assert_eq!(parse_response(&query, NAME), Err(MdnsError::NotResponse));
        // A pointer to itself.
        let looped = [0, 0, 0x84, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12];
        assert_eq!(parse_response(&looped, NAME), Err(MdnsError::Malformed));
        for seed in 0..2000u32 {
            let junk: Vec<u8> =
                (0..(seed % 97)).map(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8).collect();
            let _ = parse_response(&junk, NAME);
        }
    }
}
