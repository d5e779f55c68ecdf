//! Files in rooms through the server (docs/file-transfer.md, "Rooms through the server"): a
//! participant's `file` channel to the SFU is fanned out to one new `file` channel toward
//! every other participant of its room (or those its header names in `"to"`), opened once
//! the header came. The header gains `"from"` (the sender's peer id);
//! chunks and trailer pass unchanged; the sender gets one answer once every receiver answered
//! (or did not within [`ANSWER_WAIT`] of the trailer): `ack` with the trailer's digest and how
//! many receivers confirmed it when at least one did, else `error` (as `peerlink send` to
//! everyone in a mesh: a participant that takes no files does not fail the others).
//!
//! Sans-IO: the server's SFU hands in what its connections report and carries out the [`Action`]s.
//! Memory is bounded by the data channels' receive credit: the sender's channel gets credit
//! back only while every receiver's channel has less than [`HIGH_WATER`] buffered, so a slow
//! receiver closes the sender's SCTP window instead of growing the server.

use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Buffered bytes on a receiver's channel above which the sender is held back.
pub const HIGH_WATER: usize = 1024 * 1024;
/// What a receiver's channel must drain to before the sender may go on.
pub const LOW_WATER: usize = 256 * 1024;
/// How long after the trailer a receiver that has not answered counts as failed (the browser
/// app's sender waits 60 s for its answer).
pub const ANSWER_WAIT: Duration = Duration::from_secs(40);
/// How long a receiver may hold its sender back (its channel above [`HIGH_WATER`]) before it
/// is dropped from the transfer.
pub const SLOW_LIMIT: Duration = Duration::from_secs(15);
/// Failure reasons passed on to the sender.
const REASONS_MAX: usize = 5;
/// Bytes queued for a receiver's channel that is not open yet, beyond which it is dropped.
const QUEUE_MAX: usize = 2 * 1024 * 1024;
/// Files one participant may send through the server at once (each holds up to a channel's
/// receive credit and a queue per receiver in the server).
pub const PER_SENDER: usize = 4;

/// A channel of one participant: (peer id, SCTP stream id).
pub type ChannelRef = (String, u16);

/// What the SFU must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a `file` channel to `to` for the relay of `from`, then call
    /// [`FileRelays::opened_out`] with its id (or [`FileRelays::out_failed`]).
    OpenOut {
        to: String,
        from: ChannelRef,
    },
    Send {
        to: ChannelRef,
        data: Vec<u8>,
        binary: bool,
    },
    Close(ChannelRef),
    /// Give the sender's channel this much receive credit back.
    Credit {
        to: ChannelRef,
        bytes: usize,
    },
}

#[derive(Debug)]
struct Out {
    peer: String,
    channel: Option<u16>,
    open: bool,
    queue: VecDeque<(Vec<u8>, bool)>,
    queued: usize,
    /// The receiver's answer: Ok(digest) or Err(reason).
    answer: Option<Result<String, String>>,
    gone: bool,
}

#[derive(Debug)]
struct Relay {
    /// Who was in the room when the sender's channel came (less those who left since): the
    /// receivers, or those of them the header names.
    candidates: Vec<String>,
    /// Whether the header came (and the receivers' channels were asked for).
    started: bool,
    outs: Vec<Out>,
    /// The digest of the sender's trailer, and when it came.
    trailer: Option<String>,
    trailer_at: Option<Instant>,
    /// Credit held back from the sender while a receiver is full, since when.
    owed: usize,
    held_since: Option<Instant>,
    answered: bool,
}

/// Every file relayed through one SFU.
#[derive(Debug, Default)]
pub struct FileRelays {
    relays: HashMap<ChannelRef, Relay>,
    /// A receiver's channel → the relay (the sender's channel) it belongs to.
    outs: HashMap<ChannelRef, ChannelRef>,
}

fn text(value: Value) -> (Vec<u8>, bool) {
    (value.to_string().into_bytes(), false)
}

/// The answer to a sender whose file went to nobody (`"receivers": 0`: a sender may try again
/// once someone is there).
fn refusal(from: &ChannelRef, reason: &str) -> Action {
    let (data, binary) = text(json!({"type": "error", "reason": reason, "receivers": 0}));
    Action::Send { to: from.clone(), data, binary }
}

impl FileRelays {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Whether `channel` is a receiver's side of a relay (its messages are answers).
    pub fn is_out(&self, channel: &ChannelRef) -> bool {
        self.outs.contains_key(channel)
    }

    /// Whether `channel` is a sender's side of a relay.
    pub fn is_in(&self, channel: &ChannelRef) -> bool {
        self.relays.contains_key(channel)
    }

