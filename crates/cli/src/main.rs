//! `peerlink`: one binary for the servers and the native peer.

mod config;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use config::FileConfig;
use ipnet::IpNet;
use peerlink_server::{StunConfig, StunServer, TurnConfig};
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use std::net::{IpAddr, SocketAddr};
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
        Peers: `send`, `recv` and `chat` talk to browsers and other peers through a signaling server.\n\n\
        Logs go to standard error; set RUST_LOG (e.g. RUST_LOG=debug) for more detail."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every Peerlink service in one process (today: STUN and TURN on --listen)
    #[command(long_about = "Run every Peerlink service in one process.\n\n\
        Today this is STUN and TURN on --listen (UDP and TCP, same port), with a random TURN REST \
        secret unless --auth-secret or --user is given. Signaling with the browser app (--http) \
        arrives in a later version.")]
    Serve(TurnArgs),
    /// Run a STUN server (RFC 8489 Binding) on UDP and TCP
    Stun(StunArgs),
    /// Run a TURN relay (RFC 8656) on UDP and TCP; it answers STUN Binding too
    Turn(TurnArgs),
    /// Send a file to a peer in a room (not built yet)
    Send(NotYet),
    /// Receive a file from a peer in a room (not built yet)
    Recv(NotYet),
    /// Chat over a data channel (not built yet)
    Chat(NotYet),
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

