use super::*;
use crate::TestRng;

const MS: Duration = Duration::from_millis(1);

fn quiet() -> BweConfig {
    BweConfig { probing: false, ..BweConfig::default() }
}

/// Feedback for `count` packets from `base`, all received `gap` quarter-ms apart.
fn received(base: u16, count: usize, gap: i16) -> TransportCc {
    TransportCc { base_sequence: base, deltas: vec![Some(gap); count], ..Default::default() }
}

#[test]
fn feedback_before_anything_was_sent_is_ignored() {
    let mut bwe = BandwidthEstimator::new(quiet());
    bwe.on_feedback(Instant::now(), &received(0, 10, 4));
    assert_eq!(bwe.stats().statuses_ignored, 10);
    assert_eq!(bwe.target_bitrate(), 300_000);
    assert_eq!(bwe.poll_timeout(), None);
}

#[test]
fn duplicate_and_repeated_reports_count_once() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(quiet());
    for s in 0..10 {
        bwe.on_packet_sent(t0 + MS * u32::from(s), s, 1000);
    }
    let mut fb = received(0, 10, 4);
    fb.deltas[3] = None;
    bwe.on_feedback(t0 + 50 * MS, &fb);
    bwe.on_feedback(t0 + 51 * MS, &fb);
    // Then the lost one turns up (reordered across feedback).
    bwe.on_feedback(t0 + 52 * MS, &received(3, 1, 4));
    let stats = bwe.stats();
    assert_eq!((stats.packets_received, stats.packets_lost, stats.statuses_ignored), (10, 0, 10));
}

#[test]
fn garbage_feedback_never_panics() {
    let t0 = Instant::now();
    let mut rng = TestRng::new(18);
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    let mut now = t0;
    for round in 0..1000u32 {
        now += MS * rng.below(30);
        for _ in 0..rng.below(20) {
            bwe.on_packet_sent(now, rng.next() as u16 % 200, rng.below(1500) as usize);
        }
        while let Some(c) = bwe.poll_probe(now) {
            bwe.on_probe_sent(now, rng.next() as u16 % 200, 1200, c.id ^ (round & 1));
        }
        let len = rng.below(120) as usize;
        let body = rng.bytes(len);
        if let Ok(fb) = TransportCc::decode(&body) {
            bwe.on_feedback(now, &fb);
        }
        // Hand-made: extreme deltas and reference times, out of order bases, duplicates.
        let count = rng.below(40) as usize;
        let fb = TransportCc {
            base_sequence: rng.next() as u16 % 220,
            reference_time: [0, -0x80_0000, 0x7f_ffff, rng.next() as i32 >> 8][rng.below(4) as usize],
            deltas: (0..count)
                .map(|_| {
                    [None, Some(i16::MIN), Some(i16::MAX), Some(rng.next() as i16)][rng.below(4) as usize]
                })
                .collect(),
            ..Default::default()
        };
        bwe.on_feedback(now, &fb);
        bwe.on_feedback(now, &fb);
        if let Some(at) = bwe.poll_timeout() {
            bwe.handle_timeout(at.max(now));
        }
        let rate = bwe.target_bitrate();
        assert!((30_000..=10_000_000).contains(&rate), "{rate}");
    }
    assert!(bwe.stats().feedbacks > 1000);
}

#[test]
fn silence_halves_the_rate_after_the_timeout_then_every_second() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig { start_bps: 800_000, ..quiet() });
    bwe.on_packet_sent(t0, 0, 1000);
    bwe.on_feedback(t0 + 50 * MS, &received(0, 1, 4));
    let rate = bwe.target_bitrate();
    assert_eq!(bwe.poll_timeout(), None, "nothing waits for feedback");
    bwe.on_packet_sent(t0 + 60 * MS, 1, 1000);
    let at = bwe.poll_timeout().unwrap();
    assert_eq!(at, t0 + 50 * MS + FEEDBACK_TIMEOUT);
    bwe.handle_timeout(at - MS);
    assert_eq!(bwe.target_bitrate(), rate);
    bwe.handle_timeout(at);
    assert_eq!(bwe.target_bitrate(), rate / 2);
    assert_eq!(bwe.poll_timeout(), Some(at + TIMEOUT_REPEAT));
    bwe.handle_timeout(at + TIMEOUT_REPEAT);
    assert_eq!(bwe.target_bitrate(), rate / 4);
    assert_eq!(bwe.stats().timeouts, 2);
}

