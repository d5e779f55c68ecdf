//! Messages between signaling nodes that share rooms (carried by Redis pub/sub).
//!
//! Every node publishes on one channel and hears everyone. Membership travels as
//! `joined`/`left`; a node that starts says `hello` and the others `announce` their local
//! peers; `heartbeat` every few seconds lets the others forget a node that died (its peers
//! leave their rooms); `bye` says a node is shutting down, and its peers are forgotten
//! without a `peer-left` (they are reconnecting, under the same ids). A `signal` names the node of its addressee; other nodes ignore it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub enum ClusterMessage {
    Hello {
        node: String,
    },
    Heartbeat {
        node: String,
    },
    /// The node is shutting down gracefully: forget its peers without a `peer-left` (they
    /// are reconnecting and keep their ids and calls).
    Bye {
        node: String,
    },
    Announce {
        node: String,
        peers: Vec<RemotePeer>,
    },
    Joined {
        node: String,
        peer: RemotePeer,
    },
    Left {
        node: String,
        id: String,
    },
    /// `data` is the JSON text exactly as the sender's client wrote it.
    Signal {
        node: String,
        to_node: String,
        from: String,
        to: String,
        data: String,
    },
}

impl ClusterMessage {
    /// The node that sent it.
    pub fn node(&self) -> &str {
        match self {
            ClusterMessage::Hello { node }
            | ClusterMessage::Heartbeat { node }
            | ClusterMessage::Bye { node }
            | ClusterMessage::Announce { node, .. }
            | ClusterMessage::Joined { node, .. }
            | ClusterMessage::Left { node, .. }
            | ClusterMessage::Signal { node, .. } => node,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("cluster messages serialize")
    }

    /// `None` for anything malformed (another version, or not ours).
    pub fn decode(text: &str) -> Option<ClusterMessage> {
        serde_json::from_str(text).ok()
    }
}

/// A peer as another node describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePeer {
    pub room: String,
    pub id: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let data = r#"{"x":1}"#.to_owned();
        let msg = ClusterMessage::Signal {
            node: "n1".into(),
            to_node: "n2".into(),
            from: "a".into(),
            to: "b".into(),
            data,
        };
        let back = ClusterMessage::decode(&msg.encode()).unwrap();
        assert_eq!(back.node(), "n1");
        assert!(matches!(back, ClusterMessage::Signal { data, .. } if data == r#"{"x":1}"#));
        for bad in ["", "{}", r#"{"t":"nope","node":"x"}"#, r#"{"t":"hello"}"#, "\u{0}"] {
            assert!(ClusterMessage::decode(bad).is_none(), "{bad:?}");
        }
    }
}
