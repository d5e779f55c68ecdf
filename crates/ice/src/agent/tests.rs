//! Two agents in `peerlink-netsim`, each behind a NAT of some kind (or none), a STUN server
//! on the public side; candidates trickle as they are found.

use super::*;
use peerlink_netsim::{Datagram, HostId, LinkConfig, NatConfig, Network};

const STUN: &str = "198.51.100.1:3478";

struct Side {
    agent: IceAgent,
    host: HostId,
    events: Vec<IceEvent>,
    /// Datagrams the agent said were not its own (application data).
    data: Vec<Datagram>,
}

fn seed(n: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_be_bytes());
    k
}

struct Sim {
    start: Instant,
    net: Network,
    sides: [Side; 2],
    stun: HostId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    None,
    FullCone,
    Restricted,
    PortRestricted,
    Symmetric,
}

impl Nat {
    fn config(self) -> Option<NatConfig> {
        match self {
            Nat::None => None,
            Nat::FullCone => Some(NatConfig::full_cone()),
            Nat::Restricted => Some(NatConfig::restricted_cone()),
            Nat::PortRestricted => Some(NatConfig::port_restricted_cone()),
            Nat::Symmetric => Some(NatConfig::symmetric()),
        }
    }
}

fn config(controlling: bool, ufrag: &str) -> IceConfig {
    IceConfig {
        controlling,
        local_ufrag: ufrag.to_owned(),
        local_pwd: format!("{ufrag}-password-of-22-chars"),
        stun_servers: vec![STUN.parse().unwrap()],
    }
}

impl Sim {
    fn new(seed: u64, nats: [Nat; 2], link: LinkConfig, controlling: [bool; 2]) -> Sim {
        let start = Instant::now();
        let mut net = Network::new(seed, start);
        let stun = net.add_host("198.51.100.1".parse().unwrap(), None, LinkConfig::default());
        let mut hosts = Vec::new();
        for (i, nat) in nats.iter().enumerate() {
            let host = match nat.config() {
                Some(config) => {
                    let n = net.add_nat(config, format!("203.0.113.{}", i + 1).parse().unwrap());
                    net.add_host(format!("10.0.{}.2", i + 1).parse().unwrap(), Some(n), link.clone())
                }
                None => {
                    net.add_host(format!("198.51.100.{}", 10 * (i + 1)).parse().unwrap(), None, link.clone())
                }
            };
            hosts.push(host);
        }
        let ufrags = ["alfa", "brav"];
        let mut sides = [0, 1].map(|i| Side {
            agent: IceAgent::new(config(controlling[i], ufrags[i]), self::seed(seed * 31 + i as u64))
                .unwrap(),
            host: hosts[i],
            events: Vec::new(),
            data: Vec::new(),
        });
        for i in 0..2 {
            let other = 1 - i;
            sides[i]
                .agent
                .set_remote_credentials(
                    start,
                    ufrags[other],
                    &format!("{}-password-of-22-chars", ufrags[other]),
                )
                .unwrap();
            let ip = net.host_ip(hosts[i]);
            sides[i].agent.add_host_candidate(start, SocketAddr::new(ip, 5000));
        }
        Sim { start, net, sides, stun }
    }

    /// Runs the world until `until` (virtual) or until `done` holds.
    fn run(&mut self, until: Duration, done: impl Fn(&Sim) -> bool) {
        let deadline = self.net.now() + until;
        // A machine whose timer stays in the past would spin here: fail instead of hanging.
        let mut same_instant = 0;
        let mut last = self.net.now();
        loop {
            self.shuffle();
            if done(self) {
                return;
            }
            let next = [
                self.net.poll_timeout(),
                self.sides[0].agent.poll_timeout(),
                self.sides[1].agent.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&t| t <= deadline) else {
                self.net.advance(deadline);
                return;
            };
            let next = next.max(self.net.now());
            same_instant = if next == last { same_instant + 1 } else { 0 };
            assert!(
                same_instant < 10_000,
                "no progress at {:?}: a timer stays in the past",
                next - self_start(self)
            );
            last = next;
            self.net.advance(next);
            let now = self.net.now();
            while let Some(request) = self.net.poll_receive(self.stun) {
                let mut out = Vec::new();
                if peerlink_stun::binding::respond(&request.payload, request.from, &mut out)
                    == peerlink_stun::binding::Outcome::Answered
                {
                    self.net.send(self.stun, Datagram { from: request.to, to: request.from, payload: out });
                }
            }
            for side in &mut self.sides {
                while let Some(d) = self.net.poll_receive(side.host) {
                    if !side.agent.handle_receive(now, d.from, d.to, &d.payload) {
                        side.data.push(d);
                    }
                }
                side.agent.handle_timeout(now);
            }
        }
    }

