//! SDP (RFC 8866) as WebRTC endpoints write it, sans-IO: parse what Chromium, Firefox and
//! Safari send (CRLF or LF, attributes at session or media level, unknown lines and
//! attributes kept in order) and write it back with CRLF. Accessors cover what JSEP
//! (RFC 8829) and the data channel need: BUNDLE, mid, ICE credentials and options,
//! candidates and end-of-candidates, fingerprint, setup, sctp-port and max-message-size.
//! Media sections are parsed and kept as they are, for later.

use std::fmt;

/// Lines and sizes a description may have before it is refused (a peer cannot make us hold
/// an unbounded one).
const MAX_LINES: usize = 10_000;
const MAX_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("description is empty")]
    Empty,
    #[error("description is larger than {MAX_LEN} bytes or {MAX_LINES} lines")]
    TooLarge,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("missing {0}= line")]
    Missing(char),
}

/// `a=name` or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn new(name: &str, value: Option<&str>) -> Attribute {
        Attribute { name: name.to_owned(), value: value.map(str::to_owned) }
    }

    fn parse(text: &str) -> Attribute {
        match text.split_once(':') {
            Some((name, value)) => Attribute::new(name, Some(value)),
            None => Attribute::new(text, None),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "a={}:{}", self.name, v),
            None => write!(f, "a={}", self.name),
        }
    }
}

/// A line kept as it was: its type letter and value (`b=`, `i=`, `k=`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: char,
    pub value: String,
}

/// An `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    pub port: u16,
    /// `UDP/DTLS/SCTP`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    /// Payload types, or `webrtc-datachannel`.
    pub formats: Vec<String>,
    /// `c=` of the section.
    pub connection: Option<String>,
    /// Other lines of the section (`b=`, `i=`, ...), in order.
    pub lines: Vec<Line>,
    pub attributes: Vec<Attribute>,
}

impl Media {
    /// A data channel section (RFC 8841): `m=application 9 UDP/DTLS/SCTP webrtc-datachannel`.
    pub fn is_datachannel(&self) -> bool {
        self.kind == "application" && self.proto.ends_with("DTLS/SCTP")
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.name == name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    pub fn attributes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes.iter().filter(move |a| a.name == name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    pub fn has(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name == name)
    }

    pub fn mid(&self) -> Option<&str> {
        self.attribute("mid")
    }

    /// `a=candidate:` values with the `candidate:` prefix restored (the form ICE parses).
    pub fn candidates(&self) -> impl Iterator<Item = String> + '_ {
        self.attributes("candidate").map(|v| format!("candidate:{v}"))
    }

    pub fn end_of_candidates(&self) -> bool {
        self.has("end-of-candidates")
    }

    pub fn sctp_port(&self) -> Option<u16> {
        self.attribute("sctp-port").and_then(|v| v.trim().parse().ok())
    }

    pub fn max_message_size(&self) -> Option<u64> {
        self.attribute("max-message-size").and_then(|v| v.trim().parse().ok())
    }

    /// Sets (replacing) or adds an attribute.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        match self.attributes.iter_mut().find(|a| a.name == name) {
            Some(a) => a.value = value.map(str::to_owned),
            None => self.attributes.push(Attribute::new(name, value)),
        }
    }
}

/// A whole description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` value, as it came (`username sess-id sess-version nettype addrtype address`).
    pub origin: String,
    pub session_name: String,
    /// `t=`, usually `0 0`.
    pub timing: String,
    pub connection: Option<String>,
    /// Other session-level lines, in order.
    pub lines: Vec<Line>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<Media>,
}

/// ICE credentials of a section (media level first, then session level, as RFC 8839 §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

/// `a=setup` (RFC 4145): who is the DTLS client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    ActPass,
    Active,
    Passive,
    HoldConn,
}

