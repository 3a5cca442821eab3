//! E2 game state: one accepted websocket message, with the broadcasters it
//! is for resolved to their game accounts, and the JSON merge patch
//! (RFC 7396) that applies a delta.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A broadcaster an E2 message publishes for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    /// As E2 names them.
    pub twitch_user_id: String,
    /// As heartbeats and manifests name them (from the account links).
    pub account_id: String,
}

/// How a message changes the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Update {
    /// Connect and refresh: the whole state, replacing what was there.
    Full,
    /// Delta: a merge patch over what was there.
    Patch,
}

/// One accepted game-state message, as stored in the inbox. Its time is the
/// host's clock when it arrived, so replays see the same time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GameStateEvent {
    /// Unique per message: `<connection id>:<message number>`.
    pub id: String,
    pub broadcasters: Vec<Publisher>,
    pub client_id: String,
    pub game_id: String,
    pub update: Update,
    pub data: Value,
    /// Unix milliseconds.
    pub received_at_ms: i64,
    /// Published with an app token (a game server) rather than a user token.
    pub authoritative: bool,
}

impl GameStateEvent {
    /// The event's time.
    pub fn time(&self) -> time::OffsetDateTime {
        let nanos = i128::from(self.received_at_ms) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    /// The state after this message, given the state before it.
    pub fn apply(&self, before: &Value) -> Value {
        match self.update {
            Update::Full => self.data.clone(),
            Update::Patch => {
                let mut after = before.clone();
                merge_patch(&mut after, &self.data);
                after
            }
        }
    }
}

/// Applies an RFC 7396 JSON merge patch: objects merge key by key, `null`
/// removes a key, anything else replaces. Written out rather than taken from
/// a crate: it is the RFC's own ten-line algorithm.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The top-level keys whose values differ, sorted.
pub fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let empty = Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> =
        before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_the_rfc_examples() {
        // RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, want) in cases {
            let mut got = target.clone();
            merge_patch(&mut got, &patch);
            assert_eq!(got, want, "{target} + {patch}");
        }
    }

    #[test]
    fn a_patch_applied_twice_changes_nothing_more() {
        let before = json!({"level": 3, "boss": {"hp": 10}});
        let patch = json!({"level": 4, "boss": {"hp": null, "defeated": true}});
        let mut once = before.clone();
        merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        assert_eq!(once, twice);
        assert_eq!(changed_keys(&before, &once), ["boss", "level"]);
        assert!(changed_keys(&once, &twice).is_empty());
    }

    mod properties {
        use super::*;
        use crate::test_values::json_value;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn a_patch_is_idempotent_and_its_changes_are_exact(target in json_value(), patch in json_value()) {
                let mut once = target.clone();
                merge_patch(&mut once, &patch);
                let mut twice = once.clone();
                merge_patch(&mut twice, &patch);
                prop_assert_eq!(&once, &twice);
                let changed = changed_keys(&target, &once);
                if let (Some(before), Some(after)) = (target.as_object(), once.as_object()) {
                    for key in before.keys().chain(after.keys()) {
                        prop_assert_eq!(changed.contains(key), before.get(key) != after.get(key));
                    }
                }
            }
        }
    }
}
