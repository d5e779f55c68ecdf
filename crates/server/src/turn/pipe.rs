//! RFC 6062 sockets: TCP relays (listening on the relayed address), peer data connections
//! (accepted there, or connected from there), and the byte pipes between a peer data
//! connection and its client data connection. The core decides which connections exist;
//! this file moves bytes, with back-pressure: a side is read only while the other side's
//! output has room, so neither direction buffers more than [`PIPE_BUFFER`].

use super::{Entry, EventLoop, Io, FIRST_ENTRY, MAX_TCP_BACKLOG, READ_CHUNK};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};
use peerlink_turn::{ConnectionId, Relay, RelayId, TcpOutput};
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes waiting to be written to one side of a pipe before the other side is not read.
pub(super) const PIPE_BUFFER: usize = 128 * 1024;
/// How long a side whose partner closed may take to write what it still holds.
const LINGER: Duration = Duration::from_secs(10);
/// Rounds of read-then-write on one side per turn of the loop before others get a go.
const ROUNDS_PER_TURN: usize = 4;
/// Peer connections accepted from one TCP relay per turn of the loop.
const ACCEPTS_PER_TURN: usize = 64;

/// The pipe of a client data connection.
pub(super) struct Pipe {
    pub(super) peer: Token,
    pub(super) id: ConnectionId,
    /// Not read because the peer's output is full.
    paused: bool,
}

/// A peer data connection.
pub(super) struct PeerConn {
    stream: TcpStream,
    id: ConnectionId,
    /// A Connect in progress.
    connecting: bool,
    /// The bound client data connection.
    client: Option<Token>,
    /// Bytes for the peer.
    output: Vec<u8>,
    /// Bytes from the peer before the ConnectionBind (RFC 6062 §5.2, §5.3: kept for the client).
    held: Vec<u8>,
    /// Not read because the client's output (or `held`) is full.
    paused: bool,
    /// The client side ended: close once `output` is written.
    closing: bool,
    writable_interest: bool,
    /// Set while closing.
    pub(super) deadline: Option<Instant>,
}

/// What one pipe read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PipeRead {
    /// The socket has nothing more for now.
    Drained,
    /// The destination is full; the socket may hold more.
    Full,
    /// The stream ended or failed.
    Closed,
}

/// A TCP socket on a relay address: `SO_REUSEPORT` lets the listener and the connections to
/// peers share the relayed transport address (RFC 6062 §5.2).
fn relay_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Io {
    /// Opens a TCP relay listening on `addr`; `None` when the address is taken.
    pub(super) fn open_tcp_port(&mut self, addr: SocketAddr) -> Option<Relay> {
        if !self.ledger.claim_tcp_relay(addr) {
            return None;
        }
        let listening = relay_socket(addr).and_then(|socket| {
            socket.listen(128)?;
            let mut listener = TcpListener::from_std(socket.into());
            let token = Token(self.free.last().copied().unwrap_or(self.entries.len()) + FIRST_ENTRY);
            self.poll.registry().register(&mut listener, token, Interest::READABLE)?;
            Ok((listener, token))
        });
        let Ok((listener, token)) = listening else {
            self.ledger.release_tcp_relay(addr);
            return None;
        };
        let id = RelayId(token.0 as u32);
        let inserted = self.insert(Entry::TcpRelay { listener, id, addr });
        debug_assert_eq!(inserted, token);
        Some(Relay { id, addr: self.advertised(addr) })
    }

    /// Registers a peer data connection under a new token.
    fn insert_peer(&mut self, mut stream: TcpStream, id: ConnectionId, connecting: bool) -> Option<Token> {
        let vacant = self.free.last().copied().unwrap_or(self.entries.len());
        let token = Token(vacant + FIRST_ENTRY);
        let interest = if connecting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        self.poll.registry().register(&mut stream, token, interest).ok()?;
        let peer = PeerConn {
            stream,
            id,
            connecting,
            client: None,
            output: Vec::new(),
            held: Vec::new(),
            paused: false,
            closing: false,
            writable_interest: connecting,
            deadline: None,
        };
        let inserted = self.insert(Entry::Peer(peer));
        debug_assert_eq!(inserted, token);
        self.peers.insert(id, token);
        Some(token)
    }

    /// The output buffer of a pipe side.
    fn output_of(&mut self, token: Token) -> Option<&mut Vec<u8>> {
        match self.entry(token)? {
            Entry::Conn(conn) => Some(&mut conn.output),
            Entry::Peer(peer) => Some(&mut peer.output),
            _ => None,
        }
    }

    fn set_paused(&mut self, token: Token, paused: bool) {
        match self.entry(token) {
            Some(Entry::Conn(conn)) => {
                if let Some(pipe) = conn.pipe.as_mut() {
                    pipe.paused = paused;
                }
            }
            Some(Entry::Peer(peer)) => peer.paused = paused,
            _ => {}
        }
    }
}

