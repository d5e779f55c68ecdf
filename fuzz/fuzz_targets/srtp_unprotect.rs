//! SRTP/SRTCP receive path for every profile: raw bytes into unprotect (which must refuse
//! them without panicking and without touching replay or ROC state), then the input as the
//! plaintext of a genuine packet, protected and unprotected again (it must come back,
//! and a copy with a changed tag must not).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_rtp::{SrtpContext, SrtpProfile};

fuzz_target!(|data: &[u8]| {
    for profile in SrtpProfile::ALL {
        let key = vec![7u8; profile.key_len()];
        let salt = vec![9u8; profile.salt_len()];
        let mut tx = SrtpContext::new(profile, &key, &salt).unwrap();
        let mut rx = SrtpContext::new(profile, &key, &salt).unwrap();
        let mut out = Vec::new();
        if rx.unprotect_rtp(data, &mut out).is_err() && rx.unprotect_rtcp(data, &mut out).is_err() {
            assert!(out.is_empty(), "a refused packet leaves nothing behind");
        }
        // The input as a packet to send: whatever protects must unprotect to itself.
        let mut protected = Vec::new();
        if tx.protect_rtp(data, &mut protected).is_ok() {
            let mut fresh = SrtpContext::new(profile, &key, &salt).unwrap();
            // A changed tag is refused and changes nothing: the genuine packet still passes.
            let mut bad = protected.clone();
            if let Some(last) = bad.last_mut() {
                *last ^= 1;
            }
            assert!(fresh.unprotect_rtp(&bad, &mut Vec::new()).is_err());
            let mut plain = Vec::new();
            fresh.unprotect_rtp(&protected, &mut plain).expect("our own packet authenticates");
            assert_eq!(plain, data);
        }
        protected.clear();
        if tx.protect_rtcp(data, &mut protected).is_ok() {
            let mut fresh = SrtpContext::new(profile, &key, &salt).unwrap();
            let mut plain = Vec::new();
            fresh.unprotect_rtcp(&protected, &mut plain).expect("our own rtcp authenticates");
            assert_eq!(plain, data);
        }
    }
});
