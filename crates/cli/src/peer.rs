//! What every native peer command shares: where to meet (`MeetArgs`), standard input read
//! off the runtime, and small timer helpers. The room itself is in `room.rs`.

use std::net::IpAddr;
use tokio::sync::mpsc;

/// Where to meet the other peer.
#[derive(Debug, Clone, clap::Args)]
pub struct MeetArgs {
    /// Signaling server, e.g. ws://127.0.0.1:8080/ws, or wss://HOST/ws through TLS (the
    /// certificate is checked against the system's roots; SSL_CERT_FILE=ca.pem trusts that
    /// file's CA certificates instead, for a private CA)
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// Room to join (1-64 of A-Z a-z 0-9 _ . -)
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    /// Name shown to the other participants [default: peerlink-<pid>]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Room token, when the server requires one (HS256 JWT)
    #[arg(long, value_name = "JWT", env = "PEERLINK_TOKEN")]
    pub token: Option<String>,
    /// Local address to gather host candidates on (repeat for several) [default: every IPv4
    /// and global or unique-local IPv6 address that is up]
    #[arg(long, value_name = "IP")]
    pub bind: Vec<IpAddr>,
    /// How long to keep trying a signaling server that refuses connections or does not
    /// answer before giving up (0: forever). Once joined, a lost server is retried for as long
    /// as it takes, and connections already up stay up meanwhile
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    /// The data channels' SCTP congestion controller: `bbr` (a model of the path: keeps a
    /// long or lossy path full, paced, with a near-empty queue) or `rfc9260` (loss-based, as
    /// other WebRTC stacks) [default: bbr]
    #[arg(long, value_name = "NAME", env = "PEERLINK_CONGESTION_CONTROL")]
    pub congestion_control: Option<CongestionChoice>,
}

/// `--congestion-control` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CongestionChoice {
    Bbr,
    Rfc9260,
}

impl From<CongestionChoice> for peerlink_rtc::CongestionControl {
    fn from(choice: CongestionChoice) -> Self {
        match choice {
            CongestionChoice::Bbr => peerlink_rtc::CongestionControl::Bbr,
            CongestionChoice::Rfc9260 => peerlink_rtc::CongestionControl::Rfc9260,
        }
    }
}

impl MeetArgs {
    /// The options of the room's session (what the commands with media join with, adding
    /// their tracks).
    pub fn room_options(&self) -> peerlink::session::SessionOptions {
        let mut session = peerlink::session::SessionOptions::default();
        session.token = self.token.clone();
        session.bind = self.bind.clone();
        session.wait = (self.wait > 0).then(|| std::time::Duration::from_secs(self.wait));
        session.congestion_control = self.congestion_control.map(Into::into);
        session.status = Some(crate::room::status_sink());
        // Commands without media answer a peer's audio and video as inactive: it sends
        // nothing the command would throw away.
        session.accept_media = Some(peerlink_rtc::Direction::Inactive);
        session
    }
}

/// Sleeps until `at`, or forever.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Lines of standard input, read on a thread of their own (a blocking read cannot be
/// cancelled, and must not keep the runtime from shutting down); `None` at the end of
/// input (or on a read error, which is reported).
pub fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) => {
                    if tx.blocking_send(line).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    crate::status!("peerlink: standard input: {e}");
                    return;
                }
            }
        }
    });
    rx
}

/// Writes one whole line to standard output in one write (announcements that scripts wait
/// for).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }};
}

/// Writes one whole line to standard error in one write (status lines are not interleaved
/// with other output in fragments).
#[macro_export]
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}
