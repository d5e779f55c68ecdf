//! RTP packets: the checked view, its CSRCs and RFC 8285 extensions, every typed WebRTC
//! extension decoder, and re-encoding what parsed. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_rtp::ext::{self, uri, ExtensionMap, Extensions};
use peerlink_rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let _ = peerlink_rtp::is_rtcp(data);
    let _ = peerlink_rtp::rtp::header_len(data);
    // The extension element iterator on raw bytes, in both forms.
    for profile in [ext::ONE_BYTE_PROFILE, ext::TWO_BYTE_PROFILE] {
        for (_, value) in Extensions::new(profile, data).flatten() {
            let _ = ext::AbsSendTime::decode(value);
            let _ = ext::TransportSequence::decode(value);
            let _ = ext::AudioLevel::decode(value);
            let _ = ext::VideoOrientation::decode(value);
            let _ = ext::PlayoutDelay::decode(value);
            let _ = ext::AbsCaptureTime::decode(value);
            let _ = ext::text(value);
        }
    }
    let Ok(p) = RtpPacket::parse(data) else { return };
    let mut map = ExtensionMap::default();
    for (id, u) in [
        uri::MID,
        uri::RID,
        uri::REPAIRED_RID,
        uri::ABS_SEND_TIME,
        uri::TRANSPORT_CC,
        uri::AUDIO_LEVEL,
        uri::VIDEO_ORIENTATION,
        uri::PLAYOUT_DELAY,
        uri::ABS_CAPTURE_TIME,
        uri::DEPENDENCY_DESCRIPTOR,
    ]
    .into_iter()
    .enumerate()
    {
        map.insert(id as u8 + 1, u);
    }
    let _ = map.read(p.extensions());
    let elements: Vec<(u8, &[u8])> = p.extensions().flatten().collect();
    let mut out = Vec::new();
    if p.to_header().encode(&elements, p.payload(), 0, &mut out).is_ok() {
        let again = RtpPacket::parse(&out).expect("what we write parses");
        assert_eq!(again.payload(), p.payload());
        assert_eq!(again.to_header(), p.to_header());
    }
});
