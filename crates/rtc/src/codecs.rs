//! Codec and header-extension negotiation for audio and video sections (RFC 8829 §5.2.1,
//! §5.3.1; RFC 3264 §6.1): what we offer, and how an offered format is matched against ours.
//!
//! Matching rules, per codec:
//! - Opus: `opus/48000/2`; the answer keeps `useinbandfec` and the stereo flags the offer
//!   asked for (RFC 7587 §7).
//! - VP8, AV1: name and clock rate; AV1's `profile` must agree (default 0).
//! - VP9: `profile-id` must agree (default 0).
//! - H.264 (RFC 6184 §8.2.2): `packetization-mode` must agree (default 0) and the profile
//!   named by `profile-level-id` must be the same (Constrained Baseline, Baseline, Main,
//!   High...); the level may differ. We decode and send any level, so an answer echoes the
//!   offer's `profile-level-id` and keeps `level-asymmetry-allowed=1`.
//! - RTX (RFC 4588): a format `rtx/<clock>` whose `apt` names an accepted format goes with it.
//! - red and ulpfec are not accepted (left out of the answer); the peer sends without them.

use peerlink_media::Codec;
use peerlink_rtp::ext::uri;
use peerlink_sdp::Media;

/// A negotiated (or offered) payload format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecParams {
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Audio channels (2 for Opus); 0 for video.
    pub channels: u8,
    /// The `a=fmtp` parameters, `""` when there are none.
    pub fmtp: String,
    /// The payload type of its RTX format, when negotiated.
    pub rtx: Option<u8>,
    /// `a=rtcp-fb` values: `nack`, `nack pli`, `ccm fir`, `transport-cc`.
    pub feedback: Vec<String>,
}

impl CodecParams {
    /// The encoding name as SDP writes it (`opus`, `VP8`, `VP9`, `H264`, `AV1`).
    pub fn encoding_name(&self) -> &'static str {
        encoding_name(self.codec)
    }

    /// `audio/opus`, `video/VP8`, ... (the form of WebRTC's `mimeType`).
    pub fn mime_type(&self) -> String {
        let kind = if self.codec == Codec::Opus { "audio" } else { "video" };
        format!("{kind}/{}", self.encoding_name())
    }

    /// A parameter of the fmtp line (`profile-level-id`, `packetization-mode`, ...).
    pub fn fmtp_param(&self, name: &str) -> Option<&str> {
        fmtp_param(&self.fmtp, name)
    }

    /// For H.264: the profile named by `profile-level-id` (default Constrained Baseline).
    pub fn h264_profile(&self) -> Option<H264Profile> {
        (self.codec == Codec::H264)
            .then(|| h264_profile(self.fmtp_param("profile-level-id").unwrap_or("42e01f")))
    }

    /// For H.264: packetization mode 1 (the usual) or 0.
    pub fn h264_mode(&self) -> peerlink_media::H264Mode {
        match self.fmtp_param("packetization-mode") {
            Some("1") => peerlink_media::H264Mode::NonInterleaved,
            _ if self.codec == Codec::H264 => peerlink_media::H264Mode::SingleNal,
            _ => peerlink_media::H264Mode::NonInterleaved,
        }
    }

    pub fn has_feedback(&self, value: &str) -> bool {
        self.feedback.iter().any(|f| f == value)
    }
}

fn encoding_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vp8 => "VP8",
        Codec::Vp9 => "VP9",
        Codec::H264 => "H264",
        Codec::Av1 => "AV1",
        _ => "unknown",
    }
}

/// H.264 profiles as RFC 6184 §8.1 and its `profile-level-id` name them (the profile_idc
/// with the constraint flags that change what a decoder must support).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum H264Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    Extended,
    ConstrainedHigh,
    High,
    High10,
    High422,
    High444,
    Other(u8),
}

