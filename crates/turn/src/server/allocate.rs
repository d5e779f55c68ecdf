//! RFC 8656 §7 Allocate and Refresh (RFC 6156 address families, EVEN-PORT reservations,
//! RFC 6062 TCP relays): the relay sockets the I/O layer opens for an allocation, and the
//! allocation's life until it expires, is deleted, or its connection closes.

use super::{Allocation, FiveTuple, Handled, Request, Transport, TurnServer};
use crate::rate::SharedRate;
use peerlink_stun::binding;
use peerlink_stun::{AddressFamily, Attribute, AttributeType, ErrorCode, Message};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 8656 §19 / RFC 8489: IANA protocol number of UDP in REQUESTED-TRANSPORT.
const UDP: u8 = 17;
/// RFC 6062 §6.1: TCP in REQUESTED-TRANSPORT.
const TCP: u8 = 6;
/// RFC 8656 §7.2: a reserved port is held about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// ADDITIONAL-ADDRESS-FAMILY as drafts numbered it, still sent by coturn's clients.
const LEGACY_ADDITIONAL_ADDRESS_FAMILY: AttributeType = AttributeType(0x8032);

/// A relay socket, opened by the I/O layer on the core's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    pub id: RelayId,
    pub addr: SocketAddr,
}

/// Which relay port an Allocate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    /// EVEN-PORT with R=0.
    Even,
    /// EVEN-PORT with R=1: an even port, and the next one reserved.
    EvenWithNext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// No relay address of this family is configured (→ 440).
    FamilyUnsupported,
    /// No port free in the relay range (→ 508).
    Exhausted,
    /// This provider has no TCP relays (→ 442).
    TransportUnsupported,
}

/// Which quota an I/O layer's shared count of allocations found full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaError {
    /// The user's (→ 486).
    User,
    /// The server's (→ 508).
    Server,
}

/// The I/O layer's side of relay sockets.
pub trait RelayProvider {
    /// Opens a UDP relay socket of `family` (RFC 8656 §14.6 for the port requests). With
    /// [`PortRequest::EvenWithNext`] the second relay is on the next (odd) port.
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(Relay, Option<Relay>), RelayError>;
    /// RFC 6062 §5.1: opens a TCP relay of `family`, a listening socket on the relayed
    /// transport address; peers' connections to it are reported with
    /// [`TurnServer::handle_peer_accept`], and connections to peers are opened from it.
    fn open_tcp(&mut self, family: AddressFamily) -> Result<Relay, RelayError> {
        let _ = family;
        Err(RelayError::TransportUnsupported)
    }
    /// Closes a UDP or TCP relay.
    fn close(&mut self, relay: RelayId);
    /// Counts an allocation for `user` where several cores share the quotas (each core checks
    /// its own allocations first), or says which quota is full.
    fn admit(&mut self, user: &str) -> Result<(), QuotaError> {
        let _ = user;
        Ok(())
    }
    /// Gives back what [`RelayProvider::admit`] took: the allocation went, or was not made.
    fn release(&mut self, user: &str) {
        let _ = user;
    }
    /// `user`'s bandwidth of `bytes_per_second`, shared with the user's allocations on every
    /// core; `None` (the default) when the I/O layer has one core, which then keeps its own.
    fn user_rate(&mut self, user: &str, bytes_per_second: u64, now: Instant) -> Option<Arc<SharedRate>> {
        let _ = (user, bytes_per_second, now);
        None
    }
    /// RFC 8656 §7.2: holds `relay`, the port an EVEN-PORT R=1 Allocate reserved, for the
    /// Allocate that redeems `token` before `expires`, on whichever core it reaches (the
    /// redeeming client sends from another 4-tuple). Gives `relay` back (the default) when
    /// the I/O layer has one core: the core then keeps the reservation itself.
    fn reserve(&mut self, token: [u8; 8], relay: Relay, expires: Instant) -> Option<Relay> {
        let _ = (token, expires);
        Some(relay)
    }
    /// The relay reserved under `token` by any core, now this one's; `None` when the token
    /// is unknown or lapsed (a lapsed reservation's socket is closed).
    fn redeem(&mut self, token: [u8; 8], now: Instant) -> Option<Relay> {
        let _ = (token, now);
        None
    }
}

