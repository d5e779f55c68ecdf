//! The SFU's reports: counters for metrics and what each room forwards (`/stats`).

use super::*;

/// Counters for metrics, and what each room forwards (renewed every second).
#[derive(Debug, Default)]
pub struct SfuStats {
    pub participants: AtomicU64,
    pub forwarded_packets: AtomicU64,
    pub dropped_packets: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub chat_relayed: AtomicU64,
    /// Files whose relay started, and the bytes relayed from their senders and to their
    /// receivers.
    pub files_relayed: AtomicU64,
    pub file_bytes_in: AtomicU64,
    pub file_bytes_out: AtomicU64,
    pub timeouts: AtomicU64,
    pub speaker_changes: AtomicU64,
    pub rooms: std::sync::Mutex<Vec<RoomReport>>,
}

impl SfuStats {
    /// The rooms as of the last second.
    pub fn rooms(&self) -> Vec<RoomReport> {
        self.rooms.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// One SFU room for `/stats` and the per-track metrics.
#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    pub room: String,
    /// Who has the floor.
    pub speaker: Option<String>,
    pub participants: Vec<ParticipantReport>,
    pub tracks: Vec<TrackReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantReport {
    pub id: String,
    /// The bandwidth estimate toward it (bit/s), once it receives video.
    pub estimate_bps: Option<u64>,
    /// Its path held its layers under this (bit/s per video), for now.
    pub cap_bps: Option<u64>,
}

/// One published track: what arrives of each layer, and who receives which.
#[derive(Debug, Clone, Serialize)]
pub struct TrackReport {
    pub publisher: String,
    /// Which of the publisher's tracks (its transceiver's number on our connection).
    pub track: usize,
    pub kind: &'static str,
    pub codec: String,
    pub layers: Vec<LayerReport>,
    pub subscribers: Vec<SubscriberReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub bitrate_bps: u64,
    /// The share of its packets lost on the way from the publisher, lately.
    pub loss: f32,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriberReport {
    pub id: String,
    /// The layer it receives now.
    pub layer: Option<usize>,
    /// `full`, `thumbnail` or `off` (video outside the last N).
    pub want: &'static str,
    /// Packets forwarded to it.
    pub packets: u64,
}

impl Sfu {
    /// Renews the rooms' report for `/stats` and the metrics.
    pub(super) fn report(&self) {
        let now = Instant::now();
        let mut rooms: Vec<RoomReport> = self
            .rooms
            .iter()
            .filter(|(_, room)| !room.is_empty())
            .map(|(name, room)| {
                let mut participants = Vec::new();
                let mut tracks = Vec::new();
                for id in room.participants() {
                    let Some(p) = self.participants.get(id) else { continue };
                    participants.push(ParticipantReport {
                        id: id.clone(),
                        estimate_bps: p.last_estimate,
                        cap_bps: p.hold.filter(|(until, _)| now < *until).map(|(_, cap)| cap),
                    });
                    let mut published: Vec<_> = p.published.iter().collect();
                    published.sort_by_key(|(t, _)| t.0);
                    for (t, publication) in published {
                        let key: TrackKey<String> = (id.clone(), t.0);
                        let subscribers = publication
                            .subscribers
                            .iter()
                            .filter_map(|s| {
                                let sub = self.participants.get(s)?.subscriptions.get(&key)?;
                                Some(SubscriberReport {
                                    id: s.clone(),
                                    layer: sub.layer.current(),
                                    want: match sub.want {
                                        Want::Full => "full",
                                        Want::Thumbnail => "thumbnail",
                                        Want::Off => "off",
                                    },
                                    packets: sub.forwarder.counts().0,
                                })
                            })
                            .collect();
                        tracks.push(TrackReport {
                            publisher: id.clone(),
                            track: t.0,
                            kind: publication.kind.as_str(),
                            codec: publication
                                .codecs
                                .first()
                                .map(|c| format!("{:?}", c.codec))
                                .unwrap_or_default(),
                            layers: (0..publication.layers.len())
                                .map(|l| LayerReport {
                                    bitrate_bps: publication.layers.rate(l),
                                    loss: publication.layers.loss(l),
                                    active: publication.layers.is_active(now, l),
                                })
                                .collect(),
                            subscribers,
                        });
                    }
                }
                RoomReport {
                    room: name.clone(),
                    speaker: self.speakers.get(name).and_then(|(s, _)| s.current().cloned()),
                    participants,
                    tracks,
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        if let Ok(mut shared) = self.stats.rooms.lock() {
            *shared = rooms;
        }
    }
}
