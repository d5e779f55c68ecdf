//! Candidate lines from the network (SDP, trickled candidates): parsing never panics, and
//! whatever parses writes back to a line that parses to the same candidate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_ice::Candidate;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(candidate) = Candidate::parse(&line) {
        let written = candidate.to_string();
        let again = Candidate::parse(&written).expect("a written candidate parses");
        assert_eq!(again, candidate);
    }
});
