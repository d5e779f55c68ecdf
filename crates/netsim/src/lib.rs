//! A simulated network for tests: hosts on access links with delay, jitter, loss, a rate
//! with a FIFO queue, reordering, duplication and an MTU, some of them behind NATs with the
//! RFC 4787 behaviours, all on a virtual clock and a seeded random source, so every run with the
//! same seed and the same inputs is the same run.
//!
//! Topology: a public core with no delay of its own; every host hangs off it through its
//! access link, either directly (a public address) or through a NAT (a private address;
//! hosts behind the same NAT also reach each other directly, as on one LAN). Both directions
//! of an access link use its one [`LinkConfig`]. IPv4 and IPv6 addresses both work; a NAT
//! translates between addresses of one family.
//!
//! Driving it, with sans-IO machines on the hosts:
//! ```
//! use peerlink_netsim::{Datagram, LinkConfig, Network, NatConfig};
//! use std::time::{Duration, Instant};
//! let mut net = Network::new(7, Instant::now());
//! let nat = net.add_nat(NatConfig::port_restricted_cone(), "203.0.113.1".parse().unwrap());
//! let a = net.add_host("10.0.0.2".parse().unwrap(), Some(nat), LinkConfig::default());
//! let s = net.add_host("198.51.100.9".parse().unwrap(), None, LinkConfig::default());
//! net.send(a, Datagram::new("10.0.0.2:5000", "198.51.100.9:3478", b"hello"));
//! while let Some(at) = net.poll_timeout() {
//!     net.advance(at); // a real test also advances to the machines' own timeouts
//! }
//! let got = net.poll_receive(s).unwrap();
//! assert_eq!(got.from, "203.0.113.1:5000".parse().unwrap()); // mapped, port preserved
//! ```

mod drive;
mod nat;

pub use drive::{pump, pump_wired, run, run_with, World};
pub use nat::{Filtering, Mapping, NatConfig};
pub use peerlink_proto::{Machine, Route};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Bytes of IPv4 + UDP headers, counted against the MTU (IPv6: 48).
const UDP_IPV4_OVERHEAD: usize = 28;
const UDP_IPV6_OVERHEAD: usize = 48;

/// One UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// For tests: addresses as text. Panics on a malformed address.
    pub fn new(from: &str, to: &str, payload: &[u8]) -> Datagram {
        Datagram {
            from: from.parse().expect("a socket address"),
            to: to.parse().expect("a socket address"),
            payload: payload.to_vec(),
        }
    }
}

/// A deterministic 32-byte seed for the machines under test (ICE, SCTP, PeerConnection
/// take one): `n` in the first eight bytes.
pub fn seed(n: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_be_bytes());
    s
}

/// A host's access link; both directions behave the same.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in [0, jitter): reorders packets closer together than it.
    pub jitter: Duration,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back by an extra `delay` (reordering without jitter).
    pub reorder: f64,
    /// Largest IP packet carried; larger ones are dropped (no fragmentation).
    pub mtu: usize,
    /// `false`: every packet is dropped (a blackout).
    pub up: bool,
    /// Bottleneck rate in bits per second, IP and UDP headers included (0: unlimited).
    /// Packets wait their turn in a FIFO queue, one per direction, and leave one after
    /// another; the queue's wait comes before the delay.
    pub rate_bps: u64,
    /// The receiving direction's rate when it differs from `rate_bps` (Some(0): unlimited),
    /// for a bottleneck in one direction only.
    pub down_rate_bps: Option<u64>,
    /// With a rate: the longest a packet may wait in the queue; one that would wait longer
    /// is dropped (a tail-drop buffer sized in time).
    pub queue: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            mtu: 1500,
            up: true,
            rate_bps: 0,
            down_rate_bps: None,
            queue: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostId(usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatId(usize);

/// What happened to packets, network-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub too_big: u64,
    /// Dropped by a NAT: no mapping, or its filtering refused the sender.
    pub filtered: u64,
    /// No host has the destination address, or a spoofed source.
    pub unroutable: u64,
    pub link_down: u64,
    /// Dropped by a full rate queue.
    pub overflow: u64,
}

