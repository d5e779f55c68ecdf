//! SCTP chunks (RFC 9260 §3.3, RFC 3758 FORWARD TSN, RFC 6525 RE-CONFIG): checked zero-copy
//! views for parsing and plain functions for writing. Every length is checked before it is
//! used; nothing here can panic on input.

use std::fmt;

pub const DATA: u8 = 0;
pub const INIT: u8 = 1;
pub const INIT_ACK: u8 = 2;
pub const SACK: u8 = 3;
pub const HEARTBEAT: u8 = 4;
pub const HEARTBEAT_ACK: u8 = 5;
pub const ABORT: u8 = 6;
pub const SHUTDOWN: u8 = 7;
pub const SHUTDOWN_ACK: u8 = 8;
pub const ERROR: u8 = 9;
pub const COOKIE_ECHO: u8 = 10;
pub const COOKIE_ACK: u8 = 11;
pub const SHUTDOWN_COMPLETE: u8 = 14;
pub const RECONFIG: u8 = 130;
pub const FORWARD_TSN: u8 = 192;

/// INIT / INIT ACK parameters.
pub const PARAM_STATE_COOKIE: u16 = 7;
pub const PARAM_UNRECOGNIZED: u16 = 8;
pub const PARAM_SUPPORTED_EXTENSIONS: u16 = 0x8008;
pub const PARAM_FORWARD_TSN_SUPPORTED: u16 = 0xC000;
/// RE-CONFIG parameters (RFC 6525 §4).
pub const PARAM_OUTGOING_RESET: u16 = 13;
pub const PARAM_RECONFIG_RESPONSE: u16 = 16;
pub const PARAM_ADD_OUTGOING_STREAMS: u16 = 17;

/// DATA chunk flags.
pub const FLAG_END: u8 = 0x01;
pub const FLAG_BEGIN: u8 = 0x02;
pub const FLAG_UNORDERED: u8 = 0x04;
pub const FLAG_IMMEDIATE: u8 = 0x08;

/// Bytes of a DATA chunk before its payload.
pub const DATA_HEADER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("chunk shorter than its header or its stated length")]
    Truncated,
    #[error("chunk of type {0} is malformed")]
    Malformed(u8),
}

/// One chunk as it arrived: type, flags and value (without the 4-byte header and padding).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawChunk<'a> {
    pub typ: u8,
    pub flags: u8,
    pub value: &'a [u8],
}