    /// Moves transmits onto the network and candidates to the other side (trickle).
    fn shuffle(&mut self) {
        let now = self.net.now();
        for i in 0..2 {
            while let Some(t) = self.sides[i].agent.poll_transmit() {
                let host = self.sides[i].host;
                self.net.send(host, Datagram { from: t.from, to: t.to, payload: t.payload });
            }
            while let Some(event) = self.sides[i].agent.poll_event() {
                match &event {
                    IceEvent::LocalCandidate(c) => {
                        // Through signaling: as text, like a browser's.
                        let c = Candidate::parse(&c.to_string()).unwrap();
                        self.sides[1 - i].agent.add_remote_candidate(now, c).unwrap();
                    }
                    IceEvent::GatheringComplete => self.sides[1 - i].agent.end_of_remote_candidates(now),
                    _ => {}
                }
                self.sides[i].events.push(event);
            }
        }
    }

    fn states(&self) -> [IceState; 2] {
        [self.sides[0].agent.state(), self.sides[1].agent.state()]
    }

    fn both_connected(&self) -> bool {
        self.states() == [IceState::Connected; 2]
    }

    /// Each side sends a datagram on its selected pair; each must arrive from where the
    /// other side's selected pair says its peer is: both ends use one path.
    fn paths_agree(&mut self) -> bool {
        for i in 0..2 {
            let Some((from, to)) = self.sides[i].agent.selected_pair() else { return false };
            let host = self.sides[i].host;
            self.net.send(host, Datagram { from, to, payload: vec![b'a' + i as u8] });
        }
        self.run(Duration::from_millis(500), |_| false);
        (0..2).all(|i| {
            let other = self.sides[1 - i].agent.selected_pair();
            let got = self.sides[1 - i].data.iter().find(|d| d.payload == [b'a' + i as u8]);
            matches!((got, other), (Some(d), Some((local, remote))) if d.from == remote && d.to == local)
        })
    }

    fn selected(&self, i: usize) -> Option<(CandidateKind, CandidateKind)> {
        self.sides[i].events.iter().rev().find_map(|e| match e {
            IceEvent::SelectedPair { local_kind, remote_kind, .. } => Some((*local_kind, *remote_kind)),
            _ => None,
        })
    }
}

fn self_start(sim: &Sim) -> Instant {
    sim.start
}

#[test]
fn connects_across_every_nat_pair_that_has_a_direct_path_and_fails_cleanly_otherwise() {
    use Nat::*;
    let kinds = [None, FullCone, Restricted, PortRestricted, Symmetric];
    // Every ordered pair: side 0 (controlling) behind `a`, side 1 behind `b`.
    for &a in &kinds {
        for &b in &kinds {
            let blocked =
                matches!((a, b), (PortRestricted | Symmetric, Symmetric) | (Symmetric, PortRestricted));
            let mut sim = Sim::new(7, [a, b], LinkConfig::default(), [true, false]);
            let start = sim.net.now();
            sim.run(Duration::from_secs(60), |s| {
                s.both_connected() || s.states().contains(&IceState::Failed)
            });
            let took = sim.net.now() - start;
            if blocked {
                // No relay yet: without a direct path the controlling side gives up.
                assert_eq!(sim.sides[0].agent.state(), IceState::Failed, "{a:?} x {b:?}");
                println!("{a:?} x {b:?}: failed after {took:?} (needs TURN)");
            } else {
                assert!(sim.both_connected(), "{a:?} x {b:?}: {:?}", sim.states());
                let (pa, pb) = (
                    sim.sides[0].agent.selected_pair().unwrap(),
                    sim.sides[1].agent.selected_pair().unwrap(),
                );
                assert!(sim.paths_agree(), "{a:?} x {b:?}: the two ends use different paths");
                println!(
                    "{a:?} x {b:?}: connected in {took:?}, {:?} / {:?}, {pa:?} {pb:?}",
                    sim.selected(0),
                    sim.selected(1)
                );
            }
        }
    }
}

#[test]
fn public_hosts_use_their_host_candidates() {
    let mut sim = Sim::new(1, [Nat::None, Nat::None], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(10), Sim::both_connected);
    assert!(sim.both_connected());
    assert_eq!(sim.selected(0), Some((CandidateKind::Host, CandidateKind::Host)));
}

#[test]
fn behind_cone_nats_the_path_is_server_reflexive() {
    let mut sim =
        Sim::new(2, [Nat::PortRestricted, Nat::PortRestricted], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(20), Sim::both_connected);
    assert!(sim.both_connected(), "{:?}", sim.states());
    // Our checks leave from the host base; the remote end is the peer's srflx.
    let (_, remote_kind) = sim.selected(0).unwrap();
    assert_eq!(remote_kind, CandidateKind::ServerReflexive);
    let srflx = sim.sides[0]
        .events
        .iter()
        .filter(|e| matches!(e, IceEvent::LocalCandidate(c) if c.kind == CandidateKind::ServerReflexive))
        .count();
    assert_eq!(srflx, 1);
    assert!(sim.sides[0].events.contains(&IceEvent::GatheringComplete));
}

