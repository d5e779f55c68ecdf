//! `peerlink send FILE` and `peerlink recv`: one file over its own `file` data channel in the
//! browser app's framing (docs/file-transfer.md): a JSON header, binary chunks, a JSON
//! trailer with the SHA-256, and the receiver's `ack` (or `error`). Progress goes to standard
//! error (a bar on a terminal, plain lines otherwise); distinct exit codes tell a refused, an
//! interrupted and a corrupted transfer apart.

use crate::peer::MeetArgs;
use crate::room::{Gone, RoomEvent};
use anyhow::Context;
use peerlink_io::PeerHandle;
use peerlink_rtc::{ChannelConfig, ChannelEvent, RtcEvent};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes per binary message (the framing allows 1 to 65,536).
const CHUNK: usize = 64 * 1024;
/// Back-pressure: stop queueing above HIGH, resume at LOW (the app's values).
const HIGH: usize = 4 << 20;
const LOW: usize = 1 << 20;
/// How long the sender waits for the answer after the trailer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Why a transfer did not succeed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The other side refused (answered `error`, or sent something the framing forbids).
    #[error("refused: {0}")]
    Refused(String),
    /// The connection, the channel or the other peer went away before the end.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The bytes arrived but their SHA-256 (or size) does not match.
    #[error("corrupted: {0}")]
    Corrupted(String),
    /// No connection came up, so nothing started.
    #[error("not started: {0}")]
    NotConnected(String),
}

