//! Congestion control on long, lossy paths, in `peerlink-netsim` (virtual clock, seeded):
//! bulk flows of a reliable ordered stream through one bottleneck (a rate with a drop-tail
//! queue on the senders' access link), measuring goodput as a fraction of the bottleneck,
//! the queueing delay the flows cause, and how flows share the bottleneck.

use peerlink_netsim::{seed, HostId, LinkConfig, Network, World};
use peerlink_sctp::{Association, CongestionControl, Reliability, SctpConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes of IPv4 + UDP headers the netsim rate counts on every packet.
const UDP_IPV4_OVERHEAD: usize = 28;
const MESSAGE: usize = 64 * 1024;
/// Bytes each sender keeps queued (always backlogged).
const BACKLOG: usize = 1 << 20;

/// A path: `rtt` split over both access links, `rate_bps` and `queue` on the senders' link
/// (shared by every flow), random `loss` on each direction of the senders' link.
#[derive(Debug, Clone, Copy)]
struct Path {
    rtt: Duration,
    rate_bps: u64,
    loss: f64,
    queue: Duration,
}

struct Flow {
    sender: Association,
    receiver: Association,
    port: u16,
    received: usize,
    /// Bytes received when the measurement window opened.
    mark: usize,
}

struct Shared {
    net: Network,
    hosts: [HostId; 2],
    ips: [std::net::IpAddr; 2],
    flows: Vec<Flow>,
    buf: Vec<u8>,
    /// Queueing delay samples at the bottleneck, one per millisecond of the window.
    queue_samples: Vec<Duration>,
    measuring: bool,
    next_sample: Instant,
}

impl Shared {
    fn new(n: u64, path: Path, controls: &[CongestionControl]) -> Shared {
        let start = Instant::now();
        let mut net = Network::new(n, start);
        let ips = ["198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap()];
        let one_way = path.rtt / 4;
        let bottleneck = LinkConfig {
            delay: one_way,
            loss: path.loss,
            rate_bps: path.rate_bps,
            queue: path.queue,
            ..LinkConfig::default()
        };
        let far = LinkConfig { delay: one_way, ..LinkConfig::default() };
        let hosts = [net.add_host(ips[0], None, bottleneck), net.add_host(ips[1], None, far)];
        let flows = controls
            .iter()
            .enumerate()
            .map(|(i, &cc)| {
                let port = 5000 + i as u16;
                let config =
                    SctpConfig { local_port: port, remote_port: port, congestion_control: cc, ..SctpConfig::default() };
                Flow {
                    sender: Association::new(start, config.clone(), seed(n * 16 + 2 * i as u64)),
                    receiver: Association::new(start, config, seed(n * 16 + 2 * i as u64 + 1)),
                    port,
                    received: 0,
                    mark: 0,
                }
            })
            .collect();
        Shared {
            net,
            hosts,
            ips,
            flows,
            buf: Vec::new(),
            queue_samples: Vec::new(),
            measuring: false,
            next_sample: start,
        }
    }

    fn connect(&mut self) {
        let now = self.net.now();
        for f in &mut self.flows {
            f.sender.connect(now);
            f.receiver.connect(now);
        }
        peerlink_netsim::run(self, Duration::from_secs(10), |w| {
            w.flows.iter().all(|f| f.sender.is_established() && f.receiver.is_established())
        });
        assert!(self.flows.iter().all(|f| f.sender.is_established() && f.receiver.is_established()));
    }

    /// Keeps every sender backlogged for `warmup`, then measures for `window`.
    fn run(&mut self, warmup: Duration, window: Duration) {
        let feed = |w: &mut Shared| {
            let now = w.net.now();
            for f in &mut w.flows {
                while f.sender.buffered_amount(1) < BACKLOG {
                    f.sender.send(now, 1, 53, vec![7; MESSAGE], true, Reliability::Reliable).unwrap();
                }
            }
        };
        peerlink_netsim::run_with(self, warmup, feed, |_| false);
        self.measuring = true;
        self.next_sample = self.net.now();
        for f in &mut self.flows {
            f.mark = f.received;
        }
        peerlink_netsim::run_with(self, window, feed, |_| false);
    }

    /// Goodput of each flow over the window, as a fraction of the bottleneck rate
    /// (payload bytes against the bits the link carries).
    fn shares(&self, path: Path, window: Duration) -> Vec<f64> {
        let capacity = path.rate_bps as f64 / 8.0 * window.as_secs_f64();
        self.flows.iter().map(|f| (f.received - f.mark) as f64 / capacity).collect()
    }

    /// The median and 95th percentile of the bottleneck's queueing delay over the window.
    fn queue_percentiles(&self) -> (Duration, Duration) {
        let mut q = self.queue_samples.clone();
        q.sort_unstable();
        let at = |p: f64| q.get(((q.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
        (at(0.5), at(0.95))
    }

    fn pump(&mut self, host: usize) {
        let now = self.net.now();
        while let Some(d) = self.net.poll_receive(self.hosts[host]) {
            if let Some(f) = self.flows.iter_mut().find(|f| f.port == d.to.port()) {
                let side = if host == 0 { &mut f.sender } else { &mut f.receiver };
                side.handle_receive(now, &d.payload);
            }
        }
        for f in &mut self.flows {
            let side = if host == 0 { &mut f.sender } else { &mut f.receiver };
            if side.poll_timeout().is_some_and(|t| t <= now) {
                side.handle_timeout(now);
            }
            let from = SocketAddr::new(self.ips[host], f.port);
            let to = SocketAddr::new(self.ips[1 - host], f.port);
            self.buf.clear();
            while side.poll_transmit(now, &mut self.buf).is_some() {
                let payload = std::mem::take(&mut self.buf);
                self.net.send(self.hosts[host], peerlink_netsim::Datagram { from, to, payload });
            }
            if host == 1 {
                while let Some(m) = f.receiver.poll_message() {
                    f.received += m.data.len();
                }
            }
        }
    }
}

impl World for Shared {
    fn net(&self) -> &Network {
        &self.net
    }

    fn net_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    fn step(&mut self) {
        self.pump(0);
        self.pump(1);
        let now = self.net.now();
        while self.measuring && self.next_sample <= now {
            self.queue_samples.push(self.net.queue_delay(self.hosts[0], true));
            self.next_sample += Duration::from_millis(1);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let machines = self.flows.iter().flat_map(|f| [f.sender.poll_timeout(), f.receiver.poll_timeout()]);
        let sample = self.measuring.then_some(self.next_sample);
        machines.chain([sample]).flatten().min()
    }
}

const P1: Path = Path { rtt: Duration::from_millis(40), rate_bps: 50_000_000, loss: 0.0, queue: Duration::from_millis(100) };
const P2: Path = Path { loss: 0.01, ..P1 };
const P3: Path = Path { rtt: Duration::from_millis(150), rate_bps: 20_000_000, loss: 0.005, queue: Duration::from_millis(100) };

/// The most goodput a full link gives: payload against packet bytes (SCTP common header,
/// DATA chunk header, IPv4 + UDP headers) at the default MTU.
fn header_limit() -> f64 {
    let mtu = SctpConfig::default().mtu;
    let payload = (mtu - 12 - 16) & !3;
    payload as f64 / (mtu + UDP_IPV4_OVERHEAD) as f64
}

struct Outcome {
    shares: Vec<f64>,
    queue_median: Duration,
    queue_p95: Duration,
    overflow: u64,
}

fn measure(n: u64, path: Path, controls: &[CongestionControl], warmup: Duration, window: Duration) -> Outcome {
    let mut w = Shared::new(n, path, controls);
    w.connect();
    let overflow_before = w.net.stats().overflow;
    w.run(warmup, window);
    let (queue_median, queue_p95) = w.queue_percentiles();
    let out = Outcome {
        shares: w.shares(path, window),
        queue_median,
        queue_p95,
        overflow: w.net.stats().overflow - overflow_before,
    };
    println!(
        "{path:?} {controls:?}: goodput {:?} of the bottleneck (header limit {:.3}), queue median {queue_median:?} p95 {queue_p95:?}, {} packets dropped by the full queue",
        out.shares.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>(),
        header_limit(),
        out.overflow,
    );
    out
}

#[test]
fn baseline_numbers() {
    for (path, n) in [(P1, 1), (P2, 2), (P3, 3)] {
        for cc in [CongestionControl::Rfc9260, CongestionControl::Bbr] {
            measure(n, path, &[cc], Duration::from_secs(5), Duration::from_secs(10));
        }
    }
}
