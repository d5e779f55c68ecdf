//! WebRTC data channels (RFC 8831) over one association, sans-IO: in-band opening with
//! DCEP or out-of-band ("negotiated") ids, stream ids by DTLS role (the DTLS client takes
//! even ones, RFC 8832 §6), label and protocol, ordered or not, maxRetransmits and
//! maxPacketLifeTime, text and binary messages including empty ones (RFC 8831 §6.6),
//! buffered amount with a low-water event, and closing by stream reset (§6.7).

use crate::assoc::{Association, SctpCloseReason, SctpEvent, SendError};
use crate::dcep::{self, DcepMessage, Open};
use crate::send::Reliability;
use peerlink_proto::Transmit;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// The payload protocols of whole user messages (the deprecated partial ones rely on order).
const USER_PPIDS: [u32; 4] =
    [dcep::PPID_STRING, dcep::PPID_BINARY, dcep::PPID_STRING_EMPTY, dcep::PPID_BINARY_EMPTY];

/// What a new channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub label: String,
    pub protocol: String,
    pub ordered: bool,
    pub reliability: Reliability,
    /// Agreed out of band on this stream id: no DCEP, open on both sides at once.
    pub negotiated: Option<u16>,
    pub priority: u16,
}

impl ChannelConfig {
    /// A reliable, ordered channel (the default of `createDataChannel`).
    pub fn reliable(label: &str) -> ChannelConfig {
        ChannelConfig {
            label: label.to_owned(),
            protocol: String::new(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: None,
            priority: 256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    Connecting,
    Open,
    Closing,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// The peer opened a channel (DCEP); it is open.
    Incoming {
        id: u16,
        label: String,
        protocol: String,
    },
    /// A channel we created is open.
    Open(u16),
    Message {
        id: u16,
        data: Vec<u8>,
        binary: bool,
    },
    /// The channel's buffered amount fell to its low-water mark.
    BufferedAmountLow(u16),
    Closed(u16),
    /// The association is gone; every channel with it.
    Ended {
        reason: SctpCloseReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("no open channel {0}")]
    NotOpen(u16),
    #[error("stream id {0} is taken")]
    IdTaken(u16),
    #[error("no stream ids left")]
    NoIds,
    #[error(transparent)]
    Send(#[from] SendError),
}

#[derive(Debug)]
struct Channel {
    config: ChannelConfig,
    state: ChannelState,
    low_water: usize,
    /// Above the low-water mark since the last event.
    above: bool,
    /// Our outgoing side was reset / the peer's was.
    out_reset: bool,
    in_reset: bool,
    /// DATA_CHANNEL_ACK received (or not needed): until then everything goes ordered, so
    /// nothing overtakes the OPEN (RFC 8832 §6).
    acked: bool,
    /// Bytes of messages the application will take before it gives more credit (`None`:
    /// no limit). A message is delivered while some credit is left.
    credit: Option<usize>,
    /// Messages that arrived with no credit left, in order; the association counts their
    /// bytes as unread, so its window closes.
    held: VecDeque<(Vec<u8>, bool)>,
}

impl Channel {
    fn new(config: ChannelConfig, state: ChannelState, acked: bool, credit: Option<usize>) -> Channel {
        Channel {
            config,
            state,
            low_water: 0,
            above: false,
            out_reset: false,
            in_reset: false,
            acked,
            credit,
            held: VecDeque::new(),
        }
    }
}

/// The window bytes a held message stands for (an empty one is one byte on the wire).
fn held_size(data: &[u8]) -> usize {
    data.len().max(1)
}

/// The data channels of one association.
#[derive(Debug)]
pub struct DataChannels {
    sctp: Association,
    /// The DTLS client's channels use even stream ids.
    even: bool,
    channels: BTreeMap<u16, Channel>,
    next_id: u16,
    events: VecDeque<ChannelEvent>,
    /// The receive credit channels start with.
    initial_credit: Option<usize>,
}

/// Stream ids in use at most (the association asks for 65535 each way).
const MAX_ID: u16 = 65534;

impl DataChannels {
    /// `dtls_client`: whether our DTLS role is client (it decides even or odd stream ids).
    pub fn new(sctp: Association, dtls_client: bool) -> DataChannels {
        DataChannels {
            sctp,
            even: dtls_client,
            channels: BTreeMap::new(),
            next_id: u16::from(!dtls_client),
            events: VecDeque::new(),
            initial_credit: None,
        }
    }

    /// The receive credit every channel opened from now on starts with (see
    /// [`DataChannels::add_receive_credit`]); `None` (the default): messages are delivered
    /// as they arrive, however many the application leaves unread.
    pub fn set_initial_receive_credit(&mut self, bytes: Option<usize>) {
        self.initial_credit = bytes;
    }

    /// The application read `bytes` more of channel `id`'s messages: as many more may be
    /// delivered. A channel out of credit keeps what arrives (in order) and leaves it
    /// counted in the association's receive window, which closes once the window is full:
    /// the peer stops sending rather than this side buffering without bound. Since the
    /// window is the association's, a channel that is not read holds up the others too.
    pub fn add_receive_credit(&mut self, id: u16, bytes: usize) {
        let Some(c) = self.channels.get_mut(&id) else { return };
        let Some(credit) = c.credit.as_mut() else { return };
        *credit = credit.saturating_add(bytes);
        while c.credit.is_some_and(|n| n > 0) {
            let Some((data, binary)) = c.held.pop_front() else { break };
            let size = held_size(&data);
            self.sctp.hold_received(size, false);
            if let Some(n) = c.credit.as_mut() {
                *n = n.saturating_sub(size);
            }
            self.events.push_back(ChannelEvent::Message { id, data, binary });
        }
        self.finish_close(id);
    }

    /// Bytes of channel `id` waiting for receive credit.
    pub fn held_bytes(&self, id: u16) -> usize {
        self.channels.get(&id).map_or(0, |c| c.held.iter().map(|(d, _)| held_size(d)).sum())
    }

    /// Sets our DTLS role (client: even stream ids) for channels created from now on.
    pub fn set_dtls_client(&mut self, client: bool) {
        if self.even != client {
            self.even = client;
            self.next_id = u16::from(!client);
        }
    }

    pub fn association(&self) -> &Association {
        &self.sctp
    }

    pub fn association_mut(&mut self) -> &mut Association {
        &mut self.sctp
    }

    /// Channels not yet fully closed.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn state(&self, id: u16) -> ChannelState {
        self.channels.get(&id).map_or(ChannelState::Closed, |c| c.state)
    }

    pub fn label(&self, id: u16) -> Option<&str> {
        self.channels.get(&id).map(|c| c.config.label.as_str())
    }

    /// Creates a channel; it opens when the association is up (at once if it is).
    pub fn create(&mut self, now: Instant, config: ChannelConfig) -> Result<u16, ChannelError> {
        let id = match config.negotiated {
            Some(id) if self.channels.contains_key(&id) => return Err(ChannelError::IdTaken(id)),
            Some(id) if id >= self.sctp.outbound_stream_count() => {
                return Err(SendError::InvalidStream(id).into())
            }
            Some(id) => id,
            None => self.free_id()?,
        };
        if config.negotiated.is_none() {
            let open = DcepMessage::Open(Open {
                ordered: config.ordered,
                reliability: config.reliability,
                priority: config.priority,
                label: config.label.clone(),
                protocol: config.protocol.clone(),
            });
            // DCEP messages are reliable and ordered (RFC 8832 §6).
            self.sctp.send(now, id, dcep::PPID_DCEP, open.encode(), true, Reliability::Reliable)?;
        }
        let established = self.sctp.is_established();
        let state = if established { ChannelState::Open } else { ChannelState::Connecting };
        let acked = config.negotiated.is_some();
        self.channels.insert(id, Channel::new(config, state, acked, self.initial_credit));
        if established {
            self.events.push_back(ChannelEvent::Open(id));
        }
        Ok(id)
    }

    /// The next unused id of our parity below the streams the association has (all of them
    /// before the peer said how many it takes).
    fn free_id(&mut self) -> Result<u16, ChannelError> {
        let limit = self.sctp.outbound_stream_count();
        for _ in 0..=MAX_ID / 2 {
            let id = self.next_id;
            self.next_id = match self.next_id.checked_add(2) {
                Some(next) if next <= MAX_ID => next,
                _ => u16::from(!self.even),
            };
            if id < limit && !self.channels.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(ChannelError::NoIds)
    }

    /// Sends a message: `binary` or text (UTF-8 is the caller's business). Empty messages
    /// go as one zero byte with the "empty" PPID.
    pub fn send(&mut self, now: Instant, id: u16, data: &[u8], binary: bool) -> Result<(), ChannelError> {
        let c = self.channels.get_mut(&id).ok_or(ChannelError::NotOpen(id))?;
        if !matches!(c.state, ChannelState::Open | ChannelState::Connecting) {
            return Err(ChannelError::NotOpen(id));
        }
        let (ppid, payload) = match (binary, data.is_empty()) {
            (true, false) => (dcep::PPID_BINARY, data.to_vec()),
            (false, false) => (dcep::PPID_STRING, data.to_vec()),
            (true, true) => (dcep::PPID_BINARY_EMPTY, vec![0]),
            (false, true) => (dcep::PPID_STRING_EMPTY, vec![0]),
        };
        let (ordered, reliability) = (c.config.ordered || !c.acked, c.config.reliability);
        self.sctp.send(now, id, ppid, payload, ordered, reliability)?;
        let c = self.channels.get_mut(&id).expect("checked above");
        c.above = self.sctp.buffered_amount(id) > c.low_water;
        Ok(())
    }

    /// Bytes of channel `id` the peer has not acknowledged (queued or in flight).
    pub fn unacknowledged(&self, id: u16) -> usize {
        self.sctp.unacknowledged(id)
    }

    pub fn buffered_amount(&self, id: u16) -> usize {
        self.sctp.buffered_amount(id)
    }

    /// `bufferedAmountLowThreshold`.
    pub fn set_low_water(&mut self, id: u16, bytes: usize) {
        if let Some(c) = self.channels.get_mut(&id) {
            c.low_water = bytes;
        }
    }

    /// Closes a channel: what is queued is sent, then the stream is reset both ways.
    pub fn close(&mut self, id: u16) {
        let Some(c) = self.channels.get_mut(&id) else { return };
        if matches!(c.state, ChannelState::Closing | ChannelState::Closed) {
            return;
        }
        c.state = ChannelState::Closing;
        self.sctp.reset_streams(&[id]);
    }

    pub fn handle_receive(&mut self, now: Instant, packet: &[u8]) {
        self.sctp.handle_receive(now, packet);
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.sctp.handle_timeout(now);
        self.process(now);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sctp.poll_timeout()
    }

    /// Appends the next packet for DTLS to `buf` (see [`Association::poll_transmit`]).
    /// Buffered-amount-low events follow what it took.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let p = self.sctp.poll_transmit(now, buf);
        if p.is_some() {
            for (&id, c) in self.channels.iter_mut() {
                if c.above && self.sctp.buffered_amount(id) <= c.low_water {
                    c.above = false;
                    self.events.push_back(ChannelEvent::BufferedAmountLow(id));
                }
            }
        }
        self.process(now);
        p
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }

    /// Association events, then messages (a channel closing still delivers what came
    /// before the reset), then channels whose close completed.
    fn process(&mut self, now: Instant) {
        let mut finished = Vec::new();
        while let Some(e) = self.sctp.poll_event() {
            match e {
                SctpEvent::Connected => {
                    for (&id, c) in self.channels.iter_mut() {
                        if c.state == ChannelState::Connecting {
                            c.state = ChannelState::Open;
                            self.events.push_back(ChannelEvent::Open(id));
                        }
                    }
                }
                SctpEvent::IncomingStreamsReset(ids) => {
                    for id in ids {
                        let Some(c) = self.channels.get_mut(&id) else { continue };
                        c.in_reset = true;
                        // The peer closed: close our side too (RFC 8831 §6.7).
                        if c.state != ChannelState::Closing {
                            c.state = ChannelState::Closing;
                            self.sctp.reset_streams(&[id]);
                        }
                        finished.push(id);
                    }
                }
                // Created before the peer said how many streams it takes, on one it does
                // not: the channel never opens.
                SctpEvent::StreamsRefused(ids) => {
                    for id in ids {
                        if self.channels.remove(&id).is_some() {
                            self.events.push_back(ChannelEvent::Closed(id));
                        }
                    }
                }
                SctpEvent::OutgoingStreamsReset(ids) => {
                    for id in ids {
                        if let Some(c) = self.channels.get_mut(&id) {
                            c.out_reset = true;
                        }
                        finished.push(id);
                    }
                }
                SctpEvent::Closed { reason } => {
                    for (&id, c) in self.channels.iter_mut() {
                        c.state = ChannelState::Closed;
                        self.events.push_back(ChannelEvent::Closed(id));
                    }
                    self.channels.clear();
                    self.events.push_back(ChannelEvent::Ended { reason });
                }
            }
        }
        while let Some(m) = self.sctp.poll_message() {
            self.message(now, m.stream, m.ppid, m.data);
        }
        for id in finished {
            self.finish_close(id);
        }
    }

    /// A channel reset both ways is closed once what it holds was delivered.
    fn finish_close(&mut self, id: u16) {
        if self.channels.get(&id).is_some_and(|c| c.in_reset && c.out_reset && c.held.is_empty()) {
            self.channels.remove(&id);
            self.events.push_back(ChannelEvent::Closed(id));
        }
    }

    fn message(&mut self, now: Instant, id: u16, ppid: u32, data: Vec<u8>) {
        match ppid {
            dcep::PPID_DCEP => self.dcep(now, id, &data),
            dcep::PPID_STRING | dcep::PPID_STRING_PARTIAL | dcep::PPID_BINARY | dcep::PPID_BINARY_PARTIAL => {
                let binary = matches!(ppid, dcep::PPID_BINARY | dcep::PPID_BINARY_PARTIAL);
                self.deliver(id, data, binary);
            }
            dcep::PPID_STRING_EMPTY | dcep::PPID_BINARY_EMPTY => {
                let binary = ppid == dcep::PPID_BINARY_EMPTY;
                self.deliver(id, Vec::new(), binary);
            }
            _ => {} // unknown payload protocol: dropped
        }
    }

    /// A message for the application: delivered while the channel has credit, else held.
    fn deliver(&mut self, id: u16, data: Vec<u8>, binary: bool) {
        let Some(c) = self.channels.get_mut(&id) else { return };
        if !matches!(c.state, ChannelState::Open | ChannelState::Closing) {
            return;
        }
        match c.credit.as_mut() {
            Some(0) => {
                self.sctp.hold_received(held_size(&data), true);
                c.held.push_back((data, binary));
            }
            Some(n) => {
                *n = n.saturating_sub(held_size(&data));
                self.events.push_back(ChannelEvent::Message { id, data, binary });
            }
            None => self.events.push_back(ChannelEvent::Message { id, data, binary }),
        }
    }

    fn dcep(&mut self, now: Instant, id: u16, data: &[u8]) {
        match DcepMessage::parse(data) {
            Ok(DcepMessage::Open(open)) => {
                // The peer's ids have the other parity; a taken id is a protocol error we
                // answer by ignoring the OPEN.
                if self.channels.contains_key(&id) || (id % 2 == 0) == self.even {
                    return;
                }
                let ack = DcepMessage::Ack.encode();
                if self.sctp.send(now, id, dcep::PPID_DCEP, ack, true, Reliability::Reliable).is_err() {
                    return;
                }
                let config = ChannelConfig {
                    label: open.label.clone(),
                    protocol: open.protocol.clone(),
                    ordered: open.ordered,
                    reliability: open.reliability,
                    negotiated: None,
                    priority: open.priority,
                };
                self.channels.insert(id, Channel::new(config, ChannelState::Open, true, self.initial_credit));
                self.events.push_back(ChannelEvent::Incoming {
                    id,
                    label: open.label,
                    protocol: open.protocol,
                });
            }
            // The opener's channel is open already (it may send before the ACK, ordered).
            Ok(DcepMessage::Ack) => {
                if let Some(c) = self.channels.get_mut(&id) {
                    c.acked = true;
                    // What the application queued meanwhile goes as the channel asks.
                    if !c.config.ordered {
                        self.sctp.unorder_queued(id, &USER_PPIDS);
                    }
                }
            }
            Err(_) => {}
        }
    }
}

impl peerlink_proto::Machine for DataChannels {
    type Route = ();
    type Event = ChannelEvent;

    fn handle_receive(&mut self, now: Instant, (): (), packet: &[u8]) {
        DataChannels::handle_receive(self, now, packet);
    }

    fn handle_timeout(&mut self, now: Instant) {
        DataChannels::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        DataChannels::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<ChannelEvent> {
        DataChannels::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        DataChannels::poll_timeout(self)
    }
}
