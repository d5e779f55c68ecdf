//! What the TURN tests over real sockets share: requests from the static user alice
//! (password `pw`), and reading the answers.
#![allow(dead_code)]

use peerlink_stun::{
    Attribute, AttributeType, Class, Key, Message, MessageWriter, Method, PasswordAlgorithm, TransactionId,
};
use std::net::SocketAddr;

pub const REALM: &str = "example.test";

/// A request with `attrs`; signed by alice when a `nonce` is given.
pub fn request(tid: u8, method: Method, nonce: Option<&str>, attrs: &[Attribute<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, TransactionId([tid; 12]));
    for a in attrs {
        w.attribute(a).unwrap();
    }
    if let Some(nonce) = nonce {
        w.attribute(&Attribute::Username("alice")).unwrap();
        w.attribute(&Attribute::Realm(REALM)).unwrap();
        w.attribute(&Attribute::Nonce(nonce)).unwrap();
        let key = Key::long_term(PasswordAlgorithm::Md5, "alice", REALM, "pw").unwrap();
        w.message_integrity(&key).unwrap();
    }
    w.finish();
    buf
}

/// The NONCE of a 401 answer.
pub fn nonce(response: &[u8]) -> String {
    let m = Message::parse(response).unwrap();
    let Some(Ok(Attribute::Nonce(nonce))) = m.get(AttributeType::NONCE) else { panic!("no nonce") };
    nonce.to_owned()
}

/// The XOR-RELAYED-ADDRESS of a successful Allocate.
pub fn relayed(response: &[u8]) -> SocketAddr {
    let m = Message::parse(response).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.get(AttributeType::ERROR_CODE));
    let Some(Ok(Attribute::XorRelayedAddress(relay))) = m.get(AttributeType::XOR_RELAYED_ADDRESS) else {
        panic!("no relayed address")
    };
    relay
}
