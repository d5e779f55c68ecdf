//! One DTLS 1.2 association over OpenSSL, sans-IO.
//!
//! OpenSSL reads and writes datagrams through an in-memory transport (`Wire`): every read
//! is one whole datagram and every write becomes one datagram to send. Retransmission is
//! ours (RFC 6347 §4.2.4): the datagrams of the last flight OpenSSL wrote are kept and sent
//! again on our timer (initial 500 ms, doubled, at most 8 s), so a handshake works under a
//! simulated clock; and when the peer repeats a flight we already answered, our last flight
//! goes out again.
//!
//! OpenSSL keeps a retransmission timer of its own on the wall clock. Left alone it fires
//! whenever a peer answers more than a second late, and then, within the one `do_handshake`
//! that reads the late answer, OpenSSL first resends its stale flight and then writes the
//! new one: a slow peer gets both, answers both, and may build two different next flights
//! (werift does, and the handshake deadlocks). So its timer is set through
//! `DTLS_set_timer_cb` to a duration that never runs out, with one exception: the client's
//! last flight, whose epoch-1 Finished only OpenSSL can send again with a fresh record
//! number (our copy is a replay to a peer that got the original, and an OpenSSL or
//! BoringSSL server repeats its lost last flight only for a Finished it can read). There
//! OpenSSL's timer runs just ahead of ours, and our timer lets it fire. Whatever OpenSSL
//! writes that repeats the flight we keep is not sent twice: only a new flight is kept.
//!
//! A copy sent again must not look like a replay: the peer's record layer drops a record
//! whose sequence number it has seen, even when it threw the record's content away (a
//! ChangeCipherSpec that came before the message it follows). So every epoch-0 record we
//! send (plaintext: its sequence number is covered by no MAC) is numbered from our own
//! counter, copies included. Epoch-1 records (the encrypted Finished) keep OpenSSL's
//! numbers; a peer buffers those until it can read them.

use crate::cert::{Certificate, Fingerprint};
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion};
use peerlink_proto::{Backoff, BackoffConfig, Transmit};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 6347 §4.2.4.1 suggests 1 s; WebRTC stacks start lower on a path ICE just measured.
const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Flights repeat on a doubling timer (RFC 6347 §4.2.4.1) until the handshake deadline.
const FLIGHT_BACKOFF: BackoffConfig = BackoffConfig {
    initial: INITIAL_RTO,
    max: Duration::from_secs(8),
    transmissions: None,
    last_wait_factor: None,
};
/// The handshake fails if not done by then.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Datagrams kept in either direction before input is dropped (a peer cannot make us
/// buffer without bound).
const MAX_QUEUED: usize = 256;
/// A repeated flight of the peer gets our last flight again at most this often.
const REPEAT_GAP: Duration = Duration::from_millis(100);
/// Cipher suites offered: AEAD first (RFC 8827 §6.5 requires ECDHE-ECDSA-AES128-GCM-SHA256);
/// the RSA ones let us be the client of a peer whose certificate is RSA.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
                       ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:\
                       ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:\
                       ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA";
/// SRTP protection profiles offered with use_srtp (RFC 5764, RFC 7714), preferred first.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";
const SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Which side of the handshake (SDP `a=setup`: active is the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Settings of one association.
#[derive(Debug, Clone)]
pub struct DtlsConfig {
    pub role: Role,
    pub certificate: Certificate,
    /// The peer's certificate must have this fingerprint (from its SDP).
    pub remote_fingerprint: Fingerprint,
    /// Offer or accept use_srtp, for media (RFC 5764).
    pub srtp: bool,
    /// Largest datagram OpenSSL writes (handshake messages are fragmented to fit).
    pub mtu: u32,
    /// For tests: OpenSSL's own wall-clock retransmission timer runs for this long on every
    /// flight, so a test under a virtual clock can have it run out before the peer answers
    /// (what a real slow peer does). `None`, the default: it never runs out, except on the
    /// client's last flight (see the module's documentation).
    #[doc(hidden)]
    pub openssl_timer: Option<Duration>,
    /// A server answers a ClientHello without a cookie with a HelloVerifyRequest
    /// (RFC 6347 §4.2.1), as werift does. Off by default: ICE has already checked the
    /// peer's address, which is what the cookie is for.
    pub cookie_exchange: bool,
}

impl DtlsConfig {
    pub fn new(role: Role, certificate: Certificate, remote_fingerprint: Fingerprint) -> DtlsConfig {
        DtlsConfig {
            role,
            certificate,
            remote_fingerprint,
            srtp: false,
            mtu: 1200,
            openssl_timer: None,
            cookie_exchange: false,
        }
    }
}

/// SRTP master keys and salts (RFC 5764 §4.2) for both directions.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// The protection profile the server chose, e.g. `SRTP_AEAD_AES_128_GCM`.
    pub profile: String,
    pub client_key: Vec<u8>,
    pub client_salt: Vec<u8>,
    pub server_key: Vec<u8>,
    pub server_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys").field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// Why an association ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    #[error("the peer's certificate does not match the fingerprint from its description")]
    FingerprintMismatch,
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("DTLS failure: {0}")]
    Ssl(String),
    #[error("OpenSSL setup failed: {0}")]
    Setup(String),
    #[error("not connected")]
    NotConnected,
    #[error("message of {0} bytes does not fit one record")]
    TooLarge(usize),
}

