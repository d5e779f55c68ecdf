//! Retransmission (RFC 4588): a bounded history of sent packets to answer NACKs from, and
//! the RTX payload format (§4) with SSRC multiplexing (§5, what WebRTC uses): a stream
//! of its own SSRC and payload type in the same session, whose payload is the original
//! sequence number (OSN) and the original payload.

use peerlink_proto::Serial16;
use peerlink_rtp::rtp::FIXED_HEADER_LEN;
use peerlink_rtp::{RtpError, RtpPacket};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a packet cannot be wrapped in, or taken out of, RTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtxError {
    #[error("not an rtp packet: {0}")]
    Rtp(#[from] RtpError),
    /// RFC 4588 §4: the payload starts with the 2-byte OSN. Chromium sends padding-only RTX
    /// packets as bandwidth probes; they end up here and are dropped.
    #[error("the rtx payload of {len} bytes has no original sequence number")]
    NoOsn { len: usize },
}

#[derive(Debug, Clone)]
struct Stored {
    seq: Serial16,
    at: Instant,
    last_resent: Option<Instant>,
    packet: Vec<u8>,
}

/// Buffers of packets let go that are kept for the next ones (a steady stream frees one as
/// it stores one; a cleared history keeps no more than these).
const SPARE: usize = 4;

/// The last sent packets of one stream, to retransmit from, looked up by sequence number.
///
/// Packets are held in the order they were stored, for at most `max_age` (no older one is
/// resent, so none is kept once a newer one comes) and at most `capacity` of them: memory
/// follows the stream's rate over `max_age` (a 1 Mbit/s video about 250 kB for 2 s, an
/// audio stream a few kB), not `capacity` times the largest packet. Buffers of packets let
/// go are reused: a steady stream allocates nothing.
#[derive(Debug, Clone)]
pub struct SendHistory {
    /// Oldest first.
    packets: VecDeque<Stored>,
    /// The sequence number of the newest of `packets` (when there is one), kept here: every
    /// store compares with it, and the ring's back is cold memory in an SFU (a history per
    /// subscriber and forwarded stream).
    newest: Serial16,
    capacity: usize,
    max_age: Duration,
    spare: Vec<Vec<u8>>,
}

impl SendHistory {
    /// Keeps at most `capacity_packets` packets (at least one), none older than `max_age`
    /// for retransmission.
    pub fn new(capacity_packets: usize, max_age: Duration) -> SendHistory {
        SendHistory {
            packets: VecDeque::new(),
            newest: Serial16(0),
            capacity: capacity_packets.max(1),
            max_age,
            spare: Vec::new(),
        }
    }

    /// Remembers a sent packet (the plain RTP packet, before SRTP). Packets older than
    /// `max_age`, and the oldest beyond the capacity, are let go; so is an earlier packet
    /// stored with the same sequence number.
    pub fn store(&mut self, now: Instant, seq: Serial16, packet: &[u8]) {
        let cutoff = now.checked_sub(self.max_age);
        while self.packets.front().is_some_and(|s| self.packets.len() >= self.capacity || older(s.at, cutoff))
        {
            let old = self.packets.pop_front().expect("a front");
            self.keep_spare(old.packet);
        }
        // (Not `expire`: a steady stream keeps its spare buffers and its ring.)
        // (A packet newer than the last stored, as a sent one nearly always is, replaces none:
        // no search. Should it repeat one stored before a late one, the later copy is found
        // first and the earlier goes with age.)
        if !self.packets.is_empty() && !seq.is_newer_than(self.newest) {
            if let Some(i) = self.position(seq) {
                let old = self.packets.remove(i).expect("found");
                self.keep_spare(old.packet);
            }
        }
        // The buffer let go last; one that holds the packet without growing if that does not
        // (a frame's last, short packet's buffer would grow for a full one).
        if self.spare.last().is_some_and(|b| b.capacity() < packet.len()) {
            if let Some(i) = self.spare.iter().position(|b| b.capacity() >= packet.len()) {
                let last = self.spare.len() - 1;
                self.spare.swap(i, last);
            }
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        // Exactly: a reused buffer grown the usual way doubles (a ring of 512 such buffers
        // held up to 2 kB each for 1.2 kB packets).
        buf.reserve_exact(packet.len());
        buf.extend_from_slice(packet);
        self.packets.push_back(Stored { seq, at: now, last_resent: None, packet: buf });
        self.newest = seq;
    }

    fn keep_spare(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE {
            self.spare.push(buf);
        }
    }

    /// Where `seq` is held: found at once when the packets held since it are in sequence
    /// order with no gap, else by a search from the newest (at most `capacity` steps).
    fn position(&self, seq: Serial16) -> Option<usize> {
        if self.packets.is_empty() {
            return None;
        }
        let back = usize::from(self.newest.0.wrapping_sub(seq.0));
        if let Some(i) = self.packets.len().checked_sub(back + 1) {
            if self.packets[i].seq == seq {
                return Some(i);
            }
        }
        self.packets.iter().rposition(|s| s.seq == seq)
    }

    /// Forgets every packet held: none of them will be resent (the receiver starts over
    /// at a key frame, say, and has no use for them).
    pub fn clear(&mut self) {
        while let Some(old) = self.packets.pop_front() {
            self.keep_spare(old.packet);
        }
    }

    /// Lets go of the packets older than `max_age`, without a new one to store: call it
    /// now and then, so that a stream that stopped sending (a paused SFU subscription, a
    /// muted track) does not hold its last `max_age` of packets for as long as it lasts.
    /// Once nothing is held, the spare buffers and the ring's room go too.
    pub fn expire(&mut self, now: Instant) {
        let cutoff = now.checked_sub(self.max_age);
        while self.packets.front().is_some_and(|s| older(s.at, cutoff)) {
            let old = self.packets.pop_front().expect("a front");
            self.keep_spare(old.packet);
        }
        if self.packets.is_empty() {
            self.spare = Vec::new();
            self.packets = VecDeque::new();
        }
    }

    /// The packet sent with `seq`, if still held (however old).
    pub fn get(&self, seq: Serial16) -> Option<&[u8]> {
        self.position(seq).map(|i| &self.packets[i].packet[..])
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes of packets held now (their buffers' capacity, spare ones included).
    pub fn bytes(&self) -> usize {
        self.packets.iter().map(|s| s.packet.capacity()).sum::<usize>()
            + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }

    /// The packet to retransmit for a NACK of `seq`, if held, younger than `max_age`, and
    /// not already resent within `min_interval` (pass the RTT, at least 10 ms: a NACK
    /// repeated before the first retransmission could arrive must not double it).
    pub fn get_for_resend(&mut self, now: Instant, seq: Serial16, min_interval: Duration) -> Option<&[u8]> {
        let i = self.position(seq)?;
        let max_age = self.max_age;
        let s = &mut self.packets[i];
        if now.saturating_duration_since(s.at) > max_age {
            return None;
        }
        if s.last_resent.is_some_and(|at| now.saturating_duration_since(at) < min_interval) {
            return None;
        }
        s.last_resent = Some(now);
        Some(&s.packet)
    }
}

/// Whether a packet stored `at` is more than `max_age` old at `now`, given
/// `cutoff = now.checked_sub(max_age)` (computed once, not a subtraction per packet): `None`
/// where nothing can be that old.
fn older(at: Instant, cutoff: Option<Instant>) -> bool {
    cutoff.is_some_and(|c| at < c)
}

/// The sending side of an RTX stream (the payload type's `apt` mapping is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxSender {
    pub ssrc: u32,
    pub payload_type: u8,
    /// The RTX stream's own next sequence number (RFC 4588 §4: independent of the
    /// original's; start it at random).
    pub next_seq: Serial16,
}

impl RtxSender {
    /// Appends the retransmission of `original` (a plain RTP packet) to `out`: its header
    /// with our SSRC, payload type and next sequence number, CSRCs and header extensions
    /// kept, then the OSN and the original payload. The original's padding is dropped.
    pub fn wrap(&mut self, original: &[u8], out: &mut Vec<u8>) -> Result<(), RtxError> {
        let p = RtpPacket::parse(original)?;
        let header = p.header();
        // Version 2, P cleared, X and CC as they were.
        out.push(0x80 | (header[0] & 0x1f));
        out.push((header[1] & 0x80) | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.next_seq.0.to_be_bytes());
        out.extend_from_slice(&header[4..8]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&header[FIXED_HEADER_LEN..]);
        // RFC 4588 §4: the OSN, then the original payload.
        out.extend_from_slice(&p.sequence_number().0.to_be_bytes());
        out.extend_from_slice(p.payload());
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(())
    }
}

/// Appends the original packet carried by `rtx` (RFC 4588 §4) to `out`: sequence number
/// from the OSN, the original stream's SSRC and payload type, everything else as received.
/// Returns the original sequence number. An error is bad network input: drop the packet.
pub fn unwrap_rtx(
    rtx: &RtpPacket<'_>,
    original_ssrc: u32,
    original_pt: u8,
    out: &mut Vec<u8>,
) -> Result<Serial16, RtxError> {
    let payload = rtx.payload();
    let [hi, lo, rest @ ..] = payload else { return Err(RtxError::NoOsn { len: payload.len() }) };
    let osn = Serial16(u16::from_be_bytes([*hi, *lo]));
    let header = rtx.header();
    out.push(0x80 | (header[0] & 0x1f));
    out.push((header[1] & 0x80) | (original_pt & 0x7f));
    out.extend_from_slice(&osn.0.to_be_bytes());
    out.extend_from_slice(&header[4..8]);
    out.extend_from_slice(&original_ssrc.to_be_bytes());
    out.extend_from_slice(&header[FIXED_HEADER_LEN..]);
    out.extend_from_slice(rest);
    Ok(osn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerlink_proto::Serial32;
    use peerlink_rtp::rtp::Csrcs;
    use peerlink_rtp::RtpHeader;

    const MS: Duration = Duration::from_millis(1);

    /// What `store` costs in an SFU's pattern: 1200 streams (100 subscribers, 12 forwarded
    /// streams each) stored round-robin, 50,000 packets a second in all, mostly 1200 bytes
    /// with a shorter one ending each frame, held as `peerlink-rtc` holds them (512, 2 s),
    /// so that what a store touches is cold. Prints ns per store:
    /// `cargo test --release -p peerlink-media --lib history_store_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn history_store_cost() {
        const STREAMS: usize = 1200;
        const STEP: Duration = Duration::from_micros(20);
        let t0 = Instant::now();
        let mut histories: Vec<SendHistory> =
            (0..STREAMS).map(|_| SendHistory::new(512, Duration::from_secs(2))).collect();
        let mut rng = crate::TestRng::new(7);
        let sizes: Vec<usize> =
            (0..4096).map(|i| if i % 6 == 5 { 200 + rng.below(1000) as usize } else { 1200 }).collect();
        let packet = vec![0x5a; 1200];
        let mut k = 0u32;
        let mut run = |histories: &mut Vec<SendHistory>, stores: u32| {
            let start = Instant::now();
            for _ in 0..stores {
                let stream = k as usize % STREAMS;
                let seq = Serial16((k as usize / STREAMS) as u16);
                let len = sizes[(k as usize).wrapping_mul(31) % sizes.len()];
                histories[stream].store(t0 + STEP * k, seq, &packet[..len]);
                k += 1;
            }
            start.elapsed().as_nanos() as f64 / f64::from(stores)
        };
        // 3 s: every history holds its 2 s.
        run(&mut histories, 150_000);
        let mut ns: Vec<f64> = (0..7).map(|_| run(&mut histories, 100_000)).collect();
        ns.sort_by(f64::total_cmp);
        let held: usize = histories.iter().map(SendHistory::len).sum();
        let bytes: usize = histories.iter().map(SendHistory::bytes).sum();
        println!(
            "history store: median {:.1} ns (min {:.1}, max {:.1}) per store; {held} packets, {} MB held",
            ns[3],
            ns[0],
            ns[6],
            bytes >> 20
        );
    }

    #[test]
    fn a_packet_max_age_old_is_kept_and_resent_one_nanosecond_older_is_not() {
        const NS: Duration = Duration::from_nanos(1);
        let age = 100 * MS;
        let t0 = Instant::now();
        let mut h = SendHistory::new(16, age);
        h.store(t0, Serial16(1), b"one");
        h.store(t0 + age, Serial16(2), b"two");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get_for_resend(t0 + age, Serial16(1), MS), Some(&b"one"[..]));
        assert_eq!(h.get_for_resend(t0 + age + NS, Serial16(2), MS), Some(&b"two"[..]));
        h.store(t0 + age + NS, Serial16(3), b"three");
        assert_eq!((h.len(), h.get(Serial16(1))), (2, None));
        // `expire` draws the same line.
        h.expire(t0 + 2 * age);
        assert_eq!(h.get(Serial16(2)), Some(&b"two"[..]));
        h.expire(t0 + 2 * age + NS);
        assert_eq!((h.get(Serial16(2)), h.get(Serial16(3))), (None, Some(&b"three"[..])));
        assert!(h.get_for_resend(t0 + 2 * age + 2 * NS, Serial16(3), MS).is_none());
    }

    #[test]
    fn reused_buffers_of_other_sizes_hold_exactly_the_packet_stored() {
        // Capacity 3: every store from the fourth on reuses a buffer, of a packet shorter or
        // longer than the new one.
        let t0 = Instant::now();
        let mut h = SendHistory::new(3, Duration::from_secs(1));
        let packet = |i: u16| vec![i as u8; [1200, 90, 700, 1200, 1200, 40][usize::from(i) % 6]];
        for i in 0..60u16 {
            h.store(t0 + u32::from(i) * MS, Serial16(i), &packet(i));
            assert_eq!(h.len(), 3.min(usize::from(i) + 1));
            for back in 0..h.len() as u16 {
                assert_eq!(h.get(Serial16(i - back)), Some(&packet(i - back)[..]), "{i} {back}");
            }
            assert!(h.bytes() <= (3 + SPARE) * 1200, "{} bytes", h.bytes());
        }
    }

    #[test]
    fn a_full_packet_takes_a_spare_buffer_that_holds_it_rather_than_growing_a_short_one() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8, Duration::from_secs(1));
        for (i, n) in [1200, 90, 700, 40].into_iter().enumerate() {
            h.store(t0, Serial16(i as u16), &vec![i as u8; n]);
        }
        // The four buffers become spares, the 40-byte one last.
        h.clear();
        let before = h.bytes();
        h.store(t0, Serial16(9), &[9; 1200]);
        assert_eq!(h.get(Serial16(9)), Some(&[9u8; 1200][..]));
        assert_eq!(h.bytes(), before, "the 1200-byte spare was taken; nothing grew");
    }

    #[test]
    fn a_repeated_sequence_number_replaces_the_packet_stored_with_it() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(8, Duration::from_secs(1));
        for seq in 5..=7u16 {
            h.store(t0, Serial16(seq), &original(seq, 0));
        }
        // Repeated after a newer one: the earlier copy goes.
        h.store(t0 + MS, Serial16(6), b"again");
        assert_eq!(h.len(), 3);
        assert_eq!(h.get(Serial16(6)), Some(&b"again"[..]));
        assert_eq!(h.get_for_resend(t0 + MS, Serial16(7), MS), Some(&original(7, 0)[..]));
        assert_eq!(h.get_for_resend(t0 + MS, Serial16(5), MS), Some(&original(5, 0)[..]));
        // The newest repeated.
        h.store(t0 + 2 * MS, Serial16(6), b"third");
        assert_eq!((h.len(), h.get(Serial16(6))), (3, Some(&b"third"[..])));
        // Once everything went by age, an older number is simply stored.
        h.store(t0 + Duration::from_secs(3), Serial16(2), b"later");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get(Serial16(2)), Some(&b"later"[..]));
        assert_eq!(h.get(Serial16(6)), None);
        h.clear();
        h.store(t0 + Duration::from_secs(3), Serial16(1), b"after clear");
        assert_eq!((h.len(), h.get(Serial16(1))), (1, Some(&b"after clear"[..])));
    }

    #[test]
    fn a_cleared_history_resends_nothing_sent_before_but_what_follows() {
        let t = Instant::now();
        let mut h = SendHistory::new(8, Duration::from_secs(1));
        for seq in 0..4u16 {
            h.store(t, Serial16(seq), &original(seq, 0));
        }
        assert!(h.get_for_resend(t, Serial16(2), MS).is_some());
        h.clear();
        for seq in 0..4u16 {
            assert!(h.get(Serial16(seq)).is_none());
            assert!(h.get_for_resend(t + 5 * MS, Serial16(seq), MS).is_none());
        }
        h.store(t, Serial16(4), &original(4, 0));
        assert_eq!(h.get_for_resend(t, Serial16(4), MS), Some(&original(4, 0)[..]));
    }

    fn original(seq: u16, padding: u8) -> Vec<u8> {
        let mut csrcs = Csrcs::default();
        csrcs.push(0xC5C5_0001);
        csrcs.push(0xC5C5_0002);
        let h = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence_number: Serial16(seq),
            timestamp: Serial32(0x0102_0304),
            ssrc: 0xAAAA_0001,
            csrcs,
        };
        let mut out = Vec::new();
        h.encode(&[(1, b"mid"), (3, &[1, 2, 3])], b"the payload", padding, &mut out).unwrap();
        out
    }

    #[test]
    fn wrap_and_unwrap_round_trip_with_extensions_csrcs_and_padding() {
        let orig = original(65_535, 7);
        let mut tx = RtxSender { ssrc: 0xBBBB_0002, payload_type: 97, next_seq: Serial16(500) };
        let mut rtx = vec![0xEE]; // appended after what is there
        tx.wrap(&orig, &mut rtx).unwrap();
        assert_eq!(rtx[0], 0xEE);
        let rtx = &rtx[1..];
        // Version 2, no padding, extension and two CSRCs.
        assert_eq!(rtx[0] >> 6, 2);
        assert_eq!(rtx[0], 0x80 | 0x10 | 2);
        let p = RtpPacket::parse(rtx).unwrap();
        assert_eq!((p.ssrc(), p.payload_type(), p.sequence_number()), (0xBBBB_0002, 97, Serial16(500)));
        assert!(p.marker());
        assert_eq!(p.timestamp(), Serial32(0x0102_0304));
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [0xC5C5_0001, 0xC5C5_0002]);
        assert_eq!(p.payload(), b"\xff\xffthe payload");
        assert_eq!(p.padding_len(), 0);
        assert_eq!(tx.next_seq, Serial16(501));

        let mut back = Vec::new();
        assert_eq!(unwrap_rtx(&p, 0xAAAA_0001, 96, &mut back), Ok(Serial16(65_535)));
        let o = RtpPacket::parse(&orig).unwrap();
        let b = RtpPacket::parse(&back).unwrap();
        assert_eq!(b.to_header(), o.to_header());
        assert_eq!(b.payload(), o.payload());
        assert_eq!(b.extension_data(), o.extension_data());
        assert_eq!(b.padding_len(), 0);
        // The sender's own next one.
        let mut again = Vec::new();
        tx.wrap(&original(3, 0), &mut again).unwrap();
        assert_eq!(RtpPacket::parse(&again).unwrap().sequence_number(), Serial16(501));
    }

    #[test]
    fn bad_packets_are_refused() {
        let mut tx = RtxSender { ssrc: 1, payload_type: 97, next_seq: Serial16(0) };
        let mut out = Vec::new();
        assert!(matches!(tx.wrap(&[], &mut out), Err(RtxError::Rtp(_))));
        assert!(matches!(tx.wrap(&[0x80; 5], &mut out), Err(RtxError::Rtp(_))));
        assert!(out.is_empty());
        assert_eq!(tx.next_seq, Serial16(0));
        // An RTX packet without an OSN (a padding probe) or with half of one.
        for payload in [&b""[..], b"x"] {
            let mut pkt = Vec::new();
            RtpHeader::default().encode(&[], payload, 4, &mut pkt).unwrap();
            let p = RtpPacket::parse(&pkt).unwrap();
            assert_eq!(unwrap_rtx(&p, 1, 2, &mut out), Err(RtxError::NoOsn { len: payload.len() }));
        }
        assert!(out.is_empty());
        // Whatever parses as RTP unwraps without panicking.
        let mut rng = crate::TestRng::new(9);
        for buf in rng.garbage(2000, 60) {
            if let Ok(p) = RtpPacket::parse(&buf) {
                out.clear();
                if unwrap_rtx(&p, 1, 2, &mut out).is_ok() {
                    RtpPacket::parse(&out).unwrap();
                }
            }
        }
    }

    #[test]
    fn history_is_bounded_and_forgets_old_packets() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(4, 100 * MS);
        for s in 65_534..=65_535u16 {
            h.store(t0, Serial16(s), &original(s, 0));
        }
        for s in 0..4u16 {
            h.store(t0, Serial16(s), &original(s, 0));
        }
        assert_eq!(h.get(Serial16(65_535)), None, "overwritten by the ring");
        assert_eq!(h.get(Serial16(3)), Some(&original(3, 0)[..]));
        assert_eq!(h.get(Serial16(7)), None);
        // Too old to resend, though held.
        assert!(h.get_for_resend(t0 + 101 * MS, Serial16(3), MS).is_none());
        assert!(h.get(Serial16(3)).is_some());
    }

    #[test]
    fn resends_of_one_packet_are_rate_limited() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(16, Duration::from_secs(1));
        h.store(t0, Serial16(9), b"packet");
        assert_eq!(h.get_for_resend(t0, Serial16(9), 10 * MS), Some(&b"packet"[..]));
        assert_eq!(h.get_for_resend(t0 + 9 * MS, Serial16(9), 10 * MS), None);
        assert!(h.get_for_resend(t0 + 10 * MS, Serial16(9), 10 * MS).is_some());
        // The same sequence number stored again (after a wrap) starts afresh.
        h.store(t0 + 11 * MS, Serial16(9), b"other");
        assert_eq!(h.len(), 1);
        assert_eq!(h.get_for_resend(t0 + 11 * MS, Serial16(9), 10 * MS), Some(&b"other"[..]));
        assert_eq!(h.get_for_resend(t0 + 12 * MS, Serial16(9), 10 * MS), None);
    }

    #[test]
    fn memory_follows_the_rate_over_max_age_not_the_capacity() {
        // 1000-byte packets at 100 a second (800 kbit/s) for 10 s, kept 2 s: about 200 held,
        // not the 512 the capacity allows (a ring of 512 held 5 s of this stream).
        let t0 = Instant::now();
        let mut h = SendHistory::new(512, Duration::from_secs(2));
        let packet = |seq: u16| {
            let mut p = original(seq, 0);
            p.resize(1000, seq as u8);
            p
        };
        for i in 0..1000u16 {
            let seq = 65_000u16.wrapping_add(i);
            h.store(t0 + u32::from(i) * 10 * MS, Serial16(seq), &packet(seq));
        }
        let now = t0 + 9990 * MS;
        assert!((200..=202).contains(&h.len()), "{} held", h.len());
        assert!(h.bytes() <= (202 + SPARE) * 1000 + 32 * 206, "{} bytes", h.bytes());
        // 1.5 s old: resent; 2.5 s old: gone.
        let recent = 65_000u16.wrapping_add(849);
        assert_eq!(h.get_for_resend(now, Serial16(recent), MS), Some(&packet(recent)[..]));
        assert_eq!(h.get(Serial16(65_000u16.wrapping_add(749))), None);
        // The capacity still bounds a faster stream.
        for i in 0..1000u16 {
            h.store(now + MS, Serial16(i), b"x");
        }
        assert_eq!(h.len(), 512);
        assert_eq!(h.get(Serial16(487)), None);
        assert_eq!(h.get(Serial16(488)), Some(&b"x"[..]));
    }

    #[test]
    fn late_packets_are_found_and_held_like_the_others() {
        // A forwarder sends a late packet (a publisher's retransmission) with an older
        // sequence number than the last one sent.
        let t0 = Instant::now();
        let mut h = SendHistory::new(64, Duration::from_secs(1));
        for seq in [10u16, 11, 13, 14, 12, 15] {
            h.store(t0, Serial16(seq), &original(seq, 0));
        }
        for seq in 10..=15u16 {
            assert_eq!(h.get_for_resend(t0, Serial16(seq), MS), Some(&original(seq, 0)[..]), "{seq}");
        }
        assert_eq!(h.get(Serial16(9)), None);
        assert_eq!(h.get(Serial16(16)), None);
        h.clear();
        assert!(h.is_empty());
        assert!(h.bytes() <= SPARE * 100, "{}", h.bytes());
    }

    #[test]
    fn a_stream_that_stops_lets_its_packets_go_by_age() {
        // A paused subscription stores nothing more: what it held goes once older than
        // `max_age`, buffers and all, not at the next store.
        let t0 = Instant::now();
        let mut h = SendHistory::new(512, Duration::from_secs(2));
        for i in 0..100u16 {
            h.store(t0 + u32::from(i) * 10 * MS, Serial16(i), &[i as u8; 1000]);
        }
        h.expire(t0 + 2500 * MS);
        assert_eq!(h.len(), 50, "at most 2 s old at 2.5 s: sent from 0.5 s on");
        assert_eq!(h.get(Serial16(49)), None);
        assert_eq!(h.get(Serial16(50)), Some(&[50u8; 1000][..]));
        h.expire(t0 + 3000 * MS);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        // It stores again as before.
        h.store(t0 + 3100 * MS, Serial16(100), b"y");
        assert_eq!(h.get_for_resend(t0 + 3100 * MS, Serial16(100), MS), Some(&b"y"[..]));
    }
}
