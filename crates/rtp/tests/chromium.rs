//! Real packets from Chromium 156, parsed with the crate's public API: RTP (Opus, VP8, RTX
//! retransmission and padding-only probe) and RTCP (SR + SDES, SR + SDES + XR, RR + XR,
//! transport-cc feedback, generic NACK) that one headless Chromium sent to another with
//! `--disable-webrtc-encryption`, captured on the wire by `tests/rtp-capture/capture.sh`. The
//! datagrams and the SDP offer and answer are in `tests/fixtures/chromium/` (its README says
//! how and when they were captured). Payload types, extension ids and SSRCs are taken from the
//! SDP, as a receiver would; the concrete values asserted were decoded by hand from the bytes.

use peerlink_rtp::ext::{uri, AudioLevel};
use peerlink_rtp::rtcp::{self, RtcpPacket, Shape, XrBlock};
use peerlink_rtp::{is_rtcp, is_rtp_or_rtcp, ExtensionMap, RtpPacket, Serial16};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chromium").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What this test needs from one m-section of Chromium's SDP.
#[derive(Debug, Default)]
struct Section {
    kind: String,
    mid: String,
    /// payload type -> encoding name ("opus/48000/2").
    rtpmap: BTreeMap<u8, String>,
    /// payload type -> fmtp parameters.
    fmtp: BTreeMap<u8, String>,
    /// extension id -> URI.
    extmap: BTreeMap<u8, String>,
    /// ssrc -> cname.
    cnames: BTreeMap<u32, String>,
    /// a=ssrc-group:FID primary rtx.
    fid: Option<(u32, u32)>,
}

impl Section {
    fn payload_type(&self, encoding: &str) -> u8 {
        let prefix = format!("{}/", encoding.to_ascii_lowercase());
        *self.rtpmap.iter().find(|(_, n)| n.to_ascii_lowercase().starts_with(&prefix)).unwrap().0
    }

    /// The RTX payload type whose apt is `pt`.
    fn rtx_for(&self, pt: u8) -> u8 {
        *self.fmtp.iter().find(|(_, f)| **f == format!("apt={pt}")).unwrap().0
    }

    fn extension_map(&self) -> (ExtensionMap, Vec<&str>) {
        let mut map = ExtensionMap::default();
        let mut unknown = Vec::new();
        for (&id, u) in &self.extmap {
            if !map.insert(id, u) {
                unknown.push(u.as_str());
            }
        }
        (map, unknown)
    }
}

fn sdp(name: &str) -> Vec<Section> {
    let text = String::from_utf8(fixture(name)).unwrap();
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            sections.push(Section { kind: m.split(' ').next().unwrap().into(), ..Default::default() });
            continue;
        }
        let Some(s) = sections.last_mut() else { continue };
        let split = |rest: &str| {
            let (a, b) = rest.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            s.mid = mid.into();
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let (pt, name) = split(rest);
            s.rtpmap.insert(pt.parse().unwrap(), name);
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = split(rest);
            s.fmtp.insert(pt.parse().unwrap(), params);
        } else if let Some(rest) = line.strip_prefix("a=extmap:") {
            let (id, u) = split(rest);
            s.extmap.insert(id.parse().unwrap(), u);
        } else if let Some(rest) = line.strip_prefix("a=ssrc-group:FID ") {
            let (a, b) = split(rest);
            s.fid = Some((a.parse().unwrap(), b.parse().unwrap()));
        } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
            let (ssrc, attr) = split(rest);
            if let Some(cname) = attr.strip_prefix("cname:") {
                s.cnames.insert(ssrc.parse().unwrap(), cname.into());
            }
        }
    }
    sections
}

/// The offer's audio and video sections (the sender's SSRCs are in the offer; the answerer
/// only receives).
fn offer() -> (Section, Section) {
    let mut s = sdp("offer.sdp").into_iter();
    let (audio, video) = (s.next().unwrap(), s.next().unwrap());
    assert_eq!((audio.kind.as_str(), audio.mid.as_str()), ("audio", "0"));
    assert_eq!((video.kind.as_str(), video.mid.as_str()), ("video", "1"));
    (audio, video)
}

/// The extension elements in wire order, for re-encoding.
fn elements<'a>(p: &RtpPacket<'a>) -> Vec<(u8, &'a [u8])> {
    p.extensions().map(|e| e.unwrap()).collect()
}

