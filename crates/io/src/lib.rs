//! The tokio driver of the native peer: one task owns a `peerlink_rtc::PeerConnection` and
//! its UDP sockets (one per local address, IPv4 and IPv6), runs its timers, resolves browsers'
//! `*.local` candidates with multicast DNS, and talks to the application through channels:
//! [`Peer`] sends commands (answered through oneshot channels, nothing is held across an
//! await) and [`Peer::next_event`] yields the connection's events.

use peerlink_rtc::{
    AudioLevel, ChannelConfig, Codec, ConnectionState, Description, Direction, MediaKind, MediaStats,
    PayloadPatch, PeerConnection, RtcConfig, RtcError, RtcEvent, SdpType, TrackConfig, TransceiverId,
    TransceiverInfo,
};
use peerlink_udp::{RecvBatch, SendBatch, GRO_SLOT};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

mod mdns;

/// Receives (a datagram or a coalesced run) handled between two flushes of what to send.
const RECEIVES_PER_TURN: usize = 32;
/// Slots per receive: each may hold a run of datagrams coalesced by the kernel (64 KiB).
const RECEIVE_SLOTS: usize = 4;
/// Commands handled between two flushes of what to send (after the one that woke the task),
/// as many as receives: a flood of media to send must not crowd out what arrives.
const COMMANDS_PER_TURN: usize = 32;
/// Datagrams queued before they are sent, even if the connection has more to send.
const SEND_QUEUE: usize = 256;

/// One of the peer's sockets: a tokio socket with batched receive and send (UDP
/// segmentation and receive offload where the kernel has them).
type UdpSocket = peerlink_udp::UdpSocket<tokio::net::UdpSocket>;

/// Where the peer listens and which servers it uses.
#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    pub rtc: RtcConfig,
    /// Local addresses to gather host candidates on; empty: [`local_addresses`] (every
    /// IPv4 and global or unique-local IPv6 address that is up, loopback only when there is
    /// no other).
    pub addresses: Vec<IpAddr>,
}

enum Command {
    CreateChannel(ChannelConfig, oneshot::Sender<Result<u16, RtcError>>),
    Offer(oneshot::Sender<Result<Description, RtcError>>),
    /// A remote description; for an offer, the answer (already applied) comes back.
    Remote(Description, oneshot::Sender<Result<Option<Description>, RtcError>>),
    Rollback(oneshot::Sender<Result<(), RtcError>>),
    Candidate(String),
    Resolved(String, IpAddr),
    Send(u16, Vec<u8>, bool, oneshot::Sender<Result<(), RtcError>>),
    Buffered(u16, oneshot::Sender<usize>),
    Unacknowledged(u16, oneshot::Sender<usize>),
    LowWater(u16, usize),
    Credit(u16, usize),
    CloseChannel(u16),
    Close(oneshot::Sender<()>),
    AddTransceiver(MediaKind, Direction, TrackConfig, oneshot::Sender<Result<TransceiverId, RtcError>>),
    SetDirection(TransceiverId, Direction, oneshot::Sender<Result<(), RtcError>>),
    Transceivers(oneshot::Sender<Vec<TransceiverInfo>>),
    WriteFrame(TransceiverId, Option<Codec>, u32, Vec<u8>, oneshot::Sender<Result<(), RtcError>>),
    WriteFrameLayer(TransceiverId, usize, u32, Vec<u8>, oneshot::Sender<Result<(), RtcError>>),
    RequestKeyframe(TransceiverId),
    RequestKeyframeLayer(TransceiverId, usize),
    RequestBandwidthProbe(u64),
    ForgetSent(TransceiverId),
    ResendSince(TransceiverId, u32, usize, oneshot::Sender<usize>),
    WriteRtp(TransceiverId, usize, Codec, Arc<Vec<u8>>, PayloadPatch, u16, u32, Option<AudioLevel>),
    StopTransceiver(TransceiverId, oneshot::Sender<Result<(), RtcError>>),
    MediaStats(TransceiverId, oneshot::Sender<Option<MediaStats>>),
    BandwidthEstimate(oneshot::Sender<Option<u64>>),
    TransportStats(oneshot::Sender<TransportStats>),
}

