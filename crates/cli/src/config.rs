//! The TOML configuration file: every command-line option has a key of the same name
//! (with `_` for `-`); repeatable options take a list.

use anyhow::Context;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One address or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    pub udp_workers: Option<usize>,
    pub realm: Option<String>,
    /// `NAME:PASS` entries.
    #[serde(default)]
    pub user: Vec<String>,
    #[serde(default)]
    pub auth_secret: Vec<String>,
    #[serde(default)]
    pub relay_ip: Vec<IpAddr>,
    pub relay_ports: Option<String>,
    pub allow_loopback_peers: Option<bool>,
    #[serde(default)]
    pub allow_peer: Vec<IpNet>,
    #[serde(default)]
    pub deny_peer: Vec<IpNet>,
    pub max_allocations_per_user: Option<usize>,
    pub max_allocations: Option<usize>,
    pub max_bandwidth: Option<u64>,
    pub metrics: Option<SocketAddr>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    // `peerlink serve`: signaling and the browser app.
    pub http: Option<SocketAddr>,
    pub token_secret: Option<String>,
    pub redis: Option<String>,
    pub max_room_peers: Option<u32>,
    pub credential_ttl: Option<u64>,
    pub max_message_bytes: Option<u32>,
    pub messages_per_second: Option<u32>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: FileConfig =
            toml::from_str(&text).with_context(|| format!("bad config {}", path.display()))?;
        if config.udp_workers.is_some_and(|n| !(1..=1024).contains(&n)) {
            anyhow::bail!("bad config {}: udp_workers must be between 1 and 1024", path.display());
        }
        Ok(config)
    }
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

    #[test]
    fn accepts_one_address_or_a_list() {
        let one: FileConfig = toml::from_str(r#"listen = "127.0.0.1:3478""#).unwrap();
        assert_eq!(one.listen, ["127.0.0.1:3478".parse().unwrap()]);
        let many: FileConfig = toml::from_str(r#"listen = ["127.0.0.1:1", "[::1]:2"]"#).unwrap();
        assert_eq!(many.listen.len(), 2);
    }

    #[test]
    fn reads_turn_keys() {
        let c: FileConfig = toml::from_str(
            r#"realm = "example.org"
               user = ["alice:pw"]
               auth_secret = ["s1", "s2"]
               relay_ip = ["192.0.2.1"]
               relay_ports = "50000-50100"
               allow_loopback_peers = true
               deny_peer = ["8.8.8.0/24"]"#,
        )
        .unwrap();
        assert_eq!(c.auth_secret.len(), 2);
        assert_eq!(c.deny_peer[0], "8.8.8.0/24".parse::<IpNet>().unwrap());
    }

    #[test]
    fn reads_serve_keys() {
        let c: FileConfig = toml::from_str(
            r#"http = "0.0.0.0:80"
               token_secret = "t"
               redis = "redis://127.0.0.1:6379/"
               max_room_peers = 4
               credential_ttl = 3600
               max_message_bytes = 32768
               messages_per_second = 20"#,
        )
        .unwrap();
        assert_eq!(c.http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(
            (c.max_room_peers, c.credential_ttl, c.messages_per_second),
            (Some(4), Some(3600), Some(20))
        );
        assert_eq!(c.redis.as_deref(), Some("redis://127.0.0.1:6379/"));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<FileConfig>(r#"lisen = "127.0.0.1:1""#).is_err());
        assert!(toml::from_str::<FileConfig>(r#"listen = "localhost""#).is_err());
        assert!(parse_port_range("10-5").is_err());
        assert!(parse_port_range("abc").is_err());
        assert_eq!(parse_port_range("1000-2000").unwrap(), 1000..=2000);
        assert_eq!(parse_user("a:b:c").unwrap(), ("a".to_owned(), "b:c".to_owned()));
        assert!(parse_user("nopass").is_err());
        assert!(parse_user(":x").is_err());
    }
}