    /// `from` opened a `file` channel; `others` are the other participants of its room. The
    /// receivers' channels are opened when the header comes ([`FileRelays::on_sender`]).
    pub fn incoming(&mut self, from: ChannelRef, others: &[String]) -> Vec<Action> {
        if others.is_empty() {
            return vec![refusal(&from, "nobody else is in the room")];
        }
        if self.relays.keys().filter(|(peer, _)| *peer == from.0).count() >= PER_SENDER {
            let (data, binary) = text(json!({
                "type": "error",
                "reason": format!("too many files at once (at most {PER_SENDER} through the server)"),
            }));
            return vec![Action::Send { to: from, data, binary }];
        }
        self.relays.insert(
            from,
            Relay {
                candidates: others.to_vec(),
                started: false,
                outs: Vec::new(),
                trailer: None,
                trailer_at: None,
                owed: 0,
                held_since: None,
                answered: false,
            },
        );
        Vec::new()
    }

    /// The header of the relay of `from` came: its receivers are chosen and their channels
    /// asked for; the header waits in their queues. `Err`: the sender's refusal.
    fn start(&mut self, from: &ChannelRef, header: &Value) -> Result<Vec<Action>, Action> {
        let Some(relay) = self.relays.get_mut(from) else { return Ok(Vec::new()) };
        let receivers: Vec<String> = match header.get("to") {
            None | Some(Value::Null) => relay.candidates.clone(),
            Some(Value::Array(named)) if !named.is_empty() && named.iter().all(Value::is_string) => {
                relay.candidates.iter().filter(|c| named.iter().any(|n| n == c.as_str())).cloned().collect()
            }
            Some(_) => return Err(refusal(from, "bad header: \"to\" must be a list of peer ids")),
        };
        if receivers.is_empty() {
            let reason = if header.get("to").is_some() {
                "none of the peers named in \"to\" is connected to the server"
            } else {
                "nobody else is connected to the server"
            };
            return Err(refusal(from, reason));
        }
        relay.started = true;
        relay.outs = receivers
            .iter()
            .map(|peer| Out {
                peer: peer.clone(),
                channel: None,
                open: false,
                queue: VecDeque::new(),
                queued: 0,
                answer: None,
                gone: false,
            })
            .collect();
        Ok(receivers.into_iter().map(|to| Action::OpenOut { to, from: from.clone() }).collect())
    }

    /// The channel toward `to` for the relay of `from` was created as `channel`.
    pub fn opened_out(&mut self, from: &ChannelRef, to: &str, channel: u16) {
        let Some(relay) = self.relays.get_mut(from) else { return };
        if let Some(out) = relay.outs.iter_mut().find(|o| o.peer == to && o.channel.is_none() && !o.gone) {
            out.channel = Some(channel);
            self.outs.insert((to.to_owned(), channel), from.clone());
        }
    }

    /// The channel toward `to` could not be created: that receiver fails.
    pub fn out_failed(&mut self, from: &ChannelRef, to: &str, why: &str) -> Vec<Action> {
        let Some(relay) = self.relays.get_mut(from) else { return Vec::new() };
        if let Some(out) = relay.outs.iter_mut().find(|o| o.peer == to && o.channel.is_none() && !o.gone) {
            out.gone = true;
            out.answer = Some(Err(why.to_owned()));
        }
        self.settle(from)
    }

    /// A channel we created is open: what waited for it goes.
    pub fn out_open(&mut self, channel: &ChannelRef) -> Vec<Action> {
        let Some(from) = self.outs.get(channel).cloned() else { return Vec::new() };
        let Some(relay) = self.relays.get_mut(&from) else { return Vec::new() };
        let Some(out) = relay.outs.iter_mut().find(|o| o.peer == channel.0 && o.channel == Some(channel.1))
        else {
            return Vec::new();
        };
        out.open = true;
        out.queued = 0;
        out.queue.drain(..).map(|(data, binary)| Action::Send { to: channel.clone(), data, binary }).collect()
    }

