//! The STUN server's packet handling: any datagram from any source gets at most one
//! well-formed answer and never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_stun::binding::{respond, Outcome};
use peerlink_stun::Message;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let source = "[2001:db8::1]:1234".parse().unwrap();
    match respond(data, source, &mut out) {
        Outcome::Ignored(_) => assert!(out.is_empty()),
        Outcome::Answered | Outcome::Rejected(_) => {
            let answer = Message::parse(&out).expect("answers are well-formed");
            assert_eq!(answer.transaction_id().0, data[8..20]);
        }
    }
});
