//! Reception and sending statistics of one RTP stream for RTCP reports (RFC 3550 §6.4):
//! extended highest sequence number, cumulative and fractional loss (Appendix A.1, A.3),
//! interarrival jitter (§6.4.1, Appendix A.8), LSR/DLSR, and the sender report's RTP
//! timestamp extrapolated to the report's wall-clock time.

use peerlink_proto::{Serial16, Unwrapper16};
use peerlink_rtp::rtcp::{ReportBlock, SenderReport};
use std::time::{Duration, Instant};

/// RFC 3550 Appendix A.1: a forward jump of this many or more is not a gap but a restart
/// (or garbage) until a second packet confirms it.
const MAX_DROPOUT: u64 = 3000;
/// RFC 3550 Appendix A.1: how far back a packet may be and still count as reordered.
const MAX_MISORDER: u64 = 100;

/// `d` in units of `1 / per_second` seconds, rounded down, saturating.
fn to_units(d: Duration, per_second: u64) -> u64 {
    let units = d.as_nanos() * u128::from(per_second) / 1_000_000_000;
    u64::try_from(units).unwrap_or(u64::MAX)
}

/// Statistics of one received RTP stream (one SSRC), for the report block about it.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    clock_rate: u32,
    unwrapper: Unwrapper16,
    /// Extended sequence number counting starts from (A.1 `base_seq`).
    base: Option<u64>,
    /// A.1 `bad_seq`: the sequence number that would confirm a large jump.
    bad_seq: Option<Serial16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// A.8: the jitter estimate scaled by 16, in RTP timestamp units.
    jitter_q4: u32,
    last_transit: Option<u32>,
    /// Arrival times are counted on the RTP clock from here.
    epoch: Option<Instant>,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    /// `clock_rate`: the stream's RTP clock in Hz (90,000 for video, 48,000 for Opus).
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            clock_rate: clock_rate.max(1),
            unwrapper: Unwrapper16::new(),
            base: None,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_q4: 0,
            last_transit: None,
            epoch: None,
            last_sr: None,
        }
    }

    /// A packet of the stream arrived (after SRTP; retransmissions in RTX go to the RTX
    /// stream's own statistics).
    pub fn on_packet(&mut self, now: Instant, seq: Serial16, rtp_timestamp: u32) {
        let Some(highest) = self.unwrapper.highest() else {
            self.restart(now, seq);
            self.update_jitter(now, rtp_timestamp);
            return;
        };
        let ext = self.unwrapper.peek(seq);
        // A.1: a large jump ahead, or a packet far behind, is a restart of the source if
        // the next packet follows it; until then it is dropped.
        let far_ahead = ext > highest && ext - highest >= MAX_DROPOUT;
        let far_behind = ext < highest && highest - ext > MAX_MISORDER;
        if far_ahead || far_behind {
            if self.bad_seq == Some(seq) {
                self.restart(now, seq);
                self.update_jitter(now, rtp_timestamp);
            } else {
                self.bad_seq = Some(seq.wrapping_add(1));
            }
            return;
        }
        if ext > highest {
            self.unwrapper.unwrap(seq);
            self.update_jitter(now, rtp_timestamp);
        }
        // In order, reordered or duplicated: all count as received (A.3, so duplicates can
        // make the loss negative). Jitter only from packets in order: a reordered one's
        // transit says nothing about the path now.
        self.bad_seq = None;
        self.received += 1;
    }

    /// A.1 `init_seq`: counting starts over at `seq`.
    fn restart(&mut self, now: Instant, seq: Serial16) {
        // Keep the extended numbering going up so reports stay monotonic.
        let ext = self.unwrapper.highest().map_or(u64::from(seq.0), |_| self.unwrapper.peek(seq));
        self.unwrapper = Unwrapper16::starting_at(ext);
        self.base = Some(ext);
        self.bad_seq = None;
        self.received = 1;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.last_transit = None;
        self.epoch.get_or_insert(now);
    }

    fn update_jitter(&mut self, now: Instant, rtp_timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = to_units(now.saturating_duration_since(epoch), u64::from(self.clock_rate)) as u32;
        // A.8: transit times wrap with the timestamps; only their differences matter.
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last) as i32;
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, in fixed point with four fractional bits.
            self.jitter_q4 = self.jitter_q4.wrapping_add(d).wrapping_sub(self.jitter_q4.wrapping_add(8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// A sender report from the stream's source arrived; `ntp` is its NTP timestamp.
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block about the stream (`ssrc`: its SSRC) for an RR or SR sent now; starts
    /// a new interval for the fraction lost.
    pub fn report_block(&mut self, now: Instant, ssrc: u32) -> ReportBlock {
        let expected = self.expected();
        // A.3: fraction lost over the interval since the last report, zero if negative.
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received.saturating_sub(self.received_prior);
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = match expected_interval {
            0 => 0,
            e => ((lost_interval << 8) / e).min(255) as u8,
        };
        self.expected_prior = expected;
        self.received_prior = self.received;
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            // §6.4.1: DLSR in units of 1/65536 seconds.
            Some((lsr, at)) => {
                (lsr, to_units(now.saturating_duration_since(at), 65_536).min(u64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            // §6.4.1: a 24-bit signed field; clamp rather than wrap (A.3).
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_sequence: self.unwrapper.highest().unwrap_or(0) as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }

    fn expected(&self) -> u64 {
        match (self.base, self.unwrapper.highest()) {
            (Some(base), Some(highest)) => highest + 1 - base,
            _ => 0,
        }
    }

    /// Packets counted since the stream (re)started, duplicates included.
    pub fn packets_received(&self) -> u64 {
        self.received
    }

    /// Expected minus received: negative when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// The extended highest sequence number received, if any.
    pub fn highest_sequence(&self) -> Option<u64> {
        self.unwrapper.highest()
    }
}

/// What a sender counts for its sender reports (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Default)]
pub struct SendStats {
    packets: u32,
    octets: u32,
    last: Option<(Instant, u32)>,
}

impl SendStats {
    pub fn new() -> SendStats {
        SendStats::default()
    }

    /// A packet was sent with this RTP timestamp and `payload_len` bytes of payload
    /// (§6.4.1: the octet count excludes header and padding).
    pub fn on_packet(&mut self, now: Instant, rtp_timestamp: u32, payload_len: usize) {
        // §6.4.1: both counts wrap.
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_len as u32);
        self.last = Some((now, rtp_timestamp));
    }

    pub fn packet_count(&self) -> u32 {
        self.packets
    }

    pub fn octet_count(&self) -> u32 {
        self.octets
    }

    /// A sender report for now, whose wall-clock time is `ntp` (NTP format, 32.32). §6.4.1:
    /// the RTP timestamp is the same instant on the media clock, extrapolated from the last
    /// packet's timestamp; before any packet it is zero. Report blocks are the caller's to
    /// add.
    pub fn sender_report(&self, now: Instant, ntp: u64, ssrc: u32, clock_rate: u32) -> SenderReport {
        let rtp_time = match self.last {
            Some((at, ts)) => {
                let elapsed = to_units(now.saturating_duration_since(at), u64::from(clock_rate));
                ts.wrapping_add(elapsed as u32)
            }
            None => 0,
        };
        SenderReport {
            ssrc,
            ntp_time: ntp,
            rtp_time,
            packet_count: self.packets,
            octet_count: self.octets,
            reports: Vec::new(),
        }
    }
}

/// Round-trip time from a report block about one of our streams (RFC 3550 §6.4.1, Figure
/// 2): A - LSR - DLSR, where `now_ntp_mid32` (A) is the middle 32 bits of the NTP time the
/// block arrived. `None` when the peer had no SR of ours (LSR zero); a result below zero
/// (rounding, or a peer's bad DLSR) is zero.
pub fn rtt_from_report_block(now_ntp_mid32: u32, block: &ReportBlock) -> Option<Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = now_ntp_mid32.wrapping_sub(block.last_sr).wrapping_sub(block.delay_since_last_sr);
    let rtt = if (rtt as i32) < 0 { 0 } else { rtt };
    Some(Duration::from_nanos(u64::from(rtt) * 1_000_000_000 / 65_536))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn in_order_stream_has_no_loss_and_no_jitter() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        for i in 0..100u32 {
            // 30 fps: 3000 ticks and 33.33 ms apart, arriving exactly on time.
            let now = t0 + Duration::from_micros(u64::from(i) * 100_000 / 3);
            s.on_packet(now, Serial16(65_500u16.wrapping_add(i as u16)), 1_000 + i * 3000);
        }
        assert_eq!(s.packets_received(), 100);
        assert_eq!(s.lost(), 0);
        assert!(s.jitter() <= 1, "jitter {}", s.jitter());
        let b = s.report_block(t0, 7);
        assert_eq!(b.ssrc, 7);
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 0));
        // Wrapped once: cycles in the upper 16 bits.
        assert_eq!(b.highest_sequence, 65_536 + (65_500 + 99 - 65_536));
        assert_eq!((b.last_sr, b.delay_since_last_sr), (0, 0));
    }

    #[test]
    fn loss_and_fraction_follow_appendix_a3() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        for i in (0..100u16).filter(|i| i % 4 != 1) {
            s.on_packet(t0, Serial16(i), 0);
        }
        assert_eq!(s.lost(), 25);
        let b = s.report_block(t0, 1);
        assert_eq!(b.cumulative_lost, 25);
        assert_eq!(b.fraction_lost, (25 * 256 / 100) as u8);
        // Next interval: no loss; the fraction starts over, the total stays.
        for i in 100..200 {
            s.on_packet(t0, Serial16(i), 0);
        }
        let b = s.report_block(t0, 1);
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 25));
        // Duplicates make the loss negative and the fraction zero.
        for _ in 0..40 {
            s.on_packet(t0, Serial16(199), 0);
        }
        let b = s.report_block(t0, 1);
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, -15));
    }

    #[test]
    fn jitter_follows_appendix_a8() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(1000); // 1 tick per ms
                                             // Packets sent every 100 ticks, arriving alternately 0 and 40 ms late: |D| = 40.
        for i in 0..400u32 {
            let late = if i % 2 == 0 { 0 } else { 40 };
            s.on_packet(t0 + MS * (i * 100 + late), Serial16(i as u16), i * 100);
        }
        // J converges to |D| (the integer form of A.8 settles half a unit low).
        let j = s.jitter();
        assert!((39..=40).contains(&j), "jitter {j}");
        // A reordered packet does not feed the estimate.
        s.on_packet(t0 + MS * 100_000, Serial16(390), 39_000);
        assert_eq!(s.jitter(), j);
    }

    #[test]
    fn jitter_counts_from_the_second_packet() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(1000);
        s.on_packet(t0, Serial16(1), 0);
        s.on_packet(t0 + MS * 16, Serial16(2), 0);
        // J = |D| / 16 = 1 after one difference.
        assert_eq!(s.jitter(), 1);
    }

    #[test]
    fn a_large_jump_restarts_only_when_confirmed() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        for i in 0..10 {
            s.on_packet(t0, Serial16(i), 0);
        }
        // One stray packet far ahead is dropped.
        s.on_packet(t0, Serial16(30_000), 0);
        s.on_packet(t0, Serial16(10), 0);
        assert_eq!((s.packets_received(), s.lost()), (11, 0));
        // Two in a row: the source restarted there.
        s.on_packet(t0, Serial16(40_000), 0);
        s.on_packet(t0, Serial16(40_001), 0);
        assert_eq!((s.packets_received(), s.lost()), (1, 0));
        s.on_packet(t0, Serial16(40_002), 0);
        assert_eq!((s.packets_received(), s.lost()), (2, 0));
    }

    #[test]
    fn cumulative_loss_is_clamped_to_24_bits() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        let mut seq = Serial16(0);
        s.on_packet(t0, seq, 0);
        // 2,900 lost for every one received, until past 2^23.
        for _ in 0..3000 {
            seq = seq.wrapping_add(2900);
            s.on_packet(t0, seq, 0);
        }
        assert!(s.lost() > 0x7f_ffff);
        assert_eq!(s.report_block(t0, 1).cumulative_lost, 0x7f_ffff);
    }

    #[test]
    fn dlsr_counts_from_the_sender_report() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new(90_000);
        s.on_packet(t0, Serial16(1), 0);
        s.on_sender_report(t0, 0x1122_3344_5566_7788);
        let b = s.report_block(t0 + Duration::from_millis(1500), 9);
        assert_eq!(b.last_sr, 0x3344_5566);
        assert_eq!(b.delay_since_last_sr, 98_304); // 1.5 × 65536
    }

    #[test]
    fn sender_report_extrapolates_the_rtp_timestamp() {
        let t0 = Instant::now();
        let mut s = SendStats::new();
        assert_eq!(s.sender_report(t0, 5, 1, 90_000).rtp_time, 0);
        s.on_packet(t0, 1000, 100);
        s.on_packet(t0, u32::MAX - 899, 50);
        let sr = s.sender_report(t0 + Duration::from_millis(20), 0xAB, 3, 90_000);
        // 20 ms at 90 kHz is 1800 ticks, wrapping past zero.
        assert_eq!(sr.rtp_time, 900);
        assert_eq!((sr.ssrc, sr.ntp_time, sr.packet_count, sr.octet_count), (3, 0xAB, 2, 150));
    }

    #[test]
    fn rtt_is_arrival_minus_lsr_minus_dlsr() {
        let block = ReportBlock { last_sr: 0x0001_0000, delay_since_last_sr: 0x8000, ..Default::default() };
        // Arrived 1.75 s after the SR, held 0.5 s by the peer: 1.25 s.
        assert_eq!(rtt_from_report_block(0x0002_C000, &block), Some(Duration::from_millis(1250)));
        assert_eq!(rtt_from_report_block(0x0001_0001, &block), Some(Duration::ZERO));
        assert_eq!(rtt_from_report_block(5, &ReportBlock::default()), None);
        // Across the wrap of the 32-bit middle.
        let block = ReportBlock { last_sr: u32::MAX - 0xFFFF, delay_since_last_sr: 0, ..Default::default() };
        assert_eq!(rtt_from_report_block(0x0001_0000, &block), Some(Duration::from_secs(2)));
    }
}
