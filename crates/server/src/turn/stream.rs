//! TURN over TCP and TLS (RFC 8656 §3.1; the control connections of RFC 6062): accepting
//! connections within the per-IP and total limits, reading their byte streams (through
//! rustls for TLS) and handing each whole STUN or ChannelData frame to the core, writing the
//! answers back, and closing connections that stall. A connection that becomes a data
//! connection (ConnectionBind) is handed to `pipe`.

use super::{
    pipe, Conn, Entry, EventLoop, Io, ALLOCATED_IDLE_TIMEOUT, DATAGRAM, FIRST_ENTRY, FIRST_MESSAGE_TIMEOUT,
    IDLE_TIMEOUT, MAX_TCP_BACKLOG, READ_CHUNK,
};
use mio::net::TcpStream;
use mio::{Interest, Token};
use peerlink_stun::framing::Frame;
use peerlink_turn::channel::next_stream_frame;
use peerlink_turn::{connection_bind_shard, ClientAction, ConnectionId, FiveTuple, Transport};
use std::io::{ErrorKind, Read, Write};
use std::time::Instant;

impl EventLoop {
    pub(super) fn accept(&mut self, tls: bool) {
        loop {
            let listener = if tls { self.io.tls.as_ref() } else { Some(&self.io.tcp) };
            let Some(listener) = listener else { return };
            let (mut stream, client) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    return;
                }
            };
            if !self.io.ledger.open_tcp(client.ip(), self.io.max_tcp_connections) {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let vacant = self.io.free.last().copied().unwrap_or(self.io.entries.len());
            let token = Token(vacant + FIRST_ENTRY);
            if self.io.poll.registry().register(&mut stream, token, Interest::READABLE).is_err() {
                self.io.ledger.close_tcp(client.ip());
                continue;
            }
            let (transport, server, session) = if tls {
                let session = self.io.tls_config.clone().and_then(|c| rustls::ServerConnection::new(c).ok());
                let Some(session) = session else {
                    let _ = self.io.poll.registry().deregister(&mut stream);
                    self.io.ledger.close_tcp(client.ip());
                    continue;
                };
                (Transport::Tls, self.io.tls_addr.unwrap_or(self.io.local_addr), Some(Box::new(session)))
            } else {
                (Transport::Tcp, self.io.local_addr, None)
            };
            let tuple = FiveTuple { transport, client, server };
            let conn = Conn {
                stream,
                tls: session,
                tuple,
                input: Vec::with_capacity(4096),
                output: Vec::new(),
                writable_interest: false,
                deadline: Instant::now() + FIRST_MESSAGE_TIMEOUT,
                pipe: None,
                closing: false,
            };
            let inserted = self.io.insert(Entry::Conn(conn));
            debug_assert_eq!(inserted, token);
            self.io.tcp_by_client.insert(tuple, token);
        }
    }

    /// RFC 6062 §5.4: a ConnectionBind arrived on connection `token` for a CONNECTION-ID of
    /// shard `owner`'s allocation: the connection, with what it has read and not handled,
    /// goes to that shard, which handles the bind as if it had accepted the connection.
    fn hand_off(&mut self, token: Token, owner: usize) {
        let Some(Entry::Conn(mut conn)) = self.io.remove(token) else { return };
        let _ = self.io.poll.registry().deregister(&mut conn.stream);
        self.io.tcp_by_client.remove(&conn.tuple);
        // Registered afresh there, readable only until it has output.
        conn.writable_interest = false;
        let tuple = conn.tuple;
        let Some(mailbox) = self.io.mailboxes.get(owner) else {
            self.io.ledger.close_tcp(tuple.client.ip());
            return;
        };
        match mailbox.tx.send(conn) {
            Ok(()) => {
                self.io.ledger.handoffs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = mailbox.waker.wake();
                tracing::trace!(client = %tuple.client, from = self.io.index, to = owner, "data connection handed over");
            }
            // That shard has stopped (the server is shutting down): the connection closes.
            Err(_) => self.io.ledger.close_tcp(tuple.client.ip()),
        }
    }

    /// Takes the connections other shards handed this one.
    pub(super) fn adopt_conns(&mut self) {
        while let Ok(mut conn) = self.io.inbox.try_recv() {
            let token = Token(self.io.free.last().copied().unwrap_or(self.io.entries.len()) + FIRST_ENTRY);
            if self.io.poll.registry().register(&mut conn.stream, token, Interest::READABLE).is_err() {
                self.io.ledger.close_tcp(conn.tuple.client.ip());
                continue;
            }
            let tuple = conn.tuple;
            let inserted = self.io.insert(Entry::Conn(conn));
            debug_assert_eq!(inserted, token);
            self.io.tcp_by_client.insert(tuple, token);
            // Its unhandled input (the ConnectionBind) first, then whatever else arrived.
            self.conn_readable(token);
        }
    }

    pub(super) fn conn_readable(&mut self, token: Token) {
        // Read a chunk, handle its frames, repeat: a fast client never looks like junk.
        let closed = loop {
            let status = match self.io.entry(token) {
                Some(Entry::Conn(conn)) if conn.tls.is_some() => read_tls(conn),
                Some(Entry::Conn(conn)) => read_plain(conn),
                _ => return,
            };
            match self.process_frames(token) {
                Frames::Handled => {}
                Frames::Junk => break true,
                Frames::Elsewhere(owner) => {
                    self.hand_off(token, owner);
                    return;
                }
                Frames::Bound(id) => {
                    // RFC 6062 §5.4: from here on the connection is a pipe.
                    self.bind(token, id, status);
                    return;
                }
            }
            match status {
                ReadStatus::More => {}
                ReadStatus::Drained => break false,
                ReadStatus::Closed => break true,
            }
        };
        self.flush(token);
        if closed {
            self.close_conn(token);
        }
    }

    /// Closes TCP/TLS connections that stalled (no handshake, no message, long silence) and
    /// data connections that did not finish closing. A bound pipe lives as long as its
    /// allocation (the core closes it).
    pub(super) fn expire_connections(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .io
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| match entry {
                Some(Entry::Conn(conn)) if conn.pipe.is_none() && conn.deadline <= now => {
                    Some(Token(i + FIRST_ENTRY))
                }
                Some(Entry::Peer(peer)) if peer.deadline.is_some_and(|d| d <= now) => {
                    Some(Token(i + FIRST_ENTRY))
                }
                _ => None,
            })
            .collect();
        for token in expired {
            tracing::debug!(?token, "tcp connection timed out");
            match self.io.entry(token) {
                Some(Entry::Peer(_)) => self.close_peer(token, true),
                _ => self.close_conn(token),
            }
        }
    }

    /// Handles every whole frame in the connection's input, up to a ConnectionBind.
    fn process_frames(&mut self, token: Token) -> Frames {
        let Some(Entry::Conn(conn)) = self.io.entry(token) else { return Frames::Junk };
        let mut input = std::mem::take(&mut conn.input);
        let tuple = conn.tuple;
        let mut consumed = 0;
        let mut ok = true;
        let mut bound = None;
        let mut elsewhere = None;
        let shards = self.io.mailboxes.len();
        loop {
            match next_stream_frame(&input[consumed..]) {
                Frame::Complete(len) => {
                    let frame = &input[consumed..consumed + len];
                    let allocated = self.core.has_allocation(&tuple);
                    if shards > 1 && !allocated {
                        let owner = connection_bind_shard(frame, shards as u32).map(|s| s as usize);
                        if owner.is_some_and(|owner| owner != self.io.index) {
                            elsewhere = owner;
                            break;
                        }
                    }
                    let idle = if allocated { ALLOCATED_IDLE_TIMEOUT } else { IDLE_TIMEOUT };
                    if let Some(Entry::Conn(conn)) = self.io.entry(token) {
                        conn.deadline = Instant::now() + idle;
                    }
                    let action =
                        self.core.handle_client(Instant::now(), tuple, frame, &mut self.out, &mut self.io);
                    match action {
                        ClientAction::Nothing => {}
                        ClientAction::Reply => {
                            if let Some(Entry::Conn(conn)) = self.io.entry(token) {
                                // A client that sends requests but never reads the answers.
                                if conn.output.len() > MAX_TCP_BACKLOG {
                                    ok = false;
                                    break;
                                }
                                conn.output.extend_from_slice(&self.out);
                            }
                            if let Some(id) = self.core.bound_connection(&tuple) {
                                consumed += len;
                                bound = Some(id);
                                break;
                            }
                        }
                        ClientAction::ToPeer { relay, peer, payload } => {
                            if let Some(socket) = self.io.relay_socket(relay) {
                                let _ = socket.send_to(&frame[payload], peer);
                            }
                        }
                    }
                    consumed += len;
                }
                Frame::Incomplete(_) => break,
                Frame::Invalid => {
                    ok = false;
                    break;
                }
            }
        }
        input.drain(..consumed);
        if let Some(Entry::Conn(conn)) = self.io.entry(token) {
            conn.input = input;
        }
        if let Some(owner) = elsewhere {
            return Frames::Elsewhere(owner);
        }
        match (bound, ok) {
            (Some(id), _) => Frames::Bound(id),
            (None, true) => Frames::Handled,
            (None, false) => Frames::Junk,
        }
    }

    pub(super) fn flush(&mut self, token: Token) {
        let Io { poll, entries, .. } = &mut self.io;
        let conn = match token.0.checked_sub(FIRST_ENTRY).and_then(|i| entries.get_mut(i)) {
            Some(Some(Entry::Conn(conn))) => conn,
            Some(Some(Entry::Peer(_))) => return self.flush_peer(token),
            _ => return,
        };
        let failed = match conn.tls.as_mut() {
            None => write_plain(&mut conn.stream, &mut conn.output),
            Some(tls) => write_tls(&mut conn.stream, tls, &mut conn.output),
        };
        let want_writable = !conn.output.is_empty() || conn.tls.as_ref().is_some_and(|t| t.wants_write());
        if want_writable != conn.writable_interest {
            let interest =
                if want_writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let _ = poll.registry().reregister(&mut conn.stream, token, interest);
            conn.writable_interest = want_writable;
        }
        let (done_closing, pipe_room) =
            (conn.closing && !want_writable, conn.pipe.is_some() && conn.output.len() < pipe::PIPE_BUFFER);
        if failed || done_closing {
            self.close_conn(token);
        } else if pipe_room {
            self.resume_partner(token);
        }
    }

    pub(super) fn close_conn(&mut self, token: Token) {
        if !matches!(self.io.entry(token), Some(Entry::Conn(_))) {
            return;
        }
        if let Some(Entry::Conn(mut conn)) = self.io.remove(token) {
            if let Some(pipe) = conn.pipe.take() {
                // RFC 6062 §5.5: the peer side goes too, once it has what it was sent.
                self.partner_ended(pipe.peer, false);
                self.core.handle_data_closed(pipe.id);
            }
            let _ = self.io.poll.registry().deregister(&mut conn.stream);
            self.io.tcp_by_client.remove(&conn.tuple);
            self.io.ledger.close_tcp(conn.tuple.client.ip());
            // RFC 8656 §3.1: a TCP allocation ends with its connection.
            self.core.handle_client_closed(&conn.tuple, &mut self.io);
        }
    }
}

