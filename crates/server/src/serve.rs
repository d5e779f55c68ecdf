//! `peerlink serve` and `peerlink turn` assembled from their options: TURN (which answers
//! STUN too), signaling (alone or shared through Redis), the browser app over HTTP or HTTPS,
//! metrics, certificate reloading on SIGHUP, and a clean stop on Ctrl-C or SIGTERM.
//!
//! Lines scripts read (what listens where) go to standard output, logs to `tracing`.

use crate::options::{
    check_public_name, parse_external_ips, parse_port_range, parse_user, ServeOptions, TurnOptions,
};
use crate::shutdown::wait_for_signal;
use crate::{acme, https, metrics, tls, Shutdown, TurnConfig, TurnHandle};
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
    let acme = acme_from(&options, http)?;
    let mut hub = hub_config(&options)?;
    let ttl = options.credential_ttl.unwrap_or(86_400);
    let hub_mode = hub.room_mode;
    let redis = options.redis.take();
    let video = peerlink_sfu::VideoPolicy {
        last_n: options.last_n.map(|n| n as usize),
        thumbnails_above: options
            .thumbnails_above
            .map_or(peerlink_sfu::VideoPolicy::default().thumbnails_above, |n| n as usize),
    };
    // Every listener is bound before any is announced: a taken HTTP port fails here, before
    // TURN says it is listening.
    let http_listener =
        std::net::TcpListener::bind(http).with_context(|| format!("cannot listen on {http} for HTTP"))?;
    http_listener.set_nonblocking(true)?;
    let name = match (&options.public_name, &acme) {
        (None, Some(acme)) => Some(acme.settings().domains[0].clone()),
        _ => public_name(options.public_name.as_deref(), options.turn.cert.as_deref())?,
    };
    let acme_http = match acme.as_ref().and_then(|a| a.settings().http) {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} for --acme-http"))?;
            listener.set_nonblocking(true)?;
            Some(listener)
        }
        None => None,
    };
    let acme_tls = acme.as_ref().map(|acme| acme.server_config()).transpose()?;
    let turn_urls = if options.turn.cert.is_some() || acme_tls.is_some() { 3 } else { 2 };
    let quota = allocations_per_credential(&hub, turn_urls);
    let turn = Turn::start("serve", options.turn, quota, acme_tls.clone())?;
    hub.ice = turn.ice_config(Duration::from_secs(ttl), name.as_deref());
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
            let config = crate::sfu::SfuConfig { video, ..crate::sfu::SfuConfig::default() };
            Some(crate::sfu::start(signal.clone(), config).await)
        } else {
            None
        };
        let metrics_signal = signal.clone();
        let sfu_stats = sfu.clone();
        let render: metrics::Render = Arc::new(move || {
            let mut out = metrics::render_signal(&metrics_signal.stats_now());
            if let Some(sfu) = &sfu {
                out.push_str(&metrics::render_sfu(sfu));
            }
            out
        });
        // With a certificate, the app is served over HTTPS: browsers on other machines grant
        // camera and microphone to secure pages only.
        let https = match (&turn.cert_key, acme_tls) {
            (Some((cert, key)), _) => Some(https::TlsConfig::new(tls::load(cert, key)?)),
            (None, Some(config)) => Some(https::TlsConfig::with_acme(config)),
            (None, None) => None,
        };
        let not_after = match (&turn.cert_key, &acme) {
            (Some((cert, _)), _) => tls::cert_info(cert).ok().map(|info| info.not_after),
            (None, Some(acme)) => acme.validity().map(|(_, not_after)| not_after),
            (None, None) => None,
        };
        let installer = Installer::new(https.clone(), turn.handle.clone(), not_after);
        turn.spawn_helpers("serve", Some(render), sfu_stats, installer.clone()).await?;
        let mut app = signal.router().merge(crate::web::router());
        if let Some(acme) = &acme {
            app = app.layer(axum::middleware::from_fn_with_state(acme.clone(), acme_gate));
            say(format_args!("peerlink serve: acme: {}", acme.describe()));
            tokio::spawn(
                acme.clone().run(move |config, not_after| installer.install(config, Some(not_after)), say),
            );
        }
        if let (Some(listener), Some(acme)) = (acme_http, &acme) {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let local = listener.local_addr()?;
            let router = acme::http_router(acme.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "acme http listener failed");
                }
            });
            say(format_args!("peerlink serve: http-01 and redirects to https on http://{local}/"));
        }
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
/// (`expiry:peer-id`) and gathers one relayed candidate per TURN URL (`turn_urls`) and local
/// address ([`BROWSER_ADDRESSES`]) for each peer connection it opens, so one browser of a full
/// mesh room of N asks for (N - 1) x URLs x 2; twice that leaves room for ICE restarts and
/// room switches, which gather anew before the old allocations go.
pub fn allocations_per_credential(hub: &peerlink_signal::HubConfig, turn_urls: usize) -> usize {
    use peerlink_signal::RoomMode;
    let connections = match hub.room_mode {
        RoomMode::Mesh => hub.max_room_peers.saturating_sub(1),
        // The connection to the server, and its successor while a lost one is replaced.
        RoomMode::Sfu => 2,
        // The largest mesh, and the SFU connection opened while the room switches.
        RoomMode::Auto => hub.mesh_max.min(hub.max_room_peers).saturating_sub(1) + 1,
    };
    connections.max(1) * turn_urls.max(1) * BROWSER_ADDRESSES * 2
}