impl fmt::Debug for RawChunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawChunk {{ typ: {}, flags: {:#x}, len: {} }}", self.typ, self.flags, self.value.len())
    }
}

/// The chunks of a packet's body, in order. Stops (with an error) at the first malformed
/// header; a missing last padding is accepted.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Chunks<'a> {
    pub fn new(body: &'a [u8]) -> Chunks<'a> {
        Chunks { rest: body }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<RawChunk<'a>, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(header) = self.rest.get(..4) else {
            self.rest = &[];
            return Some(Err(ChunkError::Truncated));
        };
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let Some(value) = self.rest.get(4..length).filter(|_| length >= 4) else {
            self.rest = &[];
            return Some(Err(ChunkError::Truncated));
        };
        let padded = (length + 3) & !3;
        self.rest = self.rest.get(padded..).unwrap_or(&[]);
        Some(Ok(RawChunk { typ: header[0], flags: header[1], value }))
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A DATA chunk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub flags: u8,
    pub tsn: u32,
    pub stream: u16,
    pub ssn: u16,
    pub ppid: u32,
    pub payload: &'a [u8],
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Data {{ tsn: {}, stream: {}, ssn: {}, ppid: {}, flags: {:#x}, len: {} }}",
            self.tsn,
            self.stream,
            self.ssn,
            self.ppid,
            self.flags,
            self.payload.len()
        )
    }
}

impl<'a> Data<'a> {
    pub fn parse(raw: RawChunk<'a>) -> Result<Data<'a>, ChunkError> {
        let v = raw.value;
        // §3.3.1: a DATA chunk with no user data is a protocol violation.
        if v.len() <= 12 {
            return Err(ChunkError::Malformed(DATA));
        }
        Ok(Data {
            flags: raw.flags,
            tsn: u32_at(v, 0),
            stream: u16_at(v, 4),
            ssn: u16_at(v, 6),
            ppid: u32_at(v, 8),
            payload: &v[12..],
        })
    }

    pub fn begin(&self) -> bool {
        self.flags & FLAG_BEGIN != 0
    }

    pub fn end(&self) -> bool {
        self.flags & FLAG_END != 0
    }

    pub fn unordered(&self) -> bool {
        self.flags & FLAG_UNORDERED != 0
    }
}

/// An INIT or INIT ACK chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init<'a> {
    pub tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    pub params: &'a [u8],
}

impl<'a> Init<'a> {
    pub fn parse(raw: RawChunk<'a>) -> Result<Init<'a>, ChunkError> {
        let v = raw.value;
        if v.len() < 16 {
            return Err(ChunkError::Malformed(raw.typ));
        }
        let init = Init {
            tag: u32_at(v, 0),
            a_rwnd: u32_at(v, 4),
            outbound_streams: u16_at(v, 8),
            inbound_streams: u16_at(v, 10),
            initial_tsn: u32_at(v, 12),
            params: &v[16..],
        };
        // §3.3.2: a zero tag or no streams is invalid.
        if init.tag == 0 || init.outbound_streams == 0 || init.inbound_streams == 0 {
            return Err(ChunkError::Malformed(raw.typ));
        }
        Ok(init)
    }

    /// The parameters (type, value) that parse; a malformed tail ends the list.
    pub fn params(&self) -> Params<'a> {
        Params { rest: self.params }
    }

    pub fn param(&self, typ: u16) -> Option<&'a [u8]> {
        self.params().find(|(t, _)| *t == typ).map(|(_, v)| v)
    }

    /// Whether the peer does PR-SCTP (RFC 3758 §3.3.1: the Forward-TSN-Supported
    /// parameter, or FORWARD TSN among its supported extensions).
    pub fn forward_tsn(&self) -> bool {
        self.param(PARAM_FORWARD_TSN_SUPPORTED).is_some() || self.supports_chunk(FORWARD_TSN)
    }

    /// Whether `chunk` is listed in the Supported Extensions parameter (RFC 5061 §4.2.7).
    pub fn supports_chunk(&self, chunk: u8) -> bool {
        self.param(PARAM_SUPPORTED_EXTENSIONS).is_some_and(|list| list.contains(&chunk))
    }
}

/// TLV parameters (INIT, RE-CONFIG, HEARTBEAT, error causes share the layout).
#[derive(Debug, Clone)]
pub struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    pub fn new(bytes: &'a [u8]) -> Params<'a> {
        Params { rest: bytes }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let header = self.rest.get(..4)?;
        let (typ, length) = (u16_at(header, 0), usize::from(u16_at(header, 2)));
        let value = self.rest.get(4..length).filter(|_| length >= 4);
        let Some(value) = value else {
            self.rest = &[];
            return None;
        };
        self.rest = self.rest.get((length + 3) & !3..).unwrap_or(&[]);
        Some((typ, value))
    }
}

/// A SACK chunk (§3.3.4): gap blocks are offsets from the cumulative TSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack<'a> {
    pub cumulative_tsn: u32,
    pub a_rwnd: u32,
    gaps: &'a [u8],
    dups: &'a [u8],
}

impl<'a> Sack<'a> {
    pub fn parse(raw: RawChunk<'a>) -> Result<Sack<'a>, ChunkError> {
        let v = raw.value;
        if v.len() < 12 {
            return Err(ChunkError::Malformed(SACK));
        }
        let (gaps, dups) = (usize::from(u16_at(v, 8)), usize::from(u16_at(v, 10)));
        let gap_end = 12 + gaps * 4;
        let dup_end = gap_end + dups * 4;
        if v.len() < dup_end {
            return Err(ChunkError::Malformed(SACK));
        }
        Ok(Sack {
            cumulative_tsn: u32_at(v, 0),
            a_rwnd: u32_at(v, 4),
            gaps: &v[12..gap_end],
            dups: &v[gap_end..dup_end],
        })
    }

    /// Gap ack blocks as (start, end) offsets from the cumulative TSN, inclusive.
    pub fn gaps(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.gaps.chunks_exact(4).map(|g| (u16_at(g, 0), u16_at(g, 2)))
    }

    pub fn duplicates(&self) -> impl Iterator<Item = u32> + 'a {
        self.dups.chunks_exact(4).map(|d| u32_at(d, 0))
    }
}

/// A FORWARD TSN chunk (RFC 3758 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardTsn<'a> {
    pub new_cumulative_tsn: u32,
    streams: &'a [u8],
}

impl<'a> ForwardTsn<'a> {
    pub fn parse(raw: RawChunk<'a>) -> Result<ForwardTsn<'a>, ChunkError> {
        let v = raw.value;
        if v.len() < 4 || (v.len() - 4) % 4 != 0 {
            return Err(ChunkError::Malformed(FORWARD_TSN));
        }
        Ok(ForwardTsn { new_cumulative_tsn: u32_at(v, 0), streams: &v[4..] })
    }

    /// (stream, last skipped SSN) of ordered streams.
    pub fn streams(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.streams.chunks_exact(4).map(|s| (u16_at(s, 0), u16_at(s, 2)))
    }
}

/// An Outgoing SSN Reset Request parameter (RFC 6525 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingReset {
    pub request_seq: u32,
    pub response_seq: u32,
    pub last_tsn: u32,
    pub streams: Vec<u16>,
}

