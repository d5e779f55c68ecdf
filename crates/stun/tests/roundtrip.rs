//! Every attribute encodes and decodes back to itself; integrity in both algorithms.

use peerlink_stun::{
    AddressFamily, AlgorithmEntry, AlgorithmList, Attribute, AttributeType, Class, ErrorCode, Key, Message,
    MessageWriter, Method, PasswordAlgorithm, TransactionId, TypeList,
};

fn all_attributes() -> Vec<Attribute<'static>> {
    static UNKNOWN: [AttributeType; 3] =
        [AttributeType(0x0031), AttributeType(0x0032), AttributeType(0x7FFF)];
    static ALGORITHMS: [AlgorithmEntry<'static>; 3] = [
        AlgorithmEntry { algorithm: 2, parameters: &[] },
        AlgorithmEntry { algorithm: 0x77, parameters: &[1, 2, 3] },
        AlgorithmEntry { algorithm: 1, parameters: &[] },
    ];
    static USERHASH: [u8; 32] = [0xAB; 32];
    let v4 = "203.0.113.9:3478".parse().unwrap();
    let v6 = "[2001:db8::42]:65535".parse().unwrap();
    vec![
        Attribute::MappedAddress(v4),
        Attribute::MappedAddress(v6),
        Attribute::XorMappedAddress(v4),
        Attribute::XorMappedAddress(v6),
        Attribute::XorPeerAddress(v4),
        Attribute::XorPeerAddress(v6),
        Attribute::XorRelayedAddress(v4),
        Attribute::XorRelayedAddress(v6),
        Attribute::AlternateServer(v6),
        Attribute::Username("user:name"),
        Attribute::Realm("example.org"),
        Attribute::Nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
        Attribute::Software("peerlink ☃"),
        Attribute::AlternateDomain("turn.example.org"),
        Attribute::ErrorCode(ErrorCode::STALE_NONCE),
        Attribute::ErrorCode(ErrorCode { code: 699, reason: "" }),
        Attribute::UnknownAttributes(TypeList::Values(&UNKNOWN)),
        Attribute::PasswordAlgorithm(AlgorithmEntry { algorithm: 2, parameters: &[] }),
        Attribute::PasswordAlgorithms(AlgorithmList::Values(&ALGORITHMS)),
        Attribute::Userhash(&USERHASH),
        Attribute::ChannelNumber(0x4000),
        Attribute::Lifetime(600),
        Attribute::Data(b"hello, peer"),
        Attribute::Data(b""),
        Attribute::RequestedAddressFamily(AddressFamily::V6),
        Attribute::AdditionalAddressFamily(AddressFamily::V6),
        Attribute::AddressErrorCode { family: AddressFamily::V4, error: ErrorCode::INSUFFICIENT_CAPACITY },
        Attribute::EvenPort(true),
        Attribute::EvenPort(false),
        Attribute::RequestedTransport(17),
        Attribute::DontFragment,
        Attribute::ReservationToken([1, 2, 3, 4, 5, 6, 7, 8]),
        Attribute::Icmp { icmp_type: 3, icmp_code: 4, error_data: 1400 },
        Attribute::ConnectionId(0xDEADBEEF),
        Attribute::Priority(0x6E0001FF),
        Attribute::UseCandidate,
        Attribute::IceControlled(u64::MAX),
        Attribute::IceControlling(1),
        Attribute::Unknown { typ: AttributeType(0xC0DE), value: b"opaque" },
    ]
}