/// Parses an RTP fixture and checks that writing its header, extensions, payload and padding
/// back with `RtpHeader::encode` gives the very bytes Chromium sent.
fn rtp(name: &str) -> (Vec<u8>, u8, u32, u16) {
    let buf = fixture(name);
    assert!(is_rtp_or_rtcp(&buf) && !is_rtcp(&buf), "{name}");
    assert_eq!(buf[0] >> 6, 2, "{name}: version");
    let p = RtpPacket::parse(&buf).unwrap();
    assert_eq!(p.csrcs().count(), 0, "{name}");
    assert_eq!(p.extension_profile(), Some(0xBEDE), "{name}: one-byte extension elements");
    let mut again = Vec::new();
    let padding = u8::try_from(p.padding_len()).unwrap();
    p.to_header().encode(&elements(&p), p.payload(), padding, &mut again).unwrap();
    assert_eq!(again, buf, "{name}: re-encoded");
    (buf.clone(), p.payload_type(), p.ssrc(), p.sequence_number().0)
}

#[test]
fn the_sdp_negotiated_the_same_extension_ids_both_ways() {
    let (offered, answered) = (sdp("offer.sdp"), sdp("answer.sdp"));
    assert_eq!((offered.len(), answered.len()), (2, 2));
    for (o, a) in offered.iter().zip(&answered) {
        assert_eq!(o.kind, a.kind);
        assert_eq!(o.extmap, a.extmap, "{}", o.kind);
    }
    let (audio, video) = offer();
    assert_eq!(audio.payload_type("opus"), 111);
    assert_eq!(video.payload_type("VP8"), 96);
    assert_eq!(video.rtx_for(96), 97);

    let (map, unknown) = audio.extension_map();
    assert!(unknown.is_empty(), "{unknown:?}");
    assert_eq!(map.audio_level, Some(1));
    assert_eq!(map.abs_send_time, Some(2));
    assert_eq!(map.transport_cc, Some(3));
    assert_eq!(map.mid, Some(4));

    let (map, mut unknown) = video.extension_map();
    assert_eq!(map.abs_send_time, Some(2));
    assert_eq!(map.transport_cc, Some(3));
    assert_eq!(map.mid, Some(4));
    assert_eq!(map.playout_delay, Some(5));
    assert_eq!(map.rid, Some(10));
    assert_eq!(map.repaired_rid, Some(11));
    assert_eq!(map.video_orientation, Some(13));
    // Offered by Chromium, not parsed by the crate (it never needs them); the elements still
    // iterate as raw bytes.
    unknown.sort_unstable();
    assert_eq!(
        unknown,
        [
            "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
            "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
            "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
            "urn:ietf:params:rtp-hdrext:toffset",
        ]
    );
    assert_eq!(video.extmap[&7], "http://www.webrtc.org/experiments/rtp-hdrext/video-timing");
    assert_eq!(audio.extmap[&1], uri::AUDIO_LEVEL);
}

#[test]
fn opus_packets_carry_audio_level_mid_and_transport_sequence() {
    let (audio, _) = offer();
    let (map, _) = audio.extension_map();
    let ssrc = *audio.cnames.keys().next().unwrap();

    // The stream's first packet: marker set (start of a talkspurt), mid until the receiver's
    // RTCP acknowledges the stream, and silence (-127 dBov) with the voice flag set.
    let (buf, pt, s, seq) = rtp("rtp-opus-first.bin");
    assert_eq!((pt, s, seq), (audio.payload_type("opus"), ssrc, 22322));
    let p = RtpPacket::parse(&buf).unwrap();
    assert!(p.marker());
    assert_eq!(p.timestamp().0, 0x3E17_7E69);
    let ids: Vec<u8> = elements(&p).iter().map(|e| e.0).collect();
    assert_eq!(ids, [2, 3, 4, 1]); // abs-send-time, transport-cc, mid, audio level
    let h = map.read(p.extensions());
    assert_eq!(h.mid, Some("0"));
    assert_eq!(h.audio_level, Some(AudioLevel { voice: true, level: 127 }));
    assert_eq!(h.transport_cc.unwrap().0, 1);
    assert_eq!(h.abs_send_time.unwrap().0, 0xF2_6907);
    assert_eq!(p.payload().len(), 60 - 12 - 16);

    // 123 packets (20 ms each) later: no mid any more, the fake microphone's tone at -60 dBov.
    let (buf, pt, s, seq) = rtp("rtp-opus.bin");
    assert_eq!((pt, s, seq), (111, ssrc, 22445));
    let p = RtpPacket::parse(&buf).unwrap();
    assert!(!p.marker());
    assert_eq!(p.timestamp().0.wrapping_sub(0x3E17_7E69), 123 * 960);
    let h = map.read(p.extensions());
    assert_eq!(h.mid, None);
    let level = h.audio_level.unwrap();
    assert!(level.voice && (1..127).contains(&level.level), "{level:?}");
    assert_eq!(level.level, 60);
    assert_eq!(h.transport_cc.unwrap().0, 0x117);
}

