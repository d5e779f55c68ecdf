//! ICE candidates as SDP writes them (RFC 8839 §5.1), their priorities (RFC 8445 §5.1.2)
//! and foundations (RFC 8445 §5.1.1.3), and candidate-pair priorities (RFC 8445 §6.1.2.3).
//!
//! Parsing is tolerant of what browsers send: an optional `a=` and `candidate:` prefix,
//! transport in any case, host names instead of addresses (mDNS `*.local`), Chromium's and
//! Firefox's extensions (`generation`, `ufrag`, `network-id`, `network-cost`, `tcptype`), and
//! any other extension, kept as it came.

use std::fmt;
use std::net::IpAddr;

/// Longest foundation (RFC 8839 §5.1: 1*32 ice-char).
const MAX_FOUNDATION: usize = 32;
/// Longest host name accepted in place of an address (RFC 1035 limit).
const MAX_HOSTNAME: usize = 253;
/// Extensions kept per candidate; more is not a browser, it is abuse.
const MAX_EXTENSIONS: usize = 16;
/// Longest candidate line accepted.
pub const MAX_LINE: usize = 1024;

/// Candidate type (RFC 8445 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    Host,
    ServerReflexive,
    PeerReflexive,
    Relayed,
}

impl CandidateKind {
    /// The `typ` value in SDP.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }

    /// RFC 8445 §5.1.2.2 recommended type preferences.
    pub fn type_preference(self) -> u32 {
        match self {
            CandidateKind::Host => 126,
            CandidateKind::PeerReflexive => 110,
            CandidateKind::ServerReflexive => 100,
            CandidateKind::Relayed => 0,
        }
    }
}

/// Transport protocol of a candidate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// ICE-TCP (RFC 6544), with its `tcptype`.
    Tcp,
    /// Anything else, lower-cased; such candidates are kept but cannot be used.
    Other(String),
}

/// RFC 6544 §4.5 `tcptype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpType {
    Active,
    Passive,
    SimultaneousOpen,
}

impl TcpType {
    fn as_str(self) -> &'static str {
        match self {
            TcpType::Active => "active",
            TcpType::Passive => "passive",
            TcpType::SimultaneousOpen => "so",
        }
    }
}

/// An address or, for browsers hiding local addresses, a host name (usually `*.local`,
/// resolved with multicast DNS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CandidateAddress {
    Ip(IpAddr),
    Name(String),
}

impl CandidateAddress {
    fn parse(text: &str) -> Result<CandidateAddress, CandidateError> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(CandidateAddress::Ip(ip));
        }
        let plausible = !text.is_empty()
            && text.len() <= MAX_HOSTNAME
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !text.starts_with(['-', '.']);
        if plausible {
            Ok(CandidateAddress::Name(text.to_ascii_lowercase()))
        } else {
            Err(CandidateError::BadAddress)
        }
    }

    /// A multicast DNS name (RFC 6762): ends in `.local`.
    pub fn is_mdns(&self) -> bool {
        matches!(self, CandidateAddress::Name(name) if name.ends_with(".local"))
    }
}

impl fmt::Display for CandidateAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CandidateAddress::Ip(ip) => write!(f, "{ip}"),
            CandidateAddress::Name(name) => f.write_str(name),
        }
    }
}

/// One `candidate` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub foundation: String,
    /// 1 for RTP (or everything, with rtcp-mux and BUNDLE), 2 for RTCP.
    pub component: u16,
    pub transport: Transport,
    pub priority: u32,
    pub address: CandidateAddress,
    pub port: u16,
    pub kind: CandidateKind,
    /// `raddr`/`rport`: the base of a reflexive or relayed candidate (browsers may hide it
    /// as `0.0.0.0 0`).
    pub related: Option<(CandidateAddress, u16)>,
    pub tcp_type: Option<TcpType>,
    pub generation: Option<u32>,
    pub ufrag: Option<String>,
    pub network_id: Option<u32>,
    pub network_cost: Option<u32>,
    /// Other extension attributes, as name and value, in their order.
    pub extensions: Vec<(String, String)>,
}

