//! `peerlink echo`: everything a peer sends comes back to it. Data channel messages go back
//! on their channel (text as text, binary as binary, in order); audio and video frames go
//! back on the same transceiver, in the codec they came in, with their RTP timestamps. Video
//! is returned from a key frame on: after a gap the frames wait for the next key frame (which
//! is asked for), so the sender's decoder never gets a broken reference. A key frame asked
//! for by the peer (PLI/FIR on what we send) is asked of the peer in turn: it is the source.
//!
//! When echo joins a room after the others it makes the offers: audio and video (sendrecv)
//! and a `chat` data channel. Runs until interrupted (or until signaling ends with nobody
//! left).
//!
//! Echo needs a connection per peer: in a room through the server (SFU mode) the one
//! connection carries everyone's media and a chat everyone hears, so nothing is echoed there
//! (an echo would go to the whole room, and two echoes would answer each other forever)
//! until the room is a mesh again.

use crate::peer::MeetArgs;
use crate::room::RoomEvent;
use crate::status;
use peerlink::session::{RoomMode, SFU_PEER};
use peerlink_io::PeerHandle;
use peerlink_rtc::{ChannelConfig, ChannelEvent, Direction, MediaKind, RtcEvent, TrackConfig, TransceiverId};
use std::collections::{HashMap, HashSet};

struct Other {
    name: String,
    handle: PeerHandle,
    /// Video transceivers whose echo waits for a key frame.
    waiting: HashSet<TransceiverId>,
    frames: u64,
    messages: u64,
}

pub async fn run(args: MeetArgs) -> anyhow::Result<()> {
    let mut options = args.room_options();
    options.accept_media = Some(Direction::SendRecv);
    options.tracks = vec![
        (MediaKind::Audio, Direction::SendRecv, TrackConfig::new(MediaKind::Audio)),
        (MediaKind::Video, Direction::SendRecv, TrackConfig::new(MediaKind::Video)),
    ];
    let mut room = crate::room::join(&args, options).await?;
    let mut others: HashMap<String, Other> = HashMap::new();
    let shutdown = crate::media::interrupted();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            e = room.next() => e,
            () = &mut shutdown => {
                status!("peerlink: interrupted; leaving");
                break;
            }
        };
        let Some(event) = event else { break };
        match event {
            RoomEvent::Connecting { peer, handle, offerer } => {
                if offerer {
                    if let Err(e) = handle.create_data_channel(ChannelConfig::reliable("chat")).await {
                        status!("peerlink: cannot open a data channel: {e}");
                    }
                }
                let other =
                    Other { name: peer.name, handle, waiting: HashSet::new(), frames: 0, messages: 0 };
                others.insert(peer.id, other);
            }
            RoomEvent::Gone { peer, reason } => {
                if let Some(o) = others.remove(&peer) {
                    status!(
                        "peerlink: {} ({peer}): {reason}; echoed {} frames and {} messages",
                        o.name,
                        o.frames,
                        o.messages
                    );
                }
            }
            RoomEvent::Mode(RoomMode::Sfu) => {
                status!(
                    "peerlink: the room goes through the server: nothing is echoed until it is a mesh again"
                );
            }
            RoomEvent::Mode(RoomMode::Mesh) => status!("peerlink: the room is a mesh: echoing"),
            RoomEvent::Rtc { peer, .. } if peer == SFU_PEER => {}
            RoomEvent::Rtc { peer, event } => {
                let Some(o) = others.get_mut(&peer) else { continue };
                match event {
                    RtcEvent::SelectedPair { local_kind, remote_kind, .. } => {
                        status!("selected pair: {local_kind} -> {remote_kind}");
                    }
                    RtcEvent::Track { id, kind, mid, .. } => {
                        status!("peerlink: {} sends {} (mid {mid}); echoing it", o.name, kind.as_str());
                        if kind == MediaKind::Video {
                            o.waiting.insert(id);
                            o.handle.request_keyframe(id);
                        }
                    }
                    RtcEvent::Frame { id, codec, frame } => {
                        if frame.gap_before && !frame.keyframe && codec != peerlink_rtc::Codec::Opus {
                            o.waiting.insert(id);
                            o.handle.request_keyframe(id);
                        }
                        if o.waiting.contains(&id) {
                            if !frame.keyframe {
                                continue;
                            }
                            o.waiting.remove(&id);
                        }
                        match o.handle.write_frame(id, Some(codec), frame.timestamp.0, frame.data).await {
                            Ok(()) => o.frames += 1,
                            Err(e) => tracing::debug!(error = %e, "frame not echoed"),
                        }
                    }
                    RtcEvent::KeyframeRequest { id, .. } => o.handle.request_keyframe(id),
                    RtcEvent::Channel(ChannelEvent::Message { id, data, binary }) => {
                        match o.handle.send(id, data, binary).await {
                            Ok(()) => o.messages += 1,
                            Err(e) => tracing::debug!(error = %e, "message not echoed"),
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    room.close().await;
    Ok(())
}
