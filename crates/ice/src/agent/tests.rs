//! Two agents in `peerlink-netsim`, each behind a NAT of some kind (or none), a STUN and
//! TURN server (`peerlink-turn`'s server core) on the public side; candidates trickle as
//! they are found.

use super::*;
use peerlink_netsim::{Datagram, HostId, LinkConfig, NatConfig, Network};
use peerlink_stun::AddressFamily;
use peerlink_turn::{
    ClientAction, Credentials as TurnCredentials, FiveTuple, PeerAction, PortRequest, Relay, RelayError,
    RelayId, RelayProvider, ServerConfig, Transport as TurnTransport, TurnServer,
};

const STUN: &str = "198.51.100.1:3478";
const SERVER_IP: &str = "198.51.100.1";

/// Relay sockets of the simulated TURN server: the relay id is the port.
struct Ports(u16);

impl RelayProvider for Ports {
    fn open(&mut self, _: AddressFamily, _: PortRequest) -> Result<(Relay, Option<Relay>), RelayError> {
        self.0 += 1;
        let addr = SocketAddr::new(SERVER_IP.parse().unwrap(), self.0);
        Ok((Relay { id: RelayId(u32::from(self.0)), addr }, None))
    }
    fn close(&mut self, _: RelayId) {}
}

struct Side {
    agent: IceAgent,
    host: HostId,
    events: Vec<IceEvent>,
    /// Datagrams the agent said were not its own (application data), as they arrived
    /// with the payload the agent pointed at.
    data: Vec<Datagram>,
}

fn seed(n: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_be_bytes());
    k
}

struct Sim {
    net: Network,
    sides: [Side; 2],
    stun: HostId,
    turn: TurnServer,
    ports: Ports,
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
        turn_servers: Vec::new(),
        lite: false,
    }
}

fn turn_server() -> TurnServerConfig {
    TurnServerConfig { server: STUN.parse().unwrap(), username: "ice".into(), password: "turn-pw".into() }
}

impl Sim {
    fn new(seed: u64, nats: [Nat; 2], link: LinkConfig, controlling: [bool; 2]) -> Sim {
        let configs = [0, 1].map(|i| config(controlling[i], ["alfa", "brav"][i]));
        Sim::with(seed, nats, link, configs)
    }

    /// Both sides also use the TURN server.
    fn with_turn(seed: u64, nats: [Nat; 2], link: LinkConfig) -> Sim {
        let configs = [0, 1]
            .map(|i| IceConfig { turn_servers: vec![turn_server()], ..config(i == 0, ["alfa", "brav"][i]) });
        Sim::with(seed, nats, link, configs)
    }

