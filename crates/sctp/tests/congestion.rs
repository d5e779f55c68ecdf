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
    /// The SACKs cross the same rate (a queue of their own): a lossy flow's SACKs, one per
    /// packet with many gap blocks, then queue too.
    both_ways: bool,
}

struct Flow {
    sender: Association,
    receiver: Association,
    port: u16,
    received: usize,
    /// Bytes received when the measurement window opened.
    mark: usize,
    reader: Reader,
    /// The most bytes the receiver buffered, and its largest receive window, at any time.
    peak_buffered: usize,
    peak_window: usize,
}

/// How the receiving application reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reader {
    /// Everything, as soon as it arrives.
    Fast,
    /// At most this many bytes per second (a message at a time), counted from `since`
    /// when `read` bytes had been read.
    Rate { bytes_per_second: f64, since: Instant, read: usize },
    /// Not at all.
    Stopped,
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
    overflow_in_warmup: u64,
    /// A loaded sending host: its driver gets the CPU only at multiples of this (from the
    /// start), so every timer and every arriving SACK is served up to this late.
    sender_slice: Option<Duration>,
    start: Instant,
    /// Something happened for the sender between its slices: wake it at the next one.
    sender_behind: bool,
}

impl Shared {
    fn new(n: u64, path: Path, controls: &[CongestionControl]) -> Shared {
        Shared::with_config(n, path, controls, SctpConfig::default())
    }

    fn with_config(n: u64, path: Path, controls: &[CongestionControl], base: SctpConfig) -> Shared {
        let start = Instant::now();
        let mut net = Network::new(n, start);
        let ips = ["198.51.100.1".parse().unwrap(), "198.51.100.2".parse().unwrap()];
        let one_way = path.rtt / 4;
        let bottleneck = LinkConfig {
            delay: one_way,
            loss: path.loss,
            rate_bps: path.rate_bps,
            // The bottleneck is on the data's way; unless `both_ways`, acknowledgements come
            // back freely.
            down_rate_bps: if path.both_ways { None } else { Some(0) },
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
                let config = SctpConfig {
                    local_port: port,
                    remote_port: port,
                    congestion_control: cc,
                    ..base.clone()
                };
                Flow {
                    sender: Association::new(start, config.clone(), seed(n * 16 + 2 * i as u64)),
                    receiver: Association::new(start, config, seed(n * 16 + 2 * i as u64 + 1)),
                    port,
                    received: 0,
                    mark: 0,
                    reader: Reader::Fast,
                    peak_buffered: 0,
                    peak_window: 0,
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
            overflow_in_warmup: 0,
            sender_slice: None,
            start,
            sender_behind: false,
        }
    }

    /// The first instant at or after `t` the sending host runs at.
    fn sender_runs_at(&self, t: Instant) -> Instant {
        let Some(slice) = self.sender_slice else { return t };
        let since = t.saturating_duration_since(self.start).as_nanos();
        let slice = slice.as_nanos();
        let slices = since.div_ceil(slice);
        self.start + Duration::from_nanos((slices * slice) as u64)
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
        let feed = Shared::feed;
        peerlink_netsim::run_with(self, warmup, feed, |_| false);
        self.overflow_in_warmup = self.net.stats().overflow;
        self.measuring = true;
        self.next_sample = self.net.now();
        for f in &mut self.flows {
            f.mark = f.received;
        }
        peerlink_netsim::run_with(self, window, feed, |_| false);
    }

    fn feed(&mut self) {
        let now = self.net.now();
        for f in &mut self.flows {
            while f.sender.buffered_amount(1) < BACKLOG {
                f.sender.send(now, 1, 53, vec![7; MESSAGE], true, Reliability::Reliable).unwrap();
            }
        }
    }

    /// Keeps every sender backlogged for `duration`, the receivers reading as `reader`.
    fn phase(&mut self, reader: Reader, duration: Duration) {
        for f in &mut self.flows {
            f.reader = reader;
            f.mark = f.received;
        }
        // The application acts now, not at the next packet.
        self.pump(1);
        peerlink_netsim::run_with(self, duration, Shared::feed, |_| false);
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
                f.watch_receiver();
            }
        }
        for f in &mut self.flows {
            let side = if host == 0 { &mut f.sender } else { &mut f.receiver };
            if side.poll_timeout().is_some_and(|t| t <= now) {
                side.handle_timeout(now);
            }
            // The application reads before the driver transmits: a window it reopens goes
            // out at once.
            if host == 1 {
                while f.may_read(now) {
                    let Some(m) = f.receiver.poll_message() else { break };
                    f.received += m.data.len();
                    if let Reader::Rate { read, .. } = &mut f.reader {
                        *read += m.data.len();
                    }
                }
                f.watch_receiver();
            }
            let side = if host == 0 { &mut f.sender } else { &mut f.receiver };
            let from = SocketAddr::new(self.ips[host], f.port);
            let to = SocketAddr::new(self.ips[1 - host], f.port);
            self.buf.clear();
            while side.poll_transmit(now, &mut self.buf).is_some() {
                let payload = std::mem::take(&mut self.buf);
                self.net.send(self.hosts[host], peerlink_netsim::Datagram { from, to, payload });
            }
        }
    }
}