impl OutgoingReset {
    pub fn parse(value: &[u8]) -> Option<OutgoingReset> {
        if value.len() < 12 || (value.len() - 12) % 2 != 0 {
            return None;
        }
        Some(OutgoingReset {
            request_seq: u32_at(value, 0),
            response_seq: u32_at(value, 4),
            last_tsn: u32_at(value, 8),
            streams: value[12..].chunks_exact(2).map(|s| u16_at(s, 0)).collect(),
        })
    }
}

/// RFC 6525 §4.4 results.
pub const RESET_NOTHING: u32 = 0;
pub const RESET_PERFORMED: u32 = 1;
pub const RESET_BAD_SEQUENCE: u32 = 5;
pub const RESET_DENIED: u32 = 2;
pub const RESET_IN_PROGRESS: u32 = 6;

// ----------------------------------------------------------------------------------------
// Writing. Each function appends one chunk (padded to 4 bytes) to `out`.

/// Appends a chunk header, lets `value` write the value, then fixes the length and pads.
pub fn write_chunk(out: &mut Vec<u8>, typ: u8, flags: u8, value: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[typ, flags, 0, 0]);
    value(out);
    let length = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&length.to_be_bytes());
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Appends a TLV parameter.
pub fn write_param(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The size a DATA chunk with `payload` bytes takes, padding included.
pub fn data_size(payload: usize) -> usize {
    (DATA_HEADER + payload + 3) & !3
}

pub fn write_data(out: &mut Vec<u8>, d: &Data<'_>) {
    write_chunk(out, DATA, d.flags, |out| {
        out.extend_from_slice(&d.tsn.to_be_bytes());
        out.extend_from_slice(&d.stream.to_be_bytes());
        out.extend_from_slice(&d.ssn.to_be_bytes());
        out.extend_from_slice(&d.ppid.to_be_bytes());
        out.extend_from_slice(d.payload);
    });
}

/// INIT or INIT ACK with the parameters already encoded in `params`.
pub fn write_init(out: &mut Vec<u8>, typ: u8, init: &Init<'_>) {
    write_chunk(out, typ, 0, |out| {
        out.extend_from_slice(&init.tag.to_be_bytes());
        out.extend_from_slice(&init.a_rwnd.to_be_bytes());
        out.extend_from_slice(&init.outbound_streams.to_be_bytes());
        out.extend_from_slice(&init.inbound_streams.to_be_bytes());
        out.extend_from_slice(&init.initial_tsn.to_be_bytes());
        out.extend_from_slice(init.params);
    });
}

/// A SACK with gap blocks (offsets from `cumulative_tsn`) and duplicate TSNs.
pub fn write_sack(out: &mut Vec<u8>, cumulative_tsn: u32, a_rwnd: u32, gaps: &[(u16, u16)], dups: &[u32]) {
    write_chunk(out, SACK, 0, |out| {
        out.extend_from_slice(&cumulative_tsn.to_be_bytes());
        out.extend_from_slice(&a_rwnd.to_be_bytes());
        out.extend_from_slice(&(gaps.len() as u16).to_be_bytes());
        out.extend_from_slice(&(dups.len() as u16).to_be_bytes());
        for (start, end) in gaps {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&end.to_be_bytes());
        }
        for d in dups {
            out.extend_from_slice(&d.to_be_bytes());
        }
    });
}

pub fn write_forward_tsn(out: &mut Vec<u8>, new_cumulative_tsn: u32, streams: &[(u16, u16)]) {
    write_chunk(out, FORWARD_TSN, 0, |out| {
        out.extend_from_slice(&new_cumulative_tsn.to_be_bytes());
        for (stream, ssn) in streams {
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&ssn.to_be_bytes());
        }
    });
}

/// A RE-CONFIG chunk with one Outgoing SSN Reset Request.
pub fn write_outgoing_reset(out: &mut Vec<u8>, reset: &OutgoingReset) {
    write_chunk(out, RECONFIG, 0, |out| {
        let mut value = Vec::with_capacity(12 + 2 * reset.streams.len());
        value.extend_from_slice(&reset.request_seq.to_be_bytes());
        value.extend_from_slice(&reset.response_seq.to_be_bytes());
        value.extend_from_slice(&reset.last_tsn.to_be_bytes());
        for s in &reset.streams {
            value.extend_from_slice(&s.to_be_bytes());
        }
        write_param(out, PARAM_OUTGOING_RESET, &value);
    });
}

/// A RE-CONFIG chunk with one Re-configuration Response.
pub fn write_reconfig_response(out: &mut Vec<u8>, response_seq: u32, result: u32) {
    write_chunk(out, RECONFIG, 0, |out| {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&response_seq.to_be_bytes());
        value[4..].copy_from_slice(&result.to_be_bytes());
        write_param(out, PARAM_RECONFIG_RESPONSE, &value);
    });
}

