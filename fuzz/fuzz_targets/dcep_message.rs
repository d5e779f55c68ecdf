//! DCEP messages (DATA_CHANNEL_OPEN / ACK) from the peer never panic the parser, and what
//! parses encodes back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_sctp::dcep::DcepMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = DcepMessage::parse(data) {
        assert_eq!(DcepMessage::parse(&m.encode()), Ok(m));
    }
});
