//! A VHS heartbeat: who watched a broadcaster's channel during one minute.
//!
//! Each field checks itself while it is deserialized, so a bad value fails
//! with the path of the field it came from (`[2].time`), which is what the
//! 400 answer names. Nothing past ingest sees raw JSON.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::event_time::{EventTime, Minute};
use super::ids::{check_id, Id};

/// The linked viewers of a heartbeat, kept as one buffer of `\n`-separated ids.
///
/// A channel can have ten million viewers: one `String` each would cost three
/// times the ids themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerList {
    buf: String,
    /// End offset of each id in `buf`.
    ends: Vec<u32>,
}

impl ViewerList {
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no ids.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The id at `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize + 1 };
        self.buf.get(start..end)
    }

    /// All ids in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Appends an id, checking it.
    fn push_checked(&mut self, id: &str) -> Result<(), String> {
        check_id(id)?;
        if !self.buf.is_empty() || !self.ends.is_empty() {
            self.buf.push('\n');
        }
        self.buf.push_str(id);
        let end = u32::try_from(self.buf.len()).map_err(|_| "viewer list is larger than 4 GiB".to_string())?;
        self.ends.push(end);
        Ok(())
    }

    /// The ids joined by `\n`: one buffer, no copy.
    pub fn joined(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// Rebuilds a list from ids joined by `\n` (as [`ViewerList::joined`] gives them).
    pub fn from_joined(bytes: Vec<u8>) -> Result<ViewerList, String> {
        let buf = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        let too_big = || "viewer list is larger than 4 GiB".to_string();
        let mut ends = Vec::new();
        if !buf.is_empty() {
            for (i, b) in buf.bytes().enumerate() {
                if b == b'\n' {
                    ends.push(u32::try_from(i).map_err(|_| too_big())?);
                }
            }
            ends.push(u32::try_from(buf.len()).map_err(|_| too_big())?);
        }
        Ok(ViewerList { buf, ends })
    }
}

impl FromIterator<String> for ViewerList {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut list = ViewerList::default();
        for id in iter {
            // Only tests and the simulator build lists this way, from valid ids.
            let _ = list.push_checked(&id);
        }
        list
    }
}

impl<'de> Deserialize<'de> for ViewerList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ViewerList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of viewer id strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ViewerList, A::Error> {
                let mut list = ViewerList::default();
                // Each element is checked as an `Id`, so the error path names its index.
                while let Some(id) = seq.next_element::<Id>()? {
                    list.push_checked(&id.0).map_err(de::Error::custom)?;
                }
                Ok(list)
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

impl Serialize for ViewerList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One VHS report: who watched a broadcaster's channel during one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Identifies the report across Twitch's retries.
    pub id: Id,
    /// Game account id of the broadcaster.
    pub broadcaster: Id,
    #[serde(default)]
    pub broadcast_id: Option<u64>,
    /// Viewers Twitch counted, linked or not; may exceed `viewer_list`.
    #[serde(default)]
    pub viewers: u64,
    /// Game account ids of the linked viewers.
    pub viewer_list: Arc<ViewerList>,
    /// Game name, matched exactly and case-sensitively.
    pub game: Id,
    #[serde(default = "default_version")]
    pub version: u32,
    /// When the minute was watched (event time).
    pub time: EventTime,
    /// How many times Twitch has retried this report.
    #[serde(default)]
    pub retries: u32,
}

fn default_version() -> u32 {
    1
}

impl Heartbeat {
    /// The minute of watching this heartbeat reports.
    pub fn minute(&self) -> Minute {
        Minute::of(self.time.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"{"broadcaster":"b-1","broadcast_id":27388295120,"viewers":6,
        "viewer_list":["v-0","v-1"],"game":"GameName","version":1,
        "id":"f0bacda2","time":"2026-11-23T15:04:05Z","retries":0}"#;

    #[test]
    fn parses_twitchs_sample() {
        let hb: Heartbeat = serde_json::from_str(GOOD).unwrap();
        assert_eq!(hb.viewer_list.iter().collect::<Vec<_>>(), vec!["v-0", "v-1"]);
        assert_eq!(hb.minute(), Minute((1_795_446_245 / 60) as u32));
        assert_eq!(hb.game.0, "GameName");
    }

    #[test]
    fn joined_form_round_trips() {
        let hb: Heartbeat = serde_json::from_str(GOOD).unwrap();
        let list = ViewerList::from_joined(hb.viewer_list.joined().to_vec()).unwrap();
        assert_eq!(&list, &*hb.viewer_list);
        assert!(ViewerList::from_joined(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let path_of = |json: &str| {
            let de = &mut serde_json::Deserializer::from_str(json);
            let err = serde_path_to_error::deserialize::<_, Heartbeat>(de).unwrap_err();
            (err.path().to_string(), err.inner().to_string())
        };
        let (path, msg) = path_of(&GOOD.replace("2026-11-23T15:04:05Z", "yesterday"));
        assert_eq!(path, "time");
        assert!(msg.contains("RFC 3339"), "{msg}");
        let (path, _) = path_of(&GOOD.replace(r#""v-1""#, "7"));
        assert_eq!(path, "viewer_list[1]");
        let (path, _) = path_of(&GOOD.replace(r#""v-1""#, r#""""#));
        assert_eq!(path, "viewer_list[1]");
        let (path, _) = path_of(&GOOD.replace(r#""viewers":6"#, r#""viewers":"6""#));
        assert_eq!(path, "viewers");
    }
}
