//! Which peer addresses a relay may reach (RFC 8656 §21.1.3: a TURN server should not let
//! clients reach the server's own network or special-purpose addresses).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Refuses special-purpose and private peers by default; `allow` and `deny` lists adjust it
/// (deny wins over allow).
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub allow_loopback: bool,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl PeerPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        // IPv4 embedded in IPv6 (mapped, compatible, NAT64) is judged as the IPv4 address,
        // and explicit lists are consulted for it too.
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => embedded_v4(v6),
        };
        if let Some(v4) = v4 {
            let as_v4 = IpAddr::V4(v4);
            if self.deny.iter().any(|net| net.contains(&as_v4)) {
                return false;
            }
            if self.allow.iter().any(|net| net.contains(&as_v4)) {
                return true;
            }
            if v4.is_loopback() {
                return self.allow_loopback;
            }
            return !DENIED_V4.iter().any(|(addr, len)| v4_net(*addr, *len).contains(&v4));
        }
        let IpAddr::V6(v6) = ip else { unreachable!("v4 handled above") };
        if v6.is_loopback() {
            return self.allow_loopback;
        }
        !DENIED_V6.iter().any(|(addr, len)| v6_net(*addr, *len).contains(&v6))
    }
}

/// IPv4 ranges refused by default (RFC 6890 special-purpose and private).
const DENIED_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),      // "this network", unspecified
    ([10, 0, 0, 0], 8),     // RFC 1918
    ([100, 64, 0, 0], 10),  // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),    // loopback (unless allowed)
    ([169, 254, 0, 0], 16), // link-local, including cloud metadata 169.254.169.254
    ([172, 16, 0, 0], 12),  // RFC 1918
    ([192, 0, 0, 0], 24),   // IETF protocol assignments
    ([192, 168, 0, 0], 16), // RFC 1918
    ([198, 18, 0, 0], 15),  // benchmarking
    ([224, 0, 0, 0], 4),    // multicast
    ([240, 0, 0, 0], 4),    // reserved, and 255.255.255.255 broadcast
];

/// IPv6 ranges refused by default.
const DENIED_V6: &[([u16; 8], u8)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128),     // unspecified
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),  // unique local
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),  // multicast
];

fn v4_net(addr: [u8; 4], len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(addr), len).expect("valid prefix")
}

fn v6_net(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len).expect("valid prefix")
}

/// The IPv4 address inside an IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96, not
/// :: or ::1) or NAT64 (64:ff9b::/96) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let compatible = s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || compatible || nat64).then_some(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &PeerPolicy, ip: &str) -> bool {
        !policy.permits(ip.parse().unwrap())
    }

    #[test]
    fn refuses_special_and_private_addresses_by_default() {
        let p = PeerPolicy::default();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "::ffff:169.254.169.254",
        ] {
            assert!(refused(&p, ip), "{ip} should be refused");
        }
        for ip in ["203.0.114.1", "8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
            assert!(!refused(&p, ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn loopback_can_be_allowed_and_lists_adjust() {
        let p = PeerPolicy { allow_loopback: true, ..Default::default() };
        assert!(!refused(&p, "127.0.0.1"));
        assert!(!refused(&p, "::1"));
        assert!(!refused(&p, "::ffff:127.0.0.1"));
        assert!(refused(&p, "10.0.0.1"));
        let p = PeerPolicy {
            allow: vec!["10.1.0.0/16".parse().unwrap()],
            deny: vec!["10.1.2.0/24".parse().unwrap(), "8.8.8.0/24".parse().unwrap()],
            ..Default::default()
        };
        assert!(!refused(&p, "10.1.9.9"));
        assert!(!refused(&p, "::ffff:10.1.9.9"));
        assert!(refused(&p, "10.1.2.3"));
        assert!(refused(&p, "::ffff:10.1.2.3"));
        assert!(refused(&p, "8.8.8.8"));
        assert!(refused(&p, "10.2.0.1"));
    }
}
