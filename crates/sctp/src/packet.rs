//! The SCTP common header (RFC 9260 §3.1) and its CRC32c checksum (Appendix A; the value is
//! stored little-endian, as every implementation does).

use crate::chunk::Chunks;

pub const HEADER: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error("shorter than the common header")]
    Short,
    #[error("bad CRC32c checksum")]
    Checksum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub source_port: u16,
    pub destination_port: u16,
    pub verification_tag: u32,
}

/// A checked packet: header and its chunks.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    pub header: Header,
    body: &'a [u8],
}

impl<'a> Packet<'a> {
    pub fn parse(packet: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if packet.len() < HEADER {
            return Err(PacketError::Short);
        }
        let stated = u32::from_le_bytes([packet[8], packet[9], packet[10], packet[11]]);
        let mut crc = crc32c::crc32c(&packet[..8]);
        crc = crc32c::crc32c_append(crc, &[0; 4]);
        crc = crc32c::crc32c_append(crc, &packet[HEADER..]);
        if crc != stated {
            return Err(PacketError::Checksum);
        }
        Ok(Packet {
            header: Header {
                source_port: u16::from_be_bytes([packet[0], packet[1]]),
                destination_port: u16::from_be_bytes([packet[2], packet[3]]),
                verification_tag: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
            },
            body: &packet[HEADER..],
        })
    }

    pub fn chunks(&self) -> Chunks<'a> {
        Chunks::new(self.body)
    }
}

/// Starts a packet in `out` (cleared): the common header with a zero checksum.
pub fn begin(out: &mut Vec<u8>, header: &Header) {
    out.clear();
    out.extend_from_slice(&header.source_port.to_be_bytes());
    out.extend_from_slice(&header.destination_port.to_be_bytes());
    out.extend_from_slice(&header.verification_tag.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
}

/// Fills in the checksum of the packet in `out`.
pub fn finish(out: &mut [u8]) {
    out[8..12].fill(0);
    let crc = crc32c::crc32c(out);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk;

    #[test]
    fn a_packet_round_trips_and_any_flipped_bit_is_caught() {
        let header = Header { source_port: 5000, destination_port: 5000, verification_tag: 0xDEADBEEF };
        let mut out = Vec::new();
        begin(&mut out, &header);
        chunk::write_simple(&mut out, chunk::COOKIE_ACK, 0, &[]);
        finish(&mut out);
        let p = Packet::parse(&out).unwrap();
        assert_eq!(p.header, header);
        assert_eq!(p.chunks().next().unwrap().unwrap().typ, chunk::COOKIE_ACK);
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Packet::parse(&bad).is_err(), "bit {bit}");
        }
        assert_eq!(Packet::parse(&out[..11]).unwrap_err(), PacketError::Short);
    }

    #[test]
    fn checksum_matches_a_known_value() {
        // RFC 3720 B.4 test vector for CRC32c: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
