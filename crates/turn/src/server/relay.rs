//! The data path, RFC 8656 §10–§12: Send indications and ChannelData from clients to
//! peers, Data indications and ChannelData from peers to clients; only with a permission,
//! within the allocation's bandwidth budget. Nothing here allocates.

use super::{ClientAction, FiveTuple, Handled, PeerAction, RelayId, Transport, TurnServer};
use crate::channel::ChannelData;
use peerlink_stun::binding;
use peerlink_stun::{Attribute, AttributeType, Class, Message, MessageWriter, Method, TransactionId};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

impl TurnServer {
    /// A packet from `peer` on relay `relay`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> PeerAction {
        out.clear();
        let peer = binding::canonical(peer);
        let Some(tuple) = self.by_relay.get(&relay).copied() else { return PeerAction::Nothing };
        let rate = self.config.max_bytes_per_second;
        let capacity = self.config.capacity.as_deref();
        let Some(allocation) = self.allocations.get_mut(&tuple) else { return PeerAction::Nothing };
        if allocation.tcp {
            return self.drop_peer();
        }
        // RFC 8656 §11: data from a peer without a permission is dropped.
        if !allocation.permitted(peer.ip(), now) {
            self.stats.dropped += 1;
            tracing::debug!(%peer, client = %tuple.client, "peer data without permission dropped");
            self.note_silence(&tuple, "data from a peer without a permission");
            return PeerAction::Nothing;
        }
        if let Err(over) = allocation.spend(now, payload.len(), rate, capacity) {
            self.over_limit(&tuple, over);
            return PeerAction::Nothing;
        }
        allocation.silence.relayed = true;
        let channel = allocation
            .channel_of_peer
            .get(&peer)
            .copied()
            .filter(|number| allocation.channels.get(number).is_some_and(|(_, expires)| *expires > now));
        if let Some(number) = channel {
            if payload.len() > usize::from(u16::MAX) {
                return self.drop_peer();
            }
            ChannelData::encode(number, payload, tuple.transport != Transport::Udp, out);
        } else {
            let mut tid = [0u8; 12];
            // Indications need a transaction id; it need not be unpredictable.
            tid[..8].copy_from_slice(&self.stats.packets_to_clients.to_be_bytes());
            let mut w = MessageWriter::new(out, Class::Indication, Method::DATA, TransactionId(tid));
            let written = w
                .attribute(&Attribute::XorPeerAddress(peer))
                .and_then(|()| w.attribute(&Attribute::Data(payload)));
            if written.is_err() {
                return self.drop_peer();
            }
        }
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += payload.len() as u64;
        PeerAction::ToClient(tuple)
    }

    fn drop_peer(&mut self) -> PeerAction {
        self.stats.dropped += 1;
        PeerAction::Nothing
    }

    pub(super) fn client_channel_data(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        packet: &[u8],
    ) -> ClientAction {
        let Some(data) = ChannelData::parse(packet) else { return self.drop_packet("bad channeldata") };
        let rate = self.config.max_bytes_per_second;
        let capacity = self.config.capacity.as_deref();
        let Some(allocation) = self.allocations.get_mut(tuple) else {
            return self.drop_packet("no allocation");
        };
        let Some(&(peer, expires)) = allocation.channels.get(&data.channel) else {
            return self.silent_drop(tuple, "channeldata on an unknown channel");
        };
        if expires <= now || !allocation.permitted(peer.ip(), now) {
            return self.silent_drop(tuple, "channeldata on an expired channel or permission");
        }
        let Some(relay) = allocation.relay_for(&peer).map(|r| r.id) else {
            return self.drop_packet("no relay");
        };
        if let Err(over) = allocation.spend(now, data.payload.len(), rate, capacity) {
            return self.over_bandwidth(tuple, over);
        }
        allocation.silence.relayed = true;
        self.relay_to_peer(relay, peer, 4..4 + data.payload.len())
    }

    /// RFC 8656 §10.2: Send indications are not authenticated; without an allocation or a
    /// permission they are dropped.
    pub(super) fn send_indication(
        &mut self,
        now: Instant,
        tuple: &FiveTuple,
        message: &Message<'_>,
        packet: &[u8],
    ) -> Handled {
        let rate = self.config.max_bytes_per_second;
        let capacity = self.config.capacity.as_deref();
        let Some(allocation) = self.allocations.get_mut(tuple) else {
            return self.drop_packet("send without allocation");
        };
        // RFC 6062 §5: a TCP allocation relays through data connections only.
        if allocation.tcp {
            return self.drop_packet("send on a tcp allocation");
        }
        let Some(Ok(Attribute::XorPeerAddress(peer))) = message.get(AttributeType::XOR_PEER_ADDRESS) else {
            return self.drop_packet("send without peer");
        };
        let Some(data) = message.attribute(AttributeType::DATA) else {
            return self.drop_packet("send without data");
        };
        if !allocation.permitted(peer.ip(), now) {
            return self.silent_drop(tuple, "send indication to a peer without a permission");
        }
        let Some(relay) = allocation.relay_for(&peer).map(|r| r.id) else {
            return self.silent_drop(tuple, "send indication to a peer of another address family");
        };
        if let Err(over) = allocation.spend(now, data.value.len(), rate, capacity) {
            return self.over_bandwidth(tuple, over);
        }
        allocation.silence.relayed = true;
        // The DATA value lies inside `packet`: find its range by address.
        let start = data.value.as_ptr() as usize - packet.as_ptr() as usize;
        self.relay_to_peer(relay, peer, start..start + data.value.len())
    }

    /// Client data leaves from `relay` to `peer`: `payload` is its range in the packet.
    fn relay_to_peer(&mut self, relay: RelayId, peer: SocketAddr, payload: Range<usize>) -> Handled {
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += payload.len() as u64;
        ClientAction::ToPeer { relay, peer, payload }
    }

    /// Client data over a bandwidth limit is dropped.
    fn over_bandwidth(&mut self, tuple: &FiveTuple, over: super::Over) -> Handled {
        self.over_limit(tuple, over);
        ClientAction::Nothing
    }

    /// Client data the allocation cannot relay: dropped, and the operator told why.
    fn silent_drop(&mut self, tuple: &FiveTuple, why: &'static str) -> Handled {
        self.note_silence(tuple, why);
        self.drop_packet(why)
    }
}