/// The VP8 payload descriptor (RFC 7741 §4.2): its length, and whether the packet starts a
/// partition (S) of a key frame, with the key frame's size (RFC 6386 §9.1).
fn vp8(payload: &[u8]) -> (usize, bool, Option<(u16, u16)>) {
    let mut at = 1;
    if payload[0] & 0x80 != 0 {
        let ext = payload[1];
        at += 1;
        if ext & 0x80 != 0 {
            at += if payload[at] & 0x80 != 0 { 2 } else { 1 };
        }
        at += usize::from(ext & 0x40 != 0) + usize::from(ext & 0x30 != 0);
    }
    let start = payload[0] & 0x10 != 0 && payload[0] & 0x0f == 0;
    let frame = &payload[at..];
    let key = start && frame[0] & 1 == 0;
    let size = key.then(|| {
        assert_eq!(frame[3..6], [0x9d, 0x01, 0x2a], "key frame start code");
        let dim = |i: usize| u16::from_le_bytes([frame[i], frame[i + 1]]) & 0x3fff;
        (dim(6), dim(8))
    });
    (at, start, size)
}

#[test]
fn vp8_packets_carry_abs_send_time_transport_sequence_and_mid() {
    let (_, video) = offer();
    let (map, _) = video.extension_map();
    let (primary, _) = video.fid.unwrap();

    let (buf, pt, ssrc, seq) = rtp("rtp-vp8-first.bin");
    assert_eq!((pt, ssrc, seq), (video.payload_type("VP8"), primary, 12197));
    let p = RtpPacket::parse(&buf).unwrap();
    assert!(!p.marker());
    assert_eq!(p.timestamp().0, 0xF223_6392);
    let h = map.read(p.extensions());
    assert_eq!(h.mid, Some("1"));
    assert_eq!(h.transport_cc.unwrap().0, 5);
    assert_eq!(h.abs_send_time.unwrap().0, 0xF2_9A52);
    assert_eq!((h.audio_level, h.video_orientation, h.playout_delay), (None, None, None));
    // The first packet of the first frame: a 640x480 key frame from the fake camera.
    assert_eq!(vp8(p.payload()), (4, true, Some((640, 480))));

    // A later frame's last packet: marker, no mid, and video-timing (id 7, 13 bytes), which
    // the crate does not interpret but iterates.
    let (buf, pt, ssrc, seq) = rtp("rtp-vp8-marker.bin");
    assert_eq!((pt, ssrc, seq), (96, primary, 12297));
    let p = RtpPacket::parse(&buf).unwrap();
    assert!(p.marker());
    let h = map.read(p.extensions());
    assert_eq!(h.mid, None);
    assert_eq!(h.transport_cc.unwrap().0, 0xD6);
    assert_eq!(p.extensions().get(7).map(<[u8]>::len), Some(13));
    assert_eq!(elements(&p).iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3, 7]);
    let (_, start, key) = vp8(p.payload());
    assert!(!start && key.is_none());
}

