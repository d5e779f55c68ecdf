//! `peerlink send FILE` and `peerlink recv`: one file over its own `file` data channel in the
//! browser app's framing (docs/file-transfer.md): a JSON header, binary chunks, a JSON
//! trailer with the SHA-256, and the receiver's `ack` (or `error`). Progress goes to standard
//! error (a bar on a terminal, plain lines otherwise); distinct exit codes tell a refused, an
//! interrupted and a corrupted transfer apart.

use crate::peer::MeetArgs;
use anyhow::Context;
use peerlink::{
    ChannelConfig, ChannelSender, Connection, DataChannel, Gone, Message, Remote, RoomEvent, RoomMode,
    SFU_PEER,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, UnboundedSender};

/// Bytes per binary message (the framing allows 1 to 65,536).
const CHUNK: usize = 64 * 1024;
/// Back-pressure: a channel queues at most this much to send (the app's value), and holds
/// at most this much received and not yet written.
const BUFFER: usize = 4 << 20;
/// How long the sender waits for the answer after the trailer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Through the server: how long to wait before trying again when nobody was there to receive
/// (someone joined, but its connection to the server was not up yet).
const RETRY: Duration = Duration::from_secs(1);

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
    /// participant that connects; exits once each has answered, 0 if any confirmed]. In a
    /// room through the server (SFU mode), the file goes once, to everyone connected to the
    /// server then (or to those called NAME), and the server answers for all of them
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

/// How the receiver's answer (`ack` or `error`) reads; `digest`: ours, once the trailer went.
fn on_answer(text: &str, digest: Option<&str>) -> Result<(), TransferError> {
    let answer: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    match (answer["type"].as_str(), digest) {
        (Some("ack"), None) => Err(TransferError::Refused("an acknowledgement before the end".into())),
        (Some("ack"), Some(ours))
            if answer["sha256"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(ours)) =>
        {
            Ok(())
        }
        (Some("ack"), Some(ours)) => Err(TransferError::Corrupted(format!(
            "the receiver's SHA-256 {} is not ours {ours}",
            answer["sha256"]
        ))),
        // Through the server: nobody (or nobody named) was there to receive it.
        (Some("error"), _) if answer["receivers"].as_u64() == Some(0) => Err(TransferError::NotConnected(
            answer["reason"].as_str().unwrap_or("nobody to receive it").to_owned(),
        )),
        (Some("error"), _) => {
            let reason = answer["reason"].as_str().unwrap_or("no reason").to_owned();
            Err(if reason.contains("sha256") || reason.contains("size mismatch") {
                TransferError::Corrupted(reason)
            } else {
                TransferError::Refused(format!("the receiver refused: {reason}"))
            })
        }
        // A receiver answers nothing but `ack` or `error` (docs/file-transfer.md): a peer
        // that says anything else (an echo, a chat) does not take files, and waiting the
        // full answer time for it would only delay the end.
        (other, _) => Err(TransferError::Refused(format!(
            "the peer does not receive files (it sent {}, not an answer)",
            other.map_or_else(|| "a text message without a type".to_owned(), |t| format!("a {t:?} message"))
        ))),
    }
}

/// Sends the file's bytes (each `send` waits while the channel is above its high-water
/// mark), counting them in `sent`, then the trailer; its SHA-256 once the trailer is
/// queued, `None` when a send failed (the connection is going: its end, or an answer that
/// came before it, decides).
async fn pump(
    sender: &ChannelSender,
    mut file: tokio::fs::File,
    size: u64,
    sent: &AtomicU64,
) -> anyhow::Result<Result<Option<String>, TransferError>> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    while sent.load(Relaxed) < size {
        let want = buf.len().min(usize::try_from(size - sent.load(Relaxed)).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(Err(TransferError::Interrupted("the file got shorter while being sent".into())));
        }
        hash.update(&buf[..n]);
        if let Err(e) = sender.send(&buf[..n]).await {
            tracing::debug!(error = %e, "send failed; waiting for the connection's end");
            return Ok(Ok(None));
        }
        sent.fetch_add(n as u64, Relaxed);
    }
    let digest = hex(&hash.finalize());
    let trailer = json!({"type": "end", "sha256": digest}).to_string();
    if let Err(e) = sender.send_text(&trailer).await {
        tracing::debug!(error = %e, "send failed; waiting for the connection's end");
        return Ok(Ok(None));
    }
    Ok(Ok(Some(digest)))
}

