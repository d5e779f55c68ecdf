//! The one loop every simulated test runs: let the machines act at the current instant,
//! then move the clock to the earliest of the network's next delivery and the machines'
//! timers, and again, until the test's condition holds or its time is up.

use crate::{Datagram, HostId, Network};
use peerlink_proto::{Machine, Route};
use std::time::{Duration, Instant};

/// A simulated world: a network and the machines on its hosts.
pub trait World {
    fn net(&self) -> &Network;
    fn net_mut(&mut self) -> &mut Network;
    /// Lets every machine act at the network's current time: take what arrived, run due
    /// timers, send what it has, collect its events.
    fn step(&mut self);
    /// The machines' earliest timer.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// Steps at the same instant in a row before [`run`] calls it a machine whose timer stays
/// in the past (it would otherwise spin forever).
const MAX_STEPS_AT_ONE_INSTANT: u32 = 10_000;

/// Runs `world` until `done` holds (returns true) or `limit` of virtual time has passed
/// (returns false, with the clock at the limit).
pub fn run<W: World>(world: &mut W, limit: Duration, done: impl FnMut(&W) -> bool) -> bool {
    run_with(world, limit, |_| {}, done)
}

/// [`run`] with `tick` called before every step (a test feeding data as it goes).
pub fn run_with<W: World>(
    world: &mut W,
    limit: Duration,
    mut tick: impl FnMut(&mut W),
    mut done: impl FnMut(&W) -> bool,
) -> bool {
    let deadline = world.net().now() + limit;
    let (mut last, mut same_instant) = (world.net().now(), 0);
    loop {
        tick(world);
        world.step();
        if done(world) {
            return true;
        }
        let next = [world.net().poll_timeout(), world.poll_timeout()].into_iter().flatten().min();
        let Some(next) = next.filter(|&t| t <= deadline) else {
            world.net_mut().advance(deadline);
            return false;
        };
        let next = next.max(world.net().now());
        same_instant = if next == last { same_instant + 1 } else { 0 };
        assert!(
            same_instant < MAX_STEPS_AT_ONE_INSTANT,
            "no progress at {next:?}: a timer stays in the past"
        );
        last = next;
        world.net_mut().advance(next);
    }
}

/// One step of a machine on a socket of `host`: it takes the datagrams that arrived, runs
/// its timer if due, and sends what it has; its events go to `on_event`.
pub fn pump<M: Machine<Route = Route>>(
    net: &mut Network,
    host: HostId,
    machine: &mut M,
    buf: &mut Vec<u8>,
    on_event: impl FnMut(M::Event),
) {
    let now = net.now();
    while let Some(d) = net.poll_receive(host) {
        machine.handle_receive(now, Route { local: d.to, remote: d.from }, &d.payload);
    }
    finish_step(net, host, machine, buf, |t| t, on_event);
}

/// [`pump`] for a machine without addresses of its own (SCTP alone, DTLS alone), wired
/// between two fixed addresses: `route.local` on `host` and `route.remote` on the other end.
pub fn pump_wired<M: Machine<Route = ()>>(
    net: &mut Network,
    host: HostId,
    route: Route,
    machine: &mut M,
    buf: &mut Vec<u8>,
    on_event: impl FnMut(M::Event),
) {
    let now = net.now();
    while let Some(d) = net.poll_receive(host) {
        machine.handle_receive(now, (), &d.payload);
    }
    finish_step(net, host, machine, buf, |()| route, on_event);
}

fn finish_step<M: Machine>(
    net: &mut Network,
    host: HostId,
    machine: &mut M,
    buf: &mut Vec<u8>,
    route: impl Fn(M::Route) -> Route,
    mut on_event: impl FnMut(M::Event),
) {
    let now = net.now();
    if machine.poll_timeout().is_some_and(|t| t <= now) {
        machine.handle_timeout(now);
    }
    buf.clear();
    while let Some(t) = machine.poll_transmit(now, buf) {
        let payload = t.datagram(buf).to_vec();
        let r = route(t.route);
        net.send(host, Datagram { from: r.local, to: r.remote, payload });
        buf.clear();
    }
    while let Some(e) = machine.poll_event() {
        on_event(e);
    }
}
