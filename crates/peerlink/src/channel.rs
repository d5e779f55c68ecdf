//! Data channel handles: a [`DataChannel`] splits into a [`ChannelSender`] and a
//! [`ChannelReceiver`] that two tasks can own. Sending waits while the channel's buffered
//! amount is above its high-water mark; receiving pulls from a queue bounded by the
//! channel's receive buffer, whose bytes come back to the connection as SCTP receive credit
//! only once they are read (a reader that stops closes the peer's window).

use crate::Error;
use peerlink_io::PeerHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// A data channel's SCTP stream id (what the RFC 8832 DCEP and `RTCDataChannel.id` use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u16);

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (`send(string)` in a browser). Invalid UTF-8 is replaced.
    Text(String),
    /// A binary message (`send(ArrayBuffer)`).
    Binary(Vec<u8>),
}

impl Message {
    pub(crate) fn new(data: Vec<u8>, binary: bool) -> Message {
        if binary {
            return Message::Binary(data);
        }
        match String::from_utf8(data) {
            Ok(text) => Message::Text(text),
            Err(e) => Message::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// The message's bytes (text as UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Whether it is binary.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// What the message counts for against the receive buffer (an empty one: 1 byte, as on
    /// the wire).
    fn size(&self) -> usize {
        self.as_bytes().len().max(1)
    }
}

/// What both halves of a channel share with the connection's dispatcher.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: ChannelId,
    pub(crate) handle: PeerHandle,
    /// Woken when the buffered amount falls to the low-water mark, and when the channel
    /// closes.
    pub(crate) low: Notify,
    pub(crate) closed: AtomicBool,
    pub(crate) high_water: usize,
    pub(crate) receive_buffer: usize,
    /// The connection's count of bytes sent.
    pub(crate) sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    pub(crate) fn set_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.low.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// An open data channel: send and receive through it, or [`split`](DataChannel::split) it
/// into halves for two tasks.
#[derive(Debug)]
pub struct DataChannel {
    sender: ChannelSender,
    receiver: ChannelReceiver,
    label: String,
    protocol: String,
}

/// The sending half of a [`DataChannel`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    shared: Arc<Shared>,
}

/// The receiving half of a [`DataChannel`].
#[derive(Debug)]
pub struct ChannelReceiver {
    shared: Arc<Shared>,
    messages: mpsc::UnboundedReceiver<Message>,
    /// Bytes read since credit was last given back.
    read: usize,
}

impl DataChannel {
    /// A channel and the sender its dispatcher delivers messages to. The queue is unbounded
    /// as a type, bounded in fact: the connection delivers at most the receive buffer (plus
    /// one message) before credit comes back from [`ChannelReceiver::recv`].
    pub(crate) fn new(
        label: String,
        protocol: String,
        shared: Shared,
    ) -> (DataChannel, mpsc::UnboundedSender<Message>, Arc<Shared>) {
        let shared = Arc::new(shared);
        // The sender is woken below half the high-water mark: it then has room to refill.
        shared.handle.set_buffered_amount_low_threshold(shared.id.0, shared.high_water / 2);
        let (tx, messages) = mpsc::unbounded_channel();
        let channel = DataChannel {
            sender: ChannelSender { shared: shared.clone() },
            receiver: ChannelReceiver { shared: shared.clone(), messages, read: 0 },
            label,
            protocol,
        };
        (channel, tx, shared)
    }

    pub(crate) fn named(mut self, label: String, protocol: String) -> DataChannel {
        self.label = label;
        self.protocol = protocol;
        self
    }

    /// The stream id.
    pub fn id(&self) -> ChannelId {
        self.sender.shared.id
    }

    /// The label it was opened with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The subprotocol it was opened with ("" for none).
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// Sends a text message (see [`ChannelSender::send_text`]).
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.sender.send_text(text).await
    }

    /// Sends a binary message (see [`ChannelSender::send`]).
    pub async fn send(&self, data: &[u8]) -> Result<(), Error> {
        self.sender.send(data).await
    }

    /// The next message (see [`ChannelReceiver::recv`]).
    pub async fn recv(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// Bytes queued to send and not yet handed to the network.
    pub async fn buffered_amount(&self) -> usize {
        self.sender.buffered_amount().await
    }

    /// Bytes sent and not yet acknowledged by the peer (see
    /// [`ChannelSender::unacknowledged`]).
    pub async fn unacknowledged(&self) -> usize {
        self.sender.unacknowledged().await
    }

    /// Closes the channel (what is queued is sent first).
    pub fn close(&self) {
        self.sender.close();
    }

    /// The two halves, for two tasks.
    pub fn split(self) -> (ChannelSender, ChannelReceiver) {
        (self.sender, self.receiver)
    }
}

impl ChannelSender {
    /// The stream id.
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// Sends a text message, waiting first while the buffered amount is above the
    /// high-water mark ([`ChannelOptions::high_water`](crate::ChannelOptions)).
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.send_raw(text.as_bytes().to_vec(), false).await
    }

    /// Sends a binary message, waiting first while the buffered amount is above the
    /// high-water mark.
    pub async fn send(&self, data: &[u8]) -> Result<(), Error> {
        self.send_raw(data.to_vec(), true).await
    }

    async fn send_raw(&self, data: Vec<u8>, binary: bool) -> Result<(), Error> {
        let id = self.shared.id.0;
        loop {
            let low = self.shared.low.notified();
            tokio::pin!(low);
            low.as_mut().enable();
            if self.shared.is_closed() {
                return Err(Error::ChannelClosed);
            }
            if self.shared.handle.buffered_amount(id).await <= self.shared.high_water {
                break;
            }
            low.await;
        }
        let len = data.len() as u64;
        self.shared.handle.send(id, data, binary).await?;
        self.shared.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes queued to send and not yet handed to the network.
    pub async fn buffered_amount(&self) -> usize {
        self.shared.handle.buffered_amount(self.shared.id.0).await
    }

    /// Bytes sent on the channel that the peer has not acknowledged yet (queued ones
    /// included): 0 once everything sent has arrived. A program that must not exit before
    /// its last message is delivered waits for this to reach 0.
    pub async fn unacknowledged(&self) -> usize {
        self.shared.handle.unacknowledged(self.shared.id.0).await
    }

    /// Closes the channel both ways (what is queued is sent first).
    pub fn close(&self) {
        self.shared.handle.close_channel(self.shared.id.0);
    }
}

impl ChannelReceiver {
    /// The stream id.
    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// The next message, in order; `None` once the channel or its connection is closed and
    /// everything was read. Cancel-safe. Reading gives the peer room to send more.
    pub async fn recv(&mut self) -> Option<Message> {
        let message = self.messages.recv().await?;
        self.read += message.size();
        // Credit goes back in steps of a quarter of the buffer: one command per few
        // messages, and the window reopens before the queue runs dry.
        if self.read >= self.shared.receive_buffer / 4 {
            self.shared.handle.add_receive_credit(self.shared.id.0, std::mem::take(&mut self.read));
        }
        Some(message)
    }
}