#[test]
fn connects_with_loss_and_delay() {
    let link = LinkConfig {
        delay: Duration::from_millis(25),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        ..LinkConfig::default()
    };
    for seed in 1..=10 {
        let mut sim = Sim::new(seed, [Nat::PortRestricted, Nat::FullCone], link.clone(), [true, false]);
        let start = sim.net.now();
        sim.run(Duration::from_secs(30), Sim::both_connected);
        assert!(sim.both_connected(), "seed {seed}: {:?}", sim.states());
        println!("seed {seed}: connected in {:?} with 5% loss, 100 ms RTT", sim.net.now() - start);
    }
}

#[test]
fn two_controlling_agents_resolve_the_conflict() {
    let mut sim = Sim::new(3, [Nat::None, Nat::FullCone], LinkConfig::default(), [true, true]);
    sim.run(Duration::from_secs(20), Sim::both_connected);
    assert!(sim.both_connected(), "{:?}", sim.states());
    let roles = [sim.sides[0].agent.is_controlling(), sim.sides[1].agent.is_controlling()];
    assert!(roles[0] != roles[1], "{roles:?}");
    assert!(sim.sides.iter().map(|s| s.agent.stats().role_conflicts).sum::<u64>() > 0);
    assert!(sim.paths_agree());
}

#[test]
fn two_controlled_agents_resolve_the_conflict() {
    for seed in 1..=5 {
        let mut sim = Sim::new(seed, [Nat::FullCone, Nat::None], LinkConfig::default(), [false, false]);
        sim.run(Duration::from_secs(20), Sim::both_connected);
        assert!(sim.both_connected(), "seed {seed}: {:?}", sim.states());
        let roles = [sim.sides[0].agent.is_controlling(), sim.sides[1].agent.is_controlling()];
        assert!(roles[0] != roles[1], "{roles:?}");
        assert!(sim.paths_agree());
    }
}

#[test]
fn a_blackout_disconnects_then_fails_within_the_consent_window() {
    let mut sim = Sim::new(4, [Nat::None, Nat::PortRestricted], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(10), Sim::both_connected);
    assert!(sim.both_connected());
    let host = sim.sides[1].host;
    sim.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    let cut = sim.net.now();
    sim.run(Duration::from_secs(20), |s| s.sides[0].agent.state() == IceState::Disconnected);
    assert_eq!(sim.sides[0].agent.state(), IceState::Disconnected);
    let disconnected = sim.net.now() - cut;
    sim.run(Duration::from_secs(40), |s| s.sides[0].agent.state() == IceState::Failed);
    assert_eq!(sim.sides[0].agent.state(), IceState::Failed);
    let failed = sim.net.now() - cut;
    assert!(disconnected < Duration::from_secs(15), "{disconnected:?}");
    assert!(failed <= Duration::from_secs(36), "failed {failed:?} after the cut");
}

#[test]
fn a_short_blackout_comes_back_to_connected() {
    let mut sim = Sim::new(5, [Nat::None, Nat::FullCone], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(10), Sim::both_connected);
    let host = sim.sides[1].host;
    sim.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    sim.run(Duration::from_secs(20), |s| s.sides[0].agent.state() == IceState::Disconnected);
    assert_eq!(sim.sides[0].agent.state(), IceState::Disconnected);
    sim.net.set_link(host, LinkConfig::default());
    sim.run(Duration::from_secs(15), Sim::both_connected);
    assert!(sim.both_connected(), "{:?}", sim.states());
}

#[test]
fn garbage_and_forged_checks_change_nothing() {
    let mut agent = IceAgent::new(config(false, "zulu"), seed(9)).unwrap();
    let now = Instant::now();
    let here: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let there: SocketAddr = "192.0.2.2:6000".parse().unwrap();
    agent.add_host_candidate(now, here);
    agent.set_remote_credentials(now, "peer", "peer-password-of-22-chars").unwrap();
    for junk in [&b""[..], b"\x00", b"\x16\xfe\xfd garbage", &[0u8; 20], &[0xff; 300]] {
        assert!(!agent.handle_receive(now, there, here, junk));
    }
    // A well-formed check signed with the wrong password: 401, no candidate learned.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TransactionId([1; 12]));
    w.attribute(&Attribute::Username("zulu:peer")).unwrap();
    w.attribute(&Attribute::Priority(1)).unwrap();
    w.message_integrity(&Key::short_term("not-the-password").unwrap()).unwrap();
    w.fingerprint().unwrap();
    w.finish();
    assert!(agent.handle_receive(now, there, here, &buf));
    assert_eq!(agent.stats().bad_integrity, 1);
    assert!(agent.remotes.is_empty());
    let errors: Vec<u16> = std::iter::from_fn(|| agent.poll_transmit())
        .filter_map(|t| {
            let m = Message::parse(&t.payload).unwrap();
            match m.get(AttributeType::ERROR_CODE) {
                Some(Ok(Attribute::ErrorCode(e))) if m.class() == Class::ErrorResponse => Some(e.code),
                _ => None,
            }
        })
        .collect();
    assert_eq!(errors, [401]);
}
