//! `peerlink`: one binary for the servers and the native peer.

mod chat;
mod config;
mod peer;
mod room;
mod transfer;

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
    /// Run every Peerlink service in one process: the browser app and signaling on --http,
    /// STUN and TURN on --listen
    #[command(long_about = "Run every Peerlink service in one process.\n\n\
        The browser app (video call, chat, file transfer) and the signaling WebSocket (/ws) on \
        --http; STUN and TURN on --listen (UDP and TCP, same port). Browsers get this server's \
        STUN and TURN in `iceServers`, with TURN REST credentials derived from the first \
        --auth-secret (a random secret for this run when none is given). Prints the URL to open.\n\n\
        Stops cleanly on Ctrl-C or SIGTERM.")]
    Serve(ServeArgs),
    /// Run a STUN server (RFC 8489 Binding) on UDP and TCP
    Stun(StunArgs),
    /// Run a TURN relay (RFC 8656) on UDP and TCP; it answers STUN Binding too
    Turn(TurnArgs),
    /// Send a file to a peer in a room (a browser with the Peerlink app, or `peerlink recv`)
    #[command(long_about = "Send a file to a peer in a room.\n\n\
        Joins ROOM, connects to the other participant (a browser with the Peerlink app, or \
        `peerlink recv`), sends FILE on its own data channel in the app's framing \
        (docs/file-transfer.md) and exits 0 once the receiver confirmed the SHA-256: to the \
        participant named by --to, or to every participant that connects (then once each has \
        answered: success if any receiver confirmed, the others' failures printed). FILE is checked before anyone is waited for. Progress (what the receiver \
        acknowledged) goes to standard error. Exit codes: 3 refused by the receiver (its \
        reason is printed), 4 interrupted (connection, channel or peer gone), 5 corrupted (the \
        hashes differ), 6 no connection could be set up (and why), 1 other errors (bad \
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
        end the chat: the connections stay up and the client rejoins when it is back.")]
    Chat(peer::MeetArgs),
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
    /// Relayed bytes per second per allocation, both directions together; UDP packets over
    /// it are dropped, TCP relays (RFC 6062) are read no faster [default: no limit]
    #[arg(long, value_name = "BYTES")]
    max_bandwidth: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Certificate chain (PEM) for TURN over TLS (and, with `serve`, HTTPS for the browser
    /// app on --http); reloaded with --key on SIGHUP without dropping allocations
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
struct ServeArgs {
    /// HTTP address of the browser app and of the signaling WebSocket (/ws)
    /// [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Require a token to join a room: an HS256 JWT signed with S whose `room` claim is the
    /// room (or "*"); `exp` is honoured. Without it rooms are open to anyone
    #[arg(long, value_name = "S")]
    token_secret: Option<String>,
    /// Share rooms with other `peerlink serve` processes through Redis pub/sub
    /// (e.g. redis://127.0.0.1:6379/)
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Peers in one room [default: 6]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_room_peers: Option<u32>,
    /// How long the TURN credentials handed to browsers stay valid, in seconds [default: 86400]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    credential_ttl: Option<u64>,
    /// Largest signaling message in bytes; larger ones are refused with `too-large`
    /// [default: 65536]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    max_message_bytes: Option<u32>,
    /// Signaling messages per second one connection may send (bursts of four times as many
    /// pass) [default: 50]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    messages_per_second: Option<u32>,
    #[command(flatten)]
    turn: TurnArgs,
}

const DEFAULT_LISTEN: &str = "0.0.0.0:3478";

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Stun(args) => run_stun(args),
        Command::Turn(args) => run_turn("turn", args),
        Command::Send(args) => {
            return transfer_exit(runtime().and_then(|rt| rt.block_on(transfer::send(args))))
        }
        Command::Recv(args) => {
            return transfer_exit(runtime().and_then(|rt| rt.block_on(transfer::recv(args))))
        }
        Command::Chat(args) => runtime().and_then(|rt| rt.block_on(chat::run(args))),
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
            let (local, _task) = peerlink_server::metrics::serve(addr, render).await?;
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

/// A TURN server started from the command line and config file.
struct Turn {
    handle: std::sync::Arc<peerlink_server::TurnHandle>,
    /// The secret `serve` mints browsers' credentials with.
    rest_secret: Option<Vec<u8>>,
    cert_key: Option<(PathBuf, PathBuf)>,
    metrics: Option<SocketAddr>,
}

fn start_turn(command: &str, args: TurnArgs, file: &FileConfig) -> anyhow::Result<Turn> {
    let listen = match (args.listen, file.listen.as_slice()) {
        (Some(addr), _) => addr,
        (None, [addr]) => *addr,
        (None, []) => DEFAULT_LISTEN.parse().expect("valid default"),
        (None, _) => anyhow::bail!("`peerlink {command}` takes one listen address"),
    };
    let realm = args.realm.or(file.realm.clone()).unwrap_or_else(|| "peerlink".to_owned());
    let mut credentials = Credentials::new();
    let users = if args.user.is_empty() { file.user.clone() } else { args.user };
    for user in &users {
        let (name, pass) = config::parse_user(user).with_context(|| "bad --user".to_string())?;
        credentials.add_user(&name, &pass);
    }
    let mut secrets: Vec<Vec<u8>> =
        if args.auth_secret.is_empty() { file.auth_secret.clone() } else { args.auth_secret }
            .into_iter()
            .map(String::into_bytes)
            .collect();
    if secrets.iter().any(Vec::is_empty) {
        anyhow::bail!("--auth-secret must not be empty");
    }
    if command == "turn" && users.is_empty() && secrets.is_empty() {
        anyhow::bail!("`peerlink turn` needs credentials: give --user NAME:PASS or --auth-secret S");
    }
    if command == "serve" && secrets.is_empty() {
        // Browsers get TURN credentials minted with a REST secret: one is always needed.
        secrets.push(random_bytes().to_vec());
        tracing::info!("no TURN REST secret configured: using a random one for this run");
    }
    for secret in &secrets {
        credentials.add_secret(secret);
    }
    let relay_ips = if !args.relay_ip.is_empty() {
        args.relay_ip
    } else if !file.relay_ip.is_empty() {
        file.relay_ip.clone()
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
    let relay_ports = match args.relay_ports.or(file.relay_ports.clone()) {
        Some(text) => config::parse_port_range(&text).context("bad --relay-ports")?,
        None => 49152..=65535,
    };
    let policy = PeerPolicy {
        allow_loopback: args.allow_loopback_peers || file.allow_loopback_peers.unwrap_or(false),
        allow: if args.allow_peer.is_empty() { file.allow_peer.clone() } else { args.allow_peer },
        deny: if args.deny_peer.is_empty() { file.deny_peer.clone() } else { args.deny_peer },
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
    let cert = args.cert.or(file.cert.clone());
    let key = args.key.or(file.key.clone());
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
    crate::say!(
        "peerlink {command}: turn listening on {} (udp, tcp), realm {realm}, relays on {:?}",
        handle.local_addr(),
        relay_ips
    );
    if let Some(addr) = handle.tls_addr() {
        crate::say!("peerlink {command}: turn listening on {addr} (tls)");
    }
    Ok(Turn {
        handle,
        rest_secret: secrets.into_iter().next(),
        cert_key: cert.zip(key),
        metrics: args.metrics.or(file.metrics),
    })
}

impl Turn {
    /// SIGHUP reloading and metrics; call inside the runtime.
    async fn spawn_helpers(
        &self,
        command: &str,
        extra: Option<peerlink_server::metrics::Render>,
        https: Option<peerlink_server::https::TlsConfig>,
    ) -> anyhow::Result<()> {
        // SIGHUP: read the certificate and key again (renewals), keep every allocation.
        if let Some((cert, key)) = self.cert_key.clone() {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?;
            let reloader = self.handle.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match peerlink_server::tls::load(&cert, &key) {
                        Ok(config) => {
                            if let Some(https) = &https {
                                https.replace(config.clone());
                            }
                            reloader.reload_tls(config)
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "tls reload failed; keeping the old certificate")
                        }
                    }
                }
            });
        }
        if let Some(addr) = self.metrics {
            let shared = self.handle.shared_stats();
            let render: peerlink_server::metrics::Render = std::sync::Arc::new(move || {
                let stats = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let mut text = peerlink_server::metrics::render_turn(&stats);
                if let Some(extra) = &extra {
                    text.push_str(&extra());
                }
                text
            });
            let (local, _task) = peerlink_server::metrics::serve(addr, render).await?;
            crate::say!("peerlink {command}: metrics at http://{local}/metrics");
        }
        Ok(())
    }

    fn stop(self) {
        tracing::info!("shutting down");
        let stats = self.handle.stats();
        match std::sync::Arc::try_unwrap(self.handle) {
            Ok(handle) => handle.stop(),
            Err(_) => tracing::warn!("turn server still referenced at shutdown"),
        }
        tracing::info!(?stats, "turn server stopped");
    }
}

