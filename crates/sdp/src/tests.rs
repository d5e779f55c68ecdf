use super::*;

const CHROMIUM_OFFER: &str = include_str!("../testdata/chromium-datachannel-offer.sdp");
const CHROMIUM_ANSWER: &str = include_str!("../testdata/chromium-datachannel-answer.sdp");
const CHROMIUM_AV: &str = include_str!("../testdata/chromium-av-datachannel-offer.sdp");
const FIREFOX_OFFER: &str = include_str!("../testdata/firefox-datachannel-offer.sdp");
const SAFARI_OFFER: &str = include_str!("../testdata/safari-datachannel-offer.sdp");

#[test]
fn every_browser_sample_gives_what_a_data_channel_needs() {
    for (name, text, setup) in [
        ("chromium offer", CHROMIUM_OFFER, Setup::ActPass),
        ("chromium answer", CHROMIUM_ANSWER, Setup::Active),
        ("chromium audio+video+data", CHROMIUM_AV, Setup::ActPass),
        ("firefox offer", FIREFOX_OFFER, Setup::ActPass),
        ("safari offer", SAFARI_OFFER, Setup::ActPass),
    ] {
        let sd = SessionDescription::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dc = sd.datachannel().unwrap_or_else(|| panic!("{name}: no data channel section"));
        assert_eq!(dc.sctp_port(), Some(5000), "{name}");
        assert!(dc.max_message_size().is_some_and(|m| m >= 262_144), "{name}");
        let creds = sd.ice_credentials(dc).unwrap_or_else(|| panic!("{name}: no ICE credentials"));
        assert!(creds.ufrag.len() >= 4 && creds.pwd.len() >= 22, "{name}: {creds:?}");
        let fingerprint = sd.fingerprint(dc).unwrap();
        assert!(fingerprint.starts_with("sha-256 ") && fingerprint.len() == 8 + 95, "{name}: {fingerprint}");
        assert_eq!(sd.setup(dc), Some(setup), "{name}");
        assert!(sd.bundle().contains(&dc.mid().unwrap()), "{name}");
        assert!(sd.ice_options(dc).contains(&"trickle"), "{name}");
    }
}

#[test]
fn candidates_and_end_of_candidates_are_found() {
    let sd = SessionDescription::parse(FIREFOX_OFFER).unwrap();
    let dc = sd.datachannel().unwrap();
    let candidates: Vec<String> = dc.candidates().collect();
    assert_eq!(candidates.len(), 2);
    assert!(candidates[1].contains("tcptype active"));
    assert!(candidates.iter().all(|c| c.starts_with("candidate:")));
    assert!(dc.end_of_candidates());
    let chrome = SessionDescription::parse(CHROMIUM_OFFER).unwrap();
    assert!(!chrome.datachannel().unwrap().end_of_candidates());
}

#[test]
fn media_sections_are_kept_as_they_are() {
    let sd = SessionDescription::parse(CHROMIUM_AV).unwrap();
    let kinds: Vec<&str> = sd.media.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["audio", "video", "application"]);
    let audio = &sd.media[0];
    assert_eq!(audio.proto, "UDP/TLS/RTP/SAVPF");
    assert!(audio.formats.contains(&"111".to_owned()));
    assert!(audio.attributes("rtpmap").any(|v| v.starts_with("111 opus/48000/2")));
    assert_eq!(sd.bundle(), ["0", "1", "2"]);
}

#[test]
fn writing_then_parsing_gives_the_same_description() {
    for text in [CHROMIUM_OFFER, CHROMIUM_ANSWER, CHROMIUM_AV, FIREFOX_OFFER, SAFARI_OFFER] {
        let sd = SessionDescription::parse(text).unwrap();
        let written = sd.to_string();
        assert!(written.ends_with("\r\n") && !written.contains("\r\n\r\n"));
        assert!(written.split("\r\n").all(|l| !l.contains('\n')));
        assert_eq!(SessionDescription::parse(&written).unwrap(), sd);
    }
    // Chromium's own text comes back byte for byte (it is already in canonical order).
    let sd = SessionDescription::parse(CHROMIUM_OFFER).unwrap();
    assert_eq!(sd.to_string(), CHROMIUM_OFFER.replace("\r\n", "\n").replace('\n', "\r\n"));
}

#[test]
fn unknown_lines_and_attributes_survive() {
    let text = "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nb=AS:30\nt=0 0\nz=anything\na=x-custom:1 2 3\na=flag\n\
                m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nb=AS:500\na=x-media:yes\n";
    let sd = SessionDescription::parse(text).unwrap();
    assert_eq!(sd.attribute("x-custom"), Some("1 2 3"));
    assert_eq!(sd.attribute("flag"), Some(""));
    assert_eq!(sd.media[0].attribute("x-media"), Some("yes"));
    let again = SessionDescription::parse(&sd.to_string()).unwrap();
    assert_eq!(again, sd);
    assert!(sd.to_string().contains("z=anything\r\n"));
}

#[test]
fn empty_truncated_and_garbage_input_are_errors_not_panics() {
    assert_eq!(SessionDescription::parse(""), Err(SdpError::Empty));
    assert_eq!(SessionDescription::parse("\r\n\r\n"), Err(SdpError::Empty));
    assert!(SessionDescription::parse("hello").is_err());
    assert_eq!(SessionDescription::parse("o=- 1 1 IN IP4 0.0.0.0\n"), Err(SdpError::Missing('v')));
    assert!(SessionDescription::parse("v=1\no=x\n").is_err());
    assert!(SessionDescription::parse("v=0\no=x\nm=application\n").is_err());
    assert!(SessionDescription::parse("v=0\no=x\nm=application 99999999 UDP x\n").is_err());
    for cut in 0..CHROMIUM_AV.len() {
        if CHROMIUM_AV.is_char_boundary(cut) {
            let _ = SessionDescription::parse(&CHROMIUM_AV[..cut]);
        }
    }
    let huge = "a=x\n".repeat(MAX_LINES + 5);
    assert_eq!(SessionDescription::parse(&format!("v=0\no=x\n{huge}")), Err(SdpError::TooLarge));
    // Multi-byte characters never split a line's type letter from its '='.
    assert!(SessionDescription::parse("v=0\no=x\n\u{e9}=1\n").is_ok());
    assert!(SessionDescription::parse("v=0\no=x\n\u{e9}\n").is_err());
}