/// The profile of a `profile-level-id` (six hex digits: profile_idc, profile-iop, level_idc).
pub fn h264_profile(profile_level_id: &str) -> H264Profile {
    let v = u32::from_str_radix(profile_level_id.trim(), 16).unwrap_or(0x42e01f);
    let idc = (v >> 16) as u8;
    let iop = (v >> 8) as u8;
    let (cs0, cs1, cs3) = (iop & 0x80 != 0, iop & 0x40 != 0, iop & 0x10 != 0);
    match idc {
        // Constrained Baseline: Baseline with constraint_set1, or Main/Extended with the
        // flags that restrict them to it (RFC 6184 Table 5).
        0x42 if cs1 => H264Profile::ConstrainedBaseline,
        0x4d if cs0 => H264Profile::ConstrainedBaseline,
        0x58 if cs0 && cs1 => H264Profile::ConstrainedBaseline,
        0x42 => H264Profile::Baseline,
        0x4d => H264Profile::Main,
        0x58 => H264Profile::Extended,
        0x64 if iop & 0x0c == 0x0c => H264Profile::ConstrainedHigh,
        0x64 => H264Profile::High,
        0x6e if !cs3 => H264Profile::High10,
        0x7a if !cs3 => H264Profile::High422,
        0xf4 if !cs3 => H264Profile::High444,
        other => H264Profile::Other(other),
    }
}

/// A parameter of an fmtp value (`a=b;c=d`).
pub fn fmtp_param<'a>(fmtp: &'a str, name: &str) -> Option<&'a str> {
    fmtp.split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

const VIDEO_FEEDBACK: [&str; 4] = ["nack", "nack pli", "ccm fir", "transport-cc"];

/// What we offer for `kind` ("audio" or "video"), in preference order. Payload types follow
/// Chromium's numbering where it has one.
pub fn supported_codecs(kind: &str) -> Vec<CodecParams> {
    let video = |codec, pt, rtx, fmtp: &str| CodecParams {
        codec,
        payload_type: pt,
        clock_rate: 90_000,
        channels: 0,
        fmtp: fmtp.to_owned(),
        rtx: Some(rtx),
        feedback: VIDEO_FEEDBACK.iter().map(|s| (*s).to_owned()).collect(),
    };
    match kind {
        "audio" => vec![CodecParams {
            codec: Codec::Opus,
            payload_type: 111,
            clock_rate: 48_000,
            channels: 2,
            fmtp: "minptime=10;useinbandfec=1".to_owned(),
            rtx: None,
            feedback: vec!["transport-cc".to_owned()],
        }],
        "video" => vec![
            video(Codec::Vp8, 96, 97, ""),
            video(Codec::Vp9, 98, 99, "profile-id=0"),
            video(
                Codec::H264,
                102,
                103,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
            video(
                Codec::H264,
                106,
                107,
                "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
            ),
            video(
                Codec::H264,
                112,
                113,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
            ),
            video(Codec::Av1, 45, 46, ""),
        ],
        _ => Vec::new(),
    }
}

/// A format of a remote section: `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` of one payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFormat {
    pub pt: u8,
    pub name: String,
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: String,
    pub feedback: Vec<String>,
}

/// The formats of a section, in the order of its `m=` line (the offerer's preference).
pub(crate) fn remote_formats(m: &Media) -> Vec<RemoteFormat> {
    let mut out: Vec<RemoteFormat> = Vec::new();
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let Some(map) = m.attributes("rtpmap").find_map(|v| {
            let (p, rest) = v.split_once(' ')?;
            (p.trim().parse::<u8>().ok()? == pt).then_some(rest.trim())
        }) else {
            continue;
        };
        let mut parts = map.split('/');
        let name = parts.next().unwrap_or("").to_owned();
        let Some(clock_rate) = parts.next().and_then(|c| c.parse().ok()) else { continue };
        let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let with_pt = |v: &str| -> Option<String> {
            let (p, rest) = v.split_once(' ')?;
            (p.trim() == pt.to_string() || p.trim() == "*").then(|| rest.trim().to_owned())
        };
        let fmtp = m.attributes("fmtp").find_map(with_pt).unwrap_or_default();
        let feedback = m.attributes("rtcp-fb").filter_map(with_pt).collect();
        out.push(RemoteFormat { pt, name, clock_rate, channels, fmtp, feedback });
    }
    out
}

fn codec_of(name: &str) -> Option<Codec> {
    match name.to_ascii_lowercase().as_str() {
        "opus" => Some(Codec::Opus),
        "vp8" => Some(Codec::Vp8),
        "vp9" => Some(Codec::Vp9),
        "h264" => Some(Codec::H264),
        "av1" | "av1x" => Some(Codec::Av1),
        _ => None,
    }
}