/// Why a candidate line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CandidateError {
    #[error("candidate line is empty or longer than {MAX_LINE} bytes")]
    Length,
    #[error("candidate line ends early")]
    Truncated,
    #[error("bad foundation")]
    BadFoundation,
    #[error("bad component id")]
    BadComponent,
    #[error("bad priority")]
    BadPriority,
    #[error("bad connection address")]
    BadAddress,
    #[error("bad port")]
    BadPort,
    #[error("expected \"typ\"")]
    MissingType,
    #[error("unknown candidate type")]
    BadType,
    #[error("bad related address")]
    BadRelated,
    #[error("bad extension {0:?}")]
    BadExtension(&'static str),
    #[error("too many extensions")]
    TooManyExtensions,
}

fn ice_chars(text: &str) -> bool {
    // RFC 8839: ice-char = ALPHA / DIGIT / "+" / "/"
    text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl Candidate {
    /// A UDP candidate for component 1 with no extensions: what the agent announces.
    pub fn udp(
        kind: CandidateKind,
        foundation: String,
        priority: u32,
        addr: std::net::SocketAddr,
        related: Option<std::net::SocketAddr>,
    ) -> Candidate {
        Candidate {
            foundation,
            component: 1,
            transport: Transport::Udp,
            priority,
            address: CandidateAddress::Ip(addr.ip()),
            port: addr.port(),
            kind,
            related: related.map(|r| (CandidateAddress::Ip(r.ip()), r.port())),
            tcp_type: None,
            generation: None,
            ufrag: None,
            network_id: None,
            network_cost: None,
            extensions: Vec::new(),
        }
    }

    /// Parses `[a=]candidate:...` (RFC 8839 §5.1), as in SDP or `RTCIceCandidate.candidate`.
    pub fn parse(line: &str) -> Result<Candidate, CandidateError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() || line.len() > MAX_LINE {
            return Err(CandidateError::Length);
        }
        let line = line.strip_prefix("a=").unwrap_or(line);
        let line = line.strip_prefix("candidate:").unwrap_or(line);
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let mut next = || words.next().ok_or(CandidateError::Truncated);

        let foundation = next()?;
        if foundation.len() > MAX_FOUNDATION || !ice_chars(foundation) {
            return Err(CandidateError::BadFoundation);
        }
        let component: u16 = next()?.parse().map_err(|_| CandidateError::BadComponent)?;
        if !(1..=256).contains(&component) {
            return Err(CandidateError::BadComponent);
        }
        let transport = match next()?.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other if !other.is_empty() && other.len() <= 32 && ice_chars(other) => {
                Transport::Other(other.to_owned())
            }
            _ => return Err(CandidateError::BadExtension("transport")),
        };
        let priority: u32 = next()?.parse().map_err(|_| CandidateError::BadPriority)?;
        if priority == 0 {
            return Err(CandidateError::BadPriority);
        }
        let address = CandidateAddress::parse(next()?)?;
        let port: u16 = next()?.parse().map_err(|_| CandidateError::BadPort)?;
        if next()? != "typ" {
            return Err(CandidateError::MissingType);
        }
        let kind = match next()? {
            "host" => CandidateKind::Host,
            "srflx" => CandidateKind::ServerReflexive,
            "prflx" => CandidateKind::PeerReflexive,
            "relay" => CandidateKind::Relayed,
            _ => return Err(CandidateError::BadType),
        };
        let mut candidate = Candidate {
            foundation: foundation.to_owned(),
            component,
            transport,
            priority,
            address,
            port,
            kind,
            related: None,
            tcp_type: None,
            generation: None,
            ufrag: None,
            network_id: None,
            network_cost: None,
            extensions: Vec::new(),
        };
        let mut raddr = None;
        let mut rport = None;
        // The rest: name/value pairs.
        while let Some(name) = words.next() {
            let value = words.next().ok_or(CandidateError::Truncated)?;
            match name {
                "raddr" => {
                    raddr = Some(CandidateAddress::parse(value).map_err(|_| CandidateError::BadRelated)?)
                }
                "rport" => rport = Some(value.parse::<u16>().map_err(|_| CandidateError::BadRelated)?),
                "tcptype" => {
                    candidate.tcp_type = Some(match value {
                        "active" => TcpType::Active,
                        "passive" => TcpType::Passive,
                        "so" => TcpType::SimultaneousOpen,
                        _ => return Err(CandidateError::BadExtension("tcptype")),
                    })
                }
                "generation" => {
                    candidate.generation =
                        Some(value.parse().map_err(|_| CandidateError::BadExtension("generation"))?)
                }
                "ufrag" => {
                    if value.len() > 256 || !ice_chars(value) {
                        return Err(CandidateError::BadExtension("ufrag"));
                    }
                    candidate.ufrag = Some(value.to_owned());
                }
                "network-id" => {
                    candidate.network_id =
                        Some(value.parse().map_err(|_| CandidateError::BadExtension("network-id"))?)
                }
                "network-cost" => {
                    candidate.network_cost =
                        Some(value.parse().map_err(|_| CandidateError::BadExtension("network-cost"))?)
                }
                _ => {
                    // RFC 8839: extension-att-name = token, extension-att-value = *VCHAR.
                    let visible = |t: &str| t.len() <= 256 && t.bytes().all(|b| b.is_ascii_graphic());
                    if !visible(name) || !visible(value) {
                        return Err(CandidateError::BadExtension("extension"));
                    }
                    if candidate.extensions.len() == MAX_EXTENSIONS {
                        return Err(CandidateError::TooManyExtensions);
                    }
                    candidate.extensions.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        candidate.related = match (raddr, rport) {
            (Some(addr), Some(port)) => Some((addr, port)),
            (None, None) => None,
            _ => return Err(CandidateError::BadRelated),
        };
        Ok(candidate)
    }

    /// RFC 8445 §5.1.2.1 priority of a candidate of this kind and component with the given
    /// local preference (65535 when the host has one address; RFC 8421 for several).
    pub fn compute_priority(kind: CandidateKind, local_preference: u16, component: u16) -> u32 {
        (kind.type_preference() << 24)
            + (u32::from(local_preference) << 8)
            + (256 - u32::from(component.min(256)))
    }
}

/// `candidate:...` without the `a=`, as `RTCIceCandidate.candidate` holds it.
impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Other(t) => t,
        };
        write!(
            f,
            "candidate:{} {} {transport} {} {} {} typ {}",
            self.foundation,
            self.component,
            self.priority,
            self.address,
            self.port,
            self.kind.as_str()
        )?;
        if let Some((addr, port)) = &self.related {
            write!(f, " raddr {addr} rport {port}")?;
        }
        if let Some(t) = self.tcp_type {
            write!(f, " tcptype {}", t.as_str())?;
        }
        if let Some(g) = self.generation {
            write!(f, " generation {g}")?;
        }
        if let Some(u) = &self.ufrag {
            write!(f, " ufrag {u}")?;
        }
        if let Some(n) = self.network_id {
            write!(f, " network-id {n}")?;
        }
        if let Some(n) = self.network_cost {
            write!(f, " network-cost {n}")?;
        }
        for (name, value) in &self.extensions {
            write!(f, " {name} {value}")?;
        }
        Ok(())
    }
}

