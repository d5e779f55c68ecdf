//! RFC 8656 §9 CreatePermission and §12 ChannelBind: which peers an allocation may
//! exchange data with, and the channel numbers that carry it; both refuse peers the policy
//! forbids (403) and keep to the per-allocation quotas.

use super::{FiveTuple, Handled, Request, TurnServer};
use crate::channel::{CHANNEL_MAX, CHANNEL_MIN};
use peerlink_stun::{Attribute, AttributeType, ErrorCode};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

impl TurnServer {
    /// Checks a peer address for CreatePermission and ChannelBind: family, then policy.
    pub(super) fn check_peer(
        &mut self,
        tuple: &FiveTuple,
        peer: SocketAddr,
    ) -> Result<(), ErrorCode<'static>> {
        let allocation = self.allocations.get(tuple).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        if allocation.relay_for(&peer).is_none() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.config.policy.permits(peer.ip()) {
            self.stats.refused_peers += 1;
            tracing::debug!(client = %tuple.client, %peer, "peer refused by policy");
            self.note_silence(tuple, "permission refused: the peer address policy forbids the peer (403)");
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    pub(super) fn create_permission(&mut self, req: Request<'_>) -> Handled {
        let (now, tuple, message) = (req.now, req.tuple, req.message);
        let mut peers = [None::<IpAddr>; 16];
        let mut count = 0;
        for raw in message.attributes().filter(|a| a.typ == AttributeType::XOR_PEER_ADDRESS) {
            let Ok(Attribute::XorPeerAddress(peer)) = message.decode(raw) else { continue };
            if let Err(error) = self.check_peer(&tuple, peer) {
                return self.refuse(req, error);
            }
            if count == peers.len() {
                return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
            }
            peers[count] = Some(peer.ip());
            count += 1;
        }
        if count == 0 {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        let max = self.config.max_permissions_per_allocation;
        let Some(allocation) = self.allocations.get_mut(&tuple) else {
            return self.refuse(req, ErrorCode::ALLOCATION_MISMATCH);
        };
        let new =
            peers[..count].iter().flatten().filter(|ip| !allocation.permissions.contains_key(ip)).count();
        if allocation.permissions.len() + new > max {
            self.note_silence(&tuple, "permission refused: permission quota reached (508)");
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        for ip in peers[..count].iter().flatten() {
            allocation.permissions.insert(*ip, now + PERMISSION_LIFETIME);
        }
        self.succeed(req, [])
    }

    pub(super) fn channel_bind(&mut self, req: Request<'_>) -> Handled {
        let (now, tuple, message) = (req.now, req.tuple, req.message);
        let number = match message.get(AttributeType::CHANNEL_NUMBER) {
            Some(Ok(Attribute::ChannelNumber(n))) if (CHANNEL_MIN..=CHANNEL_MAX).contains(&n) => n,
            _ => return self.refuse(req, ErrorCode::BAD_REQUEST),
        };
        let Some(Ok(Attribute::XorPeerAddress(peer))) = message.get(AttributeType::XOR_PEER_ADDRESS) else {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        };
        if let Err(error) = self.check_peer(&tuple, peer) {
            return self.refuse(req, error);
        }
        let max = self.config.max_channels_per_allocation;
        let max_permissions = self.config.max_permissions_per_allocation;
        let allocation = self.allocations.get_mut(&tuple).expect("check_peer found the allocation");
        // RFC 6062 §5: channels carry datagrams, a TCP allocation has none to carry.
        if allocation.tcp {
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        // RFC 8656 §12.2: a channel is bound to one peer and a peer to one channel.
        let bound_peer = allocation.channels.get(&number).map(|(p, _)| *p);
        let bound_number = allocation.channel_of_peer.get(&peer).copied();
        if bound_peer.is_some_and(|p| p != peer) || bound_number.is_some_and(|n| n != number) {
            self.note_silence(&tuple, "channel refused: number or peer bound already (400)");
            return self.refuse(req, ErrorCode::BAD_REQUEST);
        }
        if bound_peer.is_none() && allocation.channels.len() >= max {
            self.note_silence(&tuple, "channel refused: channel quota reached (508)");
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        if !allocation.permissions.contains_key(&peer.ip()) && allocation.permissions.len() >= max_permissions
        {
            self.note_silence(&tuple, "channel refused: permission quota reached (508)");
            return self.refuse(req, ErrorCode::INSUFFICIENT_CAPACITY);
        }
        allocation.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        allocation.channel_of_peer.insert(peer, number);
        allocation.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        self.succeed(req, [])
    }
}