/// One outgoing transfer, to the peer of `conn`: `None` when no channel could be opened.
/// Through the server (`conn` to [`SFU_PEER`]), `to` names the receivers (peer ids; `None`:
/// everyone connected to it).
async fn send_to(
    conn: Connection,
    path: PathBuf,
    name: String,
    size: u64,
    to: Option<Vec<String>>,
) -> anyhow::Result<Option<(String, Result<(), TransferError>)>> {
    let through_server = conn.peer().id == SFU_PEER;
    let peer =
        if through_server { "the room, through the server".to_owned() } else { conn.peer().name.clone() };
    let (file, _) = open_file(&path).await?;
    let open = conn.open_channel(ChannelConfig::reliable("file"));
    tokio::pin!(open);
    let channel = loop {
        tokio::select! {
            channel = &mut open => break channel,
            Some(event) = conn.next_event() => crate::room::print_event(&peer, &event),
        }
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(peerlink::Error::Closed(gone)) => {
            return Ok(Some((peer, Err(gone_error(&gone, "before the receiver confirmed")))))
        }
        Err(e) => {
            crate::status!("peerlink: cannot open a channel to {peer}: {e}");
            return Ok(None);
        }
    };
    let (sender, mut receiver) = channel.split();
    let mime = "application/octet-stream";
    let mut header = json!({"type": "file", "name": name, "size": size, "mime": mime});
    if let Some(to) = to {
        header["to"] = json!(to);
    }
    let header = header.to_string();
    let header_bytes = header.len() as u64;
    if let Err(e) = sender.send_text(&header).await {
        return Ok(Some((peer, Err(TransferError::Interrupted(format!("sending: {e}"))))));
    }
    crate::status!("peerlink: sending {name} ({size} bytes) to {peer}");
    let mut progress = Progress::new(size, &name);
    let sent = AtomicU64::new(0);
    let pump = pump(&sender, file, size, &sent);
    tokio::pin!(pump);
    // Our SHA-256 once the trailer was queued, and when it was acknowledged.
    let mut digest: Option<String> = None;
    let mut pumping = true;
    let mut trailer_at: Option<Instant> = None;
    let mut events = true;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // The answer, as text (through the server it says how many confirmed).
    let mut answer = String::new();
    let result = loop {
        tokio::select! {
            done = &mut pump, if pumping => {
                pumping = false;
                match done? {
                    Ok(Some(d)) => digest = Some(d),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            message = receiver.recv() => match message {
                Some(Message::Text(text)) => {
                    let result = on_answer(&text, digest.as_deref());
                    answer = text;
                    break result;
                }
                Some(Message::Binary(_)) => {}
                None => break Err(match conn.gone() {
                    Some(gone) => gone_error(&gone, "before the receiver confirmed"),
                    None => TransferError::Interrupted("the receiver closed the channel before it answered".into()),
                }),
            },
            event = conn.next_event(), if events => match event {
                Some(event) => crate::room::print_event(&peer, &event),
                None => events = false,
            },
            _ = tick.tick() => {
                // Progress as the receiver acknowledged it (not as queued).
                let unacknowledged = sender.unacknowledged().await as u64;
                let acknowledged = (header_bytes + sent.load(Relaxed)).saturating_sub(unacknowledged);
                progress.set(acknowledged.saturating_sub(header_bytes));
                // The answer's time starts once the trailer was acknowledged (through the
                // server a slow receiver holds the sender back for a while first).
                if digest.is_some() && unacknowledged == 0 {
                    trailer_at.get_or_insert_with(Instant::now);
                }
                if trailer_at.is_some_and(|at| at.elapsed() > ANSWER_WAIT) {
                    break Err(TransferError::Interrupted(format!("no answer within {ANSWER_WAIT:?} of the trailer")));
                }
            }
        }
    };
    if result.is_ok() {
        progress.set(size);
    }
    progress.finish();
    sender.close();
    if result.is_ok() {
        let secs = progress.started.elapsed().as_secs_f64();
        let rate = size as f64 / 1e6 / secs.max(1e-9);
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        match (answer["confirmed"].as_u64(), answer["receivers"].as_u64()) {
            (Some(confirmed), Some(receivers)) => {
                crate::status!(
                    "peerlink: {name} sent to {peer}; {confirmed} of {receivers} receivers confirmed its SHA-256 ({size} bytes in {secs:.2} s, {rate:.1} MB/s)"
                );
                for failure in answer["failures"].as_array().into_iter().flatten() {
                    crate::status!("peerlink: a receiver did not confirm it: {}", failure.as_str().unwrap_or("?"));
                }
            }
            _ => crate::status!(
                "peerlink: {name} sent to {peer}; the receiver confirmed its SHA-256 ({size} bytes in {secs:.2} s, {rate:.1} MB/s)"
            ),
        }
    }
    Ok(Some((peer, result)))
}

pub async fn send(args: SendArgs) -> anyhow::Result<Result<(), TransferError>> {
    // Checked before waiting for anyone.
    let (_, size) = open_file(&args.file).await?;
    let name = args.file.file_name().map_or("file".into(), |n| n.to_string_lossy().into_owned());
    let mut room = crate::room::join_room(&args.meet, BUFFER).await?;
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
    let mut transfers = tokio::task::JoinSet::new();
    let mut results: Vec<(String, Result<(), TransferError>)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Until a receiver connects: when to give up on one coming.
    let deadline = (args.wait_receiver > 0).then(|| Instant::now() + Duration::from_secs(args.wait_receiver));
    let mut give_up_at = deadline;
    // Through the server (SFU mode): the connection to it, who else is in the room (id →
    // name), whether the file is on its way there, and when to try again.
    let mut sfu = false;
    let mut server: Option<Connection> = None;
    let mut present: HashMap<String, String> = HashMap::new();
    let mut via_server = false;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            event = room.next_event() => match event {
                None => break,
                Some(RoomEvent::Connection(conn)) if conn.peer().id == SFU_PEER => server = Some(conn),
                Some(RoomEvent::Connection(conn)) => {
                    let peer = conn.peer().clone();
                    if args.to.as_ref().is_some_and(|to| *to != peer.name && *to != peer.id) {
                        crate::status!("peerlink: {} ({}) is not --to {}; not sending to it", peer.name, peer.id, args.to.as_deref().unwrap_or(""));
                        tokio::spawn(crate::room::report(conn));
                        continue;
                    }
                    give_up_at = None;
                    transfers.spawn(send_to(conn, args.file.clone(), name.clone(), size, None));
                }
                Some(RoomEvent::Mode(mode)) => sfu = mode == RoomMode::Sfu,
                Some(RoomEvent::Joined(p)) => {
                    present.insert(p.id, p.name);
                }
                Some(RoomEvent::Left(id)) => {
                    present.remove(&id);
                }
                Some(_) => {}
            },
            Some(done) = transfers.join_next() => {
                match done?? {
                    // Through the server, nobody was there to take it yet: again in a moment.
                    Some((peer, Err(TransferError::NotConnected(why)))) if via_server => {
                        tracing::debug!(%peer, %why, "nobody received the file through the server yet");
                        via_server = false;
                        give_up_at = deadline;
                        retry_at = Some(Instant::now() + RETRY);
                    }
                    done => {
                        via_server = false;
                        results.extend(done);
                    }
                }
                // Done once every transfer begun has ended.
                if !results.is_empty() && transfers.is_empty() {
                    break;
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
            }
        }
        // Through the server the file goes once, when someone (or the --to one) is there.
        let Some(conn) = server.as_ref().filter(|_| sfu && !via_server && results.is_empty()) else {
            continue;
        };
        if retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        let to: Option<Vec<String>> = args.to.as_ref().map(|to| {
            present.iter().filter(|(id, name)| *id == to || *name == to).map(|(id, _)| id.clone()).collect()
        });
        if present.is_empty() || to.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        via_server = true;
        retry_at = None;
        give_up_at = None;
        transfers.spawn(send_to(conn.clone(), args.file.clone(), name.clone(), size, to));
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

/// What one message on a `file` channel did: nothing final yet, or the transfer's end.
async fn on_file_message(
    out: &Path,
    from: &Sender,
    channel: &ChannelSender,
    incoming: &mut Option<Incoming>,
    message: Message,
) -> anyhow::Result<Option<Result<(), TransferError>>> {
    let refuse = |reason: String, error: TransferError| async move {
        let refusal = json!({"type": "error", "reason": reason}).to_string();
        let _ = channel.send_text(&refusal).await;
        Ok(Some(Err(error)))
    };
    match (incoming.as_mut(), message) {
        (None, Message::Text(text)) => {
            let header: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
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
            crate::status!(
                "peerlink: receiving {name} ({size} bytes) from {} into {}",
                from.who(&header),
                path.display()
            );
            let progress = Progress::new(size, &name);
            let file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            *incoming = Some(Incoming { name, size, got: 0, hash: Sha256::new(), path, file, progress });
            Ok(None)
        }
        (None, Message::Binary(_)) => {
            refuse("data before header".into(), TransferError::Refused("data before header".into())).await
        }
        (Some(c), Message::Binary(data)) => {
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
        (Some(c), Message::Text(text)) => {
            let trailer: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
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
            let ack = json!({"type": "ack", "sha256": ours}).to_string();
            if let Err(e) = channel.send_text(&ack).await {
                return Ok(Some(Err(TransferError::Interrupted(format!("answering: {e}")))));
            }
            crate::status!("peerlink: {} received, SHA-256 {ours} checks ({})", c.name, c.path.display());
            *incoming = None;
            Ok(Some(Ok(())))
        }
    }
}

/// Who sends on a connection: its peer, or (through the server) the participant the header
/// names in `"from"`, by the names the room told.
#[derive(Clone)]
struct Sender {
    peer: String,
    names: Option<Arc<Mutex<HashMap<String, String>>>>,
}

impl Sender {
    fn who(&self, header: &serde_json::Value) -> String {
        let Some(names) = &self.names else { return self.peer.clone() };
        match header["from"].as_str() {
            Some(id) => {
                let name = names.lock().map(|n| n.get(id).cloned()).unwrap_or_default();
                format!("{} ({id}) through the server", name.as_deref().unwrap_or("someone"))
            }
            None => "someone through the server".to_owned(),
        }
    }
}

/// What the tasks of connection number `.0` tell `recv`'s main loop.
enum Received {
    /// A file began to arrive.
    Receiving(u64),
    /// A file's transfer ended (`true`: it had begun, and is over now).
    File(u64, bool, anyhow::Result<Result<(), TransferError>>),
    Gone(u64, Gone),
}

/// A connection of `recv`: its status lines, a task per `file` channel; then its end.
async fn receive_from(
    conn: Connection,
    n: u64,
    out: PathBuf,
    updates: UnboundedSender<Received>,
    from: Sender,
) {
    let name = conn.peer().name.clone();
    let mut events = true;
    loop {
        tokio::select! {
            event = conn.next_event(), if events => match event {
                Some(event) => crate::room::print_event(&name, &event),
                None => events = false,
            },
            channel = conn.accept_channel() => match channel {
                None => break,
                Some(channel) if channel.label() == "file" => {
                    tokio::spawn(receive_file(channel, conn.clone(), n, out.clone(), updates.clone(), from.clone()));
                }
                Some(_) => {}
            },
        }
    }
    let _ = updates.send(Received::Gone(n, conn.closed().await));
}

/// One `file` channel: each file's end is told (after a good one the channel may carry
/// another). A connection that ends under a file is reported by the connection's end.
async fn receive_file(
    channel: DataChannel,
    conn: Connection,
    n: u64,
    out: PathBuf,
    updates: UnboundedSender<Received>,
    from: Sender,
) {
    let (sender, mut receiver) = channel.split();
    let mut incoming = None;
    loop {
        let Some(message) = receiver.recv().await else {
            if incoming.is_some() && conn.gone().is_none() {
                let name = &conn.peer().name;
                let e = TransferError::Interrupted(format!("{name} closed the channel before the end"));
                let _ = updates.send(Received::File(n, true, Ok(Err(e))));
            }
            return;
        };
        let began = incoming.is_some();
        let end = match on_file_message(&out, &from, &sender, &mut incoming, message).await {
            Ok(None) => {
                if !began && incoming.is_some() {
                    let _ = updates.send(Received::Receiving(n));
                }
                continue;
            }
            Ok(Some(end)) => Ok(end),
            Err(e) => Err(e),
        };
        let good = matches!(end, Ok(Ok(())));
        let _ = updates.send(Received::File(n, began, end));
        if !good {
            return;
        }
    }
}

pub async fn recv(args: RecvArgs) -> anyhow::Result<Result<(), TransferError>> {
    prepare_out(&args.out).await?;
    let mut room = crate::room::join_room(&args.meet, BUFFER).await?;
    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    // Connections not gone, by number: the peer's id and name.
    let mut live: HashMap<u64, Remote> = HashMap::new();
    // Files arriving, by connection.
    let mut receiving: HashMap<u64, usize> = HashMap::new();
    let mut count = 0;
    // Who is in the room (id → name): through the server, a file's header names its sender
    // by id.
    let names: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let result = loop {
        tokio::select! {
            event = room.next_event() => match event {
                None => break Err(TransferError::Interrupted("signaling ended".into())),
                Some(RoomEvent::Connection(conn)) => {
                    count += 1;
                    live.insert(count, conn.peer().clone());
                    let through_server = conn.peer().id == SFU_PEER;
                    let from = Sender { peer: conn.peer().name.clone(), names: through_server.then(|| names.clone()) };
                    tokio::spawn(receive_from(conn, count, args.out.clone(), updates_tx.clone(), from));
                }
                Some(RoomEvent::Joined(p)) => {
                    if let Ok(mut names) = names.lock() {
                        names.insert(p.id, p.name);
                    }
                }
                Some(_) => {}
            },
            Some(update) = updates.recv() => match update {
                Received::Receiving(n) => *receiving.entry(n).or_default() += 1,
                Received::File(n, began, end) => {
                    if began {
                        receiving.entry(n).and_modify(|c| *c = c.saturating_sub(1));
                    }
                    let name = live.get(&n).map_or("", |p| &p.name);
                    match end? {
                        Ok(()) if args.keep_going => {}
                        // With --keep-going one bad transfer does not end the others.
                        Err(e) if args.keep_going => crate::status!("peerlink: transfer from {name} {e}"),
                        // The answer reaches the sender before the connection goes: the
                        // room closes it gracefully.
                        end => break end,
                    }
                }
                Received::Gone(n, reason) => {
                    let Some(peer) = live.remove(&n) else { continue };
                    if receiving.remove(&n).is_some_and(|c| c > 0) {
                        break Err(gone_error(&reason, "before the whole file arrived"));
                    }
                    crate::status!("peerlink: {} ({}): {reason}", peer.name, peer.id);
                    // Someone else may still send: stay, unless this connection could not be
                    // set up and no other is left to wait for.
                    if let Gone::Failed { during_setup: true, .. } = reason {
                        if !args.keep_going && live.is_empty() {
                            break Err(gone_error(&reason, ""));
                        }
                    }
                }
            },
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
