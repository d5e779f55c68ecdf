//! Any bytes: parsing, walking and decoding every attribute, verifying integrity and
//! fingerprint, and re-encoding what decoded must never panic; what re-encodes parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_stun::{Attribute, Key, Message, MessageWriter};

fuzz_target!(|data: &[u8]| {
    let _ = peerlink_stun::Header::parse(data);
    let Ok(message) = Message::parse(data) else { return };
    let key = Key::from_bytes(b"fuzz");
    let _ = message.verify_integrity(&key);
    let _ = message.verify_integrity_sha256(&key);
    let _ = message.verify_fingerprint();
    let _ = message.unknown_comprehension_required().count();
    let mut out = Vec::new();
    let mut writer =
        MessageWriter::new(&mut out, message.class(), message.method(), message.transaction_id());
    let mut decoded = Vec::new();
    for raw in message.attributes() {
        if let Ok(attribute) = message.decode(raw) {
            if !matches!(attribute, Attribute::Fingerprint(_)) && writer.attribute(&attribute).is_ok() {
                decoded.push(attribute);
            }
        }
    }
    writer.finish();
    let again = Message::parse(&out).expect("re-encoded message parses");
    let redecoded: Vec<_> =
        again.attributes().map(|raw| again.decode(raw).expect("re-encoded attribute decodes")).collect();
    assert_eq!(decoded.len(), redecoded.len());
});