#[derive(Debug, Args)]
struct TurnArgs {
    /// Address clients reach, UDP and TCP on the same port [default: 0.0.0.0:3478]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Realm of the long-term credentials [default: peerlink]
    #[arg(long, value_name = "R")]
    realm: Option<String>,
    /// A static user (repeat for several). Prefer the config file: arguments are visible to
    /// other local users
    #[arg(long, value_name = "NAME:PASS")]
    user: Vec<String>,
    /// TURN REST shared secret (coturn's use-auth-secret): username `expiry[:name]`, password
    /// base64(HMAC-SHA1(secret, username)). Repeat to accept several during a rotation
    #[arg(long, value_name = "S")]
    auth_secret: Vec<String>,
    /// Address relays are opened on, one IPv4 and/or one IPv6 [default: the listen address, or
    /// the first non-loopback address of each family when listening on all]
    #[arg(long, value_name = "IP")]
    relay_ip: Vec<IpAddr>,
    /// Relay port range [default: 49152-65535]
    #[arg(long, value_name = "MIN-MAX")]
    relay_ports: Option<String>,
    /// Let clients relay to loopback peers (for tests on one machine; unsafe on a server)
    #[arg(long)]
    allow_loopback_peers: bool,
    /// Let clients relay to this range although the defaults refuse it (repeat for several)
    #[arg(long, value_name = "CIDR")]
    allow_peer: Vec<IpNet>,
    /// Refuse relaying to this range (repeat for several; wins over --allow-peer)
    #[arg(long, value_name = "CIDR")]
    deny_peer: Vec<IpNet>,
    /// Allocations one user may hold at once [default: 10]
    #[arg(long, value_name = "N")]
    max_allocations_per_user: Option<usize>,
    /// Allocations the server holds at once, over all users [default: 10000]
    #[arg(long, value_name = "N")]
    max_allocations: Option<usize>,
    /// Relayed bytes per second per allocation, both directions together; packets over it
    /// are dropped [default: no limit]
    #[arg(long, value_name = "BYTES")]
    max_bandwidth: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Certificate chain (PEM) for TURN over TLS; reloaded with --key on SIGHUP without
    /// dropping allocations
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// TURN over TLS address [default: the listen IP, port 5349; only with --cert]
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// TOML file whose keys are the long option names with `_` for `-` (lists for repeatable
    /// options); options given on the command line win
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
        Command::Serve(args) => run_turn("serve", args),
        Command::Stun(args) => run_stun(args),
        Command::Turn(args) => run_turn("turn", args),
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
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn load(path: &Option<PathBuf>) -> anyhow::Result<FileConfig> {
    match path {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::default()),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start runtime")
}

fn run_stun(args: StunArgs) -> anyhow::Result<()> {
    let file = load(&args.config)?;
    let listen = first_non_empty(args.listen, file.listen, DEFAULT_LISTEN);
    let workers = args.udp_workers.map(usize::from).or(file.udp_workers);
    let metrics = args.metrics.or(file.metrics);
    runtime()?.block_on(async move {
        let mut servers = Vec::new();
        for addr in listen {
            let mut config = StunConfig::new(addr);
            if let Some(n) = workers {
                config.udp_workers = n;
            }
            let server = StunServer::start(config).await?;
            // A stable line on stdout that scripts can read (the port when 0 was asked).
            println!("peerlink stun: stun listening on {} (udp, tcp)", server.local_addr());
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
            let (local, _task) = peerlink_server::metrics::serve(addr, render).await?;
            println!("peerlink stun: metrics at http://{local}/metrics");
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

fn run_turn(command: &str, args: TurnArgs) -> anyhow::Result<()> {
    let file = load(&args.config)?;
    let listen = match (args.listen, file.listen.as_slice()) {
        (Some(addr), _) => addr,
        (None, [addr]) => *addr,
        (None, []) => DEFAULT_LISTEN.parse().expect("valid default"),
        (None, _) => anyhow::bail!("`peerlink {command}` takes one listen address"),
    };
    let realm = args.realm.or(file.realm).unwrap_or_else(|| "peerlink".to_owned());
    let mut credentials = Credentials::new();
    let users = if args.user.is_empty() { file.user } else { args.user };
    for user in &users {
        let (name, pass) = config::parse_user(user).with_context(|| "bad --user".to_string())?;
        credentials.add_user(&name, &pass);
    }
    let secrets = if args.auth_secret.is_empty() { file.auth_secret } else { args.auth_secret };
    for secret in &secrets {
        if secret.is_empty() {
            anyhow::bail!("--auth-secret must not be empty");
        }
        credentials.add_secret(secret.as_bytes());
    }
    if credentials.is_empty() {
        if command == "turn" {
            anyhow::bail!("`peerlink turn` needs credentials: give --user NAME:PASS or --auth-secret S");
        }
        credentials.add_secret(&random_bytes());
        tracing::info!("no TURN credentials configured: using a random REST secret for this run");
    }
    let relay_ips = if !args.relay_ip.is_empty() {
        args.relay_ip
    } else if !file.relay_ip.is_empty() {
        file.relay_ip
    } else if !listen.ip().is_unspecified() {
        vec![listen.ip()]
    } else {
        peerlink_server::turn::default_relay_ips()
    };
    if relay_ips.iter().filter(|ip| ip.is_ipv4()).count() > 1
        || relay_ips.iter().filter(|ip| ip.is_ipv6()).count() > 1
    {
        anyhow::bail!("--relay-ip takes at most one IPv4 and one IPv6 address");
    }
    let relay_ports = match args.relay_ports.or(file.relay_ports) {
        Some(text) => config::parse_port_range(&text).context("bad --relay-ports")?,
        None => 49152..=65535,
    };
    let policy = PeerPolicy {
        allow_loopback: args.allow_loopback_peers || file.allow_loopback_peers.unwrap_or(false),
        allow: if args.allow_peer.is_empty() { file.allow_peer } else { args.allow_peer },
        deny: if args.deny_peer.is_empty() { file.deny_peer } else { args.deny_peer },
    };
    let mut core = ServerConfig::new(&realm, credentials, random_bytes());
    core.policy = policy;
    core.software = Some(format!("peerlink {}", env!("CARGO_PKG_VERSION")));
    if let Some(n) = args.max_allocations_per_user.or(file.max_allocations_per_user) {
        core.max_allocations_per_user = n;
    }
    if let Some(n) = args.max_allocations.or(file.max_allocations) {
        core.max_allocations = n;
    }
    core.max_bytes_per_second = args.max_bandwidth.or(file.max_bandwidth).filter(|&n| n > 0);
    let cert = args.cert.or(file.cert);
    let key = args.key.or(file.key);
    let tls = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            let addr = args.tls_listen.or(file.tls_listen).unwrap_or(SocketAddr::new(listen.ip(), 5349));
            Some((addr, peerlink_server::tls::load(cert, key)?))
        }
        (None, None) => None,
        _ => anyhow::bail!("TURN over TLS needs both a certificate and a key"),
    };
    let config = TurnConfig {
        listen,
        relay_ips: relay_ips.clone(),
        relay_ports,
        max_tcp_connections: 4096,
        core,
        tls,
    };
    let handle = std::sync::Arc::new(peerlink_server::turn::start(config)?);
    println!(
        "peerlink {command}: turn listening on {} (udp, tcp), realm {realm}, relays on {:?}",
        handle.local_addr(),
        relay_ips
    );
    if let Some(addr) = handle.tls_addr() {
        println!("peerlink {command}: turn listening on {addr} (tls)");
    }
    if command == "serve" {
        tracing::info!("signaling and the browser app are not built yet; serving STUN and TURN");
    }
    let metrics = args.metrics.or(file.metrics);
    let shared = handle.shared_stats();
    let reloader = handle.clone();
    runtime()?.block_on(async move {
        // SIGHUP: read the certificate and key again (renewals), keep every allocation.
        if let (Some(cert), Some(key)) = (cert, key) {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match peerlink_server::tls::load(&cert, &key) {
                        Ok(config) => reloader.reload_tls(config),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "tls reload failed; keeping the old certificate")
                        }
                    }
                }
            });
        }
        let _task = match metrics {
            Some(addr) => {
                let render: peerlink_server::metrics::Render = std::sync::Arc::new(move || {
                    let stats = shared.lock().map(|s| s.clone()).unwrap_or_default();
                    peerlink_server::metrics::render_turn(&stats)
                });
                let (local, task) = peerlink_server::metrics::serve(addr, render).await?;
                println!("peerlink {command}: metrics at http://{local}/metrics");
                Some(task)
            }
            None => None,
        };
        wait_for_signal().await
    })?;
    tracing::info!("shutting down");
    let stats = handle.stats();
    match std::sync::Arc::try_unwrap(handle) {
        Ok(handle) => handle.stop(),
        Err(_) => tracing::warn!("turn server still referenced at shutdown"),
    }
    tracing::info!(?stats, "turn server stopped");
    Ok(())
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the operating system provides randomness");
    bytes
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
