//! The media path of a PeerConnection past SRTP: a Chromium audio+video offer is answered
//! (so transceivers are negotiated), then the input is cut into datagrams (a length byte
//! each) fed as RTP or RTCP, with the timers run between them. No input may panic; what
//! the connection sends in reply is produced and dropped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_rtc::{Description, PeerConnection, RtcConfig, SdpType};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const OFFER: &str = include_str!("../../crates/sdp/testdata/chromium-av-datachannel-offer.sdp");

fn config() -> RtcConfig {
    static CERT: OnceLock<peerlink_dtls::Certificate> = OnceLock::new();
    let cert = CERT.get_or_init(|| peerlink_dtls::Certificate::generate().expect("a certificate"));
    RtcConfig { certificate: Some(cert.clone()), ..RtcConfig::default() }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let Ok(mut pc) = PeerConnection::new(start, config(), [1; 32]) else { return };
    if pc.set_remote_description(start, Description { kind: SdpType::Offer, sdp: OFFER.to_owned() }).is_err()
    {
        return;
    }
    let Ok(answer) = pc.create_answer() else { return };
    if pc.set_local_description(start, Some(answer)).is_err() {
        return;
    }
    let mut rest = data;
    let mut now = start;
    let mut buf = Vec::new();
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        pc.fuzz_plain_media(now, &tail[..n]);
        rest = &tail[n..];
        now += Duration::from_millis(7);
        pc.handle_timeout(now);
        while pc.poll_transmit(now, &mut buf).is_some() {
            buf.clear();
        }
        while pc.poll_event().is_some() {}
    }
});
