//! The stateless Binding responder of a STUN server (RFC 8489 §6.3).

use crate::attribute::{AttributeType, ErrorCode, TypeList};
use crate::message::{Class, Header, Message, Method, HEADER_LEN};
use crate::writer::MessageWriter;
use crate::Attribute;
use std::net::{IpAddr, SocketAddr};

/// At most this many types are listed in UNKNOWN-ATTRIBUTES (keeps the answer small).
const MAX_UNKNOWN_LISTED: usize = 16;

/// What the responder did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A success response was written.
    Answered,
    /// An error response (400 or 420) was written.
    Rejected(u16),
    /// Nothing was written.
    Ignored(IgnoreReason),
}

/// Why a packet was dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// Not STUN at all (too short, wrong leading bits or cookie).
    NotStun,
    /// The length field does not match the packet (RFC 8489 §6.3: "sensible" length).
    BadLength,
    /// Indications and responses get no answer.
    NotRequest,
    /// A method this server does not serve (RFC 8489 §6.3).
    UnsupportedMethod,
    /// FINGERPRINT present but wrong (RFC 8489 §7.3).
    BadFingerprint,
}

/// Answers one packet received from `source`, writing any response into `out` (cleared
/// first). Keeps no state; allocates nothing once `out` has room for 64 bytes.
pub fn respond(packet: &[u8], source: SocketAddr, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let Ok(header) = Header::parse(packet) else {
        return Outcome::Ignored(IgnoreReason::NotStun);
    };
    if usize::from(header.length()) + HEADER_LEN != packet.len() || header.length() % 4 != 0 {
        return Outcome::Ignored(IgnoreReason::BadLength);
    }
    if header.class() != Class::Request {
        return Outcome::Ignored(IgnoreReason::NotRequest);
    }
    if header.method() != Method::BINDING {
        return Outcome::Ignored(IgnoreReason::UnsupportedMethod);
    }
    let tid = header.transaction_id();
    let message = match Message::parse(packet) {
        Ok(message) => message,
        Err(_) => return error_response(out, tid, ErrorCode::BAD_REQUEST, &[], false),
    };
    let fingerprint = message.has_fingerprint();
    if fingerprint && !message.verify_fingerprint() {
        return Outcome::Ignored(IgnoreReason::BadFingerprint);
    }
    // RFC 8489 §6.3.1: unknown comprehension-required attributes → 420 listing them.
    let mut unknown = [AttributeType(0); MAX_UNKNOWN_LISTED];
    let unknown = message.collect_unknown_comprehension_required(&mut unknown);
    if !unknown.is_empty() {
        return error_response(out, tid, ErrorCode::UNKNOWN_ATTRIBUTE, unknown, fingerprint);
    }
    // Malformed comprehension-optional attributes are ignored like unknown ones.
    if message.attributes().any(|raw| raw.typ.is_comprehension_required() && message.decode(raw).is_err()) {
        return error_response(out, tid, ErrorCode::BAD_REQUEST, &[], fingerprint);
    }
    let mut w = MessageWriter::new(out, Class::SuccessResponse, Method::BINDING, tid);
    let written = w.attribute(&Attribute::XorMappedAddress(canonical(source)));
    let sealed = if fingerprint { w.fingerprint() } else { Ok(()) };
    debug_assert!(written.is_ok() && sealed.is_ok(), "a binding response always fits");
    Outcome::Answered
}

fn error_response(
    out: &mut Vec<u8>,
    tid: crate::TransactionId,
    error: ErrorCode<'static>,
    unknown: &[AttributeType],
    fingerprint: bool,
) -> Outcome {
    let mut w = MessageWriter::new(out, Class::ErrorResponse, Method::BINDING, tid);
    let mut result = w.attribute(&Attribute::ErrorCode(error));
    if !unknown.is_empty() {
        result = result.and(w.attribute(&Attribute::UnknownAttributes(TypeList::Values(unknown))));
    }
    if fingerprint {
        result = result.and(w.fingerprint());
    }
    debug_assert!(result.is_ok(), "a short error response always fits");
    Outcome::Rejected(error.code)
}

