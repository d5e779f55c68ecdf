//! What `peerlink serve` and `peerlink turn` take: one struct each, which is both the
//! command line (clap) and the TOML config file (serde). Every option has a key of the same
//! name (with `_` for `-`); repeatable options take a list. [`layer`] puts the command line
//! over the file.
//!
//! The file is read as [`ServeOptions`] by every command (`stun`, `turn`, `serve`), so one
//! file can serve them all; a key no command knows is an error naming it.

use anyhow::Context;
use clap::{ArgAction, Args};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The options of `peerlink serve`: signaling and the browser app, then TURN's.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// HTTP address of the browser app and of the signaling WebSocket (/ws)
    /// [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Require a token to join a room: an HS256 JWT signed with S whose `room` claim is the
    /// room (or "*"); `exp` is honoured. Without it rooms are open to anyone
    #[arg(long, value_name = "S")]
    pub token_secret: Option<String>,
    /// Share rooms with other `peerlink serve` processes through Redis pub/sub
    /// (e.g. redis://127.0.0.1:6379/)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Peers in one room [default: 50; 6 with --room-mode mesh]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_room_peers: Option<u32>,
    /// How rooms carry media: `mesh` (every browser connects to every other), `sfu` (every
    /// browser connects to this server, which forwards each track to the others), or
    /// `auto` (a mesh up to --mesh-max peers, the SFU above, a mesh again when the room
    /// shrinks) [default: auto]
    #[arg(long, value_name = "MODE", value_parser = ["auto", "mesh", "sfu"])]
    pub room_mode: Option<String>,
    /// In `auto` mode, the largest room that stays a mesh [default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub mesh_max: Option<u32>,
    /// In SFU rooms, forward each participant the video of at most N others: those who spoke
    /// most recently, then those who joined first (the others' audio still flows; clients are
    /// told whose video they get) [default: every video]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub last_n: Option<u32>,
    /// In SFU rooms, a participant shown more than N videos gets all but the most recent
    /// speaker's in their lowest simulcast layer (thumbnails) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub thumbnails_above: Option<u32>,
    /// How long the TURN credentials handed to browsers stay valid, in seconds [default: 86400]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub credential_ttl: Option<u64>,
    /// Largest signaling message in bytes; larger ones are refused with `too-large`
    /// [default: 65536]
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_message_bytes: Option<u32>,
    /// Signaling messages per second one connection may send (bursts of four times as many
    /// pass) [default: 50]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub messages_per_second: Option<u32>,
    /// Get the certificate for D from an ACME CA (Let's Encrypt unless --acme-directory) and
    /// renew it: HTTPS/WSS on --http and TURN over TLS use it. Repeat for several names; D's
    /// DNS must point here, with port 443 reaching --http (TLS-ALPN-01) or port 80 reaching
    /// --acme-http (HTTP-01)
    #[arg(long, value_name = "D", conflicts_with_all = ["cert", "key"])]
    #[serde(default)]
    pub acme_domain: Vec<String>,
    /// Contact address given to the ACME CA (expiry warnings, policy changes)
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// The ACME CA's directory URL [default: Let's Encrypt,
    /// `https://acme-v02.api.letsencrypt.org/directory`]
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Extra root certificates (PEM) to trust for the ACME CA's own HTTPS, beside the
    /// system's: for a private or test CA (repeat for several files)
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub acme_ca_root: Vec<PathBuf>,
    /// Folder for the ACME account key and the certificates [default: $STATE_DIRECTORY/acme,
    /// else $XDG_STATE_HOME/peerlink/acme, else ~/.local/state/peerlink/acme]
    #[arg(long, value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,
    /// Also listen for plain HTTP here (e.g. 0.0.0.0:80): answers the ACME HTTP-01 challenge
    /// and sends every other request to https
    #[arg(long, value_name = "ADDR")]
    pub acme_http: Option<SocketAddr>,
    /// The host name browsers are given in `iceServers` (`stun:`, `turn:`, `turns:` URLs)
    /// and that the certificate is for [default: the first --acme-domain, else the
    /// certificate's name, else the listen address (or, listening on all addresses, the
    /// name the browser reached the app by)]
    #[arg(long, value_name = "NAME")]
    pub public_name: Option<String>,
    /// `peerlink stun`'s UDP receive threads: a file key only, so that one file serves every
    /// command (`serve` answers STUN on its TURN threads).
    #[arg(skip)]
    pub udp_workers: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    pub turn: TurnOptions,
}