#[test]
fn every_attribute_round_trips() {
    let tid = TransactionId([0x5A; 12]);
    let attributes = all_attributes();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, tid);
    for a in &attributes {
        w.attribute(a).unwrap();
    }
    let len = w.finish();
    assert_eq!(len, buf.len());
    assert_eq!(len % 4, 0);
    let m = Message::parse(&buf).unwrap();
    assert_eq!((m.class(), m.method(), m.transaction_id()), (Class::Indication, Method::SEND, tid));
    let decoded: Vec<_> = m.attributes().map(|raw| m.decode(raw).unwrap()).collect();
    assert_eq!(decoded, attributes);
    // Only the one unknown attribute is unknown, and it is comprehension-optional.
    assert_eq!(m.unknown_comprehension_required().count(), 0);
    // Every known type appears, so the list stays complete as types are added.
    for known in AttributeType::KNOWN {
        let skip = [
            AttributeType::MESSAGE_INTEGRITY,
            AttributeType::MESSAGE_INTEGRITY_SHA256,
            AttributeType::FINGERPRINT,
        ];
        assert!(
            skip.contains(known) || attributes.iter().any(|a| a.typ() == *known),
            "{known:?} not covered"
        );
    }
}

#[test]
fn each_attribute_alone_round_trips_and_its_truncations_fail() {
    let tid = TransactionId([3; 12]);
    for a in all_attributes() {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, tid);
        w.attribute(&a).unwrap();
        w.finish();
        let m = Message::parse(&buf).unwrap();
        let raw = m.attributes().next().unwrap();
        assert_eq!(m.decode(raw).unwrap(), a);
        // A value cut short must not decode to the same thing, and must never panic.
        for cut in 0..raw.value.len() {
            if let Ok(other) = Attribute::decode(raw.typ, &raw.value[..cut], &tid) {
                assert!(
                    other != a || matches!(a, Attribute::Data(_) | Attribute::Unknown { .. }),
                    "{a:?} cut to {cut}"
                );
            }
        }
    }
}

#[test]
fn integrity_sha256_and_md5_long_term_keys_verify() {
    let tid = TransactionId([1; 12]);
    for algorithm in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
        let key = Key::long_term(algorithm, "alice", "example.org", "s3cret").unwrap();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::ALLOCATE, tid);
        w.attribute(&Attribute::Username("alice")).unwrap();
        w.attribute(&Attribute::RequestedTransport(17)).unwrap();
        w.message_integrity(&key).unwrap();
        w.message_integrity_sha256(&key).unwrap();
        w.fingerprint().unwrap();
        assert!(w.attribute(&Attribute::Lifetime(1)).is_err(), "nothing after FINGERPRINT");
        w.finish();
        let m = Message::parse(&buf).unwrap();
        assert!(m.verify_integrity(&key));
        assert!(m.verify_integrity_sha256(&key));
        assert!(m.verify_fingerprint());
        let other = Key::long_term(algorithm, "alice", "example.org", "s3creT").unwrap();
        assert!(!m.verify_integrity(&other));
        assert!(!m.verify_integrity_sha256(&other));
    }
}

#[test]
fn truncated_integrity_sha256_verifies() {
    // RFC 8489 §14.6 allows 16..=32 bytes (leftmost kept). Build one by hand.
    let key = Key::short_term("pw").unwrap();
    let tid = TransactionId([2; 12]);
    let mut full = Vec::new();
    let mut w = MessageWriter::new(&mut full, Class::Request, Method::BINDING, tid);
    w.attribute(&Attribute::Username("u")).unwrap();
    w.finish();
    // Append a 16-byte MI-SHA256 whose value is the HMAC with length covering 16 bytes.
    use hmac_check::compute;
    let mut msg = full.clone();
    let new_len = (msg.len() - 20 + 4 + 16) as u16;
    msg[2..4].copy_from_slice(&new_len.to_be_bytes());
    let tag = compute(key.as_bytes(), &msg);
    msg.extend_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
    msg.extend_from_slice(&tag[..16]);
    let m = Message::parse(&msg).unwrap();
    assert!(m.verify_integrity_sha256(&key));
    assert!(!m.verify_integrity_sha256(&Key::short_term("px").unwrap()));
}

mod hmac_check {
    // Independent HMAC-SHA256 (RFC 2104) over sha2, so the check does not reuse the code
    // under test.
    use sha2::{Digest, Sha256};
    pub fn compute(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(data.iter().copied()).collect();
        let inner_hash = Sha256::digest(&inner);
        let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).chain(inner_hash.iter().copied()).collect();
        Sha256::digest(&outer).into()
    }
}
