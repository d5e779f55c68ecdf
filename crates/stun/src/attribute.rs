//! Attribute types and typed values: STUN (RFC 8489), TURN (RFC 8656, RFC 6062, RFC 6156)
//! and ICE (RFC 8445).

use crate::message::{TransactionId, MAGIC_COOKIE};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An attribute type number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttributeType(pub u16);

macro_rules! attribute_types {
    ($($(#[$doc:meta])* $name:ident = $value:expr, $text:expr;)*) => {
        impl AttributeType {
            $($(#[$doc])* pub const $name: AttributeType = AttributeType($value);)*

            /// Every attribute type this codec knows.
            pub const KNOWN: &'static [AttributeType] = &[$(AttributeType::$name),*];

            /// The RFC's name of a known type.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(AttributeType::$name => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

attribute_types! {
    /// RFC 8489 §14.1.
    MAPPED_ADDRESS = 0x0001, "MAPPED-ADDRESS";
    USERNAME = 0x0006, "USERNAME";
    MESSAGE_INTEGRITY = 0x0008, "MESSAGE-INTEGRITY";
    ERROR_CODE = 0x0009, "ERROR-CODE";
    UNKNOWN_ATTRIBUTES = 0x000A, "UNKNOWN-ATTRIBUTES";
    /// RFC 8656 §18.1.
    CHANNEL_NUMBER = 0x000C, "CHANNEL-NUMBER";
    LIFETIME = 0x000D, "LIFETIME";
    XOR_PEER_ADDRESS = 0x0012, "XOR-PEER-ADDRESS";
    DATA = 0x0013, "DATA";
    REALM = 0x0014, "REALM";
    NONCE = 0x0015, "NONCE";
    XOR_RELAYED_ADDRESS = 0x0016, "XOR-RELAYED-ADDRESS";
    /// RFC 8656 §18.8 (from RFC 6156).
    REQUESTED_ADDRESS_FAMILY = 0x0017, "REQUESTED-ADDRESS-FAMILY";
    EVEN_PORT = 0x0018, "EVEN-PORT";
    REQUESTED_TRANSPORT = 0x0019, "REQUESTED-TRANSPORT";
    DONT_FRAGMENT = 0x001A, "DONT-FRAGMENT";
    MESSAGE_INTEGRITY_SHA256 = 0x001C, "MESSAGE-INTEGRITY-SHA256";
    PASSWORD_ALGORITHM = 0x001D, "PASSWORD-ALGORITHM";
    USERHASH = 0x001E, "USERHASH";
    XOR_MAPPED_ADDRESS = 0x0020, "XOR-MAPPED-ADDRESS";
    RESERVATION_TOKEN = 0x0022, "RESERVATION-TOKEN";
    /// RFC 8445 §16.1.
    PRIORITY = 0x0024, "PRIORITY";
    USE_CANDIDATE = 0x0025, "USE-CANDIDATE";
    /// RFC 6062 §6.2.1.
    CONNECTION_ID = 0x002A, "CONNECTION-ID";
    ADDITIONAL_ADDRESS_FAMILY = 0x8000, "ADDITIONAL-ADDRESS-FAMILY";
    ADDRESS_ERROR_CODE = 0x8001, "ADDRESS-ERROR-CODE";
    PASSWORD_ALGORITHMS = 0x8002, "PASSWORD-ALGORITHMS";
    ALTERNATE_DOMAIN = 0x8003, "ALTERNATE-DOMAIN";
    ICMP = 0x8004, "ICMP";
    SOFTWARE = 0x8022, "SOFTWARE";
    ALTERNATE_SERVER = 0x8023, "ALTERNATE-SERVER";
    FINGERPRINT = 0x8028, "FINGERPRINT";
    ICE_CONTROLLED = 0x8029, "ICE-CONTROLLED";
    ICE_CONTROLLING = 0x802A, "ICE-CONTROLLING";
}

impl AttributeType {
    /// RFC 8489 §14: types 0x0000–0x7FFF must be understood by the receiver.
    pub fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "AttributeType({:#06x})", self.0),
        }
    }
}

/// Why an attribute's value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    #[error("{typ:?}: value of {len} bytes has the wrong length")]
    BadLength { typ: AttributeType, len: usize },
    #[error("{typ:?}: unknown address family {family:#04x}")]
    BadFamily { typ: AttributeType, family: u8 },
    #[error("{typ:?}: value is not utf-8")]
    NotUtf8 { typ: AttributeType },
    #[error("{typ:?}: {len} bytes is longer than the {max} allowed")]
    TooLong { typ: AttributeType, len: usize, max: usize },
    #[error("error code class {class} number {number} is out of range")]
    BadErrorCode { class: u8, number: u8 },
}

/// RFC 8489 §14.8, RFC 8656 §18.13: a 3-digit error code and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl ErrorCode<'static> {
    pub const TRY_ALTERNATE: ErrorCode<'static> = ErrorCode { code: 300, reason: "Try Alternate" };
    pub const BAD_REQUEST: ErrorCode<'static> = ErrorCode { code: 400, reason: "Bad Request" };
    pub const UNAUTHENTICATED: ErrorCode<'static> = ErrorCode { code: 401, reason: "Unauthenticated" };
    pub const FORBIDDEN: ErrorCode<'static> = ErrorCode { code: 403, reason: "Forbidden" };
    pub const UNKNOWN_ATTRIBUTE: ErrorCode<'static> = ErrorCode { code: 420, reason: "Unknown Attribute" };
    pub const ALLOCATION_MISMATCH: ErrorCode<'static> =
        ErrorCode { code: 437, reason: "Allocation Mismatch" };
    pub const STALE_NONCE: ErrorCode<'static> = ErrorCode { code: 438, reason: "Stale Nonce" };
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: ErrorCode<'static> =
        ErrorCode { code: 440, reason: "Address Family not Supported" };
    pub const WRONG_CREDENTIALS: ErrorCode<'static> = ErrorCode { code: 441, reason: "Wrong Credentials" };
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: ErrorCode<'static> =
        ErrorCode { code: 442, reason: "Unsupported Transport Protocol" };
    pub const PEER_ADDRESS_FAMILY_MISMATCH: ErrorCode<'static> =
        ErrorCode { code: 443, reason: "Peer Address Family Mismatch" };
    pub const CONNECTION_ALREADY_EXISTS: ErrorCode<'static> =
        ErrorCode { code: 446, reason: "Connection Already Exists" };
    pub const CONNECTION_TIMEOUT_OR_FAILURE: ErrorCode<'static> =
        ErrorCode { code: 447, reason: "Connection Timeout or Failure" };
    pub const ALLOCATION_QUOTA_REACHED: ErrorCode<'static> =
        ErrorCode { code: 486, reason: "Allocation Quota Reached" };
    pub const ROLE_CONFLICT: ErrorCode<'static> = ErrorCode { code: 487, reason: "Role Conflict" };
    pub const SERVER_ERROR: ErrorCode<'static> = ErrorCode { code: 500, reason: "Server Error" };
    pub const INSUFFICIENT_CAPACITY: ErrorCode<'static> =
        ErrorCode { code: 508, reason: "Insufficient Capacity" };
}

/// Address family as TURN's family attributes and address attributes number it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    pub fn code(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }

    fn from_code(typ: AttributeType, family: u8) -> Result<AddressFamily, AttributeError> {
        match family {
            0x01 => Ok(AddressFamily::V4),
            0x02 => Ok(AddressFamily::V6),
            _ => Err(AttributeError::BadFamily { typ, family }),
        }
    }

    pub fn of(addr: &SocketAddr) -> AddressFamily {
        match addr {
            SocketAddr::V4(_) => AddressFamily::V4,
            SocketAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// A list of 16-bit attribute types (UNKNOWN-ATTRIBUTES), borrowed from the wire or from the
/// caller.
#[derive(Clone, Copy)]
pub enum TypeList<'a> {
    Wire(&'a [u8]),
    Values(&'a [AttributeType]),
}

impl<'a> TypeList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = AttributeType> + 'a {
        let (wire, values): (&'a [u8], &'a [AttributeType]) = match *self {
            TypeList::Wire(bytes) => (bytes, &[]),
            TypeList::Values(values) => (&[], values),
        };
        wire.chunks_exact(2)
            .map(|c| AttributeType(u16::from_be_bytes([c[0], c[1]])))
            .chain(values.iter().copied())
    }

    fn wire_len(&self) -> usize {
        match self {
            TypeList::Wire(bytes) => bytes.len(),
            TypeList::Values(values) => values.len() * 2,
        }
    }
}

impl PartialEq for TypeList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for TypeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// RFC 8489 §14.11/§14.12: a password algorithm number with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmEntry<'a> {
    pub algorithm: u16,
    pub parameters: &'a [u8],
}

/// The entries of PASSWORD-ALGORITHMS, borrowed from the wire or from the caller.
#[derive(Clone, Copy)]
pub enum AlgorithmList<'a> {
    Wire(&'a [u8]),
    Values(&'a [AlgorithmEntry<'a>]),
}

impl<'a> AlgorithmList<'a> {
    pub fn iter(&self) -> impl Iterator<Item = AlgorithmEntry<'a>> + 'a {
        let (mut wire, values): (&'a [u8], &'a [AlgorithmEntry<'a>]) = match *self {
            AlgorithmList::Wire(bytes) => (bytes, &[]),
            AlgorithmList::Values(values) => (&[], values),
        };
        std::iter::from_fn(move || {
            // Validated by `decode`; a short tail simply ends the list.
            let (entry, rest) = split_algorithm(wire)?;
            wire = rest;
            Some(entry)
        })
        .chain(values.iter().copied())
    }

    fn wire_len(&self) -> usize {
        self.iter().map(|e| 4 + padded(e.parameters.len())).sum()
    }
}

impl PartialEq for AlgorithmList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for AlgorithmList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn split_algorithm(wire: &[u8]) -> Option<(AlgorithmEntry<'_>, &[u8])> {
    let head = wire.get(..4)?;
    let algorithm = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let parameters = wire.get(4..4 + len)?;
    let rest = wire.get(4 + padded(len)..).unwrap_or(&[]);
    Some((AlgorithmEntry { algorithm, parameters }, rest))
}

pub(crate) fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A typed attribute value. Borrowed values point into the message or the caller's data.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    AlternateServer(SocketAddr),
    Username(&'a str),
    Realm(&'a str),
    Nonce(&'a str),
    Software(&'a str),
    AlternateDomain(&'a str),
    /// The 20-byte HMAC as received; a writer computes it with `message_integrity`.
    MessageIntegrity(&'a [u8]),
    /// 16 to 32 bytes as received; a writer computes it with `message_integrity_sha256`.
    MessageIntegritySha256(&'a [u8]),
    /// As received; a writer computes it with `fingerprint`.
    Fingerprint(u32),
    ErrorCode(ErrorCode<'a>),
    UnknownAttributes(TypeList<'a>),
    PasswordAlgorithm(AlgorithmEntry<'a>),
    PasswordAlgorithms(AlgorithmList<'a>),
    Userhash(&'a [u8; 32]),
    ChannelNumber(u16),
    /// Seconds.
    Lifetime(u32),
    Data(&'a [u8]),
    RequestedAddressFamily(AddressFamily),
    AdditionalAddressFamily(AddressFamily),
    AddressErrorCode {
        family: AddressFamily,
        error: ErrorCode<'a>,
    },
    /// The R bit: reserve the next port too.
    EvenPort(bool),
    /// IANA protocol number (17 for UDP, 6 for TCP).
    RequestedTransport(u8),
    DontFragment,
    ReservationToken([u8; 8]),
    Icmp {
        icmp_type: u8,
        icmp_code: u8,
        error_data: u32,
    },
    ConnectionId(u32),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    Unknown {
        typ: AttributeType,
        value: &'a [u8],
    },
}

// RFC 8489 §14.3, §14.9, §14.10, §14.14, §14.8: limits in bytes. USERNAME must be shorter
// than 509 bytes when sent, but RFC 3489-era clients may send up to 763, which we accept.
const MAX_USERNAME: usize = 763;
const MAX_TEXT: usize = 763;

impl<'a> Attribute<'a> {
    /// Decodes a value of type `typ`. `tid` is the message's transaction id, which the XOR
    /// address attributes need.
    pub fn decode(
        typ: AttributeType,
        value: &'a [u8],
        tid: &TransactionId,
    ) -> Result<Attribute<'a>, AttributeError> {
        let bad_length = || AttributeError::BadLength { typ, len: value.len() };
        let fixed = |n: usize| if value.len() == n { Ok(value) } else { Err(bad_length()) };
        Ok(match typ {
            AttributeType::MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(typ, value, None)?),
            AttributeType::ALTERNATE_SERVER => Attribute::AlternateServer(decode_address(typ, value, None)?),
            AttributeType::XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(decode_address(typ, value, Some(tid))?)
            }
            AttributeType::XOR_PEER_ADDRESS => {
                Attribute::XorPeerAddress(decode_address(typ, value, Some(tid))?)
            }
            AttributeType::XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(decode_address(typ, value, Some(tid))?)
            }
            AttributeType::USERNAME => Attribute::Username(decode_text(typ, value, MAX_USERNAME)?),
            AttributeType::REALM => Attribute::Realm(decode_text(typ, value, MAX_TEXT)?),
            AttributeType::NONCE => Attribute::Nonce(decode_text(typ, value, MAX_TEXT)?),
            AttributeType::SOFTWARE => Attribute::Software(decode_text(typ, value, MAX_TEXT)?),
            AttributeType::ALTERNATE_DOMAIN => Attribute::AlternateDomain(decode_text(typ, value, MAX_TEXT)?),
            AttributeType::MESSAGE_INTEGRITY => Attribute::MessageIntegrity(fixed(20)?),
            AttributeType::MESSAGE_INTEGRITY_SHA256 => {
                if !(16..=32).contains(&value.len()) || value.len() % 4 != 0 {
                    return Err(bad_length());
                }
                Attribute::MessageIntegritySha256(value)
            }
            AttributeType::FINGERPRINT => Attribute::Fingerprint(be_u32(fixed(4)?)),
            AttributeType::ERROR_CODE => Attribute::ErrorCode(decode_error_code(typ, value)?),
            AttributeType::ADDRESS_ERROR_CODE => {
                let head = value.get(..4).ok_or_else(bad_length)?;
                let family = AddressFamily::from_code(typ, head[0])?;
                // Same class/number/reason layout as ERROR-CODE once the family is read.
                let error = decode_error_code(typ, value)?;
                Attribute::AddressErrorCode { family, error }
            }
            AttributeType::UNKNOWN_ATTRIBUTES => {
                if value.len() % 2 != 0 {
                    return Err(bad_length());
                }
                Attribute::UnknownAttributes(TypeList::Wire(value))
            }
            AttributeType::PASSWORD_ALGORITHM => {
                let (entry, rest) = split_algorithm(value).ok_or_else(bad_length)?;
                let exact = value.len() == 4 + entry.parameters.len();
                if !rest.is_empty() || (!exact && value.len() != 4 + padded(entry.parameters.len())) {
                    return Err(bad_length());
                }
                Attribute::PasswordAlgorithm(entry)
            }
            AttributeType::PASSWORD_ALGORITHMS => {
                let mut rest = value;
                while !rest.is_empty() {
                    let (_, tail) = split_algorithm(rest).ok_or_else(bad_length)?;
                    rest = tail;
                }
                Attribute::PasswordAlgorithms(AlgorithmList::Wire(value))
            }
            AttributeType::USERHASH => Attribute::Userhash(value.try_into().map_err(|_| bad_length())?),
            AttributeType::CHANNEL_NUMBER => {
                let v = fixed(4)?;
                Attribute::ChannelNumber(u16::from_be_bytes([v[0], v[1]]))
            }
            AttributeType::LIFETIME => Attribute::Lifetime(be_u32(fixed(4)?)),
            AttributeType::DATA => Attribute::Data(value),
            AttributeType::REQUESTED_ADDRESS_FAMILY => {
                Attribute::RequestedAddressFamily(AddressFamily::from_code(typ, fixed(4)?[0])?)
            }
            AttributeType::ADDITIONAL_ADDRESS_FAMILY => {
                Attribute::AdditionalAddressFamily(AddressFamily::from_code(typ, fixed(4)?[0])?)
            }
            AttributeType::EVEN_PORT => {
                // One byte; tolerate the padded 4-byte form some stacks send.
                if value.len() != 1 && value.len() != 4 {
                    return Err(bad_length());
                }
                Attribute::EvenPort(value[0] & 0x80 != 0)
            }
            AttributeType::REQUESTED_TRANSPORT => Attribute::RequestedTransport(fixed(4)?[0]),
            AttributeType::DONT_FRAGMENT => {
                fixed(0)?;
                Attribute::DontFragment
            }
            AttributeType::RESERVATION_TOKEN => {
                Attribute::ReservationToken(fixed(8)?.try_into().map_err(|_| bad_length())?)
            }
            AttributeType::ICMP => {
                let v = fixed(8)?;
                Attribute::Icmp { icmp_type: v[2], icmp_code: v[3], error_data: be_u32(&v[4..8]) }
            }
            AttributeType::CONNECTION_ID => Attribute::ConnectionId(be_u32(fixed(4)?)),
            AttributeType::PRIORITY => Attribute::Priority(be_u32(fixed(4)?)),
            AttributeType::USE_CANDIDATE => {
                fixed(0)?;
                Attribute::UseCandidate
            }
            AttributeType::ICE_CONTROLLED => Attribute::IceControlled(be_u64(fixed(8)?)),
            AttributeType::ICE_CONTROLLING => Attribute::IceControlling(be_u64(fixed(8)?)),
            _ => Attribute::Unknown { typ, value },
        })
    }

    pub fn typ(&self) -> AttributeType {
        match self {
            Attribute::MappedAddress(_) => AttributeType::MAPPED_ADDRESS,
            Attribute::XorMappedAddress(_) => AttributeType::XOR_MAPPED_ADDRESS,
            Attribute::XorPeerAddress(_) => AttributeType::XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => AttributeType::XOR_RELAYED_ADDRESS,
            Attribute::AlternateServer(_) => AttributeType::ALTERNATE_SERVER,
            Attribute::Username(_) => AttributeType::USERNAME,
            Attribute::Realm(_) => AttributeType::REALM,
            Attribute::Nonce(_) => AttributeType::NONCE,
            Attribute::Software(_) => AttributeType::SOFTWARE,
            Attribute::AlternateDomain(_) => AttributeType::ALTERNATE_DOMAIN,
            Attribute::MessageIntegrity(_) => AttributeType::MESSAGE_INTEGRITY,
            Attribute::MessageIntegritySha256(_) => AttributeType::MESSAGE_INTEGRITY_SHA256,
            Attribute::Fingerprint(_) => AttributeType::FINGERPRINT,
            Attribute::ErrorCode(_) => AttributeType::ERROR_CODE,
            Attribute::UnknownAttributes(_) => AttributeType::UNKNOWN_ATTRIBUTES,
            Attribute::PasswordAlgorithm(_) => AttributeType::PASSWORD_ALGORITHM,
            Attribute::PasswordAlgorithms(_) => AttributeType::PASSWORD_ALGORITHMS,
            Attribute::Userhash(_) => AttributeType::USERHASH,
            Attribute::ChannelNumber(_) => AttributeType::CHANNEL_NUMBER,
            Attribute::Lifetime(_) => AttributeType::LIFETIME,
            Attribute::Data(_) => AttributeType::DATA,
            Attribute::RequestedAddressFamily(_) => AttributeType::REQUESTED_ADDRESS_FAMILY,
            Attribute::AdditionalAddressFamily(_) => AttributeType::ADDITIONAL_ADDRESS_FAMILY,
            Attribute::AddressErrorCode { .. } => AttributeType::ADDRESS_ERROR_CODE,
            Attribute::EvenPort(_) => AttributeType::EVEN_PORT,
            Attribute::RequestedTransport(_) => AttributeType::REQUESTED_TRANSPORT,
            Attribute::DontFragment => AttributeType::DONT_FRAGMENT,
            Attribute::ReservationToken(_) => AttributeType::RESERVATION_TOKEN,
            Attribute::Icmp { .. } => AttributeType::ICMP,
            Attribute::ConnectionId(_) => AttributeType::CONNECTION_ID,
            Attribute::Priority(_) => AttributeType::PRIORITY,
            Attribute::UseCandidate => AttributeType::USE_CANDIDATE,
            Attribute::IceControlled(_) => AttributeType::ICE_CONTROLLED,
            Attribute::IceControlling(_) => AttributeType::ICE_CONTROLLING,
            Attribute::Unknown { typ, .. } => *typ,
        }
    }

    /// Length of the encoded value, before padding.
    pub fn value_len(&self) -> usize {
        match self {
            Attribute::MappedAddress(a)
            | Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a)
            | Attribute::AlternateServer(a) => address_len(a),
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => s.len(),
            Attribute::MessageIntegrity(v) | Attribute::MessageIntegritySha256(v) | Attribute::Data(v) => {
                v.len()
            }
            Attribute::Unknown { value, .. } => value.len(),
            Attribute::ErrorCode(e) | Attribute::AddressErrorCode { error: e, .. } => 4 + e.reason.len(),
            Attribute::UnknownAttributes(list) => list.wire_len(),
            Attribute::PasswordAlgorithm(e) => 4 + e.parameters.len(),
            Attribute::PasswordAlgorithms(list) => list.wire_len(),
            Attribute::Userhash(_) => 32,
            Attribute::Fingerprint(_)
            | Attribute::ChannelNumber(_)
            | Attribute::Lifetime(_)
            | Attribute::RequestedAddressFamily(_)
            | Attribute::AdditionalAddressFamily(_)
            | Attribute::RequestedTransport(_)
            | Attribute::ConnectionId(_)
            | Attribute::Priority(_) => 4,
            Attribute::EvenPort(_) => 1,
            Attribute::DontFragment | Attribute::UseCandidate => 0,
            Attribute::ReservationToken(_)
            | Attribute::Icmp { .. }
            | Attribute::IceControlled(_)
            | Attribute::IceControlling(_) => 8,
        }
    }

    /// Appends the value (unpadded) to `out`.
    pub(crate) fn write_value(&self, out: &mut Vec<u8>, tid: &TransactionId) {
        match self {
            Attribute::MappedAddress(a) | Attribute::AlternateServer(a) => write_address(out, a, None),
            Attribute::XorMappedAddress(a)
            | Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a) => write_address(out, a, Some(tid)),
            Attribute::Username(s)
            | Attribute::Realm(s)
            | Attribute::Nonce(s)
            | Attribute::Software(s)
            | Attribute::AlternateDomain(s) => out.extend_from_slice(s.as_bytes()),
            Attribute::MessageIntegrity(v) | Attribute::MessageIntegritySha256(v) | Attribute::Data(v) => {
                out.extend_from_slice(v)
            }
            Attribute::Unknown { value, .. } => out.extend_from_slice(value),
            Attribute::Fingerprint(v)
            | Attribute::Lifetime(v)
            | Attribute::ConnectionId(v)
            | Attribute::Priority(v) => out.extend_from_slice(&v.to_be_bytes()),
            Attribute::ErrorCode(e) => write_error_code(out, 0, e),
            Attribute::AddressErrorCode { family, error } => write_error_code(out, family.code(), error),
            Attribute::UnknownAttributes(list) => {
                for t in list.iter() {
                    out.extend_from_slice(&t.0.to_be_bytes());
                }
            }
            Attribute::PasswordAlgorithm(e) => {
                out.extend_from_slice(&e.algorithm.to_be_bytes());
                out.extend_from_slice(&(e.parameters.len() as u16).to_be_bytes());
                out.extend_from_slice(e.parameters);
            }
            Attribute::PasswordAlgorithms(list) => {
                for e in list.iter() {
                    out.extend_from_slice(&e.algorithm.to_be_bytes());
                    out.extend_from_slice(&(e.parameters.len() as u16).to_be_bytes());
                    out.extend_from_slice(e.parameters);
                    out.resize(out.len() + padded(e.parameters.len()) - e.parameters.len(), 0);
                }
            }
            Attribute::Userhash(v) => out.extend_from_slice(&v[..]),
            Attribute::ChannelNumber(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Attribute::RequestedAddressFamily(f) | Attribute::AdditionalAddressFamily(f) => {
                out.extend_from_slice(&[f.code(), 0, 0, 0])
            }
            Attribute::EvenPort(reserve) => out.push(if *reserve { 0x80 } else { 0 }),
            Attribute::RequestedTransport(p) => out.extend_from_slice(&[*p, 0, 0, 0]),
            Attribute::DontFragment | Attribute::UseCandidate => {}
            Attribute::ReservationToken(t) => out.extend_from_slice(t),
            Attribute::Icmp { icmp_type, icmp_code, error_data } => {
                out.extend_from_slice(&[0, 0, *icmp_type, *icmp_code]);
                out.extend_from_slice(&error_data.to_be_bytes());
            }
            Attribute::IceControlled(v) | Attribute::IceControlling(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
        }
    }
}

fn be_u32(v: &[u8]) -> u32 {
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

fn be_u64(v: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&v[..8]);
    u64::from_be_bytes(bytes)
}

fn decode_text(typ: AttributeType, value: &[u8], max: usize) -> Result<&str, AttributeError> {
    if value.len() > max {
        return Err(AttributeError::TooLong { typ, len: value.len(), max });
    }
    std::str::from_utf8(value).map_err(|_| AttributeError::NotUtf8 { typ })
}

fn decode_error_code(typ: AttributeType, value: &[u8]) -> Result<ErrorCode<'_>, AttributeError> {
    if value.len() < 4 {
        return Err(AttributeError::BadLength { typ, len: value.len() });
    }
    let class = value[2] & 0x07;
    let number = value[3];
    // RFC 8489 §14.8: class 3..=6, number 0..=99.
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttributeError::BadErrorCode { class, number });
    }
    let reason = decode_text(typ, &value[4..], MAX_TEXT)?;
    Ok(ErrorCode { code: u16::from(class) * 100 + u16::from(number), reason })
}

fn write_error_code(out: &mut Vec<u8>, first: u8, e: &ErrorCode<'_>) {
    let class = (e.code / 100) as u8 & 0x07;
    let number = (e.code % 100) as u8;
    out.extend_from_slice(&[first, 0, class, number]);
    out.extend_from_slice(e.reason.as_bytes());
}

fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

// RFC 8489 §14.1/§14.2: reserved byte, family, port, address; the XOR form XORs the port
// with the cookie's top half and the address with the cookie (and the transaction id for IPv6).
fn decode_address(
    typ: AttributeType,
    value: &[u8],
    xor: Option<&TransactionId>,
) -> Result<SocketAddr, AttributeError> {
    let bad_length = AttributeError::BadLength { typ, len: value.len() };
    if value.len() < 4 {
        return Err(bad_length);
    }
    let family = AddressFamily::from_code(typ, value[1])?;
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    let mask = xor_mask(xor);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        AddressFamily::V4 => {
            let raw: [u8; 4] = value[4..].try_into().map_err(|_| bad_length)?;
            let mut octets = raw;
            octets.iter_mut().zip(&mask).for_each(|(o, m)| *o ^= m);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        AddressFamily::V6 => {
            let raw: [u8; 16] = value[4..].try_into().map_err(|_| bad_length)?;
            let mut octets = raw;
            octets.iter_mut().zip(&mask).for_each(|(o, m)| *o ^= m);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

fn xor_mask(xor: Option<&TransactionId>) -> [u8; 16] {
    let mut mask = [0; 16];
    if let Some(tid) = xor {
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(&tid.0);
    }
    mask
}

fn write_address(out: &mut Vec<u8>, a: &SocketAddr, xor: Option<&TransactionId>) {
    let mask = xor_mask(xor);
    let port = if xor.is_some() { a.port() ^ (MAGIC_COOKIE >> 16) as u16 } else { a.port() };
    out.extend_from_slice(&[0, AddressFamily::of(a).code()]);
    out.extend_from_slice(&port.to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => out.extend(ip.octets().iter().zip(&mask).map(|(o, m)| o ^ m)),
        IpAddr::V6(ip) => out.extend(ip.octets().iter().zip(&mask).map(|(o, m)| o ^ m)),
    }
}
