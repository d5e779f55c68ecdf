//! RTCP: compound framing, then every packet type's decoder on the raw body whatever the
//! header says (SR, RR, SDES, BYE, APP, NACK, PLI, FIR, REMB, transport-cc, XR), and the
//! re-encoding of what decoded. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerlink_rtp::rtcp::{self, RtcpPacket, RtcpPackets};

fuzz_target!(|data: &[u8]| {
    let _ = rtcp::validate(data);
    for (header, body) in RtcpPackets::new(data).flatten() {
        let count = header.count;
        let _ = rtcp::SenderReport::decode(count, body);
        let _ = rtcp::ReceiverReport::decode(count, body);
        let _ = rtcp::Sdes::decode(count, body);
        let _ = rtcp::Bye::decode(count, body);
        let _ = rtcp::App::decode(count, body);
        let _ = rtcp::Nack::decode(body).map(|n| n.lost().count());
        let _ = rtcp::Pli::decode(body);
        let _ = rtcp::Fir::decode(body);
        let _ = rtcp::Remb::decode(body);
        let _ = rtcp::TransportCc::decode(body).map(|t| t.packets().count());
        let _ = rtcp::Xr::decode(body);
    }
    // A body straight from the input, as every type (the framing above rarely lets one by).
    if let Some((&count, body)) = data.split_first() {
        for packet_type in
            [rtcp::SR, rtcp::RR, rtcp::SDES, rtcp::BYE, rtcp::APP, rtcp::RTPFB, rtcp::PSFB, rtcp::XR]
        {
            let header = rtcp::RtcpHeader { padding: false, count: count & 0x1f, packet_type, length: 0 };
            if let Ok(p) = RtcpPacket::decode(header, body) {
                let _ = p.encode(&mut Vec::new());
            }
        }
    }
    for p in RtcpPacket::parse_all(data).flatten() {
        let mut out = Vec::new();
        if p.encode(&mut out).is_ok() {
            let back: Vec<_> = RtcpPacket::parse_all(&out).collect();
            assert_eq!(back.len(), 1, "what we write frames as one packet");
        }
    }
});
