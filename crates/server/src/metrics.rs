//! Prometheus text exposition (format 0.0.4) of the servers' counters at `GET /metrics`.

use peerlink_turn::TurnStats;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::StunStats;
use std::sync::atomic::Ordering;

/// Renders the current metrics text; called on every scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Unlabelled gauges and counters, as (name, help, value).
fn simple(gauges: &[(&str, &str, u64)], counters: &[(&str, &str, u64)]) -> String {
    let mut out = String::new();
    for (kind, list) in [("gauge", gauges), ("counter", counters)] {
        for (name, help, value) in list {
            metric(&mut out, name, kind, help, &[("", *value)]);
        }
    }
    out
}

/// The SFU's counters in the Prometheus text format.
pub fn render_sfu(stats: &crate::sfu::SfuStats) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    simple(
        &[("peerlink_sfu_participants", "Connections to the SFU now.", load(&stats.participants))],
        &[
            (
                "peerlink_sfu_forwarded_packets_total",
                "RTP packets forwarded to subscribers.",
                load(&stats.forwarded_packets),
            ),
            (
                "peerlink_sfu_dropped_packets_total",
                "RTP packets not forwarded (before a key frame, unknown format).",
                load(&stats.dropped_packets),
            ),
            (
                "peerlink_sfu_keyframe_requests_total",
                "Subscribers' key frame requests passed to publishers.",
                load(&stats.keyframe_requests),
            ),
            (
                "peerlink_sfu_chat_relayed_total",
                "Chat messages relayed to participants.",
                load(&stats.chat_relayed),
            ),
            (
                "peerlink_sfu_files_relayed_total",
                "Files whose fan-out to the other participants of a room started.",
                load(&stats.files_relayed),
            ),
            (
                "peerlink_sfu_file_bytes_received_total",
                "File bytes received from senders in rooms through the server.",
                load(&stats.file_bytes_in),
            ),
            (
                "peerlink_sfu_file_bytes_sent_total",
                "File bytes sent to receivers in rooms through the server (once per receiver).",
                load(&stats.file_bytes_out),
            ),
            (
                "peerlink_sfu_speaker_changes_total",
                "Changes of a room's active speaker (from RFC 6464 audio levels) announced.",
                load(&stats.speaker_changes),
            ),
            (
                "peerlink_sfu_timeouts_total",
                "Participants dropped for not offering or not answering.",
                load(&stats.timeouts),
            ),
        ],
    ) + &render_tracks(&stats.rooms())
}

