//! The receiving half: which TSNs arrived (cumulative TSN, gap blocks, duplicates, RFC 9260
//! §6.2), reassembly of fragmented messages, ordered delivery per stream by SSN and
//! unordered delivery at once (§6.6), FORWARD TSN (RFC 3758 §3.6) and incoming stream
//! resets (RFC 6525 §5.2.2). TSNs are unwrapped to 64 bits so serial arithmetic is
//! confined to one function.

use peerlink_proto::Serial16;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A whole message for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream: u16,
    pub ppid: u32,
    pub unordered: bool,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Fragment {
    stream: u16,
    ssn: u16,
    ppid: u32,
    flags: u8,
    data: Vec<u8>,
    /// Bytes of this message's fragments from the first of an unbroken run of TSNs up to
    /// this one, as known when it arrived: bounds a message that grows in order without
    /// walking back over it.
    run: usize,
    /// The same from this fragment to the last of its run: bounds one growing backwards.
    tail: usize,
}

/// Unwraps a 32-bit serial number to the 64-bit value nearest `reference`.
pub(crate) fn unwrap(reference: u64, tsn: u32) -> u64 {
    peerlink_proto::serial::unwrap_near(reference, u64::from(tsn), 32)
}

/// Why incoming data ends the association.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// A message grew past the largest we accept.
    #[error("a message grew past {0} bytes, the most we accept")]
    TooLarge(usize),
}

/// A fragmented message arriving in TSN order, gathered in place.
#[derive(Debug)]
struct Partial {
    stream: u16,
    ssn: u16,
    ppid: u32,
    unordered: bool,
    /// The TSN of its latest fragment.
    last: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
pub struct Receiver {
    /// Everything up to and including this TSN arrived.
    cumulative: u64,
    /// TSNs above `cumulative` that arrived.
    above: BTreeSet<u64>,
    /// Fragments not yet delivered, by TSN.
    fragments: BTreeMap<u64, Fragment>,
    /// Bytes in `fragments` and `partial`.
    fragment_bytes: usize,
    partial: Option<Partial>,
    /// Complete ordered messages waiting for their turn: (stream, ssn) → TSN range.
    complete: HashMap<(u16, u16), (u64, u64)>,
    next_ssn: HashMap<u16, u16>,
    delivered: VecDeque<Message>,
    delivered_bytes: usize,
    /// Bytes of delivered messages the application holds without having read them (a data
    /// channel out of receive credit): they stay in the window, so it closes.
    held_bytes: usize,
    /// The window of the last SACK, to tell when a freed buffer deserves a window update.
    advertised: u32,
    duplicates: Vec<u32>,
    /// The window we advertise from: auto-tuned, from the initial window up to `limit`.
    window: usize,
    /// The most bytes we buffer: what our INIT announced and the bound of `window`. Data
    /// within it is taken even beyond the advertised window (a peer may have sent it on an
    /// older, larger advertisement).
    limit: usize,
    /// Payload bytes taken into the buffer since the start: minus what is buffered now, it
    /// gives what the application consumed.
    taken: u64,
    /// Start of the current tuning round: when, and what had been consumed then.
    round: Option<(Instant, u64)>,
    max_message: usize,
    /// A SACK should go out now (gap, duplicate) rather than after the delay.
    pub(crate) sack_now: bool,
    /// DATA packets since the last SACK.
    pub(crate) unacked_packets: u32,
    /// Incoming stream resets waiting for `cumulative` to reach their last TSN.
    pending_resets: Vec<(u64, Vec<u16>)>,
    performed_resets: Vec<Vec<u16>>,
}

/// The shortest tuning round: the consumption of a loopback RTT (microseconds) is too
/// noisy to size a window by.
const MIN_TUNING_ROUND: Duration = Duration::from_millis(10);

/// Gap blocks we report at most (they must fit one packet with the rest of the SACK).
const MAX_GAPS: usize = 128;
const MAX_DUPLICATES: usize = 32;

impl Receiver {
    /// A receiver advertising `window` at first, auto-tuned up to `limit` bytes of buffer.
    pub fn new(peer_initial_tsn: u32, window: usize, limit: usize, max_message: usize) -> Receiver {
        let window = window.min(limit);
        Receiver {
            cumulative: u64::from(peer_initial_tsn.wrapping_sub(1)) + (1 << 32),
            above: BTreeSet::new(),
            fragments: BTreeMap::new(),
            fragment_bytes: 0,
            partial: None,
            complete: HashMap::new(),
            next_ssn: HashMap::new(),
            delivered: VecDeque::new(),
            delivered_bytes: 0,
            held_bytes: 0,
            advertised: u32::try_from(window).unwrap_or(u32::MAX),
            duplicates: Vec::new(),
            window,
            limit,
            taken: 0,
            round: None,
            max_message,
            sack_now: false,
            unacked_packets: 0,
            pending_resets: Vec::new(),
            performed_resets: Vec::new(),
        }
    }

    /// The cumulative TSN ack we report.
    pub fn cumulative_tsn(&self) -> u32 {
        self.cumulative as u32
    }

    /// The receive window we advertise: what is left of the auto-tuned window.
    pub fn a_rwnd(&self) -> u32 {
        u32::try_from(self.window.saturating_sub(self.buffered())).unwrap_or(u32::MAX)
    }

    /// Bytes of received data we hold: fragments, messages not yet taken, messages the
    /// application holds unread. Never more than the limit.
    pub fn buffered(&self) -> usize {
        self.fragment_bytes + self.delivered_bytes + self.held_bytes
    }

