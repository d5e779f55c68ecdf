use super::*;

const S1: &str = "198.51.100.1";
const S2: &str = "198.51.100.2";
const NAT_IP: &str = "203.0.113.1";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Runs until nothing is in flight.
fn settle(net: &mut Network) {
    while let Some(at) = net.poll_timeout() {
        net.advance(at);
    }
}

fn drain(net: &mut Network, host: HostId) -> Vec<Datagram> {
    std::iter::from_fn(|| net.poll_receive(host)).collect()
}

/// One host behind a NAT of the given kind, two public servers.
struct World {
    net: Network,
    nat: NatId,
    a: HostId,
    s1: HostId,
    s2: HostId,
}

fn world(config: NatConfig) -> World {
    let mut net = Network::new(1, Instant::now());
    let nat = net.add_nat(config, ip(NAT_IP));
    let a = net.add_host(ip("10.0.0.2"), Some(nat), LinkConfig::default());
    let s1 = net.add_host(ip(S1), None, LinkConfig::default());
    let s2 = net.add_host(ip(S2), None, LinkConfig::default());
    World { net, nat, a, s1, s2 }
}

impl World {
    /// `a` sends from port 5000 to `to`; returns the source the receiver saw (None: lost).
    fn out(&mut self, to: &str) -> Option<SocketAddr> {
        let to = addr(to);
        self.net.send(self.a, Datagram { from: addr("10.0.0.2:5000"), to, payload: vec![1] });
        settle(&mut self.net);
        let receiver = if to.ip() == ip(S1) { self.s1 } else { self.s2 };
        drain(&mut self.net, receiver).pop().map(|d| d.from)
    }

    /// A server sends to `a`'s mapping; true if it arrived.
    fn back(&mut self, from: &str, mapping: SocketAddr) -> bool {
        let from = addr(from);
        let server = if from.ip() == ip(S1) { self.s1 } else { self.s2 };
        self.net.send(server, Datagram { from, to: mapping, payload: vec![2] });
        settle(&mut self.net);
        match drain(&mut self.net, self.a).pop() {
            Some(d) => {
                assert_eq!(d.to, addr("10.0.0.2:5000"), "translated back to the internal endpoint");
                assert_eq!(d.from, from, "inbound sources are not translated");
                true
            }
            None => false,
        }
    }
}

#[test]
fn public_hosts_hear_each_other_after_both_link_delays() {
    let mut net = Network::new(1, Instant::now());
    let start = net.now();
    let a =
        net.add_host(ip(S1), None, LinkConfig { delay: Duration::from_millis(30), ..LinkConfig::default() });
    let b =
        net.add_host(ip(S2), None, LinkConfig { delay: Duration::from_millis(20), ..LinkConfig::default() });
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", b"x"));
    net.advance(start + Duration::from_millis(49));
    assert!(net.poll_receive(b).is_none());
    net.advance(start + Duration::from_millis(50));
    let got = net.poll_receive(b).unwrap();
    assert_eq!((got.from, got.payload.as_slice()), (addr("198.51.100.1:1"), &b"x"[..]));
    assert_eq!(net.now(), start + Duration::from_millis(50));
    assert!(net.poll_timeout().is_none());
}

/// Sends 2000 numbered packets through a lossy, jittery, duplicating link; returns the
/// arrival order.
fn lossy_run(seed: u64) -> Vec<u16> {
    let mut net = Network::new(seed, Instant::now());
    let link = LinkConfig {
        loss: 0.1,
        jitter: Duration::from_millis(10),
        duplicate: 0.05,
        reorder: 0.05,
        ..LinkConfig::default()
    };
    let a = net.add_host(ip(S1), None, link);
    let b = net.add_host(ip(S2), None, LinkConfig::default());
    for i in 0..2000u16 {
        net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &i.to_be_bytes()));
        let next = net.now() + Duration::from_millis(1);
        net.advance(next);
    }
    settle(&mut net);
    drain(&mut net, b).iter().map(|d| u16::from_be_bytes([d.payload[0], d.payload[1]])).collect()
}

#[test]
fn a_seed_fixes_every_fate() {
    assert_eq!(lossy_run(42), lossy_run(42));
    assert_ne!(lossy_run(42), lossy_run(43));
}

#[test]
fn loss_duplication_and_reordering_happen_at_about_the_configured_rates() {
    let got = lossy_run(9);
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    let delivered = unique.len();
    assert!((1700..=1900).contains(&delivered), "{delivered} of 2000 with 10% loss");
    let duplicates = got.len() - delivered;
    assert!((40..=160).contains(&duplicates), "{duplicates} duplicates at 5%");
    let out_of_order = got.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(out_of_order > 100, "{out_of_order} inversions with 10 ms jitter at 1 ms spacing");
}

