//! What the media commands (`echo`, `play`, `record`) share.

/// Resolves on SIGINT or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One status line of a connection's counters for a track (what `media-loss.sh` and a
/// curious user read): packets, NACKs and retransmissions, key frame requests.
pub async fn print_stats(
    name: &str,
    handle: &peerlink_io::PeerHandle,
    id: peerlink_rtc::TransceiverId,
    kind: &str,
) {
    let Some(s) = handle.media_stats(id).await else { return };
    crate::status!(
        "peerlink: stats {name} {kind} sent={} received={} frames_sent={} frames_received={} nacks_received={} \
         nacked={} rtx_sent={} rtx_not_in_history={} rtx_too_soon={} nacks_sent={} rtx_received={} plis_received={} \
         plis_sent={} frames_dropped={} keyframe_resends={}",
        s.packets_sent,
        s.packets_received,
        s.frames_sent,
        s.frames_received,
        s.nacks_received,
        s.nacked_packets,
        s.retransmissions_sent,
        s.nacked_not_in_history,
        s.nacked_too_soon,
        s.nacks_sent,
        s.retransmissions_received,
        s.plis_received,
        s.plis_sent,
        s.frames_dropped,
        s.keyframe_resends,
    );
}