/// The options of `peerlink turn`, and TURN's part of `peerlink serve`.
#[derive(Debug, Default, Clone, Args, Serialize, Deserialize)]
pub struct TurnOptions {
    /// Address clients reach, UDP and TCP on the same port [default: 0.0.0.0:3478]
    // One on the command line; the file may give a list (for `peerlink stun`).
    #[arg(long, value_name = "ADDR", action = ArgAction::Set)]
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// Realm of the long-term credentials [default: peerlink]
    #[arg(long, value_name = "R")]
    pub realm: Option<String>,
    /// A static user (repeat for several). Prefer the config file: arguments are visible to
    /// other local users
    #[arg(long, value_name = "NAME:PASS")]
    #[serde(default)]
    pub user: Vec<String>,
    /// TURN REST shared secret (coturn's use-auth-secret): username `expiry[:name]`, password
    /// base64(HMAC-SHA1(secret, username)). Repeat to accept several during a rotation
    #[arg(long, value_name = "S")]
    #[serde(default)]
    pub auth_secret: Vec<String>,
    /// Address relays are opened on, one IPv4 and/or one IPv6 [default: the listen address, or
    /// the first non-loopback address of each family when listening on all]
    #[arg(long, value_name = "IP")]
    #[serde(default)]
    pub relay_ip: Vec<IpAddr>,
    /// The public address of this host behind 1:1 NAT (a cloud VM's), as coturn's
    /// external-ip: PUBLIC, or PUBLIC/PRIVATE to open relays on the private address PRIVATE.
    /// Relays advertise PUBLIC in XOR-RELAYED-ADDRESS, and browsers are given it in
    /// `iceServers` (when no name is). Once per address family
    #[arg(long, value_name = "PUBLIC[/PRIVATE]")]
    #[serde(default)]
    pub external_ip: Vec<String>,
    /// Relay port range [default: 49152-65535]
    #[arg(long, value_name = "MIN-MAX")]
    pub relay_ports: Option<String>,
    /// Let clients relay to loopback peers (for tests on one machine; unsafe on a server)
    #[arg(long)]
    #[serde(default)]
    pub allow_loopback_peers: bool,
    /// Let clients relay to this range although the defaults refuse it (repeat for several)
    #[arg(long, value_name = "CIDR")]
    #[serde(default)]
    pub allow_peer: Vec<IpNet>,
    /// Refuse relaying to this range (repeat for several; wins over --allow-peer)
    #[arg(long, value_name = "CIDR")]
    #[serde(default)]
    pub deny_peer: Vec<IpNet>,
    /// Allocations one credential (a static user, or one TURN REST username) may hold at
    /// once [default: `serve`: twice what one browser of a full mesh room asks for, one per
    /// peer, TURN URL and local address (two counted); `turn`: 60]
    #[arg(long, value_name = "N")]
    pub max_allocations_per_user: Option<usize>,
    /// TURN event loop threads: each has its own UDP socket on --listen (SO_REUSEPORT) with
    /// its own allocations and relays (the kernel keeps a client on one); EVEN-PORT
    /// reservations are redeemable on any of them; TCP and TLS clients are served by the
    /// first [default: one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub relay_threads: Option<u16>,
    /// Allocations the server holds at once, over all users [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_allocations: Option<usize>,
    /// Relayed bytes per second per allocation, both directions together; UDP packets over
    /// it are dropped, TCP relays (RFC 6062) are read no faster [default: no limit]
    #[arg(long, value_name = "BYTES")]
    pub max_bandwidth: Option<u64>,
    /// Relayed bytes per second per user (one credential), over all its allocations and
    /// relay threads; what goes over is dropped and counted [default: no limit]
    #[arg(long, value_name = "BYTES")]
    pub max_bandwidth_per_user: Option<u64>,
    /// Relayed bytes per second of the whole server (coturn's bps-capacity): what goes over is
    /// dropped and counted, and while it is used up new allocations are refused with 486
    /// [default: no limit]
    #[arg(long, value_name = "BYTES")]
    pub bandwidth_capacity: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Certificate chain (PEM) for TURN over TLS (and, with `serve`, HTTPS for the browser
    /// app on --http); reloaded with --key on SIGHUP without dropping allocations
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TURN over TLS address [default: the listen IP, port 5349; only with --cert]
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// TOML file whose keys are the long option names with `_` for `-` (lists for repeatable
    /// options); options given on the command line win
    // Not a key of the file itself.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl ServeOptions {
    /// Reads a config file. Errors name the file, and the key when one is unknown.
    pub fn load(path: &Path) -> anyhow::Result<ServeOptions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let options: ServeOptions = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!(naming_known_keys(&e)))
            .with_context(|| format!("bad config {}", path.display()))?;
        if options.udp_workers.is_some_and(|n| !(1..=1024).contains(&n)) {
            anyhow::bail!("bad config {}: udp_workers must be between 1 and 1024", path.display());
        }
        Ok(options)
    }

    /// These options (the command line) over those of their `config` file, if any.
    pub fn with_file(self) -> anyhow::Result<ServeOptions> {
        match &self.turn.config {
            Some(path) => layer(&ServeOptions::load(path)?, &self),
            None => Ok(self),
        }
    }
}