#[test]
fn an_idle_sender_is_not_timed_out_when_it_starts_again() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(quiet());
    bwe.on_packet_sent(t0, 0, 1000);
    bwe.on_feedback(t0 + 50 * MS, &received(0, 1, 4));
    bwe.on_packet_sent(t0 + 10_000 * MS, 1, 1000);
    assert_eq!(bwe.poll_timeout(), Some(t0 + 10_000 * MS + MIN_UNANSWERED));
}

#[test]
fn probes_come_out_once_and_their_result_sets_the_rate() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    let clusters: Vec<_> = std::iter::from_fn(|| bwe.poll_probe(t0)).collect();
    assert_eq!(clusters.iter().map(|c| c.bitrate_bps).collect::<Vec<_>>(), [900_000, 1_800_000]);
    // The first cluster: 9 packets of 1200 bytes (MIN_PROBE_BYTES), 10 ms apart when sent
    // and received.
    let c = clusters[0];
    assert_eq!(c.min_bytes, probe::MIN_PROBE_BYTES);
    for s in 0..9u16 {
        bwe.on_probe_sent(t0 + MS * u32::from(s) * 10, s, 1200, c.id);
    }
    bwe.on_feedback(t0 + 150 * MS, &received(0, 9, 40));
    // 1200 bytes every 10 ms: 960 kbit/s each way, and the cluster ran at 900.
    assert_eq!(bwe.stats().probe_results, 1);
    assert_eq!(bwe.target_bitrate(), 960_000);
}

#[test]
fn garbage_decoded_as_feedback_from_random_bytes_never_panics() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    for s in 0..1000u16 {
        bwe.on_packet_sent(t0 + MS * u32::from(s), s, 1000);
    }
    let mut rng = TestRng::new(7);
    for (i, body) in rng.garbage(1500, 120).into_iter().enumerate() {
        if let Ok(fb) = TransportCc::decode(&body) {
            bwe.on_feedback(t0 + MS * (1000 + i as u32), &fb);
        }
    }
    assert!(bwe.target_bitrate() >= 30_000);
}

#[test]
fn extreme_settings_and_sizes_stay_within_bounds() {
    let t0 = Instant::now();
    for config in [
        BweConfig { start_bps: u64::MAX, min_bps: u64::MAX, max_bps: u64::MAX, probing: true },
        BweConfig { start_bps: 0, min_bps: 0, max_bps: 0, probing: true },
        BweConfig { start_bps: 5, min_bps: 10, max_bps: 1, probing: true },
    ] {
        let mut bwe = BandwidthEstimator::new(config);
        for s in 0..200u16 {
            let now = t0 + MS * u32::from(s);
            match bwe.poll_probe(now) {
                Some(c) => bwe.on_probe_sent(now, s, usize::MAX, c.id),
                None => bwe.on_packet_sent(now, s, usize::MAX / 2),
            }
        }
        for base in (0..200u16).step_by(20) {
            bwe.on_feedback(t0 + MS * (250 + u32::from(base)), &received(base, 20, 1));
        }
        bwe.handle_timeout(t0 + 100 * FEEDBACK_TIMEOUT);
        let rate = bwe.target_bitrate();
        let (min, max) = (bwe.config.min_bps, bwe.config.max_bps);
        assert!(min >= 1 && (min..=max).contains(&rate), "{config:?}: {rate}");
    }
}

/// Feedback for `count` packets from `base`, the first received at `at_ms` (receiver's
/// clock), then one every 10 ms.
fn received_at(base: u16, count: usize, at_ms: u32) -> TransportCc {
    let reference = at_ms / 64;
    let mut deltas = vec![Some(40i16); count];
    deltas[0] = Some(((at_ms - reference * 64) * 4) as i16);
    TransportCc { base_sequence: base, reference_time: reference as i32, deltas, ..Default::default() }
}

#[test]
fn an_application_limited_sender_is_probed_at_twice_the_target_every_few_seconds() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    // The start's two probes are let go (never sent).
    assert_eq!(std::iter::from_fn(|| bwe.poll_probe(t0)).count(), 2);
    // 150 bytes every 10 ms (120 kbit/s) against a 300 kbit/s target: application-limited.
    let mut asked = Vec::new();
    for s in 0..1200u16 {
        let now = t0 + MS * u32::from(s) * 10;
        bwe.on_packet_sent(now, s, 150);
        if s % 10 == 9 {
            bwe.on_feedback(now + 30 * MS, &received_at(s - 9, 10, u32::from(s - 9) * 10 + 20));
            while let Some(c) = bwe.poll_probe(now) {
                asked.push(((now - t0).as_millis() / 100, c.bitrate_bps, bwe.target_bitrate()));
            }
        }
    }
    println!("probes asked (100 ms, bit/s, target): {asked:?}");
    assert!(asked.len() >= 2, "{asked:?}");
    for w in asked.windows(2) {
        assert!(w[1].0 - w[0].0 >= 50, "more often than every 5 s: {asked:?}");
    }
    assert!(asked.iter().all(|(_, bps, target)| *bps == 2 * target), "{asked:?}");
    // A target already three times what arrives: nothing to learn, no probe.
    let mut bwe = BandwidthEstimator::new(BweConfig { start_bps: 1_000_000, ..BweConfig::default() });
    while bwe.poll_probe(t0).is_some() {}
    for s in 0..300u16 {
        let now = t0 + MS * u32::from(s) * 10;
        bwe.on_packet_sent(now, s, 150);
        if s % 10 == 9 {
            bwe.on_feedback(now + 30 * MS, &received_at(s - 9, 10, u32::from(s - 9) * 10 + 20));
            assert_eq!(bwe.poll_probe(now), None, "target {}", bwe.target_bitrate());
        }
    }
}