/// Counters of the connection's transport (SCTP over DTLS over ICE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// SCTP's smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub retransmitted_chunks: u64,
}

/// Handle to a peer connection running on the current tokio runtime.
#[derive(Debug)]
pub struct Peer {
    handle: PeerHandle,
    events: mpsc::UnboundedReceiver<RtcEvent>,
}

/// Commands to a running peer connection, without its events: cheap to clone, so a task
/// that reads the events and others that send can each have one.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// The bandwidth estimate as of the task's last turn ([`NO_ESTIMATE`] when none).
    estimate: Arc<AtomicU64>,
}

/// What [`PeerHandle`]'s shared estimate holds when the connection has none.
const NO_ESTIMATE: u64 = u64::MAX;

/// A running peer connection's events (see [`Peer::split`]).
#[derive(Debug)]
pub struct PeerEvents(mpsc::UnboundedReceiver<RtcEvent>);

impl PeerEvents {
    /// The next event; `None` once the connection is closed and everything was delivered.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<RtcEvent> {
        self.0.recv().await
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// The driver task ended (closed, or failed to set up).
#[derive(Debug, thiserror::Error)]
#[error("the peer connection is gone")]
pub struct Gone;

impl From<Gone> for RtcError {
    fn from(_: Gone) -> RtcError {
        RtcError::Closed
    }
}

/// Every address of an interface that is up that another host could reach: IPv4, and IPv6
/// global or unique-local (link-local needs a scope the candidates cannot carry); loopback
/// only when there is nothing else.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut loopback = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            if !ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
                continue;
            }
            let Some(address) = ifa.address.as_ref() else { continue };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if ip.is_loopback() {
                loopback.push(ip);
            } else if usable(ip) && !found.contains(&ip) {
                found.push(ip);
            }
        }
    }
    if found.is_empty() {
        found = loopback;
    }
    if found.is_empty() {
        found.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    found
}

/// Not unspecified, multicast, IPv6 link-local or an IPv4-mapped IPv6 address.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast(),
        IpAddr::V6(v6) => {
            !v6.is_unspecified()
                && !v6.is_multicast()
                && (v6.segments()[0] & 0xffc0) != 0xfe80
                && v6.to_ipv4_mapped().is_none()
        }
    }
}

impl Peer {
    /// Binds one UDP socket per local address and starts the driver task.
    pub async fn start(config: PeerConfig) -> std::io::Result<Peer> {
        let chosen = !config.addresses.is_empty();
        let addresses = if chosen { config.addresses.clone() } else { local_addresses() };
        let now = Instant::now();
        let mut pc = PeerConnection::new(now, config.rtc.clone(), peerlink_proto::os_random())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut sockets = Vec::new();
        for ip in addresses {
            // An address found by itself may not be usable yet (an IPv6 one still
            // tentative, on an interface without carrier): skip it. One the caller chose
            // must work.
            let socket = match bind(SocketAddr::new(ip, 0)) {
                Ok(socket) => socket,
                Err(e) if !chosen => {
                    tracing::debug!(%ip, error = %e, "local address skipped: it does not bind");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut socket = UdpSocket::new(socket);
            // Runs of datagrams from the peer come up in one receive where the kernel can.
            socket.enable_gro();
            let local = socket.get_ref().local_addr()?;
            pc.add_local_address(now, local);
            sockets.push((local, Arc::new(socket)));
        }
        if sockets.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                "no local address could be bound",
            ));
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let estimate = Arc::new(AtomicU64::new(NO_ESTIMATE));
        tokio::spawn(drive(pc, sockets, command_rx, commands.downgrade(), event_tx, estimate.clone()));
        Ok(Peer { handle: PeerHandle { commands, estimate }, events })
    }

    /// The command handle and the event stream, apart.
    pub fn split(self) -> (PeerHandle, PeerEvents) {
        (self.handle, PeerEvents(self.events))
    }

    /// The command handle.
    pub fn handle(&self) -> &PeerHandle {
        &self.handle
    }

    /// The next event; `None` once the connection is closed and everything was delivered.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Option<RtcEvent> {
        self.events.recv().await
    }
}

impl std::ops::Deref for Peer {
    type Target = PeerHandle;