/// The local addresses a browser gathers relayed candidates from, one allocation each: IPv4
/// and IPv6, or two interfaces (Wi-Fi and a VPN). With one, a browser of an `auto` room
/// switching between modes was refused allocations (tests/e2e/web-sfu.sh, whose pages have
/// two addresses: up to 38 refusals a page).
pub const BROWSER_ADDRESSES: usize = 2;

/// `peerlink turn`'s default per-user quota: what `serve` allows one browser of a full mesh
/// room (6 peers, `--room-mode mesh`) given UDP, TCP and TLS TURN URLs.
pub const TURN_ALLOCATIONS_PER_USER: usize = 60;

/// Runs `peerlink turn` until Ctrl-C or SIGTERM: `options` as given on the command line,
/// over its `config` file's.
pub fn run_turn(options: TurnOptions) -> anyhow::Result<()> {
    let turn = Turn::start("turn", options.with_file()?, TURN_ALLOCATIONS_PER_USER, None)?;
    runtime()?.block_on(async {
        let not_after =
            turn.cert_key.as_ref().and_then(|(cert, _)| tls::cert_info(cert).ok()).map(|i| i.not_after);
        let installer = Installer::new(None, turn.handle.clone(), not_after);
        turn.spawn_helpers("turn", None, None, installer).await?;
        wait_for_signal().await
    })?;
    turn.stop();
    Ok(())
}

/// Where a new certificate goes: HTTPS on --http and TURN over TLS, for new connections
/// (open ones and every allocation carry on). SIGHUP reloads and ACME renewals both come here.
#[derive(Clone)]
struct Installer {
    https: Option<https::TlsConfig>,
    turn: Arc<TurnHandle>,
    /// The served certificate's notAfter (seconds since the epoch), for /metrics; 0: none.
    not_after: Arc<std::sync::atomic::AtomicI64>,
}

impl Installer {
    fn new(https: Option<https::TlsConfig>, turn: Arc<TurnHandle>, not_after: Option<i64>) -> Installer {
        let not_after = Arc::new(std::sync::atomic::AtomicI64::new(not_after.unwrap_or(0)));
        Installer { https, turn, not_after }
    }

