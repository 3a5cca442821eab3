//! Ids from Twitch and from the game: one rule for all of them (heartbeat,
//! broadcaster, viewer and game ids, and both sides of an account link).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Checks an id: not blank, at most [`MAX_ID_LEN`] bytes, no control characters.
pub fn check_id(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!("is longer than {MAX_ID_LEN} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// An id that passed [`check_id`] when it was deserialized.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_id(&s).map_err(de::Error::custom)?;
        Ok(Id(s))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_id() {
        assert!(check_id("v-1").is_ok());
        assert!(check_id("é-ü-1").is_ok(), "non-ASCII is fine");
        assert_eq!(check_id("").unwrap_err(), "must not be empty");
        assert_eq!(check_id("  ").unwrap_err(), "must not be empty");
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).unwrap_err().contains("longer"));
        assert!(check_id("a\nb").unwrap_err().contains("control"));
    }
}
