//! The wire protocol: JSON text frames over WebSocket (DESIGN.md, "Signaling protocol").
//!
//! Client → server: `join`, `signal`, `leave`. Server → client: `welcome`, `peer-joined`,
//! `peer-left`, `signal`, `error`. A `signal`'s `data` is relayed byte for byte: the server
//! checks that it is JSON and nothing more.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A message from a client, parsed from one text frame.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    /// `id`: the peer id of a previous session, asked for again after a lost connection;
    /// `resume`: that session's resume token (from its `welcome`).
    Join {
        room: String,
        name: String,
        token: Option<String>,
        id: Option<String>,
        resume: Option<String>,
    },
    Signal {
        to: String,
        data: &'a RawValue,
    },
    Leave,
}

/// Why a frame was not a valid client message; each maps to an error `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Not JSON, not an object, wrong field types, or a missing field.
    BadRequest(String),
    /// A `type` this server does not know.
    UnknownType(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadRequest(why) => write!(f, "{why}"),
            ParseError::UnknownType(t) => write!(f, "unknown message type {t:?}"),
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    name: Option<String>,
    token: Option<String>,
    id: Option<String>,
    resume: Option<String>,
    to: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

impl<'a> ClientMessage<'a> {
    /// Parses one text frame. Unknown fields are ignored (clients may add their own).
    pub fn parse(text: &'a str) -> Result<ClientMessage<'a>, ParseError> {
        let env: Envelope<'a> = serde_json::from_str(text).map_err(|e| {
            // serde's message names the line and column, never echoes the input.
            ParseError::BadRequest(format!("not a valid message: {e}"))
        })?;
        let missing = |field: &str| ParseError::BadRequest(format!("{} needs \"{field}\"", env.kind));
        match env.kind.as_str() {
            "join" => Ok(ClientMessage::Join {
                room: env.room.ok_or_else(|| missing("room"))?,
                name: env.name.ok_or_else(|| missing("name"))?,
                token: env.token,
                id: env.id,
                resume: env.resume,
            }),
            "signal" => Ok(ClientMessage::Signal {
                to: env.to.ok_or_else(|| missing("to"))?,
                data: env.data.ok_or_else(|| missing("data"))?,
            }),
            "leave" => Ok(ClientMessage::Leave),
            other => Err(ParseError::UnknownType(truncate(other, 32).to_owned())),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A room name: 1–64 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit,
/// so it is safe in a URL, a log line and a Redis channel name.
pub fn valid_room(room: &str) -> bool {
    let bytes = room.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ROOM_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Length of the peer ids the server makes (hex digits).
pub const PEER_ID_LEN: usize = 16;

/// A peer id as the server makes them: 16 lowercase hex digits. A `join` may ask for one
/// (to keep its id across a lost connection) only in this form.
pub fn valid_peer_id(id: &str) -> bool {
    id.len() == PEER_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A display name: 1–32 characters, not only spaces, none of them a control character, a
/// line or paragraph separator, or an invisible formatting character (bidi overrides,
/// zero-width characters) that could make one name pose as another or break a line.
pub fn valid_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&count) && !name.chars().any(invisible) && !name.trim().is_empty()
}

fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// A peer as listed in `welcome` and `peer-joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    pub name: String,
}

/// One entry of `welcome.iceServers`, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
}

/// Error codes of `error` frames. The connection stays open after each of them; abuse
/// that continues ends it with WebSocket close code 1008 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    TooLarge,
    RateLimited,
    BadRoom,
    BadName,
    RoomFull,
    NotJoined,
    AlreadyJoined,
    UnknownPeer,
    Unauthorized,
    ServerFull,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::BadRoom => "bad-room",
            ErrorCode::BadName => "bad-name",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ServerFull => "server-full",
        }
    }
}

/// A message from the server, as a client sees it (used by the Rust client and tests).
#[derive(Debug, Clone)]
pub enum ServerMessage {
    /// `resume`: a secret that lets a rejoin take this id back even while the server still
    /// holds the old connection (absent from servers that predate it).
    Welcome {
        id: String,
        room: String,
        peers: Vec<PeerInfo>,
        ice_servers: Vec<IceServer>,
        resume: Option<String>,
        /// `"mesh"` or `"sfu"` (absent from servers that predate room modes: mesh).
        mode: Option<String>,
    },
    /// The room switched modes: in `"sfu"`, signal only with the peer id `"sfu"`.
    Mode {
        mode: String,
    },
    PeerJoined {
        peer: PeerInfo,
    },
    PeerLeft {
        id: String,
    },
    Signal {
        from: String,
        data: Box<RawValue>,
    },
    Error {
        code: String,
        message: String,
    },
}