    fn install(&self, config: Arc<rustls::ServerConfig>, not_after: Option<i64>) {
        if let Some(https) = &self.https {
            https.replace(config.clone());
        }
        self.turn.reload_tls(config);
        self.not_after.store(not_after.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(std::sync::atomic::Ordering::SeqCst)).filter(|t| *t != 0)
    }
}

/// The ACME manager `options` ask for, if any (its cached certificate loaded).
fn acme_from(options: &ServeOptions, http: SocketAddr) -> anyhow::Result<Option<Arc<acme::Acme>>> {
    if options.acme_domain.is_empty() {
        let stray = [
            ("--acme-email", options.acme_email.is_some()),
            ("--acme-directory", options.acme_directory.is_some()),
            ("--acme-ca-root", !options.acme_ca_root.is_empty()),
            ("--acme-cache", options.acme_cache.is_some()),
            ("--acme-http", options.acme_http.is_some()),
        ];
        if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
            let key = flag.trim_start_matches("--").replace('-', "_");
            anyhow::bail!(
                "{flag} ({key} in a config file) needs --acme-domain NAME (acme_domain = [\"NAME\"]): \
                 the name of this server to get a certificate for"
            );
        }
        return Ok(None);
    }
    if options.turn.cert.is_some() || options.turn.key.is_some() {
        anyhow::bail!("give either --acme-domain (a certificate from a CA) or --cert/--key, not both");
    }
    let settings = acme::Settings::new(
        &options.acme_domain,
        options.acme_email.as_deref(),
        options.acme_directory.as_deref(),
        &options.acme_ca_root,
        options.acme_cache.as_deref(),
        http,
        options.acme_http,
    )?;
    Ok(Some(acme::Acme::new(settings)?))
}

/// While ACME has no certificate yet, every HTTPS request gets a 503 that says why.
async fn acme_gate(
    axum::extract::State(acme): axum::extract::State<Arc<acme::Acme>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if acme.ready() {
        next.run(request).await
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, acme.waiting_message()).into_response()
    }
}

/// A running TURN server and what its command does around it.
struct Turn {
    handle: Arc<TurnHandle>,
    /// The secret `serve` mints browsers' credentials with.
    rest_secret: Option<Vec<u8>>,
    cert_key: Option<(PathBuf, PathBuf)>,
    metrics: Option<SocketAddr>,
    /// Public addresses (`--external-ip`), one per family at most.
    external: Vec<IpAddr>,
}