#[test]
fn without_jitter_or_reordering_order_is_kept() {
    let mut net = Network::new(3, Instant::now());
    let a = net.add_host(ip(S1), None, LinkConfig::default());
    let b = net.add_host(ip(S2), None, LinkConfig::default());
    for i in 0..100u8 {
        net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &[i]));
    }
    settle(&mut net);
    let got: Vec<u8> = drain(&mut net, b).iter().map(|d| d.payload[0]).collect();
    assert_eq!(got, (0..100).collect::<Vec<u8>>());
    assert_eq!(net.stats().delivered, 100);
}

#[test]
fn packets_over_the_mtu_are_dropped() {
    let mut net = Network::new(1, Instant::now());
    let a = net.add_host(ip(S1), None, LinkConfig { mtu: 1280, ..LinkConfig::default() });
    let b = net.add_host(ip(S2), None, LinkConfig::default());
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &[0; 1252]));
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &[0; 1253]));
    settle(&mut net);
    assert_eq!(drain(&mut net, b).len(), 1);
    assert_eq!(net.stats().too_big, 1);
}

#[test]
fn a_rate_limited_link_queues_then_drops_at_the_tail() {
    let t0 = Instant::now();
    let mut net = Network::new(1, t0);
    let link = LinkConfig { rate_bps: 800_000, queue: Duration::from_millis(45), ..LinkConfig::default() };
    let a = net.add_host(ip(S1), None, link);
    let b = net.add_host(ip(S2), None, LinkConfig::default());
    // 1000 bytes with IP and UDP headers: 10 ms each at 800 kbit/s.
    for _ in 0..7 {
        net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &[0; 972]));
    }
    // Five packets wait their turn: the next would wait 50 ms; nothing queues the other way.
    assert_eq!(net.queue_delay(a, true), Duration::from_millis(50));
    assert_eq!(net.queue_delay(a, false), Duration::ZERO);
    // A bottleneck in the sending direction only: the receiving direction does not queue.
    let one_way = LinkConfig { down_rate_bps: Some(0), ..net.link(a).clone() };
    net.set_link(a, one_way);
    net.send(b, Datagram::new("198.51.100.2:2", "198.51.100.1:1", &[0; 972]));
    net.send(b, Datagram::new("198.51.100.2:2", "198.51.100.1:1", &[0; 972]));
    // Both are at a's link after b's 5 ms.
    net.advance(t0 + Duration::from_millis(5));
    assert_eq!(net.queue_delay(a, false), Duration::ZERO);
    net.set_link(a, LinkConfig { down_rate_bps: None, ..net.link(a).clone() });
    net.send(b, Datagram::new("198.51.100.2:2", "198.51.100.1:1", &[0; 972]));
    net.send(b, Datagram::new("198.51.100.2:2", "198.51.100.1:1", &[0; 972]));
    net.advance(t0 + Duration::from_millis(10));
    assert_eq!(net.queue_delay(a, false), Duration::from_millis(20));
    let mut arrivals = Vec::new();
    while let Some(at) = net.poll_timeout() {
        net.advance(at);
        arrivals.extend(drain(&mut net, b).iter().map(|_| at - t0));
    }
    // Waits of 0, 10, ..., 40 ms fit the 45 ms queue; the next two do not.
    let want: Vec<_> = (1..=5).map(|k| Duration::from_millis(10 * k + 10)).collect();
    assert_eq!(arrivals, want);
    assert_eq!(net.stats().overflow, 2);
    // Once drained, the queue takes packets again.
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", &[0; 972]));
    settle(&mut net);
    assert_eq!(drain(&mut net, b).len(), 1);
}

#[test]
fn a_blackout_drops_everything_until_the_link_is_back() {
    let mut net = Network::new(1, Instant::now());
    let a = net.add_host(ip(S1), None, LinkConfig::default());
    let b = net.add_host(ip(S2), None, LinkConfig::default());
    net.set_link(b, LinkConfig { up: false, ..LinkConfig::default() });
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", b"lost"));
    settle(&mut net);
    assert!(net.poll_receive(b).is_none());
    net.set_link(b, LinkConfig::default());
    net.send(a, Datagram::new("198.51.100.1:1", "198.51.100.2:2", b"back"));
    settle(&mut net);
    assert_eq!(net.poll_receive(b).unwrap().payload, b"back");
    assert_eq!(net.stats().link_down, 1);
}