/// What the association reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEvent {
    /// Handshake done and the peer's fingerprint checked: application data may flow.
    Connected { srtp: Option<SrtpKeys> },
    /// The peer sent close_notify.
    Closed,
    /// The association failed; nothing more will happen.
    Failed(DtlsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Closed,
    Failed,
}

/// The in-memory transport OpenSSL reads from and writes to.
#[derive(Debug, Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
    /// While [`Dtls::seal`] runs: the caller's buffer, where the record goes directly.
    sink: Option<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(datagram) => {
                // One read is one datagram; a datagram larger than OpenSSL's buffer is cut,
                // as a UDP socket would.
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Some(sink) => sink.extend_from_slice(buf),
            None => self.outgoing.push_back(buf.to_vec()),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One DTLS association.
pub struct Dtls {
    stream: SslStream<Wire>,
    role: Role,
    state: State,
    fingerprint: Fingerprint,
    mismatch: Arc<AtomicBool>,
    started: Instant,
    heard: bool,
    /// The last flight we sent during the handshake (and, for the side that sends the last
    /// flight, after it), and when to send it again.
    flight: Vec<Vec<u8>>,
    retransmit: Backoff,
    /// Handshake datagrams of the peer already received (hash, and how many flights we had
    /// sent then), to spot its repeats of a flight we already answered.
    seen: VecDeque<(u64, u32)>,
    flights_sent: u32,
    /// The next sequence number of an epoch-0 record we send.
    epoch0_seq: u64,
    last_repeat: Option<Instant>,
    /// What OpenSSL's own timer is set to when a flight starts, in microseconds (read by
    /// the `DTLS_set_timer_cb` callback): [`openssl_timer::NEVER`] except for the client's
    /// last flight.
    openssl_timer: Arc<openssl_timer::Durations>,
    /// The test setting of [`DtlsConfig::openssl_timer`] is in force.
    openssl_timer_fixed: bool,
    /// The client has the server's ServerHelloDone: its next flight is its last.
    last_flight: bool,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    retransmissions: u64,
}

impl std::fmt::Debug for Dtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dtls").field("role", &self.role).field("state", &self.state).finish_non_exhaustive()
    }
}

fn setup<T>(r: Result<T, openssl::error::ErrorStack>) -> Result<T, DtlsError> {
    r.map_err(|e| DtlsError::Setup(e.to_string()))
}

/// Calls `f` on each whole DTLS record (13-byte header and body) of `datagram`.
fn for_each_record(datagram: &mut [u8], mut f: impl FnMut(&mut [u8])) {
    let mut at = 0;
    while datagram.len() >= at + 13 {
        let length = usize::from(u16::from_be_bytes([datagram[at + 11], datagram[at + 12]]));
        let end = (at + 13 + length).min(datagram.len());
        f(&mut datagram[at..end]);
        at = end;
    }
}

