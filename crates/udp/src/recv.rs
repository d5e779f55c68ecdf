//! Batched receive: the buffers one `recvmmsg` fills, and what it said about each.

use crate::sys::RecvMeta;
use crate::MAX_BATCH;
use std::net::{IpAddr, SocketAddr};

/// Buffers for up to `slots` datagrams per receive (at most [`MAX_BATCH`]), owned by the
/// caller and reused, so a steady stream allocates nothing.
pub struct RecvBatch {
    slot: usize,
    buf: Vec<u8>,
    meta: Vec<RecvMeta>,
    /// Slots filled by the last receive.
    count: usize,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.meta.len())
            .field("slot", &self.slot)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// `slots` buffers (1 to [`MAX_BATCH`]) of `slot` bytes each. A longer datagram is cut
    /// to `slot` bytes and marked [`Datagram::truncated`]. With receive offload a slot
    /// holds a run of datagrams: it needs [`crate::GRO_SLOT`] bytes.
    pub fn new(slots: usize, slot: usize) -> RecvBatch {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        RecvBatch { slot, buf: vec![0; slots * slot], meta: vec![RecvMeta::default(); slots], count: 0 }
    }

    /// How many datagrams one receive can take.
    pub fn slots(&self) -> usize {
        self.meta.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// Slots filled by the last receive (some may be skipped by [`RecvBatch::iter`]).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the last receive filled every slot: more may be waiting.
    pub fn is_full(&self) -> bool {
        self.count == self.meta.len()
    }

    /// What the last receive got, in order. A slot without a usable source address (which
    /// UDP does not produce) is skipped.
    pub fn iter(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        self.meta[..self.count].iter().enumerate().filter_map(|(i, m)| {
            let start = i * self.slot;
            Some(Datagram {
                source: m.source?,
                destination: m.destination,
                data: self.buf.get(start..start + m.len)?,
                segment: if m.segment == 0 { m.len } else { m.segment },
                truncated: m.truncated,
            })
        })
    }

    pub(crate) fn fill(&mut self) -> (&mut [u8], usize, &mut [RecvMeta]) {
        self.count = 0;
        (&mut self.buf, self.slot, &mut self.meta)
    }

    pub(crate) fn set_len(&mut self, count: usize) {
        self.count = count.min(self.meta.len());
    }
}

/// One received datagram, or with receive offload a run of datagrams from one source, all
/// of `segment` bytes but the last, which may be shorter. [`Datagram::segments`] splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram<'a> {
    pub source: SocketAddr,
    /// The address it was sent to, when packet info is enabled
    /// ([`crate::UdpSocket::enable_pktinfo`]).
    pub destination: Option<IpAddr>,
    /// What fitted in the slot.
    pub data: &'a [u8],
    /// Bytes per datagram in `data` (`data.len()` for a lone one).
    pub segment: usize,
    /// The datagram was longer than the slot; `data` is its beginning only.
    pub truncated: bool,
}

impl<'a> Datagram<'a> {
    /// The datagrams in `data`; none when it is empty.
    pub fn segments(&self) -> std::slice::Chunks<'a, u8> {
        self.data.chunks(self.segment.max(1))
    }
}