#[derive(Deserialize)]
struct ServerEnvelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    room: Option<String>,
    peers: Option<Vec<PeerInfo>>,
    #[serde(rename = "iceServers")]
    ice_servers: Option<Vec<IceServer>>,
    peer: Option<PeerInfo>,
    from: Option<String>,
    data: Option<Box<RawValue>>,
    code: Option<String>,
    message: Option<String>,
    resume: Option<String>,
    mode: Option<String>,
}

impl ServerMessage {
    /// Parses one frame from a server. (serde's tagged enums cannot hold raw JSON, hence
    /// the envelope.)
    pub fn parse(text: &str) -> Result<ServerMessage, ParseError> {
        let env: ServerEnvelope = serde_json::from_str(text)
            .map_err(|e| ParseError::BadRequest(format!("not a valid message: {e}")))?;
        let missing = |field: &str| ParseError::BadRequest(format!("{} needs \"{field}\"", env.kind));
        Ok(match env.kind.as_str() {
            "welcome" => ServerMessage::Welcome {
                id: env.id.ok_or_else(|| missing("id"))?,
                room: env.room.ok_or_else(|| missing("room"))?,
                peers: env.peers.ok_or_else(|| missing("peers"))?,
                ice_servers: env.ice_servers.unwrap_or_default(),
                resume: env.resume,
                mode: env.mode,
            },
            "mode" => ServerMessage::Mode { mode: env.mode.ok_or_else(|| missing("mode"))? },
            "peer-joined" => ServerMessage::PeerJoined { peer: env.peer.ok_or_else(|| missing("peer"))? },
            "peer-left" => ServerMessage::PeerLeft { id: env.id.ok_or_else(|| missing("id"))? },
            "signal" => ServerMessage::Signal {
                from: env.from.ok_or_else(|| missing("from"))?,
                data: env.data.ok_or_else(|| missing("data"))?,
            },
            "error" => ServerMessage::Error {
                code: env.code.ok_or_else(|| missing("code"))?,
                message: env.message.unwrap_or_default(),
            },
            other => return Err(ParseError::UnknownType(truncate(other, 32).to_owned())),
        })
    }
}

pub(crate) fn encode_welcome(
    id: &str,
    room: &str,
    peers: &[PeerInfo],
    ice: &[IceServer],
    resume: &str,
    mode: &str,
) -> String {
    #[derive(Serialize)]
    struct Welcome<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        room: &'a str,
        peers: &'a [PeerInfo],
        #[serde(rename = "iceServers")]
        ice_servers: &'a [IceServer],
        resume: &'a str,
        mode: &'a str,
    }
    serde_json::to_string(&Welcome { kind: "welcome", id, room, peers, ice_servers: ice, resume, mode })
        .expect("plain structs serialize")
}

/// Frames are written with `type` first, as a person reading them expects.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

fn encode<T: Serialize>(kind: &'static str, body: &T) -> String {
    serde_json::to_string(&Tagged { kind, body }).expect("plain structs serialize")
}

pub(crate) fn encode_peer_joined(peer: &PeerInfo) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        peer: &'a PeerInfo,
    }
    encode("peer-joined", &Body { peer })
}

pub(crate) fn encode_mode(mode: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        mode: &'a str,
    }
    encode("mode", &Body { mode })
}

pub(crate) fn encode_peer_left(id: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
    }
    encode("peer-left", &Body { id })
}

