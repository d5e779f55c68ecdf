//! The bandwidth estimator against a simulated bottleneck in virtual time (netsim): a
//! sender whose media follows the estimate (up to an application limit) and sends the probe
//! clusters asked for (media waits while a cluster goes out, as behind a pacer), through a
//! rate-limited FIFO link; a receiver that records arrivals
//! and sends transport-wide feedback every 50 ms back over the network. Tolerances are
//! two-sided, as libwebrtc's own scenario tests have them; each test prints what it saw.

use peerlink_media::bwe::{BandwidthEstimator, BweConfig};
use peerlink_media::TwccRecorder;
use peerlink_netsim::{Datagram, HostId, LinkConfig, Network};
use peerlink_rtp::RtcpPacket;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const MS: Duration = Duration::from_millis(1);
const PACKET: usize = 1200;
const SENDER: &str = "198.51.100.1:5000";
const RECEIVER: &str = "198.51.100.2:5000";

struct Sim {
    net: Network,
    sender: HostId,
    receiver: HostId,
    bwe: BandwidthEstimator,
    recorder: TwccRecorder,
    t0: Instant,
    now: Instant,
    seq: u16,
    /// Bits the media source may send now.
    credit: f64,
    /// The most the application sends, bit/s.
    app_limit: Option<u64>,
    /// Simulcast layers (bit/s, ascending) as an SFU forwards them: the highest that fits
    /// the estimate, else the lowest, sent at its own rate whatever the estimate.
    layers: Option<Vec<u64>>,
    /// The layer forwarded last: a switch starts with a key frame, half a second of the
    /// new layer's bytes at once.
    layer: Option<u64>,
    probes: VecDeque<(Instant, u32)>,
    /// Feedback arriving in here is dropped.
    blackout: Option<(Instant, Instant)>,
    /// (time since start, target) every 100 ms.
    samples: Vec<(Duration, u64)>,
    media_bytes: u64,
}

impl Sim {
    fn new(seed: u64, bottleneck: LinkConfig, far: LinkConfig, config: BweConfig) -> Sim {
        let t0 = Instant::now();
        let mut net = Network::new(seed, t0);
        let sender = net.add_host("198.51.100.1".parse().unwrap(), None, bottleneck);
        let receiver = net.add_host("198.51.100.2".parse().unwrap(), None, far);
        Sim {
            net,
            sender,
            receiver,
            bwe: BandwidthEstimator::new(config),
            recorder: TwccRecorder::new(1),
            t0,
            now: t0,
            seq: 0,
            credit: 0.0,
            app_limit: None,
            layers: None,
            layer: None,
            probes: VecDeque::new(),
            blackout: None,
            samples: Vec::new(),
            media_bytes: 0,
        }
    }

    fn send(&mut self, probe: Option<u32>) {
        let mut payload = vec![0u8; PACKET];
        payload[..2].copy_from_slice(&self.seq.to_be_bytes());
        match probe {
            Some(id) => self.bwe.on_probe_sent(self.now, self.seq, PACKET, id),
            None => self.bwe.on_packet_sent(self.now, self.seq, PACKET),
        }
        self.seq = self.seq.wrapping_add(1);
        let datagram = Datagram { from: SENDER.parse().unwrap(), to: RECEIVER.parse().unwrap(), payload };
        self.net.send(self.sender, datagram);
    }

