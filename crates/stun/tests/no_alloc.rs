//! A Binding request/response round trip allocates nothing once buffers have capacity.
//! Alone in its own test binary so no other test's allocations are counted.

use peerlink_stun::{
    binding, Attribute, AttributeType, Class, Message, MessageWriter, Method, TransactionId,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn binding_round_trip_allocates_nothing() {
    let mut request = Vec::with_capacity(128);
    let mut response = Vec::with_capacity(128);
    let client = "[2001:db8::9]:40000".parse().unwrap();
    let region = Region::new(GLOBAL);
    for i in 0..1000u32 {
        request.clear();
        let mut tid = [0; 12];
        tid[..4].copy_from_slice(&i.to_be_bytes());
        let mut w = MessageWriter::new(&mut request, Class::Request, Method::BINDING, TransactionId(tid));
        w.attribute(&Attribute::Software("client")).unwrap();
        w.fingerprint().unwrap();
        w.finish();
        assert_eq!(binding::respond(&request, client, &mut response), binding::Outcome::Answered);
        let m = Message::parse(&response).unwrap();
        assert!(m.verify_fingerprint());
        assert_eq!(
            m.get(AttributeType::XOR_MAPPED_ADDRESS).unwrap().unwrap(),
            Attribute::XorMappedAddress(client)
        );
    }
    let change = region.change();
    assert_eq!((change.allocations, change.reallocations), (0, 0));
}