fn run_turn(command: &str, args: TurnArgs) -> anyhow::Result<()> {
    let file = load(&args.config)?;
    let turn = start_turn(command, args, &file)?;
    runtime()?.block_on(async {
        turn.spawn_helpers(command, None, None).await?;
        wait_for_signal().await
    })?;
    turn.stop();
    Ok(())
}

const DEFAULT_HTTP: &str = "127.0.0.1:8080";

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = load(&args.turn.config)?;
    let http = args.http.or(file.http).unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default"));
    let token_secret = args.token_secret.or(file.token_secret.clone());
    if token_secret.as_deref() == Some("") {
        anyhow::bail!("--token-secret must not be empty");
    }
    let redis = args.redis.or(file.redis.clone());
    let mut hub = peerlink_signal::HubConfig::default();
    if let Some(n) = args.max_room_peers.or(file.max_room_peers) {
        hub.max_room_peers = n as usize;
    }
    if let Some(n) = args.max_message_bytes.or(file.max_message_bytes) {
        hub.max_frame_bytes = n as usize;
    }
    if let Some(n) = args.messages_per_second.or(file.messages_per_second) {
        hub.messages_per_second = f64::from(n);
        hub.message_burst = f64::from(n) * 4.0;
    }
    hub.token_secret = token_secret.map(String::into_bytes);
    let ttl = args.credential_ttl.or(file.credential_ttl).unwrap_or(86_400);
    // Every listener is bound before any is announced: a taken HTTP port fails here, before
    // TURN says it is listening.
    let http_listener =
        std::net::TcpListener::bind(http).with_context(|| format!("cannot listen on {http} for HTTP"))?;
    http_listener.set_nonblocking(true)?;
    let turn = start_turn("serve", args.turn, &file)?;
    hub.ice = ice_config(&turn, std::time::Duration::from_secs(ttl));
    runtime()?.block_on(async {
        let signal = match &redis {
            Some(url) => {
                let service = peerlink_signal::redis::start(url, hub, "localhost")
                    .await
                    .with_context(|| format!("cannot connect to redis at {}", redact_url(url)))?;
                crate::say!("peerlink serve: sharing rooms through redis at {}", redact_url(url));
                service
            }
            None => peerlink_signal::SignalService::start(hub, "localhost", None),
        };
        let metrics_signal = signal.clone();
        let render: peerlink_server::metrics::Render =
            std::sync::Arc::new(move || peerlink_server::metrics::render_signal(&metrics_signal.stats_now()));
        // With a certificate, the app is served over HTTPS: browsers on other machines grant
        // camera and microphone to secure pages only.
        let https = match &turn.cert_key {
            Some((cert, key)) => {
                Some(peerlink_server::https::TlsConfig::new(peerlink_server::tls::load(cert, key)?))
            }
            None => None,
        };
        turn.spawn_helpers("serve", Some(render), https.clone()).await?;
        let app = signal.router().merge(peerlink_server::web::router());
        let listener = tokio::net::TcpListener::from_std(http_listener)?;
        let local = listener.local_addr()?;
        let shutdown = peerlink_server::Shutdown::new();
        let trigger = shutdown.clone();
        let (scheme, ws) = if https.is_some() { ("https", "wss") } else { ("http", "ws") };
        let server = match https {
            Some(tls) => {
                let listener = peerlink_server::https::TlsListener::new(listener, tls)?;
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { trigger.wait().await })
                        .await
                })
            }
            None => {
                // Signaling is small messages each way: Nagle plus delayed ACKs would add 40 ms
                // stalls.
                let listener =
                    axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                        let _ = tcp.set_nodelay(true);
                    });
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { trigger.wait().await })
                        .await
                })
            }
        };
        crate::say!("peerlink serve: signaling on {ws}://{local}/ws");
        crate::say!("peerlink serve: browser app at {scheme}://{}/", browsable(local));
        wait_for_signal().await?;
        // Peers get a close frame (1001, going away) before the sockets go.
        signal.shutdown().await;
        shutdown.trigger();
        if tokio::time::timeout(std::time::Duration::from_secs(5), server).await.is_err() {
            tracing::warn!("http connections still open after 5 s; closing them");
        }
        anyhow::Ok(())
    })?;
    turn.stop();
    Ok(())
}

/// `iceServers` for browsers: this server's STUN and TURN. `{host}` (the name the browser
/// reached the app by) stands in for an unspecified listen address.
fn ice_config(turn: &Turn, ttl: std::time::Duration) -> peerlink_signal::IceConfig {
    let host = |addr: SocketAddr| match addr.ip() {
        ip if ip.is_unspecified() => "{host}".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let addr = turn.handle.local_addr();
    let (h, port) = (host(addr), addr.port());
    let mut turn_urls =
        vec![format!("turn:{h}:{port}?transport=udp"), format!("turn:{h}:{port}?transport=tcp")];
    if let Some(tls) = turn.handle.tls_addr() {
        turn_urls.push(format!("turns:{}:{}?transport=tcp", host(tls), tls.port()));
    }
    peerlink_signal::IceConfig {
        stun_urls: vec![format!("stun:{h}:{port}")],
        turn_urls,
        turn_secret: turn.rest_secret.clone(),
        credential_ttl: ttl,
    }
}

/// An address a browser on this machine can open.
fn browsable(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[::1]:{}", addr.port()),
        _ => addr.to_string(),
    }
}

/// A Redis URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
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
