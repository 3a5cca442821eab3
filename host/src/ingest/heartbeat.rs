//! A VHS heartbeat parsed at the edge: nothing past here sees raw JSON.
//!
//! Each field checks itself while it is deserialized, so a bad value fails
//! with the path of the field it came from (`[2].time`), which is what the
//! 400 answer names.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest id (heartbeat, broadcaster, viewer) accepted.
const MAX_ID_LEN: usize = 256;

/// A minute of event time, in minutes since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(pub u32);

impl Minute {
    /// The minute a point in time falls in.
    pub fn of(t: OffsetDateTime) -> Minute {
        Minute(t.unix_timestamp().div_euclid(60).clamp(0, u32::MAX as i64) as u32)
    }
}

/// The time a heartbeat reports, RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime(pub OffsetDateTime);

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map(EventTime)
            .map_err(|e| de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

/// An id from Twitch: non-empty, at most 256 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(pub String);

fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
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

/// The linked viewers of a heartbeat, kept as one buffer of `\n`-separated ids.
///
/// A channel can have ten million viewers: one `String` each would cost three
/// times the ids themselves. The buffer is also the inbox's stored form.
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

    /// Appends an id, which must already be valid.
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

    /// The stored form: ids joined by `\n`.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// Rebuilds a list from its stored form.
    pub fn from_stored(bytes: Vec<u8>) -> Result<ViewerList, String> {
        let buf = String::from_utf8(bytes).map_err(|e| e.to_string())?;
        let mut ends = Vec::new();
        if !buf.is_empty() {
            for (i, b) in buf.bytes().enumerate() {
                if b == b'\n' {
                    ends.push(i as u32);
                }
            }
            ends.push(buf.len() as u32);
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
                while let Some(id) = seq.next_element::<IdStr>()? {
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

/// An element of `viewer_list`, checked so the error path names its index.
struct IdStr(String);

impl<'de> Deserialize<'de> for IdStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_id(&s).map_err(de::Error::custom)?;
        Ok(IdStr(s))
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

/// What the inbox stores beside the viewer buffer: the heartbeat minus its viewers.
#[derive(Serialize, Deserialize)]
pub struct StoredHeader {
    pub id: Id,
    pub broadcaster: Id,
    pub broadcast_id: Option<u64>,
    pub viewers: u64,
    pub game: Id,
    pub version: u32,
    pub time: EventTime,
    pub retries: u32,
}

impl Heartbeat {
    /// Splits a heartbeat into its stored header (JSON) and viewer buffer.
    pub fn to_stored(&self) -> (String, &[u8]) {
        let header = StoredHeader {
            id: self.id.clone(),
            broadcaster: self.broadcaster.clone(),
            broadcast_id: self.broadcast_id,
            viewers: self.viewers,
            game: self.game.clone(),
            version: self.version,
            time: self.time,
            retries: self.retries,
        };
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_string(&header).unwrap_or_default();
        (json, self.viewer_list.as_bytes())
    }

    /// Rebuilds a heartbeat from the inbox's stored form.
    pub fn from_stored(header: &str, viewers: Vec<u8>) -> Result<Heartbeat, String> {
        let h: StoredHeader = serde_json::from_str(header).map_err(|e| e.to_string())?;
        Ok(Heartbeat {
            id: h.id,
            broadcaster: h.broadcaster,
            broadcast_id: h.broadcast_id,
            viewers: h.viewers,
            viewer_list: Arc::new(ViewerList::from_stored(viewers)?),
            game: h.game,
            version: h.version,
            time: h.time,
            retries: h.retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"broadcaster":"b-1","broadcast_id":27388295120,"viewers":6,
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
    fn stored_form_round_trips() {
        let hb: Heartbeat = serde_json::from_str(GOOD).unwrap();
        let (header, viewers) = hb.to_stored();
        assert_eq!(Heartbeat::from_stored(&header, viewers.to_vec()).unwrap(), hb);
        let empty = ViewerList::from_stored(Vec::new()).unwrap();
        assert!(empty.is_empty());
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