impl TurnOptions {
    /// These options (the command line) over the TURN keys of their `config` file, if any.
    pub fn with_file(self) -> anyhow::Result<TurnOptions> {
        match &self.config {
            Some(path) => layer(&ServeOptions::load(path)?.turn, &self),
            None => Ok(self),
        }
    }
}

/// The error as TOML renders it; an unknown key's also lists the known ones. serde lists
/// them itself for plain structs, not for one with a flattened part like [`ServeOptions`].
fn naming_known_keys(error: &toml::de::Error) -> String {
    let (text, message) = (error.to_string(), error.message());
    if !message.starts_with("unknown field") || message.contains("expected") {
        return text;
    }
    let keys = match serde_json::to_value(ServeOptions::default()) {
        Ok(serde_json::Value::Object(keys)) => keys,
        _ => return text,
    };
    let keys: Vec<String> = keys.keys().map(|key| format!("`{key}`")).collect();
    match text.rfind(message) {
        Some(at) => format!(
            "{}{message}, expected one of {}{}",
            &text[..at],
            keys.join(", "),
            &text[at + message.len()..]
        ),
        None => text,
    }
}

/// `over` laid on `under`, option by option: an option `over` gives wins; one it leaves
/// unset (`None`, an empty list, a flag not raised) keeps `under`'s value.
///
/// Both go through `serde_json::Value` rather than TOML's, which has no `null` and no
/// integers above `i64::MAX`.
pub fn layer<T: Serialize + DeserializeOwned>(under: &T, over: &T) -> anyhow::Result<T> {
    let mut merged = serde_json::to_value(under).context("bad options")?;
    let over = serde_json::to_value(over).context("bad options")?;
    if let (Some(merged), Some(over)) = (merged.as_object_mut(), over.as_object()) {
        for (key, value) in over {
            let unset = match value {
                serde_json::Value::Null | serde_json::Value::Bool(false) => true,
                serde_json::Value::Array(list) => list.is_empty(),
                _ => false,
            };
            if !unset {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::from_value(merged).context("bad options")
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SocketAddr),
        Many(Vec<SocketAddr>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

/// `MIN-MAX` port range.
pub fn parse_port_range(text: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').context("expected MIN-MAX, e.g. 49152-65535")?;
    let (low, high): (u16, u16) = (low.trim().parse()?, high.trim().parse()?);
    if low == 0 || low > high {
        anyhow::bail!("port range {text}: need 1 <= MIN <= MAX");
    }
    Ok(low..=high)
}

/// `--external-ip` values: (public, private) pairs, at most one per address family, each
/// pair of one family.
pub fn parse_external_ips(values: &[String]) -> anyhow::Result<Vec<(IpAddr, Option<IpAddr>)>> {
    let mut out: Vec<(IpAddr, Option<IpAddr>)> = Vec::new();
    for text in values {
        let (public, private) = match text.split_once('/') {
            Some((public, private)) => (public, Some(private)),
            None => (text.as_str(), None),
        };
        let public: IpAddr = public.trim().parse().with_context(|| {
            format!("bad --external-ip {text}: expected PUBLIC or PUBLIC/PRIVATE addresses")
        })?;
        let private: Option<IpAddr> = private.map(|p| p.trim().parse()).transpose().with_context(|| {
            format!("bad --external-ip {text}: expected PUBLIC or PUBLIC/PRIVATE addresses")
        })?;
        if public.is_unspecified() || private.is_some_and(|p| p.is_unspecified()) {
            anyhow::bail!("bad --external-ip {text}: an address, not 0.0.0.0 or ::");
        }
        if private.is_some_and(|p| p.is_ipv4() != public.is_ipv4()) {
            anyhow::bail!("bad --external-ip {text}: PUBLIC and PRIVATE must be of one address family");
        }
        if out.iter().any(|(other, _)| other.is_ipv4() == public.is_ipv4()) {
            anyhow::bail!("--external-ip takes at most one IPv4 and one IPv6 address");
        }
        out.push((public, private));
    }
    Ok(out)
}

/// A `--public-name`: a DNS name or an IP address, without scheme, port or path.
pub fn check_public_name(name: &str) -> anyhow::Result<()> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let fine = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !fine {
        anyhow::bail!("bad --public-name {name:?}: expected a host name such as turn.example.org (no scheme, port or path)");
    }
    Ok(())
}

/// `NAME:PASS` (the password may itself contain colons).
pub fn parse_user(text: &str) -> anyhow::Result<(String, String)> {
    let (name, pass) = text.split_once(':').context("expected NAME:PASS")?;
    if name.is_empty() || pass.is_empty() {
        anyhow::bail!("expected NAME:PASS with both parts non-empty");
    }
    Ok((name.to_owned(), pass.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        options: ServeOptions,
    }

    fn cli(args: &[&str]) -> ServeOptions {
        Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).unwrap().options
    }

    fn file(text: &str) -> ServeOptions {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn accepts_one_address_or_a_list() {
        let one = file(r#"listen = "127.0.0.1:3478""#);
        assert_eq!(one.turn.listen, ["127.0.0.1:3478".parse().unwrap()]);
        let many = file(r#"listen = ["127.0.0.1:1", "[::1]:2"]"#);
        assert_eq!(many.turn.listen.len(), 2);
    }

    #[test]
    fn reads_turn_keys() {
        let c = file(
            r#"realm = "example.org"
               user = ["alice:pw"]
               auth_secret = ["s1", "s2"]
               relay_ip = ["192.0.2.1"]
               relay_ports = "50000-50100"
               allow_loopback_peers = true
               deny_peer = ["8.8.8.0/24"]
               max_bandwidth_per_user = 500000
               bandwidth_capacity = 10000000"#,
        );
        assert_eq!(
            (c.turn.max_bandwidth_per_user, c.turn.bandwidth_capacity),
            (Some(500_000), Some(10_000_000))
        );
        assert_eq!(c.turn.auth_secret.len(), 2);
        assert_eq!(c.turn.deny_peer[0], "8.8.8.0/24".parse::<IpNet>().unwrap());
        assert!(c.turn.allow_loopback_peers);
    }

    #[test]
    fn reads_serve_keys() {
        let c = file(
            r#"http = "0.0.0.0:80"
               token_secret = "t"
               redis = "redis://127.0.0.1:6379/"
               max_room_peers = 4
               credential_ttl = 3600
               max_message_bytes = 32768
               messages_per_second = 20
               udp_workers = 2"#,
        );
        assert_eq!(c.http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(
            (c.max_room_peers, c.credential_ttl, c.messages_per_second),
            (Some(4), Some(3600), Some(20))
        );
        assert_eq!(c.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let typo = toml::from_str::<ServeOptions>(r#"lisen = "127.0.0.1:1""#).unwrap_err();
        let typo = naming_known_keys(&typo);
        assert!(typo.contains("1 | lisen ="), "{typo}");
        assert!(typo.contains("unknown field `lisen`, expected one of `acme_ca_root`,"), "{typo}");
        assert!(typo.contains("`listen`") && typo.contains("`http`") && typo.contains("`udp_workers`"));
        assert!(!typo.contains("`config`"), "{typo}");
        // `config` names the file on the command line only.
        assert!(toml::from_str::<ServeOptions>(r#"config = "other.toml""#).is_err());
        assert!(toml::from_str::<ServeOptions>(r#"listen = "localhost""#).is_err());
        assert!(toml::from_str::<ServeOptions>(r#"max_room_peers = "x""#).is_err());
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("abc").is_err());
        assert_eq!(parse_port_range("1000-2000").unwrap(), 1000..=2000);
        assert_eq!(parse_user("a:b:c").unwrap(), ("a".to_owned(), "b:c".to_owned()));
        assert!(parse_user("nopass").is_err());
        assert!(parse_user(":x").is_err());
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let under = file(
            r#"http = "127.0.0.1:1"
               realm = "file"
               user = ["a:1", "b:2"]
               max_room_peers = 4
               metrics = "127.0.0.1:9"
               listen = ["127.0.0.1:5", "127.0.0.1:6"]"#,
        );
        let over = cli(&["--realm", "cli", "--user", "c:3", "--max-bandwidth", "18446744073709551615"]);
        let merged = layer(&under, &over).unwrap();
        assert_eq!(merged.turn.realm.as_deref(), Some("cli"));
        assert_eq!(merged.turn.user, ["c:3"]);
        assert_eq!(merged.turn.max_bandwidth, Some(u64::MAX));
        // What the command line leaves unset comes from the file.
        assert_eq!(merged.http, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(merged.max_room_peers, Some(4));
        assert_eq!(merged.turn.metrics, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(merged.turn.listen.len(), 2);
    }

    #[test]
    fn a_flag_not_given_keeps_the_file_value() {
        let raised = file("allow_loopback_peers = true");
        assert!(layer(&raised, &cli(&[])).unwrap().turn.allow_loopback_peers);
        let lowered = file("allow_loopback_peers = false");
        assert!(layer(&lowered, &cli(&["--allow-loopback-peers"])).unwrap().turn.allow_loopback_peers);
    }

    #[test]
    fn parses_external_ips() {
        let v4: IpAddr = "203.0.113.5".parse().unwrap();
        let private: IpAddr = "10.0.0.5".parse().unwrap();
        let v6: IpAddr = "2001:db8::5".parse().unwrap();
        let parsed = parse_external_ips(&["203.0.113.5/10.0.0.5".into(), "2001:db8::5".into()]).unwrap();
        assert_eq!(parsed, [(v4, Some(private)), (v6, None)]);
        assert_eq!(parse_external_ips(&[" 203.0.113.5 ".into()]).unwrap(), [(v4, None)]);
        for bad in [
            &["203.0.113.5/2001:db8::1"][..],
            &["203.0.113.5", "198.51.100.1"],
            &["turn.example.org"],
            &["0.0.0.0"],
            &["203.0.113.5/"],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_external_ips(&bad).is_err(), "{bad:?}");
        }
        let c = file(
            r#"external_ip = ["203.0.113.5/10.0.0.5"]
                        public_name = "turn.example.org""#,
        );
        assert_eq!(c.turn.external_ip, ["203.0.113.5/10.0.0.5"]);
        assert_eq!(c.public_name.as_deref(), Some("turn.example.org"));
        assert_eq!(cli(&["--external-ip", "1.2.3.4", "--external-ip", "::1"]).turn.external_ip.len(), 2);
    }

    #[test]
    fn reads_acme_keys() {
        let c = file(
            r#"acme_domain = ["meet.example.org", "turn.example.org"]
               acme_email = "admin@example.org"
               acme_directory = "https://127.0.0.1:14000/dir"
               acme_ca_root = ["/etc/peerlink/test-ca.pem"]
               acme_cache = "/var/lib/peerlink/acme"
               acme_http = "0.0.0.0:80""#,
        );
        assert_eq!(c.acme_domain.len(), 2);
        assert_eq!(c.acme_http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(c.acme_cache.as_deref(), Some(Path::new("/var/lib/peerlink/acme")));
        let over = cli(&["--acme-domain", "a.example.org", "--acme-email", "b@example.org"]);
        let merged = layer(&c, &over).unwrap();
        assert_eq!(merged.acme_domain, ["a.example.org"]);
        assert_eq!(merged.acme_email.as_deref(), Some("b@example.org"));
        assert_eq!(merged.acme_directory.as_deref(), Some("https://127.0.0.1:14000/dir"));
        let both = ["serve", "--acme-domain", "a.example.org", "--cert", "c.pem", "--key", "k.pem"];
        assert!(Serve::try_parse_from(both).is_err(), "--acme-domain or --cert, not both");
    }

    #[test]
    fn checks_public_names() {
        for good in ["example.org", "turn-1.example.org", "localhost", "192.0.2.1", "2001:db8::1"] {
            assert!(check_public_name(good).is_ok(), "{good}");
        }
        for bad in ["", "https://example.org", "example.org:443", "exa mple.org", "-x.org", "a..b"] {
            assert!(check_public_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_is_given_once_on_the_command_line() {
        assert_eq!(cli(&["--listen", "127.0.0.1:1"]).turn.listen.len(), 1);
        let twice = ["serve", "--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"];
        assert!(Serve::try_parse_from(twice).is_err());
    }
}
