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
    // The counting allocator sees every thread of the process, and the test harness's own
    // threads allocate now and then (2 allocations in one CI run, none in the next). Code
    // that allocated per round trip would show at least 1,000 in every attempt; an attempt
    // with none proves the round trip allocates nothing.
    let mut attempts = Vec::new();
    for _ in 0..3 {
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
        attempts.push((change.allocations, change.reallocations));
        if attempts.last() == Some(&(0, 0)) {
            return;
        }
    }
    panic!("1,000 round trips allocated in every attempt: (allocations, reallocations) {attempts:?}");
}