/// Whether remote format `r` is the same format as our `local` (RFC 8829 §5.3.1 matching,
/// with the per-codec rules of the module documentation).
fn same_format(r: &RemoteFormat, local: &CodecParams) -> bool {
    if codec_of(&r.name) != Some(local.codec) || r.clock_rate != local.clock_rate {
        return false;
    }
    let param = |fmtp: &str, name: &str, default: &str| fmtp_param(fmtp, name).unwrap_or(default).to_owned();
    match local.codec {
        Codec::Opus => r.channels == 2,
        Codec::Vp9 => param(&r.fmtp, "profile-id", "0") == param(&local.fmtp, "profile-id", "0"),
        Codec::Av1 => param(&r.fmtp, "profile", "0") == param(&local.fmtp, "profile", "0"),
        Codec::H264 => {
            param(&r.fmtp, "packetization-mode", "0") == param(&local.fmtp, "packetization-mode", "0")
                && h264_profile(&param(&r.fmtp, "profile-level-id", "42e01f"))
                    == h264_profile(&param(&local.fmtp, "profile-level-id", "42e01f"))
        }
        _ => true,
    }
}

/// The answer's formats for an offered section: each offered format that matches one of
/// `ours` (in the offer's order, with the offer's payload types), with its RTX format and the
/// feedback both sides support.
pub(crate) fn answer_formats(offered: &[RemoteFormat], ours: &[CodecParams]) -> Vec<CodecParams> {
    let mut out = Vec::new();
    for r in offered {
        let Some(local) = ours.iter().find(|l| same_format(r, l)) else { continue };
        if out.iter().any(|c: &CodecParams| c.payload_type == r.pt) {
            continue;
        }
        let rtx = offered
            .iter()
            .find(|x| {
                x.name.eq_ignore_ascii_case("rtx")
                    && x.clock_rate == r.clock_rate
                    && fmtp_param(&x.fmtp, "apt").and_then(|a| a.parse::<u8>().ok()) == Some(r.pt)
            })
            .filter(|_| local.rtx.is_some())
            .map(|x| x.pt);
        let fmtp = match local.codec {
            Codec::Opus => {
                let mut p = vec!["minptime=10".to_owned()];
                if fmtp_param(&r.fmtp, "useinbandfec") == Some("1") {
                    p.push("useinbandfec=1".to_owned());
                }
                for flag in ["stereo", "sprop-stereo"] {
                    if let Some(v) = fmtp_param(&r.fmtp, flag) {
                        p.push(format!("{flag}={v}"));
                    }
                }
                p.join(";")
            }
            // Echo the offer's H.264, VP9 and AV1 parameters: the profile agrees (checked),
            // and we take any level.
            _ => r.fmtp.clone(),
        };
        let feedback = r.feedback.iter().filter(|f| local.feedback.contains(f)).cloned().collect();
        out.push(CodecParams {
            codec: local.codec,
            payload_type: r.pt,
            clock_rate: r.clock_rate,
            channels: local.channels,
            fmtp,
            rtx,
            feedback,
        });
    }
    out
}

/// The codecs of an answer to our offer: ours as the answer names them (its payload types
/// must be ours; RFC 3264 §6.1 lets it choose a subset).
pub(crate) fn accepted_formats(answered: &[RemoteFormat], offered: &[CodecParams]) -> Vec<CodecParams> {
    let mut out = Vec::new();
    for r in answered {
        let Some(local) = offered.iter().find(|l| l.payload_type == r.pt && same_format(r, l)) else {
            continue;
        };
        let rtx = local.rtx.filter(|rtx| answered.iter().any(|x| x.pt == *rtx));
        let feedback = r.feedback.iter().filter(|f| local.feedback.contains(f)).cloned().collect();
        out.push(CodecParams { rtx, feedback, fmtp: r.fmtp.clone(), ..local.clone() });
    }
    out
}

/// Our formats for a new section of a BUNDLE group whose other sections use `taken`: a
/// format the group already has keeps its payload type (and RTX's), and ours that would
/// collide with a payload type used for something else get a free one (a payload type means
/// one format in a whole BUNDLE group: RFC 8843 §9.1).
pub(crate) fn renumber(ours: Vec<CodecParams>, taken: &[CodecParams]) -> Vec<CodecParams> {
    let mut used: Vec<u8> = taken.iter().flat_map(|c| [Some(c.payload_type), c.rtx]).flatten().collect();
    let as_remote = |c: &CodecParams| RemoteFormat {
        pt: c.payload_type,
        name: c.encoding_name().to_owned(),
        clock_rate: c.clock_rate,
        channels: c.channels,
        fmtp: c.fmtp.clone(),
        feedback: Vec::new(),
    };
    let mut out = Vec::new();
    for mut c in ours {
        match taken.iter().find(|t| same_format(&as_remote(t), &c)) {
            Some(same) => {
                c.payload_type = same.payload_type;
                if c.rtx.is_some() {
                    c.rtx = same.rtx.or_else(|| free_payload_type(&used));
                }
            }
            None => {
                if used.contains(&c.payload_type) {
                    let Some(free) = free_payload_type(&used) else { continue };
                    c.payload_type = free;
                }
                used.push(c.payload_type);
                if c.rtx.is_some_and(|r| used.contains(&r)) {
                    c.rtx = free_payload_type(&used);
                }
            }
        }
        used.push(c.payload_type);
        used.extend(c.rtx);
        out.push(c);
    }
    out
}