    /// One millisecond of the world.
    fn step(&mut self) {
        self.now += MS;
        let now = self.now;
        self.net.advance(now);
        while let Some(d) = self.net.poll_receive(self.receiver) {
            if let [a, b, ..] = d.payload[..] {
                self.recorder.on_packet(now, u16::from_be_bytes([a, b]));
            }
        }
        while let Some(feedback) = self.recorder.poll_feedback(now) {
            let mut payload = Vec::new();
            RtcpPacket::TransportCc(feedback).encode(&mut payload).unwrap();
            let datagram = Datagram { from: RECEIVER.parse().unwrap(), to: SENDER.parse().unwrap(), payload };
            self.net.send(self.receiver, datagram);
        }
        let dark = self.blackout.is_some_and(|(from, to)| (from..to).contains(&now));
        while let Some(d) = self.net.poll_receive(self.sender) {
            for packet in RtcpPacket::parse_all(&d.payload) {
                if let (Ok(RtcpPacket::TransportCc(fb)), false) = (packet, dark) {
                    self.bwe.on_feedback(now, &fb);
                }
            }
        }
        if self.bwe.poll_timeout().is_some_and(|at| at <= now) {
            self.bwe.handle_timeout(now);
        }
        while let Some(cluster) = self.bwe.poll_probe(now) {
            let count = cluster.min_bytes.div_ceil(PACKET).max(cluster.min_packets as usize);
            let gap =
                Duration::from_nanos((PACKET as u64 * 8).saturating_mul(1_000_000_000) / cluster.bitrate_bps);
            let start = self.probes.back().map_or(now, |(at, _)| *at + gap).max(now);
            self.probes.extend((0..count as u32).map(|i| (start + gap * i, cluster.id)));
        }
        while let Some(&(at, id)) = self.probes.front() {
            if at > now {
                break;
            }
            self.probes.pop_front();
            self.send(Some(id));
        }
        let target = self.bwe.target_bitrate();
        let rate = match &self.layers {
            Some(layers) => {
                layers.iter().rev().find(|&&l| l <= target).or(layers.first()).copied().unwrap_or(0)
            }
            None => target.min(self.app_limit.unwrap_or(u64::MAX)),
        };
        self.credit = (self.credit + rate as f64 / 1000.0).min(2.0 * (PACKET * 8) as f64);
        if self.layers.is_some() && self.layer != Some(rate) {
            self.layer = Some(rate);
            self.credit += (rate / 2) as f64;
        }
        // A pacer sends a cluster at its rate in all, media included: media waits.
        while self.probes.is_empty() && self.credit >= (PACKET * 8) as f64 {
            self.credit -= (PACKET * 8) as f64;
            self.media_bytes += PACKET as u64;
            self.send(None);
        }
        if (now - self.t0).as_millis() % 100 == 0 {
            self.samples.push((now - self.t0, self.bwe.target_bitrate()));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Mean, min and max target (kbit/s) over the last `d`.
    fn last(&self, d: Duration) -> (u64, u64, u64) {
        let from = self.elapsed().saturating_sub(d);
        let v: Vec<u64> = self.samples.iter().filter(|(t, _)| *t > from).map(|(_, r)| r / 1000).collect();
        let mean = v.iter().sum::<u64>() / v.len().max(1) as u64;
        (mean, v.iter().copied().min().unwrap_or(0), v.iter().copied().max().unwrap_or(0))
    }

    fn target_kbps(&self) -> u64 {
        self.bwe.target_bitrate() / 1000
    }

    /// The targets of the last `d`, one a second, for the log.
    fn trace(&self, d: Duration) -> String {
        let from = self.elapsed().saturating_sub(d);
        let v: Vec<String> = self
            .samples
            .iter()
            .filter(|(t, _)| *t > from && t.as_millis() % 1000 == 0)
            .map(|(_, r)| (r / 1000).to_string())
            .collect();
        v.join(" ")
    }
}

fn bottleneck(rate_bps: u64, delay: Duration) -> LinkConfig {
    LinkConfig { rate_bps, delay, ..LinkConfig::default() }
}

fn far(delay: Duration) -> LinkConfig {
    LinkConfig { delay, ..LinkConfig::default() }
}

/// Checks the last `settle` of a phase: the mean and the final value both within `want ±
/// tolerance` kbit/s.
fn check_phase(sim: &Sim, name: &str, want: u64, tolerance: u64) -> bool {
    let (mean, min, max) = sim.last(Duration::from_secs(5));
    let end = sim.target_kbps();
    println!(
        "{name}: want {want} ± {tolerance} kbit/s; last 5 s mean {mean}, min {min}, max {max}, end {end}; per second: {}",
        sim.trace(Duration::from_secs(20))
    );
    mean.abs_diff(want) <= tolerance && end.abs_diff(want) <= tolerance
}

#[test]
fn follows_the_link_from_500_to_800_to_100_kbps() {
    let one_way = Duration::from_millis(25);
    let mut sim = Sim::new(1, bottleneck(500_000, one_way), far(one_way), BweConfig::default());
    sim.run_for(Duration::from_secs(40));
    let a = check_phase(&sim, "500 kbit/s", 450, 100);
    sim.net.set_link(sim.sender, bottleneck(800_000, one_way));
    sim.run_for(Duration::from_secs(20));
    let b = check_phase(&sim, "800 kbit/s", 750, 150);
    sim.net.set_link(sim.sender, bottleneck(100_000, one_way));
    sim.run_for(Duration::from_secs(20));
    let c = check_phase(&sim, "100 kbit/s", 90, 25);
    println!("{:?}, net {:?}", sim.bwe.stats(), sim.net.stats());
    assert!(a && b && c, "an estimate out of its tolerance (see above)");
}

#[test]
fn ten_percent_loss_at_200_ms_rtt_stays_above_100_kbps_for_two_minutes() {
    // 50 ms each way on each link: 200 ms round trip. Loss both ways on the bottleneck.
    let one_way = Duration::from_millis(50);
    let lossy = LinkConfig { loss: 0.1, ..bottleneck(2_000_000, one_way) };
    let mut sim = Sim::new(2, lossy, far(one_way), BweConfig::default());
    sim.run_for(Duration::from_secs(120));
    let (mean, min, max) = sim.last(Duration::from_secs(60));
    println!(
        "10 % loss, 200 ms rtt, 2 Mbit/s link, 120 s: last 60 s mean {mean}, min {min}, max {max} kbit/s; \
         loss seen {:.3}, rtt {:?}; per second: {}",
        sim.bwe.loss_fraction(),
        sim.bwe.rtt(),
        sim.trace(Duration::from_secs(120))
    );
    println!("{:?}", sim.bwe.stats());
    assert!(min > 100, "the estimate fell to {min} kbit/s");
    assert!(max <= 2_000, "above the link: {max}");
}

#[test]
fn a_three_second_feedback_blackout_drops_the_rate_and_it_recovers() {
    let one_way = Duration::from_millis(25);
    let mut sim = Sim::new(3, bottleneck(1_000_000, one_way), far(one_way), BweConfig::default());
    sim.run_for(Duration::from_secs(20));
    let before = sim.target_kbps();
    let start = sim.now;
    sim.blackout = Some((start, start + Duration::from_secs(3)));
    sim.run_for(Duration::from_secs(3));
    let during = sim.target_kbps();
    sim.run_for(Duration::from_secs(10));
    let after = sim.target_kbps();
    println!(
        "blackout: before {before}, at its end {during}, 10 s later {after} kbit/s; per second: {}; {:?}",
        sim.trace(Duration::from_secs(14)),
        sim.bwe.stats()
    );
    assert!(before >= 700, "not settled before the blackout");
    assert!(during <= before * 6 / 10, "the rate did not drop");
    assert!(after >= before * 7 / 10, "no recovery");
}

#[test]
fn an_application_limited_sender_stays_near_what_it_sends() {
    let one_way = Duration::from_millis(25);
    // Without probes: only what is sent informs the estimate.
    let config = BweConfig { probing: false, ..BweConfig::default() };
    let mut sim = Sim::new(4, bottleneck(5_000_000, one_way), far(one_way), config);
    sim.app_limit = Some(200_000);
    sim.run_for(Duration::from_secs(30));
    let (mean, min, max) = sim.last(Duration::from_secs(25));
    let acked = sim.bwe.acknowledged_bitrate().unwrap_or(0) / 1000;
    println!(
        "app-limited at 200 kbit/s on 5 Mbit/s: acked {acked}, target last 25 s mean {mean}, min {min}, max {max} kbit/s"
    );
    assert!(max <= 2 * acked, "the estimate grew past twice what was acknowledged");
    assert!(min >= 200, "the estimate fell below what is sent on an idle link");
    // With probes the estimate may learn the link, but it grows no further than that.
    let mut sim = Sim::new(4, bottleneck(5_000_000, one_way), far(one_way), BweConfig::default());
    sim.app_limit = Some(200_000);
    sim.run_for(Duration::from_secs(30));
    let (mean, min, max) = sim.last(Duration::from_secs(25));
    println!("with probes: target last 25 s mean {mean}, min {min}, max {max} kbit/s; {:?}", sim.bwe.stats());
    assert!(max <= 5_000, "past the link's capacity");
}

#[test]
fn reordering_does_not_collapse_the_estimate() {
    let one_way = Duration::from_millis(25);
    // 5 % of packets held back 25 ms and 3 ms of jitter on the far link (media and feedback).
    let shaky = LinkConfig { reorder: 0.05, jitter: 3 * MS, ..far(one_way) };
    let mut sim = Sim::new(5, bottleneck(1_000_000, one_way), shaky, BweConfig::default());
    sim.run_for(Duration::from_secs(30));
    let reordered = sim.last(Duration::from_secs(10));
    println!(
        "reordered, 1 Mbit/s: last 10 s mean {}, min {}, max {} kbit/s; per second: {}; {:?}",
        reordered.0,
        reordered.1,
        reordered.2,
        sim.trace(Duration::from_secs(30)),
        sim.bwe.stats()
    );
    let mut calm = Sim::new(5, bottleneck(1_000_000, one_way), far(one_way), BweConfig::default());
    calm.run_for(Duration::from_secs(30));
    let calm = calm.last(Duration::from_secs(10));
    println!("same link in order: last 10 s mean {}, min {}, max {} kbit/s", calm.0, calm.1, calm.2);
    assert!(reordered.0 >= 700 && reordered.0 <= 1_050, "mean {} kbit/s", reordered.0);
    assert!(reordered.1 >= 500, "fell to {} kbit/s", reordered.1);
}

#[test]
fn a_rate_limit_below_the_forwarded_layer_settles_near_the_link_not_the_floor() {
    // An SFU forwards a 600 kbit/s layer over a 2 Mbit/s path; the path drops to 300 kbit/s
    // with a 200 ms tail-drop queue (a receiver's downlink being limited). The queue
    // overflows until the forwarder switches to the 150 kbit/s layer; then the estimate must
    // settle near what the link carries, not at the floor, and come back up when the limit
    // lifts.
    let one_way = Duration::from_millis(20);
    let link = |rate_bps| LinkConfig { queue: 200 * MS, ..bottleneck(rate_bps, one_way) };
    let mut sim = Sim::new(6, link(2_000_000), far(one_way), BweConfig::default());
    sim.layers = Some(vec![150_000, 600_000]);
    sim.run_for(Duration::from_secs(15));
    let before = sim.target_kbps();
    sim.net.set_link(sim.sender, link(300_000));
    sim.run_for(Duration::from_secs(15));
    let (mean, min, max) = sim.last(Duration::from_secs(8));
    println!(
        "limited to 300 kbit/s: before {before}; last 8 s mean {mean}, min {min}, max {max} kbit/s; per second: {}; {:?}",
        sim.trace(Duration::from_secs(15)),
        sim.bwe.stats()
    );
    sim.net.set_link(sim.sender, link(2_000_000));
    sim.run_for(Duration::from_secs(10));
    let after = sim.last(Duration::from_secs(3));
    println!(
        "lifted: last 3 s mean {}, min {} kbit/s; per second: {}",
        after.0,
        after.1,
        sim.trace(Duration::from_secs(10))
    );
    assert!(before >= 600, "not on the top layer before the limit: {before}");
    assert!(min >= 150, "the estimate fell to {min} kbit/s, below the low layer the link carries");
    assert!(max <= 400, "the estimate stayed above the limited link: {max}");
    assert!(after.1 >= 600, "the top layer's rate not back within 10 s: {}", after.1);
}
