//! The SFU's data channels: chat relayed to the room and files fanned out to receivers.

use super::*;

impl Sfu {
    /// The most any receiver's channel of the file relay of `from` has buffered.
    pub(super) async fn fullest(&self, from: &ChannelRef) -> usize {
        let mut fullest = 0;
        for (peer, channel) in self.files.out_channels(from) {
            if let Some(p) = self.participants.get(&peer) {
                fullest = fullest.max(p.handle.buffered_amount(channel).await);
            }
        }
        fullest
    }

    /// Carries out what the file relays decided.
    pub(super) async fn file_actions(&mut self, actions: Vec<Action>) {
        let mut todo = std::collections::VecDeque::from(actions);
        while let Some(action) = todo.pop_front() {
            match action {
                Action::OpenOut { to, from } => {
                    let Some(handle) = self.participants.get(&to).map(|p| p.handle.clone()) else {
                        todo.extend(self.files.out_failed(&from, &to, "the receiver left"));
                        continue;
                    };
                    match handle.create_data_channel(ChannelConfig::reliable(FILE_LABEL)).await {
                        Ok(id) => {
                            handle.set_buffered_amount_low_threshold(id, LOW_WATER);
                            self.files.opened_out(&from, &to, id);
                        }
                        Err(e) => {
                            tracing::info!(peer = %to, error = %e, "sfu: cannot open a file channel");
                            todo.extend(self.files.out_failed(&from, &to, "no channel to the receiver"));
                        }
                    }
                }
                Action::Send { to: (peer, channel), data, binary } => {
                    if let Some(p) = self.participants.get(&peer) {
                        if binary {
                            self.stats.file_bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        if let Err(e) = p.handle.send(channel, data, binary).await {
                            // A receiver's channel that cannot take more is gone for its
                            // relay (it fails; the others go on).
                            let channel = (peer, channel);
                            if self.files.is_out(&channel) {
                                tracing::debug!(peer = %channel.0, error = %e, "sfu: a file relay cannot send");
                                todo.push_back(Action::Close(channel.clone()));
                                todo.extend(self.files.closed(&channel));
                            }
                        }
                    }
                }
                Action::Close((peer, channel)) => {
                    if let Some(p) = self.participants.get(&peer) {
                        p.handle.close_channel(channel);
                    }
                }
                Action::Credit { to: (peer, channel), bytes } => {
                    if let Some(p) = self.participants.get(&peer) {
                        p.handle.add_receive_credit(channel, bytes);
                    }
                }
            }
        }
    }

    /// A chat message from `peer` goes to everyone else in its room, with who sent it.
    pub(super) async fn chat(&mut self, peer: &str, channel: u16, data: Vec<u8>) {
        let now = Instant::now();
        let Some(p) = self.participants.get_mut(peer).filter(|p| p.chat == Some(channel)) else { return };
        if data.len() > CHAT_MAX || !p.take_chat(now) {
            tracing::debug!(%peer, bytes = data.len(), "sfu: chat message dropped (too large or too many)");
            return;
        }
        let Ok(text) = String::from_utf8(data) else { return };
        let room = p.room.clone();
        let message = json!({"from": peer, "text": text}).to_string().into_bytes();
        let to: Vec<(PeerHandle, u16)> = self
            .participants
            .iter()
            .filter(|(id, q)| id.as_str() != peer && q.room == room)
            .filter_map(|(_, q)| q.chat.map(|c| (q.handle.clone(), c)))
            .collect();
        for (handle, channel) in to {
            // A participant that does not take its chat in does not make us hold it.
            if handle.buffered_amount(channel).await > CHAT_BUFFER {
                continue;
            }
            self.stats.chat_relayed.fetch_add(1, Ordering::Relaxed);
            let _ = handle.send(channel, message.clone(), false).await;
        }
    }
}
