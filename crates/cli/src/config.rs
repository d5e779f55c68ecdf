//! The TOML configuration file: every command-line option has a key of the same name
//! (with `_` for `-`).

use anyhow::Context;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// One address or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    pub udp_workers: Option<usize>,
}

impl ListenConfig {
    pub fn load(path: &Path) -> anyhow::Result<ListenConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: ListenConfig =
            toml::from_str(&text).with_context(|| format!("bad config {}", path.display()))?;
        if config.udp_workers == Some(0) {
            anyhow::bail!("bad config {}: udp_workers must be at least 1", path.display());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_address_or_a_list() {
        let one: ListenConfig = toml::from_str(r#"listen = "127.0.0.1:3478""#).unwrap();
        assert_eq!(one.listen, ["127.0.0.1:3478".parse().unwrap()]);
        let many: ListenConfig = toml::from_str(r#"listen = ["127.0.0.1:1", "[::1]:2"]"#).unwrap();
        assert_eq!(many.listen.len(), 2);
    }

    #[test]
    fn refuses_unknown_keys_and_bad_addresses() {
        assert!(toml::from_str::<ListenConfig>(r#"lisen = "127.0.0.1:1""#).is_err());
        assert!(toml::from_str::<ListenConfig>(r#"listen = "localhost""#).is_err());
    }
}