/// A client reaching a dual-stack socket over IPv4 shows up as `::ffff:a.b.c.d`; its
/// reflexive address is the IPv4 one.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransactionId;

    const SOURCE: &str = "192.0.2.1:32853";

    fn request(build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TransactionId([9; 12]));
        build(&mut w);
        w.finish();
        buf
    }

    fn answer(packet: &[u8]) -> (Outcome, Vec<u8>) {
        let mut out = Vec::new();
        let outcome = respond(packet, SOURCE.parse().unwrap(), &mut out);
        (outcome, out)
    }

    #[test]
    fn answers_binding_with_xor_mapped_address() {
        let (outcome, out) = answer(&request(|_| {}));
        assert_eq!(outcome, Outcome::Answered);
        let m = Message::parse(&out).unwrap();
        assert_eq!((m.class(), m.method()), (Class::SuccessResponse, Method::BINDING));
        assert_eq!(m.transaction_id(), TransactionId([9; 12]));
        let addr = m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap();
        assert_eq!(addr, Attribute::XorMappedAddress(SOURCE.parse().unwrap()));
        assert!(!m.has_fingerprint());
    }

    #[test]
    fn adds_fingerprint_when_request_had_one() {
        let (outcome, out) = answer(&request(|w| w.fingerprint().unwrap()));
        assert_eq!(outcome, Outcome::Answered);
        assert!(Message::parse(&out).unwrap().verify_fingerprint());
    }

    #[test]
    fn maps_v4_mapped_v6_source_to_v4() {
        let mut out = Vec::new();
        respond(&request(|_| {}), "[::ffff:192.0.2.7]:9".parse().unwrap(), &mut out);
        let m = Message::parse(&out).unwrap();
        let addr = m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap();
        assert_eq!(addr, Attribute::XorMappedAddress("192.0.2.7:9".parse().unwrap()));
    }

    #[test]
    fn answers_ipv6_source() {
        let mut out = Vec::new();
        let source: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        respond(&request(|_| {}), source, &mut out);
        let m = Message::parse(&out).unwrap();
        assert_eq!(
            m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
            Attribute::XorMappedAddress(source)
        );
    }

    #[test]
    fn unknown_comprehension_required_attribute_gets_420_listing_it() {
        let packet = request(|w| {
            w.attribute(&Attribute::Unknown { typ: AttributeType(0x0077), value: b"x" }).unwrap();
            w.attribute(&Attribute::Unknown { typ: AttributeType(0x8077), value: b"y" }).unwrap();
            w.fingerprint().unwrap();
        });
        let (outcome, out) = answer(&packet);
        assert_eq!(outcome, Outcome::Rejected(420));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.class(), Class::ErrorResponse);
        assert!(m.verify_fingerprint());
        let Attribute::ErrorCode(e) = m.get(AttributeType::ERROR_CODE).unwrap().unwrap() else { panic!() };
        assert_eq!(e.code, 420);
        let Attribute::UnknownAttributes(list) = m.get(AttributeType::UNKNOWN_ATTRIBUTES).unwrap().unwrap()
        else {
            panic!()
        };
        assert_eq!(list.iter().collect::<Vec<_>>(), [AttributeType(0x0077)]);
    }

    #[test]
    fn unknown_required_attribute_after_integrity_is_ignored() {
        let key = crate::Key::short_term("pw").unwrap();
        let mut packet = request(|w| w.message_integrity(&key).unwrap());
        // Append an unknown comprehension-required attribute after MESSAGE-INTEGRITY.
        packet.extend_from_slice(&[0x00, 0x77, 0x00, 0x00]);
        let len = (packet.len() - 20) as u16;
        packet[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(answer(&packet).0, Outcome::Answered);
    }

    #[test]
    fn malformed_optional_attribute_is_ignored_and_long_usernames_accepted() {
        let software = request(|w| {
            w.attribute(&Attribute::Unknown { typ: AttributeType::SOFTWARE, value: &[0xFF, 0xFE] }).unwrap()
        });
        assert_eq!(answer(&software).0, Outcome::Answered);
        let name = "u".repeat(700);
        let long = request(|w| w.attribute(&Attribute::Username(&name)).unwrap());
        assert_eq!(answer(&long).0, Outcome::Answered);
        let too_long = "u".repeat(764);
        let longer = request(|w| w.attribute(&Attribute::Username(&too_long)).unwrap());
        assert_eq!(answer(&longer).0, Outcome::Rejected(400));
    }

    #[test]
    fn unknown_optional_attribute_is_skipped() {
        let packet = request(|w| {
            w.attribute(&Attribute::Unknown { typ: AttributeType(0xC001), value: b"z" }).unwrap()
        });
        assert_eq!(answer(&packet).0, Outcome::Answered);
    }

    #[test]
    fn malformed_attributes_get_400() {
        // PRIORITY with 2 bytes instead of 4.
        let bad_value = request(|w| {
            w.attribute(&Attribute::Unknown { typ: AttributeType::PRIORITY, value: &[1, 2] }).unwrap()
        });
        assert_eq!(answer(&bad_value).0, Outcome::Rejected(400));
        // A TLV that claims more bytes than the message has.
        let mut overrun = request(|w| w.attribute(&Attribute::Software("abcd")).unwrap());
        overrun[23] = 40;
        let (outcome, out) = answer(&overrun);
        assert_eq!(outcome, Outcome::Rejected(400));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.transaction_id(), TransactionId([9; 12]));
    }

    #[test]
    fn stays_silent_for_junk_indications_responses_and_other_methods() {
        assert_eq!(answer(&[]).0, Outcome::Ignored(IgnoreReason::NotStun));
        assert_eq!(answer(&[0xFF; 64]).0, Outcome::Ignored(IgnoreReason::NotStun));
        let mut truncated = request(|w| w.attribute(&Attribute::Software("abcd")).unwrap());
        truncated.truncate(26);
        assert_eq!(answer(&truncated).0, Outcome::Ignored(IgnoreReason::BadLength));
        let mut indication = Vec::new();
        MessageWriter::new(&mut indication, Class::Indication, Method::BINDING, TransactionId([1; 12]))
            .finish();
        assert_eq!(answer(&indication).0, Outcome::Ignored(IgnoreReason::NotRequest));
        let mut allocate = Vec::new();
        MessageWriter::new(&mut allocate, Class::Request, Method::ALLOCATE, TransactionId([1; 12])).finish();
        assert_eq!(answer(&allocate).0, Outcome::Ignored(IgnoreReason::UnsupportedMethod));
        let mut bad_fp = request(|w| w.fingerprint().unwrap());
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        let (outcome, out) = answer(&bad_fp);
        assert_eq!(outcome, Outcome::Ignored(IgnoreReason::BadFingerprint));
        assert!(out.is_empty());
    }
}
