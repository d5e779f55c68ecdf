//! The native peer's session with one other peer in a room, shared by `chat` (and later
//! `send` and `recv`): signaling through `peerlink_signal::SignalClient`, the browser app's
//! conventions (docs/file-transfer.md: descriptions as `{"description":{type,sdp}}`,
//! candidates as `{"candidate":{...}}` with `null` at the end, the newcomer offers, perfect
//! negotiation by id, the offer fallback after 4 s), and a `peerlink_io::Peer`.

use anyhow::{bail, Context};
use peerlink_io::{Peer, PeerConfig};
use peerlink_rtc::{Description, RtcConfig, RtcEvent, SdpType};
use peerlink_signal::{ClientEvent, IceServer, SignalClient};
use serde_json::json;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// How long a peer told of another waits for its offer before offering itself.
const OFFER_FALLBACK: Duration = Duration::from_secs(4);

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
}

/// STUN and TURN servers from the server's `iceServers` (UDP URLs; `turns:` and TCP are
/// skipped: the native peer relays over UDP).
fn rtc_config(servers: &[IceServer]) -> RtcConfig {
    let mut config = RtcConfig::default();
    for server in servers {
        for url in &server.urls {
            let (scheme, rest) = url.split_once(':').unwrap_or(("", ""));
            let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.contains("transport=tcp") {
                continue;
            }
            let hostport =
                if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:3478") };
            let Some(addr) = hostport.to_socket_addrs().ok().and_then(|mut a| a.find(SocketAddr::is_ipv4))
            else {
                continue;
            };
            match (scheme, &server.username, &server.credential) {
                ("stun", _, _) => config.stun_servers.push(addr),
                ("turn", Some(username), Some(password)) => {
                    config.turn_servers.push(peerlink_ice::TurnServerConfig {
                        server: addr,
                        username: username.clone(),
                        password: password.clone(),
                    })
                }
                _ => {}
            }
        }
    }
    config
}

/// One connection to one other peer of the room.
pub struct Session {
    pub peer: Peer,
    signal: SignalClient,
    pub remote: String,
    my_id: String,
    making_offer: bool,
    pub offered: bool,
    /// Offer ourselves then if the other peer has not (the offer fallback).
    fallback_at: Option<tokio::time::Instant>,
}

impl Session {
    /// Joins the room and waits for another participant: the newcomer (us, if someone is
    /// there) offers; otherwise the one who joins after us does, or we do after 4 s.
    pub async fn meet(args: &MeetArgs) -> anyhow::Result<Session> {
        let name = args.name.clone().unwrap_or_else(|| format!("peerlink-{}", std::process::id()));
        let mut signal = SignalClient::connect(&args.server, &args.room, &name, args.token.clone());
        let (my_id, peers, ice_servers) = loop {
            match signal.next_event().await {
                Some(ClientEvent::Joined { id, peers, ice_servers }) => break (id, peers, ice_servers),
                Some(ClientEvent::Closed { reason }) => bail!("signaling: {reason}"),
                Some(ClientEvent::Disconnected { reason }) => {
                    eprintln!("peerlink: signaling: {reason}; retrying")
                }
                Some(_) => {}
                None => bail!("signaling client stopped"),
            }
        };
        eprintln!("peerlink: joined room {} as {name} ({my_id})", args.room);
        let config = PeerConfig { rtc: rtc_config(&ice_servers), addresses: args.bind.clone() };
        let peer = Peer::start(config).await.context("starting the peer")?;
        let mut session = Session {
            peer,
            signal,
            remote: String::new(),
            my_id,
            making_offer: false,
            offered: false,
            fallback_at: None,
        };
        if let Some(first) = peers.first() {
            eprintln!("peerlink: {} ({}) is here; offering", first.name, first.id);
            session.remote = first.id.clone();
            session.offer().await?;
        } else {
            eprintln!("peerlink: waiting for someone to join");
            loop {
                match session.signal.next_event().await {
                    Some(ClientEvent::PeerJoined(p)) => {
                        eprintln!("peerlink: {} ({}) joined", p.name, p.id);
                        session.remote = p.id;
                        session.fallback_at = Some(tokio::time::Instant::now() + OFFER_FALLBACK);
                        break;
                    }
                    Some(ClientEvent::Signal { from, data }) => {
                        session.remote = from;
                        session.on_signal(data.get()).await?;
                        break;
                    }
                    Some(ClientEvent::Closed { reason }) => bail!("signaling: {reason}"),
                    Some(_) => {}
                    None => bail!("signaling client stopped"),
                }
            }
        }
        Ok(session)
    }