    fn with(seed: u64, nats: [Nat; 2], link: LinkConfig, configs: [IceConfig; 2]) -> Sim {
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
        let mut configs = configs.into_iter();
        let mut sides = [0, 1].map(|i| Side {
            agent: IceAgent::new(configs.next().unwrap(), self::seed(seed * 31 + i as u64)).unwrap(),
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
        let mut credentials = TurnCredentials::new();
        credentials.add_user("ice", "turn-pw");
        let turn = TurnServer::new(ServerConfig::new("sim", credentials, [9; 32]), start, 1_800_000_000);
        Sim { net, sides, stun, turn, ports: Ports(50000) }
    }

    /// The STUN/TURN server: datagrams to 3478 are client traffic, to other ports a peer's
    /// traffic on a relay.
    fn serve(&mut self, now: Instant) {
        let mut out = Vec::new();
        while let Some(d) = self.net.poll_receive(self.stun) {
            if d.to.port() == 3478 {
                let tuple = FiveTuple { transport: TurnTransport::Udp, client: d.from, server: d.to };
                match self.turn.handle_client(now, tuple, &d.payload, &mut out, &mut self.ports) {
                    ClientAction::Reply => {
                        let reply = Datagram { from: d.to, to: d.from, payload: out.clone() };
                        self.net.send(self.stun, reply);
                    }
                    ClientAction::ToPeer { relay, peer, payload } => {
                        let from = SocketAddr::new(SERVER_IP.parse().unwrap(), relay.0 as u16);
                        let datagram = Datagram { from, to: peer, payload: d.payload[payload].to_vec() };
                        self.net.send(self.stun, datagram);
                    }
                    ClientAction::Nothing => {}
                }
            } else {
                let relay = RelayId(u32::from(d.to.port()));
                if let PeerAction::ToClient(tuple) =
                    self.turn.handle_peer(now, relay, d.from, &d.payload, &mut out)
                {
                    let datagram = Datagram { from: tuple.server, to: tuple.client, payload: out.clone() };
                    self.net.send(self.stun, datagram);
                }
            }
        }
        if self.turn.poll_timeout() <= now {
            self.turn.handle_timeout(now, &mut self.ports);
        }
    }

    /// Runs the world until `until` (virtual) or until `done` holds.
    fn run(&mut self, until: Duration, done: impl Fn(&Sim) -> bool) {
        peerlink_netsim::run(self, until, done);
    }

    /// Moves transmits onto the network and candidates to the other side (trickle).
    fn shuffle(&mut self) {
        let now = self.net.now();
        for i in 0..2 {
            let mut buf = Vec::new();
            while let Some(t) = self.sides[i].agent.poll_transmit(now, &mut buf) {
                let host = self.sides[i].host;
                self.net.send(
                    host,
                    Datagram { from: t.route.local, to: t.route.remote, payload: buf.split_off(0) },
                );
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
    /// other side's selected pair says its peer is (through the TURN server when that
    /// side's candidate is relayed, and then the sender must be sending to it): both ends
    /// use one path.
    fn paths_agree(&mut self) -> bool {
        for i in 0..2 {
            let mut out = vec![b'a' + i as u8];
            let Some(t) = self.sides[i].agent.send_data(&mut out, 0) else { return false };
            let host = self.sides[i].host;
            self.net.send(host, Datagram { from: t.route.local, to: t.route.remote, payload: out });
        }
        self.run(Duration::from_millis(500), |_| false);
        let turn: SocketAddr = STUN.parse().unwrap();
        (0..2).all(|i| {
            let (me, other) = (self.sides[1 - i].agent.selected_pair(), self.sides[i].agent.selected_pair());
            let relayed = self.selected(1 - i).is_some_and(|(local, _)| local == CandidateKind::Relayed);
            let got = self.sides[1 - i].data.iter().find(|d| d.payload == [b'a' + i as u8]);
            match (got, me, other) {
                (Some(d), Some((local, _)), Some((_, sent_to))) if relayed => {
                    d.from == turn && sent_to == local
                }
                (Some(d), Some((local, remote)), _) => d.from == remote && d.to == local,
                _ => false,
            }
        })
    }

    fn selected(&self, i: usize) -> Option<(CandidateKind, CandidateKind)> {
        self.sides[i].events.iter().rev().find_map(|e| match e {
            IceEvent::SelectedPair { local_kind, remote_kind, .. } => Some((*local_kind, *remote_kind)),
            _ => None,
        })
    }
}

fn blocked(a: Nat, b: Nat) -> bool {
    use Nat::*;
    matches!((a, b), (PortRestricted | Symmetric, Symmetric) | (Symmetric, PortRestricted))
}

const KINDS: [Nat; 5] = [Nat::None, Nat::FullCone, Nat::Restricted, Nat::PortRestricted, Nat::Symmetric];

#[test]
fn with_turn_every_nat_pair_connects_directly_when_it_can_and_relayed_otherwise() {
    // Every ordered pair: side 0 (controlling) behind `a`, side 1 behind `b`.
    for a in KINDS {
        for b in KINDS {
            let mut sim = Sim::with_turn(11, [a, b], LinkConfig::default());
            let start = sim.net.now();
            sim.run(Duration::from_secs(60), |s| {
                s.both_connected() || s.states().contains(&IceState::Failed)
            });
            let took = sim.net.now() - start;
            assert!(sim.both_connected(), "{a:?} x {b:?}: {:?}", sim.states());
            assert!(sim.paths_agree(), "{a:?} x {b:?}: the two ends use different paths");
            let kinds = [sim.selected(0).unwrap(), sim.selected(1).unwrap()];
            let relayed =
                kinds.iter().any(|(l, r)| *l == CandidateKind::Relayed || *r == CandidateKind::Relayed);
            assert_eq!(relayed, blocked(a, b), "{a:?} x {b:?}: {kinds:?}");
            println!("{a:?} x {b:?}: connected in {took:?}, {kinds:?}");
        }
    }
}

#[test]
fn connects_across_every_nat_pair_that_has_a_direct_path_and_fails_cleanly_otherwise() {
    // Every ordered pair: side 0 (controlling) behind `a`, side 1 behind `b`.
    for a in KINDS {
        for b in KINDS {
            let blocked = blocked(a, b);
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
    assert!(
        sim.both_connected(),
        "{:?}\n{:?}\n{:?} {:?}",
        sim.sides[0].agent.stats(),
        sim.sides[1].agent.stats(),
        sim.sides[0]
            .agent
            .pairs
            .iter()
            .map(|p| (p.state, p.nominated, p.nominated_by_peer))
            .collect::<Vec<_>>(),
        sim.sides[1]
            .agent
            .pairs
            .iter()
            .map(|p| (p.state, p.nominated, p.nominated_by_peer))
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.selected(0), Some((CandidateKind::Host, CandidateKind::Host)));
}

#[test]
fn behind_cone_nats_the_path_is_server_reflexive() {
    let mut sim =
        Sim::new(2, [Nat::PortRestricted, Nat::PortRestricted], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(20), Sim::both_connected);
    assert!(sim.both_connected(), "{:?}", sim.states());
    // Our checks leave from the host base, and the peer sees our srflx; the remote end is
    // the peer's srflx.
    assert_eq!(sim.selected(0), Some((CandidateKind::ServerReflexive, CandidateKind::ServerReflexive)));
    let srflx = sim.sides[0]
        .events
        .iter()
        .filter(|e| matches!(e, IceEvent::LocalCandidate(c) if c.kind == CandidateKind::ServerReflexive))
        .count();
    assert_eq!(srflx, 1);
    assert!(sim.sides[0].events.contains(&IceEvent::GatheringComplete));
}

/// 5 % loss each way and 100 ms RTT (25 ms ± 10 ms per link, two links per path).
fn lossy() -> LinkConfig {
    LinkConfig {
        delay: Duration::from_millis(25),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        ..LinkConfig::default()
    }
}

#[test]
fn connects_with_loss_and_delay() {
    let link = lossy();
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
        assert_eq!(agent.handle_receive(now, there, here, junk), Some(0..junk.len()));
    }
    // A well-formed check signed with the wrong password: 401, no candidate learned.
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TransactionId([1; 12]));
    w.attribute(&Attribute::Username("zulu:peer")).unwrap();
    w.attribute(&Attribute::Priority(1)).unwrap();
    w.message_integrity(&Key::short_term("not-the-password").unwrap()).unwrap();
    w.fingerprint().unwrap();
    w.finish();
    assert_eq!(agent.handle_receive(now, there, here, &buf), None);
    assert_eq!(agent.stats().bad_integrity, 1);
    assert!(agent.remotes.is_empty());
    let errors: Vec<u16> = std::iter::from_fn(|| peerlink_proto::poll_datagram(&mut agent, now))
        .filter_map(|(_, payload)| {
            let m = Message::parse(&payload).unwrap();
            match m.get(AttributeType::ERROR_CODE) {
                Some(Ok(Attribute::ErrorCode(e))) if m.class() == Class::ErrorResponse => Some(e.code),
                _ => None,
            }
        })
        .collect();
    assert_eq!(errors, [401]);
}

#[test]
fn relayed_paths_survive_loss_and_delay() {
    let link = lossy();
    for seed in 1..=10 {
        let mut sim = Sim::with_turn(seed, [Nat::Symmetric, Nat::Symmetric], link.clone());
        let start = sim.net.now();
        sim.run(Duration::from_secs(30), Sim::both_connected);
        assert!(sim.both_connected(), "seed {seed}: {:?}", sim.states());
        let relayed = [0, 1].map(|i| sim.selected(i).is_some_and(|(l, _)| l == CandidateKind::Relayed));
        assert!(relayed.contains(&true), "seed {seed}: {:?}", [sim.selected(0), sim.selected(1)]);
        println!("seed {seed}: relayed, connected in {:?} with 5% loss, 100 ms RTT", sim.net.now() - start);
    }
}

#[test]
fn relayed_candidates_are_announced_with_their_mapped_address_and_closed_at_the_end() {
    let mut sim = Sim::with_turn(12, [Nat::PortRestricted, Nat::None], LinkConfig::default());
    sim.run(Duration::from_secs(10), Sim::both_connected);
    let relay = sim.sides[0].events.iter().find_map(|e| match e {
        IceEvent::LocalCandidate(c) if c.kind == CandidateKind::Relayed => Some(c.clone()),
        _ => None,
    });
    let relay = relay.expect("a relayed candidate");
    assert_eq!(relay.address, CandidateAddress::Ip(SERVER_IP.parse().unwrap()));
    // raddr is the NAT's public address the TURN server saw.
    let related = relay.related.clone().map(|(address, _)| address);
    assert_eq!(related, Some(CandidateAddress::Ip("203.0.113.1".parse().unwrap())), "{relay}");
    // Gathering waited for the allocation: the relayed candidate came before the end.
    let events = &sim.sides[0].events;
    let relayed_at = events
        .iter()
        .position(|e| matches!(e, IceEvent::LocalCandidate(c) if c.kind == CandidateKind::Relayed));
    let complete_at = events.iter().position(|e| *e == IceEvent::GatheringComplete);
    assert!(relayed_at < complete_at, "{events:?}");
    assert_eq!(sim.turn.stats().allocations, 2);
    let now = sim.net.now();
    for side in &mut sim.sides {
        side.agent.close(now);
    }
    sim.run(Duration::from_secs(2), |_| false);
    assert_eq!(sim.turn.stats().allocations, 0, "close deletes the allocations");
}

#[test]
fn a_wrong_turn_password_still_connects_directly() {
    let configs = [0, 1].map(|i| IceConfig {
        turn_servers: vec![TurnServerConfig { password: "wrong".into(), ..turn_server() }],
        ..config(i == 0, ["alfa", "brav"][i])
    });
    let mut sim = Sim::with(13, [Nat::FullCone, Nat::None], LinkConfig::default(), configs);
    sim.run(Duration::from_secs(60), |s| {
        s.both_connected() && s.sides.iter().all(|s| s.events.contains(&IceEvent::GatheringComplete))
    });
    assert!(sim.both_connected(), "{:?}", sim.states());
    assert!(sim.sides[0].events.contains(&IceEvent::GatheringComplete));
    assert!(!sim.sides[0]
        .events
        .iter()
        .any(|e| matches!(e, IceEvent::LocalCandidate(c) if c.kind == CandidateKind::Relayed)));
}

impl Sim {
    /// Both sides restart with new credentials and learn each other's (as an offer/answer
    /// exchange would); candidates trickle again through `shuffle`.
    fn restart_both(&mut self, round: u32) {
        let now = self.net.now();
        let ufrags = [format!("alf{round}"), format!("bra{round}")];
        for (side, ufrag) in self.sides.iter_mut().zip(&ufrags) {
            let pwd = format!("{ufrag}-password-of-22-chars");
            side.agent.restart(now, ufrag, &pwd).unwrap();
        }
        for i in 0..2 {
            let other = &ufrags[1 - i];
            let pwd = format!("{other}-password-of-22-chars");
            self.sides[i].agent.set_remote_credentials(now, other, &pwd).unwrap();
        }
    }

    fn selections(&self, i: usize) -> usize {
        self.sides[i].events.iter().filter(|e| matches!(e, IceEvent::SelectedPair { .. })).count()
    }
}

#[test]
fn ice_restart_recovers_from_failed() {
    let mut sim = Sim::with_turn(14, [Nat::PortRestricted, Nat::FullCone], LinkConfig::default());
    sim.run(Duration::from_secs(10), Sim::both_connected);
    assert!(sim.both_connected());
    let host = sim.sides[1].host;
    sim.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
    sim.run(Duration::from_secs(60), |s| s.states() == [IceState::Failed; 2]);
    assert_eq!(sim.states(), [IceState::Failed; 2]);
    sim.net.set_link(host, LinkConfig::default());
    sim.restart_both(1);
    sim.run(Duration::from_secs(20), Sim::both_connected);
    assert!(sim.both_connected(), "{:?}", sim.states());
    assert!(sim.paths_agree());
    assert_eq!(sim.selections(0), 2);
}

#[test]
fn ice_restart_keeps_the_old_path_until_the_new_one_is_selected() {
    let mut sim = Sim::with_turn(15, [Nat::PortRestricted, Nat::PortRestricted], LinkConfig::default());
    sim.run(Duration::from_secs(10), Sim::both_connected);
    let before = [sim.sides[0].agent.selected_pair(), sim.sides[1].agent.selected_pair()];
    sim.restart_both(1);
    // Right after the restart nothing is selected, but data still has a path: the old one.
    for (side, before) in sim.sides.iter_mut().zip(before) {
        assert_eq!(side.agent.selected_pair(), None);
        let mut out = b"x".to_vec();
        let path = side.agent.send_data(&mut out, 0).map(|t| (t.route.local, t.route.remote));
        assert_eq!(path, before);
    }
    sim.run(Duration::from_secs(20), |s| s.selections(0) == 2 && s.selections(1) == 2);
    assert!(sim.both_connected(), "{:?}", sim.states());
    assert!(sim.paths_agree());
    // No state change was reported on the way: the connection never looked down.
    let states: Vec<&IceEvent> =
        sim.sides[0].events.iter().filter(|e| matches!(e, IceEvent::State(_))).collect();
    assert_eq!(states, [&IceEvent::State(IceState::Checking), &IceEvent::State(IceState::Connected)]);
}

#[test]
fn a_peer_that_restarts_alone_is_followed() {
    // The peer's new credentials (a new remote description) restart our checks too.
    let mut sim = Sim::new(16, [Nat::None, Nat::FullCone], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(10), Sim::both_connected);
    let now = sim.net.now();
    sim.sides[1].agent.restart(now, "new1", "new1-password-of-22-chars").unwrap();
    sim.sides[1].agent.set_remote_credentials(now, "alfa", "alfa-password-of-22-chars").unwrap();
    sim.sides[0].agent.set_remote_credentials(now, "new1", "new1-password-of-22-chars").unwrap();
    sim.run(Duration::from_secs(20), |s| s.selections(0) == 2 && s.selections(1) == 2);
    assert!(sim.both_connected(), "{:?}", sim.states());
    assert!(sim.paths_agree());
}

#[test]
fn a_lite_agent_answers_and_the_full_peer_controls() {
    for full_controlling in [true, false] {
        let configs = [
            config(full_controlling, "alfa"),
            IceConfig { lite: true, controlling: true, ..config(true, "brav") },
        ];
        let mut sim = Sim::with(17, [Nat::PortRestricted, Nat::None], LinkConfig::default(), configs);
        sim.sides[0].agent.set_remote_lite(true);
        assert!(sim.sides[0].agent.is_controlling());
        assert!(!sim.sides[1].agent.is_controlling(), "a lite agent is controlled");
        sim.run(Duration::from_secs(10), Sim::both_connected);
        assert!(sim.both_connected(), "{:?}", sim.states());
        assert!(sim.paths_agree());
        assert_eq!(sim.sides[1].agent.stats().checks_sent, 0, "a lite agent sends no checks");
        // The lite side announced only its host candidate (no STUN gathering).
        let announced: Vec<CandidateKind> = sim.sides[1]
            .events
            .iter()
            .filter_map(|e| match e {
                IceEvent::LocalCandidate(c) => Some(c.kind),
                _ => None,
            })
            .collect();
        assert_eq!(announced, [CandidateKind::Host]);
        // Consent: the full side's checks keep the lite side connected well past 30 s...
        sim.run(Duration::from_secs(45), |_| false);
        assert!(sim.both_connected(), "{:?}", sim.states());
        // ...and without them the lite side fails.
        let host = sim.sides[0].host;
        sim.net.set_link(host, LinkConfig { up: false, ..LinkConfig::default() });
        sim.run(Duration::from_secs(40), |s| s.sides[1].agent.state() == IceState::Failed);
        assert_eq!(sim.sides[1].agent.state(), IceState::Failed);
    }
}

#[test]
fn late_answers_to_earlier_consent_checks_still_count() {
    // A 12 s round trip: every answer comes back after the next consent check went out.
    let mut sim = Sim::new(18, [Nat::None, Nat::None], LinkConfig::default(), [true, false]);
    sim.run(Duration::from_secs(10), Sim::both_connected);
    let host = sim.sides[1].host;
    sim.net.set_link(host, LinkConfig { delay: Duration::from_secs(6), ..LinkConfig::default() });
    sim.run(Duration::from_secs(90), |s| s.sides[0].agent.state() == IceState::Failed);
    assert_ne!(sim.sides[0].agent.state(), IceState::Failed);
}

#[test]
fn answers_to_checks_a_triggered_check_replaced_still_count() {
    // A 200 ms round trip, ten times Ta: both sides' checks cross, each restarts the other's
    // in-progress check (§7.3.1.4), and the answers to the replaced transactions arrive
    // later. They must still make the pair succeed.
    let link = LinkConfig { delay: Duration::from_millis(50), ..LinkConfig::default() };
    let mut sim = Sim::new(19, [Nat::None, Nat::None], link, [true, false]);
    sim.run(Duration::from_secs(5), Sim::both_connected);
    assert!(sim.both_connected(), "{:?} {:?}", sim.sides[0].agent.stats(), sim.sides[1].agent.stats());
    let checks: u64 = sim.sides.iter().map(|s| s.agent.stats().checks_sent).sum();
    assert!(checks < 20, "{checks} checks for one pair");
}

/// The controlling agent is made controlled while its nomination is on the wire (what
/// answering a renegotiation offer did in peerlink-rtc): the peer selected the pair on
/// USE-CANDIDATE, the answer arrives at an agent that no longer controls, and the role
/// conflict that follows is resolved one way or the other. Both sides must still select
/// the pair (the agent stayed unselected for good and failed after 30 s).
#[test]
fn a_role_switch_while_a_nomination_is_in_flight_still_selects() {
    // Which side wins the role conflict depends on the tie-breakers: both ways are covered.
    let mut higher = [0, 0];
    for seed in 1..=8 {
        let mut sim = Sim::new(seed, [Nat::None, Nat::None], LinkConfig::default(), [true, false]);
        higher[usize::from(sim.sides[0].agent.tie_breaker > sim.sides[1].agent.tie_breaker)] += 1;
        let in_flight = |s: &Sim| {
            let a = &s.sides[0].agent;
            a.nominating.is_some_and(|i| {
                a.pairs[i].transaction.as_ref().is_some_and(|t| t.backoff.transmissions() > 0)
            })
        };
        sim.run(Duration::from_secs(5), in_flight);
        assert!(in_flight(&sim), "seed {seed}: no nomination went out");
        sim.sides[0].agent.set_controlling(false);
        sim.run(Duration::from_secs(40), Sim::both_connected);
        assert!(sim.both_connected(), "seed {seed}: {:?}", sim.states());
        assert!(sim.paths_agree(), "seed {seed}");
    }
    assert!(higher[0] > 0 && higher[1] > 0, "{higher:?}");
}

/// As above, but the role switch comes after the nomination was decided and before its
/// check went out: the check was skipped, and the stale decision blocked every later
/// nomination once the agent controlled again.
#[test]
fn a_role_switch_between_deciding_and_sending_a_nomination_still_selects() {
    let mut reached = 0;
    for seed in 1..=8 {
        let mut sim = Sim::new(seed, [Nat::None, Nat::None], LinkConfig::default(), [true, false]);
        // A remote candidate preferred to the real one that never answers: the nomination
        // waits for its deadline and is decided there, one pacing step before it is sent.
        let now = sim.net.now();
        let decoy = Candidate::udp(
            CandidateKind::Host,
            "decoy".to_owned(),
            Candidate::compute_priority(CandidateKind::Host, 65535, 1) + 1000,
            "198.51.100.99:9".parse().unwrap(),
            None,
        );
        sim.sides[0].agent.add_remote_candidate(now, decoy).unwrap();
        let decided = |s: &Sim| {
            let a = &s.sides[0].agent;
            a.nominating.is_some_and(|i| a.pairs[i].transaction.as_ref().is_none_or(|t| !t.nominating))
        };
        sim.run(Duration::from_secs(5), |s| decided(s) || s.sides[0].agent.selected.is_some());
        if !decided(&sim) {
            continue;
        }
        reached += 1;
        // Controlled for a moment (the skipped check), then controlling again, as the role
        // conflict with a peer that keeps checking (a browser does) resolves.
        sim.sides[0].agent.set_controlling(false);
        sim.run(Duration::from_millis(200), |_| false);
        sim.sides[0].agent.set_controlling(true);
        sim.run(Duration::from_secs(40), Sim::both_connected);
        assert!(sim.both_connected(), "seed {seed}: {:?}", sim.states());
        assert!(sim.paths_agree(), "seed {seed}");
    }
    assert!(reached >= 4, "the decided-but-unsent state was reached {reached} times");
}

impl peerlink_netsim::World for Sim {
    fn net(&self) -> &Network {
        &self.net
    }

    fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    fn step(&mut self) {
        let now = self.net.now();
        self.serve(now);
        for side in &mut self.sides {
            while let Some(d) = self.net.poll_receive(side.host) {
                if let Some(range) = side.agent.handle_receive(now, d.from, d.to, &d.payload) {
                    side.data.push(Datagram { payload: d.payload[range].to_vec(), ..d });
                }
            }
            side.agent.handle_timeout(now);
        }
        self.shuffle();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let agents = self.sides.iter().filter_map(|s| s.agent.poll_timeout());
        agents.chain([self.turn.poll_timeout()]).min()
    }
}

/// A controlling peer played by hand, as Chromium behaves in tests/e2e/media-loss.sh (no NAT,
/// a TURN server): its server-reflexive candidate has its host candidate's address, its
/// checks from the relayed candidate can arrive before that candidate is signaled (with the
/// peer-reflexive PRIORITY, which libwebrtc gives its relayed candidates a higher local
/// preference in), and before its own selection is settled it puts USE-CANDIDATE on more
/// than one pair.
struct ScriptedPeer {
    agent: IceAgent,
    now: Instant,
    here: SocketAddr,
    key: Key,
    next_id: u8,
    /// Our checks to these addresses are lost.
    lost: Vec<SocketAddr>,
}

impl ScriptedPeer {
    const HOST: &str = "203.0.113.20:6000";
    const RELAY: &str = "198.51.100.10:49152";

    fn new() -> ScriptedPeer {
        let now = Instant::now();
        let mut agent =
            IceAgent::new(IceConfig::new(false, "ours", "ours-password-of-22-chars"), seed(21)).unwrap();
        let here: SocketAddr = "198.51.100.10:5000".parse().unwrap();
        agent.add_host_candidate(now, here);
        agent.set_remote_credentials(now, "peer", "peer-password-of-22-chars").unwrap();
        let key = Key::short_term("peer-password-of-22-chars").unwrap();
        ScriptedPeer { agent, now, here, key, next_id: 1, lost: Vec::new() }
    }

    fn signal(&mut self, line: &str) {
        self.agent.add_remote_candidate(self.now, Candidate::parse(line).unwrap()).unwrap();
    }

    /// A check from `from` with USE-CANDIDATE, then every check of ours answered.
    fn nominate(&mut self, from: &str, priority: u32) {
        self.check(from, priority, true);
        self.answer();
    }

    /// A check from `from` (ICE-CONTROLLING), USE-CANDIDATE if `nominating`.
    fn check(&mut self, from: &str, priority: u32, nominating: bool) {
        let from: SocketAddr = from.parse().unwrap();
        let mut buf = Vec::new();
        let id = TransactionId([self.next_id; 12]);
        self.next_id += 1;
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, id);
        w.attribute(&Attribute::Username("ours:peer")).unwrap();
        w.attribute(&Attribute::Priority(priority)).unwrap();
        w.attribute(&Attribute::IceControlling(u64::MAX)).unwrap();
        if nominating {
            w.attribute(&Attribute::UseCandidate).unwrap();
        }
        w.message_integrity(&Key::short_term("ours-password-of-22-chars").unwrap()).unwrap();
        w.fingerprint().unwrap();
        w.finish();
        assert_eq!(self.agent.handle_receive(self.now, from, self.here, &buf), None);
    }

    /// Every check of ours answered at once, for 250 ms.
    fn answer(&mut self) {
        for _ in 0..10 {
            self.now += Duration::from_millis(25);
            self.agent.handle_timeout(self.now);
            let sent: Vec<(Route, Vec<u8>)> =
                std::iter::from_fn(|| peerlink_proto::poll_datagram(&mut self.agent, self.now)).collect();
            for (route, payload) in sent {
                let m = Message::parse(&payload).unwrap();
                if m.class() != Class::Request || self.lost.contains(&route.remote) {
                    continue;
                }
                let mut answer = Vec::new();
                let mut w = MessageWriter::new(
                    &mut answer,
                    Class::SuccessResponse,
                    Method::BINDING,
                    m.transaction_id(),
                );
                w.attribute(&Attribute::XorMappedAddress(route.local)).unwrap();
                w.message_integrity(&self.key).unwrap();
                w.fingerprint().unwrap();
                w.finish();
                self.agent.handle_receive(self.now, route.remote, route.local, &answer);
            }
        }
    }

    fn last_selected(&mut self) -> Option<(SocketAddr, CandidateKind)> {
        std::iter::from_fn(|| self.agent.poll_event())
            .filter_map(|e| match e {
                IceEvent::SelectedPair { remote, remote_kind, .. } => Some((remote, remote_kind)),
                _ => None,
            })
            .last()
    }
}

/// The peer's candidates as Chromium signals them without a NAT, and the PRIORITY its checks
/// carry (peer-reflexive type, the candidate's own local preference; libwebrtc gives a UDP
/// relayed candidate a higher one than the host candidate).
struct PeerCandidates {
    host: String,
    srflx: String,
    relay: String,
    prflx_from_host: u32,
    prflx_from_relay: u32,
    host_addr: SocketAddr,
    relay_addr: SocketAddr,
}

impl PeerCandidates {
    fn new() -> PeerCandidates {
        let host = Candidate::compute_priority(CandidateKind::Host, 32512, 1);
        let srflx = Candidate::compute_priority(CandidateKind::ServerReflexive, 32512, 1);
        let relay = Candidate::compute_priority(CandidateKind::Relayed, 32514, 1);
        PeerCandidates {
            host: format!("candidate:1 1 udp {host} 203.0.113.20 6000 typ host"),
            srflx: format!(
                "candidate:2 1 udp {srflx} 203.0.113.20 6000 typ srflx raddr 203.0.113.20 rport 6000"
            ),
            relay: format!(
                "candidate:3 1 udp {relay} 198.51.100.10 49152 typ relay raddr 203.0.113.20 rport 6000"
            ),
            prflx_from_host: Candidate::compute_priority(CandidateKind::PeerReflexive, 32512, 1),
            prflx_from_relay: Candidate::compute_priority(CandidateKind::PeerReflexive, 32514, 1),
            host_addr: ScriptedPeer::HOST.parse().unwrap(),
            relay_addr: ScriptedPeer::RELAY.parse().unwrap(),
        }
    }
}

/// tests/e2e/media-loss.sh: Chromium (controlling) reported host>host selected while our
/// agent sent everything to its relayed candidate. The relayed candidate was learned
/// peer-reflexive from a check, with a priority above the host pair's, and kept that priority
/// once signaled; the controlled agent must end on the highest-priority pair the peer
/// nominated (RFC 8445 §8.1.1) by the priorities the peer signaled.
#[test]
fn a_relayed_pair_learned_peer_reflexive_gives_way_to_the_nominated_host_pair() {
    let c = PeerCandidates::new();
    // The relayed pair nominated first (its check ahead of its candidate), the host pair
    // last, as the peer settles on it.
    let mut peer = ScriptedPeer::new();
    peer.signal(&c.host);
    peer.signal(&c.srflx);
    peer.nominate(ScriptedPeer::RELAY, c.prflx_from_relay);
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.relay_addr)));
    peer.signal(&c.relay);
    peer.nominate(ScriptedPeer::HOST, c.prflx_from_host);
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.host_addr)));
    assert_eq!(peer.last_selected(), Some((c.host_addr, CandidateKind::Host)));

    // The host pair nominated first, then the relayed one while the peer is still unsure:
    // the host pair stays.
    let mut peer = ScriptedPeer::new();
    peer.signal(&c.host);
    peer.signal(&c.srflx);
    peer.nominate(ScriptedPeer::HOST, c.prflx_from_host);
    assert_eq!(peer.last_selected(), Some((c.host_addr, CandidateKind::Host)));
    peer.nominate(ScriptedPeer::RELAY, c.prflx_from_relay);
    peer.signal(&c.relay);
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.host_addr)));
    assert_eq!(peer.last_selected(), None, "no switch");
}

