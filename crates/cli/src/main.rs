//! `peerlink`: one binary for the servers and the native peer.

mod chat;
mod echo;
mod media;
mod peer;
mod play;
mod record;
mod room;
mod transfer;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use peerlink_server::shutdown::wait_for_signal;
use peerlink_server::{ServeOptions, StunConfig, StunServer, TurnOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "peerlink",
    version,
    about = "WebRTC peer-to-peer communication: STUN/TURN/signaling server and a native WebRTC peer",
    long_about = "WebRTC peer-to-peer communication.\n\n\
        Servers: `serve` runs every service in one process, `stun` a STUN server alone, `turn` a \
        TURN relay (which answers STUN Binding too).\n\
        Peers: `send`, `recv`, `chat` and `echo` talk to browsers and other peers through a signaling server.\n\n\
        Logs go to standard error; set RUST_LOG (e.g. RUST_LOG=debug) for more detail."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every Peerlink service in one process: the browser app and signaling on --http,
    /// STUN and TURN on --listen
    #[command(long_about = "Run every Peerlink service in one process.\n\n\
        The browser app (video call, chat, file transfer) and the signaling WebSocket (/ws) on \
        --http; STUN and TURN on --listen (UDP and TCP, same port). Browsers get this server's \
        STUN and TURN in `iceServers`, with TURN REST credentials derived from the first \
        --auth-secret (a random secret for this run when none is given). Prints the URL to open.\n\n\
        Stops cleanly on Ctrl-C or SIGTERM.")]
    Serve(Box<ServeOptions>),
    /// Run a STUN server (RFC 8489 Binding) on UDP and TCP
    Stun(StunArgs),
    /// Run a TURN relay (RFC 8656) on UDP and TCP; it answers STUN Binding too
    Turn(Box<TurnOptions>),
    /// Send a file to a peer in a room (a browser with the Peerlink app, or `peerlink recv`)
    #[command(long_about = "Send a file to a peer in a room.\n\n\
        Joins ROOM, connects to the other participant (a browser with the Peerlink app, or \
        `peerlink recv`), sends FILE on its own data channel in the app's framing \
        (docs/file-transfer.md) and exits 0 once the receiver confirmed the SHA-256: to the \
        participant named by --to, or to every participant that connects (then once each has \
        answered: success if any receiver confirmed, the others' failures printed; a participant \
        that takes no files, such as `peerlink chat` or `peerlink echo`, counts as refusing at \
        once). FILE is checked before anyone is waited for, and a receiver is waited for at most \
        --wait-receiver seconds. Progress (what the receiver \
        acknowledged) goes to standard error. Exit codes: 3 refused by the receiver (its \
        reason is printed), 4 interrupted (connection, channel or peer gone), 5 corrupted (the \
        hashes differ), 6 no connection could be set up, or no receiver came (and why), 1 other errors (bad \
        input, a server that cannot be reached).")]
    Send(transfer::SendArgs),
    /// Receive a file from a peer in a room into --out (never overwriting)
    #[command(long_about = "Receive a file from a peer in a room.\n\n\
        Joins ROOM, connects to the other participants, receives one file from any of them \
        (several with --keep-going) into --out under its sent name made safe, never \
        overwriting an existing file, and exits 0 once its SHA-256 checks. --out is made if \
        missing and checked to be writable before anyone is waited for; a file that cannot be \
        written is refused with the reason. Exit codes as for `send`.")]
    Recv(transfer::RecvArgs),
    /// Chat with the other peers of a room over data channels
    #[command(long_about = "Chat with the other peers of a room over data channels.\n\n\
        Joins ROOM on the signaling server and connects to every other participant (browsers \
        with the Peerlink app, other `peerlink chat`s). Each line of standard input is sent as \
        one message to all of them (lines typed before any channel opens are sent once one \
        opens); each message received is printed on its own line on standard output. Status \
        goes to standard error, including `selected pair: <local> -> <remote>` for each \
        connection. Ends when standard input ends (once what was sent is acknowledged), or \
        when the last other peer has gone. A signaling server that stops or restarts does not \
        end the chat: the connections stay up and the client rejoins when it is back. A file \
        someone sends to chat is refused at once (`peerlink send` says so).")]
    Chat(peer::MeetArgs),
    /// Send every data channel message and media track back to its sender (a test peer)
    #[command(long_about = "Send everything back: a test peer for calls and data channels.\n\n\
        Joins ROOM and connects to every other participant. Each data channel message goes back \
        on its channel (text as text, binary as binary, in order); each audio and video track \
        received goes back to its sender on the same transceiver, in the codec it came in (video \
        from a key frame on). When echo joins after the others it offers audio and video \
        (sendrecv) and a data channel. Runs until Ctrl-C or SIGTERM.")]
    Echo(peer::MeetArgs),
    /// Send media files (IVF, H.264, Ogg/Opus, WebM) to everyone in a room, paced in real time
    #[command(long_about = "Send media files to everyone in a room, paced in real time.\n\n\
        Joins ROOM and sends the files' audio and video to every participant, each frame when \
        its timestamp comes (the clock starts when the first participant is connected; a later \
        one joins at the next video key frame). Formats: .ivf (VP8, VP9, AV1), .h264/.264 \
        (Annex B H.264, at --fps), .ogg/.opus (Opus), .webm/.mkv (VP8/VP9/AV1 + Opus). `-` reads \
        standard input (--format ivf|h264|ogg), e.g. `ffmpeg ... -f ivf - | peerlink play - \
        --format ivf ...`. Codecs are never transcoded: a participant that cannot take the \
        file's codec gets no track. Simulcast: each --layer FILE is the same video encoded \
        smaller (same codec and frame rate, lowest first), sent as a layer of its own on the one \
        video track, e.g. `peerlink play --layer low.ivf high.ivf audio.ogg ...`; an SFU (`serve \
        --room-mode sfu`) forwards each participant the layer it picks, a participant without \
        simulcast gets the top layer. Exits 0 at the end of the files (unless --loop; all \
        layers start over together); a file that is not what its name says, or is cut short, \
        is an error naming the file.")]
    Play(play::PlayArgs),
    /// Record every participant of a room into DIR, one WebM or Matroska file each
    #[command(long_about = "Record every participant of a room into DIR.\n\n\
        One file per participant: WebM (VP8/VP9/AV1 video, Opus audio), Matroska when the video \
        is H.264; audio and video on one time line (the senders' RTCP reports). Files are \
        finalised (seekable) when the participant leaves, after --duration, on Ctrl-C/SIGTERM, \
        or when the room empties (then record exits 0). Existing files are never overwritten.")]
    Record(record::RecordArgs),
}