    /// The window advertised from, as auto-tuned so far.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Receive window auto-tuning (the idea of Linux's receive buffer auto-tuning and of
    /// dynamic right-sizing): once per round of an RTT (`rtt`, at least
    /// [`MIN_TUNING_ROUND`]), the window becomes twice what the application consumed in the
    /// round, if that is more, up to the limit. A sender held back by the window delivers a
    /// window per RTT, so the window doubles each RTT until the path or the reader is the
    /// limit; a slow reader keeps it small (and so the memory buffered for it), and one
    /// that stops reading closes it as before. It never shrinks.
    pub fn tune(&mut self, now: Instant, rtt: Duration) {
        let consumed = self.taken.saturating_sub(self.buffered() as u64);
        let round = rtt.max(MIN_TUNING_ROUND);
        let (start, mark) = *self.round.get_or_insert((now, consumed));
        let elapsed = now.saturating_duration_since(start);
        if elapsed < round {
            return;
        }
        self.round = Some((now, consumed));
        // Per RTT: a round stretched by an idle gap does not count as a faster reader.
        let per_round = consumed.saturating_sub(mark) as f64 * round.as_secs_f64() / elapsed.as_secs_f64();
        // At most doubling per round, as a sender's slow start grows: a burst of consumption
        // (a hole filled after a loss releases what queued behind it) is no reason to leap.
        let wanted = (2.0 * per_round).min(2.0 * self.window as f64).min(self.limit as f64) as usize;
        if wanted > self.window {
            self.window = wanted;
            self.window_update();
        }
    }

    /// `bytes` of delivered messages are held by the application (they keep counting
    /// against the window) or, `held: false`, were released by it.
    pub fn hold(&mut self, bytes: usize, held: bool) {
        if held {
            self.held_bytes += bytes;
        } else {
            self.held_bytes = self.held_bytes.saturating_sub(bytes);
            self.window_update();
        }
    }

    /// RFC 9260 §6.2: a receiver that frees buffer space after advertising a small window
    /// tells the sender, which otherwise waits for its next window probe (up to RTO.Max).
    /// Small increases are not announced (§6.2's silly window avoidance): it waits for a
    /// quarter of the window or 16 KiB, whichever is less.
    fn window_update(&mut self) {
        let quarter = u32::try_from(self.window / 4).unwrap_or(u32::MAX);
        let step = quarter.min(16 * 1024);
        if self.advertised < quarter && self.a_rwnd() >= self.advertised.saturating_add(step) {
            self.sack_now = true;
        }
    }

    #[must_use]
    pub fn poll_message(&mut self) -> Option<Message> {
        let m = self.delivered.pop_front()?;
        self.delivered_bytes -= m.data.len();
        self.window_update();
        Some(m)
    }