impl TurnServer {
    pub(super) fn allocate(&mut self, req: Request<'_>, relays: &mut impl RelayProvider) -> Handled {
        let (now, tuple, message) = (req.now, req.tuple, req.message);
        // RFC 8656 §7.2 step 2: an existing allocation answers its own retransmission again.
        if let Some(existing) = self.allocations.get(&tuple) {
            if existing.allocate_tid != message.transaction_id() {
                return self.refuse(req, ErrorCode::ALLOCATION_MISMATCH);
            }
            let relays_now: Vec<Relay> = existing.relays.clone();
            let remaining = existing.expires.saturating_duration_since(now);
            return self.allocate_success(req, &relays_now, remaining, None, None);
        }
        let tcp = match message.get(AttributeType::REQUESTED_TRANSPORT) {
            Some(Ok(Attribute::RequestedTransport(UDP))) => false,
            Some(Ok(Attribute::RequestedTransport(TCP))) => true,
            Some(Ok(Attribute::RequestedTransport(_))) => {
                return self.refuse(req, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
            }
            _ => return self.refuse(req, ErrorCode::BAD_REQUEST),
        };
        let port_request = match message.get(AttributeType::EVEN_PORT) {
            Some(Ok(Attribute::EvenPort(true))) => PortRequest::EvenWithNext,
            Some(Ok(Attribute::EvenPort(false))) => PortRequest::Even,
            _ => PortRequest::Any,
        };
        let requested = match message.get(AttributeType::REQUESTED_ADDRESS_FAMILY) {
            Some(Ok(Attribute::RequestedAddressFamily(family))) => Some(family),
            _ => None,
        };
        let additional = match message.get(AttributeType::ADDITIONAL_ADDRESS_FAMILY) {
            Some(Ok(Attribute::AdditionalAddressFamily(family))) => Some(family),
            // coturn's clients still send the pre-RFC number 0x8032 (same layout).
            _ => match message.attribute(LEGACY_ADDITIONAL_ADDRESS_FAMILY).map(|raw| raw.value) {
                Some([0x01, ..]) => Some(AddressFamily::V4),
                Some([0x02, ..]) => Some(AddressFamily::V6),
                _ => None,
            },
        };
        let token = match message.get(AttributeType::RESERVATION_TOKEN) {
            Some(Ok(Attribute::ReservationToken(token))) => Some(token),
            _ => None,
        };
        // RFC 8656 §7.2 steps 4–6: conflicting combinations are bad requests.
        if (token.is_some()
            && (port_request != PortRequest::Any || requested.is_some() || additional.is_some()))
            || (requested.is_some() && additional.is_some())
            || (additional.is_some() && port_request == PortRequest::EvenWithNext)
            || additional == Some(AddressFamily::V4)
        {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        // RFC 6062 §5.1: a TCP allocation needs a TCP or TLS control connection and takes no
        // DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN. A second address family is not
        // offered for TCP relays.
        if tcp
            && (tuple.transport == Transport::Udp
                || message.attribute(AttributeType::DONT_FRAGMENT).is_some()
                || message.attribute(AttributeType::EVEN_PORT).is_some()
                || token.is_some()
                || additional.is_some())
        {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        let owned = self.per_user.get(&req.auth.username).copied().unwrap_or(0);
        if owned >= self.config.max_allocations_per_user {
            self.stats.quota_refusals += 1;
            tracing::info!(client = %tuple.client, user = %req.auth.username, held = owned,
                quota = self.config.max_allocations_per_user, "allocation refused: user quota reached (486)");
            return self.refuse(req, ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        // Reserved ports hold sockets too, so they count against the total.
        let held = self.allocations.len() + self.reservations.len();
        if held >= self.config.max_allocations {
            self.stats.quota_refusals += 1;
            tracing::warn!(client = %tuple.client, user = %req.auth.username, held,
                "allocation refused: server quota reached (508)");
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        // coturn's bps-capacity: while the server relays all it may, it takes no one new.
        if self.config.capacity.as_ref().is_some_and(|capacity| capacity.exhausted(now)) {
            self.stats.capacity_refusals += 1;
            tracing::warn!(client = %tuple.client, user = %req.auth.username,
                "allocation refused: bandwidth capacity reached (486)");
            return self.refuse(req, ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        if let Err(quota) = relays.admit(&req.auth.username) {
            self.stats.quota_refusals += 1;
            tracing::info!(client = %tuple.client, user = %req.auth.username, ?quota,
                "allocation refused: quota reached over all threads");
            let error = match quota {
                QuotaError::User => ErrorCode::ALLOCATION_QUOTA_REACHED,
                QuotaError::Server => ErrorCode::INSUFFICIENT_CAPACITY,
            };
            return self.refuse(req, error);
        }
        let mut issued_token = None;
        let first = if let Some(token) = token {
            // RFC 8656 §7.2: an unknown or lapsed token → 508.
            // Kept here, or by the I/O layer where cores share reservations.
            let reserved = match self.reservations.remove(&token) {
                Some((relay, expires)) if expires > now => Some(relay),
                Some((relay, _)) => {
                    relays.close(relay.id);
                    None
                }
                None => relays.redeem(token, now),
            };
            match reserved {
                Some(relay) => relay,
                None => {
                    tracing::info!(client = %tuple.client, user = %req.auth.username,
                        "allocation refused: unknown or lapsed reservation token (508)");
                    return self.refuse_unadmitted(req, relays, ErrorCode::INSUFFICIENT_CAPACITY);
                }
            }
        } else if tcp {
            match relays.open_tcp(requested.unwrap_or(AddressFamily::V4)) {
                Ok(relay) => relay,
                Err(RelayError::FamilyUnsupported) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
                }
                Err(RelayError::Exhausted) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::INSUFFICIENT_CAPACITY)
                }
                Err(RelayError::TransportUnsupported) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL)
                }
            }
        } else {
            let family = requested.unwrap_or(AddressFamily::V4);
            match relays.open(family, port_request) {
                Ok((relay, reserved)) => {
                    if let Some(reserved) = reserved {
                        let token = self.reservation_token(reserved.addr);
                        let expires = now + RESERVATION_LIFETIME;
                        if let Some(kept) = relays.reserve(token, reserved, expires) {
                            self.reservations.insert(token, (kept, expires));
                        }
                        issued_token = Some(token);
                    }
                    relay
                }
                Err(RelayError::FamilyUnsupported) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
                }
                Err(RelayError::Exhausted) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::INSUFFICIENT_CAPACITY)
                }
                Err(RelayError::TransportUnsupported) => {
                    return self.refuse_unadmitted(req, relays, ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL)
                }
            }
        };
        let mut opened = vec![first];
        // RFC 8656 §7.2: a failed additional IPv6 relay is reported, not fatal.
        let mut address_error = None;
        if additional == Some(AddressFamily::V6) {
            match relays.open(AddressFamily::V6, PortRequest::Any) {
                Ok((relay, _)) => opened.push(relay),
                Err(RelayError::FamilyUnsupported) => {
                    address_error = Some((AddressFamily::V6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
                }
                Err(RelayError::Exhausted | RelayError::TransportUnsupported) => {
                    address_error = Some((AddressFamily::V6, ErrorCode::INSUFFICIENT_CAPACITY))
                }
            }
        }
        let lifetime = self.lifetime(message);
        for relay in &opened {
            self.by_relay.insert(relay.id, tuple);
        }
        *self.per_user.entry(req.auth.username.clone()).or_default() += 1;
        let user_rate = self.config.max_bytes_per_second_per_user.map(|rate| {
            relays.user_rate(&req.auth.username, rate, now).unwrap_or_else(|| {
                self.user_rates
                    .entry(req.auth.username.clone())
                    .or_insert_with(|| Arc::new(SharedRate::new(rate, now)))
                    .clone()
            })
        });
        self.allocations.insert(
            tuple,
            Allocation {
                username: req.auth.username.clone(),
                relays: opened.clone(),
                expires: now + lifetime,
                allocate_tid: message.transaction_id(),
                permissions: BTreeMap::new(),
                channels: BTreeMap::new(),
                channel_of_peer: BTreeMap::new(),
                budget: (self.config.max_bytes_per_second.unwrap_or(0), now),
                user_rate,
                tcp,
                connections: Vec::new(),
                silence: super::Silence::default(),
            },
        );
        self.stats.allocations = self.allocations.len() as u64;
        self.stats.allocations_created += 1;
        tracing::debug!(client = %tuple.client, relay = %opened[0].addr, "allocation created");
        self.allocate_success(req, &opened, lifetime, address_error, issued_token)
    }

    /// A refusal after [`RelayProvider::admit`] counted the allocation: the count goes back.
    fn refuse_unadmitted(
        &self,
        req: Request<'_>,
        relays: &mut impl RelayProvider,
        error: ErrorCode<'static>,
    ) -> Handled {
        relays.release(&req.auth.username);
        self.refuse(req, error)
    }

    /// An unguessable RESERVATION-TOKEN: HMAC of a counter and the reserved address under the
    /// server's secret. Cores share the secret and count on their own; the address (one
    /// socket holds it while the reservation lives) keeps their tokens apart.
    fn reservation_token(&mut self, reserved: SocketAddr) -> [u8; 8] {
        use hmac::{Hmac, Mac};
        self.reservations_issued += 1;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.config.nonce_secret)
            .expect("hmac takes any key length");
        mac.update(b"reservation");
        mac.update(&self.reservations_issued.to_be_bytes());
        match reserved.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&reserved.port().to_be_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..8].try_into().expect("8 bytes")
    }