    fn deref(&self) -> &PeerHandle {
        &self.handle
    }
}

impl PeerHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Gone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| Gone)?;
        rx.await.map_err(|_| Gone)
    }

    pub async fn create_data_channel(&self, config: ChannelConfig) -> Result<u16, RtcError> {
        self.ask(|tx| Command::CreateChannel(config, tx)).await?
    }

    /// Adds an audio or video transceiver (see `PeerConnection::add_transceiver`).
    pub async fn add_transceiver(
        &self,
        kind: MediaKind,
        direction: Direction,
        config: TrackConfig,
    ) -> Result<TransceiverId, RtcError> {
        self.ask(|tx| Command::AddTransceiver(kind, direction, config, tx)).await?
    }

    pub async fn set_direction(&self, id: TransceiverId, direction: Direction) -> Result<(), RtcError> {
        self.ask(|tx| Command::SetDirection(id, direction, tx)).await?
    }

    pub async fn transceivers(&self) -> Vec<TransceiverInfo> {
        self.ask(Command::Transceivers).await.unwrap_or_default()
    }

    /// Sends one encoded frame on transceiver `id` (in the first negotiated format of
    /// `codec`, or the first negotiated one).
    pub async fn write_frame(
        &self,
        id: TransceiverId,
        codec: Option<Codec>,
        timestamp: u32,
        frame: Vec<u8>,
    ) -> Result<(), RtcError> {
        self.ask(|tx| Command::WriteFrame(id, codec, timestamp, frame, tx)).await?
    }

    /// Sends one encoded frame on simulcast layer `layer` of `id`
    /// ([`PeerConnection::write_frame_layer`]; a layer the peer did not accept gives
    /// [`RtcError::LayerNotSent`]).
    pub async fn write_frame_layer(
        &self,
        id: TransceiverId,
        layer: usize,
        timestamp: u32,
        frame: Vec<u8>,
    ) -> Result<(), RtcError> {
        self.ask(|tx| Command::WriteFrameLayer(id, layer, timestamp, frame, tx)).await?
    }

    /// Asks for a key frame of one simulcast layer of what `id` receives (rate limited).
    pub fn request_keyframe_layer(&self, id: TransceiverId, layer: usize) {
        let _ = self.commands.send(Command::RequestKeyframeLayer(id, layer));
    }

    /// Nothing sent so far on `id` will be retransmitted ([`PeerConnection::forget_sent`]).
    pub fn forget_sent(&self, id: TransceiverId) {
        let _ = self.commands.send(Command::ForgetSent(id));
    }

    /// Sends again what `id` sent from the frame with RTP timestamp `timestamp` on, at most
    /// `max_packets` packets ([`PeerConnection::resend_since`]); returns how many were queued.
    pub async fn resend_since(&self, id: TransceiverId, timestamp: u32, max_packets: usize) -> usize {
        self.ask(|tx| Command::ResendSince(id, timestamp, max_packets, tx)).await.unwrap_or(0)
    }

    /// Asks for a bandwidth probe at `bitrate_bps` ([`PeerConnection::request_bandwidth_probe`]).
    pub fn request_bandwidth_probe(&self, bitrate_bps: u64) {
        let _ = self.commands.send(Command::RequestBandwidthProbe(bitrate_bps));
    }

    /// Forwards a received RTP packet on `id` with the sequence number and timestamp given
    /// ([`PeerConnection::write_rtp`]); what cannot be sent is dropped.
    pub fn write_rtp(&self, id: TransceiverId, codec: Codec, packet: Vec<u8>, seq: u16, timestamp: u32) {
        self.forward_rtp(id, 0, codec, Arc::new(packet), PayloadPatch::default(), seq, timestamp, None);
    }

    /// [`PeerHandle::write_rtp`] on simulcast layer `layer`, with the audio level the packet is
    /// to carry ([`PeerConnection::write_rtp_layer`]); what cannot be sent (a layer the peer
    /// did not accept) is dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn write_rtp_layer(
        &self,
        id: TransceiverId,
        layer: usize,
        codec: Codec,
        packet: Vec<u8>,
        seq: u16,
        timestamp: u32,
        audio_level: Option<AudioLevel>,
    ) {
        self.forward_rtp(
            id,
            layer,
            codec,
            Arc::new(packet),
            PayloadPatch::default(),
            seq,
            timestamp,
            audio_level,
        );
    }

    /// [`PeerHandle::write_rtp_layer`] of a packet shared with other connections (a
    /// forwarder's subscribers), with the bytes of its payload to change in this
    /// connection's copy ([`PeerConnection::write_rtp_layer`]). The packet is copied once, as
    /// it is written: a forwarder copying it for each subscriber spent an allocation and a
    /// copy per subscriber on it.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rtp(
        &self,
        id: TransceiverId,
        layer: usize,
        codec: Codec,
        packet: Arc<Vec<u8>>,
        patch: PayloadPatch,
        seq: u16,
        timestamp: u32,
        audio_level: Option<AudioLevel>,
    ) {
        let _ = self.commands.send(Command::WriteRtp(
            id,
            layer,
            codec,
            packet,
            patch,
            seq,
            timestamp,
            audio_level,
        ));
    }

    /// Stops a transceiver for good; the next negotiation rejects its section.
    pub async fn stop_transceiver(&self, id: TransceiverId) -> Result<(), RtcError> {
        self.ask(|tx| Command::StopTransceiver(id, tx)).await?
    }

    /// Asks the sender of what `id` receives for a key frame (rate limited).
    pub fn request_keyframe(&self, id: TransceiverId) {
        let _ = self.commands.send(Command::RequestKeyframe(id));
    }

    /// The estimate of the rate the path to the peer carries, bit/s
    /// ([`PeerConnection::bandwidth_estimate`]).
    pub async fn bandwidth_estimate(&self) -> Option<u64> {
        self.ask(Command::BandwidthEstimate).await.ok().flatten()
    }

    /// The bandwidth estimate as of the connection task's last turn, read without waiting
    /// for the task: an SFU reading its hundred connections' estimates ten times a second
    /// waited for each task's turn in a busy runtime, and forwarded nothing meanwhile.
    pub fn latest_bandwidth_estimate(&self) -> Option<u64> {
        Some(self.estimate.load(Ordering::Relaxed)).filter(|&e| e != NO_ESTIMATE)
    }

    /// The transport's counters (zero once the connection is gone).
    pub async fn transport_stats(&self) -> TransportStats {
        self.ask(Command::TransportStats).await.unwrap_or_default()
    }

    pub async fn media_stats(&self, id: TransceiverId) -> Option<MediaStats> {
        self.ask(|tx| Command::MediaStats(id, tx)).await.ok().flatten()
    }

    /// Creates an offer and applies it locally.
    pub async fn create_offer(&self) -> Result<Description, RtcError> {
        self.ask(Command::Offer).await?
    }

    /// Applies the peer's description; an offer is answered (the answer is returned, already
    /// applied locally).
    pub async fn set_remote_description(&self, d: Description) -> Result<Option<Description>, RtcError> {
        self.ask(|tx| Command::Remote(d, tx)).await?
    }

    /// Rolls back our pending offer (perfect negotiation's polite side).
    pub async fn rollback(&self) -> Result<(), RtcError> {
        self.ask(Command::Rollback).await?
    }

    /// A trickled candidate line, or "" for the end of candidates.
    pub fn add_ice_candidate(&self, candidate: &str) {
        let _ = self.commands.send(Command::Candidate(candidate.to_owned()));
    }

    pub async fn send(&self, channel: u16, data: Vec<u8>, binary: bool) -> Result<(), RtcError> {
        self.ask(|tx| Command::Send(channel, data, binary, tx)).await?
    }

    pub async fn buffered_amount(&self, channel: u16) -> usize {
        self.ask(|tx| Command::Buffered(channel, tx)).await.unwrap_or(0)
    }

    /// Bytes of `channel` the peer has not acknowledged yet (queued or in flight): what was
    /// sent minus this is what it has.
    pub async fn unacknowledged(&self, channel: u16) -> usize {
        self.ask(|tx| Command::Unacknowledged(channel, tx)).await.unwrap_or(0)
    }

    pub fn set_buffered_amount_low_threshold(&self, channel: u16, bytes: usize) {
        let _ = self.commands.send(Command::LowWater(channel, bytes));
    }

    /// The application consumed `bytes` of `channel`'s messages (see
    /// `RtcConfig::channel_receive_credit`).
    pub fn add_receive_credit(&self, channel: u16, bytes: usize) {
        let _ = self.commands.send(Command::Credit(channel, bytes));
    }

    pub fn close_channel(&self, channel: u16) {
        let _ = self.commands.send(Command::CloseChannel(channel));
    }

    /// Closes the connection gracefully and waits until it is closed: what was sent on the
    /// data channels is delivered and SCTP shut down (at most `peerlink_rtc::CLOSE_DEADLINE`,
    /// then it aborts), and the last packets are out.
    pub async fn close(&self) {
        let _ = self.ask(Command::Close).await;
    }
}