impl EventLoop {
    /// Work the core queued: Connect attempts, answers and indications for control
    /// connections, data connections to close.
    pub(super) fn drain_tcp_outputs(&mut self) {
        while let Some(output) = self.core.poll_tcp_output(&mut self.out) {
            match output {
                TcpOutput::ToClient(tuple) => {
                    let Some(&token) = self.io.tcp_by_client.get(&tuple) else { continue };
                    if let Some(Entry::Conn(conn)) = self.io.entry(token) {
                        if conn.pipe.is_none() && conn.output.len() + self.out.len() <= MAX_TCP_BACKLOG {
                            conn.output.extend_from_slice(&self.out);
                        }
                    }
                    self.flush(token);
                }
                TcpOutput::Connect { id, relay, peer } => self.connect_peer(id, relay, peer),
                TcpOutput::Close(id) => {
                    if let Some(&token) = self.io.peers.get(&id) {
                        self.close_peer(token, true);
                    }
                }
            }
        }
    }

    /// RFC 6062 §5.2: a non-blocking connection from the relayed address to the peer.
    fn connect_peer(&mut self, id: ConnectionId, relay: RelayId, peer: SocketAddr) {
        let local = match self.io.entry(Token(relay.0 as usize)) {
            Some(Entry::TcpRelay { addr, .. }) => *addr,
            _ => {
                self.core.handle_peer_connected(Instant::now(), id, false);
                return;
            }
        };
        let started = relay_socket(local).and_then(|socket| match socket.connect(&peer.into()) {
            Ok(()) => Ok(socket),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => Ok(socket),
            Err(e) => Err(e),
        });
        let token = match started {
            Ok(socket) => self.io.insert_peer(TcpStream::from_std(socket.into()), id, true),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection to peer failed");
                None
            }
        };
        if token.is_none() {
            self.core.handle_peer_connected(Instant::now(), id, false);
        }
    }

    /// A connecting peer socket became writable or failed.
    pub(super) fn connect_finished(&mut self, token: Token) {
        let Some(Entry::Peer(peer)) = self.io.entry(token) else { return };
        if !peer.connecting {
            return;
        }
        let connected = match peer.stream.take_error() {
            Ok(None) => match peer.stream.peer_addr() {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(_) => false,
            },
            Ok(Some(_)) | Err(_) => false,
        };
        peer.connecting = false;
        let id = peer.id;
        if self.core.handle_peer_connected(Instant::now(), id, connected) {
            self.flush_peer(token);
        } else {
            self.drop_peer(token);
        }
    }

    /// RFC 6062 §5.3: peers connecting to a TCP relay.
    pub(super) fn accept_peers(&mut self, token: Token) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(Entry::TcpRelay { listener, id, .. }) = self.io.entry(token) else { return };
            let relay = *id;
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "tcp relay accept failed");
                    return;
                }
            };
            // Refused connections are closed by dropping them.
            let Some(id) = self.core.handle_peer_accept(Instant::now(), relay, peer) else { continue };
            let _ = stream.set_nodelay(true);
            if self.io.insert_peer(stream, id, false).is_none() {
                self.core.handle_data_closed(id);
            }
        }
        self.pending.push(token);
    }

    /// RFC 6062 §5.4: the client connection `token` was bound to data connection `id`;
    /// `status` is how its last read ended.
    pub(super) fn bind(&mut self, token: Token, id: ConnectionId, status: super::stream::ReadStatus) {
        let Some(&peer) = self.io.peers.get(&id) else {
            self.core.handle_data_closed(id);
            self.close_conn(token);
            return;
        };
        let leftover = match self.io.entry(token) {
            Some(Entry::Conn(conn)) => {
                conn.pipe = Some(Pipe { peer, id, paused: false });
                std::mem::take(&mut conn.input)
            }
            _ => return,
        };
        let held = match self.io.entry(peer) {
            Some(Entry::Peer(p)) => {
                p.client = Some(token);
                p.paused = false;
                p.output.extend_from_slice(&leftover);
                std::mem::take(&mut p.held)
            }
            _ => Vec::new(),
        };
        self.core.count_tcp_relayed(leftover.len() as u64, 0);
        if let Some(Entry::Conn(conn)) = self.io.entry(token) {
            conn.output.extend_from_slice(&held);
        }
        self.flush(token);
        self.flush_peer(peer);
        if status == super::stream::ReadStatus::Closed {
            self.close_conn(token);
            return;
        }
        // Both sides may hold unread bytes (the peer was paused, the client kept sending).
        self.pipe_read(peer);
        self.pipe_read(token);
    }

    /// Moves bytes from pipe side `token` into its partner's output (or, for a peer not
    /// yet bound, into `held`) while there is room.
    pub(super) fn pipe_read(&mut self, token: Token) {
        // A side waiting for the bandwidth budget reads only in its turn among the waiting
        // sides (the THROTTLE_RETRY round), not when new bytes happen to wake it: otherwise
        // the side whose sender is fastest to refill its socket takes every refill.
        if self.throttled.contains(&token) {
            return;
        }
        // While the partner waits for the budget, this side takes at most half of it, so
        // that a side read on every wake-up cannot take each refill before the partner's
        // turn comes (the budget is the allocation's, for both directions).
        let mut share: Option<usize> = None;
        for round in 0..ROUNDS_PER_TURN {
            let (partner, from_client, id) = match self.io.entry(token) {
                Some(Entry::Conn(conn)) => match &conn.pipe {
                    Some(pipe) if !conn.closing => (Some(pipe.peer), true, pipe.id),
                    _ => return,
                },
                Some(Entry::Peer(peer)) if !peer.connecting && !peer.closing => (peer.client, false, peer.id),
                _ => return,
            };
            // The allocation's bandwidth limit: read no more than it allows now; with
            // nothing left, try again shortly (the kernel's buffers then push back on the
            // sender, as TCP should).
            let now = Instant::now();
            let mut allowance = self.core.tcp_allowance(now, id).unwrap_or(usize::MAX);
            if round == 0 && allowance != usize::MAX {
                let partner_waiting =
                    partner.is_some_and(|p| self.throttled.contains(&p) && !self.throttle_round.contains(&p));
                if partner_waiting {
                    share = Some(allowance.div_ceil(2));
                }
            }
            if let Some(share) = share {
                allowance = allowance.min(share);
            }
            if allowance == 0 {
                self.io.set_paused(token, true);
                if !self.throttled.contains(&token) {
                    self.throttled.push(token);
                }
                return;
            }
            let mut dest = match partner {
                Some(partner) => match self.io.output_of(partner) {
                    Some(output) => std::mem::take(output),
                    None => return,
                },
                None => match self.io.entry(token) {
                    Some(Entry::Peer(peer)) => std::mem::take(&mut peer.held),
                    _ => return,
                },
            };
            let before = dest.len();
            let cap = PIPE_BUFFER.min(before.saturating_add(allowance));
            let status = match self.io.entry(token) {
                Some(Entry::Conn(conn)) => match conn.tls.as_mut() {
                    Some(tls) => read_tls_into(&mut conn.stream, tls, &mut dest, cap),
                    None => read_plain_into(&mut conn.stream, &mut dest, cap),
                },
                Some(Entry::Peer(peer)) => read_plain_into(&mut peer.stream, &mut dest, cap),
                _ => PipeRead::Closed,
            };
            let moved = (dest.len() - before) as u64;
            self.core.spend_tcp(now, id, moved as usize);
            if let Some(share) = share.as_mut() {
                *share = share.saturating_sub(moved as usize);
            }
            let room = match partner {
                Some(partner) => {
                    if let Some(output) = self.io.output_of(partner) {
                        *output = dest;
                    }
                    self.flush(partner);
                    self.io.output_of(partner).is_some_and(|o| o.len() < PIPE_BUFFER)
                }
                None => {
                    let room = dest.len() < PIPE_BUFFER;
                    if let Some(Entry::Peer(peer)) = self.io.entry(token) {
                        peer.held = dest;
                    }
                    room
                }
            };
            if from_client {
                self.core.count_tcp_relayed(moved, 0);
            } else {
                self.core.count_tcp_relayed(0, moved);
            }
            match status {
                PipeRead::Drained => {
                    self.io.set_paused(token, false);
                    return;
                }
                PipeRead::Closed => {
                    match self.io.entry(token) {
                        Some(Entry::Conn(_)) => self.close_conn(token),
                        _ => self.close_peer(token, false),
                    }
                    return;
                }
                PipeRead::Full if !room => {
                    // Resumed when the partner's output drains (or, unbound, at the bind).
                    self.io.set_paused(token, true);
                    return;
                }
                PipeRead::Full => {}
            }
        }
        // More to read: continue on the next turn, after the others.
        self.pending.push(token);
    }

    /// Pipe side `token` has room in its output again: read its partner if it was paused.
    pub(super) fn resume_partner(&mut self, token: Token) {
        let partner = match self.io.entry(token) {
            Some(Entry::Conn(conn)) => conn.pipe.as_ref().map(|p| p.peer),
            Some(Entry::Peer(peer)) => peer.client,
            _ => None,
        };
        let Some(partner) = partner else { return };
        let paused = match self.io.entry(partner) {
            Some(Entry::Conn(conn)) => conn.pipe.as_ref().is_some_and(|p| p.paused),
            Some(Entry::Peer(peer)) => peer.paused,
            _ => false,
        };
        if paused {
            self.io.set_paused(partner, false);
            self.pipe_read(partner);
        }
    }

    pub(super) fn flush_peer(&mut self, token: Token) {
        let Io { poll, entries, .. } = &mut self.io;
        let Some(Some(Entry::Peer(peer))) = token.0.checked_sub(FIRST_ENTRY).and_then(|i| entries.get_mut(i))
        else {
            return;
        };
        if peer.connecting {
            return;
        }
        let failed = super::stream::write_plain(&mut peer.stream, &mut peer.output);
        let want_writable = !peer.output.is_empty();
        if want_writable != peer.writable_interest {
            let interest =
                if want_writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = poll.registry().reregister(&mut peer.stream, token, interest);
            peer.writable_interest = want_writable;
        }
        let done_closing = peer.closing && !want_writable;
        let room = peer.client.is_some() && peer.output.len() < PIPE_BUFFER;
        if failed {
            self.close_peer(token, false);
        } else if done_closing {
            self.close_peer(token, true);
        } else if room {
            self.resume_partner(token);
        }
    }

    /// Closes a peer data connection; its client data connection closes too, at once when
    /// `hard`, else once it has written what it holds (RFC 6062 §5.5).
    pub(super) fn close_peer(&mut self, token: Token, hard: bool) {
        let Some((id, client)) = self.drop_peer(token) else { return };
        if let Some(client) = client {
            self.partner_ended(client, hard);
        }
        self.core.handle_data_closed(id);
    }

    /// Removes a peer socket without telling the core.
    fn drop_peer(&mut self, token: Token) -> Option<(ConnectionId, Option<Token>)> {
        if !matches!(self.io.entry(token), Some(Entry::Peer(_))) {
            return None;
        }
        let Some(Entry::Peer(mut peer)) = self.io.remove(token) else { return None };
        let _ = self.io.poll.registry().deregister(&mut peer.stream);
        if self.io.peers.get(&peer.id) == Some(&token) {
            self.io.peers.remove(&peer.id);
        }
        Some((peer.id, peer.client))
    }

    /// The other side of pipe side `token` is gone.
    pub(super) fn partner_ended(&mut self, token: Token, hard: bool) {
        let now = Instant::now();
        match self.io.entry(token) {
            Some(Entry::Conn(conn)) => {
                conn.pipe = None;
                if hard {
                    self.close_conn(token);
                } else {
                    conn.closing = true;
                    conn.deadline = now + LINGER;
                    self.flush(token);
                }
            }
            Some(Entry::Peer(peer)) => {
                peer.client = None;
                if hard {
                    self.close_peer(token, true);
                } else {
                    peer.closing = true;
                    peer.deadline = Some(now + LINGER);
                    self.flush_peer(token);
                }
            }
            _ => {}
        }
    }
}