/// Without a NAT the peer's server-reflexive candidate has its host candidate's address: it
/// is redundant (§5.1.3, the lower priority goes), whichever comes first. It replaced the
/// host candidate, which named the selected host pair "host -> srflx" and lowered its
/// priority.
#[test]
fn a_server_reflexive_candidate_on_the_host_address_leaves_the_host_candidate() {
    let c = PeerCandidates::new();
    for order in [[&c.host, &c.srflx], [&c.srflx, &c.host]] {
        let mut peer = ScriptedPeer::new();
        peer.signal(order[0]);
        peer.signal(order[1]);
        assert_eq!(peer.agent.remotes.len(), 1);
        assert_eq!(peer.agent.remotes[0].candidate.kind, CandidateKind::Host);
        peer.nominate(ScriptedPeer::HOST, c.prflx_from_host);
        assert_eq!(peer.last_selected(), Some((c.host_addr, CandidateKind::Host)));
    }
}

/// A peer-reflexive remote candidate of the selected pair signaled later with its type: the
/// selected pair is reported again under the right name.
#[test]
fn the_selected_pair_is_reported_again_when_its_remote_candidate_is_signaled() {
    let c = PeerCandidates::new();
    let mut peer = ScriptedPeer::new();
    peer.nominate(ScriptedPeer::RELAY, c.prflx_from_relay);
    assert_eq!(peer.last_selected(), Some((c.relay_addr, CandidateKind::PeerReflexive)));
    peer.signal(&c.relay);
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.relay_addr)));
    assert_eq!(peer.last_selected(), Some((c.relay_addr, CandidateKind::Relayed)));
}

/// The relayed pair is valid; the host pair is nominated, its triggered check still queued,
/// when the relayed pair's nomination arrives and is taken. Selecting used to retire the
/// host pair and drop its check: the agent stayed on the worse pair until the peer checked
/// the host pair again.
#[test]
fn a_better_nomination_still_being_checked_is_followed_after_a_worse_one_is_taken() {
    let c = PeerCandidates::new();
    let mut peer = ScriptedPeer::new();
    peer.signal(&c.host);
    peer.signal(&c.relay);
    peer.lost = vec![c.host_addr];
    peer.check(ScriptedPeer::RELAY, c.prflx_from_relay, false);
    peer.answer();
    peer.lost.clear();
    assert_eq!(peer.agent.selected_pair(), None);
    peer.check(ScriptedPeer::HOST, c.prflx_from_host, true);
    peer.check(ScriptedPeer::RELAY, c.prflx_from_relay, true);
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.relay_addr)));
    peer.answer();
    assert_eq!(peer.agent.selected_pair(), Some((peer.here, c.host_addr)));
    assert_eq!(peer.last_selected(), Some((c.host_addr, CandidateKind::Host)));
}