    /// One DATA chunk. Returns an error when the association must end.
    pub fn data(
        &mut self,
        tsn: u32,
        stream: u16,
        ssn: u16,
        ppid: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ReceiveError> {
        let Some(tsn) = self.arrived(tsn, payload.len()) else { return Ok(()) };
        let unordered = flags & crate::chunk::FLAG_UNORDERED != 0;
        let (begin, end) = (flags & crate::chunk::FLAG_BEGIN != 0, flags & crate::chunk::FLAG_END != 0);
        let whole = begin && end;
        // Fragments that arrive in TSN order with nothing missing (the common case) are
        // gathered in place, one copy and no allocation per chunk; anything else goes
        // through the map of fragments.
        let in_order = self.cumulative == tsn && self.above.is_empty();
        let continues = in_order
            && !begin
            && self.partial.as_ref().is_some_and(|p| {
                p.last + 1 == tsn
                    && p.stream == stream
                    && p.unordered == unordered
                    && (unordered || p.ssn == ssn)
            });
        if !continues {
            self.spill();
        }
        if continues || (in_order && begin && !end) {
            let p = self.partial.get_or_insert_with(|| Partial {
                stream,
                ssn,
                ppid,
                unordered,
                last: tsn,
                // Room for a 64 KiB message of full fragments without growing; tiny
                // fragments get a small start.
                data: Vec::with_capacity((payload.len() * 64).min(1 << 16)),
            });
            p.last = tsn;
            p.ppid = ppid;
            p.data.extend_from_slice(payload);
            let size = p.data.len();
            self.fragment_bytes += payload.len();
            self.check_size(size)?;
            if end {
                self.finish_partial();
            }
        } else if whole && (unordered || self.next_ssn.get(&stream).copied().unwrap_or(0) == ssn) {
            // The common case: a whole message, deliverable at once, copied once.
            if !unordered {
                self.next_ssn.insert(stream, ssn.wrapping_add(1));
            }
            self.deliver(Message { stream, ppid, unordered, data: payload.to_vec() });
            if !unordered {
                self.deliver_ready(stream);
            }
        } else {
            self.fragment_bytes += payload.len();
            let same = |f: &Fragment| {
                f.stream == stream
                    && (f.flags & crate::chunk::FLAG_UNORDERED != 0) == unordered
                    && (unordered || f.ssn == ssn)
            };
            let run = match self.fragments.get(&(tsn - 1)) {
                Some(prev) if !begin && prev.flags & crate::chunk::FLAG_END == 0 && same(prev) => {
                    prev.run + payload.len()
                }
                _ => payload.len(),
            };
            let tail = match self.fragments.get(&(tsn + 1)) {
                Some(next) if !end && next.flags & crate::chunk::FLAG_BEGIN == 0 && same(next) => {
                    next.tail + payload.len()
                }
                _ => payload.len(),
            };
            self.fragments
                .insert(tsn, Fragment { stream, ssn, ppid, flags, data: payload.to_vec(), run, tail });
            self.check_size(run.max(tail))?;
            self.assemble(tsn)?;
        }
        self.apply_resets();
        Ok(())
    }

    /// The message gathered in place is complete: delivered, or kept (as one fragment at its
    /// last TSN) until its SSN's turn.
    fn finish_partial(&mut self) {
        let Some(mut p) = self.partial.take() else { return };
        if p.data.capacity() > 2 * p.data.len() {
            p.data.shrink_to_fit();
        }
        let next = self.next_ssn.get(&p.stream).copied().unwrap_or(0);
        if p.unordered || next == p.ssn {
            self.fragment_bytes -= p.data.len();
            if !p.unordered {
                self.next_ssn.insert(p.stream, p.ssn.wrapping_add(1));
            }
            let stream = p.stream;
            self.deliver(Message { stream, ppid: p.ppid, unordered: p.unordered, data: p.data });
            if !p.unordered {
                self.deliver_ready(stream);
            }
        } else {
            let (stream, ssn, last) = (p.stream, p.ssn, p.last);
            self.insert_partial(p, crate::chunk::FLAG_BEGIN | crate::chunk::FLAG_END);
            self.complete.insert((stream, ssn), (last, last));
        }
    }

    /// Moves the message gathered in place, unfinished, into the map of fragments, as one
    /// fragment at its last TSN marked as the beginning: the fragments that follow it find
    /// it there as their predecessor.
    fn spill(&mut self) {
        if let Some(p) = self.partial.take() {
            self.insert_partial(p, crate::chunk::FLAG_BEGIN);
        }
    }

    fn insert_partial(&mut self, mut p: Partial, flags: u8) {
        // A message much smaller than the room made for it does not keep the rest.
        if p.data.capacity() > 2 * p.data.len() {
            p.data.shrink_to_fit();
        }
        let flags = flags | if p.unordered { crate::chunk::FLAG_UNORDERED } else { 0 };
        let run = p.data.len();
        let fragment =
            Fragment { stream: p.stream, ssn: p.ssn, ppid: p.ppid, flags, data: p.data, run, tail: run };
        self.fragments.insert(p.last, fragment);
    }

    /// A DATA chunk whose TSN counts as received but whose payload is thrown away (its
    /// stream is not one the association has).
    pub fn discard(&mut self, tsn: u32) {
        self.arrived(tsn, 0);
        self.apply_resets();
    }

    /// Records the arrival of `tsn` carrying `len` bytes: returns it unwrapped when it is
    /// new and taken, None for a duplicate or one dropped for lack of room.
    fn arrived(&mut self, tsn: u32, len: usize) -> Option<u64> {
        let tsn = unwrap(self.cumulative, tsn);
        if tsn <= self.cumulative || self.above.contains(&tsn) {
            if self.duplicates.len() < MAX_DUPLICATES {
                self.duplicates.push(tsn as u32);
            }
            self.sack_now = true;
            return None;
        }
        // §6.2: without room for it, drop what is beyond the next expected TSN (the sender
        // will retransmit). The next one is taken while some window is left, or when it
        // fills a hole; with the window at 0 and nothing above, it is dropped too, so a peer
        // cannot grow our buffer past the window one chunk at a time (a zero-window probe
        // gets its answer from the SACK, which carries the window).
        let window = self.limit.saturating_sub(self.buffered());
        if window < len && !(tsn == self.cumulative + 1 && (window > 0 || !self.above.is_empty())) {
            // §6.2: a chunk dropped for lack of room is answered with a SACK at once.
            self.sack_now = true;
            return None;
        }
        // A peer cannot make us track TSNs far ahead without bound; and a gap block offset
        // is 16 bits, so nothing past cumulative + 65535 can be reported.
        if tsn > self.cumulative + 65_535 {
            return None;
        }
        self.taken += len as u64;
        // Out of order, or filling a gap: tell the sender now (§6.7).
        if tsn != self.cumulative + 1 || !self.above.is_empty() {
            self.sack_now = true;
        }
        self.above.insert(tsn);
        while self.above.first() == Some(&(self.cumulative + 1)) {
            self.above.pop_first();
            self.cumulative += 1;
        }
        Some(tsn)
    }

    fn deliver(&mut self, message: Message) {
        self.delivered_bytes += message.data.len();
        self.delivered.push_back(message);
    }

    /// Finds the message `tsn` belongs to; when all its fragments are here, delivers it (or
    /// records it as complete until its SSN's turn).
    fn assemble(&mut self, tsn: u64) -> Result<(), ReceiveError> {
        let Some(f) = self.fragments.get(&tsn) else { return Ok(()) };
        // The message is complete only if both neighbours of this fragment that belong to it
        // are here: in-order arrival then costs one lookup per fragment, and the walk below
        // runs once per message, when its last fragment arrives.
        let missing =
            |flag: u8, neighbour: u64| f.flags & flag == 0 && !self.fragments.contains_key(&neighbour);
        if missing(crate::chunk::FLAG_END, tsn + 1) || missing(crate::chunk::FLAG_BEGIN, tsn - 1) {
            return Ok(());
        }
        let (stream, ssn, unordered) = (f.stream, f.ssn, f.flags & crate::chunk::FLAG_UNORDERED != 0);
        let same =
            |f: &Fragment| f.stream == stream && (f.flags & crate::chunk::FLAG_UNORDERED != 0) == unordered;
        // Back to the first fragment, then forward to the last, over consecutive TSNs.
        let mut start = tsn;
        let mut size = 0usize;
        loop {
            let f = &self.fragments[&start];
            size += f.data.len();
            if f.flags & crate::chunk::FLAG_BEGIN != 0 {
                break;
            }
            match self.fragments.get(&(start - 1)) {
                // An END before us belongs to another message.
                Some(prev)
                    if same(prev)
                        && (unordered || prev.ssn == ssn)
                        && prev.flags & crate::chunk::FLAG_END == 0 =>
                {
                    start -= 1
                }
                _ => return self.check_size(size),
            }
        }
        let mut end = tsn;
        loop {
            let f = &self.fragments[&end];
            if f.flags & crate::chunk::FLAG_END != 0 {
                break;
            }
            match self.fragments.get(&(end + 1)) {
                Some(next)
                    if same(next)
                        && (unordered || next.ssn == ssn)
                        && next.flags & crate::chunk::FLAG_BEGIN == 0 =>
                {
                    end += 1;
                    size += next.data.len();
                }
                _ => return self.check_size(size),
            }
        }
        self.check_size(size)?;
        if unordered {
            let message = self.take(start, end, size);
            self.deliver(message);
        } else {
            self.complete.insert((stream, ssn), (start, end));
            self.deliver_ready(stream);
        }
        Ok(())
    }

    fn check_size(&self, size: usize) -> Result<(), ReceiveError> {
        if size > self.max_message {
            return Err(ReceiveError::TooLarge(size));
        }
        Ok(())
    }

    /// Removes the fragments `start..=end` (`size` bytes together) and joins them into one
    /// message.
    fn take(&mut self, start: u64, end: u64, size: usize) -> Message {
        let mut data = Vec::with_capacity(size);
        let (mut stream, mut ppid, mut unordered) = (0, 0, false);
        for tsn in start..=end {
            if let Some(f) = self.fragments.remove(&tsn) {
                self.fragment_bytes -= f.data.len();
                data.extend_from_slice(&f.data);
                (stream, ppid) = (f.stream, f.ppid);
                unordered = f.flags & crate::chunk::FLAG_UNORDERED != 0;
            }
        }
        Message { stream, ppid, unordered, data }
    }

    /// Delivers the stream's complete ordered messages whose SSN is next.
    fn deliver_ready(&mut self, stream: u16) {
        loop {
            let next = self.next_ssn.get(&stream).copied().unwrap_or(0);
            let Some((start, end)) = self.complete.remove(&(stream, next)) else { return };
            let size = (start..=end).filter_map(|t| self.fragments.get(&t)).map(|f| f.data.len()).sum();
            let message = self.take(start, end, size);
            self.next_ssn.insert(stream, next.wrapping_add(1));
            self.deliver(message);
        }
    }

    /// FORWARD TSN (RFC 3758 §3.6): the sender gave up on everything up to
    /// `new_cumulative`; ordered streams skip past the listed SSNs.
    pub fn forward_tsn(&mut self, new_cumulative: u32, streams: impl Iterator<Item = (u16, u16)>) {
        let new = unwrap(self.cumulative, new_cumulative);
        self.sack_now = true;
        if new <= self.cumulative || new > self.cumulative + 65_535 {
            return;
        }
        self.spill();
        // Fragments at or below the new point of messages that are not complete belong to
        // abandoned messages (§3.6); complete ordered ones still wait for their turn.
        let complete: Vec<(u64, u64)> = self.complete.values().copied().collect();
        let stale: Vec<u64> = self
            .fragments
            .range(..=new)
            .map(|(&t, _)| t)
            .filter(|t| !complete.iter().any(|(s, e)| (s..=e).contains(&t)))
            .collect();
        for t in stale {
            if let Some(f) = self.fragments.remove(&t) {
                self.fragment_bytes -= f.data.len();
            }
        }
        self.cumulative = new;
        self.above = self.above.split_off(&(new + 1));
        while self.above.first() == Some(&(self.cumulative + 1)) {
            self.above.pop_first();
            self.cumulative += 1;
        }
        for (stream, ssn) in streams {
            let next = self.next_ssn.get(&stream).copied().unwrap_or(0);
            // Skip to after `ssn` unless we are already past it.
            if Serial16(ssn).distance(Serial16(next)) >= 0 {
                let next = ssn.wrapping_add(1);
                self.next_ssn.insert(stream, next);
                // Complete messages the skip passed over will never have their turn.
                let passed: Vec<(u16, u16)> = self
                    .complete
                    .keys()
                    .filter(|(st, s)| *st == stream && Serial16(*s).distance(Serial16(next)) < 0)
                    .copied()
                    .collect();
                for key in passed {
                    if let Some((start, end)) = self.complete.remove(&key) {
                        for t in start..=end {
                            if let Some(f) = self.fragments.remove(&t) {
                                self.fragment_bytes -= f.data.len();
                            }
                        }
                    }
                }
            }
            self.deliver_ready(stream);
        }
        self.apply_resets();
    }

    /// An incoming stream reset (RFC 6525 §5.2.2): performed once every TSN up to
    /// `last_tsn` arrived. Returns true if done now.
    pub fn reset(&mut self, last_tsn: u32, streams: Vec<u16>) -> bool {
        let last = unwrap(self.cumulative, last_tsn);
        if last <= self.cumulative {
            self.reset_now(&streams);
            true
        } else {
            self.pending_resets.push((last, streams));
            false
        }
    }

    fn reset_now(&mut self, streams: &[u16]) {
        for s in streams {
            self.next_ssn.remove(s);
        }
        if streams.is_empty() {
            self.next_ssn.clear();
        }
    }

    /// Resets that became due; reported by [`Receiver::take_performed_resets`].
    fn apply_resets(&mut self) {
        if self.pending_resets.is_empty() {
            return;
        }
        let cumulative = self.cumulative;
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending_resets).into_iter().partition(|(last, _)| *last <= cumulative);
        self.pending_resets = waiting;
        for (_, streams) in due {
            self.reset_now(&streams);
            for &s in &streams {
                self.deliver_ready(s);
            }
            self.performed_resets.push(streams);
        }
    }