    /// A message from the sender of `from` at `now`; `fullest` is the most any receiver's
    /// channel has buffered now (for the receive credit).
    pub fn on_sender(
        &mut self,
        now: Instant,
        from: &ChannelRef,
        data: Vec<u8>,
        binary: bool,
        fullest: usize,
    ) -> Vec<Action> {
        let len = data.len();
        let Some(relay) = self.relays.get(from) else { return Vec::new() };
        let credit = Action::Credit { to: from.clone(), bytes: len.max(1) };
        let parsed = if binary { None } else { serde_json::from_slice::<Value>(&data).ok() };
        let mut opens = Vec::new();
        if !relay.started {
            if relay.answered {
                return vec![credit];
            }
            // The first message must be the header: it says who receives.
            let header = parsed.as_ref().filter(|v| v.get("type").and_then(Value::as_str) == Some("file"));
            let started = match header {
                Some(header) => self.start(from, header),
                None => Err(refusal(from, "bad header")),
            };
            match started {
                Ok(actions) => opens = actions,
                Err(refused) => {
                    if let Some(relay) = self.relays.get_mut(from) {
                        relay.answered = true;
                    }
                    return vec![refused, credit];
                }
            }
        }
        let Some(relay) = self.relays.get_mut(from) else { return Vec::new() };
        let mut data = data;
        if !binary {
            // Text goes on only as the server read it (so no receiver reads into it what the
            // server did not, e.g. a "from" of its own): what is not JSON is dropped.
            let Some(mut v) = parsed else {
                return vec![credit];
            };
            match v.get("type").and_then(Value::as_str) {
                // Receivers learn who sends it; a header passes with its own fields only
                // (not "to": whom else it went to is not theirs to know).
                Some("file") => {
                    v = json!({"type": "file", "name": v["name"], "size": v["size"], "mime": v["mime"], "from": from.0});
                }
                Some("end") => {
                    relay.trailer = v.get("sha256").and_then(Value::as_str).map(str::to_ascii_lowercase);
                    relay.trailer_at.get_or_insert(now);
                }
                _ => {}
            }
            data = v.to_string().into_bytes();
        }
        let mut actions = opens;
        for out in relay.outs.iter_mut().filter(|o| !o.gone) {
            match (out.channel, out.open) {
                (Some(channel), true) => {
                    actions.push(Action::Send { to: (out.peer.clone(), channel), data: data.clone(), binary })
                }
                _ if out.queued + data.len() <= QUEUE_MAX => {
                    out.queued += data.len();
                    out.queue.push_back((data.clone(), binary));
                }
                _ => {
                    // A receiver whose channel does not open while a whole window waits.
                    out.gone = true;
                    out.answer = Some(Err("its channel did not open".to_owned()));
                    out.queue.clear();
                    if let Some(channel) = out.channel {
                        actions.push(Action::Close((out.peer.clone(), channel)));
                    }
                }
            }
        }
        // (SCTP counts an empty message as one byte of credit.)
        if fullest < HIGH_WATER {
            relay.held_since = None;
            actions.push(Action::Credit {
                to: from.clone(),
                bytes: len.max(1) + std::mem::take(&mut relay.owed),
            });
        } else {
            relay.held_since.get_or_insert(now);
            relay.owed += len.max(1);
        }
        actions.extend(self.settle(from));
        actions
    }

    /// A receiver's channel drained to its low-water mark; `fullest` as in
    /// [`FileRelays::on_sender`].
    pub fn drained(&mut self, channel: &ChannelRef, fullest: usize) -> Vec<Action> {
        let Some(from) = self.outs.get(channel).cloned() else { return Vec::new() };
        let Some(relay) = self.relays.get_mut(&from) else { return Vec::new() };
        if relay.owed == 0 || fullest >= HIGH_WATER {
            return Vec::new();
        }
        relay.held_since = None;
        vec![Action::Credit { to: from, bytes: std::mem::take(&mut relay.owed) }]
    }

    /// The receivers' open channels of the relay of `from` (to ask how full they are).
    pub fn out_channels(&self, from: &ChannelRef) -> Vec<ChannelRef> {
        self.relays.get(from).map_or_else(Vec::new, |r| {
            r.outs
                .iter()
                .filter(|o| !o.gone && o.open)
                .filter_map(|o| o.channel.map(|c| (o.peer.clone(), c)))
                .collect()
        })
    }

    /// The sender's channel of the relay `channel` (a receiver's) belongs to.
    pub fn relay_of(&self, channel: &ChannelRef) -> Option<ChannelRef> {
        self.outs.get(channel).cloned()
    }