#[test]
fn rtx_carries_a_nacked_packet_and_padding_only_probes() {
    let (_, video) = offer();
    let (map, _) = video.extension_map();
    let (primary, rtx_ssrc) = video.fid.unwrap();
    let rtx_pt = video.rtx_for(video.payload_type("VP8"));

    // A retransmission (RFC 4588 §4): the original sequence number first, then the original
    // payload; the timestamp is the original's.
    let (buf, pt, ssrc, _) = rtp("rtp-rtx.bin");
    assert_eq!((pt, ssrc), (rtx_pt, rtx_ssrc));
    let p = RtpPacket::parse(&buf).unwrap();
    assert_eq!(p.timestamp().0, 0xF224_F7DE);
    let osn = u16::from_be_bytes([p.payload()[0], p.payload()[1]]);
    assert_eq!(osn, 12253);
    assert_eq!(map.read(p.extensions()).transport_cc.unwrap().0, 0x87);
    // The NACK captured asks for exactly that packet of the primary stream.
    let nack = fixture("rtcp-nack.bin");
    let packets: Vec<_> = RtcpPacket::parse_all(&nack).map(|p| p.unwrap()).collect();
    let [RtcpPacket::Nack(n)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!(n.media_ssrc, primary);
    assert_eq!(n.lost().collect::<Vec<_>>(), [Serial16(osn)]);
    // The original payload is a VP8 packet that does not start a frame.
    assert!(!vp8(&p.payload()[2..]).1);

    // A padding-only packet (bandwidth probe before media flowed): timestamp 0, no payload,
    // 255 bytes of padding, mid still sent.
    let (buf, pt, ssrc, _) = rtp("rtp-rtx-padding.bin");
    assert_eq!((pt, ssrc), (rtx_pt, rtx_ssrc));
    let p = RtpPacket::parse(&buf).unwrap();
    assert_eq!(p.timestamp().0, 0);
    assert!(p.payload().is_empty());
    assert_eq!(p.padding_len(), 255);
    let h = map.read(p.extensions());
    assert_eq!(h.mid, Some("1"));
    assert_eq!(h.transport_cc.unwrap().0, 4);
}

fn rtcp_all(name: &str) -> (Vec<u8>, Vec<RtcpPacket<'static>>) {
    let buf: &'static [u8] = fixture(name).leak();
    assert!(is_rtp_or_rtcp(buf) && is_rtcp(buf), "{name}");
    let packets: Vec<_> = RtcpPacket::parse_all(buf).map(|p| p.unwrap()).collect();
    (buf.to_vec(), packets)
}

fn encode_all(packets: &[RtcpPacket<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        p.encode(&mut out).unwrap();
    }
    out
}

#[test]
fn sender_reports_come_with_sdes_cname_and_dlrr() {
    let (audio, video) = offer();
    let (primary, _) = video.fid.unwrap();
    let cname = video.cnames[&primary].as_bytes();
    assert_eq!(audio.cnames.values().next().unwrap().as_bytes(), cname);

    let (buf, packets) = rtcp_all("rtcp-sr-sdes.bin");
    assert_eq!(rtcp::validate(&buf), Ok(Shape::Compound));
    let [RtcpPacket::SenderReport(sr), RtcpPacket::Sdes(sdes)] = &packets[..] else { panic!("{packets:?}") };
    // The video stream's report: its SSRC as in the RTP packets, an RTP time a little after
    // the first frame's, and no report blocks (this side receives nothing).
    assert_eq!(sr.ssrc, primary);
    assert_eq!(sr.ntp_time, 0xEEBE_4A3D_17B3_95C4);
    assert_eq!(sr.rtp_time, 0xF224_0220);
    assert!(sr.rtp_time.wrapping_sub(0xF223_6392) < 90_000, "within a second of the first frame");
    assert_eq!((sr.packet_count, sr.octet_count), (31, 22_650));
    assert!(sr.reports.is_empty());
    assert_eq!(sdes.chunks.len(), 1);
    assert_eq!(sdes.chunks[0].ssrc, primary);
    assert_eq!(sdes.chunks[0].items, [(rtcp::report::SDES_CNAME, cname)]);
    assert_eq!(encode_all(&packets), buf);

    // Later, with an answer to the receiver's RRTR (a=rtcp-xr:rcvr-rtt=all): a DLRR block.
    let (buf, packets) = rtcp_all("rtcp-sr-sdes-xr.bin");
    let [RtcpPacket::SenderReport(sr2), RtcpPacket::Sdes(_), RtcpPacket::Xr(xr)] = &packets[..] else {
        panic!("{packets:?}")
    };
    assert_eq!(sr2.ssrc, primary);
    assert_eq!(sr2.packet_count, 90);
    assert!(sr2.ntp_time > sr.ntp_time);
    assert_eq!(xr.ssrc, primary);
    let [XrBlock::Dlrr(subs)] = &xr.blocks[..] else { panic!("{xr:?}") };
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].ssrc, subs[0].last_rr, subs[0].delay_since_last_rr), (1, 0x4A3D_E39C, 0x2FDB));
    assert_eq!(encode_all(&packets), buf);
}

