//! `peerlink serve` and `peerlink turn` assembled from their options: TURN (which answers
//! STUN too), signaling (alone or shared through Redis), the browser app over HTTP or HTTPS,
//! metrics, certificate reloading on SIGHUP, and a clean stop on Ctrl-C or SIGTERM.
//!
//! Lines scripts read (what listens where) go to standard output, logs to `tracing`.

use crate::options::{parse_port_range, parse_user, ServeOptions, TurnOptions};
use crate::shutdown::wait_for_signal;
use crate::{https, metrics, tls, Shutdown, TurnConfig, TurnHandle};
use anyhow::Context;
use peerlink_turn::{Credentials, PeerPolicy, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "0.0.0.0:3478";
const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// Runs `peerlink serve` until Ctrl-C or SIGTERM: `options` as given on the command line,
/// over its `config` file's.
pub fn run(options: ServeOptions) -> anyhow::Result<()> {
    let mut options = options.with_file()?;
    let http = options.http.unwrap_or_else(|| DEFAULT_HTTP.parse().expect("valid default"));
    let mut hub = hub_config(&options)?;
    let ttl = options.credential_ttl.unwrap_or(86_400);
    let hub_mode = hub.room_mode;
    let redis = options.redis.take();
    // Every listener is bound before any is announced: a taken HTTP port fails here, before
    // TURN says it is listening.
    let http_listener =
        std::net::TcpListener::bind(http).with_context(|| format!("cannot listen on {http} for HTTP"))?;
    http_listener.set_nonblocking(true)?;
    let turn_urls = if options.turn.cert.is_some() { 3 } else { 2 };
    let quota = allocations_per_credential(&hub, turn_urls);
    let turn = Turn::start("serve", options.turn, quota)?;
    hub.ice = turn.ice_config(Duration::from_secs(ttl));
    runtime()?.block_on(async {
        let signal = match &redis {
            Some(url) => {
                let service = peerlink_signal::redis::start(url, hub, "localhost")
                    .await
                    .with_context(|| format!("cannot connect to redis at {}", redact_url(url)))?;
                say(format_args!("peerlink serve: sharing rooms through redis at {}", redact_url(url)));
                service
            }
            None => peerlink_signal::SignalService::start(hub, "localhost", None),
        };
        let sfu = if redis.is_none() && hub_mode != peerlink_signal::RoomMode::Mesh {
            Some(crate::sfu::start(signal.clone(), crate::sfu::SfuConfig::default()).await)
        } else {
            None
        };
        let metrics_signal = signal.clone();
        let render: metrics::Render = Arc::new(move || {
            let mut out = metrics::render_signal(&metrics_signal.stats_now());
            if let Some(sfu) = &sfu {
                out.push_str(&metrics::render_sfu(sfu));
            }
            out
        });
        // With a certificate, the app is served over HTTPS: browsers on other machines grant
        // camera and microphone to secure pages only.
        let https = match &turn.cert_key {
            Some((cert, key)) => Some(https::TlsConfig::new(tls::load(cert, key)?)),
            None => None,
        };
        turn.spawn_helpers("serve", Some(render), https.clone()).await?;
        let app = signal.router().merge(crate::web::router());
        let listener = tokio::net::TcpListener::from_std(http_listener)?;
        let local = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        let (scheme, ws) = if https.is_some() { ("https", "wss") } else { ("http", "ws") };
        let server = match https {
            Some(tls) => {
                let listener = https::TlsListener::new(listener, tls)?;
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
        say(format_args!("peerlink serve: signaling on {ws}://{local}/ws"));
        say(format_args!("peerlink serve: browser app at {scheme}://{}/", browsable(local)));
        wait_for_signal().await?;
        // Peers get a close frame (1001, going away) before the sockets go.
        signal.shutdown().await;
        shutdown.trigger();
        if tokio::time::timeout(Duration::from_secs(5), server).await.is_err() {
            tracing::warn!("http connections still open after 5 s; closing them");
        }
        anyhow::Ok(())
    })?;
    turn.stop();
    Ok(())
}

/// The signaling hub's settings from `serve`'s options.
pub fn hub_config(options: &ServeOptions) -> anyhow::Result<peerlink_signal::HubConfig> {
    if options.token_secret.as_deref() == Some("") {
        anyhow::bail!("--token-secret must not be empty");
    }
    let mut hub = peerlink_signal::HubConfig::default();
    let mode = options.room_mode.as_deref().unwrap_or("auto");
    hub.room_mode = mode.parse().map_err(anyhow::Error::msg)?;
    hub.mesh_max = options.mesh_max.unwrap_or(4) as usize;
    hub.max_room_peers = match hub.room_mode {
        peerlink_signal::RoomMode::Mesh => 6,
        _ => 50,
    };
    if let Some(n) = options.max_room_peers {
        hub.max_room_peers = n as usize;
    }
    if let Some(n) = options.max_message_bytes {
        hub.max_frame_bytes = n as usize;
    }
    if let Some(n) = options.messages_per_second {
        hub.messages_per_second = f64::from(n);
        hub.message_burst = f64::from(n) * 4.0;
    }
    hub.token_secret = options.token_secret.clone().map(String::into_bytes);
    Ok(hub)
}

/// The TURN allocations one credential handed out by `serve` may hold at once when
/// `--max-allocations-per-user` is not given. Each browser gets its own credential
/// (`expiry:peer-id`) and gathers one relayed candidate per TURN URL (`turn_urls`) for each
/// peer connection it opens, so one browser of a full mesh room of N asks for
/// (N - 1) x URLs; twice that leaves room for ICE restarts, which gather anew before the
/// old allocations go.
pub fn allocations_per_credential(hub: &peerlink_signal::HubConfig, turn_urls: usize) -> usize {
    use peerlink_signal::RoomMode;
    let connections = match hub.room_mode {
        RoomMode::Mesh => hub.max_room_peers.saturating_sub(1),
        RoomMode::Sfu => 1,
        // The largest mesh, and the SFU connection opened while the room switches.
        RoomMode::Auto => hub.mesh_max.min(hub.max_room_peers).saturating_sub(1) + 1,
    };
    connections.max(1) * turn_urls.max(1) * 2
}

/// `peerlink turn`'s default per-user quota: what `serve` allows one browser of a full mesh
/// room (6 peers, `--room-mode mesh`) given UDP, TCP and TLS TURN URLs.
pub const TURN_ALLOCATIONS_PER_USER: usize = 30;

/// Runs `peerlink turn` until Ctrl-C or SIGTERM: `options` as given on the command line,
/// over its `config` file's.
pub fn run_turn(options: TurnOptions) -> anyhow::Result<()> {
    let turn = Turn::start("turn", options.with_file()?, TURN_ALLOCATIONS_PER_USER)?;
    runtime()?.block_on(async {
        turn.spawn_helpers("turn", None, None).await?;
        wait_for_signal().await
    })?;
    turn.stop();
    Ok(())
}

/// A running TURN server and what its command does around it.
struct Turn {
    handle: Arc<TurnHandle>,
    /// The secret `serve` mints browsers' credentials with.
    rest_secret: Option<Vec<u8>>,
    cert_key: Option<(PathBuf, PathBuf)>,
    metrics: Option<SocketAddr>,
}

impl Turn {
    /// Starts TURN from `options` (the file's already under them); `command` names the
    /// command in messages; `quota` is the allocations per user (credential) unless
    /// `--max-allocations-per-user` says otherwise.
    fn start(command: &str, options: TurnOptions, quota: usize) -> anyhow::Result<Turn> {
        let listen = match options.listen.as_slice() {
            [addr] => *addr,
            [] => DEFAULT_LISTEN.parse().expect("valid default"),
            _ => anyhow::bail!("`peerlink {command}` takes one listen address"),
        };
        let realm = options.realm.unwrap_or_else(|| "peerlink".to_owned());
        let mut credentials = Credentials::new();
        let users = options.user;
        for user in &users {
            let (name, pass) = parse_user(user).with_context(|| "bad --user".to_string())?;
            credentials.add_user(&name, &pass);
        }
        let mut secrets: Vec<Vec<u8>> = options.auth_secret.into_iter().map(String::into_bytes).collect();
        if secrets.iter().any(Vec::is_empty) {
            anyhow::bail!("--auth-secret must not be empty");
        }
        if command == "turn" && users.is_empty() && secrets.is_empty() {
            anyhow::bail!("`peerlink turn` needs credentials: give --user NAME:PASS or --auth-secret S");
        }
        if command == "serve" && secrets.is_empty() {
            // Browsers get TURN credentials minted with a REST secret: one is always needed.
            secrets.push(peerlink_proto::os_random::<32>().to_vec());
            tracing::info!("no TURN REST secret configured: using a random one for this run");
        }
        for secret in &secrets {
            credentials.add_secret(secret);
        }
        let relay_ips = if !options.relay_ip.is_empty() {
            options.relay_ip
        } else if !listen.ip().is_unspecified() {
            vec![listen.ip()]
        } else {
            crate::turn::default_relay_ips()
        };
        if relay_ips.iter().filter(|ip| ip.is_ipv4()).count() > 1
            || relay_ips.iter().filter(|ip| ip.is_ipv6()).count() > 1
        {
            anyhow::bail!("--relay-ip takes at most one IPv4 and one IPv6 address");
        }
        let relay_ports = match options.relay_ports {
            Some(text) => parse_port_range(&text).context("bad --relay-ports")?,
            None => 49152..=65535,
        };
        let policy = PeerPolicy {
            allow_loopback: options.allow_loopback_peers,
            allow: options.allow_peer,
            deny: options.deny_peer,
        };
        let mut core = ServerConfig::new(&realm, credentials, peerlink_proto::os_random());
        core.policy = policy;
        core.software = Some(format!("peerlink {}", env!("CARGO_PKG_VERSION")));
        core.max_allocations_per_user = options.max_allocations_per_user.unwrap_or(quota);
        if let Some(n) = options.max_allocations {
            core.max_allocations = n;
        }
        core.max_bytes_per_second = options.max_bandwidth.filter(|&n| n > 0);
        let (cert, key) = (options.cert, options.key);
        let tls = match (&cert, &key) {
            (Some(cert), Some(key)) => {
                let addr = options.tls_listen.unwrap_or(SocketAddr::new(listen.ip(), 5349));
                Some((addr, tls::load(cert, key)?))
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
            // One thread until reservations cross threads: an EVEN-PORT R=1 reservation is held
            // by the thread that made it, and the Allocate that redeems its token comes from
            // another socket, which the kernel may hand to another thread (508).
            threads: options.relay_threads.map_or(1, usize::from),
        };
        let handle = Arc::new(crate::turn::start(config)?);
        say(format_args!(
            "peerlink {command}: turn listening on {} (udp, tcp), realm {realm}, relays on {:?}",
            handle.local_addr(),
            relay_ips
        ));
        if let Some(addr) = handle.tls_addr() {
            say(format_args!("peerlink {command}: turn listening on {addr} (tls)"));
        }
        Ok(Turn {
            handle,
            rest_secret: secrets.into_iter().next(),
            cert_key: cert.zip(key),
            metrics: options.metrics,
        })
    }

    /// SIGHUP reloading and metrics; call inside the runtime.
    async fn spawn_helpers(
        &self,
        command: &str,
        extra: Option<metrics::Render>,
        https: Option<https::TlsConfig>,
    ) -> anyhow::Result<()> {
        // SIGHUP: read the certificate and key again (renewals), keep every allocation.
        if let Some((cert, key)) = self.cert_key.clone() {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?;
            let reloader = self.handle.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match tls::load(&cert, &key) {
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
            let render: metrics::Render = Arc::new(move || {
                let stats = shared.snapshot();
                let mut text = metrics::render_turn(&stats);
                if let Some(extra) = &extra {
                    text.push_str(&extra());
                }
                text
            });
            let (local, _task) = metrics::serve(addr, render).await?;
            say(format_args!("peerlink {command}: metrics at http://{local}/metrics"));
        }
        Ok(())
    }

    /// `iceServers` for browsers: this server's STUN and TURN. `{host}` (the name the browser
    /// reached the app by) stands in for an unspecified listen address.
    fn ice_config(&self, ttl: Duration) -> peerlink_signal::IceConfig {
        let host = |addr: SocketAddr| match addr.ip() {
            ip if ip.is_unspecified() => "{host}".to_owned(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let addr = self.handle.local_addr();
        let (h, port) = (host(addr), addr.port());
        let mut turn_urls =
            vec![format!("turn:{h}:{port}?transport=udp"), format!("turn:{h}:{port}?transport=tcp")];
        if let Some(tls) = self.handle.tls_addr() {
            turn_urls.push(format!("turns:{}:{}?transport=tcp", host(tls), tls.port()));
        }
        peerlink_signal::IceConfig {
            stun_urls: vec![format!("stun:{h}:{port}")],
            turn_urls,
            turn_secret: self.rest_secret.clone(),
            credential_ttl: ttl,
        }
    }

    fn stop(self) {
        tracing::info!("shutting down");
        let stats = self.handle.stats();
        match Arc::try_unwrap(self.handle) {
            Ok(handle) => handle.stop(),
            Err(_) => tracing::warn!("turn server still referenced at shutdown"),
        }
        tracing::info!(?stats, "turn server stopped");
    }
}

/// Writes one whole line to standard output and flushes it: scripts wait for these.
fn say(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let line = format!("{line}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start runtime")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_of_a_redis_url() {
        assert_eq!(redact_url("redis://user:pw@host:6379/"), "redis://…@host:6379/");
        assert_eq!(redact_url("redis://host:6379/"), "redis://host:6379/");
    }

    #[test]
    fn an_unspecified_address_is_browsed_on_loopback() {
        assert_eq!(browsable("0.0.0.0:80".parse().unwrap()), "127.0.0.1:80");
        assert_eq!(browsable("[::]:80".parse().unwrap()), "[::1]:80");
        assert_eq!(browsable("192.0.2.1:80".parse().unwrap()), "192.0.2.1:80");
    }
}