fn free_payload_type(used: &[u8]) -> Option<u8> {
    (96..=127).chain(35..=63).find(|pt| !used.contains(pt))
}

/// Extension ids for a new section of a BUNDLE group whose other sections use `taken`: a URI
/// the group has keeps its id; an id the group uses for another URI is replaced by a free one.
pub(crate) fn renumber_extensions(ours: Vec<(u8, String)>, taken: &[(u8, String)]) -> Vec<(u8, String)> {
    let mut used: Vec<u8> = taken.iter().map(|(id, _)| *id).collect();
    let mut out = Vec::new();
    for (id, uri) in ours {
        let id = match taken.iter().find(|(_, u)| *u == uri) {
            Some((same, _)) => *same,
            None if used.contains(&id) => match (1..=14).find(|i| !used.contains(i)) {
                Some(free) => free,
                None => continue,
            },
            None => id,
        };
        used.push(id);
        out.push((id, uri));
    }
    out
}

/// Header extensions we understand and offer, with Chromium's ids (a BUNDLE group keeps one
/// id per URI across its sections).
pub(crate) fn supported_extensions(kind: &str) -> Vec<(u8, &'static str)> {
    let mut v = vec![(3, uri::TRANSPORT_CC), (4, uri::MID)];
    if kind == "audio" {
        v.insert(0, (1, uri::AUDIO_LEVEL));
    } else {
        v.extend([(10, uri::RID), (11, uri::REPAIRED_RID)]);
    }
    v
}

/// `a=extmap` lines of a section as (id, uri); a direction suffix (`3/sendonly`) is dropped.
pub(crate) fn remote_extensions(m: &Media) -> Vec<(u8, String)> {
    m.attributes("extmap")
        .filter_map(|v| {
            let mut parts = v.split_whitespace();
            let id = parts.next()?.split('/').next()?.parse().ok()?;
            Some((id, parts.next()?.to_owned()))
        })
        .collect()
}

