//! Multicast DNS responses (anyone on the link can send them) never panic the parser, and
//! whatever it returns came from the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_ice::mdns::parse_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(found) = parse_response(data, "0c2dd5a4-1234-4cde-9abc-0123456789ab.local") {
        // Each address takes at least a 10-byte record header and its own bytes.
        assert!(found.len() * 14 <= data.len());
    }
});
