//! Per-campaign state the host keeps for the rule (streaks, counters).
//!
//! State is replayed with the events it follows from, so a rule that keeps
//! state stays deterministic. Writes of a call that fails are discarded.
//! In native tests the state is an in-memory map per thread
//! ([`crate::testing::clear_state`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::sys;

/// The value stored under `key`.
pub fn get(key: &str) -> Option<Vec<u8>> {
    sys::state_get(key)
}

/// Stores `value` under `key` (keys up to 256 bytes, values up to 64 KiB).
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    sys::state_set(key, value)
}

/// Removes `key`.
pub fn delete(key: &str) {
    sys::state_delete(key)
}

/// The JSON value stored under `key`, if present and of type `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Option<T> {
    get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    set(key, &bytes)
}