#[derive(Debug)]
struct Host {
    ip: IpAddr,
    nat: Option<NatId>,
    link: LinkConfig,
    inbox: VecDeque<Datagram>,
    /// When each direction's rate queue is empty again: [up, down].
    queue_free: [Option<Instant>; 2],
}

#[derive(Debug)]
enum Stage {
    /// Crossed the sender's access link; at its NAT or the core now.
    Up(HostId, Datagram),
    /// Crossed the receiver's access link; into its inbox.
    Down(HostId, Datagram),
}

#[derive(Debug)]
struct Event {
    at: Instant,
    seq: u64,
    stage: Stage,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The whole simulated network.
#[derive(Debug)]
pub struct Network {
    now: Instant,
    rng: SplitMix64,
    hosts: Vec<Host>,
    nats: Vec<nat::Nat>,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    stats: NetStats,
}

impl Network {
    /// An empty network whose clock starts at `start`.
    pub fn new(seed: u64, start: Instant) -> Network {
        Network {
            now: start,
            rng: SplitMix64(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            events: BinaryHeap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// A NAT with public address `public_ip` on the core.
    pub fn add_nat(&mut self, config: NatConfig, public_ip: IpAddr) -> NatId {
        self.nats.push(nat::Nat::new(config, public_ip));
        NatId(self.nats.len() - 1)
    }

    /// A host with address `ip`: public, or private behind `nat`.
    pub fn add_host(&mut self, ip: IpAddr, nat: Option<NatId>, link: LinkConfig) -> HostId {
        self.hosts.push(Host { ip, nat, link, inbox: VecDeque::new(), queue_free: [None; 2] });
        HostId(self.hosts.len() - 1)
    }

    pub fn host_ip(&self, host: HostId) -> IpAddr {
        self.hosts[host.0].ip
    }

    /// Changes a host's access link from now on (packets in flight keep their fate).
    pub fn set_link(&mut self, host: HostId, link: LinkConfig) {
        self.hosts[host.0].link = link;
    }

    pub fn link(&self, host: HostId) -> &LinkConfig {
        &self.hosts[host.0].link
    }

    /// Changes how a NAT behaves from now on (its mappings stay).
    pub fn nat_config_mut(&mut self, nat: NatId) -> &mut NatConfig {
        &mut self.nats[nat.0].config
    }

    /// Live mappings of a NAT.
    pub fn nat_mappings(&self, nat: NatId) -> usize {
        self.nats[nat.0].mappings()
    }

    /// `host` sends a datagram now. Its source address must be the host's own.
    pub fn send(&mut self, host: HostId, datagram: Datagram) {
        self.stats.sent += 1;
        if datagram.from.ip() != self.hosts[host.0].ip {
            self.stats.unroutable += 1;
            return;
        }
        self.cross_link(host, datagram, true);
    }

    /// When the next packet arrives somewhere (`None`: nothing in flight).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.events.peek().map(|Reverse(e)| e.at)
    }

    /// Moves the clock to `to` (never backwards), delivering everything due by then.
    pub fn advance(&mut self, to: Instant) {
        while let Some(Reverse(event)) = self.events.peek() {
            if event.at > to {
                break;
            }
            let Some(Reverse(event)) = self.events.pop() else { break };
            self.now = self.now.max(event.at);
            match event.stage {
                Stage::Up(host, datagram) => self.route(host, datagram),
                Stage::Down(host, datagram) => {
                    self.stats.delivered += 1;
                    self.hosts[host.0].inbox.push_back(datagram);
                }
            }
        }
        self.now = self.now.max(to);
    }

    /// How long a packet entering `host`'s rate queue now would wait before its turn
    /// (`up`: the sending direction); zero without a rate or with an empty queue.
    pub fn queue_delay(&self, host: HostId, up: bool) -> Duration {
        let free = self.hosts[host.0].queue_free[usize::from(!up)];
        free.map_or(Duration::ZERO, |f| f.saturating_duration_since(self.now))
    }

    /// The next datagram delivered to `host`, oldest first.
    #[must_use]
    pub fn poll_receive(&mut self, host: HostId) -> Option<Datagram> {
        self.hosts[host.0].inbox.pop_front()
    }

    /// Puts a packet on a host's access link, up (sending) or down (receiving).
    fn cross_link(&mut self, host: HostId, datagram: Datagram, up: bool) {
        let link = self.hosts[host.0].link.clone();
        if !link.up {
            self.stats.link_down += 1;
            return;
        }
        let overhead = if datagram.to.is_ipv4() { UDP_IPV4_OVERHEAD } else { UDP_IPV6_OVERHEAD };
        if datagram.payload.len() + overhead > link.mtu {
            self.stats.too_big += 1;
            return;
        }
        if self.rng.chance(link.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let Some(wait) = self.queue_wait(host, up, datagram.payload.len() + overhead) else {
                self.stats.overflow += 1;
                continue;
            };
            let mut delay = wait + link.delay + link.jitter.mul_f64(self.rng.unit());
            if self.rng.chance(link.reorder) {
                delay += link.delay.max(Duration::from_millis(1));
            }
            let datagram = datagram.clone();
            let stage = if up { Stage::Up(host, datagram) } else { Stage::Down(host, datagram) };
            self.seq += 1;
            self.events.push(Reverse(Event { at: self.now + delay, seq: self.seq, stage }));
        }
    }

    /// How long a packet of `len` bytes takes through the link's rate queue, waiting and
    /// serialisation; `None` when the queue is full.
    fn queue_wait(&mut self, host: HostId, up: bool, len: usize) -> Option<Duration> {
        let h = &mut self.hosts[host.0];
        let rate = if up { h.link.rate_bps } else { h.link.down_rate_bps.unwrap_or(h.link.rate_bps) };
        if rate == 0 {
            return Some(Duration::ZERO);
        }
        let free = &mut h.queue_free[usize::from(!up)];
        let start = free.map_or(self.now, |f| f.max(self.now));
        if start - self.now > h.link.queue {
            return None;
        }
        let transmit = Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / rate);
        let done = start + transmit;
        *free = Some(done);
        Some(done - self.now)
    }

    /// A packet that crossed `from`'s access link: through its NAT, across the core, to the
    /// receiver's access link.
    fn route(&mut self, from: HostId, mut datagram: Datagram) {
        let sender_nat = self.hosts[from.0].nat;
        if let Some(nat) = sender_nat {
            // Another host behind the same NAT: straight across the LAN.
            if let Some(to) = self.host_at(datagram.to.ip(), Some(nat)) {
                return self.cross_link(to, datagram, false);
            }
            let Some(from) = self.nats[nat.0].outbound(self.now, datagram.from, datagram.to) else {
                self.stats.filtered += 1;
                return;
            };
            datagram.from = from;
        }
        // The core: a public host, or a NAT's public address.
        if let Some(to) = self.host_at(datagram.to.ip(), None) {
            return self.cross_link(to, datagram, false);
        }
        let Some(nat) = self.nats.iter().position(|n| n.public_ip == datagram.to.ip()) else {
            self.stats.unroutable += 1;
            return;
        };
        if sender_nat == Some(NatId(nat)) && !self.nats[nat].config.hairpinning {
            self.stats.filtered += 1;
            return;
        }
        let Some(internal) = self.nats[nat].inbound(self.now, datagram.from, datagram.to.port()) else {
            self.stats.filtered += 1;
            return;
        };
        datagram.to = internal;
        match self.host_at(internal.ip(), Some(NatId(nat))) {
            Some(to) => self.cross_link(to, datagram, false),
            None => self.stats.unroutable += 1,
        }
    }

    fn host_at(&self, ip: IpAddr, nat: Option<NatId>) -> Option<HostId> {
        self.hosts.iter().position(|h| h.ip == ip && h.nat == nat).map(HostId)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and plenty for simulated packet fates.
/// Not for anything secret.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

#[cfg(test)]
mod tests;
