//! TCP framing: any stream prefix yields a frame length inside the buffer, a need for more,
//! or a refusal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_stun::framing::{next_frame, Frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Frame::Complete(len) = next_frame(rest) {
        assert!(len >= 20 && len <= rest.len());
        rest = &rest[len..];
    }
});