impl Flow {
    fn may_read(&self, now: Instant) -> bool {
        match self.reader {
            Reader::Fast => true,
            Reader::Rate { bytes_per_second, since, read } => {
                (read as f64) < bytes_per_second * now.saturating_duration_since(since).as_secs_f64()
            }
            Reader::Stopped => false,
        }
    }

    fn watch_receiver(&mut self) {
        self.peak_buffered = self.peak_buffered.max(self.receiver.receive_buffered());
        self.peak_window = self.peak_window.max(self.receiver.receive_window_size().unwrap_or(0));
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
        let now = self.net.now();
        if self.sender_runs_at(now) == now {
            self.sender_behind = false;
            self.pump(0);
        } else {
            self.sender_behind = true;
        }
        self.pump(1);
        let now = self.net.now();
        while self.measuring && self.next_sample <= now {
            self.queue_samples.push(self.net.queue_delay(self.hosts[0], true));
            self.next_sample += Duration::from_millis(1);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let senders =
            self.flows.iter().filter_map(|f| f.sender.poll_timeout()).map(|t| self.sender_runs_at(t));
        let receivers = self.flows.iter().filter_map(|f| f.receiver.poll_timeout());
        let behind = self.sender_behind.then(|| self.sender_runs_at(self.net.now()));
        let sample = self.measuring.then_some(self.next_sample);
        // A reader at a rate takes its next message within a millisecond.
        let reading =
            self.flows.iter().any(|f| matches!(f.reader, Reader::Rate { .. })).then(|| self.net.now() + MS);
        senders.chain(receivers).chain([behind, sample, reading].into_iter().flatten()).min()
    }
}

const P1: Path = Path {
    rtt: Duration::from_millis(40),
    rate_bps: 50_000_000,
    loss: 0.0,
    queue: Duration::from_millis(100),
    both_ways: false,
};
const P2: Path = Path { loss: 0.01, ..P1 };
const P3: Path = Path {
    rtt: Duration::from_millis(150),
    rate_bps: 20_000_000,
    loss: 0.005,
    queue: Duration::from_millis(100),
    both_ways: false,
};

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

fn measure(
    n: u64,
    path: Path,
    controls: &[CongestionControl],
    warmup: Duration,
    window: Duration,
) -> Outcome {
    measure_on(n, path, controls, warmup, window, None)
}

/// [`measure`] with the sending host's driver running only every `sender_slice`.
fn measure_on(
    n: u64,
    path: Path,
    controls: &[CongestionControl],
    warmup: Duration,
    window: Duration,
    sender_slice: Option<Duration>,
) -> Outcome {
    let mut w = Shared::new(n, path, controls);
    w.sender_slice = sender_slice;
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
        "{path:?} {controls:?} sender slice {sender_slice:?}: goodput {:?} of the bottleneck (header limit {:.3}), queue median {queue_median:?} p95 {queue_p95:?}, {} packets dropped by the full queue ({} in the warm-up)",
        out.shares.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>(),
        header_limit(),
        out.overflow,
        w.overflow_in_warmup - overflow_before,
    );
    out
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn p1_bbr_fills_the_link_without_standing_queue_or_startup_overflow() {
    let old = measure(1, P1, &[CongestionControl::Rfc9260], 5 * SECOND, 10 * SECOND);
    let bbr = measure(1, P1, &[CongestionControl::Bbr], 5 * SECOND, 10 * SECOND);
    assert!(bbr.shares[0] >= 0.85, "goodput {:.3}", bbr.shares[0]);
    // The loss-based controller keeps the 100 ms queue nearly full; the model does not.
    assert!(old.queue_median > 50 * MS, "{:?}", old.queue_median);
    assert!(
        bbr.queue_median < 10 * MS && bbr.queue_p95 < 50 * MS,
        "{:?} {:?}",
        bbr.queue_median,
        bbr.queue_p95
    );
    // Startup stops before the queue overflows (libdatachannel loses 0-15 packets there).
    assert!(bbr.overflow <= 15, "{} packets dropped at the queue", bbr.overflow);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn p1_bbr_fills_the_link_from_a_loaded_host_whose_timers_wake_late() {
    // A busy host serves the sender's pacing timer and its SACKs only every 4 ms (a
    // scheduler time slice shared with other work). The pacer must make up the time it
    // lost: each late wake-up that sends less than the pacing rate feeds the model a low
    // delivery rate, the pacing rate follows it down and the next wake-up loses as much
    // again (the flow sat at ~10% of P1 on a loaded host).
    let bbr = measure_on(8, P1, &[CongestionControl::Bbr], 5 * SECOND, 10 * SECOND, Some(4 * MS));
    assert!(bbr.shares[0] >= 0.85, "goodput {:.3}", bbr.shares[0]);
    assert!(bbr.queue_median < 10 * MS, "{:?}", bbr.queue_median);
    assert!(bbr.overflow <= 15, "{} packets dropped at the queue", bbr.overflow);
}

/// On a lossy path the model keeps the link at least 70% full, at least twice what the
/// loss-based controller gets, without a standing queue.
fn stays_full_despite_loss(n: u64, path: Path) {
    let old = measure(n, path, &[CongestionControl::Rfc9260], 5 * SECOND, 10 * SECOND);
    let bbr = measure(n, path, &[CongestionControl::Bbr], 5 * SECOND, 10 * SECOND);
    assert!(bbr.shares[0] >= 0.70, "goodput {:.3}", bbr.shares[0]);
    assert!(bbr.shares[0] >= 2.0 * old.shares[0]);
    assert!(bbr.queue_median < 10 * MS, "{:?}", bbr.queue_median);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn p2_bbr_keeps_a_lossy_link_full() {
    stays_full_despite_loss(2, P2);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn p3_bbr_keeps_a_long_lossy_link_full() {
    stays_full_despite_loss(3, P3);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn p3_bbr_stays_full_when_the_sacks_cross_the_bottleneck_too() {
    // Startup overflows the 100 ms queue (two thirds of a BDP here); the SACKs of the
    // losses then queue on the way back, inflating the RTT. Without a ceiling from that
    // overflow the model overestimated the rate and kept overflowing (0.45 of the link).
    stays_full_despite_loss(7, Path { both_ways: true, ..P3 });
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn two_bbr_flows_share_a_bottleneck_evenly() {
    // FAIRNESS_SEEDS=N runs N more seeds per path (a sweep, by hand: one in twenty may miss).
    let extra: u64 = std::env::var("FAIRNESS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut misses = Vec::new();
    let mut runs = 0;
    for (path, n) in [(P1, 4), (P2, 5)] {
        for n in std::iter::once(n).chain((0..extra).map(|k| 100 + k)) {
            // BBR flows converge slowly (through the packets each keeps queued once both are
            // window-limited): judge them over 30 s after 10 s.
            let out =
                measure(n, path, &[CongestionControl::Bbr, CongestionControl::Bbr], 10 * SECOND, 30 * SECOND);
            let (a, b) = (out.shares[0], out.shares[1]);
            let even = a.min(b) >= 0.8 * a.max(b);
            println!(
                "fairness seed {n} loss {}: {a:.3} vs {b:.3}, ratio {:.3}",
                path.loss,
                a.min(b) / a.max(b)
            );
            assert!(a + b >= 0.80, "seed {n}: together {:.3}", a + b);
            // The fixed seeds (the default run) must be even; only a sweep's may miss.
            assert!(even || n >= 100, "seed {n} loss {}: {a:.3} vs {b:.3}", path.loss);
            runs += 1;
            if !even {
                misses.push(format!("seed {n} loss {}: {a:.3} vs {b:.3}", path.loss));
            }
        }
    }
    assert!(misses.len() as u64 <= runs / 20, "{} of {runs} uneven: {misses:?}", misses.len());
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn bbr_next_to_a_reno_flow_takes_at_most_two_thirds() {
    let out = measure(6, P1, &[CongestionControl::Bbr, CongestionControl::Rfc9260], 10 * SECOND, 20 * SECOND);
    let (bbr, reno) = (out.shares[0], out.shares[1]);
    assert!(bbr <= 2.0 / 3.0 * (bbr + reno), "BBR {bbr:.3}, Reno-like {reno:.3}");
    assert!(bbr + reno >= 0.80, "together {:.3}", bbr + reno);
}

const MS: Duration = Duration::from_millis(1);

/// A long, fast path: 150 ms RTT at 100 Mbit/s, a bandwidth-delay product of 1.9 MB, more
/// than the initial receive window.
const LONG_FAST: Path = Path {
    rtt: Duration::from_millis(150),
    rate_bps: 100_000_000,
    loss: 0.0,
    queue: Duration::from_millis(100),
    both_ways: false,
};

/// Goodput as a fraction of `path`'s bottleneck of `flow` since its mark, over `window`.
fn share(flow: &Flow, path: Path, window: Duration) -> f64 {
    (flow.received - flow.mark) as f64 / (path.rate_bps as f64 / 8.0 * window.as_secs_f64())
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn receive_window_grows_to_fill_a_long_fast_path() {
    // A window that stays at its initial 1 MiB caps the flow at 1 MiB per RTT, about 56% of
    // this link; the tuned one grows to what the path needs, within its bound.
    let untuned = SctpConfig { receive_window: 1 << 20, ..SctpConfig::default() };
    let mut results = Vec::new();
    // For comparison, not judged: the fixed 4 MiB window of before.
    let fixed =
        SctpConfig { initial_receive_window: 4 << 20, receive_window: 4 << 20, ..SctpConfig::default() };
    for (name, config) in
        [("untuned 1 MiB", untuned), ("auto-tuned", SctpConfig::default()), ("fixed 4 MiB", fixed)]
    {
        let limit = config.receive_window;
        let mut w = Shared::with_config(9, LONG_FAST, &[CongestionControl::Bbr], config);
        w.connect();
        w.phase(Reader::Fast, 5 * SECOND);
        w.phase(Reader::Fast, 10 * SECOND);
        let f = &w.flows[0];
        let share = share(f, LONG_FAST, 10 * SECOND);
        println!(
            "{LONG_FAST:?} {name}: goodput {share:.3} of the bottleneck, window {} bytes (peak {}), peak buffered {}, {} packets dropped by the full queue",
            f.receiver.receive_window_size().unwrap(),
            f.peak_window,
            f.peak_buffered,
            w.net.stats().overflow,
        );
        assert!(f.peak_window <= limit && f.peak_buffered <= limit, "{name}: beyond the bound");
        results.push(share);
    }
    assert!(results[0] < 0.65, "the path needs more than 1 MiB of window: {:.3}", results[0]);
    assert!(results[1] >= 0.85, "auto-tuned goodput {:.3}", results[1]);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn a_slow_reader_keeps_the_receive_window_and_its_memory_small() {
    // The application reads 1 MB/s off a 50 Mbit/s path: the window stays at its initial
    // 1 MiB rather than its bound, so that is all the receiver ever buffers (a fixed window
    // fills to its size), and the reader is never starved either.
    let config = SctpConfig::default();
    let mut w = Shared::with_config(10, P1, &[CongestionControl::Bbr], config.clone());
    w.connect();
    let rate = 1_000_000.0;
    let since = w.net.now();
    w.phase(Reader::Rate { bytes_per_second: rate, since, read: 0 }, 15 * SECOND);
    let f = &w.flows[0];
    let read_rate = f.received as f64 / 15.0;
    println!(
        "{P1:?} reader at {rate} B/s: read {read_rate:.0} B/s, window {} (peak {}), peak buffered {}",
        f.receiver.receive_window_size().unwrap(),
        f.peak_window,
        f.peak_buffered
    );
    assert!(read_rate >= 0.97 * rate, "the reader starved: {read_rate:.0} B/s");
    assert_eq!(f.peak_window, config.initial_receive_window, "the window grew for a slow reader");
    assert!(f.peak_buffered <= config.initial_receive_window, "buffered {}", f.peak_buffered);
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn a_reader_that_stops_closes_the_grown_window_within_the_bound() {
    // The window grows on a long, fast path; then the application stops reading: the buffer
    // fills to the window, never past the bound, and the sender is held there (window 0).
    // Reading again reopens it at once.
    let config = SctpConfig::default();
    let limit = config.receive_window;
    let mut w = Shared::with_config(11, LONG_FAST, &[CongestionControl::Bbr], config.clone());
    w.connect();
    w.phase(Reader::Fast, 10 * SECOND);
    let grown = w.flows[0].receiver.receive_window_size().unwrap();
    w.phase(Reader::Stopped, 10 * SECOND);
    let f = &w.flows[0];
    let (buffered, advertised) = (f.receiver.receive_buffered(), f.receiver.receive_window().unwrap());
    println!(
        "{LONG_FAST:?} reader stopped: window {grown} then {}, buffered {buffered} (peak {}), advertised {advertised}",
        f.receiver.receive_window_size().unwrap(),
        f.peak_buffered
    );
    assert!(grown > config.initial_receive_window, "the window did not grow: {grown}");
    assert_eq!(f.received, f.mark, "nothing was read");
    assert!(f.peak_buffered <= limit && f.peak_window <= limit, "beyond the bound");
    assert!(advertised < 1188, "the window stays open: {advertised}");
    assert!(buffered + 64 * 1024 >= f.receiver.receive_window_size().unwrap(), "{buffered}");
    // The window update goes out as the reader drains the buffer; the sender's model
    // needs a few rounds to ramp up again from the window probes.
    w.phase(Reader::Fast, 2 * SECOND);
    let ramp = share(&w.flows[0], LONG_FAST, 2 * SECOND);
    w.phase(Reader::Fast, 8 * SECOND);
    let resumed = share(&w.flows[0], LONG_FAST, 8 * SECOND);
    println!("after reading again: goodput {ramp:.3} in 2 s, then {resumed:.3}");
    assert!(ramp >= 0.3, "goodput {ramp:.3} in the 2 s after the reader came back");
    assert!(resumed >= 0.85, "goodput {resumed:.3} after the reader came back");
}

#[test]
#[ignore = "seconds in debug builds: scripts/test.sh runs it with --release"]
fn the_tuned_window_does_not_hold_back_a_loss_based_sender() {
    // What other WebRTC stacks send with (usrsctp's and libdatachannel's loss-based
    // controller, our RFC 9260 one here) into our receiver: a window starting at 1 MiB and
    // tuned gets what a window fixed at the 4 MiB bound gets (the INIT announces 4 MiB
    // either way, so the sender's slow start is the same).
    let fixed = SctpConfig { initial_receive_window: 4 << 20, ..SctpConfig::default() };
    for (n, path) in [(12, P1), (13, P2), (14, P3)] {
        let mut shares = Vec::new();
        for config in [SctpConfig::default(), fixed.clone()] {
            let mut w = Shared::with_config(n, path, &[CongestionControl::Rfc9260], config);
            w.connect();
            w.run(5 * SECOND, 10 * SECOND);
            shares.push(w.shares(path, 10 * SECOND)[0]);
            let f = &w.flows[0];
            println!(
                "{path:?} RFC 9260 sender: goodput {:.3}, receive window {} (peak buffered {})",
                shares.last().unwrap(),
                f.receiver.receive_window_size().unwrap(),
                f.peak_buffered
            );
        }
        assert!(shares[0] >= 0.95 * shares[1], "{path:?}: tuned {:.3}, fixed {:.3}", shares[0], shares[1]);
    }
}