    /// A receiver answered on its channel.
    pub fn on_receiver(&mut self, channel: &ChannelRef, data: &[u8]) -> Vec<Action> {
        let Some(from) = self.outs.get(channel).cloned() else { return Vec::new() };
        let Some(relay) = self.relays.get_mut(&from) else { return Vec::new() };
        let Some(out) = relay.outs.iter_mut().find(|o| o.peer == channel.0 && o.channel == Some(channel.1))
        else {
            return Vec::new();
        };
        if out.answer.is_some() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
        out.answer = Some(match v.get("type").and_then(Value::as_str) {
            Some("ack") => v
                .get("sha256")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| "an ack without a digest".to_owned()),
            Some("error") => {
                Err(v.get("reason").and_then(Value::as_str).unwrap_or("refused").chars().take(200).collect())
            }
            _ => Err("an unexpected message".to_owned()),
        });
        // A receiver that refused gets nothing more (and no longer holds the sender back).
        let mut actions = Vec::new();
        if matches!(out.answer, Some(Err(_))) {
            out.gone = true;
            out.queue.clear();
            actions.push(Action::Close(channel.clone()));
            if relay.owed > 0 {
                relay.held_since = None;
                actions.push(Action::Credit { to: from.clone(), bytes: std::mem::take(&mut relay.owed) });
            }
        }
        actions.extend(self.settle(&from));
        actions
    }

    /// Relays whose sender has been held back by a full receiver for [`SLOW_LIMIT`]: the SFU
    /// drops their receivers still full ([`FileRelays::drop_slow`]), since held data closes the
    /// sender's whole SCTP window (its chat and its other transfers too).
    pub fn held_too_long(&self, now: Instant) -> Vec<ChannelRef> {
        self.relays
            .iter()
            .filter(|(_, r)| r.held_since.is_some_and(|at| now.saturating_duration_since(at) >= SLOW_LIMIT))
            .map(|(from, _)| from.clone())
            .collect()
    }

    /// Drops a receiver that took too long to drain: its channel closes, it counts as failed.
    pub fn drop_slow(&mut self, channel: &ChannelRef) -> Vec<Action> {
        let Some(from) = self.outs.get(channel).cloned() else { return Vec::new() };
        let Some(relay) = self.relays.get_mut(&from) else { return Vec::new() };
        let Some(out) =
            relay.outs.iter_mut().find(|o| o.peer == channel.0 && o.channel == Some(channel.1) && !o.gone)
        else {
            return Vec::new();
        };
        out.gone = true;
        out.queue.clear();
        out.answer.get_or_insert_with(|| Err("too slow to receive".to_owned()));
        let mut actions = vec![Action::Close(channel.clone())];
        if relay.owed > 0 {
            relay.held_since = None;
            actions.push(Action::Credit { to: from.clone(), bytes: std::mem::take(&mut relay.owed) });
        }
        actions.extend(self.settle(&from));
        actions
    }

    /// A channel closed, or its participant left (`closed` is then each of its channels).
    pub fn closed(&mut self, channel: &ChannelRef) -> Vec<Action> {
        if let Some(relay) = self.relays.remove(channel) {
            // The sender is done (after its answer) or cancelled: every receiver's channel
            // closes; one that had not answered takes it as a failure, as a mesh peer would.
            for out in &relay.outs {
                if let Some(c) = out.channel {
                    self.outs.remove(&(out.peer.clone(), c));
                }
            }
            return relay
                .outs
                .into_iter()
                .filter(|o| !o.gone)
                .filter_map(|o| o.channel.map(|c| Action::Close((o.peer, c))))
                .collect();
        }
        let Some(from) = self.outs.remove(channel) else { return Vec::new() };
        let Some(relay) = self.relays.get_mut(&from) else { return Vec::new() };
        if let Some(out) = relay.outs.iter_mut().find(|o| o.peer == channel.0 && o.channel == Some(channel.1))
        {
            out.gone = true;
            out.queue.clear();
            out.answer.get_or_insert_with(|| Err("the receiver closed its channel".to_owned()));
        }
        let mut actions = self.settle(&from);
        // A receiver gone may have been the one holding the sender back: the sender goes on,
        // and the next chunk finds out whether another receiver is full.
        if let Some(relay) = self.relays.get_mut(&from) {
            if relay.owed > 0 {
                relay.held_since = None;
                actions.push(Action::Credit { to: from, bytes: std::mem::take(&mut relay.owed) });
            }
        }
        actions
    }

    /// `peer` left: every relay it sends, and its side of every other.
    pub fn left(&mut self, peer: &str) -> Vec<Action> {
        let mine: Vec<ChannelRef> =
            self.relays.keys().chain(self.outs.keys()).filter(|(p, _)| p == peer).cloned().collect();
        let mut actions = Vec::new();
        for channel in mine {
            actions.extend(self.closed(&channel));
        }
        for relay in self.relays.values_mut() {
            relay.candidates.retain(|c| c != peer);
        }
        // Receivers not yet given a channel.
        let pending: Vec<ChannelRef> = self
            .relays
            .iter()
            .filter(|(_, r)| r.outs.iter().any(|o| o.peer == peer && o.channel.is_none() && !o.gone))
            .map(|(k, _)| k.clone())
            .collect();
        for from in pending {
            actions.extend(self.out_failed(&from, peer, "the receiver left"));
        }
        actions
            .retain(|a| !matches!(a, Action::Close((p, _)) | Action::Send { to: (p, _), .. } if p == peer));
        actions
    }

    /// Receivers that have not answered [`ANSWER_WAIT`] after the trailer count as failed.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let late: Vec<ChannelRef> = self
            .relays
            .iter_mut()
            .filter(|(_, r)| {
                !r.answered && r.trailer_at.is_some_and(|at| now.saturating_duration_since(at) >= ANSWER_WAIT)
            })
            .map(|(from, r)| {
                for out in r.outs.iter_mut().filter(|o| o.answer.is_none()) {
                    out.answer = Some(Err("no answer".to_owned()));
                }
                from.clone()
            })
            .collect();
        late.iter().flat_map(|from| self.settle(from)).collect()
    }

    /// Answers the sender once every receiver answered (or is gone).
    fn settle(&mut self, from: &ChannelRef) -> Vec<Action> {
        let Some(relay) = self.relays.get_mut(from) else { return Vec::new() };
        if !relay.started || relay.answered || relay.outs.iter().any(|o| o.answer.is_none()) {
            return Vec::new();
        }
        relay.answered = true;
        let total = relay.outs.len();
        let mut confirmed = 0;
        let mut reasons: Vec<String> = Vec::new();
        for o in &relay.outs {
            match o.answer.as_ref() {
                Some(Ok(digest)) if relay.trailer.as_deref() == Some(digest.as_str()) => confirmed += 1,
                Some(Ok(_)) => reasons.push("sha256 mismatch".to_owned()),
                Some(Err(reason)) => reasons.push(reason.clone()),
                None => {}
            }
        }
        reasons.truncate(REASONS_MAX);
        let answer = match &relay.trailer {
            Some(digest) if confirmed > 0 => json!({
                "type": "ack", "sha256": digest, "receivers": total, "confirmed": confirmed, "failures": reasons,
            }),
            Some(_) => json!({
                "type": "error",
                "reason": format!("none of {total} receivers confirmed it: {}", reasons.first().map_or("", String::as_str)),
                "receivers": total, "confirmed": 0, "failures": reasons,
            }),
            None => json!({
                "type": "error", "reason": "answered before the trailer",
                "receivers": total, "confirmed": 0, "failures": reasons,
            }),
        };
        let (data, binary) = text(answer);
        vec![Action::Send { to: from.clone(), data, binary }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn ch(peer: &str, id: u16) -> ChannelRef {
        (peer.to_owned(), id)
    }

    fn sends(actions: &[Action]) -> Vec<(ChannelRef, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { to, data, .. } => {
                    Some((to.clone(), String::from_utf8_lossy(data).into_owned()))
                }
                _ => None,
            })
            .collect()
    }

    impl FileRelays {
        fn held_back(&mut self, from: &ChannelRef, len: usize) {
            let actions = self.on_sender(t0(), from, vec![0; len], true, HIGH_WATER);
            assert!(!actions.iter().any(|a| matches!(a, Action::Credit { .. })));
        }
    }

    /// [`relay`] with both channels open.
    fn open_relay() -> FileRelays {
        let mut r = relay();
        r.out_open(&ch("b", 10));
        r.out_open(&ch("c", 20));
        r
    }

    const HEADER: &[u8] = br#"{"type":"file","name":"x","size":3}"#;

    /// A relay of a's channel 1 to b and c (channels 10 and 20), header sent, channels not
    /// open yet.
    fn relay() -> FileRelays {
        let mut r = FileRelays::default();
        assert!(r.incoming(ch("a", 1), &["b".into(), "c".into()]).is_empty(), "opened at the header");
        let a = r.on_sender(t0(), &ch("a", 1), HEADER.to_vec(), false, 0);
        assert_eq!(a.iter().filter(|a| matches!(a, Action::OpenOut { .. })).count(), 2);
        r.opened_out(&ch("a", 1), "b", 10);
        r.opened_out(&ch("a", 1), "c", 20);
        r
    }

    #[test]
    fn a_file_reaches_every_receiver_and_the_sender_hears_once_all_acked() {
        let mut r = FileRelays::default();
        r.incoming(ch("a", 1), &["b".into(), "c".into()]);
        // The header opens the receivers' channels and waits for them, and gains "from".
        let a = r.on_sender(t0(), &ch("a", 1), HEADER.to_vec(), false, 0);
        assert!(sends(&a).is_empty());
        assert_eq!(
            a,
            vec![
                Action::OpenOut { to: "b".into(), from: ch("a", 1) },
                Action::OpenOut { to: "c".into(), from: ch("a", 1) },
                Action::Credit { to: ch("a", 1), bytes: 35 }
            ]
        );
        r.opened_out(&ch("a", 1), "b", 10);
        r.opened_out(&ch("a", 1), "c", 20);
        let flushed = r.out_open(&ch("b", 10));
        let (to, header) = &sends(&flushed)[0];
        assert_eq!(to, &ch("b", 10));
        let header: Value = serde_json::from_str(header).unwrap();
        assert_eq!((header["from"].as_str(), header["name"].as_str()), (Some("a"), Some("x")));
        r.out_open(&ch("c", 20));
        let chunk = r.on_sender(t0(), &ch("a", 1), vec![1, 2, 3], true, 0);
        assert_eq!(sends(&chunk).len(), 2);
        r.on_sender(t0(), &ch("a", 1), br#"{"type":"end","sha256":"AB"}"#.to_vec(), false, 0);
        assert!(r.on_receiver(&ch("b", 10), br#"{"type":"ack","sha256":"ab"}"#).is_empty());
        let done = r.on_receiver(&ch("c", 20), br#"{"type":"ack","sha256":"ab"}"#);
        let (to, answer) = &sends(&done)[0];
        assert_eq!(to, &ch("a", 1));
        let answer: Value = serde_json::from_str(answer).unwrap();
        assert_eq!((answer["type"].as_str(), answer["sha256"].as_str()), (Some("ack"), Some("ab")));
        // The sender closes: so do the receivers' channels, and nothing is left.
        let closes = r.closed(&ch("a", 1));
        assert_eq!(closes.len(), 2);
        assert!(r.is_empty() && r.outs.is_empty());
    }

    #[test]
    fn the_sender_hears_how_many_confirmed_and_fails_only_when_none_did() {
        let mut r = open_relay();
        r.on_sender(t0(), &ch("a", 1), br#"{"type":"end","sha256":"ab"}"#.to_vec(), false, 0);
        r.on_receiver(&ch("b", 10), br#"{"type":"ack","sha256":"ab"}"#);
        let done = r.on_receiver(&ch("c", 20), br#"{"type":"error","reason":"file too large"}"#);
        let answer: Value = serde_json::from_str(&sends(&done)[0].1).unwrap();
        assert_eq!(answer["type"], "ack");
        assert_eq!((answer["receivers"].as_u64(), answer["confirmed"].as_u64()), (Some(2), Some(1)));
        assert_eq!(answer["failures"], json!(["file too large"]));
        // A wrong digest in an ack is a failure; nobody confirmed: an error.
        let mut r = open_relay();
        r.on_sender(t0(), &ch("a", 1), br#"{"type":"end","sha256":"ab"}"#.to_vec(), false, 0);
        r.on_receiver(&ch("b", 10), br#"{"type":"ack","sha256":"cd"}"#);
        let left = r.left("c");
        let answer: Value = serde_json::from_str(&sends(&left)[0].1).unwrap();
        assert_eq!(answer["type"], "error");
        assert_eq!(answer["reason"], "none of 2 receivers confirmed it: sha256 mismatch");
    }

    #[test]
    fn receivers_that_never_answer_count_as_failed_after_the_wait() {
        let mut r = open_relay();
        r.on_sender(t0(), &ch("a", 1), br#"{"type":"end","sha256":"ab"}"#.to_vec(), false, 0);
        r.on_receiver(&ch("b", 10), br#"{"type":"ack","sha256":"ab"}"#);
        assert!(r.tick(t0() + ANSWER_WAIT / 2).is_empty());
        let late = r.tick(t0() + ANSWER_WAIT);
        let answer: Value = serde_json::from_str(&sends(&late)[0].1).unwrap();
        assert_eq!((answer["type"].as_str(), answer["confirmed"].as_u64()), (Some("ack"), Some(1)));
        assert_eq!(answer["failures"], json!(["no answer"]));
        assert!(r.tick(t0() + ANSWER_WAIT * 2).is_empty(), "answered once");
    }

    #[test]
    fn a_full_receiver_holds_the_sender_back_until_it_drains() {
        let mut r = open_relay();
        let held = r.on_sender(t0(), &ch("a", 1), vec![0; 1000], true, HIGH_WATER);
        assert!(!held.iter().any(|a| matches!(a, Action::Credit { .. })));
        r.on_sender(t0(), &ch("a", 1), vec![0; 500], true, HIGH_WATER + 1);
        assert!(r.drained(&ch("b", 10), HIGH_WATER).is_empty(), "c is still full");
        assert_eq!(r.drained(&ch("c", 20), LOW_WATER), vec![Action::Credit { to: ch("a", 1), bytes: 1500 }]);
        assert!(r.drained(&ch("c", 20), 0).is_empty(), "nothing owed any more");
        // The full receiver closes its channel instead of draining: the sender goes on.
        r.held_back(&ch("a", 1), 700);
        assert_eq!(r.closed(&ch("c", 20)), vec![Action::Credit { to: ch("a", 1), bytes: 700 }]);
    }

    #[test]
    fn a_receiver_full_for_too_long_is_dropped_and_the_sender_goes_on() {
        let mut r = open_relay();
        r.on_sender(t0(), &ch("a", 1), vec![0; 800], true, HIGH_WATER);
        assert!(r.held_too_long(t0() + SLOW_LIMIT / 2).is_empty());
        assert_eq!(r.held_too_long(t0() + SLOW_LIMIT), vec![ch("a", 1)]);
        let dropped = r.drop_slow(&ch("c", 20));
        assert_eq!(dropped[..2], [Action::Close(ch("c", 20)), Action::Credit { to: ch("a", 1), bytes: 800 }]);
        assert!(r.held_too_long(t0() + SLOW_LIMIT * 2).is_empty());
        // Nothing more goes to it.
        let next = r.on_sender(t0(), &ch("a", 1), vec![1], true, 0);
        assert_eq!(sends(&next).len(), 1);
        // A receiver that refuses is closed at once and gets nothing more either.
        let refused = r.on_receiver(&ch("b", 10), br#"{"type":"error","reason":"no"}"#);
        assert!(refused.contains(&Action::Close(ch("b", 10))));
        assert!(sends(&r.on_sender(t0(), &ch("a", 1), vec![1], true, 0)).is_empty());
    }

    #[test]
    fn the_header_goes_on_rebuilt_so_nobody_can_claim_another_sender() {
        let mut r = FileRelays::default();
        r.incoming(ch("a", 1), &["b".into()]);
        let header =
            br#"{"type":"file","name":"x","size":3,"mime":"a/b","from":"victim","extra":[1],"to":["b"]}"#;
        r.on_sender(t0(), &ch("a", 1), header.to_vec(), false, 0);
        r.opened_out(&ch("a", 1), "b", 10);
        let out = sends(&r.out_open(&ch("b", 10)));
        let v: Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(v, json!({"type": "file", "name": "x", "size": 3, "mime": "a/b", "from": "a"}));
        // serde_json refuses this (a number out of range) where a browser's JSON.parse would
        // not: it is dropped, not passed on raw.
        let odd = br#"{"type":"end","from":"victim","pad":1e400}"#;
        assert!(sends(&r.on_sender(t0(), &ch("a", 1), odd.to_vec(), false, 0)).is_empty());
    }

    #[test]
    fn alone_in_the_room_the_sender_is_told_at_once() {
        let mut r = FileRelays::default();
        let a = r.incoming(ch("a", 1), &[]);
        let answer: Value = serde_json::from_str(&sends(&a)[0].1).unwrap();
        assert_eq!((answer["type"].as_str(), answer["receivers"].as_u64()), (Some("error"), Some(0)));
        assert!(r.is_empty());
    }

    #[test]
    fn a_sender_relays_a_few_files_at_once_not_more() {
        let mut r = FileRelays::default();
        for id in 0..PER_SENDER as u16 {
            assert!(r.incoming(ch("a", id), &["b".into()]).is_empty());
        }
        let refused = sends(&r.incoming(ch("a", 99), &["b".into()]));
        assert_eq!(refused[0].0, ch("a", 99));
        assert!(refused[0].1.contains("too many files at once"), "{}", refused[0].1);
        assert!(!r.is_in(&ch("a", 99)));
        // Another sender is not held back by a's; a's next one goes once one ended.
        assert!(r.incoming(ch("c", 1), &["b".into()]).is_empty());
        r.closed(&ch("a", 0));
        assert!(r.incoming(ch("a", 99), &["b".into()]).is_empty());
    }

    #[test]
    fn a_header_naming_receivers_goes_to_those_only() {
        let mut r = FileRelays::default();
        r.incoming(ch("a", 1), &["b".into(), "c".into(), "d".into()]);
        let header = br#"{"type":"file","name":"x","size":3,"to":["c","zz"]}"#;
        let a = r.on_sender(t0(), &ch("a", 1), header.to_vec(), false, 0);
        assert_eq!(a[0], Action::OpenOut { to: "c".into(), from: ch("a", 1) });
        assert_eq!(a.iter().filter(|a| matches!(a, Action::OpenOut { .. })).count(), 1);
        r.opened_out(&ch("a", 1), "c", 20);
        r.out_open(&ch("c", 20));
        r.on_sender(t0(), &ch("a", 1), br#"{"type":"end","sha256":"ab"}"#.to_vec(), false, 0);
        let done = r.on_receiver(&ch("c", 20), br#"{"type":"ack","sha256":"ab"}"#);
        let answer: Value = serde_json::from_str(&sends(&done)[0].1).unwrap();
        assert_eq!((answer["receivers"].as_u64(), answer["confirmed"].as_u64()), (Some(1), Some(1)));
    }

    #[test]
    fn a_sender_naming_nobody_present_or_starting_without_a_header_is_refused_once() {
        for (first, reason) in [
            (&br#"{"type":"file","name":"x","size":3,"to":["zz"]}"#[..], "none of the peers named"),
            (br#"{"type":"file","name":"x","size":3,"to":"c"}"#, "bad header"),
            (br#"{"type":"file","name":"x","size":3,"to":[]}"#, "bad header"),
            (br#"{"type":"end","sha256":"ab"}"#, "bad header"),
            (b"\x00\x01", "bad header"),
        ] {
            let mut r = FileRelays::default();
            r.incoming(ch("a", 1), &["b".into()]);
            let a = r.on_sender(t0(), &ch("a", 1), first.to_vec(), !first.starts_with(b"{"), 0);
            let out = sends(&a);
            assert_eq!(out.len(), 1, "{first:?}");
            let answer: Value = serde_json::from_str(&out[0].1).unwrap();
            assert_eq!(answer["receivers"].as_u64(), Some(0));
            assert!(answer["reason"].as_str().unwrap().starts_with(reason), "{answer}");
            // Credit still goes back, nothing is opened, and nothing more is answered.
            assert!(a.contains(&Action::Credit { to: ch("a", 1), bytes: first.len() }));
            let later = r.on_sender(t0(), &ch("a", 1), HEADER.to_vec(), false, 0);
            assert_eq!(later, vec![Action::Credit { to: ch("a", 1), bytes: HEADER.len() }]);
            assert!(r.tick(t0() + ANSWER_WAIT * 2).is_empty());
        }
        // Someone who left before the header is not a receiver.
        let mut r = FileRelays::default();
        r.incoming(ch("a", 1), &["b".into(), "c".into()]);
        r.left("b");
        let a = r.on_sender(t0(), &ch("a", 1), HEADER.to_vec(), false, 0);
        assert_eq!(a[0], Action::OpenOut { to: "c".into(), from: ch("a", 1) });
        let mut r = FileRelays::default();
        r.incoming(ch("a", 1), &["b".into()]);
        r.left("b");
        let answer: Value =
            serde_json::from_str(&sends(&r.on_sender(t0(), &ch("a", 1), HEADER.to_vec(), false, 0))[0].1)
                .unwrap();
        assert_eq!(answer["reason"], "nobody else is connected to the server");
    }

    #[test]
    fn garbage_from_either_side_never_panics_and_counts_as_a_refusal() {
        let mut r = open_relay();
        for junk in [&b""[..], b"{", b"\xff\xfe", b"[]", br#"{"type":7}"#, br#"{"type":"file"}"#] {
            r.on_sender(t0(), &ch("a", 1), junk.to_vec(), false, 0);
        }
        r.on_receiver(&ch("b", 10), b"\xff");
        let done = r.on_receiver(&ch("c", 20), b"");
        let answer: Value = serde_json::from_str(&sends(&done)[0].1).unwrap();
        assert_eq!(answer["type"], "error");
        // Unknown channels are ignored.
        assert!(r.on_receiver(&ch("z", 9), b"{}").is_empty());
        assert!(r.on_sender(t0(), &ch("z", 9), vec![1], true, 0).is_empty());
        assert!(r.closed(&ch("z", 9)).is_empty());
    }

    #[test]
    fn a_receiver_that_never_opens_is_dropped_after_a_window_of_queue() {
        let mut r = relay();
        r.out_open(&ch("b", 10));
        let mut closed = false;
        for _ in 0..200 {
            let a = r.on_sender(t0(), &ch("a", 1), vec![0; 16 * 1024], true, 0);
            closed |= a.contains(&Action::Close(ch("c", 20)));
        }
        assert!(closed);
        let relay = &r.relays[&ch("a", 1)];
        assert!(relay.outs.iter().all(|o| o.queued <= QUEUE_MAX));
    }
}
