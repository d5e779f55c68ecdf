//! Session descriptions from the peer (they come through signaling) never panic the parser,
//! and what parses writes back to text that parses to the same description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_sdp::SessionDescription;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sd) = SessionDescription::parse(text) {
        if let Some(dc) = sd.datachannel() {
            let _ = (
                sd.ice_credentials(dc),
                sd.fingerprint(dc),
                sd.setup(dc),
                dc.sctp_port(),
                dc.candidates().count(),
            );
        }
        let _ = sd.bundle();
        let again = SessionDescription::parse(&sd.to_string()).expect("our own output parses");
        assert_eq!(again, sd);
    }
});