async fn drive(
    mut pc: PeerConnection,
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    command_tx: mpsc::WeakUnboundedSender<Command>,
    events: mpsc::UnboundedSender<RtcEvent>,
    estimate: Arc<AtomicU64>,
) {
    // The sockets are read here, in the connection's own turns: a reader task per socket
    // handing copies over a channel cost a copy, an allocation and a task wake-up for every
    // datagram (the receive side of a room's load generator, 50,000 packets a second). A
    // socket whose receive fails for good is left; the task ends when none is left.
    let mut receive = RecvBatch::new(RECEIVE_SLOTS, GRO_SLOT);
    let mut readable: Vec<bool> = vec![true; sockets.len()];
    let mut next_socket = 0;
    // Close commands waiting for the close to finish (SCTP's shutdown, then DTLS's
    // close_notify; bounded by the connection's own deadline).
    let mut closing: Vec<oneshot::Sender<()>> = Vec::new();
    let mut batch = Batch::default();
    // Every handle was dropped: the connection closes (gracefully, within its deadline)
    // and the task ends, rather than running on with nobody to stop it.
    let mut abandoned = false;
    loop {
        // (Before the flush, which may wait for the socket: what was just handled may have
        // moved it.)
        estimate.store(pc.bandwidth_estimate().unwrap_or(NO_ESTIMATE), Ordering::Relaxed);
        batch.flush(&mut pc, &sockets).await;
        while let Some(e) = pc.poll_event() {
            if let RtcEvent::ResolveMdns { name, candidate } = &e {
                let (name, candidate, tx) = (name.clone(), candidate.clone(), command_tx.clone());
                tokio::spawn(async move {
                    match mdns::resolve(&name, Duration::from_secs(3)).await {
                        Some(ip) => {
                            if let Some(tx) = tx.upgrade() {
                                let _ = tx.send(Command::Resolved(candidate, ip));
                            }
                        }
                        None => tracing::debug!(%name, "mDNS name not resolved; candidate dropped"),
                    }
                });
                continue;
            }
            let _ = events.send(e);
        }
        if (abandoned || !closing.is_empty())
            && matches!(pc.connection_state(), ConnectionState::Closed | ConnectionState::Failed)
        {
            for done in closing.drain(..) {
                let _ = done.send(());
            }
            break;
        }
        let wake = pc.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv(), if !abandoned => {
                let Some(command) = command else {
                    tracing::debug!("every handle of the connection dropped; closing it");
                    abandoned = true;
                    pc.close(Instant::now());
                    continue;
                };
                let mut more = command.batches();
                handle_command(&mut pc, command, &mut closing);
                // Commands come in bursts (a forwarder writes to many connections at once):
                // take what else waits, so that it leaves in one batch, but not without end,
                // and nothing after a command that is not a plain write.
                for _ in 0..COMMANDS_PER_TURN {
                    if !more {
                        break;
                    }
                    let Ok(command) = commands.try_recv() else { break };
                    more = command.batches();
                    handle_command(&mut pc, command, &mut closing);
                }
            }
            (i, usable) = ready_socket(&sockets, &readable, next_socket) => {
                // The next turn looks at the others first.
                next_socket = (i + 1) % sockets.len();
                if !usable {
                    tracing::debug!(local = %sockets[i].0, "udp socket no longer usable");
                    readable[i] = false;
                }
                // Take a little of what is waiting before sending anything, but not all of
                // it: acknowledgements must keep flowing while a large window arrives.
                let (local, socket) = (sockets[i].0, &sockets[i].1);
                for _ in 0..RECEIVES_PER_TURN.div_ceil(RECEIVE_SLOTS) * usize::from(usable) {
                    match socket.get_ref().try_io(Interest::READABLE, || socket.recv(&mut receive)) {
                        Ok(_) => {
                            let now = Instant::now();
                            for d in receive.iter().filter(|d| !d.truncated) {
                                for datagram in d.data.chunks(d.segment.max(1)) {
                                    pc.handle_receive(now, d.source, local, datagram);
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // ICMP errors (port unreachable) surface here on Linux: keep reading.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(e) => {
                            tracing::debug!(%local, error = %e, "udp receive failed");
                            readable[i] = false;
                            break;
                        }
                    }
                }
                if !readable.contains(&true) {
                    break;
                }
            }
            _ = sleep_until(wake) => pc.handle_timeout(Instant::now()),
        }
    }
    // The connection is gone: no estimate to read.
    estimate.store(NO_ESTIMATE, Ordering::Relaxed);
}

impl Command {
    /// Whether the commands waiting behind this one may be handled before what it queued is
    /// sent: writes of media and data, which come in bursts. Anything else (set-up, closing,
    /// questions) goes out at once.
    fn batches(&self) -> bool {
        matches!(self, Command::WriteRtp(..) | Command::Send(..) | Command::Credit(..))
    }
}

/// Applies one command of the application to the connection.
fn handle_command(pc: &mut PeerConnection, command: Command, closing: &mut Vec<oneshot::Sender<()>>) {
    let now = Instant::now();
    match command {
        Command::CreateChannel(config, reply) => {
            let _ = reply.send(pc.create_data_channel(now, config));
        }
        Command::Offer(reply) => {
            let result = pc
                .create_offer()
                .and_then(|offer| pc.set_local_description(now, Some(offer.clone())).map(|()| offer));
            let _ = reply.send(result);
        }
        Command::Remote(d, reply) => {
            let offer = d.kind == SdpType::Offer;
            let result = pc.set_remote_description(now, d).and_then(|()| {
                if !offer {
                    return Ok(None);
                }
                let answer = pc.create_answer()?;
                pc.set_local_description(now, Some(answer.clone()))?;
                Ok(Some(answer))
            });
            let _ = reply.send(result);
        }
        Command::Rollback(reply) => {
            let _ = reply.send(pc.set_local_description(now, None));
        }
        Command::Candidate(c) => {
            if let Err(e) = pc.add_ice_candidate(now, &c) {
                tracing::debug!(error = %e, "remote candidate ignored");
            }
        }
        Command::Resolved(c, ip) => pc.add_resolved_candidate(now, &c, ip),
        Command::Send(id, data, binary, reply) => {
            let _ = reply.send(pc.send(now, id, &data, binary));
        }
        Command::Buffered(id, reply) => {
            let _ = reply.send(pc.buffered_amount(id));
        }
        Command::Unacknowledged(id, reply) => {
            let _ = reply.send(pc.unacknowledged(id));
        }
        Command::LowWater(id, bytes) => pc.set_buffered_amount_low_threshold(id, bytes),
        Command::Credit(id, bytes) => pc.add_receive_credit(now, id, bytes),
        Command::CloseChannel(id) => pc.close_channel(id),
        Command::AddTransceiver(kind, direction, config, reply) => {
            let _ = reply.send(pc.add_transceiver(kind, direction, config));
        }
        Command::SetDirection(id, direction, reply) => {
            let _ = reply.send(pc.set_direction(id, direction));
        }
        Command::Transceivers(reply) => {
            let _ = reply.send(pc.transceivers());
        }
        Command::WriteFrame(id, codec, ts, frame, reply) => {
            let _ = reply.send(pc.write_frame_as(now, id, codec, ts, &frame));
        }
        Command::WriteFrameLayer(id, layer, ts, frame, reply) => {
            let _ = reply.send(pc.write_frame_layer(now, id, layer, ts, &frame));
        }
        Command::RequestKeyframe(id) => pc.request_keyframe(now, id),
        Command::RequestKeyframeLayer(id, layer) => pc.request_keyframe_layer(now, id, layer),
        Command::RequestBandwidthProbe(bps) => pc.request_bandwidth_probe(bps),
        Command::ForgetSent(id) => pc.forget_sent(id),
        Command::ResendSince(id, ts, max, reply) => {
            let _ = reply.send(pc.resend_since(now, id, ts, max));
        }
        Command::WriteRtp(id, layer, codec, packet, patch, seq, ts, level) => {
            let _ = pc.write_rtp_layer(now, id, layer, codec, &packet, patch, seq, ts, level);
        }
        Command::StopTransceiver(id, reply) => {
            let _ = reply.send(pc.stop_transceiver(id));
        }
        Command::MediaStats(id, reply) => {
            let _ = reply.send(pc.media_stats(id));
        }
        Command::BandwidthEstimate(reply) => {
            let _ = reply.send(pc.bandwidth_estimate());
        }
        Command::TransportStats(reply) => {
            let (_, sctp) = pc.sctp_stats();
            let _ = reply.send(TransportStats {
                rtt: pc.sctp_rtt(),
                packets_sent: sctp.packets_sent,
                packets_received: sctp.packets_received,
                retransmitted_chunks: sctp.retransmitted_chunks,
            });
        }
        Command::Close(reply) => {
            pc.close(now);
            closing.push(reply);
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The index of a socket with datagrams waiting (of those still `readable`), looking from
/// `from` on so that a busy socket does not starve the others.
/// `false` with a socket that will never be readable.
async fn ready_socket(
    sockets: &[(SocketAddr, Arc<UdpSocket>)],
    readable: &[bool],
    from: usize,
) -> (usize, bool) {
    std::future::poll_fn(|cx| {
        for k in 0..sockets.len() {
            let i = (from + k) % sockets.len();
            if !readable[i] {
                continue;
            }
            match sockets[i].1.get_ref().poll_recv_ready(cx) {
                std::task::Poll::Ready(Ok(())) => return std::task::Poll::Ready((i, true)),
                // The runtime's IO driver is gone: the socket will never be readable.
                std::task::Poll::Ready(Err(_)) => return std::task::Poll::Ready((i, false)),
                std::task::Poll::Pending => {}
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Datagrams on their way out, sent in batches, runs of them in one message each (UDP
/// segmentation offload) where the kernel allows.
#[derive(Debug, Default)]
struct Batch {
    queue: SendBatch,
    /// The local address the queue leaves from.
    from: Option<SocketAddr>,
}

impl Batch {
    /// The connection writes each datagram straight into the send queue (DTLS seals SCTP
    /// packets there); it is copied only when it leaves from another socket than the ones
    /// queued before it.
    async fn flush(&mut self, pc: &mut PeerConnection, sockets: &[(SocketAddr, Arc<UdpSocket>)]) {
        let now = Instant::now();
        loop {
            if self.queue.len() >= SEND_QUEUE {
                self.send(sockets).await;
            }
            let Some(t) = pc.poll_transmit(now, self.queue.buffer()) else { break };
            let (from, to) = (t.route.local, t.route.remote);
            if self.from != Some(from) && !self.queue.is_empty() {
                let buffer = self.queue.buffer();
                let datagram = buffer.split_off(buffer.len() - t.len);
                self.send(sockets).await;
                self.queue.push(to, &datagram);
            } else {
                self.queue.commit(to, t.len);
            }
            self.from = Some(from);
        }
        self.send(sockets).await;
    }

    async fn send(&mut self, sockets: &[(SocketAddr, Arc<UdpSocket>)]) {
        if self.queue.is_empty() {
            return;
        }
        let Some((_, socket)) = sockets.iter().find(|(local, _)| Some(*local) == self.from) else {
            self.queue.discard();
            return;
        };
        let queue = &mut self.queue;
        if let Err(e) = socket.get_ref().async_io(Interest::WRITABLE, || socket.send(queue)).await {
            tracing::debug!(to = ?queue.destination(), error = %e, "udp send failed");
            queue.discard();
        }
        // Refused datagrams were logged where they were dropped.
        queue.take_dropped();
    }
}

/// A non-blocking socket for tokio, with room for bursts.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = peerlink_udp::bind(addr)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}