impl TransferError {
    pub fn exit_code(&self) -> u8 {
        match self {
            TransferError::Refused(_) => 3,
            TransferError::Interrupted(_) => 4,
            TransferError::Corrupted(_) => 5,
            TransferError::NotConnected(_) => 6,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The file to send (one regular file)
    pub file: PathBuf,
    /// Send only to the participant with this name (or peer id) [default: to every
    /// participant that connects; exits once each has answered, 0 if any confirmed]
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// How long to wait for a receiver (the --to one, or anyone) to connect before giving up
    /// with exit code 6 (0: forever). Counted from joining the room
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub wait_receiver: u64,
    #[command(flatten)]
    pub meet: MeetArgs,
}

#[derive(Debug, clap::Args)]
pub struct RecvArgs {
    /// Folder to write received files into, never overwriting a file there; made (with its
    /// parents) if missing, and checked to be writable before waiting for a sender
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Stay for more files instead of exiting after the first
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub meet: MeetArgs,
}

/// Progress on standard error: a bar on a terminal, a line every 10 % otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    next_line: u64,
    started: Instant,
    /// The line for the whole size was printed (it is printed once).
    ended: bool,
}

impl Progress {
    fn new(total: u64, what: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
            bar
        });
        Progress { bar, total, done: 0, next_line: 0, started: Instant::now(), ended: false }
    }

    fn advance(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// Moves to `done` bytes (never backwards).
    fn set(&mut self, done: u64) {
        let done = done.min(self.total);
        // Forward only; the whole size once (not on every tick while the answer is awaited).
        if done < self.done || (done == self.done && (done != self.total || self.ended)) {
            return;
        }
        self.done = done;
        self.ended = done == self.total;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if self.done >= self.next_line || self.done == self.total {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = self.done as f64 / secs;
            let eta = if rate > 0.0 { (self.total - self.done) as f64 / rate } else { 0.0 };
            crate::status!(
                "progress: {} of {} bytes ({:.0}%), {:.1} MB/s, eta {:.0} s",
                self.done,
                self.total,
                100.0 * self.done as f64 / self.total.max(1) as f64,
                rate / 1e6,
                eta
            );
            self.next_line = self.done + (self.total / 10).max(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the connection's status lines; a connection that ended is reported by the room.
fn status_line(name: &str, event: &RtcEvent) {
    match event {
        RtcEvent::SelectedPair { local_kind, remote_kind, local, remote } => {
            // Exactly the line DESIGN.md names; the addresses on their own line.
            crate::status!("selected pair: {local_kind} -> {remote_kind}");
            crate::status!("peerlink: path {local} -> {remote} ({name})");
        }
        RtcEvent::ConnectionState(state) => crate::status!("peerlink: connection {state:?} ({name})"),
        _ => {}
    }
}

/// How a connection's end reads for a transfer: a connection that never came up did not
/// interrupt anything.
fn gone_error(reason: &Gone, what: &str) -> TransferError {
    match reason {
        Gone::Failed { during_setup: true, .. } => TransferError::NotConnected(reason.to_string()),
        _ => TransferError::Interrupted(format!("{reason} {what}")),
    }
}

/// The file to send, checked before anyone is waited for.
async fn open_file(path: &Path) -> anyhow::Result<(tokio::fs::File, u64)> {
    let meta = tokio::fs::metadata(path).await.with_context(|| format!("{}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!(
            "{} is a folder: send one file (an archive of the folder, for example)",
            path.display()
        );
    }
    if !meta.is_file() {
        anyhow::bail!("{} is not a regular file", path.display());
    }
    let file = tokio::fs::File::open(path).await.with_context(|| format!("{}", path.display()))?;
    Ok((file, meta.len()))
}

/// One outgoing transfer, to one peer.
struct Outgoing {
    peer: String,
    name: String,
    handle: PeerHandle,
    channel: u16,
    file: tokio::fs::File,
    hash: Sha256,
    /// Bytes of the file queued so far.
    sent: u64,
    /// Bytes of header queued before the file.
    header_bytes: u64,
    progress: Option<Progress>,
    trailer_at: Option<Instant>,
    result: Option<Result<(), TransferError>>,
    /// A send failed: the connection is going; its end (or an answer that came before it)
    /// decides the result.
    broken: bool,
}

impl Outgoing {
    /// Queues file bytes while the channel is under the high-water mark, then the trailer.
    async fn pump(&mut self, size: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        if self.progress.is_none() || self.trailer_at.is_some() || self.result.is_some() || self.broken {
            return Ok(());
        }
        while self.handle.buffered_amount(self.channel).await < HIGH && self.sent < size {
            let want = buf.len().min(usize::try_from(size - self.sent).unwrap_or(usize::MAX));
            let n = self.file.read(&mut buf[..want]).await?;
            if n == 0 {
                self.result =
                    Some(Err(TransferError::Interrupted("the file got shorter while being sent".into())));
                return Ok(());
            }
            self.hash.update(&buf[..n]);
            if let Err(e) = self.handle.send(self.channel, buf[..n].to_vec(), true).await {
                tracing::debug!(error = %e, "send failed; waiting for the connection's end");
                self.broken = true;
                return Ok(());
            }
            self.sent += n as u64;
        }
        if self.sent == size {
            let digest = hex(&self.hash.clone().finalize());
            let trailer = json!({"type": "end", "sha256": digest}).to_string();
            if let Err(e) = self.handle.send(self.channel, trailer.into_bytes(), false).await {
                tracing::debug!(error = %e, "send failed; waiting for the connection's end");
                self.broken = true;
                return Ok(());
            }
            self.trailer_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Progress as the receiver acknowledged it (not as queued).
    async fn report(&mut self) {
        let Some(progress) = &mut self.progress else { return };
        let unacknowledged = self.handle.unacknowledged(self.channel).await as u64;
        let acknowledged = (self.header_bytes + self.sent).saturating_sub(unacknowledged);
        progress.set(acknowledged.saturating_sub(self.header_bytes));
    }

    fn on_answer(&mut self, data: &[u8]) {
        let answer: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
        let ours = hex(&self.hash.clone().finalize());
        self.result = match answer["type"].as_str() {
            Some("ack") if self.trailer_at.is_none() => {
                Some(Err(TransferError::Refused("an acknowledgement before the end".into())))
            }
            Some("ack") if answer["sha256"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(&ours)) => {
                Some(Ok(()))
            }
            Some("ack") => Some(Err(TransferError::Corrupted(format!(
                "the receiver's SHA-256 {} is not ours {ours}",
                answer["sha256"]
            )))),
            Some("error") => {
                let reason = answer["reason"].as_str().unwrap_or("no reason").to_owned();
                Some(Err(if reason.contains("sha256") || reason.contains("size mismatch") {
                    TransferError::Corrupted(reason)
                } else {
                    TransferError::Refused(format!("the receiver refused: {reason}"))
                }))
            }
            // A receiver answers nothing but `ack` or `error` (docs/file-transfer.md): a peer
            // that says anything else (an echo, a chat) does not take files, and waiting the
            // full answer time for it would only delay the end.
            other => Some(Err(TransferError::Refused(format!(
                "the peer does not receive files (it sent {}, not an answer)",
                other.map_or_else(
                    || "a text message without a type".to_owned(),
                    |t| format!("a {t:?} message")
                )
            )))),
        };
    }
}

pub async fn send(args: SendArgs) -> anyhow::Result<Result<(), TransferError>> {
    // Checked before waiting for anyone.
    let (_, size) = open_file(&args.file).await?;
    let name = args.file.file_name().map_or("file".into(), |n| n.to_string_lossy().into_owned());
    let mut room = crate::room::join(&args.meet, args.meet.room_options()).await?;
    match &args.to {
        Some(to) => crate::status!("peerlink: waiting for {to} to send {name} ({size} bytes)"),
        None => crate::status!("peerlink: sending {name} ({size} bytes) to every receiver that connects"),
    }
    if args.wait_receiver > 0 {
        crate::status!(
            "peerlink: giving up if no receiver connects within {} s (--wait-receiver)",
            args.wait_receiver
        );
    }
    let mut transfers: HashMap<String, Outgoing> = HashMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut results: Vec<(String, Result<(), TransferError>)> = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Until a receiver connects: when to give up on one coming.
    let mut give_up_at =
        (args.wait_receiver > 0).then(|| Instant::now() + Duration::from_secs(args.wait_receiver));
    loop {
        tokio::select! {
            event = room.next() => {
                let Some(event) = event else { break };
                match event {
                    RoomEvent::Connecting { peer, handle, .. } => {
                        names.insert(peer.id.clone(), peer.name.clone());
                        if args.to.as_ref().is_some_and(|to| *to != peer.name && *to != peer.id) {
                            crate::status!("peerlink: {} ({}) is not --to {}; not sending to it", peer.name, peer.id, args.to.as_deref().unwrap_or(""));
                            continue;
                        }
                        let (file, _) = open_file(&args.file).await?;
                        let channel = match handle.create_data_channel(ChannelConfig::reliable("file")).await {
                            Ok(channel) => channel,
                            Err(e) => {
                                crate::status!("peerlink: cannot open a channel to {}: {e}", peer.name);
                                continue;
                            }
                        };
                        handle.set_buffered_amount_low_threshold(channel, LOW);
                        give_up_at = None;
                        transfers.insert(peer.id.clone(), Outgoing {
                            peer: peer.id,
                            name: peer.name,
                            handle,
                            channel,
                            file,
                            hash: Sha256::new(),
                            sent: 0,
                            header_bytes: 0,
                            progress: None,
                            trailer_at: None,
                            result: None,
                            broken: false,
                        });
                    }
                    RoomEvent::Gone { peer, reason } => {
                        if let Some(mut t) = transfers.remove(&peer) {
                            let result = t.result.take().unwrap_or_else(|| Err(gone_error(&reason, "before the receiver confirmed")));
                            results.push((t.name, result));
                        } else if let Some(name) = names.get(&peer) {
                            crate::status!("peerlink: {name} ({peer}): {reason}");
                        }
                    }
                    RoomEvent::Rtc { peer, event } => {
                        let Some(t) = transfers.get_mut(&peer) else {
                            if let Some(name) = names.get(&peer) { status_line(name, &event); }
                            continue;
                        };
                        status_line(&t.name, &event);
                        match event {
                            RtcEvent::Channel(ChannelEvent::Open(id)) if id == t.channel => {
                                let mime = "application/octet-stream";
                                let header = json!({"type": "file", "name": name, "size": size, "mime": mime}).to_string();
                                t.header_bytes = header.len() as u64;
                                if let Err(e) = t.handle.send(t.channel, header.into_bytes(), false).await {
                                    t.result = Some(Err(TransferError::Interrupted(format!("sending: {e}"))));
                                } else {
                                    crate::status!("peerlink: sending {name} ({size} bytes) to {}", t.name);
                                    t.progress = Some(Progress::new(size, &name));
                                }
                            }
                            RtcEvent::Channel(ChannelEvent::Message { id, data, binary: false }) if id == t.channel => t.on_answer(&data),
                            RtcEvent::Channel(ChannelEvent::Closed(id)) if id == t.channel && t.result.is_none() => {
                                t.result = Some(Err(TransferError::Interrupted("the receiver closed the channel before it answered".into())));
                            }
                            _ => {}
                        }
                        t.pump(size, &mut buf).await?;
                    }
                    RoomEvent::Mode(peerlink::session::RoomMode::Sfu) => anyhow::bail!("file transfer needs direct connections, and this room goes through the server (SFU mode: too many participants); nothing was sent"),
                    _ => {}
                }
            }
            _ = tick.tick() => {
                if give_up_at.is_some_and(|at| Instant::now() >= at) {
                    room.close().await;
                    let whom = args.to.as_deref().map_or_else(|| "no receiver".to_owned(), |to| format!("{to} did not"));
                    return Ok(Err(TransferError::NotConnected(format!(
                        "{whom} connected within {} s (--wait-receiver); nothing was sent",
                        args.wait_receiver
                    ))));
                }
                for t in transfers.values_mut() {
                    t.pump(size, &mut buf).await?;
                    t.report().await;
                    if t.result.is_none() && t.trailer_at.is_some_and(|at| at.elapsed() > ANSWER_WAIT) {
                        t.result = Some(Err(TransferError::Interrupted(format!("no answer within {ANSWER_WAIT:?} of the trailer"))));
                    }
                }
            }
        }
        // Finished transfers close their channel and are counted.
        let done: Vec<String> =
            transfers.values().filter(|t| t.result.is_some()).map(|t| t.peer.clone()).collect();
        for peer in done {
            let mut t = transfers.remove(&peer).expect("listed");
            if let Some(p) = &mut t.progress {
                if matches!(t.result, Some(Ok(()))) {
                    p.set(size);
                }
                p.finish();
            }
            t.handle.close_channel(t.channel);
            let result = t.result.take().expect("finished");
            if result.is_ok() {
                let secs = t.progress.as_ref().map_or(0.0, |p| p.started.elapsed().as_secs_f64());
                crate::status!(
                    "peerlink: {name} sent to {}; the receiver confirmed its SHA-256 ({size} bytes in {secs:.2} s, {:.1} MB/s)",
                    t.name,
                    size as f64 / 1e6 / secs.max(1e-9)
                );
            }
            results.push((t.name, result));
        }
        // Done once every transfer begun has ended and none is left.
        if !results.is_empty() && transfers.is_empty() {
            break;
        }
    }
    // A graceful close: the channel closes and everything queued reach the other side first.
    room.close().await;
    if results.is_empty() {
        return Ok(Err(TransferError::NotConnected(
            "signaling ended before anyone received the file".into(),
        )));
    }
    // With --to, the one transfer decides. Without it, a participant that is not a receiver
    // (a chat, a page that does not take files) must not fail the others: success once any
    // receiver confirmed, each failure reported.
    let confirmed = results.iter().filter(|(_, r)| r.is_ok()).count();
    let mut first_error = None;
    for (peer, result) in results {
        if let Err(e) = result {
            if first_error.is_none() && (args.to.is_some() || confirmed == 0) {
                first_error = Some(e);
            } else {
                crate::status!("peerlink: transfer to {peer} {e}");
            }
        }
    }
    Ok(match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    })
}

/// A file name from the peer made safe (docs/file-transfer.md "Header").
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).collect();
    let cleaned: String = cleaned.trim_start_matches('.').chars().take(255).collect();
    if cleaned.trim().is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// `dir/name`, or `dir/name (1)` ... when that exists: never overwrite.
async fn free_path(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, tokio::fs::File)> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 0..10_000 {
        let candidate = if n == 0 { name.to_owned() } else { format!("{stem} ({n}){ext}") };
        let path = dir.join(&candidate);
        match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("{}", path.display())),
        }
    }
    anyhow::bail!("no free name for {name} in {}", dir.display())
}

/// The folder files go into, checked (and made, if missing) before anyone is waited for.
async fn prepare_out(dir: &Path) -> anyhow::Result<()> {
    match tokio::fs::metadata(dir).await {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => anyhow::bail!("--out {}: this is a file, not a folder", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tokio::fs::create_dir_all(dir).await.with_context(|| format!("--out {}", dir.display()))?;
            crate::status!("peerlink: created the folder {}", dir.display());
        }
        Err(e) => return Err(e).with_context(|| format!("--out {}", dir.display())),
    }
    // A file can be made there (permissions, read-only file system): try it now rather than
    // when a file arrives.
    let probe = dir.join(format!(".peerlink-write-check-{}", std::process::id()));
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .await
        .with_context(|| format!("--out {}: cannot write there", dir.display()))?;
    let _ = tokio::fs::remove_file(&probe).await;
    Ok(())
}

/// One incoming file.
struct Incoming {
    name: String,
    size: u64,
    got: u64,
    hash: Sha256,
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    progress: Progress,
}

/// A `file` channel of one peer: waiting for its header, or receiving.
struct FileChannel {
    handle: PeerHandle,
    incoming: Option<Incoming>,
}

fn refusal(reason: &str) -> Vec<u8> {
    json!({"type": "error", "reason": reason}).to_string().into_bytes()
}

/// What one message on a `file` channel did: nothing final yet, or the transfer's end.
async fn on_file_message(
    out: &Path,
    channel: &mut FileChannel,
    id: u16,
    data: Vec<u8>,
    binary: bool,
) -> anyhow::Result<Option<Result<(), TransferError>>> {
    let handle = channel.handle.clone();
    let refuse = |reason: String, error: TransferError| async move {
        let _ = handle.send(id, refusal(&reason), false).await;
        Ok(Some(Err(error)))
    };
    match (channel.incoming.as_mut(), binary) {
        (None, false) => {
            let header: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            let (Some("file"), Some(name), Some(size)) =
                (header["type"].as_str(), header["name"].as_str(), header["size"].as_u64())
            else {
                return refuse("bad header".into(), TransferError::Refused("bad header".into())).await;
            };
            let name = safe_name(name);
            let (path, file) = match free_path(out, &name).await {
                Ok(found) => found,
                Err(e) => {
                    // The sender learns why (exit 3 there), not just that we left.
                    let reason = format!("cannot write the file: {e:#}");
                    return refuse(reason.clone(), TransferError::Refused(reason)).await;
                }
            };
            crate::status!("peerlink: receiving {name} ({size} bytes) into {}", path.display());
            let progress = Progress::new(size, &name);
            let file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            channel.incoming =
                Some(Incoming { name, size, got: 0, hash: Sha256::new(), path, file, progress });
            Ok(None)
        }
        (None, true) => {
            refuse("data before header".into(), TransferError::Refused("data before header".into())).await
        }
        (Some(c), true) => {
            c.got += data.len() as u64;
            if c.got > c.size {
                let reason = "more data than announced".to_owned();
                return refuse(reason.clone(), TransferError::Corrupted(reason)).await;
            }
            c.hash.update(&data);
            if let Err(e) = c.file.write_all(&data).await {
                let reason = format!("cannot write the file: {e}");
                return refuse(reason.clone(), TransferError::Refused(reason)).await;
            }
            c.progress.advance(data.len() as u64);
            Ok(None)
        }
        (Some(c), false) => {
            let trailer: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            if trailer["type"].as_str() != Some("end") {
                let reason = "unexpected text message".to_owned();
                return refuse(reason.clone(), TransferError::Refused(reason)).await;
            }
            if let Err(e) = c.file.flush().await {
                let reason = format!("cannot write the file: {e}");
                return refuse(reason.clone(), TransferError::Refused(reason)).await;
            }
            c.progress.finish();
            let ours = hex(&c.hash.clone().finalize());
            let theirs = trailer["sha256"].as_str().unwrap_or("");
            if c.got != c.size {
                let reason = format!("size mismatch: {} of {}", c.got, c.size);
                return refuse(reason.clone(), TransferError::Corrupted(reason)).await;
            }
            if !theirs.eq_ignore_ascii_case(&ours) {
                return refuse("sha256 mismatch".into(), TransferError::Corrupted("sha256 mismatch".into()))
                    .await;
            }
            let ack = json!({"type": "ack", "sha256": ours}).to_string().into_bytes();
            if let Err(e) = channel.handle.send(id, ack, false).await {
                return Ok(Some(Err(TransferError::Interrupted(format!("answering: {e}")))));
            }
            crate::status!("peerlink: {} received, SHA-256 {ours} checks ({})", c.name, c.path.display());
            channel.incoming = None;
            Ok(Some(Ok(())))
        }
    }
}

pub async fn recv(args: RecvArgs) -> anyhow::Result<Result<(), TransferError>> {
    prepare_out(&args.out).await?;
    let mut room = crate::room::join(&args.meet, args.meet.room_options()).await?;
    let mut names: HashMap<String, String> = HashMap::new();
    // Connections not gone.
    let mut live: HashMap<String, PeerHandle> = HashMap::new();
    // (peer, channel id) -> the channel's state.
    let mut files: HashMap<(String, u16), FileChannel> = HashMap::new();
    let result = loop {
        let Some(event) = room.next().await else {
            break Err(TransferError::Interrupted("signaling ended".into()));
        };
        match event {
            RoomEvent::Connecting { peer, handle, .. } => {
                live.insert(peer.id.clone(), handle);
                names.insert(peer.id, peer.name);
            }
            RoomEvent::Gone { peer, reason } => {
                let name = names.get(&peer).cloned().unwrap_or_else(|| peer.clone());
                live.remove(&peer);
                let receiving = files.iter().any(|((p, _), f)| *p == peer && f.incoming.is_some());
                files.retain(|(p, _), _| *p != peer);
                if receiving {
                    break Err(gone_error(&reason, "before the whole file arrived"));
                }
                crate::status!("peerlink: {name} ({peer}): {reason}");
                // Someone else may still send: stay, unless this connection could not be set
                // up and no other is left to wait for.
                if let Gone::Failed { during_setup: true, .. } = reason {
                    if !args.keep_going && live.is_empty() {
                        break Err(gone_error(&reason, ""));
                    }
                }
            }
            RoomEvent::Rtc { peer, event } => {
                let name = names.get(&peer).cloned().unwrap_or_else(|| peer.clone());
                status_line(&name, &event);
                match event {
                    RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == "file" => {
                        if let Some(handle) = live.get(&peer) {
                            files.insert((peer, id), FileChannel { handle: handle.clone(), incoming: None });
                        }
                    }
                    RtcEvent::Channel(ChannelEvent::Message { id, data, binary }) => {
                        let Some(channel) = files.get_mut(&(peer.clone(), id)) else { continue };
                        match on_file_message(&args.out, channel, id, data, binary).await? {
                            None => {}
                            Some(Ok(())) if args.keep_going => {}
                            // With --keep-going one bad transfer does not end the others.
                            Some(Err(e)) if args.keep_going => {
                                crate::status!("peerlink: transfer from {name} {e}");
                                files.remove(&(peer.clone(), id));
                            }
                            // The answer reaches the sender before the connection goes: the
                            // room closes it gracefully.
                            Some(end) => break end,
                        }
                    }
                    RtcEvent::Channel(ChannelEvent::Closed(id)) => {
                        if let Some(channel) = files.remove(&(peer, id)) {
                            if channel.incoming.is_some() {
                                break Err(TransferError::Interrupted(format!(
                                    "{name} closed the channel before the end"
                                )));
                            }
                        }
                    }
                    _ => {}
                }
            }
            RoomEvent::Mode(peerlink::session::RoomMode::Sfu) => anyhow::bail!("file transfer needs direct connections, and this room goes through the server (SFU mode: too many participants); nothing was received"),
            _ => {}
        }
    };
    room.close().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_peer_are_made_safe() {
        assert_eq!(safe_name("photo.jpg"), "photo.jpg");
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("C:\\Users\\x\\evil.exe"), "evil.exe");
        assert_eq!(safe_name("...hidden"), "hidden");
        assert_eq!(safe_name("a\u{0}b\u{1b}[31mc"), "ab[31mc");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name("dir/"), "file");
        assert_eq!(safe_name(&"x".repeat(300)).len(), 255);
    }

    #[tokio::test]
    async fn an_existing_file_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("peerlink-recv-test-{}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.unwrap();
        let (a, _) = free_path(&dir, "notes.txt").await.unwrap();
        let (b, _) = free_path(&dir, "notes.txt").await.unwrap();
        let (c, _) = free_path(&dir, "notes.txt").await.unwrap();
        assert_eq!(a.file_name().unwrap(), "notes.txt");
        assert_eq!(b.file_name().unwrap(), "notes (1).txt");
        assert_eq!(c.file_name().unwrap(), "notes (2).txt");
        tokio::fs::remove_dir_all(&dir).await.unwrap();
    }
}
