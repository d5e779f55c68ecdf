//! Negotiation with each participant: the offers the server makes and the answers,
//! offers and candidates it takes.

use super::*;

impl Sfu {
    /// Adds and stops `peer`'s sending transceivers to match the room's tracks, and offers.
    pub(super) async fn reconcile(&mut self, peer: &str) {
        let Some(p) = self.participants.get(peer) else { return };
        if p.leaving {
            return;
        }
        if !p.ready || p.offered {
            if let Some(p) = self.participants.get_mut(peer) {
                p.pending = true;
            }
            return;
        }
        let wanted: Vec<(TrackKey<String>, Kind)> = match self.rooms.get(&p.room) {
            Some(room) => room.tracks().into_iter().filter(|(t, _)| t.0 != peer).collect(),
            None => Vec::new(),
        };
        let mut changed = false;
        // Tracks that ended.
        let gone: Vec<TrackKey<String>> =
            p.subscriptions.keys().filter(|k| !wanted.iter().any(|(w, _)| w == *k)).cloned().collect();
        let handle = p.handle.clone();
        let stale = self.participants.get_mut(peer).map(|p| std::mem::take(&mut p.stale)).unwrap_or_default();
        for transceiver in stale {
            let _ = handle.stop_transceiver(transceiver).await;
            changed = true;
        }
        for key in gone {
            let Some(p) = self.participants.get_mut(peer) else { return };
            if let Some(sub) = p.subscriptions.remove(&key) {
                p.by_transceiver.remove(&sub.transceiver);
                let _ = handle.stop_transceiver(sub.transceiver).await;
                changed = true;
            }
            if let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            {
                publication.subscribers.retain(|s| s != peer);
                publication.forwarded.retain(|t| t.subscriber != peer);
            }
        }
        // Tracks to add.
        for (key, kind) in wanted {
            if self.participants.get(peer).is_none_or(|p| p.subscriptions.contains_key(&key)) {
                continue;
            }
            let Some(publication) =
                self.participants.get(&key.0).and_then(|p| p.published.get(&TransceiverId(key.1)))
            else {
                continue;
            };
            let Some(codec) = publication.codecs.first().map(|c| c.codec) else { continue };
            let media = publication.kind;
            let config = TrackConfig {
                codecs: publication.codecs.clone(),
                stream_id: key.0.clone(),
                track_id: format!("{}-{}", key.0, key.1),
                ..TrackConfig::new(media)
            };
            let transceiver = match handle.add_transceiver(media, Direction::SendOnly, config).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "sfu: cannot add a track");
                    continue;
                }
            };
            if let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            {
                if !publication.subscribers.iter().any(|s| s == peer) {
                    publication.subscribers.push(peer.to_owned());
                }
                // A new subscription is forwarded until the room's plan says otherwise.
                if !publication.forwarded.iter().any(|t| t.subscriber == peer) {
                    publication.forwarded.push(Target::new(peer));
                }
            }
            let Some(p) = self.participants.get_mut(peer) else { return };
            p.by_transceiver.insert(transceiver, key.clone());
            let layer = LayerChoice::new(publication_best(&self.participants, &key));
            let Some(p) = self.participants.get_mut(peer) else { return };
            let forwarder = Forwarder::new(kind, codec);
            p.subscriptions.insert(key, Subscription { transceiver, forwarder, layer, want: Want::Full });
            changed = true;
        }
        if changed {
            self.offer(peer).await;
        }
    }

    /// Decides again which videos each participant of `room` receives, and how good
    /// ([`VideoPolicy`]): a video coming back from outside the last N restarts at a key frame;
    /// with last-N each participant is told whose video it receives when that changes.
    pub(super) async fn plan_videos(&mut self, room: &str) {
        let Some(order) = self.rooms.get(room).map(|r| r.participants().to_vec()) else { return };
        let publishers: Vec<String> = order
            .iter()
            .filter(|id| {
                self.participants
                    .get(*id)
                    .is_some_and(|p| !p.leaving && p.published.values().any(|t| t.kind == MediaKind::Video))
            })
            .cloned()
            .collect();
        // Each simulcast video's smallest picture now (what a thumbnail resumes on).
        let now = Instant::now();
        let lowest: HashMap<TrackKey<String>, usize> = publishers
            .iter()
            .filter_map(|id| self.participants.get(id).map(|p| (id, p)))
            .flat_map(|(id, p)| {
                p.published.iter().filter_map(move |(t, publication)| {
                    Some(((id.clone(), t.0), publication.layers.lowest(now)?))
                })
            })
            .collect();
        let recent: Vec<String> =
            self.speakers.get(room).map(|(s, _)| s.recent().to_vec()).unwrap_or_default();
        let policy = self.config.video;
        let mut asks = Vec::new();
        let mut tell = Vec::new();
        // Subscriptions turned off or back on: (track, subscriber, forwarded).
        let mut turned = Vec::new();
        for id in &order {
            let Some(p) = self.participants.get_mut(id) else { continue };
            if p.leaving {
                continue;
            }
            let ranked = policy.wants(id, &publishers, &recent);
            let wants: HashMap<&String, Want> = ranked.iter().map(|(p, w)| (p, *w)).collect();
            for (key, sub) in p.subscriptions.iter_mut().filter(|(_, s)| s.forwarder.kind() == Kind::Video) {
                let want = wants.get(&key.0).copied().unwrap_or(Want::Full);
                if sub.want != Want::Off && want == Want::Off {
                    sub.layer.pause();
                } else if sub.want == Want::Off && want != Want::Off {
                    // Back: the picture restarts at a key frame of the layer it gets (a
                    // thumbnail's at once; the best one is chosen on the next retarget).
                    if let Some(&low) = lowest.get(key).filter(|_| want == Want::Thumbnail) {
                        sub.layer.retarget_to(low);
                    }
                    sub.forwarder.restart();
                    asks.push((key.clone(), sub.layer.target()));
                }
                if (sub.want == Want::Off) != (want == Want::Off) {
                    turned.push((key.clone(), id.clone(), want != Want::Off));
                }
                sub.want = want;
            }
            if policy.last_n.is_some() && p.ready {
                let shown: Vec<String> =
                    ranked.iter().filter(|(_, w)| *w != Want::Off).map(|(id, _)| id.clone()).collect();
                if p.forwarding.as_ref() != Some(&shown) {
                    p.forwarding = Some(shown.clone());
                    tell.push((id.clone(), shown));
                }
            }
        }
        for (key, subscriber, on) in turned {
            let Some(publication) =
                self.participants.get_mut(&key.0).and_then(|p| p.published.get_mut(&TransceiverId(key.1)))
            else {
                continue;
            };
            publication.forwarded.retain(|t| t.subscriber != subscriber);
            if on {
                publication.forwarded.push(Target::new(&subscriber));
            }
        }
        for (key, layer) in asks {
            if let Some(publisher) = self.participants.get(&key.0) {
                self.stats.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                publisher.handle.request_keyframe_layer(TransceiverId(key.1), layer);
            }
        }
        for (peer, shown) in tell {
            tracing::debug!(%peer, ?shown, "sfu: forwarding video of");
            self.send(&peer, json!({ "forwarding": shown })).await;
        }
    }

    pub(super) async fn offer(&mut self, peer: &str) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        p.pending = false;
        p.offered = true;
        p.offered_at = Instant::now();
        let handle = p.handle.clone();
        match handle.create_offer().await {
            Ok(offer) => {
                let subscriptions = p.subscriptions.len();
                tracing::debug!(%peer, subscriptions, "sfu: offer sent");
                self.send(peer, json!({"description": {"type": "offer", "sdp": offer.sdp}})).await;
                self.described(peer).await;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "sfu: cannot make an offer");
                if let Some(p) = self.participants.get_mut(peer) {
                    p.offered = false;
                }
            }
        }
    }

    pub(super) async fn send(&self, peer: &str, data: Value) {
        self.signal.sfu_signal(peer.to_owned(), data.to_string()).await;
    }

    pub(super) async fn described(&mut self, peer: &str) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        p.described = true;
        let held = std::mem::take(&mut p.held);
        for c in held {
            self.send(peer, json!({ "candidate": c })).await;
        }
    }

    pub(super) async fn on_signal(&mut self, peer: &str, raw: &str) -> anyhow::Result<()> {
        let data: Value = serde_json::from_str(raw)?;
        let offer = data["description"]["type"] == "offer";
        // A member we have no connection with (we dropped it, or it failed) comes back with
        // an offer: a new connection.
        if offer && !self.participants.contains_key(peer) {
            if let Some(room) = self.members.get(peer).cloned() {
                self.join(room, peer.to_owned()).await;
            }
        }
        match self.apply_signal(peer, &data).await {
            // An offer our connection cannot take after it was negotiated is the client's new
            // connection (it lost ours and made another): start over with it.
            Err(e) if offer && self.participants.get(peer).is_some_and(|p| p.ready) => {
                tracing::info!(%peer, error = %e, "sfu: the client started a new connection");
                self.leave(peer, "replaced by the client's new connection").await;
                let Some(room) = self.members.get(peer).cloned() else { return Err(e) };
                self.join(room, peer.to_owned()).await;
                self.apply_signal(peer, &data).await
            }
            other => other,
        }
    }

    pub(super) async fn apply_signal(&mut self, peer: &str, data: &Value) -> anyhow::Result<()> {
        let Some(p) = self.participants.get_mut(peer) else { return Ok(()) };
        let handle = p.handle.clone();
        if let Some(d) = data.get("description") {
            let (Some(kind), Some(sdp)) = (d["type"].as_str().and_then(SdpType::parse), d["sdp"].as_str())
            else {
                anyhow::bail!("description without a type or sdp");
            };
            // The server is impolite: an offer crossing ours is ignored (the client rolls
            // its own back and answers ours).
            if kind == SdpType::Offer && p.offered {
                return Ok(());
            }
            let answer = match handle.set_remote_description(Description { kind, sdp: sdp.to_owned() }).await
            {
                Ok(answer) => answer,
                Err(e) => {
                    if kind == SdpType::Answer {
                        p.offered = false;
                    }
                    return Err(e.into());
                }
            };
            tracing::debug!(%peer, kind = ?kind, "sfu: description applied");
            match answer {
                Some(answer) => {
                    self.send(peer, json!({"description": {"type": "answer", "sdp": answer.sdp}})).await;
                    self.described(peer).await;
                }
                None => {
                    if let Some(p) = self.participants.get_mut(peer) {
                        p.offered = false;
                    }
                }
            }
            let first =
                self.participants.get_mut(peer).is_some_and(|p| !std::mem::replace(&mut p.ready, true));
            let pending = self.participants.get(peer).is_some_and(|p| p.pending);
            if first || pending {
                self.reconcile(peer).await;
                if let Some(room) = self.participants.get(peer).map(|p| p.room.clone()) {
                    self.plan_videos(&room).await;
                }
            }
            // A newcomer learns who speaks.
            let speaker = self
                .participants
                .get(peer)
                .and_then(|p| self.speakers.get(&p.room))
                .and_then(|(s, _)| s.current().cloned());
            if let Some(speaker) = speaker.filter(|_| first) {
                self.send(peer, json!({ "speaker": speaker })).await;
            }
        } else if let Some(c) = data.get("candidate") {
            match c {
                Value::Null => handle.add_ice_candidate(""),
                c => {
                    if let Some(line) = c["candidate"].as_str() {
                        handle.add_ice_candidate(line);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) async fn candidate(&mut self, peer: &str, c: Value) {
        let Some(p) = self.participants.get_mut(peer) else { return };
        if p.described {
            self.send(peer, json!({ "candidate": c })).await;
        } else {
            p.held.push(c);
        }
    }
}
