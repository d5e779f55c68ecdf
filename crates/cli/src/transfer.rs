//! `peerlink send FILE` and `peerlink recv`: one file over its own `file` data channel in the
//! browser app's framing (docs/file-transfer.md): a JSON header, binary chunks, a JSON
//! trailer with the SHA-256, and the receiver's `ack` (or `error`). Progress goes to standard
//! error (a bar on a terminal, plain lines otherwise); distinct exit codes tell a refused, an
//! interrupted and a corrupted transfer apart.

use crate::peer::{MeetArgs, Session};
use anyhow::Context;
use peerlink_rtc::{ChannelConfig, ChannelEvent, ConnectionState, RtcEvent};
use serde_json::json;
use sha2::{Digest, Sha256};
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
}

impl TransferError {
    pub fn exit_code(&self) -> u8 {
        match self {
            TransferError::Refused(_) => 3,
            TransferError::Interrupted(_) => 4,
            TransferError::Corrupted(_) => 5,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The file to send
    pub file: PathBuf,
    #[command(flatten)]
    pub meet: MeetArgs,
}

#[derive(Debug, clap::Args)]
pub struct RecvArgs {
    /// Folder to write received files into (never overwriting one)
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
        Progress { bar, total, done: 0, next_line: 0, started: Instant::now() }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        } else if self.done >= self.next_line || self.done == self.total {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let rate = self.done as f64 / secs;
            let eta = if rate > 0.0 { (self.total - self.done) as f64 / rate } else { 0.0 };
            eprintln!(
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

/// Waits for the connection and reports the selected pair; other events are returned.
fn status(event: &RtcEvent) -> Result<(), TransferError> {
    match event {
        RtcEvent::SelectedPair { local_kind, remote_kind, local, remote } => {
            // Exactly the line DESIGN.md names; the addresses on their own line.
            eprintln!("selected pair: {local_kind} -> {remote_kind}");
            eprintln!("peerlink: path {local} -> {remote}");
        }
        RtcEvent::ConnectionState(state) => {
            eprintln!("peerlink: connection {state:?}");
            if matches!(state, ConnectionState::Failed | ConnectionState::Closed) {
                return Err(TransferError::Interrupted(format!("the connection is {state:?}")));
            }
        }
        RtcEvent::Channel(ChannelEvent::Ended { reason }) => {
            return Err(TransferError::Interrupted(format!("data channels ended: {reason}")));
        }
        _ => {}
    }
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<Result<(), TransferError>> {
    let mut file =
        tokio::fs::File::open(&args.file).await.with_context(|| format!("{}", args.file.display()))?;
    let size = file.metadata().await?.len();
    let name = args.file.file_name().map_or("file".into(), |n| n.to_string_lossy().into_owned());
    let mut session = Session::meet(&args.meet).await?;
    let channel = session.peer.create_data_channel(ChannelConfig::reliable("file")).await?;
    session.peer.set_buffered_amount_low_threshold(channel, LOW);
    let mut hash = Sha256::new();
    let mut progress: Option<Progress> = None;
    let mut buf = vec![0u8; CHUNK];
    let mut sent: u64 = 0;
    let mut trailer_at: Option<Instant> = None;
    let result = loop {
        // Queue while the channel is open and under the high-water mark.
        if progress.is_some() && trailer_at.is_none() {
            let mut shorter = false;
            while session.peer.buffered_amount(channel).await < HIGH && sent < size {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    shorter = true;
                    break;
                }
                hash.update(&buf[..n]);
                session.peer.send(channel, buf[..n].to_vec(), true).await?;
                sent += n as u64;
                if let Some(p) = &mut progress {
                    p.advance(n as u64);
                }
            }
            if shorter {
                break Err(TransferError::Interrupted("the file got shorter while being sent".into()));
            }
            if sent == size {
                let digest = hex(&hash.clone().finalize());
                let trailer = json!({"type": "end", "sha256": digest}).to_string();
                session.peer.send(channel, trailer.into_bytes(), false).await?;
                trailer_at = Some(Instant::now());
            }
        }
        let wait = trailer_at.map(|t| tokio::time::Instant::from_std(t + ANSWER_WAIT));
        let event = tokio::select! {
            e = session.next() => e?,
            () = crate::peer::sleep_until(wait), if wait.is_some() => {
                break Err(TransferError::Interrupted("no answer within 60 s of the trailer".into()));
            }
        };
        let Some(event) = event else { break Err(TransferError::Interrupted("the other peer left".into())) };
        if let Err(e) = status(&event) {
            break Err(e);
        }
        match event {
            RtcEvent::Channel(ChannelEvent::Open(id)) if id == channel => {
                let mime = "application/octet-stream";
                let header = json!({"type": "file", "name": name, "size": size, "mime": mime}).to_string();
                session.peer.send(channel, header.into_bytes(), false).await?;
                eprintln!("peerlink: sending {name} ({size} bytes)");
                progress = Some(Progress::new(size, &name));
            }
            RtcEvent::Channel(ChannelEvent::Message { id, data, binary: false }) if id == channel => {
                let answer: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                let ours = hex(&hash.clone().finalize());
                match answer["type"].as_str() {
                    Some("ack")
                        if answer["sha256"].as_str().is_some_and(|h| h.eq_ignore_ascii_case(&ours)) =>
                    {
                        break Ok(());
                    }
                    Some("ack") => {
                        break Err(TransferError::Corrupted(format!(
                            "the receiver's SHA-256 {} is not ours {ours}",
                            answer["sha256"]
                        )));
                    }
                    Some("error") => {
                        let reason = answer["reason"].as_str().unwrap_or("no reason").to_owned();
                        break Err(if reason.contains("sha256") {
                            TransferError::Corrupted(reason)
                        } else {
                            TransferError::Refused(reason)
                        });
                    }
                    _ => {}
                }
            }
            RtcEvent::Channel(ChannelEvent::Closed(id)) if id == channel => {
                break Err(TransferError::Interrupted("the receiver closed the channel".into()));
            }
            _ => {}
        }
    };
    if let Some(p) = &progress {
        p.finish();
    }
    session.peer.close_channel(channel);
    // Let the close reach the other side.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.close().await;
    if result.is_ok() {
        let secs = progress.as_ref().map_or(0.0, |p| p.started.elapsed().as_secs_f64());
        eprintln!(
            "peerlink: {name} sent; the receiver confirmed its SHA-256 ({size} bytes in {secs:.2} s, {:.1} MB/s)",
            size as f64 / 1e6 / secs.max(1e-9)
        );
    }
    Ok(result)
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

/// One incoming file on channel `id`.
struct Incoming {
    id: u16,
    name: String,
    size: u64,
    got: u64,
    hash: Sha256,
    path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    progress: Progress,
}

pub async fn recv(args: RecvArgs) -> anyhow::Result<Result<(), TransferError>> {
    tokio::fs::create_dir_all(&args.out).await.with_context(|| format!("{}", args.out.display()))?;
    let mut session = Session::meet(&args.meet).await?;
    let mut files: Vec<u16> = Vec::new();
    let mut current: Option<Incoming> = None;
    let result = loop {
        let Some(event) = session.next().await? else {
            break Err(TransferError::Interrupted("the other peer left".into()));
        };
        if let Err(e) = status(&event) {
            break Err(e);
        }
        match event {
            RtcEvent::Channel(ChannelEvent::Incoming { id, label, .. }) if label == "file" => files.push(id),
            RtcEvent::Channel(ChannelEvent::Message { id, data, binary }) if files.contains(&id) => {
                let refuse =
                    |reason: &str| json!({"type": "error", "reason": reason}).to_string().into_bytes();
                match (current.as_mut().filter(|c| c.id == id), binary) {
                    (None, false) => {
                        let header: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                        let (Some("file"), Some(name), Some(size)) =
                            (header["type"].as_str(), header["name"].as_str(), header["size"].as_u64())
                        else {
                            session.peer.send(id, refuse("bad header"), false).await?;
                            break Err(TransferError::Refused("bad header".into()));
                        };
                        let name = safe_name(name);
                        let (path, file) = free_path(&args.out, &name).await?;
                        eprintln!("peerlink: receiving {name} ({size} bytes) into {}", path.display());
                        let progress = Progress::new(size, &name);
                        let file = tokio::io::BufWriter::with_capacity(1 << 20, file);
                        current = Some(Incoming {
                            id,
                            name,
                            size,
                            got: 0,
                            hash: Sha256::new(),
                            path,
                            file,
                            progress,
                        });
                    }
                    (None, true) => {
                        session.peer.send(id, refuse("data before header"), false).await?;
                        break Err(TransferError::Refused("data before header".into()));
                    }
                    (Some(c), true) => {
                        c.got += data.len() as u64;
                        if c.got > c.size {
                            session.peer.send(id, refuse("more data than announced"), false).await?;
                            break Err(TransferError::Corrupted("more data than announced".into()));
                        }
                        c.hash.update(&data);
                        c.file.write_all(&data).await?;
                        c.progress.advance(data.len() as u64);
                    }
                    (Some(c), false) => {
                        let trailer: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                        if trailer["type"].as_str() != Some("end") {
                            session.peer.send(id, refuse("unexpected text message"), false).await?;
                            break Err(TransferError::Refused("unexpected text message".into()));
                        }
                        c.file.flush().await?;
                        c.progress.finish();
                        let ours = hex(&c.hash.clone().finalize());
                        let theirs = trailer["sha256"].as_str().unwrap_or("");
                        let (ok, reason) = if c.got != c.size {
                            (false, format!("size mismatch: {} of {}", c.got, c.size))
                        } else if !theirs.eq_ignore_ascii_case(&ours) {
                            (false, "sha256 mismatch".to_owned())
                        } else {
                            (true, String::new())
                        };
                        if ok {
                            session
                                .peer
                                .send(
                                    id,
                                    json!({"type": "ack", "sha256": ours}).to_string().into_bytes(),
                                    false,
                                )
                                .await?;
                            eprintln!(
                                "peerlink: {} received, SHA-256 {ours} checks ({})",
                                c.name,
                                c.path.display()
                            );
                            current = None;
                            if !args.keep_going {
                                // Let the answer leave before closing.
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                break Ok(());
                            }
                        } else {
                            session.peer.send(id, refuse(&reason), false).await?;
                            break Err(TransferError::Corrupted(reason));
                        }
                    }
                }
            }
            RtcEvent::Channel(ChannelEvent::Closed(id)) if current.as_ref().is_some_and(|c| c.id == id) => {
                break Err(TransferError::Interrupted("the sender closed the channel before the end".into()));
            }
            _ => {}
        }
    };
    session.close().await;
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