    /// Deferred resets carried out since the last call.
    pub fn take_performed_resets(&mut self) -> Vec<Vec<u16>> {
        std::mem::take(&mut self.performed_resets)
    }

    /// Writes the SACK for the current state (gap blocks, then duplicates, which are
    /// reported once).
    pub fn write_sack(&mut self, out: &mut Vec<u8>) {
        let mut gaps: Vec<(u16, u16)> = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for &tsn in &self.above {
            match run {
                Some((start, end)) if tsn == end + 1 => run = Some((start, tsn)),
                Some((start, end)) => {
                    gaps.push(self.offsets(start, end));
                    run = Some((tsn, tsn));
                }
                None => run = Some((tsn, tsn)),
            }
            if gaps.len() >= MAX_GAPS {
                break;
            }
        }
        if let Some((start, end)) = run.filter(|_| gaps.len() < MAX_GAPS) {
            gaps.push(self.offsets(start, end));
        }
        let dups = std::mem::take(&mut self.duplicates);
        self.advertised = self.a_rwnd();
        crate::chunk::write_sack(out, self.cumulative as u32, self.advertised, &gaps, &dups);
        self.sack_now = false;
        self.unacked_packets = 0;
    }

    fn offsets(&self, start: u64, end: u64) -> (u16, u16) {
        let off = |t: u64| (t - self.cumulative).min(u64::from(u16::MAX)) as u16;
        (off(start), off(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::{FLAG_BEGIN, FLAG_END, FLAG_UNORDERED};

    const WHOLE: u8 = FLAG_BEGIN | FLAG_END;

    fn rx() -> Receiver {
        Receiver::new(1000, 1 << 20, 1 << 20, 1 << 18)
    }

    fn all(r: &mut Receiver) -> Vec<Message> {
        std::iter::from_fn(|| r.poll_message()).collect()
    }

    #[test]
    fn unwrap_picks_the_nearest() {
        let r = (1u64 << 32) + 5;
        assert_eq!(unwrap(r, 6), r + 1);
        assert_eq!(unwrap(r, u32::MAX), (1 << 32) - 1);
        assert_eq!(unwrap((2 << 32) - 2, 3), (2 << 32) + 3);
    }

    #[test]
    fn ordered_messages_wait_for_their_turn_and_gaps_are_reported() {
        let mut r = rx();
        r.data(1001, 1, 1, 51, WHOLE, b"second").unwrap();
        assert!(all(&mut r).is_empty());
        let mut sack = Vec::new();
        r.write_sack(&mut sack);
        let parsed =
            crate::chunk::Sack::parse(crate::chunk::Chunks::new(&sack).next().unwrap().unwrap()).unwrap();
        assert_eq!(parsed.cumulative_tsn, 999);
        assert_eq!(parsed.gaps().collect::<Vec<_>>(), [(2, 2)]);
        r.data(1000, 1, 0, 51, WHOLE, b"first").unwrap();
        let got: Vec<Vec<u8>> = all(&mut r).into_iter().map(|m| m.data).collect();
        assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(r.cumulative_tsn(), 1001);
    }

    #[test]
    fn fragments_reassemble_in_any_order_and_duplicates_are_counted() {
        let mut r = rx();
        r.data(1002, 0, 0, 53, FLAG_END, b"c").unwrap();
        r.data(1000, 0, 0, 53, FLAG_BEGIN, b"a").unwrap();
        r.data(1000, 0, 0, 53, FLAG_BEGIN, b"a").unwrap();
        assert!(all(&mut r).is_empty());
        r.data(1001, 0, 0, 53, 0, b"b").unwrap();
        assert_eq!(all(&mut r)[0].data, b"abc");
        assert_eq!(r.duplicates, [1000]);
        assert_eq!(r.a_rwnd(), 1 << 20);
    }

    #[test]
    fn unordered_messages_do_not_wait() {
        let mut r = rx();
        r.data(1001, 2, 0, 51, WHOLE | FLAG_UNORDERED, b"now").unwrap();
        assert_eq!(all(&mut r)[0].data, b"now");
        assert_eq!(r.cumulative_tsn(), 999);
    }

    #[test]
    fn forward_tsn_skips_abandoned_messages() {
        let mut r = rx();
        r.data(1000, 3, 0, 53, FLAG_BEGIN, b"lost-").unwrap();
        r.data(1003, 3, 2, 53, WHOLE, b"after").unwrap();
        // 1001 (end of SSN 0) and 1002 (SSN 1) were abandoned by the sender.
        r.forward_tsn(1002, [(3u16, 1u16)].into_iter());
        assert_eq!(r.cumulative_tsn(), 1003);
        let got = all(&mut r);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, b"after");
        assert_eq!(r.fragment_bytes, 0);
    }

    #[test]
    fn forward_tsn_keeps_a_complete_message_after_the_abandoned_one() {
        let mut r = rx();
        // SSN 0 lost its end (TSN 1001) and was abandoned; SSN 1 arrived whole after it.
        r.data(1000, 3, 0, 53, FLAG_BEGIN, b"half").unwrap();
        r.data(1002, 3, 1, 53, WHOLE, b"kept").unwrap();
        assert!(all(&mut r).is_empty());
        r.forward_tsn(1001, [(3u16, 0u16)].into_iter());
        assert_eq!(r.cumulative_tsn(), 1002);
        let got = all(&mut r);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].data, b"kept");
        assert_eq!(r.fragment_bytes, 0);
    }