/// `data` goes out exactly as it came in.
pub(crate) fn encode_signal(from: &str, data: &RawValue) -> String {
    let from = serde_json::to_string(from).expect("strings serialize");
    let data = data.get();
    let mut out = String::with_capacity(34 + from.len() + data.len());
    out.push_str(r#"{"type":"signal","from":"#);
    out.push_str(&from);
    out.push_str(r#","data":"#);
    out.push_str(data);
    out.push('}');
    out
}

pub(crate) fn encode_error(code: ErrorCode, message: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        code: &'static str,
        message: &'a str,
    }
    encode("error", &Body { code: code.as_str(), message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_client_messages() {
        match ClientMessage::parse(r#"{"type":"join","room":"r1","name":"alice","token":"t"}"#).unwrap() {
            ClientMessage::Join { room, name, token, id, .. } => {
                assert_eq!((room.as_str(), name.as_str(), token.as_deref()), ("r1", "alice", Some("t")));
                assert_eq!(id, None);
            }
            other => panic!("{other:?}"),
        }
        match ClientMessage::parse(r#"{"type":"join","room":"r1","name":"a","id":"0123456789abcdef"}"#)
            .unwrap()
        {
            ClientMessage::Join { id, .. } => assert_eq!(id.as_deref(), Some("0123456789abcdef")),
            other => panic!("{other:?}"),
        }
        match ClientMessage::parse(r#"{"type":"signal","to":"p","data":{"candidate":null}}"#).unwrap() {
            ClientMessage::Signal { to, data } => {
                assert_eq!(to, "p");
                assert_eq!(data.get(), r#"{"candidate":null}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ClientMessage::parse(r#"{"type":"leave"}"#).unwrap(), ClientMessage::Leave));
    }

    #[test]
    fn refuses_garbage_and_missing_fields() {
        for text in ["", "{", "null", "[]", "42", r#"{"room":"x"}"#, r#"{"type":7}"#, "\u{0}"] {
            assert!(
                matches!(ClientMessage::parse(text), Err(ParseError::BadRequest(_))),
                "{text:?} was accepted"
            );
        }
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r"}"#),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"signal","to":"x"}"#),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"signal","data":1}"#),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"hello"}"#),
            Err(ParseError::UnknownType(t)) if t == "hello"
        ));
    }

    #[test]
    fn error_messages_never_echo_input() {
        let secret = "<script>alert(1)</script>";
        let err = ClientMessage::parse(&format!(r#"{{"type":"join","room":{secret}}}"#)).unwrap_err();
        assert!(!err.to_string().contains("script"), "{err}");
    }

    #[test]
    fn validates_rooms_and_names() {
        assert!(valid_room("a"));
        assert!(valid_room("Team-42.dev_x"));
        assert!(valid_room(&"a".repeat(64)));
        for bad in ["", "-a", ".a", "a b", "a/b", "ä", &"a".repeat(65), "a\n"] {
            assert!(!valid_room(bad), "{bad:?}");
        }
        assert!(valid_name("Zoë ☕"));
        assert!(valid_name(&"é".repeat(32)));
        for bad in ["", "   ", "a\u{7}", "a\nb", &"x".repeat(33), "ad\u{202E}nim", "a\u{200B}", "a\u{2028}b"]
        {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn validates_requested_peer_ids_like_server_made_ones() {
        assert!(valid_peer_id("0123456789abcdef"));
        for bad in [
            "",
            "sfu",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "01234567 9abcdef",
        ] {
            assert!(!valid_peer_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn frames_start_with_their_type() {
        assert_eq!(encode_peer_left("x"), r#"{"type":"peer-left","id":"x"}"#);
        assert_eq!(
            encode_error(ErrorCode::RoomFull, "full"),
            r#"{"type":"error","code":"room-full","message":"full"}"#
        );
        let peer = PeerInfo { id: "i".into(), name: "n".into() };
        assert_eq!(encode_peer_joined(&peer), r#"{"type":"peer-joined","peer":{"id":"i","name":"n"}}"#);
    }

    #[test]
    fn signal_data_is_relayed_verbatim() {
        let text = r#"{"type":"signal","to":"p","data":{ "b" : [1, 2.50, "\u00e9"] }}"#;
        let ClientMessage::Signal { data, .. } = ClientMessage::parse(text).unwrap() else { panic!() };
        let out = encode_signal("me", data);
        assert_eq!(out, r#"{"type":"signal","from":"me","data":{ "b" : [1, 2.50, "\u00e9"] }}"#);
        let back = ServerMessage::parse(&out).unwrap();
        assert!(matches!(back, ServerMessage::Signal { from, .. } if from == "me"));
    }
}