#[derive(Debug, Args)]
struct StunArgs {
    /// Address to answer on, UDP and TCP on the same port (repeat for several; [::]:PORT
    /// serves IPv4 and IPv6) [default: 0.0.0.0:3478]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// UDP receive threads per address, each with its own SO_REUSEPORT socket [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    udp_workers: Option<u16>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// TOML file whose keys are the long option names with `_` for `-`; options given on the
    /// command line win
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

const DEFAULT_LISTEN: &str = "0.0.0.0:3478";

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(options) => peerlink_server::serve::run(*options),
        Command::Stun(args) => run_stun(args),
        Command::Turn(options) => peerlink_server::serve::run_turn(*options),
        Command::Send(args) => {
            return transfer_exit(runtime().and_then(|rt| rt.block_on(transfer::send(args))))
        }
        Command::Recv(args) => {
            return transfer_exit(runtime().and_then(|rt| rt.block_on(transfer::recv(args))))
        }
        Command::Chat(args) => runtime().and_then(|rt| rt.block_on(chat::run(args))),
        Command::Echo(args) => runtime().and_then(|rt| rt.block_on(echo::run(args))),
        Command::Play(args) => runtime().and_then(|rt| rt.block_on(play::run(args))),
        Command::Record(args) => runtime().and_then(|rt| rt.block_on(record::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::status!("peerlink: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a transfer: 0, its own code for a refused, interrupted or corrupted
/// transfer, 1 for any other error.
fn transfer_exit(result: anyhow::Result<Result<(), transfer::TransferError>>) -> ExitCode {
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            crate::status!("peerlink: transfer {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            crate::status!("peerlink: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start runtime")
}

fn run_stun(args: StunArgs) -> anyhow::Result<()> {
    // The file is the one every command reads; `stun` takes three of its keys.
    let file = match &args.config {
        Some(path) => ServeOptions::load(path)?,
        None => ServeOptions::default(),
    };
    let listen = first_non_empty(args.listen, file.turn.listen, DEFAULT_LISTEN);
    let workers = args.udp_workers.map(usize::from).or(file.udp_workers);
    let metrics = args.metrics.or(file.turn.metrics);
    runtime()?.block_on(async move {
        let mut servers = Vec::new();
        for addr in listen {
            let mut config = StunConfig::new(addr);
            if let Some(n) = workers {
                config.udp_workers = n;
            }
            let server = StunServer::start(config).await?;
            // A stable line on stdout that scripts can read (the port when 0 was asked).
            crate::say!("peerlink stun: stun listening on {} (udp, tcp)", server.local_addr());
            servers.push(server);
        }
        if let Some(addr) = metrics {
            let stats: Vec<_> = servers.iter().map(|s| s.stats().clone()).collect();
            let render: peerlink_server::metrics::Render = std::sync::Arc::new(move || {
                let total = peerlink_server::StunStats::default();
                for s in &stats {
                    total.add(s);
                }
                peerlink_server::metrics::render_stun(&total)
            });
            let (local, _task) = peerlink_server::metrics::serve(addr, render, None).await?;
            crate::say!("peerlink stun: metrics at http://{local}/metrics");
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        for server in servers {
            server.stop().await;
        }
        Ok(())
    })
}

fn first_non_empty(cli: Vec<SocketAddr>, file: Vec<SocketAddr>, default: &str) -> Vec<SocketAddr> {
    if !cli.is_empty() {
        cli
    } else if !file.is_empty() {
        file
    } else {
        vec![default.parse().expect("valid default")]
    }
}
