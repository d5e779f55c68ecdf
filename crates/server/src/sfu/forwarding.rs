//! Forwarding: a publisher's tracks, each packet to its subscribers, and the layer each
//! subscriber receives.

use super::*;

impl Sfu {
    pub(super) async fn publish(&mut self, peer: &str, id: TransceiverId, kind: MediaKind) {
        let Some(p) = self.participants.get(peer) else { return };
        let handle = p.handle.clone();
        let info = handle.transceivers().await.into_iter().find(|t| t.id == id);
        let Some((codecs, rids, extensions)) =
            info.map(|t| (t.codecs, t.rids, t.extensions)).filter(|(c, _, _)| !c.is_empty())
        else {
            return;
        };
        let audio_level = extensions
            .iter()
            .find(|(_, uri)| uri == peerlink_rtp::ext::uri::AUDIO_LEVEL)
            .map(|(id, _)| *id)
            .filter(|_| kind == MediaKind::Audio);
        let Some(p) = self.participants.get_mut(peer) else { return };
        if p.published.contains_key(&id) {
            return;
        }
        tracing::info!(%peer, kind = kind.as_str(), codec = ?codecs[0].codec, ?rids, "sfu: track published");
        // Subscriptions to a track of this name from before are of the publisher's previous
        // connection (it came back under its id while their subscriber's offer was out, so
        // they were never removed): they go, and the track is subscribed anew.
        let key: TrackKey<String> = (peer.to_owned(), id.0);
        for (other, q) in self.participants.iter_mut().filter(|(other, _)| *other != peer) {
            if let Some(sub) = q.subscriptions.remove(&key) {
                tracing::debug!(subscriber = %other, publisher = %peer, "sfu: a subscription of a previous connection ends");
                q.by_transceiver.remove(&sub.transceiver);
                q.stale.push(sub.transceiver);
            }
        }
        let Some(p) = self.participants.get_mut(peer) else { return };
        let layers = Layers::new(rids.len());
        p.published.insert(
            id,
            Publication {
                codecs,
                kind,
                layers,
                subscribers: Vec::new(),
                forwarded: Vec::new(),
                key,
                audio_level,
                size_asked: None,
            },
        );
        let room = p.room.clone();
        let changes = match self.rooms.get_mut(&room) {
            Some(room) => room.publish((peer.to_owned(), id.0), kind_of(kind)),
            None => Vec::new(),
        };
        self.apply(changes).await;
        // A new subscriber needs a key frame to start.
        if kind == MediaKind::Video {
            handle.request_keyframe(id);
        }
    }