/// A hash of `datagram` with the sequence numbers of its epoch-0 records left out, so a
/// flight the peer sent again (renumbered, if it is one of us) hashes the same.
fn hash_ignoring_epoch0_numbers(datagram: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut copy = datagram.to_vec();
    for_each_record(&mut copy, |record| {
        if record[3..5] == [0, 0] {
            record[5..11].fill(0);
        }
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    copy.hash(&mut h);
    h.finish()
}

/// Handshake message types (RFC 6347 §4.3.2).
const HELLO_VERIFY_REQUEST: u8 = 3;
const SERVER_HELLO_DONE: u8 = 14;

/// Whether `datagram` has an epoch-0 handshake record whose message is of type `kind`.
fn carries_handshake(datagram: &[u8], kind: u8) -> bool {
    let mut at = 0;
    while let Some(header) = datagram.get(at..at + 13) {
        let length = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if header[0] == 22 && header[3..5] == [0, 0] && datagram.get(at + 13) == Some(&kind) {
            return true;
        }
        at += 13 + length;
    }
    false
}

/// Whether `datagram` has a record of an epoch past 0 (encrypted).
fn has_encrypted_record(datagram: &[u8]) -> bool {
    let mut found = false;
    for_each_record(&mut datagram.to_vec(), |record| found |= record[3..5] != [0, 0]);
    found
}

/// Whether `new`, written by OpenSSL, is its retransmission of `kept` (a datagram of the
/// flight we keep, renumbered): the same plaintext records whatever their numbers, or both
/// encrypted records of one kind and size (a fresh encryption of the same message).
fn same_datagram(kept: &[u8], new: &[u8]) -> bool {
    if kept.len() != new.len() {
        return false;
    }
    if has_encrypted_record(kept) {
        return kept.first() == new.first() && has_encrypted_record(new);
    }
    hash_ignoring_epoch0_numbers(kept) == hash_ignoring_epoch0_numbers(new)
}

/// What one `do_handshake` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Nothing,
    /// OpenSSL's own retransmission of the kept flight (fresh numbers), sent.
    Retransmitted,
    /// A new flight, kept and sent.
    Flight,
}

/// How far ahead of ours OpenSSL's timer runs on the client's last flight, so it has run
/// out when ours fires.
const OPENSSL_TIMER_LEAD: Duration = Duration::from_millis(100);

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)
}

/// OpenSSL's own DTLS retransmission timer, set through `DTLS_set_timer_cb` (which the
/// `openssl` crate does not wrap).
#[allow(unsafe_code)]
mod openssl_timer {
    use super::{setup, DtlsError};
    use foreign_types::{ForeignType, ForeignTypeRef};
    use openssl::ex_data::Index;
    use openssl::ssl::{Ssl, SslRef};
    use std::os::raw::c_uint;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, OnceLock};

    /// An hour: longer than any handshake may take (it fails after 30 s).
    pub const NEVER: u32 = 3_600_000_000;

    type TimerCallback = unsafe extern "C" fn(*mut openssl_sys::SSL, c_uint) -> c_uint;

    extern "C" {
        // OpenSSL 1.1.1 and later (ssl.h).
        fn DTLS_set_timer_cb(s: *mut openssl_sys::SSL, cb: Option<TimerCallback>);
    }

    /// The timer's durations in microseconds: when a flight starts it, and after it ran out.
    #[derive(Debug)]
    pub struct Durations {
        pub start: AtomicU32,
        pub again: AtomicU32,
    }

    static INDEX: OnceLock<Index<Ssl, Arc<Durations>>> = OnceLock::new();

    /// OpenSSL asks for the timer's duration when a flight starts it (`current` 0) and
    /// when it runs out (`current` the last duration).
    unsafe extern "C" fn duration(ssl: *mut openssl_sys::SSL, current: c_uint) -> c_uint {
        // SAFETY: OpenSSL calls this with the live SSL the callback was installed on, for
        // the length of the call; we only read its ex_data through a shared reference.
        let ssl = unsafe { SslRef::from_ptr(ssl) };
        let Some(set) = INDEX.get().and_then(|index| ssl.ex_data(*index)) else { return NEVER };
        if current == 0 {
            set.start.load(Ordering::Relaxed)
        } else {
            set.again.load(Ordering::Relaxed)
        }
    }

    pub fn install(ssl: &mut Ssl, set: Arc<Durations>) -> Result<(), DtlsError> {
        let index = match INDEX.get() {
            Some(index) => *index,
            None => {
                let fresh = setup(Ssl::new_ex_index())?;
                *INDEX.get_or_init(|| fresh)
            }
        };
        ssl.set_ex_data(index, set);
        // SAFETY: `ssl` is a valid SSL object for this call; the callback is a plain
        // function that stays valid for the life of the program.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(duration)) };
        Ok(())
    }
}