#[test]
fn the_receiver_reports_on_video_and_rtx_and_sends_rrtr() {
    let (_, video) = offer();
    let (primary, rtx) = video.fid.unwrap();
    let (buf, packets) = rtcp_all("rtcp-rr-xr.bin");
    // Compound, starting with the RR, but with no SDES: Chromium's receive-only side leaves
    // it out (RFC 3550 §6.1 asks for a CNAME in every compound packet).
    assert_eq!(rtcp::validate(&buf), Ok(Shape::Compound));
    let [RtcpPacket::ReceiverReport(rr), RtcpPacket::Xr(xr)] = &packets[..] else { panic!("{packets:?}") };
    // A receive-only endpoint reports as SSRC 1 (the NACK and XR say the same).
    assert_eq!(rr.ssrc, 1);
    let ssrcs: Vec<u32> = rr.reports.iter().map(|b| b.ssrc).collect();
    assert_eq!(ssrcs, [rtx, primary]);
    let (r, v) = (&rr.reports[0], &rr.reports[1]);
    assert_eq!((r.highest_sequence, r.jitter, r.fraction_lost, r.cumulative_lost), (0x7C0C, 0x232, 0, 0));
    assert_eq!((v.highest_sequence, v.jitter, v.fraction_lost, v.cumulative_lost), (0x2FB4, 0xF5, 0, 0));
    // Before the first SR arrived: no LSR/DLSR yet.
    assert_eq!((v.last_sr, v.delay_since_last_sr), (0, 0));
    assert_eq!(xr.ssrc, 1);
    assert_eq!(xr.blocks, [XrBlock::Rrtr { ntp_time: 0xEEBE_4A3D_179C_D812 }]);
    assert_eq!(encode_all(&packets), buf);

    let nack = fixture("rtcp-nack.bin");
    assert_eq!(rtcp::validate(&nack), Ok(Shape::ReducedSize)); // a=rtcp-rsize
    let packets: Vec<_> = RtcpPacket::parse_all(&nack).map(|p| p.unwrap()).collect();
    let [RtcpPacket::Nack(n)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!((n.sender_ssrc, n.media_ssrc), (1, primary));
    assert_eq!((n.pairs[0].pid, n.pairs[0].blp), (12253, 0));
    assert_eq!(encode_all(&packets), nack);
}

#[test]
fn transport_cc_feedback_parses() {
    let (audio, video) = offer();
    let (primary, _) = video.fid.unwrap();
    let audio_ssrc = *audio.cnames.keys().next().unwrap();

    // The first feedback: transport sequence numbers 1..=6 all received (one run-length
    // chunk of small deltas); 1 is the first Opus packet's, as its extension said.
    let (buf, packets) = rtcp_all("rtcp-twcc-first.bin");
    assert_eq!(rtcp::validate(&buf), Ok(Shape::ReducedSize));
    let [RtcpPacket::TransportCc(fb)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!((fb.sender_ssrc, fb.media_ssrc), (0xFA17_FA17, primary));
    assert_eq!((fb.base_sequence, fb.deltas.len(), fb.feedback_count), (1, 6, 0));
    assert_eq!(fb.reference_time, 0x04_0117);
    let deltas: Vec<_> = fb.deltas.iter().map(|d| d.unwrap()).collect();
    assert_eq!(deltas, [0xC1, 0x4F, 0x50, 0x18, 0x09, 0x2D]);
    let seqs: Vec<u16> = fb.packets().map(|p| p.sequence.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(encode_all(&packets), buf);

    // One that reports a lost packet (a two-bit status vector chunk) and ends with RTCP
    // padding (P set, one byte): the media SSRC here is the audio stream's.
    let (buf, packets) = rtcp_all("rtcp-twcc-loss.bin");
    assert_eq!(buf[0] & 0x20, 0x20);
    let [RtcpPacket::TransportCc(fb)] = &packets[..] else { panic!("{packets:?}") };
    assert_eq!((fb.sender_ssrc, fb.media_ssrc), (0xFA17_FA17, audio_ssrc));
    assert_eq!((fb.base_sequence, fb.feedback_count, fb.reference_time), (0x41, 9, 0x04_0120));
    assert_eq!(fb.deltas, [Some(0xD3), Some(0x34), Some(0), None, Some(0x1A), Some(0x51)]);
    let lost: Vec<u16> = fb.packets().filter(|p| p.delta.is_none()).map(|p| p.sequence.0).collect();
    assert_eq!(lost, [0x44]);
    // Re-encoding gives the same feedback and the same bytes but for the one status chunk:
    // Chromium wrote a two-bit status vector (0xD514: six statuses and an unused 0), the
    // crate writes a one-bit one (0xBB00); both are valid for small deltas and losses only.
    let again = encode_all(&packets);
    let back: Vec<_> = RtcpPacket::parse_all(&again).map(|p| p.unwrap()).collect();
    assert_eq!(back, packets);
    assert_eq!((&buf[20..22], &again[20..22]), (&[0xD5, 0x14][..], &[0xBB, 0x00][..]));
    assert_eq!((&buf[..20], &buf[22..]), (&again[..20], &again[22..]));
}