    /// One received packet goes to every subscriber of its track.
    pub(super) fn forward(&mut self, peer: &str, id: TransceiverId, layer: usize, packet: Vec<u8>) {
        // One packet for all its subscribers: each connection writes its own copy, with the
        // bytes its forwarder changes.
        let packet = Arc::new(packet);
        let Ok(parsed) = RtpPacket::parse(&packet) else { return };
        let Some(p) = self.participants.get_mut(peer) else { return };
        let Some(publication) = p.published.get_mut(&id) else { return };
        let now = Instant::now();
        publication.layers.on_packet(now, layer, packet.len(), (parsed.ssrc(), parsed.sequence_number()));
        // (Passed on to the subscribers too: only audio publications have the extension.)
        let audio_level = publication
            .audio_level
            .and_then(|ext| parsed.extensions().get(ext))
            .and_then(|data| AudioLevel::decode(data).ok());
        if let Some(level) = audio_level {
            if !self.speakers.contains_key(&p.room) {
                self.speakers.insert(p.room.clone(), (Speakers::new(), now));
            }
            let (speakers, decided) = self.speakers.get_mut(&p.room).expect("inserted");
            speakers.on_level(peer, level.level, now);
            if now.duration_since(*decided) >= SPEAKER_EVERY {
                *decided = now;
                if let Some(speaker) = speakers.decide(now) {
                    self.announce.push((p.room.clone(), speaker));
                }
            }
        }
        let Some(p) = self.participants.get_mut(peer) else { return };
        let Some(publication) = p.published.get_mut(&id) else { return };
        let Some(codec) =
            publication.codecs.iter().find(|c| c.payload_type == parsed.payload_type()).map(|c| c.codec)
        else {
            self.stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let publisher = p.handle.clone();
        // Taken out while they are served (nothing below changes who subscribes), not cloned.
        let mut subscribers = std::mem::take(&mut publication.forwarded);
        let key = std::mem::take(&mut publication.key);
        let kind = kind_of(publication.kind);
        let key_start = starts_keyframe(kind, codec, parsed.payload());
        let mut want_keyframe = None;
        let mut ask_size = None;
        if codec == Codec::Vp8 {
            if key_start {
                if let Some(size) = vp8_key_size(parsed.payload()) {
                    publication.layers.on_size(layer, size);
                }
            }
            if let Some(unknown) = publication.layers.unsized_active(now) {
                if publication.size_asked.is_none_or(|at| now.duration_since(at) >= SIZE_ASK_EVERY) {
                    publication.size_asked = Some(now);
                    tracing::debug!(%peer, layer = unknown, "sfu: key frame asked for a layer of unknown size");
                    ask_size = Some(unknown);
                }
            }
        }
        let (mut forwarded, mut dropped) = (0, 0);
        for target in subscribers.iter_mut() {
            let s = &target.subscriber;
            // By the slots it was found in before, else by name (and its slots kept).
            // (A slot found by `key` keeps that key while its generation lasts.)
            let found = target.slots.filter(|&(ps, ss)| {
                self.participants.at_mut(ps).is_some_and(|(_, p)| p.subscriptions.at_mut(ss).is_some())
            });
            let (ps, ss) = match found {
                Some(slots) => slots,
                None => {
                    let Some(ps) = self.participants.slot(s) else { continue };
                    let Some(ss) = self.participants.at_mut(ps).and_then(|(_, p)| p.subscriptions.slot(&key))
                    else {
                        continue;
                    };
                    target.slots = Some((ps, ss));
                    (ps, ss)
                }
            };
            let Some((_, p)) = self.participants.at_mut(ps) else { continue };
            let handle = &p.handle;
            let Some((_, sub)) = p.subscriptions.at_mut(ss) else { continue };
            if sub.want == Want::Off {
                continue;
            }
            match sub.layer.on_packet(layer, key_start) {
                LayerDecision::Forward => {}
                LayerDecision::Switch => {
                    tracing::debug!(subscriber = %s, publisher = %peer, layer, "sfu: layer switched at its key frame");
                    // The subscriber starts over at this key frame: repairs of the old
                    // layer would only take room from it.
                    sub.forwarder.restart();
                    handle.forget_sent(sub.transceiver);
                }
                LayerDecision::Skip => continue,
                LayerDecision::WantKeyframe(l) => {
                    want_keyframe = Some(l);
                    continue;
                }
            }
            match sub.forwarder.forward(now, &parsed) {
                Verdict::Forward { seq, timestamp } => {
                    if sub.forwarder.counts().0 == 1 {
                        tracing::debug!(subscriber = %s, publisher = %peer, kind = ?kind, "sfu: first packet forwarded");
                    }
                    forwarded += 1;
                    let patch = sub.forwarder.payload_patch(parsed.payload());
                    let shared = Arc::clone(&packet);
                    handle.forward_rtp(sub.transceiver, 0, codec, shared, patch, seq, timestamp, audio_level);
                }
                Verdict::WaitKeyframe => want_keyframe = Some(layer),
                Verdict::Drop => dropped += 1,
            }
        }
        self.stats.forwarded_packets.fetch_add(forwarded, Ordering::Relaxed);
        self.stats.dropped_packets.fetch_add(dropped, Ordering::Relaxed);
        if let Some(publication) = self.participants.get_mut(peer).and_then(|p| p.published.get_mut(&id)) {
            publication.forwarded = subscribers;
            publication.key = key;
        }
        if let Some(layer) = want_keyframe {
            publisher.request_keyframe_layer(id, layer);
        }
        if let Some(layer) = ask_size.filter(|l| want_keyframe != Some(*l)) {
            publisher.request_keyframe_layer(id, layer);
        }
    }

    /// Each subscription of a simulcast track follows the best layer that flows within the
    /// subscriber's share of its bandwidth estimate.
    /// `sample`: read each subscriber's bandwidth estimate (every [`LAYER_EVERY`]);
    /// otherwise only the holds already set apply.
    pub(super) fn retarget_layers(&mut self, sample: bool) {
        let now = Instant::now();
        // What each subscriber's path carries, where it is the limit. Without probing, an
        // estimate cannot grow much past what is sent (it is application-limited), so it
        // only holds subscribers back when it falls below what they are sent; for a while
        // after, they stay under that cap, then try a better layer again.
        let mut caps: HashMap<String, u64> = HashMap::new();
        let ids: Vec<String> = self.participants.keys().cloned().collect();
        for id in ids {
            let Some(p) = self.participants.get(&id) else { continue };
            if !sample {
                // Whether a hold ends or is renewed is for the next reading to say.
                if let Some((_, cap)) = p.hold {
                    caps.insert(id.clone(), cap);
                }
                continue;
            }
            // Paused videos (outside the last N) take nothing from the path.
            let videos = p
                .subscriptions
                .values()
                .filter(|s| s.forwarder.kind() == Kind::Video && s.want != Want::Off)
                .count() as u64;
            if videos == 0 {
                // Nothing to hold: a hold from before is over (a speaker change must not
                // apply it later).
                if let Some(p) = self.participants.get_mut(&id) {
                    p.end_hold();
                }
                continue;
            }
            let audios =
                p.subscriptions.values().filter(|s| s.forwarder.kind() == Kind::Audio).count() as u64;
            let rates = |pick: &dyn Fn(&Subscription, &Layers) -> Option<usize>| -> u64 {
                p.subscriptions
                    .iter()
                    .filter(|(_, sub)| sub.want != Want::Off)
                    .filter_map(|(key, sub)| {
                        let publication =
                            self.participants.get(&key.0)?.published.get(&TransceiverId(key.1))?;
                        Some(publication.layers.rate(pick(sub, &publication.layers)?))
                    })
                    .sum()
            };
            // What it is sent, and what its best layers would need.
            let sent = rates(&|sub, _| sub.layer.current());
            let best = |sub: &Subscription, l: &Layers| {
                match sub.want {
                    Want::Full => l.best(now),
                    Want::Thumbnail => l.lowest(now),
                    Want::Off => None,
                }
                .or(sub.layer.current())
            };
            let wanted = rates(&best);
            // The most any one video's best layer needs (each video gets an equal share).
            let wanted_video = p
                .subscriptions
                .iter()
                .filter(|(_, sub)| sub.want != Want::Off && sub.forwarder.kind() == Kind::Video)
                .filter_map(|(key, sub)| {
                    let publication = self.participants.get(&key.0)?.published.get(&TransceiverId(key.1))?;
                    Some(publication.layers.rate(best(sub, &publication.layers)?))
                })
                .max()
                .unwrap_or(0);
            let Some(estimate) = p.handle.latest_bandwidth_estimate() else {
                if let Some(p) = self.participants.get_mut(&id) {
                    p.hold = p.hold.filter(|(until, _)| now < *until);
                }
                continue;
            };
            let Some(p) = self.participants.get_mut(&id) else { continue };
            // Held back only by an estimate that falls (a path that cannot carry what it is
            // sent), not by one still climbing from its start.
            let falling = p.last_estimate.is_some_and(|last| estimate < last);
            p.last_estimate = Some(estimate);
            // Audio first (about 40 kbit/s a track), a tenth for headroom, the rest shared.
            let share =
                |bps: u64, percent: u64| (bps * percent / 100).saturating_sub(audios * 40_000) / videos;
            let cap = share(estimate, 90);
            if falling && estimate < sent * 95 / 100 {
                if p.hold.is_none() {
                    // The path is full now: the first probe waits its turn.
                    p.last_probe = Some(now);
                }
                // The path's queue is full of what it could not carry, and the new layer
                // starts with a key frame that must pass it: a layer chosen to fill the
                // path's rate would keep the queue full and its key frame late (a freeze
                // while it waits), so the step down leaves half free until the hold is
                // renewed or ends.
                p.hold = Some((now + LAYER_HOLD, share(estimate, DRAIN_SHARE)));
                p.held_since.get_or_insert(now);
                p.hold_estimates = (0, 0);
            }
            if let Some((until, _)) = p.hold {
                let since = p.held_since.unwrap_or(now);
                p.hold_estimates.0 += estimate;
                p.hold_estimates.1 += 1;
                if cap >= wanted_video {
                    // A probe (or the path) shows room for every video's best layer.
                    p.hold = None;
                } else if now >= until {
                    let (sum, n) = std::mem::take(&mut p.hold_estimates);
                    let cap = share(sum / n.max(1), 90);
                    p.hold =
                        (now.saturating_duration_since(since) < MAX_HOLD).then_some((now + LAYER_HOLD, cap));
                }
                if p.hold.is_some()
                    && p.last_probe.is_none_or(|at| now.saturating_duration_since(at) >= PROBE_EVERY)
                {
                    // Toward what the best layers need, at most twice the estimate at a time
                    // (a probe that comes back at 70 % of its rate or more goes on at twice
                    // its result by itself).
                    p.last_probe = Some(now);
                    let probe = (wanted.saturating_mul(5) / 4).min(estimate.saturating_mul(2));
                    p.handle.request_bandwidth_probe(probe);
                }
            }
            match p.hold {
                Some((until, cap)) if now < until => {
                    caps.insert(id.clone(), cap);
                }
                _ => {
                    p.end_hold();
                }
            }
        }
        let layers: HashMap<TrackKey<String>, Layers> = self
            .participants
            .iter()
            .flat_map(|(id, p)| {
                p.published
                    .iter()
                    .filter(|(_, publication)| publication.layers.len() > 1)
                    .map(move |(t, publication)| ((id.clone(), t.0), publication.layers.clone()))
            })
            .collect();
        if layers.is_empty() {
            return;
        }
        let mut asks = Vec::new();
        for (id, p) in self.participants.iter_mut() {
            let cap = caps.get(id).copied().unwrap_or(u64::MAX);
            // (Videos outside the last N are skipped before their track is looked up.)
            for (key, sub) in p.subscriptions.iter_mut().filter(|(_, s)| s.want != Want::Off) {
                let Some(l) = layers.get(key) else { continue };
                let switched = match sub.want {
                    Want::Off => continue,
                    // The smallest picture, whatever it sends.
                    Want::Thumbnail => l.lowest(now).and_then(|low| sub.layer.retarget_to(low)),
                    Want::Full => sub.layer.retarget_within(now, l, cap),
                };
                if let Some(layer) = switched {
                    if sub.layer.current().is_none() {
                        // Stopped at once (far above the cap): nothing of it is resent.
                        p.handle.forget_sent(sub.transceiver);
                    }
                    let cap = (cap < u64::MAX).then_some(cap);
                    tracing::debug!(subscriber = %id, publisher = %key.0, layer, ?cap, want = ?sub.want, "sfu: layer switch");
                    asks.push((key.clone(), layer));
                }
            }
        }
        for (key, layer) in asks {
            if let Some(publisher) = self.participants.get(&key.0) {
                publisher.handle.request_keyframe_layer(TransceiverId(key.1), layer);
            }
        }
    }
}