impl Dtls {
    /// A new association; a client's first flight (ClientHello) is ready at once.
    pub fn new(now: Instant, config: DtlsConfig) -> Result<Dtls, DtlsError> {
        let mut ctx = setup(SslContext::builder(SslMethod::dtls()))?;
        setup(ctx.set_min_proto_version(Some(SslVersion::DTLS1_2)))?;
        setup(ctx.set_max_proto_version(Some(SslVersion::DTLS1_2)))?;
        setup(ctx.set_cipher_list(CIPHERS))?;
        setup(ctx.set_groups_list("P-256:X25519:P-384"))?;
        setup(ctx.set_certificate(&config.certificate.x509))?;
        setup(ctx.set_private_key(&config.certificate.key))?;
        setup(ctx.check_private_key())?;
        ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::CIPHER_SERVER_PREFERENCE);
        if config.srtp {
            setup(ctx.set_tlsext_use_srtp(SRTP_PROFILES))?;
        }
        if config.cookie_exchange && config.role == Role::Server {
            let mut secret = [0u8; 16];
            setup(openssl::rand::rand_bytes(&mut secret))?;
            ctx.set_options(SslOptions::COOKIE_EXCHANGE);
            ctx.set_cookie_generate_cb(move |_, cookie| {
                cookie[..secret.len()].copy_from_slice(&secret);
                Ok(secret.len())
            });
            ctx.set_cookie_verify_cb(move |_, cookie| cookie == secret);
        }
        // Self-signed certificates: what counts is the fingerprint from the peer's
        // description, checked on the leaf (depth 0) during the handshake, so a mismatch
        // ends it with an alert before any application data.
        let mismatch = Arc::new(AtomicBool::new(false));
        let (expected, flag) = (config.remote_fingerprint.clone(), mismatch.clone());
        ctx.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |_, store| {
                if store.error_depth() != 0 {
                    return true;
                }
                let ok = store.current_cert().is_some_and(|cert| expected.matches(cert));
                if !ok {
                    flag.store(true, Ordering::Relaxed);
                }
                ok
            },
        );
        let ctx = ctx.build();
        let mut ssl = setup(Ssl::new(&ctx))?;
        setup(ssl.set_mtu(config.mtu))?;
        // The test setting runs out once per flight, as a peer answering between one and
        // two seconds late makes it.
        let openssl_timer = Arc::new(openssl_timer::Durations {
            start: AtomicU32::new(config.openssl_timer.map_or(openssl_timer::NEVER, micros)),
            again: AtomicU32::new(openssl_timer::NEVER),
        });
        openssl_timer::install(&mut ssl, openssl_timer.clone())?;
        match config.role {
            Role::Client => ssl.set_connect_state(),
            Role::Server => ssl.set_accept_state(),
        }
        let stream = setup(SslStream::new(ssl, Wire::default()))?;
        let mut dtls = Dtls {
            stream,
            role: config.role,
            state: State::Handshaking,
            fingerprint: config.remote_fingerprint,
            mismatch,
            started: now,
            heard: false,
            flight: Vec::new(),
            retransmit: Backoff::new(FLIGHT_BACKOFF),
            seen: VecDeque::new(),
            flights_sent: 0,
            epoch0_seq: 0,
            last_repeat: None,
            openssl_timer,
            openssl_timer_fixed: config.openssl_timer.is_some(),
            last_flight: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            retransmissions: 0,
        };
        if config.role == Role::Client {
            dtls.handshake(now);
        }
        Ok(dtls)
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Flights sent again by our timer or for a repeat of the peer's.
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions
    }

    /// A datagram from the peer (the caller has demultiplexed it as DTLS, RFC 7983: first
    /// byte 20-63). Application data it carries is read with [`Dtls::read`].
    pub fn handle_receive(&mut self, now: Instant, datagram: &[u8]) {
        if matches!(self.state, State::Closed | State::Failed) || datagram.is_empty() {
            return;
        }
        if self.stream.get_ref().incoming.len() >= MAX_QUEUED {
            return;
        }
        // A server's handshake deadline runs from the first datagram (it may be created
        // long before its client gets a path).
        if self.role == Role::Server && !self.heard && self.state == State::Handshaking {
            self.heard = true;
            self.started = now;
        }
        // Handshake and ChangeCipherSpec records: a byte-for-byte repeat of a datagram that
        // came before our last flight is the peer retransmitting the flight we answered, so
        // our answer was lost: send it again (OpenSSL drops the repeat as a replay). A
        // repeat of the peer's current, incomplete flight just fills gaps.
        if matches!(datagram[0], 20 | 22) {
            let h = hash_ignoring_epoch0_numbers(datagram);
            match self.seen.iter().find(|(seen, _)| *seen == h) {
                // A HelloVerifyRequest again answers a cookieless ClientHello the network
                // repeated or delayed: our ClientHello with the cookie is already out (and on
                // our timer), so sending it again would only give the server two to answer.
                Some(_) if carries_handshake(datagram, HELLO_VERIFY_REQUEST) => {}
                Some(&(_, flights)) if flights < self.flights_sent => self.repeat_flight(now),
                Some(_) => {}
                None => {
                    self.seen.push_back((h, self.flights_sent));
                    if self.seen.len() > 64 {
                        self.seen.pop_front();
                    }
                }
            }
        }
        if self.role == Role::Client
            && !self.last_flight
            && self.state == State::Handshaking
            && carries_handshake(datagram, SERVER_HELLO_DONE)
        {
            // Our answer to this is the last flight: OpenSSL's timer runs for it, just ahead
            // of ours (see the module's documentation).
            self.last_flight = true;
            self.set_openssl_timer(INITIAL_RTO);
        }
        self.stream.get_mut().incoming.push_back(datagram.to_vec());
        if self.state == State::Handshaking {
            self.handshake(now);
        }
    }

    /// The next application message that arrived (one record), into `buf`; `None` when
    /// there is none. A close or failure found on the way is reported as an event.
    pub fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.state != State::Connected {
            return None;
        }
        loop {
            match self.stream.ssl_read(buf) {
                Ok(n) => return Some(n),
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    self.collect_output();
                    return None;
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.state = State::Closed;
                    self.collect_output();
                    self.events.push_back(DtlsEvent::Closed);
                    return None;
                }
                Err(e) if e.code() == ErrorCode::SSL && e.ssl_error().is_none() => continue,
                Err(e) => {
                    self.fail(DtlsError::Ssl(e.to_string()));
                    return None;
                }
            }
        }
    }

    /// Seals `data` into one record; the datagram is then in [`Dtls::poll_transmit`].
    pub fn write(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        if self.state != State::Connected {
            return Err(DtlsError::NotConnected);
        }
        if data.len() > 16_384 {
            return Err(DtlsError::TooLarge(data.len()));
        }
        match self.stream.ssl_write(data) {
            Ok(_) => {
                // The record goes out whole however much is queued: dropping it here would
                // lose data the caller was told was sent. The caller bounds what it writes
                // between polls (SCTP's window does).
                let wire = self.stream.get_mut();
                self.transmits.extend(wire.outgoing.drain(..));
                Ok(())
            }
            Err(e) => {
                let error = DtlsError::Ssl(e.to_string());
                self.fail(error.clone());
                Err(error)
            }
        }
    }

    /// Seals `data` into one record appended to `buf` as a datagram of its own: OpenSSL
    /// writes it straight into the caller's buffer, with no queue in between (the data
    /// path; [`Dtls::write`] queues for [`Dtls::poll_transmit`] instead).
    pub fn seal(&mut self, data: &[u8], buf: &mut Vec<u8>) -> Result<Transmit<()>, DtlsError> {
        if self.state != State::Connected {
            return Err(DtlsError::NotConnected);
        }
        if data.len() > 16_384 {
            return Err(DtlsError::TooLarge(data.len()));
        }
        let start = buf.len();
        self.stream.get_mut().sink = Some(std::mem::take(buf));
        let result = self.stream.ssl_write(data);
        *buf = self.stream.get_mut().sink.take().unwrap_or_default();
        match result {
            Ok(_) => Ok(Transmit { route: (), len: buf.len() - start }),
            Err(e) => {
                buf.truncate(start);
                let error = DtlsError::Ssl(e.to_string());
                self.fail(error.clone());
                Err(error)
            }
        }
    }

    /// Sends close_notify and stops.
    pub fn close(&mut self) {
        if self.state == State::Connected {
            let _ = self.stream.shutdown();
            self.collect_output();
        }
        if !matches!(self.state, State::Failed) {
            self.state = State::Closed;
        }
        self.retransmit.reset();
    }

    /// Appends the next datagram for the peer to `buf`.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        let datagram = self.transmits.pop_front()?;
        buf.extend_from_slice(&datagram);
        Some(Transmit { route: (), len: datagram.len() })
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            // A server that has not heard from its client yet waits without a deadline.
            State::Handshaking if self.role == Role::Server && !self.heard => self.retransmit.deadline(),
            State::Handshaking => {
                let deadline = self.started + HANDSHAKE_TIMEOUT;
                Some(self.retransmit.deadline().map_or(deadline, |t| t.min(deadline)))
            }
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Handshaking {
            return;
        }
        let deadline_runs = self.role == Role::Client || self.heard;
        if deadline_runs && now >= self.started + HANDSHAKE_TIMEOUT {
            return self.fail(DtlsError::HandshakeTimeout(HANDSHAKE_TIMEOUT));
        }
        if self.retransmit.is_due(now) {
            self.retransmissions += 1;
            let wait = self.retransmit.on_transmit(now) - now;
            // On the client's last flight OpenSSL's own timer has run out by now: it resends
            // the flight with fresh record numbers. Otherwise our copy goes.
            if self.last_flight {
                self.set_openssl_timer(wait);
                if self.handshake(now) == Output::Retransmitted {
                    return;
                }
            }
            self.send_flight_again();
        }
    }

    /// OpenSSL's timer for its next start or doubling: just under `rto` on the client's last
    /// flight, never otherwise (or the test setting).
    fn set_openssl_timer(&self, rto: Duration) {
        if self.openssl_timer_fixed {
            return;
        }
        let us = if self.last_flight {
            micros(rto.saturating_sub(OPENSSL_TIMER_LEAD))
        } else {
            openssl_timer::NEVER
        };
        self.openssl_timer.start.store(us, Ordering::Relaxed);
        self.openssl_timer.again.store(us, Ordering::Relaxed);
    }

    fn repeat_flight(&mut self, now: Instant) {
        if self.flight.is_empty() || self.last_repeat.is_some_and(|t| now < t + REPEAT_GAP) {
            return;
        }
        self.last_repeat = Some(now);
        self.retransmissions += 1;
        self.send_flight_again();
    }

    fn send_flight_again(&mut self) {
        for i in 0..self.flight.len() {
            let mut copy = self.flight[i].clone();
            self.renumber(&mut copy);
            self.transmits.push_back(copy);
        }
    }

    /// Gives every epoch-0 record in `datagram` the next number of our own counter.
    fn renumber(&mut self, datagram: &mut [u8]) {
        for_each_record(datagram, |record| {
            if record[3..5] == [0, 0] {
                record[5..11].copy_from_slice(&self.epoch0_seq.to_be_bytes()[2..]);
                self.epoch0_seq += 1;
            }
        });
    }

    fn handshake(&mut self, now: Instant) -> Output {
        let result = self.stream.do_handshake();
        let output = self.collect_flight(now, result.is_ok());
        match result {
            Ok(()) => self.connected(),
            // Waiting for the peer's next flight (a new flight of ours, if any, was kept
            // and its timer started by `collect_flight`).
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {}
            Err(e) => {
                let error = if self.mismatch.load(Ordering::Relaxed) {
                    DtlsError::FingerprintMismatch
                } else {
                    DtlsError::Ssl(e.to_string())
                };
                self.fail(error);
            }
        }
        output
    }

    /// What OpenSSL wrote during the handshake. A new flight is kept for retransmission,
    /// with our timer restarted. OpenSSL's own retransmission of the flight we keep (its
    /// timer ran out) comes first, before any new flight: it is dropped, since our timer
    /// sends copies, unless it carries an epoch-1 record with a fresh number (the client's
    /// last flight), which only OpenSSL can make.
    fn collect_flight(&mut self, now: Instant, finished: bool) -> Output {
        let wire = self.stream.get_mut();
        if wire.outgoing.is_empty() {
            return Output::Nothing;
        }
        let mut datagrams: Vec<Vec<u8>> = wire.outgoing.drain(..).collect();
        let repeat = !self.flight.is_empty()
            && datagrams.len() >= self.flight.len()
            && self.flight.iter().zip(&datagrams).all(|(kept, new)| same_datagram(kept, new));
        let output = if repeat && datagrams.len() > self.flight.len() {
            tracing::debug!(role = ?self.role, "stale retransmission by OpenSSL's timer dropped");
            datagrams.drain(..self.flight.len());
            Output::Flight
        } else if repeat {
            // A retransmission in the same call that finished the handshake (the server's
            // last flight came late) is of no use to anyone.
            if finished || !datagrams.iter().any(|d| has_encrypted_record(d)) {
                return Output::Nothing;
            }
            for datagram in &mut datagrams {
                self.renumber(datagram);
            }
            self.flight.clone_from(&datagrams);
            self.queue(datagrams);
            return Output::Retransmitted;
        } else {
            Output::Flight
        };
        for datagram in &mut datagrams {
            self.renumber(datagram);
        }
        self.flights_sent += 1;
        self.flight.clone_from(&datagrams);
        self.retransmit.reset();
        let _ = self.retransmit.on_transmit(now);
        self.queue(datagrams);
        output
    }

    /// Moves what OpenSSL wrote outside the handshake (records, alerts) to the transmit
    /// queue.
    fn collect_output(&mut self) {
        let mut datagrams: Vec<Vec<u8>> = self.stream.get_mut().outgoing.drain(..).collect();
        for datagram in &mut datagrams {
            self.renumber(datagram);
        }
        self.queue(datagrams);
    }

    fn queue(&mut self, datagrams: Vec<Vec<u8>>) {
        // The cap bounds what handshake flights (which the peer can make us repeat) queue
        // up between polls; after the handshake nothing is dropped (a close_notify or an
        // alert after a large burst of records must still go out).
        for datagram in datagrams {
            if self.state != State::Handshaking || self.transmits.len() < MAX_QUEUED * 4 {
                self.transmits.push_back(datagram);
            }
        }
    }

    fn connected(&mut self) {
        // Defense in depth: the verify callback already checked the leaf.
        match self.stream.ssl().peer_certificate() {
            Some(cert) if self.fingerprint.matches(&cert) => {}
            Some(_) => return self.fail(DtlsError::FingerprintMismatch),
            None => return self.fail(DtlsError::NoCertificate),
        }
        self.state = State::Connected;
        // The client's last flight was answered (the handshake finished on receiving the
        // server's Finished); the server keeps its last flight for a repeat of the client's.
        self.retransmit.reset();
        if self.role == Role::Client {
            self.flight.clear();
        }
        let srtp = self.srtp_keys();
        self.events.push_back(DtlsEvent::Connected { srtp });
    }

    fn srtp_keys(&self) -> Option<SrtpKeys> {
        let ssl = self.stream.ssl();
        let profile = ssl.selected_srtp_profile()?.name().to_owned();
        let (key, salt) = match profile.as_str() {
            "SRTP_AEAD_AES_128_GCM" => (16, 12),
            "SRTP_AES128_CM_SHA1_80" | "SRTP_AES128_CM_SHA1_32" => (16, 14),
            _ => return None,
        };
        let mut material = vec![0u8; 2 * (key + salt)];
        ssl.export_keying_material(&mut material, SRTP_LABEL, None).ok()?;
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        Some(SrtpKeys {
            profile,
            client_key: material[..key].to_vec(),
            server_key: material[key..2 * key].to_vec(),
            client_salt: material[2 * key..2 * key + salt].to_vec(),
            server_salt: material[2 * key + salt..].to_vec(),
        })
    }

    fn fail(&mut self, error: DtlsError) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        tracing::debug!(role = ?self.role, %error, "dtls failed");
        // A fatal alert OpenSSL wrote still goes out.
        self.collect_output();
        self.state = State::Failed;
        self.retransmit.reset();
        self.events.push_back(DtlsEvent::Failed(error));
    }
}

impl peerlink_proto::Machine for Dtls {
    type Route = ();
    type Event = DtlsEvent;

    fn handle_receive(&mut self, now: Instant, (): (), datagram: &[u8]) {
        Dtls::handle_receive(self, now, datagram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Dtls::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit<()>> {
        Dtls::poll_transmit(self, now, buf)
    }

    fn poll_event(&mut self) -> Option<DtlsEvent> {
        Dtls::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Dtls::poll_timeout(self)
    }
}