    #[test]
    fn nothing_beyond_what_a_gap_block_can_name_is_taken() {
        let mut r = rx();
        // cumulative is 999: 999 + 65536 cannot be reported in a 16-bit gap offset.
        r.data(999u32.wrapping_add(65_536), 1, 0, 51, WHOLE, b"far").unwrap();
        assert!(r.above.is_empty());
        r.data(999 + 65_535, 1, 0, 51, WHOLE | FLAG_UNORDERED, b"edge").unwrap();
        let mut sack = Vec::new();
        r.write_sack(&mut sack);
        let parsed =
            crate::chunk::Sack::parse(crate::chunk::Chunks::new(&sack).next().unwrap().unwrap()).unwrap();
        assert_eq!(parsed.gaps().collect::<Vec<_>>(), [(65_535, 65_535)]);
    }

    #[test]
    fn many_tiny_fragments_reassemble_without_a_huge_reservation() {
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 1 << 18);
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[7; 16_000]).unwrap();
        for t in 2..2000u32 {
            r.data(t, 0, 0, 53, 0, &[1]).unwrap();
        }
        r.data(2000, 0, 0, 53, FLAG_END, &[2]).unwrap();
        let m = all(&mut r).pop().unwrap();
        assert_eq!(m.data.len(), 16_000 + 1999);
        assert!(m.data.capacity() < 64 * 1024, "capacity {}", m.data.capacity());
    }

    #[test]
    fn a_message_over_the_limit_is_an_error() {
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 10);
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        assert_eq!(r.data(2, 0, 0, 53, 0, &[0; 6]), Err(ReceiveError::TooLarge(12)));
    }

    #[test]
    fn a_message_over_the_limit_is_an_error_in_any_order() {
        // The middle fragment arrives last: the run before it and the run after it are
        // each under the limit, together they are not.
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 10);
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[0; 4]).unwrap();
        r.data(3, 0, 0, 53, 0, &[0; 4]).unwrap();
        r.data(4, 0, 0, 53, FLAG_END, &[0; 1]).unwrap();
        assert_eq!(r.data(2, 0, 0, 53, 0, &[0; 4]), Err(ReceiveError::TooLarge(13)));
        // A fragment of another stream does not count towards this one.
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 10);
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        r.data(2, 1, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        assert!(all(&mut r).is_empty());
    }

    #[test]
    fn a_message_gathered_in_place_survives_a_gap_and_waits_for_its_turn() {
        // In order, then a gap: what was gathered moves to the map and the rest joins it.
        let mut r = rx();
        r.data(1000, 0, 0, 53, FLAG_BEGIN, b"ab").unwrap();
        r.data(1001, 0, 0, 53, 0, b"cd").unwrap();
        r.data(1003, 0, 0, 53, FLAG_END, b"gh").unwrap();
        assert!(all(&mut r).is_empty());
        r.data(1002, 0, 0, 53, 0, b"ef").unwrap();
        assert_eq!(all(&mut r).iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(), [b"abcdefgh"]);
        assert_eq!(r.a_rwnd(), 1 << 20, "every byte accounted for");
        // Complete in place before its SSN's turn: kept, then delivered after SSN 0.
        let mut r = rx();
        r.data(1000, 5, 1, 53, FLAG_BEGIN, b"second ").unwrap();
        r.data(1001, 5, 1, 53, FLAG_END, b"message").unwrap();
        assert!(all(&mut r).is_empty());
        r.data(1002, 5, 0, 53, WHOLE, b"first").unwrap();
        let got = all(&mut r);
        assert_eq!(
            got.iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(),
            [&b"first"[..], b"second message"]
        );
        assert_eq!(r.a_rwnd(), 1 << 20);
        // A FORWARD TSN past a message being gathered abandons it.
        let mut r = rx();
        r.data(1000, 0, 0, 53, FLAG_BEGIN, b"ab").unwrap();
        r.forward_tsn(1001, [(0u16, 0u16)].into_iter());
        r.data(1002, 0, 1, 53, WHOLE, b"x").unwrap();
        assert_eq!(all(&mut r).iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(), [b"x"]);
        assert_eq!(r.a_rwnd(), 1 << 20, "the abandoned bytes were freed");
    }

    #[test]
    fn an_out_of_date_forward_tsn_leaves_a_message_being_gathered_in_place() {
        let mut r = rx();
        r.data(1000, 0, 0, 53, FLAG_BEGIN, b"ab").unwrap();
        r.forward_tsn(999, std::iter::empty());
        assert!(r.partial.is_some() && r.fragments.is_empty());
        r.data(1001, 0, 0, 53, FLAG_END, b"cd").unwrap();
        assert_eq!(all(&mut r).iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(), [b"abcd"]);
    }

    #[test]
    fn a_full_window_takes_only_what_fills_a_hole() {
        let mut r = Receiver::new(1, 10, 10, 1 << 20);
        // Incomplete messages on two streams fill the window (the second overruns it a
        // little: it was next, and some window was left).
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        r.data(2, 1, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        assert_eq!(r.a_rwnd(), 0);
        // The next TSN is dropped now: nothing is missing below it.
        r.data(3, 2, 0, 53, FLAG_BEGIN, &[0; 6]).unwrap();
        assert_eq!(r.cumulative_tsn(), 2);
        // A hole below what arrived is still filled at zero window.
        let mut r = Receiver::new(1, 10, 10, 1 << 20);
        r.data(2, 0, 0, 53, FLAG_BEGIN, &[0; 10]).unwrap();
        assert_eq!(r.a_rwnd(), 0);
        r.data(1, 1, 0, 53, WHOLE, &[1; 4]).unwrap();
        assert_eq!(r.cumulative_tsn(), 2);
        assert_eq!(all(&mut r).len(), 1);
    }

    #[test]
    fn held_messages_keep_the_window_closed_and_freeing_them_announces_it() {
        let mut r = Receiver::new(1, 64 * 1024, 64 * 1024, 1 << 20);
        r.data(1, 0, 0, 53, WHOLE, &[0; 40 * 1024]).unwrap();
        r.data(2, 0, 1, 53, WHOLE, &[0; 24 * 1024]).unwrap();
        let taken = all(&mut r);
        r.hold(64 * 1024, true);
        assert_eq!((taken.len(), r.a_rwnd()), (2, 0), "taken but held: still in the window");
        r.write_sack(&mut Vec::new());
        // A little freed is not worth a SACK; a quarter of the window (or 16 KiB) is.
        r.hold(1024, false);
        assert!(!r.sack_now);
        r.hold(16 * 1024, false);
        assert!(r.sack_now, "the reopened window is announced");
        assert_eq!(r.a_rwnd(), 17 * 1024);
        // Once the sender knows of a fair window, freeing more is not announced at once.
        r.write_sack(&mut Vec::new());
        r.hold(47 * 1024, false);
        assert!(!r.sack_now);
        assert_eq!(r.a_rwnd(), 64 * 1024);
    }

    #[test]
    fn stream_reset_waits_for_the_last_tsn() {
        let mut r = rx();
        r.data(1000, 4, 0, 51, WHOLE, b"x").unwrap();
        assert!(!r.reset(1001, vec![4]));
        r.data(1001, 4, 1, 51, WHOLE, b"y").unwrap();
        assert!(r.pending_resets.is_empty());
        // After the reset the stream starts again at SSN 0.
        r.data(1002, 4, 0, 51, WHOLE, b"z").unwrap();
        assert_eq!(all(&mut r).len(), 3);
    }
}