#[test]
fn mapping_behaviours_of_rfc_4787() {
    // Endpoint-independent: one external endpoint for every destination, port preserved.
    let mut w = world(NatConfig::port_restricted_cone());
    let m1 = w.out("198.51.100.1:3478").unwrap();
    assert_eq!(m1, addr("203.0.113.1:5000"));
    assert_eq!(w.out("198.51.100.1:3479"), Some(m1));
    assert_eq!(w.out("198.51.100.2:3478"), Some(m1));
    // Address-dependent: per destination address.
    let mut w = world(NatConfig::new(Mapping::AddressDependent, Filtering::AddressDependent));
    let m1 = w.out("198.51.100.1:3478").unwrap();
    assert_eq!(w.out("198.51.100.1:3479"), Some(m1));
    assert_ne!(w.out("198.51.100.2:3478"), Some(m1));
    // Address-and-port-dependent (symmetric): per destination address and port, not preserved.
    let mut w = world(NatConfig::symmetric());
    let m1 = w.out("198.51.100.1:3478").unwrap();
    assert_ne!(m1.port(), 5000);
    let m2 = w.out("198.51.100.1:3479").unwrap();
    let m3 = w.out("198.51.100.2:3478").unwrap();
    assert!(m1 != m2 && m2 != m3 && m1 != m3);
    assert_eq!(w.out("198.51.100.1:3478"), Some(m1), "a mapping is reused for its destination");
    assert_eq!(w.net.nat_mappings(w.nat), 3);
}

#[test]
fn filtering_behaviours_of_rfc_4787() {
    let cases = [
        (Filtering::EndpointIndependent, [true, true, true]),
        (Filtering::AddressDependent, [true, true, false]),
        (Filtering::AddressAndPortDependent, [true, false, false]),
    ];
    for (filtering, expected) in cases {
        let mut w = world(NatConfig::new(Mapping::EndpointIndependent, filtering));
        let mapping = w.out("198.51.100.1:3478").unwrap();
        let got = [
            w.back("198.51.100.1:3478", mapping),
            w.back("198.51.100.1:9999", mapping),
            w.back("198.51.100.2:3478", mapping),
        ];
        assert_eq!(got, expected, "{filtering:?}");
    }
}

#[test]
fn nothing_gets_in_without_a_mapping() {
    let mut w = world(NatConfig::full_cone());
    assert!(!w.back("198.51.100.1:3478", addr("203.0.113.1:5000")));
    assert_eq!(w.net.stats().filtered, 1);
}

#[test]
fn mappings_expire_without_outbound_traffic() {
    let mut w = world(NatConfig::port_restricted_cone());
    let mapping = w.out("198.51.100.1:3478").unwrap();
    let later = w.net.now() + Duration::from_secs(100);
    w.net.advance(later);
    assert!(w.back("198.51.100.1:3478", mapping), "alive at 100 s");
    // Inbound traffic does not refresh: 121 s after the last outbound packet it is gone.
    let later = w.net.now() + Duration::from_secs(21);
    w.net.advance(later);
    assert!(!w.back("198.51.100.1:3478", mapping));
    assert_eq!(w.net.nat_mappings(w.nat), 0);
    // Sending again makes a new one (the port is free again, so preserved again).
    assert_eq!(w.out("198.51.100.1:3478"), Some(mapping));
}

#[test]
fn hairpinning_reaches_a_neighbour_through_its_mapping() {
    for hairpinning in [true, false] {
        let mut net = Network::new(1, Instant::now());
        let config = NatConfig { hairpinning, ..NatConfig::full_cone() };
        let nat = net.add_nat(config, ip(NAT_IP));
        let a = net.add_host(ip("10.0.0.2"), Some(nat), LinkConfig::default());
        let b = net.add_host(ip("10.0.0.3"), Some(nat), LinkConfig::default());
        let s = net.add_host(ip(S1), None, LinkConfig::default());
        for (host, from) in [(a, "10.0.0.2:5000"), (b, "10.0.0.3:6000")] {
            net.send(host, Datagram::new(from, "198.51.100.1:3478", b"bind"));
        }
        settle(&mut net);
        assert_eq!(drain(&mut net, s).len(), 2);
        // b sends to a's external address.
        net.send(b, Datagram::new("10.0.0.3:6000", "203.0.113.1:5000", b"hairpin"));
        settle(&mut net);
        let got = drain(&mut net, a);
        if hairpinning {
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].from, addr("203.0.113.1:6000"), "the source is b's external address");
            assert_eq!(got[0].to, addr("10.0.0.2:5000"));
        } else {
            assert!(got.is_empty());
        }
    }
}