    async fn send_signal(&self, data: serde_json::Value) -> anyhow::Result<()> {
        self.signal.signal(&self.remote, data).await.context("signaling")
    }

    pub async fn offer(&mut self) -> anyhow::Result<()> {
        self.fallback_at = None;
        self.making_offer = true;
        let offer = self.peer.create_offer().await?;
        self.making_offer = false;
        self.offered = true;
        self.send_signal(json!({"description": {"type": "offer", "sdp": offer.sdp}})).await
    }

    /// A signal from the other peer (perfect negotiation: the peer with the greater id is
    /// polite and rolls its own offer back on a collision).
    async fn on_signal(&mut self, raw: &str) -> anyhow::Result<()> {
        let data: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
        if let Some(d) = data.get("description") {
            let (Some(kind), Some(sdp)) = (d["type"].as_str().and_then(SdpType::parse), d["sdp"].as_str())
            else {
                return Ok(());
            };
            if kind == SdpType::Offer && (self.making_offer || self.offered_pending()) {
                let polite = self.my_id > self.remote;
                if !polite {
                    return Ok(());
                }
                self.peer.rollback().await?;
            }
            if kind == SdpType::Answer {
                self.offered = false;
            } else {
                self.fallback_at = None;
            }
            let answer = self.peer.set_remote_description(Description { kind, sdp: sdp.to_owned() }).await?;
            if let Some(answer) = answer {
                self.send_signal(json!({"description": {"type": "answer", "sdp": answer.sdp}})).await?;
            }
        } else if let Some(c) = data.get("candidate") {
            match c {
                serde_json::Value::Null => self.peer.add_ice_candidate(""),
                c => {
                    if let Some(line) = c["candidate"].as_str() {
                        // Browsers send "" as an end-of-candidates marker too.
                        self.peer.add_ice_candidate(line);
                    }
                }
            }
        }
        Ok(())
    }

    fn offered_pending(&self) -> bool {
        self.offered
    }
}

/// Sleeps until `at`, or forever.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// The next event of the peer connection, handling signaling meanwhile (and trickling
    /// our candidates to the other peer). `None` when the other peer left or signaling ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<RtcEvent>> {
        loop {
            let fallback = self.fallback_at;
            tokio::select! {
                e = self.peer.next_event() => {
                    let Some(e) = e else { return Ok(None) };
                    match &e {
                        RtcEvent::LocalCandidate(c) => {
                            self.send_signal(json!({"candidate": {"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0}})).await?;
                        }
                        RtcEvent::GatheringComplete => self.send_signal(json!({"candidate": null})).await?,
                        _ => {}
                    }
                    return Ok(Some(e));
                }
                s = self.signal.next_event() => match s {
                    Some(ClientEvent::Signal { from, data }) if from == self.remote => self.on_signal(data.get()).await?,
                    Some(ClientEvent::PeerLeft(id)) if id == self.remote => {
                        eprintln!("peerlink: the other peer left");
                        return Ok(None);
                    }
                    Some(ClientEvent::Closed { reason }) => bail!("signaling: {reason}"),
                    Some(ClientEvent::Disconnected { reason }) => eprintln!("peerlink: signaling: {reason}; retrying"),
                    Some(_) => {}
                    None => return Ok(None),
                },
                () = sleep_until(fallback), if fallback.is_some() => {
                    eprintln!("peerlink: no offer after {OFFER_FALLBACK:?}; offering");
                    self.offer().await?;
                }
            }
        }
    }

    pub async fn close(mut self) {
        self.peer.close().await;
        self.signal.close().await;
    }
}