/// A chunk whose value is a single TLV parameter or opaque bytes (HEARTBEAT info,
/// COOKIE ECHO, error causes).
pub fn write_simple(out: &mut Vec<u8>, typ: u8, flags: u8, value: &[u8]) {
    write_chunk(out, typ, flags, |out| out.extend_from_slice(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> RawChunk<'_> {
        let mut it = Chunks::new(bytes);
        let c = it.next().unwrap().unwrap();
        assert!(it.next().is_none());
        c
    }

    #[test]
    fn data_round_trips_with_padding() {
        let d = Data { flags: FLAG_BEGIN | FLAG_END, tsn: 7, stream: 3, ssn: 9, ppid: 51, payload: b"hello" };
        let mut out = Vec::new();
        write_data(&mut out, &d);
        assert_eq!(out.len(), data_size(5));
        assert_eq!(out.len() % 4, 0);
        assert_eq!(Data::parse(one(&out)).unwrap(), d);
    }

    #[test]
    fn sack_round_trips() {
        let mut out = Vec::new();
        write_sack(&mut out, 100, 65536, &[(2, 3), (5, 9)], &[98, 99]);
        let s = Sack::parse(one(&out)).unwrap();
        assert_eq!((s.cumulative_tsn, s.a_rwnd), (100, 65536));
        assert_eq!(s.gaps().collect::<Vec<_>>(), [(2, 3), (5, 9)]);
        assert_eq!(s.duplicates().collect::<Vec<_>>(), [98, 99]);
    }

    #[test]
    fn init_params_are_found() {
        let mut params = Vec::new();
        write_param(&mut params, PARAM_SUPPORTED_EXTENSIONS, &[RECONFIG, FORWARD_TSN]);
        write_param(&mut params, PARAM_STATE_COOKIE, b"cookie!");
        let init = Init {
            tag: 1,
            a_rwnd: 2,
            outbound_streams: 3,
            inbound_streams: 4,
            initial_tsn: 5,
            params: &params,
        };
        let mut out = Vec::new();
        write_init(&mut out, INIT_ACK, &init);
        let raw = one(&out);
        assert_eq!(raw.typ, INIT_ACK);
        let parsed = Init::parse(raw).unwrap();
        assert_eq!(parsed, init);
        assert!(parsed.forward_tsn() && parsed.supports_chunk(RECONFIG));
        assert_eq!(parsed.param(PARAM_STATE_COOKIE), Some(&b"cookie!"[..]));
    }

    #[test]
    fn reconfig_and_forward_tsn_round_trip() {
        let reset = OutgoingReset { request_seq: 1, response_seq: 2, last_tsn: 3, streams: vec![4, 6] };
        let mut out = Vec::new();
        write_outgoing_reset(&mut out, &reset);
        let raw = one(&out);
        let (typ, value) = Params::new(raw.value).next().unwrap();
        assert_eq!((raw.typ, typ), (RECONFIG, PARAM_OUTGOING_RESET));
        assert_eq!(OutgoingReset::parse(value), Some(reset));
        out.clear();
        write_forward_tsn(&mut out, 77, &[(1, 2), (3, 4)]);
        let f = ForwardTsn::parse(one(&out)).unwrap();
        assert_eq!(f.new_cumulative_tsn, 77);
        assert_eq!(f.streams().collect::<Vec<_>>(), [(1, 2), (3, 4)]);
    }

    #[test]
    fn truncated_and_garbage_chunks_are_errors() {
        let mut out = Vec::new();
        write_sack(&mut out, 1, 2, &[(1, 1)], &[5]);
        for n in 1..out.len() {
            for raw in Chunks::new(&out[..n]).flatten() {
                let _ = Sack::parse(raw);
            }
        }
        assert_eq!(Chunks::new(&[0, 0, 0, 2]).next(), Some(Err(ChunkError::Truncated)));
        assert_eq!(Chunks::new(&[0, 0]).next(), Some(Err(ChunkError::Truncated)));
        // A DATA chunk without user data, an INIT with a zero tag.
        let empty = RawChunk { typ: DATA, flags: 3, value: &[0; 12] };
        assert_eq!(Data::parse(empty), Err(ChunkError::Malformed(DATA)));
        let zero = RawChunk { typ: INIT, flags: 0, value: &[0; 16] };
        assert!(Init::parse(zero).is_err());
        // Sack claiming more gap blocks than it has.
        let lying = RawChunk { typ: SACK, flags: 0, value: &[0, 0, 0, 1, 0, 0, 0, 1, 0, 9, 0, 0] };
        assert!(Sack::parse(lying).is_err());
    }
}