/// What handling a connection's buffered frames did.
enum Frames {
    Handled,
    /// Not TURN, or a client that does not read its answers.
    Junk,
    /// A ConnectionBind succeeded; the rest of the input belongs to the peer.
    Bound(ConnectionId),
    /// A ConnectionBind for a connection of that shard's allocation (it and what follows
    /// are left in the input).
    Elsewhere(usize),
}

/// What one read from a stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadStatus {
    /// A full chunk was read; there may be more.
    More,
    /// The socket has nothing more for now.
    Drained,
    /// The stream ended, failed, or holds more than a frame's worth of unprocessed bytes.
    Closed,
}

/// Reads one chunk from the socket into the connection's input.
fn read_plain(conn: &mut Conn) -> ReadStatus {
    let start = conn.input.len();
    if start >= 2 * DATAGRAM {
        // Frames are handled after every chunk, so this much unprocessed input means the
        // peer announced a frame longer than any TURN frame can be.
        return ReadStatus::Closed;
    }
    conn.input.resize(start + READ_CHUNK, 0);
    let result = conn.stream.read(&mut conn.input[start..]);
    let n = *result.as_ref().unwrap_or(&0);
    conn.input.truncate(start + n);
    match result {
        Ok(0) => ReadStatus::Closed,
        // Edge-triggered readiness: keep reading until the socket says WouldBlock.
        Ok(_) => ReadStatus::More,
        Err(e) if e.kind() == ErrorKind::WouldBlock => ReadStatus::Drained,
        Err(_) => ReadStatus::Closed,
    }
}