impl Turn {
    /// Starts TURN from `options` (the file's already under them); `command` names the
    /// command in messages; `quota` is the allocations per user (credential) unless
    /// `--max-allocations-per-user` says otherwise. `acme_tls` (ACME's certificate) serves
    /// TURN over TLS when there is no --cert.
    fn start(
        command: &str,
        options: TurnOptions,
        quota: usize,
        acme_tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Turn> {
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
        let external = parse_external_ips(&options.external_ip)?;
        let given_relay_ips = !options.relay_ip.is_empty();
        let mut relay_ips = if given_relay_ips {
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
        // --external-ip PUBLIC/PRIVATE: relays of that family open on PRIVATE.
        for (public, private) in &external {
            let Some(private) = private else { continue };
            match relay_ips.iter_mut().find(|ip| ip.is_ipv4() == private.is_ipv4()) {
                Some(ip) if given_relay_ips && ip != private => anyhow::bail!(
                    "--external-ip {public}/{private} opens relays on {private}, but --relay-ip says {ip}"
                ),
                Some(ip) => *ip = *private,
                None => relay_ips.push(*private),
            }
        }
        let advertised: Vec<(IpAddr, IpAddr)> = external
            .iter()
            .filter_map(|(public, _)| {
                let bound = relay_ips.iter().find(|ip| ip.is_ipv4() == public.is_ipv4())?;
                Some((*bound, *public))
            })
            .collect();
        if let Some((public, _)) =
            external.iter().find(|(public, _)| !relay_ips.iter().any(|ip| ip.is_ipv4() == public.is_ipv4()))
        {
            anyhow::bail!("--external-ip {public}: this server opens no relays of its address family");
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
        core.max_bytes_per_second_per_user = options.max_bandwidth_per_user.filter(|&n| n > 0);
        core.capacity = options
            .bandwidth_capacity
            .filter(|&n| n > 0)
            .map(|n| Arc::new(peerlink_turn::SharedRate::new(n, std::time::Instant::now())));
        let (cert, key) = (options.cert, options.key);
        let tls_addr = options.tls_listen.unwrap_or(SocketAddr::new(listen.ip(), 5349));
        let tls = match (&cert, &key, acme_tls) {
            (Some(cert), Some(key), _) => Some((tls_addr, tls::load(cert, key)?)),
            (None, None, Some(config)) => Some((tls_addr, config)),
            (None, None, None) => None,
            _ => anyhow::bail!("TURN over TLS needs both a certificate and a key"),
        };
        let config = TurnConfig {
            listen,
            relay_ips: relay_ips.clone(),
            relay_ports,
            advertised: advertised.clone(),
            max_tcp_connections: 4096,
            core,
            tls,
            threads: options.relay_threads.map_or_else(crate::turn::default_threads, usize::from),
        };
        let handle = Arc::new(crate::turn::start(config)?);
        say(format_args!(
            "peerlink {command}: turn listening on {} (udp, tcp), realm {realm}, relays on {:?}",
            handle.local_addr(),
            relay_ips
        ));
        for (bound, public) in &advertised {
            say(format_args!(
                "peerlink {command}: relays opened on {bound} are announced as {public} (external ip)"
            ));
        }
        if let Some(addr) = handle.tls_addr() {
            say(format_args!("peerlink {command}: turn listening on {addr} (tls)"));
        }
        Ok(Turn {
            handle,
            rest_secret: secrets.into_iter().next(),
            cert_key: cert.zip(key),
            metrics: options.metrics,
            external: external.into_iter().map(|(public, _)| public).collect(),
        })
    }

    /// SIGHUP reloading and metrics; call inside the runtime.
    async fn spawn_helpers(
        &self,
        command: &str,
        extra: Option<metrics::Render>,
        sfu: Option<Arc<crate::sfu::SfuStats>>,
        installer: Installer,
    ) -> anyhow::Result<()> {
        // SIGHUP: read the certificate and key again (renewals), keep every allocation. Always
        // caught (`systemctl reload` sends it): without --cert there is nothing to reload, and
        // ACME renews by itself.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        let cert_key = self.cert_key.clone();
        let expiry = installer.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some((cert, key)) = &cert_key else {
                    tracing::info!("SIGHUP: no --cert/--key to reload");
                    continue;
                };
                match tls::load(cert, key) {
                    Ok(config) => {
                        tracing::info!("SIGHUP: certificate reloaded");
                        installer.install(config, tls::cert_info(cert).ok().map(|info| info.not_after))
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "tls reload failed; keeping the old certificate")
                    }
                }
            }
        });
        if let Some(addr) = self.metrics {
            let shared = self.handle.shared_stats();
            let render: metrics::Render = Arc::new(move || {
                let stats = shared.snapshot();
                let mut text = metrics::render_turn(&stats);
                text.push_str(&metrics::render_certificate(expiry.not_after()));
                if let Some(extra) = &extra {
                    text.push_str(&extra());
                }
                text
            });
            let stats = sfu.is_some();
            let (local, _task) = metrics::serve(addr, render, sfu).await?;
            say(format_args!("peerlink {command}: metrics at http://{local}/metrics"));
            if stats {
                say(format_args!("peerlink {command}: SFU rooms and tracks at http://{local}/stats"));
            }
        }
        Ok(())
    }

    /// `iceServers` for browsers: this server's STUN and TURN, on `name` when given (what
    /// the certificate is for: browsers check a `turns:` server's certificate against the
    /// URL's host), else on the public address (`--external-ip`), else on the listen address.
    fn ice_config(&self, ttl: Duration, name: Option<&str>) -> peerlink_signal::IceConfig {
        let addr = self.handle.local_addr();
        let h = ice_host(addr, name, &self.external);
        let port = addr.port();
        let mut turn_urls =
            vec![format!("turn:{h}:{port}?transport=udp"), format!("turn:{h}:{port}?transport=tcp")];
        if let Some(tls) = self.handle.tls_addr() {
            turn_urls.push(format!(
                "turns:{}:{}?transport=tcp",
                ice_host(tls, name, &self.external),
                tls.port()
            ));
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

/// The host of this server's `iceServers` URLs for a listener on `addr`: `name` if given; else
/// the public address of `addr`'s family (`external`; either when `addr` is unspecified);
/// else `addr`'s IP; else (an unspecified address) `{host}`, which signaling replaces by the
/// name the browser reached the app by.
fn ice_host(addr: SocketAddr, name: Option<&str>, external: &[IpAddr]) -> String {
    let literal = |ip: IpAddr| match ip {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    if let Some(name) = name {
        return match name.parse::<IpAddr>() {
            Ok(ip) => literal(ip),
            Err(_) => name.to_owned(),
        };
    }
    let public = if addr.ip().is_unspecified() {
        external.iter().find(|ip| ip.is_ipv4()).or(external.first())
    } else {
        external.iter().find(|ip| ip.is_ipv4() == addr.is_ipv4())
    };
    match public {
        Some(ip) => literal(*ip),
        None if addr.ip().is_unspecified() => "{host}".to_owned(),
        None => literal(addr.ip()),
    }
}

/// The name `iceServers` give browsers: `--public-name`, else the certificate's first DNS
/// name (`{host}` when that is a wildcard: the name the browser reached the app by is one of
/// its names).
fn public_name(public_name: Option<&str>, cert: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(name) = public_name {
        check_public_name(name)?;
        return Ok(Some(name.to_owned()));
    }
    let Some(cert) = cert else { return Ok(None) };
    let names = tls::dns_names(cert)?;
    Ok(match names.first() {
        Some(name) if name.starts_with("*.") => Some("{host}".to_owned()),
        Some(name) => Some(name.clone()),
        None => None,
    })
}

/// Writes one whole line to standard output and flushes it: scripts wait for these.
pub(crate) fn say(line: std::fmt::Arguments) {
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
    fn ice_urls_name_the_public_name_else_the_public_address_else_the_listen_address() {
        let v4: SocketAddr = "10.0.0.5:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::5]:3478".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:3478".parse().unwrap();
        let external: Vec<IpAddr> = vec!["203.0.113.5".parse().unwrap(), "2001:db8::99".parse().unwrap()];
        assert_eq!(ice_host(v4, Some("turn.example.org"), &external), "turn.example.org");
        assert_eq!(ice_host(v4, Some("2001:db8::1"), &external), "[2001:db8::1]");
        assert_eq!(ice_host(v4, None, &external), "203.0.113.5");
        assert_eq!(ice_host(v6, None, &external), "[2001:db8::99]");
        assert_eq!(ice_host(any, None, &external), "203.0.113.5");
        assert_eq!(ice_host(any, None, &external[1..]), "[2001:db8::99]");
        assert_eq!(ice_host(v4, None, &external[1..]), "10.0.0.5");
        assert_eq!(ice_host(v6, None, &[]), "[2001:db8::5]");
        assert_eq!(ice_host(any, None, &[]), "{host}");
    }

    #[test]
    fn an_unspecified_address_is_browsed_on_loopback() {
        assert_eq!(browsable("0.0.0.0:80".parse().unwrap()), "127.0.0.1:80");
        assert_eq!(browsable("[::]:80".parse().unwrap()), "[::1]:80");
        assert_eq!(browsable("192.0.2.1:80".parse().unwrap()), "192.0.2.1:80");
    }
}