/// Edge cases of the in-place gathering, the zero-window rule and the early return in
/// `assemble`, and random hostile sequences against the byte accounting.
#[cfg(test)]
mod edge_cases {
    use super::*;
    use crate::chunk::{FLAG_BEGIN, FLAG_END, FLAG_UNORDERED};

    fn held_capacity(r: &Receiver) -> usize {
        r.fragments.values().map(|f| f.data.capacity()).sum::<usize>()
            + r.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    #[test]
    fn spilled_partials_do_not_hold_far_more_memory_than_the_window_counts() {
        // A peer sends, in TSN order, 1 KiB BEGIN-only fragments that never end (a
        // protocol violation it is free to commit). Each one starts a message gathered in
        // place with room for 64 KiB; the next BEGIN spills it into the map with that room.
        let mut r = Receiver::new(1, 4 << 20, 4 << 20, 256 << 10);
        for t in 1..=512u32 {
            r.data(t, 0, t as u16, 53, FLAG_BEGIN, &[0; 1024]).unwrap();
        }
        let counted = r.fragment_bytes;
        let held = held_capacity(&r);
        assert_eq!(counted, 512 * 1024);
        // The window accounts for 512 KiB; the heap holds 32 MiB (64x). With the default
        // 4 MiB window a peer makes us hold 256 MiB per association.
        assert!(held <= 2 * counted, "window counts {counted} bytes, buffers hold {held}");
    }

    #[test]
    fn a_message_arriving_backwards_is_bounded_by_the_max_message_size() {
        // Pre-existing (the old walk also returned at the first missing predecessor), and
        // not fixed by `run`, which only looks back: fragments arriving in descending TSN
        // order are never checked until the BEGIN comes, so one incomplete message can grow
        // to the whole window (4 MiB by default against a 256 KiB limit).
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 10);
        let mut result = r.data(100, 0, 0, 53, FLAG_END, &[0; 4]);
        let mut t = 99;
        while result.is_ok() && t > 2 {
            result = r.data(t, 0, 0, 53, 0, &[0; 4]);
            t -= 1;
        }
        assert!(
            result.is_err(),
            "{} bytes of one message (limit 10) buffered without an error",
            r.fragment_bytes
        );
    }

