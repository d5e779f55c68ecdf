//! Batched send: datagrams queued, gathered into runs that segmentation offload can carry.

use crate::{MAX_GSO_BYTES, MAX_SEGMENTS};
use std::net::{IpAddr, SocketAddr};

/// One `sendmsg`'s worth: a datagram, or a run of datagrams to one destination, all of
/// `segment` bytes but the last, which may be shorter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transmit {
    pub to: SocketAddr,
    /// The source address to send from (`IP_PKTINFO`, `IPV6_PKTINFO`); `None`: the
    /// kernel's choice.
    pub from: Option<IpAddr>,
    pub start: usize,
    pub len: usize,
    pub segment: usize,
    /// Goes one datagram per message even where offload works (it was refused for this run).
    pub split: bool,
}

impl Transmit {
    pub(crate) fn datagrams(&self) -> usize {
        if self.segment == 0 {
            1
        } else {
            self.len.div_ceil(self.segment)
        }
    }

    /// Whether `datagram` from `from` to `to` may join the run: same addresses, not longer
    /// than the run's datagrams, none shorter before it, within the kernel's limits.
    fn takes(&self, to: SocketAddr, from: Option<IpAddr>, len: usize) -> bool {
        self.to == to
            && self.from == from
            && self.segment > 0
            && len > 0
            && len <= self.segment
            && self.len % self.segment == 0
            && self.len / self.segment < MAX_SEGMENTS
            && self.len + len <= MAX_GSO_BYTES
    }
}

/// Datagrams waiting to be sent by [`crate::UdpSocket::send`], `MAX_BATCH` messages per
/// `sendmmsg`. Consecutive datagrams to one destination, equal in size (the last may be
/// shorter), form a run that goes as one message with segmentation offload where the
/// socket has it. The buffers are reused, so a steady stream allocates nothing.
#[derive(Debug, Default)]
pub struct SendBatch {
    data: Vec<u8>,
    transmits: Vec<Transmit>,
    /// Datagrams queued and not sent yet.
    datagrams: usize,
    /// Sending resumes here: a transmit, and the bytes of it already sent (a run split
    /// after offload was refused).
    pub(crate) next: usize,
    pub(crate) offset: usize,
    /// Datagrams the kernel refused since [`SendBatch::take_dropped`] was last called.
    dropped: usize,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch::with_capacity(crate::MAX_BATCH, crate::MAX_BATCH * 1500)
    }

    /// Room for `datagrams` datagrams and `bytes` bytes before anything grows.
    pub fn with_capacity(datagrams: usize, bytes: usize) -> SendBatch {
        SendBatch {
            data: Vec::with_capacity(bytes),
            transmits: Vec::with_capacity(datagrams),
            ..SendBatch::default()
        }
    }

    /// Queues a datagram (a copy of it).
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.push_from(to, None, datagram);
    }

    /// Queues a datagram to go from the local address `from` (a socket bound to a wildcard
    /// address answering from the address a request came to: see
    /// [`crate::Datagram::destination`]); `None` leaves the choice to the kernel. The
    /// address must be one of the host's, of the destination's family (an IPv4 address on
    /// an IPv6 socket sending to an IPv4-mapped destination).
    pub fn push_from(&mut self, to: SocketAddr, from: Option<IpAddr>, datagram: &[u8]) {
        self.data.extend_from_slice(datagram);
        self.commit_from(to, from, datagram.len());
    }

    /// The bytes of the queued datagrams, for a producer that appends the next datagram
    /// here itself (a sans-IO machine's `poll_transmit`), sparing the copy of
    /// [`SendBatch::push`]; [`SendBatch::commit`] then queues it. Bytes appended and not
    /// committed must be taken off before the batch is sent.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Queues the datagram made of the last `len` bytes appended to
    /// [`SendBatch::buffer`].
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        self.commit_from(to, None, len);
    }

    /// As [`SendBatch::commit`], from the local address `from` (see
    /// [`SendBatch::push_from`]).
    pub fn commit_from(&mut self, to: SocketAddr, from: Option<IpAddr>, len: usize) {
        let len = len.min(self.data.len());
        let start = self.data.len() - len;
        self.datagrams += 1;
        let last = self.transmits.len().checked_sub(1);
        // A run partly sent already keeps its shape.
        let started = last == Some(self.next) && self.offset > 0;
        // Only a datagram right behind the run joins it (nothing else may sit in between).
        let adjacent = |run: &Transmit| run.start + run.len == start;
        if let Some(run) =
            self.transmits.last_mut().filter(|run| !started && adjacent(run) && run.takes(to, from, len))
        {
            run.len += len;
            return;
        }
        self.transmits.push(Transmit { to, from, start, len, segment: len, split: false });
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.datagrams
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// The destination of the next datagram to go, if any.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.transmits.get(self.next).map(|t| t.to)
    }

    /// Drops everything waiting (a caller that will not wait for a full socket); returns
    /// how many datagrams that was.
    pub fn discard(&mut self) -> usize {
        let discarded = self.datagrams;
        self.data.clear();
        self.transmits.clear();
        (self.datagrams, self.next, self.offset) = (0, 0, 0);
        discarded
    }

    /// Datagrams the kernel refused (unreachable or invalid destination, too large) since
    /// the last call; they were dropped, as UDP may, and the rest went on.
    pub fn take_dropped(&mut self) -> usize {
        std::mem::take(&mut self.dropped)
    }

    pub(crate) fn transmits(&self) -> &[Transmit] {
        &self.transmits
    }

    pub(crate) fn bytes(&self, start: usize, len: usize) -> &[u8] {
        &self.data[start..start + len]
    }

    /// The next run goes one datagram per message.
    pub(crate) fn split_next(&mut self) {
        if let Some(t) = self.transmits.get_mut(self.next) {
            t.split = true;
        }
    }

    /// Moves the cursor past what went out (or was dropped, with `dropped`).
    pub(crate) fn advance(&mut self, next: usize, offset: usize, sent: usize, dropped: usize) {
        (self.next, self.offset) = (next, offset);
        self.datagrams = self.datagrams.saturating_sub(sent + dropped);
        self.dropped += dropped;
        if self.next >= self.transmits.len() {
            let dropped = self.dropped;
            self.discard();
            self.dropped = dropped;
        }
    }
}