#[test]
fn hosts_behind_one_nat_talk_directly_with_private_addresses() {
    let mut net = Network::new(1, Instant::now());
    let nat = net.add_nat(NatConfig::symmetric(), ip(NAT_IP));
    let a = net.add_host(ip("10.0.0.2"), Some(nat), LinkConfig::default());
    let b = net.add_host(ip("10.0.0.3"), Some(nat), LinkConfig::default());
    net.send(a, Datagram::new("10.0.0.2:5000", "10.0.0.3:6000", b"lan"));
    settle(&mut net);
    let got = net.poll_receive(b).unwrap();
    assert_eq!(got.from, addr("10.0.0.2:5000"));
    assert_eq!(net.nat_mappings(nat), 0, "no translation on the LAN");
}

#[test]
fn two_nats_with_private_ranges_that_overlap() {
    let mut net = Network::new(1, Instant::now());
    let n1 = net.add_nat(NatConfig::full_cone(), ip("203.0.113.1"));
    let n2 = net.add_nat(NatConfig::full_cone(), ip("203.0.113.2"));
    let a = net.add_host(ip("192.168.1.2"), Some(n1), LinkConfig::default());
    let b = net.add_host(ip("192.168.1.2"), Some(n2), LinkConfig::default());
    // Each opens its mapping towards the other's public address (hole punching).
    net.send(a, Datagram::new("192.168.1.2:5000", "203.0.113.2:5000", b"a"));
    net.send(b, Datagram::new("192.168.1.2:5000", "203.0.113.1:5000", b"b"));
    settle(&mut net);
    // As in real hole punching the first punch reaches the other NAT before that NAT's own
    // host has sent, so it is dropped; the second finds the mapping open.
    let at_a = drain(&mut net, a);
    let at_b = drain(&mut net, b);
    assert_eq!(at_a.len() + at_b.len(), 1, "{at_a:?} {at_b:?}");
    assert_eq!(net.stats().filtered, 1);
    // Now both ways work.
    net.send(a, Datagram::new("192.168.1.2:5000", "203.0.113.2:5000", b"hello b"));
    settle(&mut net);
    assert_eq!(net.poll_receive(b).unwrap().from, addr("203.0.113.1:5000"));
}

#[test]
fn spoofed_sources_and_unknown_destinations_go_nowhere() {
    let mut net = Network::new(1, Instant::now());
    let a = net.add_host(ip(S1), None, LinkConfig::default());
    net.send(a, Datagram::new("192.0.2.66:1", "198.51.100.2:2", b"spoof"));
    net.send(a, Datagram::new("198.51.100.1:1", "192.0.2.99:2", b"nowhere"));
    settle(&mut net);
    assert_eq!(net.stats().unroutable, 2);
    assert_eq!(net.stats().delivered, 0);
}

#[test]
fn ipv6_hosts_work_too() {
    let mut net = Network::new(1, Instant::now());
    let a = net.add_host(ip("2001:db8::1"), None, LinkConfig { mtu: 1280, ..LinkConfig::default() });
    let b = net.add_host(ip("2001:db8::2"), None, LinkConfig::default());
    net.send(a, Datagram::new("[2001:db8::1]:1", "[2001:db8::2]:2", &[0; 1232]));
    net.send(a, Datagram::new("[2001:db8::1]:1", "[2001:db8::2]:2", &[0; 1233]));
    settle(&mut net);
    assert_eq!(drain(&mut net, b).len(), 1, "1232 bytes of payload fill a 1280-byte IPv6 packet");
}

#[test]
fn a_nat_out_of_ports_drops_instead_of_spinning() {
    let mut net = Network::new(1, Instant::now());
    let nat = net.add_nat(NatConfig { ports: 40000..=40099, ..NatConfig::symmetric() }, ip(NAT_IP));
    let a = net.add_host(ip("10.0.0.2"), Some(nat), LinkConfig::default());
    let _s = net.add_host(ip(S1), None, LinkConfig::default());
    // A symmetric NAT maps every destination port anew: 100 ports, then none.
    for port in 1..=116u16 {
        let to = SocketAddr::new(ip(S1), port);
        net.send(a, Datagram { from: addr("10.0.0.2:5000"), to, payload: vec![0] });
    }
    settle(&mut net);
    assert_eq!(net.nat_mappings(nat), 100);
    assert_eq!(net.stats().filtered, 16);
}