#[test]
fn no_application_limited_probe_right_after_the_path_showed_it_is_full() {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    assert_eq!(std::iter::from_fn(|| bwe.poll_probe(t0)).count(), 2);
    // 150 bytes every 10 ms (120 kbit/s, application-limited against the 300 kbit/s start);
    // for the first 1.5 s every third packet is lost, so the estimate falls (as when an SFU's
    // subscriber path suddenly carries less and the SFU sends it a lower layer).
    let mut asked = Vec::new();
    let mut last_fall = None;
    let mut target = bwe.target_bitrate();
    for s in 0..1500u16 {
        let now = t0 + MS * u32::from(s) * 10;
        bwe.on_packet_sent(now, s, 150);
        if s % 10 == 9 {
            let mut fb = received_at(s - 9, 10, u32::from(s - 9) * 10 + 20);
            if s < 150 {
                for (i, d) in fb.deltas.iter_mut().enumerate() {
                    if i % 3 == 1 {
                        *d = None;
                    }
                }
            }
            bwe.on_feedback(now + 30 * MS, &fb);
            if bwe.target_bitrate() < target {
                last_fall = Some(now + 30 * MS);
            }
            target = bwe.target_bitrate();
            while let Some(c) = bwe.poll_probe(now) {
                asked.push(now + 30 * MS);
                bwe.cancel_probe(c.id);
            }
        }
    }
    let last_fall = last_fall.expect("the losses lower the estimate");
    let ms = |at: Instant| (at - t0).as_millis();
    println!(
        "estimate last fell at {} ms; probes asked at {:?} ms; target at the end {target}",
        ms(last_fall),
        asked.iter().map(|&a| ms(a)).collect::<Vec<_>>()
    );
    assert!(!asked.is_empty(), "the sender stays application-limited: a probe comes in the end");
    assert!(
        asked.iter().all(|&at| at >= last_fall + ALR_QUIET_AFTER_FALL),
        "a probe within {ALR_QUIET_AFTER_FALL:?} of the fall at {} ms: {:?}",
        ms(last_fall),
        asked.iter().map(|&a| ms(a)).collect::<Vec<_>>()
    );
}

/// What `on_packet_sent` costs in an SFU's pattern: 100 subscribers' estimators fed
/// round-robin, 50,000 packets a second in all (500 each), each log holding its 5 s, so
/// that what a call touches is cold. Prints ns per call:
/// `cargo test --release -p peerlink-media --lib on_packet_sent_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn on_packet_sent_cost() {
    const ESTIMATORS: usize = 100;
    const STEP: Duration = Duration::from_micros(20);
    let t0 = Instant::now();
    let mut bwes: Vec<BandwidthEstimator> =
        (0..ESTIMATORS).map(|_| BandwidthEstimator::new(BweConfig::default())).collect();
    let mut k = 0u32;
    let mut run = |bwes: &mut Vec<BandwidthEstimator>, calls: u32| {
        let start = Instant::now();
        for _ in 0..calls {
            let seq = (k as usize / ESTIMATORS) as u16;
            bwes[k as usize % ESTIMATORS].on_packet_sent(t0 + STEP * k, seq, 1210);
            k += 1;
        }
        start.elapsed().as_nanos() as f64 / f64::from(calls)
    };
    // 6 s: every log holds its 5 s.
    run(&mut bwes, 300_000);
    let mut ns: Vec<f64> = (0..7).map(|_| run(&mut bwes, 200_000)).collect();
    ns.sort_by(f64::total_cmp);
    let held: usize = bwes.iter().map(|b| b.log.len()).sum();
    println!(
        "on_packet_sent: median {:.1} ns (min {:.1}, max {:.1}) per call; {held} packets logged",
        ns[3], ns[0], ns[6]
    );
}