impl Setup {
    pub fn parse(v: &str) -> Option<Setup> {
        match v.trim() {
            "actpass" => Some(Setup::ActPass),
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "holdconn" => Some(Setup::HoldConn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Setup::ActPass => "actpass",
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::HoldConn => "holdconn",
        }
    }
}

impl SessionDescription {
    /// Parses a description. Line endings may be CRLF or LF; a line that does not have the
    /// `x=value` form is an error, an unknown type letter is kept.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        if text.len() > MAX_LEN {
            return Err(SdpError::TooLarge);
        }
        let mut sd = SessionDescription {
            origin: String::new(),
            session_name: String::new(),
            timing: String::new(),
            connection: None,
            lines: Vec::new(),
            attributes: Vec::new(),
            media: Vec::new(),
        };
        let (mut seen_v, mut seen_o, mut seen_s, mut seen_t) = (false, false, false, false);
        let mut count = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_LINES {
                return Err(SdpError::TooLarge);
            }
            let n = i + 1;
            let mut chars = line.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                return Err(SdpError::Line { line: n, reason: "not of the form x=value" });
            };
            let value = &line[kind.len_utf8() + 1..];
            match (kind, sd.media.last_mut()) {
                ('v', _) => {
                    if value.trim() != "0" || seen_v {
                        return Err(SdpError::Line {
                            line: n,
                            reason: "a second v= or a version other than 0",
                        });
                    }
                    seen_v = true;
                }
                ('m', _) => sd
                    .media
                    .push(parse_media(value).ok_or(SdpError::Line { line: n, reason: "bad m= line" })?),
                ('a', Some(m)) => m.attributes.push(Attribute::parse(value)),
                ('a', None) => sd.attributes.push(Attribute::parse(value)),
                ('c', Some(m)) => m.connection = Some(value.to_owned()),
                ('c', None) => sd.connection = Some(value.to_owned()),
                ('o' | 's', None) if (kind == 'o' && seen_o) || (kind == 's' && seen_s) => {
                    return Err(SdpError::Line { line: n, reason: "a second o= or s= line" });
                }
                ('o', None) => {
                    sd.origin = value.to_owned();
                    seen_o = true;
                }
                ('s', None) => {
                    sd.session_name = value.to_owned();
                    seen_s = true;
                }
                // The first time description; further ones (and r=, z=) are kept as lines.
                ('t', None) if !seen_t => {
                    sd.timing = value.to_owned();
                    seen_t = true;
                }
                (kind, Some(m)) => m.lines.push(Line { kind, value: value.to_owned() }),
                (kind, None) => sd.lines.push(Line { kind, value: value.to_owned() }),
            }
        }
        if count == 0 {
            return Err(SdpError::Empty);
        }
        if !seen_v {
            return Err(SdpError::Missing('v'));
        }
        if !seen_o {
            return Err(SdpError::Missing('o'));
        }
        if !seen_t {
            sd.timing = "0 0".to_owned();
        }
        // Other lines in RFC 8866 §5 order (stable within a type), the order they are
        // written in, so that writing and parsing again changes nothing.
        sd.lines.sort_by_key(|l| session_rank(l.kind));
        for m in &mut sd.media {
            m.lines.sort_by_key(|l| u8::from(l.kind != 'i'));
        }
        Ok(sd)
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.name == name).map(|a| a.value.as_deref().unwrap_or(""))
    }

    /// The mids of `a=group:BUNDLE`.
    pub fn bundle(&self) -> Vec<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name == "group")
            .filter_map(|a| a.value.as_deref())
            .filter_map(|v| v.strip_prefix("BUNDLE"))
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// The first data channel section.
    pub fn datachannel(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.is_datachannel())
    }

    /// A media-level attribute, or the session-level one (Firefox puts fingerprint and
    /// ice-options at session level).
    pub fn media_or_session<'a>(&'a self, media: &'a Media, name: &str) -> Option<&'a str> {
        media.attribute(name).or_else(|| self.attribute(name))
    }

    pub fn ice_credentials(&self, media: &Media) -> Option<IceCredentials> {
        let ufrag = self.media_or_session(media, "ice-ufrag")?.trim().to_owned();
        let pwd = self.media_or_session(media, "ice-pwd")?.trim().to_owned();
        Some(IceCredentials { ufrag, pwd })
    }

    /// `a=fingerprint` of a section: `sha-256 AB:CD:...`.
    pub fn fingerprint<'a>(&'a self, media: &'a Media) -> Option<&'a str> {
        self.media_or_session(media, "fingerprint").map(str::trim)
    }

    pub fn setup(&self, media: &Media) -> Option<Setup> {
        self.media_or_session(media, "setup").and_then(Setup::parse)
    }

    pub fn ice_lite(&self) -> bool {
        self.attributes.iter().any(|a| a.name == "ice-lite")
    }

    /// `a=ice-options` tokens of a section (e.g. `trickle`).
    pub fn ice_options<'a>(&'a self, media: &'a Media) -> Vec<&'a str> {
        self.media_or_session(media, "ice-options")
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    }
}

/// Where a session-level line goes relative to `c=` (before 4) and `t=` (before 5).
fn session_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        'u' => 1,
        'e' => 2,
        'p' => 3,
        'b' => 4,
        't' | 'r' | 'z' => 5,
        'k' => 6,
        _ => 7,
    }
}

fn parse_media(value: &str) -> Option<Media> {
    let mut parts = value.split_whitespace();
    let kind = parts.next()?.to_owned();
    // `port` or `port/count`.
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let proto = parts.next()?.to_owned();
    Some(Media {
        kind,
        port,
        proto,
        formats: parts.map(str::to_owned).collect(),
        connection: None,
        lines: Vec::new(),
        attributes: Vec::new(),
    })
}

impl fmt::Display for SessionDescription {
    /// Writes the description with CRLF line ends, session lines in RFC 8866 order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=0\r\no={}\r\ns={}\r\n", self.origin, self.session_name)?;
        for l in self.lines.iter().filter(|l| session_rank(l.kind) < 4) {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for l in self.lines.iter().filter(|l| session_rank(l.kind) == 4) {
            write!(f, "b={}\r\n", l.value)?;
        }
        write!(f, "t={}\r\n", self.timing)?;
        for l in self.lines.iter().filter(|l| session_rank(l.kind) > 4) {
            write!(f, "{}={}\r\n", l.kind, l.value)?;
        }
        for a in &self.attributes {
            write!(f, "{a}\r\n")?;
        }
        for m in &self.media {
            write!(f, "m={} {} {}", m.kind, m.port, m.proto)?;
            for format in &m.formats {
                write!(f, " {format}")?;
            }
            f.write_str("\r\n")?;
            for l in m.lines.iter().filter(|l| l.kind == 'i') {
                write!(f, "i={}\r\n", l.value)?;
            }
            if let Some(c) = &m.connection {
                write!(f, "c={c}\r\n")?;
            }
            for l in m.lines.iter().filter(|l| l.kind != 'i') {
                write!(f, "{}={}\r\n", l.kind, l.value)?;
            }
            for a in &m.attributes {
                write!(f, "{a}\r\n")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