/// Feeds one read of TLS records to rustls and moves the plaintext into the input.
fn read_tls(conn: &mut Conn) -> ReadStatus {
    let Some(tls) = conn.tls.as_mut() else { return ReadStatus::Closed };
    match tls.read_tls(&mut conn.stream) {
        Ok(0) => return ReadStatus::Closed,
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadStatus::Drained,
        Err(_) => return ReadStatus::Closed,
    }
    if let Err(e) = tls.process_new_packets() {
        tracing::debug!(client = %conn.tuple.client, error = %e, "tls failed");
        // Let rustls send its alert before the connection closes.
        let _ = tls.write_tls(&mut conn.stream);
        return ReadStatus::Closed;
    }
    loop {
        let start = conn.input.len();
        if start >= 2 * DATAGRAM {
            return ReadStatus::Closed;
        }
        conn.input.resize(start + READ_CHUNK, 0);
        let result = tls.reader().read(&mut conn.input[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        conn.input.truncate(start + n);
        match result {
            Ok(0) => return ReadStatus::Closed, // close_notify
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadStatus::More,
            Err(_) => return ReadStatus::Closed,
        }
    }
}

/// Writes as much output as the socket takes; true when the connection failed.
pub(super) fn write_plain(stream: &mut TcpStream, output: &mut Vec<u8>) -> bool {
    let mut written = 0;
    let mut failed = false;
    while written < output.len() {
        match stream.write(&output[written..]) {
            Ok(0) => {
                failed = true;
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    output.drain(..written);
    failed
}

/// Hands plaintext to rustls and writes TLS records until everything is out or the
/// socket is full (so an edge-triggered writable event is sure to follow).
fn write_tls(stream: &mut TcpStream, tls: &mut rustls::ServerConnection, output: &mut Vec<u8>) -> bool {
    loop {
        if !output.is_empty() && !tls.is_handshaking() {
            match tls.writer().write(output) {
                Ok(n) => {
                    output.drain(..n);
                }
                Err(_) => return true,
            }
        }
        if !tls.wants_write() {
            return false;
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
        if output.is_empty() || tls.is_handshaking() {
            return false;
        }
    }
}