/// RFC 8445 §5.1.1.3: candidates share a foundation when they have the same type, base IP
/// address, STUN or TURN server IP address and transport. The foundation is a stable digest
/// of those (FNV-1a, 8 hex digits), so the same inputs give the same foundation everywhere.
pub fn foundation(
    kind: CandidateKind,
    base: IpAddr,
    server: Option<IpAddr>,
    transport: &Transport,
) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    eat(kind.as_str().as_bytes());
    eat(base.to_string().as_bytes());
    eat(&[0xff]);
    if let Some(server) = server {
        eat(server.to_string().as_bytes());
    }
    eat(&[0xfe]);
    eat(match transport {
        Transport::Udp => b"udp",
        Transport::Tcp => b"tcp",
        Transport::Other(t) => t.as_bytes(),
    });
    format!("{hash:08x}")
}

/// RFC 8445 §6.1.2.3: pair priority = 2^32*MIN(G,D) + 2*MAX(G,D) + (G>D?1:0), with G the
/// controlling agent's candidate priority and D the controlled agent's.
pub fn pair_priority(controlling: u32, controlled: u32) -> u64 {
    let (g, d) = (u64::from(controlling), u64::from(controlled));
    (g.min(d) << 32) + 2 * g.max(d) + u64::from(g > d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect()
    }

    #[test]
    fn parses_every_chromium_candidate_and_writes_it_back_unchanged() {
        for line in samples(include_str!("../testdata/chromium-156.txt")) {
            let c = Candidate::parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(c.to_string(), line);
        }
    }

    #[test]
    fn parses_other_browsers_shapes() {
        let lines = samples(include_str!("../testdata/other-browsers.txt"));
        let parsed: Vec<Candidate> =
            lines.iter().map(|l| Candidate::parse(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert!(parsed[0].address.is_mdns());
        assert_eq!(parsed[1].transport, Transport::Tcp);
        assert_eq!(parsed[1].tcp_type, Some(TcpType::Active));
        assert_eq!(parsed[2].tcp_type, Some(TcpType::Passive));
        assert_eq!(parsed[3].related, Some((CandidateAddress::Ip("0.0.0.0".parse().unwrap()), 0)));
        assert_eq!(parsed[4].kind, CandidateKind::Relayed);
        assert_eq!(parsed[5].ufrag.as_deref(), Some("Yh3k"));
        assert_eq!(parsed[6].component, 2);
        assert_eq!(parsed[6].address, CandidateAddress::Ip("2001:db8::7".parse().unwrap()));
        assert_eq!(parsed[7].tcp_type, Some(TcpType::SimultaneousOpen));
        assert_eq!(parsed[8].kind, CandidateKind::PeerReflexive);
        // Written back in one canonical form, which parses to the same candidate.
        for c in parsed {
            assert_eq!(Candidate::parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn fields_of_a_chromium_srflx() {
        let c = Candidate::parse(
            "candidate:1376458774 1 udp 1677729535 127.0.0.1 52042 typ srflx raddr 192.0.2.2 rport 52042 generation 0 ufrag sCW1 network-cost 999",
        )
        .unwrap();
        assert_eq!(c.foundation, "1376458774");
        assert_eq!((c.component, c.priority, c.port), (1, 1_677_729_535, 52042));
        assert_eq!(c.kind, CandidateKind::ServerReflexive);
        assert_eq!(c.related, Some((CandidateAddress::Ip("192.0.2.2".parse().unwrap()), 52042)));
        assert_eq!((c.generation, c.network_cost), (Some(0), Some(999)));
    }

    #[test]
    fn keeps_unknown_extensions() {
        let c = Candidate::parse("candidate:1 1 udp 1 192.0.2.1 1 typ host x-future yes").unwrap();
        assert_eq!(c.extensions, [("x-future".to_owned(), "yes".to_owned())]);
        assert!(c.to_string().ends_with(" x-future yes"));
    }

    #[test]
    fn refuses_empty_truncated_and_garbage_lines() {
        let full = "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ srflx raddr 192.0.2.2 rport 5001";
        // Every truncation at a word boundary that is not the whole line fails.
        let words: Vec<&str> = full.split(' ').collect();
        for n in 0..words.len() {
            let cut = words[..n].join(" ");
            if n == 8 {
                continue; // "... typ srflx": complete without the optional related address
            }
            assert!(Candidate::parse(&cut).is_err(), "{cut:?} was accepted");
        }
        assert!(Candidate::parse(full).is_ok());
        let bad = [
            "",
            "candidate:",
            "candidate:1 0 udp 1 192.0.2.1 1 typ host",
            "candidate:1 257 udp 1 192.0.2.1 1 typ host",
            "candidate:1 1 udp 0 192.0.2.1 1 typ host",
            "candidate:1 1 udp 4294967296 192.0.2.1 1 typ host",
            "candidate:1 1 udp 1 192.0.2.1 65536 typ host",
            "candidate:1 1 udp 1 192.0.2.1 1 type host",
            "candidate:1 1 udp 1 192.0.2.1 1 typ bogus",
            "candidate:1 1 udp 1 a_b 1 typ host",
            "candidate:1 1 udp 1 -x.local 1 typ host",
            "candidate:1 1 udp 1 192.0.2.1 1 typ host raddr 192.0.2.1",
            "candidate:1 1 udp 1 192.0.2.1 1 typ host tcptype sideways",
            "candidate:é 1 udp 1 192.0.2.1 1 typ host",
            "candidate:123456789012345678901234567890123 1 udp 1 192.0.2.1 1 typ host",
            // Found by the fuzzer: a control character inside an extension.
            "candidate:1 1 udp 1 192.0.2.1 1 typ host x \r\ry",
            "\u{0}\u{0}\u{0}",
        ];
        for line in bad {
            assert!(Candidate::parse(line).is_err(), "{line:?} was accepted");
        }
        let too_long = format!("candidate:1 1 udp 1 192.0.2.1 1 typ host{}", " a b".repeat(400));
        assert_eq!(Candidate::parse(&too_long), Err(CandidateError::Length));
        let many = format!("candidate:1 1 udp 1 192.0.2.1 1 typ host{}", " x y".repeat(17));
        assert_eq!(Candidate::parse(&many), Err(CandidateError::TooManyExtensions));
    }

    #[test]
    fn priorities_follow_rfc_8445() {
        // Chromium's own numbers for a host candidate on its first network (local
        // preference 65535 - 8191 * network index and so on) fit the same formula.
        assert_eq!(Candidate::compute_priority(CandidateKind::Host, 65535, 1), 2_130_706_431);
        assert_eq!(Candidate::compute_priority(CandidateKind::ServerReflexive, 65535, 1), 1_694_498_815);
        assert_eq!(Candidate::compute_priority(CandidateKind::Relayed, 65535, 1), 16_777_215);
        assert_eq!(Candidate::compute_priority(CandidateKind::Host, 65535, 2), 2_130_706_430);
        let chromium_host =
            Candidate::parse(samples(include_str!("../testdata/chromium-156.txt"))[5]).unwrap();
        let p = chromium_host.priority;
        assert_eq!(p >> 24, 126, "type preference of a host candidate");
        assert_eq!(256 - (p & 0xff), 1, "component 1");
    }

    #[test]
    fn pair_priority_orders_by_the_lower_then_the_higher() {
        let (host, relay) = (2_130_706_431u32, 16_777_215u32);
        assert!(pair_priority(host, host) > pair_priority(host, relay));
        // The role tie-break bit: same two numbers, the controlling side's higher one wins.
        assert_eq!(pair_priority(host, relay), pair_priority(relay, host) + 1);
        assert_eq!(pair_priority(1, 1), (1 << 32) + 2);
    }

    #[test]
    fn foundations_group_by_type_base_server_and_transport() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let f = |k, b, s: Option<&str>, t| foundation(k, ip(b), s.map(ip), &t);
        let a = f(CandidateKind::ServerReflexive, "10.0.0.2", Some("198.51.100.1"), Transport::Udp);
        assert_eq!(a, f(CandidateKind::ServerReflexive, "10.0.0.2", Some("198.51.100.1"), Transport::Udp));
        assert_ne!(a, f(CandidateKind::ServerReflexive, "10.0.0.3", Some("198.51.100.1"), Transport::Udp));
        assert_ne!(a, f(CandidateKind::ServerReflexive, "10.0.0.2", Some("198.51.100.2"), Transport::Udp));
        assert_ne!(a, f(CandidateKind::Relayed, "10.0.0.2", Some("198.51.100.1"), Transport::Udp));
        assert_ne!(a, f(CandidateKind::ServerReflexive, "10.0.0.2", Some("198.51.100.1"), Transport::Tcp));
        assert_eq!(a.len(), 8);
        assert!(ice_chars(&a));
    }
}