    #[test]
    fn a_chunk_dropped_for_lack_of_window_is_answered_with_a_sack_at_once() {
        // RFC 9260 §6.2: "if such a DATA chunk is dropped, the receiver MUST immediately
        // send back a SACK with the current receive window".
        let mut r = Receiver::new(1, 10, 10, 1 << 20);
        r.data(1, 0, 0, 53, FLAG_BEGIN, &[0; 10]).unwrap();
        assert_eq!(r.a_rwnd(), 0);
        r.sack_now = false;
        r.data(2, 0, 0, 53, 0, &[0; 4]).unwrap();
        assert_eq!(r.cumulative_tsn(), 1, "dropped, as §6.2 says");
        assert!(r.sack_now, "the drop is not answered at once");
    }

    #[test]
    fn random_sequences_keep_the_byte_count_and_never_panic() {
        // A hostile peer's DATA, FORWARD TSN, resets and discards in random order: no panic,
        // and `fragment_bytes` always equals what the map and the partial hold.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut r = Receiver::new(u32::MAX - 20, 4000, 4000, 3000);
            for _ in 0..200 {
                let base = r.cumulative as u32;
                let tsn = base.wrapping_add((next() % 12) as u32).wrapping_sub(2);
                match next() % 20 {
                    0 => {
                        let skip = [((next() % 3) as u16, (next() % 4) as u16)];
                        r.forward_tsn(base.wrapping_add((next() % 6) as u32), skip.into_iter());
                    }
                    1 => {
                        r.reset(base.wrapping_add((next() % 4) as u32), vec![(next() % 3) as u16]);
                    }
                    2 => r.discard(tsn),
                    3 => while r.poll_message().is_some() {},
                    _ => {
                        let flags = (next() % 8) as u8;
                        let len = 1 + (next() % 300) as usize;
                        let stream = (next() % 3) as u16;
                        let ssn = (next() % 4) as u16;
                        if r.data(tsn, stream, ssn, 53, flags, &vec![0; len]).is_err() {
                            break;
                        }
                    }
                }
                let held: usize = r.fragments.values().map(|f| f.data.len()).sum::<usize>()
                    + r.partial.as_ref().map_or(0, |p| p.data.len());
                assert_eq!(r.fragment_bytes, held, "round {round}");
            }
        }
    }

    #[test]
    fn legit_traffic_reordered_and_duplicated_is_delivered_exactly_once() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..400 {
            // Messages on 3 streams, some unordered, cut into 1..=5 fragments each.
            let mut chunks = Vec::new();
            let mut ssn = [0u16; 3];
            let mut expected: Vec<Vec<u8>> = vec![Vec::new(); 3];
            let mut tsn = u32::MAX - 50;
            let start = tsn;
            for m in 0..60u32 {
                let stream = (next() % 3) as usize;
                let unordered = next() % 4 == 0;
                let parts = 1 + (next() % 5) as usize;
                let body: Vec<u8> = (0..parts * 3).map(|k| (m as usize * 7 + k) as u8).collect();
                if !unordered {
                    expected[stream].extend_from_slice(&body);
                }
                for (i, part) in body.chunks(3).enumerate() {
                    let mut flags = if unordered { FLAG_UNORDERED } else { 0 };
                    if i == 0 {
                        flags |= FLAG_BEGIN;
                    }
                    if i == parts - 1 {
                        flags |= FLAG_END;
                    }
                    chunks.push((tsn, stream as u16, ssn[stream], flags, part.to_vec()));
                    tsn = tsn.wrapping_add(1);
                }
                if !unordered {
                    ssn[stream] = ssn[stream].wrapping_add(1);
                }
            }
            // Mostly in order, with local swaps, repeats and late copies.
            let mut order: Vec<usize> = (0..chunks.len()).collect();
            for i in 0..order.len() {
                if next() % 5 == 0 {
                    let j = (i + (next() % 6) as usize).min(order.len() - 1);
                    order.swap(i, j);
                }
            }
            let mut sends = Vec::new();
            for &i in &order {
                sends.push(i);
                if next() % 10 == 0 {
                    sends.push(i);
                }
            }
            let mut r = Receiver::new(start, 1 << 20, 1 << 20, 1 << 20);
            let mut got: Vec<Vec<u8>> = vec![Vec::new(); 3];
            let mut unordered_bytes = 0;
            for i in sends {
                let (t, st, sn, fl, ref data) = chunks[i];
                r.data(t, st, sn, 53, fl, data).unwrap();
                while let Some(m) = r.poll_message() {
                    if m.unordered {
                        unordered_bytes += m.data.len();
                    } else {
                        got[m.stream as usize].extend_from_slice(&m.data);
                    }
                }
            }
            let total_unordered: usize =
                chunks.iter().filter(|c| c.3 & FLAG_UNORDERED != 0).map(|c| c.4.len()).sum();
            assert_eq!(got, expected, "round {round}");
            assert_eq!(unordered_bytes, total_unordered, "round {round}");
            assert_eq!(r.fragment_bytes, 0, "round {round}");
            assert!(r.fragments.is_empty() && r.partial.is_none() && r.complete.is_empty(), "round {round}");
        }
    }

    #[test]
    fn a_reset_due_at_a_discarded_chunk_is_performed() {
        // The peer's stream reset waits for TSN 2; TSN 2 is a DATA chunk on a stream we do
        // not have (discarded, RFC 9260 §6.5). `discard` advances the cumulative TSN but
        // never runs `apply_resets`, so the reset waits for some later chunk.
        let mut r = Receiver::new(1, 1 << 20, 1 << 20, 1 << 20);
        r.data(1, 3, 0, 51, FLAG_BEGIN | FLAG_END, b"x").unwrap();
        assert!(!r.reset(2, vec![3]));
        r.discard(2);
        assert_eq!(r.cumulative_tsn(), 2);
        assert_eq!(r.take_performed_resets(), vec![vec![3u16]], "the reset is still pending");
    }

    fn read_all(r: &mut Receiver) -> Vec<Message> {
        std::iter::from_fn(|| r.poll_message()).collect()
    }

    /// `n` whole 1000-byte messages from TSN `first`, all read at once.
    fn feed(r: &mut Receiver, first: u32, n: u32) {
        for i in 0..n {
            r.data(
                first + i,
                1,
                (first + i) as u16,
                51,
                FLAG_BEGIN | FLAG_END | crate::chunk::FLAG_UNORDERED,
                &[0; 1000],
            )
            .unwrap();
        }
    }

    #[test]
    fn window_grows_to_twice_what_the_reader_takes_per_round_up_to_the_limit() {
        let start = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut r = Receiver::new(1, 100_000, 250_000, 1 << 20);
        assert_eq!(r.a_rwnd(), 100_000);
        r.tune(start, rtt);
        // 80 kB read in a round: 160 kB of window.
        feed(&mut r, 1, 80);
        read_all(&mut r);
        r.tune(start + rtt, rtt);
        assert_eq!(r.window(), 160_000);
        // At most doubling per round, then capped at the limit.
        feed(&mut r, 81, 200);
        read_all(&mut r);
        r.tune(start + 2 * rtt, rtt);
        assert_eq!(r.window(), 250_000);
        feed(&mut r, 281, 240);
        read_all(&mut r);
        r.tune(start + 3 * rtt, rtt);
        assert_eq!((r.window(), r.a_rwnd()), (250_000, 250_000), "never past the limit");
    }

    #[test]
    fn window_does_not_grow_for_a_reader_that_does_not_read_nor_shrink_after() {
        let start = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut r = Receiver::new(1, 100_000, 1 << 20, 1 << 20);
        r.tune(start, rtt);
        feed(&mut r, 1, 90);
        r.tune(start + rtt, rtt);
        assert_eq!((r.window(), r.a_rwnd()), (100_000, 10_000), "nothing read: no growth");
        // What is taken but held by the application does not count as read either.
        let held: usize = read_all(&mut r).iter().map(|m| m.data.len()).sum();
        r.hold(held, true);
        r.tune(start + 2 * rtt, rtt);
        assert_eq!((r.window(), r.a_rwnd()), (100_000, 10_000));
        r.hold(held, false);
        r.tune(start + 3 * rtt, rtt);
        assert_eq!(r.window(), 180_000, "released: read");
        r.tune(start + 10 * rtt, rtt);
        assert_eq!(r.window(), 180_000, "an idle reader does not shrink it");
    }

    #[test]
    fn a_round_stretched_by_idle_time_does_not_count_as_a_fast_reader() {
        let start = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut r = Receiver::new(1, 100_000, 1 << 20, 1 << 20);
        r.tune(start, rtt);
        feed(&mut r, 1, 80);
        read_all(&mut r);
        // 80 kB over ten RTTs: 8 kB per round.
        r.tune(start + 10 * rtt, rtt);
        assert_eq!(r.window(), 100_000);
    }

    #[test]
    fn data_beyond_the_advertised_window_but_within_the_limit_is_kept() {
        // A peer may send on the larger window our INIT announced: it is not dropped.
        let mut r = Receiver::new(1, 10_000, 20_000, 1 << 20);
        feed(&mut r, 1, 15);
        assert_eq!((r.cumulative_tsn(), r.a_rwnd(), r.buffered()), (15, 0, 15_000));
        feed(&mut r, 16, 10);
        assert_eq!(r.buffered(), 20_000, "nothing past the limit");
        assert_eq!(r.cumulative_tsn(), 20);
    }
}
