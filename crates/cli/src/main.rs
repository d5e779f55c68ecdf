//! `peerlink`: one binary for the servers and the native peer.

mod config;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use config::ListenConfig;
use peerlink_server::{StunConfig, StunServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "peerlink",
    version,
    about = "WebRTC peer-to-peer communication: STUN/TURN/signaling server and a native WebRTC peer",
    long_about = "WebRTC peer-to-peer communication.\n\n\
        Servers: `serve` runs every service in one process, `stun` runs a STUN server alone.\n\
        Peers: `send`, `recv` and `chat` talk to browsers and other peers through a signaling server.\n\n\
        Logs go to standard error; set RUST_LOG (e.g. RUST_LOG=debug) for more detail."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every Peerlink service in one process (today: STUN over UDP and TCP)
    #[command(long_about = "Run every Peerlink service in one process.\n\n\
        Today this is the STUN server on --listen (UDP and TCP, same port). Signaling with the \
        browser app (--http) and the TURN relay arrive in later versions.")]
    Serve(ServeArgs),
    /// Run a STUN server (RFC 8489 Binding) on UDP and TCP
    Stun(StunArgs),
    /// Run a TURN relay (not built yet)
    Turn(NotYet),
    /// Send a file to a peer in a room (not built yet)
    Send(NotYet),
    /// Receive a file from a peer in a room (not built yet)
    Recv(NotYet),
    /// Chat over a data channel (not built yet)
    Chat(NotYet),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// STUN address, UDP and TCP (repeat for several) [default: 0.0.0.0:3478]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct StunArgs {
    /// Address to answer on, UDP and TCP on the same port (repeat for several; [::]:PORT
    /// serves IPv4 and IPv6) [default: 0.0.0.0:3478]
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// UDP receive threads per address, each with its own SO_REUSEPORT socket [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    udp_workers: Option<u16>,
    /// TOML file with the same keys as the options (listen, udp_workers); options given on
    /// the command line win
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct NotYet {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

const DEFAULT_LISTEN: &str = "0.0.0.0:3478";

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => run_servers("serve", args.listen, args.common),
        Command::Stun(args) => run_servers("stun", args.listen, args.common),
        Command::Turn(_) => not_yet("turn", "the TURN relay"),
        Command::Send(_) => not_yet("send", "the native peer (file sending)"),
        Command::Recv(_) => not_yet("recv", "the native peer (file receiving)"),
        Command::Chat(_) => not_yet("chat", "the native peer (chat)"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerlink: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_yet(command: &str, what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`peerlink {command}` is not built yet: {what} is still to come in this version")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn run_servers(command: &str, listen: Vec<SocketAddr>, common: CommonArgs) -> anyhow::Result<()> {
    let file = match &common.config {
        Some(path) => ListenConfig::load(path)?,
        None => ListenConfig::default(),
    };
    let listen = if !listen.is_empty() {
        listen
    } else if !file.listen.is_empty() {
        file.listen
    } else {
        vec![DEFAULT_LISTEN.parse().expect("valid default")]
    };
    let workers = common.udp_workers.map(usize::from).or(file.udp_workers);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start runtime")?;
    runtime.block_on(async move {
        let mut servers = Vec::new();
        for addr in listen {
            let mut config = StunConfig::new(addr);
            if let Some(n) = workers {
                config.udp_workers = n;
            }
            let server = StunServer::start(config).await?;
            // A stable line on stdout that scripts can read (the port when 0 was asked).
            println!("peerlink {command}: stun listening on {} (udp, tcp)", server.local_addr());
            servers.push(server);
        }
        if command == "serve" {
            tracing::info!("signaling, browser app and TURN are not built yet; serving STUN only");
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        for server in servers {
            server.stop().await;
        }
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
