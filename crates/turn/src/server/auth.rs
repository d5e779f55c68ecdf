//! RFC 8489 §9.2 long-term credentials for TURN requests (static users and TURN REST
//! secrets, MD5 and SHA-256 keys, stateless nonces, throttled challenges), and the way every
//! answer is written: error and success responses, signed with the request's key.

use super::{Auth, ClientAction, FiveTuple, Handled, Reply, Request, Transport, TurnServer};
use crate::auth::{NonceCheck, Refusal};
use peerlink_stun::{
    AlgorithmEntry, AlgorithmList, Attribute, AttributeType, Class, ErrorCode, Message, MessageWriter,
    PasswordAlgorithm, TypeList,
};
use std::net::SocketAddr;
use std::time::Instant;

/// At most this many types are listed in UNKNOWN-ATTRIBUTES.
const MAX_UNKNOWN_LISTED: usize = 16;

impl TurnServer {
    /// RFC 8489 §6.3.1: unknown comprehension-required attributes → 420.
    pub(super) fn unknown_attributes(
        &mut self,
        message: &Message<'_>,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Option<Handled> {
        let mut unknown = [AttributeType(0); MAX_UNKNOWN_LISTED];
        let unknown = message.collect_unknown_comprehension_required(&mut unknown);
        if unknown.is_empty() {
            return None;
        }
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(ErrorCode::UNKNOWN_ATTRIBUTE));
        let _ = w.attribute(&Attribute::UnknownAttributes(TypeList::Values(unknown)));
        reply.seal(w, None);
        Some(ClientAction::Reply)
    }

    /// RFC 8489 §9.2.4: long-term credential checks, in the RFC's order.
    pub(super) fn authenticate(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        message: &Message<'_>,
        out: &mut Vec<u8>,
        reply: &Reply,
    ) -> Result<Auth, Handled> {
        let unix_now = self.unix_now(now);
        if !message.has_integrity() && !message.has_integrity_sha256() {
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        }
        let text = |typ| match message.get(typ) {
            Some(Ok(Attribute::Username(s) | Attribute::Realm(s) | Attribute::Nonce(s))) => Some(s),
            _ => None,
        };
        let (Some(username), Some(realm), Some(nonce)) =
            (text(AttributeType::USERNAME), text(AttributeType::REALM), text(AttributeType::NONCE))
        else {
            // USERHASH alone is not accepted: REST usernames cannot be found by hash.
            return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None));
        };
        match self.nonces.check(nonce, nonce_subject(tuple), unix_now) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.note_silence(tuple, "request with a stale nonce (438)");
                return Err(self.challenge(now, tuple, out, reply, ErrorCode::STALE_NONCE));
            }
            NonceCheck::Invalid => {
                return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED))
            }
        }
        if realm != self.config.realm {
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        }
        // RFC 8489 §9.2.4: a client that saw our password-algorithms nonce and picked an
        // algorithm must echo our list unchanged.
        let algorithm = match message.get(AttributeType::PASSWORD_ALGORITHM) {
            // PASSWORD-ALGORITHMS without a choice is malformed.
            None if message.attribute(AttributeType::PASSWORD_ALGORITHMS).is_some() => {
                return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None));
            }
            None => PasswordAlgorithm::Md5,
            Some(Ok(Attribute::PasswordAlgorithm(chosen))) => {
                let echoed = match message.get(AttributeType::PASSWORD_ALGORITHMS) {
                    Some(Ok(Attribute::PasswordAlgorithms(list))) => list == AlgorithmList::Values(&OFFERED),
                    _ => false,
                };
                match (echoed, PasswordAlgorithm::from_code(chosen.algorithm)) {
                    (true, Some(algorithm)) if chosen.parameters.is_empty() => algorithm,
                    _ => return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None)),
                }
            }
            Some(_) => return Err(self.error(out, reply, ErrorCode::BAD_REQUEST, None)),
        };
        let keys = match self.config.credentials.keys(username, realm, algorithm, unix_now) {
            Ok(keys) => keys,
            Err(refusal) => {
                self.stats.auth_failures += 1;
                tracing::debug!(client = %tuple.client, ?refusal, "authentication refused");
                self.note_silence(tuple, "request refused: unknown user or expired credential (401)");
                return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
            }
        };
        let sha256 = message.has_integrity_sha256();
        let key = keys.into_iter().find(|key| {
            if sha256 {
                message.verify_integrity_sha256(key)
            } else {
                message.verify_integrity(key)
            }
        });
        let Some(key) = key else {
            self.stats.auth_failures += 1;
            tracing::debug!(client = %tuple.client, refusal = ?Refusal::UnknownUser, "integrity check failed");
            self.note_silence(tuple, "request refused: wrong password (401)");
            return Err(self.challenge(now, tuple, out, reply, ErrorCode::UNAUTHENTICATED));
        };
        // RFC 8656 §6.2: later requests on an allocation must come from its owner.
        if let Some(allocation) = self.allocations.get(tuple) {
            if allocation.username != username {
                let auth = Auth { username: username.to_owned(), key, sha256 };
                return Err(self.error(out, reply, ErrorCode::WRONG_CREDENTIALS, Some(&auth)));
            }
        }
        Ok(Auth { username: username.to_owned(), key, sha256 })
    }

    /// 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS; throttled per IP.
    pub(super) fn challenge(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        out: &mut Vec<u8>,
        reply: &Reply,
        error: ErrorCode<'static>,
    ) -> Handled {
        // Only UDP sources can be spoofed, and a stale nonce (438) proves we served this
        // client before: neither is throttled, so a spoofing flood cannot starve a victim.
        let ms = now.saturating_duration_since(self.epoch.0).as_millis() as u64;
        let throttle = tuple.transport == Transport::Udp && error.code != ErrorCode::STALE_NONCE.code;
        if throttle && !self.limiter.allow(tuple.client.ip(), ms) {
            self.stats.unauthenticated_throttled += 1;
            return ClientAction::Nothing;
        }
        let nonce = self.nonces.issue(nonce_subject(tuple), self.unix_now(now));
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(error));
        let _ = w.attribute(&Attribute::Realm(&self.config.realm));
        let _ = w.attribute(&Attribute::Nonce(&nonce));
        let _ = w.attribute(&Attribute::PasswordAlgorithms(AlgorithmList::Values(&OFFERED)));
        self.software(&mut w);
        reply.seal(w, None);
        ClientAction::Reply
    }

    pub(super) fn error(
        &self,
        out: &mut Vec<u8>,
        reply: &Reply,
        error: ErrorCode<'static>,
        auth: Option<&Auth>,
    ) -> Handled {
        tracing::debug!(code = error.code, method = ?reply.method, "error response");
        let mut w = reply.writer(out, Class::ErrorResponse);
        let _ = w.attribute(&Attribute::ErrorCode(error));
        self.software(&mut w);
        reply.seal(w, auth);
        ClientAction::Reply
    }

    pub(super) fn software(&self, w: &mut MessageWriter<'_>) {
        if let Some(software) = &self.config.software {
            let _ = w.attribute(&Attribute::Software(software));
        }
    }

    /// An error response to an authenticated request, signed with its key.
    pub(super) fn refuse(&self, req: Request<'_>, error: ErrorCode<'static>) -> Handled {
        self.error(req.out, &req.reply, error, Some(&req.auth))
    }

    /// A success response carrying `attributes`, then SOFTWARE, signed with the request's
    /// key.
    pub(super) fn succeed<'v>(
        &self,
        req: Request<'_>,
        attributes: impl IntoIterator<Item = Attribute<'v>>,
    ) -> Handled {
        let mut w = req.reply.writer(req.out, Class::SuccessResponse);
        for attribute in attributes {
            let _ = w.attribute(&attribute);
        }
        self.software(&mut w);
        req.reply.seal(w, Some(&req.auth));
        ClientAction::Reply
    }
}

/// Whom a nonce is issued to: a UDP client's address and port, a TCP or TLS client's
/// address alone (it cannot be spoofed), so that an RFC 6062 ConnectionBind on a new
/// connection can use the nonce its control connection got.
fn nonce_subject(tuple: &FiveTuple) -> SocketAddr {
    match tuple.transport {
        Transport::Udp => tuple.client,
        Transport::Tcp | Transport::Tls => SocketAddr::new(tuple.client.ip(), 0),
    }
}

/// Offered password algorithms, in preference order.
const OFFERED: [AlgorithmEntry<'static>; 2] = [
    AlgorithmEntry { algorithm: 0x0002, parameters: &[] },
    AlgorithmEntry { algorithm: 0x0001, parameters: &[] },
];