    /// The success response to an Allocate (RFC 8656 §7.3, RFC 6156 §4.2.2).
    fn allocate_success(
        &self,
        req: Request<'_>,
        relays: &[Relay],
        lifetime: Duration,
        address_error: Option<(AddressFamily, ErrorCode<'static>)>,
        token: Option<[u8; 8]>,
    ) -> Handled {
        let relayed = relays.iter().map(|relay| Attribute::XorRelayedAddress(relay.addr));
        let address_error =
            address_error.map(|(family, error)| Attribute::AddressErrorCode { family, error });
        let mapped = Attribute::XorMappedAddress(binding::canonical(req.tuple.client));
        let rest = [Attribute::Lifetime(lifetime.as_secs() as u32), mapped];
        let attributes =
            relayed.chain(address_error).chain(token.map(Attribute::ReservationToken)).chain(rest);
        self.succeed(req, attributes)
    }

    pub(super) fn refresh(&mut self, req: Request<'_>, relays: &mut impl RelayProvider) -> Handled {
        let (now, tuple, message) = (req.now, req.tuple, req.message);
        let Some(allocation) = self.allocations.get(&tuple) else {
            return self.refuse(req, ErrorCode::ALLOCATION_MISMATCH);
        };
        if let Some(Ok(Attribute::RequestedAddressFamily(family))) =
            message.get(AttributeType::REQUESTED_ADDRESS_FAMILY)
        {
            if !allocation.relays.iter().any(|r| AddressFamily::of(&r.addr) == family) {
                return self.refuse(req, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
            }
        }
        let delete = matches!(message.get(AttributeType::LIFETIME), Some(Ok(Attribute::Lifetime(0))));
        let lifetime = if delete {
            self.remove_allocation(&tuple, relays);
            Duration::ZERO
        } else {
            let lifetime = self.lifetime(message);
            if let Some(allocation) = self.allocations.get_mut(&tuple) {
                allocation.expires = now + lifetime;
            }
            lifetime
        };
        self.succeed(req, [Attribute::Lifetime(lifetime.as_secs() as u32)])
    }

    fn lifetime(&self, message: &Message<'_>) -> Duration {
        // RFC 8656 §7.2: min(requested, maximum), but never below the default.
        match message.get(AttributeType::LIFETIME) {
            Some(Ok(Attribute::Lifetime(secs))) => Duration::from_secs(u64::from(secs))
                .min(self.config.max_lifetime)
                .max(self.config.default_lifetime),
            _ => self.config.default_lifetime,
        }
    }

    pub(super) fn remove_allocation(&mut self, tuple: &FiveTuple, relays: &mut impl RelayProvider) {
        if let Some(allocation) = self.allocations.remove(tuple) {
            if !allocation.silence.relayed && !allocation.tcp {
                self.stats.silent_allocations += 1;
                let reason = allocation.silence.reason.unwrap_or(if allocation.permissions.is_empty() {
                    "the client asked for no permission or channel"
                } else {
                    "neither the client nor a permitted peer sent data"
                });
                tracing::info!(client = %tuple.client, transport = ?tuple.transport, user = %allocation.username,
                    reason, "allocation closed without relaying anything");
            }
            // RFC 6062 §5.5: the allocation's data connections go with it.
            self.close_connections(&allocation.connections);
            for relay in &allocation.relays {
                self.by_relay.remove(&relay.id);
                relays.close(relay.id);
            }
            relays.release(&allocation.username);
            if let Some(count) = self.per_user.get_mut(&allocation.username) {
                *count -= 1;
                if *count == 0 {
                    self.per_user.remove(&allocation.username);
                    self.user_rates.remove(&allocation.username);
                }
            }
            self.stats.allocations = self.allocations.len() as u64;
        }
    }

    /// Closes every allocation (shutdown).
    pub fn close_all(&mut self, relays: &mut impl RelayProvider) {
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in tuples {
            self.remove_allocation(&tuple, relays);
        }
        for (_, (relay, _)) in self.reservations.drain() {
            relays.close(relay.id);
        }
    }

    /// Drops allocations of a client transport that went away (a closed TCP connection).
    pub fn handle_client_closed(&mut self, tuple: &FiveTuple, relays: &mut impl RelayProvider) {
        self.remove_allocation(tuple, relays);
    }
}
