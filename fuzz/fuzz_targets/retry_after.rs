//! Any bytes as an HTTP `Retry-After` value (what an ACME CA sends with rateLimited): never a
//! panic, whatever the clock says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let Some((clock, text)) = data.split_first_chunk::<8>() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let now = UNIX_EPOCH + Duration::from_secs(u64::from_le_bytes(*clock) >> 24);
    let _ = peerlink_proto::parse_retry_after(text, now);
});
