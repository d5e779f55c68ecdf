//! RFC 5769 test vectors: parse, verify integrity and fingerprint, decode every attribute,
//! and re-encode byte for byte where the vector's choices are reproducible.

use peerlink_stun::{
    Attribute, AttributeType, Class, Key, Message, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};

fn vector(name: &str) -> Vec<u8> {
    let text = include_str!("../testvectors/rfc5769.txt");
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{name}:"));
    lines.next().unwrap_or_else(|| panic!("vector {name} missing"));
    let hex: String = lines
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .collect();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

#[test]
fn sample_request_with_short_term_credentials() {
    let bytes = vector("request");
    assert_eq!(bytes.len(), 108);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Request, Method::BINDING));
    let key = Key::short_term(SHORT_TERM_PASSWORD).unwrap();
    assert!(m.verify_integrity(&key));
    assert!(!m.verify_integrity(&Key::short_term("wrong").unwrap()));
    assert!(m.verify_fingerprint());
    let attrs: Vec<_> = m.attributes().map(|raw| m.decode(raw).unwrap()).collect();
    assert_eq!(attrs[0], Attribute::Software("STUN test client"));
    assert_eq!(attrs[1], Attribute::Priority(0x6e0001ff));
    assert_eq!(attrs[2], Attribute::IceControlled(0x932ff9b151263b36));
    // The vector pads USERNAME with spaces, which RFC 5769 allows; re-encoding pads with zeros.
    assert_eq!(attrs[3], Attribute::Username("evtj:h6vY"));
    assert!(matches!(attrs[4], Attribute::MessageIntegrity(_)));
    assert!(matches!(attrs[5], Attribute::Fingerprint(0xe57a3bcf)));
    assert_eq!(m.unknown_comprehension_required().count(), 0);

    // Re-encode: the same attributes with zero padding give a message whose integrity and
    // fingerprint verify with the same key.
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, Class::Request, Method::BINDING, m.transaction_id());
    for a in &attrs[..4] {
        w.attribute(a).unwrap();
    }
    w.message_integrity(&key).unwrap();
    w.fingerprint().unwrap();
    w.finish();
    assert_eq!(out.len(), bytes.len());
    assert_eq!(out[..20], bytes[..20]);
    let again = Message::parse(&out).unwrap();
    assert!(again.verify_integrity(&key) && again.verify_fingerprint());
}

fn check_response(name: &str, expected: &str) {
    let bytes = vector(name);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!((m.class(), m.method()), (Class::SuccessResponse, Method::BINDING));
    let key = Key::short_term(SHORT_TERM_PASSWORD).unwrap();
    assert!(m.verify_integrity(&key));
    assert!(m.verify_fingerprint());
    let software = m.get(AttributeType::SOFTWARE).unwrap().unwrap();
    // 11 bytes, padded with a space on the wire.
    assert_eq!(software, Attribute::Software("test vector"));
    let mapped = m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap();
    assert_eq!(mapped, Attribute::XorMappedAddress(expected.parse().unwrap()));

    // Re-encoding gives the same bytes except SOFTWARE's padding (the vector pads with a
    // space, we pad with zero), so compare everything outside that byte and the hashes.
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, Class::SuccessResponse, Method::BINDING, m.transaction_id());
    w.attribute(&software).unwrap();
    w.attribute(&mapped).unwrap();
    w.message_integrity(&key).unwrap();
    w.fingerprint().unwrap();
    w.finish();
    assert_eq!(out.len(), bytes.len());
    let padding = 20 + 4 + 11;
    assert_eq!(out[..padding], bytes[..padding]);
    let mi = bytes.len() - 24 - 8;
    assert_eq!(
        out[padding + 1..mi + 4],
        bytes[padding + 1..mi + 4],
        "XOR-MAPPED-ADDRESS encodes identically"
    );
    let again = Message::parse(&out).unwrap();
    assert!(again.verify_integrity(&key) && again.verify_fingerprint());
}

#[test]
fn sample_ipv4_response() {
    check_response("ipv4-response", "192.0.2.1:32853");
}

#[test]
fn sample_ipv6_response() {
    check_response("ipv6-response", "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

#[test]
fn sample_request_with_long_term_credentials() {
    let bytes = vector("long-term-request");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.get(AttributeType::USERNAME).unwrap().unwrap(), Attribute::Username("マトリックス"));
    assert_eq!(
        m.get(AttributeType::NONCE).unwrap().unwrap(),
        Attribute::Nonce("f//499k954d6OL34oL9FSTvy64sA")
    );
    assert_eq!(m.get(AttributeType::REALM).unwrap().unwrap(), Attribute::Realm("example.org"));
    assert!(!m.has_fingerprint());
    // The vector's password went through SASLprep ("TheMatrIX"); see `opaque_string`.
    let key = Key::long_term(PasswordAlgorithm::Md5, "マトリックス", "example.org", "TheMatrIX").unwrap();
    assert!(m.verify_integrity(&key));
    let wrong = Key::long_term(PasswordAlgorithm::Md5, "マトリックス", "example.org", "TheMatrix").unwrap();
    assert!(!m.verify_integrity(&wrong));
}

#[test]
fn corrupting_any_byte_breaks_integrity_or_parsing() {
    let bytes = vector("ipv4-response");
    let key = Key::short_term(SHORT_TERM_PASSWORD).unwrap();
    // Every byte before MESSAGE-INTEGRITY's value end is covered by the HMAC.
    let mi_end = bytes.len() - 8;
    for i in 0..mi_end {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        if let Ok(m) = Message::parse(&bad) {
            assert!(!m.verify_integrity(&key), "flip at byte {i} went unnoticed by MESSAGE-INTEGRITY");
            assert!(!m.verify_fingerprint(), "flip at byte {i} went unnoticed by FINGERPRINT");
        }
    }
    let tid = TransactionId(bytes[8..20].try_into().unwrap());
    assert_eq!(Message::parse(&bytes).unwrap().transaction_id(), tid);
}
