//! The E2 wire protocol, version 1 (`docs/e2-protocol.md`): what clients
//! send, what the host answers, the error codes and the close codes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version `docs/e2-protocol.md` describes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Close codes (also in `docs/e2-protocol.md`).
pub mod close {
    /// The client said `disconnect`.
    pub const NORMAL: u16 = 1000;
    /// The host is shutting down; reconnect after the delay given.
    pub const RESTART: u16 = 1012;
    /// The host is overloaded or its storage is away; reconnect after the delay given.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Token refused: `token_prefix`, `invalid_token`.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Not allowed to publish: `broadcaster_ids_required`, `broadcaster_ids_forbidden`,
    /// `not_allowlisted`, `broadcaster_not_linked`.
    pub const FORBIDDEN: u16 = 4003;
    /// `idle_timeout`.
    pub const IDLE: u16 = 4008;
    /// `rate_limited`.
    pub const RATE_LIMITED: u16 = 4029;
}

/// A message from a game server or client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub game_id: Option<String>,
    #[serde(default)]
    pub broadcaster_ids: Option<Vec<String>>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// The message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Connect,
    Delta,
    Refresh,
    Flush,
    Disconnect,
}

/// A message to the client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Error {
        code: &'a str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    Reconnect {
        reconnect_after_ms: u64,
    },
}

/// A broken rule: the error code, what to tell the client, and whether the
/// connection ends (with which close code) or only the message is dropped.
#[derive(Debug)]
pub struct Violation {
    pub code: &'static str,
    pub message: String,
    pub close: Option<u16>,
}

impl Violation {
    /// The message is dropped; the connection stays.
    pub fn drop(code: &'static str, message: impl Into<String>) -> Violation {
        Violation { code, message: message.into(), close: None }
    }

    /// The connection ends with `close`.
    pub fn close(code: &'static str, message: impl Into<String>, close: u16) -> Violation {
        Violation { code, message: message.into(), close: Some(close) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::json_field;
    use crate::test_values::{hostile_string, json_value};
    use proptest::prelude::*;

    const FIELDS: [&str; 7] = ["type", "seq", "token", "client_id", "game_id", "broadcaster_ids", "data"];

    proptest! {
        #[test]
        fn any_message_is_parsed_or_refused_naming_its_field(
            kind in prop::sample::select(vec!["connect", "delta", "refresh", "flush", "disconnect", "x"]),
            field in prop::sample::select(FIELDS.to_vec()),
            value in json_value(),
            token in hostile_string(),
        ) {
            let mut message = serde_json::json!({"type": kind, "token": token, "data": {}});
            message[field] = value;
            let text = message.to_string();
            let de = &mut serde_json::Deserializer::from_str(&text);
            if let Err(e) = serde_path_to_error::deserialize::<_, ClientMessage>(de) {
                let named = json_field(&e);
                prop_assert!(FIELDS.iter().any(|f| named.starts_with(f)), "named `{}`: {}", named, e);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
            let de = &mut serde_json::Deserializer::from_str(&text);
            let _ = serde_path_to_error::deserialize::<_, ClientMessage>(de);
        }
    }
}