/// A label value in the exposition format: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Per room and track: bitrate and loss of each layer as it arrives, and subscribers.
fn render_tracks(rooms: &[crate::sfu::RoomReport]) -> String {
    let mut out = String::new();
    let mut bitrate = Vec::new();
    let mut loss = Vec::new();
    let mut subscribers = Vec::new();
    for room in rooms {
        for t in &room.tracks {
            let track = format!(
                r#"room="{}",publisher="{}",track="{}",kind="{}""#,
                label(&room.room),
                label(&t.publisher),
                t.track,
                t.kind
            );
            for (i, l) in t.layers.iter().enumerate() {
                bitrate.push(format!(r#"{track},layer="{i}"}} {}"#, l.bitrate_bps));
                loss.push(format!(r#"{track},layer="{i}"}} {}"#, l.loss));
            }
            let receiving = t.subscribers.iter().filter(|s| s.want != "off").count();
            subscribers.push(format!("{track}}} {receiving}"));
        }
    }
    for (name, help, samples) in [
        (
            "peerlink_sfu_track_bitrate_bps",
            "What arrives of each published track's layer, in bit/s.",
            bitrate,
        ),
        (
            "peerlink_sfu_track_loss_ratio",
            "Share of a layer's packets lost on the way from its publisher.",
            loss,
        ),
        ("peerlink_sfu_track_subscribers", "Participants a track is forwarded to.", subscribers),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for sample in samples {
            let _ = writeln!(out, "{name}{{{sample}");
        }
    }
    out
}

/// Signaling counters, appended to the TURN metrics by `peerlink serve`.
pub fn render_signal(stats: &peerlink_signal::hub::HubStats) -> String {
    let gauges: [(&str, &str, u64); 4] = [
        ("peerlink_signal_connections", "WebSocket connections now.", stats.connections),
        ("peerlink_signal_peers", "Peers in a room on this node now.", stats.joined),
        ("peerlink_signal_rooms", "Rooms with at least one peer now.", stats.rooms),
        ("peerlink_signal_remote_peers", "Peers known on other nodes of the cluster.", stats.remote_peers),
    ];
    let counters: [(&str, &str, u64); 6] = [
        ("peerlink_signal_relayed_total", "Signal messages relayed.", stats.signals_relayed),
        ("peerlink_signal_errors_total", "Error frames sent.", stats.errors_sent),
        (
            "peerlink_signal_closed_abuse_total",
            "Connections closed for abuse (1008).",
            stats.closed_for_abuse,
        ),
        (
            "peerlink_signal_closed_idle_total",
            "Connections dropped after keepalive silence.",
            stats.closed_idle,
        ),
        ("peerlink_signal_dropped_slow_total", "Connections dropped for not reading.", stats.dropped_slow),
        ("peerlink_signal_refused_full_total", "Connections refused: server full.", stats.refused_full),
    ];
    simple(&gauges, &counters)
}

/// When the certificate served for HTTPS/WSS and TURN over TLS expires; only the help and
/// type lines while there is none (no TLS, or ACME still waiting for the first).
pub fn render_certificate(not_after: Option<i64>) -> String {
    let name = "peerlink_tls_certificate_expiry_timestamp_seconds";
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP {name} When the certificate served over TLS expires (its notAfter), in seconds since the epoch."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    if let Some(not_after) = not_after {
        let _ = writeln!(out, "{name} {not_after}");
    }
    out
}

pub fn render_turn(stats: &TurnStats) -> String {
    let mut out = String::new();
    metric(&mut out, "peerlink_turn_allocations", "gauge", "Allocations now.", &[("", stats.allocations)]);
    metric(&mut out, "peerlink_turn_permissions", "gauge", "Permissions now.", &[("", stats.permissions)]);
    metric(&mut out, "peerlink_turn_channels", "gauge", "Channel bindings now.", &[("", stats.channels)]);
    // STUN Binding on the TURN port, under the name `peerlink stun` uses.
    metric(
        &mut out,
        "peerlink_stun_requests_total",
        "counter",
        "Binding requests by outcome.",
        &[
            (r#"outcome="answered""#, stats.binding_answered),
            (r#"outcome="rejected""#, stats.binding_rejected),
            (r#"outcome="ignored""#, stats.binding_ignored),
        ],
    );
    metric(
        &mut out,
        "peerlink_turn_allocations_created_total",
        "counter",
        "Allocations created.",
        &[("", stats.allocations_created)],
    );
    metric(
        &mut out,
        "peerlink_turn_relayed_packets_total",
        "counter",
        "Packets relayed.",
        &[
            (r#"direction="to_peer""#, stats.packets_to_peers),
            (r#"direction="to_client""#, stats.packets_to_clients),
        ],
    );
    metric(
        &mut out,
        "peerlink_turn_relayed_bytes_total",
        "counter",
        "Payload bytes relayed.",
        &[
            (r#"direction="to_peer""#, stats.bytes_to_peers),
            (r#"direction="to_client""#, stats.bytes_to_clients),
        ],
    );
    metric(
        &mut out,
        "peerlink_turn_auth_failures_total",
        "counter",
        "Requests with unknown users, wrong passwords or expired REST usernames.",
        &[("", stats.auth_failures)],
    );
    metric(
        &mut out,
        "peerlink_turn_refused_peers_total",
        "counter",
        "Permissions and channels refused by the peer address policy (403).",
        &[("", stats.refused_peers)],
    );
    metric(
        &mut out,
        "peerlink_turn_silent_allocations_total",
        "counter",
        "Allocations that ended without relaying a packet (the log says why).",
        &[("", stats.silent_allocations)],
    );
    metric(
        &mut out,
        "peerlink_turn_quota_refusals_total",
        "counter",
        "Allocate requests refused by the per-user (486) or server (508) allocation quota.",
        &[("", stats.quota_refusals)],
    );
    metric(
        &mut out,
        "peerlink_turn_dropped_total",
        "counter",
        "Packets dropped as invalid.",
        &[("", stats.dropped)],
    );
    metric(
        &mut out,
        "peerlink_turn_over_bandwidth_total",
        "counter",
        "Packets dropped because their allocation exceeded --max-bandwidth.",
        &[("", stats.over_bandwidth)],
    );
    metric(
        &mut out,
        "peerlink_turn_over_user_bandwidth_total",
        "counter",
        "Packets dropped because their user exceeded --max-bandwidth-per-user.",
        &[("", stats.over_user_bandwidth)],
    );
    metric(
        &mut out,
        "peerlink_turn_over_capacity_total",
        "counter",
        "Packets dropped because the server exceeded --bandwidth-capacity.",
        &[("", stats.over_capacity)],
    );
    metric(
        &mut out,
        "peerlink_turn_capacity_refusals_total",
        "counter",
        "Allocates refused (486) while --bandwidth-capacity was used up.",
        &[("", stats.capacity_refusals)],
    );
    metric(
        &mut out,
        "peerlink_turn_unauthenticated_throttled_total",
        "counter",
        "401 answers withheld by the per-IP rate limit.",
        &[("", stats.unauthenticated_throttled)],
    );
    metric(
        &mut out,
        "peerlink_turn_tcp_connections",
        "gauge",
        "RFC 6062 peer data connections now (connecting, unbound or bound).",
        &[("", stats.tcp_connections)],
    );
    metric(
        &mut out,
        "peerlink_turn_tcp_connections_total",
        "counter",
        "RFC 6062 peer data connections by outcome.",
        &[
            (r#"outcome="opened""#, stats.tcp_connections_opened),
            (r#"outcome="connect_failed""#, stats.tcp_connect_failures),
        ],
    );
    metric(
        &mut out,
        "peerlink_turn_tcp_relayed_bytes_total",
        "counter",
        "Bytes piped through RFC 6062 data connections.",
        &[
            (r#"direction="to_peer""#, stats.tcp_bytes_to_peers),
            (r#"direction="to_client""#, stats.tcp_bytes_to_clients),
        ],
    );
    out
}

pub fn render_stun(stats: &StunStats) -> String {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    metric(
        &mut out,
        "peerlink_stun_requests_total",
        "counter",
        "Binding requests by outcome.",
        &[
            (r#"outcome="answered""#, load(&stats.answered)),
            (r#"outcome="rejected""#, load(&stats.rejected)),
            (r#"outcome="ignored""#, load(&stats.ignored)),
        ],
    );
    metric(
        &mut out,
        "peerlink_stun_send_errors_total",
        "counter",
        "Failed sends.",
        &[("", load(&stats.send_errors))],
    );
    metric(
        &mut out,
        "peerlink_stun_tcp_connections_total",
        "counter",
        "TCP connections by fate.",
        &[(r#"fate="accepted""#, load(&stats.tcp_accepted)), (r#"fate="refused""#, load(&stats.tcp_refused))],
    );
    out
}

/// Serves `GET /metrics` on `addr` until the task is dropped, and with the SFU's `sfu`
/// stats `GET /stats` (a page) and `GET /stats.json` (its data: rooms, tracks, layers,
/// subscribers). Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    sfu: Option<Arc<crate::sfu::SfuStats>>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::http::header::CONTENT_TYPE;
    let mut app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], render()) }
        }),
    );
    if let Some(sfu) = sfu {
        app = app
            .route(
                "/stats",
                axum::routing::get(|| async {
                    ([(CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("stats.html"))
                }),
            )
            .route(
                "/stats.json",
                axum::routing::get(move || {
                    let sfu = sfu.clone();
                    async move {
                        let body = serde_json::to_string(&sfu.rooms()).unwrap_or_else(|_| "[]".into());
                        ([(CONTENT_TYPE, "application/json")], body)
                    }
                }),
            );
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(addr = %local, "metrics at /metrics");
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let stats =
            TurnStats { allocations: 2, packets_to_peers: 7, packets_to_clients: 9, ..Default::default() };
        let text = render_turn(&stats);
        assert!(text.contains("# TYPE peerlink_turn_allocations gauge\npeerlink_turn_allocations 2\n"));
        assert!(text.contains("peerlink_turn_relayed_packets_total{direction=\"to_peer\"} 7\n"));
        assert!(text.contains("peerlink_turn_relayed_packets_total{direction=\"to_client\"} 9\n"));
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            // (STUN Bindings on the TURN port go under `peerlink stun`'s name.)
            assert!(
                name.starts_with("peerlink_turn_") || name.starts_with("peerlink_stun_requests_total"),
                "{line}"
            );
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn renders_sfu_tracks_with_escaped_labels() {
        use crate::sfu::{LayerReport, RoomReport, SubscriberReport, TrackReport};
        let sub = |id: &str, want| SubscriberReport { id: id.into(), layer: Some(0), want, packets: 5 };
        let rooms = vec![RoomReport {
            room: "a \"quoted\"\\room\n".into(),
            speaker: None,
            participants: Vec::new(),
            tracks: vec![TrackReport {
                publisher: "p1".into(),
                track: 3,
                kind: "video",
                codec: "Vp8".into(),
                layers: vec![
                    LayerReport { bitrate_bps: 150_000, loss: 0.0, active: true },
                    LayerReport { bitrate_bps: 900_000, loss: 0.25, active: true },
                ],
                subscribers: vec![sub("p2", "full"), sub("p3", "off")],
            }],
        }];
        let text = render_tracks(&rooms);
        let track = r#"room="a \"quoted\"\\room\n",publisher="p1",track="3",kind="video""#;
        assert!(
            text.contains(&format!("peerlink_sfu_track_bitrate_bps{{{track},layer=\"1\"}} 900000\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("peerlink_sfu_track_loss_ratio{{{track},layer=\"1\"}} 0.25\n")),
            "{text}"
        );
        // A subscriber outside the last N does not count.
        assert!(text.contains(&format!("peerlink_sfu_track_subscribers{{{track}}} 1\n")), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 5);
    }
}