/// The answer keeps the offered extensions we understand, with the offer's ids.
pub(crate) fn answer_extensions(offered: &[(u8, String)], kind: &str) -> Vec<(u8, String)> {
    let ours = supported_extensions(kind);
    offered.iter().filter(|(_, u)| ours.iter().any(|(_, o)| o == u)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Media {
        let sdp = format!("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n{text}");
        peerlink_sdp::SessionDescription::parse(&sdp).unwrap().media.remove(0)
    }

    #[test]
    fn h264_profiles_follow_rfc_6184_table_5() {
        assert_eq!(h264_profile("42e01f"), H264Profile::ConstrainedBaseline);
        assert_eq!(h264_profile("42001f"), H264Profile::Baseline);
        assert_eq!(h264_profile("4d001f"), H264Profile::Main);
        assert_eq!(h264_profile("4d801f"), H264Profile::ConstrainedBaseline);
        assert_eq!(h264_profile("640c1f"), H264Profile::ConstrainedHigh);
        assert_eq!(h264_profile("64001f"), H264Profile::High);
        assert_eq!(h264_profile("f4001f"), H264Profile::High444);
    }

    #[test]
    fn an_offer_is_answered_with_the_formats_we_share_in_its_order() {
        let m = section(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 39 40 45 46 98 99 114 115 116\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
             a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
             a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
             a=rtpmap:104 H264/90000\r\na=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
             a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=104\r\n\
             a=rtpmap:39 H264/90000\r\na=fmtp:39 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640034\r\n\
             a=rtpmap:40 rtx/90000\r\na=fmtp:40 apt=39\r\n\
             a=rtpmap:45 AV1/90000\r\na=fmtp:45 level-idx=5;profile=0;tier=0\r\n\
             a=rtpmap:46 rtx/90000\r\na=fmtp:46 apt=45\r\n\
             a=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\n\
             a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\n\
             a=rtpmap:114 red/90000\r\na=rtpmap:115 rtx/90000\r\na=fmtp:115 apt=114\r\na=rtpmap:116 ulpfec/90000\r\n",
        );
        let answer = answer_formats(&remote_formats(&m), &supported_codecs("video"));
        let got: Vec<(u8, Codec, Option<u8>)> =
            answer.iter().map(|c| (c.payload_type, c.codec, c.rtx)).collect();
        // Baseline (42001f) is not Constrained Baseline: 102 is not ours; red and ulpfec are
        // left out.
        assert_eq!(
            got,
            [
                (96, Codec::Vp8, Some(97)),
                (104, Codec::H264, Some(105)),
                (39, Codec::H264, Some(40)),
                (45, Codec::Av1, Some(46)),
                (98, Codec::Vp9, Some(99))
            ]
        );
        assert_eq!(answer[0].feedback, ["transport-cc", "ccm fir", "nack", "nack pli"]);
        assert_eq!(answer[2].fmtp_param("profile-level-id"), Some("640034"));
        assert_eq!(answer[2].h264_profile(), Some(H264Profile::High));
    }

    #[test]
    fn opus_keeps_the_flags_the_offer_asked_for() {
        let m = section(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 0\r\na=rtpmap:111 opus/48000/2\r\n\
             a=fmtp:111 minptime=10;useinbandfec=1;stereo=1\r\na=rtcp-fb:111 transport-cc\r\n\
             a=rtpmap:63 red/48000/2\r\na=rtpmap:0 PCMU/8000\r\n",
        );
        let answer = answer_formats(&remote_formats(&m), &supported_codecs("audio"));
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].fmtp, "minptime=10;useinbandfec=1;stereo=1");
        assert_eq!(answer[0].payload_type, 111);
    }

    #[test]
    fn a_new_section_takes_the_group_s_numbers_and_avoids_its_collisions() {
        // The group (answered to a peer) uses 106 for H.264 mode 1 and 107 as its RTX, 96
        // for VP8 with 97, and extension 4 for something else than mid.
        let taken = vec![
            CodecParams {
                codec: Codec::H264,
                payload_type: 106,
                clock_rate: 90_000,
                channels: 0,
                fmtp: "packetization-mode=1;profile-level-id=42e01f".into(),
                rtx: Some(107),
                feedback: Vec::new(),
            },
            CodecParams {
                codec: Codec::Vp8,
                payload_type: 100,
                rtx: Some(101),
                ..supported_codecs("video")[0].clone()
            },
        ];
        let ours = renumber(supported_codecs("video"), &taken);
        let pt = |codec: Codec, mode: &str| {
            ours.iter()
                .find(|c| c.codec == codec && c.fmtp_param("packetization-mode").unwrap_or("1") == mode)
                .unwrap()
        };
        assert_eq!((pt(Codec::Vp8, "1").payload_type, pt(Codec::Vp8, "1").rtx), (100, Some(101)));
        let cb = ours
            .iter()
            .find(|c| {
                c.codec == Codec::H264 && c.fmtp.contains("packetization-mode=1;profile-level-id=42e01f")
            })
            .unwrap();
        assert_eq!((cb.payload_type, cb.rtx), (106, Some(107)));
        // Our mode-0 format (106 in our table) must not reuse the group's 106 or 107.
        let mode0 = pt(Codec::H264, "0");
        assert!(![100, 101, 106, 107].contains(&mode0.payload_type), "{mode0:?}");
        let mut all: Vec<u8> = ours.iter().flat_map(|c| [Some(c.payload_type), c.rtx]).flatten().collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "payload types used twice: {ours:?}");
        let ext = renumber_extensions(
            vec![(3, uri::TRANSPORT_CC.into()), (4, uri::MID.into())],
            &[(4, "urn:x".into()), (9, uri::MID.into())],
        );
        assert_eq!(ext, [(3, uri::TRANSPORT_CC.to_owned()), (9, uri::MID.to_owned())]);
    }

    #[test]
    fn garbage_formats_are_skipped() {
        let m = section(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 x 300 97\r\na=rtpmap:96 VP8\r\na=rtpmap:97 VP8/abc\r\n\
             a=rtpmap:\r\na=fmtp:\r\na=rtcp-fb\r\n",
        );
        assert!(remote_formats(&m).is_empty());
        assert!(
            remote_extensions(&section("m=audio 9 RTP/SAVPF 0\r\na=extmap:x y\r\na=extmap:3\r\n")).is_empty()
        );
    }
}