/// Reads from a plain stream into `dest` until it would block, ends, or `dest` is full.
fn read_plain_into(stream: &mut TcpStream, dest: &mut Vec<u8>, cap: usize) -> PipeRead {
    while dest.len() < cap {
        let start = dest.len();
        dest.resize(start + READ_CHUNK.min(cap - start), 0);
        let result = stream.read(&mut dest[start..]);
        dest.truncate(start + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => return PipeRead::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return PipeRead::Drained,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return PipeRead::Closed,
        }
    }
    PipeRead::Full
}

/// Like [`read_plain_into`] through TLS: plaintext rustls already holds first, then records
/// from the socket.
fn read_tls_into(
    stream: &mut TcpStream,
    tls: &mut rustls::ServerConnection,
    dest: &mut Vec<u8>,
    cap: usize,
) -> PipeRead {
    loop {
        while dest.len() < cap {
            let start = dest.len();
            dest.resize(start + READ_CHUNK.min(cap - start), 0);
            let result = tls.reader().read(&mut dest[start..]);
            dest.truncate(start + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => return PipeRead::Closed, // close_notify
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return PipeRead::Closed,
            }
        }
        if dest.len() >= cap {
            return PipeRead::Full;
        }
        match tls.read_tls(stream) {
            Ok(0) => return PipeRead::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return PipeRead::Drained,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return PipeRead::Closed,
        }
        if tls.process_new_packets().is_err() {
            let _ = tls.write_tls(stream);
            return PipeRead::Closed;
        }
    }
}
